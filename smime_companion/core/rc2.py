"""RC2 in CBC mode (RFC 2268), for reading old archives: decryption only.

S/MIME v2 mail (Netscape, Outlook Express, Outlook 98-2003, the export versions of everything)
was often encrypted with RC2 at 40, 64 or 128 effective key bits. cryptography's RC2 (in its
``decrepit`` module) takes only a 128-bit key at 128 effective bits, which is what RC2-128 mail
uses and what :mod:`~smime_companion.core.decrypt` hands it. RC2-40 and RC2-64 need the
effective-key-bits parameter, which cryptography does not expose, so they are decrypted here in
plain Python. That runs at well under a megabyte a second, so :data:`MAX_PYTHON_RC2_BYTES` bounds
what one message can cost; real RC2-40 mail is a few kilobytes.
"""

from __future__ import annotations

# Decrypting more than this in Python costs tens of seconds: such a message is refused. An
# RC2-40 or RC2-64 message that size is not old mail but an attempt to waste our time.
MAX_PYTHON_RC2_BYTES = 4 * 1024 * 1024

# RFC 2268 section 2: PITABLE, a permutation of 0..255 derived from the digits of pi.
_PITABLE = bytes.fromhex(
    "d978f9c419ddb5ed28e9fd794aa0d89dc67e37832b76538e624c6488448bfba2"
    "179a59f587b34f1361456d8d09817d32bd8f40eb86b77b0bf09521225c6b4e82"
    "54d66593ce60b21c7356c014a78cf1dc1275ca1f3bbee4d1423dd430a33cb626"
    "6fbf0eda4669075727f21d9bbc944303f811c7f690ef3ee706c3d52fc8661ed7"
    "08e8eade8052eef784aa72ac354d6a2a961ad2715a1549744b9fd05e0418a4ec"
    "c2e0416e0f51cbcc2491af50a1f47039997c3a8523b8b47afc02365b25559731"
    "2d5dfa98e38a92ae05df2910676cbac9d300e6cfe19ea82c6316013f58e289a9"
    "0d38341bab33ffb0bb480c5fb9b1cd2ec5f3db47e5a59c770aa62068fe7fc1ad"
)
_MASK = 0xFFFF


def expand_key(key: bytes, effective_bits: int) -> tuple[int, ...]:
    """The 64 16-bit words of RC2's expanded key for ``key`` (1 to 128 bytes) at
    ``effective_bits`` (1 to 1024). Raises ``ValueError`` for sizes outside those ranges."""
    if not 1 <= len(key) <= 128 or not 1 <= effective_bits <= 1024:
        raise ValueError(f"RC2 key of {len(key)} bytes at {effective_bits} effective bits")
    length = bytearray(128)
    length[: len(key)] = key
    t = len(key)
    for i in range(t, 128):
        length[i] = _PITABLE[(length[i - 1] + length[i - t]) & 0xFF]
    t8 = (effective_bits + 7) // 8
    tm = 0xFF % (1 << (8 + effective_bits - 8 * t8))
    length[128 - t8] = _PITABLE[length[128 - t8] & tm]
    for i in range(127 - t8, -1, -1):
        length[i] = _PITABLE[length[i + 1] ^ length[i + t8]]
    return tuple(length[2 * i] | (length[2 * i + 1] << 8) for i in range(64))


def _decrypt_block(k: tuple[int, ...], block: bytes | memoryview) -> bytes:
    """One 8-byte block through RC2's decryption rounds (RFC 2268 section 4)."""
    r0 = block[0] | (block[1] << 8)
    r1 = block[2] | (block[3] << 8)
    r2 = block[4] | (block[5] << 8)
    r3 = block[6] | (block[7] << 8)
    j = 63
    for group, rounds in enumerate((5, 6, 5)):
        for _ in range(rounds):
            # r-mix, the inverse of one mixing round: each word rotated right, then unmixed.
            r3 = ((r3 >> 5) | (r3 << 11)) & _MASK
            r3 = (r3 - k[j] - (r2 & r1) - (~r2 & r0)) & _MASK
            r2 = ((r2 >> 3) | (r2 << 13)) & _MASK
            r2 = (r2 - k[j - 1] - (r1 & r0) - (~r1 & r3)) & _MASK
            r1 = ((r1 >> 2) | (r1 << 14)) & _MASK
            r1 = (r1 - k[j - 2] - (r0 & r3) - (~r0 & r2)) & _MASK
            r0 = ((r0 >> 1) | (r0 << 15)) & _MASK
            r0 = (r0 - k[j - 3] - (r3 & r2) - (~r3 & r1)) & _MASK
            j -= 4
        if group < 2:
            # r-mash, the inverse of the mashing round between the groups of mixing rounds.
            r3 = (r3 - k[r2 & 63]) & _MASK
            r2 = (r2 - k[r1 & 63]) & _MASK
            r1 = (r1 - k[r0 & 63]) & _MASK
            r0 = (r0 - k[r3 & 63]) & _MASK
    return bytes((r0 & 0xFF, r0 >> 8, r1 & 0xFF, r1 >> 8, r2 & 0xFF, r2 >> 8, r3 & 0xFF, r3 >> 8))


def decrypt_block(key: bytes, effective_bits: int, block: bytes) -> bytes:
    """One 8-byte block decrypted (ECB), for checking the implementation against RFC 2268's
    test vectors. Raises ``ValueError`` for a bad key size or a block that is not 8 bytes."""
    if len(block) != 8:
        raise ValueError("RC2 works on 8-byte blocks")
    return _decrypt_block(expand_key(key, effective_bits), block)


def cbc_decrypt(
    key: bytes, effective_bits: int, iv: bytes, ciphertext: bytes | memoryview
) -> bytes:
    """RC2-CBC decryption of whole blocks, padding left in place (the caller checks it).

    Raises ``ValueError`` for a bad key size, an IV that is not 8 bytes, ciphertext that is not
    whole blocks, or more than :data:`MAX_PYTHON_RC2_BYTES`.
    """
    if len(iv) != 8 or len(ciphertext) % 8:
        raise ValueError("RC2-CBC needs an 8-byte IV and whole 8-byte blocks")
    if len(ciphertext) > MAX_PYTHON_RC2_BYTES:
        raise ValueError(
            f"RC2 content of {len(ciphertext)} bytes is larger than the "
            f"{MAX_PYTHON_RC2_BYTES // (1024 * 1024)} MB this reader decrypts in Python"
        )
    k = expand_key(key, effective_bits)
    view = memoryview(ciphertext)
    out = bytearray(len(view))
    previous = int.from_bytes(iv, "little")
    for offset in range(0, len(view), 8):
        block = view[offset : offset + 8]
        plain = int.from_bytes(_decrypt_block(k, block), "little") ^ previous
        out[offset : offset + 8] = plain.to_bytes(8, "little")
        previous = int.from_bytes(block, "little")
    return bytes(out)

"""The content of an envelope decrypted with its recovered key: AES-GCM, AES-CCM and
ChaCha20-Poly1305 (tag checked), and CBC with AES, Triple-DES, DES and RC2 (PKCS#7 padding
checked), copying a large plaintext as little as possible.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidTag, UnsupportedAlgorithm
from cryptography.hazmat.decrepit.ciphers.algorithms import RC2, SEED, Camellia, TripleDES
from cryptography.hazmat.primitives import padding as sym_padding
from cryptography.hazmat.primitives.ciphers import Cipher, CipherAlgorithm, modes
from cryptography.hazmat.primitives.ciphers.aead import AESCCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.ciphers.algorithms import AES

from smime_companion.core import rc2
from smime_companion.core.cms_algorithms import RC2_CBC_OID, ContentCipher
from smime_companion.core.envelope import DecryptFailure, Envelope
from smime_companion.core.verdicts import Decryption
from smime_companion.errors import one_line


def decrypt_content(envelope: Envelope, cipher: ContentCipher, cek: bytes) -> bytes:
    """The plaintext, after checking the CBC padding or the GCM tag. Raises DecryptFailure."""
    try:
        return _decrypt_with(envelope, cipher, cek)
    except UnsupportedAlgorithm as exc:  # e.g. an OpenSSL built without Triple-DES
        raise DecryptFailure(Decryption.UNSUPPORTED, f"{cipher.name}: {one_line(exc)}") from None


def _decrypt_with(envelope: Envelope, cipher: ContentCipher, cek: bytes) -> bytes:
    if len(cek) != cipher.key_size:
        raise DecryptFailure(
            Decryption.FAILED,
            f"content-encryption key of {len(cek)} bytes, {cipher.name} needs {cipher.key_size}",
        )
    if cipher.mode == "gcm":
        decryptor = Cipher(
            AES(cek), modes.GCM(envelope.iv, envelope.tag, min_tag_length=len(envelope.tag))
        ).decryptor()
        decryptor.authenticate_additional_data(envelope.aad)
        plaintext = decryptor.update(envelope.ciphertext)
        try:
            return plaintext + decryptor.finalize()
        except InvalidTag:
            raise DecryptFailure(
                Decryption.FAILED, "GCM tag mismatch: content was altered or the key is wrong"
            ) from None

    if cipher.mode == "ccm":
        return _open_sealed(AESCCM(cek, tag_length=len(envelope.tag)), envelope, "CCM")
    if cipher.mode == "chacha20-poly1305":
        return _open_sealed(ChaCha20Poly1305(cek), envelope, "Poly1305")
    if cipher.oid == RC2_CBC_OID and (cipher.effective_bits != 128 or len(cek) != 16):
        return _rc2_python_decrypt(envelope, cipher, cek)
    return _cbc_decrypt(_cbc_algorithm(cipher, cek), envelope.iv, envelope.ciphertext)


def _open_sealed(aead: AESCCM | ChaCha20Poly1305, envelope: Envelope, tag_name: str) -> bytes:
    """Decrypt with one of cryptography's one-shot AEADs, which take ciphertext and tag as one
    buffer. Raises DecryptFailure for a wrong tag, or for content longer than a CCM nonce leaves
    room to count (RFC 3610: the nonce and the length field share 15 bytes)."""
    try:
        return aead.decrypt(envelope.iv, bytes(envelope.ciphertext) + envelope.tag, envelope.aad)
    except InvalidTag:
        raise DecryptFailure(
            Decryption.FAILED, f"{tag_name} tag mismatch: content was altered or the key is wrong"
        ) from None
    except ValueError:
        raise DecryptFailure(
            Decryption.MALFORMED,
            f"{len(envelope.ciphertext)} bytes of content are more than a "
            f"{len(envelope.iv)}-byte {tag_name} nonce can count",
        ) from None


def _cbc_algorithm(cipher: ContentCipher, cek: bytes) -> CipherAlgorithm:
    """cryptography's block cipher for a CBC content cipher and its key."""
    if cipher.name == "3des-cbc":
        return TripleDES(cek)
    if cipher.name == "des-cbc":
        # Triple-DES with three equal keys is single DES (cryptography's 8-byte form of the
        # same thing is deprecated and warns).
        return TripleDES(cek * 3)
    if cipher.oid == RC2_CBC_OID:
        return RC2(cek)  # RC2-128: the one RC2 cryptography implements
    if cipher.name.startswith("camellia"):
        return Camellia(cek)
    if cipher.name == "seed-cbc":
        return SEED(cek)
    return AES(cek)


def _rc2_python_decrypt(envelope: Envelope, cipher: ContentCipher, cek: bytes) -> bytes:
    """RC2 at 40 or 64 effective bits (core.rc2, in Python), padding checked here."""
    try:
        padded = rc2.cbc_decrypt(cek, cipher.effective_bits, envelope.iv, envelope.ciphertext)
    except ValueError as exc:
        raise DecryptFailure(Decryption.UNSUPPORTED, f"{cipher.name}: {one_line(exc)}") from None
    return padded[:-8] + _unpadded(padded[-8:], 8)


def _cbc_decrypt(algorithm: CipherAlgorithm, iv: bytes, ciphertext: bytes | memoryview) -> bytes:
    """CBC-decrypt and remove the PKCS#7 padding, copying the plaintext as little as possible.

    Everything but the last block is decrypted in one call; the last block, decrypted on its
    own by the same context, goes through the padding check, and its few plaintext bytes are
    appended. A 25 MB body so costs the plaintext once plus one concatenation, instead of the
    three copies a padding object over the whole plaintext makes. Raises DecryptFailure for a bad
    padding.
    """
    block = len(iv)
    view = memoryview(ciphertext)
    decryptor = Cipher(algorithm, modes.CBC(iv)).decryptor()
    head = decryptor.update(view[:-block]) if len(view) > block else b""
    tail = _unpadded(decryptor.update(view[-block:]), block)
    return head + tail if tail else head


def _unpadded(last: bytes, block: int) -> bytes:
    """The plaintext of ``last``, the last block (of ``block`` bytes), without its PKCS#7
    padding. Raises DecryptFailure for a bad padding."""
    # cryptography's unpadder checks the padding (in constant time) on that one block.
    unpadder = sym_padding.PKCS7(block * 8).unpadder()
    try:
        return unpadder.update(last) + unpadder.finalize()
    except ValueError:
        raise DecryptFailure(
            Decryption.FAILED, "CBC padding is invalid: wrong key or altered content"
        ) from None

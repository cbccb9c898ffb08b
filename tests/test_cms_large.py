"""Large messages: ``core.cms.parse_cms`` cuts the big content out before asn1crypto parses the
rest, and ``core.open`` gives the same bytes as the message's author wrote, whatever the encoding.

Every message is made at test time with ``openssl cms`` over a body of about 30 MB: DER and BER
(``-stream``, which writes the content as a chunked constructed OCTET STRING inside indefinite
lengths), enveloped (AES-CBC and AES-GCM), opaque signed and detached signed. The content that
``open_message`` returns must be byte-identical to what openssl was given.
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from asn1crypto import cms
from cryptography import x509

from smime_companion.core.cms import CUT_MIN_BYTES, parse_cms, parse_content_info
from smime_companion.core.decrypt import decrypt
from smime_companion.core.mime import decode_transfer_encoding
from smime_companion.core.model import OpenResult
from smime_companion.core.open import open_message
from smime_companion.core.verdicts import Decryption, SignatureStatus
from smime_companion.core.verify import verify_signed_data
from smime_companion.errors import LimitExceeded, MalformedInput
from smime_companion.testing.pki import TestPki
from tests.conftest import load_identity
from tests.tools import mime_message, openssl_cms

LINE = "The quick brown fox jumps over the lazy dog, again and again and again.\r\n"


@pytest.fixture(scope="module")
def big_entity() -> bytes:
    """A MIME entity of about 30 MB (CRLF lines, so every tool keeps it byte for byte)."""
    return mime_message(body=LINE * (30 * 1024 * 1024 // len(LINE)), to="alice@example.org")


def _signer(pki: TestPki) -> list[str | Path]:
    return ["-signer", pki.cert("alice"), "-inkey", pki.key("alice")]


def _encrypt(pki: TestPki, data: bytes, *extra: str, outform: str = "SMIME") -> bytes:
    return openssl_cms(
        ["-encrypt", "-binary", "-outform", outform, *extra, "-recip", pki.cert("alice")], data
    )


def _sign(pki: TestPki, data: bytes, *extra: str, outform: str = "SMIME") -> bytes:
    return openssl_cms(
        ["-sign", "-binary", "-outform", outform, *extra, *_signer(pki), "-certfile",
         pki.intermediate],
        data,
    )  # fmt: skip


def _open(
    pki: TestPki, message: bytes, at: dt.datetime, anchors: Sequence[x509.Certificate]
) -> OpenResult:
    return open_message(message, identities=[load_identity(pki, "alice")], anchors=anchors, at=at)


@pytest.mark.parametrize(
    "extra",
    [("-aes256",), ("-stream", "-aes256"), ("-aes-256-gcm",), ("-stream", "-aes-256-gcm")],
    ids=["der-cbc", "ber-stream-cbc", "der-gcm", "ber-stream-gcm"],
)
def test_large_encrypted_message_opens_to_the_exact_plaintext(
    pki: TestPki,
    now: dt.datetime,
    anchors: Sequence[x509.Certificate],
    big_entity: bytes,
    extra: tuple[str, ...],
) -> None:
    result = _open(pki, _encrypt(pki, big_entity, *extra), now, anchors)
    assert result.decryption == Decryption.OK, result.error
    assert result.content == big_entity


@pytest.mark.parametrize("stream", [False, True], ids=["der", "ber-stream"])
def test_large_opaque_signed_message_verifies_and_gives_the_signed_bytes(
    pki: TestPki,
    now: dt.datetime,
    anchors: Sequence[x509.Certificate],
    big_entity: bytes,
    stream: bool,
) -> None:
    message = _sign(pki, big_entity, "-nodetach", *(["-stream"] if stream else []))
    result = _open(pki, message, now, anchors)
    assert result.signature == SignatureStatus.VALID, result.to_json()
    assert result.content == big_entity


def test_large_detached_signed_then_encrypted_message_opens_and_verifies(
    pki: TestPki, now: dt.datetime, anchors: Sequence[x509.Certificate], big_entity: bytes
) -> None:
    signed = _sign(pki, big_entity)  # multipart/signed
    result = _open(pki, _encrypt(pki, signed, "-stream", "-aes256"), now, anchors)
    assert (result.decryption, result.signature) == (Decryption.OK, SignatureStatus.VALID)
    assert result.content == big_entity


def test_a_changed_byte_deep_inside_large_signed_content_is_invalid(
    pki: TestPki, now: dt.datetime, anchors: Sequence[x509.Certificate], big_entity: bytes
) -> None:
    der = _sign(pki, big_entity, "-nodetach", outform="DER")
    where = der.index(b"lazy dog", len(der) // 2)
    tampered = der[:where] + b"LAZY" + der[where + 4 :]
    parsed = parse_cms(tampered)
    assert isinstance(parsed.content, bytes)
    outcome = verify_signed_data(
        parsed.info, parsed.content, anchors=anchors, at=now, from_addresses=["alice@example.org"]
    )
    assert outcome.status == SignatureStatus.INVALID


# --- parse_cms on its own ------------------------------------------------------------------------


def _cases(pki: TestPki, data: bytes) -> dict[str, bytes]:
    return {
        "enveloped-der": _encrypt(pki, data, "-aes256", outform="DER"),
        "enveloped-ber": _encrypt(pki, data, "-stream", "-aes256", outform="DER"),
        "auth-enveloped-der": _encrypt(pki, data, "-aes-256-gcm", outform="DER"),
        "auth-enveloped-ber": _encrypt(pki, data, "-stream", "-aes-256-gcm", outform="DER"),
        "signed-der": _sign(pki, data, "-nodetach", outform="DER"),
        "signed-ber": _sign(pki, data, "-nodetach", "-stream", outform="DER"),
    }


def _field_value(info: cms.ContentInfo) -> bytes | None:
    """The large field's value as asn1crypto reads it from a complete ContentInfo."""
    content = info["content"]
    if info["content_type"].native == "signed_data":
        econtent = content["encap_content_info"]["content"]
        return None if econtent.native is None else bytes(econtent)
    eci = content[
        "auth_encrypted_content_info"
        if info["content_type"].native == "authenticated_enveloped_data"
        else "encrypted_content_info"
    ]
    encrypted = eci["encrypted_content"].native
    return None if encrypted is None else bytes(encrypted)


def test_parse_cms_cuts_out_exactly_the_content_asn1crypto_reads(pki: TestPki) -> None:
    data = mime_message(body="x" * CUT_MIN_BYTES)  # several BER chunks with -stream
    for name, der in _cases(pki, data).items():
        full = parse_content_info(der)
        parsed = parse_cms(der)
        assert parsed.content is not None, name
        assert bytes(parsed.content) == _field_value(full), name
        assert _field_value(parsed.info) is None, name  # the field is gone from the rest
        # Everything else is unchanged: recipients, signer infos, certificates, algorithms.
        for key in full["content"]:
            if key in ("encrypted_content_info", "auth_encrypted_content_info"):
                kept = ["content_type", "content_encryption_algorithm"]
            elif key == "encap_content_info":
                kept = ["content_type"]
            else:
                assert parsed.info["content"][key].dump() == full["content"][key].dump(), name
                continue
            for field in kept:
                expected = full["content"][key][field].dump()
                assert parsed.info["content"][key][field].dump() == expected, (name, field)


def test_parse_cms_parses_small_objects_whole(pki: TestPki) -> None:
    der = _encrypt(pki, b"a short note\r\n", "-aes256", outform="DER")
    parsed = parse_cms(der)
    assert parsed.content is None
    assert parsed.info.dump() == parse_content_info(der).dump()


def test_decrypt_with_the_cut_ciphertext_equals_decrypt_of_the_whole(pki: TestPki) -> None:
    alice = load_identity(pki, "alice")
    for data in (b"", b"fifteen bytes!!", b"sixteen bytes!!!", b"x" * 100_003):
        for extra in (("-aes256",), ("-stream", "-aes192"), ("-aes-128-gcm",), ("-des3",)):
            der = _encrypt(pki, data, *extra, outform="DER")
            parsed = parse_cms(der)
            cut = decrypt(parsed.info, [alice], ciphertext=parsed.content)
            whole = decrypt(parse_content_info(der), [alice])
            assert cut.status == whole.status == Decryption.OK, (extra, cut.error)
            assert cut.plaintext == whole.plaintext == data, (extra, len(data))


@pytest.mark.parametrize(
    "mangle",
    [
        lambda der: der + b"\x00",  # trailing garbage
        lambda der: der[: len(der) // 2],  # truncated
        lambda der: der[:-2] if der.endswith(b"\x00\x00") else der[:-1],  # one byte short
        lambda der: b"\x31" + der[1:],  # a SET where the ContentInfo SEQUENCE belongs
    ],
    ids=["trailing", "truncated", "short", "not-a-sequence"],
)
def test_parse_cms_rejects_what_parse_content_info_rejects(
    pki: TestPki, mangle: Callable[[bytes], bytes]
) -> None:
    # Large enough that even half of it is cut rather than parsed whole (CUT_MIN_BYTES).
    for der in _cases(pki, b"x" * 3 * CUT_MIN_BYTES).values():
        broken = mangle(der)
        with pytest.raises(MalformedInput):
            parse_content_info(broken)
        with pytest.raises(MalformedInput):
            parse_cms(broken)


def _rechunked(der: bytes, size: int, nested: bool) -> bytes:
    """``openssl cms -stream`` output with its encryptedContent re-chunked: ``size``-byte OCTET
    STRING chunks, grouped in constructed (BER) chunks of their own when ``nested``."""
    # openssl writes the encryptedContent as [0] with an indefinite length, then 04 chunks.
    start = der.index(b"\xa0\x80\x04")
    pos, pieces = start + 2, []
    while der[pos : pos + 2] != b"\x00\x00":
        assert der[pos] == 0x04
        if der[pos + 1] & 0x80:
            octets = der[pos + 1] & 0x7F
            length = int.from_bytes(der[pos + 2 : pos + 2 + octets], "big")
            pos += 2 + octets
        else:
            length = der[pos + 1]
            pos += 2
        pieces.append(der[pos : pos + length])
        pos += length
    ciphertext = b"".join(pieces)
    assert ciphertext == bytes(
        parse_content_info(der)["content"]["encrypted_content_info"]["encrypted_content"].native
    )
    chunks = [
        bytes([0x04, len(piece)]) + piece
        for piece in (ciphertext[i : i + size] for i in range(0, len(ciphertext), size))
    ]
    if nested:
        chunks = [
            b"\x24\x80" + b"".join(chunks[i : i + 100]) + b"\x00\x00"
            for i in range(0, len(chunks), 100)
        ]
    return der[: start + 2] + b"".join(chunks) + der[pos:]


@pytest.mark.parametrize("nested", [False, True], ids=["flat", "chunks-of-chunks"])
def test_ber_content_in_small_chunks_decrypts_to_the_same_plaintext(
    pki: TestPki, nested: bool
) -> None:
    # 64-byte chunks: smaller than any streaming encoder writes, within the chunk budget.
    data = b"y" * 3 * CUT_MIN_BYTES
    der = _rechunked(_encrypt(pki, data, "-stream", "-aes256", outform="DER"), 64, nested)
    parsed = parse_cms(der)
    assert parsed.content is not None  # cut by the walker, not parsed whole by asn1crypto
    outcome = decrypt(parsed.info, [load_identity(pki, "alice")], ciphertext=parsed.content)
    assert outcome.status == Decryption.OK, outcome.error
    assert outcome.plaintext == data


@pytest.mark.parametrize("nested", [False, True], ids=["flat", "chunks-of-chunks"])
def test_content_in_one_byte_chunks_is_refused_as_a_flood_not_walked_to_its_end(
    pki: TestPki, nested: bool
) -> None:
    der = _rechunked(
        _encrypt(pki, b"z" * 3 * CUT_MIN_BYTES, "-stream", "-aes256", outform="DER"), 1, nested
    )
    with pytest.raises(LimitExceeded, match="chunks"):
        parse_cms(der)


@pytest.mark.parametrize("size", [3_000, 3_000_000], ids=["small", "large"])
def test_base64_bodies_of_any_size_decode_alike_and_refuse_the_same_corruption(size: int) -> None:
    data = bytes(range(256)) * (size // 256) + b"xy"  # two bytes short of a group: padded
    text = base64.encodebytes(data).replace(b"\n", b"\r\n")
    assert decode_transfer_encoding(text, "base64") == data
    assert decode_transfer_encoding(text.replace(b"=", b""), "base64") == data  # padding stripped
    middle = len(text) // 2
    for corrupt in (
        text[:middle] + b"*" + text[middle:],  # not a base64 character
        text[:middle] + b"==" + text[middle:],  # padding in the middle
        text.rstrip() + b"\r\nQUJD\r\n",  # text after the padding
    ):
        with pytest.raises(MalformedInput):
            decode_transfer_encoding(corrupt, "base64")

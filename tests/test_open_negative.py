"""Damaged and hostile messages give the right status or one clean line, never an exception.

Each case also runs under a hang guard (pytest-timeout): hostile input must cost bounded time.
"""

from __future__ import annotations

import base64
import datetime as dt

import pytest
from cryptography import x509

from smime_companion.core.mime import multipart_parts, parse_entity
from smime_companion.core.model import OpenResult
from smime_companion.core.open import open_message
from smime_companion.core.verdicts import Decryption, SignatureStatus
from smime_companion.testing.pki import TestPki
from tests.conftest import load_identity
from tests.tools import mime_message, openssl_cms

pytestmark = pytest.mark.timeout(10)


@pytest.fixture(scope="module")
def signed(pki: TestPki) -> bytes:
    """Alice's detached multipart/signed message."""
    return openssl_cms(
        ["-sign", "-signer", pki.cert("alice"), "-inkey", pki.key("alice"),
         "-certfile", pki.intermediate],
        mime_message(),
    )  # fmt: skip


@pytest.fixture(scope="module")
def encrypted(pki: TestPki) -> bytes:
    """A message encrypted to Bob (AES-256-CBC)."""
    return openssl_cms(["-encrypt", "-aes256", "-recip", pki.cert("bob")], mime_message())


def _open(raw: bytes, pki: TestPki, anchors: tuple[x509.Certificate, ...], now: dt.datetime,
          user: str = "bob") -> OpenResult:  # fmt: skip
    return open_message(raw, identities=[load_identity(pki, user)], anchors=anchors, at=now)


def test_the_untouched_signed_message_is_valid(signed, pki, anchors, now) -> None:
    result = _open(signed, pki, anchors, now)
    assert result.signature == SignatureStatus.VALID
    assert result.signer == "alice@example.org"


def test_one_changed_byte_of_signed_content_is_invalid(signed, pki, anchors, now) -> None:
    forged = signed.replace(b"this is a test", b"this is a tesT")
    assert forged != signed
    result = _open(forged, pki, anchors, now)
    assert result.signature == SignatureStatus.INVALID
    assert b"tesT" in result.content  # the content is still shown, flagged invalid


def test_a_changed_signature_byte_is_invalid(signed, pki, anchors, now) -> None:
    _, signature_part = multipart_parts(parse_entity(signed, 1 << 20), 10)
    signature_entity = parse_entity(signature_part, 1 << 20)
    der = bytearray(signature_entity.decoded_body())
    der[-10] ^= 0x01  # inside the signature value, the last field of the only SignerInfo
    header_len = len(signature_part) - len(signature_entity.body)
    forged_part = signature_part[:header_len] + base64.encodebytes(bytes(der))
    result = _open(signed.replace(signature_part, forged_part), pki, anchors, now)
    assert result.signature == SignatureStatus.INVALID


def test_mail_to_someone_else_has_no_key(encrypted, pki, anchors, now) -> None:
    result = _open(encrypted, pki, anchors, now, user="alice")
    assert result.decryption == Decryption.NO_KEY
    assert result.error and "decryption" in result.error
    assert not result.ok


@pytest.mark.parametrize("cut", [0.5, 0.9], ids=["half", "most"])
def test_truncated_base64_is_malformed(encrypted, pki, anchors, now, cut: float) -> None:
    result = _open(encrypted[: int(len(encrypted) * cut)], pki, anchors, now)
    assert result.decryption == Decryption.MALFORMED
    assert result.error and "\n" not in result.error


def test_garbage_base64_is_malformed(encrypted, pki, anchors, now) -> None:
    head = encrypted.split(b"\n\n", 1)[0]
    result = _open(head + b"\n\n!!!! not base64 at all ****\n", pki, anchors, now)
    assert result.decryption == Decryption.MALFORMED
    assert "base64" in (result.error or "")


def test_cms_garbage_is_malformed(encrypted, pki, anchors, now) -> None:
    head = encrypted.split(b"\n\n", 1)[0]
    garbage = base64.encodebytes(b"\x30\x82\x01\x00" + bytes(range(256)))
    result = _open(head + b"\n\n" + garbage, pki, anchors, now)
    assert result.decryption == Decryption.MALFORMED
    assert result.error and "\n" not in result.error


def test_a_thousand_nested_multiparts_cost_bounded_work(pki, anchors, now) -> None:
    raw = b"From: a@example.org\r\n"
    inner = b"Content-Type: text/plain\r\n\r\nhello\r\n"
    for level in range(1000):
        b = f"b{level}".encode()
        inner = (
            b'Content-Type: multipart/mixed; boundary="' + b + b'"\r\n\r\n--' + b + b"\r\n"
            + inner + b"\r\n--" + b + b"--\r\n"
        )  # fmt: skip
    result = _open(raw + inner, pki, anchors, now)
    assert result.decryption == Decryption.NONE and result.signature == SignatureStatus.NONE
    assert "mime-limit-reached" in result.warnings


def test_a_thousand_nested_signed_data_layers_stop_at_the_layer_limit(pki, anchors, now) -> None:
    data = mime_message()
    for _ in range(12):
        data = openssl_cms(
            ["-sign", "-nodetach", "-signer", pki.cert("alice"), "-inkey", pki.key("alice")], data
        )
    result = _open(data, pki, anchors, now)
    assert result.error is not None and "layers" in result.error
    assert len(result.layers) == 8


def test_a_one_megabyte_header_gives_one_clean_line(pki, anchors, now) -> None:
    raw = b"Subject: " + b"x" * 1_000_000 + b"\r\n\r\nbody\r\n"
    result = _open(raw, pki, anchors, now)
    assert result.error is not None and "header section" in result.error
    assert "\n" not in result.error
    assert not result.ok


def test_a_detached_signature_without_its_content_is_malformed(signed, pki, anchors, now) -> None:
    entity = signed.split(b"\n\n", 1)[1]
    boundary = signed.split(b'boundary="', 1)[1].split(b'"', 1)[0]
    broken = signed.replace(entity, b"--" + boundary + b"--\n")
    result = _open(broken, pki, anchors, now)
    assert result.signature == SignatureStatus.MALFORMED
    assert result.error


def test_a_compression_bomb_stops_at_the_size_limit(pki, anchors, now) -> None:
    import zlib

    from asn1crypto import cms

    from smime_companion.core.open import Limits

    bomb = zlib.compress(b"\0" * 20_000_000, 9)
    info = cms.ContentInfo(
        {
            "content_type": "compressed_data",
            "content": {
                "version": "v0",
                "compression_algorithm": {"algorithm": "zlib"},
                "encap_content_info": {"content_type": "data", "content": bomb},
            },
        }
    )
    raw = (
        b"Content-Type: application/pkcs7-mime; smime-type=compressed-data\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n" + base64.encodebytes(info.dump())
    )
    result = open_message(raw, at=now, limits=Limits(max_content_bytes=1_000_000))
    assert result.error is not None and "expands past" in result.error


def test_a_compression_bomb_under_the_size_limit_is_refused_by_its_ratio(now) -> None:
    import zlib

    from asn1crypto import cms

    bomb = zlib.compress(b"\0" * 50_000_000, 9)  # 50 MB from about 50 KB: a 1000x ratio
    info = cms.ContentInfo(
        {
            "content_type": "compressed_data",
            "content": {
                "version": "v0",
                "compression_algorithm": {"algorithm": "zlib"},
                "encap_content_info": {"content_type": "data", "content": bomb},
            },
        }
    )
    raw = (
        b"Content-Type: application/pkcs7-mime; smime-type=compressed-data\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n" + base64.encodebytes(info.dump())
    )
    result = open_message(raw, at=now)  # default limits: 256 MB would admit it
    assert result.error is not None and "expands past" in result.error

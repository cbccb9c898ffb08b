"""Hostile messages through ``open_message``: each ends in a status or one clean line, within a
hang guard (pytest-timeout) and a memory bound (the tracemalloc peak while it is opened).

Complements ``tests/test_open_negative.py`` (1,000 nested multiparts, 12 nested SignedData, a
1 MB header, a bomb under a 1 MB limit) and ``tests/test_open_mutations.py`` (mutated signatures):
the cases here are the ones those do not cover.
"""

from __future__ import annotations

import base64
import datetime as dt
import json

import pytest
from cryptography import x509

from smime_companion.core.entry_derivation import derive_entry
from smime_companion.core.model import OpenResult
from smime_companion.core.open import DEFAULT_LIMITS, Limits, open_message
from smime_companion.core.verdicts import Decryption, SignatureStatus
from smime_companion.testing.pki import TestPki
from tests.chaos import hostile
from tests.conftest import load_identity
from tests.tools import mime_message, openssl_cms

pytestmark = pytest.mark.timeout(30)

MB = 1 << 20


def _open(
    raw: bytes,
    pki: TestPki,
    anchors: tuple[x509.Certificate, ...],
    now: dt.datetime,
    limits: Limits | None = None,
) -> tuple[OpenResult, int]:
    """Open ``raw`` as bob; return the result and the allocation peak."""
    identities = [load_identity(pki, "bob")]
    return hostile.measured(
        lambda: open_message(
            raw, identities=identities, anchors=anchors, at=now, limits=limits or DEFAULT_LIMITS
        )
    )


def _one_line(error: str | None) -> bool:
    return error is not None and "\n" not in error and len(error) < 300


def test_a_compression_bomb_stops_at_the_content_limit_with_memory_bounded_by_it(
    pki, anchors, now
) -> None:
    limit = 16 * MB
    bomb = hostile.compression_bomb(64 * MB)  # 64 MiB of zeros in about 65 KB
    result, peak = _open(bomb, pki, anchors, now, Limits(max_content_bytes=limit))
    assert _one_line(result.error) and "expands past" in (result.error or "")
    assert not result.ok
    # What the inflater held, and a copy: never the whole expansion.
    assert peak < 3 * limit


def test_ber_nested_a_hundred_thousand_levels_deep_is_malformed_not_a_recursion_crash(
    pki, anchors, now
) -> None:
    result, peak = _open(hostile.deep_ber(100_000), pki, anchors, now)
    assert result.decryption == Decryption.MALFORMED
    assert _one_line(result.error)
    assert peak < 32 * MB


def test_five_thousand_recipient_infos_before_ours_still_decrypt_with_bounded_cost(
    pki, anchors, now
) -> None:
    result, peak = _open(hostile.many_recipients(pki, 5000), pki, anchors, now)
    assert result.decryption == Decryption.OK
    assert b"this is a test" in result.content
    assert peak < 64 * MB


def test_five_thousand_recipient_infos_none_ours_give_no_key(pki, anchors, now) -> None:
    raw = hostile.many_recipients(pki, 5000)
    identities = [load_identity(pki, "carol")]  # not among the recipients
    result, _ = hostile.measured(
        lambda: open_message(raw, identities=identities, anchors=anchors, at=now)
    )
    assert result.decryption == Decryption.NO_KEY
    assert _one_line(result.error)


def test_fifty_look_alike_issuers_beside_the_real_one_leave_the_signature_valid(
    pki, anchors, now
) -> None:
    # Every look-alike has the intermediate's name: the path builder must try and reject each.
    result, peak = _open(hostile.huge_chain(pki, 50, keep_real=True), pki, anchors, now)
    assert result.signature == SignatureStatus.VALID
    assert peak < 32 * MB


def test_fifty_look_alike_issuers_without_the_real_one_are_never_trusted(pki, anchors, now) -> None:
    result, _ = _open(hostile.huge_chain(pki, 50, keep_real=False), pki, anchors, now)
    assert result.signature == SignatureStatus.UNTRUSTED


def test_five_hundred_certificates_in_a_signed_data_cost_bounded_work_and_are_never_valid(
    pki, anchors, now
) -> None:
    # The look-alikes come first: past verify.MAX_CERTIFICATES (64) the rest is not read, so
    # the signer's own certificate is not found. Safe: at worst a good message looks untrusted.
    result, peak = _open(hostile.huge_chain(pki, 500, keep_real=True), pki, anchors, now)
    assert result.signature not in (SignatureStatus.VALID, SignatureStatus.NONE)
    assert peak < 64 * MB
    # ...and the reason says so, rather than claiming the certificate is missing.
    reason = result.layers[0].signers[0].reason or ""
    assert "not among the first 64 certificates" in reason


def test_twenty_thousand_header_fields_are_parsed_in_bounded_time(pki, anchors, now) -> None:
    result, peak = _open(hostile.many_header_fields(20_000), pki, anchors, now)
    assert result.error is None
    assert result.header_text("X-H19999") == "v"
    assert peak < 64 * MB


@pytest.mark.parametrize(
    "subject", hostile.BROKEN_HEADER_VALUES, ids=range(len(hostile.BROKEN_HEADER_VALUES))
)
def test_malformed_utf8_and_encoded_words_in_headers_leave_the_signature_valid_and_readable(
    pki, anchors, now, subject: bytes
) -> None:
    result, _ = _open(hostile.broken_headers_signed(pki, subject), pki, anchors, now)
    # The outer headers are not signed: the broken ones change nothing about the signature.
    assert result.signature == SignatureStatus.VALID
    for name in ("Subject", "From", "X-Broken-0", "X-Broken-4"):
        text = result.header_text(name)
        assert text is None or isinstance(text, str)
    assert result.to_json()  # the cache and --json serialise it without error


RAW_UTF8_PARAMETER = b"Content-Type: text/plain; name*=utf-8''\xe2\x82\xac\r\n\r\nx\r\n"


def test_raw_utf8_in_an_rfc2231_parameter_opens_without_an_exception(now) -> None:
    # Found by bench/fuzz_open.py: the RFC 2231 decoder assumed percent-escaped ASCII.
    result = open_message(RAW_UTF8_PARAMETER, at=now)
    assert result.error is None


@pytest.mark.parametrize(
    "parameters", ["name*=a; name*0=b", "name*0=a; name*=utf-8''b", "name*0=a; name*0*=b"]
)
def test_rfc2231_pieces_the_email_package_cannot_join_are_read_as_written(
    parameters: str, now: dt.datetime
) -> None:
    # Found by bench/fuzz_open.py: "name*" beside "name*0" made the email package sort None
    # against 0, and open_message raised TypeError. The boundary next to them still counts.
    raw = (
        f"From: alice@example.org\r\nSubject: Pieces\r\n"
        f'Content-Type: multipart/mixed; boundary="b"; {parameters}\r\n\r\n'
        "--b\r\nContent-Type: text/plain\r\n\r\nthe text\r\n--b--\r\n"
    ).encode()
    result = open_message(raw, at=now)
    assert result.error is None
    assert derive_entry(raw, result, now).body == "the text"


def test_a_signed_attribute_value_under_universal_tag_8_gives_a_status_not_an_exception(
    pki, anchors, now
) -> None:
    # Found by bench/fuzz_open.py: asn1crypto could not re-encode the attributes and raised.
    result = open_message(hostile.capability_with_tag_8(pki), anchors=anchors, at=now)
    assert result.signature not in (SignatureStatus.VALID, SignatureStatus.NONE)


@pytest.mark.parametrize("kind", ["multipart", "message"])
def test_a_deep_nest_of_containers_is_indexed_with_memory_linear_in_its_size(
    kind: str, now: dt.datetime
) -> None:
    # Each level cut out of its parent is a copy of nearly the whole message; holding every
    # level while descending cost 33 times the message (the walk stops at 32 levels).
    raw = hostile.nested_containers(kind, 20_000)
    assert len(raw) > MB

    def open_and_index() -> tuple[OpenResult, int]:
        result = open_message(raw, at=now)
        return result, len(derive_entry(raw, result, now).attachments)

    (result, attachments), peak = hostile.measured(open_and_index)
    assert result.error is None
    # Past the depth limit the rest of the nest is one attachment, not lost.
    assert attachments == 1
    assert peak < 4 * len(raw)


@pytest.mark.parametrize(
    "value",
    [
        b"\x01\x05Alice",  # a BOOLEAN five bytes long: cryptography raises ValueError
        b"\x03\x05\x00lice",  # a BIT STRING under CN: cryptography raises TypeError
    ],
)
def test_a_signer_certificate_whose_names_cannot_be_read_is_unreadable_not_raised(
    value: bytes, pki: TestPki, anchors: tuple[x509.Certificate, ...], now: dt.datetime
) -> None:
    # cryptography parses names only when first read: such a certificate loaded, checked the
    # signature, and the report's rfc4514_string() then raised (found by bench/fuzz_open.py:
    # the daemon cached the message unindexed, open --json failed). core.cert_loading now
    # reads the names when it loads a certificate and refuses one it cannot.
    signed = openssl_cms(
        ["-sign", "-nodetach", "-signer", pki.cert("alice"), "-inkey", pki.key("alice")],
        mime_message(),
    )
    head, body = signed.split(b"\n\n", 1)
    der = base64.b64decode(body)
    common_name = b"\x0c\x05Alice"  # the subject's CN=Alice, a UTF8String
    assert der.count(common_name) == 1
    raw = head + b"\n\n" + base64.encodebytes(der.replace(common_name, value))

    result = open_message(raw, anchors=anchors, at=now)
    assert result.signature == SignatureStatus.UNTRUSTED
    assert "1 could not be" in result.signers[0].reason
    report = json.loads(derive_entry(raw, result, now).report)
    assert report["signature"] == "untrusted"

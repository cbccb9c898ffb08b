"""MIME is read on the raw bytes: parts are exact slices, never re-serialised."""

from __future__ import annotations

import binascii

import pytest

from smime_companion.core.mime import (
    addresses,
    decode_transfer_encoding,
    multipart_parts,
    parse_content_type,
    parse_entity,
    to_crlf,
)
from smime_companion.errors import LimitExceeded, MalformedInput

LIMIT = 64 * 1024

SIGNED = (
    b"From: Alice <alice@example.org>\r\n"
    b'Content-Type: multipart/signed; protocol="application/pkcs7-signature";\r\n'
    b' micalg=sha-256; boundary="b1"\r\n\r\n'
    b"preamble\r\n"
    b"--b1\r\n"
    b"Content-Type: text/plain\r\n\r\n"
    b"line one  \r\n"
    b">From the start\r\n"
    b"\r\n"
    b"--b1\r\n"
    b"Content-Type: application/pkcs7-signature\r\n\r\n"
    b"AAAA\r\n"
    b"--b1--\r\n"
    b"epilogue\r\n"
)


def test_header_fields_are_unfolded_and_kept_in_order() -> None:
    entity = parse_entity(SIGNED, LIMIT)
    assert [name for name, _ in entity.fields] == ["From", "Content-Type"]
    assert entity.content_type.mime_type == "multipart/signed"
    assert entity.content_type.param("micalg") == "sha-256"
    assert entity.content_type.param("protocol") == "application/pkcs7-signature"


@pytest.mark.parametrize(
    "value",
    ["image/png\r0100", "text/pl ain; charset=utf-8", "message/rfc822\u00fe", "image/", "png"],
)
def test_a_media_type_that_is_no_type_slash_subtype_is_text_plain(value: str) -> None:
    # RFC 2045 section 5.2; the email package would keep the CR, the space or the letter, and
    # the type then reached headers the reader and the drafts write.
    assert parse_content_type(value).mime_type == "text/plain"
    assert parse_content_type("Image/PNG; name*=utf-8''a%20b").mime_type == "image/png"


def test_parts_are_exact_slices_without_the_crlf_before_the_delimiter() -> None:
    first, second = multipart_parts(parse_entity(SIGNED, LIMIT), 10)
    # Trailing spaces, ">From" and the blank last line survive byte for byte.
    assert first == b"Content-Type: text/plain\r\n\r\nline one  \r\n>From the start\r\n"
    assert second == b"Content-Type: application/pkcs7-signature\r\n\r\nAAAA"


def test_lf_only_messages_split_the_same_way() -> None:
    lf = SIGNED.replace(b"\r\n", b"\n")
    first, _ = multipart_parts(parse_entity(lf, LIMIT), 10)
    assert first == b"Content-Type: text/plain\n\nline one  \n>From the start\n"
    assert to_crlf(first) == b"Content-Type: text/plain\r\n\r\nline one  \r\n>From the start\r\n"


def test_a_boundary_text_inside_a_line_is_not_a_delimiter() -> None:
    raw = b'Content-Type: multipart/mixed; boundary="x"\r\n\r\n--x\r\n\r\nsee --x here\r\n--x--\r\n'
    assert multipart_parts(parse_entity(raw, LIMIT), 10) == [b"\r\nsee --x here"]


def test_a_multipart_without_boundary_is_malformed() -> None:
    with pytest.raises(MalformedInput, match="boundary"):
        multipart_parts(parse_entity(b"Content-Type: multipart/mixed\r\n\r\nx", LIMIT), 10)


def test_too_many_parts_hit_the_limit() -> None:
    body = b"".join(b"--x\r\n\r\npart\r\n" for _ in range(20)) + b"--x--\r\n"
    raw = b'Content-Type: multipart/mixed; boundary="x"\r\n\r\n' + body
    with pytest.raises(LimitExceeded, match="more than 5 MIME parts"):
        multipart_parts(parse_entity(raw, LIMIT), 5)


def test_a_huge_header_section_hits_the_limit() -> None:
    raw = b"Subject: " + b"x" * (LIMIT + 10) + b"\r\n\r\nbody"
    with pytest.raises(LimitExceeded, match="header section"):
        parse_entity(raw, LIMIT)


def test_a_line_that_is_not_a_header_field_is_malformed() -> None:
    with pytest.raises(MalformedInput, match="not a field"):
        parse_entity(b"this is not a header\r\n\r\nbody", LIMIT)
    stray = b"From: a@example.org\r\nstray line\r\nTo: b@example.org\r\n\r\nbody"
    with pytest.raises(MalformedInput, match="not a field"):
        parse_entity(stray, LIMIT)  # a draft stays strict
    # As received, and as content: a stray line that fields follow continues the field before
    # it; one after the last field starts the body.
    for mode in ({"received": True}, {"as_content": True}):
        entity = parse_entity(stray, LIMIT, **mode)
        assert entity.fields == (("From", "a@example.org stray line"), ("To", "b@example.org"))
        last = parse_entity(b"From: a@example.org\r\nstray line\r\n\r\nbody", LIMIT, **mode)
        assert (last.fields, last.body) == ((("From", "a@example.org"),), b"stray line\r\n\r\nbody")


def test_base64_tolerates_line_breaks_and_missing_padding_but_not_garbage() -> None:
    assert decode_transfer_encoding(b"aGVs\r\nbG8", "base64") == b"hello"
    with pytest.raises(MalformedInput, match="base64"):
        decode_transfer_encoding(b"aGVs*bG8=", "base64")


def test_quoted_printable_is_decoded() -> None:
    assert decode_transfer_encoding(b"caf=C3=A9=\r\n!", "quoted-printable") == "café!".encode()


@pytest.mark.parametrize(
    "value", ['"base64"', " Base64 ", "base64; charset=utf-8", "base64 (as sent)", "'base64'"]
)
def test_a_transfer_encoding_written_loosely_is_read_as_its_token(value: str) -> None:
    # Web mailers and scripts quote it or write more after it; readers go by the token.
    entity = parse_entity(f"Content-Transfer-Encoding: {value}\r\n\r\naGVsbG8=".encode(), LIMIT)
    assert (entity.transfer_encoding, entity.decoded_body()) == ("base64", b"hello")
    for absent in ("", '""'):
        bare = parse_entity(f"Content-Transfer-Encoding: {absent}\r\n\r\nx".encode(), LIMIT)
        assert bare.transfer_encoding == "7bit"


@pytest.mark.parametrize("name", ["x-uuencode", "uuencode", "x-uue"])
def test_a_uuencoded_attachment_is_its_data(name: str) -> None:
    # As Pegasus Mail and early Netscape sent attachments; encoded by Python's binascii.
    data = bytes(range(256)) * 3
    lines = b"".join(binascii.b2a_uu(data[i : i + 45]) for i in range(0, len(data), 45))
    body = b"begin 644 table.bin\r\n" + lines.replace(b"\n", b"\r\n") + b"`\r\nend\r\n"
    assert decode_transfer_encoding(body, name) == data
    assert decode_transfer_encoding(b"#86)C\n`\nend\n", name) == b"abc"  # no begin line
    assert decode_transfer_encoding(b"begin 644 x\n\x00garbage\n#86)C\nend\n", name) == b"abc"


def test_addresses_are_lower_cased_and_names_dropped() -> None:
    assert addresses('"Alice A." <Alice@Example.ORG>, bob@example.org') == (
        "alice@example.org",
        "bob@example.org",
    )
    assert addresses(None) == ()

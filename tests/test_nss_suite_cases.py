"""The cases of Thunderbird's S/MIME test messages (comm-central's mailnews/test/data/smime,
made by NSS's smime.sh; expectations in mailnews/mime/test/unit/test_smime_decrypt.js) that no
other test here makes in the same shape, made with openssl and judged as Thunderbird judges
them: a detached signature whose SignedData carries other content than the part shown
("mismatch-econtent"), one person's signature inside another's ("alice ... dave.sig"), an
envelope wrapped in a signed multipart/mixed ("env.mixed.dsig"), and a Date six hours after the
signing time ("alice.future.dsig")."""

from __future__ import annotations

import base64
import datetime as dt
import email.utils

from cryptography import x509

from smime_companion.core.open import open_message
from smime_companion.core.verdicts import WARN_DATE_MISMATCH, Decryption, SignatureStatus
from smime_companion.testing.pki import TestPki
from tests.conftest import load_identity
from tests.tools import openssl_cms

REAL = b"Content-Type: text/plain\r\n\r\nThis is a test message from Alice to Bob.\r\n"
FAKE = b"Content-Type: text/plain\r\n\r\nThis is a FAKE message NOT from Alice to Bob.\r\n"


def _signer(pki: TestPki, user: str) -> list[str]:
    return ["-signer", str(pki.cert(user)), "-inkey", str(pki.key(user)), "-certfile",
            str(pki.intermediate)]  # fmt: skip


def test_a_detached_signature_carrying_other_content_is_invalid_for_the_part_shown(
    pki: TestPki, anchors: tuple[x509.Certificate, ...], now: dt.datetime
) -> None:
    # The signature part holds an opaque signature of the real text; the part beside it,
    # which a reader shows, is another text. Only the part shown may be judged.
    opaque = openssl_cms(["-sign", "-nodetach", "-binary", *_signer(pki, "alice"),
                          "-outform", "DER"], REAL)  # fmt: skip
    message = (
        b"From: alice@example.org\r\nTo: bob@example.org\r\nSubject: mismatch\r\n"
        b'MIME-Version: 1.0\r\nContent-Type: multipart/signed; protocol="application/pkcs7-'
        b'signature"; micalg=sha-256; boundary="s"\r\n\r\n--s\r\n' + FAKE + b"\r\n--s\r\n"
        b"Content-Type: application/pkcs7-signature; name=smime.p7s\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n" + base64.encodebytes(opaque) + b"--s--\r\n"
    )
    result = open_message(message, anchors=anchors, at=now)
    assert result.signature == SignatureStatus.INVALID
    assert b"FAKE" in result.content  # what is shown is what was judged


def test_a_signature_inside_another_signers_is_judged_against_the_one_from(
    pki: TestPki, anchors: tuple[x509.Certificate, ...], now: dt.datetime
) -> None:
    # Alice's signed message signed again by Carol and sent From Carol: the text is Alice's
    # words under Carol's name; Thunderbird says bad, here the inner signer is not the sender.
    inner = openssl_cms(["-sign", *_signer(pki, "alice")], REAL)
    message = openssl_cms(["-sign", "-nodetach", *_signer(pki, "carol"), "-from",
                           "carol@example.org", "-to", "bob@example.org", "-subject", "Fwd"],
                          inner)  # fmt: skip
    result = open_message(message, anchors=anchors, at=now)
    assert [layer.signature for layer in result.layers] == [
        SignatureStatus.VALID,
        SignatureStatus.EMAIL_MISMATCH,
    ]
    assert result.signature == SignatureStatus.EMAIL_MISMATCH


def test_an_envelope_inside_a_signed_multipart_is_named_and_left_sealed(
    pki: TestPki, anchors: tuple[x509.Certificate, ...], now: dt.datetime
) -> None:
    # Thunderbird rejects the encryption layer and keeps the signature: so does this reader.
    envelope = openssl_cms(["-encrypt", "-aes256", str(pki.cert("bob"))], REAL)
    mixed = (
        b'Content-Type: multipart/mixed; boundary="m"\r\n\r\n--m\r\n'
        b"Content-Type: text/plain\r\n\r\nSee below.\r\n--m\r\n" + envelope + b"\r\n--m--\r\n"
    )
    message = openssl_cms(["-sign", *_signer(pki, "alice"), "-from", "alice@example.org",
                           "-to", "bob@example.org", "-subject", "Mixed"], mixed)  # fmt: skip
    bob = load_identity(pki, "bob")
    result = open_message(message, identities=[bob], anchors=anchors, at=now)
    assert (result.decryption, result.signature) == (Decryption.NONE, SignatureStatus.VALID)
    assert result.warnings == ("partially-encrypted",)
    assert b"from Alice to Bob" not in result.content


def test_a_date_hours_from_the_signing_time_is_named_and_the_signature_stays_sound(
    pki: TestPki, anchors: tuple[x509.Certificate, ...], now: dt.datetime
) -> None:
    # An old signed message sent again under a new Date (which the signature does not cover):
    # Thunderbird calls the signature invalid past an hour; here it is valid, and the reader
    # says the date is in doubt.
    signed = openssl_cms(["-sign", "-crlfeol", *_signer(pki, "alice")], REAL)

    def dated(when: dt.datetime | None) -> bytes:
        date = f"Date: {email.utils.format_datetime(when)}\r\n" if when else ""
        return f"From: alice@example.org\r\nTo: bob@example.org\r\n{date}".encode() + signed

    [signer] = open_message(dated(None), anchors=anchors, at=now).signers
    assert signer.signing_time is not None
    for shift, named in [(6 * 60, True), (-90, True), (10, False), (-10, False)]:
        result = open_message(
            dated(signer.signing_time + dt.timedelta(minutes=shift)), anchors=anchors, at=now
        )
        assert result.signature == SignatureStatus.VALID
        assert (WARN_DATE_MISMATCH in result.warnings) is named, shift

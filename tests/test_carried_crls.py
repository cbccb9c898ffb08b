"""CRLs a signed message carries in its SignedData (``crls``): evidence of a revocation, read
without asking any server, never a source that must be there. PKITS's CRL tests
(tests/test_pkits.py) are the larger specification; these are made here with OpenSSL and
cryptography, judged an hour after the test PKI's certificates begin."""

from __future__ import annotations

import base64
import datetime as dt

import pytest
from asn1crypto import cms
from asn1crypto import crl as asn1_crl
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from smime_companion import keyfiles
from smime_companion.core.open import open_message
from smime_companion.core.verdicts import SignatureStatus as S
from smime_companion.testing.pki import TestPki
from tests.conftest import load_cert
from tests.tools import mime_message, openssl_cms


def _at(pki: TestPki) -> dt.datetime:
    return load_cert(pki.cert("alice")).not_valid_before_utc + dt.timedelta(hours=1)


def _crl(
    pki: TestPki,
    revoked_at: dt.datetime,
    key: object = None,
    critical: x509.ExtensionType | None = None,
) -> bytes:
    """The test intermediate's CRL listing alice, signed by ``key`` (the intermediate's)."""
    intermediate = load_cert(pki.intermediate)
    signing_key = key or keyfiles.load_private_key(pki.directory / "intermediate.key.pem")
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(intermediate.subject)
        .last_update(revoked_at)
        .next_update(revoked_at + dt.timedelta(days=1))
        .add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(load_cert(pki.cert("alice")).serial_number)
            .revocation_date(revoked_at)
            .build()
        )
    )
    if critical is not None:
        builder = builder.add_extension(critical, critical=True)
    crl = builder.sign(signing_key, hashes.SHA256())  # type: ignore[arg-type]
    return crl.public_bytes(serialization.Encoding.DER)


def _signed_carrying(pki: TestPki, crl: bytes) -> bytes:
    """An opaque signed message by alice whose SignedData carries ``crl`` (the crls field lies
    outside what the signature covers)."""
    der = openssl_cms(
        ["-sign", "-nodetach", "-outform", "DER", "-signer", pki.cert("alice"),
         "-inkey", pki.key("alice"), "-certfile", pki.intermediate],
        mime_message(),
    )  # fmt: skip
    info = cms.ContentInfo.load(der)
    signed = info["content"]
    signed["crls"] = cms.RevocationInfoChoices(
        [cms.RevocationInfoChoice(name="crl", value=asn1_crl.CertificateList.load(crl))]
    )
    body = base64.encodebytes(info.dump(force=True)).replace(b"\n", b"\r\n")
    return (
        b"From: alice@example.org\r\nTo: bob@example.org\r\nSubject: Signed\r\n"
        b"MIME-Version: 1.0\r\n"
        b'Content-Type: application/pkcs7-mime; smime-type=signed-data; name="smime.p7m"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\n" + body
    )


def test_a_crl_of_the_issuer_listing_the_signer_makes_the_signature_revoked(
    pki: TestPki, anchors: tuple[x509.Certificate, ...]
) -> None:
    at = _at(pki)
    revoked_at = (at - dt.timedelta(minutes=30)).replace(microsecond=0)
    result = open_message(_signed_carrying(pki, _crl(pki, revoked_at)), anchors=anchors, at=at)
    assert result.signature == S.REVOKED
    reason = result.signers[0].reason or ""
    # The moment as a person reads it, in UTC (not ISO's 2026-12-07T13:58:30+00:00).
    assert f"was revoked at {revoked_at.astimezone(dt.UTC):%Y-%m-%d %H:%M:%S} UTC" in reason
    assert "the message carries" in reason


@pytest.mark.parametrize("case", ["another key", "revoked later", "unknown critical extension"])
def test_a_crl_that_proves_nothing_changes_nothing(
    pki: TestPki, anchors: tuple[x509.Certificate, ...], case: str
) -> None:
    at = _at(pki)
    before = at - dt.timedelta(minutes=30)
    if case == "another key":
        crl = _crl(pki, before, key=ec.generate_private_key(ec.SECP256R1()))
    elif case == "revoked later":
        crl = _crl(pki, at + dt.timedelta(days=1))
    else:  # RFC 5280: a CRL with a critical extension one does not know is set aside
        crl = _crl(pki, before, critical=x509.UnrecognizedExtension(
            x509.ObjectIdentifier("1.3.6.1.4.1.99999.1"), b"\x05\x00"))  # fmt: skip
    result = open_message(_signed_carrying(pki, crl), anchors=anchors, at=at)
    assert (result.signature, result.signers[0].reason) == (S.VALID, None)

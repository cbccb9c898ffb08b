"""The ESS signing-certificate attribute (RFC 2634 section 5.4, RFC 5035): when a signer binds the
certificate it signed with into the signed attributes, no other certificate for the same key can
pass for it.

The attack it stops: a CA that does not check possession of the key issues Mallory a certificate
for Alice's public key. Mallory takes a message Alice signed, puts that certificate in place of
Alice's (the certificate set and the signer identifier are not signed) and sends it From
Mallory: the signature still verifies, under Mallory's name. Messages are made by
``openssl cms -sign -cades`` (signingCertificateV2 with the certificate's SHA-256 and issuer and
serial); ``openssl cms -verify -cades`` is the reference that refuses the substituted one.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import subprocess
from pathlib import Path

import pytest
from asn1crypto import cms, tsp
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding

from smime_companion.core.open import open_message
from smime_companion.core.verdicts import SignatureStatus
from smime_companion.testing.pki import TestPki
from tests.conftest import load_cert
from tests.tools import mime_message, openssl_cms, run

TWIN_EXT = (
    "subjectAltName=email:mallory@example.org\nextendedKeyUsage=emailProtection\n"
    "keyUsage=critical,digitalSignature,keyEncipherment\nbasicConstraints=critical,CA:FALSE\n"
)


@pytest.fixture(scope="module")
def twin(pki: TestPki, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A certificate for Mallory holding Alice's public key, issued by the test intermediate."""
    directory = tmp_path_factory.mktemp("twin")
    csr, cert, ext = directory / "twin.csr", directory / "twin.pem", directory / "twin.ext"
    ext.write_text(TWIN_EXT)
    run(["openssl", "req", "-new", "-key", pki.key("alice"), "-subj", "/CN=Mallory",
         "-out", csr])  # fmt: skip
    run(["openssl", "x509", "-req", "-in", csr, "-CA", pki.intermediate,
         "-CAkey", pki.directory / "intermediate.key.pem", "-CAcreateserial", "-days", "30",
         "-extfile", ext, "-out", cert])  # fmt: skip
    return cert


def _signed(pki: TestPki, sender: str, *, cades: bool = True) -> bytes:
    """Alice's opaque signature by openssl, with a signingCertificateV2 unless ``cades`` is
    False."""
    return openssl_cms(
        ["-sign", *(["-cades"] if cades else []), "-nodetach", "-signer", pki.cert("alice"),
         "-inkey", pki.key("alice"), "-certfile", pki.intermediate],
        mime_message(body="Pay 100 EUR to account 1234.\r\n", sender=sender),
    )  # fmt: skip


def _substituted(message: bytes, twin: Path) -> bytes:
    """``message`` with Alice's certificate and the signer identifier replaced by the twin's:
    neither is covered by the signature."""
    head, body = message.split(b"\n\n", 1)
    info = cms.ContentInfo.load(base64.b64decode(body))
    signed = info["content"]
    twin_der = load_cert(twin).public_bytes(Encoding.DER)
    twin_cert = cms.CertificateChoices.load(twin_der)
    alice = signed["signer_infos"][0]["sid"].chosen
    kept = [
        c for c in signed["certificates"]
        if c.chosen.serial_number != alice["serial_number"].native
    ]  # fmt: skip
    signed["certificates"] = cms.CertificateSet([*kept, twin_cert])
    signer = signed["signer_infos"][0]
    signer["sid"] = cms.SignerIdentifier(
        name="issuer_and_serial_number",
        value={"issuer": twin_cert.chosen.issuer, "serial_number": twin_cert.chosen.serial_number},
    )
    return head + b"\n\n" + base64.encodebytes(info.dump(force=True))


def _openssl_verifies(message: bytes, pki: TestPki, *flags: str) -> bool:
    done = subprocess.run(
        ["openssl", "cms", "-verify", *flags, "-CAfile", str(pki.root), "-purpose", "any",
         "-out", "/dev/null"],
        input=message, capture_output=True, check=False,
    )  # fmt: skip
    return done.returncode == 0


def test_a_cades_signature_by_openssl_is_valid(
    pki: TestPki, anchors: tuple[x509.Certificate, ...], now: dt.datetime
) -> None:
    message = _signed(pki, "alice@example.org")
    result = open_message(message, anchors=anchors, at=now)
    assert result.signature == SignatureStatus.VALID, result.signers[0].reason


def test_a_certificate_put_in_place_of_the_one_the_signer_named_is_invalid(
    pki: TestPki, twin: Path, anchors: tuple[x509.Certificate, ...], now: dt.datetime
) -> None:
    # Alice signed a message From Mallory's address (or Mallory rewrote an unsigned From).
    message = _substituted(_signed(pki, "mallory@example.org"), twin)
    # The reference: OpenSSL accepts it unless asked to check the attribute.
    assert _openssl_verifies(message, pki)
    assert not _openssl_verifies(message, pki, "-cades")

    result = open_message(message, anchors=anchors, at=now)
    assert result.signature == SignatureStatus.INVALID
    assert "names another certificate" in (result.signers[0].reason or "")


def test_without_the_attribute_a_twin_certificate_is_what_verifies(
    pki: TestPki, twin: Path, anchors: tuple[x509.Certificate, ...], now: dt.datetime
) -> None:
    # The control: with no signing-certificate attribute nothing binds the certificate, and
    # the twin's key verifies the signature (every S/MIME reader accepts this one).
    plain = _signed(pki, "mallory@example.org", cades=False)
    result = open_message(_substituted(plain, twin), anchors=anchors, at=now)
    assert result.signature == SignatureStatus.VALID
    assert result.signer == "mallory@example.org"


def test_of_two_certificates_sharing_the_key_identifier_the_named_one_is_the_signer(
    pki: TestPki, twin: Path, anchors: tuple[x509.Certificate, ...], now: dt.datetime
) -> None:
    # Signed with -keyid: the signer identifier is the key's, which Alice's certificate and
    # the twin share. The twin is put first in the set; the attribute says which one signed.
    message = openssl_cms(
        ["-sign", "-cades", "-keyid", "-nodetach", "-signer", pki.cert("alice"), "-inkey",
         pki.key("alice"), "-certfile", pki.intermediate],
        mime_message(sender="alice@example.org"),
    )  # fmt: skip
    head, body = message.split(b"\n\n", 1)
    info = cms.ContentInfo.load(base64.b64decode(body))
    twin_cert = cms.CertificateChoices.load(load_cert(twin).public_bytes(Encoding.DER))
    info["content"]["certificates"] = cms.CertificateSet(
        [twin_cert, *info["content"]["certificates"]]
    )
    both = head + b"\n\n" + base64.encodebytes(info.dump(force=True))

    result = open_message(both, anchors=anchors, at=now)
    assert result.signature == SignatureStatus.VALID, result.signers[0].reason
    assert result.signer == "alice@example.org"


def test_a_signing_certificate_attribute_that_cannot_be_read_is_malformed(
    pki: TestPki, anchors: tuple[x509.Certificate, ...], now: dt.datetime
) -> None:
    # Alice's own signature over an attribute that is no SigningCertificateV2: nothing can say
    # which certificate she meant, so the signature is not taken as hers.
    head, body = _signed(pki, "alice@example.org").split(b"\n\n", 1)
    der = bytearray(base64.b64decode(body))
    oid = bytes.fromhex("060b2a864886f70d010910022f")  # id-aa-signingCertificateV2
    at = der.index(oid) + len(oid)
    assert der[at] == 0x31 and der[at + 2] == 0x30 and der[at + 4] == 0x30
    der[at + 4] = 0x02  # its certs SEQUENCE made an INTEGER of the same length
    signer = cms.ContentInfo.load(bytes(der))["content"]["signer_infos"][0]
    old_signature = bytes(signer["signature"].native)
    key = serialization.load_pem_private_key(pki.key("alice").read_bytes(), None)
    assert isinstance(key, rsa.RSAPrivateKey)
    to_sign = b"\x31" + signer["signed_attrs"].dump()[1:]  # signed as a SET (RFC 5652 5.4)
    signature = key.sign(to_sign, padding.PKCS1v15(), hashes.SHA256())
    message = bytes(der).replace(old_signature, signature)
    raw = head + b"\n\n" + base64.encodebytes(message)
    assert _openssl_verifies(raw, pki)  # the signature itself is sound

    result = open_message(raw, anchors=anchors, at=now)
    assert result.signature == SignatureStatus.MALFORMED
    assert result.signers[0].reason == "signing-certificate attribute is malformed"


def _with_v1_attribute(message: bytes, named: Path, pki: TestPki) -> bytes:
    """``message`` (openssl's, no ESS attribute) with an RFC 2634 SigningCertificate naming
    ``named`` by its SHA-1 added to Alice's signed attributes, signed again with her key."""
    head, body = message.split(b"\n\n", 1)
    info = cms.ContentInfo.load(base64.b64decode(body))
    signer = info["content"]["signer_infos"][0]
    cert_id = tsp.ESSCertID(
        {"cert_hash": hashlib.sha1(load_cert(named).public_bytes(Encoding.DER)).digest()}
    )
    value = tsp.SigningCertificate({"certs": [cert_id]})
    attribute = cms.CMSAttribute({"type": "signing_certificate", "values": [value]})
    attributes = cms.CMSAttributes([*signer["signed_attrs"], attribute])
    signer["signed_attrs"] = attributes
    key = serialization.load_pem_private_key(pki.key("alice").read_bytes(), None)
    assert isinstance(key, rsa.RSAPrivateKey)
    signer["signature"] = key.sign(attributes.dump(force=True), padding.PKCS1v15(), hashes.SHA256())
    return head + b"\n\n" + base64.encodebytes(info.dump(force=True))


def test_the_first_version_of_the_attribute_with_sha_1_is_checked_too(
    pki: TestPki, twin: Path, anchors: tuple[x509.Certificate, ...], now: dt.datetime
) -> None:
    plain = _signed(pki, "mallory@example.org", cades=False)
    honest = _with_v1_attribute(plain, pki.cert("alice"), pki)
    assert _openssl_verifies(honest, pki, "-cades")  # the reference reads it as we do
    substituted = _substituted(honest, twin)
    result = open_message(substituted, anchors=anchors, at=now)
    assert result.signature == SignatureStatus.INVALID
    assert "names another certificate" in (result.signers[0].reason or "")

"""CRLs and OCSP responses a signed message carries in its SignedData (``crls``; OCSP responses
as RFC 5940's ``id-ri-ocsp-response``): evidence of a revocation, read without asking any
server, never a source that must be there. PKITS's CRL tests (tests/test_pkits.py) are the
larger specification for CRLs; these are made here with OpenSSL (the signatures, the OCSP
responses by ``openssl ocsp`` as a responder) and cryptography (the CRLs, a responder's
certificate), judged an hour after the test PKI's certificates begin."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from smime_companion import keyfiles
from smime_companion.core import revocation
from smime_companion.core.open import open_message
from smime_companion.core.verdicts import SignatureStatus as S
from smime_companion.testing.pki import TestPki, write_key
from tests.chaos import costly
from tests.conftest import load_cert
from tests.tools import ocsp_index_line, openssl_ocsp_response, signed_carrying_revocation


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


def test_a_crl_of_the_issuer_listing_the_signer_makes_the_signature_revoked(
    pki: TestPki, anchors: tuple[x509.Certificate, ...]
) -> None:
    at = _at(pki)
    revoked_at = (at - dt.timedelta(minutes=30)).replace(microsecond=0)
    result = open_message(
        signed_carrying_revocation(pki, _crl(pki, revoked_at)), anchors=anchors, at=at
    )
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
    result = open_message(signed_carrying_revocation(pki, crl), anchors=anchors, at=at)
    assert (result.signature, result.signers[0].reason) == (S.VALID, None)


# --- OCSP responses the signer stapled ---------------------------------------------------------


def _responder(
    pki: TestPki, at: dt.datetime, work: Path, *, for_ocsp: bool = True, days: int = 30
) -> tuple[Path, Path]:
    """A responder certificate the test intermediate issues (with the OCSPSigning usage unless
    not ``for_ocsp``), valid from a day before ``at`` for ``days`` days; its PEM and key."""
    key = ec.generate_private_key(ec.SECP256R1())
    usage = ExtendedKeyUsageOID.OCSP_SIGNING if for_ocsp else ExtendedKeyUsageOID.CLIENT_AUTH
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test OCSP Responder")]))
        .issuer_name(load_cert(pki.intermediate).subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(at - dt.timedelta(days=1))
        .not_valid_after(at - dt.timedelta(days=1) + dt.timedelta(days=days))
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .sign(
            keyfiles.load_private_key(pki.directory / "intermediate.key.pem"),  # type: ignore[arg-type]
            hashes.SHA256(),
        )
    )
    work.mkdir(parents=True, exist_ok=True)
    (work / "responder.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    write_key(work / "responder.key.pem", key)
    return work / "responder.pem", work / "responder.key.pem"


def _alice_response(
    pki: TestPki,
    work: Path,
    revoked: dt.datetime | None,
    signer: tuple[Path, Path] | None = None,
    user: str = "alice",
) -> bytes:
    """``openssl ocsp``'s answer about ``user``'s certificate (revoked at ``revoked``, or good),
    signed by the intermediate or by ``signer``."""
    cert = load_cert(pki.cert(user))
    index = ocsp_index_line(cert.serial_number, cert.not_valid_after_utc, revoked)
    rsigner, rkey = signer or (pki.intermediate, pki.directory / "intermediate.key.pem")
    return openssl_ocsp_response(index, pki.intermediate, cert.serial_number, rsigner, rkey, work)


@pytest.mark.parametrize("signed_by", ["the issuer", "a delegated responder"])
def test_a_stapled_ocsp_response_naming_the_signer_revoked_makes_the_signature_revoked(
    pki: TestPki, anchors: tuple[x509.Certificate, ...], tmp_path: Path, signed_by: str
) -> None:
    at = _at(pki)
    revoked_at = (at - dt.timedelta(minutes=30)).replace(microsecond=0)
    responder = _responder(pki, at, tmp_path) if signed_by != "the issuer" else None
    response = _alice_response(pki, tmp_path, revoked_at, responder)
    result = open_message(
        signed_carrying_revocation(pki, ocsp_responses=(response,)), anchors=anchors, at=at
    )
    assert result.signature == S.REVOKED
    reason = result.signers[0].reason or ""
    assert f"was revoked at {revoked_at:%Y-%m-%d %H:%M:%S} UTC" in reason
    assert "an OCSP response of" in reason and "the message carries" in reason


def test_a_stapled_response_revoking_the_intermediate_revokes_the_signature(
    pki: TestPki, anchors: tuple[x509.Certificate, ...], tmp_path: Path
) -> None:
    at = _at(pki)
    intermediate = load_cert(pki.intermediate)
    index = ocsp_index_line(
        intermediate.serial_number, intermediate.not_valid_after_utc, at - dt.timedelta(hours=1)
    )
    response = openssl_ocsp_response(
        index, pki.root, intermediate.serial_number, pki.root, pki.directory / "root.key.pem",
        tmp_path,
    )  # fmt: skip
    result = open_message(
        signed_carrying_revocation(pki, ocsp_responses=(response,)), anchors=anchors, at=at
    )
    assert result.signature == S.REVOKED
    assert "intermediate" in (result.signers[0].reason or "")


@pytest.mark.parametrize(
    "case",
    ["good", "revoked later", "about another certificate", "signed by a stranger",
     "a delegate without the OCSP usage", "a delegate expired when judged"],
)  # fmt: skip
def test_a_stapled_response_that_proves_nothing_changes_nothing(
    pki: TestPki, anchors: tuple[x509.Certificate, ...], tmp_path: Path, case: str
) -> None:
    at = _at(pki)
    before = at - dt.timedelta(minutes=30)
    if case == "good":
        response = _alice_response(pki, tmp_path, None)
    elif case == "revoked later":
        response = _alice_response(pki, tmp_path, at + dt.timedelta(days=1))
    elif case == "about another certificate":
        response = _alice_response(pki, tmp_path, before, user="bob")
    elif case == "signed by a stranger":  # carol's key, under the intermediate's name
        stranger = (pki.cert("carol"), pki.key("carol"))
        response = _alice_response(pki, tmp_path, before, stranger)
    elif case == "a delegate without the OCSP usage":
        response = _alice_response(
            pki, tmp_path, before, _responder(pki, at, tmp_path, for_ocsp=False)
        )
    else:  # an expired responder's key may be in anyone's hands
        expired = _responder(pki, at - dt.timedelta(days=10), tmp_path, days=2)
        response = _alice_response(pki, tmp_path, before, expired)
    result = open_message(
        signed_carrying_revocation(pki, ocsp_responses=(response,)), anchors=anchors, at=at
    )
    assert (result.signature, result.signers[0].reason) == (S.VALID, None)


def test_a_response_with_many_look_alike_responders_is_bounded_and_still_read(
    pki: TestPki, anchors: tuple[x509.Certificate, ...]
) -> None:
    """Each look-alike responder certificate (the intermediate's name as issuer, another key)
    would cost a signature check: only the first few are tried, and the issuer's own signature
    still counts."""
    at = _at(pki)
    message = costly.ocsp_look_alike_responders(pki, at - dt.timedelta(minutes=30), 100)
    checked = []
    real_check = revocation.certificate_signed_by

    def counting(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
        checked.append(cert)
        return real_check(cert, issuer)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(revocation, "certificate_signed_by", counting)
        result = open_message(message, anchors=anchors, at=at)
    assert result.signature == S.REVOKED
    assert len(checked) <= revocation.MAX_RESPONDER_CERTIFICATES

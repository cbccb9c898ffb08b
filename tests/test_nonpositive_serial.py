"""Certificates with a serial number that is zero or negative (RFC 5280 forbids it; CAs issued
them for years, and OpenSSL, NSS and gpgsm accept them): mail signed with one opens, verifies and
is harvested, with a note in the report and no library warning on the terminal, both with the
cryptography we lock (which warns) and with one that refuses to load such a certificate."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding

from smime_companion.core import cert_loading
from smime_companion.core.cert_loading import load_certificate
from smime_companion.core.open import open_message
from smime_companion.core.verdicts import WARN_NON_POSITIVE_SERIAL, SignatureStatus
from smime_companion.harvest import CertHarvester
from smime_companion.store.certstore import CertStore
from smime_companion.testing.pki import TestPki
from tests.conftest import load_cert
from tests.peers import split_message
from tests.tools import mime_message, minimal_env, run


@pytest.fixture(scope="module")
def negative(pki: TestPki, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(certificate, key) for neg@example.org, issued by the test intermediate with serial -5
    by ``openssl x509 -req -set_serial -5``."""
    d = tmp_path_factory.mktemp("negative-serial")
    key, csr, cert, ext = d / "key.pem", d / "csr.pem", d / "cert.pem", d / "ext.cnf"
    ext.write_text(
        "subjectAltName=email:neg@example.org\nextendedKeyUsage=emailProtection\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\nbasicConstraints=critical,CA:FALSE\n"
    )
    run(["openssl", "req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
         "-subj", "/CN=Negative", "-out", csr])  # fmt: skip
    run(["openssl", "x509", "-req", "-in", csr, "-CA", pki.intermediate,
         "-CAkey", pki.directory / "intermediate.key.pem", "-set_serial", "-5",
         "-days", "30", "-extfile", ext, "-out", cert])  # fmt: skip
    return cert, key


@pytest.fixture(scope="module")
def signed(pki: TestPki, negative: tuple[Path, Path]) -> bytes:
    cert, key = negative
    outer, entity = split_message(mime_message(sender="neg@example.org"))
    body = run(
        ["openssl", "cms", "-sign", "-signer", cert, "-inkey", key, "-certfile", pki.intermediate],
        stdin=entity,
    )
    return b"\r\n".join(outer) + b"\r\n" + body


@pytest.fixture(params=["warns", "refuses"])
def cryptography_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The cryptography we lock (it warns on such a serial), or one that refuses to load the
    certificate, as it has announced it will: failure injection at its loader."""
    if request.param == "refuses":
        real = x509.load_der_x509_certificate

        def refusing(data: bytes) -> x509.Certificate:
            loaded = real(data)
            if loaded.serial_number <= 0:
                raise ValueError("error parsing asn1 value: serial number is not positive")
            return loaded

        monkeypatch.setattr(cert_loading.x509, "load_der_x509_certificate", refusing)
    return str(request.param)


def _at(cert: Path) -> dt.datetime:
    # openssl x509 made it valid from the moment it ran.
    return load_cert(cert).not_valid_before_utc + dt.timedelta(hours=1)


def test_a_message_signed_with_a_negative_serial_certificate_is_valid_with_a_note(
    pki: TestPki, negative: tuple[Path, Path], signed: bytes, cryptography_mode: str
) -> None:
    result = open_message(signed, identities=[], anchors=[load_cert(pki.root)], at=_at(negative[0]))
    assert result.signature == SignatureStatus.VALID, result.signers[0].reason
    assert result.signer == "neg@example.org"
    assert WARN_NON_POSITIVE_SERIAL in result.warnings
    [signer] = result.all_signers()
    assert signer.certificate is not None and signer.certificate.serial_number == -5
    assert any("serial number -5" in note for note in signer.notes)
    assert signer.to_json()["notes"] == list(signer.notes)


def test_it_is_harvested_under_its_own_fingerprint(
    pki: TestPki,
    negative: tuple[Path, Path],
    signed: bytes,
    cryptography_mode: str,
    tmp_path: Path,
) -> None:
    at = _at(negative[0])
    result = open_message(signed, identities=[], anchors=[load_cert(pki.root)], at=at)
    original_der = x509.load_pem_x509_certificate(negative[0].read_bytes()).public_bytes(
        Encoding.DER
    )
    with CertStore.open(tmp_path, "key") as store:
        [record] = CertHarvester(store).harvest_records(result, "<n@example.org>", at)
        assert record.address == "neg@example.org"
        assert record.certificate.public_bytes(Encoding.DER) == original_der
        assert record.certificate.fingerprint(hashes.SHA256()) == (
            load_certificate(original_der).fingerprint(hashes.SHA256())
        )
        # Read back from the store (a fresh load, through the same loader).
        [stored] = store.records("neg@example.org")
        assert stored.certificate.serial_number == -5
        assert stored.certificate.public_bytes(Encoding.DER) == original_der


def test_a_refused_certificate_stands_in_for_the_original_everywhere_it_is_named(
    negative: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    der = x509.load_pem_x509_certificate(negative[0].read_bytes()).public_bytes(Encoding.DER)
    real = x509.load_der_x509_certificate

    def refusing(data: bytes) -> x509.Certificate:
        if data == der:
            raise ValueError("error parsing asn1 value: serial number is not positive")
        return real(data)

    monkeypatch.setattr(cert_loading.x509, "load_der_x509_certificate", refusing)
    cert = load_certificate(der)
    assert cert.serial_number == -5
    assert cert.public_bytes(Encoding.DER) == der
    assert cert.fingerprint(hashes.SHA256()) == real(der).fingerprint(hashes.SHA256())
    assert cert.tbs_certificate_bytes == real(der).tbs_certificate_bytes
    assert cert.subject == real(der).subject and cert == real(der)
    assert cert.public_bytes(Encoding.PEM).startswith(b"-----BEGIN CERTIFICATE-----\n")
    with pytest.raises(ValueError):
        load_certificate(b"\x30\x03\x02\x01\x01")  # not a certificate at all


def test_open_prints_the_note_and_no_library_warning(
    pki: TestPki, negative: tuple[Path, Path], signed: bytes, tmp_path: Path
) -> None:
    message = tmp_path / "neg.eml"
    message.write_bytes(signed)
    at = _at(negative[0]).isoformat()
    argv = [sys.executable, "-m", "smime_companion", "open", str(message), "--json",
            "--anchor", str(pki.root), "--at", at]  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, timeout=60, env=minimal_env())
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == b""  # cryptography's deprecation warning never reaches the terminal
    report = json.loads(proc.stdout)
    assert report["signature"] == "valid" and WARN_NON_POSITIVE_SERIAL in report["warnings"]
    [signer] = report["layers"][0]["signers"]
    assert any("serial number -5" in note for note in signer["notes"])
    without_json = [a for a in argv if a != "--json"]
    human = subprocess.run(without_json, capture_output=True, timeout=60, env=minimal_env())
    assert human.stderr == b""
    assert b"serial number -5" in human.stdout

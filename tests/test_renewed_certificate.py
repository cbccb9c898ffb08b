"""Mail encrypted to a certificate of ours that a renewal replaced.

Renewing an S/MIME certificate often keeps the key and changes the serial: mail encrypted to the
old certificate names it by issuer and serial, which the new one does not match. A certificate
is ours when it holds our key, so the old one, once known (harvested from our own signed mail,
or given with ``open --certfile``), names our key too. A certificate with another key never
makes us try ours.

The renewed certificate is made by ``openssl x509 -req`` from a request signed with bob's key;
messages are encrypted by ``openssl cms -encrypt``.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509

from smime_companion.core.model import Identity
from smime_companion.core.open import open_message
from smime_companion.core.verdicts import Decryption
from smime_companion.testing.pki import TestPki
from tests.conftest import load_cert, load_identity
from tests.tools import mime_message, minimal_env, openssl_cms, run


@pytest.fixture(scope="module")
def renewed(pki: TestPki, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Bob's certificate renewed: the same key, a new serial and validity."""
    directory = tmp_path_factory.mktemp("renewed")
    csr, cert, ext = directory / "bob.csr", directory / "bob-renewed.pem", directory / "ext"
    ext.write_text(
        "subjectAltName=email:bob@example.org\nextendedKeyUsage=emailProtection\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\nbasicConstraints=critical,CA:FALSE\n"
    )
    run(["openssl", "req", "-new", "-key", pki.key("bob"), "-subj", "/CN=Bob renewed",
         "-out", csr])  # fmt: skip
    run(["openssl", "x509", "-req", "-in", csr, "-CA", pki.intermediate, "-CAkey",
         pki.directory / "intermediate.key.pem", "-CAcreateserial", "-days", "30",
         "-extfile", ext, "-out", cert])  # fmt: skip
    return cert


def _encrypted_to(cert: Path) -> bytes:
    return openssl_cms(["-encrypt", "-aes-256-gcm", cert], mime_message())


def _opened(message: bytes, identity: Identity, known: list[x509.Certificate], now: dt.datetime):
    return open_message(message, identities=[identity], extra_certificates=known, at=now)


def test_mail_to_the_replaced_certificate_opens_once_that_certificate_is_known(
    pki: TestPki, renewed: Path, now: dt.datetime
) -> None:
    bob_now = Identity(key=load_identity(pki, "bob").key, certificate=load_cert(renewed))
    old_mail = _encrypted_to(pki.cert("bob"))
    assert _opened(old_mail, bob_now, [], now).decryption == Decryption.NO_KEY
    result = _opened(old_mail, bob_now, [load_cert(pki.cert("bob"))], now)
    assert result.decryption == Decryption.OK
    assert b"this is a test" in result.content


def test_and_the_other_way_round(pki: TestPki, renewed: Path, now: dt.datetime) -> None:
    new_mail = _encrypted_to(renewed)
    bob_before = load_identity(pki, "bob")
    assert _opened(new_mail, bob_before, [], now).decryption == Decryption.NO_KEY
    assert _opened(new_mail, bob_before, [load_cert(renewed)], now).decryption == Decryption.OK


def test_a_known_certificate_with_another_key_is_not_ours(pki: TestPki, now: dt.datetime) -> None:
    to_alice = _encrypted_to(pki.cert("alice"))
    known = [load_cert(pki.cert(u)) for u in ("alice", "carol", "olga")]
    result = _opened(to_alice, load_identity(pki, "bob"), known, now)
    assert result.decryption == Decryption.NO_KEY


def test_open_certfile_names_the_replaced_certificate(
    pki: TestPki, renewed: Path, tmp_path: Path
) -> None:
    message = tmp_path / "old.eml"
    message.write_bytes(_encrypted_to(pki.cert("bob")))
    base = [sys.executable, "-m", "smime_companion", "open", "--no-config", str(message),
            "--key", str(pki.key("bob")), "--cert", str(renewed), "-o", "-"]  # fmt: skip
    env = minimal_env()
    assert subprocess.run(base, capture_output=True, env=env, timeout=120).returncode == 1
    opened = subprocess.run(
        [*base, "--certfile", str(pki.cert("bob"))], capture_output=True, env=env, timeout=120
    )
    assert opened.returncode == 0, opened.stderr
    assert b"this is a test" in opened.stdout

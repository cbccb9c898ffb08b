"""``smime-companion open``: output, JSON fields and exit codes, run as a real subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from smime_companion.testing.pki import PKCS12_PASSWORD, TestPki
from tests.conftest import load_cert
from tests.tools import mime_message, minimal_env, openssl_cms

CLI = [sys.executable, "-m", "smime_companion"]


def _run(*args: str | Path, env_password: bool = True, stdin: bytes | None = None):
    env = minimal_env(P12_PASSWORD=PKCS12_PASSWORD) if env_password else None
    return subprocess.run(
        [*CLI, *map(str, args)], input=stdin, capture_output=True, timeout=60, env=env
    )


@pytest.fixture(scope="module")
def sealed(pki: TestPki, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Alice signs, then encrypts to Bob with AES-256-GCM."""
    signed = openssl_cms(
        ["-sign", "-signer", pki.cert("alice"), "-inkey", pki.key("alice"),
         "-certfile", pki.intermediate],
        mime_message(),
    )  # fmt: skip
    path = tmp_path_factory.mktemp("cli") / "sealed.eml"
    path.write_bytes(openssl_cms(["-encrypt", "-aes-256-gcm", "-recip", pki.cert("bob")], signed))
    return path


def test_json_reports_every_pinned_field_and_exit_0(sealed: Path, pki: TestPki, tmp_path) -> None:
    out = tmp_path / "inner.eml"
    proc = _run(
        "open", sealed, "--p12", pki.p12("bob"), "--p12-password-env", "P12_PASSWORD",
        "--anchor", pki.root, "--json", "-o", out,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["decryption"] == "ok"
    assert report["signature"] == "valid"
    assert report["signer"] == "alice@example.org"
    assert [layer["type"] for layer in report["layers"]] == ["auth-enveloped", "signed"]
    assert report["content_cipher"] == "aes-256-gcm"
    assert report["warnings"] == [] and report["error"] is None
    assert b"this is a test" in out.read_bytes()


def test_key_and_cert_files_work_like_a_pkcs12(sealed: Path, pki: TestPki) -> None:
    proc = _run("open", sealed, "--key", pki.key("bob"), "--cert", pki.cert("bob"),
                "--anchor", pki.root)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert b"signature:  valid by alice@example.org" in proc.stdout


def test_stdin_is_read_for_a_dash(sealed: Path, pki: TestPki) -> None:
    proc = _run("open", "-", "--key", pki.key("bob"), "--cert", pki.cert("bob"), "--json",
                stdin=sealed.read_bytes())  # fmt: skip
    # No anchor given: the signature is sound but untrusted, so the exit code is 1.
    assert proc.returncode == 1
    assert json.loads(proc.stdout)["signature"] == "untrusted"


@pytest.mark.parametrize("as_json", [True, False])
def test_content_on_stdout_sends_the_report_to_stderr(
    sealed: Path, pki: TestPki, as_json: bool
) -> None:
    # `open msg -o - | next-program` must pass the message alone, not the report after it.
    proc = _run("open", sealed, "--key", pki.key("bob"), "--cert", pki.cert("bob"),
                "--anchor", pki.root, "-o", "-", *(["--json"] if as_json else []))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert b"this is a test" in proc.stdout
    assert b"decryption" not in proc.stdout and b"this is a test" not in proc.stderr
    if as_json:
        assert json.loads(proc.stderr)["signature"] == "valid"
    else:
        assert b"signature:  valid by alice@example.org" in proc.stderr


def test_without_the_right_key_exit_1_and_no_key(sealed: Path, pki: TestPki) -> None:
    proc = _run("open", sealed, "--key", pki.key("alice"), "--cert", pki.cert("alice"), "--json")
    assert proc.returncode == 1
    assert json.loads(proc.stdout)["decryption"] == "no-key"


def test_an_unreadable_file_is_a_usage_error(tmp_path: Path) -> None:
    proc = _run("open", tmp_path / "missing.eml")
    assert proc.returncode == 2
    assert proc.stderr.decode().count("\n") == 1
    assert "cannot read" in proc.stderr.decode()


def test_a_wrong_pkcs12_password_is_a_usage_error(sealed: Path, pki: TestPki) -> None:
    proc = subprocess.run(
        [*CLI, "open", str(sealed), "--p12", str(pki.p12("bob")), "--p12-password-env", "PW"],
        capture_output=True,
        env=minimal_env(PW="wrong"),
        timeout=60,
    )
    assert proc.returncode == 2
    assert b"wrong PKCS#12 password" in proc.stderr


def test_a_key_without_its_certificate_is_a_usage_error_saying_which_is_missing(
    sealed: Path, pki: TestPki
) -> None:
    alone = _run("open", sealed, "--key", pki.key("bob"))
    assert alone.returncode == 2
    assert alone.stderr.decode().count("\n") == 1
    assert "came without its certificate" in alone.stderr.decode()
    # The certificate of another key (a renewal's, a colleague's) is the common mistake.
    mismatched = _run("open", sealed, "--key", pki.key("bob"), "--cert", pki.cert("alice"))
    assert mismatched.returncode == 2
    assert "matches none of the 1 certificate(s) given" in mismatched.stderr.decode()


def test_a_bad_at_time_is_a_usage_error(sealed: Path) -> None:
    proc = _run("open", sealed, "--at", "yesterday")
    assert proc.returncode == 2 and b"ISO-8601" in proc.stderr


def test_at_moves_the_validity_check_in_time(pki: TestPki, tmp_path: Path) -> None:
    signed = openssl_cms(
        ["-sign", "-signer", pki.cert("alice"), "-inkey", pki.key("alice"),
         "-certfile", pki.intermediate],
        mime_message(),
    )  # fmt: skip
    path = tmp_path / "signed.eml"
    path.write_bytes(signed)
    proc = _run("open", path, "--anchor", pki.root, "--at", "2099-01-01T00:00:00Z", "--json")
    assert proc.returncode == 1
    assert json.loads(proc.stdout)["signature"] == "expired"


def test_an_anchor_whose_names_cannot_be_read_says_so(
    sealed: Path, pki: TestPki, tmp_path: Path
) -> None:
    # Not "not a PEM or DER certificate": it is one, and the person should learn what is wrong.
    der = load_cert(pki.cert("alice")).public_bytes(Encoding.DER)
    assert der.count(b"\x0c\x05Alice") == 1
    broken = tmp_path / "broken.der"
    broken.write_bytes(der.replace(b"\x0c\x05Alice", b"\x03\x05\x00lice"))  # a BIT STRING CN
    proc = _run("open", sealed, "--anchor", broken)
    assert proc.returncode == 2
    assert b"broken.der: the certificate's names cannot be read" in proc.stderr

"""``smime-companion seal`` run as a real subprocess: output files, JSON, exit codes, and bad
input that gives one clear line on stderr and writes nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from smime_companion.testing.pki import PKCS12_PASSWORD, TestPki
from tests.test_seal_support import leaf_payloads, recipient_addresses, text_draft
from tests.tools import minimal_env, openssl_cms

CLI = [sys.executable, "-m", "smime_companion", "seal"]


def _seal(*args: str | Path, password: str = PKCS12_PASSWORD) -> subprocess.CompletedProcess[bytes]:
    env = minimal_env(P12_PASSWORD=password)
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, timeout=60, env=env)


def _p12(pki: TestPki, user: str = "alice") -> list[str | Path]:
    return ["--p12", pki.p12(user), "--p12-password-env", "P12_PASSWORD"]


def _draft(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "draft.eml"
    path.write_bytes(data)
    return path


def test_seals_to_to_cc_and_sender_writes_bcc_copies_and_reports_json(
    pki: TestPki, tmp_path: Path
) -> None:
    draft = text_draft(
        to=("bob@example.org",), cc=("carol@example.org",), bcc=("dave@example.org",)
    )
    out = tmp_path / "sealed.eml"
    proc = _seal(
        _draft(tmp_path, draft), "-o", out, *_p12(pki), "--json",
        "--to-cert", pki.cert("bob"), "--to-cert", pki.chain("carol"),
        "--to-cert", pki.cert("dave"),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["signed"] is True and report["encrypted"] is True
    assert report["content_cipher"] == "aes-256-cbc" and report["micalg"] == "sha-256"
    assert report["key_transport"] == {
        "alice@example.org": "rsa-pkcs1v15",
        "bob@example.org": "rsa-pkcs1v15",
        "carol@example.org": "ecdh-p256-sha256",
    }
    bcc_path = Path(report["bcc_copies"]["dave@example.org"]["output"])
    assert bcc_path == tmp_path / "sealed.eml.bcc-dave@example.org"
    everyone = ("alice", "bob", "carol", "dave")
    assert "dave@example.org" not in recipient_addresses(out.read_bytes(), pki, everyone)
    assert recipient_addresses(bcc_path.read_bytes(), pki, everyone) == {
        "dave@example.org",
        "alice@example.org",
    }
    inner = openssl_cms(
        ["-decrypt", "-recip", pki.cert("bob"), "-inkey", pki.key("bob")], out.read_bytes()
    )
    signed = openssl_cms(["-verify", "-purpose", "smimesign", "-CAfile", pki.root], inner)
    assert leaf_payloads(signed) == leaf_payloads(draft)


def test_sign_key_and_cert_files_sign_like_a_pkcs12_and_write_to_stdout(
    pki: TestPki, tmp_path: Path
) -> None:
    proc = _seal(
        _draft(tmp_path, text_draft()), "--no-encrypt", "--opaque",
        "--sign-key", pki.key("alice"), "--sign-cert", pki.chain("alice"),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert b"smime-type=signed-data" in proc.stdout
    openssl_cms(["-verify", "-purpose", "smimesign", "-CAfile", pki.root], proc.stdout)


def test_encrypt_only_needs_no_signing_key_when_the_sender_has_a_certificate(
    pki: TestPki, tmp_path: Path
) -> None:
    out = tmp_path / "sealed.eml"
    proc = _seal(
        _draft(tmp_path, text_draft()), "-o", out, "--no-sign",
        "--to-cert", pki.cert("bob"), "--to-cert", pki.cert("alice"),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    plain = openssl_cms(
        ["-decrypt", "-recip", pki.cert("alice"), "-inkey", pki.key("alice")], out.read_bytes()
    )
    assert leaf_payloads(plain) == leaf_payloads(text_draft())


@pytest.mark.parametrize(
    ("case", "draft", "extra", "code", "message"),
    [
        (
            "no From",
            text_draft().replace(b"From: alice@example.org\r\n", b""),
            [],
            1,
            "draft has no From header",
        ),
        (
            "recipients without certificate",
            text_draft(to=("bob@example.org", "zoe@example.org"), cc=("yann@example.org",)),
            [],
            1,
            "no certificate for recipient(s): zoe@example.org, yann@example.org",
        ),
        (
            "non-MIME draft",
            b"\x00\x01\x02 just some bytes, no header section\n",
            [],
            1,
            "draft is not a MIME message",
        ),
        (
            "wrong PKCS#12 password",
            text_draft(),
            ["--password", "wrong"],
            2,
            "wrong PKCS#12 password",
        ),
        (
            "key that does not match its certificate",
            text_draft(),
            ["--mismatch"],
            2,
            "the key does not match the certificate",
        ),
    ],
)
def test_bad_input_gives_one_line_and_writes_nothing(
    pki: TestPki,
    tmp_path: Path,
    case: str,
    draft: bytes,
    extra: list[str],
    code: int,
    message: str,
) -> None:
    out = tmp_path / "sealed.eml"
    signing: list[str | Path] = _p12(pki)
    password = PKCS12_PASSWORD
    if "--password" in extra:
        password = "wrong"
    if "--mismatch" in extra:
        signing = ["--sign-key", pki.key("bob"), "--sign-cert", pki.cert("alice")]
    proc = _seal(
        _draft(tmp_path, draft), "-o", out, *signing, "--to-cert", pki.cert("bob"),
        password=password,
    )  # fmt: skip
    assert proc.returncode == code, (case, proc.stderr)
    lines = proc.stderr.decode().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("smime-companion seal: ") and message in lines[0], lines[0]
    assert proc.stdout == b""
    assert list(tmp_path.iterdir()) == [tmp_path / "draft.eml"], "something was written"


def test_bcc_copies_need_an_output_file(pki: TestPki, tmp_path: Path) -> None:
    draft = text_draft(bcc=("dave@example.org",))
    proc = _seal(
        _draft(tmp_path, draft), *_p12(pki),
        "--to-cert", pki.cert("bob"), "--to-cert", pki.cert("dave"),
    )  # fmt: skip
    assert proc.returncode == 2
    assert b"give -o OUT" in proc.stderr and proc.stdout == b""


def test_help_describes_the_command() -> None:
    proc = subprocess.run([*CLI, "--help"], capture_output=True, timeout=60)
    assert proc.returncode == 0
    assert b"--to-cert" in proc.stdout and b"Bcc" in proc.stdout

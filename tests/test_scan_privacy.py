"""Scanning decrypted mail must not hand it, or a secret, to anyone else.

- ``scan_command`` runs with a clean environment: the secrets the daemon was given in its
  environment (``*_env``: passwords, the cache key) never reach the command.
- clamd writes what it scans to its TemporaryDirectory, whatever the protocol: shown here with
  ``LeaveTemporaryFiles``, which is why contrib/clamav puts that directory on a private tmpfs
  (and the drop-in is one systemd accepts).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from smime_companion.scan import ClamdScanner, CommandScanner, scan_command_environment
from smime_companion.store import Cache
from smime_companion.testing.pki import TestPki
from tests.clamd import EICAR
from tests.test_cache import KEY, mail, opener, store
from tests.test_cli_cache import _config, cli

CONTRIB = Path(__file__).resolve().parent.parent / "contrib" / "clamav"


def test_a_scan_command_does_not_see_the_daemons_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IMAP_PASSWORD", "imap-secret-5150")
    monkeypatch.setenv("SMIME_CACHE_KEY", "cache-secret-8086")
    dump = tmp_path / "env.txt"
    assert CommandScanner(f"env > {dump}; exit 0").scan(b"hello") == "clean"
    seen = dump.read_text()
    assert "imap-secret-5150" not in seen and "cache-secret-8086" not in seen
    assert "PATH=" in seen  # it can still find its programs


def test_the_scan_environment_keeps_only_what_finds_programs_and_the_locale() -> None:
    env = scan_command_environment(
        {"PATH": "/opt/bin", "LANG": "de_AT.UTF-8", "X_PASSWORD": "s", "SSH_AUTH_SOCK": "/a"}
    )
    assert env == {"PATH": "/opt/bin", "LANG": "de_AT.UTF-8"}
    assert scan_command_environment({})["PATH"] == "/usr/local/bin:/usr/bin:/bin"


def test_cache_scan_runs_the_command_without_the_configured_secrets(
    pki: TestPki, tmp_path: Path, now
) -> None:
    dump = tmp_path / "env.txt"
    config = _config(tmp_path, pki, extra=f'scan_command = "env > {dump}; exit 0"\n')
    with Cache.open(tmp_path / "data", KEY) as cache:
        store(cache, mail(pki, kind="encrypted"), opener(pki), now, uid=1)
    proc = cli(config, "cache", "scan")
    assert proc.returncode == 0, proc.stderr
    seen = dump.read_text()
    # The CLI had the cache key and the PKCS#12 password in its environment (key_env,
    # p12_password_env): neither reaches the scanner.
    assert KEY not in seen and "TEST_CACHE_KEY" not in seen and "TEST_P12_PASSWORD" not in seen


@pytest.fixture
def clamd_leaving_temporary_files(tmp_path: Path):
    for tool in ("clamd", "sigtool"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (apt-get install clamav-daemon)")
    (tmp_path / "db").mkdir()
    (tmp_path / "scan-tmp").mkdir()
    sample = tmp_path / "eicar.com"
    sample.write_bytes(EICAR)
    signature = subprocess.run(
        ["sigtool", "--md5", str(sample)], capture_output=True, check=True, timeout=30
    ).stdout
    (tmp_path / "db" / "test.hdb").write_bytes(signature)
    sock = tmp_path / "clamd.sock"
    (tmp_path / "clamd.conf").write_text(
        f"Foreground yes\nDatabaseDirectory {tmp_path / 'db'}\nLocalSocket {sock}\n"
        f"TemporaryDirectory {tmp_path / 'scan-tmp'}\nLeaveTemporaryFiles yes\nUser root\n"
    )
    proc = subprocess.Popen(
        ["clamd", "-c", str(tmp_path / "clamd.conf")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while not sock.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.skip("clamd could not start here")
            time.sleep(0.05)
        yield sock, tmp_path / "scan-tmp"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_clamd_writes_what_it_scans_to_its_temporary_directory(
    pki: TestPki, clamd_leaving_temporary_files
) -> None:
    sock, scan_tmp = clamd_leaving_temporary_files
    marker = b"aardvark-7b3f9c-plaintext"
    content = mail(pki, body=marker.decode() + "\r\n")
    assert ClamdScanner(sock).scan(content) == "clean"
    written = b"".join(p.read_bytes() for p in scan_tmp.rglob("*") if p.is_file())
    assert marker in written.lower()  # so contrib/clamav keeps that directory off the disk


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_the_clamd_drop_in_is_accepted_by_systemd(tmp_path: Path) -> None:
    unit = tmp_path / "clamd-check.service"
    unit.write_text(
        f"[Service]\nExecStart={sys.executable} -V\n"
        + (CONTRIB / "clamav-daemon-private-tmp.conf").read_text()
    )
    proc = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0 and "clamd-check.service" not in proc.stderr, proc.stderr
    assert "TemporaryDirectory /run/clamd-scan" in (CONTRIB / "clamd-tmpfs.conf").read_text()

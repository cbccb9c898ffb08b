"""A real clamd for the scan tests, with a one-signature database the fixture writes itself (the
MD5 of the EICAR test string, made by ``sigtool``), so no signature download is needed.

clamd runs in the foreground on a unix socket in a temporary directory and is stopped by its pid.
Tests using it are skipped, with the reason, when Debian's ``clamav-daemon`` is not installed.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

# The EICAR anti-virus test file: harmless, and recognised by every scanner that has its hash.
EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
SIGNATURE_FILE = "eicar.com"
STARTUP_SECONDS = 30.0


@dataclass(frozen=True)
class Clamd:
    socket: Path
    signature_name: str  # what clamd reports for EICAR: "eicar.com.UNOFFICIAL"


@pytest.fixture(scope="session")
def clamd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Clamd]:
    """A running clamd that knows one signature (EICAR); stopped at the end of the session."""
    for tool in ("clamd", "sigtool"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (apt-get install clamav-daemon)")
    base = tmp_path_factory.mktemp("clamd")
    database = base / "db"
    database.mkdir()
    sample = base / SIGNATURE_FILE
    sample.write_bytes(EICAR)
    signature = subprocess.run(
        ["sigtool", "--md5", str(sample)], capture_output=True, check=True, timeout=30
    ).stdout
    (database / "test.hdb").write_bytes(signature)
    sock = base / "clamd.sock"
    config = base / "clamd.conf"
    config.write_text(
        "Foreground yes\n"
        f"DatabaseDirectory {database}\n"
        f"LocalSocket {sock}\n"
        f"PidFile {base / 'clamd.pid'}\n"
        f"LogFile {base / 'clamd.log'}\n"
        "User root\n"
    )
    proc = subprocess.Popen(
        ["clamd", "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while not sock.exists():
            if proc.poll() is not None:
                err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                pytest.skip(f"clamd could not start here: {err.strip()[:300]}")
            if time.monotonic() > deadline:
                pytest.skip(f"clamd did not open its socket within {STARTUP_SECONDS:.0f} s")
            time.sleep(0.05)
        yield Clamd(socket=sock, signature_name=f"{SIGNATURE_FILE}.UNOFFICIAL")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

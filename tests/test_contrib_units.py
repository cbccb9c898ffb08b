"""The service files in contrib/ keep a daemon that holds private keys contained: no core dump,
bounded memory, the systemd hardening present and accepted by systemd itself."""

from __future__ import annotations

import plistlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CONTRIB = Path(__file__).resolve().parent.parent / "contrib"
UNIT = CONTRIB / "systemd" / "smime-companion.service"


def _service_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    section = ""
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line
        elif section == "[Service]" and "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            settings.setdefault(key, []).append(value)
    return settings


def test_the_systemd_unit_forbids_core_dumps_and_bounds_memory() -> None:
    settings = _service_settings()
    assert settings["LimitCORE"] == ["0"]
    assert settings["MemoryMax"] and settings["MemoryHigh"]
    assert settings["MemorySwapMax"] == ["0"]  # decrypted mail never lands in swap either


@pytest.mark.parametrize(
    "key",
    [
        "NoNewPrivileges", "PrivateTmp", "PrivateDevices", "ProtectSystem", "ProtectHome",
        "ProtectKernelTunables", "ProtectKernelModules", "ProtectControlGroups",
        "RestrictAddressFamilies", "RestrictNamespaces", "RestrictSUIDSGID", "LockPersonality",
        "SystemCallFilter", "SystemCallArchitectures", "CapabilityBoundingSet", "UMask",
    ],
)  # fmt: skip
def test_the_systemd_unit_keeps_its_hardening(key: str) -> None:
    assert key in _service_settings()


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_systemd_accepts_every_line_of_the_unit(tmp_path: Path) -> None:
    # verify also checks that ExecStart exists: point it at a program that does.
    unit = tmp_path / "smime-companion.service"
    unit.write_text(
        UNIT.read_text().replace("%h/.local/bin/smime-companion run", f"{sys.executable} -V")
    )
    proc = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    problems = [line for line in proc.stderr.splitlines() if "smime-companion.service" in line]
    assert not problems and proc.returncode == 0, proc.stderr


def test_the_launchd_agent_forbids_core_dumps() -> None:
    plist = plistlib.loads((CONTRIB / "launchd" / "org.smime-companion.daemon.plist").read_bytes())
    assert plist["SoftResourceLimits"]["Core"] == 0 and plist["HardResourceLimits"]["Core"] == 0


def test_run_and_sync_set_the_core_limit_to_zero_themselves() -> None:
    code = (
        "import resource; from smime_companion.cli.daemon_cmds import forbid_core_dumps; "
        "assert forbid_core_dumps(); print(resource.getrlimit(resource.RLIMIT_CORE))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert proc.stdout.strip() == "(0, 0)"

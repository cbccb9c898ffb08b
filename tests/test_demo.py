"""The demo (``python -m smime_companion.testing.demo DIR``, what ``scripts/demo`` runs) end to end:
it passes every step against a real Dovecot and SMTP sink, stops both servers when it ends or is
interrupted, stops after the first part (exit 1, one line) where the servers cannot run, and never
clears a directory it did not make."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from smime_companion.testing import demo
from smime_companion.testing.dovecot import missing_requirement

needs_servers = pytest.mark.skipif(
    missing_requirement() is not None, reason=missing_requirement() or ""
)


def _demo(directory: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "smime_companion.testing.demo", str(directory)],
        stdin=subprocess.DEVNULL,  # not a terminal: the reader step stops by itself
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        # As from a terminal: a suite started in the background (`scripts/test &`) ignores
        # SIGINT, and a Python started with it ignored never turns it into KeyboardInterrupt.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def _dovecot(output: str) -> tuple[int, Path]:
    """The pid and directory of the demo's Dovecot, from its ``Dovecot: pid N, directory D``."""
    found = re.search(r"Dovecot: pid (\d+), directory (\S+)", output)
    assert found, "the demo names its Dovecot's pid and directory"
    return int(found[1]), Path(found[2])


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


@needs_servers
def test_the_demo_passes_every_step_and_stops_both_servers(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    proc = _demo(out)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, output
    assert "The demo passed: every step gave the expected result." in output
    assert "FAILED" not in output
    # Library warnings (cryptography's deprecations...) never reach the terminal.
    # (Python prints "FILE:LINE: SomeWarning: text"; our X-SMIME-Companion-Warnings is a header.)
    assert not re.search(r"\w+Warning: ", output), output
    # The key results, as the commands printed them.
    assert "demo/INBOX: 6 new, 5 stored, 1 not S/MIME" in output
    for word in ("日本語", "テキスト", "strasse"):  # on the demo's own cache
        assert f"'{word}' finds the encrypted message in Japanese and German" in output
    assert re.search(r"^\s+\d+ .*Door code\s+\[encrypted\]$", output, re.M)
    assert re.search(r"^\s+\d+ .*Transfer\s+\[sig:invalid\]$", output, re.M)
    assert re.search(r"^\s+alice@example\.org\s+\w+\s+anchor", output, re.M)
    assert "demo: outbox: 1 sent" in output
    assert output.count("signature:  valid by bob@example.org") == 1
    # The last step: the reader on the demo's cache, its sign-in address printed, then stopped.
    signin = re.search(r"Sign in: (http://127\.0\.0\.1:(\d+)/signin\?token=[\w-]+)$", output, re.M)
    assert signin, output
    assert "ok: the reader answers on loopback, and shows nothing without signing in" in output
    assert "the reader is stopped" in output
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", int(signin[2])), timeout=2).close()
    # What the sink received is on disk and encrypted; the servers are gone.
    assert b"Noodles at noon" not in (out / "smtp-received" / "0001.eml").read_bytes()
    assert b"Noodles at noon" in (out / "smtp-received" / "opened-as-alice.eml").read_bytes()
    pid, directory = _dovecot(output)
    assert _gone(pid) and not directory.exists()
    # The config names no secret and trusts the servers by a CA file, never in plain text.
    config = (out / "config.toml").read_text()
    assert "insecure_plaintext" not in config and f'ca_file = "{out}/tls/server-ca.pem"' in config
    # (as a TOML string: the PKCS#12 password is the word "test", which the comments use)
    assert all(f'"{value}"' not in config for value in demo.SECRETS.values())
    assert "DEMO_IMAP_PASSWORD" in config and demo.SECRETS["DEMO_IMAP_PASSWORD"] not in config


@needs_servers
def test_an_interrupted_demo_stops_dovecot_and_exits_130(tmp_path: Path) -> None:
    proc = _demo(tmp_path / "demo")
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if line.strip().startswith("SMTP sink:"):  # both servers are running now
            break
    pid, directory = _dovecot("".join(seen))
    assert not _gone(pid)
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, rest
    assert "demo interrupted; the servers are stopped" in rest
    assert _gone(pid) and not directory.exists()


def test_without_root_the_demo_opens_the_message_then_says_why_it_stops_with_exit_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    reason = "Dovecot must be started as root (it switches to its own users); run as root"
    monkeypatch.setattr(demo, "missing_requirement", lambda: reason)
    assert demo.main([str(tmp_path / "demo")]) == 1
    out = capsys.readouterr().out
    assert "ok: sealed.eml opens (exit 0): decrypted, signature valid" in out
    assert "ok: forged.eml is reported with an invalid signature (exit 1)" in out
    assert out.rstrip().splitlines()[-1] == f"The server part of the demo is skipped: {reason}."
    assert "Dovecot:" not in out


def test_the_demo_refuses_to_clear_a_directory_it_did_not_make(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "precious.txt").write_text("keep me")
    assert demo.main([str(tmp_path)]) == 2
    assert "is not empty and was not made by the demo" in capsys.readouterr().err
    assert (tmp_path / "precious.txt").read_text() == "keep me"
    assert sorted(os.listdir(tmp_path)) == ["precious.txt"]


def test_scripts_demo_refuses_a_directory_it_did_not_make_and_deletes_nothing(
    tmp_path: Path,
) -> None:
    # The shell wrapper, not only the driver: it once ran `rm -rf DIR` before the driver's guard.
    (tmp_path / "precious.txt").write_text("keep me")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "also.txt").write_text("and me")
    script = Path(__file__).resolve().parent.parent / "scripts" / "demo"
    proc = subprocess.run(
        ["bash", str(script), str(tmp_path)], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "is not empty and was not made by the demo" in proc.stderr
    assert (tmp_path / "precious.txt").read_text() == "keep me"
    assert (tmp_path / "sub" / "also.txt").read_text() == "and me"

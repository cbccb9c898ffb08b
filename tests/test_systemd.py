"""systemd: the notify protocol (READY, RELOADING, STOPPING, WATCHDOG) over a real datagram
socket, journald priority prefixes, and secrets from ``$CREDENTIALS_DIRECTORY``."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from smime_companion import systemd
from smime_companion.config import parse_config
from smime_companion.credentials import resolve
from smime_companion.errors import SecretUnavailable
from smime_companion.testing.pki import PKCS12_PASSWORD, TestPki
from tests.dovecot import PASSWORD, Dovecot, free_port, running_dovecot
from tests.test_daemon import write_config
from tests.tools import minimal_env


@pytest.fixture
def notify_socket() -> Iterator[tuple[socket.socket, str]]:
    """A datagram socket bound where systemd's would be, and its path."""
    directory = tempfile.mkdtemp(prefix="smime-notify-")
    path = os.path.join(directory, "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(0.2)
    try:
        yield sock, path
    finally:
        sock.close()
        os.unlink(path)
        os.rmdir(directory)


def _receive(sock: socket.socket, want: str, timeout: float) -> list[str]:
    """Every datagram until one holds ``want`` (as a line); raises AssertionError after
    ``timeout`` seconds without it."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            seen.append(sock.recv(4096).decode())
        except TimeoutError:
            continue
        if want in seen[-1].split("\n"):
            return seen
    raise AssertionError(f"no {want} within {timeout} s; got {seen}")


def test_notify_sends_one_datagram_to_the_socket_systemd_names(
    notify_socket: tuple[socket.socket, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sock, path = notify_socket
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    assert systemd.notify("READY=1", "STATUS=up")
    assert sock.recv(4096) == b"READY=1\nSTATUS=up"


def test_a_slow_start_up_keeps_extending_the_start_timeout_until_it_ends(
    notify_socket: tuple[socket.socket, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A cache upgrade at open can outlast TimeoutStartSec: systemd must hear that it goes on.
    sock, path = notify_socket
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    with systemd.starting("upgrading", every=0.1):
        time.sleep(0.35)
    seen = _receive(sock, "EXTEND_TIMEOUT_USEC=300000", 1.0)
    extensions = [d for d in seen if "EXTEND_TIMEOUT_USEC=300000" in d.split("\n")]
    while True:  # what arrived after the first one
        try:
            extensions.append(sock.recv(4096).decode())
        except TimeoutError:
            break
    assert len(extensions) >= 3  # at the start and at least twice while it ran
    assert all("STATUS=upgrading" in d for d in extensions)
    time.sleep(0.3)
    with pytest.raises(TimeoutError):  # nothing after the block ended
        sock.recv(4096)


def test_notify_reaches_an_abstract_socket_and_is_silent_outside_systemd(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    name = f"smime-companion-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert systemd.reloading()
        text = sock.recv(4096).decode()
        assert text.startswith("RELOADING=1\nMONOTONIC_USEC=")
    monkeypatch.delenv("NOTIFY_SOCKET")
    assert systemd.notify("READY=1") is False


@pytest.fixture
def server() -> Iterator[Dovecot]:
    yield from running_dovecot()


def test_the_daemon_says_ready_pings_the_watchdog_reloads_and_stops_over_the_socket(
    server: Dovecot, pki: TestPki, tmp_path: Path, notify_socket: tuple[socket.socket, str]
) -> None:
    sock, path = notify_socket
    server.maildir("alice", "Notify")
    config = write_config(tmp_path / "c.toml", server, pki, ["Notify"])
    env = minimal_env(
        NOTIFY_SOCKET=path,
        WATCHDOG_USEC="2000000",  # WatchdogSec=2
        TEST_IMAP_PASSWORD=PASSWORD,
        TEST_P12_PASSWORD=PKCS12_PASSWORD,
        TEST_CACHE_KEY="cache key for the systemd test",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "smime_companion", "run", "--config", str(config)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        _receive(sock, "READY=1", 20)
        _receive(sock, "WATCHDOG=1", 5)
        _receive(sock, "WATCHDOG=1", 5)  # and again: it keeps the watchdog fed
        proc.send_signal(signal.SIGHUP)
        after_hup = _receive(sock, "RELOADING=1", 10)
        assert any(line.startswith("MONOTONIC_USEC=") for line in after_hup[-1].split("\n"))
        _receive(sock, "READY=1", 20)
        proc.send_signal(signal.SIGTERM)
        _receive(sock, "STOPPING=1", 20)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_log_lines_carry_journald_priorities_when_stderr_is_the_journal(
    tmp_path: Path, pki: TestPki
) -> None:
    config = tmp_path / "c.toml"
    config.write_text(
        f'[identity]\np12 = "{pki.p12("bob")}"\np12_password_env = "P"\n'
        f'system_anchors = false\n[cache]\npath = "{tmp_path / "cache"}"\n'
        f'encrypt_cache = false\n[[accounts]]\nname = "down"\nhost = "127.0.0.1"\n'
        f'port = {free_port()}\nusername = "u"\npassword_env = "P"\n'
    )
    stream = tmp_path / "journal-stream"
    with open(stream, "wb") as err:
        stat = os.fstat(err.fileno())
        proc = subprocess.run(
            [sys.executable, "-m", "smime_companion", "sync", "--config", str(config)],
            env=minimal_env(P=PKCS12_PASSWORD, JOURNAL_STREAM=f"{stat.st_dev}:{stat.st_ino}"),
            stdout=subprocess.DEVNULL,
            stderr=err,
            timeout=60,
        )
    assert proc.returncode == 1
    lines = stream.read_text().splitlines()
    assert any(line.startswith("<3>smime_companion.daemon: account down:") for line in lines)
    assert all(line.startswith("<") for line in lines)


def test_a_secret_comes_from_the_systemd_credentials_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = parse_config(
        '[identity]\n[cache]\nkey_credential = "cache-key"\n[[accounts]]\nname = "w"\n'
        'host = "h"\nusername = "u"\npassword_credential = "imap-password"\n'
    )
    (tmp_path / "imap-password").write_text("s3cret\n")
    (tmp_path / "cache-key").write_text("a cache key")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    assert resolve(config.account("w").password) == "s3cret"
    assert resolve(config.cache.key) == "a cache key"
    monkeypatch.delenv("CREDENTIALS_DIRECTORY")
    with pytest.raises(SecretUnavailable, match="LoadCredentialEncrypted=imap-password"):
        resolve(config.account("w").password)

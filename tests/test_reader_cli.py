"""``smime-companion reader`` without a daemon: it serves the reader itself in the foreground,
prints one sign-in address on stdout, answers it once, and stops cleanly on SIGTERM; a second
``reader`` meanwhile reuses that server instead of starting another."""

from __future__ import annotations

import datetime as dt
import http.client
import re
import signal
import subprocess
import sys
import urllib.parse
from pathlib import Path

import pytest

from smime_companion.config import parse_config
from smime_companion.reader.security import read_server_file
from smime_companion.testing.pki import PKCS12_PASSWORD, TestPki
from tests.dovecot import free_port
from tests.reader_world import CACHE_KEY, config_text, message, store_messages, text_entity
from tests.tools import minimal_env


def _get(url: str) -> int:
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection("127.0.0.1", parts.port, timeout=10)
    try:
        conn.request("GET", f"{parts.path}?{parts.query}")
        return conn.getresponse().status
    finally:
        conn.close()


def test_reader_serves_in_the_foreground_and_a_second_call_reuses_it(
    tmp_path: Path, pki: TestPki, now: dt.datetime, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    # [reader] before the [[accounts]] table array, where TOML wants it.
    text = f"[reader]\nport = {port}\n" + config_text(pki, tmp_path / "cache")
    path = tmp_path / "config.toml"
    path.write_text(text)
    env = minimal_env(READER_P12_PASSWORD=PKCS12_PASSWORD, READER_CACHE_KEY=CACHE_KEY,
                      HOME=str(tmp_path))  # fmt: skip
    monkeypatch.setenv("READER_P12_PASSWORD", PKCS12_PASSWORD)
    monkeypatch.setenv("READER_CACHE_KEY", CACHE_KEY)
    hello = message("a@example.org", "Hi", now, text_entity("hello"), "hi")
    store_messages(parse_config(text, path), [hello], now)
    proc = subprocess.Popen(
        [sys.executable, "-m", "smime_companion", "reader", "--no-browser", "--config", str(path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert re.fullmatch(rf"http://127\.0\.0\.1:{port}/signin\?token=[\w-]+", url), url
        assert _get(url) == 200
        assert _get(url) == 403  # once only
        assert read_server_file(tmp_path / "cache") == (port, proc.pid)
        second = subprocess.run(
            [sys.executable, "-m", "smime_companion", "reader", "--no-browser", "--config",
             str(path)], capture_output=True, text=True, env=env, timeout=60,
        )  # fmt: skip
        assert second.returncode == 0, second.stderr
        (other,) = second.stdout.splitlines()
        assert other.startswith(f"http://127.0.0.1:{port}/signin?token=") and other != url
        assert _get(other) == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    stderr = proc.stderr.read() if proc.stderr else ""
    assert "Traceback" not in stderr and CACHE_KEY not in stderr
    assert read_server_file(tmp_path / "cache") is None

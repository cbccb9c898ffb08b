"""The reader as a user meets it: ``smime-companion run`` (a real daemon) syncs S/MIME mail made
by OpenSSL from a real Dovecot and serves the reader; ``smime-companion reader --no-browser``
prints the sign-in address; in headless Chromium the user sees new mail arrive without a
reload, opens it, replies, and follows the reply until it is sent. The reply reaches the SMTP
sink sealed: ``openssl cms -decrypt`` with Alice's key opens it and ``openssl cms -verify``
verifies Bob's signature. ``compose`` does the same from the terminal, with $EDITOR."""

from __future__ import annotations

import datetime as dt
import http.client
import json
import re
import signal
import subprocess
import sys
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from smime_companion.reader.security import read_server_file
from smime_companion.status_file import read_status_file
from smime_companion.testing.pki import PKCS12_PASSWORD, TestPki
from tests.browser import needs_chromium, screenshot, start_browser, stop_browser, wait_for
from tests.dovecot import PASSWORD, Dovecot, free_port, running_dovecot
from tests.reader_world import encrypted, message, signed, text_entity
from tests.smtpd import PASSWORD as SMTP_PASSWORD
from tests.smtpd import USERNAME as SMTP_USERNAME
from tests.smtpd import SmtpServer, running_smtpd
from tests.tools import minimal_env, openssl_cms

CACHE_KEY = "reader daemon test key"
SECRETS = {
    "RD_P12": PKCS12_PASSWORD,
    "RD_CACHE": CACHE_KEY,
    "RD_IMAP": PASSWORD,
    "RD_SMTP": SMTP_PASSWORD,
}


@pytest.fixture()
def dovecot() -> Iterator[Dovecot]:
    yield from running_dovecot()


@pytest.fixture()
def smtpd(dovecot: Dovecot) -> Iterator[SmtpServer]:
    yield from running_smtpd("starttls", dovecot.cert.parent)


def _config(tmp_path: Path, pki: TestPki, dovecot: Dovecot, smtpd: SmtpServer, port: int) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(
        f"""
[identity]
p12 = "{pki.p12("bob")}"
p12_password_env = "RD_P12"
trust_anchors = ["{pki.root}"]
system_anchors = false

[cache]
path = "{tmp_path / "cache"}"
key_env = "RD_CACHE"

[certificates]
revocation = "off"

[reader]
port = {port}

[[accounts]]
name = "bob"
host = "localhost"
port = {dovecot.tls_port}
tls = "implicit"
ca_file = "{dovecot.cert}"
username = "bob"
password_env = "RD_IMAP"
folders = ["INBOX"]
smtp_host = "localhost"
smtp_port = {smtpd.port}
smtp_tls = "starttls"
smtp_username = "{SMTP_USERNAME}"
smtp_password_env = "RD_SMTP"
"""
    )
    return path


def _smime(*args: str, env: dict[str, str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "smime_companion", *args],
        capture_output=True, text=True, timeout=120, env=env, **kwargs,
    )  # fmt: skip


def _mail(pki: TestPki, now: dt.datetime, subject: str, text: str, tag: str) -> bytes:
    return message(
        "Alice <alice@example.org>",
        subject,
        now,
        encrypted(pki, signed(pki, "alice", text_entity(text))),
        tag,
    )


def _opened_as_alice(pki: TestPki, sealed: bytes) -> bytes:
    """The sealed message decrypted with Alice's key, then its signature verified against
    the test root; returns the signed content."""
    inner = openssl_cms(["-decrypt", "-recip", pki.cert("alice"), "-inkey", pki.key("alice")],
                        sealed)  # fmt: skip
    return openssl_cms(["-verify", "-CAfile", pki.root, "-purpose", "any"], inner)


@pytest.fixture()
def daemon(
    tmp_path: Path, pki: TestPki, dovecot: Dovecot, smtpd: SmtpServer, now: dt.datetime
) -> Iterator[tuple[Path, dict[str, str]]]:
    dovecot.maildir("bob")
    dovecot.deliver("bob", _mail(pki, now - dt.timedelta(minutes=5), "Lunch on Friday",
                                 "Shall we try the noodle bar on Friday?", "lunch"))  # fmt: skip
    config = _config(tmp_path, pki, dovecot, smtpd, free_port())
    env = minimal_env(**SECRETS, HOME=str(tmp_path))
    proc = subprocess.Popen(
        [sys.executable, "-m", "smime_companion", "run", "--config", str(config)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
    )  # fmt: skip
    try:
        wait_for(lambda: (read_status_file(tmp_path / "cache") or {}).get("running") is True, 30)
        wait_for(lambda: read_server_file(tmp_path / "cache") is not None, 10)
        yield config, env
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    stderr = proc.stderr.read().decode() if proc.stderr else ""
    assert PASSWORD not in stderr and CACHE_KEY not in stderr
    assert "Traceback" not in stderr, stderr


@needs_chromium
def test_read_and_reply_in_the_browser_against_a_real_daemon(
    daemon: tuple[Path, dict[str, str]],
    pki: TestPki,
    dovecot: Dovecot,
    smtpd: SmtpServer,
    tmp_path: Path,
    now: dt.datetime,
) -> None:
    config, env = daemon
    proc = _smime("reader", "--no-browser", "--config", str(config), env=env)
    assert proc.returncode == 0, proc.stderr
    (url,) = proc.stdout.splitlines()
    port = read_server_file(tmp_path / "cache")[0]  # type: ignore[index]
    assert re.fullmatch(rf"http://127\.0\.0\.1:{port}/signin\?token=[\w-]+", url)
    shots = tmp_path / "screenshots"
    browser = start_browser()
    try:
        browser.get(url)
        wait_for(lambda: "Lunch on Friday" in browser.page_source)
        # New mail appears without a reload.
        dovecot.deliver("bob", _mail(pki, now, "Budget draft", "Travel 1200 EUR.", "budget"))
        wait_for(lambda: "Budget draft" in browser.find_element("css selector", "tbody").text, 30)
        assert browser.current_url.endswith("/mail")
        screenshot(browser, shots, "daemon-list")
        browser.find_element("link text", "Lunch on Friday").click()
        wait_for(lambda: "/message/" in browser.current_url)
        verdict = browser.find_element("css selector", "section.verdict").text
        assert "Signed by alice@example.org: valid" in verdict
        browser.find_element("link text", "Reply").click()
        wait_for(lambda: "/compose" in browser.current_url)
        assert browser.find_element("id", "to").get_attribute("value") == (
            "Alice <alice@example.org>"
        )
        assert browser.find_element("id", "subject").get_attribute("value") == (
            "Re: Lunch on Friday"
        )
        wait_for(lambda: "encrypted" in browser.find_element("id", "recipient-status").text)
        body = browser.find_element("id", "body")
        assert "> Shall we try the noodle bar on Friday?" in body.get_attribute("value")
        body.send_keys("Friday suits me. Noodles at noon?")
        browser.find_element("id", "body").send_keys("\n")
        screenshot(browser, shots, "daemon-compose")
        browser.find_element("css selector", "button.primary").click()
        wait_for(lambda: "/draft/" in browser.current_url)
        wait_for(lambda: browser.find_element("id", "stage").text == "sent", 30)
        screenshot(browser, shots, "daemon-sent")
    finally:
        stop_browser(browser)
    (received,) = smtpd.received
    assert b"Noodles at noon" not in received.data
    assert received.recipients == ("alice@example.org",)
    content = _opened_as_alice(pki, received.data)
    assert b"Noodles at noon" in content.replace(b"=\r\n", b"")
    assert b"In-Reply-To: <lunch@test.example>" in received.data or b"lunch@test.example" in (
        content
    )


def test_compose_from_the_terminal_queues_a_reply_and_sends_it_sealed(
    daemon: tuple[Path, dict[str, str]], pki: TestPki, smtpd: SmtpServer, tmp_path: Path
) -> None:
    config, env = daemon
    search = _smime("search", "--json", "noodle", "--config", str(config), env=env)
    assert search.returncode == 0, search.stderr
    (hit,) = json.loads(search.stdout)
    editor = tmp_path / "editor.sh"
    # The "editor" adds a line to the text and leaves the headers as the reply filled them.
    editor.write_text('#!/bin/sh\nprintf "Yes, noon at the noodle bar.\\n" >> "$1"\n')
    editor.chmod(0o700)
    proc = _smime(
        "compose", "--reply", str(hit["id"]), "--config", str(config),
        env={**env, "EDITOR": str(editor), "XDG_RUNTIME_DIR": str(tmp_path)},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "alice@example.org: will be encrypted" in proc.stdout
    assert re.search(r"^(sent|filed|submitted): ", proc.stdout, re.M), proc.stdout
    assert not list(tmp_path.glob("smime-compose-*")), "the edited file is removed"
    (received,) = smtpd.received
    assert b"noon at the noodle bar" not in received.data
    content = _opened_as_alice(pki, received.data)
    assert b"noon at the noodle bar" in content
    assert b"> Shall we try the noodle bar on Friday?" in content


def test_a_reply_to_someone_without_a_certificate_is_held_with_the_reason_and_can_be_resent(
    daemon: tuple[Path, dict[str, str]], tmp_path: Path, smtpd: SmtpServer
) -> None:
    config, env = daemon
    proc = _smime("reader", "--no-browser", "--config", str(config), env=env)
    url = proc.stdout.strip()
    port = int(url.split(":")[2].split("/")[0])
    origin = f"http://127.0.0.1:{port}"

    def request(method: str, path: str, headers: dict[str, str], body: bytes = b"") -> Any:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request(method, path, body=body, headers={"Host": f"127.0.0.1:{port}", **headers})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()

    _, headers, _ = request("GET", url.split(str(port), 1)[1], {})
    cookie = headers["Set-Cookie"].split(";", 1)[0]
    _, _, page = request("GET", "/compose", {"Cookie": cookie})
    csrf = re.search(rb'name="csrf-token" content="([^"]+)"', page)[1].decode()  # type: ignore[index]
    sender = re.search(rb'<option value="([^"]+)"', page)[1].decode()  # type: ignore[index]
    form = urllib.parse.urlencode({
        "csrf": csrf, "sender": sender, "to": "zed@example.org", "subject": "Lunch?",
        "body": "Noodles at noon?", "action": "send",
    }).encode()  # fmt: skip
    status, headers, _ = request("POST", "/compose", {
        "Cookie": cookie, "Origin": origin, "Content-Type": "application/x-www-form-urlencoded",
    }, form)  # fmt: skip
    assert status == 302
    draft = headers["Location"].rsplit("/", 1)[1]

    def progress() -> dict[str, Any]:
        return json.loads(request("GET", f"/api/draft/{draft}", {"Cookie": cookie})[2])

    wait_for(lambda: progress()["stage"] == "held", 30)
    held = progress()
    assert "no usable certificate for zed@example.org" in held["reason"]
    assert held["can_send_again"] is True
    assert smtpd.received == []

"""A reader over a cache filled for the test: a config for Bob (the test PKI), messages made by
OpenSSL and opened as the daemon opens them, stored straight into the cache, and the reader
served on a free loopback port. The end-to-end tests use a real daemon instead
(tests/test_reader_daemon.py)."""

from __future__ import annotations

import datetime as dt
import email.utils
import http.client
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from smime_companion import runtime
from smime_companion.config import Config, parse_config
from smime_companion.core.entry_derivation import derive_entry
from smime_companion.core.open import open_message
from smime_companion.reader.server import ReaderServer
from smime_companion.testing.dovecot import free_port
from smime_companion.testing.pki import PKCS12_PASSWORD, TestPki
from tests.tools import openssl_cms

CACHE_KEY = "reader test cache key"


def config_text(pki: TestPki, cache: Path, extra: str = "") -> str:
    return f"""
[identity]
p12 = "{pki.p12("bob")}"
p12_password_env = "READER_P12_PASSWORD"
trust_anchors = ["{pki.root}"]
system_anchors = false

[cache]
path = "{cache}"
key_env = "READER_CACHE_KEY"

[certificates]
revocation = "off"

[[accounts]]
name = "work"
host = "localhost"
username = "bob@example.org"
password_env = "READER_P12_PASSWORD"
smtp_host = "localhost"
{extra}
"""


def message(sender: str, subject: str, when: dt.datetime, body: bytes, tag: str) -> bytes:
    """Headers from ``sender`` to Bob, then ``body`` (a MIME entity: its own headers first)."""
    return (
        f"From: {sender}\r\nTo: Bob <bob@example.org>\r\nSubject: {subject}\r\n"
        f"Date: {email.utils.format_datetime(when)}\r\nMessage-ID: <{tag}@test.example>\r\n"
    ).encode() + body


def signed(pki: TestPki, user: str, entity: bytes) -> bytes:
    return openssl_cms(
        ["-sign", "-signer", pki.cert(user), "-inkey", pki.key(user),
         "-certfile", pki.intermediate, "-crlfeol"],
        entity,
    )  # fmt: skip


def encrypted(pki: TestPki, entity: bytes, cipher: str = "-aes-256-gcm") -> bytes:
    return openssl_cms(["-encrypt", cipher, "-recip", pki.cert("bob"), "-crlfeol"], entity)


def text_entity(text: str) -> bytes:
    body = "".join(f"{line}\r\n" for line in text.splitlines())
    return b"Content-Type: text/plain; charset=utf-8\r\n\r\n" + body.encode()


@dataclass
class World:
    """A config, a filled cache and a served reader."""

    config: Config
    server: ReaderServer
    now: dt.datetime

    @property
    def port(self) -> int:
        return self.server.port

    def sign_in_url(self) -> str:
        return self.server.sign_in_url()

    def request(
        self, method: str, path: str, headers: dict[str, str] | None = None, body: bytes = b""
    ) -> tuple[int, dict[str, str], bytes]:
        """One plain HTTP request to the reader; returns status, headers, body."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            sent = {"Host": f"127.0.0.1:{self.port}", **(headers or {})}
            conn.request(method, path, body=body, headers=sent)
            response = conn.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            conn.close()

    def session(self) -> tuple[str, str]:
        """Sign in over plain HTTP: the session cookie and the CSRF token of its pages."""
        url = self.sign_in_url()
        status, headers, _ = self.request("GET", url.split(str(self.port), 1)[1])
        assert status == 200, status
        cookie = headers["Set-Cookie"].split(";", 1)[0]
        status, _, page = self.request("GET", "/mail", {"Cookie": cookie})
        assert status == 200
        marker = b'name="csrf-token" content="'
        start = page.index(marker) + len(marker)
        return cookie, page[start : page.index(b'"', start)].decode()


def store_messages(config: Config, messages: list[bytes], now: dt.datetime) -> list[int]:
    """Open ``messages`` as the daemon does (Bob's keys, the test root) and cache them in
    INBOX of account work; returns their ids."""
    identities = runtime.load_identities(config.identity)
    anchors = runtime.load_anchors(config.identity)
    ids = []
    with runtime.open_cache(config) as cache:
        for uid, raw in enumerate(messages, start=1):
            result = open_message(raw, identities=identities, anchors=anchors, at=now)
            ids.append(
                cache.store_message(
                    account="work",
                    folder="INBOX",
                    uidvalidity=1,
                    uid=uid,
                    raw=raw,
                    entry=derive_entry(raw, result, now),
                    arrived=now,
                )  # fmt: skip
            )
    return ids


def make_world(
    tmp_path: Path, pki: TestPki, now: dt.datetime, messages: list[bytes], extra: str = ""
) -> Iterator[World]:
    """Generator for fixtures: the world, its server stopped after the ``yield``."""
    os.environ["READER_P12_PASSWORD"] = PKCS12_PASSWORD
    os.environ["READER_CACHE_KEY"] = CACHE_KEY
    config = parse_config(config_text(pki, tmp_path / "cache", extra), tmp_path / "config.toml")
    store_messages(config, messages, now)
    context = runtime.reader_context(
        config, CACHE_KEY, kick_outbox=lambda account: None, daemon_status=lambda: None
    )
    server = ReaderServer(context, free_port())
    server.start()
    try:
        yield World(config, server, now)
    finally:
        server.stop()

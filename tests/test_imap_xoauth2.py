"""XOAUTH2 login (as Gmail and Microsoft 365 require) against Dovecot's oauth2 passdb, which asks
a small local token-introspection endpoint whether the bearer token is active and whose it is."""

from __future__ import annotations

import json
import threading
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from smime_companion.config import AccountConfig, SecretRef
from smime_companion.errors import ImapError
from smime_companion.imap.mailbox import connect
from smime_companion.runtime import server_spec
from tests.dovecot import Dovecot, running_dovecot

GOOD_TOKEN = "ya29.test-token-for-alice"


class Introspection(BaseHTTPRequestHandler):
    """RFC 7662 token introspection: POST token=... -> {"active": ..., "username": ...}."""

    seen: list[str] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        length = int(self.headers.get("Content-Length", 0))
        form = urllib.parse.parse_qs(self.rfile.read(length).decode())
        token = form.get("token", [""])[0]
        self.seen.append(token)
        body = (
            {"active": "true", "username": "alice"} if token == GOOD_TOKEN else {"active": "false"}
        )
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[Dovecot]:
    http = ThreadingHTTPServer(("127.0.0.1", 0), Introspection)
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{http.server_address[1]}/introspect"
        yield from running_dovecot(oauth2_introspection_url=url)
    finally:
        http.shutdown()
        http.server_close()
        thread.join(timeout=5)


def account(server: Dovecot, token_command: str) -> AccountConfig:
    return AccountConfig(
        name="oauth",
        host="localhost",
        port=server.tls_port,
        username="alice",
        password=SecretRef("accounts.oauth.password"),
        ca_file=server.cert,
        auth="xoauth2",
        oauth2_token_command=token_command,
    )


def test_xoauth2_login_with_a_token_from_the_token_command(server: Dovecot) -> None:
    box = connect(server_spec(account(server, f"echo {GOOD_TOKEN}"), timeout=10))
    try:
        assert box.list_folders(["INBOX"]) == ["INBOX"]
    finally:
        box.close()
    assert GOOD_TOKEN in Introspection.seen


def test_xoauth2_with_a_revoked_token_is_refused_without_echoing_it(server: Dovecot) -> None:
    with pytest.raises(ImapError, match="login refused for alice \\(xoauth2\\)") as info:
        connect(server_spec(account(server, "echo revoked-token-123"), timeout=10))
    assert "revoked-token-123" not in str(info.value)

"""A real SMTP submission server for the tests: aiosmtpd on loopback, with STARTTLS (or implicit
TLS) and AUTH PLAIN/LOGIN (and XOAUTH2), its TLS certificate made with cryptography.

:class:`SmtpServer` records every message it accepted (envelope and bytes). Its ``script`` is a
list of what to answer at the end of the next DATA transactions instead of accepting: an SMTP
reply such as ``"451 4.3.0 try later"``, or ``"drop"`` (accept and store the message, then close
the connection without replying: the case where the client cannot know the outcome). It is how a
real server behaves when busy, rejecting or crashing, so the tests inject failures through it.
"""

from __future__ import annotations

import base64
import shutil
import ssl
import tempfile
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from tests.dovecot import free_port, make_tls_certificate

USERNAME = "alice"
PASSWORD = "smtp-secret"
TOKEN = "oauth-token-for-alice"


@dataclass(frozen=True)
class Received:
    """One accepted message: envelope sender, envelope recipients, raw bytes (CRLF)."""

    sender: str
    recipients: tuple[str, ...]
    data: bytes


class _Handler:
    def __init__(self) -> None:
        self.received: list[Received] = []
        self.script: list[str] = []
        self.lock = threading.Lock()
        self.logins: list[str] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            action = self.script.pop(0) if self.script else "250 2.0.0 OK queued"
            if action == "drop" or action.startswith("250"):
                self.received.append(
                    Received(envelope.mail_from, tuple(envelope.rcpt_tos), bytes(envelope.content))
                )
        if action == "drop":
            # The message is stored, but the client never hears so.
            server.transport.close()
            return "250 2.0.0 OK (never seen by the client)"
        return action

    async def auth_XOAUTH2(self, server: Any, args: list[str]) -> AuthResult:
        # aiosmtpd calls auth_<MECHANISM> handler methods for mechanisms it lacks.
        # ``args`` is the AUTH command split: ["XOAUTH2", initial-response].
        if len(args) < 2:
            return AuthResult(success=False, handled=False)
        raw = base64.b64decode(args[1]).decode()
        fields = dict(p.split("=", 1) for p in raw.split("\x01") if "=" in p)
        ok = fields.get("user") == USERNAME and fields.get("auth") == f"Bearer {TOKEN}"
        if ok:
            self.logins.append(f"{USERNAME}:XOAUTH2")
        return AuthResult(success=ok, handled=False, auth_data=fields.get("user"))


class _Controller(Controller):
    def factory(self) -> Any:
        # Implicit TLS is TLS, but aiosmtpd warns about AUTH without its own STARTTLS rule.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Requiring AUTH while not requiring TLS")
            return super().factory()


class SmtpServer:
    """A started aiosmtpd server; :meth:`stop` ends it. ``tls`` is ``starttls`` or ``implicit``."""

    def __init__(self, tls: str = "starttls", ssl_dir: Path | None = None) -> None:
        """``ssl_dir`` holds an existing ``cert.pem``/``key.pem`` to serve (e.g. Dovecot's, so
        one CA file trusts both servers); by default a new certificate is made."""
        self.dir = Path(tempfile.mkdtemp(prefix="smime-smtpd-"))
        self.cert = (ssl_dir / "cert.pem") if ssl_dir else make_tls_certificate(self.dir / "ssl")
        key = (ssl_dir or self.dir / "ssl") / "key.pem"
        self.tls = tls
        self.port = free_port()
        self.handler = _Handler()
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert, key)
        kwargs: dict[str, Any] = {
            "authenticator": self._authenticate,
            "auth_required": True,
        }
        if tls == "implicit":
            kwargs["ssl_context"] = context
            # aiosmtpd does not count implicit TLS as TLS for its AUTH rule; the socket is TLS.
            kwargs["auth_require_tls"] = False
        else:
            kwargs["tls_context"] = context
            kwargs["require_starttls"] = True
        self.controller = _Controller(
            self.handler, hostname="127.0.0.1", port=self.port, ready_timeout=10, **kwargs
        )
        self.controller.start()

    def _authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        ok = auth_data.login == USERNAME.encode() and auth_data.password == PASSWORD.encode()
        if ok:
            self.handler.logins.append(f"{USERNAME}:{mechanism}")
        return AuthResult(success=ok, handled=False)

    @property
    def received(self) -> list[Received]:
        with self.handler.lock:
            return list(self.handler.received)

    def answer_next(self, *actions: str) -> None:
        """Answer the next DATA transactions with ``actions`` (replies or ``"drop"``)."""
        with self.handler.lock:
            self.handler.script.extend(actions)

    def stop(self) -> None:
        self.controller.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def running_smtpd(tls: str = "starttls", ssl_dir: Path | None = None) -> Iterator[SmtpServer]:
    """Generator for fixtures: a started server, stopped after the ``yield``."""
    server = SmtpServer(tls, ssl_dir)
    try:
        yield server
    finally:
        server.stop()

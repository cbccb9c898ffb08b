"""A real SMTP submission server that keeps what it is given: aiosmtpd on loopback, with STARTTLS
(or implicit TLS) and AUTH PLAIN/LOGIN (and XOAUTH2), its TLS certificate made with cryptography.
The tests submit to it, and so does the demo.

:class:`SmtpSink` records every message it accepted (envelope and bytes), and with ``capture_dir``
also writes each one to a file there (``0001.eml``, ...; the envelope in ``0001.envelope``). Its
``script`` is a list of what to answer at the end of the next DATA transactions instead of
accepting: an SMTP reply such as ``"451 4.3.0 try later"``, or ``"drop"`` (accept and store the
message, then close the connection without replying: the case where the client cannot know the
outcome). It is how a real server behaves when busy, rejecting or crashing, so the tests inject
failures through it.

aiosmtpd is in the ``test`` extra only, so it is imported when a sink is made:
:func:`require_aiosmtpd` raises a one-line :class:`~smime_companion.errors.UsageError` naming the
package when it is missing.
"""

from __future__ import annotations

import base64
import logging
import shutil
import ssl
import tempfile
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from smime_companion.errors import UsageError
from smime_companion.testing.dovecot import free_port, make_tls_certificate

USERNAME = "alice"
PASSWORD = "smtp-secret"
TOKEN = "oauth-token-for-alice"


def require_aiosmtpd() -> tuple[ModuleType, ModuleType]:
    """The ``aiosmtpd.controller`` and ``aiosmtpd.smtp`` modules; raises :class:`UsageError`
    (one line, naming the package to install) when aiosmtpd is not installed."""
    try:
        import aiosmtpd.controller
        import aiosmtpd.smtp
    except ImportError as exc:
        raise UsageError(
            "the SMTP sink needs aiosmtpd, which is not installed: "
            "pip install 'smime-companion[test]' (scripts/bootstrap does)"
        ) from exc
    # aiosmtpd 1.4 sets its own deprecated Session.login_data after every login and warns about
    # that itself, on every login: noise that says nothing about the sink or its client.
    mail_log = logging.getLogger("mail.log")
    if _quiet_login_data not in mail_log.filters:
        mail_log.addFilter(_quiet_login_data)
    return aiosmtpd.controller, aiosmtpd.smtp


def _quiet_login_data(record: logging.LogRecord) -> bool:
    """A logging filter: False (drop) for aiosmtpd's own ``login_data`` deprecation warning."""
    return "Session.login_data is deprecated" not in record.getMessage()


@dataclass(frozen=True)
class Received:
    """One accepted message: envelope sender, envelope recipients, raw bytes (CRLF)."""

    sender: str
    recipients: tuple[str, ...]
    data: bytes


class _Handler:
    """aiosmtpd's handler: stores accepted messages, answers from the script, and adds the
    XOAUTH2 mechanism aiosmtpd lacks."""

    def __init__(
        self, smtp: ModuleType, username: str, token: str, capture_dir: Path | None
    ) -> None:
        self.smtp = smtp
        self.username = username
        self.token = token
        self.capture_dir = capture_dir
        self.received: list[Received] = []
        self.script: list[str] = []
        self.lock = threading.Lock()
        self.logins: list[str] = []

    def _store(self, message: Received) -> None:
        self.received.append(message)
        if self.capture_dir is None:
            return
        # Numbered in arrival order, so a listing of the directory reads as the server's log.
        stem = self.capture_dir / f"{len(self.received):04d}"
        stem.with_suffix(".envelope").write_text(
            f"MAIL FROM: {message.sender}\n"
            + "".join(f"RCPT TO: {r}\n" for r in message.recipients)
        )
        stem.with_suffix(".eml").write_bytes(message.data)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            action = self.script.pop(0) if self.script else "250 2.0.0 OK queued"
            if action == "drop" or action.startswith("250"):
                self._store(
                    Received(envelope.mail_from, tuple(envelope.rcpt_tos), bytes(envelope.content))
                )
        if action == "drop":
            # The message is stored, but the client never hears so.
            server.transport.close()
            return "250 2.0.0 OK (never seen by the client)"
        return action

    async def auth_XOAUTH2(self, server: Any, args: list[str]) -> Any:
        # aiosmtpd calls auth_<MECHANISM> handler methods for mechanisms it lacks.
        # ``args`` is the AUTH command split: ["XOAUTH2", initial-response].
        if len(args) < 2:
            return self.smtp.AuthResult(success=False, handled=False)
        raw = base64.b64decode(args[1]).decode()
        fields = dict(p.split("=", 1) for p in raw.split("\x01") if "=" in p)
        ok = fields.get("user") == self.username and fields.get("auth") == f"Bearer {self.token}"
        if ok:
            self.logins.append(f"{self.username}:XOAUTH2")
        return self.smtp.AuthResult(success=ok, handled=False, auth_data=fields.get("user"))


def _controller_class(controller: ModuleType) -> type:
    """aiosmtpd's Controller, quiet about implicit TLS: that is TLS, but aiosmtpd warns about
    AUTH without its own STARTTLS rule. Made here because aiosmtpd is imported lazily."""

    class _Controller(controller.Controller):  # type: ignore[name-defined,misc]
        def factory(self) -> Any:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Requiring AUTH while not requiring TLS")
                return super().factory()

    return _Controller


class SmtpSink:
    """A started aiosmtpd server on 127.0.0.1; :meth:`stop` ends it.

    ``tls`` is ``starttls`` or ``implicit``. ``ssl_dir`` holds an existing ``cert.pem``/``key.pem``
    to serve (e.g. Dovecot's, so one CA file trusts both servers); by default a new certificate
    is made. Only ``username``/``password`` (PLAIN, LOGIN) or ``token`` (XOAUTH2) log in, and
    nothing is accepted before a login. With ``capture_dir`` every accepted message is also
    written there. Raises :class:`UsageError` when aiosmtpd is not installed."""

    def __init__(
        self,
        tls: str = "starttls",
        ssl_dir: Path | None = None,
        *,
        username: str = USERNAME,
        password: str = PASSWORD,
        token: str = TOKEN,
        capture_dir: Path | None = None,
    ) -> None:
        controller, smtp = require_aiosmtpd()
        self._smtp = smtp
        self.dir = Path(tempfile.mkdtemp(prefix="smime-smtpd-"))
        self.cert = (ssl_dir / "cert.pem") if ssl_dir else make_tls_certificate(self.dir / "ssl")
        key = (ssl_dir or self.dir / "ssl") / "key.pem"
        self.tls = tls
        self.username = username
        self.password = password
        self.port = free_port()
        if capture_dir is not None:
            capture_dir.mkdir(parents=True, exist_ok=True)
        self.capture_dir = capture_dir
        self.handler = _Handler(smtp, username, token, capture_dir)
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
        self.controller = _controller_class(controller)(
            self.handler, hostname="127.0.0.1", port=self.port, ready_timeout=10, **kwargs
        )
        self.controller.start()

    def _authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> Any:
        if not isinstance(auth_data, self._smtp.LoginPassword):
            return self._smtp.AuthResult(success=False, handled=False)
        ok = (
            auth_data.login == self.username.encode()
            and auth_data.password == self.password.encode()
        )
        if ok:
            self.handler.logins.append(f"{self.username}:{mechanism}")
        return self._smtp.AuthResult(success=ok, handled=False)

    @property
    def received(self) -> list[Received]:
        """Every message accepted so far (and every ``drop``-ped one), oldest first."""
        with self.handler.lock:
            return list(self.handler.received)

    def answer_next(self, *actions: str) -> None:
        """Answer the next DATA transactions with ``actions`` (replies or ``"drop"``)."""
        with self.handler.lock:
            self.handler.script.extend(actions)

    def stop(self) -> None:
        """Stop the server and delete its own directory; ``capture_dir`` is left as it is."""
        self.controller.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def running_smtpd(tls: str = "starttls", ssl_dir: Path | None = None) -> Iterator[SmtpSink]:
    """Generator for fixtures: a started server, stopped after the ``yield``."""
    server = SmtpSink(tls, ssl_dir)
    try:
        yield server
    finally:
        server.stop()

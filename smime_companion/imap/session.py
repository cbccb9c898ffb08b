"""One IMAP session: connect, TLS, log in, and run each command within its limits.

Every IMAP adapter here (the read-only :mod:`~smime_companion.imap.mailbox` of the sync, the
outbox's :mod:`~smime_companion.imap.outbox_source`) reaches the server through
:func:`open_session` and runs its commands through :meth:`Session.call`, so there is one way to
connect, one shape of error (``account (host:port): STEP 'folder' failed: why``, never a
secret) and one set of bounds on what a server may send.

A hostile or broken server is bounded (:class:`CommandGuard`): every command has a time limit
(a watchdog closes the socket when it passes, so a server trickling one byte every 20 s cannot
hold a sync), a cap on the lines (untagged responses) and bytes of its answer.
"""

from __future__ import annotations

import imaplib
import logging
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imapclient import IMAPClient
from imapclient import exceptions as imap_exceptions

from smime_companion.errors import AuthenticationFailed, ImapError, OversizedBody
from smime_companion.session import reason, text_of, tls_context, tls_hint

# Time one command may take unless ServerSpec says otherwise; a body fetch gets more, at
# MIN_BODY_RATE for the bytes its messages announced.
COMMAND_TIME_LIMIT = 300.0
MIN_BODY_RATE = 64 * 1024
# Lines (tagged, untagged and continuation) one answer may have: a few per message asked about,
# plus room for a server's chatter. More is a server flooding us.
MAX_LINES_PER_COMMAND = 50_000
LINES_PER_MESSAGE = 8
# Bytes of one answer that carries no message body (SEARCH, FLAGS, BODYSTRUCTURE, LIST...).
MAX_ANSWER_BYTES = 64 * 1024 * 1024
# Bytes of one line of an answer: a plain SEARCH naming 2,000,000 UIDs fits.
MAX_LINE = 16 * 1024 * 1024
# A body literal may exceed the message's RFC822.SIZE by this factor plus this slack (servers

# imapclient prefixes a refusal with the command ("select failed: "); the step names it already.
_COMMAND_PREFIX = re.compile(r"^[a-z_]+ failed: ", re.IGNORECASE)
# What to change when an implicit-TLS port answers in plain text.
STARTTLS_ADVICE = 'set tls = "starttls", usually with port 143 for IMAP or 587 for SMTP'

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServerSpec:
    """Where and how to connect; built by the daemon from an account's config.

    ``tls`` is ``implicit``, ``starttls`` or ``plain`` (loopback tests only). ``auth`` is
    ``password`` or ``xoauth2``; ``secret`` returns the password or a fresh access token and is
    called on every connect (tokens expire), never logged.
    """

    host: str
    port: int
    username: str
    secret: Callable[[], str] = field(repr=False)
    tls: str = "implicit"
    ca_file: Path | None = None
    auth: str = "password"
    timeout: float = 60.0
    name: str = ""  # the account name, for messages
    command_time_limit: float = COMMAND_TIME_LIMIT  # whole answer to one command, seconds

    @property
    def label(self) -> str:
        """``account (host:port)``, the prefix of every error message about this server."""
        return f"{self.name or self.username} ({self.host}:{self.port})"


def open_session(spec: ServerSpec) -> IMAPClient:
    """A connected, TLS-verified, logged-in imapclient connection: the one way every IMAP
    adapter here (read-only sync, the outbox) reaches the server. Raises :class:`ImapError`
    naming the step that failed (connect, TLS, login), never the secret."""
    context = tls_context(spec.ca_file, ImapError) if spec.tls != "plain" else None
    try:
        imap = IMAPClient(
            spec.host,
            port=spec.port,
            ssl=spec.tls == "implicit",
            ssl_context=context,
            timeout=spec.timeout,
        )
        if spec.tls == "starttls":
            imap.starttls(context)
    except ssl.SSLCertVerificationError as exc:
        raise ImapError(
            f"{spec.label}: TLS certificate not trusted ({exc.verify_message}); "
            "set ca_file to the server's CA if it is yours"
        ) from None
    except (OSError, ssl.SSLError, imaplib.IMAP4.error) as exc:
        raise ImapError(
            f"{spec.label}: cannot connect: {reason(exc)}{tls_hint(exc, spec.tls, STARTTLS_ADVICE)}"
        ) from None
    # Aware UTC datetimes for INTERNALDATE rather than naive local times.
    imap.normalise_times = False
    try:
        secret = spec.secret()
        if spec.auth == "xoauth2":
            imap.oauth2_login(spec.username, secret)
        else:
            imap.login(spec.username, secret)
    except imap_exceptions.LoginError as exc:
        shutdown(imap)
        if isinstance(exc.__context__, (imaplib.IMAP4.abort, OSError)):
            # imapclient calls the connection dropping during LOGIN (a server restarting) a
            # LoginError too; that is no refusal, and must not put the account on the long
            # back-off of a wrong password (tests/test_imap_client.py).
            raise ImapError(f"{spec.label}: login failed: {reason(exc)}") from None
        # The server's text may echo the mechanism but never the secret we sent.
        raise AuthenticationFailed(
            f"{spec.label}: login refused for {spec.username} ({spec.auth}): {reason(exc)}"
        ) from None
    except (OSError, imaplib.IMAP4.error) as exc:
        shutdown(imap)
        raise ImapError(f"{spec.label}: login failed: {reason(exc)}") from None
    except BaseException:  # e.g. the secret could not be obtained
        shutdown(imap)
        raise
    return imap


@dataclass(frozen=True)
class ServerCertificate:
    """What the TLS handshake with a server showed: its certificate (DER) and whether the
    system's CAs (plus ``ca_file``) vouch for it; ``problem`` says why not."""

    der: bytes
    trusted: bool
    problem: str | None = None


def server_certificate(
    host: str, port: int, tls: str, ca_file: Path | None = None, timeout: float = 10.0
) -> ServerCertificate:
    """Handshake with the IMAP server (implicit TLS, or STARTTLS after the greeting) and
    return its certificate, verified or not (for ``init``, which offers to pin one the system
    does not trust, as ssh does). Raises ImapError when the server cannot be reached or speaks
    no TLS there."""
    label = f"{host}:{port}"
    verifying = tls_context(ca_file, ImapError)
    problem: str | None = None
    for context in (verifying, None):
        try:
            with socket.create_connection((host, port), timeout=timeout) as raw:
                if tls == "starttls":
                    reader = raw.makefile("rb")
                    reader.readline()  # the greeting
                    raw.sendall(b"s1 STARTTLS\r\n")
                    line = reader.readline()
                    while line.startswith(b"* "):
                        line = reader.readline()
                    if not line.startswith(b"s1 OK"):
                        raise ImapError(f"{label}: STARTTLS refused: {text_of(line).strip()[:100]}")
                if context is None:  # only to read the certificate that was not trusted
                    context = ssl.create_default_context()
                    context.check_hostname = False
                    context.verify_mode = ssl.CERT_NONE
                with context.wrap_socket(raw, server_hostname=host) as wrapped:
                    der = wrapped.getpeercert(binary_form=True) or b""
            if context is verifying:
                return ServerCertificate(der, True)
            return ServerCertificate(der, False, problem)
        except ssl.SSLCertVerificationError as exc:
            problem = exc.verify_message or str(exc)
            continue
        except (OSError, ssl.SSLError) as exc:
            hint = tls_hint(exc, tls, STARTTLS_ADVICE)
            raise ImapError(f"{label}: cannot connect: {reason(exc)}{hint}") from None
    raise ImapError(f"{label}: no TLS certificate")  # pragma: no cover (the loop returns)


def shutdown(imap: IMAPClient) -> None:
    """Close a connection without a LOGOUT exchange (for broken ones; never raises)."""
    try:
        imap.shutdown()
    except Exception:  # already broken
        pass


class _AnswerTooLarge(imaplib.IMAP4.abort):
    """An answer broke a :class:`CommandGuard` limit (lines or bytes)."""


class CommandGuard:
    """Bounds the answer to each command on one imaplib connection: its time, its lines and
    its bytes. Installed over the connection's ``read`` and ``readline`` (which imaplib and
    :class:`FetchReader` read through); :meth:`limits` arms it for one command.

    Time: a watchdog thread shuts the socket down when the command's deadline passes, so a
    read blocked on a server that trickles a byte at a time ends at once (a per-read socket
    timeout never would). Lines and bytes: past the limit the read raises (an imaplib
    ``abort``) and the socket is shut down. Either way the connection is finished; the caller
    reports the step as failed and the next pass reconnects."""

    def __init__(self, imap4: imaplib.IMAP4) -> None:
        self._imap4 = imap4
        self._raw_read = imap4.read
        self._raw_readline = self._read_line
        imap4.read = self.read  # type: ignore[method-assign]
        imap4.readline = self.readline  # type: ignore[method-assign]
        self._cond = threading.Condition()
        self._deadline: float | None = None
        self._seconds = 0.0
        self._generation = 0
        self._closed = False
        self.expired = False
        self._max_lines = MAX_LINES_PER_COMMAND
        self._max_bytes = MAX_ANSWER_BYTES
        self._lines = 0
        self._bytes = 0
        self._watchdog = threading.Thread(target=self._watch, name="imap-watchdog", daemon=True)
        self._watchdog.start()

    def limits(self, seconds: float, max_bytes: int, max_lines: int) -> _Armed:
        """A context manager bounding the command run inside it."""
        return _Armed(self, seconds, max_bytes, max_lines)

    def _arm(self, seconds: float, max_bytes: int, max_lines: int) -> None:
        with self._cond:
            self._lines = self._bytes = 0
            self._max_bytes, self._max_lines = max_bytes, max_lines
            self._seconds = seconds
            self._deadline = time.monotonic() + seconds
            self._generation += 1
            self._cond.notify()

    def _disarm(self) -> None:
        with self._cond:
            self._deadline = None
            self._generation += 1
            self._cond.notify()

    def close(self) -> None:
        """Stop the watchdog (never raises)."""
        with self._cond:
            self._closed = True
            self._cond.notify()

    def _watch(self) -> None:
        with self._cond:
            while not self._closed:
                if self._deadline is None:
                    self._cond.wait()
                    continue
                generation, remaining = self._generation, self._deadline - time.monotonic()
                if remaining > 0:
                    self._cond.wait(remaining)
                    continue
                if generation == self._generation:
                    self.expired = True
                    self._deadline = None
                    self._shutdown()

    def _shutdown(self) -> None:
        try:
            sock = self._imap4.socket()
            # The plain socket's shutdown, also for an SSLSocket: it ends a read blocked in
            # another thread without touching the TLS object that thread is using.
            socket.socket.shutdown(sock, socket.SHUT_RDWR)
        except (OSError, AttributeError):
            pass

    def _read_line(self) -> bytes:
        """One line of the answer, up to MAX_LINE bytes (imaplib's own readline stops at 1 MB:
        a plain SEARCH answer naming 150,000 UIDs)."""
        line = self._imap4.file.readline(MAX_LINE + 1)
        assert isinstance(line, bytes)  # the connection's file is opened "rb"
        if len(line) > MAX_LINE:
            raise imaplib.IMAP4.error(f"got a line of more than {MAX_LINE} bytes")
        return line

    def time_limit_text(self) -> str:
        return f"no complete answer within {self._seconds:.0f} s (the time limit of a command)"

    def read(self, size: int) -> bytes:
        self._bytes += size
        if self._bytes > self._max_bytes:
            self._shutdown()
            raise _AnswerTooLarge(
                f"the answer is larger than {self._max_bytes} bytes (a literal of {size})"
            )
        return self._raw_read(size)

    def readline(self) -> bytes:
        line = self._raw_readline()
        self._lines += 1
        self._bytes += len(line)
        if self._lines > self._max_lines:
            self._shutdown()
            raise _AnswerTooLarge(f"the answer has more than {self._max_lines} lines")
        if self._bytes > self._max_bytes:
            self._shutdown()
            raise _AnswerTooLarge(f"the answer is larger than {self._max_bytes} bytes")
        return line


class _Armed:
    def __init__(self, guard: CommandGuard, seconds: float, max_bytes: int, max_lines: int):
        self._guard, self._args = guard, (seconds, max_bytes, max_lines)

    def __enter__(self) -> None:
        self._guard._arm(*self._args)

    def __exit__(self, *exc: object) -> None:
        self._guard._disarm()


class Session:
    """One logged-in, guarded imapclient connection (see :func:`open_session`); ``imap`` is the
    imapclient object, for the adapter's commands, each run through :meth:`call`.

    ``folder`` is the folder the adapter works in, named in error messages. Not thread-safe:
    one thread at a time uses a session."""

    def __init__(self, spec: ServerSpec) -> None:
        self.spec = spec
        self.imap = open_session(spec)
        self.guard = CommandGuard(self.imap._imap)
        self.folder: str | None = None
        self.broken = False

    def call(
        self,
        step: str,
        func: Callable[[], Any],
        *,
        seconds: float | None = None,
        max_bytes: int = MAX_ANSWER_BYTES,
        max_lines: int = MAX_LINES_PER_COMMAND,
    ) -> Any:
        """Run one IMAP step within its limits (time: ``seconds``, default the spec's
        ``command_time_limit``; the answer's bytes and lines) and return what ``func`` returns.
        Every library or socket failure, and a broken limit, becomes one :class:`ImapError`
        (:meth:`failed`). A refusal (NO, BAD) leaves the connection usable; after anything
        else it is shut down and :attr:`broken` is set (the caller connects again)."""
        # Untagged responses nobody asked for would pile up in imaplib for the connection's
        # life (a server can send any number): each step starts without them.
        self.imap._imap.untagged_responses.clear()
        self.guard.expired = False
        started = time.monotonic()
        try:
            with self.guard.limits(
                seconds if seconds is not None else self.spec.command_time_limit,
                max_bytes,
                max_lines,
            ):
                return func()
        except OversizedBody:
            self.broken = True
            raise
        except ImapError as exc:
            if self.guard.expired:
                self._break()
                raise self.failed(step, self.guard.time_limit_text()) from None
            raise exc
        except (OSError, EOFError, imaplib.IMAP4.abort) as exc:
            why = self.guard.time_limit_text() if self.guard.expired else reason(exc)
            self._break()
            raise self.failed(step, why) from None
        except (imaplib.IMAP4.error, imap_exceptions.IMAPClientError) as exc:
            if self.guard.expired:
                self._break()
                raise self.failed(step, self.guard.time_limit_text()) from None
            raise self.failed(step, _COMMAND_PREFIX.sub("", reason(exc))) from None
        finally:
            if step != "IDLE":  # not each of a watcher's one-second waits
                elapsed = (time.monotonic() - started) * 1000
                log.debug("%s: %s took %.0f ms", self.spec.label, step, elapsed)

    def failed(self, step: str, why: str) -> ImapError:
        """``account (host:port): STEP 'folder' failed: why``: the one shape of a step's error."""
        folder = f" {self.folder!r}" if self.folder else ""
        return ImapError(f"{self.spec.label}: {step}{folder} failed: {why}")

    def close(self, before_logout: Callable[[], None] | None = None) -> None:
        """Run ``before_logout`` (leaving IDLE, say), log out and stop the guard; a broken
        connection is shut down instead. Never raises."""
        try:
            if self.broken:
                raise ImapError("broken")
            with self.guard.limits(min(self.spec.command_time_limit, 30.0), 1 << 20, 1000):
                if before_logout is not None:
                    before_logout()
                self.imap.logout()
        except Exception:  # closing a broken connection: nothing more to do
            shutdown(self.imap)
        finally:
            self.guard.close()

    def _break(self) -> None:
        self.broken = True
        shutdown(self.imap)

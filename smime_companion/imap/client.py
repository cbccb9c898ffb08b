"""The IMAP adapter: the only module that imports imapclient.

It exposes a small :class:`Mailbox` protocol (what :mod:`smime_companion.imap.sync` needs, no
more) and :class:`ImapMailbox`, its implementation over imapclient. Everything it returns is plain
values (ints, strs, bytes, frozen dataclasses); every failure is an
:class:`~smime_companion.errors.ImapError` whose message names the host and the step, never a
secret.

The session is read-only on the server: folders are opened with EXAMINE and bodies fetched with
BODY.PEEK[], so syncing never marks a message as read.

Workarounds for imapclient 4.1 (see the sync issue): its FETCH parser fails on ``1:*``, so UIDs
are always passed as explicit lists (in chunks, to bound the command length); it has no QRESYNC
helper and does not parse VANISHED, so ``VANISHED (EARLIER)`` responses are read from imaplib's
untagged responses after a ``CHANGEDSINCE ... VANISHED`` fetch.

Bodies (and summaries without BODYSTRUCTURE) bypass imaplib's response loop and imapclient's
parser, which cost about 7 s of CPU for 317 MB: :class:`FetchReader` sends ``UID FETCH`` on the
same connection (with a tag from imaplib, so its bookkeeping stays right), reads each literal
with one ``read(n)`` and parses the item lists itself; untagged responses other than FETCH are
stored in imaplib's ``untagged_responses`` exactly as imaplib would store them.

A hostile or broken server is bounded (:class:`CommandGuard`): every command has a time limit
(a watchdog closes the socket when it passes, so a server trickling one byte every 20 s cannot
hold a sync), a cap on the lines (untagged responses) and bytes of its answer, and a body fetch
refuses a literal much larger than the message's RFC822.SIZE (:class:`OversizedBody`). UIDs,
UIDVALIDITY, UIDNEXT, MODSEQ and sizes outside their RFC ranges are dropped or refused.
"""

from __future__ import annotations

import imaplib
import logging
import os
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from functools import partial
from pathlib import Path
from typing import Any, Protocol, TypeGuard

from imapclient import IMAPClient
from imapclient import exceptions as imap_exceptions
from imapclient.datetime_util import parse_to_datetime

from smime_companion.errors import AuthenticationFailed, ImapError

log = logging.getLogger(__name__)

# UIDs per FETCH/SEARCH command: keeps command lines well under servers' limits (Dovecot: 64 KB).
UID_CHUNK = 1000
# A body batch stops growing past this many bytes or messages (bounds memory per round trip).
BODY_BATCH_BYTES = 16 * 1024 * 1024
BODY_BATCH_COUNT = 100

# RFC 3501/9051: UIDs, UIDVALIDITY and sizes are 32-bit unsigned (nz-number, number);
# RFC 7162: MODSEQ values are 63-bit.
UID_MAX = 2**32 - 1
MODSEQ_MAX = 2**63 - 1
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
# A body literal may exceed the message's RFC822.SIZE by this factor plus this slack (servers
# count line ends differently); a larger one is refused unread.
BODY_SIZE_FACTOR = 2
BODY_SIZE_SLACK = 1024 * 1024

_SMIME_TYPES = {
    ("application", "pkcs7-mime"),
    ("application", "x-pkcs7-mime"),
}
_SMIME_SIGNATURE_PROTOCOLS = {"application/pkcs7-signature", "application/x-pkcs7-signature"}


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


@dataclass(frozen=True)
class FolderInfo:
    """What EXAMINE told about a folder. ``highest_modseq`` is None without CONDSTORE."""

    name: str
    uidvalidity: int
    uidnext: int | None
    exists: int
    highest_modseq: int | None = None


@dataclass(frozen=True)
class Summary:
    """One message before its body is fetched: enough to decide whether to download it.

    ``smime`` is None when BODYSTRUCTURE was not examined (``summaries(structure=False)``).
    """

    uid: int
    size: int  # RFC822.SIZE; 0 when the server gave none (or one outside 0..2^32-1)
    flags: tuple[str, ...]
    smime: bool | None
    internaldate: datetime | None = None
    size_announced: bool = True  # False: ``size`` is no announcement to hold the body to


@dataclass(frozen=True)
class Changes:
    """What changed since a MODSEQ: new flags of the given messages, and UIDs expunged."""

    flags: dict[int, tuple[str, ...]]
    vanished: frozenset[int]


class Mailbox(Protocol):
    """The IMAP operations sync needs, on one connection. Implementations raise ImapError."""

    @property
    def capabilities(self) -> frozenset[str]:
        """The server's capabilities after login, upper-case (``IDLE``, ``QRESYNC``, ...)."""
        ...

    @property
    def qresync(self) -> bool:
        """True when QRESYNC is enabled on this connection (VANISHED responses available)."""
        ...

    def list_folders(self, patterns: Sequence[str]) -> list[str]:
        """Folder names matching any of the names or glob patterns (``Archive/*``)."""
        ...

    def examine(self, folder: str) -> FolderInfo:
        """Open ``folder`` read-only and return its state."""
        ...

    def search_uids(self, start: int = 1) -> list[int]:
        """UIDs >= ``start`` in the examined folder, ascending."""
        ...

    def search_smime_candidates(self, start: int = 1) -> list[int] | None:
        """UIDs >= ``start`` whose Content-Type (or Content-Disposition) header mentions
        ``pkcs7`` or ``p7m``: a superset of the S/MIME messages, found by the server. None when
        the server refused the search (then every message's BODYSTRUCTURE must be read)."""
        ...

    def summaries(self, uids: Sequence[int], *, structure: bool = True) -> list[Summary]:
        """Size, flags and arrival time of these messages (expunged ones are absent) and, with
        ``structure``, their S/MIME-ness from BODYSTRUCTURE; without it ``smime`` is None (for
        callers that download every body anyway: BODYSTRUCTURE costs the server a parse)."""
        ...

    def bodies(
        self, uids: Sequence[int], sizes: Mapping[int, int] | None = None
    ) -> dict[int, bytes]:
        """The raw messages (BODY.PEEK[], so the \\Seen flag is not set). Missing: expunged.
        ``sizes`` are the RFC822.SIZEs the server announced: a literal much larger than its
        message's raises :class:`OversizedBody` (carrying the bodies received before it)."""
        ...

    def flags(self, uids: Sequence[int]) -> dict[int, tuple[str, ...]]:
        """Current flags of these messages (expunged ones are absent)."""
        ...

    def changes_since(self, uids: Sequence[int], modseq: int) -> Changes:
        """Flags changed since ``modseq`` among ``uids`` and, with QRESYNC, the expunged ones."""
        ...

    def idle_start(self) -> None:
        """Enter IDLE on the examined folder (or prepare to poll when IDLE is missing)."""
        ...

    def idle_wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds; True when the server reported a change."""
        ...

    def idle_done(self) -> None:
        """Leave IDLE."""
        ...

    def close(self) -> None:
        """Log out and close the connection (never raises)."""
        ...


def connect(spec: ServerSpec) -> ImapMailbox:
    """A logged-in :class:`ImapMailbox`. Raises ImapError naming what failed (connect, TLS,
    login), with no secret in the message."""
    return ImapMailbox(spec)


def ssl_context(ca_file: Path | None) -> ssl.SSLContext:
    """A verifying TLS context: the system CAs plus ``ca_file`` when given."""
    context = ssl.create_default_context()
    if ca_file is not None:
        try:
            context.load_verify_locations(cafile=str(ca_file))
        except (OSError, ssl.SSLError) as exc:
            raise ImapError(f"cannot load ca_file {ca_file}: {exc}") from None
    return context


def open_session(spec: ServerSpec) -> IMAPClient:
    """A connected, TLS-verified, logged-in imapclient connection: the one way every IMAP
    adapter here (read-only sync, the outbox) reaches the server. Raises :class:`ImapError`
    naming the step that failed (connect, TLS, login), never the secret."""
    context = ssl_context(spec.ca_file) if spec.tls != "plain" else None
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
            f"{spec.label}: cannot connect: {reason(exc)}{tls_hint(exc, spec.tls, 'tls')}"
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
    verifying = ssl_context(ca_file)
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
                        raise ImapError(f"{label}: STARTTLS refused: {_text(line).strip()[:100]}")
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
            hint = tls_hint(exc, tls, "tls")
            raise ImapError(f"{label}: cannot connect: {reason(exc)}{hint}") from None
    raise ImapError(f"{label}: no TLS certificate")  # pragma: no cover (the loop returns)


def shutdown(imap: IMAPClient) -> None:
    """Close a connection without a LOGOUT exchange (for broken ones; never raises)."""
    try:
        imap.shutdown()
    except Exception:  # already broken
        pass


class OversizedBody(ImapError):
    """A body FETCH was refused because the server sent a literal much larger than the
    message's RFC822.SIZE (or than any message of the batch, before naming its UID).

    ``uid`` is the message's UID (None when the server had not named it yet), ``received``
    the bodies that arrived whole before it. The connection is shut down: where the next
    response starts is unknown, and reading on would be reading what was refused."""

    def __init__(self, message: str, uid: int | None, received: Mapping[int, Any] | None = None):
        super().__init__(message)
        self.uid = uid
        # The reader's items by UID while reading; the bodies by UID once out of the mailbox.
        self.received: dict[int, Any] = dict(received or {})


def body_allowance(size: int | None) -> int:
    """The largest literal accepted for a message whose RFC822.SIZE is ``size`` (None:
    unknown): ``BODY_SIZE_FACTOR`` times it plus ``BODY_SIZE_SLACK``, at most MAX_LITERAL."""
    if size is None:
        return MAX_LITERAL
    return min(BODY_SIZE_FACTOR * size + BODY_SIZE_SLACK, MAX_LITERAL)


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
        self._raw_readline = imap4.readline
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


def valid_uid(value: Any) -> TypeGuard[int]:
    """Whether ``value`` is a UID a server may send: an int in 1..2^32-1."""
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= UID_MAX


def _valid_uids(values: Iterable[Any], where: str, label: str) -> list[int]:
    """The valid UIDs of ``values`` (ints or digit strings), logging once how many were not."""
    out: list[int] = []
    bad = 0
    for value in values:
        try:
            uid = int(value)
        except (TypeError, ValueError):
            bad += 1
            continue
        if valid_uid(uid):
            out.append(uid)
        else:
            bad += 1
    if bad:
        log.warning("%s: %s: ignored %d UIDs outside 1..%d", label, where, bad, UID_MAX)
    return out


def _bounded(value: Any, low: int, high: int) -> int | None:
    """``value`` as an int when it is one within low..high, else None."""
    try:
        number = int(value)
    except (TypeError, ValueError):
        return None
    return number if low <= number <= high else None


class ImapMailbox:
    """:class:`Mailbox` over one imapclient connection (each method is documented there).

    Not thread-safe: one thread at a time uses a connection (sync's prefetch thread takes it
    only while the sync thread waits)."""

    def __init__(self, spec: ServerSpec) -> None:
        self.spec = spec
        self._folder: str | None = None
        self._idling = False
        self._idle_polling = False
        self._qresync = False
        self._imap = open_session(spec)
        self._guard = CommandGuard(self._imap._imap)
        try:
            caps = self.capabilities
            wanted = [c for c in ("QRESYNC", "CONDSTORE") if c in caps]
            if wanted:
                # QRESYNC implies CONDSTORE; enabling it makes EXAMINE report HIGHESTMODSEQ and
                # lets CHANGEDSINCE fetches report expunges as VANISHED.
                enabled = self._call("ENABLE", partial(self._imap.enable, *wanted))
                self._qresync = "QRESYNC" in {_text(c).upper() for c in enabled}
        except BaseException:
            self.close()
            raise

    # -- connection ------------------------------------------------------------------------------

    def _caps(self) -> frozenset[str]:
        return frozenset(_text(c).upper() for c in self._imap.capabilities())

    @property
    def capabilities(self) -> frozenset[str]:
        return self._call("CAPABILITY", self._caps)

    @property
    def qresync(self) -> bool:
        return self._qresync

    def close(self) -> None:
        try:
            with self._guard.limits(min(self.spec.command_time_limit, 30.0), 1 << 20, 1000):
                if self._idling:
                    self._imap.idle_done()
                self._imap.logout()
        except Exception:  # closing a broken connection: nothing more to do
            try:
                self._imap.shutdown()
            except Exception:
                pass
        finally:
            self._guard.close()

    def _call(
        self,
        step: str,
        func: Callable[[], Any],
        *,
        seconds: float | None = None,
        max_bytes: int = MAX_ANSWER_BYTES,
        max_lines: int = MAX_LINES_PER_COMMAND,
    ) -> Any:
        """Run one IMAP step within its limits (time: ``seconds``, default the spec's
        ``command_time_limit``; the answer's bytes and lines), turning every library or socket
        failure, and a broken limit, into one ImapError."""
        # Untagged responses nobody asked for would pile up in imaplib for the connection's
        # life (a server can send any number): each step starts without them.
        self._imap._imap.untagged_responses.clear()
        self._guard.expired = False
        try:
            with self._guard.limits(
                seconds if seconds is not None else self.spec.command_time_limit,
                max_bytes,
                max_lines,
            ):
                return func()
        except OversizedBody:
            raise
        except ImapError as exc:
            if self._guard.expired:
                raise self._failed(step, self._guard.time_limit_text()) from None
            raise exc
        except (OSError, imaplib.IMAP4.error, imap_exceptions.IMAPClientError, EOFError) as exc:
            why = self._guard.time_limit_text() if self._guard.expired else reason(exc)
            if isinstance(exc, _AnswerTooLarge) or self._guard.expired:
                shutdown(self._imap)
            raise self._failed(step, why) from None

    def _failed(self, step: str, why: str) -> ImapError:
        """``account (host:port): STEP 'folder' failed: why``: the one shape of a step's error."""
        folder = f" {self._folder!r}" if self._folder else ""
        return ImapError(f"{self.spec.label}: {step}{folder} failed: {why}")

    def _uid_fetch(
        self,
        step: str,
        uids: Sequence[int],
        items: bytes,
        sizes: Mapping[int, int] | None = None,
    ) -> dict[int, dict[bytes, Any]]:
        """``UID FETCH <uids> <items>`` read by :class:`FetchReader`: the items of each asked-for
        UID the server returned (expunged ones are absent). Raises ImapError naming ``step``
        on NO/BAD (like imapclient's fetch, even when some messages came first), on a socket
        failure, or on a response it cannot parse; after the last two the connection is shut
        down, since where the next response starts is no longer known."""
        imap = self._imap._imap
        command = b"UID FETCH " + sequence_set(uids) + b" " + items
        allowance = None if sizes is None else _allowances(uids, sizes)

        def run() -> dict[int, dict[bytes, Any]]:
            # As imaplib's _command does: a stale tagged-status text must not be mistaken for
            # this command's, and a BYE already received means the connection is gone.
            for typ in ("OK", "NO", "BAD"):
                imap.untagged_responses.pop(typ, None)
            imap._check_bye()
            tag = imap._new_tag()  # registered in imaplib's tagged_commands: tags stay unique
            try:
                imap.send(tag + b" " + command + b"\r\n")
                reader = FetchReader(imap.readline, imap.read, imap._append_untagged, allowance)
                status, text, messages = reader.read_until(tag)
            except BaseException as exc:
                shutdown(self._imap)
                if isinstance(exc, OversizedBody):
                    wanted = set(uids)
                    exc.received = {
                        uid: body
                        for uid, item in exc.received.items()
                        if uid in wanted and isinstance(body := item.get(b"BODY[]"), bytes)
                    }
                    raise OversizedBody(
                        str(self._failed(step, str(exc))), exc.uid, exc.received
                    ) from None
                if isinstance(exc, ImapError):
                    raise self._failed(step, str(exc)) from None
                raise
            finally:
                imap.tagged_commands.pop(tag, None)
            if status != "OK":
                # The tagged completion was read: the connection is still in step.
                raise self._failed(step, f"{status} {_text(text)[:200]}")
            wanted = set(uids)
            return {uid: item for uid, item in messages.items() if uid in wanted}

        announced = sum(sizes.get(uid, 0) for uid in uids) if sizes else 0
        if allowance is None:
            max_bytes = MAX_ANSWER_BYTES
        else:
            # The whole answer: every message's allowance (a server repeating a body, or
            # sending bodies nobody asked for, stops here) plus the lines around them.
            max_bytes = sum(allowance(uid) for uid in uids) + MAX_ANSWER_BYTES
        result: dict[int, dict[bytes, Any]] = self._call(
            step,
            run,
            seconds=self.spec.command_time_limit + announced / MIN_BODY_RATE,
            max_bytes=max_bytes,
            max_lines=MAX_LINES_PER_COMMAND // 10 + LINES_PER_MESSAGE * len(uids),
        )
        return result

    # -- folders ---------------------------------------------------------------------------------

    def list_folders(self, patterns: Sequence[str]) -> list[str]:
        listed = self._call("LIST", lambda: self._imap.list_folders())
        names = [name for flags, _delim, name in listed if b"\\Noselect" not in flags]
        chosen: list[str] = []
        for pattern in patterns:
            for name in names:
                # INBOX is case-insensitive (RFC 3501); other names are matched as given.
                matches = (
                    name.upper() == "INBOX"
                    if pattern.upper() == "INBOX"
                    else fnmatchcase(name, pattern)
                )
                if matches and name not in chosen:
                    chosen.append(name)
        return chosen

    def examine(self, folder: str) -> FolderInfo:
        self._folder = folder
        data = self._call("EXAMINE", lambda: self._imap.select_folder(folder, readonly=True))
        raw_uidvalidity = data.get(b"UIDVALIDITY")
        if raw_uidvalidity is None:
            raise ImapError(f"{self.spec.label}: EXAMINE {folder!r} gave no UIDVALIDITY")
        uidvalidity = _bounded(raw_uidvalidity, 1, UID_MAX)
        if uidvalidity is None:
            shown = _text(raw_uidvalidity)[:30]
            raise ImapError(
                f"{self.spec.label}: EXAMINE {folder!r} gave an invalid UIDVALIDITY {shown!r} "
                f"(not in 1..{UID_MAX})"
            )
        modseq = data.get(b"HIGHESTMODSEQ")
        if b"NOMODSEQ" in b" ".join(_as_bytes(v) for v in data.get(b"OK", [])):
            modseq = None
        return FolderInfo(
            name=folder,
            uidvalidity=uidvalidity,
            # Out of range: as if not sent (the sync then derives UIDNEXT from the UIDs it
            # sees, and works without CONDSTORE).
            uidnext=_bounded(data.get(b"UIDNEXT"), 1, UID_MAX + 1),
            exists=_bounded(data.get(b"EXISTS", 0), 0, UID_MAX) or 0,
            highest_modseq=_bounded(modseq, 1, MODSEQ_MAX) if modseq is not None else None,
        )

    # -- messages --------------------------------------------------------------------------------

    def search_uids(self, start: int = 1) -> list[int]:
        criteria = ["ALL"] if start <= 1 else ["UID", f"{start}:*"]
        found = self._call("UID SEARCH", lambda: self._imap.search(criteria))
        uids = _valid_uids(found, "UID SEARCH", self.spec.label)
        # "n:*" always includes the highest UID even when it is below n (RFC 3501 6.4.8).
        return sorted(u for u in set(uids) if u >= start)

    def search_smime_candidates(self, start: int = 1) -> list[int] | None:
        # SEARCH HEADER is a case-insensitive substring match done by the server: on 10,000
        # messages it costs a tenth of fetching and parsing every BODYSTRUCTURE.
        criteria = [
            "UID", f"{max(start, 1)}:*",
            "OR", "OR",
            "HEADER", "Content-Type", "pkcs7",
            "HEADER", "Content-Type", "p7m",
            "HEADER", "Content-Disposition", "p7m",
        ]  # fmt: skip
        try:
            found = self._call("UID SEARCH HEADER", partial(self._imap.search, criteria))
        except ImapError as exc:
            if self._imap_alive():
                log.info(
                    "%s: header search refused (%s); reading BODYSTRUCTUREs", self.spec.label, exc
                )
                return None
            raise
        uids = _valid_uids(found, "UID SEARCH HEADER", self.spec.label)
        return sorted(u for u in set(uids) if u >= start)

    def _imap_alive(self) -> bool:
        try:
            self._imap.noop()
            return True
        except Exception:
            return False

    def summaries(self, uids: Sequence[int], *, structure: bool = True) -> list[Summary]:
        if not structure:
            return self._plain_summaries(uids)
        out: list[Summary] = []
        for chunk in _chunks(sorted(uids), UID_CHUNK):
            data = self._call(
                "UID FETCH BODYSTRUCTURE",
                partial(
                    self._imap.fetch,
                    chunk,
                    ["RFC822.SIZE", "FLAGS", "INTERNALDATE", "BODYSTRUCTURE"],
                ),
            )
            for uid in chunk:
                item = data.get(uid)
                if item is None:
                    continue  # expunged meanwhile
                structure = item.get(b"BODYSTRUCTURE")
                size = _bounded(item.get(b"RFC822.SIZE"), 0, UID_MAX)
                out.append(
                    Summary(
                        uid=uid,
                        size=size or 0,
                        flags=_flags(item.get(b"FLAGS", ())),
                        smime=structure is not None and is_smime_structure(structure),
                        internaldate=_aware(item.get(b"INTERNALDATE")),
                        size_announced=size is not None,
                    )
                )
        return out

    def _plain_summaries(self, uids: Sequence[int]) -> list[Summary]:
        """Summaries without BODYSTRUCTURE (``smime`` None), through :class:`FetchReader`."""
        out: list[Summary] = []
        for chunk in _chunks(sorted(uids), UID_CHUNK):
            data = self._uid_fetch(
                "UID FETCH RFC822.SIZE", chunk, b"(UID RFC822.SIZE FLAGS INTERNALDATE)"
            )
            for uid in chunk:
                item = data.get(uid)
                if item is None:
                    continue  # expunged meanwhile
                size = item.get(b"RFC822.SIZE")
                size = size if isinstance(size, int) and 0 <= size <= UID_MAX else None
                flags = item.get(b"FLAGS", ())
                out.append(
                    Summary(
                        uid=uid,
                        size=size or 0,
                        flags=_flags(flags) if isinstance(flags, tuple) else (),
                        smime=None,
                        internaldate=_internaldate(item.get(b"INTERNALDATE")),
                        size_announced=size is not None,
                    )
                )
        return out

    def bodies(
        self, uids: Sequence[int], sizes: Mapping[int, int] | None = None
    ) -> dict[int, bytes]:
        if not uids:
            return {}
        data = self._uid_fetch(
            "UID FETCH BODY.PEEK[]", sorted(uids), b"(UID BODY.PEEK[])", sizes or {}
        )
        # A literal is bytes already (one read(n) each): no copy. NIL (an empty answer from a
        # server that lost the message) is not a body.
        return {
            uid: body
            for uid, item in data.items()
            if isinstance(body := item.get(b"BODY[]"), bytes)
        }

    def flags(self, uids: Sequence[int]) -> dict[int, tuple[str, ...]]:
        out: dict[int, tuple[str, ...]] = {}
        for chunk in _chunks(sorted(uids), UID_CHUNK):
            data = self._call("UID FETCH FLAGS", partial(self._imap.fetch, chunk, ["FLAGS"]))
            asked = set(chunk)  # what the server adds of its own names nothing we hold
            out.update(
                {uid: _flags(item.get(b"FLAGS", ())) for uid, item in data.items() if uid in asked}
            )
        return out

    def changes_since(self, uids: Sequence[int], modseq: int) -> Changes:
        flags: dict[int, tuple[str, ...]] = {}
        vanished: set[int] = set()
        modifier = f"CHANGEDSINCE {modseq}" + (" VANISHED" if self._qresync else "")
        for chunk in _chunks(sorted(uids), UID_CHUNK):
            data = self._call(
                "UID FETCH CHANGEDSINCE",
                partial(self._imap.fetch, chunk, ["FLAGS"], modifiers=[modifier]),
            )
            asked = set(chunk)
            flags.update(
                {uid: _flags(item.get(b"FLAGS", ())) for uid, item in data.items() if uid in asked}
            )
            if self._qresync:
                # imapclient leaves "* VANISHED (EARLIER) 3:5,9" in imaplib's untagged responses.
                for line in self._imap._imap.untagged_responses.pop("VANISHED", []):
                    vanished.update(_parse_vanished(_as_bytes(line)))
        return Changes(flags=flags, vanished=frozenset(vanished & set(uids)))

    # -- waiting for news ------------------------------------------------------------------------

    def idle_start(self) -> None:
        if "IDLE" in self.capabilities:
            self._call("IDLE", self._imap.idle)
            self._idling = True
        else:
            self._idle_polling = True

    def idle_wait(self, timeout: float) -> bool:
        if not self._idling:
            # No IDLE: poll with NOOP, which returns pending EXISTS/EXPUNGE/FETCH responses.
            time.sleep(timeout)
            _text, responses = self._call("NOOP", self._imap.noop)
            return any(_is_change(r) for r in responses)
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            started = time.monotonic()
            responses = self._call(
                "IDLE",
                partial(self._imap.idle_check, remaining),
                seconds=remaining + self.spec.command_time_limit,
            )
            if any(_is_change(r) for r in responses):
                return True
            # imapclient returns an empty list on EOF: tell a dead server from a quiet one.
            if not responses and time.monotonic() - started < remaining * 0.5 and self._closed():
                raise ImapError(f"{self.spec.label}: connection closed by the server during IDLE")
            # Otherwise a keepalive ("* OK Still here"): keep waiting.
        return False

    def idle_done(self) -> None:
        if self._idling:
            self._idling = False
            self._call("IDLE DONE", self._imap.idle_done)
        self._idle_polling = False

    def _closed(self) -> bool:
        """True when the server closed the connection (EOF waiting on the socket)."""
        sock = self._imap.socket()
        if isinstance(sock, ssl.SSLSocket) and sock.pending():
            return False  # decrypted data is waiting: not closed
        # Peek at the raw TCP stream through a duplicate descriptor: an SSLSocket refuses
        # MSG_PEEK, and peeking at TLS records consumes nothing.
        raw = socket.socket(fileno=os.dup(sock.fileno()))
        try:
            return raw.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except BlockingIOError:
            return False
        except OSError:
            return True
        finally:
            raw.close()


# -- the FETCH reader ---------------------------------------------------------------------------

# A literal larger than this is refused before anything is allocated for it: read(n) allocates n
# bytes at once, and a hostile or broken server could announce any size.
MAX_LITERAL = 512 * 1024 * 1024
# Nesting deeper than this in one item list is refused (BODYSTRUCTUREs nest a few levels).
MAX_DEPTH = 64

# One token of a FETCH item list, after optional spaces. Groups: 1 "(", 2 ")", 3 a quoted string's
# content, 4 a literal's size (only at the end of a line), 5 an atom or number, where an item name
# may carry a section and a partial range (``BODY[HEADER.FIELDS (TO)]<0>``).
_TOKEN = re.compile(
    rb' *(?:(\()|(\))|"((?:[^"\\]|\\.)*)"|\{(\d+)\}\Z'
    rb'|([^ ()"{}\[\]]+(?:\[[^\]]*\](?:<\d+(?:\.\d+)?>)?)?))'
)
_QUOTED_ESCAPE = re.compile(rb"\\(.)")
_FETCH = re.compile(rb"\* (\d+) FETCH \(")
# imaplib's own patterns for the other untagged responses, so they are stored as it stores them.
_UNTAGGED = re.compile(rb"\* (?P<type>[A-Z-]+)( (?P<data>.*))?", re.ASCII)
_UNTAGGED_STATUS = re.compile(rb"\* (?P<data>\d+) (?P<type>[A-Z-]+)( (?P<data2>.*))?", re.ASCII)
_LITERAL_AT_END = re.compile(rb".*{(?P<size>\d+)}$", re.ASCII)
_RESPONSE_CODE = re.compile(rb"\[(?P<type>[A-Z-]+)( (?P<data>.*))?\]", re.ASCII)


class FetchReader:
    """Reads the responses to one tagged FETCH command from a connection's stream.

    ``readline()`` returns one line with its CRLF (b"" at end of stream) and ``read(n)`` n bytes
    (imaplib's methods of the same names); ``keep(type, data)`` receives every untagged response
    that is not a FETCH, in the form imaplib's ``_append_untagged`` stores it (the data, or a
    ``(data, literal)`` tuple for each literal in it), so EXISTS, EXPUNGE, VANISHED and response
    codes reach whoever reads ``untagged_responses`` later. Raises ImapError (without the
    server's name: the caller adds it) on a response it cannot parse, a closed stream or a BYE.
    """

    def __init__(
        self,
        readline: Callable[[], bytes],
        read: Callable[[int], bytes],
        keep: Callable[[str, Any], None],
        allowance: Callable[[int | None], int] | None = None,
    ) -> None:
        self._readline = readline
        self._read = read
        self._keep = keep
        # The largest literal accepted inside a FETCH for a UID (None: the UID is not named
        # yet); None: MAX_LITERAL for every literal.
        self._allowance = allowance
        self._messages: dict[int, dict[bytes, Any]] = {}

    def read_until(self, tag: bytes) -> tuple[str, bytes, dict[int, dict[bytes, Any]]]:
        """Read up to the tagged completion of ``tag``: (``OK``/``NO``/``BAD``, its text, the
        items of each FETCH response by UID). Items are keyed by upper-case name (``BODY[]``,
        ``FLAGS``); values are int (numbers), bytes (atoms, quoted strings, literals), None (NIL)
        or tuples (lists). Responses without a UID (unsolicited, for another message) are
        dropped; two for one UID are merged."""
        messages = self._messages = {}
        prefix = tag + b" "
        while True:
            line = self._line()
            fetch = _FETCH.match(line)
            if fetch is not None:
                items = self._item_list(line, fetch.end())
                uid = items.get(b"UID")
                if valid_uid(uid):  # a UID outside 1..2^32-1 names no message
                    messages.setdefault(uid, {}).update(items)
            elif line.startswith(b"* "):
                self._untagged(line)
            elif line.startswith(prefix):
                status, _, text = line[len(prefix) :].partition(b" ")
                if status not in (b"OK", b"NO", b"BAD"):
                    raise _unparsable(line)
                self._response_code(text)
                return status.decode("ascii"), text, messages
            else:  # a continuation or another command's tag: not a FETCH exchange
                raise _unparsable(line)

    def _line(self) -> bytes:
        line = self._readline()
        if not line:
            raise ImapError("connection closed by the server during FETCH")
        if not line.endswith(b"\n"):
            # readline stops short of a line end only where the stream ended (imaplib raises
            # for an overlong line): the connection died mid-line; the server said nothing wrong.
            raise ImapError("connection closed by the server during FETCH, in the middle of a line")
        if not line.endswith(b"\r\n"):
            raise _unparsable(line)
        return line[:-2]

    def _literal(self, size: int) -> bytes:
        if size > MAX_LITERAL:
            raise ImapError(f"server announced a literal of {size} bytes (limit {MAX_LITERAL})")
        data = self._read(size)
        if len(data) != size:
            raise ImapError("connection closed by the server inside a literal")
        return data

    def _item_list(self, line: bytes, pos: int) -> dict[bytes, Any]:
        """The ``name value`` pairs of the list opened just before ``pos``, read on through
        literals and the lines after them."""
        stack: list[list[Any]] = [[]]
        while True:
            token = _TOKEN.match(line, pos)
            if token is None:
                raise _unparsable(line)
            pos = token.end()
            kind = token.lastindex
            if kind == 5:
                atom = token.group(5)
                if atom.isdigit():
                    stack[-1].append(int(atom))
                else:
                    stack[-1].append(None if atom.upper() == b"NIL" else atom)
            elif kind == 4:
                size = int(token.group(4))
                if self._allowance is not None:
                    self._check_body_size(size, stack[0])
                stack[-1].append(self._literal(size))
                line, pos = self._line(), 0  # the response goes on after the literal
            elif kind == 3:
                quoted = token.group(3)
                stack[-1].append(_QUOTED_ESCAPE.sub(rb"\1", quoted) if b"\\" in quoted else quoted)
            elif kind == 1:
                if len(stack) >= MAX_DEPTH:
                    raise _unparsable(line)
                stack.append([])
            else:  # ")"
                done = stack.pop()
                if stack:
                    stack[-1].append(tuple(done))
                    continue
                if line[pos:].strip(b" ") or len(done) % 2:
                    raise _unparsable(line)
                names = done[0::2]
                if not all(isinstance(name, bytes) for name in names):
                    raise _unparsable(line)
                return {name.upper(): value for name, value in zip(names, done[1::2], strict=True)}

    def _check_body_size(self, size: int, items: list[Any]) -> None:
        """Raise :class:`OversizedBody` when a literal of ``size`` bytes, in a FETCH whose
        top-level items read so far are ``items``, is larger than its message's allowance."""
        assert self._allowance is not None
        uid = next((v for k, v in zip(items[0::2], items[1::2], strict=False) if k == b"UID"), None)
        uid = uid if valid_uid(uid) else None
        allowed = self._allowance(uid)
        if size > allowed:
            which = f"UID {uid}" if uid is not None else "a message not named yet"
            raise OversizedBody(
                f"server sent a literal of {size} bytes for {which}, more than the {allowed} "
                "its announced size allows; refused unread",
                uid,
                self._messages,
            )

    def _untagged(self, line: bytes) -> None:
        """Store a non-FETCH untagged response as imaplib's ``_get_response`` would."""
        data2 = None
        match = _UNTAGGED.match(line)
        if match is None:
            match = _UNTAGGED_STATUS.match(line)
            if match is None:
                raise _unparsable(line)
            data2 = match.group("data2")
        kind = match.group("type").decode("ascii")
        data = match.group("data") or b""
        if data2:
            data = data + b" " + data2
        while (literal := _LITERAL_AT_END.match(data)) is not None:
            self._keep(kind, (data, self._literal(int(literal.group("size")))))
            data = self._line()
        self._keep(kind, data)
        if kind in ("OK", "NO", "BAD"):
            self._response_code(data)
        if kind == "BYE":
            raise ImapError(f"server closed the connection: {_text(data)[:80]}")

    def _response_code(self, text: bytes) -> None:
        """Keep ``[CODE data]`` of an OK/NO/BAD as imaplib does (``untagged_responses[CODE]``)."""
        if (code := _RESPONSE_CODE.match(text)) is not None:
            self._keep(code.group("type").decode("ascii"), code.group("data"))


def _allowances(uids: Sequence[int], sizes: Mapping[int, int]) -> Callable[[int | None], int]:
    """The literal allowance of each asked-for UID (a UID not asked for, or not named yet: the
    largest of the batch)."""
    largest = max((body_allowance(sizes.get(uid)) for uid in uids), default=BODY_SIZE_SLACK)
    wanted = set(uids)

    def allowance(uid: int | None) -> int:
        if uid is None or uid not in wanted:
            return largest
        return body_allowance(sizes.get(uid))

    return allowance


def _unparsable(line: bytes) -> ImapError:
    # At most 80 bytes: a line after a wrong literal size may be message text.
    return ImapError(f"unparsable FETCH response {line[:80]!r}")


def sequence_set(uids: Iterable[int]) -> bytes:
    """An IMAP sequence set for these UIDs with runs as ranges: [1, 2, 3, 7] -> ``b"1:3,7"``."""
    runs: list[str] = []
    start = previous = -1
    for uid in sorted(set(uids)):
        if uid != previous + 1:
            if previous >= 0:
                runs.append(f"{start}:{previous}" if previous > start else str(start))
            start = uid
        previous = uid
    if previous >= 0:
        runs.append(f"{start}:{previous}" if previous > start else str(start))
    return ",".join(runs).encode("ascii")


# -- pure helpers (also used by tests) ----------------------------------------------------------


def is_smime_structure(structure: Any) -> bool:
    """True when a BODYSTRUCTURE (as imapclient parses it) is S/MIME at the top level:
    application/(x-)pkcs7-mime, multipart/signed with a PKCS#7 signature protocol, or an
    application/octet-stream named ``*.p7m`` (as some gateways send enveloped mail)."""
    if not isinstance(structure, (list, tuple)) or not structure:
        return False
    if isinstance(structure[0], list):  # multipart: ([parts...], subtype, params, ...)
        subtype = _text(structure[1]).lower() if len(structure) > 1 else ""
        params = _params(structure[2]) if len(structure) > 2 else {}
        return subtype == "signed" and params.get("protocol", "").lower() in (
            _SMIME_SIGNATURE_PROTOCOLS
        )
    if len(structure) < 3:
        return False
    media = (_text(structure[0]).lower(), _text(structure[1]).lower())
    if media in _SMIME_TYPES:
        return True
    params = _params(structure[2])
    if media == ("application", "octet-stream"):
        name = params.get("name", "")
        if not name and len(structure) > 8:
            disposition = structure[8]
            if isinstance(disposition, (list, tuple)) and len(disposition) > 1:
                name = _params(disposition[1]).get("filename", "")
        return name.lower().endswith(".p7m")
    return False


def _params(raw: Any) -> dict[str, str]:
    if not isinstance(raw, (list, tuple)):
        return {}
    items = [_text(x) for x in raw]
    return {items[i].lower(): items[i + 1] for i in range(0, len(items) - 1, 2)}


def _parse_vanished(line: bytes) -> set[int]:
    """UIDs in a VANISHED response body: ``(EARLIER) 3:5,9`` -> {3, 4, 5, 9}."""
    text = line.decode("ascii", "replace")
    text = text.split(")", 1)[1] if text.lstrip().startswith("(") else text
    return uid_set(text.strip())


def uid_set(text: str) -> set[int]:
    """Parse an IMAP sequence set of UIDs (``1:3,7``). Raises ImapError when malformed."""
    out: set[int] = set()
    for part in filter(None, text.split(",")):
        low, _, high = part.partition(":")
        try:
            a, b = int(low), int(high or low)
        except ValueError:
            raise ImapError(f"server sent a malformed UID set {text[:60]!r}") from None
        if not (valid_uid(a) and valid_uid(b)):
            raise ImapError(f"server sent a UID outside 1..{UID_MAX} in {part[:40]!r}")
        if a > b:
            a, b = b, a
        if b - a > 10_000_000:
            raise ImapError(f"server sent an implausible UID range {part!r}")
        out.update(range(a, b + 1))
    return out


def _is_change(response: Any) -> bool:
    if not isinstance(response, tuple) or len(response) < 2:
        return False
    kind = _as_bytes(response[1]).upper() if isinstance(response[1], (bytes, str)) else b""
    head = _as_bytes(response[0]).upper() if isinstance(response[0], (bytes, str)) else b""
    return kind in (b"EXISTS", b"EXPUNGE", b"FETCH", b"RECENT") or head == b"VANISHED"


def _flags(raw: Iterable[Any]) -> tuple[str, ...]:
    return tuple(_text(f) for f in raw)


def _aware(value: Any) -> datetime | None:
    if not isinstance(value, datetime):
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _internaldate(value: Any) -> datetime | None:
    """An INTERNALDATE string as imapclient converts it with ``normalise_times = False``."""
    if not isinstance(value, bytes):
        return None
    try:
        return _aware(parse_to_datetime(value, normalise=False))
    except ValueError:
        return None


def _chunks(items: Sequence[int], size: int) -> Iterable[list[int]]:
    for i in range(0, len(items), size):
        yield list(items[i : i + size])


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _as_bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    return str(value).encode("utf-8", "replace")


def tls_hint(exc: BaseException, tls: str, key: str) -> str:
    """A hint for a TLS handshake that met a server speaking no TLS on that port (a plain or
    STARTTLS port configured as implicit TLS), else ``""``. ``key`` names the config key."""
    if tls == "implicit" and isinstance(exc, ssl.SSLError) and "WRONG_VERSION_NUMBER" in str(exc):
        return (
            f"; the server did not answer with TLS: this port may expect STARTTLS "
            f'(set {key} = "starttls", usually with port 143 for IMAP or 587 for SMTP)'
        )
    return ""


# How Python shows bytes in an exception's text: b'...' or b"..." (imaplib passes the server's
# reply as bytes, and imapclient turns the exception into a string).
_BYTES_REPR = re.compile(r"\bb'((?:[^'\\]|\\.)*)'" + r'|\bb"((?:[^"\\]|\\.)*)"')


def reason(exc: BaseException) -> str:
    """A one-line reason for a library exception, with the server's words as text (never a
    Python ``b'...'``)."""
    text = " ".join(_text(a) for a in exc.args) if exc.args else type(exc).__name__
    text = _BYTES_REPR.sub(lambda m: m.group(1) if m.group(1) is not None else m.group(2), text)
    text = " ".join(text.split())
    return (text[:200] + "...") if len(text) > 200 else text or type(exc).__name__

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
"""

from __future__ import annotations

import imaplib
import logging
import os
import re
import socket
import ssl
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from functools import partial
from pathlib import Path
from typing import Any, Protocol

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
    size: int
    flags: tuple[str, ...]
    smime: bool | None
    internaldate: datetime | None = None


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

    def bodies(self, uids: Sequence[int]) -> dict[int, bytes]:
        """The raw messages (BODY.PEEK[], so the \\Seen flag is not set). Missing: expunged."""
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
            if self._idling:
                self._imap.idle_done()
            self._imap.logout()
        except Exception:  # closing a broken connection: nothing more to do
            try:
                self._imap.shutdown()
            except Exception:
                pass

    def _call(self, step: str, func: Callable[[], Any]) -> Any:
        """Run one IMAP step, turning every library or socket failure into one ImapError."""
        try:
            return func()
        except ImapError:
            raise
        except (OSError, imaplib.IMAP4.error, imap_exceptions.IMAPClientError, EOFError) as exc:
            raise self._failed(step, reason(exc)) from None

    def _failed(self, step: str, why: str) -> ImapError:
        """``account (host:port): STEP 'folder' failed: why``: the one shape of a step's error."""
        folder = f" {self._folder!r}" if self._folder else ""
        return ImapError(f"{self.spec.label}: {step}{folder} failed: {why}")

    def _uid_fetch(
        self, step: str, uids: Sequence[int], items: bytes
    ) -> dict[int, dict[bytes, Any]]:
        """``UID FETCH <uids> <items>`` read by :class:`FetchReader`: the items of each asked-for
        UID the server returned (expunged ones are absent). Raises ImapError naming ``step``
        on NO/BAD (like imapclient's fetch, even when some messages came first), on a socket
        failure, or on a response it cannot parse; after the last two the connection is shut
        down, since where the next response starts is no longer known."""
        imap = self._imap._imap
        command = b"UID FETCH " + sequence_set(uids) + b" " + items

        def run() -> dict[int, dict[bytes, Any]]:
            # As imaplib's _command does: a stale tagged-status text must not be mistaken for
            # this command's, and a BYE already received means the connection is gone.
            for typ in ("OK", "NO", "BAD"):
                imap.untagged_responses.pop(typ, None)
            imap._check_bye()
            tag = imap._new_tag()  # registered in imaplib's tagged_commands: tags stay unique
            try:
                imap.send(tag + b" " + command + b"\r\n")
                reader = FetchReader(imap.readline, imap.read, imap._append_untagged)
                status, text, messages = reader.read_until(tag)
            except BaseException as exc:
                shutdown(self._imap)
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

        result: dict[int, dict[bytes, Any]] = self._call(step, run)
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
        uidvalidity = data.get(b"UIDVALIDITY")
        if uidvalidity is None:
            raise ImapError(f"{self.spec.label}: EXAMINE {folder!r} gave no UIDVALIDITY")
        modseq = data.get(b"HIGHESTMODSEQ")
        if b"NOMODSEQ" in b" ".join(_as_bytes(v) for v in data.get(b"OK", [])):
            modseq = None
        return FolderInfo(
            name=folder,
            uidvalidity=int(uidvalidity),
            uidnext=int(data[b"UIDNEXT"]) if b"UIDNEXT" in data else None,
            exists=int(data.get(b"EXISTS", 0)),
            highest_modseq=int(modseq) if modseq is not None else None,
        )

    # -- messages --------------------------------------------------------------------------------

    def search_uids(self, start: int = 1) -> list[int]:
        criteria = ["ALL"] if start <= 1 else ["UID", f"{start}:*"]
        found = self._call("UID SEARCH", lambda: self._imap.search(criteria))
        # "n:*" always includes the highest UID even when it is below n (RFC 3501 6.4.8).
        return sorted(int(u) for u in found if int(u) >= start)

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
        return sorted(int(u) for u in found if int(u) >= start)

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
                out.append(
                    Summary(
                        uid=uid,
                        size=int(item.get(b"RFC822.SIZE", 0)),
                        flags=_flags(item.get(b"FLAGS", ())),
                        smime=structure is not None and is_smime_structure(structure),
                        internaldate=_aware(item.get(b"INTERNALDATE")),
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
                size = item.get(b"RFC822.SIZE", 0)
                flags = item.get(b"FLAGS", ())
                out.append(
                    Summary(
                        uid=uid,
                        size=size if isinstance(size, int) else 0,
                        flags=_flags(flags) if isinstance(flags, tuple) else (),
                        smime=None,
                        internaldate=_internaldate(item.get(b"INTERNALDATE")),
                    )
                )
        return out

    def bodies(self, uids: Sequence[int]) -> dict[int, bytes]:
        if not uids:
            return {}
        data = self._uid_fetch("UID FETCH BODY.PEEK[]", sorted(uids), b"(UID BODY.PEEK[])")
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
            out.update({uid: _flags(item.get(b"FLAGS", ())) for uid, item in data.items()})
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
            flags.update({uid: _flags(item.get(b"FLAGS", ())) for uid, item in data.items()})
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
            responses = self._call("IDLE", partial(self._imap.idle_check, remaining))
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
    ) -> None:
        self._readline = readline
        self._read = read
        self._keep = keep

    def read_until(self, tag: bytes) -> tuple[str, bytes, dict[int, dict[bytes, Any]]]:
        """Read up to the tagged completion of ``tag``: (``OK``/``NO``/``BAD``, its text, the
        items of each FETCH response by UID). Items are keyed by upper-case name (``BODY[]``,
        ``FLAGS``); values are int (numbers), bytes (atoms, quoted strings, literals), None (NIL)
        or tuples (lists). Responses without a UID (unsolicited, for another message) are
        dropped; two for one UID are merged."""
        messages: dict[int, dict[bytes, Any]] = {}
        prefix = tag + b" "
        while True:
            line = self._line()
            fetch = _FETCH.match(line)
            if fetch is not None:
                items = self._item_list(line, fetch.end())
                uid = items.get(b"UID")
                if isinstance(uid, int):
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
                stack[-1].append(self._literal(int(token.group(4))))
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

"""The sync's IMAP adapter: :class:`ImapMailbox`, the
:class:`~smime_companion.sync.protocols.Mailbox` of the sync over one imapclient session.

Everything it returns is plain values (ints, strs, bytes, frozen dataclasses); every failure is
an :class:`~smime_companion.errors.ImapError` whose message names the host and the step, never
a secret (see :class:`~smime_companion.imap.session.Session`).

The session is read-only on the server: folders are opened with EXAMINE and bodies fetched with
BODY.PEEK[], so syncing never marks a message as read.

Workarounds for imapclient 4.1 (see the sync issue): its FETCH parser fails on ``1:*``, so UIDs
are always passed as explicit lists (in chunks, to bound the command length); it has no QRESYNC
helper and does not parse VANISHED, so ``VANISHED (EARLIER)`` responses are read from imaplib's
untagged responses after a ``CHANGEDSINCE ... VANISHED`` fetch. Bodies and plain summaries are
read by :class:`~smime_companion.imap.responses.FetchReader` on the same connection (with a tag
from imaplib, so its bookkeeping stays right). UIDs, UIDVALIDITY, UIDNEXT, MODSEQ and sizes
outside their RFC ranges are dropped or refused.
"""

from __future__ import annotations

import logging
import os
import socket
import ssl
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from fnmatch import fnmatchcase
from functools import partial
from typing import Any

from imapclient.datetime_util import parse_to_datetime

from smime_companion.errors import ImapError, OversizedBody
from smime_companion.imap.responses import FetchReader, allowances
from smime_companion.imap.session import (
    LINES_PER_MESSAGE,
    MAX_ANSWER_BYTES,
    MAX_LINES_PER_COMMAND,
    MIN_BODY_RATE,
    ServerSpec,
    Session,
    shutdown,
)
from smime_companion.imap.structure import (
    MODSEQ_MAX,
    UID_CHUNK,
    UID_MAX,
    aware,
    bounded,
    chunks,
    esearch_all,
    flags_of,
    is_change,
    is_smime_structure,
    parse_vanished,
    sequence_set,
    valid_uids,
)
from smime_companion.session import bytes_of, text_of
from smime_companion.sync.protocols import Changes, FolderInfo, Summary

log = logging.getLogger(__name__)


def connect(spec: ServerSpec) -> ImapMailbox:
    """A logged-in :class:`ImapMailbox`. Raises ImapError naming what failed (connect, TLS,
    login), with no secret in the message."""
    return ImapMailbox(spec)


class ImapMailbox:
    """:class:`Mailbox` over one imapclient connection (each method is documented there).

    Not thread-safe: one thread at a time uses a connection (sync's prefetch thread takes it
    only while the sync thread waits)."""

    def __init__(self, spec: ServerSpec) -> None:
        self.spec = spec
        self._idling = False
        self._idle_polling = False
        self._qresync = False
        self._exists = 0  # EXISTS of the folder last examined
        self._open: FolderInfo | None = None  # what EXAMINE said of the folder now open
        self._session = Session(spec)
        self._imap = self._session.imap
        self._call = self._session.call
        self._failed = self._session.failed
        self._capabilities: frozenset[str] = frozenset()
        try:
            caps = self._capabilities = self.capabilities
            wanted = [c for c in ("QRESYNC", "CONDSTORE") if c in caps]
            if wanted:
                # QRESYNC implies CONDSTORE; enabling it makes EXAMINE report HIGHESTMODSEQ and
                # lets CHANGEDSINCE fetches report expunges as VANISHED.
                enabled = self._call("ENABLE", partial(self._imap.enable, *wanted))
                self._qresync = "QRESYNC" in {text_of(c).upper() for c in enabled}
        except BaseException:
            self.close()
            raise

    # -- connection ------------------------------------------------------------------------------

    def _caps(self) -> frozenset[str]:
        return frozenset(text_of(c).upper() for c in self._imap.capabilities())

    @property
    def capabilities(self) -> frozenset[str]:
        return self._call("CAPABILITY", self._caps)  # type: ignore[no-any-return]

    @property
    def qresync(self) -> bool:
        return self._qresync

    def close(self) -> None:
        self._session.close(self._imap.idle_done if self._idling else None)

    def _uid_fetch(
        self,
        step: str,
        uids: Sequence[int] | None,
        items: bytes,
        sizes: Mapping[int, int] | None = None,
        *,
        modifiers: bytes = b"",
        expected: int = 0,
    ) -> dict[int, dict[bytes, Any]]:
        """``UID FETCH <uids> <items> <modifiers>`` read by :class:`FetchReader`: the items of
        each asked-for UID the server returned (expunged ones are absent); ``uids`` None asks
        for every message (``1:*``; ``expected`` of them, which bounds the answer's lines).
        Raises ImapError naming ``step`` on NO/BAD (like imapclient's fetch, even when some
        messages came first), on a socket failure, or on a response it cannot parse; after the
        last two the connection is shut down, since where the next response starts is no
        longer known."""
        imap = self._imap._imap
        # Up to the largest UID there can be, not "*": "1:*" ends at the highest UID present,
        # so an expunged last message would not be reported VANISHED.
        asked = b"1:%d" % UID_MAX if uids is None else sequence_set(uids)
        command = b"UID FETCH " + asked + b" " + items + (b" " + modifiers if modifiers else b"")
        allowance = None if sizes is None or uids is None else allowances(uids, sizes)
        wanted = None if uids is None else set(uids)

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
                    raise self._refused(step, exc, wanted or set()) from None
                if isinstance(exc, ImapError):
                    raise self._failed(step, str(exc)) from None
                raise
            finally:
                imap.tagged_commands.pop(tag, None)
            if status != "OK":
                # The tagged completion was read: the connection is still in step.
                raise self._failed(step, f"{status} {text_of(text)[:200]}")
            if wanted is None:
                return messages
            return {uid: item for uid, item in messages.items() if uid in wanted}

        count = expected if uids is None else len(uids)
        announced = sum(sizes.get(uid, 0) for uid in uids or ()) if sizes else 0
        if allowance is None or uids is None:
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
            max_lines=MAX_LINES_PER_COMMAND // 10 + LINES_PER_MESSAGE * count,
        )
        return result

    def _refused(self, step: str, exc: OversizedBody, wanted: set[int]) -> OversizedBody:
        """``exc`` named as this step's failure, carrying the asked-for bodies received whole."""
        received = {
            uid: body
            for uid, item in exc.received.items()
            if uid in wanted and isinstance(body := item.get(b"BODY[]"), bytes)
        }
        return OversizedBody(str(self._failed(step, str(exc))), exc.uid, received)

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
        self._session.folder = folder
        data = self._call("EXAMINE", lambda: self._imap.select_folder(folder, readonly=True))
        raw_uidvalidity = data.get(b"UIDVALIDITY")
        if raw_uidvalidity is None:
            raise ImapError(f"{self.spec.label}: EXAMINE {folder!r} gave no UIDVALIDITY")
        uidvalidity = bounded(raw_uidvalidity, 1, UID_MAX)
        if uidvalidity is None:
            shown = text_of(raw_uidvalidity)[:30]
            raise ImapError(
                f"{self.spec.label}: EXAMINE {folder!r} gave an invalid UIDVALIDITY {shown!r} "
                f"(not in 1..{UID_MAX})"
            )
        modseq = data.get(b"HIGHESTMODSEQ")
        if b"NOMODSEQ" in b" ".join(bytes_of(v) for v in data.get(b"OK", [])):
            modseq = None
        self._exists = bounded(data.get(b"EXISTS", 0), 0, UID_MAX) or 0
        self._open = FolderInfo(
            name=folder,
            uidvalidity=uidvalidity,
            # Out of range: as if not sent (the sync then derives UIDNEXT from the UIDs it
            # sees, and works without CONDSTORE).
            uidnext=bounded(data.get(b"UIDNEXT"), 1, UID_MAX + 1),
            exists=bounded(data.get(b"EXISTS", 0), 0, UID_MAX) or 0,
            highest_modseq=bounded(modseq, 1, MODSEQ_MAX) if modseq is not None else None,
        )
        return self._open

    def still_open(self, folder: str) -> FolderInfo | None:
        # Selecting the folder again would make the server open it afresh: on a Dovecot
        # Maildir of 1,000,000 messages that EXAMINE took 2.8-3.0 s, the rest of the pass 50 ms.
        info = self._open
        if info is None or info.name != folder or not self._qresync or self._session.broken:
            return None
        if info.highest_modseq is None or info.uidnext is None:
            return None
        return FolderInfo(folder, info.uidvalidity, None, self._exists, info.highest_modseq)

    # -- messages --------------------------------------------------------------------------------

    def search_uids(self, start: int = 1) -> Sequence[int]:
        if "ESEARCH" in self._capabilities:
            return self._esearch_uids("UID SEARCH", start, "ALL" if start <= 1 else "")
        criteria = ["ALL"] if start <= 1 else ["UID", f"{start}:*"]
        found = self._call("UID SEARCH", lambda: self._imap.search(criteria))
        uids = valid_uids(found, "UID SEARCH", self.spec.label)
        # "n:*" always includes the highest UID even when it is below n (RFC 3501 6.4.8).
        return sorted(u for u in set(uids) if u >= start)

    def _esearch_uids(self, step: str, start: int, criteria: str) -> Sequence[int]:
        """The UIDs >= ``start`` matching ``criteria`` by ``UID SEARCH RETURN (ALL)``
        (RFC 4731): the answer is a sequence set (``1:100000`` for a folder never expunged),
        read into 4 bytes per UID, where a plain SEARCH answer would cost a line of a million
        numbers and a Python int for each."""
        imap = self._imap._imap
        if start > 1:
            criteria = f"UID {start}:* {criteria}".strip()

        def run() -> list[Any]:
            typ, data = imap.uid("SEARCH", f"RETURN (ALL) {criteria}")
            if typ != "OK":
                raise self._failed(step, f"{typ} {text_of(data[0] if data else b'')[:200]}")
            return list(imap.untagged_responses.pop("ESEARCH", []))

        answers = self._call(step, run)
        # Arrivals between EXAMINE and this search are allowed for; a server claiming more
        # UIDs than that is refused before anything is allocated for them.
        limit = self._exists + 100_000
        uids = esearch_all(b" ".join(bytes_of(a) for a in answers if a is not None), limit)
        # "n:*" always includes the highest UID even when it is below n (RFC 3501 6.4.8).
        while uids and uids[0] < start:
            uids.pop(0)
        return uids

    def search_smime_candidates(self, start: int = 1) -> Sequence[int] | None:
        # SEARCH HEADER is a case-insensitive substring match done by the server: on 10,000
        # messages it costs a tenth of fetching and parsing every BODYSTRUCTURE.
        headers = (
            "OR OR HEADER Content-Type pkcs7 HEADER Content-Type p7m HEADER Content-Disposition p7m"
        )
        criteria = [
            "UID", f"{max(start, 1)}:*",
            "OR", "OR",
            "HEADER", "Content-Type", "pkcs7",
            "HEADER", "Content-Type", "p7m",
            "HEADER", "Content-Disposition", "p7m",
        ]  # fmt: skip
        try:
            if "ESEARCH" in self._capabilities:
                return self._esearch_uids("UID SEARCH HEADER", max(start, 1), headers)
            found = self._call("UID SEARCH HEADER", partial(self._imap.search, criteria))
        except ImapError as exc:
            if self._imap_alive():
                log.info(
                    "%s: header search refused (%s); reading BODYSTRUCTUREs", self.spec.label, exc
                )
                return None
            raise
        uids = valid_uids(found, "UID SEARCH HEADER", self.spec.label)
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
        for chunk in chunks(sorted(uids), UID_CHUNK):
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
                size = bounded(item.get(b"RFC822.SIZE"), 0, UID_MAX)
                out.append(
                    Summary(
                        uid=uid,
                        size=size or 0,
                        flags=flags_of(item.get(b"FLAGS", ())),
                        smime=structure is not None and is_smime_structure(structure),
                        internaldate=aware(item.get(b"INTERNALDATE")),
                        size_announced=size is not None,
                    )
                )
        return out

    def _plain_summaries(self, uids: Sequence[int]) -> list[Summary]:
        """Summaries without BODYSTRUCTURE (``smime`` None), through :class:`FetchReader`."""
        out: list[Summary] = []
        for chunk in chunks(sorted(uids), UID_CHUNK):
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
                        flags=flags_of(flags) if isinstance(flags, tuple) else (),
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
        for chunk in chunks(sorted(uids), UID_CHUNK):
            data = self._call("UID FETCH FLAGS", partial(self._imap.fetch, chunk, ["FLAGS"]))
            asked = set(chunk)  # what the server adds of its own names nothing we hold
            out.update(
                {
                    uid: flags_of(item.get(b"FLAGS", ()))
                    for uid, item in data.items()
                    if uid in asked
                }
            )
        return out

    def changes_since(
        self, uids: Sequence[int] | None, modseq: int, *, expected: int = 0
    ) -> Changes:
        if uids is None:
            # The whole folder in one command: the server answers only what changed, so the
            # cost is that of the changes, not of the folder.
            modifier = f"(CHANGEDSINCE {modseq}{' VANISHED' if self._qresync else ''})"
            data = self._uid_fetch(
                "UID FETCH CHANGEDSINCE",
                None,
                b"(UID FLAGS)",
                modifiers=modifier.encode("ascii"),
                expected=expected,
            )
            flags = {uid: flags_of(_tuple(item.get(b"FLAGS"))) for uid, item in data.items()}
            # CHANGEDSINCE makes the server send each answer's MODSEQ (RFC 7162, 3.1.4.1).
            modseqs = [bounded(next(iter(_tuple(item.get(b"MODSEQ"))), None), 1, MODSEQ_MAX)
                       for item in data.values()]  # fmt: skip
            return Changes(
                flags=flags,
                vanished=frozenset(self._vanished()),
                highest_modseq=max((m for m in modseqs if m is not None), default=None),
            )
        flags = {}
        vanished: set[int] = set()
        modifier = f"CHANGEDSINCE {modseq}" + (" VANISHED" if self._qresync else "")
        for chunk in chunks(sorted(uids), UID_CHUNK):
            data = self._call(
                "UID FETCH CHANGEDSINCE",
                partial(self._imap.fetch, chunk, ["FLAGS"], modifiers=[modifier]),
            )
            asked = set(chunk)
            flags.update(
                {
                    uid: flags_of(item.get(b"FLAGS", ()))
                    for uid, item in data.items()
                    if uid in asked
                }
            )
            vanished.update(self._vanished())
        return Changes(flags=flags, vanished=frozenset(vanished & set(uids)))

    def _vanished(self) -> set[int]:
        """The UIDs of the VANISHED responses the last command received (QRESYNC only)."""
        out: set[int] = set()
        if self._qresync:
            # "* VANISHED (EARLIER) 3:5,9" is left in imaplib's untagged responses (imapclient
            # does not parse it; FetchReader stores it as imaplib would).
            for line in self._imap._imap.untagged_responses.pop("VANISHED", []):
                out.update(parse_vanished(bytes_of(line)))
        return out

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
            return any(is_change(r) for r in responses)
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            started = time.monotonic()
            responses = self._call(
                "IDLE",
                partial(self._imap.idle_check, remaining),
                seconds=remaining + self.spec.command_time_limit,
            )
            if any(is_change(r) for r in responses):
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


def _internaldate(value: Any) -> datetime | None:
    """An INTERNALDATE string as imapclient converts it with ``normalise_times = False``."""
    if not isinstance(value, bytes):
        return None
    try:
        return aware(parse_to_datetime(value, normalise=False))
    except ValueError:
        return None


def _tuple(value: Any) -> tuple[Any, ...]:
    """A FETCH list item as a tuple (anything else, such as NIL, as an empty one)."""
    return value if isinstance(value, tuple) else ()

"""The outbox's IMAP side: drafts in an outbox folder, the Sent folder, notices in INBOX.

:class:`ImapOutbox` implements the outbox protocols (``OutboxSource``, ``SentFiler``,
``Notifier`` of :mod:`smime_companion.outbox.protocols`) over one imapclient connection. It is a
module of its own, beside :mod:`smime_companion.imap.client`, because the sync's ``Mailbox`` is
read-only by design (EXAMINE, BODY.PEEK) and the outbox must write: CREATE, APPEND, UID MOVE,
UID EXPUNGE.

Folders: the outbox (``S/MIME Outbox`` by default) and its subfolders ``Held`` and ``Rejected``
are created when missing. A draft's ref is ``[folder, uidvalidity, uid]`` as JSON: a ref whose
UIDVALIDITY no longer matches names nothing (the draft is found again by its digest on the next
listing). Only what the outbox writes reaches the server: sealed (encrypted) copies in Sent,
plain notices in INBOX, and the user's own drafts moved between outbox folders.
"""

from __future__ import annotations

import imaplib
import json
import logging
import re
from collections.abc import Callable
from typing import Any

from imapclient import IMAPClient
from imapclient import exceptions as imap_exceptions

from smime_companion.errors import ImapError
from smime_companion.imap.client import (
    MAX_ANSWER_BYTES,
    MAX_LINES_PER_COMMAND,
    MAX_LITERAL,
    UID_MAX,
    CommandGuard,
    ServerSpec,
    open_session,
    reason,
    shutdown,
)
from smime_companion.outbox.protocols import DraftRef, Place

log = logging.getLogger(__name__)

_COPYUID = re.compile(rb"COPYUID\s+(\d+)\s+\S+\s+(\d+)", re.IGNORECASE)
_PLACE_NAMES = {Place.HELD: "Held", Place.REJECTED: "Rejected"}


class ImapOutbox:
    """One account's outbox, Sent folder and INBOX over one connection (opened on first use).

    Every method raises :class:`ImapError` naming the account and the step, never a secret.
    """

    def __init__(self, spec: ServerSpec, outbox_folder: str, sent_folder: str) -> None:
        self.spec = spec
        self.outbox_folder = outbox_folder
        self.sent_folder = sent_folder
        self._imap: IMAPClient | None = None
        self._guard: CommandGuard | None = None
        self._delimiter = "/"
        self._selected: tuple[str, int] | None = None

    # -- connection ------------------------------------------------------------------------------

    def _client(self) -> IMAPClient:
        if self._imap is not None:
            return self._imap
        imap = open_session(self.spec)
        self._imap = imap
        # The same bounds as the sync's connection: a time limit per command, capped answers.
        self._guard = CommandGuard(imap._imap)
        try:
            with self._guard.limits(
                self.spec.command_time_limit, MAX_ANSWER_BYTES, MAX_LINES_PER_COMMAND
            ):
                listed = imap.list_folders("", "")
            if listed and listed[0][1]:
                self._delimiter = _text(listed[0][1])
        except (OSError, imaplib.IMAP4.error, imap_exceptions.IMAPClientError):
            pass  # keep "/": only the names of the Held and Rejected subfolders depend on it
        return imap

    def close(self) -> None:
        """Log out (never raises)."""
        imap, self._imap, self._selected = self._imap, None, None
        guard, self._guard = self._guard, None
        if imap is not None:
            try:
                if guard is not None:
                    with guard.limits(min(self.spec.command_time_limit, 30.0), 1 << 20, 1000):
                        imap.logout()
                else:
                    imap.logout()
            except Exception:  # closing a broken connection: nothing more to do
                shutdown(imap)
        if guard is not None:
            guard.close()

    def __enter__(self) -> ImapOutbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, step: str, func: Callable[[], Any], max_bytes: int = MAX_ANSWER_BYTES) -> Any:
        guard = self._guard
        try:
            if guard is None:
                return func()
            if self._imap is not None:
                self._imap._imap.untagged_responses.clear()  # see ImapMailbox._call
            guard.expired = False
            with guard.limits(self.spec.command_time_limit, max_bytes, MAX_LINES_PER_COMMAND):
                return func()
        except ImapError:
            raise
        except (OSError, imaplib.IMAP4.error, imap_exceptions.IMAPClientError, EOFError) as exc:
            why = guard.time_limit_text() if guard is not None and guard.expired else reason(exc)
            # The connection may be unusable now: the next call reconnects.
            self.close()
            raise ImapError(f"{self.spec.label}: {step} failed: {why}") from None

    # -- folders ---------------------------------------------------------------------------------

    def folder_for(self, place: Place) -> str:
        """The folder name of ``place``."""
        if place == Place.OUTBOX:
            return self.outbox_folder
        return f"{self.outbox_folder}{self._delimiter}{_PLACE_NAMES[place]}"

    def _ensure(self, folder: str) -> None:
        imap = self._client()
        if not self._call("LIST", lambda: imap.folder_exists(folder)):
            log.info("%s: creating folder %r", self.spec.label, folder)
            try:
                self._call("CREATE", lambda: imap.create_folder(folder))
            except ImapError:
                # Another client (or our previous run) may have created it meanwhile.
                if not self._call("LIST", lambda: imap.folder_exists(folder)):
                    raise

    def _select(self, folder: str) -> int:
        """Select ``folder`` read-write; returns its UIDVALIDITY."""
        imap = self._client()
        if self._selected is not None and self._selected[0] == folder:
            return self._selected[1]
        self._ensure(folder)
        data = self._call(f"SELECT {folder!r}", lambda: imap.select_folder(folder))
        try:
            uidvalidity = int(data[b"UIDVALIDITY"])
        except (KeyError, TypeError, ValueError):
            uidvalidity = 0
        if not 1 <= uidvalidity <= UID_MAX:
            raise ImapError(f"{self.spec.label}: SELECT {folder!r} gave no valid UIDVALIDITY")
        self._selected = (folder, uidvalidity)
        return uidvalidity

    def _locate(self, ref: str) -> tuple[str, int] | None:
        """Select the ref's folder; returns (folder, uid) when the ref still names a message
        there under the same UIDVALIDITY, else None."""
        folder, uidvalidity, uid = _parse_ref(ref)
        if self._select(folder) != uidvalidity:
            return None
        return folder, uid

    # -- OutboxSource ----------------------------------------------------------------------------

    def drafts(self) -> list[DraftRef]:
        """The drafts in the outbox folder (not flagged \\Deleted), by UID."""
        folder = self.outbox_folder
        self._selected = None  # re-select: SELECT is what makes new messages visible
        uidvalidity = self._select(folder)
        imap = self._client()
        found = self._call("UID SEARCH", lambda: imap.search(["UNDELETED"]))
        uids = sorted({int(u) for u in found if 1 <= int(u) <= UID_MAX})
        if not uids:
            return []
        sizes = self._call("UID FETCH", lambda: imap.fetch(uids, ["RFC822.SIZE"]))
        return [
            DraftRef(_ref(folder, uidvalidity, uid), int(sizes[uid].get(b"RFC822.SIZE", 0)))
            for uid in uids
            if uid in sizes
        ]

    def read(self, ref: str) -> bytes | None:
        """The draft's bytes (BODY.PEEK[]: its flags stay as they are), or None when gone."""
        found = self._locate(ref)
        if found is None:
            return None
        imap = self._client()
        data = self._call(
            "UID FETCH", lambda: imap.fetch([found[1]], ["BODY.PEEK[]"]), max_bytes=MAX_LITERAL
        )
        item = data.get(found[1])
        return bytes(item[b"BODY[]"]) if item and b"BODY[]" in item else None

    def remove(self, ref: str) -> None:
        """Delete and expunge this draft only (UID EXPUNGE); a draft already gone is fine."""
        found = self._locate(ref)
        if found is None:
            return
        imap = self._client()
        uid = found[1]
        self._call("UID STORE", lambda: imap.delete_messages([uid]))
        if b"UIDPLUS" in self._capabilities():
            self._call("UID EXPUNGE", lambda: imap.uid_expunge([uid]))
        else:
            # Without UIDPLUS, EXPUNGE would also remove other \Deleted drafts of the user; the
            # draft stays flagged \Deleted (hidden by most clients) and is skipped by drafts().
            log.warning("%s: no UIDPLUS; draft left flagged \\Deleted", self.spec.label)

    def move_aside(self, ref: str, place: Place) -> str | None:
        """UID MOVE the draft to the ``place`` folder (created if needed); returns its new ref
        (from COPYUID), or None when the draft was gone or the server did not say."""
        found = self._locate(ref)
        if found is None:
            return None
        target = self.folder_for(place)
        self._ensure(target)  # LIST/CREATE leave the draft's folder selected
        imap = self._client()
        uid = found[1]
        if b"MOVE" in self._capabilities():
            untagged = imap._imap.untagged_responses
            untagged.pop("COPYUID", None)
            response = self._call("UID MOVE", lambda: imap.move([uid], target))
            # RFC 6851: the COPYUID of a MOVE comes in an untagged OK, which imaplib files
            # under its response code; fall back to the tagged text.
            codes = [_as_bytes(c) for c in untagged.pop("COPYUID", [])]
            texts = [b"COPYUID " + c for c in codes] + [_as_bytes(response)]
        else:
            response = self._call("UID COPY", lambda: imap.copy([uid], target))
            self._call("UID STORE", lambda: imap.delete_messages([uid]))
            if b"UIDPLUS" in self._capabilities():
                self._call("UID EXPUNGE", lambda: imap.uid_expunge([uid]))
            texts = [_as_bytes(response)]
        self._selected = None
        for text in texts:
            match = _COPYUID.search(text)
            if match:
                return _ref(target, int(match.group(1)), int(match.group(2)))
        return None

    def put(self, draft: bytes, place: Place) -> None:
        """APPEND a draft (flagged \\Draft) to the ``place`` folder."""
        folder = self.folder_for(place)
        self._ensure(folder)
        imap = self._client()
        self._call("APPEND", lambda: imap.append(folder, draft, flags=[b"\\Draft"]))

    # -- SentFiler and Notifier ------------------------------------------------------------------

    def file_sent(self, message: bytes, message_id: str | None) -> None:
        """APPEND the sealed copy to Sent flagged \\Seen, unless a message with this Message-ID
        is already there (a previous attempt that stopped before the journal said so)."""
        folder = self.sent_folder
        self._ensure(folder)
        imap = self._client()
        if message_id:
            self._selected = None
            self._select(folder)
            found = self._call(
                "UID SEARCH", lambda: imap.search(["HEADER", "Message-ID", message_id])
            )
            if found:
                log.info("%s: %s already in %r", self.spec.label, message_id, folder)
                return
        self._call("APPEND", lambda: imap.append(folder, message, flags=[b"\\Seen"]))

    def notify(self, message: bytes) -> None:
        """APPEND a notice to INBOX, unread."""
        imap = self._client()
        self._call("APPEND", lambda: imap.append("INBOX", message))

    def _capabilities(self) -> frozenset[bytes]:
        imap = self._client()
        caps = self._call("CAPABILITY", imap.capabilities)
        return frozenset(_as_bytes(c).upper() for c in caps)


def _ref(folder: str, uidvalidity: int, uid: int) -> str:
    return json.dumps([folder, uidvalidity, uid])


def _parse_ref(ref: str) -> tuple[str, int, int]:
    try:
        folder, uidvalidity, uid = json.loads(ref)
        return str(folder), int(uidvalidity), int(uid)
    except (ValueError, TypeError) as exc:
        raise ImapError(f"not an IMAP draft reference: {ref!r}") from exc


def _as_bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode("utf-8", "replace")


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)

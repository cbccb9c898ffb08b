"""The outbox's IMAP side: drafts in an outbox folder, the Sent folder, notices in INBOX.

:class:`ImapOutbox` implements the outbox protocols (``OutboxSource``, ``SentFiler``,
``Notifier`` of :mod:`smime_companion.outbox.protocols`) over one imapclient connection. It is a
module of its own, beside :mod:`smime_companion.imap.mailbox`, because the sync's ``Mailbox`` is
read-only by design (EXAMINE, BODY.PEEK) and the outbox must write: CREATE, APPEND, UID MOVE,
UID EXPUNGE.

Folders, valid on every server: the default outbox is ``SMIME Outbox`` (neither ``/`` nor ``.``,
the two hierarchy separators servers use), under the personal namespace's prefix where the
server has one (``INBOX.`` on Courier and Cyrus); a folder of the old default name
``S/MIME Outbox`` that already exists is kept. Its ``Held`` and ``Rejected`` subfolders are made
with the server's own separator (from LIST), or as siblings (``SMIME Outbox Held``) where the
server has no hierarchy or refuses children. Sent is the folder marked ``\\Sent`` (RFC 6154
SPECIAL-USE), else one of the usual names, else ``Sent`` (created). Names given in the config
are used as they are. Every folder error quotes the server's own words.

A draft's ref is ``[folder, uidvalidity, uid]`` as JSON: a ref whose UIDVALIDITY no longer
matches names nothing (the draft is found again by its digest on the next listing). Only what
the outbox writes reaches the server: sealed (encrypted) copies in Sent, plain notices in INBOX,
and the user's own drafts moved between outbox folders.
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
from imapclient.imapclient import SENT

from smime_companion.errors import ImapError
from smime_companion.imap.responses import MAX_LITERAL
from smime_companion.imap.session import MAX_ANSWER_BYTES, ServerSpec, Session
from smime_companion.imap.structure import UID_MAX
from smime_companion.outbox.protocols import DraftRef, Place
from smime_companion.session import bytes_of, reason, text_of

log = logging.getLogger(__name__)

DEFAULT_OUTBOX_FOLDER = "SMIME Outbox"
# The default of earlier versions: invalid on Maildir++ servers (separator "."), a folder
# "MIME Outbox" inside "S" on "/" servers. Kept where it already exists, so drafts are not lost.
LEGACY_OUTBOX_FOLDER = "S/MIME Outbox"
DEFAULT_SENT_FOLDER = "Sent"
# Names clients give the Sent folder when the server marks none with \Sent (imapclient's list).
_SENT_NAMES = ("Sent", "Sent Items", "Sent Messages", "Sent items")

_COPYUID = re.compile(rb"COPYUID\s+(\d+)\s+\S+\s+(\d+)", re.IGNORECASE)
_PLACE_NAMES = {Place.HELD: "Held", Place.REJECTED: "Rejected"}


class ImapOutbox:
    """One account's outbox, Sent folder and INBOX over one connection (opened on first use).

    ``outbox_folder`` and ``sent_folder`` are the names the config gives, or None to find them
    on the server (see the module docstring). Every method raises :class:`ImapError` naming the
    account, the step and the folder, with the server's words, never a secret.
    """

    def __init__(
        self, spec: ServerSpec, outbox_folder: str | None, sent_folder: str | None
    ) -> None:
        self.spec = spec
        self._configured_outbox = outbox_folder
        self._configured_sent = sent_folder
        self._session: Session | None = None
        self._delimiter: str | None = "/"
        self._prefix = ""
        self._selected: tuple[str, int] | None = None
        self._names: dict[str, str] = {}  # resolved folder names: "outbox", "sent", places

    # -- connection ------------------------------------------------------------------------------

    def _client(self) -> IMAPClient:
        return self._connected().imap

    def _connected(self) -> Session:
        if self._session is not None:
            return self._session
        session = self._session = Session(self.spec)
        imap, guard = session.imap, session.guard
        try:
            with guard.limits(self.spec.command_time_limit, MAX_ANSWER_BYTES, 10_000):
                listed = imap.list_folders("", "")
            # LIST "" "" answers the hierarchy delimiter; NIL means a flat server.
            if listed:
                self._delimiter = text_of(listed[0][1]) if listed[0][1] else None
            if imap.has_capability("NAMESPACE"):
                with guard.limits(self.spec.command_time_limit, MAX_ANSWER_BYTES, 10_000):
                    personal = imap.namespace().personal
                if personal:
                    self._prefix = text_of(personal[0][0] or "")
                    if personal[0][1]:
                        self._delimiter = text_of(personal[0][1])
        except imap_exceptions.IMAPClientError as exc:
            if isinstance(exc, imaplib.IMAP4.abort):
                self.close()
                raise ImapError(f"{self.spec.label}: LIST failed: {reason(exc)}") from None
            # A server refusing LIST "" "" or NAMESPACE: assume "/" and no prefix.
        except (OSError, EOFError) as exc:
            self.close()
            raise ImapError(f"{self.spec.label}: LIST failed: {reason(exc)}") from None
        return session

    def close(self) -> None:
        """Log out (never raises)."""
        session, self._session, self._selected = self._session, None, None
        if session is not None:
            session.close()

    def __enter__(self) -> ImapOutbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(
        self, step: str, func: Callable[[IMAPClient], Any], max_bytes: int = MAX_ANSWER_BYTES
    ) -> Any:
        """Run ``func(connection)`` within the command limits (see
        :meth:`~smime_companion.imap.session.Session.call`); raises ImapError ``account: STEP
        failed: the server's words``. A refusal (NO, BAD) leaves the connection usable; a
        broken connection (or a broken limit) is closed, and the next call opens a new one."""
        session = self._connected()
        try:
            return session.call(step, lambda: func(session.imap), max_bytes=max_bytes)
        finally:
            if session.broken:
                self.close()

    # -- folders ---------------------------------------------------------------------------------

    @property
    def outbox_folder(self) -> str:
        """The outbox folder's name on the server (found or created on first use)."""
        name = self._names.get("outbox")
        if name is None:
            name = self._configured_outbox or self._default_outbox()
            self._names["outbox"] = name
        return name

    @property
    def sent_folder(self) -> str:
        """The Sent folder's name: configured, else marked \\Sent, else a usual name, else
        ``Sent`` (created on first filing)."""
        name = self._names.get("sent")
        if name is None:
            name = self._configured_sent or self._find_sent()
            self._names["sent"] = name
        return name

    def _default_outbox(self) -> str:
        """The default outbox name on this server: an existing one (new name, with the
        namespace prefix, or the legacy name), else the new name under the prefix."""
        preferred = self._prefix + DEFAULT_OUTBOX_FOLDER
        candidates = dict.fromkeys([preferred, DEFAULT_OUTBOX_FOLDER, LEGACY_OUTBOX_FOLDER])
        for name in candidates:
            if self._exists(name):
                if name == LEGACY_OUTBOX_FOLDER:
                    log.info("%s: using the existing outbox folder %r", self.spec.label, name)
                return name
        return preferred

    def _find_sent(self) -> str:
        listed = self._call("LIST", lambda imap: imap.list_folders())
        for flags, _delimiter, name in listed:
            if SENT in flags:
                return text_of(name)
        names = {text_of(name) for _flags, _delimiter, name in listed}
        for candidate in _SENT_NAMES:
            for name in (self._prefix + candidate, candidate):
                if name in names:
                    return name
        return self._prefix + DEFAULT_SENT_FOLDER

    def _exists(self, folder: str) -> bool:
        return bool(self._call(f"LIST {folder!r}", lambda imap: imap.folder_exists(folder)))

    def folder_for(self, place: Place) -> str:
        """The folder name of ``place``: the outbox, or its Held/Rejected folder (a child made
        with the server's separator, or a sibling where children are impossible)."""
        if place == Place.OUTBOX:
            return self.outbox_folder
        name = self._names.get(place)
        if name is None:
            name = self._place_folder(place)
            self._names[place] = name
        return name

    def _place_folder(self, place: Place) -> str:
        self._client()  # the separator is known once connected
        outbox = self.outbox_folder
        sibling = f"{outbox} {_PLACE_NAMES[place]}"
        if self._delimiter is None:
            return sibling
        child = f"{outbox}{self._delimiter}{_PLACE_NAMES[place]}"
        if self._exists(child):
            return child
        if self._exists(sibling):
            return sibling
        self._ensure(outbox)
        listed = self._call(f"LIST {outbox!r}", lambda imap: imap.list_folders("", outbox))
        if any(b"\\NOINFERIORS" in {bytes_of(f).upper() for f in flags} for flags, _, _ in listed):
            return sibling
        try:
            self._create(child)
        except ImapError as exc:
            if self._session is None:  # the connection broke: not a refusal of children
                raise
            log.info("%s: %s; using %r instead", self.spec.label, exc, sibling)
            return sibling
        return child

    def _create(self, folder: str) -> None:
        log.info("%s: creating folder %r", self.spec.label, folder)
        try:
            self._call(f"CREATE {folder!r}", lambda imap: imap.create_folder(folder))
        except ImapError as exc:
            if self._session is not None and self._exists(folder):
                return  # another client (or our previous run) created it meanwhile
            hint = ""
            odd = [c for c in "/." if c in folder and c != self._delimiter]
            if odd:
                hint = (
                    f"; this server's folder separator is {self._delimiter!r}: give this folder "
                    f"a name without {odd[0]!r} in the config"
                )
            raise ImapError(f"{exc}{hint}") from None

    def _ensure(self, folder: str) -> None:
        if not self._exists(folder):
            self._create(folder)

    def _select(self, folder: str) -> int:
        """Select ``folder`` read-write; returns its UIDVALIDITY."""
        if self._selected is not None and self._selected[0] == folder:
            return self._selected[1]
        self._ensure(folder)
        data = self._call(f"SELECT {folder!r}", lambda imap: imap.select_folder(folder))
        uidvalidity = _uidvalidity(data)
        if uidvalidity is None:
            raise ImapError(f"{self.spec.label}: SELECT {folder!r} gave no valid UIDVALIDITY")
        self._selected = (folder, uidvalidity)
        return uidvalidity

    def check_folders(self) -> list[tuple[str, str]]:
        """For ``doctor``: make sure the outbox, its Held and Rejected folders and Sent exist
        and can be selected (creating what is missing, as the first pass would); returns
        (what, folder name) pairs. Raises ImapError with the server's words."""
        checked = [("outbox", self.outbox_folder)]
        for place in (Place.HELD, Place.REJECTED):
            checked.append((place.value, self.folder_for(place)))
        checked.append(("sent", self.sent_folder))
        for _what, folder in checked:
            self._selected = None
            self._select(folder)
        self._selected = None
        return checked

    def _locate(self, ref: str) -> tuple[str, int] | None:
        """Select the ref's folder; returns (folder, uid) when the ref still names a message
        there under the same UIDVALIDITY, else None."""
        folder, uidvalidity, uid = _parse_ref(ref)
        if self._select(folder) != uidvalidity:
            return None
        return folder, uid

    # -- the reader's read state ------------------------------------------------------------------

    def mark_seen(self, folder: str, uidvalidity: int, uid: int) -> bool:
        """Set ``\\Seen`` on message ``uid`` of ``folder`` (for the reader, only with
        ``mark_seen_on_server``); False when the folder's UIDVALIDITY is no longer
        ``uidvalidity`` (the UID names another message now). Never creates the folder."""
        self._selected = None
        data = self._call(f"SELECT {folder!r}", lambda imap: imap.select_folder(folder))
        if _uidvalidity(data) != uidvalidity:
            return False
        self._selected = (folder, uidvalidity)
        self._call("STORE +FLAGS \\Seen", lambda imap: imap.add_flags([uid], [b"\\Seen"]))
        return True

    # -- OutboxSource ----------------------------------------------------------------------------

    def drafts(self) -> list[DraftRef]:
        """The drafts in the outbox folder (not flagged \\Deleted), by UID."""
        folder = self.outbox_folder
        self._selected = None  # re-select: SELECT is what makes new messages visible
        uidvalidity = self._select(folder)
        found = self._call(f"UID SEARCH {folder!r}", lambda imap: imap.search(["UNDELETED"]))
        uids = sorted({int(u) for u in found if 1 <= int(u) <= UID_MAX})
        if not uids:
            return []
        sizes = self._call(f"UID FETCH {folder!r}", lambda imap: imap.fetch(uids, ["RFC822.SIZE"]))
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
        data = self._call(
            f"UID FETCH {found[0]!r}",
            lambda imap: imap.fetch([found[1]], ["BODY.PEEK[]"]),
            max_bytes=MAX_LITERAL,
        )
        item = data.get(found[1])
        return bytes(item[b"BODY[]"]) if item and b"BODY[]" in item else None

    def remove(self, ref: str) -> None:
        """Delete and expunge this draft only (UID EXPUNGE); a draft already gone is fine."""
        found = self._locate(ref)
        if found is None:
            return
        folder, uid = found
        self._call(f"UID STORE {folder!r}", lambda imap: imap.delete_messages([uid]))
        if b"UIDPLUS" in self._capabilities():
            self._call(f"UID EXPUNGE {folder!r}", lambda imap: imap.uid_expunge([uid]))
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
        if self._selected is None or self._selected[0] != found[0]:
            found = self._locate(ref)  # a refused CREATE of a child folder: select it again
            if found is None:
                return None
        uid = found[1]
        if b"MOVE" in self._capabilities():
            untagged = self._client()._imap.untagged_responses
            untagged.pop("COPYUID", None)
            response = self._call(f"UID MOVE to {target!r}", lambda imap: imap.move([uid], target))
            # RFC 6851: the COPYUID of a MOVE comes in an untagged OK, which imaplib files
            # under its response code; fall back to the tagged text.
            codes = [bytes_of(c) for c in untagged.pop("COPYUID", [])]
            texts = [b"COPYUID " + c for c in codes] + [bytes_of(response)]
        else:
            response = self._call(f"UID COPY to {target!r}", lambda imap: imap.copy([uid], target))
            self._call("UID STORE", lambda imap: imap.delete_messages([uid]))
            if b"UIDPLUS" in self._capabilities():
                self._call("UID EXPUNGE", lambda imap: imap.uid_expunge([uid]))
            texts = [bytes_of(response)]
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
        self._call(
            f"APPEND to {folder!r}", lambda imap: imap.append(folder, draft, flags=[b"\\Draft"])
        )

    # -- SentFiler and Notifier ------------------------------------------------------------------

    def file_sent(self, message: bytes, message_id: str | None) -> None:
        """APPEND the sealed copy to Sent flagged \\Seen, unless a message with this Message-ID
        is already there (a previous attempt that stopped before the journal said so)."""
        folder = self.sent_folder
        self._ensure(folder)
        if message_id:
            self._selected = None
            self._select(folder)
            found = self._call(
                f"UID SEARCH {folder!r}",
                lambda imap: imap.search(["HEADER", "Message-ID", message_id]),
            )
            if found:
                log.info("%s: %s already in %r", self.spec.label, message_id, folder)
                return
        self._call(
            f"APPEND to {folder!r}", lambda imap: imap.append(folder, message, flags=[b"\\Seen"])
        )

    def notify(self, message: bytes) -> None:
        """APPEND a notice to INBOX, unread."""
        self._call("APPEND to 'INBOX'", lambda imap: imap.append("INBOX", message))

    def _capabilities(self) -> frozenset[bytes]:
        caps = self._call("CAPABILITY", lambda imap: imap.capabilities())
        return frozenset(bytes_of(c).upper() for c in caps)


def _uidvalidity(data: Any) -> int | None:
    """The UIDVALIDITY of a SELECT answer when it is one (1..2^32-1), else None."""
    try:
        value = int(data[b"UIDVALIDITY"])
    except (KeyError, TypeError, ValueError):
        return None
    return value if 1 <= value <= UID_MAX else None


def _ref(folder: str, uidvalidity: int, uid: int) -> str:
    return json.dumps([folder, uidvalidity, uid])


def _parse_ref(ref: str) -> tuple[str, int, int]:
    try:
        folder, uidvalidity, uid = json.loads(ref)
        return str(folder), int(uidvalidity), int(uid)
    except (ValueError, TypeError) as exc:
        raise ImapError(f"not an IMAP draft reference: {ref!r}") from exc

"""The message cache: raw originals, decrypted MIME, the open report, a full-text index, and the
sync state of every folder, in one encrypted database (see :mod:`smime_companion.store.db`).

A message is keyed by ``(account, folder, uidvalidity, uid)``. The raw original is always kept;
everything else (headers, text index, attachments list, report) is *derived* from it and can be
rebuilt (:meth:`Cache.rebuild`). A message that could not be opened is stored too, with its error,
and listed by :meth:`Cache.messages_to_reopen` so it is retried when a key is imported.

The text index is an FTS5 table without its own copy of the text (``content=''``): the words are
indexed but the plaintext exists only once, inside the encrypted ``messages`` table.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import apsw
from cryptography.hazmat.primitives import serialization

from smime_companion.core import text as mime_text
from smime_companion.core.mime import parse_entity
from smime_companion.core.model import Decryption, OpenResult, SignatureStatus
from smime_companion.errors import CacheError, MalformedInput, UsageError
from smime_companion.store import db
from smime_companion.store.normalise import search_form
from smime_companion.store.query import compile_query

log = logging.getLogger(__name__)

# Decryption results that mean "we could not read it yet": a newly imported key may fix them.
_REOPEN_DECRYPTION = (Decryption.NO_KEY, Decryption.FAILED)
# Decryption results after which nothing inside the message was read (nothing to index).
_UNREADABLE = (Decryption.NO_KEY, Decryption.FAILED, Decryption.MALFORMED, Decryption.UNSUPPORTED)

# Scan verdicts as stored: NULL (not scanned yet), "clean", "infected:NAME", "error".
SCAN_CLEAN = "clean"
SCAN_ERROR = "error"
SCAN_INFECTED_PREFIX = "infected:"


@dataclass(frozen=True)
class FolderState:
    """What the sync last knew about a folder on the server."""

    uidvalidity: int
    highest_modseq: int | None = None
    uidnext: int | None = None
    last_sync: datetime | None = None
    error: str | None = None
    # The server's message count when UIDNEXT was ``uidnext`` (EXAMINE of the last complete
    # pass): without QRESYNC, the next pass sees expunges from the count alone.
    messages: int | None = None


@dataclass(frozen=True)
class MessageSummary:
    """One search hit: where the message lives and what it says about itself."""

    id: int
    account: str
    folder: str
    uidvalidity: int
    uid: int
    date: datetime
    arrived: datetime
    sender: str
    to: str
    cc: str
    subject: str
    message_id: str
    decryption: str
    signature: str
    signer: str | None
    error: str | None
    scan: str | None
    flags: tuple[str, ...]
    attachments: int

    @property
    def encrypted(self) -> bool:
        return self.decryption != Decryption.NONE

    def to_json(self) -> dict[str, Any]:
        """The object ``smime-companion search --json`` prints for this message."""
        return {
            "id": self.id,
            "account": self.account,
            "folder": self.folder,
            "uidvalidity": self.uidvalidity,
            "uid": self.uid,
            "from": self.sender,
            "to": self.to,
            "cc": self.cc,
            "subject": self.subject,
            "date": self.date.isoformat(),
            "arrived": self.arrived.isoformat(),
            "message_id": self.message_id,
            "encrypted": self.encrypted,
            "decryption": self.decryption,
            "signature": self.signature,
            "signer": self.signer,
            "error": self.error,
            "scan": self.scan,
            "flags": list(self.flags),
            "attachments": self.attachments,
        }


@dataclass(frozen=True)
class FolderCount:
    """How many messages a folder holds in the cache, and how many of them are unread (neither
    seen on the server nor read in the reader)."""

    account: str
    folder: str
    messages: int
    unread: int


@dataclass(frozen=True)
class StoredAttachment:
    """An attachment row: part number, name, type, size, SHA-256 and its scan verdict."""

    part: int
    filename: str
    mime_type: str
    size: int
    sha256: str
    scan: str | None


@dataclass(frozen=True)
class CacheEntry:
    """Everything the cache keeps about a message besides its raw original and location, derived
    from the raw message and its open result by :func:`derive_entry`.

    Deriving (text extraction, header decoding, the JSON report) is kept apart from writing so it
    can run in a worker process beside the one that writes the database
    (:mod:`smime_companion.sync.opening`); it is plain data, cheap to pickle.
    """

    content: bytes | None  # decrypted innermost MIME; None when unreadable or the raw itself
    content_is_raw: bool  # plain mail: the content is the raw message, stored once
    date: int  # epoch seconds of the Date header, else of the arrival
    sender: str
    to: str
    cc: str
    subject: str
    message_id: str
    decryption: str
    signature: str
    signer: str | None
    content_cipher: str | None
    error: str | None
    reopen: bool  # could not be read yet: a newly imported key may open it
    report: str  # JSON: the open report, signers and evidence
    attachments: tuple[mime_text.Attachment, ...]
    body: str  # the body text as indexed: in its search form (store.normalise), made here so
    # that the worker processes, not the storing thread, pay for it
    raw_sha256: str  # of the raw message: finds it again after a UIDVALIDITY change


def derive_entry(raw: bytes, result: OpenResult, arrived: datetime) -> CacheEntry:
    """The :class:`CacheEntry` of ``raw``, opened as ``result`` when it arrived at ``arrived``."""
    readable = result.decryption not in _UNREADABLE
    fields = result.headers or _outer_fields(raw)
    headers = mime_text.summary_headers(fields)
    date = mime_text.header_date(headers.get("date")) or arrived
    if readable and result.error is None:
        extracted = mime_text.extract_text(result.content)
    else:
        # Nothing inside was read: index headers only (the unopened layer is base64 noise).
        extracted = mime_text.MessageText(body="", attachments=())
    content_is_raw = readable and result.content == raw
    report = result.to_json()
    report["signers"] = [s.to_json() for s in result.signers]
    # The evidence a verdict rests on, so it stays explained later: when it was checked
    # (the arrival time) and the exact certificates of each signer's chain.
    report["evidence"] = {
        "checked_at": arrived.isoformat(),
        "chains": [
            [
                base64.b64encode(c.public_bytes(serialization.Encoding.DER)).decode()
                for c in (signer.chain or ((signer.certificate,) if signer.certificate else ()))
            ]
            for signer in result.signers
        ],
    }
    return CacheEntry(
        content=result.content if readable and not content_is_raw else None,
        content_is_raw=content_is_raw,
        date=_epoch(date),
        sender=headers.get("from", ""),
        to=headers.get("to", ""),
        cc=headers.get("cc", ""),
        subject=headers.get("subject", ""),
        message_id=headers.get("message-id", "").strip(),
        decryption=str(result.decryption),
        signature=str(result.signature),
        signer=result.signer,
        content_cipher=result.content_cipher,
        error=result.error,
        reopen=result.decryption in _REOPEN_DECRYPTION
        or (result.error is not None and result.decryption != Decryption.NONE),
        report=json.dumps(report, sort_keys=True),
        attachments=extracted.attachments,
        body=search_form(extracted.body),
        # Hashed here, not when storing: a worker process derives entries, and hashing every
        # message (317 MB in the sync bench) was the storing thread's to do.
        raw_sha256=hashlib.sha256(raw).hexdigest(),
    )


def _entry_columns(entry: CacheEntry) -> dict[str, Any]:
    """The ``messages`` columns ``entry`` fills, by name (scan is reset: the content may have
    changed)."""
    return {
        "content": entry.content,
        "content_is_raw": int(entry.content_is_raw),
        "date": entry.date,
        "sender": entry.sender,
        "recipients": entry.to,
        "cc": entry.cc,
        "subject": entry.subject,
        "message_id": entry.message_id,
        "decryption": entry.decryption,
        "signature": entry.signature,
        "signer": entry.signer,
        "content_cipher": entry.content_cipher,
        "error": entry.error,
        "reopen": int(entry.reopen),
        "report": entry.report,
        "scan": None,
    }


def _migration_1(conn: apsw.Connection) -> None:
    conn.execute(
        """
        CREATE TABLE messages (
            id INTEGER PRIMARY KEY,
            account TEXT NOT NULL,
            folder TEXT NOT NULL,
            uidvalidity INTEGER NOT NULL,
            uid INTEGER NOT NULL,
            raw BLOB NOT NULL,
            raw_sha256 TEXT NOT NULL,
            content BLOB,
            -- 1 when the decrypted content is the raw message itself (plain mail): stored once.
            content_is_raw INTEGER NOT NULL DEFAULT 0,
            arrived INTEGER NOT NULL,
            date INTEGER NOT NULL,
            sender TEXT NOT NULL DEFAULT '',
            recipients TEXT NOT NULL DEFAULT '',
            cc TEXT NOT NULL DEFAULT '',
            subject TEXT NOT NULL DEFAULT '',
            message_id TEXT NOT NULL DEFAULT '',
            decryption TEXT NOT NULL,
            signature TEXT NOT NULL,
            signer TEXT,
            content_cipher TEXT,
            error TEXT,
            reopen INTEGER NOT NULL DEFAULT 0,
            report TEXT NOT NULL,
            flags TEXT NOT NULL DEFAULT '',
            scan TEXT,
            -- The newest-first order: (date << 24) + (id mod 2^24), unique. It is also the
            -- rowid of the message in the text index, so a text search walks the index
            -- newest first and stops at the limit instead of sorting every hit.
            sort_key INTEGER,
            UNIQUE (account, folder, uidvalidity, uid)
        );
        CREATE UNIQUE INDEX messages_by_sort_key ON messages (sort_key);
        CREATE INDEX messages_by_hash ON messages (account, folder, raw_sha256);
        CREATE INDEX messages_to_reopen ON messages (reopen) WHERE reopen = 1;
        CREATE INDEX messages_to_scan ON messages (scan) WHERE scan IS NULL OR scan = 'error';
        CREATE TABLE attachments (
            message INTEGER NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
            part INTEGER NOT NULL,
            filename TEXT NOT NULL,
            mime_type TEXT NOT NULL,
            size INTEGER NOT NULL,
            sha256 TEXT NOT NULL,
            scan TEXT,
            PRIMARY KEY (message, part)
        );
        CREATE TABLE folders (
            account TEXT NOT NULL,
            folder TEXT NOT NULL,
            uidvalidity INTEGER NOT NULL,
            highest_modseq INTEGER,
            uidnext INTEGER,
            last_sync TEXT,
            error TEXT,
            PRIMARY KEY (account, folder)
        );
        -- Contentless: the index holds words and positions, not a second copy of the text.
        -- Its rowid is messages.sort_key.
        CREATE VIRTUAL TABLE message_text USING fts5 (
            sender, recipients, subject, body, attachments,
            content = '', contentless_delete = 1,
            tokenize = 'unicode61 remove_diacritics 2'
        );
        """
    )


def _index_text(
    conn: apsw.Connection,
    key: int,
    sender: str,
    recipients: str,
    subject: str,
    body: str,
    filenames: Iterable[str],
) -> None:
    """Add one message's text index entry (rowid ``key``), every column in its
    :func:`~smime_companion.store.normalise.search_form` (the query side uses the same); ``body``
    is in that form already (:func:`derive_entry` makes it in a worker process)."""
    conn.execute(
        "INSERT INTO message_text (rowid, sender, recipients, subject, body, attachments) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (
            key,
            search_form(sender),
            search_form(recipients),
            search_form(subject),
            body,
            search_form(" ".join(f for f in filenames if f)),
        ),
    )


def _migration_2(conn: apsw.Connection) -> None:
    """Re-index every message in its search form (issue 17): the index of earlier versions
    kept CJK runs as one word and did not fold ß, ø, ł or Greek accents. The text comes again
    from the decrypted content kept in the cache, as :func:`derive_entry` takes it."""
    if conn.execute("SELECT count(*) FROM messages").fetchall() == [(0,)]:
        return  # a new cache: nothing to re-index (and no page written for nothing)
    conn.execute("INSERT INTO message_text (message_text) VALUES ('delete-all')")
    # One message at a time: the contents of a whole cache do not fit in memory at once.
    ids = [int(r[0]) for r in conn.execute("SELECT id FROM messages ORDER BY id")]
    for message_id in ids:
        row = conn.execute(
            "SELECT sort_key, sender, recipients, cc, subject, error, decryption, "
            "CASE WHEN content_is_raw = 1 THEN raw ELSE content END FROM messages WHERE id = ?",
            (message_id,),
        ).fetchone()
        assert row is not None  # inside the migration's transaction: nothing deletes it
        key, sender, to, cc, subject, error, decryption, content = row
        body = ""
        if isinstance(content, bytes) and decryption not in _UNREADABLE and error is None:
            body = search_form(mime_text.extract_text(content).body)
        filenames = [
            str(r[0])
            for r in conn.execute(
                "SELECT filename FROM attachments WHERE message = ? ORDER BY part", (message_id,)
            )
        ]
        recipients = " ".join(str(x) for x in (to, cc) if x)
        _index_text(conn, int(key), str(sender), recipients, str(subject), body, filenames)


def _migration_3(conn: apsw.Connection) -> None:
    # The reader's own read state (the server's \Seen stays untouched unless the user asks); an
    # index of the messages not seen on the server, so unread counts need not read each row (a
    # row's flags sit after its raw message, in overflow pages); and one of each folder in
    # newest-first order. Building them reads every row once (about a second at 100,000
    # messages of the search bench).
    conn.execute(
        """
        CREATE TABLE local_state (
            message INTEGER PRIMARY KEY REFERENCES messages (id) ON DELETE CASCADE,
            read INTEGER NOT NULL
        );
        CREATE INDEX messages_unseen ON messages (account, folder)
            WHERE instr(flags, ' \\Seen ') = 0;
        -- A folder's messages newest first: its listing stops after a page instead of sorting
        -- the whole folder (the unique index has the folder, not the order).
        CREATE INDEX messages_by_folder ON messages (account, folder, sort_key);
        """
    )


def _migration_4(conn: apsw.Connection) -> None:
    # The folder's message count at the last complete pass (FolderState.messages). Added only
    # if missing, so that a database set back to an earlier version (as a test of re-indexing
    # does) migrates again.
    columns = {str(row[1]) for row in conn.execute("PRAGMA table_info(folders)")}
    if "messages" not in columns:
        conn.execute("ALTER TABLE folders ADD COLUMN messages INTEGER")


MIGRATIONS: list[db.Migration] = [_migration_1, _migration_2, _migration_3, _migration_4]

# Server-side "not seen", exactly as the partial index messages_unseen is declared.
_NOT_SEEN = "instr(m.flags, ' \\Seen ') = 0"

_SUMMARY_COLUMNS = (
    "m.id, m.account, m.folder, m.uidvalidity, m.uid, m.date, m.arrived, m.sender, m.recipients, "
    "m.cc, m.subject, m.message_id, m.decryption, m.signature, m.signer, m.error, m.scan, m.flags, "
    "(SELECT count(*) FROM attachments a WHERE a.message = m.id)"
)


SORT_SHIFT = 24
_SORT_ID_MASK = (1 << SORT_SHIFT) - 1
_SORT_DATE_LIMIT = 2**38  # seconds either side of 1970; keeps sort keys inside 64 bits


def sort_key(date_epoch: int, message_id: int) -> int:
    """The newest-first ordering key of a message dated ``date_epoch`` (see the schema)."""
    clamped = max(-_SORT_DATE_LIMIT, min(_SORT_DATE_LIMIT - 1, date_epoch))
    return (clamped << SORT_SHIFT) + (message_id & _SORT_ID_MASK)


def _epoch(moment: datetime) -> int:
    if moment.tzinfo is None:
        raise ValueError("the cache needs timezone-aware datetimes")
    return int(moment.timestamp())


def _from_epoch(value: int) -> datetime:
    return datetime.fromtimestamp(value, UTC)


def _flags_text(flags: Sequence[str]) -> str:
    # Stored space-separated with a leading and trailing space so "is:" can test " \Seen ".
    clean = [f for f in flags if f and not any(c.isspace() for c in f)]
    return (" " + " ".join(clean) + " ") if clean else ""


class Cache(db.Handle):
    """The message cache. Open with :meth:`Cache.open`; use as a context manager or call
    :meth:`close`. Every public method raises :class:`CacheError` (one line) on a database
    failure, and leaves the database as it was."""

    def __init__(self, conn: apsw.Connection, path: Path, encrypted: bool) -> None:
        self._conn = conn
        self.path = path
        self.encrypted = encrypted
        # (account, folder, uidvalidity) of folders seen to hold nothing under another
        # UIDVALIDITY: storing there needs no relocation lookup. Only reset_folder (a UIDVALIDITY
        # change) leaves such entries, and it forgets the folder here.
        self._no_stale: set[tuple[str, str, int]] = set()

    # -- lifecycle -------------------------------------------------------------------------------

    @classmethod
    def open(
        cls, directory: Path, key: str | None, *, checkpoint_in_background: bool = False
    ) -> Cache:
        """Open or create the cache in ``directory`` (made 0700; files 0600). ``key`` is the
        passphrase; None only for a plain (``encrypt_cache = false``) database.
        ``checkpoint_in_background``: copy the write-ahead log into the database from a thread
        of its own (:class:`~smime_companion.store.db.Checkpointer`), for the daemon, which
        writes much; a short-lived command leaves it to SQLite.

        Raises :class:`CacheError`: wrong key (``wrong cache key: the database could not be
        decrypted``), missing key, damaged file, unwritable directory.
        """
        path = Path(directory).expanduser() / db.DB_FILENAME
        conn = db.connect(path, key, MIGRATIONS)
        try:
            # Sync batches write megabytes at a time: a 16 MiB page cache (2 MiB by default)
            # writes each index page fewer times.
            conn.execute("PRAGMA cache_size = -16384")
            conn.wal_autocheckpoint(db.AUTOCHECKPOINT_PAGES)
        except apsw.Error as exc:
            conn.close()
            raise db.translate(exc, "open the cache") from None
        cache = cls(conn, path, key is not None)
        if checkpoint_in_background:
            try:
                cache._checkpointer = db.Checkpointer(conn, path, key)
            except CacheError as exc:  # a second connection refused: SQLite's own checkpoints
                log.warning("checkpointing the cache in the writing thread: %s", exc)
        return cache

    def transaction(self) -> AbstractContextManager[None]:
        """A nestable transaction (SAVEPOINT): everything inside commits together or not at all."""
        return db.savepoint(self._conn)

    # -- storing ---------------------------------------------------------------------------------

    @db.guarded("store a message")
    def store_message(
        self,
        *,
        account: str,
        folder: str,
        uidvalidity: int,
        uid: int,
        raw: bytes,
        entry: CacheEntry,
        arrived: datetime,
        flags: Sequence[str] = (),
    ) -> int:
        """Store ``raw`` and its derived ``entry`` (:func:`derive_entry` of this same ``raw``: its
        hash is the entry's) at (account, folder, uidvalidity, uid) in one transaction; return
        the message id.

        Idempotent: storing the same location again replaces the derived data (never a second
        row). When the location is new but the same raw message is cached in this folder under an
        older UIDVALIDITY, that entry is moved to the new location instead of duplicated.
        """
        raw_sha256 = entry.raw_sha256
        located = {"raw": raw, "raw_sha256": raw_sha256, "arrived": _epoch(arrived),
                   "flags": _flags_text(flags)}  # fmt: skip
        with self._conn:
            row = self._conn.execute(
                "SELECT id FROM messages WHERE account = ? AND folder = ? AND uidvalidity = ? "
                "AND uid = ?",
                (account, folder, uidvalidity, uid),
            ).fetchone()
            if row is None:
                stale = self._stale_by_hash(account, folder, uidvalidity, raw_sha256)
                if stale is not None:
                    self._relocate(stale, uidvalidity, uid)
                    row = (stale,)
            if row is not None:
                message_id = int(row[0])
                self._write_entry(message_id, entry, located)
                return message_id
            # One INSERT with everything: inserting the row and then updating it rewrote the
            # whole record, raw message included (twice the writing, and the first copy's pages
            # zeroed by secure_delete). The new id is chosen in the statement itself (what
            # SQLite would choose) so the sort key, which contains it, is written with the row.
            next_id = "(SELECT coalesce(max(id), 0) + 1 FROM messages)"
            values = {"account": account, "folder": folder, "uidvalidity": uidvalidity,
                      "uid": uid, **located, **_entry_columns(entry)}  # fmt: skip
            inserted = self._conn.execute(
                f"INSERT INTO messages (id, sort_key, {', '.join(values)}) "
                f"VALUES ({next_id}, ? + ({next_id} & {_SORT_ID_MASK}), "
                f"{', '.join('?' * len(values))}) RETURNING id, sort_key",
                (sort_key(entry.date, 0), *values.values()),
            ).fetchone()
            assert inserted is not None
            message_id, new_key = int(inserted[0]), int(inserted[1])
            self._write_index(message_id, new_key, entry)
        return message_id

    def _write_entry(
        self, message_id: int, entry: CacheEntry, more: Mapping[str, Any] | None = None
    ) -> None:
        """Rewrite an existing message's derived columns (and the ``more`` columns, by name),
        attachments and index entry from ``entry``."""
        old_key = self._conn.execute(
            "SELECT sort_key FROM messages WHERE id = ?", (message_id,)
        ).fetchone()
        if old_key is not None and old_key[0] is not None:
            self._conn.execute("DELETE FROM message_text WHERE rowid = ?", (old_key[0],))
        self._conn.execute("DELETE FROM attachments WHERE message = ?", (message_id,))
        new_key = sort_key(entry.date, message_id)
        values = {**_entry_columns(entry), **(more or {})}
        self._conn.execute(
            f"UPDATE messages SET {', '.join(c + ' = ?' for c in values)}, sort_key = ? "
            "WHERE id = ?",
            (*values.values(), new_key, message_id),
        )
        self._write_index(message_id, new_key, entry)

    def _write_index(self, message_id: int, key: int, entry: CacheEntry) -> None:
        """Add the message's attachments and its text index entry (its rowid is ``key``)."""
        for att in entry.attachments:
            self._conn.execute(
                "INSERT INTO attachments (message, part, filename, mime_type, size, sha256) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (message_id, att.part, att.filename, att.mime_type, att.size, att.sha256),
            )
        _index_text(
            self._conn,
            key,
            entry.sender,
            " ".join(x for x in (entry.to, entry.cc) if x),
            entry.subject,
            entry.body,
            [a.filename for a in entry.attachments],
        )

    # -- locations -------------------------------------------------------------------------------

    @db.guarded("read the cache")
    def has_uid(self, account: str, folder: str, uidvalidity: int, uid: int) -> bool:
        """True when that message is cached."""
        return (
            self._conn.execute(
                "SELECT 1 FROM messages WHERE account = ? AND folder = ? AND uidvalidity = ? "
                "AND uid = ?",
                (account, folder, uidvalidity, uid),
            ).fetchone()
            is not None
        )

    @db.guarded("read the cache")
    def uids(self, account: str, folder: str, uidvalidity: int, start: int = 1) -> set[int]:
        """The UIDs from ``start`` on cached for that folder under that UIDVALIDITY."""
        return {
            int(r[0])
            for r in self._conn.execute(
                "SELECT uid FROM messages WHERE account = ? AND folder = ? AND uidvalidity = ? "
                "AND uid >= ?",
                (account, folder, uidvalidity, start),
            )
        }

    @db.guarded("remove messages from the cache")
    def forget_uids(self, account: str, folder: str, uidvalidity: int, uids: Iterable[int]) -> int:
        """Remove those messages (expunged on the server); return how many were removed."""
        removed = 0
        with self._conn:
            for uid in uids:
                row = self._conn.execute(
                    "SELECT id FROM messages WHERE account = ? AND folder = ? AND uidvalidity = ? "
                    "AND uid = ?",
                    (account, folder, uidvalidity, uid),
                ).fetchone()
                if row is not None:
                    self._delete(int(row[0]))
                    removed += 1
        return removed

    def _delete(self, message_id: int) -> None:
        self._conn.execute(
            "DELETE FROM message_text WHERE rowid = (SELECT sort_key FROM messages WHERE id = ?)",
            (message_id,),
        )
        self._conn.execute("DELETE FROM messages WHERE id = ?", (message_id,))

    @db.guarded("update flags")
    def update_flags(
        self, account: str, folder: str, uidvalidity: int, uid: int, flags: Sequence[str]
    ) -> bool:
        """Replace the IMAP flags of that message; False (and nothing done) when it is not
        cached or already has them."""
        text = _flags_text(flags)
        self._conn.execute(
            "UPDATE messages SET flags = ? WHERE account = ? AND folder = ? AND uidvalidity = ? "
            "AND uid = ? AND flags != ?",
            (text, account, folder, uidvalidity, uid, text),
        )
        return bool(self._conn.changes())

    @db.guarded("read the folder state")
    def folder_state(self, account: str, folder: str) -> FolderState | None:
        """The stored sync state of that folder, or None before its first sync."""
        row = self._conn.execute(
            "SELECT uidvalidity, highest_modseq, uidnext, last_sync, error, messages FROM folders "
            "WHERE account = ? AND folder = ?",
            (account, folder),
        ).fetchone()
        if row is None:
            return None
        return FolderState(
            uidvalidity=int(row[0]),
            highest_modseq=row[1],
            uidnext=row[2],
            last_sync=datetime.fromisoformat(row[3]) if row[3] else None,
            error=row[4],
            messages=row[5],
        )

    @db.guarded("save the folder state")
    def set_folder_state(self, account: str, folder: str, state: FolderState) -> None:
        """Record the sync state of that folder (replacing the previous one)."""
        self._conn.execute(
            "INSERT INTO folders (account, folder, uidvalidity, highest_modseq, uidnext, "
            "last_sync, error, messages) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (account, folder) DO UPDATE SET uidvalidity = excluded.uidvalidity, "
            "highest_modseq = excluded.highest_modseq, uidnext = excluded.uidnext, "
            "last_sync = excluded.last_sync, error = excluded.error, "
            "messages = excluded.messages",
            (
                account,
                folder,
                state.uidvalidity,
                state.highest_modseq,
                state.uidnext,
                state.last_sync.isoformat() if state.last_sync else None,
                state.error,
                state.messages,
            ),
        )

    @db.guarded("reset a folder")
    def reset_folder(self, account: str, folder: str, new_uidvalidity: int) -> None:
        """The server changed the folder's UIDVALIDITY: record the new one and forget the
        modseq/uidnext, but keep every cached message (still searchable) under its old
        UIDVALIDITY. Messages fetched again under the new one are moved onto their old entry
        (by raw SHA-256, see :meth:`store_message` and :meth:`find_by_raw_hash`); call
        :meth:`drop_stale` after a complete pass to remove those the server no longer has."""
        old = self.folder_state(account, folder)
        self._no_stale = {w for w in self._no_stale if w[:2] != (account, folder)}
        self.set_folder_state(
            account,
            folder,
            FolderState(
                uidvalidity=new_uidvalidity,
                last_sync=old.last_sync if old else None,
            ),
        )

    @db.guarded("drop stale messages")
    def drop_stale(self, account: str, folder: str) -> int:
        """Remove the folder's messages left under an older UIDVALIDITY (after a complete pass
        under the new one found no match for them); returns how many. No-op without a state."""
        state = self.folder_state(account, folder)
        if state is None or (account, folder, state.uidvalidity) in self._no_stale:
            return 0
        with self._conn:
            # Two ranges of the (account, folder, uidvalidity, uid) index, not "!=", which would
            # read every entry of the folder: a pass costs what is stale, not the folder.
            ids = [
                int(r[0])
                for r in self._conn.execute(
                    "SELECT id FROM messages WHERE account = ? AND folder = ? AND uidvalidity < ? "
                    "UNION ALL "
                    "SELECT id FROM messages WHERE account = ? AND folder = ? AND uidvalidity > ?",
                    (account, folder, state.uidvalidity) * 2,
                )
            ]
            for message_id in ids:
                self._delete(message_id)
        self._no_stale.add((account, folder, state.uidvalidity))
        return len(ids)

    @db.guarded("read the cache")
    def find_by_raw_hash(self, account: str, folder: str, sha256_hex: str) -> int | None:
        """The id of a message of that folder whose raw original has that SHA-256, preferring
        one left under an older UIDVALIDITY (waiting to be relocated); None when there is none."""
        state = self.folder_state(account, folder)
        current = state.uidvalidity if state else -1
        row = self._conn.execute(
            "SELECT id FROM messages WHERE account = ? AND folder = ? AND raw_sha256 = ? "
            "ORDER BY (uidvalidity = ?), id LIMIT 1",
            (account, folder, sha256_hex.lower(), current),
        ).fetchone()
        return int(row[0]) if row else None

    def _stale_by_hash(
        self, account: str, folder: str, uidvalidity: int, raw_sha256: str
    ) -> int | None:
        where = (account, folder, uidvalidity)
        if where in self._no_stale:
            return None
        if not self._conn.execute(
            "SELECT 1 FROM messages WHERE account = ? AND folder = ? AND uidvalidity != ? LIMIT 1",
            where,
        ).fetchall():
            self._no_stale.add(where)
            return None
        row = self._conn.execute(
            "SELECT id FROM messages WHERE account = ? AND folder = ? AND raw_sha256 = ? "
            "AND uidvalidity != ? ORDER BY id LIMIT 1",
            (account, folder, raw_sha256, uidvalidity),
        ).fetchone()
        return int(row[0]) if row else None

    @db.guarded("relocate a message")
    def relocate(self, message_id: int, uidvalidity: int, uid: int) -> None:
        """Move message ``message_id`` to (uidvalidity, uid) in its folder, keeping everything
        else. Raises :class:`CacheError` when another message already has that location, and
        :class:`UsageError` for an unknown id."""
        with self._conn:
            self._relocate(message_id, uidvalidity, uid)

    def _relocate(self, message_id: int, uidvalidity: int, uid: int) -> None:
        try:
            self._conn.execute(
                "UPDATE messages SET uidvalidity = ?, uid = ? WHERE id = ?",
                (uidvalidity, uid, message_id),
            )
        except apsw.ConstraintError:
            raise CacheError(
                f"cannot relocate message {message_id}: UID {uid} under UIDVALIDITY "
                f"{uidvalidity} is already cached"
            ) from None
        if self._conn.changes() == 0:
            raise UsageError(f"no message with id {message_id} in the cache")

    # -- reading ---------------------------------------------------------------------------------

    @db.guarded("read the cache")
    def messages_to_reopen(self) -> list[int]:
        """Ids of messages that could not be opened (no key, failed decryption), oldest first:
        candidates for :meth:`rebuild` after a key import."""
        return [int(r[0]) for r in self._conn.execute("SELECT id FROM messages WHERE reopen = 1")]

    @db.guarded("read the cache")
    def signed_messages(self) -> list[int]:
        """Ids of messages with a signature verdict (any but ``none``), oldest first: what a
        change of trust anchors or TOFU policy may judge differently."""
        return [
            int(r[0])
            for r in self._conn.execute("SELECT id FROM messages WHERE signature != 'none'")
        ]

    @db.guarded("read the cache")
    def raw(self, message_id: int) -> bytes:
        """The raw original of message ``message_id``. Raises :class:`UsageError` when unknown."""
        return bytes(self._one(message_id, "raw"))

    @db.guarded("read the cache")
    def content(self, message_id: int) -> bytes | None:
        """The decrypted innermost MIME of the message, or None when it could not be opened."""
        row = self._conn.execute(
            "SELECT content, content_is_raw, raw FROM messages WHERE id = ?", (message_id,)
        ).fetchone()
        if row is None:
            raise UsageError(f"no message with id {message_id} in the cache")
        if row[1]:
            return bytes(row[2])
        return bytes(row[0]) if row[0] is not None else None

    @db.guarded("read the cache")
    def report(self, message_id: int) -> dict[str, Any]:
        """The stored ``open`` report (``OpenResult.to_json()`` plus ``signers``)."""
        return dict(json.loads(self._one(message_id, "report")))

    @db.guarded("read the cache")
    def summary(self, message_id: int) -> MessageSummary:
        """The summary of message ``message_id``. Raises :class:`UsageError` when unknown."""
        row = self._conn.execute(
            f"SELECT {_SUMMARY_COLUMNS} FROM messages m WHERE m.id = ?", (message_id,)
        ).fetchone()
        if row is None:
            raise UsageError(f"no message with id {message_id} in the cache")
        return _summary(row)

    @db.guarded("read the cache")
    def attachments(self, message_id: int) -> list[StoredAttachment]:
        """The attachments of message ``message_id`` in part order."""
        return [
            StoredAttachment(int(r[0]), r[1], r[2], int(r[3]), r[4], r[5])
            for r in self._conn.execute(
                "SELECT part, filename, mime_type, size, sha256, scan FROM attachments "
                "WHERE message = ? ORDER BY part",
                (message_id,),
            )
        ]

    def _one(self, message_id: int, column: str) -> Any:
        row = self._conn.execute(
            f"SELECT {column} FROM messages WHERE id = ?", (message_id,)
        ).fetchone()
        if row is None:
            raise UsageError(f"no message with id {message_id} in the cache")
        return row[0]

    # -- the reader's read state -----------------------------------------------------------------

    @db.guarded("record the read state")
    def set_read(self, message_id: int, read: bool) -> None:
        """Mark message ``message_id`` read (or unread again) in this cache only; the server's
        flags are not touched. No-op for an unknown id."""
        self._conn.execute(
            "INSERT INTO local_state (message, read) SELECT id, ? FROM messages WHERE id = ? "
            "ON CONFLICT (message) DO UPDATE SET read = excluded.read",
            (int(read), message_id),
        )

    @db.guarded("read the read state")
    def unread_among(self, summaries: Sequence[MessageSummary]) -> set[int]:
        """The ids of ``summaries`` that are unread: not ``\\Seen`` on the server and not read
        here (a message read here and marked unread again is unread)."""
        ids = [s.id for s in summaries]
        local: dict[int, bool] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            local.update(
                (int(r[0]), bool(r[1]))
                for r in self._conn.execute(
                    f"SELECT message, read FROM local_state WHERE message IN "
                    f"({', '.join('?' * len(chunk))})",
                    chunk,
                )
            )
        return {
            s.id
            for s in summaries
            if (not local[s.id] if s.id in local else "\\Seen" not in s.flags)
        }

    @db.guarded("read the cache")
    def warnings_of(self, message_ids: Sequence[int]) -> dict[int, list[str]]:
        """The ``open`` warnings (e.g. ``partially-encrypted``) of each message that has any."""
        out: dict[int, list[str]] = {}
        ids = list(message_ids)
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            for message_id, warnings in self._conn.execute(
                "SELECT id, json_extract(report, '$.warnings') FROM messages WHERE id IN "
                f"({', '.join('?' * len(chunk))})",
                chunk,
            ):
                found = json.loads(warnings) if warnings else []
                if found:
                    out[int(message_id)] = [str(w) for w in found]
        return out

    @db.guarded("read the cache")
    def folder_neighbours(self, message_id: int) -> tuple[int | None, int | None]:
        """The ids of the messages just newer and just older than ``message_id`` in its folder
        (None at either end). Raises :class:`UsageError` for an unknown id."""
        row = self._conn.execute(
            "SELECT account, folder, sort_key FROM messages WHERE id = ?", (message_id,)
        ).fetchone()
        if row is None:
            raise UsageError(f"no message with id {message_id} in the cache")
        found = []
        for compare, order in ((">", "ASC"), ("<", "DESC")):
            near = self._conn.execute(
                f"SELECT id FROM messages WHERE account = ? AND folder = ? AND sort_key {compare} ?"
                f" ORDER BY sort_key {order} LIMIT 1",
                tuple(row),
            ).fetchone()
            found.append(int(near[0]) if near else None)
        return found[0], found[1]

    @db.guarded("count the folders")
    def folder_counts(self) -> list[FolderCount]:
        """Every cached folder with its message and unread counts, by account and folder."""
        totals = {
            (str(a), str(f)): int(n)
            for a, f, n in self._conn.execute(
                "SELECT account, folder, count(*) FROM messages GROUP BY account, folder"
            )
        }
        unread: dict[tuple[str, str], int] = {}
        # Not seen on the server and not read here, plus seen there but marked unread here.
        for a, f, n in self._conn.execute(
            f"SELECT m.account, m.folder, count(*) FROM messages m WHERE {_NOT_SEEN} AND NOT "
            "EXISTS (SELECT 1 FROM local_state s WHERE s.message = m.id AND s.read = 1) "
            "GROUP BY m.account, m.folder"
        ):
            unread[(str(a), str(f))] = int(n)
        # CROSS JOIN keeps local_state (small) as the outer loop: the planner otherwise walked
        # every message, reading each one's flags from its overflow pages.
        for a, f, n in self._conn.execute(
            "SELECT m.account, m.folder, count(*) FROM local_state s CROSS JOIN messages m "
            f"ON m.id = s.message WHERE s.read = 0 AND NOT ({_NOT_SEEN}) "
            "GROUP BY m.account, m.folder"
        ):
            unread[(str(a), str(f))] = unread.get((str(a), str(f)), 0) + int(n)
        return [FolderCount(a, f, n, unread.get((a, f), 0)) for (a, f), n in sorted(totals.items())]

    # -- search ----------------------------------------------------------------------------------

    @db.guarded("search the cache")
    def search(
        self, query: str, *, now: datetime, limit: int | None = None, offset: int = 0
    ) -> list[MessageSummary]:
        """Messages matching ``query`` (see :mod:`smime_companion.store.query`), newest first.

        ``now`` anchors relative dates (``date:7d..``). Raises :class:`UsageError` with one line
        saying where a malformed query is wrong.
        """
        sql, params = self._select(_SUMMARY_COLUMNS, query, now)
        if limit is not None:
            sql += " LIMIT ? OFFSET ?"
            params = [*params, int(limit), int(offset)]
        return [_summary(r) for r in self._conn.execute(sql, params)]

    @db.guarded("search the cache")
    def search_ids(self, query: str, *, now: datetime) -> list[int]:
        """Ids of the messages matching ``query``, newest first (for export and rebuild)."""
        sql, params = self._select("m.id", query, now)
        return [int(r[0]) for r in self._conn.execute(sql, params)]

    def _select(self, columns: str, query: str, now: datetime) -> tuple[str, list[Any]]:
        compiled = compile_query(query, now=now)
        params: list[Any] = []
        if compiled.match is not None:
            # Drive the search from the text index, newest first (its rowid is the sort key),
            # so LIMIT stops the walk early; a top-level date range bounds the walk too.
            sql = (
                f"SELECT {columns} FROM message_text f JOIN messages m ON m.sort_key = f.rowid "
                "WHERE f.message_text MATCH ?"
            )
            params.append(compiled.match)
            key = "f.rowid"
        else:
            sql = f"SELECT {columns} FROM messages m WHERE 1"
            key = "m.sort_key"
        if compiled.low is not None:
            sql += f" AND {key} >= ?"
            params.append(compiled.low << SORT_SHIFT)
        if compiled.high is not None:
            sql += f" AND {key} < ?"
            params.append(compiled.high << SORT_SHIFT)
        sql += f" AND {compiled.where} ORDER BY {key} DESC"
        return sql, params + compiled.params

    # -- scanning --------------------------------------------------------------------------------

    @db.guarded("read the cache")
    def messages_to_scan(self, limit: int = 100) -> list[int]:
        """Ids of opened messages not scanned yet, or whose last scan was an ``error``."""
        return [
            int(r[0])
            for r in self._conn.execute(
                "SELECT id FROM messages WHERE (scan IS NULL OR scan = 'error') "
                "AND (content IS NOT NULL OR content_is_raw = 1) ORDER BY id LIMIT ?",
                (limit,),
            )
        ]

    @db.guarded("record a scan result")
    def record_scan(
        self, message_id: int, message_verdict: str, attachment_verdicts: dict[int, str]
    ) -> str:
        """Store the scanner's verdicts (``clean``, ``infected:NAME`` or ``error``) for the
        message and its attachments (by part number); returns the message's overall verdict:
        infected if anything was, else error if anything failed, else clean."""
        verdicts = [message_verdict, *attachment_verdicts.values()]
        infected = [v for v in verdicts if v.startswith(SCAN_INFECTED_PREFIX)]
        overall = (
            infected[0] if infected else (SCAN_ERROR if SCAN_ERROR in verdicts else SCAN_CLEAN)
        )
        with self._conn:
            self._conn.execute("UPDATE messages SET scan = ? WHERE id = ?", (overall, message_id))
            for part, verdict in attachment_verdicts.items():
                self._conn.execute(
                    "UPDATE attachments SET scan = ? WHERE message = ? AND part = ?",
                    (verdict, message_id, part),
                )
        return overall

    # -- maintenance -----------------------------------------------------------------------------

    @db.guarded("rebuild the cache")
    def rebuild(
        self,
        open_raw: Callable[[bytes, datetime], OpenResult],
        message_ids: Iterable[int] | None = None,
    ) -> int:
        """Re-derive messages from their raw originals with ``open_raw(raw, arrived)`` (e.g.
        after importing an old key); all messages when ``message_ids`` is None. Each message is
        its own transaction, so an interruption loses nothing. Returns how many were rebuilt."""
        ids = (
            list(message_ids)
            if message_ids is not None
            else [int(r[0]) for r in self._conn.execute("SELECT id FROM messages ORDER BY id")]
        )
        count = 0
        for message_id in ids:
            row = self._conn.execute(
                "SELECT raw, arrived FROM messages WHERE id = ?", (message_id,)
            ).fetchone()
            if row is None:
                continue
            raw, arrived = bytes(row[0]), _from_epoch(int(row[1]))
            entry = derive_entry(raw, open_raw(raw, arrived), arrived)
            with self._conn:
                self._write_entry(message_id, entry)
            count += 1
        return count

    def rekey(self, new_key: str) -> None:
        """Re-encrypt the database under ``new_key``. Raises :class:`CacheError` (also for a
        plain database, which has no key to change)."""
        if not self.encrypted:
            raise CacheError("the cache is not encrypted (encrypt_cache = false): no key to change")
        db.rekey(self._conn, new_key)

    @db.guarded("read the cache statistics")
    def stats(self) -> dict[str, Any]:
        """Counts for ``cache stats``: messages, per folder, encrypted, signed, unreadable,
        scan verdicts, attachments, and the size of the database files."""
        one = self._conn.execute

        def scalar(sql: str, *params: Any) -> int:
            row = self._conn.execute(sql, params).fetchone()
            return int(row[0]) if row else 0

        count = scalar("SELECT count(*) FROM messages")
        by_folder = [
            {"account": a, "folder": f, "uidvalidity": uv, "messages": n}
            for a, f, uv, n in one(
                "SELECT account, folder, uidvalidity, count(*) FROM messages "
                "GROUP BY account, folder, uidvalidity ORDER BY account, folder, uidvalidity"
            )
        ]
        files = [self.path, *(self.path.with_name(self.path.name + s) for s in ("-wal", "-shm"))]
        return {
            "path": str(self.path),
            "encrypted": self.encrypted,
            "messages": count,
            "encrypted_messages": scalar(
                "SELECT count(*) FROM messages WHERE decryption != 'none'"
            ),
            "signed_messages": scalar("SELECT count(*) FROM messages WHERE signature != 'none'"),
            "valid_signatures": scalar(
                "SELECT count(*) FROM messages WHERE signature = ?", str(SignatureStatus.VALID)
            ),
            "unopened": scalar("SELECT count(*) FROM messages WHERE reopen = 1"),
            "attachments": scalar("SELECT count(*) FROM attachments"),
            "scan": {
                (v or "pending"): int(n)
                for v, n in one(
                    "SELECT CASE WHEN scan LIKE 'infected:%' THEN 'infected' ELSE scan END, "
                    "count(*) FROM messages GROUP BY 1"
                )
            },
            "folders": by_folder,
            "bytes_on_disk": sum(p.stat().st_size for p in files if p.exists()),
        }


def _summary(row: Sequence[Any]) -> MessageSummary:
    return MessageSummary(
        id=int(row[0]),
        account=row[1],
        folder=row[2],
        uidvalidity=int(row[3]),
        uid=int(row[4]),
        date=_from_epoch(int(row[5])),
        arrived=_from_epoch(int(row[6])),
        sender=row[7],
        to=row[8],
        cc=row[9],
        subject=row[10],
        message_id=row[11],
        decryption=row[12],
        signature=row[13],
        signer=row[14],
        error=row[15],
        scan=row[16],
        flags=tuple(row[17].split()),
        attachments=int(row[18]),
    )


def _outer_fields(raw: bytes) -> tuple[tuple[str, str], ...]:
    # When opening produced no effective headers (e.g. an unparsable message), the outer header
    # section is the best we have; when even that is broken, the message has none.
    try:
        return parse_entity(raw, mime_text.MAX_HEADER_BYTES).fields
    except MalformedInput:
        return ()

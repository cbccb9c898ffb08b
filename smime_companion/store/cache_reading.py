"""Reading the message cache: a message's raw original, content, report and summary, search
(the query language compiled by :mod:`smime_companion.store.query`), folder counts and
neighbours, statistics; and the small annotations readers add to a stored message (the
reader's read state, scan verdicts). :class:`CacheReading` is the half of
:class:`~smime_companion.store.cache.Cache` that reads; the other half stores and syncs.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import apsw

from smime_companion.core.cache_entry import MessageFacts
from smime_companion.core.verdicts import Decryption, SignatureStatus
from smime_companion.errors import UsageError
from smime_companion.store import db
from smime_companion.store.cache_schema import NOT_SEEN, SORT_SHIFT, text_rowid
from smime_companion.store.compression import decompress
from smime_companion.store.query import compile_query

# Scan verdicts as stored: NULL (not scanned yet), "clean", "infected:NAME", "error".
SCAN_CLEAN = "clean"
SCAN_ERROR = "error"
SCAN_INFECTED_PREFIX = "infected:"

_SUMMARY_COLUMNS = (
    "m.id, m.account, m.folder, m.uidvalidity, m.uid, m.date, m.arrived, m.sender, m.recipients, "
    "m.cc, m.subject, m.message_id, m.decryption, m.signature, m.signer, m.error, m.scan, m.flags, "
    "(SELECT count(*) FROM attachments a WHERE a.message = m.id AND NOT a.inline), m.preview"
)


@dataclass(frozen=True)
class MessageSummary(MessageFacts):
    """One search hit: where the message lives, what it says about itself and what opening it
    found (the :class:`~smime_companion.core.cache_entry.MessageFacts` its entry stored), its
    flags, scan verdict and number of attachments."""

    id: int
    account: str
    folder: str
    uidvalidity: int
    uid: int
    date: datetime
    arrived: datetime
    scan: str | None
    flags: tuple[str, ...]
    attachments: int
    # The first words of its text (core.text.preview); None when a cache from an earlier
    # version has not derived it yet (Cache.fill_previews does).
    preview: str | None

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
            "preview": self.preview,
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
    """An attachment row: part number, name, type, size, SHA-256, its scan verdict, and
    whether it is a picture the HTML draws (:attr:`core.text.Attachment.inline`)."""

    part: int
    filename: str
    mime_type: str
    size: int
    sha256: str
    scan: str | None
    inline: bool = False


def stored_bytes(value: Any, compressed: Any) -> bytes:
    """A ``raw`` or ``content`` column's bytes as they were stored: decompressed when the row's
    ``compressed`` says so (every row since migration 4)."""
    return decompress(bytes(value)) if compressed else bytes(value)


def from_epoch(value: int) -> datetime:
    """Epoch seconds as an aware UTC datetime."""
    return datetime.fromtimestamp(value, UTC)


class CacheReading:
    """The reading half of :class:`~smime_companion.store.cache.Cache` (which opens the
    connection). Every public method raises :class:`CacheError` (one line) on a database
    failure."""

    _conn: apsw.Connection
    path: Path
    encrypted: bool

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
        row = self._conn.execute(
            "SELECT raw, compressed FROM messages WHERE id = ?", (message_id,)
        ).fetchone()
        if row is None:
            raise UsageError(f"no message with id {message_id} in the cache")
        return stored_bytes(row[0], row[1])

    @db.guarded("read the cache")
    def content(self, message_id: int) -> bytes | None:
        """The decrypted innermost MIME of the message, or None when it could not be opened."""
        row = self._conn.execute(
            "SELECT content, content_is_raw, raw, compressed FROM messages WHERE id = ?",
            (message_id,),
        ).fetchone()
        if row is None:
            raise UsageError(f"no message with id {message_id} in the cache")
        if row[1]:
            return stored_bytes(row[2], row[3])
        return stored_bytes(row[0], row[3]) if row[0] is not None else None

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
            StoredAttachment(int(r[0]), r[1], r[2], int(r[3]), r[4], r[5], bool(r[6]))
            for r in self._conn.execute(
                "SELECT part, filename, mime_type, size, sha256, scan, inline FROM attachments "
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
            f"SELECT m.account, m.folder, count(*) FROM messages m WHERE {NOT_SEEN} AND NOT "
            "EXISTS (SELECT 1 FROM local_state s WHERE s.message = m.id AND s.read = 1) "
            "GROUP BY m.account, m.folder"
        ):
            unread[(str(a), str(f))] = int(n)
        # CROSS JOIN keeps local_state (small) as the outer loop: the planner otherwise walked
        # every message, reading each one's flags from its overflow pages.
        for a, f, n in self._conn.execute(
            "SELECT m.account, m.folder, count(*) FROM local_state s CROSS JOIN messages m "
            f"ON m.id = s.message WHERE s.read = 0 AND NOT ({NOT_SEEN}) "
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
        low = compiled.low << SORT_SHIFT if compiled.low is not None else None
        high = compiled.high << SORT_SHIFT if compiled.high is not None else None
        if compiled.match is not None:
            # Drive the search from the text index, newest first, so LIMIT stops the walk early;
            # its rowid is the negated sort key (text_rowid), so newest first is its forward
            # walk, and a top-level date range bounds the walk too (negated likewise).
            sql = (
                f"SELECT {columns} FROM message_text f JOIN messages m ON m.sort_key = -f.rowid "
                "WHERE f.message_text MATCH ?"
            )
            params.append(compiled.match)
            if low is not None:
                sql += " AND f.rowid <= ?"
                params.append(text_rowid(low))
            if high is not None:
                sql += " AND f.rowid > ?"
                params.append(text_rowid(high))
            order = "f.rowid"
        else:
            sql = f"SELECT {columns} FROM messages m WHERE 1"
            if low is not None:
                sql += " AND m.sort_key >= ?"
                params.append(low)
            if high is not None:
                sql += " AND m.sort_key < ?"
                params.append(high)
            order = "m.sort_key DESC"
        sql += f" AND {compiled.where} ORDER BY {order}"
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
        date=from_epoch(int(row[5])),
        arrived=from_epoch(int(row[6])),
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
        preview=row[19],
    )

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

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import apsw

from smime_companion.core.cache_entry import FolderState, epoch
from smime_companion.errors import CacheError, UsageError
from smime_companion.store import db
from smime_companion.store.cache_reading import (
    SCAN_CLEAN,
    SCAN_ERROR,
    SCAN_INFECTED_PREFIX,
    CacheReading,
    FolderCount,
    MessageSummary,
    StoredAttachment,
    from_epoch,
    stored_bytes,
)
from smime_companion.store.cache_schema import (
    MIGRATIONS,
    SORT_ID_MASK,
    index_text,
    insert_attachments,
    sort_key,
    text_rowid,
)
from smime_companion.store.cache_upkeep import CacheUpkeep
from smime_companion.store.compression import compress

if TYPE_CHECKING:
    from smime_companion.core.cache_entry import CacheEntry

__all__ = [
    "MIGRATIONS",
    "SCAN_CLEAN",
    "SCAN_ERROR",
    "SCAN_INFECTED_PREFIX",
    "Cache",
    "FolderCount",
    "FolderState",
    "MessageSummary",
    "StoredAttachment",
    "sort_key",
]

log = logging.getLogger(__name__)

# A rebuild of this many messages or more ends by merging the text index (see merge_index).
REBUILD_MERGE_AFTER = 1000


def _entry_columns(entry: CacheEntry) -> dict[str, Any]:
    """The ``messages`` columns ``entry`` fills, by name (scan is reset: the content may have
    changed). The content is compressed (:mod:`~smime_companion.store.compression`), so the
    raw message written with it must be too."""
    return {
        "content": compress(entry.content) if entry.content is not None else None,
        "compressed": 1,  # and the raw message too: callers write it with the entry
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
        "preview": entry.preview,
        "scan": None,
    }


def _flags_text(flags: Sequence[str]) -> str:
    # Stored space-separated with a leading and trailing space so "is:" can test " \Seen ".
    clean = [f for f in flags if f and not any(c.isspace() for c in f)]
    return (" " + " ".join(clean) + " ") if clean else ""


class Cache(CacheReading, CacheUpkeep, db.Handle):
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
        cls, directory: Path, key: db.Key | None, *, checkpoint_in_background: bool = False
    ) -> Cache:
        """Open or create the cache in ``directory`` (made 0700; files 0600). ``key`` is the
        passphrase, or the page key derived from it (:func:`~smime_companion.store.db.page_key`);
        None only for a plain (``encrypt_cache = false``) database.
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
        try:
            cache._finish_compression()
            cache._finish_reindex()
        except BaseException:
            conn.close()
            raise
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
        """Store ``raw`` and its derived ``entry`` (:func:`~.cache_entry.derive_entry` of this
        same ``raw``: its hash is the entry's) at (account, folder, uidvalidity, uid) in one
        transaction; return the message id.

        Idempotent: storing the same location again replaces the derived data (never a second
        row). When the location is new but the same raw message is cached in this folder under an
        older UIDVALIDITY, that entry is moved to the new location instead of duplicated.
        """
        raw_sha256 = entry.raw_sha256
        located = {"raw": compress(raw), "raw_size": len(raw), "raw_sha256": raw_sha256,
                   "arrived": epoch(arrived), "flags": _flags_text(flags)}  # fmt: skip
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
                f"VALUES ({next_id}, ? + ({next_id} & {SORT_ID_MASK}), "
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
            self._conn.execute(
                "DELETE FROM message_text WHERE rowid = ?", (text_rowid(int(old_key[0])),)
            )
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
        insert_attachments(self._conn, message_id, entry.attachments)
        index_text(
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
            "DELETE FROM message_text WHERE rowid = -(SELECT sort_key FROM messages WHERE id = ?)",
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

    # -- maintenance -----------------------------------------------------------------------------

    @db.guarded("rebuild the cache")
    def rebuild(
        self,
        derive: Callable[[bytes, datetime], CacheEntry],
        message_ids: Iterable[int] | None = None,
    ) -> int:
        """Re-derive messages from their raw originals with ``derive(raw, arrived)`` (e.g.
        after importing an old key: see :func:`~smime_companion.core.cache_entry.entry_maker`);
        all messages when ``message_ids`` is None. Each message is
        its own transaction, so an interruption loses nothing. Returns how many were rebuilt."""
        ids = (
            list(message_ids)
            if message_ids is not None
            else [int(r[0]) for r in self._conn.execute("SELECT id FROM messages ORDER BY id")]
        )
        count = 0
        for message_id in ids:
            row = self._conn.execute(
                "SELECT raw, compressed, arrived FROM messages WHERE id = ?", (message_id,)
            ).fetchone()
            if row is None:
                continue
            raw, arrived = stored_bytes(row[0], row[1]), from_epoch(int(row[2]))
            entry = derive(raw, arrived)
            with self._conn:
                self._write_entry(message_id, entry, {"raw": compress(raw), "raw_size": len(raw)})
            count += 1
        if count >= REBUILD_MERGE_AFTER:
            self.merge_index()
        return count

    def rekey(self, new_key: str) -> None:
        """Re-encrypt the database under ``new_key``. Raises :class:`CacheError` (also for a
        plain database, which has no key to change)."""
        if not self.encrypted:
            raise CacheError("the cache is not encrypted (encrypt_cache = false): no key to change")
        db.rekey(self._conn, new_key)

"""The upkeep of the message cache: finishing the upgrade of a cache written by an earlier
version (its raw messages compressed, migration 4; its text index rebuilt, migration 6; the
messages holding a winmail.dat, enriched text or an appledouble file derived again, migration
7, and those holding an S/MIME message forwarded inline, migration 9; the list previews,
migration 8), and merging the text index after bulk work.
:class:`CacheUpkeep` is that part of :class:`~smime_companion.store.cache.Cache`.

The first upgrades run at open in small transactions and remember what is left in the
database, so an interruption loses nothing and the next open goes on from where it stopped;
previews are derived for the messages a list shows, when it shows them.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import apsw

from smime_companion.core.normalise import search_form
from smime_companion.store import db
from smime_companion.store.cache_reading import stored_bytes
from smime_companion.store.cache_schema import index_text, insert_attachments, text_rowid
from smime_companion.store.compression import compress

if TYPE_CHECKING:  # at run time from the one function that needs it (see reindex_pending)
    from smime_companion.core.text import MessageText

__all__ = ["COMPRESS_BATCH", "REINDEX_BATCH", "CacheUpkeep"]

log = logging.getLogger(__name__)

# What _stored_text reads of a message row, in its order.
_STORED_TEXT_COLUMNS = (
    "error, decryption, compressed, report, CASE WHEN content_is_raw = 1 THEN raw ELSE content END"
)

# Rows compressed per transaction when upgrading an older cache: each commit is a point an
# interruption goes on from, and keeps the write-ahead log small.
COMPRESS_BATCH = 200
# Messages re-indexed per transaction when upgrading an older cache's text index (migration 6).
REINDEX_BATCH = 200
# An upgrade of a large cache takes minutes (about a millisecond a message): it says how far it
# has come at most this often, so that a command waiting on it does not look hung.
PROGRESS_SECONDS = 10.0


class _Progress:
    """Logs "WHAT: n of TOTAL messages (p%)" at most every PROGRESS_SECONDS."""

    def __init__(self, what: str, total: int) -> None:
        self.what = what
        self.total = total
        self.done = 0
        self.last = time.monotonic()

    def advance(self, count: int) -> None:
        self.done += count
        now = time.monotonic()
        if now - self.last >= PROGRESS_SECONDS and self.done < self.total:
            self.last = now
            percent = 100 * self.done // max(self.total, 1)
            log.warning("%s: %d of %d messages (%d%%)", self.what, self.done, self.total, percent)


class CacheUpkeep:
    """Upgrades of an older cache and the text index's merging (a part of the Cache)."""

    _conn: apsw.Connection

    @db.guarded("compress the cache")
    def _finish_compression(self) -> None:
        """Compress what a cache from before migration 4 holds uncompressed (once; see
        :meth:`compress_pending`), saying so first: a large cache takes minutes."""
        row = self._conn.execute("SELECT count(*) FROM messages WHERE compressed = 0").fetchone()
        pending = int(row[0]) if row else 0
        if pending:
            log.warning(
                "compressing the %d messages of a cache from an earlier version (once; "
                "interrupting is safe: it goes on next time)",
                pending,
            )
            self.compress_pending(progress=_Progress("compressing the cache", pending))

    @db.guarded("compress the cache")
    def compress_pending(self, batch: int | None = None, progress: _Progress | None = None) -> int:
        """Compress the raw messages and contents that a cache from before migration 4 holds as
        they came, ``batch`` rows per transaction (an interruption loses nothing: the next call
        goes on from there). Returns how many rows were compressed; 0 at once when none are
        left."""
        batch = batch or COMPRESS_BATCH
        done = 0
        while True:
            with self._conn:
                rows = self._conn.execute(
                    "SELECT id, raw, content FROM messages WHERE compressed = 0 ORDER BY id "
                    "LIMIT ?",
                    (batch,),
                ).fetchall()
                for message_id, raw, content in rows:
                    self._conn.execute(
                        "UPDATE messages SET raw = ?, raw_size = length(raw), content = ?, "
                        "compressed = 1 WHERE id = ?",
                        (compress(stored_bytes(raw, 0)),
                         compress(stored_bytes(content, 0)) if content is not None else None,
                         message_id),
                    )  # fmt: skip
            done += len(rows)
            if progress is not None:
                progress.advance(len(rows))
            if len(rows) < batch:
                return done

    @db.guarded("rebuild the text index")
    def _finish_reindex(self) -> None:
        """Index what migrations 6 and 7 left to re-index (once; see :meth:`reindex_pending`),
        saying so first: a large cache takes minutes."""
        row = self._conn.execute("SELECT count(*) FROM text_pending").fetchone()
        pending = int(row[0]) if row else 0
        if pending:
            log.warning(
                "rebuilding the search index of the %d messages of a cache from an earlier "
                "version (once; interrupting is safe: it goes on next time)",
                pending,
            )
            self.reindex_pending(progress=_Progress("rebuilding the search index", pending))

    @db.guarded("rebuild the text index")
    def reindex_pending(self, batch: int | None = None, progress: _Progress | None = None) -> int:
        """Derive the text index entries and attachments of the messages listed in
        ``text_pending`` again (migration 6 lists every message of an older cache, migrations 7
        and 9 the ones whose parts core.text now reads otherwise), from their decrypted contents,
        ``batch`` messages per transaction: an interruption loses nothing, the next call goes
        on from there. Merges the index when it indexed any. Returns how many messages it
        indexed; 0 at once when none are left."""
        # Imported here: text extraction loads the MIME engine, which a search does not need.
        from smime_companion.core.entry_derivation import readable_text

        batch = batch or REINDEX_BATCH
        done = 0
        while True:
            # IMMEDIATE: a second process upgrading the same cache waits here for this batch
            # and then sees it gone from text_pending, instead of indexing it twice.
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                pending = [
                    int(r[0])
                    for r in self._conn.execute(
                        "SELECT message FROM text_pending ORDER BY message LIMIT ?", (batch,)
                    )
                ]
                for message_id in pending:
                    self._reindex_one(message_id, readable_text)
                    self._conn.execute("DELETE FROM text_pending WHERE message = ?", (message_id,))
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")
            done += len(pending)
            if progress is not None:
                progress.advance(len(pending))
            if len(pending) < batch:
                break
        if done:
            self.merge_index()
        return done

    def _reindex_one(self, message_id: int, readable_text: Callable[..., MessageText]) -> None:
        """Index one stored message again from what the cache holds (a message deleted since
        it was listed: nothing). When its attachments come out otherwise than stored (a
        winmail.dat now shown as what it holds), they replace the stored ones and the message
        is scanned again, since a scan verdict names parts by number."""
        row = self._conn.execute(
            f"SELECT sort_key, sender, recipients, cc, subject, {_STORED_TEXT_COLUMNS} "
            "FROM messages WHERE id = ?",
            (message_id,),
        ).fetchone()
        if row is None:
            return
        key, sender, to, cc, subject = row[:5]
        readable, derived = _stored_text(row[5:], readable_text)
        stored = [
            tuple(r)
            for r in self._conn.execute(
                "SELECT part, filename, mime_type, size, sha256, inline FROM attachments "
                "WHERE message = ? ORDER BY part",
                (message_id,),
            )
        ]
        filenames = [str(r[1]) for r in stored]
        new = derived.attachments
        rows = [(a.part, a.filename, a.mime_type, a.size, a.sha256, int(a.inline)) for a in new]
        if readable and [r[:5] for r in rows] != [r[:5] for r in stored]:
            self._conn.execute("DELETE FROM attachments WHERE message = ?", (message_id,))
            insert_attachments(self._conn, message_id, new)
            self._conn.execute("UPDATE messages SET scan = NULL WHERE id = ?", (message_id,))
            filenames = [a.filename for a in new]
        elif readable and rows != stored:
            # The same parts, only which are inline pictures told anew (migration 13): the
            # scan verdicts, which name parts by number, still hold.
            self._conn.executemany(
                "UPDATE attachments SET inline = ? WHERE message = ? AND part = ?",
                [(int(a.inline), message_id, a.part) for a in new],
            )
        self._conn.execute(
            "UPDATE messages SET preview = ? WHERE id = ?", (derived.preview, message_id)
        )
        # Migration 6 emptied the index; a message listed by a later one is still in it.
        self._conn.execute("DELETE FROM message_text WHERE rowid = ?", (text_rowid(int(key)),))
        recipients = " ".join(str(x) for x in (to, cc) if x)
        index_text(
            self._conn,
            int(key),
            str(sender),
            recipients,
            str(subject),
            search_form(derived.body),
            filenames,
        )

    @db.guarded("derive the previews of messages")
    def fill_previews(self, message_ids: Iterable[int]) -> dict[int, str]:
        """The previews (:func:`core.text.preview`) of those of ``message_ids`` that have none
        yet (messages a cache from before migration 8 holds), derived from their contents and
        stored, by id. What a list page calls for its rows, so an upgraded cache needs no
        upfront pass: the page's fifty messages cost about as much as opening one. When another
        process holds the database for writing past the busy timeout, the previews are still
        returned and stored by a later call."""
        # Imported here: text extraction loads the MIME engine, which a search does not need.
        from smime_companion.core.entry_derivation import readable_text

        found: dict[int, str] = {}
        for message_id in message_ids:
            row = self._conn.execute(
                f"SELECT {_STORED_TEXT_COLUMNS} FROM messages WHERE id = ? AND preview IS NULL",
                (message_id,),
            ).fetchone()
            if row is not None:
                found[message_id] = _stored_text(row, readable_text)[1].preview
        if found:
            try:
                with self._conn:
                    self._conn.executemany(
                        "UPDATE messages SET preview = ? WHERE id = ? AND preview IS NULL",
                        [(text, message_id) for message_id, text in found.items()],
                    )
            except apsw.BusyError:
                log.debug("previews of %d messages not stored: the cache is busy", len(found))
        return found

    @db.guarded("merge the text index")
    def merge_index(self) -> None:
        """Merge the text index into one segment (FTS5 ``optimize``). Each committed batch adds
        a segment, and a query reads every segment of each term: after bulk work (a first sync,
        a rebuild, an import) one merged segment keeps searches as fast as the index allows. It
        rewrites the whole index: not for each batch."""
        with self._conn:
            self._conn.execute("INSERT INTO message_text (message_text) VALUES ('optimize')")


def _stored_text(
    row: Sequence[Any], readable_text: Callable[..., MessageText]
) -> tuple[bool, MessageText]:
    """Whether a stored message has readable content, and its text and attachments derived
    again (``core.entry_derivation.readable_text``) from the :data:`_STORED_TEXT_COLUMNS` of
    its row."""
    error, decryption, compressed, report, content = row
    text = stored_bytes(content, int(compressed)) if isinstance(content, bytes) else None
    name = json.loads(str(report)).get("content_name")
    derived = readable_text(text, decryption, error, name if isinstance(name, str) else None)
    return text is not None, derived

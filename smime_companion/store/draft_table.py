"""The drafts kept in the outbox journal: written in the reader or by ``compose``.

A draft that quotes decrypted mail must never become a plaintext file or a message on the
provider's server, so it lives in the journal's ``drafts`` table (``outbox.db``, encrypted with the
cache key). :class:`DraftTable` is that table's half of
:class:`~smime_companion.store.journal.Journal`; ``outbox.journal_drafts`` hands the queued ones to
the outbox pipeline like any other source.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import apsw

from smime_companion.errors import UsageError
from smime_companion.store import db

# Where a draft of the ``drafts`` table is (see store.journal_schema, migration 3).
DRAFT_SAVED = "saved"
DRAFT_PLACES = (DRAFT_SAVED, "outbox", "held", "rejected")


@dataclass(frozen=True)
class StoredDraft:
    """A draft kept in the journal (see :meth:`Journal.save_draft`)."""

    id: int
    account: str
    place: str
    message: bytes
    created: datetime
    updated: datetime


def _ts(at: datetime) -> int:
    return int(at.timestamp())


def _dt(value: Any) -> datetime:
    return datetime.fromtimestamp(int(value), UTC)


def _draft(row: Any) -> StoredDraft:
    created, updated = _dt(row[4]), _dt(row[5])  # NOT NULL columns
    return StoredDraft(int(row[0]), str(row[1]), str(row[2]), bytes(row[3]), created, updated)


class DraftTable:
    """The ``drafts`` table of the journal; every method is one transaction and raises
    :class:`~smime_companion.errors.CacheError` with one line when the database cannot be used."""

    _conn: apsw.Connection

    def _rows(self, sql: str, args: tuple[object, ...] = ()) -> list[Any]:
        return list(self._conn.execute(sql, args))

    def _filtered_rows(
        self, select: str, account: str | None, column: str, values: Sequence[str] | None
    ) -> list[Any]:
        """Rows of ``select`` for ``account`` (None: all) whose ``column`` is one of ``values``
        (None: any), oldest first."""
        sql = select + " WHERE 1"
        args: list[object] = []
        if account is not None:
            sql += " AND account = ?"
            args.append(account)
        if values is not None:
            sql += f" AND {column} IN ({', '.join('?' * len(values))})"
            args.extend(values)
        return self._rows(sql + " ORDER BY id", tuple(args))

    @db.guarded("save a draft")
    def save_draft(
        self, account: str, message: bytes, place: str, at: datetime, draft_id: int | None = None
    ) -> int:
        """Keep ``message`` as a draft of ``account`` in ``place`` (one of
        :data:`DRAFT_PLACES`): a new draft, or draft ``draft_id`` replaced. Returns its id.
        Raises :class:`UsageError` for an unknown place or draft id."""
        if place not in DRAFT_PLACES:
            raise UsageError(f"unknown draft place {place!r}")
        with db.savepoint(self._conn):
            if draft_id is None:
                self._conn.execute(
                    "INSERT INTO drafts (account, place, message, created, updated)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (account, place, message, _ts(at), _ts(at)),
                )
                return int(self._conn.last_insert_rowid())
            self._conn.execute(
                "UPDATE drafts SET account = ?, place = ?, message = ?, updated = ? WHERE id = ?",
                (account, place, message, _ts(at), draft_id),
            )
            if self._conn.changes() == 0:
                raise UsageError(f"no draft {draft_id}")
            return draft_id

    @db.guarded("read a draft")
    def draft(self, draft_id: int) -> StoredDraft | None:
        """Draft ``draft_id``, or None when it is gone (sent, deleted)."""
        rows = self._rows(
            "SELECT id, account, place, message, created, updated FROM drafts WHERE id = ?",
            (draft_id,),
        )
        return _draft(rows[0]) if rows else None

    @db.guarded("read the drafts")
    def drafts(
        self, account: str | None = None, places: Sequence[str] | None = None
    ) -> list[StoredDraft]:
        """Drafts of ``account`` (default: all) in ``places`` (default: all), oldest first."""
        select = "SELECT id, account, place, message, created, updated FROM drafts"
        return [_draft(r) for r in self._filtered_rows(select, account, "place", places)]

    @db.guarded("move a draft")
    def move_draft(self, draft_id: int, place: str, at: datetime) -> bool:
        """Put draft ``draft_id`` in ``place``; False when it is gone."""
        if place not in DRAFT_PLACES:
            raise UsageError(f"unknown draft place {place!r}")
        self._conn.execute(
            "UPDATE drafts SET place = ?, updated = ? WHERE id = ?", (place, _ts(at), draft_id)
        )
        return self._conn.changes() > 0

    @db.guarded("delete a draft")
    def delete_draft(self, draft_id: int) -> None:
        """Forget draft ``draft_id`` (its bytes are overwritten: secure_delete); no-op when
        gone."""
        self._conn.execute("DELETE FROM drafts WHERE id = ?", (draft_id,))

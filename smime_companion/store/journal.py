"""The outbox journal: what happened to every draft, one step per transaction.

Sending cannot be undone, so each step of the outbox pipeline is recorded here before and after
it is taken, and a crash at any instant leaves a state the next start finishes:

``claimed`` (the draft was seen and is being planned) -> ``sealed`` (the sealed copies are kept
here) -> ``submitting`` (a copy is being handed to the SMTP server) -> ``submitted`` -> ``filed``
(the sealed copy is in Sent) -> ``done`` (the draft was removed).

Off the main line: ``uncertain`` (the process stopped, or the connection broke, while a copy was
being submitted: the server may have accepted it, so it is never resent unless the user asks with
``outbox retry``), ``held`` (waiting for the user: missing certificates, a submission the server
refused) and ``rejected`` (not the user's draft, or unreadable: moved aside, never sent).

Each sealed copy (the main message, one per Bcc recipient) has its own submission state, so a
retry resends only the copies not known to be accepted. Notices for the user are queued here in
the same transaction as the state change that causes them, so none is lost in a crash; their
words are the outbox's (``outbox.notices``): the journal stores them and writes none.

The journal is its own database file, ``outbox.db``, in the cache directory, encrypted with the
cache key (see :mod:`smime_companion.store.db`): a separate file because each file has one linear
migration list.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

import apsw

from smime_companion.errors import UsageError
from smime_companion.store import db
from smime_companion.store.draft_table import DraftTable
from smime_companion.store.journal_schema import MIGRATIONS

DB_FILENAME = "outbox.db"


class ItemState(StrEnum):
    """The state of one outbox item (the string values are shown by ``outbox list``)."""

    CLAIMED = "claimed"
    SEALED = "sealed"
    SUBMITTING = "submitting"
    SUBMITTED = "submitted"
    FILED = "filed"
    DONE = "done"
    UNCERTAIN = "uncertain"
    HELD = "held"
    REJECTED = "rejected"


# States in which the item still owns its draft: a draft with the same bytes in the outbox is this
# item, not a new message. Done, held and rejected items have given their draft up (removed or moved
# aside), so the same bytes appearing again in the outbox are the user sending them again.
OPEN_STATES = frozenset(
    {
        ItemState.CLAIMED,
        ItemState.SEALED,
        ItemState.SUBMITTING,
        ItemState.SUBMITTED,
        ItemState.FILED,
        ItemState.UNCERTAIN,
    }
)


class CopyState(StrEnum):
    """Submission state of one sealed copy."""

    PENDING = "pending"
    SUBMITTING = "submitting"
    SUBMITTED = "submitted"
    UNCERTAIN = "uncertain"
    REFUSED = "refused"


@dataclass(frozen=True)
class OutboxItem:
    """One draft's record. Times are aware UTC datetimes."""

    id: int
    account: str
    digest: str
    ref: str | None
    state: ItemState
    sender: str | None
    subject: str | None
    message_id: str | None
    reason: str | None
    attempts: int
    next_attempt: datetime | None
    created: datetime
    updated: datetime
    deferred_since: datetime | None = None  # the server's first 4xx of the current try
    delay_noticed: bool = False  # the user was told this message is late

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready dict (``outbox list --json``); holds no message content but the
        subject."""
        return {
            "id": self.id,
            "account": self.account,
            "state": str(self.state),
            "from": self.sender,
            "subject": self.subject,
            "message_id": self.message_id,
            "reason": self.reason,
            "attempts": self.attempts,
            "next_attempt": self.next_attempt.isoformat() if self.next_attempt else None,
            "deferred_since": self.deferred_since.isoformat() if self.deferred_since else None,
            "created": self.created.isoformat(),
            "updated": self.updated.isoformat(),
        }


@dataclass(frozen=True)
class SealedCopy:
    """One sealed message of an item and its envelope."""

    index: int
    sender: str
    recipients: tuple[str, ...]
    message: bytes
    state: CopyState
    reply: str | None


@dataclass(frozen=True)
class Notice:
    """A notice for the user, queued until delivered."""

    id: int
    item_id: int | None
    account: str
    subject: str
    text: str


def _ts(at: datetime) -> int:
    return int(at.timestamp())


def _dt(value: Any) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(int(value), UTC)


_ITEM_COLUMNS = (
    "id, account, digest, ref, state, sender, subject, message_id, reason, attempts, "
    "next_attempt, created, updated, deferred_since, delay_noticed"
)


def _item(row: Any) -> OutboxItem:
    created = _dt(row[11])
    updated = _dt(row[12])
    assert created is not None and updated is not None  # NOT NULL columns
    return OutboxItem(
        id=int(row[0]),
        account=str(row[1]),
        digest=str(row[2]),
        ref=row[3],
        state=ItemState(str(row[4])),
        sender=row[5],
        subject=row[6],
        message_id=row[7],
        reason=row[8],
        attempts=int(row[9]),
        next_attempt=_dt(row[10]),
        created=created,
        updated=updated,
        deferred_since=_dt(row[13]),
        delay_noticed=bool(row[14]),
    )


class Journal(DraftTable, db.Handle):
    """The outbox journal database. Open with :meth:`open`; close (or use ``with``).

    Every method is one transaction and raises :class:`~smime_companion.errors.CacheError` with
    one line when the database cannot be used (the journal is then unchanged).
    """

    def __init__(self, conn: apsw.Connection) -> None:
        self._conn = conn

    @classmethod
    def open(cls, directory: Path, key: str | None) -> Journal:
        """Open (or create) ``directory/outbox.db`` encrypted with ``key`` (None: in the clear,
        for tests). Raises :class:`CacheError` for a wrong key or a damaged file."""
        return cls(db.connect(directory / DB_FILENAME, key, MIGRATIONS))

    # -- reading ---------------------------------------------------------------------------------

    @db.guarded("read the outbox journal")
    def find(self, item_id: int) -> OutboxItem | None:
        """The item ``item_id``, or None when there is none."""
        rows = self._rows(f"SELECT {_ITEM_COLUMNS} FROM items WHERE id = ?", (item_id,))
        return _item(rows[0]) if rows else None

    def item(self, item_id: int) -> OutboxItem:
        """The item ``item_id``. Raises :class:`UsageError` when there is none."""
        found = self.find(item_id)
        if found is None:
            raise UsageError(f"no outbox item {item_id}")
        return found

    @db.guarded("read the outbox journal")
    def items(
        self, account: str | None = None, states: Sequence[ItemState] | None = None
    ) -> list[OutboxItem]:
        """Items, oldest first, of ``account`` (default: all) in ``states`` (default: all)."""
        wanted = None if states is None else [str(s) for s in states]
        select = f"SELECT {_ITEM_COLUMNS} FROM items"
        return [_item(r) for r in self._filtered_rows(select, account, "state", wanted)]

    @db.guarded("read the outbox journal")
    def open_item_for(self, account: str, digest: str) -> OutboxItem | None:
        """The item of ``account`` that still owns a draft with this digest, if any."""
        states = sorted(OPEN_STATES)
        rows = self._rows(
            f"SELECT {_ITEM_COLUMNS} FROM items WHERE account = ? AND digest = ?"
            f" AND state IN ({', '.join('?' * len(states))}) ORDER BY id LIMIT 1",
            (account, digest, *states),
        )
        return _item(rows[0]) if rows else None

    @db.guarded("read the outbox journal")
    def copies(self, item_id: int) -> list[SealedCopy]:
        """The sealed copies of an item, main message first."""
        return [
            SealedCopy(
                index=int(r[0]),
                sender=str(r[1]),
                recipients=tuple(json.loads(r[2])),
                message=bytes(r[3] or b""),
                state=CopyState(str(r[4])),
                reply=r[5],
            )
            for r in self._rows(
                "SELECT idx, sender, recipients, message, state, reply FROM copies"
                " WHERE item_id = ? ORDER BY idx",
                (item_id,),
            )
        ]

    @db.guarded("read the outbox journal")
    def sent_copy(self, item_id: int) -> bytes | None:
        """The sealed message to file in Sent (None once done)."""
        rows = self._rows("SELECT sent_copy FROM items WHERE id = ?", (item_id,))
        return bytes(rows[0][0]) if rows and rows[0][0] is not None else None

    @db.guarded("read the outbox journal")
    def held_draft(self, item_id: int) -> bytes | None:
        """The split-off draft still to be stored in Held, or None."""
        rows = self._rows("SELECT held_draft FROM items WHERE id = ?", (item_id,))
        return bytes(rows[0][0]) if rows and rows[0][0] is not None else None

    @db.guarded("read the outbox journal")
    def notices(self, account: str | None = None) -> list[Notice]:
        """Notices not yet delivered, oldest first."""
        sql = "SELECT id, item_id, account, subject, text FROM notices"
        args: tuple[object, ...] = ()
        if account is not None:
            sql, args = sql + " WHERE account = ?", (account,)
        return [
            Notice(int(r[0]), r[1], str(r[2]), str(r[3]), str(r[4]))
            for r in self._rows(sql + " ORDER BY id", args)
        ]

    @db.guarded("read the outbox journal")
    def item_for_ref(self, account: str, ref: str) -> OutboxItem | None:
        """The newest item of ``account`` whose draft was (or is) at ``ref``, or None."""
        rows = self._rows(
            f"SELECT {_ITEM_COLUMNS} FROM items WHERE account = ? AND ref = ?"
            " ORDER BY id DESC LIMIT 1",
            (account, ref),
        )
        return _item(rows[0]) if rows else None

    # -- steps -----------------------------------------------------------------------------------

    @db.guarded("claim a draft")
    def claim(
        self,
        account: str,
        digest: str,
        ref: str,
        at: datetime,
        *,
        sender: str | None = None,
        subject: str | None = None,
        message_id: str | None = None,
    ) -> OutboxItem:
        """Record a newly seen draft as ``claimed``; returns its item."""
        with db.savepoint(self._conn):
            self._conn.execute(
                "INSERT INTO items (account, digest, ref, state, sender, subject, message_id,"
                " created, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (account, digest, ref, str(ItemState.CLAIMED), sender, subject, message_id,
                 _ts(at), _ts(at)),
            )  # fmt: skip
            item_id = self._conn.last_insert_rowid()
        return self.item(item_id)

    @db.guarded("update the outbox journal")
    def set_ref(self, item_id: int, ref: str | None) -> None:
        """Remember where the item's draft is now."""
        self._conn.execute("UPDATE items SET ref = ? WHERE id = ?", (ref, item_id))

    @db.guarded("record a sealed message")
    def record_sealed(
        self,
        item_id: int,
        copies: Sequence[tuple[str, Sequence[str], bytes]],
        sent_copy: bytes,
        at: datetime,
        *,
        held_draft: bytes | None = None,
        notice: tuple[str, str] | None = None,
    ) -> None:
        """Keep the sealed ``copies`` (sender, envelope recipients, message), the Sent copy and
        the split-off draft, and move the item from ``claimed`` to ``sealed``, with an optional
        ``notice`` (subject, text) queued in the same transaction. Raises :class:`UsageError`
        when the item is not ``claimed``."""
        with db.savepoint(self._conn):
            self._expect(item_id, {ItemState.CLAIMED})
            for index, (sender, recipients, message) in enumerate(copies):
                self._conn.execute(
                    "INSERT INTO copies (item_id, idx, sender, recipients, message, state)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (item_id, index, sender, json.dumps(list(recipients)), message,
                     str(CopyState.PENDING)),
                )  # fmt: skip
            self._conn.execute(
                "UPDATE items SET state = ?, sent_copy = ?, held_draft = ?, updated = ?"
                " WHERE id = ?",
                (str(ItemState.SEALED), sent_copy, held_draft, _ts(at), item_id),
            )
            if notice is not None:
                self._queue_notice(item_id, notice, at)

    @db.guarded("record a submission")
    def begin_submission(self, item_id: int, index: int, at: datetime) -> None:
        """Mark copy ``index`` (and its item) ``submitting``: from here until
        :meth:`copy_submitted`, a crash makes the copy ``uncertain``."""
        with db.savepoint(self._conn):
            self._expect(item_id, {ItemState.SEALED, ItemState.SUBMITTING})
            self._conn.execute(
                "UPDATE copies SET state = ? WHERE item_id = ? AND idx = ?",
                (str(CopyState.SUBMITTING), item_id, index),
            )
            self._set(item_id, ItemState.SUBMITTING, at)

    @db.guarded("record a submission")
    def copy_submitted(self, item_id: int, index: int, at: datetime) -> None:
        """Copy ``index`` was accepted; the item becomes ``submitted`` when every copy is."""
        with db.savepoint(self._conn):
            self._copy_state(item_id, index, CopyState.SUBMITTED, None)
            left = self._rows(
                "SELECT count(*) FROM copies WHERE item_id = ? AND state != ?",
                (item_id, str(CopyState.SUBMITTED)),
            )[0][0]
            self._set(item_id, ItemState.SUBMITTED if left == 0 else ItemState.SUBMITTING, at)

    @db.guarded("record a submission")
    def copy_deferred(
        self, item_id: int, index: int, reply: str, at: datetime, next_attempt: datetime
    ) -> None:
        """Copy ``index`` was not accepted and may be tried again at ``next_attempt``: the item
        goes back to ``sealed`` with one more attempt counted (``deferred_since`` is set by the
        first deferral of a try)."""
        with db.savepoint(self._conn):
            self._copy_state(item_id, index, CopyState.PENDING, reply)
            self._conn.execute(
                "UPDATE items SET state = ?, reason = ?, attempts = attempts + 1,"
                " next_attempt = ?, updated = ?, deferred_since = coalesce(deferred_since, ?)"
                " WHERE id = ?",
                (str(ItemState.SEALED), reply, _ts(next_attempt), _ts(at), _ts(at), item_id),
            )

    @db.guarded("record a submission")
    def delay_noticed(self, item_id: int, notice: tuple[str, str], at: datetime) -> None:
        """Queue ``notice`` (the message is late, still being tried) once per try."""
        with db.savepoint(self._conn):
            self._conn.execute("UPDATE items SET delay_noticed = 1 WHERE id = ?", (item_id,))
            self._queue_notice(item_id, notice, at)

    @db.guarded("record a submission")
    def copy_failed(
        self,
        item_id: int,
        index: int,
        copy_state: CopyState,
        state: ItemState,
        reason: str,
        at: datetime,
        notice: tuple[str, str] | None = None,
    ) -> None:
        """Copy ``index`` ended ``copy_state`` (refused, uncertain) and the item ``state``
        (held, uncertain) with ``reason``; ``notice`` is queued in the same transaction."""
        with db.savepoint(self._conn):
            self._copy_state(item_id, index, copy_state, reason)
            self._set(item_id, state, at, reason)
            if notice is not None:
                self._queue_notice(item_id, notice, at)

    @db.guarded("update the outbox journal")
    def advance(
        self,
        item_id: int,
        expected: set[ItemState],
        state: ItemState,
        at: datetime,
        *,
        reason: str | None = None,
        notice: tuple[str, str] | None = None,
    ) -> None:
        """Move the item from one of ``expected`` to ``state`` (with ``reason``), queueing
        ``notice`` in the same transaction. Done also drops the kept message bytes, which are
        no longer needed. Raises :class:`UsageError` when the item is in another state."""
        with db.savepoint(self._conn):
            self._expect(item_id, expected)
            self._set(item_id, state, at, reason)
            if state == ItemState.DONE:
                self._conn.execute(
                    "UPDATE items SET sent_copy = NULL, held_draft = NULL WHERE id = ?",
                    (item_id,),
                )
                self._conn.execute("UPDATE copies SET message = NULL WHERE item_id = ?", (item_id,))
            if notice is not None:
                self._queue_notice(item_id, notice, at)

    @db.guarded("update the outbox journal")
    def held_draft_stored(self, item_id: int) -> None:
        """The split-off draft is in Held: forget it here so it is stored once."""
        self._conn.execute("UPDATE items SET held_draft = NULL WHERE id = ?", (item_id,))

    @db.guarded("recover the outbox journal")
    def recover_interrupted(
        self, at: datetime, notice_for: Callable[[OutboxItem], tuple[str, str]]
    ) -> list[OutboxItem]:
        """After a stop: every copy still ``submitting`` becomes ``uncertain`` (the server may
        have accepted it) and its item too, with the notice ``notice_for(item)`` (subject, text)
        queued in the same transaction. Returns those items.

        Call it once at start, before any pass, while no other process uses the journal."""
        with db.savepoint(self._conn):
            stuck = self.items(states=[ItemState.SUBMITTING])
            for item in stuck:
                self._conn.execute(
                    "UPDATE copies SET state = ? WHERE item_id = ? AND state = ?",
                    (str(CopyState.UNCERTAIN), item.id, str(CopyState.SUBMITTING)),
                )
                reason = "stopped while the message was being submitted; it may have been sent"
                self._set(item.id, ItemState.UNCERTAIN, at, reason)
                self._queue_notice(item.id, notice_for(item), at)
        return [self.item(i.id) for i in stuck]

    @db.guarded("retry an outbox item")
    def retry(self, item_id: int, at: datetime) -> OutboxItem:
        """An ``uncertain`` or ``held`` item that has sealed copies goes back to ``sealed``; its
        copies not known to be accepted are submitted again on the next pass (now, with no
        backoff), as a new try: the backoff, the delay notice and the time before giving up
        start again. Whether the user may ask for it is the outbox's rule
        (``outbox.pipeline.retry_item``). Raises :class:`UsageError` for an item in another
        state or without sealed copies."""
        with db.savepoint(self._conn):
            self._expect(item_id, {ItemState.UNCERTAIN, ItemState.HELD})
            if not self.copies(item_id):
                raise UsageError(f"outbox item {item_id} has no sealed copy to submit again")
            self._conn.execute(
                "UPDATE copies SET state = ? WHERE item_id = ? AND state != ?",
                (str(CopyState.PENDING), item_id, str(CopyState.SUBMITTED)),
            )
            self._conn.execute(
                "UPDATE items SET state = ?, next_attempt = NULL, attempts = 0,"
                " deferred_since = NULL, delay_noticed = 0, updated = ? WHERE id = ?",
                (str(ItemState.SEALED), _ts(at), item_id),
            )
        return self.item(item_id)

    @db.guarded("queue a notice")
    def queue_notice(self, account: str, subject: str, text: str, at: datetime) -> None:
        """Queue a notice not tied to an item."""
        self._conn.execute(
            "INSERT INTO notices (item_id, account, subject, text, created) VALUES (?, ?, ?, ?, ?)",
            (None, account, subject, text, _ts(at)),
        )

    @db.guarded("update the outbox journal")
    def notice_delivered(self, notice_id: int) -> None:
        """Forget a delivered notice."""
        self._conn.execute("DELETE FROM notices WHERE id = ?", (notice_id,))

    # -- helpers ---------------------------------------------------------------------------------

    def _expect(self, item_id: int, expected: set[ItemState]) -> None:
        item = self.item(item_id)
        if item.state not in expected:
            wanted = ", ".join(sorted(expected))
            raise UsageError(f"outbox item {item_id} is {item.state}, not {wanted}")

    def _set(self, item_id: int, state: ItemState, at: datetime, reason: str | None = None) -> None:
        self._conn.execute(
            "UPDATE items SET state = ?, reason = coalesce(?, reason), updated = ? WHERE id = ?",
            (str(state), reason, _ts(at), item_id),
        )

    def _copy_state(self, item_id: int, index: int, state: CopyState, reply: str | None) -> None:
        self._conn.execute(
            "UPDATE copies SET state = ?, reply = ? WHERE item_id = ? AND idx = ?",
            (str(state), reply, item_id, index),
        )

    def _queue_notice(self, item_id: int, notice: tuple[str, str], at: datetime) -> None:
        account = str(self._rows("SELECT account FROM items WHERE id = ?", (item_id,))[0][0])
        self._conn.execute(
            "INSERT INTO notices (item_id, account, subject, text, created) VALUES (?, ?, ?, ?, ?)",
            (item_id, account, notice[0], notice[1], _ts(at)),
        )

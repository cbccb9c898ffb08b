"""The outbox journal: what happened to every draft, one step per transaction.

Sending cannot be undone, so each step of the outbox pipeline is recorded here before and after
it is taken, and a crash at any instant leaves a state the next start finishes:

``claimed`` (the draft was seen and is being planned) -> ``sealed`` (the sealed copies are kept
here) -> ``submitting`` (a copy is being handed to the SMTP server) -> ``submitted`` -> ``filed``
(the sealed copy is in Sent) -> ``done`` (the draft was removed).

Off the main line: ``uncertain`` (the process stopped, or the connection broke, while a copy was
being submitted: the server may have accepted it, so it is never resent unless the user asks with
``outbox retry``), ``held`` (waiting for the user: missing certificates, a refused submission) and
``failed`` (not the user's draft, or unreadable: moved aside).

Each sealed copy (the main message, one per Bcc recipient) has its own submission state, so a
retry resends only the copies not known to be accepted. Notices for the user are queued here in
the same transaction as the state change that causes them, so none is lost in a crash.

The journal is its own database file, ``outbox.db``, in the cache directory, encrypted with the
cache key (see :mod:`smime_companion.store.db`): a separate file because each file has one linear
migration list.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

import apsw

from smime_companion.errors import UsageError
from smime_companion.store import db

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
    FAILED = "failed"


# States in which the item still owns its draft: a draft with the same bytes in the outbox is this
# item, not a new message. Done, held and failed items have given their draft up (removed or moved
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


def _migration_1(conn: apsw.Connection) -> None:
    conn.execute(
        """
        CREATE TABLE items (
            id INTEGER PRIMARY KEY,
            account TEXT NOT NULL,
            digest TEXT NOT NULL,           -- SHA-256 of the draft's bytes
            ref TEXT,                       -- where the draft is now (source-specific)
            state TEXT NOT NULL,
            sender TEXT,
            subject TEXT,
            message_id TEXT,
            reason TEXT,                    -- the last problem, one line
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt INTEGER,           -- no submission before this time (backoff)
            sent_copy BLOB,                 -- the sealed message for the Sent folder
            held_draft BLOB,                -- split: the draft for those without certificate
            created INTEGER NOT NULL,
            updated INTEGER NOT NULL
        );
        CREATE INDEX items_by_digest ON items (account, digest);
        CREATE INDEX items_by_state ON items (state);
        CREATE TABLE copies (
            item_id INTEGER NOT NULL REFERENCES items (id) ON DELETE CASCADE,
            idx INTEGER NOT NULL,
            sender TEXT NOT NULL,
            recipients TEXT NOT NULL,       -- JSON list of envelope addresses
            message BLOB,                   -- emptied once the item is done
            state TEXT NOT NULL,
            reply TEXT,
            PRIMARY KEY (item_id, idx)
        );
        CREATE TABLE notices (
            id INTEGER PRIMARY KEY,
            item_id INTEGER REFERENCES items (id) ON DELETE SET NULL,
            account TEXT NOT NULL,
            subject TEXT NOT NULL,
            text TEXT NOT NULL,
            created INTEGER NOT NULL
        );
        """
    )


def _migration_2(conn: apsw.Connection) -> None:
    # When the server first deferred the current try (NULL: it has not), and whether the user was
    # told the message is late: what a mail server's delay warning and queue lifetime need.
    conn.execute(
        "ALTER TABLE items ADD COLUMN deferred_since INTEGER;"
        "ALTER TABLE items ADD COLUMN delay_noticed INTEGER NOT NULL DEFAULT 0;"
    )


def _migration_3(conn: apsw.Connection) -> None:
    # Drafts written in the reader (or by ``compose``): kept here, encrypted with the journal,
    # so a draft is never a plaintext file nor a message on the provider's server. ``place``:
    # 'saved' (the user is still writing it), 'outbox' (queued to send), 'held', 'rejected'
    # (moved aside by the pipeline, like an IMAP outbox's subfolders).
    conn.execute(
        """
        CREATE TABLE drafts (
            id INTEGER PRIMARY KEY,
            account TEXT NOT NULL,
            place TEXT NOT NULL,
            message BLOB NOT NULL,
            created INTEGER NOT NULL,
            updated INTEGER NOT NULL
        );
        CREATE INDEX drafts_by_place ON drafts (account, place);
        """
    )


MIGRATIONS: list[db.Migration] = [_migration_1, _migration_2, _migration_3]

# Where a draft of the ``drafts`` table is (see _migration_3).
DRAFT_SAVED = "saved"
DRAFT_PLACES = (DRAFT_SAVED, "outbox", "held", "rejected")


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
class StoredDraft:
    """A draft kept in the journal (see :meth:`Journal.save_draft`)."""

    id: int
    account: str
    place: str
    message: bytes
    created: datetime
    updated: datetime


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


def _draft(row: Any) -> StoredDraft:
    created, updated = _dt(row[4]), _dt(row[5])
    assert created is not None and updated is not None  # NOT NULL columns
    return StoredDraft(int(row[0]), str(row[1]), str(row[2]), bytes(row[3]), created, updated)


class Journal(db.Handle):
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

    def _rows(self, sql: str, args: tuple[object, ...] = ()) -> list[Any]:
        return list(self._conn.execute(sql, args))

    # -- reading ---------------------------------------------------------------------------------

    @db.guarded("read the outbox journal")
    def item(self, item_id: int) -> OutboxItem:
        """The item ``item_id``. Raises :class:`UsageError` when there is none."""
        rows = self._rows(f"SELECT {_ITEM_COLUMNS} FROM items WHERE id = ?", (item_id,))
        if not rows:
            raise UsageError(f"no outbox item {item_id} (see 'outbox list')")
        return _item(rows[0])

    @db.guarded("read the outbox journal")
    def items(
        self, account: str | None = None, states: Sequence[ItemState] | None = None
    ) -> list[OutboxItem]:
        """Items, oldest first, of ``account`` (default: all) in ``states`` (default: all)."""
        sql = f"SELECT {_ITEM_COLUMNS} FROM items WHERE 1"
        args: list[object] = []
        if account is not None:
            sql += " AND account = ?"
            args.append(account)
        if states is not None:
            sql += f" AND state IN ({', '.join('?' * len(states))})"
            args.extend(str(s) for s in states)
        return [_item(r) for r in self._rows(sql + " ORDER BY id", tuple(args))]

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

    # -- drafts kept in the journal ------------------------------------------------------------

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
        sql = "SELECT id, account, place, message, created, updated FROM drafts WHERE 1"
        args: list[object] = []
        if account is not None:
            sql += " AND account = ?"
            args.append(account)
        if places is not None:
            sql += f" AND place IN ({', '.join('?' * len(places))})"
            args.extend(places)
        return [_draft(r) for r in self._rows(sql + " ORDER BY id", tuple(args))]

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
    def recover_interrupted(self, at: datetime) -> list[OutboxItem]:
        """After a stop: every copy still ``submitting`` becomes ``uncertain`` (the server may
        have accepted it) and its item too, with a notice queued. Returns those items.

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
                self._queue_notice(item.id, uncertain_notice(item), at)
        return [self.item(i.id) for i in stuck]

    @db.guarded("retry an outbox item")
    def retry(self, item_id: int, at: datetime) -> OutboxItem:
        """On the user's request: an ``uncertain`` or ``held`` item that has sealed copies (held
        after the server refused it, or deferred it past the time to give up) goes
        back to ``sealed``; its copies not known to be accepted are submitted again on the next
        pass (now, with no backoff), as a new try: the backoff, the delay notice and the time
        before giving up start again. Raises :class:`UsageError` for any other item."""
        with db.savepoint(self._conn):
            item = self.item(item_id)
            copies = self.copies(item_id)
            if item.state not in (ItemState.UNCERTAIN, ItemState.HELD) or not copies:
                if item.state == ItemState.HELD:
                    raise UsageError(
                        f"outbox item {item_id} was held before it was sealed (a recipient "
                        "lacks a certificate): once the certificate is known, move the draft "
                        "from the outbox's Held folder back into the outbox and it is sent"
                    )
                raise UsageError(
                    f"outbox item {item_id} is {item.state}: only an uncertain item, or one held "
                    "after the server refused or kept deferring it, can be retried"
                )
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


def uncertain_notice(item: OutboxItem) -> tuple[str, str]:
    """The notice for an item whose submission may or may not have gone through."""
    subject = f"S/MIME outbox: message {item.id} may not have been sent"
    text = (
        f"Your message {_title(item)} was being submitted when the connection or the "
        "companion stopped. The server may or may not have accepted it, so it was NOT sent "
        "again on its own (that could deliver it twice).\n\n"
        "If the recipients did not get it, send it again with:\n\n"
        f"    smime-companion outbox retry {item.id}\n"
    )
    return subject, text


def _title(item: OutboxItem) -> str:
    subject = f'"{item.subject}"' if item.subject else "(no subject)"
    return f"{subject} {item.message_id or ''}".strip()

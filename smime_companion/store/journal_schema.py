"""The outbox journal's tables (``outbox.db``) and their migrations, oldest first.

:class:`~smime_companion.store.journal.Journal` opens the file with :data:`MIGRATIONS`; the
journal's own module says what the tables mean. Never edit a migration that has shipped: add one.
"""

from __future__ import annotations

import apsw

from smime_companion.store import db


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


def _migration_4(conn: apsw.Connection) -> None:
    # One word per outcome: a draft moved aside unsent (not the user's, unreadable) is
    # ``rejected``, as the outbox folder it goes to is called; it used to be ``failed``.
    conn.execute("UPDATE items SET state = 'rejected' WHERE state = 'failed'")


MIGRATIONS: list[db.Migration] = [_migration_1, _migration_2, _migration_3, _migration_4]

"""The message cache's schema: its migrations (``PRAGMA user_version`` counts them, see
:mod:`smime_companion.store.db`), the text index row of a message, and the newest-first sort key.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import apsw

from smime_companion.core.normalise import search_form
from smime_companion.store import db

if TYPE_CHECKING:
    from smime_companion.core.text import Attachment


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


def insert_attachments(
    conn: apsw.Connection, message_id: int, attachments: Iterable[Attachment]
) -> None:
    """Add the attachment rows of a message (its earlier ones deleted first by the caller)."""
    conn.executemany(
        "INSERT INTO attachments (message, part, filename, mime_type, size, sha256, inline) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        [
            (message_id, a.part, a.filename, a.mime_type, a.size, a.sha256, int(a.inline))
            for a in attachments
        ],
    )


def index_text(
    conn: apsw.Connection,
    key: int,
    sender: str,
    recipients: str,
    subject: str,
    body: str,
    filenames: Iterable[str],
) -> None:
    """Add the text index entry of the message whose sort key is ``key`` (its rowid is
    :func:`text_rowid` of it), every column in its
    :func:`~smime_companion.core.normalise.search_form` (the query side uses the same); ``body``
    is in that form already (:func:`~.cache_entry.derive_entry` makes it in a worker process)."""
    conn.execute(
        "INSERT INTO message_text (rowid, sender, recipients, subject, body, attachments) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (
            text_rowid(key),
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
    from the decrypted content kept in the cache, as :func:`~.cache_entry.derive_entry` takes it."""
    if conn.execute("SELECT count(*) FROM messages").fetchall() == [(0,)]:
        return  # a new cache: nothing to re-index (and no page written for nothing)
    # Imported here: text extraction loads the MIME engine, which opening a cache for a search
    # does not need once this migration has run.
    from smime_companion.core.entry_derivation import indexed_text

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
        readable = content if isinstance(content, bytes) else None
        body = indexed_text(readable, decryption, error).body
        filenames = [
            str(r[0])
            for r in conn.execute(
                "SELECT filename FROM attachments WHERE message = ? ORDER BY part", (message_id,)
            )
        ]
        recipients = " ".join(str(x) for x in (to, cc) if x)
        index_text(conn, int(key), str(sender), recipients, str(subject), body, filenames)


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
    # Raw messages and decrypted contents compressed (issue 19, store.compression): a row's
    # ``compressed`` says its ``raw`` and ``content`` are Zstandard frames, and ``raw_size`` is
    # the raw message's own size (larger:/smaller:). Rows of an older cache keep 0 and NULL here
    # and are rewritten afterwards in small transactions of their own (Cache.compress_pending),
    # so an interrupted upgrade loses nothing and resumes where it stopped; the partial index
    # finds the rows left without reading any other. Every row is compressed before a cache
    # is used, so raw_size is never NULL where a query reads it.
    conn.execute(
        """
        ALTER TABLE messages ADD COLUMN compressed INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE messages ADD COLUMN raw_size INTEGER;
        -- The verdict filters newest first without reading each row: a row's verdict columns
        -- sit after its raw message, in overflow pages, so a scan for a rare verdict read the
        -- whole cache (is:encrypted with none: seconds at 100,000 messages).
        CREATE INDEX messages_encrypted ON messages (sort_key) WHERE decryption != 'none';
        CREATE INDEX messages_signed ON messages (sort_key) WHERE signature != 'none';
        CREATE INDEX messages_by_signature ON messages (signature, sort_key);
        CREATE INDEX messages_by_decryption ON messages (decryption, sort_key);
        CREATE INDEX messages_to_compress ON messages (id) WHERE compressed = 0;
        """
    )


def _migration_5(conn: apsw.Connection) -> None:
    # The folder's message count at the last complete pass (FolderState.messages): without
    # QRESYNC, the next pass sees expunges from the count alone. Added only if missing, so that
    # a database set back to an earlier version (as a test of re-indexing does) migrates again.
    columns = {str(row[1]) for row in conn.execute("PRAGMA table_info(folders)")}
    if "messages" not in columns:
        conn.execute("ALTER TABLE folders ADD COLUMN messages INTEGER")


# The text index's settings since migration 6: the prefix indexes answer ``abc*`` from a doclist
# of their own, walked newest first and stopped at the limit, where FTS5 without them merges the
# doclists of every word with that prefix in full (a quarter of a second at 100,000 messages for
# three letters, a second for two). Prefixes of 2, 3 and 4 characters: what people type before
# a star; a longer prefix matches few words, so merging them stays cheap.
TEXT_INDEX = """
    CREATE VIRTUAL TABLE message_text USING fts5 (
        sender, recipients, subject, body, attachments,
        content = '', contentless_delete = 1, prefix = '2 3 4',
        tokenize = 'unicode61 remove_diacritics 2'
    )
"""


def text_rowid(key: int) -> int:
    """The text index rowid of the message whose sort key is ``key``: its negation (since
    migration 6), so that newest first is the index's ascending order. FTS5 walks a doclist
    forward faster than backward (it reads a page's rowids forward either way, and a backward
    walk first collects them): 1.1-2x for the same queries at 300,000 messages."""
    return -key


def _migration_6(conn: apsw.Connection) -> None:
    # The text index rebuilt with prefix indexes and negated rowids (TEXT_INDEX, text_rowid;
    # issue 19). Its words come again from each message's decrypted content, which is far too
    # slow for one transaction at a million messages: this migration only empties the index and
    # lists every message in text_pending; Cache.open then indexes them in small transactions of
    # their own (Cache.reindex_pending) before the cache is used, so an interrupted upgrade loses
    # nothing and resumes where it stopped, and no search ever runs on a half-built index.
    conn.execute(
        f"""
        DROP TABLE message_text;
        {TEXT_INDEX};
        CREATE TABLE text_pending (message INTEGER PRIMARY KEY);
        INSERT INTO text_pending (message) SELECT id FROM messages;
        """
    )


def _migration_7(conn: apsw.Connection) -> None:
    # Outlook's winmail.dat is shown as the body and files inside it (core.tnef), a
    # text/enriched body as text, an appledouble file without its resource fork, and the older
    # protected-headers scheme's Legacy Display part (text/rfc822-headers) not at all: a message
    # cached with one of them listed it as an attachment, under part numbers the reader no
    # longer uses. Such messages are listed for re-indexing (Cache.reindex_pending), which
    # derives their text and attachments again from the decrypted content.
    conn.execute(
        """
        INSERT OR IGNORE INTO text_pending (message)
        SELECT DISTINCT message FROM attachments
        WHERE lower(mime_type) IN ('application/ms-tnef', 'application/vnd.ms-tnef',
                                   'text/enriched', 'text/richtext', 'application/applefile',
                                   'text/rfc822-headers')
           OR lower(filename) = 'winmail.dat'
        """
    )


def _migration_8(conn: apsw.Connection) -> None:
    # The first words of each message's text, for its row in the reader's list
    # (core.text.preview). NULL: not derived yet. A cache from before keeps NULL until a list
    # shows the message (Cache.fill_previews derives the previews of the rows shown and stores
    # them) or `cache rebuild` runs: deriving a million of them here would hold up the first
    # open after the upgrade for minutes, for text only a list page needs. Added only if
    # missing, as in migration 5.
    columns = {str(row[1]) for row in conn.execute("PRAGMA table_info(messages)")}
    if "preview" not in columns:
        conn.execute("ALTER TABLE messages ADD COLUMN preview TEXT")


def _migration_9(conn: apsw.Connection) -> None:
    # A signed or encrypted message forwarded inline is now one attachment that opens with its
    # own verdict (core.text), where its parts were shown in place: a message cached with one
    # lists its smime.p7s or .p7m among its attachments, under part numbers the reader no
    # longer uses. Those messages are derived again (Cache.reindex_pending), as in migration 7.
    conn.execute(
        """
        INSERT OR IGNORE INTO text_pending (message)
        SELECT DISTINCT message FROM attachments
        WHERE lower(mime_type) IN ('application/pkcs7-signature', 'application/x-pkcs7-signature',
                                   'application/pkcs7-mime', 'application/x-pkcs7-mime')
           OR lower(filename) IN ('smime.p7s', 'smime.p7m')
        """
    )


def _migration_10(conn: apsw.Connection) -> None:
    # The field filters of the search language without an index of their own read every row,
    # and a row's columns after its raw message lie in overflow pages: `id:`, `signer:`,
    # `scan:`, `is:flagged`, `is:answered` and `account:` read the whole cache when few messages
    # match (100 to 160 ms at 20,000 messages of the search bench, seconds at a million). Each
    # gets an index in the query's own words, newest first, as migration 4 gave the verdicts.
    # Building them reads every row once per index: minutes at a million messages, once.
    conn.execute(
        """
        CREATE INDEX IF NOT EXISTS messages_by_message_id ON messages (message_id, sort_key);
        CREATE INDEX IF NOT EXISTS messages_by_signer ON messages (lower(signer), sort_key);
        CREATE INDEX IF NOT EXISTS messages_by_scan ON messages (scan, sort_key);
        CREATE INDEX IF NOT EXISTS messages_by_account ON messages (account, sort_key);
        CREATE INDEX IF NOT EXISTS messages_flagged ON messages (sort_key)
            WHERE instr(flags, ' \\Flagged ') > 0;
        CREATE INDEX IF NOT EXISTS messages_answered ON messages (sort_key)
            WHERE instr(flags, ' \\Answered ') > 0;
        """
    )


def _migration_11(conn: apsw.Connection) -> None:
    # A BinHex attachment (old Macintosh mail, core.binhex) is now the file it holds, under the
    # name it gives: a message cached with one listed the encoded .hqx text. A bounce's delivery
    # status, a read receipt's disposition and a returned header section are now shown as text:
    # a message cached with one listed it as a nameless attachment. Those messages are derived
    # again (Cache.reindex_pending), as in migration 7. (A BinHex block inside a text body is
    # not listed as an attachment, so its message waits for `cache rebuild`, as uuencoded
    # blocks did.)
    conn.execute(
        """
        INSERT OR IGNORE INTO text_pending (message)
        SELECT DISTINCT message FROM attachments
        WHERE lower(mime_type) IN ('application/mac-binhex40', 'application/mac-binhex',
                                   'application/x-mac-binhex40', 'application/x-binhex40',
                                   'application/binhex', 'application/binhex4')
           OR lower(filename) LIKE '%.hqx'
           OR (lower(mime_type) IN ('message/delivery-status', 'message/disposition-notification',
                                    'message/feedback-report', 'text/rfc822-headers',
                                    'message/global-delivery-status',
                                    'message/global-disposition-notification',
                                    'message/global-headers')
               AND coalesce(filename, '') = '')
        """
    )


def _migration_12(conn: apsw.Connection) -> None:
    # The other text forms of a multipart/alternative (Gmail's AMP text/x-amp-html, Apple's
    # text/watch-html, AOL's text/x-aol...) are no longer listed as nameless attachments beside
    # the plain and HTML forms; a file name given only in Content-Type's name parameter is
    # decoded (encoded words: "=?UTF-8?B?...?=" was shown as it came), and a name is shown
    # without the folders before it; a multipart without a part delimited by its boundary is
    # shown as the text it holds, not listed as a nameless multipart attachment. Messages cached
    # with a nameless text attachment other than plain text, HTML or a calendar, with a name
    # holding an encoded word or a folder, with a multipart attachment, or with a nameless
    # message/rfc822-headers (a bounce's returned header, shown as text now), are derived again
    # (Cache.reindex_pending), as in migration 11; those that were no such case come out as
    # they were.
    conn.execute(
        """
        INSERT OR IGNORE INTO text_pending (message)
        SELECT DISTINCT message FROM attachments
        WHERE (lower(mime_type) LIKE 'text/%'
               AND lower(mime_type) NOT IN ('text/plain', 'text/html')
               AND instr(lower(mime_type), 'calendar') = 0
               AND coalesce(filename, '') = '')
           OR instr(filename, '=?') > 0
           OR instr(filename, '/') > 0
           OR instr(filename, '\\') > 0
           OR lower(mime_type) LIKE 'multipart/%'
           OR (lower(mime_type) = 'message/rfc822-headers' AND coalesce(filename, '') = '')
        """
    )


def _migration_13(conn: apsw.Connection) -> None:
    # A picture an HTML body names by its Content-ID (the logo in every Outlook signature) is
    # part of the text, not a file sent to be saved: marked inline, it no longer puts a paper
    # clip on its message's row nor matches has:attachment. Messages cached with an attached
    # picture are derived again (Cache.reindex_pending) to learn which of theirs are inline;
    # only that flag changes for them (their scan verdicts stay). Like every migration it may
    # run again on a database set back to an earlier version, which has the column already.
    columns = [str(row[1]) for row in conn.execute("PRAGMA table_info(attachments)")]
    if "inline" not in columns:
        conn.execute("ALTER TABLE attachments ADD COLUMN inline INTEGER NOT NULL DEFAULT 0")
    conn.execute(
        """
        INSERT OR IGNORE INTO text_pending (message)
        SELECT DISTINCT message FROM attachments WHERE lower(mime_type) LIKE 'image/%';
        """
    )


MIGRATIONS: list[db.Migration] = [
    _migration_1,
    _migration_2,
    _migration_3,
    _migration_4,
    _migration_5,
    _migration_6,
    _migration_7,
    _migration_8,
    _migration_9,
    _migration_10,
    _migration_11,
    _migration_12,
    _migration_13,
]

# Server-side "not seen", exactly as the partial index messages_unseen is declared.
NOT_SEEN = "instr(m.flags, ' \\Seen ') = 0"

SORT_SHIFT = 24
SORT_ID_MASK = (1 << SORT_SHIFT) - 1
_SORT_DATE_LIMIT = 2**38  # seconds either side of 1970; keeps sort keys inside 64 bits


def sort_key(date_epoch: int, message_id: int) -> int:
    """The newest-first ordering key of a message dated ``date_epoch`` (see the schema)."""
    clamped = max(-_SORT_DATE_LIMIT, min(_SORT_DATE_LIMIT - 1, date_epoch))
    return (clamped << SORT_SHIFT) + (message_id & SORT_ID_MASK)

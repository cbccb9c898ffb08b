"""The text index since migration 6 (issue 19): prefix indexes and negated rowids, so that
``abc*`` and newest-first walks stay fast at a million messages. Every search answers exactly as
before (same messages, same order), and an older cache is re-indexed when opened, safely when
interrupted."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any
from unittest import mock

import apsw
import pytest

from smime_companion.errors import CacheError
from smime_companion.store import Cache, db
from smime_companion.store import cache as cache_module
from smime_companion.store.cache_schema import MIGRATIONS
from smime_companion.testing.pki import TestPki
from tests.test_cache import KEY, mail, opener, store

QUERIES = (
    "zebra", "zeb*", "ze*", "zebr*", "z*", "budg*", '"zebra budget"', "from:alice",
    "to:bob zebra", "subject:numbers", "attachment:report.pdf", "secret OR budget",
    "zebra NOT secret", "date:2025-03-01..2025-09-01 zebra", "date:..2025-06-01", "",
    "会議", "strasse", "is:encrypted zebra", "-zebra",
)  # fmt: skip
DATES = (
    "Mon, 06 Jan 2025 09:00:00 +0000", "Sat, 01 Mar 2025 00:00:00 +0000",
    "Sun, 01 Jun 2025 12:00:00 +0000", "Mon, 01 Sep 2025 00:00:00 +0000",
    "Wed, 25 Nov 2026 09:00:00 +0000",
)  # fmt: skip
REPORT = (
    '--b0\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; '
    'filename="report.pdf"\r\n\r\n%PDF-1.4\r\n'
)  # fmt: skip


def _fill(cache: Cache, pki: TestPki, now: dt.datetime) -> None:
    """Messages of every kind over five dates, two on the same date (their order is the id's)."""
    bodies = ("The zebra budget is attached.", "A secret zebra.", "Zebras and budgets.",
              "Das Treffen in der Schloßstraße.", "会議は明日です。", "zebra zebra")  # fmt: skip
    kinds = ("plain", "signed", "signed+encrypted", "encrypted")
    uid = 0
    for d, date in enumerate(DATES):
        for b, body in enumerate(bodies):
            uid += 1
            raw = mail(pki, kind=kinds[(d + b) % 4], subject=f"Numbers {d} {b}",
                       body=body + "\r\n", date=date, extra_parts=REPORT if b == 2 else "",
                       sender=("alice", "bob")[b % 2], to=("bob", "alice")[b % 2])  # fmt: skip
            store(cache, raw, opener(pki, ("alice", "bob")), now, uid=uid)


def _answers(cache: Cache, now: dt.datetime) -> dict[str, list[int]]:
    return {q: [m.id for m in cache.search(q, now=now)] for q in QUERIES} | {
        f"{q} (page 2)": [m.id for m in cache.search(q, now=now, limit=3, offset=3)]
        for q in ("zebra", "zeb*", "")
    }


def _make_old(path: Path) -> None:
    """Turn the cache at ``path`` back into one of schema version 4: the text index as
    migration 1 made it (no prefix index), and left empty, so only a re-index can answer."""
    conn = db._open(path / db.DB_FILENAME, KEY, None)  # as it is, without migrating
    with conn:
        conn.execute(
            "DROP TABLE text_pending; DROP TABLE message_text; "
            "CREATE VIRTUAL TABLE message_text USING fts5 (sender, recipients, subject, body, "
            "attachments, content = '', contentless_delete = 1, "
            "tokenize = 'unicode61 remove_diacritics 2'); PRAGMA user_version = 4"
        )
    conn.close()


@pytest.fixture
def old_cache(pki: TestPki, now: dt.datetime, tmp_path: Path) -> tuple[Path, dict[str, list[int]]]:
    """A filled cache turned back into schema version 4, and what it answered before."""
    directory = tmp_path / "data"
    with Cache.open(directory, KEY) as cache:
        _fill(cache, pki, now)
        before = _answers(cache, now)
    _make_old(directory)
    return directory, before


def test_the_answers_are_not_trivial(old_cache: tuple[Path, dict[str, list[int]]]) -> None:
    _, before = old_cache
    # Each query kind finds something and leaves something out (else "identical" proves little).
    for query in ("zebra", "zeb*", "ze*", "from:alice", "date:2025-03-01..2025-09-01 zebra"):
        assert 0 < len(before[query]) < len(before[""]), query
    assert before["zebra (page 2)"] == before["zebra"][3:6]


def test_an_older_cache_is_reindexed_when_opened_and_answers_as_before(
    old_cache: tuple[Path, dict[str, list[int]]], now: dt.datetime
) -> None:
    directory, before = old_cache
    with Cache.open(directory, KEY) as cache:
        assert _answers(cache, now) == before
        assert cache._conn.execute("SELECT count(*) FROM text_pending").fetchone() == (0,)
        schema = cache._conn.execute(
            "SELECT sql FROM sqlite_master WHERE name = 'message_text'"
        ).fetchall()
        assert "prefix = '2 3 4'" in str(schema[0][0])
        assert cache._conn.execute("PRAGMA user_version").fetchone() == (len(MIGRATIONS),)


def test_an_interrupted_reindex_loses_nothing_and_resumes(
    old_cache: tuple[Path, dict[str, list[int]]], now: dt.datetime
) -> None:
    directory, before = old_cache
    real = cache_module.index_text
    calls = {"n": 0}

    def failing(*args: Any, **kwargs: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 9:  # the first message of the third batch of 4
            raise KeyboardInterrupt
        real(*args, **kwargs)

    with (
        mock.patch("smime_companion.store.cache_upkeep.REINDEX_BATCH", 4),
        mock.patch("smime_companion.store.cache_upkeep.index_text", failing),
        pytest.raises(KeyboardInterrupt),
    ):
        Cache.open(directory, KEY)
    conn = db._open(directory / db.DB_FILENAME, KEY, None)
    # Two batches committed, the third rolled back whole: still listed, not half-indexed.
    assert conn.execute("SELECT count(*) FROM text_pending").fetchone() == (30 - 8,)
    conn.close()
    with Cache.open(directory, KEY) as cache:
        assert _answers(cache, now) == before


def test_a_failing_reindex_is_a_cache_error_and_a_later_open_finishes_it(
    old_cache: tuple[Path, dict[str, list[int]]], now: dt.datetime
) -> None:
    directory, before = old_cache
    with (
        mock.patch(
            "smime_companion.store.cache_upkeep.index_text",
            side_effect=apsw.FullError("database or disk is full"),
        ),
        pytest.raises(CacheError),
    ):
        Cache.open(directory, KEY)
    with Cache.open(directory, KEY) as cache:
        assert _answers(cache, now) == before


def test_messages_stored_deleted_and_rewritten_keep_the_index_exact(
    pki: TestPki, now: dt.datetime, tmp_path: Path
) -> None:
    with Cache.open(tmp_path / "data", KEY) as cache:
        _fill(cache, pki, now)
        first = cache.search("zebra", now=now)
        # Deleting a message removes its index entry (negated rowid): it is found no more.
        assert cache.forget_uids("work", "INBOX", 7, [first[0].uid]) == 1
        assert [m.id for m in cache.search("zebra", now=now)] == [m.id for m in first[1:]]
        # Storing the same location again rewrites its entry: the old words are gone.
        raw = mail(pki, subject="Replaced", body="Only okapis here.\r\n", date=DATES[-1])
        store(cache, raw, opener(pki), now, uid=first[1].uid)
        assert [m.id for m in cache.search("zebra", now=now)] == [m.id for m in first[2:]]
        assert [m.id for m in cache.search("okap*", now=now)] == [first[1].id]
        assert cache._conn.execute(
            "SELECT count(*) FROM messages m WHERE m.sort_key IN "
            "(SELECT -rowid FROM message_text WHERE message_text MATCH 'zebra')"
        ).fetchone() == (len(first) - 2,)

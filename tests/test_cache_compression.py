"""Raw messages and decrypted contents are stored compressed (issue 19, migration 4): byte-exact
round trips, the same search and show results, and an older cache upgraded in place, safely
when interrupted."""

from __future__ import annotations

import datetime as dt
import random
from pathlib import Path
from unittest import mock

import pytest

from smime_companion.errors import CacheError
from smime_companion.store import Cache, compression, db
from smime_companion.store.cache_schema import MIGRATIONS
from smime_companion.testing.pki import TestPki
from tests.test_cache import KEY, mail, opener, store

QUERIES = (
    "zebra", "from:alice", "is:encrypted", "subject:numbers", "", "secret OR budget",
    "larger:20K", "smaller:3K", "zebra larger:2K",
)  # fmt: skip


def _fill(cache: Cache, pki: TestPki, now: dt.datetime) -> dict[int, bytes]:
    """A plain, a signed, a signed+encrypted and an encrypted message, and one of random bytes
    (incompressible); returns their ids and raw bytes."""
    raws = [
        mail(pki, subject="Quarterly numbers", body="The zebra budget is attached.\r\n"),
        mail(pki, kind="signed", body="Signed zebra.\r\n" * 200),
        mail(pki, kind="signed+encrypted", body="A secret zebra.\r\n"),
        mail(pki, kind="encrypted", to="carol", body="For Carol only.\r\n"),
        b"Subject: noise\r\n\r\n" + random.Random(5).randbytes(40_000),
    ]
    return {store(cache, raw, opener(pki), now, uid=uid): raw for uid, raw in enumerate(raws, 1)}


def _results(cache: Cache, now: dt.datetime) -> dict[str, object]:
    ids = sorted(m.id for m in cache.search("", now=now))
    return {
        "searches": {q: [m.to_json() for m in cache.search(q, now=now)] for q in QUERIES},
        "raw": {i: cache.raw(i) for i in ids},
        "content": {i: cache.content(i) for i in ids},
        "reports": {i: cache.report(i) for i in ids},
        "attachments": {i: cache.attachments(i) for i in ids},
    }


def _make_old(path: Path) -> None:
    """Turn the cache at ``path`` back into one of schema version 3, as earlier versions wrote
    it: raw and content uncompressed, no ``compressed`` column."""
    conn = db.connect(path / db.DB_FILENAME, KEY, MIGRATIONS)
    with conn:
        for message_id, raw, content in conn.execute(
            "SELECT id, raw, content FROM messages"
        ).fetchall():
            conn.execute(
                "UPDATE messages SET raw = ?, content = ? WHERE id = ?",
                (compression.decompress(raw),
                 compression.decompress(content) if content is not None else None, message_id),
            )  # fmt: skip
        conn.execute(
            "DROP INDEX messages_to_compress; DROP INDEX messages_encrypted; "
            "DROP INDEX messages_signed; DROP INDEX messages_by_signature; "
            "DROP INDEX messages_by_decryption"
        )
        conn.execute("ALTER TABLE messages DROP COLUMN compressed")
        conn.execute("ALTER TABLE messages DROP COLUMN raw_size")
        conn.execute("DROP TABLE text_pending")  # migration 6's
        conn.execute("PRAGMA user_version = 3")
    conn.close()


def _old_cache(path: Path, pki: TestPki, now: dt.datetime) -> dict[str, object]:
    """A filled cache at ``path`` turned back into schema version 3; what it answered before."""
    with Cache.open(path, KEY) as cache:
        _fill(cache, pki, now)
        before = _results(cache, now)
    _make_old(path)
    return before


def test_raw_messages_round_trip_byte_exact_and_are_stored_compressed(
    tmp_path: Path, pki: TestPki, now: dt.datetime
) -> None:
    with Cache.open(tmp_path / "data", KEY) as cache:
        raws = _fill(cache, pki, now)
        for message_id, raw in raws.items():
            assert cache.raw(message_id) == raw
        stored = dict(cache._conn.execute("SELECT id, length(raw) FROM messages").fetchall())
    plain = next(i for i, r in raws.items() if b"Quarterly" in r)
    signed = max(raws, key=lambda i: len(raws[i]) if b"Signed zebra" in raws[i] else 0)
    assert stored[plain] < len(raws[plain])
    assert stored[signed] < len(raws[signed]) / 2


def test_an_old_cache_is_compressed_on_open_and_answers_as_before(
    tmp_path: Path, pki: TestPki, now: dt.datetime
) -> None:
    before = _old_cache(tmp_path / "data", pki, now)

    with Cache.open(tmp_path / "data", KEY) as cache:
        assert cache._conn.execute("PRAGMA user_version").fetchall() == [(len(MIGRATIONS),)]
        assert cache._conn.execute(
            "SELECT count(*) FROM messages WHERE compressed = 0"
        ).fetchall() == [(0,)]
        assert _results(cache, now) == before


def test_an_interrupted_upgrade_loses_nothing_and_resumes(
    tmp_path: Path, pki: TestPki, now: dt.datetime
) -> None:
    before = _old_cache(tmp_path / "data", pki, now)

    calls = 0
    real = compression.compress

    def failing(data: bytes) -> bytes:
        nonlocal calls
        calls += 1
        if calls > 3:  # a crash in the middle of the upgrade, after some rows
            raise CacheError("injected: the process stopped here")
        return real(data)

    with mock.patch("smime_companion.store.cache_upkeep.compress", failing):
        with mock.patch("smime_companion.store.cache_upkeep.COMPRESS_BATCH", 1):
            with pytest.raises(CacheError, match="injected"):
                Cache.open(tmp_path / "data", KEY)
    conn = db.connect(tmp_path / "data" / db.DB_FILENAME, KEY, MIGRATIONS)
    done = dict(conn.execute("SELECT compressed, count(*) FROM messages GROUP BY 1").fetchall())
    conn.close()
    assert done[1] >= 1 and done[0] >= 1  # some rows committed, the rest left for next time
    with Cache.open(tmp_path / "data", KEY) as cache:
        assert _results(cache, now) == before


def test_a_damaged_stored_message_is_an_error_not_a_guess(
    tmp_path: Path, pki: TestPki, now: dt.datetime
) -> None:
    with Cache.open(tmp_path / "data", KEY) as cache:
        message_id = next(iter(_fill(cache, pki, now)))
        cache._conn.execute("UPDATE messages SET raw = x'28b52ffd00' WHERE id = ?", (message_id,))
        with pytest.raises(CacheError, match="damaged"):
            cache.raw(message_id)

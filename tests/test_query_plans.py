"""The query plans of the search (issue 19): each query type is driven by the index made for it,
newest first, and never sorts or scans the whole cache. A specification of intent read off
SQLite's ``EXPLAIN QUERY PLAN``: at a million messages a plan that sorts every hit, or reads
every row, is what turns milliseconds into seconds."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from smime_companion.store import Cache
from smime_companion.store.cache_reading import _SUMMARY_COLUMNS
from smime_companion.testing.pki import TestPki
from tests.test_cache import KEY, mail, opener, store


@pytest.fixture(scope="module")
def cache(pki: TestPki, pki_now: dt.datetime, tmp_path_factory: pytest.TempPathFactory):
    with Cache.open(tmp_path_factory.mktemp("plans") / "data", KEY) as opened:
        for uid in range(1, 4):
            store(opened, mail(pki, kind="signed", body=f"zebra {uid}\r\n"), opener(pki),
                  pki_now, uid=uid)  # fmt: skip
        yield opened


def plan(cache: Cache, query: str, now: dt.datetime) -> list[str]:
    sql, params = cache._select(_SUMMARY_COLUMNS, query, now)
    rows = cache._conn.execute(f"EXPLAIN QUERY PLAN {sql} LIMIT 50", params).fetchall()
    return [str(r[3]) for r in rows]


# FTS5's xBestIndex flags in the plan's index number (fts5_main.c): ORDER BY rowid is consumed
# by the index, and whether its walk is backward (FTS5 reads each page forward either way, so a
# backward walk costs more: the text index's rowids are negated sort keys to avoid it).
_FTS5_ORDER_BY_ROWID = 0x40
_FTS5_ORDER_DESCENDING = 0x80


def _fts_index_number(step: str) -> int:
    return int(step.split("INDEX ", 1)[1].split(":", 1)[0])


def _never_sorts_or_scans_the_table(steps: list[str]) -> None:
    assert not any("TEMP B-TREE" in s for s in steps), steps
    assert not any(s.strip() in ("SCAN m", "SCAN messages") for s in steps), steps


@pytest.mark.parametrize(
    "query",
    ["zebra", '"zebra budget"', "from:alice@example.org zebra", "from:alice", "subject:numbers",
     "zebra OR budget", "zebra NOT budget", "zeb*", "to:bob zebra", "attachment:report.pdf"],
)  # fmt: skip
def test_text_queries_walk_the_text_index_newest_first(cache: Cache, query: str) -> None:
    steps = plan(cache, query, dt.datetime.now(dt.UTC))
    # The FTS5 table answers the MATCH and yields rowids (the negated sort keys) newest first,
    # walking forward; each hit is one lookup of its row by that key.
    assert steps[0].startswith("SCAN f VIRTUAL TABLE INDEX") and ":M" in steps[0], steps
    assert _fts_index_number(steps[0]) & _FTS5_ORDER_BY_ROWID, steps
    assert not _fts_index_number(steps[0]) & _FTS5_ORDER_DESCENDING, steps
    assert "SEARCH m USING INDEX messages_by_sort_key (sort_key=?)" in steps, steps
    _never_sorts_or_scans_the_table(steps)


def test_a_date_range_with_words_bounds_the_text_index_walk(cache: Cache) -> None:
    steps = plan(cache, "date:2025-01-01..2025-02-01 zebra", dt.datetime.now(dt.UTC))
    # '<' and '>' in the index string: the range is handed to FTS5 as rowid bounds.
    assert steps[0].startswith("SCAN f VIRTUAL TABLE INDEX") and "<>" in steps[0], steps
    assert not _fts_index_number(steps[0]) & _FTS5_ORDER_DESCENDING, steps
    _never_sorts_or_scans_the_table(steps)


def test_a_date_range_alone_is_a_range_of_the_sort_key_index(cache: Cache) -> None:
    steps = plan(cache, "date:2025-01-01..2025-02-01", dt.datetime.now(dt.UTC))
    assert "SEARCH m USING INDEX messages_by_sort_key (sort_key>? AND sort_key<?)" in steps
    _never_sorts_or_scans_the_table(steps)


def test_the_newest_fifty_walk_the_sort_key_index(cache: Cache) -> None:
    steps = plan(cache, "", dt.datetime.now(dt.UTC))
    assert "SCAN m USING INDEX messages_by_sort_key" in steps
    _never_sorts_or_scans_the_table(steps)


@pytest.mark.parametrize(
    ("query", "index"),
    [("is:encrypted", "messages_encrypted"), ("is:signed", "messages_signed"),
     ("sig:valid", "messages_by_signature (signature=?)"),
     ("dec:ok", "messages_by_decryption (decryption=?)"),
     ("id:x@example.org", "messages_by_message_id (message_id=?)"),
     ("signer:alice@example.org", "messages_by_signer (<expr>=?)"),
     ("scan:clean", "messages_by_scan (scan=?)"), ("scan:pending", "messages_by_scan (scan=?)"),
     ("is:flagged", "messages_flagged"), ("is:answered", "messages_answered"),
     ("account:work", "messages_by_account (account=?)")],
)  # fmt: skip
def test_filters_use_their_indexes_not_every_row(cache: Cache, query: str, index: str) -> None:
    # Their columns lie after the raw message, in overflow pages: a scan reads the whole cache.
    steps = plan(cache, query, dt.datetime.now(dt.UTC))
    assert any(index in s for s in steps), steps
    _never_sorts_or_scans_the_table(steps)


def test_infected_is_a_range_of_the_scan_index(cache: Cache) -> None:
    steps = plan(cache, "scan:infected", dt.datetime.now(dt.UTC))
    assert any("messages_by_scan (scan>? AND scan<?)" in s for s in steps), steps


def test_filters_answer_as_a_scan_would(cache: Cache, now: dt.datetime) -> None:
    everything = cache.search("", now=now)
    first = everything[0]
    signer = next(m.signer for m in everything if m.signer)
    cache._conn.execute("UPDATE messages SET scan = 'infected:Eicar' WHERE id = ?", (first.id,))
    try:
        for query, keep in (
            ("is:signed", lambda m: m.signature != "none"),
            ("is:encrypted", lambda m: m.decryption != "none"),
            ("sig:valid", lambda m: m.signature == "valid"),
            (f"signer:{signer.upper()}", lambda m: (m.signer or "").lower() == signer.lower()),
            ("scan:infected", lambda m: m.id == first.id),
            ("account:" + first.account, lambda m: m.account == first.account),
        ):
            found = [m.id for m in cache.search(query, now=now)]
            assert found == [m.id for m in everything if keep(m)], query
    finally:
        cache._conn.execute("UPDATE messages SET scan = NULL WHERE id = ?", (first.id,))


def test_the_schema_of_a_new_cache_has_the_plans_indexes(tmp_path: Path) -> None:
    with Cache.open(tmp_path / "data", KEY) as fresh:
        names = {r[0] for r in fresh._conn.execute("SELECT name FROM sqlite_master")}
    assert {"messages_encrypted", "messages_signed", "messages_by_signature",
            "messages_by_decryption", "messages_by_sort_key", "messages_by_message_id",
            "messages_by_signer", "messages_by_scan", "messages_by_account",
            "messages_flagged", "messages_answered"} <= names  # fmt: skip

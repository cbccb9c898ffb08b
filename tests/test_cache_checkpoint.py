"""The daemon's cache copies its write-ahead log into the database from a thread of its own
(``store.db.Checkpointer``): the writing thread no longer does that copy, the log stays bounded,
every committed row stays readable, even when the writer is killed, and a failing checkpoint
never stops or blocks the writer."""

from __future__ import annotations

import logging
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import apsw
import pytest

from smime_companion.store import db

KEY = "checkpoint test key"
ROW = 40 * 1024  # about ten 4 KiB pages a row
ROWS_PER_COMMIT = 5
STEP, LIMIT = 50, 200  # pages; the daemon's are 5,000 and 25,000
FRAME = 4096 + 24  # a log frame: one page and its header


MIGRATIONS: list[db.Migration] = [lambda conn: conn.execute("CREATE TABLE t (n, data BLOB)")]


def _writer(path: Path) -> apsw.Connection:
    return db.connect(path, KEY, MIGRATIONS)


def _write(conn: apsw.Connection, commits: int, first: int = 0) -> None:
    for commit in range(first, first + commits):
        with conn:
            for _ in range(ROWS_PER_COMMIT):
                conn.execute("INSERT INTO t VALUES (?, ?)", (commit, os.urandom(ROW)))


def _wal(path: Path) -> int:
    wal = Path(f"{path}-wal")
    return wal.stat().st_size if wal.exists() else 0


class _FailingConnection:
    """Failure injection: a checkpoint connection whose every checkpoint fails with an I/O
    error (a disk that went away under the second connection only)."""

    def __init__(self) -> None:
        self.calls = 0

    def wal_checkpoint(self, **_: Any) -> tuple[int, int]:
        self.calls += 1
        raise apsw.IOError("disk I/O error")

    def close(self) -> None:
        pass


def test_the_log_is_copied_into_the_database_while_the_writer_writes(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    conn = _writer(path)
    checkpointer = db.Checkpointer(conn, path, KEY, step_pages=STEP, limit_pages=LIMIT)
    try:
        _write(conn, 100)  # about 20 MB
        # Still open, so nothing was copied at close: the thread did it as the rows came.
        assert path.stat().st_size > 15 * 1024 * 1024
        peak_frames = LIMIT + 2 * ROWS_PER_COMMIT * (ROW // 4096 + 2)
        assert _wal(path) <= peak_frames * FRAME
    finally:
        checkpointer.close()
        conn.close()
    reader = db.connect(path, KEY, MIGRATIONS)
    assert reader.execute("SELECT count(*), count(DISTINCT n) FROM t").fetchall() == [(500, 100)]
    reader.close()


def test_the_log_stays_bounded_however_long_the_writer_writes(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    conn = _writer(path)
    checkpointer = db.Checkpointer(conn, path, KEY, step_pages=STEP, limit_pages=LIMIT)
    peak = 0
    try:
        for round_ in range(10):
            _write(conn, 20, first=20 * round_)
            peak = max(peak, _wal(path))
    finally:
        checkpointer.close()
        conn.close()
    assert peak <= (LIMIT + 2 * ROWS_PER_COMMIT * (ROW // 4096 + 2)) * FRAME


def test_a_failing_checkpoint_is_logged_and_never_stops_or_blocks_the_writer(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "t.db"
    conn = _writer(path)
    checkpointer = db.Checkpointer(conn, path, KEY, step_pages=STEP, limit_pages=LIMIT)
    failing = _FailingConnection()
    checkpointer._conn.close()
    checkpointer._conn = failing  # type: ignore[assignment]
    done = threading.Event()

    def write() -> None:
        _write(conn, 60)  # past the limit: each commit waits for a (failing) pass
        done.set()

    caplog.set_level(logging.WARNING, logger="smime_companion.store.db")
    writer = threading.Thread(target=write)
    writer.start()
    writer.join(timeout=60)
    assert done.is_set(), "the writer hung on a failing checkpoint"
    assert failing.calls > 0
    failed = "cache checkpoint failed (the write-ahead log grows): disk I/O error"
    assert caplog.text.count(failed) == 1  # said once, not at each of the failing passes
    # Nothing was copied (the writer no longer checkpoints itself), and nothing was lost.
    assert path.stat().st_size < 1024 * 1024
    assert conn.execute("SELECT count(*) FROM t").fetchall() == [(300,)]
    # Closed, the checkpointer hands checkpoints back to the writer's own commits, which copy
    # the log once it passes db.AUTOCHECKPOINT_PAGES.
    checkpointer.close()
    _write(conn, 150, first=60)
    assert path.stat().st_size > 10 * 1024 * 1024
    conn.close()


def test_closing_releases_a_writer_waiting_for_a_pass(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    conn = _writer(path)
    checkpointer = db.Checkpointer(conn, path, KEY, step_pages=STEP, limit_pages=LIMIT)
    stuck = threading.Event()

    class _Stuck(_FailingConnection):
        def wal_checkpoint(self, **_: Any) -> tuple[int, int]:
            stuck.set()
            release.wait(timeout=30)
            return (0, 0)

    release = threading.Event()
    checkpointer._conn.close()
    checkpointer._conn = _Stuck()  # type: ignore[assignment]
    writer = threading.Thread(target=_write, args=(conn, 40))
    writer.start()
    assert stuck.wait(timeout=30)
    closer = threading.Thread(target=checkpointer.close)
    closer.start()
    release.set()  # the pass in flight ends; close stops the thread and frees the writer
    closer.join(timeout=30)
    writer.join(timeout=30)
    assert not writer.is_alive() and not closer.is_alive()
    assert conn.execute("SELECT count(*) FROM t").fetchall() == [(200,)]
    conn.close()


_KILLED_WRITER = """
import sys
from pathlib import Path
sys.path.insert(0, sys.argv[2])
from tests.test_cache_checkpoint import KEY, LIMIT, STEP, _write, _writer
from smime_companion.store import db
path = Path(sys.argv[1])
conn = _writer(path)
db.Checkpointer(conn, path, KEY, step_pages=STEP, limit_pages=LIMIT)
first = conn.execute("SELECT count(DISTINCT n) FROM t").fetchall()[0][0]
for commit in range(first, first + 10_000):
    _write(conn, 1, first=commit)
    print(commit + 1, flush=True)
"""


@pytest.mark.parametrize("seed", range(4))
def test_a_writer_killed_anywhere_keeps_every_commit_and_a_sound_database(
    tmp_path: Path, seed: int
) -> None:
    # SIGKILL lands at random moments, so also inside passes, the writer's wait at the limit
    # and the log's restart: SQLite must find every acknowledged commit and no damage.
    rng = random.Random(seed)
    path = tmp_path / "t.db"
    root = str(Path(__file__).resolve().parent.parent)
    acknowledged = 0
    for _ in range(3):
        child = subprocess.Popen(
            [sys.executable, "-c", _KILLED_WRITER, str(path), root],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdout is not None
        first = child.stdout.readline()  # it runs: the first commit is acknowledged
        assert first, "the writer did not start"
        acknowledged = int(first)
        time.sleep(rng.uniform(0.05, 0.6))
        child.kill()
        out, _ = child.communicate()
        acknowledged = max([acknowledged, *map(int, out.split())])
    reader = db.connect(path, KEY, MIGRATIONS)
    assert reader.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    ((distinct,),) = reader.execute("SELECT count(DISTINCT n) FROM t").fetchall()
    assert distinct >= acknowledged
    reader.close()

"""The cache on disk: encrypted (no SQLite header, no plaintext in any file, WAL included),
private file modes, wrong or missing keys, rekey, a plain database on request, a damaged file and
a full disk, each one clear line with nothing lost."""

from __future__ import annotations

import datetime as dt
import os
import stat
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from smime_companion.errors import CacheError
from smime_companion.store import Cache
from smime_companion.testing.pki import TestPki
from tests.test_cache import KEY, mail, opener, store

PLAINTEXT_MARKERS = (b"zebra", b"budget", b"Quarterly", b"alice@", b"SQLite format 3")


def _all_bytes(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in directory.iterdir() if p.is_file()}


def _fill(cache: Cache, pki: TestPki, now: dt.datetime) -> None:
    for uid, kind in enumerate(("plain", "signed", "encrypted", "signed+encrypted"), start=1):
        store(cache, mail(pki, kind=kind), opener(pki), now, uid=uid)


@pytest.mark.parametrize("background", [False, True], ids=["checkpoint-on-commit", "daemon"])
def test_no_file_of_the_data_directory_holds_the_header_or_any_plaintext(
    tmp_path: Path, pki: TestPki, now: dt.datetime, background: bool
) -> None:
    directory = tmp_path / "data"
    with Cache.open(directory, KEY, checkpoint_in_background=background) as cache:
        _fill(cache, pki, now)
        # Checked while open, so the write-ahead log still holds the recent pages.
        files = _all_bytes(directory)
        assert any(name.endswith("-wal") and data for name, data in files.items())
        for name, data in files.items():
            for marker in PLAINTEXT_MARKERS:
                assert marker not in data, f"{marker!r} found in {name}"
            assert mail(pki, kind="plain")[:64] not in data
    for name, data in _all_bytes(directory).items():
        for marker in PLAINTEXT_MARKERS:
            assert marker not in data, f"{marker!r} found in {name} after close"


def test_the_directory_is_0700_and_every_file_0600(tmp_path: Path, pki: TestPki, now) -> None:
    directory = tmp_path / "deep" / "data"
    with Cache.open(directory, KEY) as cache:
        _fill(cache, pki, now)
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
        for path in directory.iterdir():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name


def test_a_wrong_key_is_one_clear_line_and_changes_no_byte(tmp_path: Path, pki: TestPki, now):
    directory = tmp_path / "data"
    with Cache.open(directory, KEY) as cache:
        _fill(cache, pki, now)
    before = _all_bytes(directory)
    with pytest.raises(CacheError) as info:
        Cache.open(directory, "not the key")
    assert str(info.value) == "wrong cache key: the database could not be decrypted"
    assert _all_bytes(directory) == before
    with Cache.open(directory, KEY) as cache:
        assert cache.stats()["messages"] == 4


def test_a_missing_key_for_an_encrypted_cache_says_a_key_is_needed(tmp_path: Path) -> None:
    Cache.open(tmp_path, KEY).close()
    with pytest.raises(CacheError, match="a cache key is needed"):
        Cache.open(tmp_path, None)


def test_encrypt_cache_false_gives_a_plain_database_that_refuses_a_key(
    tmp_path: Path, pki: TestPki, now: dt.datetime
) -> None:
    with Cache.open(tmp_path, None) as cache:
        store(cache, mail(pki), opener(pki), now, uid=1)
        assert not cache.encrypted
    assert (tmp_path / "cache.db").read_bytes().startswith(b"SQLite format 3\x00")
    with pytest.raises(CacheError, match="not encrypted but a cache key was given"):
        Cache.open(tmp_path, KEY)
    with Cache.open(tmp_path, None) as cache, pytest.raises(CacheError, match="not encrypted"):
        cache.rekey("new")


def test_rekey_makes_the_old_key_wrong_and_the_new_one_right(
    tmp_path: Path, pki: TestPki, now: dt.datetime
) -> None:
    with Cache.open(tmp_path, KEY) as cache:
        _fill(cache, pki, now)
        cache.rekey("a brand new passphrase")
        assert cache.stats()["messages"] == 4  # still usable after the rekey
    with pytest.raises(CacheError, match="wrong cache key"):
        Cache.open(tmp_path, KEY)
    with Cache.open(tmp_path, "a brand new passphrase") as cache:
        assert len(cache.search("zebra", now=now)) == 4
        for name, data in _all_bytes(tmp_path).items():
            assert b"zebra" not in data and b"SQLite format 3" not in data, name


def test_keys_with_quotes_and_non_ascii_are_passed_verbatim(tmp_path: Path) -> None:
    tricky = "it's \"quoted\" -- ünïcödé'; DROP TABLE messages; --"
    Cache.open(tmp_path, tricky).close()
    Cache.open(tmp_path, tricky).close()
    with pytest.raises(CacheError, match="wrong cache key"):
        Cache.open(tmp_path, tricky[:-1])


def test_a_damaged_database_file_is_one_clear_line_and_not_made_worse(
    tmp_path: Path, pki: TestPki, now: dt.datetime
) -> None:
    with Cache.open(tmp_path, None) as cache:
        for uid in range(1, 30):
            store(cache, mail(pki, subject=f"number {uid}", body="x" * 3000), opener(pki), now,
                  uid=uid)  # fmt: skip
    path = tmp_path / "cache.db"
    data = bytearray(path.read_bytes())
    # Overwrite pages in the middle of the file (the message rows), keep the header page.
    data[8192 : len(data) - 4096] = os.urandom(len(data) - 4096 - 8192)
    path.write_bytes(bytes(data))
    with pytest.raises(CacheError) as info:
        with Cache.open(tmp_path, None) as cache:
            cache.search("number", now=now)
            for message in cache.search("", now=now):
                cache.raw(message.id)
    assert "damaged" in str(info.value)
    assert "\n" not in str(info.value)
    assert path.read_bytes() == bytes(data)


def _can_mount_tmpfs(where: Path) -> bool:
    where.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=640k,mode=0700", "tmpfs", str(where)],
        capture_output=True,
    )
    return proc.returncode == 0


def test_a_full_disk_is_one_clear_line_and_loses_nothing_already_cached(
    tmp_path: Path, pki: TestPki, now: dt.datetime
) -> None:
    mountpoint = tmp_path / f"tiny-{uuid.uuid4().hex[:8]}"
    if not _can_mount_tmpfs(mountpoint):
        pytest.skip("cannot mount a small tmpfs here (needs root and mount permission)")
    try:
        directory = mountpoint / "data"
        stored: dict[int, bytes] = {}
        error: CacheError | None = None
        with Cache.open(directory, KEY) as cache:
            for uid in range(1, 200):
                # Incompressible attachments: each message takes ~40 KB of the 640 KB disk.
                raw = mail(pki, subject=f"big {uid}", body=os.urandom(30_000).hex())
                try:
                    store(cache, raw, opener(pki), now, uid=uid)
                except CacheError as exc:
                    error = exc
                    break
                stored[uid] = raw
        assert error is not None, "the tiny disk never filled up"
        assert "disk full" in str(error) or "disk is full" in str(error)
        assert "\n" not in str(error)
        assert stored, "not even one message fitted"
        with Cache.open(directory, KEY) as cache:
            assert cache.uids("work", "INBOX", 7) == set(stored)
            for message in cache.search("", now=now):
                assert cache.raw(message.id) == stored[message.uid]
    finally:
        subprocess.run(["umount", str(mountpoint)], check=False)


def test_a_damaged_encrypted_database_is_one_clear_line(
    tmp_path: Path, pki: TestPki, now: dt.datetime
) -> None:
    with Cache.open(tmp_path, KEY) as cache:
        for uid in range(1, 30):
            store(cache, mail(pki, subject=f"number {uid}", body="y" * 3000), opener(pki), now,
                  uid=uid)  # fmt: skip
    path = tmp_path / "cache.db"
    data = bytearray(path.read_bytes())
    # Pages whose ciphertext no longer matches their authentication tags.
    data[8192 : len(data) - 4096] = os.urandom(len(data) - 4096 - 8192)
    path.write_bytes(bytes(data))
    with pytest.raises(CacheError) as info:
        with Cache.open(tmp_path, KEY) as cache:
            for message in cache.search("", now=now):
                cache.raw(message.id)
    assert "damaged" in str(info.value) and "\n" not in str(info.value)
    assert path.read_bytes() == bytes(data)


_OPEN_AT_ONCE = """
import os, sys, time
from pathlib import Path
from smime_companion.store import Cache
go = Path(sys.argv[2])
while not go.exists():
    time.sleep(0.0005)
with Cache.open(Path(sys.argv[1]), sys.argv[3]) as cache:
    cache.stats()
"""


@pytest.mark.parametrize("attempt", range(5))
def test_processes_creating_the_cache_at_once_all_open_it(tmp_path: Path, attempt: int) -> None:
    # The daemon's first start and a command typed meanwhile: each used to write the new
    # database's header with its own cipher salt, and the loser's pages never decrypted again.
    directory, go = tmp_path / "data", tmp_path / "go"
    root = str(Path(__file__).resolve().parent.parent)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _OPEN_AT_ONCE, str(directory), str(go), KEY],
            env={**os.environ, "PYTHONPATH": root},
            stderr=subprocess.PIPE,
        )
        for _ in range(4)
    ]
    time.sleep(0.5)  # all of them started and waiting
    go.touch()
    for proc in procs:
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err.decode()
    with Cache.open(directory, KEY) as cache:
        assert cache.stats()["messages"] == 0

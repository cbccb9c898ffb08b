"""A pass after an IDLE wake-up, a poll or a restart costs what changed, not the folder: UIDNEXT
and CONDSTORE/QRESYNC tell the sync what is new, expunged or reflagged, and no step reads every
cached UID (``Cache.uids`` from UID 1). Against real Dovecot with both hierarchy separators, and
one offering neither CONDSTORE nor QRESYNC, which must still sync correctly."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from smime_companion.imap.mailbox import ImapMailbox, connect
from smime_companion.store.cache import Cache
from smime_companion.sync.protocols import Changes
from smime_companion.testing.pki import TestPki
from tests.dovecot import (
    SEPARATORS,
    WITHOUT_CONDSTORE,
    Dovecot,
    plain_mail,
    running_dovecot,
    signed_mail,
)
from tests.test_sync_dovecot import Opener, cached, run_sync, spec

# Messages already in the folder before the pass under test: enough that reading them all
# would show in the calls recorded below.
BACKLOG = 12


@pytest.fixture(scope="module", params=SEPARATORS, ids=lambda sep: f"separator{sep}")
def server(request: pytest.FixtureRequest) -> Iterator[Dovecot]:
    yield from running_dovecot(separator=request.param)


@pytest.fixture(scope="module")
def plain_server() -> Iterator[Dovecot]:
    """Dovecot offering neither CONDSTORE nor QRESYNC."""
    yield from running_dovecot(capability=WITHOUT_CONDSTORE)


class Recorder:
    """Notes what a pass asked of the server and the cache: the UIDs whose bodies were fetched,
    the starts of ``UID SEARCH`` and of ``Cache.uids``, and whether every flag was fetched."""

    def __init__(self, box: ImapMailbox, cache: Cache, monkeypatch: pytest.MonkeyPatch) -> None:
        self.bodies: list[int] = []
        self.searches: list[int] = []
        self.cache_uid_starts: list[int] = []
        self.flag_fetches = 0
        self.changes: list[list[int] | None] = []
        real_bodies, real_search = box.bodies, box.search_uids
        real_flags, real_changes = box.flags, box.changes_since
        real_uids = cache.uids

        def bodies(uids: list[int], sizes: dict[int, int] | None = None) -> dict[int, bytes]:
            self.bodies.extend(uids)
            return real_bodies(uids, sizes)

        def search_uids(start: int = 1) -> list[int]:
            self.searches.append(start)
            return real_search(start)

        def flags(uids: list[int]) -> dict[int, tuple[str, ...]]:
            self.flag_fetches += 1
            return real_flags(uids)

        def changes_since(uids: list[int] | None, modseq: int, *, expected: int = 0) -> Changes:
            self.changes.append(None if uids is None else list(uids))
            return real_changes(uids, modseq, expected=expected)

        def uids(account: str, folder: str, uidvalidity: int, start: int = 1) -> set[int]:
            self.cache_uid_starts.append(start)
            return real_uids(account, folder, uidvalidity, start)

        monkeypatch.setattr(box, "bodies", bodies)
        monkeypatch.setattr(box, "search_uids", search_uids)
        monkeypatch.setattr(box, "flags", flags)
        monkeypatch.setattr(box, "changes_since", changes_since)
        monkeypatch.setattr(cache, "uids", uids)

    @property
    def read_the_whole_folder(self) -> bool:
        """True when the pass listed every UID of the server or of the cache, or fetched every
        message's flags."""
        return 1 in self.searches or 1 in self.cache_uid_starts or self.flag_fetches > 0


def filled(server: Dovecot, pki: TestPki, folder: str) -> list[int]:
    """``folder`` with BACKLOG signed messages and a plain one; their UIDs."""
    uids = [
        server.append("alice", signed_mail(pki, f"{folder}{i}"), folder) for i in range(BACKLOG)
    ]
    return [*uids, server.append("alice", plain_mail(f"{folder}-plain"), folder)]


def open_cache(path: Path) -> Cache:
    return Cache.open(path, None)


def test_a_pass_after_an_idle_wake_up_fetches_only_the_new_uid(
    server: Dovecot, tmp_path: Path, opener: Opener, pki: TestPki, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = "Woken"
    filled(server, pki, folder)
    box = connect(spec(server))
    try:
        with open_cache(tmp_path / "cache") as cache:
            run_sync(box, cache, folder, opener)
            box.idle_start()
            new_uid = server.append("alice", signed_mail(pki, "woken-new"), folder)
            assert box.idle_wait(10.0), "IDLE reported no change"
            box.idle_done()
            calls = Recorder(box, cache, monkeypatch)
            report = run_sync(box, cache, folder, opener)
            assert calls.bodies == [new_uid]
            assert not calls.read_the_whole_folder
            assert calls.changes == [None]  # one CHANGEDSINCE over the folder, not per UID
            assert (report.new, report.stored, report.expunged) == (1, 1, 0)
            assert "Test woken-new" in cached(cache, folder)
            assert len(cached(cache, folder)) == BACKLOG + 1
    finally:
        box.close()


def test_a_pass_on_the_watching_connection_does_not_select_the_folder_again(
    server: Dovecot, tmp_path: Path, opener: Opener, pki: TestPki, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The daemon lends a watcher's connection to the pass (``reuse_open``): no EXAMINE (on a
    huge Maildir the server opens the folder afresh for it, seconds); new mail, a flag change
    and an expunge made meanwhile are all seen; and the state it saves is never ahead of the
    server's, so the next ordinary pass finds nothing more to do (and reads no whole folder)."""
    folder = "Watching"
    uids = filled(server, pki, folder)
    box = connect(spec(server))
    examined: list[str] = []
    real_examine = box.examine
    monkeypatch.setattr(box, "examine", lambda f: examined.append(f) or real_examine(f))
    try:
        with open_cache(tmp_path / "cache") as cache:
            run_sync(box, cache, folder, opener)
            assert examined == [folder]
            box.idle_start()
            new_uid = server.append("alice", signed_mail(pki, "watching-new"), folder)
            server.set_flags("alice", [uids[3]], [b"\\Flagged"], folder)
            server.expunge("alice", [uids[0]], folder)
            assert box.idle_wait(10.0), "IDLE reported no change"
            box.idle_done()
            calls = Recorder(box, cache, monkeypatch)
            report = run_sync(box, cache, folder, opener, reuse_open=True)
            assert examined == [folder]  # not again
            assert calls.bodies == [new_uid] and not calls.read_the_whole_folder
            assert (report.new, report.stored, report.expunged) == (1, 1, 1)
            assert report.flags_updated == 1 and report.complete
            now = cached(cache, folder)
            assert "Test watching-new" in now and f"Test {folder}0" not in now
            assert "\\Flagged" in now[f"Test {folder}3"].flags
        with open_cache(tmp_path / "cache") as cache:
            other = connect(spec(server))
            try:
                calls = Recorder(other, cache, monkeypatch)
                report = run_sync(other, cache, folder, opener)
                # (Not "unchanged": the expunge raised the folder's HIGHESTMODSEQ past every
                # message's MODSEQ, which is all the pass above could see; saved lower, it is
                # asked again once, at the cost of one CHANGEDSINCE that answers nothing.)
                assert (report.new, report.expunged, report.flags_updated) == (0, 0, 0)
                assert not calls.read_the_whole_folder and calls.bodies == []
                assert run_sync(other, cache, folder, opener).unchanged
            finally:
                other.close()
    finally:
        box.close()


def test_reuse_falls_back_to_examine_on_another_folder_or_without_qresync(
    server: Dovecot, tmp_path: Path, opener: Opener, pki: TestPki
) -> None:
    filled(server, pki, "Reuse1")
    filled(server, pki, "Reuse2")
    box = connect(spec(server))
    try:
        with open_cache(tmp_path / "cache") as cache:
            run_sync(box, cache, "Reuse1", opener)
            assert box.still_open("Reuse1") is not None
            assert box.still_open("Reuse2") is None  # another folder is not open
            report = run_sync(box, cache, "Reuse2", opener, reuse_open=True)
            assert report.stored == BACKLOG and report.complete
            box._qresync = False  # as a server offering only CONDSTORE
            assert box.still_open("Reuse2") is None
    finally:
        box.close()


@pytest.mark.parametrize("qresync", [True, False], ids=["qresync", "condstore-only"])
def test_an_expunge_and_a_flag_change_are_seen_incrementally(
    server: Dovecot,
    tmp_path: Path,
    opener: Opener,
    pki: TestPki,
    monkeypatch: pytest.MonkeyPatch,
    qresync: bool,
) -> None:
    folder = f"Incremental{int(qresync)}"
    uids = filled(server, pki, folder)
    box = connect(spec(server))
    try:
        box._qresync = qresync and box.qresync  # False: as a server offering only CONDSTORE
        with open_cache(tmp_path / "cache") as cache:
            run_sync(box, cache, folder, opener)
            server.set_flags("alice", [uids[3]], [b"\\Flagged"], folder)
            calls = Recorder(box, cache, monkeypatch)
            report = run_sync(box, cache, folder, opener)
            assert report.flags_updated == 1 and report.expunged == 0
            assert not calls.read_the_whole_folder and calls.bodies == []
            assert "\\Flagged" in cached(cache, folder)[f"Test {folder}3"].flags

            server.expunge("alice", [uids[0], uids[-1]], folder)  # the plain one is not cached
            calls = Recorder(box, cache, monkeypatch)
            report = run_sync(box, cache, folder, opener)
            assert report.expunged == 1
            assert f"Test {folder}0" not in cached(cache, folder)
            assert len(cached(cache, folder)) == BACKLOG - 1
            # QRESYNC names what vanished; without it the lower count sends the pass to compare
            # every UID, once.
            assert calls.read_the_whole_folder is not qresync

            calls = Recorder(box, cache, monkeypatch)
            report = run_sync(box, cache, folder, opener)
            assert report.unchanged and not calls.read_the_whole_folder
    finally:
        box.close()


def test_an_expunged_last_message_is_seen_with_qresync(
    server: Dovecot, tmp_path: Path, opener: Opener, pki: TestPki
) -> None:
    # "1:*" would end at the highest UID still there: the vanished last one must be asked too.
    folder = "LastGone"
    uids = [server.append("alice", signed_mail(pki, f"last{i}"), folder) for i in range(3)]
    box = connect(spec(server))
    try:
        with open_cache(tmp_path / "cache") as cache:
            run_sync(box, cache, folder, opener)
            server.expunge("alice", [uids[-1]], folder)
            report = run_sync(box, cache, folder, opener)
            assert report.expunged == 1
            assert set(cached(cache, folder)) == {"Test last0", "Test last1"}
    finally:
        box.close()


def test_a_restart_after_downtime_catches_up_without_reading_the_whole_folder(
    server: Dovecot, tmp_path: Path, opener: Opener, pki: TestPki, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = "Downtime"
    uids = filled(server, pki, folder)
    box = connect(spec(server))
    try:
        with open_cache(tmp_path / "cache") as cache:
            run_sync(box, cache, folder, opener)
    finally:
        box.close()
    # While we are down: new mail, an expunge, a flag change.
    new = [server.append("alice", signed_mail(pki, f"down-new{i}"), folder) for i in range(2)]
    server.expunge("alice", [uids[1]], folder)
    server.set_flags("alice", [uids[2]], [b"\\Seen"], folder)
    box = connect(spec(server))  # a new process: a new connection and a new cache handle
    try:
        with open_cache(tmp_path / "cache") as cache:
            calls = Recorder(box, cache, monkeypatch)
            report = run_sync(box, cache, folder, opener)
            assert sorted(calls.bodies) == new
            assert not calls.read_the_whole_folder
            assert (report.new, report.expunged, report.flags_updated) == (2, 1, 1)
            got = cached(cache, folder)
            assert len(got) == BACKLOG + 1
            assert f"Test {folder}1" not in got and "\\Seen" in got[f"Test {folder}2"].flags
    finally:
        box.close()


def test_a_server_without_condstore_still_syncs_new_mail_expunges_and_flags(
    plain_server: Dovecot, tmp_path: Path, opener: Opener, pki: TestPki
) -> None:
    folder = "Plain"
    uids = filled(plain_server, pki, folder)
    box = connect(spec(plain_server))
    try:
        assert not {"CONDSTORE", "QRESYNC"} & box.capabilities
        with open_cache(tmp_path / "cache") as cache:
            first = run_sync(box, cache, folder, opener)
            assert first.stored == BACKLOG
            assert cache.folder_state("work", folder).highest_modseq is None  # type: ignore[union-attr]
            plain_server.expunge("alice", [uids[0]], folder)
            plain_server.set_flags("alice", [uids[1]], [b"\\Answered"], folder)
            new = plain_server.append("alice", signed_mail(pki, "plain-new"), folder)
            report = run_sync(box, cache, folder, opener)
            assert (report.new, report.stored, report.expunged, report.flags_updated) == (
                1, 1, 1, 1,
            )  # fmt: skip
            got = cached(cache, folder)
            assert f"Test {folder}0" not in got and "Test plain-new" in got
            assert "\\Answered" in got[f"Test {folder}1"].flags
            assert cache.uids("work", folder, report.uidvalidity or 0, new) == {new}
    finally:
        box.close()


def test_a_uidvalidity_change_after_incremental_passes_resets_and_rematches(
    server: Dovecot, tmp_path: Path, opener: Opener, pki: TestPki
) -> None:
    folder = "Renumbered"
    for i in range(3):
        server.deliver("alice", signed_mail(pki, f"r{i}"), folder)
    box = connect(spec(server))
    try:
        with open_cache(tmp_path / "cache") as cache:
            run_sync(box, cache, folder, opener)
            server.deliver("alice", signed_mail(pki, "r3"), folder)
            assert run_sync(box, cache, folder, opener).new == 1  # an incremental pass
            old = cache.folder_state("work", folder)
            assert old is not None and old.messages == 4
            before = {s: m.id for s, m in cached(cache, folder).items()}
    finally:
        box.close()

    server.stop()
    server.reset_uidvalidity("alice", folder, old.uidvalidity + 1000)
    # One message disappeared while the folder was renumbered.
    next(
        p
        for p in (server.maildir("alice", folder) / "new").iterdir()
        if b"Subject: Test r2\r\n" in p.read_bytes()
    ).unlink()
    server.start()

    box = connect(spec(server))
    try:
        with open_cache(tmp_path / "cache") as cache:
            report = run_sync(box, cache, folder, opener)
            assert report.uidvalidity_changed and report.uidvalidity == old.uidvalidity + 1000
            assert report.dropped_stale == 1
            after = cached(cache, folder)
            assert set(after) == {"Test r0", "Test r1", "Test r3"}
            assert {s: m.id for s, m in after.items()} == {s: before[s] for s in after}
            again = run_sync(box, cache, folder, opener)
            assert again.unchanged and again.dropped_stale == 0
    finally:
        box.close()


@pytest.fixture
def opener(pki: TestPki, anchors: tuple) -> Opener:  # type: ignore[type-arg]
    return Opener(pki, anchors)

"""Syncing folders of a real Dovecot into a real cache: what is downloaded, what is stored, and
that expunges, flag changes, a UIDVALIDITY reset, an interruption and a server restart neither
lose nor duplicate anything."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from smime_companion.core.model import OpenResult
from smime_companion.errors import ImapError
from smime_companion.imap.mailbox import ImapMailbox, connect
from smime_companion.imap.session import ServerSpec
from smime_companion.store.cache import Cache, MessageSummary
from smime_companion.sync import opening, pipeline
from smime_companion.sync.folder import sync_folder
from smime_companion.sync.protocols import FolderReport, Stopped, Summary
from smime_companion.testing.pki import TestPki
from tests.conftest import load_identity
from tests.dovecot import (
    PASSWORD,
    SEPARATORS,
    Dovecot,
    encrypted_mail,
    plain_mail,
    running_dovecot,
    signed_mail,
)

ACCOUNT = "work"


@pytest.fixture(scope="module", params=SEPARATORS, ids=lambda sep: f"separator{sep}")
def server(request: pytest.FixtureRequest) -> Iterator[Dovecot]:
    """Dovecot with each hierarchy separator: ``.`` as Debian ships it, ``/`` as Gmail has."""
    yield from running_dovecot(separator=request.param)


@pytest.fixture
def cache(tmp_path: Path) -> Iterator[Cache]:
    with Cache.open(tmp_path / "cache", None) as opened:
        yield opened


def spec(server: Dovecot) -> ServerSpec:
    return ServerSpec(
        host="localhost",
        port=server.tls_port,
        username="alice",
        secret=lambda: PASSWORD,
        ca_file=server.cert,
        name=ACCOUNT,
        timeout=10,
    )


@pytest.fixture
def mailbox(server: Dovecot) -> Iterator[ImapMailbox]:
    box = connect(spec(server))
    yield box
    box.close()


class Opener(opening.OpeningPool):
    """Opens in this process as bob (the recipient of the test mail), trusting the test root;
    counts the messages opened."""

    def __init__(self, pki: TestPki, anchors: tuple[x509.Certificate, ...]) -> None:
        super().__init__([load_identity(pki, "bob")], anchors, workers=0)
        self.calls = 0

    def open_for_cache(self, raw: bytes, at: dt.datetime) -> opening.Opened:
        self.calls += 1
        return super().open_for_cache(raw, at)


@pytest.fixture
def opener(pki: TestPki, anchors: tuple[x509.Certificate, ...]) -> Opener:
    return Opener(pki, anchors)


def run_sync(
    mailbox: ImapMailbox, cache: Cache, folder: str, opener: Opener, **kwargs: object
) -> FolderReport:
    return sync_folder(
        mailbox,
        cache,
        account=ACCOUNT,
        folder=folder,
        opener=opener,
        now=lambda: dt.datetime.now(dt.UTC),
        **kwargs,  # type: ignore[arg-type]
    )


def record_summaries(
    mailbox: ImapMailbox, monkeypatch: pytest.MonkeyPatch
) -> list[tuple[list[int], bool]]:
    """Make ``mailbox`` note each summaries() call: (the UIDs asked for, whether BODYSTRUCTURE
    was)."""
    calls: list[tuple[list[int], bool]] = []
    real = mailbox.summaries

    def summaries(uids: list[int], *, structure: bool = True) -> list[Summary]:
        calls.append((list(uids), structure))
        return real(uids, structure=structure)

    monkeypatch.setattr(mailbox, "summaries", summaries)
    return calls


def cached(cache: Cache, folder: str) -> dict[str, MessageSummary]:
    """The folder's cached messages by subject."""
    hits = cache.search(f'folder:"{folder}"', now=dt.datetime.now(dt.UTC))
    by_subject = {h.subject: h for h in hits}
    assert len(by_subject) == len(hits), "a message is cached twice"
    return by_subject


def test_first_sync_stores_smime_messages_opened_and_skips_plain_ones(
    server: Dovecot, mailbox: ImapMailbox, cache: Cache, opener: Opener, pki: TestPki
) -> None:
    folder = "First"
    server.deliver("alice", plain_mail("f-plain"), folder)
    server.deliver("alice", signed_mail(pki, "f-signed"), folder)
    server.deliver("alice", encrypted_mail(pki, "f-enc"), folder)
    report = run_sync(mailbox, cache, folder, opener)
    assert (report.new, report.stored, report.skipped, report.complete) == (3, 2, 1, True)
    got = cached(cache, folder)
    assert set(got) == {"Test f-signed", "Test f-enc"}
    assert got["Test f-signed"].signature == "valid"
    assert got["Test f-signed"].signer == "alice@example.org"
    assert got["Test f-enc"].decryption == "ok"
    assert all("\\Seen" not in m.flags for m in got.values())
    # The server still sees them unread: sync is read-only.
    assert all("\\Seen" not in f for f in mailbox.flags(mailbox.search_uids()).values())


def test_cache_all_stores_plain_messages_too(
    server: Dovecot, mailbox: ImapMailbox, cache: Cache, opener: Opener, pki: TestPki
) -> None:
    folder = "Everything"
    server.deliver("alice", plain_mail("e-plain"), folder)
    server.deliver("alice", signed_mail(pki, "e-signed"), folder)
    report = run_sync(mailbox, cache, folder, opener, cache_all=True)
    assert (report.stored, report.skipped) == (2, 0)
    assert cached(cache, folder)["Test e-plain"].signature == "none"


def test_second_sync_of_an_unchanged_folder_fetches_nothing(
    server: Dovecot, mailbox: ImapMailbox, cache: Cache, opener: Opener, pki: TestPki
) -> None:
    folder = "Quiet"
    server.deliver("alice", signed_mail(pki, "q1"), folder)
    run_sync(mailbox, cache, folder, opener)
    calls = opener.calls
    report = run_sync(mailbox, cache, folder, opener)
    assert report.unchanged and report.new == 0
    assert opener.calls == calls


def test_new_message_expunge_and_flag_change_are_reflected(
    server: Dovecot, mailbox: ImapMailbox, cache: Cache, opener: Opener, pki: TestPki
) -> None:
    folder = "Changing"
    uids = [server.append("alice", signed_mail(pki, f"c{i}"), folder) for i in range(3)]
    server.append("alice", plain_mail("c-plain"), folder)
    run_sync(mailbox, cache, folder, opener)
    assert len(cached(cache, folder)) == 3

    server.expunge("alice", [uids[0]], folder)
    server.set_flags("alice", [uids[1]], [b"\\Flagged"], folder)
    server.append("alice", encrypted_mail(pki, "c-new"), folder)
    calls = opener.calls
    report = run_sync(mailbox, cache, folder, opener)
    assert (report.expunged, report.stored, report.flags_updated) == (1, 1, 1)
    assert opener.calls == calls + 1  # only the new message was opened
    got = cached(cache, folder)
    assert set(got) == {"Test c1", "Test c2", "Test c-new"}
    assert "\\Flagged" in got["Test c1"].flags


def test_expunges_are_found_without_qresync_by_comparing_uids(
    server: Dovecot, cache: Cache, opener: Opener, pki: TestPki
) -> None:
    folder = "NoQresync"
    uids = [server.append("alice", signed_mail(pki, f"n{i}"), folder) for i in range(3)]
    box = connect(spec(server))
    try:
        box._qresync = False  # as with a server that offers only CONDSTORE
        run_sync(box, cache, folder, opener)
        server.expunge("alice", [uids[1]], folder)
        report = run_sync(box, cache, folder, opener)
    finally:
        box.close()
    assert report.expunged == 1
    assert set(cached(cache, folder)) == {"Test n0", "Test n2"}


def test_message_that_cannot_be_opened_is_cached_with_its_error(
    server: Dovecot, mailbox: ImapMailbox, cache: Cache, opener: Opener, pki: TestPki
) -> None:
    folder = "Broken"
    broken = (
        b"From: alice@example.org\r\nTo: bob@example.org\r\nSubject: Test broken\r\n"
        b"Message-ID: <broken@test>\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name="smime.p7m"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\nTm90IGEgQ01TIHN0cnVjdHVyZQ==\r\n"
    )
    server.deliver("alice", broken, folder)
    server.deliver("alice", encrypted_mail(pki, "for-carol", to="carol"), folder)
    report = run_sync(mailbox, cache, folder, opener)
    assert report.stored == 2
    got = cached(cache, folder)
    assert got["Test broken"].error
    assert got["Test for-carol"].decryption == "no-key"
    ids = [m.id for m in got.values()]
    assert sorted(cache.raw(i) for i in ids)  # raw originals kept


def test_uidvalidity_reset_keeps_every_message_once_under_the_new_uids(
    server: Dovecot, mailbox: ImapMailbox, cache: Cache, opener: Opener, pki: TestPki
) -> None:
    folder = "Renumbered"
    for i in range(3):
        server.deliver("alice", signed_mail(pki, f"r{i}"), folder)
    run_sync(mailbox, cache, folder, opener)
    before = cached(cache, folder)
    old_uv = mailbox.examine(folder).uidvalidity
    mailbox.close()

    server.stop()
    server.reset_uidvalidity("alice", folder, old_uv + 1000)
    # One message disappeared while the folder was renumbered.
    next(
        p
        for p in (server.maildir("alice", folder) / "new").iterdir()
        if b"Subject: Test r2\r\n" in p.read_bytes()
    ).unlink()
    server.start()

    box = connect(spec(server))
    try:
        report = run_sync(box, cache, folder, opener)
    finally:
        box.close()
    assert report.uidvalidity_changed and report.uidvalidity == old_uv + 1000
    assert report.dropped_stale == 1
    after = cached(cache, folder)
    assert set(after) == {"Test r0", "Test r1"}
    # Relocated onto their old entries, not stored again.
    assert {s: m.id for s, m in after.items()} == {s: before[s].id for s in after}
    assert all(m.uidvalidity == old_uv + 1000 for m in after.values())


def test_stop_request_finishes_the_current_message_and_the_next_pass_resumes(
    server: Dovecot, mailbox: ImapMailbox, cache: Cache, opener: Opener, pki: TestPki,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    folder = "Stopping"
    for i in range(6):
        server.deliver("alice", signed_mail(pki, f"s{i}"), folder)
    monkeypatch.setattr(pipeline, "SUMMARY_BATCH", 2)
    stop_after = 3
    stored = Recorder()  # offered every stored message
    with pytest.raises(Stopped):
        run_sync(mailbox, cache, folder, opener, harvester=stored,
                 should_stop=lambda: len(stored.seen) >= stop_after)  # fmt: skip
    assert len(cached(cache, folder)) == stop_after
    report = run_sync(mailbox, cache, folder, opener)
    assert report.complete
    assert len(cached(cache, folder)) == 6


def test_server_restart_mid_sync_resumes_without_loss_or_duplicates(
    server: Dovecot, cache: Cache, opener: Opener, pki: TestPki, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = "Restart"
    for i in range(8):
        server.deliver("alice", signed_mail(pki, f"x{i}"), folder)
    monkeypatch.setattr(pipeline, "SUMMARY_BATCH", 3)
    monkeypatch.setattr(pipeline, "BODY_BATCH_COUNT", 2)

    box = connect(spec(server))
    real_summaries = box.summaries

    def summaries_after_a_crash(uids: list[int], *, structure: bool = True) -> list[Summary]:
        if min(uids) > 3:
            server.stop()  # the connection dies between the first summary batch and the next
        return real_summaries(uids, structure=structure)

    monkeypatch.setattr(box, "summaries", summaries_after_a_crash)
    with pytest.raises(ImapError):
        run_sync(box, cache, folder, opener)
    box.close()
    before = len(cached(cache, folder))
    assert before == 3  # the first summary batch, stored before the error reached the sync
    server.start()
    box = connect(spec(server))
    try:
        calls = opener.calls
        report = run_sync(box, cache, folder, opener)
    finally:
        box.close()
    assert report.complete and report.stored == 8 - before
    assert opener.calls == calls + report.stored  # what was stored was not fetched again
    assert set(cached(cache, folder)) == {f"Test x{i}" for i in range(8)}


class Recorder:
    def __init__(self) -> None:
        self.seen: list[tuple[str | None, str | None]] = []

    def harvest(
        self, result: OpenResult, message_id: str | None, at: dt.datetime
    ) -> dict[str, str]:
        self.seen.append((message_id, result.signer))
        return {}

    def known_revoked(self, result: OpenResult) -> dict[str, str]:
        return {}


def test_every_stored_message_is_offered_to_the_harvester(
    server: Dovecot, mailbox: ImapMailbox, cache: Cache, opener: Opener, pki: TestPki
) -> None:
    folder = "Harvest"
    server.deliver("alice", signed_mail(pki, "h1", user="carol"), folder)
    recorder = Recorder()
    run_sync(mailbox, cache, folder, opener, harvester=recorder)
    assert recorder.seen == [("<h1@test.example.org>", "carol@example.org")]


def test_without_server_side_header_search_every_bodystructure_is_read_instead(
    server: Dovecot, mailbox: ImapMailbox, cache: Cache, opener: Opener, pki: TestPki,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    folder = "NoHeaderSearch"
    server.deliver("alice", plain_mail("nh-plain"), folder)
    server.deliver("alice", encrypted_mail(pki, "nh-enc"), folder)
    monkeypatch.setattr(mailbox, "search_smime_candidates", lambda start=1: None)
    calls = record_summaries(mailbox, monkeypatch)
    report = run_sync(mailbox, cache, folder, opener)
    assert (report.stored, report.skipped) == (1, 1)
    assert [(len(uids), structure) for uids, structure in calls] == [(2, True)]  # the plain one too
    assert set(cached(cache, folder)) == {"Test nh-enc"}


def test_plain_messages_are_skipped_without_reading_their_bodystructure(
    server: Dovecot, mailbox: ImapMailbox, cache: Cache, opener: Opener, pki: TestPki,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    folder = "HeaderSearch"
    for i in range(3):
        server.deliver("alice", plain_mail(f"hs-plain{i}"), folder)
    server.deliver("alice", signed_mail(pki, "hs-signed"), folder)
    calls = record_summaries(mailbox, monkeypatch)
    report = run_sync(mailbox, cache, folder, opener)
    assert (report.new, report.stored, report.skipped) == (4, 1, 3)
    assert sum(len(uids) for uids, _structure in calls) == 1


def test_a_candidate_whose_own_header_is_not_smime_is_downloaded_but_not_stored(
    server: Dovecot, mailbox: ImapMailbox, cache: Cache, opener: Opener, pki: TestPki,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    folder = "FalseCandidate"
    # The header search matches "pkcs7" anywhere in Content-Type, here in a file name.
    lookalike = plain_mail("fc-plain").replace(
        b"Content-Type: text/plain; charset=utf-8",
        b'Content-Type: text/plain; charset=utf-8; name="pkcs7-notes.txt"',
    )
    server.deliver("alice", lookalike, folder)
    server.deliver("alice", encrypted_mail(pki, "fc-enc"), folder)
    calls = record_summaries(mailbox, monkeypatch)
    report = run_sync(mailbox, cache, folder, opener)
    # The server named the candidates: no BODYSTRUCTURE needed.
    assert [structure for _uids, structure in calls] == [False]
    assert (report.new, report.stored, report.skipped) == (2, 1, 1)
    assert set(cached(cache, folder)) == {"Test fc-enc"}


def test_nested_folders_are_synced_with_the_servers_own_separator(
    server: Dovecot, mailbox: ImapMailbox, cache: Cache, opener: Opener, pki: TestPki
) -> None:
    nested = server.name("Projects", "Nested")
    server.deliver("alice", signed_mail(pki, "nested-1"), nested)
    assert mailbox.list_folders([server.name("Projects", "*")]) == [nested]
    assert run_sync(mailbox, cache, nested, opener).stored == 1

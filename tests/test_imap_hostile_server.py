"""A hostile IMAP server (tests/hostile_imap.py) cannot blow the sync's memory, hold it forever,
flood it, or break every pass with a UID out of range.

Each case syncs INBOX in this process (``sync_folder`` over a real ``ImapMailbox`` and cache),
as the daemon does, and checks what was stored, what the pass said, and what it cost.
"""

from __future__ import annotations

import datetime as dt
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from smime_companion.errors import ImapError
from smime_companion.imap.mailbox import ImapMailbox, connect
from smime_companion.imap.session import ServerSpec
from smime_companion.store.cache import Cache
from smime_companion.sync.folder import sync_folder
from smime_companion.sync.protocols import FolderReport
from smime_companion.testing.pki import TestPki
from tests.dovecot import encrypted_mail
from tests.hostile_imap import PASSWORD, USER, Behaviour, HostileImap, Message, hostile_imap
from tests.test_sync_dovecot import Opener

HUGE = 300 * 1024 * 1024


@pytest.fixture
def cache(tmp_path: Path) -> Iterator[Cache]:
    with Cache.open(tmp_path / "cache", None) as opened:
        yield opened


@pytest.fixture
def opener(pki: TestPki, anchors: tuple[x509.Certificate, ...]) -> Opener:
    return Opener(pki, anchors)


def _spec(server: HostileImap, limit: float = 30.0) -> ServerSpec:
    return ServerSpec(
        "127.0.0.1", server.port, USER, lambda: PASSWORD, tls="plain", name="work",
        timeout=10, command_time_limit=limit,
    )  # fmt: skip


def _pass(server: HostileImap, cache: Cache, opener: Opener, limit: float = 30.0) -> FolderReport:
    mailbox: ImapMailbox = connect(_spec(server, limit))
    try:
        return sync_folder(
            mailbox, cache, account="work", folder="INBOX", opener=opener,
            now=lambda: dt.datetime.now(dt.UTC),
        )  # fmt: skip
    finally:
        mailbox.close()


def _stored(cache: Cache) -> dict[int, tuple[str, str | None]]:
    hits = cache.search("", now=dt.datetime.now(dt.UTC))
    return {h.uid: (h.decryption, h.error) for h in hits}


@pytest.mark.timeout(120)
def test_a_literal_far_larger_than_announced_is_refused_unread_and_recorded_as_failed(
    pki: TestPki, cache: Cache, opener: Opener
) -> None:
    good = {uid: encrypted_mail(pki, f"good {uid}") for uid in (1, 3)}
    messages = [
        Message(1, good[1]),
        Message(2, b"Subject: x\r\n\r\n", announced=1024, sent=HUGE),
        Message(3, good[3]),
        Message(4, b"Subject: y\r\n\r\n", announced=1024, sent=HUGE),
    ]
    errors: list[str] = []
    tracemalloc.start()
    try:
        with hostile_imap(messages) as server:
            for _attempt in range(4):
                try:
                    report = _pass(server, cache, opener)
                    break
                except ImapError as exc:
                    errors.append(str(exc))
            else:
                pytest.fail(f"the sync never completed: {errors}")
            streamed = server.record.bytes_streamed
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert report.complete
    assert len(errors) == 2 and all("refused unread" in e and "\n" not in e for e in errors)
    stored = _stored(cache)
    assert stored[1] == ("ok", None) and stored[3] == ("ok", None)
    for uid in (2, 4):
        decryption, error = stored[uid]
        assert error is not None and f"UID {uid}" in error and "refused unread" in error
    assert peak < 64 * 1024 * 1024, f"allocation peak {peak / 2**20:.0f} MB"
    assert streamed < HUGE  # the client left long before the server's 300 MB


@pytest.mark.timeout(60)
def test_a_server_trickling_its_answer_is_cut_off_at_the_command_time_limit(
    pki: TestPki, cache: Cache, opener: Opener
) -> None:
    messages = [Message(1, encrypted_mail(pki, "slow"))]  # some 1,500 bytes, at 0.25 s each
    behaviour = Behaviour(trickle="FETCH-BODY", trickle_interval=0.25)
    with hostile_imap(messages, behaviour) as server:
        started = time.monotonic()
        with pytest.raises(ImapError, match="time limit") as raised:
            _pass(server, cache, opener, limit=2.0)
        elapsed = time.monotonic() - started
    # Every read got a byte well within the 10 s socket timeout: only the time limit of the
    # command could end it.
    assert elapsed < 8, f"held for {elapsed:.1f} s"
    assert "UID FETCH BODY.PEEK[]" in str(raised.value) and "\n" not in str(raised.value)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("where", ["FETCH-BODY", "SEARCH"])
def test_an_endless_flood_of_untagged_responses_is_capped(
    pki: TestPki, cache: Cache, opener: Opener, where: str
) -> None:
    messages = [Message(1, encrypted_mail(pki, "flooded"))]
    tracemalloc.start()
    try:
        with hostile_imap(messages, Behaviour(flood=where)) as server:
            with pytest.raises(ImapError, match="more than .* lines"):
                _pass(server, cache, opener)
            flooded = server.record.bytes_streamed
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024 * 1024, f"allocation peak {peak / 2**20:.0f} MB"
    assert flooded < 200 * 1024 * 1024


@pytest.mark.timeout(60)
def test_uids_outside_the_32_bit_range_are_ignored_on_every_pass(
    pki: TestPki, cache: Cache, opener: Opener
) -> None:
    messages = [Message(1, encrypted_mail(pki, "one")), Message(2, encrypted_mail(pki, "two"))]
    behaviour = Behaviour(
        extra_search_uids=(2**64 + 1, 0, 2**32), unsolicited_fetch_uids=(2**64 + 1, 2**63)
    )
    with hostile_imap(messages, behaviour) as server:
        first = _pass(server, cache, opener)
        second = _pass(server, cache, opener)
    assert first.complete and second.complete
    assert first.stored == 2 and second.stored == 0
    assert sorted(_stored(cache)) == [1, 2]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("uidvalidity", [0, 2**32, 2**64 + 1])
def test_a_uidvalidity_outside_its_range_is_one_clear_error(
    cache: Cache, opener: Opener, uidvalidity: int
) -> None:
    with hostile_imap([], Behaviour(uidvalidity=uidvalidity)) as server:
        with pytest.raises(ImapError, match="invalid UIDVALIDITY") as raised:
            _pass(server, cache, opener)
    assert "\n" not in str(raised.value)


@pytest.mark.timeout(90)
def test_a_real_dovecot_slowed_to_a_byte_at_a_time_is_cut_off_at_the_time_limit(
    pki: TestPki, cache: Cache, opener: Opener
) -> None:
    from tests.dovecot import PASSWORD as DOVECOT_PASSWORD
    from tests.dovecot import running_dovecot
    from tests.trickle_proxy import TrickleProxy

    for dovecot in running_dovecot():
        dovecot.deliver("alice", encrypted_mail(pki, "slowly"))
        with TrickleProxy(("127.0.0.1", dovecot.port), b"BODY.PEEK[]", 0.3) as proxy:
            spec = ServerSpec(
                "127.0.0.1", proxy.port, "alice", lambda: DOVECOT_PASSWORD, tls="plain",
                name="work", timeout=10, command_time_limit=2.0,
            )  # fmt: skip
            box = connect(spec)
            started = time.monotonic()
            try:
                with pytest.raises(ImapError, match="time limit"):
                    sync_folder(
                        box, cache, account="work", folder="INBOX", opener=opener,
                        now=lambda: dt.datetime.now(dt.UTC),
                    )  # fmt: skip
            finally:
                box.close()
            assert time.monotonic() - started < 10
            assert proxy.trickled > 0  # the answer really was being trickled


@pytest.mark.timeout(60)
@pytest.mark.parametrize("behaviour", ["flood", "trickle"])
def test_the_outbox_connection_has_the_same_bounds(behaviour: str) -> None:
    from smime_companion.imap.outbox_source import ImapOutbox

    misbehaving = (
        Behaviour(flood="SEARCH")
        if behaviour == "flood"
        else Behaviour(trickle="SEARCH", trickle_interval=0.3)
    )
    with hostile_imap([], misbehaving) as server:
        outbox = ImapOutbox(_spec(server, limit=2.0), "INBOX", "Sent")
        started = time.monotonic()
        with pytest.raises(ImapError, match="lines|time limit"):
            outbox.drafts()
        outbox.close()
    assert time.monotonic() - started < 10

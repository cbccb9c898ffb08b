"""The outbox journal: states move only along the allowed steps, survive a reopen, stay encrypted
at rest, and an interrupted submission becomes ``uncertain`` with a notice."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from smime_companion.errors import CacheError, UsageError
from smime_companion.outbox import notices
from smime_companion.store import db
from smime_companion.store.journal import (
    DB_FILENAME,
    MIGRATIONS,
    CopyState,
    ItemState,
    Journal,
)

AT = dt.datetime(2026, 11, 25, 9, 0, tzinfo=dt.UTC)
KEY = "journal-test-key"


def _sealed(journal: Journal, digest: str = "d1") -> int:
    item = journal.claim("work", digest, "ref-1", AT, sender="alice@example.org", subject="Hi")
    journal.record_sealed(
        item.id,
        [
            ("alice@example.org", ["bob@example.org"], b"main sealed bytes"),
            ("alice@example.org", ["carol@example.org"], b"bcc sealed bytes"),
        ],
        b"main sealed bytes",
        AT,
    )
    return item.id


def test_a_claimed_draft_is_found_by_its_digest_until_it_is_done(tmp_path: Path) -> None:
    with Journal.open(tmp_path, KEY) as journal:
        item_id = _sealed(journal)
        assert journal.open_item_for("work", "d1") is not None
        assert journal.open_item_for("other", "d1") is None
        for index in (0, 1):
            journal.begin_submission(item_id, index, AT)
            journal.copy_submitted(item_id, index, AT)
        assert journal.item(item_id).state == ItemState.SUBMITTED
        journal.advance(item_id, {ItemState.SUBMITTED}, ItemState.FILED, AT)
        journal.advance(item_id, {ItemState.FILED}, ItemState.DONE, AT)
        # Done: the same bytes in the outbox again are a new message, and the kept copies go.
        assert journal.open_item_for("work", "d1") is None
        assert journal.sent_copy(item_id) is None
        assert all(c.message == b"" for c in journal.copies(item_id))


def test_the_item_is_submitted_only_when_every_copy_is(tmp_path: Path) -> None:
    with Journal.open(tmp_path, None) as journal:
        item_id = _sealed(journal)
        journal.begin_submission(item_id, 0, AT)
        journal.copy_submitted(item_id, 0, AT)
        assert journal.item(item_id).state == ItemState.SUBMITTING


def test_a_step_from_the_wrong_state_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    with Journal.open(tmp_path, None) as journal:
        item_id = _sealed(journal)
        with pytest.raises(UsageError, match="is sealed, not submitted"):
            journal.advance(item_id, {ItemState.SUBMITTED}, ItemState.FILED, AT)
        assert journal.item(item_id).state == ItemState.SEALED


def test_reopening_after_a_stop_while_submitting_makes_the_item_uncertain_with_a_notice(
    tmp_path: Path,
) -> None:
    with Journal.open(tmp_path, KEY) as journal:
        item_id = _sealed(journal)
        journal.begin_submission(item_id, 0, AT)
    with Journal.open(tmp_path, KEY) as journal:
        [item] = journal.recover_interrupted(AT, notices.uncertain)
        assert item.id == item_id and item.state == ItemState.UNCERTAIN
        states = [c.state for c in journal.copies(item_id)]
        assert states == [CopyState.UNCERTAIN, CopyState.PENDING]
        [notice] = journal.notices("work")
        assert f"smime-companion outbox retry {item_id}" in notice.text
        assert journal.recover_interrupted(AT, notices.uncertain) == []  # once only


def test_retry_resets_only_copies_not_known_to_be_accepted(tmp_path: Path) -> None:
    with Journal.open(tmp_path, None) as journal:
        item_id = _sealed(journal)
        journal.begin_submission(item_id, 0, AT)
        journal.copy_submitted(item_id, 0, AT)
        journal.begin_submission(item_id, 1, AT)
        journal.recover_interrupted(AT, notices.uncertain)
        item = journal.retry(item_id, AT)
        assert item.state == ItemState.SEALED and item.next_attempt is None
        assert [c.state for c in journal.copies(item_id)] == [
            CopyState.SUBMITTED,
            CopyState.PENDING,
        ]


@pytest.mark.parametrize("state", [ItemState.SEALED, ItemState.DONE, ItemState.REJECTED])
def test_only_uncertain_or_held_items_can_be_retried(tmp_path: Path, state: ItemState) -> None:
    with Journal.open(tmp_path, None) as journal:
        item_id = _sealed(journal)
        if state != ItemState.SEALED:
            journal.advance(item_id, {ItemState.SEALED}, state, AT)
        with pytest.raises(UsageError, match=f"is {state}"):
            journal.retry(item_id, AT)


def test_a_deferred_copy_counts_an_attempt_and_sets_the_next_one(tmp_path: Path) -> None:
    with Journal.open(tmp_path, None) as journal:
        item_id = _sealed(journal)
        journal.begin_submission(item_id, 0, AT)
        later = AT + dt.timedelta(minutes=1)
        journal.copy_deferred(item_id, 0, "451 try later", AT, later)
        item = journal.item(item_id)
        assert item.state == ItemState.SEALED and item.attempts == 1
        assert item.next_attempt == later and item.reason == "451 try later"


def test_the_first_deferral_of_a_try_is_kept_and_a_retry_starts_a_new_try(
    tmp_path: Path,
) -> None:
    with Journal.open(tmp_path, None) as journal:
        item_id = _sealed(journal)
        for minutes in (0, 5):
            at = AT + dt.timedelta(minutes=minutes)
            journal.begin_submission(item_id, 0, at)
            journal.copy_deferred(item_id, 0, "451 try later", at, at + dt.timedelta(minutes=1))
        journal.delay_noticed(item_id, ("late", "still trying"), AT)
        item = journal.item(item_id)
        assert (item.deferred_since, item.delay_noticed, item.attempts) == (AT, True, 2)
        assert [n.subject for n in journal.notices("work")] == ["late"]
        journal.advance(item_id, {ItemState.SEALED}, ItemState.HELD, AT, reason="gave up")
        item = journal.retry(item_id, AT)
        assert (item.deferred_since, item.delay_noticed, item.attempts) == (None, False, 0)


def _old_journal(directory: Path, key: str | None, schema: int, values: str) -> None:
    """A journal written by a release whose schema was ``schema``, holding one item."""
    conn = db.connect(directory / DB_FILENAME, key, MIGRATIONS[:schema])
    conn.execute(
        "INSERT INTO items (account, digest, state, attempts, created, updated) VALUES " + values
    )
    conn.close()


def test_a_journal_from_before_the_deferral_times_opens_and_keeps_its_items(
    tmp_path: Path,
) -> None:
    # Schema 1, as the first release wrote it.
    _old_journal(tmp_path, KEY, 1, "('work', 'd0', 'sealed', 3, 0, 0)")
    with Journal.open(tmp_path, KEY) as journal:
        [item] = journal.items()
        assert (item.digest, item.attempts, item.deferred_since, item.delay_noticed) == (
            "d0",
            3,
            None,
            False,
        )


def test_the_journal_is_encrypted_at_rest_and_needs_its_key(tmp_path: Path) -> None:
    with Journal.open(tmp_path, KEY) as journal:
        _sealed(journal)
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith(DB_FILENAME))
    assert b"main sealed bytes" not in raw and b"alice@example.org" not in raw
    assert oct((tmp_path / DB_FILENAME).stat().st_mode & 0o777) == "0o600"
    with pytest.raises(CacheError, match="wrong cache key"):
        Journal.open(tmp_path, "another key")


def test_changing_the_cache_key_changes_the_journals_key_too(tmp_path: Path) -> None:
    with Journal.open(tmp_path, KEY) as journal:
        item_id = _sealed(journal)
    assert tmp_path / DB_FILENAME in db.rekey_directory(tmp_path, KEY, "new key")
    with Journal.open(tmp_path, "new key") as journal:
        assert journal.item(item_id).state == ItemState.SEALED


def test_a_draft_moved_aside_by_an_older_version_reads_as_rejected(tmp_path: Path) -> None:
    # Until migration 4 such an item was stored as 'failed'; it is one outcome with one word.
    _old_journal(tmp_path, None, 3, "('work', 'd', 'failed', 0, 0, 0)")
    with Journal.open(tmp_path, None) as journal:
        [item] = journal.items()
        assert item.state == ItemState.REJECTED and str(item.state) == "rejected"

"""The message cache's storage contract (the interface the sync daemon is built on): locations,
idempotence, folder state, UIDVALIDITY resets, reopening after a key import, transactions.

Messages are made at test time by openssl from the test PKI and opened by ``core.open``. The
helpers here are shared by the other cache test files.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import functools
import hashlib
import logging
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from smime_companion.core import entry_derivation
from smime_companion.core.cache_entry import CacheEntry
from smime_companion.core.entry_derivation import derive_entry, entry_maker
from smime_companion.core.model import Identity, OpenResult
from smime_companion.core.open import open_message
from smime_companion.core.verdicts import Decryption, SignatureStatus
from smime_companion.errors import CacheError, UsageError
from smime_companion.store import Cache, FolderState, cache_upkeep, db
from smime_companion.testing.pki import TestPki
from tests.conftest import load_cert, load_identity
from tests.tools import binhex_block, openssl_cms

KEY = "correct horse battery staple"


def mail(
    pki: TestPki,
    *,
    kind: str = "plain",
    subject: str = "Quarterly numbers",
    body: str = "The zebra budget is attached.\r\n",
    sender: str = "alice",
    to: str = "bob",
    date: str = "Wed, 25 Nov 2026 09:00:00 +0000",
    message_id: str | None = None,
    extra_parts: str = "",
    cc: str | None = None,
    content_type: str = "text/plain",
) -> bytes:
    """A message made with openssl: ``plain``, ``signed`` (by ``sender``), ``encrypted`` (to
    ``to``) or ``signed+encrypted``. ``extra_parts`` are appended MIME parts (multipart/mixed)."""
    from_addr, to_addr = pki.email(sender), pki.email(to)
    message_id = message_id or f"<{hashlib.sha256((subject + body).encode()).hexdigest()[:16]}@t>"
    if extra_parts:
        inner = (
            'Content-Type: multipart/mixed; boundary="b0"\r\n\r\n'
            f"--b0\r\nContent-Type: {content_type}; charset=utf-8\r\n\r\n"
            f"{body}\r\n{extra_parts}--b0--\r\n"
        )
    else:
        inner = f"Content-Type: {content_type}; charset=utf-8\r\n\r\n{body}"
    head = (
        f"From: {from_addr}\r\nTo: {to_addr}\r\nSubject: {subject}\r\nDate: {date}\r\n"
        f"Message-ID: {message_id}\r\n" + (f"Cc: {pki.email(cc)}\r\n" if cc else "")
    )
    plain = (head + "MIME-Version: 1.0\r\n" + inner).encode()
    if kind == "plain":
        return plain
    entity = ("MIME-Version: 1.0\r\n" + inner).encode()
    if "signed" in kind:
        entity = openssl_cms(
            ["-sign", "-signer", pki.cert(sender), "-inkey", pki.key(sender),
             "-certfile", pki.intermediate, "-crlfeol"],
            entity,
        )  # fmt: skip
    if "encrypted" in kind:
        entity = openssl_cms(["-encrypt", "-aes-256-gcm", "-recip", pki.cert(to)], entity)
    # openssl writes its own MIME-Version; our head goes on top, as a mail client's would.
    return head.encode() + entity


@functools.cache
def opener(
    pki: TestPki, users: tuple[str, ...] = ("bob",)
) -> Callable[[bytes, dt.datetime], OpenResult]:
    """open_message with the keys of ``users`` and the test root as the only anchor (made once
    per PKI: loading RSA keys costs a tenth of a second)."""
    identities: list[Identity] = [load_identity(pki, u) for u in users]
    anchors = [load_cert(pki.root)]

    def run(raw: bytes, at: dt.datetime) -> OpenResult:
        return open_message(raw, identities=identities, anchors=anchors, at=at)

    return run


def store(
    cache: Cache,
    raw: bytes,
    open_raw: Callable[[bytes, dt.datetime], OpenResult],
    now: dt.datetime,
    *,
    uid: int,
    folder: str = "INBOX",
    uidvalidity: int = 7,
    account: str = "work",
    flags: tuple[str, ...] = (),
) -> int:
    return cache.store_message(
        account=account, folder=folder, uidvalidity=uidvalidity, uid=uid, raw=raw,
        entry=derive_entry(raw, open_raw(raw, now), now), arrived=now, flags=flags,
    )  # fmt: skip


@pytest.fixture
def cache(tmp_path: Path):
    with Cache.open(tmp_path / "data", KEY) as opened:
        yield opened


def test_store_returns_an_id_and_the_raw_original_is_kept_byte_for_byte(
    cache: Cache, pki: TestPki, now: dt.datetime
) -> None:
    raw = mail(pki, kind="signed+encrypted")
    message_id = store(cache, raw, opener(pki), now, uid=1)
    assert cache.raw(message_id) == raw
    summary = cache.summary(message_id)
    assert (summary.account, summary.folder, summary.uidvalidity, summary.uid) == (
        "work", "INBOX", 7, 1,
    )  # fmt: skip
    assert summary.decryption == Decryption.OK and summary.signature == SignatureStatus.VALID
    assert summary.signer == pki.email("alice")
    assert summary.subject == "Quarterly numbers"
    assert summary.date == dt.datetime(2026, 11, 25, 9, 0, tzinfo=dt.UTC)
    assert b"zebra budget" in (cache.content(message_id) or b"")
    report = cache.report(message_id)
    assert report["signature"] == "valid" and report["decryption"] == "ok"
    assert report["evidence"]["checked_at"] == now.isoformat()
    [chain] = report["evidence"]["chains"]
    assert base64.b64decode(chain[0]) == load_cert(pki.cert("alice")).public_bytes(
        serialization.Encoding.DER
    )
    assert base64.b64decode(chain[-1]) == load_cert(pki.root).public_bytes(
        serialization.Encoding.DER
    )


def test_storing_the_same_location_again_replaces_instead_of_duplicating(
    cache: Cache, pki: TestPki, now: dt.datetime
) -> None:
    first = store(cache, mail(pki, subject="first version"), opener(pki), now, uid=5)
    second = store(cache, mail(pki, subject="second version"), opener(pki), now, uid=5)
    assert first == second
    assert cache.stats()["messages"] == 1
    assert cache.summary(first).subject == "second version"
    assert [m.id for m in cache.search("second", now=now)] == [first]
    assert cache.search("first", now=now) == []  # the old words left the index too


def test_has_uid_uids_and_forget_uids_follow_the_server(
    cache: Cache, pki: TestPki, now: dt.datetime
) -> None:
    for uid in (1, 2, 3):
        store(cache, mail(pki, subject=f"message {uid}"), opener(pki), now, uid=uid)
    store(cache, mail(pki, subject="other folder"), opener(pki), now, uid=1, folder="Archive")
    assert cache.has_uid("work", "INBOX", 7, 2)
    assert not cache.has_uid("work", "INBOX", 8, 2)
    assert cache.uids("work", "INBOX", 7) == {1, 2, 3}
    assert cache.forget_uids("work", "INBOX", 7, [2, 3, 99]) == 2
    assert cache.uids("work", "INBOX", 7) == {1}
    assert cache.uids("work", "Archive", 7) == {1}
    assert cache.search("message", now=now)[0].uid == 1
    assert len(cache.search("message", now=now)) == 1


def test_update_flags_is_visible_to_is_unread(cache: Cache, pki: TestPki, now: dt.datetime) -> None:
    store(cache, mail(pki), opener(pki), now, uid=1, flags=("\\Seen",))
    store(cache, mail(pki, subject="new one"), opener(pki), now, uid=2)
    assert [m.uid for m in cache.search("is:unread", now=now)] == [2]
    cache.update_flags("work", "INBOX", 7, 2, ["\\Seen", "\\Flagged"])
    assert cache.search("is:unread", now=now) == []
    assert [m.uid for m in cache.search("is:flagged", now=now)] == [2]
    assert cache.summary(cache.search("is:flagged", now=now)[0].id).flags == ("\\Seen", "\\Flagged")


def test_folder_state_is_none_before_the_first_sync_and_round_trips(
    cache: Cache, now: dt.datetime
) -> None:
    assert cache.folder_state("work", "INBOX") is None
    state = FolderState(uidvalidity=42, highest_modseq=9001, uidnext=17, last_sync=now, error=None)
    cache.set_folder_state("work", "INBOX", state)
    assert cache.folder_state("work", "INBOX") == state
    failed = FolderState(uidvalidity=42, last_sync=None, error="connection reset")
    cache.set_folder_state("work", "INBOX", failed)
    assert cache.folder_state("work", "INBOX") == failed


def test_a_uidvalidity_reset_relocates_refetched_messages_and_keeps_the_rest_until_dropped(
    cache: Cache, pki: TestPki, now: dt.datetime
) -> None:
    kept, gone = mail(pki, subject="still on the server"), mail(pki, subject="expunged meanwhile")
    kept_id = store(cache, kept, opener(pki), now, uid=10)
    store(cache, gone, opener(pki), now, uid=11)
    cache.set_folder_state("work", "INBOX", FolderState(uidvalidity=7, highest_modseq=5))

    cache.reset_folder("work", "INBOX", 8)
    state = cache.folder_state("work", "INBOX")
    assert state is not None and state.uidvalidity == 8 and state.highest_modseq is None
    assert len(cache.search("", now=now)) == 2  # nothing lost while the new pass runs

    # The sync may look the message up first ...
    assert cache.find_by_raw_hash("work", "INBOX", hashlib.sha256(kept).hexdigest()) == kept_id
    # ... or simply store it again: either way it lands on its old entry.
    assert store(cache, kept, opener(pki), now, uid=3, uidvalidity=8) == kept_id
    assert cache.uids("work", "INBOX", 8) == {3}
    assert cache.stats()["messages"] == 2

    assert cache.drop_stale("work", "INBOX") == 1
    assert [m.id for m in cache.search("", now=now)] == [kept_id]


def test_relocate_moves_a_message_and_refuses_an_occupied_location(
    cache: Cache, pki: TestPki, now: dt.datetime
) -> None:
    a = store(cache, mail(pki, subject="a"), opener(pki), now, uid=1)
    store(cache, mail(pki, subject="b"), opener(pki), now, uid=2)
    cache.relocate(a, 9, 100)
    assert cache.has_uid("work", "INBOX", 9, 100) and not cache.has_uid("work", "INBOX", 7, 1)
    with pytest.raises(CacheError, match="already cached"):
        cache.relocate(a, 7, 2)
    with pytest.raises(UsageError, match="no message with id 999"):
        cache.relocate(999, 7, 3)


def test_a_message_without_our_key_is_stored_with_its_error_and_reopened_after_key_import(
    cache: Cache, pki: TestPki, now: dt.datetime
) -> None:
    raw = mail(pki, kind="encrypted", to="carol", subject="For Carol", body="platypus secret\r\n")
    message_id = store(cache, raw, opener(pki, ("bob",)), now, uid=1)
    assert cache.summary(message_id).decryption == Decryption.NO_KEY
    assert cache.messages_to_reopen() == [message_id]
    assert cache.raw(message_id) == raw
    assert cache.search("platypus", now=now) == []
    assert [m.id for m in cache.search("subject:carol", now=now)] == [message_id]

    # Carol's key is imported: rebuild what could not be opened.
    assert (
        cache.rebuild(entry_maker(opener(pki, ("bob", "carol"))), cache.messages_to_reopen()) == 1
    )
    assert cache.messages_to_reopen() == []
    assert cache.summary(message_id).decryption == Decryption.OK
    assert [m.id for m in cache.search("platypus", now=now)] == [message_id]


def test_a_rebuild_goes_past_a_message_whose_entry_cannot_be_derived(
    cache: Cache, pki: TestPki, now: dt.datetime, monkeypatch: pytest.MonkeyPatch
) -> None:
    poison = mail(pki, kind="signed", subject="Poison")
    first = store(cache, poison, opener(pki), now, uid=1)
    second = store(cache, mail(pki, kind="signed", subject="Fine"), opener(pki), now, uid=2)
    derive = entry_derivation.derive_entry

    def failing(raw: bytes, result: OpenResult, arrived: dt.datetime) -> CacheEntry:
        # Failure injection: a bug of ours that this one message triggers.
        if b"Poison" in raw:
            raise ValueError("a bug")
        return derive(raw, result, arrived)

    monkeypatch.setattr(entry_derivation, "derive_entry", failing)
    assert cache.rebuild(entry_maker(opener(pki))) == 2
    kept = cache.summary(first)
    assert kept.error == "internal error while indexing: ValueError"
    assert cache.raw(first) == poison
    assert cache.summary(second).signature == SignatureStatus.VALID


def test_a_message_that_cannot_be_parsed_is_stored_not_dropped(
    cache: Cache, pki: TestPki, now: dt.datetime
) -> None:
    raw = b"this is\nnot: a\n mail\x00 message at all" * 3
    message_id = store(cache, raw, opener(pki), now, uid=1)
    assert cache.raw(message_id) == raw
    assert cache.summary(message_id).error is not None


def test_text_that_decodes_to_a_lone_surrogate_is_stored_and_found(
    cache: Cache, pki: TestPki, now: dt.datetime
) -> None:
    # UTF-7 decodes "+2DQ-" to an unpaired surrogate without complaint, and SQLite cannot
    # bind such a str (UnicodeEncodeError): it is stored as U+FFFD (found by fuzz_open).
    raw = (
        b"From: alice@example.org\r\nSubject: =?utf-7?q?Kaffee_+2DQ-?=\r\n"
        b"Content-Type: text/plain; charset=utf-7\r\n\r\nMarzipan +2DQ- Kuchen\r\n"
    )
    message_id = store(cache, raw, opener(pki), now, uid=1)
    assert cache.raw(message_id) == raw
    assert cache.summary(message_id).subject == "Kaffee \ufffd"
    assert [hit.id for hit in cache.search("marzipan", now=now)] == [message_id]


def test_transactions_nest_and_roll_back_as_a_whole(
    cache: Cache, pki: TestPki, now: dt.datetime
) -> None:
    with pytest.raises(RuntimeError):
        with cache.transaction():
            store(cache, mail(pki, subject="one"), opener(pki), now, uid=1)
            with cache.transaction():
                store(cache, mail(pki, subject="two"), opener(pki), now, uid=2)
            raise RuntimeError("the sync died here")
    assert cache.stats()["messages"] == 0
    with cache.transaction():
        with cache.transaction():
            store(cache, mail(pki, subject="three"), opener(pki), now, uid=3)
    assert cache.uids("work", "INBOX", 7) == {3}


def test_an_unknown_message_id_is_one_clear_line(cache: Cache) -> None:
    with pytest.raises(UsageError, match="^no message with id 12345 in the cache$"):
        cache.raw(12345)


def test_attachments_are_listed_with_name_type_size_and_hash(
    cache: Cache, pki: TestPki, now: dt.datetime
) -> None:
    part = (
        '--b0\r\nContent-Type: application/pdf; name="report.pdf"\r\n'
        'Content-Disposition: attachment; filename="report.pdf"\r\n'
        "Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n"
    )
    message_id = store(
        cache, mail(pki, kind="encrypted", extra_parts=part), opener(pki), now, uid=1
    )
    [att] = cache.attachments(message_id)
    assert (att.part, att.filename, att.mime_type, att.size) == (
        2,
        "report.pdf",
        "application/pdf",
        9,
    )
    assert att.sha256 == hashlib.sha256(b"%PDF-1.4\n").hexdigest()
    assert cache.summary(message_id).attachments == 1


def test_a_reader_is_not_blocked_by_a_writer_in_the_middle_of_a_transaction(
    tmp_path: Path, pki: TestPki, now: dt.datetime
) -> None:
    with Cache.open(tmp_path, KEY) as writer, Cache.open(tmp_path, KEY) as reader:
        store(writer, mail(pki, subject="committed"), opener(pki), now, uid=1)
        with writer.transaction():
            store(writer, mail(pki, subject="in flight"), opener(pki), now, uid=2)
            # The CLI searching while the daemon stores a batch sees the committed state.
            assert [m.subject for m in reader.search("", now=now)] == ["committed"]
        assert {m.subject for m in reader.search("", now=now)} == {"committed", "in flight"}


def test_protected_headers_win_over_the_outer_ones(
    cache: Cache, pki: TestPki, now: dt.datetime
) -> None:
    inner = (
        b"From: alice@example.org\r\nTo: bob@example.org\r\nSubject: The real subject\r\n"
        b"Date: Tue, 10 Feb 2026 10:00:00 +0000\r\nMessage-ID: <real@example.org>\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\nHidden okapi.\r\n"
    )
    # RFC 8551 section 3.1: the whole message wrapped as message/rfc822, then encrypted.
    sealed = openssl_cms(
        ["-encrypt", "-aes-256-gcm", "-recip", pki.cert("bob")],
        b"Content-Type: message/rfc822\r\n\r\n" + inner,
    )
    raw = b"From: alice@example.org\r\nTo: bob@example.org\r\nSubject: ...\r\n" + sealed
    message_id = store(cache, raw, opener(pki), now, uid=1)
    summary = cache.summary(message_id)
    assert summary.subject == "The real subject"
    assert summary.message_id == "<real@example.org>"
    assert summary.date == dt.datetime(2026, 2, 10, 10, 0, tzinfo=dt.UTC)
    assert [m.id for m in cache.search('subject:"real subject" okapi', now=now)] == [message_id]


def test_a_message_dated_after_it_arrived_is_listed_when_it_arrived(
    cache: Cache, pki: TestPki, now: dt.datetime
) -> None:
    # Spam and wrong clocks date mail years ahead: listed by that date, it would stay above
    # everything until then. A Date up to a day ahead (a clock a little fast) is kept.
    far = (now + dt.timedelta(days=3650)).strftime("%a, %d %b %Y %H:%M:%S +0000")
    near = (now + dt.timedelta(hours=20)).strftime("%a, %d %b %Y %H:%M:%S +0000")
    ids = [
        store(cache, mail(pki, date=date, subject=subject), opener(pki), now, uid=n)
        for n, (date, subject) in enumerate(((far, "From 2036"), (near, "Clock fast")))
    ]
    summaries = [cache.summary(i) for i in ids]
    assert summaries[0].date == now.replace(microsecond=0)
    assert summaries[1].date == dt.datetime.strptime(near, "%a, %d %b %Y %H:%M:%S %z")
    assert [m.subject for m in cache.search("", now=now)][:2] == ["Clock fast", "From 2036"]


@pytest.mark.parametrize(
    ("date_field", "listed"),
    [
        ("", "2009-03-14 08:15:00"),  # no Date at all: the receiving server's date
        ("Date: Samstag, 14. Maerz 2009\r\n", "2009-03-14 08:15:00"),  # unreadable: the same
        ("Date: 2009-03-14T09:00:00+01:00\r\n", "2009-03-14 08:00:00"),  # ISO 8601 (scripts)
        ("Date: Sat, 14 Mar 2009 09:00:00 +01:00\r\n", "2009-03-14 08:00:00"),  # "+01:00"
    ],
)
def test_an_archived_message_without_a_readable_date_keeps_its_place_in_the_years(
    cache: Cache, pki: TestPki, now: dt.datetime, date_field: str, listed: str
) -> None:
    # Old archives hold messages with no Date or one no parser reads; listed on the day of the
    # sync, a 2009 message sat above this week's mail. The topmost Received field is the
    # date the user's own server took it.
    raw = (
        "Received: from relay.example.net by mx.example.org with ESMTP id 1A2B;\r\n"
        "\tSat, 14 Mar 2009 09:15:00 +0100 (CET)\r\n"
        "Received: from alice-pc by relay.example.net; Sat, 14 Mar 2009 09:14:58 +0100\r\n"
        f"From: alice@example.org\r\nTo: bob@example.org\r\nSubject: Old\r\n{date_field}"
        "\r\nFrom the archive.\r\n"
    ).encode()
    summary = cache.summary(store(cache, raw, opener(pki), now, uid=1))
    assert summary.date == dt.datetime.fromisoformat(listed).replace(tzinfo=dt.UTC)


def test_a_message_without_any_date_is_listed_when_it_arrived(
    cache: Cache, pki: TestPki, now: dt.datetime
) -> None:
    raw = b"From: alice@example.org\r\nSubject: Undated\r\n\r\nNo date, no Received.\r\n"
    assert cache.summary(store(cache, raw, opener(pki), now, uid=1)).date == now.replace(
        microsecond=0
    )


def test_a_message_is_listed_with_the_first_words_of_its_decrypted_text(
    cache: Cache, pki: TestPki, now: dt.datetime
) -> None:
    raw = mail(pki, kind="signed+encrypted", body="The walrus budget is approved.\r\n")
    message_id = store(cache, raw, opener(pki), now, uid=1)
    summary = cache.summary(message_id)
    assert summary.preview == "The walrus budget is approved."
    assert summary.to_json()["preview"] == "The walrus budget is approved."
    # Nothing inside was read: no words to show (the encrypted bytes are not text).
    locked = mail(pki, kind="encrypted", to="carol", subject="For Carol", body="secret\r\n")
    assert cache.summary(store(cache, locked, opener(pki), now, uid=2)).preview == ""


def test_a_cache_from_before_previews_derives_them_for_the_messages_a_list_shows(
    tmp_path: Path, pki: TestPki, now: dt.datetime
) -> None:
    directory = tmp_path / "data"
    with Cache.open(directory, KEY) as cache:
        first = store(
            cache, mail(pki, kind="encrypted", body="Otter news.\r\n"), opener(pki), now, uid=1
        )
        second = store(
            cache, mail(pki, body="Heron news.\r\n", subject="b"), opener(pki), now, uid=2
        )
    conn = db._open(directory / db.DB_FILENAME, KEY, None)  # as it is, without migrating
    with conn:
        conn.execute("ALTER TABLE messages DROP COLUMN preview")
        conn.execute("PRAGMA user_version = 7")
    conn.close()

    with Cache.open(directory, KEY) as cache:  # migration 8: the column, every preview unknown
        assert [cache.summary(i).preview for i in (first, second)] == [None, None]
        assert cache.fill_previews([first]) == {first: "Otter news."}
        assert cache.summary(first).preview == "Otter news."  # stored
        assert cache.summary(second).preview is None  # not shown yet: not derived yet
        assert cache.fill_previews([first, second]) == {second: "Heron news."}


def test_a_cache_from_before_lists_a_signed_message_forwarded_inline_as_one_attachment(
    tmp_path: Path, pki: TestPki, now: dt.datetime, monkeypatch: pytest.MonkeyPatch
) -> None:
    from smime_companion.core import layer_kinds

    inner = mail(pki, kind="signed", subject="The original", body="Old words.\r\n")
    raw = mail(pki, subject="Fwd", body="FYI\r\n", extra_parts=(
        "--b0\r\nContent-Type: message/rfc822\r\nContent-Disposition: inline\r\n\r\n"
        + inner.decode() + "\r\n"
    ))  # fmt: skip
    directory = tmp_path / "data"
    with monkeypatch.context() as old:  # as an earlier version read it: shown in place
        old.setattr(layer_kinds, "layer_kind", lambda entity, inside_layer: None)
        with Cache.open(directory, KEY) as cache:
            message_id = store(cache, raw, opener(pki), now, uid=1)
            before = [(a.mime_type, a.filename) for a in cache.attachments(message_id)]
            assert ("application/pkcs7-signature", "smime.p7s") in before
            cache.record_scan(message_id, "clean", {2: "clean"})
    conn = db._open(directory / db.DB_FILENAME, KEY, None)  # as it is, without migrating
    with conn:
        conn.execute("PRAGMA user_version = 8")
    conn.close()

    with Cache.open(directory, KEY) as cache:  # migration 9 derives it again
        assert [(a.part, a.mime_type) for a in cache.attachments(message_id)] == [
            (2, "message/rfc822")
        ]
        assert cache.messages_to_scan(10) == [message_id]  # its parts changed: scanned again


def test_a_cache_from_before_reads_binhex_files_and_report_texts_again(
    tmp_path: Path, pki: TestPki, now: dt.datetime, monkeypatch: pytest.MonkeyPatch
) -> None:
    from smime_companion.core import binhex, text

    fork = b"Hello" + binascii.crc_hqx(b"Hello", 0).to_bytes(2, "big")
    memo = mail(pki, subject="Memo", body="See the memo.\r\n", extra_parts=(
        "--b0\r\nContent-Type: application/mac-binhex40; name=Memo.hqx\r\n\r\n"
        + binhex_block(b"Memo.txt", 5, fork).decode()
    ))  # fmt: skip
    bounce = mail(pki, subject="Undelivered", body="Could not deliver.\r\n", extra_parts=(
        "--b0\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Final-Recipient: rfc822; nobody@example.com\r\nAction: failed\r\n"
    ))  # fmt: skip
    directory = tmp_path / "data"
    with monkeypatch.context() as old:  # as an earlier version read them
        old.setattr(binhex, "is_binhex", lambda mime_type, filename: False)
        old.setattr(text, "_REPORT_TYPES", {})
        with Cache.open(directory, KEY) as cache:
            ids = [
                store(cache, raw, opener(pki), now, uid=n) for n, raw in enumerate((memo, bounce))
            ]
            before = [[(a.mime_type, a.filename) for a in cache.attachments(i)] for i in ids]
            assert before == [
                [("application/mac-binhex40", "Memo.hqx")],  # the encoded text
                [("message/delivery-status", "")],  # a nameless attachment
            ]
    conn = db._open(directory / db.DB_FILENAME, KEY, None)  # as it is, without migrating
    with conn:
        conn.execute("PRAGMA user_version = 10")
    conn.close()

    with Cache.open(directory, KEY) as cache:  # migration 11 derives them again
        after = [[(a.mime_type, a.filename, a.size) for a in cache.attachments(i)] for i in ids]
        assert after == [[("application/octet-stream", "Memo.txt", 5)], []]
        assert [m.id for m in cache.search("nobody@example.com", now=now)] == [ids[1]]


def test_a_cache_from_before_reads_alternatives_and_file_names_again(
    tmp_path: Path, pki: TestPki, now: dt.datetime, monkeypatch: pytest.MonkeyPatch
) -> None:
    from smime_companion.core import text

    amp = mail(pki, subject="Your booking", body="See you soon.\r\n", extra_parts=(
        "--b0\r\nContent-Type: multipart/alternative; boundary=a\r\n\r\n"
        "--a\r\nContent-Type: text/plain\r\n\r\nBooking 42.\r\n"
        "--a\r\nContent-Type: text/x-amp-html\r\n\r\n<html amp4email>Booking 42.</html>\r\n"
        "--a\r\nContent-Type: text/html\r\n\r\n<p>Booking 42.</p>\r\n--a--\r\n"
    ))  # fmt: skip
    named = mail(pki, subject="Photos", body="Two photos.\r\n", extra_parts=(
        '--b0\r\nContent-Type: image/jpeg; name="=?UTF-8?Q?Stra=C3=9Fe.jpg?="\r\n\r\nJPEG\r\n'
        '--b0\r\nContent-Type: image/jpeg; name="C:\\Photos\\Haus.jpg"\r\n\r\nJPEG\r\n'
    ))  # fmt: skip
    broken = mail(pki, subject="Notes", body="My notes.\r\n", extra_parts=(
        "--b0\r\nContent-Type: multipart/alternative\r\n\r\nThe zebra notes.\r\n"
    ))  # fmt: skip
    leaf = text._leaf
    directory = tmp_path / "data"
    with monkeypatch.context() as old:  # as an earlier version read them
        old.setattr(text, "_another_text_form", lambda entity: False)
        old.setattr(text, "_filename", lambda entity: entity.content_type.param("name") or "")
        old.setattr(text, "_holds_no_text", lambda entity: False)
        old.setattr(text, "_leaf", lambda *args: leaf(*args[:6]))  # not told it is broken
        with Cache.open(directory, KEY) as cache:
            ids = [
                store(cache, raw, opener(pki), now, uid=n)
                for n, raw in enumerate((amp, named, broken))
            ]
            before = [[(a.mime_type, a.filename) for a in cache.attachments(i)] for i in ids]
            assert before == [
                [("text/x-amp-html", "")],
                [
                    ("image/jpeg", "=?UTF-8?Q?Stra=C3=9Fe.jpg?="),
                    ("image/jpeg", "C:\\Photos\\Haus.jpg"),
                ],
                [("multipart/alternative", "")],
            ]
    conn = db._open(directory / db.DB_FILENAME, KEY, None)  # as it is, without migrating
    with conn:
        conn.execute("PRAGMA user_version = 11")
    conn.close()

    with Cache.open(directory, KEY) as cache:  # migration 12 derives them again
        after = [[a.filename for a in cache.attachments(i)] for i in ids]
        assert after == [[], ["Straße.jpg", "Haus.jpg"], []]
        assert [m.id for m in cache.search("zebra notes", now=now)] == [ids[2]]


def _outlook_with_logo(pki: TestPki) -> bytes:
    """An Outlook-shaped message: its HTML draws the signature's logo by Content-ID, and a
    report is attached beside it."""
    return mail(pki, subject="Logo", body="Report attached.\r\n", extra_parts=(
        "--b0\r\nContent-Type: multipart/related; boundary=r\r\n\r\n"
        '--r\r\nContent-Type: text/html\r\n\r\n<p>Report attached.</p>'
        '<img src="cid:image001.png@01DA2B3C.4D5E6F70">\r\n'
        "--r\r\nContent-Type: image/png; name=image001.png\r\n"
        "Content-ID: <image001.png@01DA2B3C.4D5E6F70>\r\n\r\nPNG\r\n--r--\r\n"
        '--b0\r\nContent-Type: application/pdf; name="report.pdf"\r\n\r\n%PDF-1.4\r\n'
    ))  # fmt: skip


def test_a_picture_the_html_draws_is_inline_and_puts_no_paper_clip_on_the_row(
    cache: Cache, pki: TestPki, now: dt.datetime
) -> None:
    # Every Outlook signature carries its logo so: a row with only that is no message with
    # attachments, for the list's paper clip and for has:attachment.
    logo_only = (
        _outlook_with_logo(pki)
        .replace(b"application/pdf", b"text/plain")
        .replace(b'; name="report.pdf"', b"")
    )
    with_report, only_logo = (
        store(cache, raw, opener(pki), now, uid=n)
        for n, raw in enumerate((_outlook_with_logo(pki), logo_only))
    )
    assert [(a.filename, a.inline) for a in cache.attachments(with_report)] == [
        ("image001.png", True),
        ("report.pdf", False),
    ]
    assert (cache.summary(with_report).attachments, cache.summary(only_logo).attachments) == (1, 0)
    assert [m.id for m in cache.search("has:attachment", now=now)] == [with_report]


def test_a_cache_from_before_learns_which_pictures_are_inline_and_keeps_their_scans(
    tmp_path: Path, pki: TestPki, now: dt.datetime, monkeypatch: pytest.MonkeyPatch
) -> None:
    from smime_companion.core import text

    directory = tmp_path / "data"
    with monkeypatch.context() as old:  # as an earlier version read them: none inline
        old.setattr(text, "_picture_sources", lambda html: set())
        with Cache.open(directory, KEY) as cache:
            message_id = store(cache, _outlook_with_logo(pki), opener(pki), now, uid=1)
            cache.record_scan(message_id, "clean", {3: "clean", 4: "clean"})
            assert cache.summary(message_id).attachments == 2
    conn = db._open(directory / db.DB_FILENAME, KEY, None)  # as it is, without migrating
    with conn:
        conn.execute("ALTER TABLE attachments DROP COLUMN inline")
        conn.execute("PRAGMA user_version = 12")
    conn.close()

    with Cache.open(directory, KEY) as cache:  # migration 13 derives it again
        cache.reindex_pending()
        assert cache.summary(message_id).attachments == 1
        assert [a.scan for a in cache.attachments(message_id)] == ["clean", "clean"]
        assert cache.summary(message_id).scan == "clean"


def test_a_long_upgrade_says_how_far_it_has_come(
    tmp_path: Path,
    pki: TestPki,
    now: dt.datetime,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Deriving a large cache again takes minutes at open; a command waiting on it must not
    # look hung.
    directory = tmp_path / "data"
    with Cache.open(directory, KEY) as cache:
        for uid in range(1, 6):
            store(cache, _outlook_with_logo(pki), opener(pki), now, uid=uid)
    conn = db._open(directory / db.DB_FILENAME, KEY, None)
    with conn:
        conn.execute("PRAGMA user_version = 12")  # migration 13 lists all five again
    conn.close()
    monkeypatch.setattr(cache_upkeep, "REINDEX_BATCH", 2)
    monkeypatch.setattr(cache_upkeep, "PROGRESS_SECONDS", 0.0)

    with caplog.at_level(logging.WARNING), Cache.open(directory, KEY):
        pass

    assert [r.getMessage() for r in caplog.records] == [
        "rebuilding the search index of the 5 messages of a cache from an earlier version "
        "(once; interrupting is safe: it goes on next time)",
        "rebuilding the search index: 2 of 5 messages (40%)",
        "rebuilding the search index: 4 of 5 messages (80%)",
    ]

"""The IMAP outbox end to end, on a real Dovecot and a real aiosmtpd: a draft appended to the
outbox folder is sealed, submitted, filed in Sent and removed; every recipient's copy opens with
``openssl cms`` and that recipient's key, with a valid signature."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest

from smime_companion import keyfiles
from smime_companion.imap.outbox_source import ImapOutbox
from smime_companion.outbox.plan import MissingCertPolicy
from smime_companion.store.certstore import Sighting
from smime_companion.store.journal import ItemState
from smime_companion.testing.pki import TestPki
from tests.dovecot import SEPARATORS, Dovecot, running_dovecot
from tests.outbox_world import OUTBOX, SENT, World, draft, make_world, open_as, verify_signed
from tests.smtpd import SmtpServer, running_smtpd


@pytest.fixture(params=SEPARATORS, ids=lambda sep: f"separator{sep}")
def dovecot(request: pytest.FixtureRequest) -> Iterator[Dovecot]:
    """Dovecot with each hierarchy separator: ``.`` as Debian ships it, ``/`` as Gmail has."""
    yield from running_dovecot(separator=request.param)


@pytest.fixture()
def smtpd() -> Iterator[SmtpServer]:
    yield from running_smtpd("starttls")


@pytest.fixture()
def world(pki: TestPki, dovecot: Dovecot, smtpd: SmtpServer) -> Iterator[World]:
    yield from make_world(pki, dovecot, smtpd)


def test_a_draft_in_the_outbox_reaches_every_recipient_sealed_and_lands_in_sent(
    world: World, pki: TestPki
) -> None:
    world.put_draft(draft(pki, "m1", to=("bob",), cc=("carol",), bcc=("dave",)))
    report = world.run()
    assert report.errors == []
    assert len(report.done) == 1

    received = world.smtpd.received
    # The main message goes to To and Cc; the Bcc recipient gets a copy of their own.
    by_rcpt = {r: m for m in received for r in m.recipients}
    assert sorted(by_rcpt) == ["bob@example.org", "carol@example.org", "dave@example.org"]
    assert len(received) == 2
    assert all(m.sender == "alice@example.org" for m in received)
    for user in ("bob", "carol", "dave"):
        message = by_rcpt[pki.email(user)].data
        assert b"Secret body m1" not in message  # encrypted on the wire
        assert b"Secret body m1" in open_as(pki, message, user)
    # No copy names the Bcc recipient in its header.
    assert all(b"Bcc:" not in m.data for m in received)

    [sent] = world.folder(SENT)
    assert b"Secret body m1" not in sent  # nothing decrypted is written to the server
    assert b"Secret body m1" in open_as(pki, sent, "alice")
    assert b"\\Seen" in world.flags(SENT)[0]
    assert world.folder(OUTBOX) == []
    [item] = world.journal.items()
    assert item.state == ItemState.DONE


def test_a_second_pass_sends_nothing_again(world: World, pki: TestPki) -> None:
    world.put_draft(draft(pki, "once"))
    world.run()
    second = world.run()
    assert second.claimed == [] and second.sent == []
    assert len(world.smtpd.received) == 1
    assert len(world.folder(SENT)) == 1


def test_a_draft_from_a_foreign_address_is_moved_aside_unsent_with_a_notice(
    world: World, pki: TestPki
) -> None:
    world.put_draft(draft(pki, "evil", sender="mallory@example.net"))
    report = world.run()
    assert len(report.rejected) == 1
    assert world.smtpd.received == []
    assert world.folder(OUTBOX) == []
    [rejected] = world.folder(world.dovecot.name(OUTBOX, "Rejected"))
    assert b"Secret body evil" in rejected
    [notice] = world.notices()
    assert "mallory@example.net is not one of your S/MIME identities" in notice
    assert "Secret body" not in notice


def test_a_recipient_without_certificate_holds_the_draft_and_a_notice_names_them(
    world: World, pki: TestPki
) -> None:
    world.put_draft(draft(pki, "held", to=("bob",), to_addresses=("nocert@example.com",)))
    report = world.run()
    assert len(report.held) == 1
    assert world.smtpd.received == []
    assert world.folder(OUTBOX) == []
    assert len(world.folder(world.dovecot.name(OUTBOX, "Held"))) == 1
    [notice] = world.notices()
    assert "nocert@example.com" in notice
    assert "bob@example.org" not in notice
    assert "signed S/MIME message" in notice  # how to get a certificate


def test_sign_only_sends_signed_not_encrypted_with_a_notice(world: World, pki: TestPki) -> None:
    world.put_draft(draft(pki, "so", to=("bob",), to_addresses=("nocert@example.com",)))
    world.run(policy=MissingCertPolicy.SIGN_ONLY)
    [got] = world.smtpd.received
    assert sorted(got.recipients) == ["bob@example.org", "nocert@example.com"]
    assert b"application/pkcs7-mime" not in got.data
    assert b"Secret body so" in verify_signed(pki, got.data)
    [notice] = world.notices()
    assert "NOT encrypted" in notice and "nocert@example.com" in notice
    assert world.folder(OUTBOX) == []


def test_split_sends_encrypted_to_those_with_certificates_and_holds_a_draft_for_the_rest(
    world: World, pki: TestPki
) -> None:
    world.put_draft(draft(pki, "sp", to=("bob",), to_addresses=("nocert@example.com",)))
    world.run(policy=MissingCertPolicy.SPLIT)
    [got] = world.smtpd.received
    assert got.recipients == ("bob@example.org",)
    assert b"Secret body sp" in open_as(pki, got.data, "bob")
    [held] = world.folder(world.dovecot.name(OUTBOX, "Held"))
    header = held.split(b"\r\n\r\n", 1)[0]
    assert b"To: nocert@example.com" in header and b"bob@example.org" not in header
    [notice] = world.notices()
    assert "nocert@example.com" in notice
    assert world.folder(OUTBOX) == []


@pytest.mark.parametrize("reply", ["421 4.3.2 Shutting down", "451 4.3.0 Try again later"])
def test_a_4xx_reply_is_retried_after_the_backoff_and_then_delivered_once(
    world: World, pki: TestPki, reply: str
) -> None:
    world.smtpd.answer_next(reply)
    world.put_draft(draft(pki, "later"))
    first = world.run()
    assert len(first.deferred) == 1 and world.smtpd.received == []
    [item] = world.journal.items()
    assert item.state == ItemState.SEALED and reply in (item.reason or "")
    # Before the backoff has passed, nothing is tried.
    assert world.run().deferred == [item.id] and world.smtpd.received == []
    world.clock_offset = world.settings().retry_base * 2
    world.run()
    assert len(world.smtpd.received) == 1
    assert world.journal.item(item.id).state == ItemState.DONE
    assert world.folder(OUTBOX) == []


def test_a_message_deferred_for_hours_brings_one_notice_that_it_is_late_and_is_still_sent(
    world: World, pki: TestPki
) -> None:
    world.smtpd.answer_next(*["451 4.3.0 Try again later"] * 3)
    world.put_draft(draft(pki, "slow"))
    world.run()
    assert world.notices() == []  # one deferral is no news
    world.clock_offset = world.settings().delay_notice_after + dt.timedelta(hours=1)
    report = world.run()
    [item] = world.journal.items()
    assert report.deferred == [item.id] and item.state == ItemState.SEALED
    [notice] = world.notices()
    assert f"S/MIME outbox: message {item.id} is not sent yet" in notice
    assert "451 4.3.0 Try again later" in notice and "keeps trying" in notice
    world.clock_offset += dt.timedelta(hours=1)
    world.run()  # deferred a third time: no second notice
    assert len(world.notices()) == 1
    world.clock_offset += dt.timedelta(hours=1)
    world.run()
    assert len(world.smtpd.received) == 1
    assert world.journal.item(item.id).state == ItemState.DONE


def test_a_message_deferred_past_the_give_up_time_is_held_with_a_notice_and_can_be_retried(
    world: World, pki: TestPki
) -> None:
    world.smtpd.answer_next(*["452 4.2.2 Mailbox full"] * 3)
    world.put_draft(draft(pki, "full"))
    world.run()
    give_up = world.settings().give_up_after
    assert give_up is not None
    world.clock_offset = give_up + dt.timedelta(minutes=1)
    report = world.run()
    [item] = world.journal.items()
    assert report.held == [item.id] and item.state == ItemState.HELD
    reason = item.reason or ""
    assert "the mail server deferred it for 5.0 days: " in reason and "452 4.2.2" in reason
    [notice] = world.notices()  # past the give-up time, the only notice says so
    assert f"S/MIME outbox: message {item.id} was not sent" in notice
    assert f"smime-companion outbox retry {item.id}" in notice
    assert world.folder(OUTBOX) == [] and len(world.folder(world.dovecot.name(OUTBOX, "Held"))) == 1
    # A retry is a new try: deferred once more, it is not held at once but waits again.
    world.journal.retry(item.id, world.clock())
    world.run()
    retried = world.journal.item(item.id)
    assert retried.state == ItemState.SEALED and retried.attempts == 1
    world.clock_offset += dt.timedelta(hours=2)
    world.run()
    assert len(world.smtpd.received) == 1
    assert world.journal.item(item.id).state == ItemState.DONE
    assert world.folder(world.dovecot.name(OUTBOX, "Held")) == []


def test_a_5xx_reply_holds_the_item_with_a_notice_quoting_the_server(
    world: World, pki: TestPki
) -> None:
    world.smtpd.answer_next("554 5.7.1 Rejected by policy")
    world.put_draft(draft(pki, "no"))
    report = world.run()
    assert len(report.held) == 1
    [item] = world.journal.items()
    assert item.state == ItemState.HELD
    [notice] = world.notices()
    assert "554 5.7.1 Rejected by policy" in notice
    assert f"outbox retry {item.id}" in notice
    assert world.folder(OUTBOX) == []
    # Retrying on request sends the kept sealed copy and removes the held draft.
    world.journal.retry(item.id, world.clock())
    world.run()
    assert len(world.smtpd.received) == 1
    assert world.journal.item(item.id).state == ItemState.DONE
    assert world.folder(world.dovecot.name(OUTBOX, "Held")) == []


def test_a_connection_dropped_after_data_is_uncertain_and_never_resent_on_its_own(
    world: World, pki: TestPki
) -> None:
    world.smtpd.answer_next("drop")
    world.put_draft(draft(pki, "maybe"))
    report = world.run()
    assert len(report.uncertain) == 1
    world.run()
    world.run()
    assert len(world.smtpd.received) == 1  # the server got it once; we never sent it again
    [item] = world.journal.items()
    assert item.state == ItemState.UNCERTAIN
    [notice] = world.notices()
    assert f"smime-companion outbox retry {item.id}" in notice
    # The draft stays in the outbox, owned by the uncertain item, until the user decides.
    assert len(world.folder(OUTBOX)) == 1
    world.journal.retry(item.id, world.clock())
    world.run()
    assert len(world.smtpd.received) == 2
    assert world.journal.item(item.id).state == ItemState.DONE
    assert world.folder(OUTBOX) == []


def test_the_outbox_folder_is_created_when_missing(world: World) -> None:
    assert world.run().errors == []
    imap = world.dovecot.client("alice")
    try:
        assert imap.folder_exists(OUTBOX)
    finally:
        imap.logout()


def test_a_held_draft_moved_back_once_the_certificate_is_known_is_sent(
    world: World, pki: TestPki
) -> None:
    world.put_draft(draft(pki, "back", to=("bob", "frank")))
    world.run()
    assert world.smtpd.received == []
    frank = keyfiles.load_certificates(pki.cert("frank"))[0]
    world.store.record(Sighting(frank, "<signed@example.org>", world.clock(), anchored=True))
    [held] = world.folder(world.dovecot.name(OUTBOX, "Held"))
    world.put_draft(held)  # the user moves it back into the outbox
    world.run()
    [got] = world.smtpd.received
    assert b"Secret body back" in open_as(pki, got.data, "frank")
    assert [i.state for i in world.journal.items()] == [ItemState.HELD, ItemState.DONE]


# -- folders on every server ---------------------------------------------------------------------


def _names(dovecot: Dovecot) -> dict[str, tuple[bytes, ...]]:
    imap = dovecot.client("alice")
    try:
        return {name: tuple(flags) for flags, _sep, name in imap.list_folders()}
    finally:
        imap.logout()


def test_the_default_outbox_name_is_valid_with_either_separator_and_its_subfolders_use_it(
    world: World, pki: TestPki
) -> None:
    world.put_draft(draft(pki, "nobody", to=("frank",)))  # frank has no certificate: held
    report = world.run()
    assert report.errors == [] and len(report.held) == 1
    names = _names(world.dovecot)
    assert OUTBOX in names and "/" not in OUTBOX and "." not in OUTBOX
    held = world.dovecot.name(OUTBOX, "Held")
    assert held in names and len(world.folder(held)) == 1


def test_sent_is_the_folder_the_server_marks_sent_before_any_name(
    pki: TestPki, smtpd: SmtpServer
) -> None:
    # A server whose Sent folder is called "Envoyés" (marked \Sent), beside a plain "Sent".
    server = Dovecot(special_use={"Envoyés": "\\Sent"}, separator=".")
    try:
        server.start()
        imap = server.client("alice")
        imap.create_folder("Envoyés")
        imap.create_folder("Sent")
        imap.logout()
        for world in make_world(pki, server, smtpd):
            world.put_draft(draft(pki, "marked", to=("bob",)))
            assert world.run().errors == []
            assert len(world.folder("Envoyés")) == 1 and world.folder("Sent") == []
    finally:
        server.remove()


def test_subfolders_become_siblings_where_the_server_refuses_children(
    world: World, pki: TestPki
) -> None:
    # A server without hierarchy (LIST answers a NIL delimiter) gets "Outbox Held" beside it.
    world.imap._client()
    world.imap._delimiter = None
    world.put_draft(draft(pki, "flat", to=("frank",)))
    assert world.run().errors == []
    assert len(world.folder(f"{OUTBOX} Held")) == 1


def test_a_refused_create_names_the_folder_quotes_the_server_and_leaves_the_connection_usable(
    pki: TestPki, smtpd: SmtpServer
) -> None:
    server = Dovecot(separator=".")  # Maildir++ refuses a "/" in a name
    try:
        server.start()
        for world in make_world(pki, server, smtpd):
            world.imap = ImapOutbox(world.imap.spec, "S/MIME Outbox", None)
            # A pass reports what stopped its source; it never raises, so other accounts go on.
            [error] = world.run().errors
            assert "CREATE 'S/MIME Outbox' failed" in error
            assert "Name must not have '/' characters" in error  # the server's words
            assert "separator is '.'" in error  # and what to do about it
            assert "illegal in state" not in error and "b'" not in error
            # The same connection still serves the next command.
            assert world.imap.sent_folder == "Sent"
            world.imap.notify(b"Subject: still here\r\n\r\nok\r\n")
            assert any(b"still here" in m for m in world.folder("INBOX"))
    finally:
        server.remove()


def test_an_outbox_folder_of_the_old_default_name_is_kept_where_it_exists(
    world: World, pki: TestPki
) -> None:
    if world.dovecot.separator != "/":
        pytest.skip("the old default name could exist only on a '/' server")
    world.dovecot.append("alice", draft(pki, "legacy", to=("bob",)), "S/MIME Outbox")
    report = world.run()
    assert report.errors == [] and len(report.sent) == 1
    assert world.imap.outbox_folder == "S/MIME Outbox"

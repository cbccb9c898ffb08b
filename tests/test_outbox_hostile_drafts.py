"""Hostile drafts in the outbox (issue 14), on a real Dovecot and a real aiosmtpd: one draft can
never stop the others, and the outbox never signs for a sender other than the one shown.

- A poison draft (a From of thousands of nested comments, on which the email package's parser
  recursed into RecursionError and every pass died) goes to Rejected with a notice, and the
  drafts after it are sent.
- A draft with two From fields, or one holding two addresses, is refused with a notice (the
  anti-oracle read only the first field: bob's signature went out beside ``From: CEO``).
- Any exception while handling one draft (a bug of ours, injected here) is reported for that
  draft alone."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pytest

from smime_companion.outbox.plan import Rejected, plan_draft
from smime_companion.outbox.protocols import Submitter
from smime_companion.store.journal import ItemState
from smime_companion.testing.pki import TestPki
from tests.chaos import forged
from tests.dovecot import Dovecot, running_dovecot
from tests.outbox_world import OUTBOX, World, draft, make_world
from tests.smtpd import SmtpServer, running_smtpd


@pytest.fixture()
def dovecot() -> Iterator[Dovecot]:
    yield from running_dovecot()


@pytest.fixture()
def smtpd() -> Iterator[SmtpServer]:
    yield from running_smtpd("starttls")


@pytest.fixture()
def world(pki: TestPki, dovecot: Dovecot, smtpd: SmtpServer) -> Iterator[World]:
    yield from make_world(pki, dovecot, smtpd)


def _with_extra_from(raw: bytes, field: bytes) -> bytes:
    head, body = raw.split(b"\r\n\r\n", 1)
    return head.replace(b"From: alice@example.org", field) + b"\r\n\r\n" + body


def _sent_markers(world: World) -> list[str]:
    """The Message-IDs of what the SMTP server accepted, in order."""
    ids = []
    for message in world.smtpd.received:
        head = message.data.split(b"\r\n\r\n", 1)[0]
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"message-id:"):
                ids.append(line.split(b":", 1)[1].strip().decode())
    return ids


def test_a_poison_draft_between_good_ones_is_rejected_and_the_good_ones_are_sent(
    world: World, pki: TestPki
) -> None:
    world.put_draft(draft(pki, "good-1"))
    poison = forged.poison_from(subject="Poison draft").replace(
        b"To: bob@example.org", b"To: bob@example.org\r\nMessage-ID: <poison@example.org>"
    )
    world.put_draft(poison)
    world.put_draft(draft(pki, "good-2"))
    report = world.run()
    assert sorted(_sent_markers(world)) == ["<good-1@example.org>", "<good-2@example.org>"]
    assert len(report.done) == 2 and len(report.rejected) == 1
    assert report.errors == []
    [notice] = world.notices()
    assert "was NOT sent" in notice and "too deeply" in notice
    assert world.folder(OUTBOX) == []  # the poison draft went to Rejected


@pytest.mark.parametrize(
    ("field", "problem"),
    [
        (b"From: alice@example.org\r\nFrom: CEO <ceo@bank.example>", "2 From fields"),
        (b"From: alice@example.org, CEO <ceo@bank.example>", "holds 2 addresses"),
        (b"From: CEO <ceo@bank.example>\r\nFrom: alice@example.org", "2 From fields"),
    ],
    ids=["second-field", "two-addresses", "first-field"],
)
def test_a_draft_naming_more_than_one_sender_is_refused_with_a_notice_never_signed(
    world: World, pki: TestPki, field: bytes, problem: str
) -> None:
    world.put_draft(_with_extra_from(draft(pki, "two"), field))
    world.put_draft(draft(pki, "fine"))
    report = world.run()
    assert _sent_markers(world) == ["<fine@example.org>"]
    assert len(report.rejected) == 1
    [notice] = world.notices()
    assert problem in notice


def test_plan_refuses_two_from_fields_even_when_the_first_is_yours(
    pki: TestPki, world: World
) -> None:
    raw = _with_extra_from(
        draft(pki, "x"), b"From: alice@example.org\r\nFrom: CEO <ceo@bank.example>"
    )
    plan = plan_draft(raw, identities=[world.identity], lookup=world.store, at=world.now)
    assert isinstance(plan, Rejected)
    assert plan.info is not None and plan.info.sender is None
    assert "2 From fields" in plan.reason


class _BrokenOnce:
    """A real submitter, except that the first submission raises an exception no part of the
    pipeline expects (a bug of ours, injected)."""

    def __init__(self, real: Submitter) -> None:
        self.real, self.calls = real, 0

    def submit(self, message: bytes, sender: str, recipients: Sequence[str]) -> None:
        self.calls += 1
        if self.calls == 1:
            raise RuntimeError("injected bug")
        self.real.submit(message, sender, recipients)


def test_an_unexpected_exception_on_one_draft_leaves_the_others_going(
    world: World, pki: TestPki
) -> None:
    world.put_draft(draft(pki, "first"))
    world.put_draft(draft(pki, "second"))
    report = world.run(submitter=_BrokenOnce(world.submitter))
    assert len(_sent_markers(world)) == 1
    assert len(report.done) == 1
    [error] = report.errors
    assert "internal error: RuntimeError: injected bug" in error
    # The item it stopped is kept, as one interrupted while submitting: never lost.
    states = {i.state for i in world.journal.items("alice", tuple(ItemState))}
    assert ItemState.DONE in states and len(states) == 2

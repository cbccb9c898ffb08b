"""A stop at every journal step resumes correctly: no draft lost, nothing delivered twice, every
item ends ``done`` or ``uncertain`` (with a notice).

The stop is simulated by raising :class:`Crash` (a BaseException, so nothing in the pipeline
catches it, as nothing runs after a SIGKILL) from a wrapper around a real adapter, just before or
just after the real operation. A fresh pipeline on the same journal then plays the next start.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime

import pytest

from smime_companion.core.selection import Selection
from smime_companion.outbox.plan import CertificateLookup
from smime_companion.outbox.protocols import OutboxSource, Place, SentFiler, Submitter
from smime_companion.store.journal import ItemState
from smime_companion.testing.pki import TestPki
from tests.dovecot import Dovecot, running_dovecot
from tests.outbox_world import OUTBOX, SENT, World, draft, make_world, open_as
from tests.smtpd import SmtpServer, running_smtpd


class Crash(BaseException):
    """The process dies here."""


class CrashingSubmitter:
    def __init__(self, real: Submitter, after: bool) -> None:
        self.real, self.after = real, after

    def submit(self, message: bytes, sender: str, recipients: Sequence[str]) -> None:
        if not self.after:
            raise Crash("before the submission")
        self.real.submit(message, sender, recipients)
        raise Crash("after the server accepted, before the journal knew")


class CrashingFiler:
    def __init__(self, real: SentFiler, after: bool) -> None:
        self.real, self.after = real, after

    def file_sent(self, message: bytes, message_id: str | None) -> None:
        if not self.after:
            raise Crash("before filing")
        self.real.file_sent(message, message_id)
        raise Crash("after filing, before the journal knew")


class CrashingRemove:
    """The real source, dying around the removal of the draft."""

    def __init__(self, real: OutboxSource, after: bool) -> None:
        self.real, self.after = real, after
        self.drafts, self.read, self.put = real.drafts, real.read, real.put

    def move_aside(self, ref: str, place: Place) -> str | None:
        return self.real.move_aside(ref, place)

    def remove(self, ref: str) -> None:
        if not self.after:
            raise Crash("before removing the draft")
        self.real.remove(ref)
        raise Crash("after removing the draft, before the journal knew")


class CrashingLookup:
    """Dies while the draft is being planned (item ``claimed``)."""

    def __init__(self, real: CertificateLookup) -> None:
        self.real = real

    def select(self, address: str, at: datetime) -> Selection:
        raise Crash("while sealing")


@pytest.fixture()
def dovecot() -> Iterator[Dovecot]:
    yield from running_dovecot()


@pytest.fixture()
def smtpd() -> Iterator[SmtpServer]:
    yield from running_smtpd("starttls")


@pytest.fixture()
def world(pki: TestPki, dovecot: Dovecot, smtpd: SmtpServer) -> Iterator[World]:
    yield from make_world(pki, dovecot, smtpd)


def _crash_once(world: World, step: str) -> None:
    parts: dict[str, object] = {
        "sealing": {"lookup": CrashingLookup(world.store)},
        "before-submit": {"submitter": CrashingSubmitter(world.submitter, after=False)},
        "after-submit": {"submitter": CrashingSubmitter(world.submitter, after=True)},
        "before-file": {"filer": CrashingFiler(world.imap, after=False)},
        "after-file": {"filer": CrashingFiler(world.imap, after=True)},
        "before-remove": {"source": CrashingRemove(world.imap, after=False)},
        "after-remove": {"source": CrashingRemove(world.imap, after=True)},
    }[step]
    with pytest.raises(Crash):
        world.run(**parts)  # type: ignore[arg-type]
    # The dead process's connection goes with it.
    world.imap.close()


@pytest.mark.parametrize(
    "step",
    ["sealing", "before-file", "after-file", "before-remove", "after-remove"],
)
def test_a_stop_after_which_nothing_can_have_been_sent_twice_resumes_to_done(
    world: World, pki: TestPki, step: str
) -> None:
    world.put_draft(draft(pki, f"crash-{step}"))
    _crash_once(world, step)
    world.run()
    [item] = world.journal.items()
    assert item.state == ItemState.DONE
    assert len(world.smtpd.received) == 1
    [sent] = world.folder(SENT)  # filed once, even when the first filing went through
    assert f"Secret body crash-{step}".encode() in open_as(pki, sent, "alice")
    assert world.folder(OUTBOX) == []
    assert world.notices() == []


@pytest.mark.parametrize("step", ["before-submit", "after-submit"])
def test_a_stop_while_submitting_makes_the_item_uncertain_and_never_resends_on_its_own(
    world: World, pki: TestPki, step: str
) -> None:
    world.put_draft(draft(pki, f"crash-{step}"))
    _crash_once(world, step)
    accepted = len(world.smtpd.received)  # 1 when the server took it before the stop
    report = world.run()
    world.run()
    [item] = world.journal.items()
    assert report.uncertain == [item.id]
    assert item.state == ItemState.UNCERTAIN
    assert len(world.smtpd.received) == accepted
    [notice] = world.notices()
    assert f"smime-companion outbox retry {item.id}" in notice
    assert len(world.folder(OUTBOX)) == 1  # the draft is kept while the user decides

    world.journal.retry(item.id, world.clock())
    world.run()
    assert len(world.smtpd.received) == accepted + 1
    assert world.journal.item(item.id).state == ItemState.DONE
    assert world.folder(OUTBOX) == []
    assert len(world.folder(SENT)) == 1


def test_a_stop_between_two_copies_resends_only_the_copy_not_known_to_be_accepted(
    world: World, pki: TestPki
) -> None:
    class SecondCopyDies:
        def __init__(self, real: Submitter) -> None:
            self.real, self.calls = real, 0

        def submit(self, message: bytes, sender: str, recipients: Sequence[str]) -> None:
            self.calls += 1
            if self.calls == 2:
                raise Crash("before the Bcc copy")
            self.real.submit(message, sender, recipients)

    world.put_draft(draft(pki, "two", to=("bob",), bcc=("carol",)))
    with pytest.raises(Crash):
        world.run(submitter=SecondCopyDies(world.submitter))
    world.imap.close()
    world.run()
    [item] = world.journal.items()
    assert item.state == ItemState.UNCERTAIN
    world.journal.retry(item.id, world.clock())
    world.run()
    recipients = sorted(r for m in world.smtpd.received for r in m.recipients)
    assert recipients == ["bob@example.org", "carol@example.org"]  # bob's copy went once
    assert world.journal.item(item.id).state == ItemState.DONE

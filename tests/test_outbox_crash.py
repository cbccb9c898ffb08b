"""A stop at every journal step resumes correctly: no draft lost, nothing delivered twice, every
item ends ``done`` or ``uncertain`` (with a notice).

The stop is made by a wrapper around a real adapter, just before or just after the real
operation: in process by raising :class:`Crash` (a BaseException, so nothing in the pipeline
catches it, as nothing runs after a SIGKILL), and for real by a pass in a subprocess that kills
itself with SIGKILL. A fresh pipeline on the same journal then plays the next start.
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator, Sequence

import pytest

from smime_companion.outbox.protocols import Submitter
from smime_companion.store.journal import ItemState
from smime_companion.testing.pki import TestPki
from tests.dovecot import Dovecot, running_dovecot
from tests.outbox_world import (
    OUTBOX,
    SENT,
    STEPS,
    World,
    draft,
    dying_parts,
    killed_pass_command,
    make_world,
    open_as,
)
from tests.smtpd import SmtpServer, running_smtpd


class Crash(BaseException):
    """The process dies here."""


def _die(where: str) -> None:
    raise Crash(where)


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
    with pytest.raises(Crash):
        world.run(**dying_parts(world, step, _die))  # type: ignore[arg-type]
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


@pytest.mark.parametrize("step", STEPS)
def test_a_process_killed_with_sigkill_at_any_step_loses_nothing_and_sends_nothing_twice(
    world: World, pki: TestPki, step: str
) -> None:
    world.put_draft(draft(pki, f"kill-{step}"))
    proc = subprocess.run(killed_pass_command(world, step), capture_output=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode(errors="replace")
    accepted = len(world.smtpd.received)
    world.run()
    world.run()
    [item] = world.journal.items()
    # The server has the message exactly when the kill came after it accepted it.
    assert accepted == (1 if STEPS.index(step) >= STEPS.index("after-submit") else 0)
    if step in ("before-submit", "after-submit"):
        assert item.state == ItemState.UNCERTAIN
        assert len(world.smtpd.received) == accepted  # nothing sent again on its own
        assert any(f"outbox retry {item.id}" in n for n in world.notices())
        assert len(world.folder(OUTBOX)) == 1
    else:
        assert item.state == ItemState.DONE
        assert len(world.smtpd.received) == 1
        assert len(world.folder(SENT)) == 1
        assert world.folder(OUTBOX) == []

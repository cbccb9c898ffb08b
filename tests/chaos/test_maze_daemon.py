"""A daemon fed certificate mazes between good messages keeps going (issue 14): ``run --once``,
as a subprocess against a real Dovecot and aiosmtpd, stores every message (the good ones
``valid``, the mazes ``untrusted``), and its outbox pass runs and sends the draft waiting there.
Before the path search was bounded, the first maze held the pass for about 21 minutes: nothing
after it was stored and the outbox never ran.
"""

from __future__ import annotations

import pytest

from smime_companion.core.verdicts import SignatureStatus
from tests.chaos import costly
from tests.chaos.harness import (
    FOLDER,
    Setup,
    cached_summaries,
    check_cache,
    folder_message_ids,
    put_drafts,
)
from tests.dovecot import signed_mail
from tests.outbox_world import SENT

pytestmark = pytest.mark.timeout(300)


@pytest.mark.parametrize("open_workers", [0, 1], ids=["in-process", "worker"])
def test_mazes_between_good_messages_cost_the_daemon_nothing_and_the_outbox_runs(
    setup: Setup, open_workers: int
) -> None:
    setup.write_config(open_workers=open_workers)
    setup.trust_correspondent()  # drafts go to alice: her certificate must be in the store
    mail = [
        signed_mail(setup.pki, "first"),
        costly.self_issued_maze(16, 16, "Maze self-issued"),
        signed_mail(setup.pki, "middle"),
        costly.cross_certified_mesh(7, 8, "Maze mesh"),
        signed_mail(setup.pki, "last"),
    ]
    for raw in mail:
        setup.dovecot.deliver("alice", raw, FOLDER)
    [draft_id] = put_drafts(setup, 1, "after-the-maze")

    proc = setup.run_once(timeout=240)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")

    state = check_cache(setup)
    assert state.integrity == "ok" and state.rows == len(mail)
    cached = cached_summaries(setup)
    for marker in ("first", "middle", "last"):
        assert cached[f"Test {marker}"].signature == SignatureStatus.VALID
    for maze in ("Maze self-issued", "Maze mesh"):
        assert cached[maze].signature == SignatureStatus.UNTRUSTED
    # The outbox pass ran after the sync: the draft was sealed, sent and filed.
    received = setup.smtpd.received if setup.smtpd is not None else []
    assert len(received) == 1
    assert draft_id in folder_message_ids(setup, SENT)

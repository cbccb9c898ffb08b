"""SIGKILL ``run --once`` at random moments while it processes the outbox, restart it until it
completes: no draft lost, no message delivered twice (counted at the SMTP sink by Message-ID).

A kill while a message is being submitted leaves the item ``uncertain`` (the server may have it):
it is never resent on its own, the draft stays in the outbox and a notice asks the user. So a draft
is accounted for when it was delivered once, or is still in the outbox with an uncertain item.

CI counts: 5 drafts, 3 trials of 3 kills each. ``bench/chaos.py outbox`` runs 50 x 30.
"""

from __future__ import annotations

import random

import pytest

from tests.chaos.harness import Setup, check_outbox, kill_until_done, put_drafts, timed_run

DRAFTS = 5
TRIALS = 3
KILLS_PER_TRIAL = 3

pytestmark = pytest.mark.timeout(300)


def test_outbox_processing_killed_at_random_moments_loses_no_draft_and_sends_none_twice(
    setup: Setup,
) -> None:
    setup.trust_correspondent()
    # One unkilled pass over as many drafts: its duration is the window the kills fall in.
    put_drafts(setup, DRAFTS, "reference")
    window = timed_run(setup)
    assert sum(check_outbox(setup).delivered.values()) == DRAFTS
    rng = random.Random(8)
    kills = 0
    for trial in range(TRIALS):
        ids = put_drafts(setup, DRAFTS, f"t{trial}")
        report = kill_until_done(setup, rng, KILLS_PER_TRIAL, window=window)
        kills += report.kills
        state = check_outbox(setup)
        assert state.twice() == [], f"trial {trial}: {report}"
        assert state.lost(ids) == [], f"trial {trial}: {report}"
        # Each draft done (sent once, filed once) or, killed while submitting, uncertain: kept
        # in the outbox and asked about, never resent blindly.
        assert [state.unaccounted(i) for i in ids if state.unaccounted(i)] == []
    assert kills > 0

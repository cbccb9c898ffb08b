"""SIGKILL ``run --once`` at random moments during a first sync, restart it until it completes:
every message is cached exactly once and the cache passes SQLite's integrity check.

CI counts: 200 messages, 3 trials of 2 kills each. ``bench/chaos.py sync`` runs 2,000 x 30.
"""

from __future__ import annotations

import random

import pytest

from tests.chaos.harness import Setup, check_cache, fill_folder, kill_until_done, timed_run

MESSAGES = 200
TRIALS = 3
KILLS_PER_TRIAL = 2

pytestmark = pytest.mark.timeout(300)


def test_a_first_sync_killed_at_random_moments_caches_every_message_exactly_once(
    setup: Setup,
) -> None:
    fill_folder(setup, MESSAGES)
    # How long a whole first sync takes here, so the kills fall inside one.
    reference = timed_run(setup)
    assert check_cache(setup).rows == MESSAGES
    rng = random.Random(8)  # fixed: a failure can be replayed
    kills = 0
    for trial in range(TRIALS):
        # A fresh cache each trial: the kills hit a first sync, not a resumed one.
        for path in sorted(setup.cache_dir.rglob("*"), reverse=True):
            path.unlink() if path.is_file() else path.rmdir()
        report = kill_until_done(setup, rng, KILLS_PER_TRIAL, window=reference)
        state = check_cache(setup)
        assert state.integrity == "ok", f"trial {trial}: {state.integrity}"
        assert state.rows == MESSAGES, f"trial {trial}: {state.rows} rows, {report}"
        assert max(state.per_uid.values()) == 1
        assert set(state.subjects) == {f"Chaos {n}" for n in range(MESSAGES)}
        assert max(state.subjects.values()) == 1
        kills += report.kills
    assert kills > 0  # at least some runs really died mid-way (not all finished before the kill)

"""Crash chaos at the issue's counts: SIGKILL ``smime-companion run --once`` at random moments.

Run: ``.venv/bin/python bench/chaos.py [--only sync|outbox] [--messages 2000] [--sync-trials 30]
[--drafts 50] [--outbox-trials 30] [--kills 2] [--seed 8]``

The same scenarios as ``tests/chaos/test_crash_sync.py`` and ``test_crash_outbox.py`` (CI runs
them with 200 messages / 5 drafts and 3 trials), through the same harness
(``tests/chaos/harness.py``), on a throwaway Dovecot and aiosmtpd:

1. sync: a folder of ``--messages`` messages encrypted to the identity. Each trial starts with an
   empty cache; ``run --once`` is started and SIGKILLed after a random delay (uniform between 0
   and the duration of one whole first sync, measured first) ``--kills`` times, then run to its
   end. Checked: every message cached exactly once, ``PRAGMA integrity_check`` ok.
2. outbox: one unkilled pass over ``--drafts`` drafts is timed first (the kills' window); then
   each trial APPENDs ``--drafts`` drafts to the outbox folder and kills and restarts the same
   way. Checked: no draft lost (delivered, or kept with an ``uncertain`` item when the kill came
   during submission), none delivered twice (Message-IDs at the SMTP sink), each delivered draft
   filed in Sent once.

Prints one line per trial and a summary; exits 1 when any check failed. ``--json FILE`` writes
the figures (for ``docs/reliability.md``).
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # the harness lives with the tests

from smime_companion.testing.pki import make_test_pki  # noqa: E402
from tests.chaos.harness import (  # noqa: E402
    Setup,
    check_cache,
    check_outbox,
    fill_folder,
    kill_until_done,
    put_drafts,
    timed_run,
)
from tests.dovecot import running_dovecot  # noqa: E402
from tests.smtpd import running_smtpd  # noqa: E402


@contextmanager
def world(work: Path) -> Iterator[Setup]:
    """Servers, a PKI and a written config in ``work``; everything stopped afterwards."""
    pki = make_test_pki(work / "pki")
    for dovecot in running_dovecot():
        for smtpd in running_smtpd("starttls", dovecot.cert.parent):
            setup = Setup(pki, dovecot, smtpd, work / "home")
            setup.write_config()
            yield setup


def _clear(directory: Path) -> None:
    shutil.rmtree(directory, ignore_errors=True)


def sync_chaos(
    setup: Setup, messages: int, trials: int, kills: int, rng: random.Random
) -> dict[str, Any]:
    fill_folder(setup, messages)
    reference = timed_run(setup)
    assert check_cache(setup).rows == messages, "the reference sync did not cache every message"
    print(f"sync: {messages} messages, one whole first sync takes {reference:.1f} s", flush=True)
    failures, total_kills, total_runs = [], 0, 0
    for trial in range(trials):
        _clear(setup.cache_dir)
        report = kill_until_done(setup, rng, kills, window=reference, finish_timeout=900)
        state = check_cache(setup)
        problems = []
        if state.integrity != "ok":
            problems.append(f"integrity: {state.integrity}")
        if state.rows != messages:
            problems.append(f"{state.rows} rows for {messages} messages")
        if state.per_uid and max(state.per_uid.values()) > 1:
            problems.append("a UID cached twice")
        if len(state.subjects) != messages or max(state.subjects.values()) > 1:
            problems.append("a message missing or cached twice")
        total_kills += report.kills
        total_runs += report.runs
        if problems:
            failures.append({"trial": trial, "problems": problems})
        print(
            f"  trial {trial + 1}/{trials}: {report.kills} kills at "
            + ", ".join(f"{d:.2f}s" for d in report.delays)
            + f", {report.runs} runs; {'FAILED ' + '; '.join(problems) if problems else 'ok'}",
            flush=True,
        )
    return {
        "messages": messages,
        "trials": trials,
        "kills": total_kills,
        "runs": total_runs,
        "reference_seconds": round(reference, 2),
        "failures": failures,
    }


def outbox_chaos(
    setup: Setup, drafts: int, trials: int, kills: int, rng: random.Random
) -> dict[str, Any]:
    setup.trust_correspondent()
    # One whole pass over as many drafts, unkilled, sets the window the kills fall in.
    put_drafts(setup, drafts, "reference")
    window = timed_run(setup)
    reference = check_outbox(setup)
    assert sum(reference.delivered.values()) == drafts, "the reference pass did not send all"
    print(f"outbox: {drafts} drafts a trial, one whole pass takes {window:.1f} s", flush=True)
    failures, total_kills, total_runs, uncertain, delivered = [], 0, 0, 0, 0
    for trial in range(trials):
        ids = put_drafts(setup, drafts, f"b{trial}")
        report = kill_until_done(setup, rng, kills, window=window, finish_timeout=900)
        state = check_outbox(setup)
        problems = []
        if state.twice():
            problems.append(f"delivered twice: {state.twice()}")
        if state.lost(ids):
            problems.append(f"lost: {state.lost(ids)}")
        for message_id in ids:
            problem = state.unaccounted(message_id)
            if problem:
                problems.append(problem)
            elif state.states.get(message_id) == "uncertain":
                uncertain += 1
            else:
                delivered += 1
        total_kills += report.kills
        total_runs += report.runs
        if problems:
            failures.append({"trial": trial, "problems": problems})
        print(
            f"  trial {trial + 1}/{trials}: {report.kills} kills, {report.runs} runs; "
            + ("FAILED " + "; ".join(problems) if problems else "ok"),
            flush=True,
        )
    return {
        "drafts": drafts,
        "trials": trials,
        "reference_seconds": round(window, 2),
        "kills": total_kills,
        "runs": total_runs,
        "done": delivered,
        "kept_uncertain": uncertain,
        "failures": failures,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["sync", "outbox"])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--sync-trials", type=int, default=30)
    parser.add_argument("--drafts", type=int, default=50)
    parser.add_argument("--outbox-trials", type=int, default=30)
    parser.add_argument("--kills", type=int, default=2, help="kills per trial before the last run")
    parser.add_argument("--seed", type=int, default=8)
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    args = parser.parse_args()
    # SIGTERM unwinds like an exception, so the servers are stopped and the directories removed.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(143))
    rng = random.Random(args.seed)
    figures: dict[str, Any] = {"seed": args.seed, "kills_per_trial": args.kills}
    started = time.monotonic()
    if args.only in (None, "sync"):
        with tempfile.TemporaryDirectory(prefix="chaos-sync-") as work, world(Path(work)) as setup:
            figures["sync"] = sync_chaos(setup, args.messages, args.sync_trials, args.kills, rng)
    if args.only in (None, "outbox"):
        with (
            tempfile.TemporaryDirectory(prefix="chaos-outbox-") as work,
            world(Path(work)) as setup,
        ):
            setup.write_config(folders=("Chaos",))
            figures["outbox"] = outbox_chaos(
                setup, args.drafts, args.outbox_trials, args.kills, rng
            )
    figures["seconds"] = round(time.monotonic() - started, 1)
    failed = sum(len(part["failures"]) for part in figures.values() if isinstance(part, dict))
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    print("FAILED" if failed else "all trials passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

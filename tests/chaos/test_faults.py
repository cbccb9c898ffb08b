"""Faults around ``run --once``: each ends in one clear logged line, and the next run recovers
without loss or duplicates.

Faults already covered elsewhere (referenced in ``docs/reliability.md``, not repeated here):
SMTP 421/451, 554 and a connection closed after DATA (``tests/test_outbox_imap.py``,
``tests/test_smtp.py``), a server stopped between sync batches (``tests/test_sync_dovecot.py``),
a restart during IDLE (``tests/test_daemon.py``), the cache's disk full at the ``Cache`` level
and a missing keyring entry (``tests/test_cache_at_rest.py``, ``tests/test_cache_keyring.py``).
"""

from __future__ import annotations

import datetime as dt
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from smime_companion.store.journal import ItemState
from smime_companion.testing.pki import TestPki
from tests.chaos.harness import Setup, check_cache, fill_folder
from tests.dovecot import Dovecot
from tests.outbox_world import OUTBOX, World, draft, make_world
from tests.smtpd import SmtpServer

pytestmark = pytest.mark.timeout(180)


@pytest.fixture()
def world(pki: TestPki, dovecot: Dovecot, smtpd: SmtpServer) -> Iterator[World]:
    """The outbox tests' world (its pipeline takes the clock as a function)."""
    yield from make_world(pki, dovecot, smtpd)


def test_dovecot_restarted_during_a_first_sync_fails_the_pass_in_one_line_and_the_next_completes(
    setup: Setup,
) -> None:
    messages = 300
    fill_folder(setup, messages)
    proc = subprocess.Popen(
        setup.command("run", "--once"),
        env=setup.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=setup.home,
    )
    # Restart the server as soon as the first messages are in the cache: mid-FETCH.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if (setup.cache_dir / "cache.db").exists():
            try:
                if check_cache(setup).rows > 0:
                    break
            except Exception:  # noqa: BLE001 - the database may be mid-creation; look again
                pass
        time.sleep(0.02)
    setup.dovecot.restart()
    out, err = proc.communicate(timeout=120)
    text = out.decode() + err.decode(errors="replace")
    if proc.returncode != 0:  # the cut came while the pass was talking to the server
        assert "Traceback" not in text
        [line] = [line for line in out.decode().splitlines() if line.startswith("work")][:1]
        assert "FAILED" in line or "cannot" in line or "lost" in line, text
    rerun = setup.run_once()
    assert rerun.returncode == 0, rerun.stdout.decode() + rerun.stderr.decode(errors="replace")
    state = check_cache(setup)
    assert state.integrity == "ok"
    assert state.rows == messages and max(state.per_uid.values()) == 1


def _mount_tmpfs(where: Path, size: str) -> bool:
    where.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(where)],
        capture_output=True,
    )
    return proc.returncode == 0


def test_the_cache_disk_full_during_a_sync_is_one_line_and_after_space_is_freed_nothing_is_lost(
    setup: Setup,
) -> None:
    mountpoint = setup.cache_dir
    # Room for the databases, their logs and a few batches, not for 600 messages. (512k held a
    # batch until cache migration 3 added the reader's indexes and the daemon kept daemon.lock
    # and trust.sha256 beside the cache.)
    if not _mount_tmpfs(mountpoint, "800k"):
        pytest.skip("cannot mount a small tmpfs here (needs root and mount permission)")
    try:
        messages = 600
        fill_folder(setup, messages)
        full = setup.run_once(verbose=False)
        text = full.stdout.decode() + full.stderr.decode(errors="replace")
        assert full.returncode != 0, text
        assert "Traceback" not in text
        assert "disk" in text and "full" in text, text
        kept = check_cache(setup)
        assert kept.integrity == "ok" and 0 < kept.rows < messages
        # Space is freed (the tmpfs grows); the next pass stores the rest, each message once.
        subprocess.run(["mount", "-o", "remount,size=64m", str(mountpoint)], check=True)
        again = setup.run_once()
        assert again.returncode == 0, again.stdout.decode() + again.stderr.decode()
        state = check_cache(setup)
        assert state.integrity == "ok"
        assert state.rows == messages and max(state.per_uid.values()) == 1
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)


def test_an_unavailable_keyring_is_one_line_and_the_pass_touches_nothing(setup: Setup) -> None:
    # The config names no key source: the key is looked up in the OS keyring, which has none.
    text = setup.config.read_text().replace('key_env = "CHAOS_CACHE_KEY"\n', "")
    setup.config.write_text(text)
    env = {**setup.env(), "PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring"}
    proc = subprocess.run(
        setup.command("run", "--once"), env=env, capture_output=True, timeout=60, cwd=setup.home
    )
    err = proc.stderr.decode(errors="replace")
    assert proc.returncode != 0
    assert "Traceback" not in err and "keyring" in err.lower()
    assert (
        len([line for line in err.splitlines() if "ERROR" in line or "smime-companion" in line])
        <= 2
    )
    assert not (setup.cache_dir / "cache.db").exists()  # nothing written without the key


def test_a_clock_jumping_back_and_forth_neither_loses_a_deferred_draft_nor_sends_it_twice(
    world: World, pki: TestPki
) -> None:
    world.smtpd.answer_next("451 4.3.0 Try again later")
    world.put_draft(draft(pki, "clock"))
    world.run()
    [item] = world.journal.items()
    assert item.state == ItemState.SEALED
    # A day back: the retry time is now further ahead than any backoff, which only a clock
    # jump explains; the draft is not made to wait out the jump: it goes now, once.
    world.clock_offset = -dt.timedelta(days=1)
    world.run()
    assert len(world.smtpd.received) == 1
    assert world.journal.item(item.id).state == ItemState.DONE
    # A year forward: nothing is sent again.
    world.clock_offset = dt.timedelta(days=365)
    world.run()
    assert len(world.smtpd.received) == 1
    # And back again: a done item stays done.
    world.clock_offset = -dt.timedelta(days=30)
    world.run()
    assert len(world.smtpd.received) == 1
    assert world.folder(OUTBOX) == []

"""One outbox pass at a time: a second process (or thread) skips its pass while the lock is held,
and the lock dies with its holder."""

from __future__ import annotations

import datetime as dt
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from smime_companion.imap.outbox_source import ImapOutbox
from smime_companion.imap.session import ServerSpec
from smime_companion.outbox.localdir import LocalDirectory
from smime_companion.outbox.pipeline import OutboxBusy, OutboxPipeline, OutboxSettings, outbox_lock
from smime_companion.outbox.plan import CertificateList
from smime_companion.smtp import SmtpSpec, SmtpSubmitter
from smime_companion.store.journal import Journal
from tests.dovecot import free_port


def _pass(cache: Path, outbox: Path) -> list[int]:
    # Nothing is in the outbox, so the servers (nobody listens there) are never contacted.
    nowhere = ServerSpec("127.0.0.1", free_port(), "alice", lambda: "x", name="alice")
    imap = ImapOutbox(nowhere, "S/MIME Outbox", "Sent")
    with outbox_lock(cache), Journal.open(cache, None) as journal:
        report = OutboxPipeline(
            journal,
            LocalDirectory(outbox),
            SmtpSubmitter(SmtpSpec("127.0.0.1", free_port(), None, lambda: "")),
            imap,
            imap,
            CertificateList([]),
            OutboxSettings("alice/local", (), "alice@example.org"),
            clock=lambda: dt.datetime.now(dt.UTC),
        ).run_pass()
    assert report.errors == []
    return report.done


def test_a_pass_is_skipped_while_another_holds_the_outbox_lock(tmp_path: Path) -> None:
    (tmp_path / "outbox").mkdir()
    with outbox_lock(tmp_path / "cache"):
        with pytest.raises(OutboxBusy, match="another smime-companion process"):
            _pass(tmp_path / "cache", tmp_path / "outbox")
    assert _pass(tmp_path / "cache", tmp_path / "outbox") == []


def test_the_lock_of_a_killed_process_is_free_at_once(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    (tmp_path / "outbox").mkdir()
    code = (
        "import os, signal, sys; from pathlib import Path; "
        "from smime_companion.outbox.pipeline import outbox_lock\n"
        "with outbox_lock(Path(sys.argv[1])):\n"
        "    print('held', flush=True); os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(cache)], capture_output=True, timeout=30)
    assert proc.stdout == b"held\n" and proc.returncode == -signal.SIGKILL
    assert _pass(cache, tmp_path / "outbox") == []

"""One outbox pass for one account, from already built parts, under the outbox lock.

``runtime.process_outbox`` builds the parts from the config (the IMAP adapter, the SMTP
submitter, the certificate lookup, the journal) and calls :func:`process_account`; the daemon and
``outbox run`` call that. Only one process may run a pass at a time: the journal's rule that
``submitting`` at the start of a pass means "interrupted" depends on it, so a pass takes an
exclusive lock file beside the journal and a second process skips its pass instead of waiting.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

from smime_companion.errors import SmimeCompanionError, UsageError
from smime_companion.outbox.localdir import LocalDirectory
from smime_companion.outbox.pipeline import OutboxPipeline, OutboxSettings, PassReport
from smime_companion.outbox.plan import CertificateLookup
from smime_companion.outbox.protocols import Notifier, OutboxSource, SentFiler, Submitter
from smime_companion.store.journal import Journal

log = logging.getLogger(__name__)

LOCK_FILENAME = "outbox.lock"


class OutboxBusy(UsageError):
    """Another process is running an outbox pass on the same journal right now."""


@contextlib.contextmanager
def outbox_lock(directory: Path) -> Iterator[None]:
    """Hold the exclusive outbox lock of ``directory`` (the cache directory) while inside.

    Raises :class:`OutboxBusy` at once when another process holds it. The lock is an advisory
    ``flock`` that the kernel releases when the holder dies, so a crash never leaves it stale.
    """
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(directory / LOCK_FILENAME, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OutboxBusy(
                "another smime-companion process is processing the outbox right now"
            ) from None
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def process_account(
    *,
    journal: Journal,
    lock_directory: Path,
    source: OutboxSource,
    submitter: Submitter,
    filer: SentFiler,
    notifier: Notifier,
    lookup: CertificateLookup,
    settings: OutboxSettings,
    clock: Callable[[], datetime],
) -> PassReport:
    """One pass over one outbox (an account's IMAP folder or a local directory).

    Returns the :class:`PassReport`; a failure of the source, the Sent folder or the notices is
    in its ``errors`` (and logged as one line), never raised, so one broken account does not stop
    the others. Raises :class:`OutboxBusy` when another process is running a pass.
    """
    with outbox_lock(lock_directory):
        pipeline = OutboxPipeline(
            journal, source, submitter, filer, notifier, lookup, settings, clock=clock
        )
        try:
            return pipeline.run_pass()
        except SmimeCompanionError as exc:
            log.error("outbox %s: %s", settings.account, exc)
            report = PassReport(settings.account)
            report.errors.append(str(exc))
            return report


def local_source(directory: Path) -> LocalDirectory:
    """The local outbox directory, created (0700) when missing."""
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise UsageError(f"cannot create the outbox directory {directory}: {exc}") from None
    return LocalDirectory(directory)

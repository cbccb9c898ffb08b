"""One IDLE connection per watched folder: it tells the daemon's sync loop "this folder
changed", lends the loop its connection for that pass, and never touches the cache itself.

Each watcher holds its own connection in IDLE, re-issued every 25 minutes (before servers'
29-minute limit, RFC 2177), or polls with NOOP where IDLE is missing. On any failure it backs
off (:mod:`smime_companion.backoff`) and reconnects, until it is halted.

Why lend the connection: the server process behind it has just brought its view of the folder
up to date (that is how it noticed the new message), while the account's sync connection is
served by another process that must do the same work again before it answers. On a Dovecot
Maildir of 1,000,000 messages that second rescan, and the two processes rescanning side by side
while the watcher re-entered IDLE, cost seconds per new message (docs/performance.md). While
the pass runs the watcher waits; a change in the meantime is reported when its IDLE resumes.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable
from typing import Protocol

from smime_companion.backoff import AUTH_BACKOFF_BASE_SECONDS, Backoff, auth_backoff
from smime_companion.errors import AuthenticationFailed, SmimeCompanionError
from smime_companion.imap.session import ServerSpec
from smime_companion.sync.protocols import Mailbox

log = logging.getLogger(__name__)

IDLE_RENEW_SECONDS = 25 * 60  # servers may drop an IDLE after 29 minutes (RFC 2177)
POLL_SECONDS = 60.0  # NOOP polling interval where IDLE is missing
# How long a lent connection waits to be taken (the loop may be busy with another account's
# pass, or skip this one while the account backs off); past it the watcher takes it back and the
# loop uses its own connection when it comes to the change.
LOAN_SECONDS = 60.0


class _Loan:
    def __init__(self, box: Mailbox) -> None:
        self.box = box
        self.taken = False
        self.returned = threading.Event()


class Loans:
    """Watchers' connections on loan to the sync loop, one per (account, folder) at most."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loans: dict[tuple[str, str], _Loan] = {}

    def offer(self, account: str, folder: str, box: Mailbox) -> _Loan:
        with self._lock:
            loan = self._loans[(account, folder)] = _Loan(box)
        return loan

    def borrow(self, account: str, folder: str) -> Mailbox | None:
        """The connection a watcher lent for ``folder`` (it has the folder open), or None; the
        loop must :meth:`give_back` it when the change is handled."""
        with self._lock:
            loan = self._loans.get((account, folder))
            if loan is None:
                return None
            loan.taken = True
            return loan.box

    def give_back(self, account: str, folder: str) -> None:
        """The change of ``folder`` is handled: its watcher may go back to IDLE."""
        with self._lock:
            loan = self._loans.pop((account, folder), None)
        if loan is not None:
            loan.returned.set()

    def withdraw(self, account: str, folder: str, loan: _Loan) -> bool:
        """Take ``loan`` back unless the loop is using it. Returns whether the watcher has its
        connection to itself again (also when the loan was returned, or is no longer on offer)."""
        with self._lock:
            if self._loans.get((account, folder)) is not loan:
                return True
            if loan.taken:
                return False
            del self._loans[(account, folder)]
            return True


class WatchOwner(Protocol):
    """What a watcher needs from the daemon that runs it."""

    stop: threading.Event
    changes: queue.Queue[tuple[str, str]]
    connector: Callable[[ServerSpec], Mailbox]

    def set_watch_state(self, account: str, folder: str, state: str) -> None: ...


class FolderWatcher(threading.Thread):
    """Keeps one folder in IDLE on its own connection and posts its changes to the daemon."""

    def __init__(
        self, owner: WatchOwner, loans: Loans, account: str, spec: ServerSpec, folder: str
    ) -> None:
        super().__init__(name=f"watch {account}/{folder}", daemon=True)
        self.owner = owner
        self.loans = loans
        self.account = account
        self.spec = spec
        self.folder = folder
        self.halt = threading.Event()
        self.backoff = Backoff()

    def _stopping(self) -> bool:
        return self.halt.is_set() or self.owner.stop.is_set()

    def run(self) -> None:
        """Connect, IDLE, post changes; on any failure back off and reconnect, until halted."""
        while not self._stopping():
            box: Mailbox | None = None
            try:
                box = self.owner.connector(self.spec)
                box.examine(self.folder)
                # Mail may have arrived between the last sync and this IDLE (or while we were
                # disconnected): ask for a sync; an unchanged folder costs one EXAMINE.
                self.owner.changes.put((self.account, self.folder))
                self.backoff.reset()
                self._watch(box)
            except Exception as exc:  # never let the watcher die: back off and reconnect
                if not isinstance(exc, SmimeCompanionError):
                    log.exception("watch %s/%s: unexpected error", self.account, self.folder)
                refused = isinstance(exc, AuthenticationFailed)
                if refused and self.backoff.base < AUTH_BACKOFF_BASE_SECONDS:
                    self.backoff = auth_backoff()
                delay = self.backoff.next_delay()
                self.owner.set_watch_state(self.account, self.folder, "reconnecting")
                # A refused login is the account's news, said once by the sync loop.
                (log.debug if refused else log.warning)(
                    "watch %s/%s: %s; retrying in %.0f s",
                    self.account,
                    self.folder,
                    exc,
                    delay,
                )
                self.halt.wait(delay)
                if self.owner.stop.is_set():
                    break
            finally:
                if box is not None:
                    box.close()
        self.owner.set_watch_state(self.account, self.folder, "stopped")

    def _watch(self, box: Mailbox) -> None:
        idle = "IDLE" in box.capabilities
        self.owner.set_watch_state(self.account, self.folder, "idle" if idle else "polling")
        while not self._stopping():
            box.idle_start()
            renew_at = time.monotonic() + IDLE_RENEW_SECONDS
            changed = False
            try:
                while not self._stopping() and time.monotonic() < renew_at:
                    if idle:
                        changed = box.idle_wait(1.0)
                    else:
                        self.halt.wait(POLL_SECONDS)
                        changed = box.idle_wait(0)
                    if changed:
                        break
            finally:
                box.idle_done()
            if changed:
                log.info("watch %s/%s: change reported", self.account, self.folder)
                loan = self.loans.offer(self.account, self.folder, box)
                self.owner.changes.put((self.account, self.folder))
                self._await_return(loan)

    def _await_return(self, loan: _Loan) -> None:
        """Wait until the loop has handled the change with our connection, or until nobody has
        taken it for LOAN_SECONDS (or we stop): then take it back."""
        deadline = time.monotonic() + LOAN_SECONDS
        while not loan.returned.wait(0.5):
            if time.monotonic() > deadline or self._stopping():
                if self.loans.withdraw(self.account, self.folder, loan):
                    return


class FolderWatchers:
    """The daemon's watchers, one per (account, folder)."""

    def __init__(self, owner: WatchOwner) -> None:
        self.owner = owner
        self.loans = Loans()
        self._watchers: list[FolderWatcher] = []

    def __len__(self) -> int:
        return len(self._watchers)

    def start_missing(self, targets: Iterable[tuple[str, ServerSpec, str]]) -> None:
        """Start a watcher for each (account, server, folder) that has no live one (at start,
        and for an account that was down when the others started)."""
        watched = {(w.account, w.folder) for w in self._watchers if w.is_alive()}
        for account, spec, folder in targets:
            if (account, folder) not in watched:
                watcher = FolderWatcher(self.owner, self.loans, account, spec, folder)
                self._watchers.append(watcher)
                watcher.start()

    def stop(self) -> None:
        """Halt every watcher and wait (up to 10 s each) for it to close its connection."""
        for watcher in self._watchers:
            watcher.halt.set()
        for watcher in self._watchers:
            watcher.join(timeout=10)
        self._watchers = []

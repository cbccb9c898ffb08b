"""One IDLE connection per watched folder: it only tells the daemon's sync loop "this folder
changed" and never touches the cache.

Each watcher holds its own connection in IDLE, re-issued every 25 minutes (before servers'
29-minute limit, RFC 2177), or polls with NOOP where IDLE is missing. On any failure it backs
off (:mod:`smime_companion.backoff`) and reconnects, until it is halted.
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


class WatchOwner(Protocol):
    """What a watcher needs from the daemon that runs it."""

    stop: threading.Event
    changes: queue.Queue[tuple[str, str]]
    connector: Callable[[ServerSpec], Mailbox]

    def set_watch_state(self, account: str, folder: str, state: str) -> None: ...


class FolderWatcher(threading.Thread):
    """Keeps one folder in IDLE on its own connection and posts its changes to the daemon."""

    def __init__(self, owner: WatchOwner, account: str, spec: ServerSpec, folder: str) -> None:
        super().__init__(name=f"watch {account}/{folder}", daemon=True)
        self.owner = owner
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
                self.owner.changes.put((self.account, self.folder))


class FolderWatchers:
    """The daemon's watchers, one per (account, folder)."""

    def __init__(self, owner: WatchOwner) -> None:
        self.owner = owner
        self._watchers: list[FolderWatcher] = []

    def __len__(self) -> int:
        return len(self._watchers)

    def start_missing(self, targets: Iterable[tuple[str, ServerSpec, str]]) -> None:
        """Start a watcher for each (account, server, folder) that has no live one (at start,
        and for an account that was down when the others started)."""
        watched = {(w.account, w.folder) for w in self._watchers if w.is_alive()}
        for account, spec, folder in targets:
            if (account, folder) not in watched:
                watcher = FolderWatcher(self.owner, account, spec, folder)
                self._watchers.append(watcher)
                watcher.start()

    def stop(self) -> None:
        """Halt every watcher and wait (up to 10 s each) for it to close its connection."""
        for watcher in self._watchers:
            watcher.halt.set()
        for watcher in self._watchers:
            watcher.join(timeout=10)
        self._watchers = []

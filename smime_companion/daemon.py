"""The sync daemon: wires the config, the cache, the identities and the IMAP adapter together.

Threads and who owns what:

- The **sync loop** (the thread that calls :meth:`Daemon.run`, normally the main thread) owns the
  cache and one sync connection per account; it is the only thread that writes the cache.
  During a pass over a folder, a **reader** thread has that connection to itself and fetches
  ahead, and the **opening workers** (processes, see :mod:`smime_companion.sync.opening`) open and
  index what it fetched; they are started with the daemon and restarted with new keys on reload.
- One **watcher** thread per (account, folder) holds its own connection in IDLE (re-issued every
  25 minutes, before servers' 29-minute limit; NOOP polling where IDLE is missing) and only
  posts "this folder changed" to the sync loop's queue.
- Each pass of an account ends with its outbox pass (``runtime.process_outbox``, called
  directly, when the account has SMTP and the daemon has an outbox journal), also run every
  minute between passes and at once when a watcher sees the outbox folder change (IDLE) or a
  draft land in the local outbox directory (watchdog); every stored message is offered to the
  certificate harvester, so a sender's certificate is known before a reply is sealed.
- Every connection failure backs off exponentially with jitter (1 s doubling to 5 min, each delay
  drawn between half and all of it), per account or per watcher, so one broken account never
  stops the others. A refused login backs off hard (5 minutes doubling to an hour: servers lock
  accounts after a few failed logins), is logged once until it changes or succeeds, and stops
  that account's outbox passes and watchers meanwhile.
- One daemon per config: ``run`` holds :class:`~smime_companion.run_lock.DaemonLock`
  (``daemon.lock`` in the cache directory, naming its pid); a second ``run`` stops at once with
  one line naming the first.

Signals (installed by the ``run`` command): SIGTERM sets the stop event, which lets the current
message finish, saves progress and exits; SIGHUP sets the reload event, which re-reads the
config, the identities and the anchors, and restarts the watchers.

Trust changes take effect on start and on reload: when the anchors or the TOFU policy changed,
every signed message and stored certificate is judged again (:mod:`smime_companion.trust_change`).

Under systemd (``Type=notify``, see ``contrib/systemd``) the daemon says ``READY=1`` once it
is set up, ``RELOADING=1`` and ``READY=1`` around a reload, ``STOPPING=1`` when it stops, and,
with ``WatchdogSec=``, ``WATCHDOG=1`` from a thread for as long as the sync loop shows signs of
life (its loop, or a folder's sync progressing), so a hung loop is restarted.

A small JSON status file (``daemon-status.json`` in the cache directory, no secrets) tells
``smime-companion status`` whether each folder is in IDLE, polling or reconnecting.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from cryptography import x509

from smime_companion import runtime, systemd
from smime_companion.backoff import AUTH_BACKOFF_BASE_SECONDS, Backoff, auth_backoff
from smime_companion.config import AccountConfig, Config
from smime_companion.core.entry_derivation import entry_maker
from smime_companion.core.model import Identity
from smime_companion.errors import AuthenticationFailed, ImapError, SmimeCompanionError
from smime_companion.folder_watch import FolderWatchers
from smime_companion.harvest import CertHarvester
from smime_companion.imap.mailbox import connect
from smime_companion.imap.session import ServerSpec
from smime_companion.outbox.localdir import LocalDirectory
from smime_companion.outbox.pipeline import PassReport
from smime_companion.outbox.watch import DraftWatcher
from smime_companion.scan import Scanner, scan_pending
from smime_companion.status_file import STATUS_FILE, StatusBoard
from smime_companion.store.cache import Cache
from smime_companion.store.certstore import CertStore
from smime_companion.store.journal import Journal
from smime_companion.sync.folder import record_error, sync_folder
from smime_companion.sync.opening import OpeningPool
from smime_companion.sync.protocols import FolderReport, Harvester, Mailbox, Stopped
from smime_companion.trust_change import rejudge_if_changed

log = logging.getLogger(__name__)

FULL_PASS_SECONDS = 15 * 60  # a full pass of every account now and then, whatever IDLE says
OUTBOX_SECONDS = 60.0  # how often the outbox is looked at between full passes
# The name under which the local outbox directory's watcher (and the reader's Send) posts to the
# change queue: "an outbox of this account has work" (no IMAP folder has it: it holds a NUL).
LOCAL_OUTBOX = "\0local outbox"

Connector = Callable[[ServerSpec], Mailbox]
# The identities that open mail under a config (the config's, plus keys imported elsewhere).
IdentityLoader = Callable[[Config], list[Identity]]


def config_identities(config: Config) -> list[Identity]:
    """The identities the config names (the default :data:`IdentityLoader`)."""
    return runtime.load_identities(config.identity)


class Closeable(Protocol):
    def close(self) -> None: ...


def now_utc() -> datetime:
    """The current time, timezone-aware (the daemon's default clock)."""
    return datetime.now(UTC)


@dataclass
class AccountResult:
    """One account's share of a pass: per-folder reports, or the one-line error that stopped it."""

    account: str
    folders: list[FolderReport] = field(default_factory=list)
    error: str | None = None
    outbox: list[PassReport] = field(default_factory=list)  # one per outbox of the account
    outbox_error: str | None = None
    folder_errors: list[str] = field(default_factory=list)  # e.g. a watched folder is missing

    @property
    def failed(self) -> bool:
        """True when the account, one of its folders or its outbox failed, or a draft was
        rejected (not when a draft merely waits: deferred, held)."""
        return bool(
            self.error
            or self.outbox_error
            or self.folder_errors
            or any(report.went_wrong for report in self.outbox)
        )


class Daemon:
    """Syncs every configured account into ``cache``; see the module docstring."""

    def __init__(
        self,
        config: Config,
        cache: Cache,
        *,
        identities: Sequence[Identity],
        anchors: Sequence[x509.Certificate],
        connector: Connector = connect,
        harvester: Harvester | None = None,
        clock: Callable[[], datetime] = now_utc,
        stop: threading.Event | None = None,
        progress: Callable[[str, str, int, int], None] | None = None,
        scanner: Scanner | None = None,
        outbox_journal: Journal | None = None,
        certstore: CertStore | None = None,
        identity_loader: IdentityLoader = config_identities,
        resources: Sequence[Closeable] = (),
        open_workers: int | None = None,
        extra_certificates: Sequence[x509.Certificate] = (),
    ) -> None:
        self.config = config
        # The certificate store's certificates when the daemon started: where signer
        # certificates that a message leaves out (gpgsm's default) are looked for.
        self.extra_certificates = list(extra_certificates)
        self.cache = cache
        self.identities = list(identities)
        self.anchors = list(anchors)
        self.connector = connector
        self.harvester = harvester  # None until the certificate store (issue 4) exists
        self.clock = clock
        self.stop = stop or threading.Event()
        self.reload = threading.Event()
        self.progress = progress
        self.scanner = scanner
        # The outbox runs when both are given: its journal, and the certificates it seals to.
        self.outbox_journal = outbox_journal
        self.certstore = certstore
        self.identity_loader = identity_loader
        self._resources = list(resources)  # closed by shutdown(), after the cache
        # None: one worker process per spare core (see smime_companion.sync.opening).
        self._open_workers = open_workers
        self.opener = self._new_opener()
        self.changes: queue.Queue[tuple[str, str]] = queue.Queue()
        self._boxes: dict[str, Mailbox] = {}
        self._folders: dict[str, list[str]] = {}
        # Each account's IMAP outbox folder as the outbox passes found it on the server.
        self._outbox_folders: dict[str, str] = {}
        self._backoff: dict[str, Backoff] = {}
        self._retry_at: dict[str, float] = {}
        # The refused-login message last logged per account: said once until it changes.
        self._auth_failed: dict[str, str] = {}
        self.watchers = FolderWatchers(self)
        self._local_watcher: DraftWatcher | None = None
        self._heartbeat = time.monotonic()  # the sync loop's last sign of life (watchdog)
        self.status = StatusBoard(Path(config.cache.path) / STATUS_FILE)

    # -- opening ---------------------------------------------------------------------------------

    def _new_opener(self) -> OpeningPool:
        return OpeningPool(
            self.identities,
            self.anchors,
            allow_sha1=self.config.identity.allow_sha1,
            allow_weak=self.config.identity.allow_weak_algorithms,
            extra_certificates=self.extra_certificates,
            workers=self._open_workers,
            time_limit=self.config.cache.open_time_limit,
        )

    # -- one pass --------------------------------------------------------------------------------

    def sync_once(
        self, accounts: Sequence[str] | None = None, folder: str | None = None
    ) -> list[AccountResult]:
        """One full pass over ``accounts`` (default: all), or over one ``folder`` of them.

        A failing account (unreachable, wrong password, missing secret) is reported in its
        result and logged as one line; the others are still synced. Raises :class:`Stopped`
        when the stop event is set.
        """
        chosen = [self.config.account(a) for a in accounts] if accounts else self.config.accounts
        results = []
        for account in chosen:
            result = self.sync_account(account, folder)
            if folder is None and account.name not in self._auth_failed:
                self.outbox_pass(account, result)
            results.append(result)
        self.scan_new()
        return results

    def outbox_pass(self, account: AccountConfig, result: AccountResult) -> None:
        """Send what waits in ``account``'s outbox (when the daemon has an outbox journal and
        the account has SMTP); failures go into ``result`` as one line, never stop the daemon."""
        if self.outbox_journal is None or self.certstore is None or not account.smtp_host:
            return
        try:
            result.outbox = runtime.process_outbox(
                self.config,
                account.name,
                journal=self.outbox_journal,
                identities=self.identities,
                lookup=runtime.certificate_lookup(self.config, self.certstore),
                clock=self.clock,
            )
        except Exception as exc:
            if not isinstance(exc, SmimeCompanionError):
                log.exception("outbox %s: unexpected error", account.name)
            result.outbox_error = str(exc)
            log.error("outbox %s: %s", account.name, exc)
            return
        for report in result.outbox:
            for error in report.errors:
                log.error("outbox %s: %s", account.name, error)
            if report.folder:
                self._outbox_folders[account.name] = report.folder

    def scan_new(self) -> int:
        """Scan cached messages that have no verdict yet (or an ``error`` one) when a scanner is
        configured; returns how many. Scanning comes after caching and never blocks it."""
        if self.scanner is None:
            return 0
        try:
            return scan_pending(self.cache, self.scanner)
        except SmimeCompanionError as exc:
            log.warning("scanning: %s", exc)
            return 0

    def reopen_unopened(self) -> int:
        """Open again the cached messages that could not be opened (no key, failed), e.g. after
        an old key was added to the config; returns how many were re-derived."""
        pending = self.cache.messages_to_reopen()
        if not pending:
            return 0
        # Keep the verdicts of revoked signers the sync stored.
        known = self.harvester.known_revoked if self.harvester is not None else None
        count = self.cache.rebuild(entry_maker(self.opener.open, known), pending)
        log.info("re-opened %d cached messages with the current keys", count)
        return count

    def rejudge_trust(self) -> int:
        """Judge every signed message and stored certificate again when the trust anchors or
        the TOFU policy changed (:func:`smime_companion.trust_change.rejudge_if_changed`);
        returns how many messages were re-judged."""
        return rejudge_if_changed(
            Path(self.config.cache.path),
            self.cache,
            self.opener.open,
            self.harvester,
            self.anchors,
            self.config.certificates.tofu,
        )

    def sync_account(self, account: AccountConfig, only_folder: str | None = None) -> AccountResult:
        """Sync the watched folders of one account (or one of them); never raises for the
        account's own failures (they are in the result), only :class:`Stopped`."""
        result = AccountResult(account.name)
        try:
            # A change its watcher reported: on the watcher's connection (folder_watch.Loans).
            lent = self.watchers.loans.borrow(account.name, only_folder) if only_folder else None
            box = lent or self._box(account)
            if only_folder:
                folders = [only_folder]
            else:
                folders, missing = self._folder_names(account, box)
                result.folder_errors.extend(f"the server has no folder {m!r}" for m in missing)
            for name in folders:
                result.folders.append(self._sync_folder(account, box, name, lent is not None))
            self._backoff.pop(account.name, None)
            self._retry_at.pop(account.name, None)
            if self._auth_failed.pop(account.name, None) is not None:
                log.info("account %s: login accepted again", account.name)
            self.status.set_account(account.name, error=None)
        except Stopped:
            raise
        except Exception as exc:
            # Our own failures are one line; anything else is a bug of ours, logged with its
            # traceback, but it must not take the other accounts down with it.
            if isinstance(exc, SmimeCompanionError):
                result.error = str(exc)
            else:
                log.exception("account %s: unexpected error", account.name)
                result.error = f"internal error: {type(exc).__name__}: {exc}"
            self._drop_box(account.name)
            if isinstance(exc, AuthenticationFailed):
                backoff = self._backoff.get(account.name)
                if backoff is None or backoff.base < AUTH_BACKOFF_BASE_SECONDS:
                    backoff = self._backoff[account.name] = auth_backoff()
            else:
                backoff = self._backoff.setdefault(account.name, Backoff())
            delay = backoff.next_delay()
            self._retry_at[account.name] = time.monotonic() + delay
            self.status.set_account(account.name, error=result.error)
            if not isinstance(exc, AuthenticationFailed):
                log.error("account %s: %s", account.name, exc)
            elif self._auth_failed.get(account.name) != str(exc):
                self._auth_failed[account.name] = str(exc)
                log.error(
                    "account %s: %s; fix the password (or token) in the config, then reload "
                    "(SIGHUP). Not trying again for %.0f minutes, then less and less often, so "
                    "the server does not lock the account",
                    account.name,
                    exc,
                    delay / 60,
                )
            else:
                log.debug("account %s: login still refused", account.name)
        return result

    def _sync_folder(
        self, account: AccountConfig, box: Mailbox, folder: str, lent: bool = False
    ) -> FolderReport:
        def progress(done: int, total: int) -> None:
            self._heartbeat = time.monotonic()
            if self.progress is not None:
                self.progress(account.name, folder, done, total)

        try:
            return sync_folder(
                box,
                self.cache,
                account=account.name,
                folder=folder,
                opener=self.opener,
                now=self.clock,
                cache_all=self.config.cache.cache_all,
                harvester=self.harvester,
                should_stop=self.stop.is_set,
                progress=progress,
                reuse_open=lent,  # the watcher's: it has the folder open and up to date
            )
        except ImapError as exc:
            record_error(self.cache, account.name, folder, str(exc))
            raise

    def _box(self, account: AccountConfig) -> Mailbox:
        box = self._boxes.get(account.name)
        if box is None:
            box = self.connector(runtime.server_spec(account))
            self._boxes[account.name] = box
        return box

    def _drop_box(self, name: str) -> None:
        box = self._boxes.pop(name, None)
        if box is not None:
            box.close()

    def _folder_names(self, account: AccountConfig, box: Mailbox) -> tuple[list[str], list[str]]:
        """The folders to sync (what the patterns match) and the named folders the server
        lacks. Raises ImapError when nothing matches at all."""
        names = box.list_folders(account.folders)
        missing = []
        for pattern in account.folders:
            if not any(c in pattern for c in "*?[") and not box.list_folders([pattern]):
                log.warning("account %s: the server has no folder %r", account.name, pattern)
                missing.append(pattern)
        if not names:
            raise ImapError(
                f"account {account.name}: no folder matches {', '.join(account.folders)}"
            )
        self._folders[account.name] = names
        return names, missing

    def close(self) -> None:
        """Stop the watchers and the opening workers, and log out of every connection."""
        self._stop_watchers()
        for name in list(self._boxes):
            self._drop_box(name)
        self.opener.close()

    def shutdown(self) -> None:
        """:meth:`close`, then close the cache and the other stores the daemon was given."""
        self.close()
        for resource in [self.cache, *self._resources]:
            try:
                resource.close()
            except Exception as exc:  # closing on the way out: report, carry on
                log.warning("closing %s: %s", type(resource).__name__, exc)

    # -- around the clock ------------------------------------------------------------------------

    def run(self, reload_config: Callable[[], Config] | None = None) -> None:
        """Sync everything, then follow changes (IDLE) until the stop event is set.

        ``reload_config`` is called when the reload event is set (SIGHUP); a config that fails
        to load is logged and the old one kept.
        """
        watchdog = self._start_watchdog()
        try:
            self._loop(reload_config)
        except Stopped as exc:
            log.info("stopping: %s", exc)
        finally:
            systemd.notify("STOPPING=1")
            self.close()
            self.status.write(running=False, now=self.clock())
            if watchdog is not None:
                watchdog.join(timeout=5)

    def _start_watchdog(self) -> threading.Thread | None:
        """With ``WatchdogSec=``: a thread sending ``WATCHDOG=1`` at half the interval while
        the sync loop showed life within the interval (a hung loop then gets restarted)."""
        interval = systemd.watchdog_interval()
        if interval is None:
            return None

        def ping() -> None:
            while not self.stop.wait(interval / 2):
                if time.monotonic() - self._heartbeat < interval:
                    systemd.notify("WATCHDOG=1")
                else:
                    log.warning("the sync loop showed no life for %.0f s", interval)

        thread = threading.Thread(target=ping, name="systemd watchdog", daemon=True)
        thread.start()
        return thread

    def _follow_change(self, account: AccountConfig, folder: str) -> None:
        if self._is_outbox(account, folder):
            # A draft arrived (IDLE on the outbox folder, or the local directory).
            self.outbox_pass(account, AccountResult(account.name))
        else:
            self.sync_account(account, folder)

    def _loop(self, reload_config: Callable[[], Config] | None) -> None:
        # Ready once set up: a first sync of a large mailbox may take longer than systemd
        # waits for a start; the STATUS line says what it does meanwhile.
        systemd.notify("READY=1", "STATUS=first pass over every account")
        self.rejudge_trust()
        self.reopen_unopened()
        self.sync_once()
        self._start_watchers()
        systemd.notify(f"STATUS=watching {len(self.watchers)} folders")
        next_full_pass = time.monotonic() + FULL_PASS_SECONDS
        next_outbox = time.monotonic() + OUTBOX_SECONDS
        while not self.stop.is_set():
            self._heartbeat = time.monotonic()
            self.status.write(running=True, now=self.clock())
            if self.reload.is_set():
                self.reload.clear()
                self._reload(reload_config)
                next_full_pass = 0.0
            try:
                account_name, folder = self.changes.get(timeout=1.0)
            except queue.Empty:
                account_name, folder = "", ""
            if account_name:
                pending = {(account_name, folder)}
                while True:  # several IDLE wakes for one folder: one sync
                    try:
                        pending.add(self.changes.get_nowait())
                    except queue.Empty:
                        break
                for name, fold in sorted(pending):
                    try:
                        if self._due(name):
                            self._follow_change(self.config.account(name), fold)
                    finally:
                        self.watchers.loans.give_back(name, fold)
                self.scan_new()
            now = time.monotonic()
            retry = [
                a for a in self.config.accounts if a.name in self._retry_at and self._due(a.name)
            ]
            if now >= next_full_pass:
                self.sync_once()  # the outbox too
                self.watchers.start_missing(self._watch_targets())
                next_full_pass = now + FULL_PASS_SECONDS
                next_outbox = now + OUTBOX_SECONDS
            elif now >= next_outbox:
                for account in self.config.accounts:
                    if self._due(account.name) and account.name not in self._auth_failed:
                        self.outbox_pass(account, AccountResult(account.name))
                next_outbox = now + OUTBOX_SECONDS
            else:
                for account in retry:
                    self.sync_account(account)
                if retry:
                    self.watchers.start_missing(self._watch_targets())
        raise Stopped("stop requested")

    def _due(self, account_name: str) -> bool:
        return time.monotonic() >= self._retry_at.get(account_name, 0.0)

    def _reload(self, reload_config: Callable[[], Config] | None) -> None:
        if reload_config is None:
            return
        systemd.reloading()
        try:
            self._reload_from(reload_config)
        finally:
            systemd.notify("READY=1", f"STATUS=watching {len(self.watchers)} folders")

    def _reload_from(self, reload_config: Callable[[], Config]) -> None:
        try:
            config = reload_config()
            identities = self.identity_loader(config)
            anchors = runtime.load_anchors(config.identity)
        except SmimeCompanionError as exc:
            log.error("reload failed, keeping the running config: %s", exc)
            return
        if config.cache.path != self.config.cache.path:
            log.warning("reload: a new cache path takes effect only after a restart")
        log.info("reloaded %s", runtime.describe(config))
        self._stop_watchers()
        for name in list(self._boxes):
            self._drop_box(name)
        self.config, self.identities, self.anchors = config, identities, anchors
        self.opener.close()  # its workers hold the old keys
        self.opener = self._new_opener()
        self._retry_at.clear()
        self._backoff.clear()
        self._auth_failed.clear()  # perhaps the reload fixed the password: try at once
        if isinstance(self.harvester, CertHarvester):
            self.harvester.tofu = tuple(config.certificates.tofu)
        self.rejudge_trust()  # the anchors or TOFU policy may have changed
        self.reopen_unopened()  # the new config may hold a key that opens them
        self.sync_once()
        self._start_watchers()

    def _watch_targets(self) -> list[tuple[str, ServerSpec, str]]:
        """Every (account, server, folder) to keep in IDLE: the synced folders, and each outbox
        folder so that a draft is sent within a second or two instead of at the next pass."""
        targets: list[tuple[str, ServerSpec, str]] = []
        for account in self.config.accounts:
            folders = list(self._folders.get(account.name, []))
            outbox_folder = self._outbox_folders.get(account.name)
            if outbox_folder and account.smtp_host and self.config.outbox.imap:
                folders.append(outbox_folder)
            targets.extend((account.name, runtime.server_spec(account), f) for f in folders)
        return targets

    def _is_outbox(self, account: AccountConfig, folder: str) -> bool:
        return folder == LOCAL_OUTBOX or (
            folder == self._outbox_folders.get(account.name)
            and folder not in self._folders.get(account.name, [])
        )

    def _start_watchers(self) -> None:
        self.watchers.start_missing(self._watch_targets())
        self._start_local_outbox_watcher()

    def _start_local_outbox_watcher(self) -> None:
        """Watch the local outbox directory (watchdog); a draft there wakes an outbox pass of
        the directory's account."""
        directory = self.config.outbox.directory
        if self.outbox_journal is None or directory is None or not self.config.accounts:
            return
        name = self.config.outbox.directory_account or self.config.accounts[0].name
        try:
            watcher = DraftWatcher(
                LocalDirectory(directory),
                on_draft=lambda: self.changes.put((name, LOCAL_OUTBOX)),
            )
            watcher.start()
        except OSError as exc:  # the directory is missing or unreadable: passes still run
            log.error("outbox directory %s cannot be watched: %s", directory, exc)
            return
        self._local_watcher = watcher

    def _stop_watchers(self) -> None:
        self.watchers.stop()
        if self._local_watcher is not None:
            self._local_watcher.stop()
            self._local_watcher = None

    def set_watch_state(self, account: str, folder: str, state: str) -> None:
        """Record a watcher's state (``idle``, ``polling``, ``reconnecting``, ``stopped``)."""
        self.status.set_folder(account, folder, state)

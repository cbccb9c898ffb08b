"""The daemon's subcommands: ``run``, ``sync`` and ``status`` (``doctor`` is cli/doctor_cmd.py).

Each reads the config (``--config FILE``, else ``$SMIME_COMPANION_CONFIG``, else the XDG config
dir) and builds the :class:`~smime_companion.daemon.Daemon` the same way.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from types import FrameType
from typing import TYPE_CHECKING, Any

from smime_companion import runtime
from smime_companion.cli.flags import Subcommands, add_account_flag, add_command, config_from_args
from smime_companion.config import Config
from smime_companion.core.model import Identity
from smime_companion.core.printable import for_terminal
from smime_companion.errors import SmimeCompanionError, UsageError
from smime_companion.status_file import read_status_file

if TYPE_CHECKING:
    from smime_companion.daemon import AccountResult, Daemon

if TYPE_CHECKING:  # imported where it is started: flask costs every other command 10 MB
    from smime_companion.reader.server import ReaderServer

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_NOT_GOOD = 1


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``run``, ``sync`` and ``status`` subcommands."""
    _declare_run(sub)
    _declare_sync(sub)
    _declare_status(sub)


# -- building ------------------------------------------------------------------------------------


def build_daemon(
    config: Config, progress: Callable[[str, str, int, int], None] | None = None
) -> Daemon:
    """The daemon for ``config``: the cache, the certificate store (keys imported there open
    mail too; signers are harvested into it) and the outbox journal opened, identities and
    anchors loaded. Raises ConfigError, SecretUnavailable, KeyLoadError or CacheError with one
    line."""

    from smime_companion.daemon import Daemon

    anchors = runtime.load_anchors(config.identity)
    scanner = runtime.open_scanner(config)
    # The daemon writes whole mailboxes: its log is copied into the database beside it.
    cache = runtime.open_cache(config, checkpoint_in_background=True)
    resources: list[Any] = []
    try:
        store = runtime.open_certstore(config)
        resources.append(store)
        journal = runtime.open_outbox_journal(config)
        resources.append(journal)
        identities = runtime.identities_with_store(config, store)
    except BaseException:
        for resource in [cache, *resources]:
            resource.close()
        raise

    def identity_loader(cfg: Config) -> list[Identity]:
        return runtime.identities_with_store(cfg, store)

    return Daemon(
        config,
        cache,
        identities=identities,
        anchors=anchors,
        progress=progress,
        scanner=scanner,
        harvester=runtime.certificate_harvester(config, store),
        outbox_journal=journal,
        certstore=store,
        identity_loader=identity_loader,
        resources=resources,
        open_workers=config.cache.open_workers,
        extra_certificates=store.certificates(),
    )


def _terminal_progress() -> Callable[[str, str, int, int], None] | None:
    """A one-line progress bar on stderr during long passes, only when stderr is a terminal."""
    if not sys.stderr.isatty():
        return None

    def show(account: str, folder: str, done: int, total: int) -> None:
        width = 30
        filled = width * done // max(total, 1)
        bar = "#" * filled + "-" * (width - filled)
        end = "\n" if done >= total else ""
        where = for_terminal(f"{account}/{folder}")
        print(f"\r{where} [{bar}] {done}/{total}", end=end, file=sys.stderr, flush=True)

    return show


def _summaries(results: list[AccountResult]) -> list[str]:
    lines = []
    for result in results:
        if result.error:
            lines.append(f"{result.account}: FAILED: {result.error}")
        if result.outbox_error:
            lines.append(f"{result.account}: outbox FAILED: {result.outbox_error}")
        for error in result.folder_errors:
            lines.append(f"{result.account}: FAILED: {error}")
        for report in result.outbox:
            lines.append(f"{result.account}: outbox: {report.summary()}")
        for r in result.folders:
            lines.append(
                f"{result.account}/{r.folder}: {r.new} new, {r.stored} stored, "
                f"{r.skipped} not S/MIME, {r.failed_to_open} unopened, {r.expunged} expunged, "
                f"{r.flags_updated} flag changes"
                + (", UIDVALIDITY changed" if r.uidvalidity_changed else "")
            )
    return lines


def _results_json(results: list[AccountResult]) -> list[dict[str, Any]]:
    return [
        {
            "account": r.account,
            "error": r.error,
            "outbox_error": r.outbox_error,
            "folder_errors": list(r.folder_errors),
            "failed": r.failed,
            "outbox": [
                {
                    "sent": len(o.sent),
                    "deferred": len(o.deferred),
                    "held": len(o.held),
                    "rejected": len(o.rejected),
                    "uncertain": len(o.uncertain),
                    "errors": list(o.errors),
                }
                for o in r.outbox
            ],
            "folders": [
                {
                    "folder": f.folder,
                    "uidvalidity": f.uidvalidity,
                    "new": f.new,
                    "stored": f.stored,
                    "skipped": f.skipped,
                    "unopened": f.failed_to_open,
                    "expunged": f.expunged,
                    "flags_updated": f.flags_updated,
                    "uidvalidity_changed": f.uidvalidity_changed,
                    "complete": f.complete,
                }
                for f in r.folders
            ],
        }
        for r in results
    ]


# -- run / sync ----------------------------------------------------------------------------------


def forbid_core_dumps() -> bool:
    """Set this process's core-file limit to 0 (inherited by the opening workers): a crash
    must never write the private keys and decrypted mail it holds to disk. Returns whether it
    took; a sandbox that forbids setrlimit (the systemd unit, which sets LimitCORE=0 itself)
    is not an error."""
    import resource

    try:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (OSError, ValueError):
        return False
    return True


def _declare_run(sub: Subcommands) -> None:
    """Declare ``run`` and its flags (run by :func:`cmd_run` below)."""
    run = add_command(
        sub,
        "run",
        cmd_run,
        help="run the sync daemon in the foreground",
        description=(
            "Sync every configured account into the cache, then follow new mail with IDLE until "
            "SIGTERM (which finishes the current message) or Ctrl-C. SIGHUP reloads the config. "
            "Logs go to stderr. With --once, do one full pass of every account and its outbox "
            "and exit: 0 when everything worked, 1 when an account, a watched folder or an "
            "outbox failed (the others are still done)."
        ),
    )
    run.add_argument("--once", action="store_true", help="one full pass, then exit")


def cmd_run(args: argparse.Namespace) -> int:
    """``run``: the daemon in the foreground (or one pass with ``--once``)."""
    from smime_companion import systemd
    from smime_companion.run_lock import DaemonLock

    forbid_core_dumps()
    logging.getLogger().setLevel(logging.INFO if not args.verbose else logging.DEBUG)
    # imapclient traces every protocol line at DEBUG, message bodies included (a draft's
    # plaintext, fetched for sealing): -v must never put mail into the log, so that trace stays off.
    logging.getLogger("imapclient").setLevel(logging.INFO)
    config = config_from_args(args)
    with DaemonLock(config.cache.path):  # AlreadyRunning: one line, exit 1
        logging.getLogger(__name__).info("%s", runtime.describe(config))
        # Opening the stores may upgrade them first (minutes, once, at a large archive).
        with systemd.starting("opening the cache (an upgrade may take minutes)"):
            daemon = build_daemon(config, _terminal_progress())
        if args.once:
            return _one_pass(daemon, None, None, json_out=False)
        return _run_forever(daemon, config, args)


def _run_forever(daemon: Daemon, config: Config, args: argparse.Namespace) -> int:
    """Run ``daemon`` and, beside it, the reader until SIGTERM or Ctrl-C (SIGHUP reloads the
    config); returns 0."""
    import signal

    def on_term(signum: int, frame: FrameType | None) -> None:
        daemon.stop.set()

    def on_hup(signum: int, frame: FrameType | None) -> None:
        daemon.reload.set()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_hup)
    reader = _start_reader(config, daemon)
    try:
        daemon.run(reload_config=lambda: config_from_args(args))
    except KeyboardInterrupt:
        daemon.stop.set()
    finally:
        if reader is not None:
            reader.stop()
        daemon.shutdown()
    return EXIT_OK


def _start_reader(config: Config, daemon: Daemon) -> ReaderServer | None:
    """Serve the reader beside the daemon (``[reader] enabled``); what it queues wakes the
    daemon's outbox at once. A reader that cannot start (its port taken) is logged: the daemon
    runs on without it."""
    from smime_companion.daemon import LOCAL_OUTBOX

    if not config.reader.enabled:
        return None
    from smime_companion.reader.server import ReaderServer

    context = runtime.reader_context(
        config,
        runtime.cache_key(config),
        kick_outbox=lambda account: daemon.changes.put((account, LOCAL_OUTBOX)),
        daemon_status=lambda: read_status_file(config.cache.path),
    )
    server = ReaderServer(context, config.reader.port)
    try:
        server.start()
    except SmimeCompanionError as exc:
        logging.getLogger(__name__).error("reader: %s", exc)
        return None
    logging.getLogger(__name__).info(
        "reader on %s: run 'smime-companion reader' to sign in", server.url
    )
    return server


def _declare_sync(sub: Subcommands) -> None:
    """Declare ``sync`` and its flags (run by :func:`cmd_sync` below)."""
    sync = add_command(
        sub,
        "sync",
        cmd_sync,
        help="sync now: one pass over all accounts, one account, or one folder",
        description=(
            "One pass over the watched folders of every account (or --account A, or --folder F "
            "of it), and the outbox, printing what changed. Exit 0 when everything worked, 1 "
            "when an account, a watched folder or an outbox failed."
        ),
        json=True,
    )
    add_account_flag(sync)
    sync.add_argument("--folder", metavar="F", help="only this folder (needs --account)")


def cmd_sync(args: argparse.Namespace) -> int:
    """``sync``: one pass, optionally limited to an account or a folder."""
    if args.folder and not args.account:
        raise UsageError("--folder needs --account")
    forbid_core_dumps()
    config = config_from_args(args)
    if args.account:
        config.account(args.account)  # unknown account: one line now, before anything opens
    daemon = build_daemon(config, None if args.json else _terminal_progress())
    accounts = [args.account] if args.account else None
    return _one_pass(daemon, accounts, args.folder, json_out=args.json)


def _one_pass(
    daemon: Daemon, accounts: list[str] | None, folder: str | None, json_out: bool
) -> int:
    from smime_companion.sync.protocols import Stopped

    try:
        daemon.rejudge_trust()  # the anchors or TOFU policy may have changed since last time
        results = daemon.sync_once(accounts, folder)
    except Stopped:
        results = []
    finally:
        daemon.shutdown()
    if json_out:
        print(json.dumps(_results_json(results), indent=1))
    else:
        for line in _summaries(results):
            print(for_terminal(line))
    return EXIT_NOT_GOOD if any(r.failed for r in results) else EXIT_OK


# -- status --------------------------------------------------------------------------------------


def _declare_status(sub: Subcommands) -> None:
    """Declare ``status`` and its flags (run by :func:`cmd_status` below)."""
    add_command(
        sub,
        "status",
        cmd_status,
        help="per account and folder: last sync, cached messages, errors, IDLE state",
        description=(
            "Show, for each account and folder, when it was last synced, how many messages are "
            "cached, the last error, and what the running daemon's watcher is doing (idle, "
            "polling, reconnecting). Reads the cache, so it needs the cache key."
        ),
        json=True,
    )


def cmd_status(args: argparse.Namespace) -> int:
    """``status``: what the cache and the running daemon know about each folder."""
    config = config_from_args(args)
    from smime_companion.cli.unlock import unlocked

    live = read_status_file(config.cache.path) or {}
    with unlocked(config, "cache.db", lambda key: runtime.open_cache(config, key)) as cache:
        counts: dict[tuple[str, str], int] = {}
        for row in cache.stats()["folders"]:
            key = (row["account"], row["folder"])
            counts[key] = counts.get(key, 0) + int(row["messages"])
        accounts: list[dict[str, Any]] = []
        for account in config.accounts:
            live_account = live.get("accounts", {}).get(account.name, {})
            watch = live_account.get("folders", {})
            names = [f for f in account.folders if not any(c in f for c in "*?[")]
            names += [f for a, f in counts if a == account.name]
            names += list(watch)
            folders = []
            for name in dict.fromkeys(names):
                state = cache.folder_state(account.name, name)
                folders.append(
                    {
                        "folder": name,
                        "last_sync": state.last_sync.isoformat()
                        if state and state.last_sync
                        else None,
                        "cached": counts.get((account.name, name), 0),
                        "uidvalidity": state.uidvalidity if state else None,
                        "error": state.error if state else None,
                        "idle": watch.get(name) if live.get("running") else None,
                    }
                )
            accounts.append(
                {
                    "account": account.name,
                    "host": account.host,
                    "error": live_account.get("error") if live.get("running") else None,
                    "folders": folders,
                }
            )
    out: dict[str, Any] = {
        "daemon": {
            "running": bool(live.get("running")),
            "pid": live.get("pid"),
            "updated": live.get("updated"),
        },
        "accounts": accounts,
    }
    if args.json:
        print(json.dumps(out, indent=1))
        return EXIT_OK
    daemon: dict[str, Any] = out["daemon"]
    print(
        f"daemon: running (pid {daemon['pid']}, updated {_local_time(daemon['updated'])})"
        if daemon["running"]
        else "daemon: not running"
    )
    for account_out in accounts:
        error = f"  error: {account_out['error']}" if account_out["error"] else ""
        print(for_terminal(f"{account_out['account']} ({account_out['host']}){error}"))
        for f in account_out["folders"]:
            # Folder names and errors come from the server: one escaped line each.
            print(
                "  "
                + for_terminal(
                    f"{f['folder']}: {f['cached']} cached, last sync {_local_time(f['last_sync'])}"
                    + (f", watcher {f['idle']}" if f["idle"] else "")
                    + (f", error: {f['error']}" if f["error"] else "")
                )
            )
    return EXIT_OK


def _local_time(iso: str | None) -> str:
    """An ISO time as the user's clock shows it, to the second (``2026-12-06 09:14:03``);
    ``never`` for None. ``--json`` keeps the exact UTC ISO form."""
    if not iso:
        return "never"
    try:
        moment = datetime.fromisoformat(iso)
    except ValueError:
        return iso
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")

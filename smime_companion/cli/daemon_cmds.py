"""The daemon's subcommands: ``run``, ``sync``, ``status`` and ``doctor``.

Each reads the config (``--config FILE``, else ``$SMIME_COMPANION_CONFIG``, else the XDG config
dir) and builds the :class:`~smime_companion.daemon.Daemon` the same way.
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import signal
import socket
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from types import FrameType
from typing import TYPE_CHECKING, Any

from smime_companion import runtime
from smime_companion.cli.common import add_config_flag, add_json_flag, config_from_args
from smime_companion.config import AccountConfig, Config
from smime_companion.core.cert_vocabulary import Trust
from smime_companion.core.model import Identity
from smime_companion.core.printable import for_terminal
from smime_companion.core.selection import chain_to_anchor
from smime_companion.daemon import (
    LOCAL_OUTBOX,
    AccountResult,
    Daemon,
    DaemonLock,
    open_cache,
    read_status_file,
)
from smime_companion.errors import SmimeCompanionError, UsageError
from smime_companion.imap.mailbox import connect
from smime_companion.sync.protocols import Mailbox, Stopped

if TYPE_CHECKING:  # imported where it is started: flask costs every other command 10 MB
    from smime_companion.reader.server import ReaderServer

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_NOT_GOOD = 1
# An identity certificate that expires sooner than this is reported by doctor.
EXPIRY_WARNING_DAYS = 30
# A server clock this far ahead of ours is reported by doctor.
CLOCK_SKEW_WARNING_SECONDS = 300


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``run``, ``sync``, ``status`` and ``doctor`` subcommands."""
    run = sub.add_parser(
        "run",
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
    add_config_flag(run)
    run.set_defaults(func=cmd_run)

    sync = sub.add_parser(
        "sync",
        help="sync now: one pass over all accounts, one account, or one folder",
        description=(
            "One pass over the watched folders of every account (or --account A, or --folder F "
            "of it), and the outbox, printing what changed. Exit 0 when everything worked, 1 "
            "when an account, a watched folder or an outbox failed."
        ),
    )
    sync.add_argument("--account", metavar="A", help="only this account")
    sync.add_argument("--folder", metavar="F", help="only this folder (needs --account)")
    add_config_flag(sync)
    add_json_flag(sync)
    sync.set_defaults(func=cmd_sync)

    status = sub.add_parser(
        "status",
        help="per account and folder: last sync, cached messages, errors, IDLE state",
        description=(
            "Show, for each account and folder, when it was last synced, how many messages are "
            "cached, the last error, and what the running daemon's watcher is doing (idle, "
            "polling, reconnecting). Reads the cache, so it needs the cache key."
        ),
    )
    add_config_flag(status)
    add_json_flag(status)
    status.set_defaults(func=cmd_status)

    doctor = sub.add_parser(
        "doctor",
        help="check the config, identity, cache and every account's server",
        description=(
            "Check, one line each: the config; the identity (loads, validity, expiry within "
            f"{EXPIRY_WARNING_DAYS} days); the trust anchors, and whether the certificates "
            "harvested from your correspondents chain to them; the cache (opens with its key); "
            "and for every account DNS, TLS, login, capabilities (IDLE, CONDSTORE, QRESYNC), "
            "that every watched folder exists, clock skew (seen when the newest message arrived "
            "in our future), the outbox folders (created when missing, as the first pass would) "
            "and the Sent folder, and SMTP (connect, TLS, login; nothing is sent). Each problem "
            "comes with what to type or change. Exit 0 when nothing failed, 1 otherwise."
        ),
    )
    add_config_flag(doctor)
    doctor.set_defaults(func=cmd_doctor)


# -- building ------------------------------------------------------------------------------------


def build_daemon(
    config: Config, progress: Callable[[str, str, int, int], None] | None = None
) -> Daemon:
    """The daemon for ``config``: the cache, the certificate store (keys imported there open
    mail too; signers are harvested into it) and the outbox journal opened, identities and
    anchors loaded. Raises ConfigError, SecretUnavailable, KeyLoadError or CacheError with one
    line."""
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
    try:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (OSError, ValueError):
        return False
    return True


def cmd_run(args: argparse.Namespace) -> int:
    """``run``: the daemon in the foreground (or one pass with ``--once``)."""
    forbid_core_dumps()
    logging.getLogger().setLevel(logging.INFO if not args.verbose else logging.DEBUG)
    # imapclient traces every protocol line at DEBUG, message bodies included (a draft's
    # plaintext, fetched for sealing): -v must never put mail into the log, so that trace stays off.
    logging.getLogger("imapclient").setLevel(logging.INFO)
    config = config_from_args(args)
    with DaemonLock(config.cache.path):  # AlreadyRunning: one line, exit 1
        logging.getLogger(__name__).info("%s", runtime.describe(config))
        daemon = build_daemon(config, _terminal_progress())
        if args.once:
            return _one_pass(daemon, None, None, json_out=False)
        return _run_forever(daemon, config, args)


def _run_forever(daemon: Daemon, config: Config, args: argparse.Namespace) -> int:
    """Run ``daemon`` and, beside it, the reader until SIGTERM or Ctrl-C (SIGHUP reloads the
    config); returns 0."""

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


def cmd_status(args: argparse.Namespace) -> int:
    """``status``: what the cache and the running daemon know about each folder."""
    config = config_from_args(args)
    live = read_status_file(config.cache.path) or {}
    with open_cache(config) as cache:
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


# -- doctor --------------------------------------------------------------------------------------


class _Checks:
    def __init__(self) -> None:
        self.failed = False

    def ok(self, what: str) -> None:
        print(f"ok    {for_terminal(what)}")

    def warn(self, what: str) -> None:
        print(f"warn  {for_terminal(what)}")

    def fail(self, what: str) -> None:
        self.failed = True
        print(f"FAIL  {for_terminal(what)}")


def cmd_doctor(args: argparse.Namespace) -> int:
    """``doctor``: check everything the daemon needs, one line per check."""
    checks = _Checks()
    try:
        config = config_from_args(args)
    except SmimeCompanionError as exc:
        checks.fail(f"config: {exc}")
        return EXIT_NOT_GOOD
    checks.ok(f"config: {runtime.describe(config)}")
    now = datetime.now(UTC)
    try:
        identities = runtime.load_identities(config.identity)
    except SmimeCompanionError as exc:
        checks.fail(f"identity: {exc}")
        identities = []
    if not identities and not checks.failed:
        checks.warn("identity: none configured (encrypted mail cannot be opened)")
    for identity in identities:
        cert = identity.certificate
        subject = cert.subject.rfc4514_string()
        days = (cert.not_valid_after_utc - now).days
        if cert.not_valid_before_utc > now:
            checks.fail(
                f"identity {subject}: not valid before {cert.not_valid_before_utc:%Y-%m-%d}"
            )
        elif days < 0:
            checks.fail(f"identity {subject}: expired on {cert.not_valid_after_utc:%Y-%m-%d}")
        elif days < EXPIRY_WARNING_DAYS:
            checks.warn(f"identity {subject}: expires in {days} days")
        else:
            checks.ok(f"identity {subject}: valid until {cert.not_valid_after_utc:%Y-%m-%d}")
    anchors: list[Any] | None = None
    try:
        anchors = runtime.load_anchors(config.identity)
        checks.ok(f"trust anchors: {len(anchors)} certificates")
    except SmimeCompanionError as exc:
        checks.fail(f"trust anchors: {exc}")
    try:
        with open_cache(config) as cache:
            checks.ok(f"cache: {cache.stats()['messages']} messages in {config.cache.path}")
        if anchors is not None:
            _check_harvested(checks, config, anchors, now)
    except SmimeCompanionError as exc:
        checks.fail(f"cache: {exc}")
    for account in config.accounts:
        _check_account(checks, account_name=account.name, config=config)
    return EXIT_NOT_GOOD if checks.failed else EXIT_OK


def _check_clock(checks: _Checks, label: str, box: Mailbox, folder: str) -> None:
    """IMAP has no time command and doctor stays read-only (no APPEND to read a server time
    from), so the skew visible is one-sided: the newest message's arrival time (the server's
    clock) lying in our future means our clock is behind, which makes fresh certificates look
    not yet valid."""
    box.examine(folder)
    uids = box.search_uids()
    newest = box.summaries(uids[-1:]) if uids else []
    arrived = newest[0].internaldate if newest else None
    if arrived is None:
        checks.ok(f"{label}: clock: no message in {folder} to compare with")
        return
    ahead = (arrived - datetime.now(UTC)).total_seconds()
    if ahead > CLOCK_SKEW_WARNING_SECONDS:
        checks.warn(
            f"{label}: clock: the newest message in {folder} arrived {ahead / 60:.0f} minutes "
            "in our future: this machine's clock is behind (certificates may look not yet valid)"
        )
    else:
        checks.ok(f"{label}: clock: no skew visible (newest arrival in {folder}: {arrived:%c})")


def _check_harvested(checks: _Checks, config: Config, anchors: list[Any], now: datetime) -> None:
    """Whether the certificates harvested from correspondents chain to the configured anchors:
    a correspondent's private CA missing from ``trust_anchors`` leaves every one of theirs
    untrusted, which only shows when a draft to them is held."""
    with runtime.open_certstore(config) as store:
        records = [r for r in store.records() if r.source != "import"]
        pool = store.intermediates()
    if not records:
        checks.ok("harvested certificates: none yet (they come with signed mail)")
        return
    unanchored: dict[str, list[str]] = {}  # issuer -> fingerprints
    for record in records:
        if now > record.certificate.not_valid_after_utc or record.trust == Trust.TOFU:
            continue  # expired is not a trust problem; a pin is the user's decision
        if chain_to_anchor(record.certificate, [*record.chain, *pool], anchors) is None:
            issuer = record.certificate.issuer.rfc4514_string() or "(no issuer)"
            unanchored.setdefault(issuer, []).append(record.fingerprint)
    if not unanchored:
        checks.ok(f"harvested certificates: all {len(records)} chain to an anchor or are pinned")
        return
    count = sum(len(v) for v in unanchored.values())
    for issuer, fingerprints in sorted(unanchored.items()):
        checks.warn(
            f"harvested certificates: {len(fingerprints)} issued by {issuer} chain to no trust "
            "anchor, so mail to their owners cannot be encrypted; if you trust that CA, add "
            "its certificate to trust_anchors in [identity] (ask the sender for it) and run "
            "'systemctl --user reload smime-companion' (or restart run); or trust one "
            f"certificate alone: smime-companion certs trust {fingerprints[0][:16]}"
        )
    log.debug("%d harvested certificates chain to no anchor", count)


def _check_account(checks: _Checks, *, account_name: str, config: Config) -> None:
    account = config.account(account_name)
    label = f"account {account.name} ({account.host}:{account.port})"
    try:
        socket.getaddrinfo(account.host, account.port, type=socket.SOCK_STREAM)
    except OSError as exc:
        checks.fail(f"{label}: DNS: {exc.strerror or exc}")
        return
    try:
        box = connect(runtime.server_spec(account, timeout=20))
    except SmimeCompanionError as exc:
        checks.fail(f"{label}: {exc}")
        return
    try:
        tls = {"implicit": "TLS", "starttls": "STARTTLS", "plain": "NO TLS (insecure_plaintext)"}
        checks.ok(f"{label}: {tls[account.tls]}, login as {account.username} ({account.auth})")
        caps = box.capabilities
        missing = [c for c in ("IDLE", "CONDSTORE", "QRESYNC") if c not in caps]
        if missing:
            checks.warn(f"{label}: server lacks {', '.join(missing)} (slower sync: polling/SEARCH)")
        else:
            checks.ok(f"{label}: IDLE, CONDSTORE, QRESYNC offered")
        folders = box.list_folders(account.folders)
        every = box.list_folders(["*"])
        for pattern in account.folders:
            if not box.list_folders([pattern]):
                which = "matching " if _is_pattern(pattern) else ""
                checks.fail(
                    f"{label}: the server has no folder {which}{pattern!r}; fix 'folders' in "
                    "the config (the server has: "
                    f"{', '.join(every[:12])}{', ...' if len(every) > 12 else ''})"
                )
        if folders:
            checks.ok(f"{label}: watching {', '.join(folders)}")
            _check_clock(checks, label, box, folders[0])
    except SmimeCompanionError as exc:
        checks.fail(f"{label}: {exc}")
    finally:
        box.close()
    if account.smtp_host:
        _check_outbox(checks, config, account)


def _is_pattern(folder: str) -> bool:
    return any(c in folder for c in "*?[")


def _check_outbox(checks: _Checks, config: Config, account: AccountConfig) -> None:
    """The outbox's folders (made when missing, as the first pass would) and Sent, then the
    SMTP server: connect, TLS and login, without sending anything."""
    label = f"account {account.name}"
    if config.outbox.imap:
        try:
            with runtime.outbox_imap(account, timeout=20) as imap:
                found = dict(imap.check_folders())
            checks.ok(
                f"{label}: outbox folder {found['outbox']!r} (held: {found['held']!r}, "
                f"rejected: {found['rejected']!r}), Sent folder {found['sent']!r}"
            )
        except SmimeCompanionError as exc:
            checks.fail(
                f"{label}: outbox: {exc}; fix outbox_folder or sent_folder in the config "
                "(or leave them out: the defaults are found on the server)"
            )
    smtp = f"{label} SMTP ({account.smtp_host}:{account.smtp_port})"
    try:
        checks.ok(f"{smtp}: {runtime.smtp_submitter(account, timeout=20).check()}")
    except SmimeCompanionError as exc:
        text = str(exc)
        fix = (
            "fix smtp_password (default: the IMAP password) or smtp_username"
            if "login refused" in text
            else "check smtp_host, smtp_port and smtp_tls"
        )
        checks.fail(f"{smtp}: {text}; {fix}")

"""``smime-companion outbox``: list the outbox journal, retry an item, run the outbox alone.

``outbox run`` processes every account's outbox folder (and the local outbox directory) without
syncing mail; the daemon's ``run`` is meant to include the same pass (see
``runtime.process_outbox``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from datetime import UTC, datetime

from smime_companion import runtime
from smime_companion.cli.flags import (
    Subcommands,
    add_account_flag,
    add_command,
    add_group,
    config_from_args,
)
from smime_companion.config import Config
from smime_companion.core.printable import for_terminal
from smime_companion.outbox.localdir import LocalDirectory
from smime_companion.outbox.pipeline import OutboxBusy, PassReport, retry_item
from smime_companion.outbox.watch import DraftWatcher
from smime_companion.store.journal import Journal

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_NOT_GOOD = 1
DEFAULT_INTERVAL = 60.0  # seconds between passes of `outbox run` without --once


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``outbox`` subcommand (``list``, ``retry``, ``run``) to ``sub``."""
    actions = add_group(
        sub,
        "outbox",
        help="list, retry and run the outbox (drafts sealed and sent exactly once)",
        description=(
            "The outbox seals and sends drafts put into each account's outbox folder (default "
            "'S/MIME Outbox') or into the local outbox directory. 'outbox list' shows every item "
            "of the journal and its state; 'outbox retry ID' sends an uncertain or held item "
            "again; 'outbox run' processes the outbox without syncing mail."
        ),
        dest="outbox_command",
    )

    _declare_list(actions)
    _declare_retry(actions)
    _declare_run(actions)


def _journal(config: Config) -> Journal:
    return runtime.open_outbox_journal(config)


def _declare_list(sub: Subcommands) -> None:
    """Declare ``list`` and its flags (run by :func:`cmd_list` below)."""
    add_command(
        sub,
        "list",
        cmd_list,
        help="every outbox item with its state",
        description=(
            "List the outbox journal, oldest first: id, state (claimed, sealed, submitting, "
            "submitted, filed, done, uncertain, held, rejected), account, sender, subject and the "
            "last problem. With --json, a list of objects."
        ),
        json=True,
    )


def cmd_list(args: argparse.Namespace) -> int:
    """Print the journal's items; returns 0. Raises CacheError/SecretUnavailable (one line)."""
    config = config_from_args(args)
    with _journal(config) as journal:
        items = journal.items()
    if args.json:
        json.dump([i.as_json() for i in items], sys.stdout, indent=2)
        sys.stdout.write("\n")
        return EXIT_OK
    if not items:
        print("the outbox journal is empty")
        return EXIT_OK
    for item in items:
        when = item.updated.strftime("%Y-%m-%d %H:%M")
        subject = item.subject or "(no subject)"
        line = f"{item.id:>5}  {item.state:<10}  {when}  {item.account}  {subject}"
        if item.reason and item.state not in ("done",):
            line += f"  -- {item.reason}"
        # The subject is the draft's, decoded; the reason may quote a server: one line each.
        print(for_terminal(line))
    return EXIT_OK


def _declare_retry(sub: Subcommands) -> None:
    """Declare ``retry`` and its flags (run by :func:`cmd_retry` below)."""
    retry = add_command(
        sub,
        "retry",
        cmd_retry,
        help="send an uncertain or held item again",
        description=(
            "Send item ID again on the next outbox pass. Only an 'uncertain' item (the "
            "connection or the program stopped while the server may have been accepting it) or "
            "one 'held' after the server refused it can be retried; copies known to have been "
            "accepted are not sent again. Exit 2 for any other item."
        ),
    )
    retry.add_argument("id", metavar="ID", type=int, help="the item id from 'outbox list'")


def cmd_retry(args: argparse.Namespace) -> int:
    """Put an uncertain or held item back to be sent; returns 0. Raises UsageError (exit 2) for
    an unknown item or one in another state."""
    config = config_from_args(args)
    with _journal(config) as journal:
        item = retry_item(journal, args.id, datetime.now(UTC))
    print(
        f"outbox item {item.id} will be sent on the next outbox pass "
        "(now: smime-companion outbox run --once)"
    )
    return EXIT_OK


def _declare_run(sub: Subcommands) -> None:
    """Declare ``run`` and its flags (run by :func:`cmd_run` below)."""
    run = add_command(
        sub,
        "run",
        cmd_run,
        help="process the outbox alone (no mail sync)",
        description=(
            "Process every account's outbox folder and the local outbox directory: seal, send, "
            "file in Sent, remove the draft. With --once, one pass, then exit 0 when every "
            "outbox was processed without error, 1 otherwise. Without it, a pass every "
            "--interval seconds (and at once when a draft is saved into the local directory) "
            "until Ctrl-C."
        ),
    )
    run.add_argument("--once", action="store_true", help="one pass, then exit")
    add_account_flag(run)
    run.add_argument(
        "--interval",
        metavar="SECONDS",
        type=float,
        default=DEFAULT_INTERVAL,
        help=f"seconds between passes (default {DEFAULT_INTERVAL:g})",
    )


def cmd_run(args: argparse.Namespace) -> int:
    """Run outbox passes (see the ``run`` description); returns the exit code."""
    config = config_from_args(args)
    accounts = [config.account(args.account)] if args.account else list(config.accounts)
    key = runtime.cache_key(config)
    with (
        runtime.open_certstore(config, key) as store,
        runtime.open_outbox_journal(config, key) as journal,
    ):
        identities = runtime.identities_with_store(config, store)
        lookup = runtime.certificate_lookup(config, store)

        def one_pass() -> list[PassReport]:
            reports: list[PassReport] = []
            for account in accounts:
                try:
                    reports.extend(
                        runtime.process_outbox(
                            config,
                            account.name,
                            journal=journal,
                            identities=identities,
                            lookup=lookup,
                            clock=lambda: datetime.now(UTC),
                        )
                    )
                except OutboxBusy as exc:
                    log.warning("%s", exc)
            return reports

        if args.once:
            reports = one_pass()
            for report in reports:
                print(for_terminal(_summary(report)))
            return EXIT_NOT_GOOD if any(r.errors for r in reports) else EXIT_OK
        watcher = None
        if config.outbox.directory is not None and config.outbox.directory.is_dir():
            watcher = DraftWatcher(LocalDirectory(config.outbox.directory))
            watcher.start()
        try:
            while True:
                for report in one_pass():
                    if report.claimed or report.errors or report.done:
                        log.info("%s", _summary(report))
                if watcher is not None:
                    watcher.wait(args.interval)
                else:
                    time.sleep(args.interval)
        finally:
            if watcher is not None:
                watcher.stop()


def _summary(report: PassReport) -> str:
    return f"outbox {report.account}: {report.summary()}"

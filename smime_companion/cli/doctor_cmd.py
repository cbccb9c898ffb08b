"""``doctor``: check the config, the identity, the cache and every account's server, one line
per check (ok, warn, FAIL); exit 0 when nothing failed.
"""

from __future__ import annotations

import argparse
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from smime_companion import runtime
from smime_companion.cli.flags import Subcommands, add_command, config_from_args
from smime_companion.config import AccountConfig, Config
from smime_companion.core.certs import describe_name, describe_subject
from smime_companion.core.printable import for_terminal
from smime_companion.errors import SmimeCompanionError

if TYPE_CHECKING:
    from smime_companion.sync.protocols import Mailbox

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_NOT_GOOD = 1
# An identity certificate that expires sooner than this is reported by doctor.
EXPIRY_WARNING_DAYS = 30
# A server clock this far ahead of ours is reported by doctor.
CLOCK_SKEW_WARNING_SECONDS = 300


def register(sub: Subcommands) -> None:
    """Add the ``doctor`` subcommand."""
    _declare_doctor(sub)


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


def _declare_doctor(sub: Subcommands) -> None:
    """Declare ``doctor`` and its flags (run by :func:`cmd_doctor` below)."""
    add_command(
        sub,
        "doctor",
        cmd_doctor,
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
        subject = describe_subject(cert)
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
        with runtime.open_cache(config) as cache:
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
    from smime_companion.core.cert_vocabulary import Trust
    from smime_companion.core.selection import chain_to_anchor

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
            issuer = describe_name(record.certificate.issuer, "(no issuer)")
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
    import socket

    from smime_companion.imap.mailbox import connect

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

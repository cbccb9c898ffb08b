"""Turning a :class:`~smime_companion.config.Config` into live objects: the user's identities,
the trust anchors, and (in the store package's terms) the cache.

With ``cli`` and ``daemon`` this is the only module that reads ``config``; it exists so both
build their objects the same way without importing each other.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from smime_companion import credentials
from smime_companion.config import AccountConfig, Config, IdentityConfig, SecretRef
from smime_companion.errors import ConfigError
from smime_companion.store import Cache

if TYPE_CHECKING:
    from cryptography import x509

    from smime_companion.core.model import Identity, OpenResult
    from smime_companion.harvest import CertHarvester
    from smime_companion.imap.outbox_source import ImapOutbox
    from smime_companion.imap.session import ServerSpec
    from smime_companion.outbox.pipeline import OutboxSettings, PassReport
    from smime_companion.outbox.plan import CertificateLookup
    from smime_companion.outbox.protocols import OutboxSource
    from smime_companion.reader.context import ReaderContext
    from smime_companion.revocation_fetch import RevocationChecker
    from smime_companion.scan import Scanner
    from smime_companion.smtp import SmtpSubmitter
    from smime_companion.store.cache import MessageSummary
    from smime_companion.store.certstore import CertStore, PolicyLookup
    from smime_companion.store.db import Key
    from smime_companion.store.journal import Journal


def load_identities(cfg: IdentityConfig) -> list[Identity]:
    """The current identity first, then the retired ones (``old_p12``), ready to decrypt.

    Raises :class:`~smime_companion.errors.KeyLoadError` or
    :class:`~smime_companion.errors.SecretUnavailable` with one line.
    """
    from smime_companion import keyfiles

    identities: list[Identity] = []
    p12_files = ([cfg.p12] if cfg.p12 else []) + list(cfg.old_p12)
    if p12_files:
        password = (
            credentials.resolve(cfg.p12_password).encode() if cfg.p12_password.given else None
        )
        identities.extend(keyfiles.load_pkcs12(path, password) for path in p12_files)
    if cfg.key and cfg.cert:
        certs = keyfiles.load_certificates(cfg.cert)
        identities[:0] = keyfiles.pair_keys_with_certificates(
            [keyfiles.load_private_key(cfg.key)], certs
        )
    return identities


def load_anchors(cfg: IdentityConfig) -> list[x509.Certificate]:
    """The configured trust anchors, plus the system CA bundle unless ``system_anchors = false``."""
    from smime_companion import keyfiles

    anchors = [c for path in cfg.trust_anchors for c in keyfiles.load_certificates(path)]
    if cfg.system_anchors:
        anchors.extend(keyfiles.system_anchors())
    return anchors


def describe(config: Config) -> str:
    """One line saying which config is in use (for logs; holds no secret)."""
    names = ", ".join(a.name for a in config.accounts) or "no accounts"
    return f"config {config.source or '<built-in>'}: {names}; cache at {config.cache.path}"


def cache_key(config: Config) -> str | None:
    """The cache passphrase from where the config says it is (None for a plain cache).

    Raises :class:`~smime_companion.errors.SecretUnavailable` with one line.
    """
    if not config.cache.encrypt:
        return None
    return credentials.resolve(config.cache.key)


def open_cache(
    config: Config, key: Key | None = None, *, checkpoint_in_background: bool = False
) -> Cache:
    """The message cache of ``config``, opened with ``key`` or, when None, the configured key
    (``checkpoint_in_background``: see :meth:`Cache.open`).

    Raises :class:`~smime_companion.errors.SecretUnavailable` or
    :class:`~smime_companion.errors.CacheError` (wrong key, damaged file) with one line.
    """
    if config.cache.encrypt and key is None:
        key = cache_key(config)
    return Cache.open(
        config.cache.path,
        key if config.cache.encrypt else None,
        checkpoint_in_background=checkpoint_in_background,
    )


def open_scanner(config: Config) -> Scanner | None:
    """The malware scanner the config names (clamd socket, else command), or None."""
    from smime_companion.scan import make_scanner

    return make_scanner(config.cache.scan.clamd_socket, config.cache.scan.command)


def open_certstore(config: Config, key: Key | None = None) -> CertStore:
    """The certificate and identity store of ``config`` (``certs.db`` in the cache directory,
    under the cache key): opened with ``key`` or, when None, the configured key.

    Raises :class:`~smime_companion.errors.SecretUnavailable` or
    :class:`~smime_companion.errors.CacheError` (wrong key, damaged file) with one line.
    """
    from smime_companion.store.certstore import CertStore

    if not config.cache.encrypt:
        return CertStore.open(config.cache.path, None)
    return CertStore.open(config.cache.path, key if key is not None else cache_key(config))


def revocation_checker(config: Config) -> RevocationChecker | None:
    """The OCSP/CRL checker the ``[certificates]`` policy asks for (None when ``off``)."""
    from smime_companion.revocation_fetch import RevocationChecker

    if config.certificates.revocation == "off":
        return None
    return RevocationChecker(timeout=config.certificates.revocation_timeout)


def certificate_harvester(config: Config, store: CertStore) -> CertHarvester:
    """The harvester the sync daemon hands opened messages to, with the config's TOFU policy
    and revocation checks (unless ``revocation = "off"``)."""
    from smime_companion.harvest import CertHarvester

    return CertHarvester(store, config.certificates.tofu, revocation_checker(config))


def certificate_lookup(config: Config, store: CertStore) -> PolicyLookup:
    """The outbox's certificate lookup: ``store`` with the config's revocation policy, checking
    OCSP/CRL (answers cached in the store until their nextUpdate) unless it is ``off``."""
    from smime_companion.store.certstore import PolicyLookup

    checker = revocation_checker(config)
    return PolicyLookup(
        store,
        config.certificates.revocation,
        checker.refresh_in(store) if checker is not None else None,
    )


def identities_with_store(config: Config, store: CertStore) -> list[Identity]:
    """The config's identities (current first) followed by those imported into the store
    (latest first), without duplicates: every key that may open the user's mail.

    Raises :class:`~smime_companion.errors.KeyLoadError`,
    :class:`~smime_companion.errors.SecretUnavailable` or
    :class:`~smime_companion.errors.CacheError` with one line.
    """
    seen: set[bytes] = set()
    merged: list[Identity] = []
    for identity in [*load_identities(config.identity), *store.identities()]:
        der = identity.certificate.tbs_certificate_bytes
        if der not in seen:
            seen.add(der)
            merged.append(identity)
    return merged


# -- the outbox (issue 7) -------------------------------------------------------------------------


def open_outbox_journal(config: Config, key: str | None = None) -> Journal:
    """The outbox journal (``outbox.db`` beside the cache, under the cache key; ``key`` None:
    the configured key). Raises :class:`~smime_companion.errors.CacheError` or
    :class:`~smime_companion.errors.SecretUnavailable` with one line."""
    from smime_companion.store.journal import Journal

    if not config.cache.encrypt:
        return Journal.open(config.cache.path, None)
    return Journal.open(config.cache.path, key if key is not None else cache_key(config))


def _account_secret(account: AccountConfig, ref: SecretRef) -> tuple[str, Callable[[], str]]:
    """The auth mechanism and a secret getter (password ``ref``, or an OAuth2 token from the
    account's token command), resolved at each connection, never stored."""
    if account.auth == "xoauth2" and account.oauth2_token_command:
        token = SecretRef(
            what=f"accounts.{account.name}.oauth2_token_command",
            command=account.oauth2_token_command,
        )
        return "xoauth2", lambda: credentials.resolve(token)
    return "password", lambda: credentials.resolve(ref)


def server_spec(account: AccountConfig, timeout: float = 60.0) -> ServerSpec:
    """The IMAP connection parameters for ``account`` (sync, watchers and the outbox alike).
    The secret (password, or an OAuth2 token from ``oauth2_token_command``) is resolved at each
    connect, never stored here."""
    from smime_companion.imap.session import ServerSpec

    auth, secret = _account_secret(account, account.password)
    return ServerSpec(
        host=account.host,
        port=account.port,
        username=account.username,
        secret=secret,
        tls=account.tls,
        ca_file=account.ca_file,
        auth=auth,
        timeout=timeout,
        name=account.name,
        command_time_limit=float(account.command_time_limit),
    )


def outbox_imap(account: AccountConfig, timeout: float = 60.0) -> ImapOutbox:
    """The outbox side of ``account``'s IMAP server (outbox, Sent, INBOX)."""
    from smime_companion.imap.outbox_source import ImapOutbox

    return ImapOutbox(server_spec(account, timeout), account.outbox_folder, account.sent_folder)


def smtp_submitter(account: AccountConfig, timeout: float = 60.0) -> SmtpSubmitter:
    """Submission through ``account``'s SMTP server: ``smtp_username`` (default: the IMAP
    username) with ``smtp_password`` (default: the IMAP password) or the OAuth2 token, TLS
    verified with the account's ``ca_file`` added. Raises ConfigError without ``smtp_host``."""
    from smime_companion.smtp import SmtpSpec, SmtpSubmitter

    if not account.smtp_host:
        raise ConfigError(f"account {account.name}: no smtp_host, so its outbox cannot send")
    auth, secret = _account_secret(account, account.smtp_password or account.password)
    return SmtpSubmitter(
        SmtpSpec(
            host=account.smtp_host,
            port=account.smtp_port,
            username=account.smtp_username or account.username,
            secret=secret,
            tls=account.smtp_tls,
            auth=auth,
            ca_file=account.ca_file,
            timeout=timeout,
        )
    )


def outbox_settings(
    config: Config, account: AccountConfig, identities: Sequence[Identity], label: str
) -> OutboxSettings:
    """The outbox settings of ``account`` (journal name ``label``). Notices go to the account's
    username when it is an address, else to the current identity's first address."""
    from smime_companion.core.certs import email_addresses
    from smime_companion.outbox.pipeline import OutboxSettings
    from smime_companion.outbox.plan import MissingCertPolicy

    user_address = account.username
    if "@" not in user_address:
        addresses = [a for i in identities for a in email_addresses(i.certificate)]
        user_address = addresses[0] if addresses else account.username
    return OutboxSettings(
        account=label,
        identities=tuple(identities),
        user_address=user_address,
        policy=MissingCertPolicy(config.outbox.missing_cert),
        max_bytes=config.outbox.max_draft_bytes,
        delay_notice_after=_hours(config.outbox.delay_notice_hours),
        give_up_after=_hours(config.outbox.give_up_hours),
    )


def _hours(hours: int) -> timedelta | None:
    """A config's hours as a duration; 0 means never (None)."""
    return timedelta(hours=hours) if hours else None


def process_outbox(
    config: Config,
    account_name: str,
    *,
    journal: Journal,
    identities: Sequence[Identity],
    lookup: CertificateLookup,
    clock: Callable[[], datetime],
) -> list[PassReport]:
    """The outbox pass of ``account_name``, what ``run``, ``outbox run`` and the reader's Send
    call: under the outbox lock, one :meth:`OutboxPipeline.run_pass` over each of its outboxes:
    its IMAP outbox folder (unless ``[outbox] imap = false``), when it is the directory's
    account the local outbox directory, and the drafts queued in the journal by the reader or
    ``compose`` (when there are any). An account without ``smtp_host`` has no outbox: returns
    ``[]``.

    Failures of the servers are in the reports' ``errors``. Raises
    :class:`~smime_companion.outbox.pipeline.OutboxBusy` when another process runs a pass.
    """
    from smime_companion.outbox.journal_drafts import JournalDrafts, reader_label
    from smime_companion.outbox.localdir import LocalDirectory
    from smime_companion.outbox.pipeline import (
        ACTIVE_STATES,
        OutboxPipeline,
        outbox_lock,
    )

    account = config.account(account_name)
    if not account.smtp_host:
        return []
    directory_account = config.outbox.directory_account or config.accounts[0].name
    wants_directory = config.outbox.directory is not None and account.name == directory_account
    # Drafts queued in the reader or by ``compose`` wait in the journal itself.
    drafts = JournalDrafts(journal, account.name, clock)
    wants_drafts = bool(drafts.drafts()) or bool(
        journal.items(reader_label(account.name), ACTIVE_STATES)
    )
    if not config.outbox.imap and not wants_directory and not wants_drafts:
        return []
    sources: list[tuple[OutboxSource, str]] = []
    if wants_directory and config.outbox.directory is not None:
        sources.append((LocalDirectory.created(config.outbox.directory), f"{account.name}/local"))
    if wants_drafts:
        sources.append((drafts, reader_label(account.name)))
    reports: list[PassReport] = []
    submitter = smtp_submitter(account)
    with outbox_lock(config.cache.path), outbox_imap(account) as imap:
        if config.outbox.imap:
            sources.insert(0, (imap, account.name))
        for source, label in sources:
            settings = outbox_settings(config, account, identities, label)
            pipeline = OutboxPipeline(
                journal, source, submitter, imap, imap, lookup, settings, clock=clock
            )
            report = pipeline.run_pass()
            if source is imap and not report.errors:
                report.folder = imap.outbox_folder
            reports.append(report)
    return reports


# -- the reader (issue 15) ------------------------------------------------------------------------


def reader_context(
    config: Config,
    key: str | None,
    *,
    kick_outbox: Callable[[str], None],
    daemon_status: Callable[[], dict[str, Any] | None],
    identities: Callable[[], Sequence[Identity]] | None = None,
    clock: Callable[[], datetime] | None = None,
) -> ReaderContext:
    """What the reader needs from ``config``, with the stores opened under ``key`` (the cache
    key, None for a plain cache). ``kick_outbox(account)`` asks for an outbox pass now;
    ``daemon_status`` reads the running daemon's status snapshot; ``identities`` default to the
    config's plus the store's, read again on each use (an identity imported meanwhile can
    send)."""
    from smime_companion.reader.context import AccountInfo, ReaderContext, StoreOpeners
    from smime_companion.store.certstore import CertStore
    from smime_companion.store.journal import Journal

    plain = not config.cache.encrypt

    def cache() -> Cache:
        return open_cache(config, key)

    def certs() -> CertStore:
        return CertStore.open(config.cache.path, None if plain else key)

    def journal() -> Journal:
        return Journal.open(config.cache.path, None if plain else key)

    def own() -> Sequence[Identity]:
        with certs() as store:
            return identities_with_store(config, store)

    def lookup(store: CertStore) -> CertificateLookup:
        return certificate_lookup(config, store)

    def open_attached(raw: bytes, at: datetime) -> OpenResult:
        # The daemon's opener, in this thread: the same policy and time limit, never raising.
        from smime_companion.sync.opening import OpeningPool

        with certs() as store:
            known, keys = store.certificates(), identities_with_store(config, store)
        opener = OpeningPool(
            keys,
            load_anchors(config.identity),
            allow_sha1=config.identity.allow_sha1,
            allow_weak=config.identity.allow_weak_algorithms,
            extra_certificates=known,
            workers=0,
            time_limit=config.cache.open_time_limit,
        )
        return opener.open(raw, at)

    mark_seen = None
    if config.reader.mark_seen_on_server:

        def mark_seen(summary: MessageSummary) -> None:
            with outbox_imap(config.account(summary.account), timeout=30) as imap:
                imap.mark_seen(summary.folder, summary.uidvalidity, summary.uid)

    return ReaderContext(
        state_dir=Path(config.cache.path),
        stores=StoreOpeners(cache=cache, certs=certs, journal=journal),
        accounts=tuple(AccountInfo(a.name, a.username, bool(a.smtp_host)) for a in config.accounts),
        identities=identities or own,
        anchors=lambda: load_anchors(config.identity),
        lookup=lookup,
        missing_cert=config.outbox.missing_cert,
        kick_outbox=kick_outbox,
        mark_seen=mark_seen,
        daemon_status=daemon_status,
        idle=timedelta(minutes=config.reader.idle_minutes),
        clock=clock or (lambda: datetime.now(UTC)),
        open_attached=open_attached,
    )

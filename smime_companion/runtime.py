"""Turning a :class:`~smime_companion.config.Config` into live objects: the user's identities,
the trust anchors, and (in the store package's terms) the cache.

With ``cli`` and ``daemon`` this is the only module that reads ``config``; it exists so both
build their objects the same way without importing each other.
"""

from __future__ import annotations

from cryptography import x509

from smime_companion import credentials, keyfiles
from smime_companion.config import Config, IdentityConfig
from smime_companion.core.model import Identity
from smime_companion.harvest import CertHarvester
from smime_companion.revocation import RevocationChecker
from smime_companion.scan import Scanner, make_scanner
from smime_companion.store import Cache
from smime_companion.store.certstore import CertStore, PolicyLookup


def load_identities(cfg: IdentityConfig) -> list[Identity]:
    """The current identity first, then the retired ones (``old_p12``), ready to decrypt.

    Raises :class:`~smime_companion.errors.KeyLoadError` or
    :class:`~smime_companion.errors.SecretUnavailable` with one line.
    """
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


def open_cache(config: Config, key: str | None = None) -> Cache:
    """The message cache of ``config``, opened with ``key`` or, when None, the configured key.

    Raises :class:`~smime_companion.errors.SecretUnavailable` or
    :class:`~smime_companion.errors.CacheError` (wrong key, damaged file) with one line.
    """
    if not config.cache.encrypt:
        return Cache.open(config.cache.path, None)
    return Cache.open(config.cache.path, key if key is not None else cache_key(config))


def open_scanner(config: Config) -> Scanner | None:
    """The malware scanner the config names (clamd socket, else command), or None."""
    return make_scanner(config.cache.scan.clamd_socket, config.cache.scan.command)


def open_certstore(config: Config, key: str | None = None) -> CertStore:
    """The certificate and identity store of ``config`` (``certs.db`` in the cache directory,
    under the cache key): opened with ``key`` or, when None, the configured key.

    Raises :class:`~smime_companion.errors.SecretUnavailable` or
    :class:`~smime_companion.errors.CacheError` (wrong key, damaged file) with one line.
    """
    if not config.cache.encrypt:
        return CertStore.open(config.cache.path, None)
    return CertStore.open(config.cache.path, key if key is not None else cache_key(config))


def revocation_checker(config: Config) -> RevocationChecker | None:
    """The OCSP/CRL checker the ``[certificates]`` policy asks for (None when ``off``)."""
    if config.certificates.revocation == "off":
        return None
    return RevocationChecker(timeout=config.certificates.revocation_timeout)


def certificate_harvester(config: Config, store: CertStore) -> CertHarvester:
    """The harvester the sync daemon hands opened messages to, with the config's TOFU policy
    and revocation checks (unless ``revocation = "off"``)."""
    return CertHarvester(store, config.certificates.tofu, revocation_checker(config))


def certificate_lookup(config: Config, store: CertStore) -> PolicyLookup:
    """The outbox's certificate lookup: ``store`` with the config's revocation policy, checking
    OCSP/CRL (answers cached in the store until their nextUpdate) unless it is ``off``."""
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

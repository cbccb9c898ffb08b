"""The certificate and identity store: correspondents' certificates by address, trust decisions,
revocation evidence, and the user's own key pairs (current and retired).

It lives in its own encrypted database file, ``certs.db``, beside the message cache and under the
same key (see :mod:`smime_companion.store.db`). A separate file rather than more tables in
``cache.db`` because ``db.connect`` records one linear migration list per file in
``PRAGMA user_version``: two modules appending to one list would have to coordinate every schema
change, and ``cache rebuild`` may drop and rebuild derived message data, which must never touch
private keys. ``cache rekey`` re-encrypts every ``*.db`` of the directory together
(``db.rekey_directory``), this file included.

Trust is kept per (address, certificate): one certificate may be pinned for one of its addresses
and flagged ``key-changed`` for another. Private keys are stored as PKCS#8 DER inside the
encrypted database: never a clear PEM on disk.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import apsw
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from smime_companion.core.cert_loading import load_certificate
from smime_companion.core.cert_vocabulary import CertRecord, Revocation, Trust
from smime_companion.core.certs import email_addresses, fingerprint_sha256
from smime_companion.core.model import Identity
from smime_companion.core.selection import Selection, same_key, select_certificate
from smime_companion.errors import UsageError
from smime_companion.store import db

DB_FILENAME = "certs.db"

# Own certificates that expire within this are reported by :func:`expiry_warnings`.
EXPIRY_WARNING = timedelta(days=30)

_HEX = re.compile(r"^[0-9a-f]+$")
_MIN_PREFIX = 8  # shortest fingerprint prefix accepted on the command line


def _migration_1(conn: apsw.Connection) -> None:
    conn.execute(
        """
        CREATE TABLE certificates (
            fingerprint TEXT PRIMARY KEY,          -- SHA-256 of the DER, lower-case hex
            der BLOB NOT NULL,
            subject TEXT NOT NULL,
            not_before INTEGER NOT NULL,
            not_after INTEGER NOT NULL,
            chain TEXT NOT NULL DEFAULT '',        -- issuer fingerprints, signer's issuer first
            revocation TEXT NOT NULL DEFAULT 'not-checked',
            revocation_source TEXT,                -- 'ocsp URL' or 'crl URL'
            revocation_checked INTEGER,
            revocation_next INTEGER,               -- the answer is fresh until then
            revocation_evidence BLOB               -- the OCSP response or CRL that decided
        );
        -- Intermediates and anchors seen in chains: evidence, and help to build later chains.
        CREATE TABLE issuers (fingerprint TEXT PRIMARY KEY, der BLOB NOT NULL);
        CREATE TABLE bindings (
            address TEXT NOT NULL,
            fingerprint TEXT NOT NULL REFERENCES certificates ON DELETE CASCADE,
            trust TEXT NOT NULL,
            first_seen INTEGER NOT NULL,
            last_seen INTEGER NOT NULL,
            source TEXT NOT NULL,                  -- Message-ID of the first sighting, or 'import'
            capabilities TEXT NOT NULL DEFAULT '[]',
            preferred TEXT,                        -- fingerprint named by the encryption-key pref.
            PRIMARY KEY (address, fingerprint)
        );
        CREATE INDEX bindings_by_fingerprint ON bindings (fingerprint);
        CREATE TABLE identities (
            fingerprint TEXT PRIMARY KEY,
            certificate BLOB NOT NULL,
            key BLOB NOT NULL,                     -- PKCS#8 DER, inside the encrypted database
            chain TEXT NOT NULL DEFAULT '[]',      -- hex DER of the certificates sent along
            imported INTEGER NOT NULL,
            seq INTEGER NOT NULL                   -- import order: the highest is current
        );
        """
    )


MIGRATIONS: list[db.Migration] = [_migration_1]


@dataclass(frozen=True)
class Sighting:
    """One certificate found in a signed message (or given by the user), to be recorded.

    ``anchored`` is True when the certificate chained to a trust anchor; ``tofu_addresses`` are
    the addresses for which, lacking an anchor, the first key seen may be pinned (those the
    TOFU policy covers and the message's From vouches for).
    """

    certificate: x509.Certificate
    source: str
    at: datetime
    anchored: bool
    chain: tuple[x509.Certificate, ...] = ()
    addresses: tuple[str, ...] | None = None  # default: the certificate's own addresses
    tofu_addresses: frozenset[str] = frozenset()
    capabilities: tuple[str, ...] = ()
    preferred: str | None = None
    # Certificates vouched for by the same signature (a signing certificate and the separate
    # encryption certificate it names): not "another key" for key-change detection.
    companions: tuple[x509.Certificate, ...] = ()


@dataclass(frozen=True)
class StoredIdentity:
    """One of the user's own key pairs as listed: ``current`` for the newest import."""

    fingerprint: str
    identity: Identity
    imported: datetime | None  # None: named by the config, not imported into the store
    current: bool

    @property
    def addresses(self) -> tuple[str, ...]:
        return email_addresses(self.identity.certificate)


def _ts(value: datetime) -> int:
    return int(value.timestamp())


def _dt(value: int | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


class CertStore(db.Handle):
    """The certificate and identity database. Open with :meth:`open`; close (or use ``with``).

    Every method raises :class:`~smime_companion.errors.CacheError` with one line when the
    database cannot be used, and leaves it unchanged when a change fails.
    """

    def __init__(self, conn: apsw.Connection) -> None:
        self._conn = conn

    def _all(self, sql: str, args: tuple[object, ...] = ()) -> list[Any]:
        # Rows typed as Any: apsw's row type is a union no column access can narrow usefully.
        return list(self._conn.execute(sql, args))

    def _one(self, sql: str, args: tuple[object, ...] = ()) -> Any:
        rows = self._all(sql, args)
        return rows[0] if rows else None

    @classmethod
    def open(cls, directory: Path, key: db.Key | None) -> CertStore:
        """Open (or create) ``directory/certs.db`` encrypted with ``key`` (None: in the clear,
        for tests). Raises :class:`CacheError` for a wrong key or a damaged file."""
        return cls(db.connect(directory / DB_FILENAME, key, MIGRATIONS))

    def rekey(self, new_key: str) -> None:
        """Re-encrypt this store alone under ``new_key`` (``cache rekey`` uses
        ``db.rekey_directory`` to change every database together). Raises :class:`CacheError`."""
        db.rekey(self._conn, new_key)

    # -- recording certificates -----------------------------------------------------------------

    @db.guarded("record a certificate")
    def record(self, sighting: Sighting) -> list[CertRecord]:
        """Record ``sighting`` in one transaction and return its records, one per address.

        A new (address, certificate) pair gets ``anchor`` when anchored; else ``tofu`` when the
        address is in ``tofu_addresses`` and holds no trusted certificate with another key (a
        renewal of the pinned key stays pinned); ``key-changed`` when it does; else
        ``untrusted``. A known pair keeps its trust (raised to ``anchor`` when now anchored, or
        judged as new when it was ``untrusted`` and TOFU now applies) and gets its last-seen
        time, capabilities and preference updated.
        """
        cert = sighting.certificate
        fp = fingerprint_sha256(cert)
        addresses = sighting.addresses if sighting.addresses is not None else email_addresses(cert)
        at = _ts(sighting.at)
        with db.savepoint(self._conn):
            self._put_certificate(cert, sighting.chain)
            for address in addresses:
                row = self._one(
                    "SELECT trust FROM bindings WHERE address = ? AND fingerprint = ?",
                    (address, fp),
                )
                caps = json.dumps(list(sighting.capabilities))
                if row is None:
                    trust = self._trust_for_new(address, cert, sighting)
                    self._conn.execute(
                        "INSERT INTO bindings (address, fingerprint, trust, first_seen, last_seen,"
                        " source, capabilities, preferred) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (address, fp, str(trust), at, at, sighting.source, caps,
                         sighting.preferred),
                    )  # fmt: skip
                    continue
                trust = Trust(str(row[0]))
                if sighting.anchored:
                    trust = Trust.ANCHOR
                elif trust == Trust.UNTRUSTED and address in sighting.tofu_addresses:
                    # First seen where TOFU did not apply (say, forwarded by someone else);
                    # now its own address vouches for it: pin it as if it were new.
                    trust = self._trust_for_new(address, cert, sighting)
                self._conn.execute(
                    "UPDATE bindings SET trust = ?, last_seen = max(last_seen, ?),"
                    " capabilities = CASE WHEN ? = '[]' THEN capabilities ELSE ? END,"
                    " preferred = coalesce(?, preferred) WHERE address = ? AND fingerprint = ?",
                    (str(trust), at, caps, caps, sighting.preferred, address, fp),
                )
        return [r for r in self.records_for_fingerprint(fp) if r.address in addresses]

    @db.guarded("record a certificate")
    def touch(self, bindings: Sequence[tuple[str, str]], at: datetime) -> None:
        """Move the last-seen time of these (address, fingerprint) bindings forward to ``at``
        (a repeated sighting that changes nothing else; see ``harvest``)."""
        with db.savepoint(self._conn):
            for address, fp in bindings:
                self._conn.execute(
                    "UPDATE bindings SET last_seen = max(last_seen, ?)"
                    " WHERE address = ? AND fingerprint = ?",
                    (_ts(at), address, fp),
                )

    def _trust_for_new(self, address: str, cert: x509.Certificate, sighting: Sighting) -> Trust:
        if sighting.anchored:
            return Trust.ANCHOR
        if address not in sighting.tofu_addresses:
            return Trust.UNTRUSTED
        companions = {fingerprint_sha256(c) for c in sighting.companions}
        others = []
        for fp, der, trust in self._all(
            "SELECT b.fingerprint, c.der, b.trust FROM bindings b JOIN certificates c"
            " USING (fingerprint) WHERE b.address = ? AND b.trust IN (?, ?, ?)",
            (address, str(Trust.ANCHOR), str(Trust.TOFU), str(Trust.KEY_CHANGED)),
        ):
            if str(fp) in companions:
                # Vouched for by the same signature: it shares that certificate's fate.
                if str(trust) == Trust.KEY_CHANGED:
                    return Trust.KEY_CHANGED
                continue
            others.append(load_certificate(bytes(der)))
        if not others or any(same_key(cert, other) for other in others):
            return Trust.TOFU
        return Trust.KEY_CHANGED

    def _put_certificate(self, cert: x509.Certificate, chain: Sequence[x509.Certificate]) -> None:
        fp = fingerprint_sha256(cert)
        issuers = [c for c in chain if fingerprint_sha256(c) != fp]
        for issuer in issuers:
            self._conn.execute(
                "INSERT OR IGNORE INTO issuers (fingerprint, der) VALUES (?, ?)",
                (fingerprint_sha256(issuer), _der(issuer)),
            )
        chain_text = " ".join(fingerprint_sha256(c) for c in issuers)
        self._conn.execute(
            "INSERT INTO certificates (fingerprint, der, subject, not_before, not_after, chain)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (fingerprint) DO UPDATE SET"
            " chain = CASE WHEN excluded.chain = '' THEN chain ELSE excluded.chain END",
            (
                fp,
                _der(cert),
                cert.subject.rfc4514_string(),
                _ts(cert.not_valid_before_utc),
                _ts(cert.not_valid_after_utc),
                chain_text,
            ),
        )

    # -- reading --------------------------------------------------------------------------------

    _SELECT = (
        "SELECT b.address, b.fingerprint, c.der, b.trust, b.first_seen, b.last_seen, b.source,"
        " b.capabilities, b.preferred, c.chain, c.revocation, c.revocation_checked,"
        " c.revocation_next FROM bindings b JOIN certificates c USING (fingerprint)"
    )

    def _records(self, where: str, args: tuple[object, ...]) -> list[CertRecord]:
        rows = self._all(f"{self._SELECT} {where} ORDER BY b.address, c.not_before DESC", args)
        issuers: dict[str, x509.Certificate] = {}
        records = []
        for row in rows:
            chain = []
            for issuer_fp in str(row[9]).split():
                if issuer_fp not in issuers:
                    found = self._one("SELECT der FROM issuers WHERE fingerprint = ?", (issuer_fp,))
                    if found is None:
                        continue
                    issuers[issuer_fp] = load_certificate(bytes(found[0]))
                chain.append(issuers[issuer_fp])
            records.append(
                CertRecord(
                    address=str(row[0]),
                    fingerprint=str(row[1]),
                    certificate=load_certificate(bytes(row[2])),
                    trust=Trust(str(row[3])),
                    first_seen=datetime.fromtimestamp(int(row[4]), UTC),
                    last_seen=datetime.fromtimestamp(int(row[5]), UTC),
                    source=str(row[6]),
                    capabilities=tuple(json.loads(str(row[7]))),
                    preferred=None if row[8] is None else str(row[8]),
                    chain=tuple(chain),
                    revocation=Revocation(str(row[10])),
                    revocation_checked=_dt(row[11]),
                    revocation_next=_dt(row[12]),
                )
            )
        return records

    @db.guarded("read the certificate store")
    def records(self, address: str | None = None) -> list[CertRecord]:
        """Every record, or those for ``address`` (case-insensitive), by address then newest
        certificate first."""
        if address is None:
            return self._records("", ())
        return self._records("WHERE b.address = ?", (address.strip().lower(),))

    @db.guarded("read the certificate store")
    def records_for_fingerprint(self, fingerprint: str) -> list[CertRecord]:
        """The records (one per address) of the certificate with this full fingerprint."""
        return self._records("WHERE b.fingerprint = ?", (fingerprint,))

    @db.guarded("read the certificate store")
    def resolve(self, text: str) -> str:
        """The full fingerprint a user typed: whole or a unique prefix of at least 8 hex digits,
        colons and case ignored. Raises :class:`UsageError` when none or several match."""
        wanted = text.replace(":", "").strip().lower()
        if len(wanted) < _MIN_PREFIX or not _HEX.match(wanted):
            raise UsageError(f"{text!r} is not a certificate fingerprint (hex, 8 digits or more)")
        found = [
            str(r[0])
            for r in self._conn.execute(
                "SELECT fingerprint FROM certificates WHERE substr(fingerprint, 1, ?) = ?",
                (len(wanted), wanted),
            )
        ]
        if not found:
            raise UsageError(f"no certificate with fingerprint {wanted} in the store")
        if len(found) > 1:
            raise UsageError(f"fingerprint prefix {wanted} matches {len(found)} certificates")
        return found[0]

    @db.guarded("read the certificate store")
    def certificates(self) -> list[x509.Certificate]:
        """Every certificate the store holds (signers harvested or imported, and the issuers
        seen in their chains): where the signer certificate of a message that leaves it out
        is looked for, and its chain built."""
        return [
            load_certificate(bytes(der))
            for (der,) in self._conn.execute(
                "SELECT der FROM certificates UNION SELECT der FROM issuers"
            )
        ]

    @db.guarded("read the certificate store")
    def intermediates(self) -> list[x509.Certificate]:
        """Every issuer certificate seen in a chain: extra certificates for building chains of
        messages that leave them out."""
        return [
            load_certificate(bytes(der)) for (der,) in self._conn.execute("SELECT der FROM issuers")
        ]

    def select(
        self,
        address: str,
        at: datetime,
        revocation_policy: str = "soft",
        refresh: Callable[[CertRecord, datetime], None] | None = None,
    ) -> Selection:
        """The certificate and capabilities to encrypt to ``address`` at ``at`` (see
        :func:`core.selection.select_certificate`), or the reason there is none.

        ``refresh``, when given and the policy is not ``off``, is called for each trusted,
        currently valid record whose revocation answer is missing or stale; it is expected to
        store a fresh one (``revocation.RevocationChecker.refresh_in`` makes one).
        """
        records = self.records(address)
        if refresh is not None and revocation_policy != "off":
            stale = [
                r
                for r in records
                if r.trust in (Trust.ANCHOR, Trust.TOFU)
                and r.not_before <= at <= r.not_after
                and (r.revocation_next is None or r.revocation_next < at)
                and r.revocation != Revocation.REVOKED
            ]
            for record in stale:
                refresh(record, at)
            if stale:
                records = self.records(address)
        return select_certificate(records, address, at, revocation_policy)

    # -- user decisions -------------------------------------------------------------------------

    @db.guarded("trust a certificate")
    def trust(self, fingerprint: str) -> list[CertRecord]:
        """Pin the certificate for every address it is recorded under, and un-pin the other
        keys pinned for those addresses (the user confirmed this key replaces them). Returns the
        updated records. Raises :class:`UsageError` for an unknown fingerprint."""
        fp = self.resolve(fingerprint)
        with db.savepoint(self._conn):
            records = self.records_for_fingerprint(fp)
            cert = load_certificate(
                bytes(self._one("SELECT der FROM certificates WHERE fingerprint = ?", (fp,))[0])
            )
            for record in records:
                for other in self.records(record.address):
                    if other.fingerprint == fp or other.trust != Trust.TOFU:
                        continue
                    if not same_key(cert, other.certificate):
                        self._set_trust(other.address, other.fingerprint, Trust.UNTRUSTED)
                if record.trust != Trust.ANCHOR:
                    self._set_trust(record.address, fp, Trust.TOFU)
        return self.records_for_fingerprint(fp)

    @db.guarded("record a trust decision")
    def rejudge(self, address: str, fingerprint: str, trust: Trust) -> None:
        """Set the stored trust of one (address, certificate) record, as the configured trust
        anchors or TOFU policy now decide it (see ``harvest.rejudge_store``)."""
        self._set_trust(address, fingerprint, trust)

    def _set_trust(self, address: str, fingerprint: str, trust: Trust) -> None:
        self._conn.execute(
            "UPDATE bindings SET trust = ? WHERE address = ? AND fingerprint = ?",
            (str(trust), address, fingerprint),
        )

    @db.guarded("forget a certificate")
    def forget(self, fingerprint: str) -> str:
        """Delete the certificate and every record of it. Returns its full fingerprint.
        Raises :class:`UsageError` for an unknown fingerprint."""
        fp = self.resolve(fingerprint)
        with db.savepoint(self._conn):
            self._conn.execute("DELETE FROM certificates WHERE fingerprint = ?", (fp,))
        return fp

    @db.guarded("store a revocation answer")
    def set_revocation(
        self,
        fingerprint: str,
        status: Revocation,
        checked: datetime,
        next_update: datetime | None,
        source: str | None = None,
        evidence: bytes | None = None,
    ) -> None:
        """Record the revocation answer for a certificate: its status, when it was checked,
        until when it is fresh, where it came from and the response or CRL itself."""
        with db.savepoint(self._conn):
            self._conn.execute(
                "UPDATE certificates SET revocation = ?, revocation_checked = ?,"
                " revocation_next = ?, revocation_source = ?, revocation_evidence = ?"
                " WHERE fingerprint = ?",
                (
                    str(status),
                    _ts(checked),
                    None if next_update is None else _ts(next_update),
                    source,
                    evidence,
                    fingerprint,
                ),
            )

    @db.guarded("read the certificate store")
    def revocation_evidence(self, fingerprint: str) -> tuple[str | None, bytes | None]:
        """Where the stored revocation answer came from and its bytes (OCSP response or CRL)."""
        row = self._one(
            "SELECT revocation_source, revocation_evidence FROM certificates WHERE fingerprint = ?",
            (fingerprint,),
        )
        if row is None:
            return None, None
        return (
            None if row[0] is None else str(row[0]),
            None if row[1] is None else bytes(row[1]),
        )

    # -- own identities -------------------------------------------------------------------------

    @db.guarded("import an identity")
    def import_identity(self, identity: Identity, at: datetime) -> StoredIdentity:
        """Keep ``identity`` (key encrypted with the database) and make it the current one;
        earlier identities stay for decrypting old mail. Importing the same certificate again
        makes it current again."""
        fp = fingerprint_sha256(identity.certificate)
        key_der = identity.key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        chain = json.dumps([_der(c).hex() for c in identity.chain])
        with db.savepoint(self._conn):
            seq = int(self._one("SELECT coalesce(max(seq), 0) + 1 FROM identities")[0])
            self._conn.execute(
                "INSERT INTO identities (fingerprint, certificate, key, chain, imported, seq)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (fingerprint) DO UPDATE SET"
                " seq = excluded.seq, key = excluded.key, chain = excluded.chain",
                (fp, _der(identity.certificate), key_der, chain, _ts(at), seq),
            )
        return next(i for i in self.identities_listed() if i.fingerprint == fp)

    @db.guarded("read the identities")
    def identities_listed(self) -> list[StoredIdentity]:
        """Every own identity, the current (latest imported) first."""
        rows = self._all(
            "SELECT fingerprint, certificate, key, chain, imported FROM identities"
            " ORDER BY seq DESC"
        )
        listed = []
        for index, (fp, cert_der, key_der, chain, imported) in enumerate(rows):
            identity = Identity(
                key=serialization.load_der_private_key(bytes(key_der), password=None),
                certificate=load_certificate(bytes(cert_der)),
                chain=tuple(load_certificate(bytes.fromhex(h)) for h in json.loads(str(chain))),
            )
            listed.append(
                StoredIdentity(
                    fingerprint=str(fp),
                    identity=identity,
                    imported=datetime.fromtimestamp(int(imported), UTC),
                    current=index == 0,
                )
            )
        return listed

    def identities(self) -> list[Identity]:
        """The own key pairs, current first, then older ones: ready for ``open_message``."""
        return [i.identity for i in self.identities_listed()]


@dataclass(frozen=True)
class PolicyLookup:
    """The outbox's certificate lookup (``select(address, at)``) with the configured revocation
    policy and checker bound: see :meth:`CertStore.select`."""

    store: CertStore
    revocation_policy: str = "soft"
    refresh: Callable[[CertRecord, datetime], None] | None = None

    def select(self, address: str, at: datetime) -> Selection:
        """The certificate to encrypt to ``address`` at ``at``, or why there is none."""
        return self.store.select(address, at, self.revocation_policy, self.refresh)


def expiry_warnings(
    identities: Iterable[StoredIdentity], at: datetime, ahead: timedelta = EXPIRY_WARNING
) -> list[str]:
    """One line per current identity that has expired or expires within ``ahead`` of ``at``.

    Retired identities are only kept to decrypt old mail, so their expiry is not news."""
    warnings = []
    for stored in identities:
        if not stored.current:
            continue
        not_after = stored.identity.certificate.not_valid_after_utc
        who = ", ".join(stored.addresses) or stored.fingerprint[:16]
        if not_after < at:
            warnings.append(f"identity {who} expired on {not_after.date().isoformat()}")
        elif not_after - at <= ahead:
            days = -(-(not_after - at) // timedelta(days=1))  # whole days, rounded up
            warnings.append(
                f"identity {who} expires on {not_after.date().isoformat()} (in {days} days)"
            )
    return warnings


__all__ = [
    "CertStore",
    "DB_FILENAME",
    "PolicyLookup",
    "Sighting",
    "StoredIdentity",
    "expiry_warnings",
]

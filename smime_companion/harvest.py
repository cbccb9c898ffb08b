"""Harvesting correspondents' certificates from opened mail into the certificate store.

The sync daemon hands every opened message to :class:`CertHarvester` (its ``Harvester``
protocol); so does anything else that opens mail. Each cryptographically sound signature
contributes its signer certificate, the chain that was built for it, the SMIMECapabilities and the
encryption-key preference, which may name a separate encryption certificate carried in the same
message.

What is harvested, by signer status:

* ``valid``, ``email-mismatch``, ``weak-algorithm``, ``expired``, ``not-yet-valid``: the chain
  reached a trust anchor, so the certificate is recorded as ``anchor`` for its own addresses
  (the CA vouches for them, whoever sent the message; selection still checks validity).
* ``untrusted``: sound signature, no anchor. Recorded ``untrusted``, or pinned (``tofu``) for
  the addresses the TOFU policy covers *and* the message's From names: a self-signed
  certificate only speaks for the address it arrived from.
* anything else (``invalid``, ``malformed``, ``unsupported``, ``bad-eku``): nothing; a broken
  signature proves nothing about its certificate.

A correspondent's mail mostly repeats the same sighting (same certificate, chain, capabilities
and preference): :meth:`CertHarvester.harvest` remembers the last few it recorded and, for a
repeat, only moves the bindings' last-seen time forward, until a revocation answer it relied on
runs out. A first sync of a mailbox full of one colleague's signed mail then costs one UPDATE per
message instead of recording the certificate again each time.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509

from smime_companion.core.cert_vocabulary import CertRecord, Revocation, Trust
from smime_companion.core.certs import email_addresses, fingerprint_sha256
from smime_companion.core.mime import holds_address, sender_of
from smime_companion.core.model import OpenResult, SignerReport
from smime_companion.core.selection import chain_to_anchor, tofu_applies
from smime_companion.core.verdicts import ANCHORED_STATUSES, SignatureStatus
from smime_companion.revocation_fetch import RevocationChecker
from smime_companion.store.certstore import CertStore, Sighting

log = logging.getLogger(__name__)

S = SignatureStatus
HARVESTABLE = ANCHORED_STATUSES | {S.UNTRUSTED}
# Repeated sightings remembered (see the module docstring); forgotten all at once when full.
RECENT_SIGHTINGS = 256


@dataclass
class _Recent:
    """A sighting recorded earlier in this process: the newest time it was seen, the bindings
    it wrote, and until when the revocation answers it relied on hold (None: no check due)."""

    at: datetime
    bindings: tuple[tuple[str, str], ...]
    recheck_at: datetime | None
    revoked: dict[str, str]  # what harvest returned for it


class CertHarvester:
    """Records signer certificates of opened messages in a :class:`CertStore`.

    ``tofu`` is the TOFU policy: patterns (``*``, an address, a domain) whose untrusted
    certificates are pinned on first sight. With a ``revocation`` checker, each harvested
    certificate that chains to an anchor and has no fresh revocation answer is checked, and the
    answer is stored with its evidence: how the certificate stood when its mail arrived.
    """

    def __init__(
        self,
        store: CertStore,
        tofu: Sequence[str] = (),
        revocation: RevocationChecker | None = None,
    ) -> None:
        self.store = store
        self.tofu = tuple(tofu)
        self.revocation = revocation
        self._recent: dict[tuple[object, ...], _Recent] = {}

    def harvest(self, result: OpenResult, message_id: str | None, at: datetime) -> dict[str, str]:
        """Record every harvestable signer of ``result`` (all layers), seen at ``at`` in the
        message ``message_id``; return the signers known to be revoked (fingerprint -> where
        that was learnt), for :func:`~smime_companion.core.open.with_revoked_signers`. Raises
        :class:`~smime_companion.errors.CacheError` when the store cannot be written (the store
        is then unchanged for that signer)."""
        key = _sighting_key(result)
        if key is None:
            return {}  # no signer worth recording
        recent = self._recent.get(key)
        if recent is not None and (recent.recheck_at is None or at < recent.recheck_at):
            if at > recent.at:
                self.store.touch(recent.bindings, at)
                recent.at = at
            return recent.revoked
        written = self.harvest_records(result, message_id, at)
        if len(self._recent) >= RECENT_SIGHTINGS:
            self._recent.clear()
        due = [
            r.revocation_next
            for r in written
            if self.revocation is not None and r.trust == Trust.ANCHOR
        ]
        revoked = known_revoked(self.store, result)
        self._recent[key] = _Recent(
            at=at,
            bindings=tuple((r.address, r.fingerprint) for r in written),
            # An answer without a next update (or none yet) is due again at once.
            recheck_at=None if not due else min((d or at) for d in due),
            revoked=revoked,
        )
        return revoked

    def forget_sightings(self) -> None:
        """Forget the recent sightings, so the next harvest of each signer records it again
        (after the TOFU policy or the anchors changed, a repeat is news)."""
        self._recent.clear()

    def known_revoked(self, result: OpenResult) -> dict[str, str]:
        """:func:`known_revoked` in this harvester's store (asks no server)."""
        return known_revoked(self.store, result)

    def harvest_records(
        self, result: OpenResult, message_id: str | None, at: datetime
    ) -> list[CertRecord]:
        """As :meth:`harvest`, returning the records written (one per certificate and address)."""
        signers = _harvestable_signers(result)
        if not signers:
            return []  # most mail: nothing to harvest, and nothing to parse
        source = message_id.strip() if message_id and message_id.strip() else "unknown-message"
        # The one From rule: a message with two From fields (or addresses) names no sender.
        senders = set(sender_of(result.headers).addresses)
        written: list[CertRecord] = []
        for signer in signers:
            written.extend(self._harvest_signer(signer, senders, source, at))
        if self.revocation is not None:
            self._check_revocation(written, at)
            by_key = {(r.address, r.fingerprint) for r in written}
            written = [
                r
                for fp in dict.fromkeys(r.fingerprint for r in written)
                for r in self.store.records_for_fingerprint(fp)
                if (r.address, r.fingerprint) in by_key
            ]
        return written

    def _check_revocation(self, records: list[CertRecord], at: datetime) -> None:
        assert self.revocation is not None
        checked: set[str] = set()
        for record in records:
            fresh = record.revocation_next is not None and record.revocation_next >= at
            if record.fingerprint in checked or fresh or record.trust != Trust.ANCHOR:
                continue
            checked.add(record.fingerprint)
            self.revocation.check_and_store(self.store, record.certificate, record.chain, at)

    def _harvest_signer(
        self, signer: SignerReport, senders: set[str], source: str, at: datetime
    ) -> list[CertRecord]:
        assert signer.certificate is not None
        anchored = signer.status in ANCHORED_STATUSES
        encryption_cert = _preferred_certificate(signer)
        preferred_fp = fingerprint_sha256(encryption_cert) if encryption_cert else None
        # The signer first: a separate encryption certificate it names is then judged as its
        # companion (pinned with it, key-changed with it), not as a second key.
        written = self.store.record(
            Sighting(
                certificate=signer.certificate,
                source=source,
                at=at,
                anchored=anchored,
                chain=signer.chain if anchored else (),
                tofu_addresses=self._tofu_addresses(signer.certificate, signer, senders),
                capabilities=signer.capabilities,
                preferred=preferred_fp,
            )
        )
        if encryption_cert is not None and encryption_cert != signer.certificate:
            enc_chain = None
            if anchored and signer.chain:
                # The named certificate is trusted only if it chains to the same anchor.
                enc_chain = chain_to_anchor(
                    encryption_cert,
                    [*signer.chain, *signer.certificates_in_message],
                    [signer.chain[-1]],
                )
            written += self.store.record(
                Sighting(
                    certificate=encryption_cert,
                    source=source,
                    at=at,
                    anchored=enc_chain is not None,
                    chain=enc_chain[1:] if enc_chain else (),
                    tofu_addresses=self._tofu_addresses(encryption_cert, signer, senders),
                    capabilities=signer.capabilities,
                    companions=(signer.certificate,),
                )
            )
        log.info(
            "harvested %s for %s from %s",
            fingerprint_sha256(signer.certificate)[:16],
            ", ".join(email_addresses(signer.certificate)) or "no address",
            source,
        )
        return written

    def _tofu_addresses(
        self, cert: x509.Certificate, signer: SignerReport, senders: set[str]
    ) -> frozenset[str]:
        if signer.status != S.UNTRUSTED:
            return frozenset()
        return frozenset(
            a
            for a in email_addresses(cert)
            if holds_address(senders, a) and tofu_applies(a, self.tofu)
        )


def rejudge_store(
    store: CertStore, anchors: Sequence[x509.Certificate], tofu: Sequence[str]
) -> int:
    """Judge the stored trust of every certificate again under the current ``anchors`` and
    TOFU policy (after they changed): ``anchor`` when it chains to one of them through its
    stored chain or the known intermediates; one whose stored chain no longer does becomes
    ``tofu`` where the policy covers its address (as if first seen now), else ``untrusted`` (an
    ``anchor`` record stored without its chain is left as it is: there is no evidence to
    judge). Pins (``tofu``) and ``key-changed`` stay: they are the user's decisions. Returns
    how many records changed."""
    pool = store.intermediates()
    changed = 0
    for record in store.records():
        if record.trust not in (Trust.ANCHOR, Trust.UNTRUSTED):
            continue
        anchored = chain_to_anchor(record.certificate, [*record.chain, *pool], anchors)
        if anchored is not None:
            trust = Trust.ANCHOR
        elif record.trust == Trust.ANCHOR and not record.chain:
            continue  # no chain was kept with it: nothing to judge by, so nothing is taken away
        elif record.trust == Trust.ANCHOR:
            trust = Trust.TOFU if tofu_applies(record.address, tofu) else Trust.UNTRUSTED
        else:
            continue
        if trust != record.trust:
            store.rejudge(record.address, record.fingerprint, trust)
            changed += 1
    return changed


def known_revoked(store: CertStore, result: OpenResult) -> dict[str, str]:
    """The signers of ``result`` whose certificate ``store`` holds as revoked (OCSP or a CRL
    said so, for it or a CA above it): SHA-256 fingerprint -> where that was learnt. Asks no
    server: what the store knows."""
    revoked: dict[str, str] = {}
    for signer in _harvestable_signers(result):
        assert signer.certificate is not None
        fingerprint = fingerprint_sha256(signer.certificate)
        records = store.records_for_fingerprint(fingerprint)
        if any(r.revocation == Revocation.REVOKED for r in records):
            source, _ = store.revocation_evidence(fingerprint)
            revoked[fingerprint] = source or "the certificate store holds it as revoked"
    return revoked


def _harvestable_signers(result: OpenResult) -> list[SignerReport]:
    """The signers of ``result`` (of every layer) whose certificate is recorded."""
    return [
        s for s in result.all_signers() if s.certificate is not None and s.status in HARVESTABLE
    ]


def _sighting_key(result: OpenResult) -> tuple[object, ...] | None:
    """What a sighting of ``result``'s signers depends on, the signing times aside (they differ
    in every message and are not recorded); None when no signer would be recorded."""
    wanted = _harvestable_signers(result)
    if not wanted:
        return None
    sender = (result.header("From") or "").lower()  # TOFU pins only for the From address
    return (sender, *(dataclasses.replace(s, signing_time=None) for s in wanted))


def _preferred_certificate(signer: SignerReport) -> x509.Certificate | None:
    """The certificate the signer's SMIMEEncryptionKeyPreference names, among the message's
    certificates (or the signer's own), or None."""
    preference = signer.encryption_key_preference
    if not preference:
        return None
    pool = list(signer.certificates_in_message)
    if signer.certificate is not None:
        pool.append(signer.certificate)
    kind = preference[0]
    for cert in pool:
        if kind == "issuer-serial" and len(preference) == 3:
            if (
                cert.issuer.rfc4514_string() == preference[1]
                and cert.serial_number == preference[2]
            ):
                return cert
        elif kind == "ski" and len(preference) == 2:
            try:
                ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
            except (x509.ExtensionNotFound, ValueError):
                continue
            if ski.digest.hex() == preference[1]:
                return cert
    return None


IMPORT_SOURCE = "import"


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except (x509.ExtensionNotFound, ValueError):
        return False


def import_sightings(
    certificates: Sequence[x509.Certificate],
    intermediates: Sequence[x509.Certificate],
    anchors: Sequence[x509.Certificate],
    at: datetime,
) -> list[Sighting]:
    """What importing ``certificates`` (a file's, PEM or DER) records: one sighting per email
    certificate among them, anchored when it chains to one of ``anchors`` through the file's
    other certificates and the store's ``intermediates``; CA certificates only help the chains.
    Empty when the file holds no email certificate."""
    leaves = [c for c in certificates if not _is_ca(c) and email_addresses(c)]
    pool = [*certificates, *intermediates]
    sightings = []
    for cert in leaves:
        chain = chain_to_anchor(cert, pool, anchors)
        sightings.append(
            Sighting(
                certificate=cert,
                source=IMPORT_SOURCE,
                at=at,
                anchored=chain is not None,
                chain=chain[1:] if chain else (),
            )
        )
    return sightings

"""Choosing the certificate to encrypt to: pure rules over the certificate store's records.

The store (``store.certstore``) keeps, per address, every certificate it ever harvested or was
given, with a trust decision and the last revocation evidence. This module decides, for one
address at one time, which of those records ``seal`` should use and with which capabilities, or
why none fits, in the words of ``core.cert_vocabulary``. It also holds the small chain check used
for imported certificates. Nothing here reads the clock, the disk or the network.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from smime_companion.core.cert_vocabulary import (
    USABLE_TRUST,
    CertRecord,
    Recipient,
    Revocation,
    Trust,
)
from smime_companion.core.certs import (
    advertised_capabilities,
    allows_encryption,
    is_usable_for_email,
)
from smime_companion.core.signatures import certificate_signed_by


@dataclass(frozen=True)
class Selected:
    """The certificate to encrypt to, the capabilities seal should honour, and any warnings
    (e.g. a revocation responder that could not be reached under the ``soft`` policy)."""

    record: CertRecord
    capabilities: tuple[str, ...]
    warnings: tuple[str, ...] = ()

    @property
    def recipient(self) -> Recipient:
        """The :class:`~smime_companion.core.cert_vocabulary.Recipient` for this choice."""
        return Recipient(self.record.address, self.record.certificate, self.capabilities)


@dataclass(frozen=True)
class NoCertificate:
    """No certificate fits: ``reason`` is one line for the user (the outbox quotes it)."""

    address: str
    reason: str


Selection = Selected | NoCertificate


def effective_trust(record: CertRecord, at: datetime) -> Trust:
    """The trust shown for ``record`` at ``at``: ``revoked`` or ``expired`` when that holds,
    else the stored decision."""
    if record.revocation == Revocation.REVOKED:
        return Trust.REVOKED
    if at > record.not_after:
        return Trust.EXPIRED
    return record.trust


def encryption_problem(
    record: CertRecord, at: datetime, revocation_policy: str = "soft"
) -> str | None:
    """Why ``record`` must not be encrypted to at ``at`` (a short phrase), or None.

    ``revocation_policy`` is ``off``, ``soft`` or ``hard``: under ``hard`` a certificate whose
    revocation status could not be established (responder unreachable, unknown to it, never
    checked) is refused; one that names no responder and no CRL is accepted, as there is nobody
    to ask. Never raises.
    """
    # Time first: trusting an expired certificate would not make it usable, so saying so
    # would send the user the wrong way.
    if at > record.not_after:
        return (
            f"expired on {record.not_after:%Y-%m-%d}: ask {record.address} for a signed message "
            "made with their new certificate"
        )
    if at < record.not_before:
        return f"not valid before {record.not_before:%Y-%m-%d}"
    if record.trust == Trust.KEY_CHANGED:
        return f"key changed: confirm it with 'certs trust {record.fingerprint}'"
    if record.trust not in USABLE_TRUST:
        return f"not trusted: no trust anchor (trust it with 'certs trust {record.fingerprint}')"
    if record.revocation == Revocation.REVOKED:
        return "revoked"  # known to be revoked: refused whatever the policy says about asking
    if revocation_policy == "hard" and record.revocation in (
        Revocation.UNKNOWN,
        Revocation.UNAVAILABLE,
        Revocation.NOT_CHECKED,
    ):
        return f"revocation status {record.revocation} (policy hard)"
    if not is_usable_for_email(record.certificate):
        return "not for email protection"
    if not allows_encryption(record.certificate):
        return "signing only: its key cannot receive encrypted mail"
    return None


def select_certificate(
    records: Sequence[CertRecord], address: str, at: datetime, revocation_policy: str = "soft"
) -> Selection:
    """The best certificate of ``records`` for encrypting to ``address`` at time ``at``.

    Only records for ``address`` (case-insensitive) count. A usable record is trusted or pinned,
    valid at ``at``, not revoked (see :func:`encryption_problem` for ``revocation_policy``) and
    able to receive encrypted mail. Among usable records, the one the address's most recently
    seen signing certificate names in its encryption-key preference wins; else the newest
    (latest notBefore, then latest seen). Returns :class:`Selected` or :class:`NoCertificate`
    with the reason of the most promising refused record. Never raises.
    """
    wanted = address.strip().lower()
    mine = [r for r in records if r.address == wanted]
    if not mine:
        return NoCertificate(wanted, f"no certificate known for {wanted}")
    usable: list[CertRecord] = []
    refusals: list[tuple[CertRecord, str]] = []
    for record in mine:
        problem = encryption_problem(record, at, revocation_policy)
        if problem is None:
            usable.append(record)
        else:
            refusals.append((record, problem))
    if not usable:
        # Name the problem of the newest certificate: it is the one the user most likely expects.
        record, problem = max(refusals, key=lambda rp: (rp[0].not_before, rp[0].last_seen))
        return NoCertificate(wanted, f"{wanted}: certificate {record.fingerprint[:16]} {problem}")
    by_fingerprint = {r.fingerprint: r for r in usable}
    chosen: CertRecord | None = None
    preferring: CertRecord | None = None
    for record in sorted(mine, key=lambda r: r.last_seen, reverse=True):
        if record.preferred and record.preferred in by_fingerprint:
            chosen, preferring = by_fingerprint[record.preferred], record
            break
    if chosen is None:
        chosen = max(usable, key=lambda r: (r.not_before, r.last_seen))
    # Capabilities travel with the signed message, so a separate encryption certificate takes
    # those of the signature that named it; failing both, the certificate's own extension.
    capabilities = (
        chosen.capabilities
        or (preferring.capabilities if preferring else ())
        or advertised_capabilities(chosen.certificate)
    )
    warnings: list[str] = []
    if revocation_policy == "soft" and chosen.revocation in (
        Revocation.UNAVAILABLE,
        Revocation.UNKNOWN,
    ):
        warnings.append(
            f"{wanted}: revocation status of {chosen.fingerprint[:16]} is {chosen.revocation}; "
            "used anyway (revocation = soft)"
        )
    return Selected(chosen, capabilities, tuple(warnings))


def same_key(a: x509.Certificate, b: x509.Certificate) -> bool:
    """True when both certificates certify the same public key (a renewal, not a key change)."""
    fmt = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    return a.public_key().public_bytes(der, fmt) == b.public_key().public_bytes(der, fmt)


def chain_to_anchor(
    cert: x509.Certificate,
    pool: Iterable[x509.Certificate],
    anchors: Iterable[x509.Certificate],
    max_depth: int = 8,
) -> tuple[x509.Certificate, ...] | None:
    """A chain from ``cert`` to one of ``anchors`` through certificates of ``pool``, or None.

    Checks names and signatures only (validity and usage are the caller's to judge at the time
    that matters): enough to decide whether a certificate the user imports is vouched for by an
    anchor. The chain runs from ``cert`` to the anchor. Never raises.
    """
    anchor_list = list(anchors)
    pool_list = list(pool)
    chain = [cert]
    current = cert
    for _ in range(max_depth):
        for anchor in anchor_list:
            if anchor == current:
                return tuple(chain)
            if _issued_by(current, anchor):
                return (*chain, anchor)
        issuer = next(
            (c for c in pool_list if c not in chain and _issued_by(current, c)),
            None,
        )
        if issuer is None:
            return None
        chain.append(issuer)
        current = issuer
    return None


def _issued_by(child: x509.Certificate, issuer: x509.Certificate) -> bool:
    return child.issuer == issuer.subject and certificate_signed_by(child, issuer)


def tofu_applies(address: str, patterns: Iterable[str]) -> bool:
    """True when the TOFU policy ``patterns`` covers ``address``.

    A pattern is ``*`` (every address), a whole address (``bob@example.net``) or a domain
    (``example.net``, which also covers its subdomains). Case-insensitive. Never raises.
    """
    address = address.strip().lower()
    domain = address.rpartition("@")[2]
    for pattern in patterns:
        p = pattern.strip().lower()
        if p == "*" or p == address:
            return True
        if "@" not in p and p and (domain == p or domain.endswith("." + p)):
            return True
    return False

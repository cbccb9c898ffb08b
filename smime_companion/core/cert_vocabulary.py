"""The certificate vocabulary: what the store, selection, revocation checking and sealing all say.

Trust decisions (:class:`Trust`), revocation answers (:class:`Revocation`), one stored
certificate for one address (:class:`CertRecord`), who a message is encrypted to
(:class:`Recipient`) and the capability names that steer the choice of cipher. Values only: the
engines that judge (``core.selection``, ``core.revocation``) and the one that builds
(``core.seal``) import this module, and none of them imports another to get a word.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from cryptography import x509

# Capability names (``core.certs.CAPABILITY_NAMES`` vocabulary) that steer the choice of
# algorithms when sealing.
AES_256_GCM = "aes-256-gcm"
AES_256_CBC = "aes-256-cbc"
AES_128_CBC = "aes-128-cbc"
TRIPLE_DES = "3des-cbc"
RSA_OAEP = "rsaes-oaep"


class Trust(StrEnum):
    """Why (or whether) a certificate may be used for an address. The string values are part of
    the public interface (``certs list --json`` prints them, the store keeps them).

    The store records ``anchor``, ``tofu``, ``untrusted`` and ``key-changed``; ``revoked`` and
    ``expired`` are derived when a record is shown (``core.selection.effective_trust``)."""

    ANCHOR = "anchor"  # the certificate chained to a trust anchor when it was harvested
    TOFU = "tofu"  # pinned: first key seen under a TOFU policy, or confirmed by the user
    UNTRUSTED = "untrusted"  # sound signature, but no anchor and no pin
    KEY_CHANGED = "key-changed"  # a different key for an address that has a pinned one
    REVOKED = "revoked"
    EXPIRED = "expired"


# Stored trust decisions that allow encrypting to a certificate.
USABLE_TRUST = frozenset({Trust.ANCHOR, Trust.TOFU})


class Revocation(StrEnum):
    """The last revocation answer stored for a certificate (see ``core.revocation``)."""

    GOOD = "good"
    REVOKED = "revoked"
    UNKNOWN = "unknown"  # the responder does not know the certificate
    UNAVAILABLE = "unavailable"  # no responder or CRL could be reached or read
    NO_SOURCE = "no-source"  # the certificate names no OCSP responder and no CRL
    NOT_CHECKED = "not-checked"


@dataclass(frozen=True)
class CertRecord:
    """One certificate for one address, as the store holds it.

    ``capabilities`` are the cipher names the owner advertised (SMIMECapabilities of the signed
    message it came with), ``preferred`` the SHA-256 fingerprint of the certificate the owner
    asked to be encrypted to (SMIMEEncryptionKeyPreference), ``source`` a Message-ID or
    ``import``. ``revocation_next`` is when the stored revocation answer stops being fresh.
    """

    address: str
    fingerprint: str
    certificate: x509.Certificate
    trust: Trust
    first_seen: datetime
    last_seen: datetime
    source: str
    capabilities: tuple[str, ...] = ()
    preferred: str | None = None
    chain: tuple[x509.Certificate, ...] = ()
    revocation: Revocation = Revocation.NOT_CHECKED
    revocation_checked: datetime | None = None
    revocation_next: datetime | None = None

    @property
    def not_before(self) -> datetime:
        return self.certificate.not_valid_before_utc

    @property
    def not_after(self) -> datetime:
        return self.certificate.not_valid_after_utc


@dataclass(frozen=True)
class Recipient:
    """Who a message is encrypted to: an address, its certificate, and the capability names
    (``core.certs`` vocabulary, e.g. ``aes-256-gcm``, ``rsaes-oaep``) the recipient advertised;
    empty when nothing is known about the recipient."""

    address: str
    certificate: x509.Certificate
    capabilities: tuple[str, ...] = ()

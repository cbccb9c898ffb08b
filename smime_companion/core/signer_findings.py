"""What the checks of one SignedData signer share (see :mod:`smime_companion.core.verify`).

:class:`SignerContext` holds what every signer of a SignedData is judged against (content, pool of
certificates, anchors, time, From addresses, policy, work budget); :class:`SignerFindings` collects
what the checks of one signer find and turns it into a
:class:`~smime_companion.core.model.SignerReport`, the most severe problem deciding the status. A
check that records a problem ending the signer's checks raises :class:`StopChecks`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import IntEnum
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from smime_companion.core.cert_loading import certificate_notes
from smime_companion.core.chain import Cert, PathBuilder, WorkBudget
from smime_companion.core.model import SignerReport
from smime_companion.core.revocation import CarriedCrl, CarriedOcspResponse
from smime_companion.core.signatures import HASH_FACTORIES
from smime_companion.core.verdicts import SIGNATURE_SEVERITY, SignatureStatus

MIN_RSA_BITS = 2048
WEAK_HASH_NAMES = {"md5": "MD5", "sha1": "SHA-1"}  # the weak hashes, as reasons name them

S = SignatureStatus


class Stage(IntEnum):
    """Stages of the per-signer checks, in the order of the issue-16 verdict model: a problem's
    severity (SIGNATURE_SEVERITY) decides the status; the stages order the paths compared."""

    CRYPTO = 0
    CHAIN = 1
    USAGE = 2
    ADDRESS = 3
    WEAK = 4


_RANK = {status: rank for rank, status in enumerate(SIGNATURE_SEVERITY)}


@dataclass
class SignerContext:
    content: bytes
    econtent_type: str
    message_certs: list[Cert]
    pool: list[Cert]  # message certificates, then extra certificates
    anchors: list[Cert]
    at: datetime
    from_addresses: tuple[str, ...]
    from_problem: str | None
    allow_sha1: bool
    budget: WorkBudget
    allow_weak: bool = False
    unreadable_certs: int = 0  # certificates of the message cryptography could not load
    digests: dict[str, bytes] = field(default_factory=dict)  # content digest by algorithm name
    crls: tuple[CarriedCrl, ...] = ()  # the CRLs the SignedData carries, as evidence only
    ocsp_responses: tuple[CarriedOcspResponse, ...] = ()  # and its OCSP responses, likewise
    _builder: PathBuilder | None = None

    @property
    def builder(self) -> PathBuilder:
        """The path builder every signer of this SignedData shares (and its dead ends)."""
        if self._builder is None:
            self._builder = PathBuilder(self.anchors, self.pool, self.budget)
        return self._builder

    def content_digest(self, name: str) -> bytes:
        # Several signers usually share an algorithm: hash the (possibly large) content once.
        if name not in self.digests:
            h = hashes.Hash(HASH_FACTORIES[name]())
            h.update(self.content)
            self.digests[name] = h.finalize()
        return self.digests[name]


@dataclass
class SignerFindings:
    """What the checks of one signer learnt; becomes a SignerReport."""

    problems: list[tuple[int, SignatureStatus, str]] = field(default_factory=list)
    certificate: x509.Certificate | None = None
    chain: tuple[x509.Certificate, ...] = ()
    addresses: tuple[str, ...] = ()
    address: str | None = None
    digest_algorithm: str | None = None
    signature_algorithm: str | None = None
    signing_time: datetime | None = None
    capabilities: tuple[str, ...] = ()
    capability_oids: tuple[str, ...] = ()
    encryption_key_preference: tuple[Any, ...] | None = None
    weaknesses: list[str] = field(default_factory=list)

    def fail(self, stage: int, status: SignatureStatus, reason: str) -> None:
        self.problems.append((stage, status, reason))

    def weak(self, reason: str, allowed: bool) -> None:
        """A weak algorithm: always listed, a problem unless the caller accepts it."""
        if reason not in self.weaknesses:
            self.weaknesses.append(reason)
        if not allowed:
            self.fail(Stage.WEAK, S.WEAK_ALGORITHM, reason)

    def report(self, message_certs: list[Cert]) -> SignerReport:
        if self.problems:
            # The most severe problem decides; sorted() is stable, so among equals the first
            # found wins.
            ordered = sorted(self.problems, key=lambda p: (_RANK[p[1]], p[0]))
            status, reason = ordered[0][1], ordered[0][2]
            others = list(dict.fromkeys(str(p[1]) for p in ordered[1:] if p[1] != status))
            if others:
                reason = f"{reason}; also {', '.join(others)}"
        else:
            status, reason = S.VALID, None
        return SignerReport(
            status=status,
            reason=reason,
            address=self.address,
            addresses=self.addresses,
            certificate=self.certificate,
            chain=self.chain,
            certificates_in_message=tuple(c.cert for c in message_certs),
            digest_algorithm=self.digest_algorithm,
            signature_algorithm=self.signature_algorithm,
            signing_time=self.signing_time,
            capabilities=self.capabilities,
            capability_oids=self.capability_oids,
            encryption_key_preference=self.encryption_key_preference,
            notes=tuple(n for c in self.chain or () for n in certificate_notes(c)),
            problems=tuple(
                dict.fromkeys(
                    (p[1], p[2]) for p in sorted(self.problems, key=lambda p: (_RANK[p[1]], p[0]))
                )
            ),
            weaknesses=tuple(self.weaknesses),
        )


class StopChecks(Exception):
    """Ends the checks of one signer early (a problem was recorded in the findings)."""

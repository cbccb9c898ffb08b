"""Certificates and certification paths, for :mod:`smime_companion.core.verify`.

:class:`Cert` wraps a certificate with the facts path building reads from it, cached per DER
(the same signers and intermediates come back in message after message). :class:`PathBuilder`
finds the paths from a signer to a trust anchor (RFC 5280 section 6, for what S/MIME needs:
names and key identifiers, signatures, basicConstraints, keyUsage, pathLenConstraint, unknown
critical extensions). A built path is then judged by
:mod:`smime_companion.core.signer_certificate` (time validity, usage, strength) and
:mod:`smime_companion.core.name_constraints`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any

from asn1crypto import cms
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from smime_companion.core import der_writer
from smime_companion.core.ber_walker import der_elements
from smime_companion.core.cert_loading import load_certificate
from smime_companion.core.certs import (
    CertificateDefect,
    ComparableName,
    allows_signing,
    comparable_name,
    describe_name,
    describe_subject,
    email_addresses,
    extension_value,
    is_usable_for_email,
    key_description,
)
from smime_companion.core.signatures import structure_signed_by

# Bounds on the work one hostile message can cause.
MAX_CERTIFICATES = 64  # certificates taken from one message
MAX_CHAIN_LENGTH = 8  # certificates in a path, signer and trust anchor included
_MAX_PATHS = 16  # complete paths compared per signer
# Per signer: issuer candidates examined, and certificate signatures verified. A real chain
# takes a handful of each; sixteen look-alike issuers at every level of an eight-certificate
# path, with the dead ends remembered, stay within them.
MAX_SEARCH_STEPS = 1024
MAX_SIGNATURE_CHECKS = 256
# Per message (WorkBudget): what sixteen signers, over every layer, may spend together. A
# signature check costs at most about a millisecond (RSA-16384, P-521, DSA-3072), a step a few
# microseconds: together well under a second.
MESSAGE_SEARCH_STEPS = 4096
MESSAGE_SIGNATURE_CHECKS = 512

# Critical extensions a path may carry. Policy extensions are accepted without policy processing
# (like most mail clients, we do not require an explicit policy); anything else that is critical
# and unknown makes the certificate unusable, as RFC 5280 section 4.2 demands.
_HANDLED_CRITICAL = frozenset(
    {
        x509.BasicConstraints.oid,
        x509.KeyUsage.oid,
        x509.ExtendedKeyUsage.oid,
        x509.SubjectAlternativeName.oid,
        x509.SubjectKeyIdentifier.oid,
        x509.AuthorityKeyIdentifier.oid,
        x509.NameConstraints.oid,
        x509.CertificatePolicies.oid,
        x509.PolicyConstraints.oid,
        x509.InhibitAnyPolicy.oid,
        x509.oid.ExtensionOID.POLICY_MAPPINGS,
    }
)


@dataclass(frozen=True, eq=False)
class Cert:
    """A certificate with its DER encoding (the identity used to compare certificates) and the
    facts the checks read from it, each computed on first use.

    The same signer, intermediates and anchors come back in message after message, and reading a
    fact through cryptography (a name, an extension) costs microseconds each time. So ``Cert``
    objects are shared between calls (:func:`cert_from_der`, :func:`cert_of`) and keep what
    they learnt: every fact is a pure function of the DER, so sharing cannot change a verdict.
    Facts that depend on the call (the time, ``allow_sha1``) are not kept here.
    """

    cert: x509.Certificate
    der: bytes = field(default=b"")

    def __post_init__(self) -> None:
        if not self.der:
            object.__setattr__(self, "der", self.cert.public_bytes(Encoding.DER))

    @cached_property
    def subject(self) -> x509.Name:
        return self.cert.subject

    @cached_property
    def issuer(self) -> x509.Name:
        return self.cert.issuer

    @cached_property
    def subject_key(self) -> ComparableName:
        """The subject as RFC 5280 compares names (:func:`~core.certs.comparable_name`), in a
        form that compares in one step: path building compares names a lot."""
        return comparable_name(self.cert.subject)

    @cached_property
    def issuer_key(self) -> ComparableName:
        return comparable_name(self.cert.issuer)

    @cached_property
    def public_key(self) -> CertificatePublicKeyTypes:
        return self.cert.public_key()

    @cached_property
    def self_issued(self) -> bool:
        """Subject and issuer are the same name (RFC 5280 section 3.2)."""
        return self.subject_key == self.issuer_key

    @cached_property
    def key_identity(self) -> tuple[Any, ...]:
        """(subject name, public key): what makes two certificates the same CA for path
        building. A key cryptography cannot read makes the certificate its own identity."""
        try:
            key = self.public_key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
        except (ValueError, UnsupportedAlgorithm):
            key = self.der
        return (self.subject_key, key)

    @cached_property
    def key_description(self) -> str:
        return key_description(self.cert)

    @cached_property
    def issuer_der(self) -> bytes:
        return self.cert.issuer.public_bytes()

    @cached_property
    def serial(self) -> int:
        return serial_number(self.cert)

    @cached_property
    def subject_text(self) -> str:
        return describe_subject(self.cert)

    @cached_property
    def addresses(self) -> tuple[str, ...]:
        return email_addresses(self.cert)

    @cached_property
    def usable_for_email(self) -> bool:
        return is_usable_for_email(self.cert)

    @cached_property
    def allows_signing(self) -> bool:
        return allows_signing(self.cert)

    @cached_property
    def unhandled_critical(self) -> str | None:
        return unhandled_critical_extension(self.cert)

    @cached_property
    def rsa_bits(self) -> int:
        return rsa_bits(self.cert)

    @cached_property
    def signature_hash(self) -> str | None:
        """``md5``, ``sha1`` or None for the hash of the certificate's own signature."""
        return weak_signature_hash(self.cert)

    @cached_property
    def validity(self) -> tuple[datetime, datetime]:
        return self.cert.not_valid_before_utc, self.cert.not_valid_after_utc

    @cached_property
    def key_ids(self) -> tuple[bytes | None, bytes | None] | None:
        """(authority key identifier, subject key identifier), None when unreadable."""
        try:
            aki = extension_value(self.cert, x509.AuthorityKeyIdentifier)
            ski = extension_value(self.cert, x509.SubjectKeyIdentifier)
        except CertificateDefect:
            return None
        return (aki.key_identifier if aki is not None else None), (
            ski.digest if ski is not None else None
        )

    @cached_property
    def ca_facts(self) -> tuple[x509.BasicConstraints | None, x509.KeyUsage | None] | str:
        """(basicConstraints, keyUsage), or why the extensions cannot be read."""
        try:
            return (
                extension_value(self.cert, x509.BasicConstraints),
                extension_value(self.cert, x509.KeyUsage),
            )
        except CertificateDefect as exc:
            return str(exc)

    @cached_property
    def name_constraints(self) -> x509.NameConstraints | None | CertificateDefect:
        try:
            return extension_value(self.cert, x509.NameConstraints)
        except CertificateDefect as exc:
            return exc


# Bounded: a hostile stream of mail with fresh certificates only evicts entries.
_CERT_CACHE_SIZE = 1024


@functools.lru_cache(maxsize=_CERT_CACHE_SIZE)
def cert_from_der(der: bytes) -> Cert | None:
    """The shared ``Cert`` for a certificate's DER, or None when cryptography cannot load it."""
    try:
        return Cert(load_certificate(der), der)
    except (ValueError, x509.InvalidVersion):
        return None


@functools.lru_cache(maxsize=_CERT_CACHE_SIZE)
def cert_of(cert: x509.Certificate) -> Cert:
    """The shared ``Cert`` of a certificate object (anchors, extra certificates)."""
    return Cert(cert)


# Certificate signature checks by (child DER, issuer DER): a pure fact, and the one costly step
# of building a path that would otherwise be repeated for every message of the same signer.
# Keyed by the DER rather than the objects so that it holds no parsed certificate alive; emptied
# when full (a hostile stream of new certificates costs recomputation, never memory).
_ISSUED_CACHE_SIZE = 4 * _CERT_CACHE_SIZE
_issued: dict[tuple[bytes, bytes], bool] = {}


def _directly_issued(child: Cert, issuer: Cert) -> bool:
    key = (child.der, issuer.der)
    known = _issued.get(key)
    if known is None:
        try:
            issuer_key = issuer.public_key
        except (ValueError, UnsupportedAlgorithm):
            issuer_key = None
        # Over the bytes as received, whatever the hash: a SHA-1 or MD5 certificate is judged
        # weak by verify (or accepted for archives), never mistaken for a forged one.
        known = issuer_key is not None and structure_signed_by(child.der, issuer_key)
        if len(_issued) >= _ISSUED_CACHE_SIZE:
            _issued.clear()
        _issued[key] = known
    return known


@dataclass(frozen=True)
class CertificateSet:
    """The certificates of a SignedData that could be read (at most ``MAX_CERTIFICATES``),
    and how many more could not (cryptography refused them: a broken encoding or name)."""

    readable: tuple[Cert, ...]
    unreadable: int


# 64 sets of up to MAX_CERTIFICATES each: a few megabytes at most, even for hostile mail.
@functools.lru_cache(maxsize=64)
def certificates_in_set(contents: bytes) -> CertificateSet:
    try:
        # A certificate is the universal SEQUENCE choice; the others carry context tags.
        choices = [whole for tag, whole, _ in der_elements(contents) if tag == 0x30]
    except ValueError:  # not DER: let asn1crypto read the BER
        as_set = b"\x31" + der_writer.length(len(contents)) + contents
        choices = [
            choice.chosen.dump()
            for choice in cms.CertificateSet.load(as_set)
            if choice.name == "certificate"
        ]
    out: list[Cert] = []
    unreadable = 0
    for der in choices:
        if len(out) >= MAX_CERTIFICATES:
            break
        loaded = cert_from_der(der)
        if loaded is not None:  # an unreadable certificate cannot be the signer's nor an issuer
            out.append(loaded)
        else:
            unreadable += 1
    return CertificateSet(tuple(dedupe(out)), unreadable)


def dedupe(certs: list[Cert]) -> list[Cert]:
    seen: set[bytes] = set()
    out = []
    for c in certs:
        if c.der not in seen:
            seen.add(c.der)
            out.append(c)
    return out


def serial_number(cert: x509.Certificate) -> int:
    # Mail still carries old certificates with a negative serial (see core.cert_loading).
    return cert.serial_number


def rsa_bits(cert: x509.Certificate) -> int:
    """The RSA modulus size of the certificate's key; a large number for other key types."""
    try:
        key = cert.public_key()
    except (ValueError, UnsupportedAlgorithm):
        return 1 << 16
    return key.key_size if isinstance(key, rsa.RSAPublicKey) else 1 << 16


def weak_signature_hash(cert: x509.Certificate) -> str | None:
    """``md5`` or ``sha1`` when the certificate is signed with that hash, else None."""
    try:
        algorithm = cert.signature_hash_algorithm
    except UnsupportedAlgorithm:
        return None
    if isinstance(algorithm, hashes.MD5):
        return "md5"
    if isinstance(algorithm, hashes.SHA1):
        return "sha1"
    return None


@dataclass
class WorkBudget:
    """The costly checks one message may still make, shared by every signer of every layer.

    Path search (RFC 4158 calls it a search through a graph) is exponential in the worst case: a
    message can carry certificates that link to each other in many ways (sixteen self-issued CA
    certificates sharing one key gave sixteen-factorial simple paths). Each signer gets its own
    allowance (see :class:`PathBuilder`), and this budget caps the sum over the message, so that
    sixteen signers times eight layers cannot multiply it. ``search_steps`` counts issuer
    candidates examined; ``signature_checks`` counts public-key operations on certificates and
    on signer certificates tried for a SignerIdentifier.
    """

    search_steps: int = MESSAGE_SEARCH_STEPS
    signature_checks: int = MESSAGE_SIGNATURE_CHECKS

    def take_signature_check(self) -> bool:
        """Spend one signature check; False (spending nothing) when none is left."""
        if self.signature_checks <= 0:
            return False
        self.signature_checks -= 1
        return True


@dataclass
class _Search:
    """The state of the search for one signer's paths."""

    found: list[tuple[Cert, ...]] = field(default_factory=list)
    steps: int = 0
    checks: int = 0
    gave_up: str | None = None  # why the search stopped before it was complete
    # The highest certificate reached whose issuer is nowhere to be found (the signer's own
    # issuer, or an intermediate's: a root the user does not trust), and how high it stood.
    unlinked: Cert | None = None
    unlinked_height: int = 0


class PathBuilder:
    """Depth-first search for paths signer -> ... -> anchor through the known certificates.

    An issuer must match the child's issuer name (and its key identifier when both carry one),
    have verified the child's signature, be a CA (basicConstraints cA, keyUsage keyCertSign when
    present), honour its pathLenConstraint, carry no unknown critical extension, and not repeat in
    the path. Validity in time is judged afterwards, per path, so that an expired certificate is
    reported as expired rather than as a missing link.

    The search is bounded whatever the certificates (RFC 4158 section 5.2): a path never holds
    two certificates with the same subject name and key (twins lead to the same issuers, so a
    second one only adds loops); a certificate found to be a dead end at some depth, with some
    number of intermediates below it, is not searched again in that position; and every signer
    may examine at most ``MAX_SEARCH_STEPS`` issuer candidates and ``MAX_SIGNATURE_CHECKS``
    signatures, within what the message's :class:`WorkBudget` has left. A search cut short
    keeps the paths it found; with none, the signer is ``untrusted`` and the reason says the
    search gave up. One builder serves every signer of a SignedData, so the dead ends learnt for
    one signer are known to the next.
    """

    def __init__(
        self, anchors: list[Cert], pool: list[Cert], budget: WorkBudget | None = None
    ) -> None:
        self.anchor_ders = {a.der for a in anchors}
        self.budget = budget if budget is not None else WorkBudget()
        # Candidate issuers by subject name, anchors first: a path that reaches an anchor
        # directly is the shortest.
        self.by_subject: dict[tuple[frozenset[tuple[str, Any]], ...], list[Cert]] = {}
        for c in anchors + [c for c in pool if c.der not in self.anchor_ders]:
            self.by_subject.setdefault(c.subject_key, []).append(c)
        self.verified: dict[tuple[bytes, bytes], bool] = {}
        # (certificate, path length, intermediates below) -> the last refusal seen beyond it,
        # for positions from which no path was found by a search that ran to its end.
        self._dead: dict[tuple[bytes, int, int], str | None] = {}
        self.rejections: dict[bytes, str] = {}  # why an issuer candidate was refused
        self._search = _Search()

    def paths(self, signer: Cert) -> list[tuple[Cert, ...]]:
        """Up to ``_MAX_PATHS`` paths from ``signer`` to an anchor (none: see :meth:`why_not`)."""
        self.rejections = {}
        self._search = search = _Search()
        if signer.unhandled_critical:
            self.rejections[signer.der] = (
                f"signer certificate has an unsupported critical extension "
                f"{signer.unhandled_critical}"
            )
            return search.found
        self._walk((signer,), {signer.key_identity}, 0)
        return search.found

    def _walk(self, path: tuple[Cert, ...], in_path: set[tuple[Any, ...]], below: int) -> None:
        search = self._search
        top = path[-1]
        if top.der in self.anchor_ders:
            search.found.append(path)
            return
        if len(path) >= MAX_CHAIN_LENGTH:
            self.rejections[top.der] = f"the path is longer than {MAX_CHAIN_LENGTH} certificates"
            return
        if top.issuer_key not in self.by_subject:
            if len(path) > search.unlinked_height:
                search.unlinked, search.unlinked_height = top, len(path)
            return
        position = (top.der, len(path), below)
        if position in self._dead:
            reason = self._dead[position]
            if reason is not None:
                self.rejections[top.der] = reason
            return
        found_before = len(search.found)
        last_rejection = len(self.rejections)
        budget = self.budget
        for issuer in self.by_subject.get(top.issuer_key, ()):
            if len(search.found) >= _MAX_PATHS:
                return
            if search.steps >= MAX_SEARCH_STEPS or budget.search_steps <= 0:
                search.gave_up = (
                    f"gave up the search for a path to a trust anchor after {search.steps} "
                    "steps: the message's certificates link to each other in too many ways"
                )
                return
            search.steps += 1
            budget.search_steps -= 1
            identity = issuer.key_identity
            if identity in in_path:
                # Its name and key are in the path already: a twin of a certificate above, or
                # the top itself, self-signed again (a CA that is not an anchor).
                self.rejections[issuer.der] = (
                    f"{issuer.subject_text} is self-signed and not a trust anchor"
                    if identity == top.key_identity
                    else f"{issuer.subject_text} would appear twice in the path"
                )
                continue
            if not self._key_ids_match(top, issuer):
                continue
            refusal = self._issuer_refusal(issuer, below, issuer.der in self.anchor_ders)
            if refusal:
                self.rejections[issuer.der] = refusal
                continue
            if not self._signed_by(top, issuer):
                if search.gave_up is not None:
                    return
                continue
            in_path.add(identity)
            self._walk((*path, issuer), in_path, below + (not issuer.self_issued))
            in_path.discard(identity)
            if search.gave_up is not None:
                return
        if len(search.found) == found_before:
            # A dead end, searched to its end: remember it, and why, for the next visit.
            reasons = list(self.rejections.values())[last_rejection:]
            self._dead[position] = reasons[-1] if reasons else None

    @staticmethod
    def _key_ids_match(child: Cert, issuer: Cert) -> bool:
        child_ids, issuer_ids = child.key_ids, issuer.key_ids
        if child_ids is None or issuer_ids is None:
            return False
        aki, ski = child_ids[0], issuer_ids[1]
        if aki is None or ski is None:
            return True
        return aki == ski

    @staticmethod
    def _issuer_refusal(issuer: Cert, below: int, is_anchor: bool) -> str | None:
        """Why ``issuer`` (a trust anchor when ``is_anchor``) cannot issue the top of a path with
        ``below`` intermediates under it that are not self-issued (the signer not counted), or
        None."""
        name = issuer.subject_text
        facts = issuer.ca_facts
        if isinstance(facts, str):
            return f"issuer {name}: {facts}"
        constraints, usage = facts
        if constraints is None and is_anchor:
            # RFC 5280 section 6.1.1: a trust anchor is a name and a key. A version-1 root (no
            # extensions at all) configured as an anchor is accepted, as OpenSSL, NSS and gpgsm
            # do; one that says it is not a CA (cA false, or a keyUsage without keyCertSign)
            # is still refused.
            constraints = x509.BasicConstraints(ca=True, path_length=None)
        if constraints is None or not constraints.ca:
            return f"issuer {name} is not a CA"
        if usage is not None and not usage.key_cert_sign:
            return f"issuer {name} may not sign certificates (keyUsage)"
        # RFC 5280 section 4.2.1.9: intermediates below this one, self-issued ones not counted.
        if constraints.path_length is not None and below > constraints.path_length:
            return f"issuer {name} allows {constraints.path_length} intermediates below it"
        critical = issuer.unhandled_critical
        if critical:
            return f"issuer {name} has an unsupported critical extension {critical}"
        return None

    def _signed_by(self, child: Cert, issuer: Cert) -> bool:
        pair = (child.der, issuer.der)
        known = self.verified.get(pair)
        if known is None:
            search = self._search
            if search.checks >= MAX_SIGNATURE_CHECKS or not self.budget.take_signature_check():
                search.gave_up = (
                    f"gave up the search for a path to a trust anchor after {search.checks} "
                    "certificate signature checks"
                )
                return False
            search.checks += 1
            known = self.verified[pair] = _directly_issued(child, issuer)
            if not known:
                self.rejections[issuer.der] = (
                    f"{child.subject_text} is not signed by the key of {issuer.subject_text}"
                )
        return known

    def why_not(self, signer: Cert) -> str:
        """One line saying why no path was found."""
        if self._search.gave_up is not None:
            return self._search.gave_up
        if self.rejections:
            return "no path to a trust anchor: " + next(reversed(self.rejections.values()))
        issuer = describe_name(signer.cert.issuer, "(empty issuer)")
        if signer.cert.subject == signer.cert.issuer:
            return f"self-signed certificate {issuer} is not a trust anchor"
        unlinked = self._search.unlinked
        if unlinked is not None and unlinked is not signer:
            # The message carried the intermediates; the root they lead to is not trusted.
            root = describe_name(unlinked.cert.issuer, "(empty issuer)")
            return (
                f"no path to a trust anchor: issuer {root} of the intermediate "
                f"{unlinked.subject_text} is not known"
            )
        return f"no path to a trust anchor: issuer {issuer} is not known"


def unhandled_critical_extension(cert: x509.Certificate) -> str | None:
    try:
        extensions = list(cert.extensions)
    except (ValueError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType):
        return "(unreadable extensions)"
    for ext in extensions:
        if ext.critical and ext.oid not in _HANDLED_CRITICAL:
            return ext.oid.dotted_string
    return None

"""Certificates and certification paths, for :mod:`smime_companion.core.verify`.

:class:`Cert` wraps a certificate with the facts path building reads from it, cached per DER
(the same signers and intermediates come back in message after message). :class:`PathBuilder`
finds the paths from a signer to a trust anchor (RFC 5280 section 6, for what S/MIME needs:
names and key identifiers, signatures, basicConstraints, keyUsage, pathLenConstraint, unknown
critical extensions); :func:`name_constraint_violation` applies name constraints to rfc822Name
and directoryName. Time validity, usage and strength are judged per path by ``verify``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
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
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from smime_companion.core.cert_loading import load_certificate
from smime_companion.core.certs import (
    CertificateDefect,
    allows_signing,
    email_addresses,
    extension_value,
    is_usable_for_email,
    key_description,
)
from smime_companion.core.cms import der_elements
from smime_companion.core.signatures import structure_signed_by

# Bounds on the work one hostile message can cause.
MAX_CERTIFICATES = 64  # certificates taken from one message
MAX_CHAIN_LENGTH = 8  # certificates in a path, signer and trust anchor included
_MAX_PATHS = 16  # complete paths compared per signer
_MAX_SIGNATURE_CHECKS = 256  # certificate signature verifications per signer

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
    def subject_key(self) -> tuple[frozenset[tuple[str, Any]], ...]:
        """The subject as cryptography's ``Name.__eq__`` compares it (each RDN a set of type and
        value), in a form that compares in one step: path building compares names a lot."""
        return _name_key(self.cert.subject)

    @cached_property
    def issuer_key(self) -> tuple[frozenset[tuple[str, Any]], ...]:
        return _name_key(self.cert.issuer)

    @cached_property
    def public_key(self) -> CertificatePublicKeyTypes:
        return self.cert.public_key()

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


def _name_key(name: x509.Name) -> tuple[frozenset[tuple[str, Any]], ...]:
    return tuple(frozenset((a.oid.dotted_string, a.value) for a in rdn) for rdn in name.rdns)


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


# 64 sets of up to MAX_CERTIFICATES each: a few megabytes at most, even for hostile mail.
@functools.lru_cache(maxsize=64)
def certificates_in_set(contents: bytes) -> tuple[Cert, ...]:
    try:
        # A certificate is the universal SEQUENCE choice; the others carry context tags.
        choices = [whole for tag, whole, _ in der_elements(contents) if tag == 0x30]
    except ValueError:  # not DER: let asn1crypto read the BER
        choices = [
            choice.chosen.dump()
            for choice in cms.CertificateSet.load(b"\x31" + _length(contents) + contents)
            if choice.name == "certificate"
        ]
    out: list[Cert] = []
    for der in choices:
        if len(out) >= MAX_CERTIFICATES:
            break
        loaded = cert_from_der(der)
        if loaded is not None:  # an unreadable certificate cannot be the signer's nor an issuer
            out.append(loaded)
    return tuple(dedupe(out))


def _length(contents: bytes) -> bytes:
    """DER length octets for ``contents``."""
    size = len(contents)
    if size < 0x80:
        return bytes([size])
    octets = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(octets)]) + octets


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


def describe_subject(cert: x509.Certificate) -> str:
    try:
        return cert.subject.rfc4514_string() or "(empty subject)"
    except ValueError:
        return "(unreadable subject)"


class PathBuilder:
    """Depth-first search for paths signer -> ... -> anchor through the known certificates.

    An issuer must match the child's issuer name (and its key identifier when both carry one),
    have verified the child's signature, be a CA (basicConstraints cA, keyUsage keyCertSign when
    present), honour its pathLenConstraint, carry no unknown critical extension, and not repeat in
    the path. Validity in time is judged afterwards, per path, so that an expired certificate is
    reported as expired rather than as a missing link.
    """

    def __init__(self, anchors: list[Cert], pool: list[Cert]) -> None:
        self.anchor_ders = {a.der for a in anchors}
        # Anchors first: a path that reaches an anchor directly is the shortest.
        self.candidates = anchors + [c for c in pool if c.der not in self.anchor_ders]
        self.checks = 0
        self.verified: dict[tuple[bytes, bytes], bool] = {}
        self.rejections: dict[bytes, str] = {}  # why an issuer candidate was refused

    def paths(self, signer: Cert) -> list[tuple[Cert, ...]]:
        found: list[tuple[Cert, ...]] = []
        if signer.unhandled_critical:
            self.rejections[signer.der] = (
                f"signer certificate has an unsupported critical extension "
                f"{signer.unhandled_critical}"
            )
            return found
        self._walk((signer,), found)
        return found

    def _walk(self, path: tuple[Cert, ...], found: list[tuple[Cert, ...]]) -> None:
        if len(found) >= _MAX_PATHS:
            return
        top = path[-1]
        if top.der in self.anchor_ders:
            found.append(path)
            return
        if len(path) >= MAX_CHAIN_LENGTH:
            self.rejections[top.der] = f"the path is longer than {MAX_CHAIN_LENGTH} certificates"
            return
        in_path = {c.der for c in path}
        for issuer in self.candidates:
            if issuer.der in in_path or issuer.subject_key != top.issuer_key:
                continue
            if not self._key_ids_match(top, issuer):
                continue
            refusal = self._issuer_refusal(issuer, path, issuer.der in self.anchor_ders)
            if refusal:
                self.rejections[issuer.der] = refusal
                continue
            if not self._signed_by(top, issuer):
                continue
            self._walk((*path, issuer), found)

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
    def _issuer_refusal(issuer: Cert, path: tuple[Cert, ...], is_anchor: bool) -> str | None:
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
        if constraints.path_length is not None:
            # RFC 5280 section 4.2.1.9: intermediates below this one, self-issued ones not counted.
            below = sum(1 for c in path[1:] if c.subject_key != c.issuer_key)
            if below > constraints.path_length:
                return f"issuer {name} allows {constraints.path_length} intermediates below it"
        critical = issuer.unhandled_critical
        if critical:
            return f"issuer {name} has an unsupported critical extension {critical}"
        return None

    def _signed_by(self, child: Cert, issuer: Cert) -> bool:
        pair = (child.der, issuer.der)
        if pair not in self.verified:
            if self.checks >= _MAX_SIGNATURE_CHECKS:
                return False
            self.checks += 1
            self.verified[pair] = _directly_issued(child, issuer)
            if not self.verified[pair]:
                self.rejections[issuer.der] = (
                    f"{child.subject_text} is not signed by the key of {issuer.subject_text}"
                )
        return self.verified[pair]

    def why_not(self, signer: Cert) -> str:
        """One line saying why no path was found."""
        if self.rejections:
            return "no path to a trust anchor: " + next(reversed(self.rejections.values()))
        issuer = signer.cert.issuer.rfc4514_string() or "(empty issuer)"
        if signer.cert.subject == signer.cert.issuer:
            return f"self-signed certificate {issuer} is not a trust anchor"
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


# --- name constraints ------------------------------------------------------------------------


def name_constraint_violation(path: tuple[Cert, ...], addresses: tuple[str, ...]) -> str | None:
    """RFC 5280 section 4.2.1.10 for the names S/MIME relies on: the signer's email addresses
    (rfc822Name) and the subjects (directoryName) of the certificates below each CA."""
    for position in range(1, len(path)):
        ca = path[position].cert
        constraints = path[position].name_constraints
        if isinstance(constraints, CertificateDefect):
            return f"name constraints of {describe_subject(ca)} cannot be read"
        if constraints is None:
            continue
        below = [c.cert for c in path[:position]]
        ca_name = describe_subject(ca)
        for address in _constrained_addresses(path[0].cert, addresses):
            if not _allowed(address, constraints, x509.RFC822Name, _email_matches):
                return f"address {address} is outside the name constraints of {ca_name}"
        for cert in below:
            subject = cert.subject
            # The self-issued certificates' subjects are exempt; an empty subject says nothing.
            if len(subject) == 0 or (cert is not path[0].cert and cert.subject == cert.issuer):
                continue
            if not _allowed(subject, constraints, x509.DirectoryName, _dn_matches):
                name = describe_subject(cert)
                return f"subject {name} is outside the name constraints of {ca_name}"
    return None


def _constrained_addresses(signer: x509.Certificate, addresses: tuple[str, ...]) -> list[str]:
    # RFC 5280 section 4.2.1.10: emailAddress attributes of the subject are constrained like
    # rfc822Names, even when the SAN is what names the signer.
    try:
        in_subject = [
            a.value.lower()
            for a in signer.subject.get_attributes_for_oid(NameOID.EMAIL_ADDRESS)
            if isinstance(a.value, str)
        ]
    except ValueError:
        in_subject = []
    return list(dict.fromkeys([*addresses, *in_subject]))


def _allowed(
    name: Any,
    constraints: x509.NameConstraints,
    kind: type[x509.GeneralName],
    matches: Callable[[Any, Any], bool],
) -> bool:
    permitted = [t.value for t in constraints.permitted_subtrees or () if isinstance(t, kind)]
    excluded = [t.value for t in constraints.excluded_subtrees or () if isinstance(t, kind)]
    if any(matches(name, e) for e in excluded):
        return False
    return not permitted or any(matches(name, p) for p in permitted)


def _email_matches(address: str, constraint: str) -> bool:
    # A full address matches itself; "host" matches addresses at that host; ".domain" matches
    # addresses at any host below the domain (RFC 5280 section 4.2.1.10).
    constraint = constraint.lower()
    if "@" in constraint:
        return address == constraint
    host = address.rpartition("@")[2]
    if constraint.startswith("."):
        return host.endswith(constraint)
    return host == constraint


def _dn_matches(subject: x509.Name, constraint: x509.Name) -> bool:
    # A directoryName subtree holds the names that start with its RDNs.
    prefix = list(constraint.rdns)
    return list(subject.rdns)[: len(prefix)] == prefix

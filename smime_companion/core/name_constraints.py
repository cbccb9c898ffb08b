"""Name constraints (RFC 5280 section 4.2.1.10) on a built certification path.

Applied to the names S/MIME relies on: the signer's email addresses (rfc822Name, the subject's
emailAddress attributes included) and the subjects (directoryName) of the certificates below
each CA, compared in a normal form (section 7). Other name forms are not checked.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID

from smime_companion.core.certs import CertificateDefect, describe_subject
from smime_companion.core.chain import Cert


def name_constraint_violation(path: tuple[Cert, ...], addresses: tuple[str, ...]) -> str | None:
    """RFC 5280 section 4.2.1.10 for the names S/MIME relies on: the signer's email addresses
    (rfc822Name) and the subjects (directoryName) of the certificates below each CA.

    Names and constraints are compared in a normal form (section 7): host names in lower case,
    without a trailing dot, internationalised labels as IDNA A-labels; directory names by
    attribute type with string values case-folded (Unicode NFKC) and their spaces collapsed.
    Otherwise ``ceo@evil.example.`` or ``O=EVIL`` would escape an exclusion of ``evil.example``
    or ``O=Evil``. A name that has no normal form (a host IDNA refuses) is outside every
    permitted subtree and inside every excluded one."""
    for position in range(1, len(path)):
        ca = path[position].cert
        constraints = path[position].name_constraints
        if isinstance(constraints, CertificateDefect):
            return f"name constraints of {describe_subject(ca)} cannot be read"
        if constraints is None:
            continue
        below = [c.cert for c in path[:position]]
        ca_name = describe_subject(ca)
        emails = _subtrees(constraints, x509.RFC822Name, _normal_email_constraint)
        for address in _constrained_addresses(path[0].cert, addresses):
            if not _allowed(_normal_email(address), emails, _email_matches):
                return f"address {address} is outside the name constraints of {ca_name}"
        names = _subtrees(constraints, x509.DirectoryName, _normal_dn)
        for cert in below:
            subject = cert.subject
            # The self-issued certificates' subjects are exempt; an empty subject says nothing.
            if len(subject) == 0 or (cert is not path[0].cert and cert.subject == cert.issuer):
                continue
            if not _allowed(_normal_dn(subject), names, _dn_matches):
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


_Subtrees = tuple[list[Any], list[Any]]  # (permitted, excluded) in normal form; None: no form


def _subtrees(
    constraints: x509.NameConstraints, kind: type[x509.GeneralName], normal: Callable[[Any], Any]
) -> _Subtrees:
    def of(trees: Any) -> list[Any]:
        return [normal(t.value) for t in trees or () if isinstance(t, kind)]

    return of(constraints.permitted_subtrees), of(constraints.excluded_subtrees)


def _allowed(name: Any, subtrees: _Subtrees, matches: Callable[[Any, Any], bool]) -> bool:
    permitted, excluded = subtrees
    if name is None:  # no normal form: fail closed whenever this kind of name is constrained
        return not permitted and not excluded
    if any(e is None or matches(name, e) for e in excluded):
        return False
    return not permitted or any(p is not None and matches(name, p) for p in permitted)


def _normal_host(host: str) -> str | None:
    """``host`` as name constraints compare it: lower case, no trailing dot, IDNA A-labels.
    None when it has no such form (a label IDNA refuses, an empty name)."""
    host = host.strip().rstrip(".")
    try:
        host = host.encode("idna").decode("ascii") if not host.isascii() else host
    except UnicodeError:
        return None
    host = host.lower()
    return host if host and ".." not in host else None


def _normal_email(address: str) -> tuple[str, str] | None:
    local, at, host = address.strip().rpartition("@")
    normal = _normal_host(host)
    if not at or not local or normal is None:
        return None
    return local.lower(), normal


def _normal_email_constraint(constraint: str) -> tuple[str, str] | None:
    """(local part or "", host or ".domain") of an rfc822Name constraint, or None."""
    constraint = constraint.strip()
    if "@" in constraint:
        return _normal_email(constraint)
    normal = _normal_host(constraint.lstrip("."))
    if normal is None:
        return None
    return "", ("." + normal if constraint.startswith(".") else normal)


def _email_matches(address: tuple[str, str], constraint: tuple[str, str]) -> bool:
    # A full address matches itself; "host" matches addresses at that host; ".domain" matches
    # addresses at any host below the domain (RFC 5280 section 4.2.1.10).
    local, host = constraint
    if local:
        return address == constraint
    if host.startswith("."):
        return address[1].endswith(host)
    return address[1] == host


_NormalDn = tuple[frozenset[tuple[str, Any]], ...]


def _normal_dn(name: x509.Name) -> _NormalDn:
    return tuple(
        frozenset((a.oid.dotted_string, _normal_dn_value(a.value)) for a in rdn)
        for rdn in name.rdns
    )


def _normal_dn_value(value: Any) -> Any:
    # RFC 5280 section 7.1 (after RFC 4518): case-insensitive, insignificant spaces removed.
    if isinstance(value, str):
        return " ".join(unicodedata.normalize("NFKC", value).casefold().split())
    return value


def _dn_matches(subject: _NormalDn, constraint: _NormalDn) -> bool:
    # A directoryName subtree holds the names that start with its RDNs.
    return subject[: len(constraint)] == constraint

"""Name constraints (RFC 5280 section 4.2.1.10) on a built certification path.

Applied to the signer's email addresses (rfc822Name, the subject's emailAddress attributes
included), to the subjects (directoryName) of the certificates below each CA, and to the
dNSName, uniformResourceIdentifier, directoryName and iPAddress entries of their
subjectAltName, compared in a normal form (section 7). otherName and other rarer forms are not
checked.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID

from smime_companion.core.certs import (
    CertificateDefect,
    ComparableName,
    comparable_name,
    describe_name,
    describe_subject,
    extension_value,
)
from smime_companion.core.chain import Cert


def name_constraint_violation(path: tuple[Cert, ...], addresses: tuple[str, ...]) -> str | None:
    """RFC 5280 section 4.2.1.10: the signer's email addresses (rfc822Name), and the subjects
    (directoryName) and subjectAltName entries of the certificates below each CA.

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
        ca_name = describe_subject(ca)
        if _comparisons(path[:position], constraints, addresses) > MAX_COMPARISONS:
            return (
                f"the names below {ca_name} and its name constraints are too many to compare "
                f"(over {MAX_COMPARISONS:,} comparisons)"
            )
        emails = _subtrees(constraints, x509.RFC822Name, _normal_email_constraint)
        for address in _constrained_addresses(path[0].cert, addresses):
            if not _allowed(_normal_email(address), emails, _email_matches):
                return f"address {address} is outside the name constraints of {ca_name}"
        names = _subtrees(constraints, x509.DirectoryName, comparable_name)
        for below in path[:position]:
            cert = below.cert
            # Self-issued CA certificates are exempt (a CA's key rollover), the signer's never.
            if below is not path[0] and below.self_issued:
                continue
            # An empty subject says nothing.
            if len(cert.subject) and not _allowed(below.subject_key, names, _dn_matches):
                name = describe_subject(cert)
                return f"subject {name} is outside the name constraints of {ca_name}"
            outside = _alt_name_outside(cert, constraints)
            if outside is not None:
                name = describe_subject(cert)
                return f"{outside} of {name} is outside the name constraints of {ca_name}"
    return None


# Names times constraints: every name is held against every subtree. Real CAs constrain a
# handful of names; a hostile certificate with ten thousand of each would cost a hundred
# million comparisons, and fails instead.
MAX_COMPARISONS = 200_000


def _comparisons(
    below: tuple[Cert, ...], constraints: x509.NameConstraints, addresses: tuple[str, ...]
) -> int:
    subtrees = len(constraints.permitted_subtrees or ()) + len(constraints.excluded_subtrees or ())
    names = len(addresses) + 1
    for c in below:
        try:
            san = extension_value(c.cert, x509.SubjectAlternativeName)
        except CertificateDefect:
            san = None
        names += 1 + (len(san) if san is not None else 0)
    return names * subtrees


def _alt_name_outside(cert: x509.Certificate, constraints: x509.NameConstraints) -> str | None:
    """The first subjectAltName entry of ``cert`` outside ``constraints`` ("host name X"), or
    None. A SAN that cannot be read is outside whenever it could have been constrained."""
    try:
        san = extension_value(cert, x509.SubjectAlternativeName)
    except CertificateDefect:
        return "the unreadable subjectAltName"
    if san is None:
        return None
    for kind, words, normal, normal_constraint, matches in _ALT_NAME_FORMS:
        subtrees = _subtrees(constraints, kind, normal_constraint)
        if not subtrees[0] and not subtrees[1]:
            continue
        for value in san.get_values_for_type(kind):  # type: ignore[arg-type]
            if not _allowed(normal(value), subtrees, matches):
                return f"{words} {value if isinstance(value, str) else _describe_value(value)}"
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


def _dn_matches(subject: ComparableName, constraint: ComparableName) -> bool:
    # A directoryName subtree holds the names that start with its RDNs.
    return subject[: len(constraint)] == constraint


def _normal_host_constraint(constraint: str) -> str | None:
    """A dNSName or URI constraint: a host, or ".domain" for the hosts below it; "" (a
    dNSName constraint with no labels) holds every host."""
    constraint = constraint.strip()
    if not constraint:
        return ""
    normal = _normal_host(constraint.lstrip("."))
    if normal is None:
        return None
    return "." + normal if constraint.startswith(".") else normal


def _dns_matches(host: str, constraint: str) -> bool:
    # RFC 5280: any name made by adding labels on the left of the constraint is inside it
    # ("example.com" holds "mail.example.com", never "badexample.com").
    if constraint == "":
        return True
    if constraint.startswith("."):
        return host.endswith(constraint)
    return host == constraint or host.endswith("." + constraint)


# RFC 3986: scheme "://" [userinfo "@"] host; an IP literal in brackets is no host name.
_URI_HOST = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://(?:[^@/?#]*@)?([^\[\]:/?#@]*)(?:[:/?#]|\Z)")


def _uri_host(uri: str) -> str | None:
    """The host of a URI as constraints compare it; None for a URI without one (a URN), which
    no URI constraint can be said to hold."""
    found = _URI_HOST.match(uri.strip())
    host = found.group(1) if found else ""
    return _normal_host(host) if host else None


def _host_matches(host: str, constraint: str) -> bool:
    # A URI constraint names a host exactly, or with a leading period the hosts below a domain.
    if constraint.startswith("."):
        return host.endswith(constraint)
    return host == constraint


def _same(value: Any) -> Any:
    return value


def _in(address: Any, network: Any) -> bool:
    # An iPAddress constraint is a network; a SAN entry an address of the same version.
    if isinstance(network, ipaddress.IPv4Network | ipaddress.IPv6Network) and isinstance(
        address, ipaddress.IPv4Address | ipaddress.IPv6Address
    ):
        return address.version == network.version and address in network
    return False


def _describe_value(value: Any) -> str:
    """A SAN entry that is no string (a directory name, an IP address) for a reason."""
    return describe_name(value) if isinstance(value, x509.Name) else str(value)


# The subjectAltName forms checked besides rfc822Name: the words a reason names it by, the
# normal form of a name and of a constraint, and whether a name falls inside a subtree.
_ALT_NAME_FORMS: tuple[
    tuple[
        type[x509.GeneralName],
        str,
        Callable[[Any], Any],
        Callable[[Any], Any],
        Callable[[Any, Any], bool],
    ],
    ...,
] = (
    (x509.DNSName, "host name", _normal_host, _normal_host_constraint, _dns_matches),
    (x509.UniformResourceIdentifier, "URI", _uri_host, _normal_host_constraint, _host_matches),
    (x509.DirectoryName, "directory name", comparable_name, comparable_name, _dn_matches),
    (x509.IPAddress, "IP address", _same, _same, _in),
)

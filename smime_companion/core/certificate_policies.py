"""Certificate policies on a built certification path (RFC 5280 section 6.1, policy processing).

Mail clients start the algorithm with any policy acceptable (``user-initial-policy-set`` =
anyPolicy, and no explicit policy, mapping inhibition or anyPolicy inhibition asked for), so a
path fails here only when its own CAs say so: a ``requireExplicitPolicy`` constraint that the
certificates below do not satisfy, a mapping to or from anyPolicy, or mappings and anyPolicy
that ``inhibitPolicyMapping`` or ``inhibitAnyPolicy`` forbid, leaving no policy valid for the
whole path. Qualifiers play no part in the verdict and are not kept.

Hostile input costs bounded work: the tree is cut at ``MAX_NODES`` (mappings can make it grow
exponentially, as OpenSSL learnt in CVE-2023-0464), a certificate's policies are held against
at most ``MAX_COMPARISONS`` nodes in all, and a path that reaches either bound fails.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.x509.oid import CertificatePoliciesOID, ExtensionOID

from smime_companion.core.certs import CertificateDefect, describe_subject, extension_value
from smime_companion.core.chain import Cert
from smime_companion.core.cms import ASN1_ERRORS

ANY_POLICY = CertificatePoliciesOID.ANY_POLICY.dotted_string
MAX_NODES = 1000
# A certificate's policies times the nodes above them: each policy is held against each node.
MAX_COMPARISONS = 200_000
_READ_ERRORS: tuple[type[Exception], ...] = (CertificateDefect, *ASN1_ERRORS)


@dataclass(eq=False)
class _Node:
    """A node of the valid_policy_tree: its policy and the policies it maps to below."""

    policy: str
    expected: set[str]
    parent: _Node | None
    children: list[_Node] = field(default_factory=list)


class _TooLarge(Exception):
    pass


class _Tree:
    """The valid_policy_tree, held as its nodes per depth (depth 0: the anyPolicy root)."""

    def __init__(self) -> None:
        self.levels: list[list[_Node]] = [[_Node(ANY_POLICY, {ANY_POLICY}, None)]]
        self.size = 1

    def add(self, parent: _Node, policy: str, expected: set[str], depth: int) -> None:
        if self.size >= MAX_NODES:
            raise _TooLarge
        while len(self.levels) <= depth:
            self.levels.append([])
        node = _Node(policy, expected, parent)
        parent.children.append(node)
        self.levels[depth].append(node)
        self.size += 1

    def remove(self, node: _Node, depth: int) -> None:
        self.levels[depth].remove(node)
        if node.parent is not None:
            node.parent.children.remove(node)
        self.size -= 1

    def prune(self, depth: int) -> None:
        """Delete the nodes of depth ``depth`` or less that have no children, repeatedly."""
        for level in range(min(depth, len(self.levels) - 1), -1, -1):
            for node in [n for n in self.levels[level] if not n.children]:
                self.remove(node, level)

    def empty(self) -> bool:
        return not self.levels[0]


def policy_violation(path: tuple[Cert, ...]) -> str | None:
    """Why no certificate policy is valid for ``path`` (signer first, anchor last) under the
    inputs mail clients use, or None. The anchor's own extensions are not processed."""
    certs = list(reversed(path[:-1]))  # from the one the anchor issued down to the signer
    n = len(certs)
    tree: _Tree | None = _Tree()
    explicit_policy = inhibit_any_policy = policy_mapping = n + 1
    try:
        for i, c in enumerate(certs, 1):
            facts = _facts_of(c)
            if isinstance(facts, str):
                return facts
            if tree is not None:
                tree = _with_policies(tree, facts, i, inhibit_any_policy, c.self_issued and i < n)
            if tree is None and explicit_policy <= 0:
                return _no_policy(c)
            if i == n:
                break
            for issuer_policy, subject_policy in facts.mappings:
                if ANY_POLICY in (issuer_policy, subject_policy):
                    return f"{describe_subject(c.cert)} maps a policy to or from anyPolicy"
            if tree is not None and facts.mappings:
                tree = _mapped(tree, facts.mappings, i, policy_mapping > 0)
            if not c.self_issued:
                explicit_policy = max(explicit_policy - 1, 0)
                policy_mapping = max(policy_mapping - 1, 0)
                inhibit_any_policy = max(inhibit_any_policy - 1, 0)
            if facts.require_explicit is not None:
                explicit_policy = min(explicit_policy, facts.require_explicit)
            if facts.inhibit_mapping is not None:
                policy_mapping = min(policy_mapping, facts.inhibit_mapping)
            if facts.inhibit_any is not None:
                inhibit_any_policy = min(inhibit_any_policy, facts.inhibit_any)
        signer = _facts_of(path[0])
        explicit_policy = max(explicit_policy - 1, 0)
        if not isinstance(signer, str) and signer.require_explicit == 0:
            explicit_policy = 0
    except _TooLarge:
        return "the certificate policies of the path are too many to process"
    if tree is None and explicit_policy <= 0:
        return _no_policy(path[0])
    return None


def _no_policy(c: Cert) -> str:
    return (
        f"no certificate policy is valid for the whole path down to {describe_subject(c.cert)},"
        " and a CA above requires one"
    )


@dataclass(frozen=True)
class _PolicyFacts:
    """What one certificate says about policies (None: the extension or field is absent)."""

    policies: tuple[str, ...] | None
    mappings: tuple[tuple[str, str], ...]
    require_explicit: int | None
    inhibit_mapping: int | None
    inhibit_any: int | None

    @staticmethod
    def of(cert: x509.Certificate) -> _PolicyFacts | str:
        """The facts, or why they cannot be read (a reason)."""
        try:
            policies = extension_value(cert, x509.CertificatePolicies)
            constraints = extension_value(cert, x509.PolicyConstraints)
            inhibit = extension_value(cert, x509.InhibitAnyPolicy)
            mappings = _policy_mappings(cert)
        except _READ_ERRORS:
            return f"the policy extensions of {describe_subject(cert)} cannot be read"
        return _PolicyFacts(
            policies=(
                None
                if policies is None
                else tuple(p.policy_identifier.dotted_string for p in policies)
            ),
            mappings=mappings,
            require_explicit=constraints.require_explicit_policy if constraints else None,
            inhibit_mapping=constraints.inhibit_policy_mapping if constraints else None,
            inhibit_any=inhibit.skip_certs if inhibit else None,
        )


# What each certificate says, by its DER: the same CAs come back in message after message
# (as in core.chain, keyed by the bytes so that no parsed certificate is kept alive; emptied
# when full).
_FACTS_CACHE_SIZE = 4096
_facts: dict[bytes, _PolicyFacts | str] = {}


def _facts_of(c: Cert) -> _PolicyFacts | str:
    known = _facts.get(c.der)
    if known is None:
        known = _PolicyFacts.of(c.cert)
        if len(_facts) >= _FACTS_CACHE_SIZE:
            _facts.clear()
        _facts[c.der] = known
    return known


def _policy_mappings(cert: x509.Certificate) -> tuple[tuple[str, str], ...]:
    """(issuerDomainPolicy, subjectDomainPolicy) pairs of the policyMappings extension, which
    cryptography leaves unparsed. Raises CertificateDefect or an ASN.1 error."""
    try:
        raw = cert.extensions.get_extension_for_oid(ExtensionOID.POLICY_MAPPINGS).value
    except x509.ExtensionNotFound:
        return ()
    except (ValueError, x509.DuplicateExtension) as exc:
        raise CertificateDefect(f"certificate extensions cannot be parsed: {exc}") from None
    mappings = asn1_x509.PolicyMappings.load(raw.public_bytes(), strict=True)
    return tuple(
        (m["issuer_domain_policy"].dotted, m["subject_domain_policy"].dotted) for m in mappings
    )


def _with_policies(
    tree: _Tree, facts: _PolicyFacts, i: int, inhibit_any_policy: int, self_issued_ca: bool
) -> _Tree | None:
    """RFC 5280 6.1.3 (d) and (e): the tree after certificate ``i``'s policies."""
    if facts.policies is None:
        return None
    parents = tree.levels[i - 1] if len(tree.levels) > i - 1 else []
    if len(facts.policies) * len(parents) > MAX_COMPARISONS:
        raise _TooLarge  # every policy is held against every node above it
    for policy in dict.fromkeys(facts.policies):
        if policy == ANY_POLICY:
            continue
        matched = [node for node in parents if policy in node.expected]
        for node in matched:
            tree.add(node, policy, {policy}, i)
        if not matched:
            for node in parents:
                if node.policy == ANY_POLICY:
                    tree.add(node, policy, {policy}, i)
    if ANY_POLICY in facts.policies and (inhibit_any_policy > 0 or self_issued_ca):
        for node in parents:
            present = {child.policy for child in node.children}
            for policy in sorted(node.expected - present):
                tree.add(node, policy, {policy}, i)
    tree.prune(i - 1)
    return None if tree.empty() else tree


def _mapped(
    tree: _Tree, mappings: tuple[tuple[str, str], ...], i: int, mapping_allowed: bool
) -> _Tree | None:
    """RFC 5280 6.1.4 (b): the tree after certificate ``i``'s policy mappings."""
    level = tree.levels[i] if len(tree.levels) > i else []
    equivalents: dict[str, set[str]] = {}
    for issuer_policy, subject_policy in mappings:
        equivalents.setdefault(issuer_policy, set()).add(subject_policy)
    for issuer_policy, subjects in equivalents.items():
        if mapping_allowed:
            nodes = [node for node in level if node.policy == issuer_policy]
            for node in nodes:
                node.expected = set(subjects)
            if not nodes and any(node.policy == ANY_POLICY for node in level):
                above = next((n for n in tree.levels[i - 1] if n.policy == ANY_POLICY), None)
                if above is not None:
                    tree.add(above, issuer_policy, set(subjects), i)
        else:
            for node in [node for node in level if node.policy == issuer_policy]:
                tree.remove(node, i)
            tree.prune(i - 1)
    return None if tree.empty() else tree

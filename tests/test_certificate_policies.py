"""Certificate policy processing (``core.certificate_policies``): PKITS's sections 4.8 to 4.12
are the specification (tests/test_pkits.py); here what they do not cover."""

from __future__ import annotations

import datetime as dt

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from smime_companion.core.certificate_policies import MAX_NODES, policy_violation
from smime_companion.core.chain import Cert, cert_of


def _issued(
    name: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: str,
    issuer_key: ec.EllipticCurvePrivateKey,
    extensions: list[x509.ExtensionType],
) -> x509.Certificate:
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
    )
    for extension in extensions:
        builder = builder.add_extension(extension, critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _policies(count: int, arc: int = 99999) -> x509.CertificatePolicies:
    return x509.CertificatePolicies(
        [x509.PolicyInformation(x509.ObjectIdentifier(f"1.3.6.1.4.1.{arc}.{n}"), None)
         for n in range(count)]
    )  # fmt: skip


def _path(
    ca: list[x509.ExtensionType], signer: list[x509.ExtensionType]
) -> tuple[Cert, Cert, Cert]:
    """(signer, CA, root) with these extensions, as path building hands them over."""
    keys = [ec.generate_private_key(ec.SECP256R1()) for _ in range(3)]
    root = _issued("Root", keys[0], "Root", keys[0], [])
    return (
        cert_of(_issued("Signer", keys[2], "CA", keys[1], signer)),
        cert_of(_issued("CA", keys[1], "Root", keys[0], ca)),
        cert_of(root),
    )


TOO_MANY = "the certificate policies of the path are too many to process"


def test_a_ca_with_more_policies_than_the_bound_fails() -> None:
    # Policy trees can grow exponentially (OpenSSL's CVE-2023-0464): the tree is cut at
    # MAX_NODES and the path then fails (the bound is a count of nodes, not a time).
    path = _path([_policies(MAX_NODES + 1)], [_policies(MAX_NODES + 1)])
    assert policy_violation(path) == TOO_MANY


def test_a_signer_with_a_flood_of_policies_under_a_full_tree_fails() -> None:
    # 999 policies at the CA fill the tree; 20,000 more at the signer, none matching, would be
    # held against each of them (twenty million comparisons, 0.76 s a path before the bound).
    path = _path([_policies(MAX_NODES - 1)], [_policies(20_000, arc=88888)])
    assert policy_violation(path) == TOO_MANY


def test_without_any_policy_extension_a_path_is_fine_unless_a_ca_requires_one() -> None:
    assert policy_violation(_path([], [])) is None
    requiring = x509.PolicyConstraints(require_explicit_policy=0, inhibit_policy_mapping=None)
    reason = policy_violation(_path([_policies(1), requiring], []))
    assert reason is not None and "no certificate policy is valid" in reason

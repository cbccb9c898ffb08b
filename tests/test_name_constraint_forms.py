"""Name constraints compare names in one normal form (issue 14): host names without a trailing
dot and in lower case (IDNA A-labels), directory names by attribute type with case-folded values
and collapsed spaces (RFC 5280 section 7.1). Before, ``ceo@evil.example.`` escaped an excluded
``evil.example`` and ``O=EVIL`` an excluded ``O=Evil``; the same forms fell outside what was
permitted. Each case is a real message under a CA carrying the constraint."""

from __future__ import annotations

import datetime as dt
import ipaddress

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from smime_companion.core.open import open_message
from smime_companion.core.verdicts import SignatureStatus
from tests.chaos.forged import ConstrainedWorld, constrained_message


def _dn(*pairs: tuple[x509.ObjectIdentifier, str]) -> x509.Name:
    return x509.Name([x509.NameAttribute(oid, value) for oid, value in pairs])


def _verdict(world: ConstrainedWorld, now: dt.datetime) -> tuple[SignatureStatus, str]:
    result = open_message(world.message, anchors=[world.anchor], at=now)
    return result.signature, result.signers[0].reason or ""


PLAIN = _dn((NameOID.COMMON_NAME, "Signer"))


@pytest.mark.parametrize(
    "address",
    [
        "ceo@evil.example.",
        "ceo@EVIL.Example",
        "ceo@mail.evil.example.",
        "ceo@XN--BCHER-KVA.example",
    ],
)
def test_an_excluded_mail_domain_cannot_be_escaped_by_case_or_a_trailing_dot(
    now: dt.datetime, address: str
) -> None:
    excluded: list[x509.GeneralName] = [
        x509.RFC822Name("evil.example"),
        x509.RFC822Name(".evil.example"),
        x509.RFC822Name("xn--bcher-kva.example"),
    ]
    world = constrained_message(signer_email=address, signer_subject=PLAIN, excluded=excluded)
    status, reason = _verdict(world, now)
    assert status == SignatureStatus.UNTRUSTED
    assert "outside the name constraints" in reason


def test_an_excluded_directory_name_cannot_be_escaped_by_case_or_spaces(now: dt.datetime) -> None:
    subject = _dn((NameOID.ORGANIZATION_NAME, "  EVIL   corp "), (NameOID.COMMON_NAME, "CEO"))
    world = constrained_message(
        signer_email="ceo@example.org",
        signer_subject=subject,
        excluded=[x509.DirectoryName(_dn((NameOID.ORGANIZATION_NAME, "Evil Corp")))],
    )
    status, reason = _verdict(world, now)
    assert status == SignatureStatus.UNTRUSTED
    assert "EVIL   corp" in reason and "outside the name constraints" in reason


@pytest.mark.parametrize("address", ["alice@EXAMPLE.ORG", "alice@example.org."])
def test_a_permitted_mail_domain_admits_its_other_spellings(now: dt.datetime, address: str) -> None:
    world = constrained_message(
        signer_email=address,
        signer_subject=PLAIN,
        permitted=[x509.RFC822Name("example.org")],
    )
    assert _verdict(world, now) == (SignatureStatus.VALID, "")


def test_a_permitted_directory_name_admits_another_case(now: dt.datetime) -> None:
    world = constrained_message(
        signer_email="alice@example.org",
        signer_subject=_dn((NameOID.ORGANIZATION_NAME, "EXAMPLE"), (NameOID.COMMON_NAME, "A")),
        permitted=[
            x509.DirectoryName(_dn((NameOID.ORGANIZATION_NAME, "Example"))),
            x509.RFC822Name("example.org"),
        ],
    )
    assert _verdict(world, now) == (SignatureStatus.VALID, "")


def test_an_address_outside_a_permitted_domain_is_still_refused(now: dt.datetime) -> None:
    world = constrained_message(
        signer_email="mallory@example.org.evil.example",
        signer_subject=PLAIN,
        permitted=[x509.RFC822Name("example.org")],
    )
    status, reason = _verdict(world, now)
    assert status == SignatureStatus.UNTRUSTED
    assert "outside the name constraints" in reason


# The other subjectAltName forms (PKITS 4.13.30 to 4.13.38 check DNS and URI names too).
@pytest.mark.parametrize(
    ("other", "constraint", "outside"),
    [
        (x509.DNSName("Mail.EVIL.example."), x509.DNSName("evil.example"), True),
        (x509.DNSName("evil.example"), x509.DNSName("evil.example"), True),
        (x509.DNSName("notevil.example"), x509.DNSName("evil.example"), False),
        (x509.UniformResourceIdentifier("https://EVIL.example/x"),
         x509.UniformResourceIdentifier("evil.example"), True),
        (x509.UniformResourceIdentifier("https://www.evil.example/"),
         x509.UniformResourceIdentifier("evil.example"), False),  # a host, not its subdomains
        (x509.UniformResourceIdentifier("https://www.evil.example/"),
         x509.UniformResourceIdentifier(".evil.example"), True),
        (x509.IPAddress(ipaddress.ip_address("10.1.2.3")),
         x509.IPAddress(ipaddress.ip_network("10.0.0.0/8")), True),
        (x509.IPAddress(ipaddress.ip_address("192.0.2.1")),
         x509.IPAddress(ipaddress.ip_network("10.0.0.0/8")), False),
        (x509.DirectoryName(_dn((NameOID.ORGANIZATION_NAME, "evil  CORP"))),
         x509.DirectoryName(_dn((NameOID.ORGANIZATION_NAME, "Evil Corp"))), True),
    ],
)  # fmt: skip
def test_other_alt_names_are_held_to_an_exclusion(
    now: dt.datetime, other: x509.GeneralName, constraint: x509.GeneralName, outside: bool
) -> None:
    world = constrained_message(
        signer_email="alice@example.org",
        signer_subject=PLAIN,
        excluded=[constraint],
        other_names=(other,),
    )
    status, reason = _verdict(world, now)
    if outside:
        assert status == SignatureStatus.UNTRUSTED
        assert "outside the name constraints" in reason
    else:
        assert (status, reason) == (SignatureStatus.VALID, "")


def test_a_uri_without_a_host_is_outside_a_permitted_uri_subtree(now: dt.datetime) -> None:
    world = constrained_message(
        signer_email="alice@example.org",
        signer_subject=PLAIN,
        permitted=[x509.UniformResourceIdentifier(".example.org"), x509.RFC822Name("example.org")],
        other_names=(x509.UniformResourceIdentifier("urn:uuid:0000"),),
    )
    status, reason = _verdict(world, now)
    assert status == SignatureStatus.UNTRUSTED
    assert "URI urn:uuid:0000" in reason


def test_names_and_constraints_too_many_to_compare_fail_at_once(now: dt.datetime) -> None:
    # Every name is held against every subtree: 1,000 host names under 1,000 excluded ones
    # would be a million comparisons (ten thousand of each, a hundred million).
    world = constrained_message(
        signer_email="alice@example.org",
        signer_subject=PLAIN,
        excluded=[x509.DNSName(f"evil{n}.example") for n in range(1000)],
        other_names=tuple(x509.DNSName(f"host{n}.example.org") for n in range(1000)),
    )
    status, reason = _verdict(world, now)  # 2.05 s at 3,000 of each before the bound
    assert status == SignatureStatus.UNTRUSTED
    assert "too many to compare (over 200,000 comparisons)" in reason

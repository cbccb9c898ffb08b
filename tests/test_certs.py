"""Certificate facts: addresses, capabilities, usages and fingerprints (``core.certs``)."""

from __future__ import annotations

import datetime as dt

import pytest
from asn1crypto import cms, core
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from smime_companion.core.certs import (
    CAPABILITY_NAMES,
    CAPABILITY_OIDS,
    allows_encryption,
    allows_signing,
    capabilities_from_attribute,
    describe_name,
    describe_subject,
    email_addresses,
    fingerprint_sha256,
    is_usable_for_email,
    key_description,
    name_to_rfc4514,
)
from smime_companion.core.cms import parse_content_info
from smime_companion.errors import MalformedInput
from smime_companion.testing.pki import TestPki
from tests.conftest import load_cert
from tests.tools import mime_message, openssl_cms, run


def _self_signed(
    *,
    san: list[x509.GeneralName] | None = None,
    subject_email: str | None = None,
    eku: list[x509.ObjectIdentifier] | None = None,
    key_usage: x509.KeyUsage | None = None,
) -> x509.Certificate:
    """A throwaway certificate with exactly the extensions asked for."""
    key = ec.generate_private_key(ec.SECP256R1())
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, "Test")]
    if subject_email is not None:
        attrs.append(x509.NameAttribute(NameOID.EMAIL_ADDRESS, subject_email))
    name = x509.Name(attrs)
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
    )
    if san is not None:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    if eku is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
    if key_usage is not None:
        builder = builder.add_extension(key_usage, critical=True)
    return builder.sign(key, hashes.SHA256())


def _key_usage(**flags: bool) -> x509.KeyUsage:
    names = (
        "digital_signature content_commitment key_encipherment data_encipherment key_agreement "
        "key_cert_sign crl_sign encipher_only decipher_only"
    ).split()
    return x509.KeyUsage(**{n: flags.get(n, False) for n in names})


# --- email_addresses -------------------------------------------------------------------------


def test_addresses_come_from_the_subject_alt_name(pki: TestPki) -> None:
    assert email_addresses(load_cert(pki.cert("alice"))) == ("alice@example.org",)


def test_addresses_fall_back_to_the_subject_email_attribute_without_san(pki: TestPki) -> None:
    assert email_addresses(load_cert(pki.cert("olga"))) == ("olga@example.org",)


def test_addresses_are_lower_cased_and_deduplicated_in_certificate_order() -> None:
    cert = _self_signed(
        san=[
            x509.RFC822Name("Zoe@Example.ORG"),
            x509.DNSName("example.org"),
            x509.RFC822Name("zoe@example.org"),
            x509.RFC822Name("alias@example.org"),
        ]
    )
    assert email_addresses(cert) == ("zoe@example.org", "alias@example.org")


def test_internationalised_addresses_come_from_smtp_utf8_mailbox_other_names() -> None:
    mailbox = x509.OtherName(
        x509.ObjectIdentifier("1.3.6.1.5.5.7.8.9"), core.UTF8String("Élise@exämple.org").dump()
    )
    cert = _self_signed(san=[x509.RFC822Name("elise@example.org"), mailbox])
    assert email_addresses(cert) == ("elise@example.org", "élise@exämple.org")


def test_subject_email_is_ignored_when_the_san_names_an_address() -> None:
    cert = _self_signed(san=[x509.RFC822Name("san@example.org")], subject_email="dn@example.org")
    assert email_addresses(cert) == ("san@example.org",)


def test_subject_email_is_used_when_the_san_has_no_address() -> None:
    cert = _self_signed(san=[x509.DNSName("example.org")], subject_email="DN@example.org")
    assert email_addresses(cert) == ("dn@example.org",)


def test_a_certificate_without_any_address_has_none() -> None:
    assert email_addresses(_self_signed()) == ()


# --- capabilities ----------------------------------------------------------------------------


def test_capabilities_of_an_openssl_signature_are_named_in_the_senders_order(
    pki: TestPki,
) -> None:
    der = openssl_cms(
        ["-sign", "-signer", pki.cert("alice"), "-inkey", pki.key("alice"), "-outform", "DER"],
        mime_message(),
    )
    signer = parse_content_info(der)["content"]["signer_infos"][0]
    (attr,) = [a for a in signer["signed_attrs"] if a["type"].native == "smime_capabilities"]
    names, oids = capabilities_from_attribute(attr["values"][0])
    # openssl 3.0 advertises AES-CBC first, then legacy ciphers; RC2 by its key sizes.
    assert names[:4] == ("aes-256-cbc", "aes-192-cbc", "aes-128-cbc", "3des-cbc")
    assert "rc2-128-cbc" in names and "rc2-40-cbc" in names
    assert oids[0] == CAPABILITY_OIDS["aes-256-cbc"]
    assert len(oids) >= len(names)


def test_capabilities_keep_unknown_oids_but_name_only_known_ones() -> None:
    caps = cms.SMIMECapabilites(
        [
            {"capability_id": "2.16.840.1.101.3.4.1.46"},
            {"capability_id": "1.2.3.4.5"},
            {"capability_id": "1.2.840.113549.1.1.7"},
            {"capability_id": "1.2.840.113549.3.2", "parameters": core.Integer(64)},
            {"capability_id": "1.2.840.113549.3.2", "parameters": core.Integer(99)},
        ]
    )
    names, oids = capabilities_from_attribute(caps.dump())
    assert names == ("aes-256-gcm", "rsaes-oaep", "rc2-64-cbc", "rc2-cbc")
    assert oids == (
        "2.16.840.1.101.3.4.1.46",
        "1.2.3.4.5",
        "1.2.840.113549.1.1.7",
        "1.2.840.113549.3.2",
        "1.2.840.113549.3.2",
    )


def test_capability_names_and_oids_are_one_to_one() -> None:
    assert len(set(CAPABILITY_NAMES.values())) == len(CAPABILITY_NAMES)
    for name in ("aes-256-gcm", "aes-128-gcm", "aes-256-cbc", "aes-192-cbc", "aes-128-cbc"):
        assert CAPABILITY_NAMES[CAPABILITY_OIDS[name]] == name
    assert CAPABILITY_OIDS["3des-cbc"] == "1.2.840.113549.3.7"
    assert CAPABILITY_OIDS["rsaes-oaep"] == "1.2.840.113549.1.1.7"
    assert CAPABILITY_OIDS["rsa"] == "1.2.840.113549.1.1.1"


def test_a_capabilities_value_that_is_not_a_sequence_is_malformed_input() -> None:
    with pytest.raises(MalformedInput, match="SMIMECapabilities"):
        capabilities_from_attribute(core.Integer(5).dump())


# --- usages ----------------------------------------------------------------------------------


@pytest.mark.parametrize("user", ["alice", "carol", "erin"])
def test_certificates_with_email_protection_eku_are_usable_for_email(
    pki: TestPki, user: str
) -> None:
    assert is_usable_for_email(load_cert(pki.cert(user)))


def test_a_certificate_without_eku_is_usable_for_email(pki: TestPki) -> None:
    assert is_usable_for_email(load_cert(pki.cert("olga")))


def test_a_server_auth_only_certificate_is_not_usable_for_email(pki: TestPki) -> None:
    assert not is_usable_for_email(load_cert(pki.cert("noeku")))


def test_any_extended_key_usage_is_usable_for_email() -> None:
    cert = _self_signed(eku=[ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE])
    assert is_usable_for_email(cert)


def test_signing_needs_digital_signature_or_non_repudiation() -> None:
    assert allows_signing(_self_signed())
    assert allows_signing(_self_signed(key_usage=_key_usage(digital_signature=True)))
    assert allows_signing(_self_signed(key_usage=_key_usage(content_commitment=True)))
    assert not allows_signing(_self_signed(key_usage=_key_usage(key_agreement=True)))


def test_encryption_needs_the_usage_that_fits_the_key_type(pki: TestPki) -> None:
    assert allows_encryption(load_cert(pki.cert("alice")))  # RSA, keyEncipherment
    assert allows_encryption(load_cert(pki.cert("carol")))  # P-256, keyAgreement
    assert not allows_encryption(load_cert(pki.cert("erin")))  # Ed25519 cannot encrypt
    ec_sign_only = _self_signed(key_usage=_key_usage(digital_signature=True))
    assert not allows_encryption(ec_sign_only)


def test_key_descriptions_name_type_and_size(pki: TestPki) -> None:
    assert key_description(load_cert(pki.cert("bob"))) == "rsa-3072"
    assert key_description(load_cert(pki.cert("dave"))) == "ec-secp384r1"
    assert key_description(load_cert(pki.cert("erin"))) == "ed25519"


# --- fingerprints and names ------------------------------------------------------------------


def test_fingerprint_matches_openssl(pki: TestPki) -> None:
    out = run(["openssl", "x509", "-in", pki.cert("bob"), "-noout", "-fingerprint", "-sha256"])
    expected = out.decode().strip().split("=", 1)[1].replace(":", "").lower()
    assert fingerprint_sha256(load_cert(pki.cert("bob"))) == expected


def test_an_issuer_name_from_cms_prints_like_the_certificates_issuer(pki: TestPki) -> None:
    der = openssl_cms(
        ["-sign", "-signer", pki.cert("olga"), "-inkey", pki.key("olga"), "-outform", "DER"],
        mime_message(),
    )
    signer = parse_content_info(der)["content"]["signer_infos"][0]
    issuer = signer["sid"].chosen["issuer"]
    assert name_to_rfc4514(issuer) == load_cert(pki.cert("olga")).issuer.rfc4514_string()
    # A subject with an emailAddress attribute prints the same way as cryptography prints it.
    olga = load_cert(pki.cert("olga"))
    subject = asn1_x509.Certificate.load(olga.public_bytes(Encoding.DER)).subject
    assert name_to_rfc4514(subject) == olga.subject.rfc4514_string()


def test_a_subject_email_attribute_is_shown_by_its_name_not_its_number() -> None:
    # Old certificates (Thawte Freemail, Evolution's, CAcert) carry the address in the subject
    # only; RFC 4514 has no name for it, so cryptography alone prints "1.2.840.113549.1.9.1=".
    cert = _self_signed(subject_email="alice@example.org")
    assert describe_subject(cert) == "emailAddress=alice@example.org,CN=Test"
    assert cert.subject.rfc4514_string().startswith("1.2.840.113549.1.9.1=")  # what is compared


def test_a_persons_name_attributes_are_shown_by_their_names() -> None:
    # Thawte Freemail's "2.5.4.42=Ralf,2.5.4.4=Hauser" (Bouncy Castle's embeddedmulti.message).
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.GIVEN_NAME, "Ralf"),
            x509.NameAttribute(NameOID.SURNAME, "Hauser"),
            x509.NameAttribute(NameOID.SERIAL_NUMBER, "PNODE-123"),
            x509.NameAttribute(NameOID.ORGANIZATION_IDENTIFIER, "VATDE-1"),
        ]
    )
    assert describe_name(name) == (
        "organizationIdentifier=VATDE-1,serialNumber=PNODE-123,sn=Hauser,givenName=Ralf"
    )


def test_an_empty_subject_is_described_as_asked() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    nameless = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "CA")]))
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    assert describe_subject(nameless) == "(empty subject)"
    assert describe_subject(nameless, "") == ""


def test_a_subject_cryptography_cannot_read_is_described_as_unreadable() -> None:
    # cryptography parses names only when first read, so such a certificate loads; the
    # certificates core.cert_loading refuses can still reach a report from elsewhere.
    der = _self_signed().public_bytes(Encoding.DER)
    common_name = b"\x0c\x04Test"  # CN=Test as a UTF8String, in the issuer and the subject
    assert der.count(common_name) == 2
    broken = x509.load_der_x509_certificate(der.replace(common_name, b"\x03\x04\x00est"))
    assert describe_subject(broken) == "(unreadable subject)"


def test_an_eku_without_email_protection_makes_an_ed25519_certificate_unusable_for_email() -> None:
    # Usage checks look at extensions only, whatever the key type.
    key = ed25519.Ed25519PrivateKey.generate()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Ed")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
        .sign(key, None)
    )
    assert not is_usable_for_email(cert)
    assert allows_signing(cert)

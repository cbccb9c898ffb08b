"""Facts about certificates that S/MIME needs: addresses, capabilities, usages, fingerprints.

Pure helpers over ``cryptography`` certificates and ``asn1crypto`` structures, shared by signature
verification, the certificate store and sealing. Certificates handled here are often untrusted (they
arrive in mail): a certificate whose extensions cannot be parsed is treated as unusable, never as
one without restrictions.
"""

from __future__ import annotations

import functools
import unicodedata
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

from asn1crypto import cms, core
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa, x448, x25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

from smime_companion.core.cms import ASN1_ERRORS
from smime_companion.core.cms_algorithms import RC2_CBC_OID
from smime_companion.errors import MalformedInput

# SMIMECapabilities (RFC 8551 section 2.5.2) OIDs and the names this package uses for them. The
# names are part of the public vocabulary (reports, the cache, seal's algorithm choice): never
# rename one. RC2 is named by its effective key bits (the capability's parameter), see below.
CAPABILITY_NAMES: Mapping[str, str] = {
    # Content encryption (RFC 3565 AES-CBC, RFC 5084 AES-GCM/CCM, RFC 8103 ChaCha20-Poly1305).
    "2.16.840.1.101.3.4.1.46": "aes-256-gcm",
    "2.16.840.1.101.3.4.1.26": "aes-192-gcm",
    "2.16.840.1.101.3.4.1.6": "aes-128-gcm",
    "2.16.840.1.101.3.4.1.47": "aes-256-ccm",
    "2.16.840.1.101.3.4.1.27": "aes-192-ccm",
    "2.16.840.1.101.3.4.1.7": "aes-128-ccm",
    "1.2.840.113549.1.9.16.3.18": "chacha20-poly1305",
    "2.16.840.1.101.3.4.1.42": "aes-256-cbc",
    "2.16.840.1.101.3.4.1.22": "aes-192-cbc",
    "2.16.840.1.101.3.4.1.2": "aes-128-cbc",
    "1.2.840.113549.3.7": "3des-cbc",
    "1.2.840.113549.3.2": "rc2-cbc",
    "1.3.14.3.2.7": "des-cbc",
    # Key wrap (RFC 3394 / RFC 5753).
    "2.16.840.1.101.3.4.1.45": "aes-256-wrap",
    "2.16.840.1.101.3.4.1.25": "aes-192-wrap",
    "2.16.840.1.101.3.4.1.5": "aes-128-wrap",
    # Key transport and agreement (RFC 8017, RFC 5753, RFC 8418).
    "1.2.840.113549.1.1.7": "rsaes-oaep",
    "1.2.840.113549.1.1.1": "rsa",
    "1.3.132.1.11.0": "ecdh-sha224",
    "1.3.132.1.11.1": "ecdh-sha256",
    "1.3.132.1.11.2": "ecdh-sha384",
    "1.3.132.1.11.3": "ecdh-sha512",
    "1.3.133.16.840.63.0.2": "ecdh-sha1",
    "1.3.132.1.14.0": "ecdh-cofactor-sha224",
    "1.3.132.1.14.1": "ecdh-cofactor-sha256",
    "1.3.132.1.14.2": "ecdh-cofactor-sha384",
    "1.3.132.1.14.3": "ecdh-cofactor-sha512",
    "1.3.101.110": "x25519",
    "1.3.101.111": "x448",
    # Signature and digest algorithms some agents advertise too.
    "1.2.840.113549.1.1.10": "rsassa-pss",
    "1.2.840.113549.1.1.11": "sha256-rsa",
    "1.2.840.113549.1.1.12": "sha384-rsa",
    "1.2.840.113549.1.1.13": "sha512-rsa",
    "1.2.840.10045.4.3.2": "ecdsa-sha256",
    "1.2.840.10045.4.3.3": "ecdsa-sha384",
    "1.2.840.10045.4.3.4": "ecdsa-sha512",
    "1.3.101.112": "ed25519",
    "1.3.101.113": "ed448",
    "2.16.840.1.101.3.4.2.1": "sha256",
    "2.16.840.1.101.3.4.2.2": "sha384",
    "2.16.840.1.101.3.4.2.3": "sha512",
    "1.3.14.3.2.26": "sha1",
    # RFC 8551 section 2.5.2 special capabilities.
    "1.2.840.113549.1.9.15.1": "prefer-signed-data",
    "1.2.840.113549.1.9.15.3": "cannot-decrypt-any",
}

# The reverse table, for building a SMIMECapabilities attribute from names ("rc2-cbc" maps to
# the RC2 OID; its key-size parameter is the builder's business).
CAPABILITY_OIDS: Mapping[str, str] = {name: oid for oid, name in CAPABILITY_NAMES.items()}

_SMIME_CAPABILITIES_OID = "1.2.840.113549.1.9.15"  # also a certificate extension, RFC 4262
_SMTP_UTF8_MAILBOX = "1.3.6.1.5.5.7.8.9"  # id-on-SmtpUTF8Mailbox, RFC 9598
_RC2_KEY_BITS = frozenset({40, 64, 128})

_E = TypeVar("_E", bound=x509.ExtensionType)


class CertificateDefect(ValueError):
    """A certificate's extensions cannot be parsed (raised by :func:`extension_value`)."""


def extension_value(cert: x509.Certificate, ext_type: type[_E]) -> _E | None:
    """The value of extension ``ext_type`` in ``cert``, or None when the extension is absent.

    Raises :class:`CertificateDefect` when the certificate's extensions cannot be parsed (bad
    encoding, a duplicated extension): the caller must then treat the certificate as unusable
    rather than as one without that restriction.
    """
    try:
        return cert.extensions.get_extension_for_class(ext_type).value
    except x509.ExtensionNotFound:
        return None
    except (ValueError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType) as exc:
        raise CertificateDefect(f"certificate extensions cannot be parsed: {exc}") from None


def email_addresses(cert: x509.Certificate) -> tuple[str, ...]:
    """The certificate's email addresses, lower-cased, without duplicates, in certificate order.

    Taken from the subjectAltName rfc822Name entries (RFC 8550 section 3) and SmtpUTF8Mailbox
    otherNames (RFC 9598, internationalised addresses); only when there are none, from the legacy
    emailAddress attributes of the subject. Returns ``()`` when there is no
    address or when the certificate's extensions cannot be parsed (an unreadable SAN must not let
    a subject address stand in for it). Never raises.
    """
    try:
        san = extension_value(cert, x509.SubjectAlternativeName)
    except CertificateDefect:
        return ()
    found: list[str] = []
    if san is not None:
        found = [name.lower() for name in san.get_values_for_type(x509.RFC822Name)]
        for other in san.get_values_for_type(x509.OtherName):
            if other.type_id.dotted_string == _SMTP_UTF8_MAILBOX:
                try:
                    found.append(core.UTF8String.load(other.value, strict=True).native.lower())
                except (ValueError, TypeError):
                    continue  # an unreadable name is no address
    if not found:
        try:
            attrs = cert.subject.get_attributes_for_oid(NameOID.EMAIL_ADDRESS)
        except ValueError:
            attrs = []
        found = [a.value.lower() for a in attrs if isinstance(a.value, str)]
    # dict.fromkeys de-duplicates while keeping the certificate's order.
    return tuple(dict.fromkeys(a.strip() for a in found if a.strip()))


def capabilities_from_attribute(
    value: cms.SMIMECapabilites | bytes,
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Read an SMIMECapabilities attribute value (RFC 8551 section 2.5.2).

    ``value`` is the parsed asn1crypto value or its DER encoding. Returns ``(names, oids)``, both in
    the sender's order of preference: ``names`` holds the names (see ``CAPABILITY_NAMES``) of the
    capabilities we know, ``oids`` the dotted OID of every capability. RC2 is named by its key
    size parameter (``rc2-128-cbc``, ``rc2-40-cbc``...), or ``rc2-cbc`` without a usable one.
    Raises :class:`MalformedInput` when the value is not a SEQUENCE OF SMIMECapability.
    """
    # Read from the DER, and cached by it: a sender's capabilities are the same in every message
    # it signs, and walking them with asn1crypto costs as much as checking the signature.
    der = value if isinstance(value, bytes) else value.dump()
    return _capabilities_from_der(der)


@functools.lru_cache(maxsize=256)
def _capabilities_from_der(der: bytes) -> tuple[tuple[str, ...], tuple[str, ...]]:
    try:
        caps = cms.SMIMECapabilites.load(der, strict=True)
        names: list[str] = []
        oids: list[str] = []
        for cap in caps:
            oid = cap["capability_id"].dotted
            oids.append(oid)
            name = CAPABILITY_NAMES.get(oid)
            if name is None:
                continue
            if oid == RC2_CBC_OID:
                name = _rc2_name(cap["parameters"])
            names.append(name)
    except ASN1_ERRORS as exc:
        raise MalformedInput(f"SMIMECapabilities attribute is malformed: {exc}") from None
    return tuple(dict.fromkeys(names)), tuple(oids)


def _rc2_name(parameters: core.Asn1Value) -> str:
    # RFC 8551: the RC2 capability's parameter is an INTEGER giving the effective key bits.
    if isinstance(parameters, core.Void):
        return "rc2-cbc"
    try:
        bits = core.Integer.load(parameters.dump()).native
    except ValueError:
        return "rc2-cbc"
    return f"rc2-{bits}-cbc" if bits in _RC2_KEY_BITS else "rc2-cbc"


def advertised_capabilities(cert: x509.Certificate) -> tuple[str, ...]:
    """The capability names of the certificate's SMIMECapabilities extension (RFC 4262), or
    ``()`` when it has none or it cannot be read. Never raises."""
    try:
        ext = cert.extensions.get_extension_for_oid(x509.ObjectIdentifier(_SMIME_CAPABILITIES_OID))
    except (x509.ExtensionNotFound, ValueError, x509.DuplicateExtension):
        return ()
    value = ext.value
    if not isinstance(value, x509.UnrecognizedExtension):
        return ()
    try:
        names, _oids = capabilities_from_attribute(value.value)
    except MalformedInput:
        return ()
    return names


def fingerprint_sha256(cert: x509.Certificate) -> str:
    """The SHA-256 fingerprint of the certificate's DER encoding, as lower-case hex (no colons)."""
    return cert.fingerprint(hashes.SHA256()).hex()


# RFC 4514 names no emailAddress attribute, so cryptography prints its dotted OID; the name
# OpenSSL and most mail clients show it under is clearer to a person (display only: names that
# are compared use plain ``rfc4514_string``).
_SHOWN_ATTRIBUTE_NAMES = {
    NameOID.EMAIL_ADDRESS: "emailAddress",
    # Personal certificates (Thawte Freemail, national ID cards, qualified certificates) name
    # people by these; RFC 4519 gives the names.
    NameOID.GIVEN_NAME: "givenName",
    NameOID.SURNAME: "sn",
    NameOID.SERIAL_NUMBER: "serialNumber",
    NameOID.TITLE: "title",
    NameOID.INITIALS: "initials",
    NameOID.GENERATION_QUALIFIER: "generationQualifier",
    NameOID.PSEUDONYM: "pseudonym",
    NameOID.ORGANIZATION_IDENTIFIER: "organizationIdentifier",
}


ComparableName = tuple[frozenset[tuple[str, Any]], ...]


def comparable_name(name: x509.Name) -> ComparableName:
    """``name`` in the form RFC 5280 section 7.1 compares names in (after RFC 4518): each RDN
    a set of type and value, string values compared without case and without insignificant
    spaces. A CA's name in its children's issuer field may differ so from its own subject
    (capitals, doubled spaces, another string type) and still be the same name."""
    return tuple(
        frozenset((a.oid.dotted_string, _comparable_value(a.value)) for a in rdn)
        for rdn in name.rdns
    )


def _comparable_value(value: Any) -> Any:
    if isinstance(value, str):
        return " ".join(unicodedata.normalize("NFKC", value).casefold().split())
    return value


def describe_name(
    name: x509.Name, empty: str = "(empty name)", unreadable: str = "(unreadable name)"
) -> str:
    """A distinguished name as RFC 4514 text for a person to read (emailAddress by that name),
    ``empty`` when it has no attribute, and ``unreadable`` when cryptography refuses it:
    names are parsed only when first read. Never raises."""
    try:
        return name.rfc4514_string(_SHOWN_ATTRIBUTE_NAMES) or empty
    except (ValueError, TypeError):
        return unreadable


def describe_time(moment: datetime) -> str:
    """A moment as revocation reasons name it: ``revoked at 2026-12-07 13:58:30 UTC`` (ISO's
    ``T`` and offset read as noise to a person; a naive time is taken as UTC, as cryptography's
    ``*_utc`` values are). A validity boundary says ``expired on 2026-12-07 at 13:58:30 UTC``
    (``core.signer_certificate``), the same moment after "on"."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return f"{moment.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"


def describe_subject(cert: x509.Certificate, empty: str = "(empty subject)") -> str:
    """The subject as :func:`describe_name` shows it, "(unreadable subject)" when cryptography
    refuses it (a certificate that did not come through ``core.cert_loading``, which reads
    names, may carry one cryptography cannot parse). Never raises."""
    unreadable = "(unreadable subject)"
    try:
        subject = cert.subject
    except (ValueError, TypeError):
        return unreadable
    return describe_name(subject, empty, unreadable)


def is_usable_for_email(cert: x509.Certificate) -> bool:
    """True when the certificate may protect email by its extended key usage.

    That is when it has no extendedKeyUsage extension, or one that lists emailProtection or
    anyExtendedKeyUsage (RFC 8550 section 4.4.4). False when the extensions cannot be parsed.
    Holds for end-entity and CA certificates alike (a CA's EKU restricts what it may issue for).
    """
    try:
        eku = extension_value(cert, x509.ExtendedKeyUsage)
    except CertificateDefect:
        return False
    if eku is None:
        return True
    return ExtendedKeyUsageOID.EMAIL_PROTECTION in eku or (
        ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE in eku
    )


def allows_signing(cert: x509.Certificate) -> bool:
    """True when the keyUsage extension is absent or has digitalSignature or nonRepudiation.

    False when the extensions cannot be parsed.
    """
    try:
        usage = extension_value(cert, x509.KeyUsage)
    except CertificateDefect:
        return False
    return usage is None or usage.digital_signature or usage.content_commitment


def allows_encryption(cert: x509.Certificate) -> bool:
    """True when the certificate's key may receive encrypted mail by its keyUsage.

    RSA keys need keyEncipherment (key transport), EC, X25519 and X448 keys keyAgreement; a missing
    keyUsage extension allows both. Keys that cannot encrypt at all (Ed25519, DSA) give False, as
    does a certificate whose extensions cannot be parsed.
    """
    key = cert.public_key()
    try:
        usage = extension_value(cert, x509.KeyUsage)
    except CertificateDefect:
        return False
    if isinstance(key, rsa.RSAPublicKey):
        return usage is None or usage.key_encipherment
    if isinstance(key, ec.EllipticCurvePublicKey | x25519.X25519PublicKey | x448.X448PublicKey):
        return usage is None or usage.key_agreement
    return False


def recipient_certificate_problem(cert: x509.Certificate, at: datetime) -> str | None:
    """Why ``cert`` must not receive encrypted mail at time ``at`` (one short phrase), or None.

    Checks the validity period, the extended key usage (emailProtection) and the key usage for
    the key type (keyEncipherment for RSA, keyAgreement for EC). Never raises.
    """
    if at < cert.not_valid_before_utc:
        return "certificate not yet valid"
    if at > cert.not_valid_after_utc:
        return "certificate expired"
    return _usage_problem(cert)


@functools.lru_cache(maxsize=256)
def _usage_problem(cert: x509.Certificate) -> str | None:
    # Cached: the outbox seals to the same certificates again and again, and reading the
    # extensions costs as much as an RSA public-key operation.
    if not is_usable_for_email(cert):
        return "certificate not for email protection"
    if not allows_encryption(cert):
        return "certificate key cannot receive encrypted mail"
    return None


def key_description(cert: x509.Certificate) -> str:
    """A short name of the certificate's public key: ``rsa-2048``, ``ec-secp256r1``, ``ed25519``...

    Returns ``unknown`` for key types we do not name. Never raises.
    """
    try:
        key = cert.public_key()
    except (ValueError, TypeError):
        return "unknown"
    if isinstance(key, rsa.RSAPublicKey):
        return f"rsa-{key.key_size}"
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"ec-{key.curve.name}"
    if isinstance(key, dsa.DSAPublicKey):
        return f"dsa-{key.key_size}"
    for kind, name in (
        (ed25519.Ed25519PublicKey, "ed25519"),
        (ed448.Ed448PublicKey, "ed448"),
        (x25519.X25519PublicKey, "x25519"),
        (x448.X448PublicKey, "x448"),
    ):
        if isinstance(key, kind):
            return name
    return "unknown"


def name_to_rfc4514(name: asn1_x509.Name) -> str:
    """An asn1crypto ``Name`` as cryptography's ``Name.rfc4514_string()`` would print it.

    Lets a name read from CMS (an issuerAndSerialNumber) be compared with
    ``cert.issuer.rfc4514_string()``. Attribute values that are not strings, or that cryptography
    refuses, make the whole name fall back to ``#`` followed by the hex of its DER encoding.
    Never raises for a parsed name.
    """
    try:
        return _as_x509_name(name).rfc4514_string()
    except ASN1_ERRORS:
        return "#" + name.dump().hex()


def describe_cms_name(name: asn1_x509.Name | bytes) -> str:
    """A name read from CMS (an issuerAndSerialNumber: asn1crypto's, or its DER) as
    :func:`describe_name` shows a certificate's, for a person to read. Never raises."""
    try:
        parsed = name if isinstance(name, asn1_x509.Name) else asn1_x509.Name.load(name)
        return describe_name(_as_x509_name(parsed))
    except ASN1_ERRORS:
        return "(unreadable name)"


def _as_x509_name(name: asn1_x509.Name) -> x509.Name:
    rdns = []
    for rdn in name.chosen:
        attrs = [
            x509.NameAttribute(ObjectIdentifier(atv["type"].dotted), atv["value"].native)
            for atv in rdn
        ]
        rdns.append(x509.RelativeDistinguishedName(attrs))
    return x509.Name(rdns)

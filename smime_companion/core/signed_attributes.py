"""The signed attributes of a SignerInfo (RFC 5652 section 5.3, RFC 8551 section 2.5).

Read as received (a direct walk of the DER, asn1crypto only for BER), checked against the content
(contentType and messageDigest bind the signature to it), and the informational ones read
(signing time, S/MIME capabilities, the encryption key preference). The signing-certificate
attributes (ESS, RFC 2634 and RFC 5035) name the certificate the signer signed with
(:func:`signing_certificates`). :func:`signed_bytes` gives what the signer signed.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from asn1crypto import cms, core, tsp
from cryptography.hazmat.primitives import hashes

from smime_companion.core.ber_walker import der_elements, oid_dotted, read_attributes
from smime_companion.core.certs import capabilities_from_attribute, name_to_rfc4514
from smime_companion.core.chain import Cert
from smime_companion.core.cms import ASN1_ERRORS
from smime_companion.core.signatures import DIGESTS, HASH_FACTORIES
from smime_companion.core.signer_findings import SignerContext, SignerFindings, Stage, StopChecks
from smime_companion.core.verdicts import SignatureStatus
from smime_companion.errors import MalformedInput

S = SignatureStatus

_OID_MS_ENCRYPTION_KEY_PREFERENCE = "1.3.6.1.4.1.311.16.4"
# RFC 5652 section 11 / RFC 8551 section 2.5: attributes that may occur once, with one value.
_SINGLE_ATTRIBUTES = {
    "1.2.840.113549.1.9.3": "contentType",
    "1.2.840.113549.1.9.4": "messageDigest",
    "1.2.840.113549.1.9.5": "signingTime",
}


def read_signed_attributes(
    signed_attrs: cms.CMSAttributes | bytes, f: SignerFindings
) -> dict[str, list[bytes]]:
    """The DER of the attribute values by dotted type; records ``malformed`` for a repeated
    one-off. ``signed_attrs`` is the parsed field or the whole [0] element's encoding. Values
    are decoded only where they are used (see the readers below)."""
    if isinstance(signed_attrs, bytes):
        contents = der_elements(signed_attrs)[0][2]
    else:
        contents = signed_attrs.contents
    try:
        # A direct walk of the DER: several times cheaper than asn1crypto's objects.
        listed = read_attributes(contents)
    except ValueError:
        # Not DER (an indefinite length, say): asn1crypto reads BER, and each value's encoding
        # as received is what the readers below decode.
        parsed = (
            cms.CMSAttributes.load(b"\x31" + signed_attrs[1:])
            if isinstance(signed_attrs, bytes)
            else signed_attrs
        )
        listed = [(a["type"].dotted, [v.dump() for v in a["values"]]) for a in parsed]
    attrs: dict[str, list[bytes]] = {}
    for oid, values in listed:
        if oid in attrs and oid in _SINGLE_ATTRIBUTES:
            f.fail(Stage.CRYPTO, S.MALFORMED, f"signed attributes repeat {_SINGLE_ATTRIBUTES[oid]}")
            raise StopChecks
        if oid in _SINGLE_ATTRIBUTES and len(values) != 1:
            f.fail(
                Stage.CRYPTO,
                S.MALFORMED,
                f"{_SINGLE_ATTRIBUTES[oid]} attribute must have one value",
            )
            raise StopChecks
        attrs.setdefault(oid, []).extend(values)
    return attrs


def check_content_attributes(
    attrs: dict[str, list[bytes]], digest_name: str, ctx: SignerContext, f: SignerFindings
) -> None:
    # RFC 5652 section 5.3: with signed attributes, contentType and messageDigest are required;
    # they are what binds the signature to this content.
    content_type = attrs.get("1.2.840.113549.1.9.3")
    if content_type is None:
        f.fail(Stage.CRYPTO, S.INVALID, "signed attributes lack the contentType attribute")
        raise StopChecks
    if _oid_value(content_type[0]) != ctx.econtent_type:
        f.fail(Stage.CRYPTO, S.INVALID, "contentType attribute differs from the encapsulated type")
        raise StopChecks
    message_digest = attrs.get("1.2.840.113549.1.9.4")
    if message_digest is None:
        f.fail(Stage.CRYPTO, S.INVALID, "signed attributes lack the messageDigest attribute")
        raise StopChecks
    expected = ctx.content_digest(digest_name)
    digest = _octet_string_value(message_digest[0])
    if not hmac.compare_digest(digest, expected):
        f.fail(
            Stage.CRYPTO, S.INVALID, "message digest does not match the content (content altered)"
        )
        raise StopChecks


# ESS signing-certificate attributes: ESSCertID with a SHA-1 hash (RFC 2634 section 5.4) and
# ESSCertIDv2 with any hash, SHA-256 by default (RFC 5035).
_SIGNING_CERTIFICATE = {
    "1.2.840.113549.1.9.16.2.12": tsp.SigningCertificate,
    "1.2.840.113549.1.9.16.2.47": tsp.SigningCertificateV2,  # its ESSCertIDv2 names its hash
}


@dataclass(frozen=True)
class NamedCertificate:
    """The certificate a signing-certificate attribute names first (the one the signer says it
    signed with): the hash of its DER and, when given, its serial number."""

    hash_name: str
    cert_hash: bytes
    serial: int | None

    def names(self, cert: Cert) -> bool:
        digest = hashes.Hash(HASH_FACTORIES[self.hash_name]())
        digest.update(cert.der)
        matches = hmac.compare_digest(digest.finalize(), self.cert_hash)
        return matches and (self.serial is None or self.serial == cert.serial)


def signing_certificates(
    attrs: dict[str, list[bytes]], f: SignerFindings
) -> list[NamedCertificate]:
    """What the signing-certificate attributes among ``attrs`` name (RFC 5035: "the first
    certificate identified ... MUST be the certificate used to verify the signature"). It binds
    the signer's certificate into the signature, so that another certificate for the same key
    (one a careless CA issued to someone else, or for another address) cannot pass for it. A
    hash we do not know names nothing we can check. Records ``malformed`` for a broken one."""
    named = []
    for oid, schema in _SIGNING_CERTIFICATE.items():
        for value in attrs.get(oid, ()):
            try:
                first = schema.load(value, strict=True)["certs"][0]
                if schema is tsp.SigningCertificateV2:
                    known = DIGESTS.get(first["hash_algorithm"]["algorithm"].dotted)
                    if known is None:
                        continue
                    hash_name = known[0]
                else:
                    hash_name = "sha1"
                issuer_serial = first["issuer_serial"]
                serial = (
                    None
                    if isinstance(issuer_serial, core.Void)
                    else int(issuer_serial["serial_number"].native)
                )
                named.append(NamedCertificate(hash_name, bytes(first["cert_hash"].native), serial))
            except ASN1_ERRORS:
                f.fail(Stage.CRYPTO, S.MALFORMED, "signing-certificate attribute is malformed")
                raise StopChecks from None
    return named


def _oid_value(encoded: bytes) -> str:
    """The dotted OID of a DER OBJECT IDENTIFIER. Raises ValueError for anything else."""
    if encoded[:1] != b"\x06":
        raise ValueError("contentType attribute is not an OBJECT IDENTIFIER")
    return oid_dotted(der_elements(encoded)[0][2])


def _octet_string_value(encoded: bytes) -> bytes:
    """The value of a DER OCTET STRING (a BER one through asn1crypto). Raises ValueError."""
    if encoded[:1] == b"\x04":
        return der_elements(encoded)[0][2]
    return bytes(core.OctetString.load(encoded, strict=True).native)


def _signing_time(encoded: bytes) -> datetime:
    """The time of a DER UTCTime or GeneralizedTime. The plain ``...Z`` forms DER requires are
    read here; anything else goes through asn1crypto. Raises ValueError."""
    tag, value = encoded[:1], encoded[2:]
    if encoded[1:2] == bytes([len(value)]) and value.endswith(b"Z") and value[:-1].isdigit():
        if tag == b"\x17" and len(value) == 13:  # UTCTime YYMMDDHHMMSSZ
            year = int(value[:2])
            # RFC 5280 section 4.1.2.5.1: YY under 50 is 20YY.
            return _utc_datetime(year + (2000 if year < 50 else 1900), value[2:12])
        if tag == b"\x18" and len(value) == 15:  # GeneralizedTime YYYYMMDDHHMMSSZ
            return _utc_datetime(int(value[:4]), value[4:14])
    native = cms.Time.load(encoded, strict=True).native
    if not isinstance(native, datetime):
        raise ValueError("signingTime is not a time")
    return native


def _utc_datetime(year: int, rest: bytes) -> datetime:
    """``rest`` is MMDDHHMMSS. Raises ValueError for an impossible date."""
    month, day, hour, minute, second = (int(rest[i : i + 2]) for i in range(0, 10, 2))
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def read_informational_attributes(attrs: dict[str, list[bytes]], f: SignerFindings) -> None:
    """Signing time, capabilities and key preference. These only inform: a broken one is
    ignored rather than failing a signature that is otherwise sound."""
    signing_time = attrs.get("1.2.840.113549.1.9.5")
    if signing_time:
        try:
            f.signing_time = _signing_time(signing_time[0])
        except (ValueError, TypeError):
            pass
    capabilities = attrs.get("1.2.840.113549.1.9.15")
    if capabilities:
        try:
            f.capabilities, f.capability_oids = capabilities_from_attribute(capabilities[0])
        except MalformedInput:
            pass
    try:
        f.encryption_key_preference = _encryption_key_preference(attrs)
    except ASN1_ERRORS:
        pass


def _encryption_key_preference(attrs: dict[str, list[bytes]]) -> tuple[Any, ...] | None:
    """SMIMEEncryptionKeyPreference (RFC 8551 section 2.5.3) or Microsoft's attribute.

    Returns ``("issuer-serial", issuer_rfc4514, serial)``, ``("ski", hex)`` for a recipientKeyId,
    ``("alt-ski", hex)`` for a subjectAltKeyIdentifier, or None.
    """
    preference = attrs.get("1.2.840.113549.1.9.16.2.11")
    if preference:
        choice = cms.SMIMEEncryptionKeyPreference.load(preference[0], strict=True)
        if choice.name == "issuer_and_serial_number":
            ias = choice.chosen
            return ("issuer-serial", name_to_rfc4514(ias["issuer"]), ias["serial_number"].native)
        if choice.name == "recipientKeyId":
            return ("ski", bytes(choice.chosen["subjectKeyIdentifier"].native).hex())
        return ("alt-ski", bytes(choice.chosen.native).hex())
    microsoft = attrs.get(_OID_MS_ENCRYPTION_KEY_PREFERENCE)
    if microsoft:
        # asn1crypto does not know this OID: its value is an IssuerAndSerialNumber.
        ias = cms.IssuerAndSerialNumber.load(microsoft[0], strict=True)
        return ("issuer-serial", name_to_rfc4514(ias["issuer"]), ias["serial_number"].native)
    return None


def signed_bytes(signed_attrs: cms.CMSAttributes | bytes) -> Iterator[bytes]:
    """What the signer signed: the DER SET OF the signed attributes (RFC 5652 section 5.4).

    The attributes arrive as ``[0] IMPLICIT``; the signature covers the same bytes with the
    universal SET tag (0x31). We use the bytes as received, never asn1crypto's re-serialisation;
    only when they are not DER (e.g. an indefinite length) is a DER re-encoding also tried, since
    the signer had to sign DER and we check the parsed attributes' values either way. A generator:
    the re-encoding costs as much as the rest of the check, so it is made only when needed.
    """
    encoded = signed_attrs if isinstance(signed_attrs, bytes) else signed_attrs.dump()
    as_set = b"\x31" + encoded[1:]
    yield as_set
    try:
        reencoded = cms.CMSAttributes.load(as_set).dump(force=True)
    except ASN1_ERRORS:
        # asn1crypto cannot re-encode every value it parses (bench/fuzz_open.py found one under
        # universal tag 8 that raised AttributeError): then the bytes as received are the only
        # candidate, and a signature that does not verify over them is invalid.
        return
    if reencoded != as_set:
        yield reencoded

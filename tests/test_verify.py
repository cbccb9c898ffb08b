"""Signature verification (``core.verify.verify_signed_data``): every status from a real case.

Signatures are made at test time by ``openssl cms -sign`` with the session's test PKI. OpenSSL 3.0
can neither make nor check Ed25519 CMS signatures ("no default digest" / "invalid digest"), so the
Ed25519 cases build their SignedData here, by RFC 8419, with asn1crypto and cryptography.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from asn1crypto import cms, core
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from smime_companion.core.cms import parse_content_info
from smime_companion.core.model import VerifyOutcome
from smime_companion.core.verdicts import SignatureStatus
from smime_companion.core.verify import verify_signed_data
from smime_companion.errors import MalformedInput, UnsupportedInput, UsageError
from smime_companion.testing.pki import TestPki
from tests.conftest import load_cert
from tests.tools import mime_message, openssl_cms, run

S = SignatureStatus
CONTENT = mime_message(body="The quarterly numbers are attached.\r\n")


def sign(
    pki: TestPki,
    *users: str,
    data: bytes = CONTENT,
    opaque: bool = True,
    with_intermediate: bool = True,
    args: Sequence[str | Path] = (),
) -> bytes:
    """``openssl cms -sign`` by ``users`` (each a PKI user, or a (cert, key) path pair)."""
    argv: list[str | Path] = ["-sign", "-binary", "-outform", "DER"]
    for user in users:
        argv += ["-signer", pki.cert(user), "-inkey", pki.key(user)]
    if opaque:
        argv.append("-nodetach")
    if with_intermediate:
        argv += ["-certfile", pki.intermediate]
    return openssl_cms([*argv, *args], data)


def sign_with(cert: Path, key: Path, *, data: bytes = CONTENT, args: Sequence[str] = ()) -> bytes:
    """``openssl cms -sign`` with a certificate made by a test (opaque, no intermediate)."""
    return openssl_cms(
        ["-sign", "-binary", "-outform", "DER", "-nodetach", "-signer", cert, "-inkey", key, *args],
        data,
    )


def check(
    der: bytes,
    anchors: Sequence[x509.Certificate],
    at: dt.datetime,
    *,
    detached: bytes | None = None,
    from_: Sequence[str] = ("alice@example.org",),
    **kwargs: Any,
) -> VerifyOutcome:
    return verify_signed_data(
        parse_content_info(der), detached, anchors=anchors, at=at, from_addresses=from_, **kwargs
    )


def flip_byte_inside(der: bytes, needle: bytes, offset: int = 5) -> bytes:
    """``der`` with one byte changed inside the first occurrence of ``needle``."""
    at = der.index(needle) + offset
    return der[:at] + bytes([der[at] ^ 0x01]) + der[at + 1 :]


# --- valid signatures ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("user", "md", "algorithm"),
    [
        ("alice", "sha256", "rsa-pkcs1v15"),
        ("bob", "sha512", "rsa-pkcs1v15"),
        ("carol", "sha256", "ecdsa"),
        ("dave", "sha384", "ecdsa"),
        ("frank", "sha512", "ecdsa"),
    ],
)
def test_a_sound_signature_by_a_trusted_email_certificate_is_valid(
    pki: TestPki,
    anchors: tuple[x509.Certificate, ...],
    now: dt.datetime,
    user: str,
    md: str,
    algorithm: str,
) -> None:
    signed_from = dt.datetime.now(dt.UTC).replace(microsecond=0)
    der = sign(pki, user, args=["-md", md])
    signed_until = dt.datetime.now(dt.UTC)
    outcome = check(der, anchors, now, from_=[pki.email(user)])
    assert outcome.status == S.VALID
    assert outcome.content == CONTENT
    report = outcome.signers[0]
    assert report.reason is None
    assert report.digest_algorithm == md
    assert report.signature_algorithm == algorithm
    assert report.address == pki.email(user)
    assert report.addresses == (pki.email(user),)
    assert report.certificate == load_cert(pki.cert(user))
    assert report.chain == (
        load_cert(pki.cert(user)),
        load_cert(pki.intermediate),
        load_cert(pki.root),
    )
    assert set(report.certificates_in_message) == {
        load_cert(pki.cert(user)),
        load_cert(pki.intermediate),
    }
    # openssl's signingTime is its own clock while it signed (whole seconds), not the session's.
    assert report.signing_time is not None
    assert signed_from <= report.signing_time <= signed_until
    assert report.capabilities[0] == "aes-256-cbc"
    assert report.capability_oids[0] == "2.16.840.1.101.3.4.1.42"


def test_a_detached_signature_is_checked_against_the_given_content(
    pki: TestPki, anchors: tuple[x509.Certificate, ...], now: dt.datetime
) -> None:
    der = sign(pki, "alice", opaque=False)
    outcome = check(der, anchors, now, detached=CONTENT)
    assert outcome.status == S.VALID
    assert outcome.content == CONTENT


def test_streamed_ber_content_is_joined_from_its_chunks(
    pki: TestPki, anchors: tuple[x509.Certificate, ...], now: dt.datetime
) -> None:
    big = mime_message(body="line of text\r\n" * 2000)  # openssl streams it in several chunks
    der = sign(pki, "alice", data=big, args=["-stream"])
    assert der[1] == 0x80  # indefinite length: really BER
    outcome = check(der, anchors, now)
    assert outcome.status == S.VALID
    assert outcome.content == big


def test_rsa_pss_signatures_are_checked_with_their_parameters(
    pki: TestPki, anchors: tuple[x509.Certificate, ...], now: dt.datetime
) -> None:
    der = sign(pki, "bob", args=["-keyopt", "rsa_padding_mode:pss", "-md", "sha384"])
    outcome = check(der, anchors, now, from_=["bob@example.org"])
    assert outcome.status == S.VALID
    assert outcome.signers[0].signature_algorithm == "rsa-pss"
    assert outcome.signers[0].digest_algorithm == "sha384"


def test_a_signer_named_by_subject_key_identifier_is_found(
    pki: TestPki, anchors: tuple[x509.Certificate, ...], now: dt.datetime
) -> None:
    der = sign(pki, "carol", args=["-keyid"])
    sid = parse_content_info(der)["content"]["signer_infos"][0]["sid"]
    assert sid.name == "subject_key_identifier"
    outcome = check(der, anchors, now, from_=["carol@example.org"])
    assert outcome.status == S.VALID
    assert outcome.signers[0].certificate == load_cert(pki.cert("carol"))


def test_a_signature_without_signed_attributes_covers_the_content_itself(
    pki: TestPki, anchors: tuple[x509.Certificate, ...], now: dt.datetime
) -> None:
    der = sign(pki, "alice", opaque=False, args=["-noattr"])
    valid = check(der, anchors, now, detached=CONTENT)
    assert valid.status == S.VALID
    assert valid.signers[0].signing_time is None
    assert valid.signers[0].capabilities == ()
    altered = check(der, anchors, now, detached=CONTENT.replace(b"quarterly", b"quarterlY"))
    assert altered.status == S.INVALID


def test_a_certificate_without_eku_and_with_the_address_only_in_the_subject_is_valid(
    pki: TestPki, anchors: tuple[x509.Certificate, ...], now: dt.datetime
) -> None:
    outcome = check(sign(pki, "olga"), anchors, now, from_=["Olga@Example.ORG"])
    assert outcome.status == S.VALID
    assert outcome.signers[0].address == "olga@example.org"


def test_sha1_is_accepted_when_allowed(
    pki: TestPki, anchors: tuple[x509.Certificate, ...], now: dt.datetime
) -> None:
    outcome = check(sign(pki, "alice", args=["-md", "sha1"]), anchors, now, allow_sha1=True)
    assert outcome.status == S.VALID
    assert outcome.signers[0].digest_algorithm == "sha1"


# --- Ed25519 (RFC 8419), built here because OpenSSL 3.0 cannot ------------------------------


def eddsa_signed_data(
    cert: x509.Certificate,
    key: ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey,
    content: bytes,
    *,
    chain: Sequence[x509.Certificate] = (),
    signed_attributes: bool = True,
    extra_attributes: Sequence[dict[str, Any]] = (),
) -> bytes:
    """An opaque SignedData by an EdDSA key (RFC 8419 section 3): the content digest is SHA-512
    (Ed25519) or SHAKE256 with 512 bits (Ed448); the pure EdDSA signature covers the DER SET OF
    the signed attributes, or the content itself without them."""
    if isinstance(key, ed25519.Ed25519PrivateKey):
        digest_name, signature_name = "sha512", "ed25519"
        message_digest = hashlib.sha512(content).digest()
    else:
        digest_name, signature_name = "shake256", "ed448"
        message_digest = hashlib.shake_256(content).digest(64)
    signer_cert = asn1_x509.Certificate.load(cert.public_bytes(Encoding.DER))
    signer: dict[str, Any] = {
        "version": "v1",
        "sid": cms.SignerIdentifier(
            {
                "issuer_and_serial_number": {
                    "issuer": signer_cert.issuer,
                    "serial_number": signer_cert.serial_number,
                }
            }
        ),
        "digest_algorithm": {"algorithm": digest_name},
        "signature_algorithm": {"algorithm": signature_name},
    }
    if signed_attributes:
        attrs = cms.CMSAttributes(
            [
                {"type": "content_type", "values": ["data"]},
                {"type": "message_digest", "values": [message_digest]},
                *extra_attributes,
            ]
        )
        signer["signed_attrs"] = attrs
        signer["signature"] = key.sign(attrs.dump())  # the universal SET OF encoding
    else:
        signer["signature"] = key.sign(content)
    certificates = [signer_cert] + [
        asn1_x509.Certificate.load(c.public_bytes(Encoding.DER)) for c in chain
    ]
    signed_data = cms.SignedData(
        {
            "version": "v1",
            "digest_algorithms": [{"algorithm": digest_name}],
            "encap_content_info": {"content_type": "data", "content": content},
            "certificates": certificates,
            "signer_infos": [signer],
        }
    )
    return cms.ContentInfo({"content_type": "signed_data", "content": signed_data}).dump()


def ed25519_signed_data(pki: TestPki, content: bytes, **kwargs: Any) -> bytes:
    """An opaque SignedData by erin (Ed25519), with the intermediate."""
    key = serialization.load_pem_private_key(pki.key("erin").read_bytes(), password=None)
    assert isinstance(key, ed25519.Ed25519PrivateKey)
    cert = load_cert(pki.cert("erin"))
    return eddsa_signed_data(cert, key, content, chain=[load_cert(pki.intermediate)], **kwargs)


@pytest.mark.parametrize("signed_attributes", [True, False])
def test_ed25519_signatures_are_valid(
    pki: TestPki,
    anchors: tuple[x509.Certificate, ...],
    now: dt.datetime,
    signed_attributes: bool,
) -> None:
    der = ed25519_signed_data(pki, CONTENT, signed_attributes=signed_attributes)
    outcome = check(der, anchors, now, from_=["erin@example.org"])
    assert outcome.status == S.VALID
    assert outcome.signers[0].signature_algorithm == "ed25519"
    assert outcome.signers[0].digest_algorithm == "sha512"


def test_an_altered_ed25519_signature_is_invalid(
    pki: TestPki, anchors: tuple[x509.Certificate, ...], now: dt.datetime
) -> None:
    der = ed25519_signed_data(pki, CONTENT)
    signature = parse_content_info(der)["content"]["signer_infos"][0]["signature"].native
    outcome = check(flip_byte_inside(der, signature), anchors, now, from_=["erin@example.org"])
    assert outcome.status == S.INVALID


def test_the_encryption_key_preference_attribute_is_reported(
    pki: TestPki, anchors: tuple[x509.Certificate, ...], now: dt.datetime
) -> None:
    carol = asn1_x509.Certificate.load(load_cert(pki.cert("carol")).public_bytes(Encoding.DER))
    preference = cms.SMIMEEncryptionKeyPreference(
        {
            "issuer_and_serial_number": {
                "issuer": carol.issuer,
                "serial_number": carol.serial_number,
            }
        }
    )
    der = ed25519_signed_data(
        pki, CONTENT, extra_attributes=[{"type": "encrypt_key_pref", "values": [preference]}]
    )
    report = check(der, anchors, now, from_=["erin@example.org"]).signers[0]
    assert report.status == S.VALID
    carol_cert = load_cert(pki.cert("carol"))
    assert report.encryption_key_preference == (
        "issuer-serial",
        carol_cert.issuer.rfc4514_string(),
        carol_cert.serial_number,
    )


def test_microsofts_encryption_key_preference_attribute_is_reported(
    pki: TestPki, anchors: tuple[x509.Certificate, ...], now: dt.datetime
) -> None:
    carol = asn1_x509.Certificate.load(load_cert(pki.cert("carol")).public_bytes(Encoding.DER))
    ias = cms.IssuerAndSerialNumber({"issuer": carol.issuer, "serial_number": carol.serial_number})
    attribute = {"type": "1.3.6.1.4.1.311.16.4", "values": [core.Any.load(ias.dump())]}
    der = ed25519_signed_data(pki, CONTENT, extra_attributes=[attribute])
    report = check(der, anchors, now, from_=["erin@example.org"]).signers[0]
    assert report.status == S.VALID
    assert report.encryption_key_preference is not None
    assert report.encryption_key_preference[2] == load_cert(pki.cert("carol")).serial_number


def _indefinite(tag: bytes, *parts: bytes) -> bytes:
    return tag + b"\x80" + b"".join(parts) + b"\x00\x00"


def with_indefinite_lengths(der: bytes) -> bytes:
    """The same SignedData re-encoded in BER: every structure down to the signed attributes of
    the first signer uses the indefinite length form (as streaming encoders write it)."""
    info = cms.ContentInfo.load(der)
    signed_data = info["content"]
    si = signed_data["signer_infos"][0]
    signer = _indefinite(
        b"\x30",
        si["version"].dump(),
        si["sid"].dump(),
        si["digest_algorithm"].dump(),
        _indefinite(b"\xa0", si["signed_attrs"].contents),
        si["signature_algorithm"].dump(),
        si["signature"].dump(),
    )
    body = _indefinite(
        b"\x30",
        signed_data["version"].dump(),
        signed_data["digest_algorithms"].dump(),
        signed_data["encap_content_info"].dump(),
        signed_data["certificates"].dump(),
        _indefinite(b"\x31", signer),
    )
    return _indefinite(b"\x30", info["content_type"].dump(), _indefinite(b"\xa0", body))


def test_signed_attributes_sent_in_ber_are_checked_over_their_der_encoding(
    pki: TestPki, anchors: tuple[x509.Certificate, ...], now: dt.datetime
) -> None:
    ber = with_indefinite_lengths(sign(pki, "alice"))
    assert b"\xa0\x80\x30" in ber
    # openssl agrees that the re-encoded message still verifies.
    openssl_cms(["-verify", "-inform", "DER", "-CAfile", pki.root, "-out", "/dev/null"], ber)
    assert check(ber, anchors, now).status == S.VALID


@pytest.mark.parametrize(
    ("user", "oid", "algorithm"),
    [
        ("carol", "1.2.840.10045.2.1", "ecdsa"),  # id-ecPublicKey: hash from digestAlgorithm
        ("alice", "1.2.840.113549.1.1.11", "rsa-pkcs1v15"),  # sha256WithRSAEncryption
    ],
)
def test_signature_algorithm_identifiers_other_agents_write_are_understood(
    pki: TestPki,
    anchors: tuple[x509.Certificate, ...],
    now: dt.datetime,
    user: str,
    oid: str,
    algorithm: str,
) -> None:
    # openssl writes ecdsa-with-SHA256 and rsaEncryption; other agents the alternatives. The
    # signatureAlgorithm is outside what is signed, so openssl's signature is rewritten.
    info = cms.ContentInfo.load(sign(pki, user))
    info["content"]["signer_infos"][0]["signature_algorithm"] = {"algorithm": oid}
    der = info.dump(force=True)
    openssl_cms(["-verify", "-inform", "DER", "-CAfile", pki.root, "-out", "/dev/null"], der)
    outcome = check(der, anchors, now, from_=[pki.email(user)])
    assert outcome.status == S.VALID
    assert outcome.signers[0].signature_algorithm == algorithm


@pytest.mark.parametrize(
    ("user", "field", "oid"),
    [
        ("alice", "signature_algorithm", "1.2.840.113549.1.1.5"),  # sha1WithRSA over SHA-256
        ("carol", "signature_algorithm", "1.2.840.10045.4.3.3"),  # ecdsa-with-SHA384 over SHA-256
        ("alice", "digest_algorithm", "1.2.840.113549.1.1.11"),  # sha256WithRSA as the digest
    ],
    ids=["rsa-label-names-sha1", "ecdsa-label-names-sha384", "signature-oid-as-digest"],
)
def test_algorithm_labels_that_disagree_are_read_as_openssl_reads_them(
    pki: TestPki,
    anchors: tuple[x509.Certificate, ...],
    now: dt.datetime,
    user: str,
    field: str,
    oid: str,
) -> None:
    # Neither identifier is signed. OpenSSL hashes with the digestAlgorithm whatever the
    # signatureAlgorithm names, and reads a signature OID put in the digestAlgorithm as its hash;
    # signers that rely on either exist. The hash that verified is the one judged: no SHA-1 here.
    info = cms.ContentInfo.load(sign(pki, user))
    info["content"]["signer_infos"][0][field] = {"algorithm": oid}
    if field == "digest_algorithm":  # such a signer lists it among the SignedData's digests too
        info["content"]["digest_algorithms"] = [{"algorithm": oid}]
    der = info.dump(force=True)
    openssl_cms(["-verify", "-inform", "DER", "-CAfile", pki.root, "-out", "/dev/null"], der)
    outcome = check(der, anchors, now, from_=[pki.email(user)])
    assert outcome.status == S.VALID, outcome.signers[0].reason
    assert outcome.signers[0].weaknesses == ()


def test_a_label_naming_a_strong_hash_does_not_hide_a_sha1_signature(
    pki: TestPki, anchors: tuple[x509.Certificate, ...], now: dt.datetime
) -> None:
    info = cms.ContentInfo.load(sign(pki, "alice", args=["-md", "sha1"]))
    info["content"]["signer_infos"][0]["signature_algorithm"] = {
        "algorithm": "1.2.840.113549.1.1.11"
    }
    outcome = check(info.dump(force=True), anchors, now, from_=["alice@example.org"])
    assert outcome.status == S.WEAK_ALGORITHM


def test_a_disagreeing_label_does_not_rescue_a_changed_signature(
    pki: TestPki, anchors: tuple[x509.Certificate, ...], now: dt.datetime
) -> None:
    info = cms.ContentInfo.load(sign(pki, "alice"))
    signer = info["content"]["signer_infos"][0]
    signer["signature_algorithm"] = {"algorithm": "1.2.840.113549.1.1.13"}  # names SHA-512
    signature = bytearray(signer["signature"].native)
    signature[40] ^= 0x01
    signer["signature"] = bytes(signature)
    outcome = check(info.dump(force=True), anchors, now, from_=["alice@example.org"])
    assert outcome.status == S.INVALID


# --- invalid ---------------------------------------------------------------------------------


def test_a_changed_byte_of_detached_content_makes_the_signature_invalid(
    pki: TestPki, anchors: tuple[x509.Certificate, ...], now: dt.datetime
) -> None:
    der = sign(pki, "alice", opaque=False)
    outcome = check(der, anchors, now, detached=flip_byte_inside(CONTENT, b"quarterly"))
    assert outcome.status == S.INVALID
    assert "digest" in (outcome.signers[0].reason or "")
    # The report still names who claimed to sign.
    assert outcome.signers[0].certificate == load_cert(pki.cert("alice"))
    assert outcome.signers[0].address == "alice@example.org"


def test_a_changed_byte_of_encapsulated_content_makes_the_signature_invalid(
    pki: TestPki, anchors: tuple[x509.Certificate, ...], now: dt.datetime
) -> None:
    der = flip_byte_inside(sign(pki, "carol"), b"quarterly")
    outcome = check(der, anchors, now, from_=["carol@example.org"])
    assert outcome.status == S.INVALID
    assert outcome.content == flip_byte_inside(CONTENT, b"quarterly")


@pytest.mark.parametrize("user", ["alice", "carol"])
def test_a_changed_byte_of_the_signature_makes_it_invalid(
    pki: TestPki, anchors: tuple[x509.Certificate, ...], now: dt.datetime, user: str
) -> None:
    der = sign(pki, user)
    signature = parse_content_info(der)["content"]["signer_infos"][0]["signature"].native
    outcome = check(flip_byte_inside(der, signature, 20), anchors, now, from_=[pki.email(user)])
    assert outcome.status == S.INVALID
    assert (
        outcome.signers[0].reason == "signature does not verify with the signer certificate's key"
    )


def test_a_changed_signed_attribute_makes_the_signature_invalid(
    pki: TestPki, anchors: tuple[x509.Certificate, ...], now: dt.datetime
) -> None:
    der = sign(pki, "alice")
    signer = parse_content_info(der)["content"]["signer_infos"][0]
    signing_time = next(a for a in signer["signed_attrs"] if a["type"].native == "signing_time")
    time_der = signing_time["values"][0].dump()  # UTCTime: change one digit of the seconds
    outcome = check(flip_byte_inside(der, time_der, len(time_der) - 2), anchors, now)
    assert outcome.status == S.INVALID


# --- untrusted, expired, not yet valid -------------------------------------------------------


def test_a_certificate_from_a_root_that_is_no_anchor_is_untrusted(
    pki: TestPki, anchors: tuple[x509.Certificate, ...], now: dt.datetime
) -> None:
    der = sign(pki, "rogue", with_intermediate=False)
    outcome = check(der, anchors, now, from_=["rogue@example.org"])
    assert outcome.status == S.UNTRUSTED
    assert outcome.signers[0].chain == (load_cert(pki.cert("rogue")),)
    assert "Rogue Root CA" in (outcome.signers[0].reason or "")


def test_a_chain_missing_its_intermediate_is_untrusted(
    pki: TestPki, anchors: tuple[x509.Certificate, ...], now: dt.datetime
) -> None:
    outcome = check(sign(pki, "alice", with_intermediate=False), anchors, now)
    assert outcome.status == S.UNTRUSTED
    assert "Test Email CA" in (outcome.signers[0].reason or "")


def test_a_chain_whose_root_is_not_trusted_names_the_root_not_the_intermediate(
    pki: TestPki, now: dt.datetime
) -> None:
    # A real case: Thunderbird 24 sent its StartCom intermediate along, and StartCom's root is
    # no longer in any bundle. The reason named the intermediate, which the message carried.
    outcome = check(sign(pki, "alice"), [], now)
    assert outcome.status == S.UNTRUSTED
    assert outcome.signers[0].reason == (
        "no path to a trust anchor: issuer CN=Test Root CA,O=smime-companion test of the "
        "intermediate CN=Test Email CA,O=smime-companion test is not known"
    )


def test_extra_certificates_supply_a_missing_intermediate(
    pki: TestPki, anchors: tuple[x509.Certificate, ...], now: dt.datetime
) -> None:
    der = sign(pki, "alice", with_intermediate=False)
    extra = (load_cert(pki.intermediate),)
    assert check(der, anchors, now, extra_certificates=extra).status == S.VALID


def test_extra_certificates_supply_the_signer_certificate_of_a_nocerts_signature(
    pki: TestPki, anchors: tuple[x509.Certificate, ...], now: dt.datetime
) -> None:
    der = sign(pki, "dave", with_intermediate=False, args=["-nocerts"])
    alone = check(der, anchors, now, from_=["dave@example.org"])
    assert alone.status == S.UNTRUSTED
    assert (alone.signers[0].reason or "").startswith(
        "the signer certificate is not in the message"
    )
    assert alone.signers[0].certificate is None
    extra = (load_cert(pki.cert("dave")), load_cert(pki.intermediate))
    found = check(der, anchors, now, from_=["dave@example.org"], extra_certificates=extra)
    assert found.status == S.VALID
    assert found.signers[0].certificates_in_message == ()


def test_a_certificate_expired_at_the_time_checked_is_expired(
    pki: TestPki, anchors: tuple[x509.Certificate, ...], now: dt.datetime
) -> None:
    outcome = check(sign(pki, "expired"), anchors, now, from_=["expired@example.org"])
    assert outcome.status == S.EXPIRED
    assert "expired on" in (outcome.signers[0].reason or "")


def test_an_expiry_on_the_day_judged_is_given_to_the_second(
    pki: TestPki, anchors: tuple[x509.Certificate, ...]
) -> None:
    # Bouncy Castle's validator.expired.eml: judged hours after the certificate ran out, on
    # the same day, "expired on 2006-09-01" seemed to say it was still valid that day.
    not_after = load_cert(pki.cert("expired")).not_valid_after_utc
    later = check(sign(pki, "expired"), anchors, not_after + dt.timedelta(seconds=1),
                  from_=["expired@example.org"])  # fmt: skip
    assert later.status == S.EXPIRED
    assert f"expired on {not_after:%Y-%m-%d} at {not_after:%H:%M:%S} UTC" in (
        later.signers[0].reason or ""
    )
    days_later = check(sign(pki, "expired"), anchors, not_after + dt.timedelta(days=2),
                       from_=["expired@example.org"])  # fmt: skip
    assert (days_later.signers[0].reason or "").endswith(f"expired on {not_after.date()}")


def test_an_expired_certificate_is_valid_at_a_time_inside_its_validity(
    pki: TestPki, anchors: tuple[x509.Certificate, ...], now: dt.datetime
) -> None:
    cert = load_cert(pki.cert("expired"))
    inside = cert.not_valid_before_utc + (cert.not_valid_after_utc - cert.not_valid_before_utc) / 2
    outcome = check(sign(pki, "expired"), anchors, inside, from_=["expired@example.org"])
    assert outcome.status == S.VALID


def test_a_certificate_not_yet_valid_at_the_time_checked_is_not_yet_valid(
    pki: TestPki, anchors: tuple[x509.Certificate, ...], now: dt.datetime
) -> None:
    der = sign(pki, "future")
    outcome = check(der, anchors, now, from_=["future@example.org"])
    assert outcome.status == S.NOT_YET_VALID
    later = load_cert(pki.cert("future")).not_valid_before_utc + dt.timedelta(days=1)
    assert check(der, anchors, later, from_=["future@example.org"]).status == S.VALID


# --- usage and address -----------------------------------------------------------------------


def test_a_certificate_without_email_protection_eku_is_bad_eku(
    pki: TestPki, anchors: tuple[x509.Certificate, ...], now: dt.datetime
) -> None:
    outcome = check(sign(pki, "noeku"), anchors, now, from_=["noeku@example.org"])
    assert outcome.status == S.BAD_EKU
    assert "extended key usage" in (outcome.signers[0].reason or "")


def test_a_signer_for_another_address_is_an_email_mismatch(
    pki: TestPki, anchors: tuple[x509.Certificate, ...], now: dt.datetime
) -> None:
    outcome = check(sign(pki, "wrongaddr"), anchors, now, from_=["alice@example.org"])
    assert outcome.status == S.EMAIL_MISMATCH
    assert outcome.signers[0].address == "mallory@example.net"
    assert "mallory@example.net" in (outcome.signers[0].reason or "")


def test_a_message_without_from_is_an_email_mismatch(
    pki: TestPki, anchors: tuple[x509.Certificate, ...], now: dt.datetime
) -> None:
    outcome = check(sign(pki, "alice"), anchors, now, from_=[])
    assert outcome.status == S.EMAIL_MISMATCH
    assert outcome.signers[0].reason == "message has no From address"


# --- weak algorithms -------------------------------------------------------------------------


def test_sha1_is_a_weak_algorithm(
    pki: TestPki, anchors: tuple[x509.Certificate, ...], now: dt.datetime
) -> None:
    outcome = check(sign(pki, "alice", args=["-md", "sha1"]), anchors, now)
    assert outcome.status == S.WEAK_ALGORITHM
    assert "SHA-1" in (outcome.signers[0].reason or "")


def test_a_broken_sha1_signature_is_invalid_not_weak(
    pki: TestPki, anchors: tuple[x509.Certificate, ...], now: dt.datetime
) -> None:
    der = flip_byte_inside(sign(pki, "alice", args=["-md", "sha1"]), b"quarterly")
    assert check(der, anchors, now).status == S.INVALID


# --- certificates made for one test, issued by the test PKI's intermediate -------------------


def issue(
    pki: TestPki,
    directory: Path,
    name: str,
    *,
    key_size: int = 2048,
    key: Any = None,
    key_usage: x509.KeyUsage | None = None,
    eku: Sequence[x509.ObjectIdentifier] = (ExtendedKeyUsageOID.EMAIL_PROTECTION,),
    issuer: tuple[x509.Certificate, Any] | None = None,
    ca: bool = False,
    name_constraints: x509.NameConstraints | None = None,
    extra_extension: x509.ExtensionType | None = None,
) -> tuple[Path, Path, x509.Certificate, Any]:
    """A certificate for ``name``@example.org; returns (cert path, key path, cert, key)."""
    if issuer is None:
        issuer_key = serialization.load_pem_private_key(
            (pki.directory / "intermediate.key.pem").read_bytes(), password=None
        )
        issuer = (load_cert(pki.intermediate), issuer_key)
    if key is None:
        key = rsa.generate_private_key(public_exponent=65537, key_size=key_size)
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(issuer[0].subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([x509.RFC822Name(f"{name}@example.org")]), critical=False
        )
        .add_extension(x509.ExtendedKeyUsage(list(eku)), critical=False)
    )
    if key_usage is not None:
        builder = builder.add_extension(key_usage, critical=True)
    if name_constraints is not None:
        builder = builder.add_extension(name_constraints, critical=True)
    if extra_extension is not None:
        builder = builder.add_extension(extra_extension, critical=True)
    cert = builder.sign(issuer[1], hashes.SHA256())
    cert_path, key_path = directory / f"{name}.cert.pem", directory / f"{name}.key.pem"
    cert_path.write_bytes(cert.public_bytes(Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path, cert, key


def _usage(**flags: bool) -> x509.KeyUsage:
    names = (
        "digital_signature content_commitment key_encipherment data_encipherment key_agreement "
        "key_cert_sign crl_sign encipher_only decipher_only"
    ).split()
    return x509.KeyUsage(**{n: flags.get(n, False) for n in names})


def test_an_rsa_key_under_2048_bits_is_a_weak_algorithm(
    pki: TestPki, anchors: tuple[x509.Certificate, ...], now: dt.datetime, tmp_path: Path
) -> None:
    cert, key, *_ = issue(pki, tmp_path, "small", key_size=1024)
    der = sign_with(cert, key, args=["-certfile", str(pki.intermediate)])
    outcome = check(der, anchors, now, from_=["small@example.org"])
    assert outcome.status == S.WEAK_ALGORITHM
    assert "RSA-1024" in (outcome.signers[0].reason or "")


def test_a_key_usage_without_signing_bits_is_bad_eku(
    pki: TestPki, anchors: tuple[x509.Certificate, ...], now: dt.datetime, tmp_path: Path
) -> None:
    cert, key, *_ = issue(pki, tmp_path, "encrypter", key_usage=_usage(key_encipherment=True))
    der = sign_with(cert, key, args=["-certfile", str(pki.intermediate)])
    outcome = check(der, anchors, now, from_=["encrypter@example.org"])
    assert outcome.status == S.BAD_EKU
    assert "key usage" in (outcome.signers[0].reason or "")


def test_an_intermediate_whose_eku_excludes_email_is_bad_eku(
    pki: TestPki, anchors: tuple[x509.Certificate, ...], now: dt.datetime, tmp_path: Path
) -> None:
    root_key = serialization.load_pem_private_key(
        (pki.directory / "root.key.pem").read_bytes(), password=None
    )
    ca_path, _, ca_cert, ca_key = issue(
        pki,
        tmp_path,
        "Web CA",
        ca=True,
        eku=[ExtendedKeyUsageOID.SERVER_AUTH],
        issuer=(load_cert(pki.root), root_key),
    )
    cert, key, *_ = issue(pki, tmp_path, "webuser", issuer=(ca_cert, ca_key))
    der = sign_with(cert, key, args=["-certfile", str(ca_path)])
    outcome = check(der, anchors, now, from_=["webuser@example.org"])
    assert outcome.status == S.BAD_EKU
    assert "intermediate CN=Web CA" in (outcome.signers[0].reason or "")


def test_an_issuer_that_is_not_a_ca_breaks_the_chain(
    pki: TestPki, anchors: tuple[x509.Certificate, ...], now: dt.datetime, tmp_path: Path
) -> None:
    alice_key = serialization.load_pem_private_key(pki.key("alice").read_bytes(), password=None)
    cert, key, *_ = issue(pki, tmp_path, "sub", issuer=(load_cert(pki.cert("alice")), alice_key))
    der = sign_with(cert, key, args=["-certfile", str(pki.chain("alice"))])
    outcome = check(der, anchors, now, from_=["sub@example.org"])
    assert outcome.status == S.UNTRUSTED
    assert "not a CA" in (outcome.signers[0].reason or "")


def test_an_address_outside_the_name_constraints_of_a_ca_is_untrusted(
    pki: TestPki, anchors: tuple[x509.Certificate, ...], now: dt.datetime, tmp_path: Path
) -> None:
    root_key = serialization.load_pem_private_key(
        (pki.directory / "root.key.pem").read_bytes(), password=None
    )
    only_example_com = x509.NameConstraints(
        permitted_subtrees=[x509.RFC822Name("example.com")], excluded_subtrees=None
    )
    ca_path, _, ca_cert, ca_key = issue(
        pki,
        tmp_path,
        "Constrained CA",
        ca=True,
        issuer=(load_cert(pki.root), root_key),
        name_constraints=only_example_com,
    )
    cert, key, *_ = issue(pki, tmp_path, "outsider", issuer=(ca_cert, ca_key))
    der = sign_with(cert, key, args=["-certfile", str(ca_path)])
    outcome = check(der, anchors, now, from_=["outsider@example.org"])
    assert outcome.status == S.UNTRUSTED
    assert "name constraints" in (outcome.signers[0].reason or "")


# --- several signers, malformed input, misuse ------------------------------------------------


def test_one_valid_signer_among_several_makes_the_layer_valid(
    pki: TestPki, anchors: tuple[x509.Certificate, ...], now: dt.datetime
) -> None:
    outcome = check(sign(pki, "wrongaddr", "alice"), anchors, now, from_=["alice@example.org"])
    assert outcome.status == S.VALID
    # SignerInfos are a DER SET OF: openssl sorts them, so compare without order.
    assert sorted(r.status for r in outcome.signers) == sorted([S.EMAIL_MISMATCH, S.VALID])
    assert outcome.signer is not None and outcome.signer.address == "alice@example.org"


def test_several_failing_signers_give_the_most_severe_status(
    pki: TestPki, anchors: tuple[x509.Certificate, ...], now: dt.datetime
) -> None:
    outcome = check(sign(pki, "wrongaddr", "noeku"), anchors, now, from_=["alice@example.org"])
    assert sorted(r.status for r in outcome.signers) == sorted([S.EMAIL_MISMATCH, S.BAD_EKU])
    assert outcome.status == S.BAD_EKU


def test_a_signed_data_without_signers_is_malformed(
    pki: TestPki, anchors: tuple[x509.Certificate, ...], now: dt.datetime
) -> None:
    # A "certs-only" PKCS#7, as openssl crl2pkcs7 makes it: a SignedData with no SignerInfo.
    der = run(["openssl", "crl2pkcs7", "-nocrl", "-certfile", pki.cert("alice"), "-outform", "DER"])
    outcome = check(der, anchors, now)
    assert outcome.status == S.MALFORMED
    assert outcome.error == "SignedData has no SignerInfo"
    assert outcome.signers == ()


def test_a_detached_signature_without_its_content_is_malformed(
    pki: TestPki, anchors: tuple[x509.Certificate, ...], now: dt.datetime
) -> None:
    outcome = check(sign(pki, "alice", opaque=False), anchors, now)
    assert outcome.status == S.MALFORMED
    assert outcome.content is None
    assert "content" in (outcome.error or "")


def test_a_problem_found_after_the_deciding_one_is_still_named(
    pki: TestPki, anchors: tuple[x509.Certificate, ...], now: dt.datetime
) -> None:
    outcome = check(sign(pki, "noeku", with_intermediate=False), anchors, now, from_=[])
    report = outcome.signers[0]
    assert report.status == S.UNTRUSTED
    assert (report.reason or "").endswith("; also bad-eku, email-mismatch")
    assert "\n" not in (report.reason or "")


def test_a_report_serialises_to_json(
    pki: TestPki, anchors: tuple[x509.Certificate, ...], now: dt.datetime
) -> None:
    summary = check(sign(pki, "alice"), anchors, now).signers[0].to_json()
    assert summary["status"] == "valid"
    assert summary["chain"][-1] == load_cert(pki.root).subject.rfc4514_string()


def test_enveloped_data_is_refused_as_misuse(
    pki: TestPki, anchors: tuple[x509.Certificate, ...], now: dt.datetime
) -> None:
    der = openssl_cms(["-encrypt", "-outform", "DER", "-aes256", pki.cert("bob")], CONTENT)
    with pytest.raises(UsageError):
        check(der, anchors, now)


def test_a_naive_time_is_refused_as_misuse(
    pki: TestPki, anchors: tuple[x509.Certificate, ...], now: dt.datetime
) -> None:
    with pytest.raises(UsageError):
        check(sign(pki, "alice"), anchors, now.replace(tzinfo=None))


# --- more algorithms and limits --------------------------------------------------------------


def test_md5_is_a_weak_algorithm_even_when_sha1_is_allowed(
    pki: TestPki, anchors: tuple[x509.Certificate, ...], now: dt.datetime
) -> None:
    outcome = check(sign(pki, "alice", args=["-md", "md5"]), anchors, now, allow_sha1=True)
    assert outcome.status == S.WEAK_ALGORITHM
    assert outcome.signers[0].digest_algorithm == "md5"


def test_other_content_than_data_signed_without_signed_attributes_is_malformed(
    pki: TestPki, anchors: tuple[x509.Certificate, ...], now: dt.datetime
) -> None:
    der = sign(pki, "alice", args=["-econtent_type", "1.2.3.4", "-noattr"])
    outcome = check(der, anchors, now)
    assert outcome.status == S.MALFORMED
    assert "signed attributes" in (outcome.signers[0].reason or "")


def test_other_content_than_data_with_signed_attributes_is_valid(
    pki: TestPki, anchors: tuple[x509.Certificate, ...], now: dt.datetime
) -> None:
    der = sign(pki, "alice", args=["-econtent_type", "1.2.3.4"])
    outcome = check(der, anchors, now)
    assert outcome.status == S.VALID
    assert outcome.content == CONTENT


def test_an_intermediate_with_a_small_rsa_key_is_a_weak_algorithm(
    pki: TestPki, anchors: tuple[x509.Certificate, ...], now: dt.datetime, tmp_path: Path
) -> None:
    root_key = serialization.load_pem_private_key(
        (pki.directory / "root.key.pem").read_bytes(), password=None
    )
    ca_path, _, ca_cert, ca_key = issue(
        pki, tmp_path, "Small CA", ca=True, key_size=1024, issuer=(load_cert(pki.root), root_key)
    )
    cert, key, *_ = issue(pki, tmp_path, "smallca-user", issuer=(ca_cert, ca_key))
    der = sign_with(cert, key, args=["-certfile", str(ca_path)])
    outcome = check(der, anchors, now, from_=["smallca-user@example.org"])
    assert outcome.status == S.WEAK_ALGORITHM
    assert "intermediate CN=Small CA has an RSA-1024 key" in (outcome.signers[0].reason or "")


def test_a_dsa_signature_made_by_openssl_is_valid_and_a_forged_one_invalid(
    pki: TestPki, anchors: tuple[x509.Certificate, ...], now: dt.datetime, tmp_path: Path
) -> None:
    # Old archives hold DSA-signed mail (Netscape-era and some government PKIs).
    key = dsa.generate_private_key(key_size=2048)
    cert, key_path, *_ = issue(pki, tmp_path, "dsa", key=key)
    der = sign_with(cert, key_path, args=["-certfile", str(pki.intermediate)])
    outcome = check(der, anchors, now, from_=["dsa@example.org"])
    assert outcome.status == S.VALID, outcome.signers[0].reason
    assert outcome.signers[0].signature_algorithm == "dsa"
    assert outcome.signers[0].digest_algorithm == "sha256"
    forged = check(flip_byte_inside(der, CONTENT[:16], 3), anchors, now, from_=["dsa@example.org"])
    assert forged.status == S.INVALID


def test_ed448_signatures_are_valid(
    pki: TestPki, anchors: tuple[x509.Certificate, ...], now: dt.datetime, tmp_path: Path
) -> None:
    key = ed448.Ed448PrivateKey.generate()
    _, _, cert, _ = issue(pki, tmp_path, "ed448", key=key)
    der = eddsa_signed_data(cert, key, CONTENT, chain=[load_cert(pki.intermediate)])
    outcome = check(der, anchors, now, from_=["ed448@example.org"])
    assert outcome.status == S.VALID
    assert outcome.signers[0].signature_algorithm == "ed448"
    assert outcome.signers[0].digest_algorithm == "shake256"


def test_an_unknown_critical_extension_makes_the_signer_untrusted(
    pki: TestPki, anchors: tuple[x509.Certificate, ...], now: dt.datetime, tmp_path: Path
) -> None:
    unknown = x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.99999.1"), b"\x05\x00")
    cert, key, *_ = issue(pki, tmp_path, "odd", extra_extension=unknown)
    der = sign_with(cert, key, args=["-certfile", str(pki.intermediate)])
    outcome = check(der, anchors, now, from_=["odd@example.org"])
    assert outcome.status == S.UNTRUSTED
    assert "1.3.6.1.4.1.99999.1" in (outcome.signers[0].reason or "")


def test_only_the_first_sixteen_signers_are_checked(
    pki: TestPki, anchors: tuple[x509.Certificate, ...], now: dt.datetime
) -> None:
    info = parse_content_info(sign(pki, "alice"))
    signed_data = info["content"]
    signer = signed_data["signer_infos"][0]
    copies = cms.SignerInfos([cms.SignerInfo.load(signer.dump()) for _ in range(17)])
    signed_data["signer_infos"] = copies
    der = cms.ContentInfo({"content_type": "signed_data", "content": signed_data}).dump(force=True)
    outcome = check(der, anchors, now)
    assert outcome.status == S.VALID
    assert len(outcome.signers) == 16
    assert outcome.error == "only the first 16 of 17 signers were checked"


def test_a_trust_anchor_may_be_the_signer_certificate_itself(
    pki: TestPki, now: dt.datetime
) -> None:
    der = sign(pki, "rogue", with_intermediate=False)
    outcome = check(der, [load_cert(pki.cert("rogue"))], now, from_=["rogue@example.org"])
    assert outcome.status == S.VALID
    assert outcome.signers[0].chain == (load_cert(pki.cert("rogue")),)


def test_no_single_byte_change_makes_verification_raise(
    pki: TestPki, anchors: tuple[x509.Certificate, ...], now: dt.datetime
) -> None:
    # Untrusted input must only ever give statuses. Every byte of a small opaque signature by
    # carol (P-256: quick to check) is changed in turn; what still parses must verify quietly.
    der = sign(pki, "carol", data=b"hi\r\n")
    checked = 0
    for position in range(len(der)):
        mutated = der[:position] + bytes([der[position] ^ 0x41]) + der[position + 1 :]
        try:
            info = parse_content_info(mutated)
        except (MalformedInput, UnsupportedInput):
            continue
        outcome = check(mutated, anchors, now, from_=["carol@example.org"])
        assert isinstance(outcome.status, SignatureStatus)
        checked += 1
        if outcome.status == S.VALID:
            # Only bytes no signature covers may change without notice (e.g. unsigned parts
            # of a certificate's outer encoding are not among them): the content must be intact.
            assert outcome.content == b"hi\r\n"
        del info
    assert checked > len(der) // 2


@pytest.mark.parametrize("digest", ["sha1", "md5"])
def test_a_certificate_signed_with_an_old_hash_chains_and_is_judged_weak_not_forged(
    pki: TestPki,
    anchors: tuple[x509.Certificate, ...],
    now: dt.datetime,
    tmp_path: Path,
    digest: str,
) -> None:
    # Nearly every S/MIME certificate issued before about 2016 is signed with SHA-1 (older ones
    # with MD5). cryptography >= 49 refuses to check such signatures; ours must still tell a
    # sound old certificate (weak, or valid for an archive) from a forged one.
    user_key, csr = tmp_path / "old.key.pem", tmp_path / "old.csr.pem"
    cert, ext = tmp_path / "old.cert.pem", tmp_path / "ext.cnf"
    ext.write_text(
        "subjectAltName=email:old@example.org\nextendedKeyUsage=emailProtection\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\nbasicConstraints=critical,CA:FALSE\n"
    )
    run(["openssl", "req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", user_key,
         "-subj", "/CN=Old", "-out", csr])  # fmt: skip
    run(["openssl", "x509", "-req", "-in", csr, "-CA", pki.intermediate,
         "-CAkey", pki.directory / "intermediate.key.pem", "-CAcreateserial",
         f"-{digest}", "-days", "30", "-extfile", ext, "-out", cert])  # fmt: skip
    der = sign_with(cert, user_key, args=["-certfile", str(pki.intermediate)])
    # openssl x509 makes it valid from the moment it ran, after the session's `now`.
    now = load_cert(cert).not_valid_before_utc + dt.timedelta(hours=1)
    strict = check(der, anchors, now, from_=["old@example.org"])
    assert strict.status == S.WEAK_ALGORITHM, strict.signers[0].reason
    assert f"signed with {'SHA-1' if digest == 'sha1' else 'MD5'}" in (
        strict.signers[0].reason or ""
    )
    archive = check(der, anchors, now, from_=["old@example.org"], allow_sha1=True)
    assert archive.status == (S.VALID if digest == "sha1" else S.WEAK_ALGORITHM)
    # The same certificate with its signature altered is not signed by the intermediate at all.
    pem = cert.read_bytes()
    body = b"".join(pem.splitlines()[1:-1])
    forged_der = bytearray(base64.b64decode(body))
    forged_der[-5] ^= 0x01
    forged_cert = tmp_path / "forged.cert.pem"
    forged_cert.write_bytes(
        b"-----BEGIN CERTIFICATE-----\n"
        + base64.encodebytes(bytes(forged_der))
        + b"-----END CERTIFICATE-----\n"
    )
    forged = check(
        sign_with(forged_cert, user_key, args=["-certfile", str(pki.intermediate)]),
        anchors,
        now,
        from_=["old@example.org"],
        allow_sha1=True,
    )
    assert forged.status == S.UNTRUSTED
    assert "is not signed by the key of" in (forged.signers[0].reason or "")

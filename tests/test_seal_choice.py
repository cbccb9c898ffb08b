"""How ``seal`` picks the content cipher and key transport, and which certificates it refuses
to encrypt to."""

from __future__ import annotations

import datetime as dt

import pytest
from asn1crypto import cms
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from smime_companion.core.cert_vocabulary import Recipient
from smime_companion.core.certs import advertised_capabilities, recipient_certificate_problem
from smime_companion.core.model import Identity
from smime_companion.core.seal import (
    SealOptions,
    choose_content_cipher,
    seal,
)
from smime_companion.errors import SealError
from smime_companion.testing.pki import TestPki
from tests.test_seal_support import certificate, identity, recipient, seal_draft, text_draft


def _with(pki: TestPki, *capability_lists: tuple[str, ...]) -> list[Recipient]:
    return [recipient(pki, "bob", caps) for caps in capability_lists]


@pytest.mark.parametrize(
    ("capability_lists", "expected"),
    [
        ((("aes-256-gcm",), ("aes-256-gcm", "aes-128-cbc")), "aes-256-gcm"),
        ((("aes-256-gcm",), ()), "aes-256-cbc"),  # one recipient advertised nothing
        ((("aes-256-gcm",), ("aes-256-cbc",)), "aes-256-cbc"),
        (((), ()), "aes-256-cbc"),
        ((("aes-256-gcm",), ("aes-128-cbc",)), "aes-128-cbc"),
        ((("3des-cbc",),), "aes-128-cbc"),  # 3DES is never chosen unless allowed
    ],
)
def test_content_cipher_is_the_best_every_recipient_can_read(
    pki: TestPki, capability_lists: tuple[tuple[str, ...], ...], expected: str
) -> None:
    assert choose_content_cipher(_with(pki, *capability_lists)) == expected


def test_3des_only_when_allowed_and_a_recipient_advertised_nothing_better(pki: TestPki) -> None:
    assert choose_content_cipher(_with(pki, ("3des-cbc",)), allow_3des=True) == "3des-cbc"
    both = _with(pki, ("3des-cbc", "aes-128-cbc"))
    assert choose_content_cipher(both, allow_3des=True) == "aes-128-cbc"


def test_key_transport_is_v15_by_default_oaep_when_advertised_and_ecdh_for_ec(
    pki: TestPki,
) -> None:
    draft = text_draft(to=("bob@example.org", "olga@example.org", "dave@example.org"))
    rcpts = [
        recipient(pki, "bob", ("rsaes-oaep",)),
        recipient(pki, "olga"),
        recipient(pki, "dave"),
    ]
    result = seal_draft(pki, draft, recipients=rcpts)
    assert {d.address: d.key_transport for d in result.main.deliveries} == {
        "alice@example.org": "rsa-pkcs1v15",
        "bob@example.org": "rsa-oaep-sha256",
        "olga@example.org": "rsa-pkcs1v15",
        "dave@example.org": "ecdh-p384-sha384",
    }


@pytest.mark.parametrize(
    ("user", "problem"),
    [
        ("expired", "certificate expired"),
        ("future", "certificate not yet valid"),
        ("noeku", "certificate not for email protection"),
        ("erin", "certificate key cannot receive encrypted mail"),  # Ed25519 signs only
    ],
)
def test_a_certificate_that_must_not_receive_mail_is_refused_with_the_reason(
    pki: TestPki, now: dt.datetime, user: str, problem: str
) -> None:
    assert recipient_certificate_problem(certificate(pki, user), now) == problem
    draft = text_draft(to=(pki.email(user),))
    with pytest.raises(SealError, match=rf"^cannot encrypt to recipient\(s\): .*\({problem}\)$"):
        seal_draft(pki, draft, recipients=[recipient(pki, user)])


def test_a_usable_certificate_has_no_problem(pki: TestPki, now: dt.datetime) -> None:
    for user in ("alice", "bob", "carol", "olga"):
        assert recipient_certificate_problem(certificate(pki, user), now) is None


def test_capabilities_are_read_from_a_certificate_smime_capabilities_extension() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "caps")])
    # The RFC 4262 extension holds an SMIMECapabilities SEQUENCE, as the signed attribute does.
    caps_der = cms.SMIMECapabilites(
        [{"capability_id": "aes128_gcm"}, {"capability_id": "rsaes_oaep"}]
    ).dump()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
        .not_valid_after(dt.datetime(2027, 1, 1, tzinfo=dt.UTC))
        .add_extension(
            x509.UnrecognizedExtension(x509.ObjectIdentifier("1.2.840.113549.1.9.15"), caps_der),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    assert advertised_capabilities(cert) == ("aes-128-gcm", "rsaes-oaep")


def test_a_certificate_without_the_extension_advertises_nothing(pki: TestPki) -> None:
    assert advertised_capabilities(certificate(pki, "bob")) == ()


def test_signing_with_a_certificate_for_another_address_is_refused(pki: TestPki) -> None:
    draft = text_draft(sender="alice@example.org")
    with pytest.raises(SealError, match="signing certificate is for bob@example.org, not"):
        seal_draft(pki, draft, signer="bob", options=SealOptions(encrypt=False))


def test_asking_for_neither_signing_nor_encryption_is_refused(pki: TestPki) -> None:
    with pytest.raises(SealError, match="nothing to do"):
        seal_draft(pki, text_draft(), options=SealOptions(sign=False, encrypt=False))


def test_a_signing_key_that_does_not_match_its_certificate_is_refused(pki: TestPki) -> None:
    mismatched = Identity(key=identity(pki, "bob").key, certificate=certificate(pki, "alice"))
    with pytest.raises(SealError, match="signing key does not match the signing certificate"):
        seal(text_draft(), signer=mismatched, recipients=[], at=dt.datetime.now(dt.UTC))

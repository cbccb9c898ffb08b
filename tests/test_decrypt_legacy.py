"""core.decrypt: the algorithms old archives and new mail still use beside AES (issue 16, class 9).

RC2 (40, 64 and 128 effective bits) and single DES come from ``openssl cms -encrypt`` with
OpenSSL's legacy provider, at test time. ChaCha20-Poly1305 AuthEnvelopedData (RFC 8103) and
X25519 / X448 key agreement (RFC 8418) cannot be made by the OpenSSL 3.0, gpgsm 2.2 or NSS 3.87
on this machine ("operation not supported for this keytype"), so those messages are assembled
here from cryptography's primitives, following the RFCs' structures (see
tests/interop_cases.md); the RC2 cipher itself is checked against RFC 2268's test vectors.
"""

from __future__ import annotations

import datetime as dt
import os

import pytest
from asn1crypto import algos, cms, core, keys
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.decrepit.ciphers.algorithms import RC2
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding as rsa_padding
from cryptography.hazmat.primitives.asymmetric import rsa, x448, x25519
from cryptography.hazmat.primitives.ciphers import Cipher, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.keywrap import aes_key_wrap
from cryptography.x509.oid import NameOID

from smime_companion.core import rc2
from smime_companion.core.cms import parse_content_info
from smime_companion.core.cms_algorithms import (
    AnyAlgorithmIdentifier,
    GcmParameters,
    ecc_cms_shared_info,
    hkdf,
    x963_kdf,
)
from smime_companion.core.decrypt import decrypt
from smime_companion.core.model import DecryptOutcome, Identity
from smime_companion.core.open import open_message
from smime_companion.core.verdicts import Decryption
from smime_companion.testing.pki import TestPki
from tests.conftest import load_cert, load_identity
from tests.tools import mime_message, openssl_cms

BODY = mime_message(body="Hello,\r\nthe archive of 1999.\r\n" + "y" * 200 + "\r\n")
LEGACY = ["-provider", "legacy", "-provider", "default"]


def open_with(der: bytes, identities: list[Identity]) -> DecryptOutcome:
    return decrypt(parse_content_info(der), identities)


# --- RC2 and DES, as OpenSSL's legacy provider writes them ---------------------------------------


@pytest.mark.parametrize(
    ("option", "cipher"),
    [
        ("-rc2-40", "rc2-40-cbc"),
        ("-rc2-64", "rc2-64-cbc"),
        ("-rc2-128", "rc2-128-cbc"),
        ("-des", "des-cbc"),
    ],
)
def test_legacy_cipher_from_openssl_opens_and_is_flagged_weak(
    pki: TestPki, option: str, cipher: str
) -> None:
    der = openssl_cms(
        ["-encrypt", "-binary", "-outform", "DER", option, *LEGACY, "-recip", pki.cert("bob")],
        BODY,
    )
    outcome = open_with(der, [load_identity(pki, "bob")])
    assert outcome.status == Decryption.OK, outcome.error
    assert outcome.plaintext == BODY
    assert outcome.content_cipher == cipher
    assert outcome.weak is True
    assert outcome.integrity_protected is False


def test_rc2_40_message_opens_with_the_weak_cipher_warning(pki: TestPki, now: dt.datetime) -> None:
    message = openssl_cms(["-encrypt", "-rc2-40", *LEGACY, "-recip", pki.cert("bob")], BODY)
    result = open_message(message, identities=[load_identity(pki, "bob")], at=now)
    assert result.decryption == Decryption.OK
    assert result.content_cipher == "rc2-40-cbc"
    assert "weak-cipher" in result.warnings
    assert b"the archive of 1999." in result.content


def test_rc2_with_the_wrong_key_is_failed_not_garbage(pki: TestPki) -> None:
    der = openssl_cms(
        ["-encrypt", "-binary", "-outform", "DER", "-rc2-40", *LEGACY, "-recip", pki.cert("bob")],
        BODY,
    )
    impostor = Identity(key=load_identity(pki, "alice").key, certificate=load_cert(pki.cert("bob")))
    outcome = open_with(der, [impostor])
    assert outcome.status == Decryption.FAILED
    assert outcome.plaintext is None


def test_a_huge_rc2_40_message_is_refused_in_bounded_time(pki: TestPki) -> None:
    body = mime_message(body="z" * (rc2.MAX_PYTHON_RC2_BYTES + 1024))
    der = openssl_cms(
        ["-encrypt", "-binary", "-outform", "DER", "-rc2-40", *LEGACY, "-recip", pki.cert("bob")],
        body,
    )
    outcome = open_with(der, [load_identity(pki, "bob")])
    assert outcome.status == Decryption.UNSUPPORTED
    assert "rc2-40-cbc" in (outcome.error or "") and "MB" in (outcome.error or "")


# RFC 2268 section 5: (key, effective bits, plaintext, ciphertext). IETF Trust, code component.
RFC2268_VECTORS = [
    ("0000000000000000", 63, "0000000000000000", "ebb773f993278eff"),
    ("ffffffffffffffff", 64, "ffffffffffffffff", "278b27e42e2f0d49"),
    ("3000000000000000", 64, "1000000000000001", "30649edf9be7d2c2"),
    ("88", 64, "0000000000000000", "61a8a244adacccf0"),
    ("88bca90e90875a", 64, "0000000000000000", "6ccf4308974c267f"),
    ("88bca90e90875a7f0f79c384627bafb2", 64, "0000000000000000", "1a807d272bbe5db1"),
    ("88bca90e90875a7f0f79c384627bafb2", 128, "0000000000000000", "2269552ab0f85ca6"),
]


@pytest.mark.parametrize(("key", "bits", "plain", "cipher"), RFC2268_VECTORS)
def test_rc2_matches_the_rfc_2268_test_vectors(
    key: str, bits: int, plain: str, cipher: str
) -> None:
    assert rc2.decrypt_block(bytes.fromhex(key), bits, bytes.fromhex(cipher)).hex() == plain


def test_rc2_128_in_python_matches_cryptography() -> None:
    key, iv, data = os.urandom(16), os.urandom(8), os.urandom(8 * 300)
    encryptor = Cipher(RC2(key), modes.CBC(iv)).encryptor()
    assert rc2.cbc_decrypt(key, 128, iv, encryptor.update(data) + encryptor.finalize()) == data


# --- ChaCha20-Poly1305 AuthEnvelopedData (RFC 8103) --------------------------------------------


def _issuer_and_serial(cert: x509.Certificate) -> cms.IssuerAndSerialNumber:
    parsed = asn1_x509.Certificate.load(cert.public_bytes(serialization.Encoding.DER))
    return cms.IssuerAndSerialNumber(
        {"issuer": parsed.issuer, "serial_number": parsed.serial_number}
    )


def _ktri_to(cert: x509.Certificate, cek: bytes) -> cms.RecipientInfo:
    key = cert.public_key()
    assert isinstance(key, rsa.RSAPublicKey)
    oaep = rsa_padding.OAEP(rsa_padding.MGF1(hashes.SHA256()), hashes.SHA256(), None)
    return cms.RecipientInfo(
        name="ktri",
        value=cms.KeyTransRecipientInfo(
            {
                "version": "v0",
                "rid": cms.RecipientIdentifier(
                    name="issuer_and_serial_number", value=_issuer_and_serial(cert)
                ),
                "key_encryption_algorithm": {
                    "algorithm": "rsaes_oaep",
                    "parameters": algos.RSAESOAEPParams(
                        {
                            "hash_algorithm": {"algorithm": "sha256"},
                            "mask_gen_algorithm": {
                                "algorithm": "mgf1",
                                "parameters": {"algorithm": "sha256"},
                            },
                        }
                    ),
                },
                "encrypted_key": key.encrypt(cek, oaep),
            }
        ),
    )


def _chacha_message(recipient: cms.RecipientInfo, cek: bytes, enveloped: bool = False) -> bytes:
    """RFC 8103: AEADChaCha20Poly1305Nonce as the parameters, the 16-byte tag as the mac."""
    nonce = os.urandom(12)
    sealed = ChaCha20Poly1305(cek).encrypt(nonce, BODY, b"")
    algorithm = {
        "algorithm": "1.2.840.113549.1.9.16.3.18",
        "parameters": core.Any.load(core.OctetString(nonce).dump()),
    }
    if enveloped:  # the same cipher in EnvelopedData, which has no place for the tag
        envelope = cms.EnvelopedData(
            {
                "version": "v0",
                "recipient_infos": [recipient],
                "encrypted_content_info": {
                    "content_type": "data",
                    "content_encryption_algorithm": algorithm,
                    "encrypted_content": sealed,
                },
            }
        )
        return cms.ContentInfo({"content_type": "enveloped_data", "content": envelope}).dump()
    aed = cms.AuthEnvelopedData(
        {
            "version": "v0",
            "recipient_infos": [recipient],
            "auth_encrypted_content_info": {
                "content_type": "data",
                "content_encryption_algorithm": algorithm,
                "encrypted_content": sealed[:-16],
            },
            "mac": sealed[-16:],
        }
    )
    del aed["auth_attrs"]
    return cms.ContentInfo({"content_type": "authenticated_enveloped_data", "content": aed}).dump()


def test_chacha20_poly1305_auth_enveloped_data_opens(pki: TestPki) -> None:
    cek = os.urandom(32)
    der = _chacha_message(_ktri_to(load_cert(pki.cert("bob")), cek), cek)
    outcome = open_with(der, [load_identity(pki, "bob")])
    assert outcome.status == Decryption.OK, outcome.error
    assert outcome.plaintext == BODY
    assert outcome.content_cipher == "chacha20-poly1305"
    assert outcome.integrity_protected is True and outcome.weak is False


def test_chacha20_poly1305_with_a_flipped_byte_is_failed(pki: TestPki) -> None:
    cek = os.urandom(32)
    der = bytearray(_chacha_message(_ktri_to(load_cert(pki.cert("bob")), cek), cek))
    der[-40] ^= 0x01  # inside the ciphertext, before the 16-byte tag
    outcome = open_with(bytes(der), [load_identity(pki, "bob")])
    assert outcome.status == Decryption.FAILED
    assert "Poly1305 tag mismatch" in (outcome.error or "")


def test_chacha20_poly1305_in_plain_enveloped_data_is_unsupported(pki: TestPki) -> None:
    cek = os.urandom(32)
    der = _chacha_message(_ktri_to(load_cert(pki.cert("bob")), cek), cek, enveloped=True)
    outcome = open_with(der, [load_identity(pki, "bob")])
    assert outcome.status == Decryption.UNSUPPORTED
    assert "EnvelopedData" in (outcome.error or "")


# --- X25519 and X448 key agreement (RFC 8418) ---------------------------------------------------


_HKDF = {"sha256": "1.2.840.113549.1.9.16.3.19", "sha512": "1.2.840.113549.1.9.16.3.21"}
_X963_SHA256 = "1.3.132.1.11.1"  # dhSinglePass-stdDH-sha256kdf-scheme, also allowed by RFC 8418


def _x_identity(pki: TestPki, curve: str) -> Identity:
    """A recipient whose certificate (issued by the test intermediate) holds an X25519 or X448
    key, as RFC 8410 certificates do."""
    key = (
        x25519.X25519PrivateKey.generate() if curve == "x25519" else x448.X448PrivateKey.generate()
    )
    issuer = load_cert(pki.intermediate)
    issuer_key = serialization.load_pem_private_key(
        (pki.directory / "intermediate.key.pem").read_bytes(), None
    )
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"Dana {curve}")]))
        .issuer_name(issuer.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName([x509.RFC822Name("dana@example.org")]), critical=False
        )
        .sign(issuer_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    return Identity(key=key, certificate=cert)


def _x_message(
    recipient: Identity, scheme: str, kdf_hash: str, ukm: bytes | None = None, salt: bool = False
) -> bytes:
    """An AuthEnvelopedData (AES-128-GCM) to ``recipient`` by ephemeral-static X25519/X448 with
    ``scheme`` (HKDF or the X9.63 KDF) and AES-256 key wrap, as RFC 8418 section 2 describes."""
    public = recipient.certificate.public_key()
    if isinstance(public, x25519.X25519PublicKey):
        ephemeral: x25519.X25519PrivateKey | x448.X448PrivateKey = (
            x25519.X25519PrivateKey.generate()
        )
        key_oid = "1.3.101.110"
    else:
        ephemeral = x448.X448PrivateKey.generate()
        key_oid = "1.3.101.111"
    shared = ephemeral.exchange(public)  # type: ignore[arg-type]
    wrap = AnyAlgorithmIdentifier({"algorithm": "2.16.840.1.101.3.4.1.45"})  # aes256-wrap
    info = ecc_cms_shared_info(wrap, ukm)
    if scheme in _HKDF.values():
        kek = hkdf(kdf_hash, shared, 32, info, ukm if salt else None)
    else:
        kek = x963_kdf(kdf_hash, shared, 32, info)
    cek, nonce = os.urandom(16), os.urandom(12)
    sealed = AESGCM(cek).encrypt(nonce, BODY, b"")
    kari_fields: dict[str, object] = {
        "version": "v3",
        "originator": cms.OriginatorIdentifierOrKey(
            name="originator_key",
            value=keys.PublicKeyInfo(
                {
                    "algorithm": {"algorithm": key_oid},
                    "public_key": ephemeral.public_key().public_bytes_raw(),
                }
            ),
        ),
        "key_encryption_algorithm": {
            "algorithm": scheme,
            "parameters": core.Any.load(wrap.dump()),
        },
        "recipient_encrypted_keys": [
            {
                "rid": cms.KeyAgreementRecipientIdentifier(
                    name="issuer_and_serial_number",
                    value=_issuer_and_serial(recipient.certificate),
                ),
                "encrypted_key": aes_key_wrap(kek, cek),
            }
        ],
    }
    if ukm is not None:
        kari_fields["ukm"] = ukm
    aed = cms.AuthEnvelopedData(
        {
            "version": "v0",
            "recipient_infos": [
                cms.RecipientInfo(name="kari", value=cms.KeyAgreeRecipientInfo(kari_fields))
            ],
            "auth_encrypted_content_info": {
                "content_type": "data",
                "content_encryption_algorithm": {
                    "algorithm": "aes128_gcm",
                    "parameters": core.Any.load(
                        GcmParameters({"aes_nonce": nonce, "aes_icvlen": 16}).dump()
                    ),
                },
                "encrypted_content": sealed[:-16],
            },
            "mac": sealed[-16:],
        }
    )
    del aed["auth_attrs"]
    return cms.ContentInfo({"content_type": "authenticated_enveloped_data", "content": aed}).dump()


@pytest.mark.parametrize(
    ("curve", "scheme", "kdf_hash", "name"),
    [
        ("x25519", _HKDF["sha256"], "sha256", "x25519-hkdf-sha256"),
        ("x448", _HKDF["sha512"], "sha512", "x448-hkdf-sha512"),
        ("x25519", _X963_SHA256, "sha256", "x25519-sha256"),
    ],
)
def test_x25519_and_x448_key_agreement_opens(
    pki: TestPki, curve: str, scheme: str, kdf_hash: str, name: str
) -> None:
    dana = _x_identity(pki, curve)
    outcome = open_with(_x_message(dana, scheme, kdf_hash), [dana])
    assert outcome.status == Decryption.OK, outcome.error
    assert outcome.plaintext == BODY
    assert outcome.key_transport == name
    assert outcome.content_cipher == "aes-128-gcm"


@pytest.mark.parametrize("ukm_as_salt", [False, True], ids=["ukm-in-shared-info", "ukm-as-salt"])
def test_x25519_user_keying_material_is_read_either_way_senders_use_it(
    pki: TestPki, ukm_as_salt: bool
) -> None:
    dana = _x_identity(pki, "x25519")
    der = _x_message(dana, _HKDF["sha256"], "sha256", ukm=os.urandom(16), salt=ukm_as_salt)
    outcome = open_with(der, [dana])
    assert outcome.status == Decryption.OK, outcome.error
    assert outcome.plaintext == BODY


def test_x25519_recipient_with_the_wrong_key_is_failed(pki: TestPki) -> None:
    dana = _x_identity(pki, "x25519")
    der = _x_message(dana, _HKDF["sha256"], "sha256")
    impostor = Identity(key=x25519.X25519PrivateKey.generate(), certificate=dana.certificate)
    outcome = open_with(der, [impostor])
    assert outcome.status == Decryption.FAILED
    assert outcome.key_transport == "x25519-hkdf-sha256"


def test_x25519_message_to_an_rsa_key_is_failed_not_an_exception(pki: TestPki) -> None:
    dana = _x_identity(pki, "x25519")
    der = _x_message(dana, _HKDF["sha256"], "sha256")
    mismatched = Identity(key=load_identity(pki, "bob").key, certificate=dana.certificate)
    outcome = open_with(der, [mismatched])
    assert outcome.status == Decryption.FAILED
    assert "x25519" in (outcome.error or "")

"""core.decrypt: opening EnvelopedData and AuthEnvelopedData that OpenSSL made for the test PKI.

Every message is made at test time with ``openssl cms -encrypt`` (or, where OpenSSL cannot produce
a structure, such as user keying material or authenticated attributes, assembled here from
primitives and checked against ``openssl cms -decrypt``), and decrypted with ``core.decrypt``.
"""

from __future__ import annotations

import email
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from asn1crypto import algos, cms, core, keys
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, padding, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric import padding as rsa_padding
from cryptography.hazmat.primitives.ciphers import Cipher, modes
from cryptography.hazmat.primitives.ciphers.aead import AESCCM, AESGCM
from cryptography.hazmat.primitives.ciphers.algorithms import AES
from cryptography.hazmat.primitives.keywrap import aes_key_wrap
from hypothesis import given, settings
from hypothesis import strategies as st

from smime_companion.core.cms import parse_content_info
from smime_companion.core.cms_algorithms import (
    AnyAlgorithmIdentifier,
    GcmParameters,
    ecc_cms_shared_info,
    x963_kdf,
)
from smime_companion.core.decrypt import MAX_ATTEMPTS_PER_IDENTITY, decrypt
from smime_companion.core.model import DecryptOutcome, Identity
from smime_companion.core.verdicts import Decryption
from smime_companion.errors import MalformedInput, UnsupportedInput
from smime_companion.testing.pki import TestPki
from tests.conftest import load_cert, load_identity
from tests.tools import mime_message, openssl_cms, run

BODY = mime_message(body="Hello,\r\nthis is the secret plan.\r\n" + "x" * 300 + "\r\n")
# Big enough that ``openssl cms -stream`` writes the ciphertext as several BER chunks.
BIG_BODY = mime_message(body=("0123456789abcdef" * 64 + "\r\n") * 200)

UNKNOWN_OID = "1.3.6.1.4.1.55555.1.2.3"


def recip(pki: TestPki, user: str, *keyopts: str) -> list[str | Path]:
    """``-recip CERT -keyopt K ...`` for one recipient of ``openssl cms -encrypt``."""
    args: list[str | Path] = ["-recip", pki.cert(user)]
    for keyopt in keyopts:
        args += ["-keyopt", keyopt]
    return args


def encrypt(*args: str | Path, data: bytes = BODY) -> bytes:
    """DER CMS from ``openssl cms -encrypt -binary -outform DER ARGS`` over ``data``."""
    return openssl_cms(["-encrypt", "-binary", "-outform", "DER", *args], data)


def open_with(der: bytes, identities: Sequence[Identity]) -> DecryptOutcome:
    """Parse ``der`` as the caller does, then decrypt it."""
    return decrypt(parse_content_info(der), identities)


def edit(der: bytes, change: Callable[[cms.ContentInfo], None]) -> bytes:
    """Re-encode ``der`` after ``change`` edited its parsed asn1crypto ContentInfo in place."""
    info = cms.ContentInfo.load(der)
    change(info)
    return info.dump(force=True)


def first_recipient(info: cms.ContentInfo) -> Any:
    """The chosen KeyTransRecipientInfo or KeyAgreeRecipientInfo of the first RecipientInfo."""
    return info["content"]["recipient_infos"][0].chosen


# --- every combination OpenSSL produces ---------------------------------------------------------

# (test id, recipient user, openssl options after the recipient, keyopts, our expected names)
CASES = [
    ("rsa-v15-aes128", "alice", ["-aes128"], [], "aes-128-cbc", "rsa-pkcs1v15"),
    ("rsa-v15-aes192", "alice", ["-aes192"], [], "aes-192-cbc", "rsa-pkcs1v15"),
    ("rsa-v15-aes256", "alice", ["-aes256"], [], "aes-256-cbc", "rsa-pkcs1v15"),
    ("rsa-v15-3des", "alice", ["-des3"], [], "3des-cbc", "rsa-pkcs1v15"),
    ("rsa-v15-gcm128", "alice", ["-aes-128-gcm"], [], "aes-128-gcm", "rsa-pkcs1v15"),
    ("rsa-v15-gcm192", "alice", ["-aes-192-gcm"], [], "aes-192-gcm", "rsa-pkcs1v15"),
    ("rsa-v15-gcm256", "alice", ["-aes-256-gcm"], [], "aes-256-gcm", "rsa-pkcs1v15"),
    ("rsa-v15-keyid", "alice", ["-aes256", "-keyid"], [], "aes-256-cbc", "rsa-pkcs1v15"),
    (
        "rsa-oaep-default-sha1",
        "bob",
        ["-aes256"],
        ["rsa_padding_mode:oaep"],
        "aes-256-cbc",
        "rsa-oaep-sha1",
    ),
    (
        "rsa-oaep-sha256",
        "bob",
        ["-aes128"],
        ["rsa_padding_mode:oaep", "rsa_oaep_md:sha256"],
        "aes-128-cbc",
        "rsa-oaep-sha256",
    ),
    (
        "rsa-oaep-sha384-mgf1-sha1",
        "bob",
        ["-aes192"],
        ["rsa_padding_mode:oaep", "rsa_oaep_md:sha384", "rsa_mgf1_md:sha1"],
        "aes-192-cbc",
        "rsa-oaep-sha384-mgf1-sha1",
    ),
    (
        "rsa-oaep-sha256-keyid-gcm",
        "bob",
        ["-aes-256-gcm", "-keyid"],
        ["rsa_padding_mode:oaep", "rsa_oaep_md:sha256"],
        "aes-256-gcm",
        "rsa-oaep-sha256",
    ),
    ("ecdh-p256-default-kdf", "carol", ["-aes128"], [], "aes-128-cbc", "ecdh-p256-sha1"),
    (
        "ecdh-p256-sha256",
        "carol",
        ["-aes256"],
        ["ecdh_kdf_md:sha256"],
        "aes-256-cbc",
        "ecdh-p256-sha256",
    ),
    (
        "ecdh-p256-sha224",
        "carol",
        ["-aes128"],
        ["ecdh_kdf_md:sha224"],
        "aes-128-cbc",
        "ecdh-p256-sha224",
    ),
    (
        "ecdh-p256-cofactor",
        "carol",
        ["-aes128"],
        ["ecdh_cofactor_mode:1"],
        "aes-128-cbc",
        "ecdh-p256-sha1-cofactor",
    ),
    (
        "ecdh-p256-cofactor-sha256",
        "carol",
        ["-aes-128-gcm"],
        ["ecdh_cofactor_mode:1", "ecdh_kdf_md:sha256"],
        "aes-128-gcm",
        "ecdh-p256-sha256-cofactor",
    ),
    # With 3DES content OpenSSL wraps the key with the RFC 3217 Triple-DES key wrap.
    ("ecdh-p256-3des-wrap", "carol", ["-des3"], [], "3des-cbc", "ecdh-p256-sha1"),
    (
        "ecdh-p384-sha384",
        "dave",
        ["-aes256"],
        ["ecdh_kdf_md:sha384"],
        "aes-256-cbc",
        "ecdh-p384-sha384",
    ),
    ("ecdh-p384-keyid", "dave", ["-aes192", "-keyid"], [], "aes-192-cbc", "ecdh-p384-sha1"),
    (
        "ecdh-p521-sha512-gcm",
        "frank",
        ["-aes-256-gcm"],
        ["ecdh_kdf_md:sha512"],
        "aes-256-gcm",
        "ecdh-p521-sha512",
    ),
    ("ecdh-p521-gcm192", "frank", ["-aes-192-gcm"], [], "aes-192-gcm", "ecdh-p521-sha1"),
]


@pytest.mark.parametrize(
    ("user", "options", "keyopts", "cipher", "transport"),
    [pytest.param(*case[1:], id=case[0]) for case in CASES],
)
def test_openssl_message_decrypts_to_the_exact_plaintext(
    pki: TestPki,
    user: str,
    options: list[str],
    keyopts: list[str],
    cipher: str,
    transport: str,
) -> None:
    der = encrypt(*options, *recip(pki, user, *keyopts))
    outcome = open_with(der, [load_identity(pki, user)])
    assert outcome.status == Decryption.OK, outcome.error
    assert outcome.plaintext == BODY
    assert outcome.content_cipher == cipher
    assert outcome.key_transport == transport
    assert outcome.error is None
    assert outcome.integrity_protected is cipher.endswith("-gcm")
    assert outcome.weak is (cipher == "3des-cbc")


@pytest.mark.parametrize(
    ("user", "options", "keyopts", "cipher", "transport"),
    [
        pytest.param("alice", ["-aes256"], [], "aes-256-cbc", "rsa-pkcs1v15", id="rsa-cbc"),
        pytest.param(
            "bob",
            ["-aes-128-gcm", "-keyid"],
            ["rsa_padding_mode:oaep", "rsa_oaep_md:sha256"],
            "aes-128-gcm",
            "rsa-oaep-sha256",
            id="rsa-oaep-gcm",
        ),
        pytest.param("carol", ["-aes-256-gcm"], [], "aes-256-gcm", "ecdh-p256-sha1", id="ec-gcm"),
        pytest.param("dave", ["-des3"], [], "3des-cbc", "ecdh-p384-sha1", id="ec-3des"),
    ],
)
def test_streamed_ber_message_with_chunked_ciphertext_decrypts(
    pki: TestPki,
    user: str,
    options: list[str],
    keyopts: list[str],
    cipher: str,
    transport: str,
) -> None:
    der = encrypt("-stream", *options, *recip(pki, user, *keyopts), data=BIG_BODY)
    assert der[1] == 0x80, "openssl -stream should write indefinite lengths (BER)"
    eci_name = "auth_encrypted_content_info" if cipher.endswith("gcm") else "encrypted_content_info"
    encrypted = cms.ContentInfo.load(der)["content"][eci_name]["encrypted_content"]
    assert encrypted.method == 1, "the ciphertext should be a constructed (chunked) OCTET STRING"
    outcome = open_with(der, [load_identity(pki, user)])
    assert outcome.status == Decryption.OK, outcome.error
    assert outcome.plaintext == BIG_BODY
    assert (outcome.content_cipher, outcome.key_transport) == (cipher, transport)


def test_base64_smime_output_carries_the_same_cms(pki: TestPki) -> None:
    smime = openssl_cms(["-encrypt", "-binary", "-aes-256-gcm", pki.cert("carol")], BODY)
    payload = email.message_from_bytes(smime).get_payload(decode=True)
    assert isinstance(payload, bytes)
    outcome = open_with(payload, [load_identity(pki, "carol")])
    assert outcome.status == Decryption.OK, outcome.error
    assert outcome.plaintext == BODY


def test_pem_output_decodes_to_a_decryptable_cms(pki: TestPki) -> None:
    pem = openssl_cms(["-encrypt", "-binary", "-outform", "PEM", "-aes192", pki.cert("bob")], BODY)
    der = run(["openssl", "base64", "-d"], b"".join(pem.splitlines(keepends=True)[1:-1]))
    outcome = open_with(der, [load_identity(pki, "bob")])
    assert outcome.status == Decryption.OK, outcome.error
    assert outcome.plaintext == BODY


@pytest.mark.parametrize(
    ("user", "options", "keyopts"),
    [
        pytest.param("alice", ["-aes192"], [], id="aes-192"),
        pytest.param("bob", ["-aes128"], ["rsa_padding_mode:oaep"], id="oaep"),
        pytest.param("alice", ["-aes-128-gcm"], [], id="gcm"),
        pytest.param("carol", ["-aes128"], [], id="ecdh"),
        pytest.param("alice", ["-aes128", "-keyid"], [], id="subject-key-identifier"),
        pytest.param("alice", ["-aes128", "-stream"], [], id="ber"),
    ],
)
def test_cases_cryptography_pkcs7_decrypt_der_rejects_all_work(
    pki: TestPki, user: str, options: list[str], keyopts: list[str]
) -> None:
    """cryptography 50's ``pkcs7_decrypt_der`` refuses each of these (measured when this module
    was written); they are why the engine reads the structure with asn1crypto itself."""
    der = encrypt(*options, *recip(pki, user, *keyopts))
    outcome = open_with(der, [load_identity(pki, user)])
    assert outcome.status == Decryption.OK, outcome.error
    assert outcome.plaintext == BODY


# --- choosing the key ---------------------------------------------------------------------------


def test_the_matching_identity_is_found_among_three(pki: TestPki) -> None:
    der = encrypt("-aes128", pki.cert("alice"), pki.cert("carol"))
    identities = [load_identity(pki, u) for u in ("bob", "dave", "carol")]
    outcome = open_with(der, identities)
    assert outcome.status == Decryption.OK, outcome.error
    assert outcome.key_transport == "ecdh-p256-sha1"
    assert outcome.plaintext == BODY


def test_a_failed_recipient_does_not_stop_the_next_one_from_working(pki: TestPki) -> None:
    # alice's certificate paired with bob's key: it names a recipient but cannot decrypt.
    impostor = Identity(key=load_identity(pki, "bob").key, certificate=load_cert(pki.cert("alice")))
    der = encrypt("-aes-128-gcm", pki.cert("alice"), pki.cert("carol"))
    outcome = open_with(der, [impostor, load_identity(pki, "carol")])
    assert outcome.status == Decryption.OK, outcome.error
    assert outcome.plaintext == BODY


def test_message_for_other_people_is_no_key(pki: TestPki) -> None:
    der = encrypt("-aes128", pki.cert("alice"), pki.cert("carol"))
    outcome = open_with(der, [load_identity(pki, "bob"), load_identity(pki, "dave")])
    assert outcome.status == Decryption.NO_KEY
    assert outcome.plaintext is None
    # The error names whom it was encrypted to, as the certificates say it (openssl -serial).
    alice, carol = (load_cert(pki.cert(user)) for user in ("alice", "carol"))
    issuer = "CN=Test Email CA,O=smime-companion test"
    assert alice.issuer.rfc4514_string() == issuer
    assert outcome.error == (
        f"not encrypted to any of our 2 keys; encrypted to serial {alice.serial_number:X} from "
        f"{issuer}; serial {carol.serial_number:X} from {issuer}"
    )


def test_a_message_to_many_names_its_first_recipients_and_counts_the_rest(pki: TestPki) -> None:
    der = encrypt("-aes128", *(pki.cert("alice") for _ in range(5)))
    outcome = open_with(der, [])
    assert outcome.status == Decryption.NO_KEY
    assert outcome.error is not None
    assert outcome.error.startswith("no key to decrypt with; encrypted to serial ")
    assert outcome.error.count("; serial ") == 1 and outcome.error.endswith(" and 3 more")


def test_a_recipient_whose_issuer_is_a_kilobyte_long_is_named_in_short(pki: TestPki) -> None:
    def long_issuer(info: cms.ContentInfo) -> None:
        rid = info["content"]["recipient_infos"][0].chosen["rid"].chosen
        rid["issuer"] = asn1_x509.Name.build({"organization_name": "A" * 2000})

    outcome = open_with(edit(encrypt("-aes128", pki.cert("alice")), long_issuer), [])
    assert outcome.error is not None and len(outcome.error) < 200
    assert " from O=AAAA" in outcome.error and outcome.error.endswith("A...")


def test_a_recipient_named_by_key_identifier_is_named_so(pki: TestPki) -> None:
    der = encrypt("-aes128", "-keyid", pki.cert("alice"))
    ski = load_cert(pki.cert("alice")).extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    outcome = open_with(der, [load_identity(pki, "bob")])
    assert outcome.error == (
        "not encrypted to any of our 1 key; encrypted to the certificate with key identifier "
        + ski.value.digest.hex().upper()
    )


def test_without_identities_the_message_is_no_key(pki: TestPki) -> None:
    outcome = open_with(encrypt("-aes128", pki.cert("alice")), [])
    assert outcome.status == Decryption.NO_KEY


def test_keyid_recipient_matches_only_by_subject_key_identifier(pki: TestPki) -> None:
    # Same issuer, other key: the subject key identifier must not match bob's certificate.
    der = encrypt("-aes128", "-keyid", pki.cert("alice"))
    assert open_with(der, [load_identity(pki, "bob")]).status == Decryption.NO_KEY
    assert open_with(der, [load_identity(pki, "alice")]).status == Decryption.OK


# --- wrong keys and altered messages ------------------------------------------------------------


def _impostor(pki: TestPki, cert_user: str, key: object) -> Identity:
    return Identity(key=key, certificate=load_cert(pki.cert(cert_user)))  # type: ignore[arg-type]


def test_rsa_v15_wrong_key_behind_matching_certificate_is_failed(pki: TestPki) -> None:
    der = encrypt("-aes-256-gcm", pki.cert("alice"))
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    outcome = open_with(der, [_impostor(pki, "alice", other)])
    assert outcome.status == Decryption.FAILED
    assert outcome.plaintext is None
    # A PKCS#1 v1.5 padding failure is not reported as such (no padding oracle): the random
    # fallback key shows up as a content failure, exactly like a wrong key.
    assert outcome.error == "GCM tag mismatch: content was altered or the key is wrong"
    assert outcome.key_transport == "rsa-pkcs1v15"


def test_rsa_v15_garbage_encrypted_key_fails_like_a_wrong_key(pki: TestPki) -> None:
    def garble(info: cms.ContentInfo) -> None:
        ktri = first_recipient(info)
        ktri["encrypted_key"] = os.urandom(len(ktri["encrypted_key"].native))

    der = edit(encrypt("-aes-128-gcm", pki.cert("alice")), garble)
    outcome = open_with(der, [load_identity(pki, "alice")])
    assert outcome.status == Decryption.FAILED
    assert outcome.error == "GCM tag mismatch: content was altered or the key is wrong"


def test_rsa_oaep_wrong_key_is_failed(pki: TestPki) -> None:
    der = encrypt("-aes128", *recip(pki, "bob", "rsa_padding_mode:oaep", "rsa_oaep_md:sha256"))
    other = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    outcome = open_with(der, [_impostor(pki, "bob", other)])
    assert outcome.status == Decryption.FAILED
    assert outcome.key_transport == "rsa-oaep-sha256"
    assert "RSA-OAEP" in (outcome.error or "")


@pytest.mark.parametrize("options", [["-aes128"], ["-des3"]], ids=["aes-wrap", "3des-wrap"])
def test_ecdh_wrong_key_behind_matching_certificate_is_failed(
    pki: TestPki, options: list[str]
) -> None:
    der = encrypt(*options, pki.cert("carol"))
    outcome = open_with(der, [_impostor(pki, "carol", ec.generate_private_key(ec.SECP256R1()))])
    assert outcome.status == Decryption.FAILED
    assert "unwrap failed" in (outcome.error or "")
    assert outcome.key_transport == "ecdh-p256-sha1"


def test_rsa_recipient_with_an_ec_key_is_failed(pki: TestPki) -> None:
    der = encrypt("-aes128", pki.cert("alice"))
    outcome = open_with(der, [_impostor(pki, "alice", load_identity(pki, "carol").key)])
    assert outcome.status == Decryption.FAILED
    assert "not RSA" in (outcome.error or "")


@pytest.mark.parametrize("where", ["ciphertext", "tag"])
def test_gcm_flipped_byte_is_failed(pki: TestPki, where: str) -> None:
    def flip(info: cms.ContentInfo) -> None:
        content = info["content"]
        if where == "tag":
            tag = bytearray(content["mac"].native)
            tag[0] ^= 0x01
            content["mac"] = bytes(tag)
        else:
            eci = content["auth_encrypted_content_info"]
            data = bytearray(eci["encrypted_content"].native)
            data[len(data) // 2] ^= 0x01
            eci["encrypted_content"] = bytes(data)

    der = edit(encrypt("-aes-256-gcm", pki.cert("carol")), flip)
    outcome = open_with(der, [load_identity(pki, "carol")])
    assert outcome.status == Decryption.FAILED
    assert outcome.plaintext is None
    assert outcome.integrity_protected is False
    assert outcome.error == "GCM tag mismatch: content was altered or the key is wrong"


def _rsa_cek(pki: TestPki, der: bytes) -> bytes:
    """The content-encryption key of a PKCS#1 v1.5 message to alice, recovered in the test."""
    key = load_identity(pki, "alice").key
    assert isinstance(key, rsa.RSAPrivateKey)
    encrypted_key = first_recipient(cms.ContentInfo.load(der))["encrypted_key"].native
    return key.decrypt(encrypted_key, rsa_padding.PKCS1v15())


def test_cbc_bad_padding_is_failed(pki: TestPki) -> None:
    der = encrypt("-aes128", pki.cert("alice"))
    cek = _rsa_cek(pki, der)
    info = cms.ContentInfo.load(der)
    iv = info["content"]["encrypted_content_info"]["content_encryption_algorithm"]["parameters"]
    # A last block ending in 0x00 is never valid PKCS#7 padding.
    encryptor = Cipher(AES(cek), modes.CBC(iv.native)).encryptor()
    bad = encryptor.update(b"A" * 31 + b"\x00") + encryptor.finalize()

    def replace(info: cms.ContentInfo) -> None:
        info["content"]["encrypted_content_info"]["encrypted_content"] = bad

    outcome = open_with(edit(der, replace), [load_identity(pki, "alice")])
    assert outcome.status == Decryption.FAILED
    assert outcome.error == "CBC padding is invalid: wrong key or altered content"


def test_ciphertext_that_is_not_whole_blocks_is_malformed(pki: TestPki) -> None:
    def cut(info: cms.ContentInfo) -> None:
        eci = info["content"]["encrypted_content_info"]
        eci["encrypted_content"] = eci["encrypted_content"].native[:-3]

    outcome = open_with(
        edit(encrypt("-aes128", pki.cert("alice")), cut), [load_identity(pki, "alice")]
    )
    assert outcome.status == Decryption.MALFORMED
    assert "not whole blocks" in (outcome.error or "")


def test_gcm_tag_of_the_wrong_length_is_malformed(pki: TestPki) -> None:
    def shorten(info: cms.ContentInfo) -> None:
        info["content"]["mac"] = info["content"]["mac"].native[:8]

    der = edit(encrypt("-aes-128-gcm", pki.cert("alice")), shorten)
    outcome = open_with(der, [load_identity(pki, "alice")])
    assert outcome.status == Decryption.MALFORMED
    assert "GCM tag" in (outcome.error or "")


def test_originator_key_off_the_curve_is_malformed(pki: TestPki) -> None:
    def move_point(info: cms.ContentInfo) -> None:
        originator = first_recipient(info)["originator"].chosen
        point = bytearray(originator["public_key"].native)
        point[-1] ^= 0x01  # y no longer matches x
        originator["public_key"] = bytes(point)

    der = edit(encrypt("-aes128", pki.cert("carol")), move_point)
    outcome = open_with(der, [load_identity(pki, "carol")])
    assert outcome.status == Decryption.MALFORMED
    assert "not a point" in (outcome.error or "")


def test_truncated_der_is_refused_by_the_parser(pki: TestPki) -> None:
    der = encrypt("-aes128", pki.cert("alice"))
    with pytest.raises(MalformedInput):
        parse_content_info(der[: len(der) // 2])


# --- algorithms we do not implement -------------------------------------------------------------


def test_unknown_content_cipher_is_unsupported_naming_the_oid(pki: TestPki) -> None:
    def rename(info: cms.ContentInfo) -> None:
        alg = info["content"]["encrypted_content_info"]["content_encryption_algorithm"]
        alg["algorithm"] = UNKNOWN_OID

    der = edit(encrypt("-aes128", pki.cert("alice")), rename)
    outcome = open_with(der, [load_identity(pki, "alice")])
    assert outcome.status == Decryption.UNSUPPORTED
    assert UNKNOWN_OID in (outcome.error or "")


def test_unknown_content_cipher_in_a_message_for_others_is_still_no_key(pki: TestPki) -> None:
    def rename(info: cms.ContentInfo) -> None:
        alg = info["content"]["encrypted_content_info"]["content_encryption_algorithm"]
        alg["algorithm"] = UNKNOWN_OID

    der = edit(encrypt("-aes128", pki.cert("alice")), rename)
    assert open_with(der, [load_identity(pki, "bob")]).status == Decryption.NO_KEY


def test_unknown_key_transport_is_unsupported_naming_the_oid(pki: TestPki) -> None:
    def rename(info: cms.ContentInfo) -> None:
        first_recipient(info)["key_encryption_algorithm"] = {"algorithm": UNKNOWN_OID}

    der = edit(encrypt("-aes128", pki.cert("alice")), rename)
    outcome = open_with(der, [load_identity(pki, "alice")])
    assert outcome.status == Decryption.UNSUPPORTED
    assert UNKNOWN_OID in (outcome.error or "")


def test_unknown_key_agreement_scheme_is_unsupported_naming_the_oid(pki: TestPki) -> None:
    def rename(info: cms.ContentInfo) -> None:
        alg = first_recipient(info)["key_encryption_algorithm"]
        alg["algorithm"] = UNKNOWN_OID

    der = edit(encrypt("-aes128", pki.cert("carol")), rename)
    outcome = open_with(der, [load_identity(pki, "carol")])
    assert outcome.status == Decryption.UNSUPPORTED
    assert UNKNOWN_OID in (outcome.error or "")


def test_unknown_key_wrap_is_unsupported_naming_the_oid(pki: TestPki) -> None:
    def rename(info: cms.ContentInfo) -> None:
        alg = first_recipient(info)["key_encryption_algorithm"]
        wrap = AnyAlgorithmIdentifier({"algorithm": UNKNOWN_OID})
        alg["parameters"] = core.Any.load(wrap.dump())

    der = edit(encrypt("-aes128", pki.cert("carol")), rename)
    outcome = open_with(der, [load_identity(pki, "carol")])
    assert outcome.status == Decryption.UNSUPPORTED
    assert UNKNOWN_OID in (outcome.error or "")
    assert outcome.key_transport == "ecdh-p256-sha1"


def test_key_agreement_without_key_wrap_parameters_is_malformed(pki: TestPki) -> None:
    def strip(info: cms.ContentInfo) -> None:
        alg = first_recipient(info)["key_encryption_algorithm"]
        scheme = alg["algorithm"].dotted
        first_recipient(info)["key_encryption_algorithm"] = {"algorithm": scheme}

    der = edit(encrypt("-aes128", pki.cert("carol")), strip)
    outcome = open_with(der, [load_identity(pki, "carol")])
    assert outcome.status == Decryption.MALFORMED


# --- bounded work -------------------------------------------------------------------------------


def test_a_key_is_tried_at_most_the_limit_number_of_times(pki: TestPki) -> None:
    der = encrypt("-aes-128-gcm", pki.cert("alice"))

    def repeat(info: cms.ContentInfo) -> None:
        infos = info["content"]["recipient_infos"]
        info["content"]["recipient_infos"] = [infos[0]] * (MAX_ATTEMPTS_PER_IDENTITY + 40)

    impostor = _impostor(pki, "alice", load_identity(pki, "bob").key)
    outcome = open_with(edit(der, repeat), [impostor])
    assert outcome.status == Decryption.FAILED
    assert f"gave up after {MAX_ATTEMPTS_PER_IDENTITY} tries" in (outcome.error or "")


# --- structures OpenSSL does not write, checked against OpenSSL's reader ------------------------


def _openssl_decrypt(pki: TestPki, user: str, der: bytes) -> bytes:
    return openssl_cms(
        [
            "-decrypt",
            "-binary",
            "-inform",
            "DER",
            "-recip",
            pki.cert(user),
            "-inkey",
            pki.key(user),
        ],
        der,
    )


def _issuer_and_serial(pki: TestPki, user: str) -> cms.IssuerAndSerialNumber:
    cert = asn1_x509.Certificate.load(
        load_cert(pki.cert(user)).public_bytes(serialization.Encoding.DER)
    )
    return cms.IssuerAndSerialNumber({"issuer": cert.issuer, "serial_number": cert.serial_number})


def _auth_enveloped_with_attributes(
    pki: TestPki,
    attrs: cms.CMSAttributes | None,
    tag_length: int = 16,
    write_icvlen: bool = True,
    aad_tag: int = 0x31,
    ccm: bool = False,
) -> bytes:
    """DER of an AuthEnvelopedData to bob (RSA-OAEP-SHA256, AES-128-GCM, or AES-128-CCM with a
    13-byte nonce) whose authAttrs are ``attrs``; the AAD is their DER as a SET OF (RFC 5083
    section 2), or under ``aad_tag``. Without ``write_icvlen`` the GCMParameters (or
    CCMParameters, the same form) leave aes-ICVlen out, which means 12."""
    cek, nonce = os.urandom(16), os.urandom(13 if ccm else 12)
    aad = bytes([aad_tag]) + attrs.dump()[1:] if attrs is not None else b""
    if ccm:  # the tag is as long as asked; padded to the 16 bytes cut off below
        sealed = AESCCM(cek, tag_length=tag_length).encrypt(nonce, BODY, aad)
        sealed += b"\0" * (16 - tag_length)
    else:
        sealed = AESGCM(cek).encrypt(nonce, BODY, aad)
    bob_key = load_cert(pki.cert("bob")).public_key()
    assert isinstance(bob_key, rsa.RSAPublicKey)
    oaep = rsa_padding.OAEP(rsa_padding.MGF1(hashes.SHA256()), hashes.SHA256(), None)
    ktri = cms.KeyTransRecipientInfo(
        {
            "version": "v0",
            "rid": cms.RecipientIdentifier(
                name="issuer_and_serial_number", value=_issuer_and_serial(pki, "bob")
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
            "encrypted_key": bob_key.encrypt(cek, oaep),
        }
    )
    aed = cms.AuthEnvelopedData(
        {
            "version": "v0",
            "recipient_infos": [cms.RecipientInfo(name="ktri", value=ktri)],
            "auth_encrypted_content_info": {
                "content_type": "data",
                "content_encryption_algorithm": {
                    "algorithm": "aes128_gcm",
                    "parameters": core.Any.load(
                        GcmParameters(
                            {"aes_nonce": nonce, "aes_icvlen": tag_length}
                            if write_icvlen
                            else {"aes_nonce": nonce}
                        ).dump()
                    ),
                },
                "encrypted_content": sealed[:-16],  # AESGCM appends a 16-byte tag
            },
            "auth_attrs": attrs,
            # A shorter GCM tag is the full tag truncated (NIST SP 800-38D); CCM's is made short.
            "mac": sealed[-16:][:tag_length],
        }
    )
    if attrs is None:
        del aed["auth_attrs"]
    info = cms.ContentInfo({"content_type": "authenticated_enveloped_data", "content": aed})
    if ccm:  # asn1crypto's CcmParams cannot leave the length out: id-aes128-GCM becomes -CCM
        gcm_oid = bytes.fromhex("0609608648016503040106")
        return info.dump().replace(gcm_oid, gcm_oid[:-1] + b"\x07", 1)
    return info.dump()


def _attrs(value: bytes) -> cms.CMSAttributes:
    return cms.CMSAttributes(
        [
            {"type": "content_type", "values": ["data"]},
            {"type": "message_digest", "values": [value]},  # any attribute will do as AAD
        ]
    )


def test_authenticated_attributes_are_the_gcm_aad(pki: TestPki) -> None:
    # RFC 5083 section 2: the AAD is the DER of authAttrs under the universal SET OF tag (0x31),
    # not the IMPLICIT [1] the message carries. The message is built from primitives that way.
    der = _auth_enveloped_with_attributes(pki, _attrs(b"\x01" * 32))
    outcome = open_with(der, [load_identity(pki, "bob")])
    assert outcome.status == Decryption.OK, outcome.error
    assert outcome.plaintext == BODY
    assert outcome.integrity_protected is True
    # The same attributes authenticated under the [1] tag, as a sender that misread the RFC
    # would: the reader must not accept both encodings.
    misread = _auth_enveloped_with_attributes(pki, _attrs(b"\x01" * 32), aad_tag=0xA1)
    assert open_with(misread, [load_identity(pki, "bob")]).status == Decryption.FAILED


def test_openssl_reads_our_authenticated_attributes_the_same_way(pki: TestPki) -> None:
    der = _auth_enveloped_with_attributes(pki, _attrs(b"\x01" * 32))
    try:
        plaintext = _openssl_decrypt(pki, "bob", der)
    except AssertionError as exc:
        # OpenSSL's template gave authAttrs the tag [2] (openssl#26101), so it cannot parse an
        # AuthEnvelopedData that carries them at all; fixed by openssl PR #31695 (June 2026),
        # not yet in Debian 12's 3.0.19. A fixed OpenSSL must agree with us.
        if "Field=mac, Type=CMS_AuthEnvelopedData" in str(exc):
            pytest.xfail("this OpenSSL cannot parse authAttrs (openssl#26101)")
        raise
    assert plaintext == BODY


def test_gcm_shorter_tag_is_accepted_and_checked(pki: TestPki) -> None:
    der = _auth_enveloped_with_attributes(pki, None, tag_length=14)
    assert _openssl_decrypt(pki, "bob", der) == BODY
    outcome = open_with(der, [load_identity(pki, "bob")])
    assert outcome.status == Decryption.OK, outcome.error
    assert outcome.plaintext == BODY

    def flip_tag(info: cms.ContentInfo) -> None:
        tag = bytearray(info["content"]["mac"].native)
        tag[-1] ^= 0x80
        info["content"]["mac"] = bytes(tag)

    assert open_with(edit(der, flip_tag), [load_identity(pki, "bob")]).status == Decryption.FAILED


def test_gcm_parameters_without_icvlen_mean_a_twelve_byte_tag(pki: TestPki) -> None:
    # RFC 5084's DEFAULT 12, which DER must leave out. OpenSSL 3.0's reader insists on the field
    # (it writes 16 itself), so there is no cross-check here.
    der = _auth_enveloped_with_attributes(pki, None, tag_length=12, write_icvlen=False)
    params = cms.ContentInfo.load(der)["content"]["auth_encrypted_content_info"][
        "content_encryption_algorithm"
    ]["parameters"]
    assert len(params.dump()) == 2 + 2 + 12  # SEQUENCE { OCTET STRING nonce } only
    outcome = open_with(der, [load_identity(pki, "bob")])
    assert outcome.status == Decryption.OK, outcome.error
    assert outcome.plaintext == BODY


def test_gcm_parameters_without_icvlen_beside_a_longer_tag_read_the_tag_as_it_is(
    pki: TestPki,
) -> None:
    # A writer that forgot the length (TaaviE/smime-rs's CCM messages leave it out beside a
    # 16-byte tag): the whole tag is checked, so nothing is weaker than with the length written.
    der = _auth_enveloped_with_attributes(pki, None, tag_length=16, write_icvlen=False)
    outcome = open_with(der, [load_identity(pki, "bob")])
    assert (outcome.status, outcome.plaintext) == (Decryption.OK, BODY)

    def flip_tag(info: cms.ContentInfo) -> None:
        tag = bytearray(info["content"]["mac"].native)
        tag[-1] ^= 0x01
        info["content"]["mac"] = bytes(tag)

    assert open_with(edit(der, flip_tag), [load_identity(pki, "bob")]).status == Decryption.FAILED


# AES-CCM (RFC 5084 section 3.1) is assembled from cryptography's AESCCM: OpenSSL 3.0, gpgsm and
# NSS write none, and OpenSSL's CMS reader refuses it ("unsupported cipher").


@pytest.mark.parametrize(("tag_length", "write_icvlen"), [(16, True), (12, False), (14, True)])
def test_aes_ccm_content_decrypts_with_its_tag_checked(
    pki: TestPki, tag_length: int, write_icvlen: bool
) -> None:
    der = _auth_enveloped_with_attributes(
        pki, _attrs(b"\x01" * 32), tag_length=tag_length, write_icvlen=write_icvlen, ccm=True
    )
    result = open_with(der, [load_identity(pki, "bob")])
    assert (result.status, result.plaintext) == (Decryption.OK, BODY), result.error
    assert (result.content_cipher, result.integrity_protected) == ("aes-128-ccm", True)
    # The mac is the last field: its last byte is the DER's (asn1crypto cannot re-encode
    # CCMParameters without the length, so the bytes are changed directly).
    altered = open_with(der[:-1] + bytes([der[-1] ^ 0x01]), [load_identity(pki, "bob")])
    assert altered.status == Decryption.FAILED
    assert "CCM tag mismatch" in (altered.error or "")


def test_an_aes_ccm_tag_shorter_than_twelve_bytes_is_refused(pki: TestPki) -> None:
    # RFC 5084 allows 4 to 10 bytes too; a short tag eases forgery, as with GCM.
    der = _auth_enveloped_with_attributes(pki, None, tag_length=8, ccm=True)
    outcome = open_with(der, [load_identity(pki, "bob")])
    assert outcome.status == Decryption.MALFORMED
    assert "CCM tag length 8" in (outcome.error or "")


def test_aes_ccm_content_longer_than_its_nonce_can_count_is_one_clear_line(pki: TestPki) -> None:
    # A 13-byte nonce leaves two bytes to count the length: 70,000 bytes cannot be CCM content.
    der = _auth_enveloped_with_attributes(pki, None, ccm=True)

    def lengthen(info: cms.ContentInfo) -> None:
        eci = info["content"]["auth_encrypted_content_info"]
        eci["encrypted_content"] = os.urandom(70_000)

    outcome = open_with(edit(der, lengthen), [load_identity(pki, "bob")])
    assert outcome.status == Decryption.MALFORMED
    assert outcome.error == "70000 bytes of content are more than a 13-byte CCM nonce can count"


def test_altered_authenticated_attribute_is_failed(pki: TestPki) -> None:
    der = _auth_enveloped_with_attributes(pki, _attrs(b"\x01" * 32))

    def alter(info: cms.ContentInfo) -> None:
        info["content"]["auth_attrs"] = _attrs(b"\x02" * 32)

    outcome = open_with(edit(der, alter), [load_identity(pki, "bob")])
    assert outcome.status == Decryption.FAILED
    assert "GCM tag mismatch" in (outcome.error or "")


def _ecdh_message_with_ukm(pki: TestPki, ukm: bytes) -> bytes:
    """An EnvelopedData to carol: ECDH P-256 with SHA-256 KDF, user keying material ``ukm``,
    AES-128 key wrap and AES-128-CBC content, assembled from primitives."""
    carol = load_cert(pki.cert("carol")).public_key()
    assert isinstance(carol, ec.EllipticCurvePublicKey)
    ephemeral = ec.generate_private_key(ec.SECP256R1())
    wrap_alg = AnyAlgorithmIdentifier({"algorithm": "2.16.840.1.101.3.4.1.5"})  # aes128-wrap
    kek = x963_kdf(
        "sha256",
        ephemeral.exchange(ec.ECDH(), carol),
        16,
        ecc_cms_shared_info(wrap_alg, ukm),
    )
    cek, iv = os.urandom(16), os.urandom(16)
    padder = padding.PKCS7(128).padder()
    padded = padder.update(BODY) + padder.finalize()
    encryptor = Cipher(AES(cek), modes.CBC(iv)).encryptor()
    ciphertext = encryptor.update(padded) + encryptor.finalize()
    point = ephemeral.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    kari = cms.KeyAgreeRecipientInfo(
        {
            "version": "v3",
            "originator": cms.OriginatorIdentifierOrKey(
                name="originator_key",
                value=keys.PublicKeyInfo(
                    {
                        "algorithm": {"algorithm": "ec", "parameters": ("named", "secp256r1")},
                        "public_key": point,
                    }
                ),
            ),
            "ukm": ukm,
            "key_encryption_algorithm": {
                "algorithm": "1.3.132.1.11.1",  # dhSinglePass-stdDH-sha256kdf-scheme
                "parameters": core.Any.load(wrap_alg.dump()),
            },
            "recipient_encrypted_keys": [
                {
                    "rid": cms.KeyAgreementRecipientIdentifier(
                        name="issuer_and_serial_number", value=_issuer_and_serial(pki, "carol")
                    ),
                    "encrypted_key": aes_key_wrap(kek, cek),
                }
            ],
        }
    )
    envelope = cms.EnvelopedData(
        {
            "version": "v2",
            "recipient_infos": [cms.RecipientInfo(name="kari", value=kari)],
            "encrypted_content_info": {
                "content_type": "data",
                "content_encryption_algorithm": {"algorithm": "aes128_cbc", "parameters": iv},
                "encrypted_content": ciphertext,
            },
        }
    )
    return cms.ContentInfo({"content_type": "enveloped_data", "content": envelope}).dump()


def test_ecdh_user_keying_material_enters_the_kdf(pki: TestPki) -> None:
    der = _ecdh_message_with_ukm(pki, os.urandom(24))
    assert _openssl_decrypt(pki, "carol", der) == BODY  # our construction is the standard one
    outcome = open_with(der, [load_identity(pki, "carol")])
    assert outcome.status == Decryption.OK, outcome.error
    assert outcome.plaintext == BODY
    assert outcome.key_transport == "ecdh-p256-sha256"


def test_ecdh_originator_key_on_another_named_curve_is_failed(pki: TestPki) -> None:
    def other_curve(info: cms.ContentInfo) -> None:
        originator = first_recipient(info)["originator"].chosen
        originator["algorithm"] = {"algorithm": "ec", "parameters": ("named", "secp384r1")}

    der = edit(_ecdh_message_with_ukm(pki, b"ukm"), other_curve)
    outcome = open_with(der, [load_identity(pki, "carol")])
    assert outcome.status == Decryption.FAILED
    assert "curve" in (outcome.error or "")


def test_gcm_in_plain_enveloped_data_is_unsupported(pki: TestPki) -> None:
    def as_gcm(info: cms.ContentInfo) -> None:
        alg = info["content"]["encrypted_content_info"]["content_encryption_algorithm"]
        alg["algorithm"] = "2.16.840.1.101.3.4.1.6"

    der = edit(encrypt("-aes128", pki.cert("alice")), as_gcm)
    outcome = open_with(der, [load_identity(pki, "alice")])
    assert outcome.status == Decryption.UNSUPPORTED
    assert "aes-128-gcm in EnvelopedData" in (outcome.error or "")


def test_decrypt_refuses_signed_data_as_a_programming_error(pki: TestPki) -> None:
    signed = openssl_cms(
        [
            "-sign",
            "-binary",
            "-nodetach",
            "-outform",
            "DER",
            "-signer",
            pki.cert("alice"),
            "-inkey",
            pki.key("alice"),
        ],
        BODY,
    )
    with pytest.raises(ValueError):
        decrypt(parse_content_info(signed), [load_identity(pki, "alice")])


# --- hostile input never escapes as an exception ----------------------------------------------


@pytest.fixture(scope="module")
def fuzz_seeds(pki: TestPki) -> list[bytes]:
    """One message per code path: RSA v1.5 CBC, OAEP with keyid and GCM, ECDH, BER with 3DES."""
    return [
        encrypt("-aes128", pki.cert("alice")),
        encrypt("-aes-128-gcm", "-keyid", *recip(pki, "bob", "rsa_padding_mode:oaep")),
        encrypt("-aes-256-gcm", pki.cert("carol"), pki.cert("alice")),
        encrypt("-stream", "-des3", pki.cert("carol")),
    ]


@pytest.fixture(scope="module")
def fuzz_identities(pki: TestPki) -> list[Identity]:
    return [load_identity(pki, u) for u in ("alice", "bob", "carol")]


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(data=st.data())
def test_mangled_messages_give_a_status_never_an_exception(
    fuzz_seeds: list[bytes], fuzz_identities: list[Identity], data: st.DataObject
) -> None:
    message = bytearray(data.draw(st.sampled_from(fuzz_seeds)))
    for _ in range(data.draw(st.integers(min_value=1, max_value=4))):
        position = data.draw(st.integers(min_value=0, max_value=len(message) - 1))
        message[position] = data.draw(st.integers(min_value=0, max_value=255))
    try:
        info = parse_content_info(bytes(message))
    except (MalformedInput, UnsupportedInput):
        return  # refused by the parser, the caller's concern
    if info["content_type"].native not in ("enveloped_data", "authenticated_enveloped_data"):
        return  # a flipped content type: the caller would not hand this to decrypt
    outcome = decrypt(info, fuzz_identities)
    assert isinstance(outcome.status, Decryption)
    assert (outcome.status == Decryption.OK) == (outcome.plaintext is not None)
    assert (outcome.status == Decryption.OK) == (outcome.error is None)

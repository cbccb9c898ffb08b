"""A value under universal tag 8 (EXTERNAL / INSTANCE OF) where the schema leaves the type open
gives a status, never an exception. asn1crypto parses such a value but raises AttributeError when
it is read; ``bench/fuzz_open.py`` run 7 found it in a recipient's issuer name (``open_message``
raised, so ``open`` exited 3), and the same holds for the issuer named by a signer's
SMIMEEncryptionKeyPreference. The earlier finding of this kind (a capability's parameters) is
``test_hostile_input.py``'s."""

from __future__ import annotations

import base64
import datetime as dt

import pytest
from cryptography import x509

from smime_companion.core.open import open_message
from smime_companion.core.seal import SealOptions, seal
from smime_companion.core.verdicts import Decryption, SignatureStatus
from smime_companion.keyfiles import load_pkcs12
from smime_companion.testing.pki import PKCS12_PASSWORD, TestPki
from tests.chaos.hostile import pkcs7_mime
from tests.conftest import load_identity
from tests.tools import mime_message, openssl_cms

pytestmark = pytest.mark.timeout(60)

# 2.5.4.127: an attribute type asn1crypto does not know, so its value's type is left open.
_UNKNOWN_TYPE = bytes.fromhex("0603 55 04 7f".replace(" ", ""))


def _mangled_intermediate_name(pki: TestPki) -> tuple[bytes, bytes]:
    """(the test intermediate's name, the same with its first attribute an unknown type whose
    value is under tag 8)."""
    name = x509.load_pem_x509_certificate(pki.intermediate.read_bytes()).subject.public_bytes()
    at = name.index(b"\x06\x03\x55\x04")
    value_tag = at + 5
    return name, name[:at] + _UNKNOWN_TYPE + b"\x08" + name[value_tag + 1 :]


def test_a_recipient_issuer_with_a_tag_8_value_is_no_key_not_an_exception(
    pki: TestPki, anchors: tuple[x509.Certificate, ...], now: dt.datetime
) -> None:
    name, mangled = _mangled_intermediate_name(pki)
    der = openssl_cms(
        ["-encrypt", "-binary", "-outform", "DER", "-aes-256-gcm", "-recip", pki.cert("bob")],
        mime_message(),
    )
    raw = pkcs7_mime("enveloped-data", der.replace(name, mangled, 1), "Tag 8 recipient")
    result = open_message(raw, identities=[load_identity(pki, "bob")], anchors=anchors, at=now)
    assert result.decryption == Decryption.NO_KEY


def test_a_key_preference_naming_a_tag_8_issuer_is_a_verdict_not_an_exception(
    pki: TestPki, anchors: tuple[x509.Certificate, ...], now: dt.datetime
) -> None:
    alice = load_pkcs12(pki.p12("alice"), PKCS12_PASSWORD.encode())
    sealed = seal(mime_message(), signer=alice, recipients=[], at=now,
                  options=SealOptions(encrypt=False, opaque=True)).main  # fmt: skip
    der = base64.b64decode(sealed.message.split(b"\r\n\r\n", 1)[1])
    name, mangled = _mangled_intermediate_name(pki)
    # The issuer inside the SMIMEEncryptionKeyPreference signed attribute (RFC 8551 2.5.3).
    at = der.index(name, der.index(bytes.fromhex("060b2a864886f70d010910020b")))
    raw = pkcs7_mime("signed-data", der[:at] + mangled + der[at + len(name) :], "Tag 8 pref")
    result = open_message(raw, anchors=anchors, at=now)
    assert result.signature == SignatureStatus.INVALID  # the signed attributes were changed

"""NSS's own interoperability vectors (`tests/vectors/nss-interop/`, MPL-2.0; origin in
tests/interop_cases.md): envelopes OpenSSL made for NSS's test user Fran, which NSS's
`smime.sh` checks NSS can open. They cover RSA-OAEP with every hash and MGF1 hash and with a
label, and ECDH on P-384 with each X9.63 KDF hash, which our own OpenSSL-made tests do not all
reach. Each must open with Fran's key to NSS's test text."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from smime_companion import keyfiles
from smime_companion.core.open import open_message
from smime_companion.core.verdicts import Decryption

VECTORS = Path(__file__).parent / "vectors" / "nss-interop"
TEXT = b"This is a test message to Fran."

# file: (content cipher, key transport)
CASES = {
    "fran-ec_ossl-aes128-sha1.env": ("aes-128-cbc", "ecdh-p384-sha1"),
    "fran-ec_ossl-aes128-sha224.env": ("aes-128-cbc", "ecdh-p384-sha224"),
    "fran-ec_ossl-aes128-sha256.env": ("aes-128-cbc", "ecdh-p384-sha256"),
    "fran-ec_ossl-aes192-sha384.env": ("aes-192-cbc", "ecdh-p384-sha384"),
    "fran-ec_ossl-aes256-sha512.env": ("aes-256-cbc", "ecdh-p384-sha512"),
    "fran-oaep_ossl.env": ("3des-cbc", "rsa-oaep-sha1"),
    "fran-oaep-label_ossl.env": ("aes-256-cbc", "rsa-oaep-sha1"),
    "fran-oaep-sha256hash_ossl.env": ("aes-128-cbc", "rsa-oaep-sha256"),
    "fran-oaep-sha256hash-label_ossl.env": ("aes-256-cbc", "rsa-oaep-sha256"),
    "fran-oaep-sha256hash-sha256mgf_ossl.env": ("aes-256-cbc", "rsa-oaep-sha256"),
    "fran-oaep_ossl-sha256hash-sha256mgf-label.env": ("aes-256-cbc", "rsa-oaep-sha256"),
    "fran-oaep-sha384hash_ossl.env": ("aes-192-cbc", "rsa-oaep-sha384"),
    "fran-oaep-sha512hash_ossl.env": ("aes-256-cbc", "rsa-oaep-sha512"),
    "fran-oaep-sha256mgf_ossl.env": ("aes-128-cbc", "rsa-oaep-sha1-mgf1-sha256"),
    "fran-oaep-sha256mgf-label_ossl.env": ("aes-256-cbc", "rsa-oaep-sha1-mgf1-sha256"),
    "fran-oaep-sha384mgf_ossl.env": ("aes-192-cbc", "rsa-oaep-sha1-mgf1-sha384"),
    "fran-oaep-sha512mgf_ossl.env": ("aes-256-cbc", "rsa-oaep-sha1-mgf1-sha512"),
}


def test_every_vector_is_in_the_table() -> None:
    assert sorted(p.name for p in VECTORS.glob("*.env")) == sorted(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_each_envelope_opens_with_frans_key(name: str) -> None:
    p12 = VECTORS / ("Fran-ec.p12" if name.startswith("fran-ec") else "Fran.p12")
    fran = keyfiles.load_pkcs12(p12, b"nss")  # the password NSS's tests use
    result = open_message(
        (VECTORS / name).read_bytes(), identities=[fran], at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    )
    assert (result.decryption, result.error) == (Decryption.OK, None)
    assert (result.content_cipher, result.layers[0].key_transport) == CASES[name]
    assert TEXT in result.content

"""KMail's S/MIME test messages (`tests/vectors/kmail/`, CC0-1.0; origin in
tests/interop_cases.md): mail KMail 4 wrote through gpgsm between 2010 and 2016, opaque and
detached, encrypted with 3DES and AES, with the key of KDE's test identity, and a message Apple
Mail signed that KDE's tests alter on purpose. Judged in January 2013, inside the test
certificate's validity, with it as the anchor (an RSA-1024 key: ``allow_weak``, as for an
archive)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509

from smime_companion import keyfiles
from smime_companion.core.model import Identity
from smime_companion.core.open import open_message
from smime_companion.core.text import extract_text
from smime_companion.core.verdicts import Decryption
from smime_companion.core.verdicts import SignatureStatus as S

VECTORS = Path(__file__).parent / "vectors" / "kmail"
AT = dt.datetime(2013, 1, 10, 12, tzinfo=dt.UTC)
CERT = x509.load_pem_x509_certificate((VECTORS / "kde-unittest-cert.pem").read_bytes())

# file: (decryption, signature, a sentence of the text shown)
FOX = "The quick brown fox jumped over the lazy dog."
CASES = {
    "smime-encrypted.mbox": (Decryption.OK, S.NONE, FOX),
    "smime-encrypted-octet-stream.mbox": (Decryption.OK, S.NONE, FOX),
    "smime-signed-encrypted.mbox": (Decryption.OK, S.VALID, "encrypted message text"),
    "smime-opaque-enc+sign.mbox": (Decryption.OK, S.VALID, "Encrypted and signed mail."),
    "smime-opaque-sign.mbox": (Decryption.NONE, S.VALID, "A simple signed only test."),
    "smime-opaque-signed-encrypted-attachment.mbox": (
        Decryption.OK, S.VALID, "This is an Opaque S/MIME encrypted and signed message"),
    # KDE's test edits the body Apple Mail signed: invalid, as KMail says.
    "smime-signed-apple.mbox": (Decryption.NONE, S.INVALID, ""),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(CASES))
def test_each_kmail_message_opens_as_kmail_judges_it(name: str) -> None:
    key = keyfiles.load_private_key(VECTORS / "kde-unittest-key.pem")
    identity = Identity(key=key, certificate=CERT)  # type: ignore[arg-type]
    result = open_message(
        (VECTORS / name).read_bytes(),
        identities=[identity],
        anchors=[CERT],
        at=AT,
        allow_weak=True,
    )
    decryption, signature, text = CASES[name]
    assert (result.decryption, result.signature, result.error) == (decryption, signature, None)
    if signature == S.VALID:
        assert result.signer == "test@example.com"
    assert text in extract_text(result.content).body

"""Protected headers only from a layer a signature covers (issue 14): an attacker who wraps
someone's genuinely signed message in an envelope of their own (anyone can encrypt to you) must
not supply the "protected" Subject shown beside that signature's ``valid``. Protected headers
that no signature covers are shown only for a message with no signature at all, where nothing
claims to vouch for them."""

from __future__ import annotations

import pytest

from smime_companion.core.open import open_message
from smime_companion.core.verdicts import Decryption, SignatureStatus
from tests.chaos import forged
from tests.conftest import load_identity
from tests.tools import openssl_cms


@pytest.fixture()
def opened(pki, anchors, now):
    def _open(raw: bytes):
        return open_message(raw, identities=[load_identity(pki, "bob")], anchors=anchors, at=now)

    return _open


@pytest.mark.parametrize("marker", ['hp="cipher"', 'protected-headers="v1"'])
def test_an_envelope_around_a_signed_message_cannot_supply_its_protected_subject(
    pki, opened, marker
) -> None:
    result = opened(forged.protected_subject_outside_the_signature(pki, marker))
    assert (result.decryption, result.signature) == (Decryption.OK, SignatureStatus.VALID)
    assert result.header_protection is None
    assert result.header_text("Subject") == "[...]"  # the outer one: nothing claims to vouch
    assert "Wire" not in str(result.to_json()["headers"])


def test_a_message_rfc822_inside_an_envelope_cannot_supply_it_either(pki, opened) -> None:
    result = opened(forged.rfc822_subject_outside_the_signature(pki))
    assert result.signature == SignatureStatus.VALID
    assert result.header_protection is None
    assert result.header_text("Subject") == "[...]"


def test_protected_headers_inside_the_signature_are_shown(pki, opened) -> None:
    result = opened(forged.protected_subject_inside_the_signature(pki))
    assert result.signature == SignatureStatus.VALID
    assert result.header_protection == "hp"
    assert result.header_text("Subject") == "Lunch on Friday"


def test_protected_headers_of_a_message_without_any_signature_are_shown(pki, opened) -> None:
    # Encrypted only: nothing is vouched for, the inner headers are as good as the outer.
    payload = (
        b"From: alice@example.org\r\nTo: bob@example.org\r\nSubject: Lunch on Friday\r\n"
        b'Content-Type: text/plain; charset=utf-8; hp="cipher"\r\n\r\nSee you.\r\n'
    )
    sealed = openssl_cms(["-encrypt", "-aes-256-gcm", "-recip", pki.cert("bob")], payload)
    result = opened(b"From: alice@example.org\r\nSubject: [...]\r\n" + sealed)
    assert result.signature == SignatureStatus.NONE
    assert result.header_protection == "hp"
    assert result.header_text("Subject") == "Lunch on Friday"

"""Bcc privacy: RecipientInfos reveal who can decrypt, so every Bcc recipient gets a copy of
their own, and no copy (nor the main message) names a Bcc recipient."""

from __future__ import annotations

import pytest

from smime_companion.core.seal import SealOptions, SealResult
from smime_companion.errors import SealError
from smime_companion.testing.pki import TestPki
from tests.test_seal_support import (
    leaf_payloads,
    recipient,
    recipient_addresses,
    seal_draft,
    text_draft,
)
from tests.tools import openssl_cms

EVERYONE = ("alice", "bob", "carol", "dave", "frank", "olga")
BCC = ("dave@example.org", "frank@example.org", "olga@example.org")


@pytest.fixture(scope="module")
def sealed(pki: TestPki) -> SealResult:
    draft = text_draft(to=("bob@example.org",), cc=("carol@example.org",), bcc=BCC)
    rcpts = [recipient(pki, u) for u in ("bob", "carol", "dave", "frank", "olga")]
    return seal_draft(pki, draft, recipients=rcpts)


def test_the_main_message_is_encrypted_to_sender_to_and_cc_only(
    sealed: SealResult, pki: TestPki
) -> None:
    found = recipient_addresses(sealed.main.message, pki, EVERYONE)
    assert found == {"alice@example.org", "bob@example.org", "carol@example.org"}
    assert set(sealed.main.envelope_recipients) == {"bob@example.org", "carol@example.org"}


def test_each_bcc_copy_names_only_its_bcc_recipient_and_the_sender(
    sealed: SealResult, pki: TestPki
) -> None:
    assert set(sealed.bcc_copies) == set(BCC)
    for address, copy in sealed.bcc_copies.items():
        found = recipient_addresses(copy.message, pki, EVERYONE)
        assert found == {address, "alice@example.org"}
        assert not (found - {address}) & set(BCC)
        assert copy.envelope_recipients == (address,)


def test_no_copy_carries_a_bcc_header_outside_or_inside(sealed: SealResult, pki: TestPki) -> None:
    copies = [sealed.main.message, *(c.message for c in sealed.bcc_copies.values())]
    for message in copies:
        assert b"\nBcc:" not in message and not message.startswith(b"Bcc:")
    inner = openssl_cms(
        ["-decrypt", "-recip", pki.cert("bob"), "-inkey", pki.key("bob")], sealed.main.message
    )
    assert b"Bcc:" not in inner and b"dave@" not in inner and b"frank@" not in inner


@pytest.mark.parametrize("user", ["dave", "frank", "olga"])
def test_each_bcc_recipient_decrypts_their_copy(
    sealed: SealResult, pki: TestPki, user: str
) -> None:
    copy = sealed.bcc_copies[pki.email(user)].message
    inner = openssl_cms(["-decrypt", "-recip", pki.cert(user), "-inkey", pki.key(user)], copy)
    signed = openssl_cms(["-verify", "-purpose", "smimesign", "-CAfile", pki.root], inner)
    assert leaf_payloads(signed) == leaf_payloads(text_draft())


def test_a_bcc_recipient_without_certificate_is_refused_like_any_other(pki: TestPki) -> None:
    draft = text_draft(bcc=("zoe@example.org",))
    with pytest.raises(SealError, match=r"no certificate for recipient\(s\): zoe@example.org$"):
        seal_draft(pki, draft, recipients=[recipient(pki, "bob")])


def test_sign_only_makes_no_copies_and_sends_the_one_message_to_bcc_too(pki: TestPki) -> None:
    draft = text_draft(bcc=("dave@example.org",))
    result = seal_draft(pki, draft, options=SealOptions(encrypt=False))
    assert result.bcc_copies == {}
    assert result.main.envelope_recipients == ("bob@example.org", "dave@example.org")
    assert b"Bcc:" not in result.main.message


def test_a_bcc_to_oneself_needs_no_copy_the_main_message_reaches_the_sender(pki: TestPki) -> None:
    draft = text_draft(bcc=("alice@example.org",))
    result = seal_draft(pki, draft, recipients=[recipient(pki, "bob")])
    assert result.bcc_copies == {}
    assert result.main.envelope_recipients == ("bob@example.org", "alice@example.org")

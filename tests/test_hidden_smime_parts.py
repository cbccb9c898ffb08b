"""S/MIME parts hidden in the content are named (issue 14): an envelope inside an attached
message (message/rfc822), an ``application/octet-stream`` ``smime.p7m`` attachment, or an
envelope inside content that was itself decrypted. None of them is opened or joined to what is
shown (EFAIL's shape); each gives ``partially-encrypted``."""

from __future__ import annotations

import pytest

from smime_companion.core.open import open_message
from smime_companion.core.verdicts import Decryption
from tests.chaos import forged
from tests.conftest import load_identity


@pytest.mark.parametrize(
    "build",
    [forged.encrypted_message_attached, forged.p7m_octet_stream_attached],
    ids=["message-rfc822", "p7m-octet-stream"],
)
def test_an_envelope_attached_to_plain_mail_is_named_and_left_sealed(
    pki, anchors, now, build
) -> None:
    raw = build(pki)
    result = open_message(raw, identities=[load_identity(pki, "bob")], anchors=anchors, at=now)
    assert result.decryption == Decryption.NONE
    assert result.warnings == ("partially-encrypted",)
    assert result.content == raw
    assert b"the secret" not in result.content


def test_an_envelope_inside_decrypted_content_is_named_and_left_sealed(pki, anchors, now) -> None:
    raw = forged.envelope_inside_decrypted_content(pki)
    result = open_message(raw, identities=[load_identity(pki, "bob")], anchors=anchors, at=now)
    assert result.decryption == Decryption.OK
    assert "partially-encrypted" in result.warnings
    assert b"the secret" not in result.content

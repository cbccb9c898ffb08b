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


def test_an_envelope_in_a_multipart_with_a_wrong_boundary_is_named_too(pki, anchors, now) -> None:
    # The reader splits such a multipart by the boundary its body uses (core.mime.parts_as_read);
    # the S/MIME parts the warnings look for are found in the same parts, or one shown as an
    # attachment would go unnamed.
    raw = forged.p7m_octet_stream_attached(pki)
    header, _, body = raw.partition(b"\r\n\r\n")
    boundary = header.split(b"boundary=", 1)[1].split(b"\r\n")[0].split(b";")[0].strip(b'"')
    wrong = header.replace(boundary, boundary + b"-not-used") + b"\r\n\r\n" + body
    result = open_message(wrong, identities=[load_identity(pki, "bob")], anchors=anchors, at=now)
    assert result.warnings == ("partially-encrypted",)

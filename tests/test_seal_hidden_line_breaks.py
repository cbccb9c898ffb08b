"""A draft header with a bare CR or a NUL is refused, never sealed.

smtplib turns every bare CR into CRLF before DATA, so ``Subject: x<CR>Bcc: y`` sealed as one
Subject (what the outbox checked) would reach the recipient as two fields. The draft is refused
with one line; ``format_header`` refuses a value with a line break of its own as a second guard.
"""

from __future__ import annotations

import pytest

from smime_companion.core.mime_build import format_header
from smime_companion.core.seal import SealOptions
from smime_companion.errors import SealError
from smime_companion.testing.pki import TestPki
from tests.test_seal_support import alternative_draft, recipient, seal_draft, text_draft


def _with(draft: bytes, field: bytes) -> bytes:
    return field + b"\r\n" + draft


@pytest.mark.parametrize(
    "field",
    [
        b"Subject: Lunch\rBcc: eve@example.org",
        b"Subject: Lunch\r",
        b"X-Note: a\rContent-Type: multipart/mixed; boundary=x",
        b"Reply-To: alice@example.org\r\x00To: eve@example.org",
        b"Subject: nul\x00inside",
        b"Subject: folded\r\n \rTo: eve@example.org",
    ],
)
@pytest.mark.parametrize("make", [text_draft, alternative_draft])
@pytest.mark.parametrize("encrypt", [False, True])
def test_a_draft_header_with_a_bare_cr_or_nul_is_refused(
    pki: TestPki, field: bytes, make, encrypt: bool
) -> None:
    draft = _with(make(), field)
    recipients = [recipient(pki, "bob")] if encrypt else []
    with pytest.raises(SealError, match="bare CR|NUL") as raised:
        seal_draft(pki, draft, recipients=recipients, options=SealOptions(encrypt=encrypt))
    assert "\r" not in str(raised.value) and "\x00" not in str(raised.value)


def test_a_draft_written_with_cr_alone_as_its_line_end_still_seals(pki: TestPki) -> None:
    classic_mac = text_draft().replace(b"\r\n", b"\r")
    message = seal_draft(pki, classic_mac, options=SealOptions(encrypt=False)).main.message
    assert b"\r" not in message.replace(b"\r\n", b"")


@pytest.mark.parametrize("value", ["a\rb", "a\nb", "a\r\nTo: eve@example.org", "a\x00b"])
def test_format_header_refuses_a_value_with_a_line_break_of_its_own(value: str) -> None:
    for name in ("Subject", "To", "Message-ID"):
        with pytest.raises(SealError, match="line break or NUL"):
            format_header(name, value)

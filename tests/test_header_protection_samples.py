"""Header protection as the 2019 samples and Enigmail wrote it: ``protected-headers="v1"`` and
its Legacy Display part.

Three public samples of draft-ietf-lamps-header-protection (made by its authors' tooling with
the Sample LAMPS keys, as copied into notmuch's test corpus; origin and licence in
tests/interop_cases.md) open with the protected Subject shown, and the one with a Legacy
Display part shows the message's text without that part. The rules for leaving the part out are
then checked on messages made at test time by ``openssl cms``: only the first part of a
multipart/mixed marked ``v1``, itself marked ``v1``, and only when it holds nothing but header
lines, so a sender cannot make a first paragraph vanish by marking it.

The samples' certificates run from 2019 to 2052; they are judged at a time in that range
given here, never today's date.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from smime_companion import keyfiles
from smime_companion.core.model import Identity, OpenResult
from smime_companion.core.open import open_message
from smime_companion.core.text import extract_text, iter_parts
from smime_companion.core.verdicts import Decryption, SignatureStatus
from smime_companion.testing.pki import TestPki
from tests.conftest import load_identity
from tests.tools import openssl_cms

SAMPLES = Path(__file__).parent / "vectors" / "header-protection"
# The samples were made on 26 and 27 November 2019, a week after their certificates.
AT = dt.datetime(2019, 12, 1, tzinfo=dt.UTC)
SUBJECT = "BarCorp contract signed, let's go!"


def _open_sample(name: str) -> OpenResult:
    bob = Identity(
        key=serialization.load_pem_private_key((SAMPLES / "bob.key").read_bytes(), None),
        certificate=keyfiles.load_certificates(SAMPLES / "bob.crt")[0],
    )
    return open_message(
        (SAMPLES / name).read_bytes(),
        identities=[bob],
        anchors=keyfiles.load_certificates(SAMPLES / "sample-lamps-ca.crt"),
        at=AT,
    )


def _shown_text(result: OpenResult) -> str:
    return extract_text(result.content).body


def test_a_signed_then_encrypted_sample_shows_its_protected_subject() -> None:
    result = _open_sample("smime-sign+enc.eml")
    assert (result.decryption, result.signature) == (Decryption.OK, SignatureStatus.VALID)
    assert result.signer == "alice@smime.example"
    assert result.header_protection == "v1"
    assert result.header_text("Subject") == SUBJECT  # outside: "..."
    assert "weak-cipher" in result.warnings  # the samples were encrypted with 3DES
    assert _shown_text(result).startswith("Hi Bob!")


def test_the_legacy_display_part_of_an_encrypted_sample_is_left_out() -> None:
    result = _open_sample("smime-enc+legacy-disp.eml")
    assert (result.decryption, result.signature) == (Decryption.OK, SignatureStatus.NONE)
    assert result.header_text("Subject") == SUBJECT
    parts = list(iter_parts(result.content))
    assert [part.mime_type for part in parts] == ["text/plain"]
    assert _shown_text(result).startswith("Hi Bob!")
    assert "Subject:" not in _shown_text(result)


def test_a_multipart_signed_sample_stored_with_bare_line_feeds_is_valid() -> None:
    result = _open_sample("smime-multipart-signed.eml")
    assert result.signature == SignatureStatus.VALID
    assert result.header_protection == "v1"
    assert result.header_text("Subject") == "The FooCorp contract"
    changed = (SAMPLES / "smime-multipart-signed.eml").read_bytes().replace(b"cancel", b"cancal")
    result = open_message(
        changed, anchors=keyfiles.load_certificates(SAMPLES / "sample-lamps-ca.crt"), at=AT
    )
    assert result.signature == SignatureStatus.INVALID


# --- When a first part is a Legacy Display part ---------------------------------------------------

PROSE = "Hello Bob,\r\nthe figures are attached.\r\n"


def _encrypted_to_bob(
    pki: TestPki, now: dt.datetime, first_part: str, *, top_marked: bool = True
) -> OpenResult:
    """An encrypted message whose payload is a multipart/mixed (marked ``v1`` or not) of
    ``first_part`` (header section and body) and a text part with ``PROSE``."""
    marker = '; protected-headers="v1"' if top_marked else ""
    payload = (
        "From: alice@example.org\r\nTo: bob@example.org\r\nSubject: The real subject\r\n"
        f'Content-Type: multipart/mixed; boundary="b"{marker}\r\n\r\n'
        f"--b\r\n{first_part}\r\n"
        f"--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{PROSE}\r\n--b--\r\n"
    ).encode()
    sealed = openssl_cms(["-encrypt", "-aes-256-gcm", "-recip", pki.cert("bob")], payload)
    raw = b"From: alice@example.org\r\nTo: bob@example.org\r\nSubject: ...\r\n" + sealed
    return open_message(raw, identities=[load_identity(pki, "bob")], at=now)


@pytest.mark.parametrize(
    "first_part",
    [
        'Content-Type: text/rfc822-headers; protected-headers="v1"\r\n'
        "Content-Disposition: inline\r\n\r\nSubject: The real subject\r\n",
        'Content-Type: text/plain; charset=us-ascii; protected-headers="v1"\r\n\r\n'
        "Subject: The real subject\r\nTo: bob@example.org,\r\n carol@example.org\r\n\r\n",
    ],
    ids=["rfc822-headers", "plain-with-a-folded-field"],
)
def test_a_legacy_display_part_is_left_out(pki: TestPki, now: dt.datetime, first_part: str) -> None:
    result = _encrypted_to_bob(pki, now, first_part)
    assert result.header_text("Subject") == "The real subject"
    assert [part.mime_type for part in iter_parts(result.content)] == ["text/plain"]
    assert _shown_text(result) == PROSE


@pytest.mark.parametrize(
    ("first_part", "top_marked"),
    [
        # Marked, but prose after the header lines: the sender's words, not a legacy display.
        ('Content-Type: text/plain; protected-headers="v1"\r\n\r\n'
         "Subject: The real subject\r\nMeet me at noon.\r\n", True),
        # Header lines, but the part is not marked.
        ("Content-Type: text/plain\r\n\r\nSubject: The real subject\r\n", True),
        # A marked part in a payload that does not carry protected headers.
        ('Content-Type: text/plain; protected-headers="v1"\r\n\r\nSubject: x\r\n', False),
        # An attachment is never a legacy display.
        ('Content-Type: text/plain; protected-headers="v1"\r\n'
         'Content-Disposition: attachment; filename="headers.txt"\r\n\r\nSubject: x\r\n', True),
    ],
    ids=["prose-after-the-fields", "part-unmarked", "payload-unmarked", "attachment"],
)  # fmt: skip
def test_a_first_part_that_is_no_legacy_display_stays(
    pki: TestPki, now: dt.datetime, first_part: str, top_marked: bool
) -> None:
    result = _encrypted_to_bob(pki, now, first_part, top_marked=top_marked)
    parts = list(iter_parts(result.content))
    assert len(parts) == 2
    assert parts[0].data.startswith(b"Subject: ")

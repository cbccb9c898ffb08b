"""Real S/MIME messages from Bouncy Castle's test data (`tests/vectors/bouncycastle/`, MIT licence;
origin in tests/interop_cases.md): Outlook Express 6, Outlook 2003, Outlook 2011 for Mac,
Exchange, JavaMail and OpenSSL made them years ago, so each is judged at its own Date, with
the anchor its certificates lead to (the root or the signer's own certificate, taken from the
message's certificate set, or BC's test root)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from smime_companion.core.model import OpenResult
from smime_companion.core.open import open_message
from smime_companion.core.text import extract_text
from smime_companion.core.verdicts import Decryption, SignatureStatus
from tests.conftest import load_cert

S = SignatureStatus
VECTORS = Path(__file__).parent / "vectors" / "bouncycastle"


@dataclass(frozen=True)
class Case:
    file: str
    at: str  # ISO 8601: the message's Date, or a time its certificates were valid
    anchor: str | None
    signature: SignatureStatus
    signer: str | None = None
    allow_weak: bool = False
    text: str = ""  # words the text shown holds
    reason: str = ""  # words the signer's reason holds
    warnings: tuple[str, ...] = field(default=())


# fmt: off
CASES = [
    # Outlook Express 6: quoted-printable UTF-8 text, a self-signed certificate, SHA-1 (as
    # every message here but the PSS one: `allow_weak`, as for an archive).
    Case("quotable.message", "2006-08-15T14:12:31Z", "quotable-selfsigned.pem", S.VALID,
         "arminha@student.ethz.ch", allow_weak=True, text="testmail with a very long line"),
    # Outlook 2011 for Mac, SHA-256 under StartCom (its certificate signed with SHA-1); BC's own
    # parser calls it invalid (its testDoubleNlCanonical), OpenSSL and we follow RFC 2046: the
    # CRLF before a boundary is the boundary's.
    Case("3nnn_smime.eml", "2015-03-11T13:36:43Z", "startcom-root.pem", S.VALID,
         allow_weak=True),
    # Outlook 2003 (Outlook 11), Thawte Freemail (a root with serial number 0, an MD5 chain).
    Case("embeddedmulti.message", "2007-01-17T12:18:12Z", "thawte-personal-freemail-root.pem",
         S.VALID, allow_weak=True, warnings=("non-positive-serial", "weak-algorithm")),
    Case("embeddedmulti.message", "2007-01-17T12:18:12Z", "thawte-personal-freemail-root.pem",
         S.WEAK_ALGORITHM),
    # Exchange, SHA-1; its TC TrustCenter issuer is not in the message.
    Case("multi-alternative.eml", "2008-04-09T08:28:28Z", None, S.UNTRUSTED,
         reason="is not known"),
    Case("multi-alternative.eml", "2008-04-09T08:28:28Z", "multi-alternative-leaf.pem",
         S.VALID, "edifact@landenergie.de", allow_weak=True),
    # OpenSSL, RSASSA-PSS with a salt of 222 bytes instead of the hash's 32.
    Case("openssl-signed-sha256-non-default-salt-length.eml", "2017-05-04T09:17:35Z",
         "pss-leaf.pem", S.VALID, "test@example.com"),
    # A chain whose issuers lead round in a circle back to themselves.
    Case("circular.eml", "2007-04-03T06:56:26Z", None, S.UNTRUSTED,
         reason="would appear twice in the path"),
    Case("circular.eml", "2007-04-03T06:56:26Z", "circular-Inter1.pem", S.VALID,
         allow_weak=True),
    # A forward signed by someone other than the From (Djigzo's gateway test).
    Case("extra-nl.eml", "2009-09-06T09:00:00Z", None, S.UNTRUSTED),
    # JavaMail, SHA-1, RSA-1024, an MD5-signed certificate, under BC's validator test root.
    Case("validator.validMail.eml", "2006-09-04T09:36:14Z", "validator.root.pem", S.VALID,
         allow_weak=True, text="This is a Test Mail!"),
    Case("validator.validMail.eml", "2006-09-04T09:36:14Z", "validator.root.pem",
         S.WEAK_ALGORITHM),
    Case("validator.expired.eml", "2006-09-01T09:08:35Z", "validator.root.pem", S.EXPIRED,
         allow_weak=True, reason="at 08:39:20 UTC"),
    Case("validator.noEmail.eml", "2006-08-28T15:02:56Z", "validator.root.pem",
         S.EMAIL_MISMATCH, allow_weak=True, reason="names no email address"),
]
# fmt: on


def _open(case: Case, raw: bytes | None = None) -> OpenResult:
    anchors = [load_cert(VECTORS / case.anchor)] if case.anchor else []
    return open_message(
        raw if raw is not None else (VECTORS / case.file).read_bytes(),
        anchors=anchors,
        at=dt.datetime.fromisoformat(case.at),
        allow_weak=case.allow_weak,
    )


@pytest.mark.parametrize(
    "case",
    CASES,
    ids=[f"{c.file}-{c.signature}{'-archive' if c.allow_weak else ''}" for c in CASES],
)
def test_each_message_gets_the_verdict_its_signature_deserves(case: Case) -> None:
    result = _open(case)
    assert result.decryption == Decryption.NONE
    assert result.signature == case.signature, result.signers[0].reason if result.signers else None
    assert result.error is None
    signer = result.signers[0]
    if case.signer is not None:
        assert signer.address == case.signer
    assert case.reason in (signer.reason or "")
    for warning in case.warnings:
        assert warning in result.warnings
    if case.text:
        assert case.text in extract_text(result.content).body


def test_a_signature_without_its_content_says_so() -> None:
    # Bouncy Castle's brokenEnv.message: the whole message is a detached signature.
    result = open_message((VECTORS / "brokenEnv.message").read_bytes(),
                          at=dt.datetime(2007, 1, 17, tzinfo=dt.UTC))  # fmt: skip
    assert result.signature == S.MALFORMED and not result.ok
    assert result.error is not None and "signed content was not given" in result.error


def test_a_changed_letter_breaks_each_valid_signature() -> None:
    checked = 0
    for case in CASES:
        if case.signature != S.VALID or not case.text:
            continue
        raw = (VECTORS / case.file).read_bytes()
        index = raw.index(case.text.encode())  # its first letter's case swapped
        changed = raw[:index] + bytes([raw[index] ^ 0x20]) + raw[index + 1 :]
        assert _open(case, changed).signature == S.INVALID, case.file
        checked += 1
    assert checked == 2

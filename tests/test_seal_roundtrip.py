"""Round trip: for generated drafts, ``open_message(seal(draft))`` gives back the same body and
header fields, with a ``valid`` signature by the sender."""

from __future__ import annotations

import datetime as dt

from cryptography import x509
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smime_companion.core.open import open_message
from smime_companion.core.seal import SealOptions
from smime_companion.core.verdicts import Decryption, SignatureStatus
from smime_companion.testing.pki import TestPki
from tests.test_seal_support import (
    decode_words,
    identity,
    leaf_payloads,
    recipient,
    seal_draft,
)

# Words of mixed scripts; whitespace runs are generated separately so they can be compared.
_WORD = st.text(
    alphabet=st.sampled_from("abcXYZ019.,:;!?()<>@'\"-_=/äöüßéçøñЖж東京🙂"), min_size=1, max_size=12
)
_LINE = st.builds(
    lambda prefix, words, trailing: prefix + " ".join(words) + trailing,
    st.sampled_from(["", "From ", ".", "--", " "]),
    st.lists(_WORD, max_size=30),
    st.sampled_from(["", " ", "\t", "   "]),
)


@st.composite
def drafts(draw: st.DrawFn) -> tuple[bytes, str, str, tuple[str, ...], bytes | None]:
    sender = draw(st.sampled_from(["alice", "carol"]))
    to = draw(st.lists(st.sampled_from(["bob", "carol", "olga"]), min_size=1, max_size=3))
    to = list(dict.fromkeys(u for u in to if u != sender)) or ["bob"]
    subject = " ".join(draw(st.lists(_WORD, min_size=1, max_size=10)))
    lines = draw(st.lists(_LINE, min_size=1, max_size=20))
    newline = draw(st.sampled_from(["\r\n", "\n"]))
    body = newline.join(lines) + newline
    attachment = draw(st.one_of(st.none(), st.binary(max_size=300)))
    head = (
        f"From: {sender.capitalize()} <{sender}@example.org>{newline}"
        f"To: {', '.join(f'{u}@example.org' for u in to)}{newline}"
        f"Subject: {subject}{newline}"
        f"Date: Wed, 25 Nov 2026 09:00:00 +0000{newline}"
        f"Message-ID: <rt-{draw(st.integers(0, 10**9))}@example.org>{newline}"
        f"MIME-Version: 1.0{newline}"
    )
    if attachment is None:
        raw = (
            head
            + f"Content-Type: text/plain; charset=utf-8{newline}"
            + f"Content-Transfer-Encoding: 8bit{newline}{newline}{body}"
        ).encode()
    else:
        raw = (
            (
                head + f'Content-Type: multipart/mixed; boundary="b-1"{newline}{newline}'
                f"--b-1{newline}Content-Type: text/plain; charset=utf-8{newline}{newline}{body}"
                f"{newline}--b-1{newline}Content-Type: application/octet-stream{newline}"
                f"Content-Transfer-Encoding: binary{newline}{newline}"
            ).encode()
            + attachment
            + f"{newline}--b-1--{newline}".encode()
        )
    return raw, sender, subject, tuple(to), attachment


def _squash(text: str | None) -> str:
    # RFC 2047 encoding and header folding keep words, not the exact runs of whitespace.
    return " ".join(decode_words(text or "").split())


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(case=drafts(), encrypt=st.booleans(), opaque=st.booleans())
def test_open_of_seal_returns_the_body_headers_and_a_valid_signature(
    pki: TestPki,
    anchors: tuple[x509.Certificate, ...],
    now: dt.datetime,
    case: tuple[bytes, str, str, tuple[str, ...], bytes | None],
    encrypt: bool,
    opaque: bool,
) -> None:
    raw, sender, subject, to, _attachment = case
    options = SealOptions(encrypt=encrypt, opaque=opaque)
    rcpts = [recipient(pki, u) for u in to]
    sealed = seal_draft(pki, raw, signer=sender, recipients=rcpts, options=options, at=now)
    reader = to[0]
    result = open_message(
        sealed.main.message, identities=[identity(pki, reader)], anchors=anchors, at=now
    )
    assert result.signature == SignatureStatus.VALID, (result.error, result.layers)
    assert result.decryption == (Decryption.OK if encrypt else Decryption.NONE)
    assert result.signer == f"{sender}@example.org"
    assert leaf_payloads(result.content) == leaf_payloads(raw)
    assert _squash(result.header("Subject")) == " ".join(subject.split())
    assert _squash(result.header("From")) == f"{sender.capitalize()} <{sender}@example.org>"
    assert _squash(result.header("To")) == ", ".join(f"{u}@example.org" for u in to)
    assert result.header("Message-ID") == _header(raw, "Message-ID")


def _header(raw: bytes, name: str) -> str:
    for line in raw.replace(b"\r\n", b"\n").split(b"\n"):
        if line.lower().startswith(name.lower().encode() + b":"):
            return line.split(b":", 1)[1].strip().decode()
    raise AssertionError(f"no {name}")


def test_an_ed25519_signature_round_trips_through_our_own_opener(
    pki: TestPki, anchors: tuple[x509.Certificate, ...], now: dt.datetime
) -> None:
    # No peer on this machine reads Ed25519 CMS (see test_seal_openssl); core.open does.
    raw = (
        b"From: erin@example.org\r\nTo: bob@example.org\r\nSubject: ed\r\n"
        b"Content-Type: text/plain\r\n\r\nsigned with Ed25519\r\n"
    )
    sealed = seal_draft(pki, raw, signer="erin", options=SealOptions(encrypt=False), at=now)
    assert b"micalg=sha-512" in sealed.main.message
    result = open_message(sealed.main.message, anchors=anchors, at=now)
    assert result.signature == SignatureStatus.VALID, result.layers
    assert leaf_payloads(result.content) == leaf_payloads(raw)

"""Property: whatever bytes of a signed message are changed, ``open`` never crashes, and it
never says ``valid`` unless the content it returns is exactly the content that was signed."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smime_companion.core.mime import to_crlf
from smime_companion.core.open import open_message
from smime_companion.core.verdicts import SignatureStatus
from smime_companion.testing.pki import TestPki
from tests.tools import mime_message, openssl_cms

SIGNED_TEXT = mime_message(body="Pay 100 EUR to account 1234.\r\n")


@pytest.fixture(scope="module")
def samples(pki: TestPki) -> dict[str, bytes]:
    base = ["-signer", pki.cert("alice"), "-inkey", pki.key("alice"), "-certfile", pki.intermediate]
    return {
        "detached": openssl_cms(["-sign", *base], SIGNED_TEXT),
        "opaque": openssl_cms(["-sign", "-nodetach", *base], SIGNED_TEXT),
    }


@st.composite
def mutations(draw: st.DrawFn, size: int) -> list[tuple[str, int, int]]:
    """A few edits: (kind, position, byte)."""
    edits = st.tuples(
        st.sampled_from(["flip", "set", "insert", "delete"]),
        st.integers(0, size - 1),
        st.integers(0, 255),
    )
    return draw(st.lists(edits, min_size=1, max_size=4))


def _apply(data: bytes, edits: list[tuple[str, int, int]]) -> bytes:
    buf = bytearray(data)
    for kind, pos, value in edits:
        pos = min(pos, len(buf) - 1)
        if kind == "flip":
            buf[pos] ^= 1 << (value % 8)
        elif kind == "set":
            buf[pos] = value
        elif kind == "insert":
            buf.insert(pos, value)
        elif len(buf) > 1:
            del buf[pos]
    return bytes(buf)


@pytest.mark.parametrize("form", ["detached", "opaque"])
@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
    derandomize=True,
)
@given(data=st.data())
def test_a_mutated_signed_message_is_never_valid_for_other_content(
    form: str,
    data: st.DataObject,
    samples: dict[str, bytes],
    anchors: tuple[x509.Certificate, ...],
    now: dt.datetime,
) -> None:
    original = samples[form]
    mutated = _apply(original, data.draw(mutations(len(original))))
    result = open_message(mutated, anchors=anchors, at=now)
    if result.signature == SignatureStatus.VALID:
        # Only changes outside the signed bytes (outer headers, base64 line breaks, the
        # preamble) may leave a valid signature, and then the content is what was signed.
        assert to_crlf(result.content) == SIGNED_TEXT

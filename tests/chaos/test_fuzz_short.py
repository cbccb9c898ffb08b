"""The CI-sized run of ``bench/fuzz_open.py``'s rules, with hypothesis instead of atheris (which
is bench-only): mutations of the *decoded CMS* of messages signed by openssl, signed then
encrypted, and sealed by our own ``core.seal``, encoded again, so the damage reaches the DER
rather than stopping at the base64. ``tests/test_open_mutations.py`` mutates the message bytes.

Rules: ``open_message`` never raises and never says ``valid`` for content other than what was
signed; pytest-timeout guards against a hang (the bench measures each input against 1 s).
"""

from __future__ import annotations

import base64
import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smime_companion import keyfiles
from smime_companion.core.cert_vocabulary import Recipient
from smime_companion.core.mime import to_crlf
from smime_companion.core.model import Identity
from smime_companion.core.open import open_message
from smime_companion.core.seal import SealOptions, seal
from smime_companion.core.verdicts import SignatureStatus
from smime_companion.testing.pki import PKCS12_PASSWORD, TestPki
from tests.tools import mime_message, openssl_cms

pytestmark = pytest.mark.timeout(120)

SIGNED_TEXT = mime_message(body="Pay 100 EUR to account 1234.\r\n")


@pytest.fixture(scope="module")
def bob(pki: TestPki) -> Identity:
    return keyfiles.load_pkcs12(pki.p12("bob"), PKCS12_PASSWORD.encode())


@pytest.fixture(scope="module")
def seeds(pki: TestPki, bob: Identity, pki_now: dt.datetime) -> dict[str, bytes]:
    """Whole messages whose body is one base64 CMS object."""
    alice: list[str | Path] = [
        "-signer",
        pki.cert("alice"),
        "-inkey",
        pki.key("alice"),
        "-certfile",
        pki.intermediate,
    ]
    opaque = openssl_cms(["-sign", "-nodetach", *alice], SIGNED_TEXT)
    signed = openssl_cms(["-sign", *alice, "-crlfeol"], SIGNED_TEXT)
    sealed = seal(
        SIGNED_TEXT,
        signer=keyfiles.load_pkcs12(pki.p12("alice"), PKCS12_PASSWORD.encode()),
        recipients=[Recipient("bob@example.org", bob.certificate)],
        at=pki_now,
        options=SealOptions(opaque=True),
    )
    return {
        "opaque": opaque,
        "signed-then-encrypted": openssl_cms(
            ["-encrypt", "-aes128", "-recip", pki.cert("bob")], signed
        ),
        "our-seal": sealed.main.message,
    }


@pytest.fixture(scope="module")
def valid_contents(
    seeds: dict[str, bytes],
    bob: Identity,
    anchors: tuple[x509.Certificate, ...],
    pki_now: dt.datetime,
) -> set[bytes]:
    """What the untouched seeds open to with a valid signature: nothing else may be valid."""
    found = set()
    for raw in seeds.values():
        result = open_message(raw, identities=[bob], anchors=anchors, at=pki_now)
        assert result.signature == SignatureStatus.VALID, result.error
        found.add(to_crlf(result.content))
    return found


def _split(message: bytes) -> tuple[bytes, bytes]:
    for separator in (b"\r\n\r\n", b"\n\n"):
        head, found, body = message.partition(separator)
        if found:
            return head + separator, body
    raise AssertionError("no body")


def _mutate(der: bytes, edits: list[tuple[int, int, int]]) -> bytes:
    buf = bytearray(der)
    for kind, pos, value in edits:
        pos %= len(buf)
        if kind == 0:
            buf[pos] ^= 1 << (value % 8)
        elif kind == 1:
            buf[pos] = value
        elif kind == 2:
            buf.insert(pos, value)
        elif len(buf) > 1:
            del buf[pos]
    return bytes(buf)


@pytest.mark.parametrize("seed", ["opaque", "signed-then-encrypted", "our-seal"])
@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
    derandomize=True,
)
@given(
    edits=st.lists(
        st.tuples(st.integers(0, 3), st.integers(0, 1 << 20), st.integers(0, 255)),
        min_size=1,
        max_size=3,
    )
)
def test_a_mutated_cms_object_never_raises_and_is_never_valid_for_other_content(
    seed: str,
    edits: list[tuple[int, int, int]],
    seeds: dict[str, bytes],
    valid_contents: set[bytes],
    bob: Identity,
    anchors: tuple[x509.Certificate, ...],
    now: dt.datetime,
) -> None:
    head, body = _split(seeds[seed])
    der = _mutate(base64.b64decode(body), edits)
    raw = head + base64.encodebytes(der).replace(b"\n", b"\r\n")
    result = open_message(raw, identities=[bob], anchors=anchors, at=now)
    if result.signature == SignatureStatus.VALID:
        assert to_crlf(result.content) in valid_contents

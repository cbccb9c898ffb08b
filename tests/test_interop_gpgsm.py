"""Interop with GnuPG's gpgsm 2.2: what gpgsm signs and encrypts opens with the right verdict.

gpgsm makes the CMS; ``tests/peers.py`` frames it as MIME the way gpgsm-based clients (KMail,
Kleopatra) do. Forms gpgsm 2.2 cannot make are listed with the error measured on this machine and
marked strict xfail, so the day the tool can, the case has to become a real one.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest
from cryptography import x509

from smime_companion.core.model import Identity
from smime_companion.core.open import open_message
from smime_companion.core.verdicts import Decryption, SignatureStatus
from tests.peers import Expect, GpgsmHome, check_opened, interop_params
from tests.tools import mime_message

if TYPE_CHECKING:  # for annotations only: pytest would try to collect "TestPki"
    from smime_companion.testing.pki import TestPki

VALID = SignatureStatus.VALID
OK = Decryption.OK


@pytest.fixture(scope="module")
def gpgsm(tmp_path_factory: pytest.TempPathFactory, pki: TestPki) -> Iterator[GpgsmHome]:
    """One gpgsm home for the module (importing keys starts gpg-agent: about two seconds)."""
    with GpgsmHome(tmp_path_factory.mktemp("gpgsm"), pki, users=("alice", "bob")) as home:
        yield home


@dataclass(frozen=True)
class Case:
    """A message gpgsm makes from the draft, who opens it, and the verdict expected."""

    sender: str
    make: Callable[[GpgsmHome, bytes], bytes]
    expect: Expect
    opener: str = "bob"


def _valid(user: str, layer: str = "signed") -> Expect:
    return Expect(signature=VALID, signer=f"{user}@example.org", layers=(layer,))


def _cbc(cipher: str) -> Expect:
    return Expect(decryption=OK, cipher=cipher, layers=("enveloped",))


CASES = {
    "sign-detached-rsa2048": Case("alice", lambda g, m: g.sign(m, "alice"), _valid("alice")),
    "sign-detached-rsa3072": Case("bob", lambda g, m: g.sign(m, "bob"), _valid("bob")),
    "sign-opaque": Case(
        "alice", lambda g, m: g.sign(m, "alice", detached=False), _valid("alice", "signed-data")
    ),
    "sign-sha384": Case("alice", lambda g, m: g.sign(m, "alice", digest="sha384"), _valid("alice")),
    "sign-sha512": Case("alice", lambda g, m: g.sign(m, "alice", digest="sha512"), _valid("alice")),
    "sign-ecdsa-p256": Case("carol", lambda g, m: g.sign(m, "carol"), _valid("carol")),
    "sign-ecdsa-p384": Case("dave", lambda g, m: g.sign(m, "dave"), _valid("dave")),
    "sign-ed25519": Case("erin", lambda g, m: g.sign(m, "erin"), _valid("erin")),
    # gpgsm 2.2's default content cipher is AES-128-CBC.
    "encrypt-rsa-default-cipher": Case(
        "alice", lambda g, m: g.encrypt(m, ["bob"]), _cbc("aes-128-cbc")
    ),
    "encrypt-aes192": Case(
        "alice", lambda g, m: g.encrypt(m, ["bob"], cipher="AES192"), _cbc("aes-192-cbc")
    ),
    "encrypt-aes256": Case(
        "alice", lambda g, m: g.encrypt(m, ["bob"], cipher="AES256"), _cbc("aes-256-cbc")
    ),
    "encrypt-camellia256": Case(
        "alice", lambda g, m: g.encrypt(m, ["bob"], cipher="CAMELLIA256"), _cbc("camellia-256-cbc")
    ),
    "encrypt-seed": Case(
        "alice", lambda g, m: g.encrypt(m, ["bob"], cipher="SEED"), _cbc("seed-cbc")
    ),
    "encrypt-3des": Case(
        "alice",
        lambda g, m: g.encrypt(m, ["bob"], cipher="3DES"),
        Expect(decryption=OK, cipher="3des-cbc", layers=("enveloped",), warnings=("weak-cipher",)),
    ),
    "encrypt-two-recipients": Case(
        "alice", lambda g, m: g.encrypt(m, ["alice", "bob"]), _cbc("aes-128-cbc")
    ),
    "encrypt-ecdh-p256": Case(
        "alice", lambda g, m: g.encrypt(m, ["carol"]), _cbc("aes-128-cbc"), opener="carol"
    ),
    "sign-and-encrypt": Case(
        "alice",
        lambda g, m: g.sign_and_encrypt(m, "alice", ["bob", "alice"], cipher="AES256"),
        Expect(OK, VALID, "alice@example.org", ("enveloped", "signed"), "aes-256-cbc"),
    ),
}

# Measured with gpgsm 2.2.40 / libksba 1.6.3 (Debian 12).
TOOL_LIMITS = {
    "sign-ecdsa-p256": "gpgsm 2.2.40 crashes importing an EC key from PKCS#12 "
    "('signal Segmentation fault caught ... exiting'), so it cannot sign as an EC user",
    "sign-ecdsa-p384": "gpgsm 2.2.40 crashes importing an EC key from PKCS#12 "
    "('signal Segmentation fault caught ... exiting'), so it cannot sign as an EC user",
    "sign-ed25519": "gpgsm 2.2.40 cannot read an Ed25519 key from PKCS#12 "
    "('data error at \"shrouded_key_bag.decrypted-text\"')",
    "encrypt-ecdh-p256": "gpgsm 2.2 has no ECDH for CMS: it wants keyEncipherment on the recipient "
    "certificate ('can't encrypt to 'carol@example.org': Wrong key usage')",
}


@pytest.mark.parametrize("case", interop_params(CASES, TOOL_LIMITS))
def test_gpgsm_message_opens_with_expected_verdict(
    case: Case,
    request: pytest.FixtureRequest,
    gpgsm: GpgsmHome,
    pki: TestPki,
    identities: dict[str, Identity],
    anchors: Sequence[x509.Certificate],
    now: dt.datetime,
) -> None:
    marker = f"interop-gpgsm {request.node.callspec.id}"
    sender = pki.email(case.sender)
    draft = mime_message(body=f"Hello,\r\n{marker}\r\nBye.\r\n", sender=sender)
    message = case.make(gpgsm, draft)
    result = open_message(message, identities=[identities[case.opener]], anchors=anchors, at=now)
    check_opened(result, case.expect, marker, sender)


def test_gpgsm_accepts_its_own_signed_message_and_rejects_an_altered_one(
    gpgsm: GpgsmHome, anchors: Sequence[x509.Certificate], now: dt.datetime
) -> None:
    """The MIME framing in tests/peers.py keeps gpgsm's signature intact, and an altered body
    fails for gpgsm and for open_message alike (so the cases above can fail)."""
    message = gpgsm.sign(mime_message(body="Hello,\r\nframing check\r\n"), "alice")
    assert gpgsm.verify(message).valid
    altered = message.replace(b"framing check", b"framing CHECK", 1)
    assert not gpgsm.verify(altered).good
    assert open_message(altered, anchors=anchors, at=now).signature == SignatureStatus.INVALID

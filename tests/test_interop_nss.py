"""Interop with NSS 3.87 (Thunderbird's S/MIME library): what cmsutil signs and encrypts opens with
the right verdict.

cmsutil makes the CMS; ``tests/peers.py`` frames it as MIME the way Thunderbird does. Forms NSS
3.87 cannot make are listed with the error measured on this machine and marked strict xfail.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest
from cryptography import x509

from smime_companion.core.model import Identity
from smime_companion.core.open import open_message
from smime_companion.core.verdicts import Decryption, SignatureStatus
from tests.conftest import load_cert
from tests.peers import Expect, NssDb, check_opened, interop_params
from tests.tools import mime_message

if TYPE_CHECKING:  # for annotations only: pytest would try to collect "TestPki"
    from smime_companion.testing.pki import TestPki

VALID = SignatureStatus.VALID
OK = Decryption.OK


@pytest.fixture(scope="module")
def nss(tmp_path_factory: pytest.TempPathFactory, pki: TestPki) -> NssDb:
    """One NSS database for the module, holding the people who sign (a tenth of a second)."""
    return NssDb(tmp_path_factory.mktemp("nss"), pki, users=("alice", "bob", "carol", "dave"))


@dataclass(frozen=True)
class Case:
    """A message cmsutil makes from the draft, who opens it, and the verdict expected."""

    sender: str
    make: Callable[[NssDb, bytes], bytes]
    expect: Expect
    opener: str = "bob"


def _valid(user: str, layer: str = "signed") -> Expect:
    return Expect(signature=VALID, signer=f"{user}@example.org", layers=(layer,))


# NSS chooses the content cipher itself; for recipients it holds no capabilities for, NSS 3.87
# picks AES-128-CBC (measured).
NSS_DEFAULT_CIPHER = "aes-128-cbc"

CASES = {
    "sign-detached-rsa2048": Case("alice", lambda n, m: n.sign(m, "alice"), _valid("alice")),
    "sign-detached-rsa3072": Case("bob", lambda n, m: n.sign(m, "bob"), _valid("bob")),
    "sign-opaque": Case(
        "alice", lambda n, m: n.sign(m, "alice", detached=False), _valid("alice", "signed-data")
    ),
    "sign-ecdsa-p256": Case("carol", lambda n, m: n.sign(m, "carol"), _valid("carol")),
    "sign-ecdsa-p384-sha384": Case(
        "dave", lambda n, m: n.sign(m, "dave", digest="sha384"), _valid("dave")
    ),
    "sign-ecdsa-p256-opaque": Case(
        "carol", lambda n, m: n.sign(m, "carol", detached=False), _valid("carol", "signed-data")
    ),
    "sign-sha512": Case("alice", lambda n, m: n.sign(m, "alice", digest="sha512"), _valid("alice")),
    "sign-sha1-is-weak": Case(
        "alice",
        lambda n, m: n.sign(m, "alice", digest="sha1"),
        Expect(
            signature=SignatureStatus.WEAK_ALGORITHM,
            signer="alice@example.org",
            layers=("signed",),
        ),
    ),
    "sign-ed25519": Case("erin", lambda n, m: n.sign(m, "erin"), _valid("erin")),
    "encrypt-rsa": Case(
        "alice",
        lambda n, m: n.encrypt(m, ["bob"]),
        Expect(
            decryption=OK,
            cipher=NSS_DEFAULT_CIPHER,
            layers=("enveloped",),
            key_transport="rsa-pkcs1v15",
        ),
    ),
    "encrypt-two-recipients": Case(
        "alice",
        lambda n, m: n.encrypt(m, ["alice", "bob"]),
        Expect(decryption=OK, cipher=NSS_DEFAULT_CIPHER, layers=("enveloped",)),
    ),
    "encrypt-ecdh-p256": Case(
        "alice",
        lambda n, m: n.encrypt(m, ["carol"]),
        Expect(decryption=OK, cipher=NSS_DEFAULT_CIPHER, layers=("enveloped",)),
        opener="carol",
    ),
    "sign-and-encrypt-rsa": Case(
        "alice",
        lambda n, m: n.sign_and_encrypt(m, "alice", ["bob", "alice"]),
        Expect(OK, VALID, "alice@example.org", ("enveloped", "signed"), NSS_DEFAULT_CIPHER),
    ),
    "ecdsa-sign-and-rsa-encrypt": Case(
        "carol",
        lambda n, m: n.sign_and_encrypt(m, "carol", ["bob"]),
        Expect(OK, VALID, "carol@example.org", ("enveloped", "signed"), NSS_DEFAULT_CIPHER),
    ),
}

# Measured with NSS 3.87.1 (Debian 12).
TOOL_LIMITS = {
    "sign-ed25519": "NSS 3.87 cannot import an Ed25519 key (pk12util: "
    "SEC_ERROR_PKCS12_UNABLE_TO_IMPORT_KEY) nor store the certificate (SEC_ERROR_ADDING_CERT)",
    "encrypt-ecdh-p256": "NSS 3.87 cmsutil cannot make an ECDH RecipientInfo "
    "('cannot create CMS recipientInfo object', SEC_ERROR_INVALID_ALGORITHM)",
}


@pytest.mark.parametrize("case", interop_params(CASES, TOOL_LIMITS))
def test_nss_message_opens_with_expected_verdict(
    case: Case,
    request: pytest.FixtureRequest,
    nss: NssDb,
    pki: TestPki,
    identities: dict[str, Identity],
    anchors: Sequence[x509.Certificate],
    now: dt.datetime,
) -> None:
    marker = f"interop-nss {request.node.callspec.id}"
    sender = pki.email(case.sender)
    draft = mime_message(body=f"Hello,\r\n{marker}\r\nBye.\r\n", sender=sender)
    message = case.make(nss, draft)
    result = open_message(message, identities=[identities[case.opener]], anchors=anchors, at=now)
    check_opened(result, case.expect, marker, sender)


def test_nss_signed_attributes_are_reported(
    nss: NssDb, pki: TestPki, anchors: Sequence[x509.Certificate], now: dt.datetime
) -> None:
    """cmsutil -G -P (what Thunderbird sends) adds signing time, SMIMECapabilities with
    AES-256-CBC first, and an encryption-key preference naming the signer's own certificate."""
    message = nss.sign(mime_message(body="Hello,\r\nattributes\r\n"), "alice")
    result = open_message(message, anchors=anchors, at=now)
    assert result.signature == VALID
    (signer,) = result.signers
    assert signer.signing_time is not None
    assert abs(signer.signing_time - now) < dt.timedelta(hours=1)
    assert signer.capabilities[:2] == ("aes-256-cbc", "aes-128-cbc")
    assert signer.encryption_key_preference is not None
    alice = load_cert(pki.cert("alice"))
    assert alice.serial_number in signer.encryption_key_preference


def test_nss_accepts_its_own_signed_message_and_rejects_an_altered_one(
    nss: NssDb, anchors: Sequence[x509.Certificate], now: dt.datetime
) -> None:
    """The MIME framing in tests/peers.py keeps cmsutil's signature intact, and an altered body
    fails for cmsutil and for open_message alike (so the cases above can fail)."""
    message = nss.sign(mime_message(body="Hello,\r\nframing check\r\n"), "alice")
    assert nss.verify(message).valid
    altered = message.replace(b"framing check", b"framing CHECK", 1)
    verdict = nss.verify(altered)
    assert not verdict.good and verdict.statuses == ("DigestMismatch",)
    assert open_message(altered, anchors=anchors, at=now).signature == SignatureStatus.INVALID


def test_nss_decrypts_what_it_encrypted(nss: NssDb) -> None:
    """Sanity of the peer itself: cmsutil reads back its own enveloped message."""
    draft = mime_message(body="Hello,\r\nround trip\r\n")
    assert b"round trip" in nss.decode(nss.encrypt(draft, ["alice"]))

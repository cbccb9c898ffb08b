"""What ``seal`` writes, opened by OpenSSL (``openssl cms``), which we did not write.

Each sealed message is decrypted with every recipient's key and the signature verified with
``-purpose smimesign`` against the test root; the content OpenSSL returns must carry the draft's
payloads unchanged.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from smime_companion.core.seal import SealOptions
from smime_companion.testing.pki import TestPki
from tests.test_seal_support import (
    DRAFTS,
    attachment_draft,
    leaf_payloads,
    recipient,
    seal_draft,
    text_draft,
)
from tests.tools import openssl_cms


def _decrypt(pki: TestPki, message: bytes, user: str) -> bytes:
    return openssl_cms(["-decrypt", "-recip", pki.cert(user), "-inkey", pki.key(user)], message)


def _verify(pki: TestPki, signed: bytes) -> bytes:
    """OpenSSL's verified content; the test fails when the signature or chain is refused."""
    args: list[str | Path] = ["-verify", "-cades", "-purpose", "smimesign", "-CAfile", pki.root]
    return openssl_cms(args, signed)


def _assert_same_payloads(draft: bytes, opened: bytes) -> None:
    assert leaf_payloads(opened) == leaf_payloads(draft)


@pytest.mark.parametrize("shape", sorted(DRAFTS))
@pytest.mark.parametrize(
    ("sender", "rcpt"),
    [("alice", "bob"), ("carol", "dave"), ("gisela", "ines")],
    ids=["rsa", "ec", "brainpool"],
)
def test_sign_then_encrypt_opens_and_verifies_for_each_recipient_and_the_sender(
    pki: TestPki, shape: str, sender: str, rcpt: str
) -> None:
    draft = DRAFTS[shape](sender=pki.email(sender), to=(pki.email(rcpt),))
    result = seal_draft(pki, draft, signer=sender, recipients=[recipient(pki, rcpt)])
    for user in (rcpt, sender):
        signed = _decrypt(pki, result.main.message, user)
        _assert_same_payloads(draft, _verify(pki, signed))


_OPENSSL_NO_ED25519 = pytest.mark.xfail(
    strict=True,
    reason="OpenSSL 3.0 can neither sign nor verify Ed25519 CMS (RFC 8419): "
    "'eddsa_digest_signverify_init: invalid digest'; test_seal_roundtrip checks it with core.open",
)


@pytest.mark.parametrize(
    "signer",
    [
        *("alice", "bob", "carol", "dave", "frank", "gisela", "hedda", "ines"),
        pytest.param("erin", marks=_OPENSSL_NO_ED25519),
    ],
)
def test_sign_only_verifies_for_every_key_type(pki: TestPki, signer: str) -> None:
    draft = attachment_draft(sender=pki.email(signer))
    result = seal_draft(pki, draft, signer=signer, options=SealOptions(encrypt=False))
    assert b"multipart/signed" in result.main.message
    _assert_same_payloads(draft, _verify(pki, result.main.message))


def test_opaque_signed_data_verifies_and_carries_the_content(pki: TestPki) -> None:
    draft = attachment_draft()
    result = seal_draft(pki, draft, options=SealOptions(encrypt=False, opaque=True))
    assert b"smime-type=signed-data" in result.main.message
    _assert_same_payloads(draft, _verify(pki, result.main.message))


def test_opaque_signed_then_encrypted_opens(pki: TestPki) -> None:
    draft = text_draft()
    result = seal_draft(
        pki, draft, recipients=[recipient(pki, "bob")], options=SealOptions(opaque=True)
    )
    inner = _decrypt(pki, result.main.message, "bob")
    assert b"smime-type=signed-data" in inner
    _assert_same_payloads(draft, _verify(pki, inner))


def test_encrypt_only_decrypts_to_the_transport_safe_draft(pki: TestPki) -> None:
    draft = attachment_draft()
    result = seal_draft(
        pki, draft, signer=None, recipients=[recipient(pki, "bob"), recipient(pki, "alice")],
        options=SealOptions(sign=False),
    )  # fmt: skip
    assert result.signed is False and result.content_cipher == "aes-256-cbc"
    for user in ("bob", "alice"):
        _assert_same_payloads(draft, _decrypt(pki, result.main.message, user))


def test_gcm_when_every_recipient_advertised_it_opens_as_auth_enveloped_data(pki: TestPki) -> None:
    draft = text_draft(to=("bob@example.org", "carol@example.org"))
    caps = ("aes-256-gcm", "aes-256-cbc")
    result = seal_draft(
        pki, draft, recipients=[recipient(pki, "bob", caps), recipient(pki, "carol", caps)]
    )
    assert result.content_cipher == "aes-256-gcm"
    assert b"smime-type=authEnveloped-data" in result.main.message
    for user in ("bob", "carol", "alice"):
        _assert_same_payloads(draft, _verify(pki, _decrypt(pki, result.main.message, user)))


def test_cbc_128_when_a_recipient_advertised_only_aes_128(pki: TestPki) -> None:
    draft = text_draft()
    result = seal_draft(pki, draft, recipients=[recipient(pki, "bob", ("aes-128-cbc",))])
    assert result.content_cipher == "aes-128-cbc"
    _assert_same_payloads(draft, _verify(pki, _decrypt(pki, result.main.message, "bob")))


def test_oaep_when_the_recipient_advertised_it(pki: TestPki) -> None:
    draft = text_draft()
    result = seal_draft(
        pki, draft, recipients=[recipient(pki, "bob", ("aes-256-cbc", "rsaes-oaep"))]
    )
    transports = {d.address: d.key_transport for d in result.main.deliveries}
    assert transports["bob@example.org"] == "rsa-oaep-sha256"
    _assert_same_payloads(draft, _verify(pki, _decrypt(pki, result.main.message, "bob")))


def test_recipients_of_mixed_key_types_each_open_it(pki: TestPki) -> None:
    draft = text_draft(
        to=("bob@example.org", "carol@example.org"),
        cc=("frank@example.org", "gisela@example.org", "hedda@example.org"),
    )
    users = ("bob", "carol", "frank", "gisela", "hedda")
    result = seal_draft(pki, draft, recipients=[recipient(pki, u) for u in users])
    transports = {d.address: d.key_transport for d in result.main.deliveries}
    assert transports == {
        "alice@example.org": "rsa-pkcs1v15",
        "bob@example.org": "rsa-pkcs1v15",
        "carol@example.org": "ecdh-p256-sha256",
        "frank@example.org": "ecdh-p521-sha512",
        "gisela@example.org": "ecdh-bp256-sha256",  # Brainpool, as German public-sector CAs issue
        "hedda@example.org": "ecdh-bp384-sha384",
    }
    for user in (*users, "alice"):
        _assert_same_payloads(draft, _verify(pki, _decrypt(pki, result.main.message, user)))


@pytest.mark.parametrize(
    ("capabilities", "options", "cipher"),
    [
        (("aes-128-cbc",), SealOptions(), "aes-128-cbc"),  # carried by aes128-wrap
        (("3des-cbc",), SealOptions(allow_3des=True), "3des-cbc"),  # carried by aes256-wrap
        (("aes-256-gcm",), SealOptions(), "aes-256-gcm"),  # AuthEnvelopedData with a KARI
    ],
    ids=["aes128", "3des-when-allowed", "gcm"],
)
def test_an_ec_recipient_opens_every_content_cipher_we_choose(
    pki: TestPki, capabilities: tuple[str, ...], options: SealOptions, cipher: str
) -> None:
    draft = text_draft(to=("carol@example.org",))
    rcpts = [recipient(pki, "carol", capabilities)]
    result = seal_draft(pki, draft, recipients=rcpts, options=options)
    assert result.content_cipher == cipher
    _assert_same_payloads(draft, _verify(pki, _decrypt(pki, result.main.message, "carol")))

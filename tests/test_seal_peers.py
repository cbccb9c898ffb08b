"""What ``seal`` writes, opened by GnuPG's gpgsm 2.2 and NSS's cmsutil (``tests/peers.py``).

Each recipient decrypts in a home or database holding only their own key, so a pass means that
recipient's RecipientInfo works. Forms a peer cannot read are strict xfails naming the reason, so
a peer that learns them turns the test red and the note can go.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from smime_companion.core.seal import SealOptions
from smime_companion.testing.pki import PKCS12_PASSWORD, TestPki
from tests.peers import GpgsmHome, NssDb, PeerCannot, extract_cms
from tests.test_seal_support import (
    DRAFTS,
    leaf_payloads,
    recipient,
    seal_draft,
    text_draft,
)

GpgsmFor = Callable[[str], GpgsmHome]
NssFor = Callable[[str], NssDb]


@pytest.fixture(scope="module")
def gpgsm_for(pki: TestPki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GpgsmFor]:
    """A gpgsm home per user, holding that user's key only (made on first use)."""
    homes: dict[str, GpgsmHome] = {}

    def home(user: str) -> GpgsmHome:
        if user not in homes:
            # Short paths: gpg-agent's socket path must fit in a sockaddr_un.
            directory = Path(tmp_path_factory.mktemp(f"g{user}", numbered=True))
            homes[user] = GpgsmHome(directory, pki)
            homes[user].import_identity(user)
        return homes[user]

    yield home
    for h in homes.values():
        h.close()


@pytest.fixture(scope="module")
def nss_for(pki: TestPki, tmp_path_factory: pytest.TempPathFactory) -> NssFor:
    """An NSS database per user, holding that user's key only (made on first use)."""
    dbs: dict[str, NssDb] = {}

    def db(user: str) -> NssDb:
        if user not in dbs:
            dbs[user] = NssDb(Path(tmp_path_factory.mktemp(f"n{user}")), pki, users=[user])
        return dbs[user]

    return db


# --- gpgsm -----------------------------------------------------------------------------------


def gpgsm_decrypt(home: GpgsmHome, message: bytes) -> bytes:
    """The plaintext gpgsm decrypts from ``message``, judged as GPGME judges it.

    gpgsm 2.2 exits 2 whenever it logged an error, and with several recipients it logs one for
    each RecipientInfo that is not the user's ("failed to find the certificate", "No secret
    key") before it decrypts with the one that is. GPGME-based clients (KMail, Kleopatra) go by
    the DECRYPTION_OKAY status instead, and so does this helper (``GpgsmHome.decrypt`` demands
    exit 0, so it fails every multi-recipient message).
    """
    der, _ = extract_cms(message)
    directory = home.directory / "seal-decrypt"
    directory.mkdir(exist_ok=True)
    (directory / "in.der").write_bytes(der)
    out = directory / "out"
    out.unlink(missing_ok=True)
    argv = ["gpgsm", "--batch", "--status-fd", "1", "--pinentry-mode", "loopback"]
    argv += ["--passphrase-fd", "0", "--decrypt", "-o", str(out), str(directory / "in.der")]
    proc = subprocess.run(
        argv, input=f"{PKCS12_PASSWORD}\n".encode(), capture_output=True, env=home.env, timeout=60
    )
    if b"[GNUPG:] DECRYPTION_OKAY" not in proc.stdout or b"DECRYPTION_FAILED" in proc.stdout:
        raise AssertionError(f"gpgsm cannot decrypt: {proc.stderr.decode(errors='replace')}")
    return out.read_bytes()


@pytest.mark.parametrize("shape", sorted(DRAFTS))
def test_gpgsm_verifies_a_detached_rsa_signature(
    pki: TestPki, gpgsm_for: GpgsmFor, shape: str
) -> None:
    result = seal_draft(pki, DRAFTS[shape](), options=SealOptions(encrypt=False))
    verdict = gpgsm_for("bob").verify(result.main.message)
    assert verdict.valid, verdict.statuses


def test_gpgsm_verifies_an_ecdsa_signature(pki: TestPki, gpgsm_for: GpgsmFor) -> None:
    draft = text_draft(sender="carol@example.org")
    result = seal_draft(pki, draft, signer="carol", options=SealOptions(encrypt=False))
    verdict = gpgsm_for("bob").verify(result.main.message)
    assert verdict.valid, verdict.statuses


def test_gpgsm_verifies_opaque_signed_data_and_returns_the_content(
    pki: TestPki, gpgsm_for: GpgsmFor
) -> None:
    draft = DRAFTS["binary-attachment"]()
    result = seal_draft(pki, draft, options=SealOptions(encrypt=False, opaque=True))
    verdict = gpgsm_for("bob").verify(result.main.message)
    assert verdict.valid, verdict.statuses
    assert verdict.content is not None and leaf_payloads(verdict.content) == leaf_payloads(draft)


@pytest.mark.parametrize("shape", sorted(DRAFTS))
def test_gpgsm_decrypts_sign_then_encrypt_and_verifies_the_inner_signature(
    pki: TestPki, gpgsm_for: GpgsmFor, shape: str
) -> None:
    draft = DRAFTS[shape]()
    result = seal_draft(pki, draft, recipients=[recipient(pki, "bob")])
    for user in ("bob", "alice"):
        inner = gpgsm_decrypt(gpgsm_for(user), result.main.message)
        verdict = gpgsm_for(user).verify(inner)
        assert verdict.valid, (user, verdict.statuses)
        assert leaf_payloads(inner) == leaf_payloads(draft)


def test_gpgsm_decrypts_for_each_of_three_rsa_recipients(pki: TestPki, gpgsm_for: GpgsmFor) -> None:
    draft = text_draft(to=("bob@example.org",), cc=("olga@example.org",))
    result = seal_draft(pki, draft, recipients=[recipient(pki, "bob"), recipient(pki, "olga")])
    assert len(result.main.deliveries) == 3
    for user in ("bob", "olga", "alice"):
        assert leaf_payloads(gpgsm_decrypt(gpgsm_for(user), result.main.message)) == leaf_payloads(
            draft
        )


@pytest.mark.parametrize(
    ("capabilities", "options", "cipher"),
    [
        ((), SealOptions(sign=False), "aes-256-cbc"),
        (("aes-128-cbc",), SealOptions(), "aes-128-cbc"),
        (("3des-cbc",), SealOptions(allow_3des=True), "3des-cbc"),
    ],
    ids=["encrypt-only-aes256", "aes128", "3des-when-allowed"],
)
def test_gpgsm_decrypts_every_cbc_cipher_we_choose(
    pki: TestPki, gpgsm_for: GpgsmFor, capabilities: tuple[str, ...], options: SealOptions,
    cipher: str,
) -> None:  # fmt: skip
    draft = text_draft()
    signer = "alice" if options.sign else None
    rcpts = [recipient(pki, "bob", capabilities), recipient(pki, "alice", capabilities)]
    result = seal_draft(pki, draft, signer=signer, recipients=rcpts, options=options)
    assert result.content_cipher == cipher
    assert b"aes-256-cbc" not in result.main.message  # the name only lives in the CMS
    inner = gpgsm_decrypt(gpgsm_for("bob"), result.main.message)
    assert leaf_payloads(inner) == leaf_payloads(draft)


@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="gpgsm 2.2 has no AuthEnvelopedData: 'error getting IV: Buffer too short <KSBA>'; "
    "seal only picks GCM when every recipient advertised it",
)
def test_gpgsm_decrypts_aes_gcm(pki: TestPki, gpgsm_for: GpgsmFor) -> None:
    caps = ("aes-256-gcm",)
    result = seal_draft(pki, text_draft(), recipients=[recipient(pki, "bob", caps)])
    assert result.content_cipher == "aes-256-gcm"
    gpgsm_decrypt(gpgsm_for("bob"), result.main.message)


@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="gpgsm 2.2 has no RSAES-OAEP: 'recp 0 - error getting encrypted session key'; "
    "seal only uses OAEP for a recipient that advertised it",
)
def test_gpgsm_decrypts_rsa_oaep(pki: TestPki, gpgsm_for: GpgsmFor) -> None:
    caps = ("aes-256-cbc", "rsaes-oaep")
    result = seal_draft(pki, text_draft(), recipients=[recipient(pki, "bob", caps)])
    gpgsm_decrypt(gpgsm_for("bob"), result.main.message)


@pytest.mark.xfail(
    strict=True,
    raises=PeerCannot,
    reason="gpgsm 2.2.40 crashes importing an EC private key from PKCS#12 (tests/peers.py), "
    "so it cannot be an ECDH recipient here",
)
def test_gpgsm_decrypts_for_an_ec_recipient(pki: TestPki, gpgsm_for: GpgsmFor) -> None:
    draft = text_draft(to=("carol@example.org",))
    result = seal_draft(pki, draft, recipients=[recipient(pki, "carol")])
    gpgsm_decrypt(gpgsm_for("carol"), result.main.message)


# --- NSS cmsutil -----------------------------------------------------------------------------


@pytest.mark.parametrize("signer", ["alice", "carol", "dave"])
def test_nss_verifies_detached_signatures_of_rsa_and_ec_senders(
    pki: TestPki, nss_for: NssFor, signer: str
) -> None:
    draft = DRAFTS["html-alternative"](sender=pki.email(signer))
    result = seal_draft(pki, draft, signer=signer, options=SealOptions(encrypt=False))
    verdict = nss_for("bob").verify(result.main.message)
    assert verdict.valid, verdict.statuses


def test_nss_verifies_opaque_signed_data_and_returns_the_content(
    pki: TestPki, nss_for: NssFor
) -> None:
    draft = DRAFTS["binary-attachment"]()
    result = seal_draft(pki, draft, options=SealOptions(encrypt=False, opaque=True))
    verdict = nss_for("bob").verify(result.main.message)
    assert verdict.valid, verdict.statuses
    assert verdict.content is not None and leaf_payloads(verdict.content) == leaf_payloads(draft)


@pytest.mark.parametrize("shape", sorted(DRAFTS))
def test_nss_decodes_sign_then_encrypt_and_verifies_the_inner_signature(
    pki: TestPki, nss_for: NssFor, shape: str
) -> None:
    draft = DRAFTS[shape]()
    result = seal_draft(pki, draft, recipients=[recipient(pki, "bob")])
    for user in ("bob", "alice"):
        inner = nss_for(user).decode(result.main.message)
        verdict = nss_for(user).verify(inner)
        assert verdict.valid, (user, verdict.statuses)
        assert leaf_payloads(inner) == leaf_payloads(draft)


def test_nss_decodes_for_each_of_three_rsa_recipients(pki: TestPki, nss_for: NssFor) -> None:
    draft = text_draft(to=("bob@example.org",), cc=("olga@example.org",))
    result = seal_draft(pki, draft, recipients=[recipient(pki, "bob"), recipient(pki, "olga")])
    for user in ("bob", "olga", "alice"):
        assert leaf_payloads(nss_for(user).decode(result.main.message)) == leaf_payloads(draft)


def test_nss_decodes_encrypt_only(pki: TestPki, nss_for: NssFor) -> None:
    draft = DRAFTS["binary-attachment"]()
    rcpts = [recipient(pki, "bob"), recipient(pki, "alice")]
    result = seal_draft(pki, draft, signer=None, recipients=rcpts, options=SealOptions(sign=False))
    assert leaf_payloads(nss_for("bob").decode(result.main.message)) == leaf_payloads(draft)


@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="NSS 3.87 cmsutil has no AuthEnvelopedData: 'SEC_ERROR_UNRECOGNIZED_OID'",
)
def test_nss_decodes_aes_gcm(pki: TestPki, nss_for: NssFor) -> None:
    result = seal_draft(pki, text_draft(), recipients=[recipient(pki, "bob", ("aes-256-gcm",))])
    nss_for("bob").decode(result.main.message)


@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="NSS 3.87 cmsutil has no RSAES-OAEP: 'SEC_ERROR_UNSUPPORTED_KEYALG'",
)
def test_nss_decodes_rsa_oaep(pki: TestPki, nss_for: NssFor) -> None:
    caps = ("aes-256-cbc", "rsaes-oaep")
    result = seal_draft(pki, text_draft(), recipients=[recipient(pki, "bob", caps)])
    nss_for("bob").decode(result.main.message)


@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="NSS 3.87 cmsutil cannot parse any KeyAgreeRecipientInfo, OpenSSL's own included "
    "('SEC_ERROR_BAD_DER'), so a message with an EC recipient fails for every NSS reader",
)
def test_nss_decodes_a_message_that_also_has_an_ec_recipient(pki: TestPki, nss_for: NssFor) -> None:
    draft = text_draft(to=("bob@example.org", "carol@example.org"))
    result = seal_draft(pki, draft, recipients=[recipient(pki, "bob"), recipient(pki, "carol")])
    nss_for("bob").decode(result.main.message)

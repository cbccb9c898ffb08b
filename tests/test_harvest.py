"""Harvesting signer certificates from opened mail: messages made at test time by openssl, gpgsm
and NSS cmsutil go through ``open_message`` and the harvester, and the store must then hold the
right certificate, trust, capabilities, preference and source."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from smime_companion.core.cert_vocabulary import Trust
from smime_companion.core.certs import fingerprint_sha256
from smime_companion.core.model import OpenResult
from smime_companion.core.open import open_message
from smime_companion.core.selection import Selected
from smime_companion.core.verdicts import Decryption, SignatureStatus
from smime_companion.harvest import CertHarvester
from smime_companion.revocation_fetch import RevocationChecker
from smime_companion.store.certstore import CertStore
from smime_companion.sync.opening import OpeningPool as Opener
from tests.conftest import load_cert, load_identity
from tests.peers import GpgsmHome, NssDb, multipart_signed_entity, split_message
from tests.test_certstore import issue_certificate
from tests.tools import mime_message, openssl_cms, run

if TYPE_CHECKING:
    from smime_companion.testing.pki import TestPki

MESSAGE_ID = "<harvest-1@example.org>"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[CertStore]:
    with CertStore.open(tmp_path, "harvest test key") as opened:
        yield opened


def _message(sender: str, to: str = "bob@example.org") -> bytes:
    return mime_message(sender=sender, to=to).replace(
        b"Message-ID: <test@example.org>", f"Message-ID: {MESSAGE_ID}".encode()
    )


def _openssl_signed(pki: TestPki, user: str, sender: str | None = None) -> bytes:
    outer, entity = split_message(_message(sender or pki.email(user)))
    issuer = pki.rogue_root if user == "rogue" else pki.intermediate
    signed = run(
        ["openssl", "cms", "-sign", "-signer", pki.cert(user), "-inkey", pki.key(user),
         "-certfile", issuer, "-md", "sha256"],
        stdin=entity,
    )  # fmt: skip
    return b"\r\n".join(outer) + b"\r\n" + signed


def _open(pki: TestPki, raw: bytes, now: dt.datetime, reader: str = "bob") -> OpenResult:
    return open_message(
        raw, identities=[load_identity(pki, reader)], anchors=[load_cert(pki.root)], at=now
    )


def _harvest(store: CertStore, result: OpenResult, now: dt.datetime, tofu: tuple[str, ...] = ()):
    return CertHarvester(store, tofu).harvest_records(result, result.header("Message-ID"), now)


def test_an_openssl_signed_message_harvests_the_signer_as_anchor_with_its_capabilities(
    store: CertStore, pki: TestPki, now: dt.datetime
) -> None:
    result = _open(pki, _openssl_signed(pki, "alice"), now)
    assert result.signature == SignatureStatus.VALID
    (record,) = _harvest(store, result, now)
    assert record.address == "alice@example.org"
    assert record.certificate == load_cert(pki.cert("alice"))
    assert record.trust == Trust.ANCHOR
    assert record.source == MESSAGE_ID
    assert record.capabilities[:3] == ("aes-256-cbc", "aes-192-cbc", "aes-128-cbc")
    assert [c.subject for c in record.chain] == [
        load_cert(pki.intermediate).subject,
        load_cert(pki.root).subject,
    ]
    assert store.intermediates()  # kept to build chains of later messages that omit them
    selection = store.select("alice@example.org", now)
    assert isinstance(selection, Selected) and selection.capabilities == record.capabilities


def test_a_gpgsm_signed_message_harvests_the_signer(
    store: CertStore, pki: TestPki, now: dt.datetime, tmp_path: Path
) -> None:
    with GpgsmHome(tmp_path / "gpgsm", pki, users=("bob",)) as gpgsm:
        raw = gpgsm.sign(_message("bob@example.org", to="alice@example.org"), "bob")
    result = _open(pki, raw, now, reader="alice")
    (record,) = _harvest(store, result, now)
    assert (record.address, record.trust) == ("bob@example.org", Trust.ANCHOR)
    assert record.certificate == load_cert(pki.cert("bob"))


def test_an_nss_signed_message_harvests_the_signer_and_its_self_preference(
    store: CertStore, pki: TestPki, now: dt.datetime, tmp_path: Path
) -> None:
    nss = NssDb(tmp_path / "nss", pki, users=("alice",))
    result = _open(pki, nss.sign(_message("alice@example.org"), "alice"), now)
    (record,) = _harvest(store, result, now)
    assert (record.address, record.trust) == ("alice@example.org", Trust.ANCHOR)
    # cmsutil names the signing certificate itself as the encryption-key preference.
    assert record.preferred == record.fingerprint


def test_an_nss_encryption_key_preference_for_a_separate_certificate_is_harvested_and_selected(
    store: CertStore, pki: TestPki, now: dt.datetime, tmp_path: Path
) -> None:
    nss = NssDb(tmp_path / "nss", pki, users=("alice",))
    encryption, enc_key = issue_certificate(pki, "alice@example.org", now, usage="encrypt")
    # cmsutil -Y looks the named certificate up among the user's own (it needs its key).
    bundle = tmp_path / "alice-enc.p12"
    bundle.write_bytes(
        pkcs12.serialize_key_and_certificates(
            b"alice-enc", enc_key, encryption, None,  # type: ignore[arg-type]
            serialization.BestAvailableEncryption(b"test"),
        )
    )  # fmt: skip
    run(["pk12util", "-i", bundle, "-d", nss.db, "-W", "test", "-K", ""])
    outer, entity = split_message(_message("alice@example.org"))
    (tmp_path / "entity").write_bytes(entity)
    sig = run(
        ["cmsutil", "-S", "-d", nss.db, "-N", "alice", "-G", "-P", "-Y", "alice-enc", "-T",
         "-H", "SHA256", "-i", tmp_path / "entity"],
    )  # fmt: skip
    raw = b"\r\n".join(outer) + b"\r\n" + multipart_signed_entity(entity, sig, "sha-256")
    result = _open(pki, raw, now)
    assert result.signature == SignatureStatus.VALID
    records = {r.fingerprint: r for r in _harvest(store, result, now)}
    enc_fp = fingerprint_sha256(encryption)
    assert records[enc_fp].trust == Trust.ANCHOR  # it chains to the same anchor as the signer
    signer = next(r for r in records.values() if r.fingerprint != enc_fp)
    assert signer.preferred == enc_fp
    selection = store.select("alice@example.org", now + dt.timedelta(minutes=1))
    assert isinstance(selection, Selected)
    assert selection.record.fingerprint == enc_fp
    assert selection.capabilities == signer.capabilities


def test_a_signed_then_encrypted_message_harvests_the_inner_signer(
    store: CertStore, pki: TestPki, now: dt.datetime
) -> None:
    signed = _openssl_signed(pki, "alice")
    outer, entity = split_message(signed)
    enveloped = run(["openssl", "cms", "-encrypt", "-aes256", pki.cert("bob")], stdin=entity)
    raw = b"\r\n".join(outer) + b"\r\n" + enveloped
    result = _open(pki, raw, now)
    assert (result.decryption, result.signature) == (Decryption.OK, SignatureStatus.VALID)
    (record,) = _harvest(store, result, now)
    assert (record.address, record.trust) == ("alice@example.org", Trust.ANCHOR)


@pytest.mark.parametrize("peer", ["gpgsm", "nss"])
def test_a_peer_signed_then_encrypted_message_harvests_the_inner_signer(
    store: CertStore, pki: TestPki, now: dt.datetime, tmp_path: Path, peer: str
) -> None:
    draft = _message("bob@example.org", to="alice@example.org")
    if peer == "gpgsm":
        with GpgsmHome(tmp_path / "gpgsm", pki, users=("bob",)) as gpgsm:
            raw = gpgsm.sign_and_encrypt(draft, "bob", ["alice"])
    else:
        raw = NssDb(tmp_path / "nss", pki, users=("bob",)).sign_and_encrypt(draft, "bob", ["alice"])
    result = _open(pki, raw, now, reader="alice")
    assert (result.decryption, result.signature) == (Decryption.OK, SignatureStatus.VALID)
    (record,) = _harvest(store, result, now)
    assert (record.address, record.trust) == ("bob@example.org", Trust.ANCHOR)
    assert record.source == MESSAGE_ID


def test_a_certificate_without_anchor_is_kept_untrusted_without_a_tofu_policy(
    store: CertStore, pki: TestPki, now: dt.datetime
) -> None:
    result = _open(pki, _openssl_signed(pki, "rogue"), now)
    assert result.signature == SignatureStatus.UNTRUSTED
    (record,) = _harvest(store, result, now)
    assert (record.address, record.trust) == ("rogue@example.org", Trust.UNTRUSTED)
    assert record.chain == ()


def test_tofu_pins_an_untrusted_certificate_only_for_the_from_address_it_came_with(
    store: CertStore, pki: TestPki, now: dt.datetime
) -> None:
    forwarded = _open(pki, _openssl_signed(pki, "rogue", sender="carol@example.org"), now)
    (record,) = _harvest(store, forwarded, now, tofu=("example.org",))
    assert record.trust == Trust.UNTRUSTED
    direct = _open(pki, _openssl_signed(pki, "rogue"), now)
    (record,) = _harvest(store, direct, now, tofu=("example.org",))
    assert record.trust == Trust.TOFU  # the first sight vouched by its own From pins it


def test_a_second_key_from_the_same_address_is_flagged_key_changed(
    store: CertStore, pki: TestPki, now: dt.datetime, tmp_path: Path
) -> None:
    _harvest(store, _open(pki, _openssl_signed(pki, "rogue"), now), now, tofu=("*",))
    cert, key = issue_certificate(pki, "rogue@example.org", now, self_signed=True)
    (tmp_path / "k.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    (tmp_path / "c.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    outer, entity = split_message(_message("rogue@example.org"))
    signed = run(
        ["openssl", "cms", "-sign", "-signer", tmp_path / "c.pem", "-inkey", tmp_path / "k.pem"],
        stdin=entity,
    )
    result = _open(pki, b"\r\n".join(outer) + b"\r\n" + signed, now)
    assert result.signature == SignatureStatus.UNTRUSTED
    (record,) = _harvest(store, result, now, tofu=("*",))
    assert record.trust == Trust.KEY_CHANGED
    selection = store.select("rogue@example.org", now)
    assert isinstance(selection, Selected) and selection.record.certificate != cert


def test_a_broken_signature_harvests_nothing(
    store: CertStore, pki: TestPki, now: dt.datetime
) -> None:
    tampered = _openssl_signed(pki, "alice").replace(b"Hello Bob", b"Hello Eve")
    result = _open(pki, tampered, now)
    assert result.signature == SignatureStatus.INVALID
    assert _harvest(store, result, now, tofu=("*",)) == []
    assert store.records() == []


def test_the_harvester_satisfies_the_sync_protocol_and_records_the_message_id(
    store: CertStore, pki: TestPki, now: dt.datetime
) -> None:
    from smime_companion.sync.protocols import Harvester

    harvester: Harvester = CertHarvester(store)
    result = _open(pki, _openssl_signed(pki, "alice"), now)
    harvester.harvest(result, None, now)
    harvester.harvest(result, MESSAGE_ID, now + dt.timedelta(days=1))
    (record,) = store.records("alice@example.org")
    assert record.source == "unknown-message"  # the first sighting had no Message-ID
    assert record.last_seen - record.first_seen == dt.timedelta(days=1)


def test_a_repeated_sighting_moves_last_seen_and_rechecks_revocation_only_when_due(
    store: CertStore, pki: TestPki, now: dt.datetime
) -> None:
    harvester = CertHarvester(store, revocation=RevocationChecker(timeout=1))
    result = _open(pki, _openssl_signed(pki, "alice"), now)
    harvester.harvest(result, MESSAGE_ID, now)
    (first,) = store.records("alice@example.org")
    assert first.revocation_checked == now.replace(microsecond=0)
    assert first.revocation_next is not None  # the test PKI names no responder: reused a while

    soon = now + dt.timedelta(minutes=5)
    harvester.harvest(result, MESSAGE_ID, soon)
    (second,) = store.records("alice@example.org")
    assert second.last_seen == soon.replace(microsecond=0)
    assert second.revocation_checked == first.revocation_checked  # not asked again
    assert second.first_seen == first.first_seen and second.trust == first.trust

    harvester.harvest(result, MESSAGE_ID, now)  # an older message changes nothing
    assert store.records("alice@example.org") == [second]

    due = first.revocation_next + dt.timedelta(minutes=1)
    harvester.harvest(result, MESSAGE_ID, due)
    (third,) = store.records("alice@example.org")
    assert third.revocation_checked == due.replace(microsecond=0)
    assert third.last_seen == due.replace(microsecond=0)


def test_a_harvested_signer_opens_later_mail_that_leaves_its_certificate_out(
    store: CertStore, pki: TestPki, now: dt.datetime
) -> None:
    # gpgsm and openssl -nocerts send no certificate: the daemon looks the signer up among the
    # store's certificates (every harvested signer and issuer), in its worker processes too.
    _harvest(store, _open(pki, _openssl_signed(pki, "alice"), now), now)
    known = store.certificates()
    assert load_cert(pki.cert("alice")) in known and load_cert(pki.intermediate) in known
    nocerts = openssl_cms(
        ["-sign", "-signer", pki.cert("alice"), "-inkey", pki.key("alice"), "-nocerts"],
        mime_message(),
    )
    anchors = [load_cert(pki.root)]
    with Opener([], anchors, workers=0) as alone:
        assert alone.open(nocerts, now).signature == SignatureStatus.UNTRUSTED
    with Opener([], anchors, workers=1, extra_certificates=known) as opener:
        (opened,) = opener.submit([(nocerts, now)]).result()
    assert opened.result.signature == SignatureStatus.VALID

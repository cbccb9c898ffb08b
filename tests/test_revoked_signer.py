"""A message signed with a revoked certificate is never cached as ``valid``: the sync harvests
its signer (asking the CRL the certificate names, served over loopback HTTP here), stores the
message with the verdict ``revoked``, and a rebuild from the raw bytes keeps it. Against the test
Dovecot, with the real harvester, revocation checker and certificate store."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from smime_companion.cli import main
from smime_companion.core.certs import fingerprint_sha256
from smime_companion.core.entry_derivation import entry_maker
from smime_companion.core.open import open_message, with_revoked_signers
from smime_companion.core.verdicts import SignatureStatus
from smime_companion.harvest import CertHarvester
from smime_companion.imap.mailbox import connect
from smime_companion.revocation_fetch import RevocationChecker
from smime_companion.store.cache import Cache
from smime_companion.store.certstore import CertStore
from smime_companion.testing.pki import TestPki
from tests.conftest import load_cert
from tests.dovecot import Dovecot, running_dovecot
from tests.peers import split_message
from tests.test_certstore import issue_certificate
from tests.test_revocation_chain import Crls, _crl, serving_crls
from tests.test_sync_dovecot import Opener, cached, run_sync, spec
from tests.tools import mime_message, run


def _signed_by(tmp_path: Path, pki: TestPki, address: str, crls: Crls, now: dt.datetime,
               *, revoked: bool) -> bytes:  # fmt: skip
    """A message From ``address``, signed by openssl with a certificate the test PKI's
    intermediate issued and whose CRL (at ``crls``) lists it when ``revoked``."""
    name = address.split("@")[0]
    cert, key = issue_certificate(pki, address, now, crl_url=crls.url(f"{name}.crl"))
    issuer_key = serialization.load_pem_private_key(
        (pki.directory / "intermediate.key.pem").read_bytes(), password=None
    )
    revoked_certs = (cert,) if revoked else ()
    crls.bodies[f"{name}.crl"] = _crl(load_cert(pki.intermediate), issuer_key, now, revoked_certs)  # type: ignore[arg-type]
    (tmp_path / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / f"{name}.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    outer, entity = split_message(mime_message(sender=address, subject=f"from {name}"))
    signed = run(
        ["openssl", "cms", "-sign", "-signer", tmp_path / f"{name}.pem", "-inkey",
         tmp_path / f"{name}.key", "-certfile", pki.intermediate],
        stdin=entity,
    )  # fmt: skip
    return b"\r\n".join(outer) + b"\r\n" + signed


@pytest.fixture
def crls() -> Iterator[Crls]:
    yield from serving_crls()


@pytest.fixture(scope="module")
def server() -> Iterator[Dovecot]:
    yield from running_dovecot()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[CertStore]:
    with CertStore.open(tmp_path / "certs", "revoked signer test key") as opened:
        yield opened


def test_mail_signed_with_a_revoked_certificate_is_cached_as_revoked_and_stays_so(
    server: Dovecot, store: CertStore, crls: Crls, pki: TestPki, tmp_path: Path,
    anchors: tuple[x509.Certificate, ...],
) -> None:  # fmt: skip
    opener = Opener(pki, anchors)
    cache = Cache.open(tmp_path / "cache", None)
    mailbox = connect(spec(server))
    now = dt.datetime.now(dt.UTC)
    folder = "Revoked"
    server.deliver("alice", _signed_by(tmp_path, pki, "ann@example.org", crls, now, revoked=True),
                   folder)  # fmt: skip
    server.deliver("alice", _signed_by(tmp_path, pki, "ben@example.org", crls, now, revoked=False),
                   folder)  # fmt: skip
    harvester = CertHarvester(store, revocation=RevocationChecker(timeout=5))
    try:
        report = run_sync(mailbox, cache, folder, opener, harvester=harvester)
        _expect_ann_revoked_and_ben_valid(cache, folder, crls, now, opener, harvester)
    finally:
        mailbox.close()
        cache.close()
    assert report.stored == 2


def _expect_ann_revoked_and_ben_valid(
    cache: Cache, folder: str, crls: Crls, now: dt.datetime, opener: Opener,
    harvester: CertHarvester,
) -> None:  # fmt: skip
    by_subject = cached(cache, folder)
    ann, ben = by_subject["from ann"], by_subject["from ben"]
    assert ann.signature == "revoked" and ben.signature == "valid"
    [hit] = cache.search("sig:revoked", now=now)
    assert hit.id == ann.id
    [layer] = cache.report(ann.id)["layers"]
    [signer] = layer["signers"]
    assert signer["status"] == "revoked"
    assert signer["reason"].startswith(f"revoked: crl {crls.url('ann.crl')}")
    # Rebuilt from the raw bytes (as after importing a key), the verdict is kept.
    rebuilt = entry_maker(opener.open, harvester.known_revoked)
    assert cache.rebuild(rebuilt, None) == 2
    assert cached(cache, folder)["from ann"].signature == "revoked"
    assert cached(cache, folder)["from ben"].signature == "valid"


def test_a_broken_signature_stays_invalid_and_unlisted_signers_are_untouched(
    pki: TestPki, crls: Crls, tmp_path: Path
) -> None:
    now = dt.datetime.now(dt.UTC)
    raw = _signed_by(tmp_path, pki, "cid@example.org", crls, now, revoked=True)
    anchors = [load_cert(pki.root)]
    result = open_message(raw, anchors=anchors, at=now)
    assert result.signature == SignatureStatus.VALID
    signer = result.layers[0].signers[0]
    assert signer.certificate is not None
    fingerprint = fingerprint_sha256(signer.certificate)
    assert with_revoked_signers(result, {"00" * 32: "elsewhere"}) == result
    marked = with_revoked_signers(result, {fingerprint: "crl http://x"})
    assert marked.signature == SignatureStatus.REVOKED
    assert marked.layers[0].signature == SignatureStatus.REVOKED
    assert json.dumps(marked.to_json())  # still a report
    forged = raw.replace(b"Hello", b"Jello", 1)
    broken = open_message(forged, anchors=anchors, at=now)
    assert broken.signature == SignatureStatus.INVALID
    assert with_revoked_signers(broken, {fingerprint: "crl http://x"}).signature == (
        SignatureStatus.INVALID
    )


def test_open_asks_about_revocation_only_when_told_and_then_says_revoked(
    pki: TestPki, crls: Crls, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    now = dt.datetime.now(dt.UTC)
    message = tmp_path / "dee.eml"
    message.write_bytes(_signed_by(tmp_path, pki, "dee@example.org", crls, now, revoked=True))
    args = ["open", str(message), "--anchor", str(pki.root), "--json"]
    assert main(args) == 0  # offline: the signature itself is sound
    assert json.loads(capsys.readouterr().out)["signature"] == "valid"
    assert crls.asked == []
    assert main([*args, "--check-revocation"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["signature"] == "revoked"
    [signer] = report["layers"][0]["signers"]
    assert signer["reason"].startswith(f"revoked: crl {crls.url('dee.crl')}")

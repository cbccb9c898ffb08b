"""Revocation answers are judged fresh at the time they are checked, and only believed from
someone allowed to give them; messages are judged at the time WE received them.

- an OCSP response without nextUpdate is believed for MAX_AGE_WITHOUT_NEXT_UPDATE (one day)
  after its thisUpdate, no longer (an old "good" replayed over plain HTTP decides nothing);
- a delegated responder must hold the OCSPSigning usage and be valid when the answer is checked;
- a fresh REVOKED stays REVOKED for a message dated (by a server's INTERNALDATE, or ``--at``) in
  the past: it was "dated in the future" before, hence ``unavailable``, hence passed under soft;
- the sync judges a message at its fetch time: a backdated INTERNALDATE neither makes an expired
  signer valid (archive mail, README) nor a current one not-yet-valid;
- one HTTP fetch has one time limit, however slowly the server trickles its answer.
"""

from __future__ import annotations

import datetime as dt
import http.server
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from smime_companion.core.cert_vocabulary import Revocation
from smime_companion.core.revocation import MAX_AGE_WITHOUT_NEXT_UPDATE, read_ocsp_response
from smime_companion.revocation_fetch import RevocationChecker, http_fetch
from smime_companion.store.cache import Cache
from smime_companion.testing.pki import TestPki
from tests.conftest import load_cert
from tests.dovecot import signed_mail
from tests.hostile_imap import Message, hostile_imap
from tests.test_certstore import issue_certificate
from tests.test_imap_hostile_server import _pass
from tests.test_sync_dovecot import Opener


def _issuer(pki: TestPki):  # type: ignore[no-untyped-def]
    key = serialization.load_pem_private_key(
        (pki.directory / "intermediate.key.pem").read_bytes(), password=None
    )
    return load_cert(pki.intermediate), key


def _response(
    pki: TestPki,
    cert: x509.Certificate,
    *,
    this_update: dt.datetime,
    next_update: dt.datetime | None,
    revoked_at: dt.datetime | None = None,
    delegate: tuple[x509.Certificate, rsa.RSAPrivateKey] | None = None,
) -> bytes:
    issuer, issuer_key = _issuer(pki)
    status = ocsp.OCSPCertStatus.REVOKED if revoked_at else ocsp.OCSPCertStatus.GOOD
    builder = ocsp.OCSPResponseBuilder().add_response(
        cert=cert, issuer=issuer, algorithm=hashes.SHA1(), cert_status=status,
        this_update=this_update, next_update=next_update, revocation_time=revoked_at,
        revocation_reason=None,
    )  # fmt: skip
    signer_cert, signer_key = delegate if delegate else (issuer, issuer_key)
    builder = builder.responder_id(ocsp.OCSPResponderEncoding.HASH, signer_cert)
    if delegate:
        builder = builder.certificates([delegate[0]])
    response = builder.sign(signer_key, hashes.SHA256())
    return response.public_bytes(serialization.Encoding.DER)


def _delegate(
    pki: TestPki, now: dt.datetime, *, days: tuple[int, int], eku: bool = True
) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    issuer, issuer_key = _issuer(pki)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "OCSP responder")]))
        .issuer_name(issuer.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now + dt.timedelta(days=days[0]))
        .not_valid_after(now + dt.timedelta(days=days[1]))
    )
    if eku:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.OCSP_SIGNING]), critical=False
        )
    return builder.sign(issuer_key, hashes.SHA256()), key


@pytest.fixture(scope="module")
def subject(pki: TestPki, pki_now: dt.datetime) -> x509.Certificate:
    cert, _ = issue_certificate(pki, "fresh@example.org", pki_now, ocsp_url="http://ocsp.invalid/")
    return cert


def test_an_ocsp_response_without_next_update_is_believed_for_one_day_only(
    pki: TestPki, now: dt.datetime, subject: x509.Certificate
) -> None:
    issuer, _ = _issuer(pki)
    recent = _response(pki, subject, this_update=now - dt.timedelta(hours=2), next_update=None)
    assert read_ocsp_response(recent, subject, issuer, now, "u").status == Revocation.GOOD
    old = now - MAX_AGE_WITHOUT_NEXT_UPDATE - dt.timedelta(hours=1)
    replayed = _response(pki, subject, this_update=old, next_update=None)
    answer = read_ocsp_response(replayed, subject, issuer, now, "u")
    assert answer.status == Revocation.UNAVAILABLE
    assert "no next update" in (answer.reason or "")


@pytest.mark.parametrize(
    ("days", "eku", "believed"),
    [((-30, -1), True, False), ((1, 30), True, False), ((-1, 30), False, False),
     ((-1, 30), True, True)],
    ids=["expired", "not-yet-valid", "without-ocsp-signing", "valid"],
)  # fmt: skip
def test_a_delegated_responder_must_be_valid_now_and_hold_ocsp_signing(
    pki: TestPki, now: dt.datetime, subject: x509.Certificate, days, eku, believed
) -> None:
    issuer, _ = _issuer(pki)
    delegate = _delegate(pki, now, days=days, eku=eku)
    der = _response(
        pki, subject, this_update=now - dt.timedelta(minutes=1),
        next_update=now + dt.timedelta(days=1), delegate=delegate,
    )  # fmt: skip
    answer = read_ocsp_response(der, subject, issuer, now, "u")
    assert (answer.status == Revocation.GOOD) is believed
    if not believed:
        assert answer.status == Revocation.UNAVAILABLE and "delegated" in (answer.reason or "")


def test_a_fresh_revoked_answer_stays_revoked_for_a_message_dated_in_the_past(
    pki: TestPki, now: dt.datetime, subject: x509.Certificate
) -> None:
    issuer, _ = _issuer(pki)
    der = _response(
        pki, subject, this_update=now, next_update=now + dt.timedelta(hours=12),
        revoked_at=now - dt.timedelta(days=400),
    )  # fmt: skip
    backdated = now - dt.timedelta(days=30)  # after the revocation, before the answer
    answer = read_ocsp_response(der, subject, issuer, backdated, "u", now=now)
    assert answer.status == Revocation.REVOKED
    # The adapter checks freshness at its clock, whatever time the message is judged at.
    checker = RevocationChecker(fetch=lambda *_args: der, clock=lambda: now)
    assert checker.check(subject, issuer, backdated).status == Revocation.REVOKED


def _stored_report(cache: Cache) -> dict:  # type: ignore[type-arg]
    (hit,) = cache.search("", now=dt.datetime.now(dt.UTC))
    return cache.report(hit.id)


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("signer", "internaldate_days", "verdict"),
    [("alice", -9000, "valid"), ("expired", -500, "expired")],
    ids=["current-signer-backdated", "expired-signer-dated-inside-its-validity"],
)
def test_the_sync_judges_a_message_at_its_fetch_time_not_the_servers_internaldate(
    pki: TestPki, anchors, tmp_path: Path, signer: str, internaldate_days: int, verdict: str
) -> None:
    claimed = dt.datetime.now(dt.UTC) + dt.timedelta(days=internaldate_days)
    message = Message(
        1, signed_mail(pki, "archive", user=signer),
        internaldate=claimed.strftime("%d-%b-%Y %H:%M:%S +0000"),
    )  # fmt: skip
    before = dt.datetime.now(dt.UTC)
    with Cache.open(tmp_path / "cache", None) as cache, hostile_imap([message]) as server:
        _pass(server, cache, Opener(pki, anchors))
        report = _stored_report(cache)
    assert report["signature"] == verdict
    checked_at = dt.datetime.fromisoformat(report["evidence"]["checked_at"])
    assert before - dt.timedelta(seconds=1) <= checked_at <= dt.datetime.now(dt.UTC)
    assert json.dumps(report)  # (the report stays plain data)


@pytest.fixture
def trickling_http() -> Iterator[str]:
    class Slow(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            for _ in range(200):  # a byte every 0.1 s: each read well within any socket timeout
                try:
                    self.wfile.write(b"x")
                    self.wfile.flush()
                except OSError:
                    return
                time.sleep(0.1)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/slow.crl"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.timeout(60)
def test_one_http_fetch_has_one_time_limit_however_slowly_the_server_answers(
    trickling_http: str,
) -> None:
    started = time.monotonic()
    with pytest.raises(OSError, match="time limit"):
        http_fetch(trickling_http, None, 1.5, 1 << 20)
    assert time.monotonic() - started < 4

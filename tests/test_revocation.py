"""Revocation: OCSP against a real ``openssl ocsp`` responder and CRLs over a loopback HTTP
server, both started by these tests, with certificates made here that point at them (the test
PKI's certificates name no responder). Good, revoked, unknown and unreachable answers, the
soft/hard policies at selection time, caching until nextUpdate, and forged or stale evidence."""

from __future__ import annotations

import datetime as dt
import http.server
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509 import ocsp

from smime_companion.core.cert_vocabulary import Revocation
from smime_companion.core.open import open_message
from smime_companion.core.revocation import ocsp_request, read_crl, read_ocsp_response
from smime_companion.core.selection import NoCertificate, Selected
from smime_companion.harvest import CertHarvester
from smime_companion.revocation_fetch import RevocationChecker, http_fetch
from smime_companion.store.certstore import CertStore, Sighting
from smime_companion.testing.dovecot import free_ports
from tests.conftest import load_cert
from tests.peers import split_message
from tests.test_certstore import issue_certificate
from tests.tools import mime_message, ocsp_index_line, run

if TYPE_CHECKING:
    from smime_companion.testing.pki import TestPki


def _wait_answering(url: str, request: bytes, proc: subprocess.Popen[bytes]) -> None:
    # Probe with a real request: openssl ocsp serves one connection at a time, and a probe that
    # connects and hangs up without a request stalls it.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            raise AssertionError(f"openssl ocsp exited: {stderr}")
        try:
            http_fetch(url, request, 2, 1 << 20)
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError("openssl ocsp did not start answering")


@dataclass
class Responders:
    """The loopback services and the certificates made to point at them."""

    issuer: x509.Certificate
    good: x509.Certificate  # known good to OCSP
    revoked: x509.Certificate  # revoked in the OCSP index
    unknown: x509.Certificate  # not in the OCSP index (and no CRL)
    crl_good: x509.Certificate  # CRL only, not listed
    crl_revoked: x509.Certificate  # CRL only, listed
    down_then_crl: x509.Certificate  # OCSP responder down, CRL lists it
    down: x509.Certificate  # OCSP responder down, no CRL
    crl: bytes
    keys: dict[str, CertificateIssuerPrivateKeyTypes]  # by address


@pytest.fixture(scope="session")
def now() -> dt.datetime:
    """The time these checks are made at: taken when this module starts, not when the session
    did. The responders answer with the real clock, and a response dated more than the allowed
    skew (5 minutes) after the check time is refused as "in the future": with the session's
    time, every check failed once the suite before this module took longer than that."""
    return dt.datetime.now(dt.UTC)


@pytest.fixture(scope="module")
def at() -> dt.datetime:
    """This module's time: the clock when its first test starts. The OCSP responder stamps its
    answers with the clock, and in a long run the session's ``now`` (which made the test PKI)
    can be more than the allowed skew older by then; the test PKI is valid for days either
    side of it, so it is valid at this time too."""
    return dt.datetime.now(dt.UTC)


@pytest.fixture(scope="module")
def responders(
    tmp_path_factory: pytest.TempPathFactory, pki: TestPki, at: dt.datetime
) -> Iterator[Responders]:
    work = tmp_path_factory.mktemp("revocation")
    ocsp_port, down_port, crl_port = free_ports(3)
    ocsp_url = f"http://127.0.0.1:{ocsp_port}"
    down_url = f"http://127.0.0.1:{down_port}"
    crl_url = f"http://127.0.0.1:{crl_port}/email-ca.crl"

    keys: dict[str, CertificateIssuerPrivateKeyTypes] = {}

    def make(address: str, **kw: str) -> x509.Certificate:
        cert, keys[address] = issue_certificate(pki, address, at, **kw)  # type: ignore[arg-type]
        return cert

    made = Responders(
        issuer=load_cert(pki.intermediate),
        good=make("good@example.org", ocsp_url=ocsp_url),
        revoked=make("revoked@example.org", ocsp_url=ocsp_url),
        unknown=make("unknown@example.org", ocsp_url=ocsp_url),
        crl_good=make("crlgood@example.org", crl_url=crl_url),
        crl_revoked=make("crlrevoked@example.org", crl_url=crl_url),
        down_then_crl=make("fallback@example.org", ocsp_url=down_url, crl_url=crl_url),
        down=make("down@example.org", ocsp_url=down_url),
        crl=b"",
        keys=keys,
    )
    issuer_key = serialization.load_pem_private_key(
        (pki.directory / "intermediate.key.pem").read_bytes(), password=None
    )
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(made.issuer.subject)
        .last_update(at - dt.timedelta(hours=1))
        .next_update(at + dt.timedelta(days=1))
    )
    for cert in (made.crl_revoked, made.down_then_crl):
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(cert.serial_number)
            .revocation_date(at - dt.timedelta(minutes=30))
            .build()
        )
    made.crl = builder.sign(issuer_key, hashes.SHA256()).public_bytes(  # type: ignore[arg-type]
        serialization.Encoding.DER
    )
    index = work / "index.txt"
    index.write_text(
        ocsp_index_line(made.good.serial_number, made.good.not_valid_after_utc)
        + ocsp_index_line(
            made.revoked.serial_number,
            made.revoked.not_valid_after_utc,
            at - dt.timedelta(hours=2),
        )
    )
    proc = subprocess.Popen(
        ["openssl", "ocsp", "-index", str(index), "-port", str(ocsp_port),
         "-rsigner", str(pki.intermediate), "-rkey", str(pki.directory / "intermediate.key.pem"),
         "-CA", str(pki.intermediate), "-nmin", "60", "-ignore_err"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    crl_body = made.crl

    class CrlHandler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            if self.path != "/email-ca.crl":
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/pkix-crl")
            self.send_header("Content-Length", str(len(crl_body)))
            self.end_headers()
            self.wfile.write(crl_body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", crl_port), CrlHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        _wait_answering(ocsp_url, ocsp_request(made.good, made.issuer), proc)
        yield made
    finally:
        server.shutdown()
        server.server_close()
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def checker() -> RevocationChecker:
    return RevocationChecker(timeout=5)


def test_ocsp_good_from_a_real_responder_with_its_next_update_and_evidence(
    responders: Responders, checker: RevocationChecker, at: dt.datetime
) -> None:
    answer = checker.check(responders.good, responders.issuer, at)
    assert answer.status == Revocation.GOOD, answer.reason
    assert answer.source is not None and answer.source.startswith("http://127.0.0.1:")
    assert answer.next_update is not None and answer.next_update > at
    assert ocsp.load_der_ocsp_response(answer.evidence or b"").serial_number == (
        responders.good.serial_number
    )


def test_ocsp_revoked_from_a_real_responder(
    responders: Responders, checker: RevocationChecker, at: dt.datetime
) -> None:
    answer = checker.check(responders.revoked, responders.issuer, at)
    assert answer.status == Revocation.REVOKED
    assert answer.reason is not None and answer.reason.startswith("revoked at")


def test_ocsp_unknown_when_the_responder_does_not_know_the_certificate(
    responders: Responders, checker: RevocationChecker, at: dt.datetime
) -> None:
    assert checker.check(responders.unknown, responders.issuer, at).status == Revocation.UNKNOWN


@pytest.mark.parametrize("attr, status", [("crl_good", Revocation.GOOD),
                                          ("crl_revoked", Revocation.REVOKED)])  # fmt: skip
def test_a_crl_served_over_http_decides_when_there_is_no_responder(
    responders: Responders, checker: RevocationChecker, at: dt.datetime, attr: str,
    status: Revocation,
) -> None:  # fmt: skip
    answer = checker.check(getattr(responders, attr), responders.issuer, at)
    assert answer.status == status
    assert answer.next_update is not None and answer.next_update > at  # reused until then
    assert answer.evidence == responders.crl


def test_an_unreachable_responder_falls_back_to_the_crl(
    responders: Responders, checker: RevocationChecker, at: dt.datetime
) -> None:
    answer = checker.check(responders.down_then_crl, responders.issuer, at)
    assert answer.status == Revocation.REVOKED
    assert answer.source is not None and answer.source.endswith("/email-ca.crl")


def test_an_unreachable_responder_without_crl_is_unavailable_naming_it(
    responders: Responders, checker: RevocationChecker, at: dt.datetime
) -> None:
    answer = checker.check(responders.down, responders.issuer, at)
    assert answer.status == Revocation.UNAVAILABLE
    assert answer.reason is not None and "unreachable" in answer.reason


def test_a_certificate_naming_no_responder_has_no_source(
    pki: TestPki, checker: RevocationChecker, at: dt.datetime
) -> None:
    answer = checker.check(load_cert(pki.cert("alice")), load_cert(pki.intermediate), at)
    assert answer.status == Revocation.NO_SOURCE


def _stored(tmp_path: Path, cert: x509.Certificate, issuer: x509.Certificate, at: dt.datetime):
    store = CertStore.open(tmp_path, "revocation test key")
    store.record(Sighting(cert, "<m@example.org>", at, anchored=True, chain=(issuer,)))
    return store


@pytest.mark.parametrize(
    "attr, soft_ok, hard_ok",
    [("good", True, True), ("revoked", False, False), ("unknown", True, False),
     ("down", True, False)],
)  # fmt: skip
def test_selection_checks_revocation_soft_passes_with_a_warning_and_hard_blocks(
    responders: Responders, checker: RevocationChecker, at: dt.datetime, tmp_path: Path,
    attr: str, soft_ok: bool, hard_ok: bool,
) -> None:  # fmt: skip
    cert: x509.Certificate = getattr(responders, attr)
    address = cert.extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    ).value.get_values_for_type(x509.RFC822Name)[0]
    with _stored(tmp_path, cert, responders.issuer, at) as store:
        refresh = checker.refresh_in(store)
        soft = store.select(address, at, "soft", refresh)
        hard = store.select(address, at, "hard", refresh)
        (record,) = store.records(address)
        source, evidence = store.revocation_evidence(record.fingerprint)
    assert isinstance(soft, Selected) is soft_ok, soft
    assert isinstance(hard, Selected) is hard_ok, hard
    if soft_ok and not hard_ok:
        assert isinstance(soft, Selected) and "revocation = soft" in soft.warnings[0]
        assert isinstance(hard, NoCertificate) and "policy hard" in hard.reason
    assert record.revocation_checked is not None
    if attr != "down":
        assert source is not None and source.startswith("ocsp http://127.0.0.1:")
        assert evidence  # the signed response is kept to explain the verdict later


def _counting_checker() -> tuple[RevocationChecker, list[str]]:
    """A checker over real HTTP that notes every URL it fetches."""
    asked: list[str] = []

    def counting_fetch(url: str, body: bytes | None, timeout: float, limit: int) -> bytes:
        asked.append(url)
        return http_fetch(url, body, timeout, limit)

    return RevocationChecker(fetch=counting_fetch, timeout=5), asked


def test_a_stored_answer_is_reused_until_its_next_update(
    responders: Responders, at: dt.datetime, tmp_path: Path
) -> None:
    checker, asked = _counting_checker()
    with _stored(tmp_path, responders.good, responders.issuer, at) as store:
        refresh = checker.refresh_in(store)
        for minutes in (0, 1, 30):
            selection = store.select("good@example.org", at + dt.timedelta(minutes=minutes),
                                     "hard", refresh)  # fmt: skip
            assert isinstance(selection, Selected)
        assert len(asked) == 1
        store.select("good@example.org", at + dt.timedelta(minutes=90), "hard", refresh)
        assert len(asked) == 2  # past nextUpdate (60 minutes): asked again


def test_an_ocsp_response_signed_by_another_key_is_not_believed(
    responders: Responders, at: dt.datetime, pki: TestPki
) -> None:
    forger_cert, forger = issue_certificate(pki, "ocsp@example.org", at, self_signed=True)
    forged = (
        ocsp.OCSPResponseBuilder()
        .add_response(
            cert=responders.revoked, issuer=responders.issuer, algorithm=hashes.SHA1(),
            cert_status=ocsp.OCSPCertStatus.GOOD, this_update=at,
            next_update=at + dt.timedelta(hours=1), revocation_time=None, revocation_reason=None,
        )
        .responder_id(ocsp.OCSPResponderEncoding.HASH, forger_cert)
        .certificates([forger_cert])
        .sign(forger, hashes.SHA256())
        .public_bytes(serialization.Encoding.DER)
    )  # fmt: skip
    answer = read_ocsp_response(forged, responders.revoked, responders.issuer, at, "http://x")
    assert answer.status == Revocation.UNAVAILABLE
    assert answer.reason is not None and "not signed by the issuer" in answer.reason


def test_a_stale_crl_or_one_for_another_certificate_decides_nothing(
    responders: Responders, at: dt.datetime, pki: TestPki
) -> None:
    later = at + dt.timedelta(days=3)
    stale = read_crl(responders.crl, responders.crl_revoked, responders.issuer, later, "u")
    assert stale.status == Revocation.UNAVAILABLE and "stale" in (stale.reason or "")
    wrong = read_crl(responders.crl, responders.crl_good, load_cert(pki.root), at, "u")
    assert wrong.status == Revocation.UNAVAILABLE and "not issued by" in (wrong.reason or "")


@pytest.mark.parametrize(
    "address, status",
    [("good@example.org", Revocation.GOOD), ("revoked@example.org", Revocation.REVOKED)],
)
def test_harvesting_checks_revocation_and_keeps_the_evidence_of_arrival(
    responders: Responders, at: dt.datetime, tmp_path: Path, pki: TestPki, address: str,
    status: Revocation,
) -> None:  # fmt: skip
    cert = responders.good if address.startswith("good") else responders.revoked
    (tmp_path / "signer.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "signer.key").write_bytes(
        responders.keys[address].private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    outer, entity = split_message(mime_message(sender=address))
    signed = run(
        ["openssl", "cms", "-sign", "-signer", tmp_path / "signer.pem", "-inkey",
         tmp_path / "signer.key", "-certfile", pki.intermediate],
        stdin=entity,
    )  # fmt: skip
    result = open_message(
        b"\r\n".join(outer) + b"\r\n" + signed, anchors=[load_cert(pki.root)], at=at
    )
    with CertStore.open(tmp_path / "store", "revocation test key") as store:
        harvester = CertHarvester(store, revocation=RevocationChecker(timeout=5))
        (record,) = harvester.harvest_records(result, "<arrival@example.org>", at)
        source, evidence = store.revocation_evidence(record.fingerprint)
        selection = store.select(address, at, "soft")
    assert record.revocation == status
    assert record.revocation_checked == at.replace(microsecond=0)
    assert source is not None and source.startswith("ocsp http://127.0.0.1:")
    assert ocsp.load_der_ocsp_response(evidence or b"").certificate_status.name == status.name
    assert isinstance(selection, Selected) is (status == Revocation.GOOD)


def test_an_unreachable_responder_is_not_asked_again_for_an_hour(
    responders: Responders, at: dt.datetime, tmp_path: Path
) -> None:
    checker, asked = _counting_checker()
    with _stored(tmp_path, responders.down, responders.issuer, at) as store:
        refresh = checker.refresh_in(store)
        for minutes in (0, 10, 59):
            when = at + dt.timedelta(minutes=minutes)
            assert isinstance(
                store.select("down@example.org", when, "hard", refresh), NoCertificate
            )
        assert len(asked) == 1
        store.select("down@example.org", at + dt.timedelta(minutes=61), "soft", refresh)
        assert len(asked) == 2


def test_a_responder_that_did_not_answer_is_skipped_for_every_certificate_for_ten_minutes(
    responders: Responders, at: dt.datetime
) -> None:
    # Two certificates of one CA share its dead responder: the second is not made to wait out a
    # second timeout, and still gets its answer from the CRL it also names.
    checker, asked = _counting_checker()
    first = checker.check(responders.down, responders.issuer, at)
    assert first.status == Revocation.UNAVAILABLE
    later = at + dt.timedelta(minutes=1)
    second = checker.check(responders.down_then_crl, responders.issuer, later)
    assert second.status == Revocation.REVOKED
    dead = asked[0]
    assert asked.count(dead) == 1 and len(asked) == 2  # the dead responder once, then the CRL
    again = checker.check(responders.down, responders.issuer, later)
    assert again.reason is not None and "not asked again yet" in again.reason
    checker.check(responders.down, responders.issuer, at + dt.timedelta(minutes=11))
    assert asked.count(dead) == 2  # ten minutes later it is given another chance

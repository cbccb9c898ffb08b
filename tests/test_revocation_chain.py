"""Revocation of the CA certificates above a correspondent's certificate: a revoked intermediate
revokes what it issued, a CA whose status cannot be learnt puts a good certificate in doubt (so
``hard`` refuses it), and a CA naming no source changes nothing. CRLs are served over a loopback
HTTP server started here; the certificates are made here, by the test PKI's root."""

from __future__ import annotations

import datetime as dt
import http.server
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from smime_companion.core.cert_vocabulary import CertRecord, Revocation
from smime_companion.core.revocation import RevocationAnswer, chain_answer
from smime_companion.core.selection import NoCertificate, Selected
from smime_companion.revocation_fetch import RevocationChecker, http_fetch
from smime_companion.store.certstore import CertStore, Sighting
from smime_companion.testing.dovecot import free_port
from smime_companion.testing.pki import TestPki
from tests.conftest import load_cert

KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)  # one for all, for speed


@dataclass
class Crls:
    """A loopback HTTP server of CRLs by path, counting the requests for each."""

    port: int
    bodies: dict[str, bytes] = field(default_factory=dict)
    asked: list[str] = field(default_factory=list)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"


@pytest.fixture
def crls() -> Iterator[Crls]:
    yield from serving_crls()


def serving_crls() -> Iterator[Crls]:
    """Generator for fixtures: a started CRL server, stopped after the ``yield``."""
    served = Crls(free_port())

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            served.asked.append(self.path)
            body = served.bodies.get(self.path.lstrip("/"))
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", served.port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield served
    finally:
        server.shutdown()
        server.server_close()


def _cert(
    subject: str,
    issuer: x509.Certificate,
    issuer_key: CertificateIssuerPrivateKeyTypes,
    now: dt.datetime,
    crl_url: str | None,
    *,
    ca: bool,
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(issuer.subject)
        .public_key(KEY.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(KEY.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False
        )
    )
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.RFC822Name(subject)]), critical=False
        )
    if crl_url is not None:
        point = x509.DistributionPoint([x509.UniformResourceIdentifier(crl_url)], None, None, None)
        builder = builder.add_extension(x509.CRLDistributionPoints([point]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())  # type: ignore[arg-type]


def _crl(
    issuer: x509.Certificate,
    key: CertificateIssuerPrivateKeyTypes,
    now: dt.datetime,
    revoked: tuple[x509.Certificate, ...] = (),
) -> bytes:
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer.subject)
        .last_update(now - dt.timedelta(hours=1))
        .next_update(now + dt.timedelta(hours=12))
    )
    for cert in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(cert.serial_number)
            .revocation_date(now - dt.timedelta(minutes=30))
            .build()
        )
    crl = builder.sign(key, hashes.SHA256())  # type: ignore[arg-type]
    return crl.public_bytes(serialization.Encoding.DER)


@dataclass(frozen=True)
class Chain:
    leaf: x509.Certificate
    ca: x509.Certificate
    root: x509.Certificate


def _chain(pki: TestPki, crls: Crls, now: dt.datetime, name: str) -> Chain:
    """root -> a CA of its own (its CRL: the root's, see _root_crl) -> name@example.org (its
    CRL: the CA's, revoking nothing)."""
    root = load_cert(pki.root)
    root_key = serialization.load_pem_private_key(
        (pki.directory / "root.key.pem").read_bytes(), password=None
    )
    ca = _cert(f"{name} CA", root, root_key, now, crls.url("root.crl"), ca=True)  # type: ignore[arg-type]
    leaf = _cert(f"{name}@example.org", ca, KEY, now, crls.url(f"{name}.crl"), ca=False)
    crls.bodies[f"{name}.crl"] = _crl(ca, KEY, now)
    return Chain(leaf, ca, root)


def _root_crl(pki: TestPki, crls: Crls, now: dt.datetime, *revoked: x509.Certificate) -> None:
    root_key = serialization.load_pem_private_key(
        (pki.directory / "root.key.pem").read_bytes(), password=None
    )
    crls.bodies["root.crl"] = _crl(load_cert(pki.root), root_key, now, revoked)  # type: ignore[arg-type]


def _select(
    tmp_path: Path,
    chain: Chain,
    now: dt.datetime,
    policy: str,
    checker: RevocationChecker | None = None,
) -> tuple[Selected | NoCertificate, CertRecord, str | None]:
    checker = checker or RevocationChecker(timeout=5)
    with CertStore.open(tmp_path, "chain revocation key") as store:
        store.record(
            Sighting(chain.leaf, "<m@example.org>", now, anchored=True,
                     chain=(chain.ca, chain.root))
        )  # fmt: skip
        address = chain.leaf.subject.rfc4514_string().removeprefix("CN=")
        selection = store.select(address, now, policy, checker.refresh_in(store))
        (record,) = store.records(address)
        source, _ = store.revocation_evidence(record.fingerprint)
    return selection, record, source


def test_a_certificate_under_a_revoked_intermediate_is_revoked_naming_the_ca(
    pki: TestPki, crls: Crls, now: dt.datetime, tmp_path: Path
) -> None:
    chain = _chain(pki, crls, now, "dan")
    _root_crl(pki, crls, now, chain.ca)
    selection, record, source = _select(tmp_path, chain, now, "soft")
    assert record.revocation == Revocation.REVOKED
    assert isinstance(selection, NoCertificate)  # revoked is refused under every policy
    assert source is not None and "the issuing CA CN=dan CA: is revoked" in source
    assert source.startswith(f"crl {crls.url('root.crl')}")


def test_a_good_certificate_under_a_good_intermediate_is_good(
    pki: TestPki, crls: Crls, now: dt.datetime, tmp_path: Path
) -> None:
    chain = _chain(pki, crls, now, "eve")
    _root_crl(pki, crls, now)
    selection, record, _ = _select(tmp_path, chain, now, "hard")
    assert record.revocation == Revocation.GOOD and isinstance(selection, Selected)
    # Kept until the earliest next update of the two CRLs, then asked again.
    assert record.revocation_next == (now + dt.timedelta(hours=12)).replace(microsecond=0)


def test_an_intermediate_whose_crl_is_unreachable_puts_a_good_certificate_in_doubt(
    pki: TestPki, crls: Crls, now: dt.datetime, tmp_path: Path
) -> None:
    chain = _chain(pki, crls, now, "fay")  # no root.crl is served: 404
    soft, record, source = _select(tmp_path, chain, now, "soft")
    assert record.revocation == Revocation.UNAVAILABLE
    assert isinstance(soft, Selected) and "revocation = soft" in soft.warnings[0]
    assert source is not None and "the issuing CA CN=fay CA:" in source
    hard, _, _ = _select(tmp_path / "hard", chain, now, "hard")
    assert isinstance(hard, NoCertificate) and "policy hard" in hard.reason


def test_one_intermediate_is_asked_about_once_for_all_its_certificates(
    pki: TestPki, crls: Crls, now: dt.datetime, tmp_path: Path
) -> None:
    chain = _chain(pki, crls, now, "gus")
    _root_crl(pki, crls, now)
    second = _cert("hal@example.org", chain.ca, KEY, now, crls.url("gus.crl"), ca=False)
    checker = RevocationChecker(fetch=http_fetch, timeout=5)
    _select(tmp_path / "a", chain, now, "hard", checker)
    _select(tmp_path / "b", Chain(second, chain.ca, chain.root), now, "hard", checker)
    assert crls.asked.count("/root.crl") == 1 and crls.asked.count("/gus.crl") == 2


def _answer(status: Revocation, hours: int | None = 1) -> RevocationAnswer:
    at = dt.datetime(2026, 11, 25, tzinfo=dt.UTC)
    next_update = at + dt.timedelta(hours=hours) if hours is not None else None
    return RevocationAnswer(status, at, "crl http://x/", next_update, b"", None)


@pytest.mark.parametrize(
    "leaf, ca, expected",
    [
        (Revocation.GOOD, Revocation.GOOD, Revocation.GOOD),
        (Revocation.GOOD, Revocation.NO_SOURCE, Revocation.GOOD),
        (Revocation.GOOD, Revocation.UNAVAILABLE, Revocation.UNAVAILABLE),
        (Revocation.GOOD, Revocation.UNKNOWN, Revocation.UNKNOWN),
        (Revocation.GOOD, Revocation.REVOKED, Revocation.REVOKED),
        (Revocation.UNAVAILABLE, Revocation.REVOKED, Revocation.REVOKED),
        (Revocation.NO_SOURCE, Revocation.GOOD, Revocation.NO_SOURCE),
        (Revocation.REVOKED, Revocation.GOOD, Revocation.REVOKED),
    ],
)
def test_the_chain_answer_is_the_worst_that_matters(
    pki: TestPki, leaf: Revocation, ca: Revocation, expected: Revocation
) -> None:
    intermediate = load_cert(pki.intermediate)
    combined = chain_answer(_answer(leaf, 5), [(intermediate, _answer(ca, 2))])
    assert combined.status == expected
    if expected != leaf:
        assert combined.reason is not None and "Test Email CA" in combined.reason
    assert combined.next_update == _answer(leaf, 2).next_update  # the earliest of the two

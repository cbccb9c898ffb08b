"""Revocation checking, the network half: ask the certificate's OCSP responders (AIA) first, then
its CRL distribution points, over plain HTTP (http.client, each fetch under one time limit), and
store the answer with its evidence in the certificate store until the answer's nextUpdate.

The policy (``off``, ``soft``, ``hard``) is applied by ``core.selection``: this module only finds
out. An unreachable responder is an answer too (``unavailable``), never an exception.
"""

from __future__ import annotations

import http.client
import itertools
import logging
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

from cryptography import x509

from smime_companion.core.cert_vocabulary import CertRecord, Revocation
from smime_companion.core.certs import fingerprint_sha256
from smime_companion.core.model import OpenResult
from smime_companion.core.revocation import (
    RevocationAnswer,
    chain_answer,
    crl_urls,
    ocsp_request,
    ocsp_urls,
    read_crl,
    read_ocsp_response,
)
from smime_companion.core.verdicts import ANCHORED_STATUSES
from smime_companion.store.certstore import CertStore

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 10.0
MAX_OCSP_BYTES = 1024 * 1024  # an OCSP response is a few KB
MAX_CRL_BYTES = 32 * 1024 * 1024  # large public CAs publish CRLs of tens of MB
# How long an answer without a nextUpdate is reused: an unreachable responder, a certificate
# naming nowhere to ask, an OCSP response without nextUpdate. Without it, every message from
# such a sender would make the sync wait for the same dead responder again.
REUSE_WITHOUT_NEXT_UPDATE = timedelta(hours=1)
# How long a URL that could not be fetched is not asked again, for any certificate. A CA's
# certificates share their responder and CRL URLs: without it, a first sync meeting a hundred
# certificates of a CA whose responder is down would wait out a hundred timeouts.
SKIP_UNREACHABLE = timedelta(minutes=10)

# Redirects followed (CRLs are often served from a CDN behind one), to http:// only.
MAX_REDIRECTS = 3

# (url, request body or None for GET, time limit in seconds, size limit) -> response body.
# Raises OSError when the server cannot be reached, answers with an error, or takes longer.
Fetch = Callable[[str, bytes | None, float, int], bytes]


def http_fetch(url: str, body: bytes | None, timeout: float, limit: int) -> bytes:
    """GET ``url`` (or POST ``body`` as an OCSP request) and return at most ``limit`` bytes,
    all within ``timeout`` seconds from the first connect to the last byte, redirects
    included: a server that trickles its answer a byte at a time is cut off there (a socket
    timeout alone bounds each read, never the whole).

    Raises :class:`OSError` for an unreachable server, an HTTP error, a non-http URL, a body
    larger than ``limit`` or an answer not complete within ``timeout``."""
    deadline = time.monotonic() + timeout
    for _ in range(MAX_REDIRECTS + 1):
        status, location, data = _http_once(url, body, deadline, limit)
        if status in (301, 302, 303, 307, 308) and location:
            url = urllib.parse.urljoin(url, location)
            body = body if status in (307, 308) else None
            continue
        if status != 200:
            raise OSError(f"{url} answered HTTP {status}")
        return data
    raise OSError(f"{url}: more than {MAX_REDIRECTS} redirects")


def _http_once(
    url: str, body: bytes | None, deadline: float, limit: int
) -> tuple[int, str | None, bytes]:
    """One HTTP exchange, ended by a watchdog at ``deadline``: (status, Location, body)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise OSError(f"only http:// revocation URLs are fetched, not {url}")
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise OSError(f"{url}: no answer within the time limit")
    conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=remaining)
    expired = threading.Event()

    connected: list[socket.socket] = []  # the socket, once connected (the connect itself is
    # bounded by its timeout): http.client lets go of conn.sock before the body is read

    def cut_off() -> None:
        expired.set()
        for sock in connected:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    watchdog = threading.Timer(remaining, cut_off)
    watchdog.daemon = True
    watchdog.start()
    try:
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        headers = {"Content-Type": "application/ocsp-request"} if body is not None else {}
        conn.connect()
        assert conn.sock is not None
        connected.append(conn.sock)
        if expired.is_set():
            cut_off()
        conn.request("POST" if body is not None else "GET", path, body=body, headers=headers)
        response = conn.getresponse()
        data = response.read(limit + 1)
        if expired.is_set():
            raise OSError(f"{url}: no complete answer within the time limit")
        if len(data) > limit:
            raise OSError(f"{url} sent more than {limit} bytes")
        if response.length:  # the connection ended before Content-Length bytes came
            raise OSError(f"{url}: the answer ended {response.length} bytes short")
        return response.status, response.getheader("Location"), data
    except (OSError, http.client.HTTPException) as exc:
        if expired.is_set():
            raise OSError(f"{url}: no complete answer within the time limit") from None
        if isinstance(exc, OSError):
            raise
        raise OSError(f"{url}: {type(exc).__name__}: {exc}") from None
    finally:
        watchdog.cancel()
        conn.close()


class RevocationChecker:
    """Finds the revocation status of certificates (OCSP first, then CRLs).

    ``fetch`` does the HTTP (tests may pass their own); ``timeout`` bounds each request as a
    whole. ``clock`` is the time answers are checked at (their freshness), whatever time a
    certificate is judged at.
    """

    def __init__(
        self,
        fetch: Fetch = http_fetch,
        timeout: float = DEFAULT_TIMEOUT,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.fetch = fetch
        self.timeout = timeout
        self.clock = clock
        # (CA fingerprint, its issuer's) -> (reuse until, answer): see _check_ca.
        self._ca_answers: dict[tuple[str, str], tuple[datetime, RevocationAnswer]] = {}
        # URL -> (failed at, why): not fetched again before SKIP_UNREACHABLE has passed.
        self._unreachable: dict[str, tuple[datetime, str]] = {}

    def check(
        self, cert: x509.Certificate, issuer: x509.Certificate | None, at: datetime
    ) -> RevocationAnswer:
        """The revocation status of ``cert`` (issued by ``issuer``) at ``at``, the answers
        judged fresh or not at the later of ``at`` and the clock (an answer fetched now is
        about now, even when ``at`` is a message's time in the past).

        Tries every OCSP URL, then every CRL URL, and returns the first ``good`` or ``revoked``
        answer; else ``unknown`` when a responder did not know the certificate, ``no-source``
        when the certificate names nowhere to ask, ``unavailable`` (with every failure in the
        reason) when nobody could answer. Never raises for network or response problems.
        """
        ocsp, crls = ocsp_urls(cert), crl_urls(cert)
        if not ocsp and not crls:
            return RevocationAnswer(Revocation.NO_SOURCE, at, reason="no OCSP responder or CRL")
        if issuer is None:
            return RevocationAnswer(
                Revocation.UNAVAILABLE, at, reason="the issuer certificate is not known"
            )
        failures: list[str] = []
        unknown: RevocationAnswer | None = None
        now = max(self.clock(), at)
        for url in ocsp:
            data = self._get(url, ocsp_request(cert, issuer), MAX_OCSP_BYTES, at, failures)
            if data is None:
                continue
            answer = read_ocsp_response(data, cert, issuer, at, url, now=now)
            if answer.status in (Revocation.GOOD, Revocation.REVOKED):
                return answer
            if answer.status == Revocation.UNKNOWN:
                unknown = answer  # a CRL may still know it
            elif answer.reason:
                failures.append(answer.reason)
        for url in crls:
            data = self._get(url, None, MAX_CRL_BYTES, at, failures)
            if data is None:
                continue
            answer = read_crl(data, cert, issuer, at, url, now=now)
            if answer.status in (Revocation.GOOD, Revocation.REVOKED):
                return answer
            if answer.reason:
                failures.append(answer.reason)
        if unknown is not None:
            return unknown
        return RevocationAnswer(Revocation.UNAVAILABLE, at, reason="; ".join(failures))

    def _get(
        self, url: str, body: bytes | None, limit: int, at: datetime, failures: list[str]
    ) -> bytes | None:
        failed = self._unreachable.get(url)
        if failed is not None and failed[0] <= at < failed[0] + SKIP_UNREACHABLE:
            failures.append(
                f"{url} unreachable: {failed[1]} (at {failed[0]:%H:%M}, not asked again yet)"
            )
            return None
        try:
            data = self.fetch(url, body, self.timeout, limit)
        except (OSError, ValueError) as exc:
            why = getattr(exc, "reason", None) or exc
            failures.append(f"{url} unreachable: {why}")
            log.warning("revocation check: %s unreachable: %s", url, why)
            self._unreachable[url] = (at, str(why))
            return None
        self._unreachable.pop(url, None)
        return data

    def check_chain(
        self, cert: x509.Certificate, above: Sequence[x509.Certificate], at: datetime
    ) -> RevocationAnswer:
        """The status of ``cert`` and of the CAs ``above`` it (its issuer first, the trust
        anchor last, which is not asked about), combined by
        :func:`~smime_companion.core.revocation.chain_answer`."""
        cas = [(ca, self._check_ca(ca, issuer, at)) for ca, issuer in itertools.pairwise(above)]
        return chain_answer(self.check(cert, above[0] if above else None, at), cas)

    def revoked_signers(self, result: OpenResult, at: datetime) -> dict[str, str]:
        """The signers of ``result`` that OCSP or a CRL says are revoked (their certificate or
        a CA above it, up to the trust anchor) at ``at``: SHA-256 fingerprint -> where that was
        learnt, for :func:`~smime_companion.core.open.with_revoked_signers`. Only signers whose
        chain reached an anchor are asked about; an unreachable responder revokes nothing."""
        revoked: dict[str, str] = {}
        for signer in result.all_signers():
            chain = signer.chain  # the signer first, the anchor last, when one was reached
            if (
                signer.certificate is None
                or signer.status not in ANCHORED_STATUSES
                or len(chain) < 2
            ):
                continue
            answer = self.check_chain(chain[0], chain[1:], at)
            if answer.status == Revocation.REVOKED:
                why = _described(answer, chain) or "revoked"
                revoked[fingerprint_sha256(signer.certificate)] = why
        return revoked

    def _check_ca(
        self, ca: x509.Certificate, issuer: x509.Certificate, at: datetime
    ) -> RevocationAnswer:
        """:meth:`check` of a CA certificate, remembered until its next update (an hour when it
        has none): many correspondents share one CA, and its CRL can be megabytes."""
        key = (fingerprint_sha256(ca), fingerprint_sha256(issuer))
        known = self._ca_answers.get(key)
        if known is not None and known[0] > at >= known[1].checked:
            return known[1]
        answer = self.check(ca, issuer, at)
        self._ca_answers[key] = (answer.next_update or at + REUSE_WITHOUT_NEXT_UPDATE, answer)
        return answer

    def refresh_in(self, store: CertStore) -> Callable[[CertRecord, datetime], None]:
        """A ``refresh`` callback for :meth:`CertStore.select`: checks one record's certificate
        against its stored issuer and stores the answer (with its evidence) in ``store``."""

        def refresh(record: CertRecord, at: datetime) -> None:
            self.check_and_store(store, record.certificate, record.chain, at)

        return refresh

    def check_and_store(
        self,
        store: CertStore,
        cert: x509.Certificate,
        chain: tuple[x509.Certificate, ...],
        at: datetime,
    ) -> RevocationAnswer:
        """Check ``cert`` and the CA certificates of its ``chain`` (issuer first, the trust
        anchor last, which is not checked) and record the combined answer
        (:func:`~smime_companion.core.revocation.chain_answer`) in ``store``, to be reused until
        its nextUpdate (or :data:`REUSE_WITHOUT_NEXT_UPDATE` when it has none).
        Raises :class:`~smime_companion.errors.CacheError` when the store cannot be written."""
        answer = self.check_chain(cert, chain, at)
        reuse_until = answer.next_update or at + REUSE_WITHOUT_NEXT_UPDATE
        store.set_revocation(
            fingerprint_sha256(cert),
            answer.status,
            at,
            reuse_until,
            source=_described(answer, (cert, *chain)),
            evidence=answer.evidence,
        )
        return answer


def _described(answer: RevocationAnswer, certs: Sequence[x509.Certificate]) -> str | None:
    """Where ``answer`` (about one of ``certs``: the answer may be a CA's) came from, as stored
    and shown: ``ocsp URL`` or ``crl URL``, then its reason when it has one."""
    source = answer.source
    if source is not None:
        source = ("crl " if any(source in crl_urls(c) for c in certs) else "ocsp ") + source
    if answer.reason is None:
        return source
    return f"{source or '-'}: {answer.reason}"

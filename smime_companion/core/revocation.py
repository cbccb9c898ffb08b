"""Revocation checking, the pure half: where to ask (AIA OCSP, CRL distribution points), the OCSP
request to send, and what an OCSP response or a CRL says about one certificate at one time.

Fetching over HTTP is the adapter's business (:mod:`smime_companion.revocation_fetch`).
Everything that arrives from the network is untrusted: a response counts only when it is signed
by the certificate's issuer (or by a responder the issuer delegated with the OCSPSigning usage),
is about this very certificate, and is current at the time given. Anything else is
``unavailable`` with a reason, never an exception.

Two times: ``at`` is when the signature is judged (when we received the message), ``now`` when
the answer is checked. Freshness is judged at ``now``: an answer is evidence about the present,
and judging it at a message's (possibly server-claimed, backdated) time turned a fresh REVOKED
into "dated in the future", hence ``unavailable``, hence passed under ``soft``.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from asn1crypto import core as asn1_core
from asn1crypto import ocsp as asn1_ocsp
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, ExtensionOID

from smime_companion.core.cert_vocabulary import Revocation
from smime_companion.core.certs import (
    CertificateDefect,
    comparable_name,
    describe_subject,
    describe_time,
    extension_value,
)
from smime_companion.core.signatures import certificate_signed_by, signed_by, structure_signed_by

# Clocks differ: a response "produced" slightly in our future is still fine.
CLOCK_SKEW = timedelta(minutes=5)
# Certificates a response carries that are looked at for its delegated responder: a responder
# sends its own (perhaps with its issuer); a hostile one may not make us read thousands.
MAX_RESPONDER_CERTIFICATES = 4
# Certificates one response answers for that are looked at: we ask about one, a signer staples
# one per certificate of its chain; a hostile response may list a million.
MAX_SINGLE_RESPONSES = 16
# An OCSP response without nextUpdate says "newer information is always available" (RFC 6960
# 4.2.2.1): it is believed for this long after its thisUpdate, never longer, so an old "good"
# cannot be replayed over plain HTTP once the certificate is revoked (Mozilla uses one day).
MAX_AGE_WITHOUT_NEXT_UPDATE = timedelta(days=1)


@dataclass(frozen=True)
class RevocationAnswer:
    """What was learnt about one certificate: the status, where from (``ocsp URL`` or
    ``crl URL``), when, until when it may be reused (``next_update``; None: do not reuse), the
    response or CRL bytes as evidence, and one line explaining anything but ``good``."""

    status: Revocation
    checked: datetime
    source: str | None = None
    next_update: datetime | None = None
    evidence: bytes | None = None
    reason: str | None = None


def _uris(names: list[x509.GeneralName]) -> list[str]:
    return [
        n.value
        for n in names
        if isinstance(n, x509.UniformResourceIdentifier) and n.value.startswith("http://")
    ]


def ocsp_urls(cert: x509.Certificate) -> tuple[str, ...]:
    """The http OCSP responder URLs of the certificate's AIA extension (RFC 5280 4.2.2.1).

    Only plain http: OCSP responses are signed, and https would need revocation checks of its
    own. Returns ``()`` when there are none or the extensions cannot be parsed."""
    try:
        aia = extension_value(cert, x509.AuthorityInformationAccess)
    except CertificateDefect:
        return ()
    if aia is None:
        return ()
    return tuple(
        _uris(
            [
                d.access_location
                for d in aia
                if d.access_method == AuthorityInformationAccessOID.OCSP
            ]
        )
    )


def crl_urls(cert: x509.Certificate) -> tuple[str, ...]:
    """The http URLs of the certificate's CRL distribution points (RFC 5280 4.2.1.13), or ``()``."""
    try:
        points = extension_value(cert, x509.CRLDistributionPoints)
    except CertificateDefect:
        return ()
    if points is None:
        return ()
    return tuple(url for p in points if p.full_name for url in _uris(list(p.full_name)))


def ocsp_request(cert: x509.Certificate, issuer: x509.Certificate) -> bytes:
    """The DER OCSP request for ``cert`` issued by ``issuer`` (CertID with SHA-1, which every
    responder understands; RFC 5019)."""
    builder = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, hashes.SHA1())
    return builder.build().public_bytes(serialization.Encoding.DER)


def read_ocsp_response(
    der: bytes,
    cert: x509.Certificate,
    issuer: x509.Certificate,
    at: datetime,
    source: str,
    *,
    now: datetime | None = None,
) -> RevocationAnswer:
    """What the OCSP response ``der`` (fetched from ``source``) says about ``cert`` at ``at``,
    checked at ``now`` (default ``at``).

    ``good``, ``revoked`` or ``unknown`` from a response that is signed by ``issuer`` or by a
    responder it delegated (OCSPSigning usage, valid at ``now``), names ``cert`` and is current
    at ``now`` (not dated after it, not past its nextUpdate, and without a nextUpdate not older
    than :data:`MAX_AGE_WITHOUT_NEXT_UPDATE`); ``unavailable`` with a reason for anything else
    (unparsable, error status, bad signature, another certificate, stale). Never raises.
    """
    now = now or at

    def unavailable(reason: str) -> RevocationAnswer:
        return RevocationAnswer(Revocation.UNAVAILABLE, at, source, None, der, reason)

    try:
        response = ocsp.load_der_ocsp_response(der)
    except ValueError as exc:
        return unavailable(f"OCSP response from {source} is malformed: {exc}")
    if response.response_status != ocsp.OCSPResponseStatus.SUCCESSFUL:
        return unavailable(f"OCSP responder {source} answered {response.response_status.name}")
    try:
        signer = _ocsp_signer(response, issuer, now)
        if signer is None:
            return unavailable(
                f"OCSP response from {source} is not signed by the issuer or by a responder "
                "it delegated that is valid now"
            )
        single = _single_response(response, cert, issuer)
        if single is None:
            return unavailable(f"OCSP response from {source} is not about this certificate")
        this_update = single.this_update_utc
        next_update = single.next_update_utc
        status = single.certificate_status
        revoked_at = single.revocation_time_utc
    except (ValueError, TypeError) as exc:
        return unavailable(f"OCSP response from {source} cannot be read: {exc}")
    if this_update > now + CLOCK_SKEW:
        return unavailable(f"OCSP response from {source} is dated in the future")
    if next_update is not None and next_update < now - CLOCK_SKEW:
        return unavailable(
            f"OCSP response from {source} is stale (next update {describe_time(next_update)})"
        )
    if next_update is None and this_update < now - MAX_AGE_WITHOUT_NEXT_UPDATE - CLOCK_SKEW:
        return unavailable(
            f"OCSP response from {source} has no next update and is older than "
            f"{_hours(MAX_AGE_WITHOUT_NEXT_UPDATE)} hours (produced {describe_time(this_update)})"
        )
    if status == ocsp.OCSPCertStatus.REVOKED:
        when = describe_time(revoked_at) if revoked_at else "an unknown time"
        return RevocationAnswer(
            Revocation.REVOKED, at, source, next_update, der, f"revoked at {when} ({source})"
        )
    if status == ocsp.OCSPCertStatus.UNKNOWN:
        return RevocationAnswer(
            Revocation.UNKNOWN, at, source, next_update, der, f"{source} does not know it"
        )
    return RevocationAnswer(Revocation.GOOD, at, source, next_update, der)


def _single_response(
    response: ocsp.OCSPResponse, cert: x509.Certificate, issuer: x509.Certificate
) -> ocsp.OCSPSingleResponse | None:
    issuer_info = asn1_x509.Certificate.load(issuer.public_bytes(serialization.Encoding.DER))
    key_hashes = {"sha1": issuer_info.public_key.sha1, "sha256": issuer_info.public_key.sha256}
    for single in itertools.islice(response.responses, MAX_SINGLE_RESPONSES):
        expected = key_hashes.get(single.hash_algorithm.name)
        if single.serial_number == cert.serial_number and single.issuer_key_hash == expected:
            return single
    return None


def _hours(delta: timedelta) -> int:
    return int(delta.total_seconds() // 3600)


def _ocsp_signer(
    response: ocsp.OCSPResponse, issuer: x509.Certificate, now: datetime
) -> x509.Certificate | None:
    """The certificate whose key signed ``response``: the issuer itself, or a responder
    certificate included in the response, issued by the issuer for OCSPSigning (RFC 6960 4.2.2.2)
    and valid at ``now`` (an expired responder key may be in anyone's hands). None when
    neither signed it."""
    candidates = [issuer]
    issuer_name = issuer.subject
    for delegate in _responder_certificates(response):
        if delegate.issuer != issuer_name or not certificate_signed_by(delegate, issuer):
            continue
        if not (
            delegate.not_valid_before_utc - CLOCK_SKEW
            <= now
            <= delegate.not_valid_after_utc + CLOCK_SKEW
        ):
            continue
        try:
            eku = extension_value(delegate, x509.ExtendedKeyUsage)
        except CertificateDefect:
            continue
        if eku is not None and ExtendedKeyUsageOID.OCSP_SIGNING in eku:
            candidates.append(delegate)
    for candidate in candidates:
        if signed_by(
            candidate.public_key(),
            response.signature,
            response.tbs_response_bytes,
            response.signature_algorithm_oid.dotted_string,
            _signature_parameters(response),
        ):
            return candidate
    return None


def _responder_certificates(response: ocsp.OCSPResponse) -> list[x509.Certificate]:
    """The first :data:`MAX_RESPONDER_CERTIFICATES` certificates ``response`` carries, read
    with asn1crypto: cryptography's ``certificates`` loads every one, about a millisecond each."""
    try:
        certs = _basic_response(response)["certs"]
        if isinstance(certs, asn1_core.Void):
            return []
        first = itertools.islice(certs, MAX_RESPONDER_CERTIFICATES)
        return [x509.load_der_x509_certificate(cert.dump()) for cert in first]
    except (ValueError, TypeError, KeyError):
        return []


def _signature_parameters(response: ocsp.OCSPResponse) -> Any:
    """The asn1crypto parameters of the response's signature algorithm (RSASSA-PSS needs them)."""
    try:
        return _basic_response(response)["signature_algorithm"]["parameters"]
    except (ValueError, TypeError, KeyError):
        return None


def _basic_response(response: ocsp.OCSPResponse) -> asn1_ocsp.BasicOCSPResponse:
    """The response's BasicOCSPResponse as asn1crypto reads it (lazily: what is asked for)."""
    parsed = asn1_ocsp.OCSPResponse.load(response.public_bytes(serialization.Encoding.DER))
    basic: asn1_ocsp.BasicOCSPResponse = parsed["response_bytes"]["response"].parsed
    return basic


def read_crl(
    data: bytes,
    cert: x509.Certificate,
    issuer: x509.Certificate,
    at: datetime,
    source: str,
    *,
    now: datetime | None = None,
) -> RevocationAnswer:
    """What the CRL ``data`` (DER or PEM, fetched from ``source``) says about ``cert`` at ``at``,
    checked at ``now`` (default ``at``).

    ``revoked`` when it lists the certificate's serial with a revocation date not after ``at``,
    else ``good``; ``unavailable`` with a reason when the CRL cannot be parsed, is not the
    issuer's, is not signed by it, or is not current at ``now``. Never raises.
    """
    now = now or at

    def unavailable(reason: str) -> RevocationAnswer:
        return RevocationAnswer(Revocation.UNAVAILABLE, at, source, None, data, reason)

    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            crl = x509.load_pem_x509_crl(data)
        else:
            crl = x509.load_der_x509_crl(data)
        if crl.issuer != issuer.subject:
            return unavailable(f"CRL from {source} is not issued by {describe_subject(issuer)}")
        if not structure_signed_by(
            crl.public_bytes(serialization.Encoding.DER), issuer.public_key()
        ):
            return unavailable(f"CRL from {source} is not signed by the issuer")
        next_update = crl.next_update_utc
        if crl.last_update_utc > now + CLOCK_SKEW:
            return unavailable(f"CRL from {source} is dated in the future")
        if next_update is not None and next_update < now - CLOCK_SKEW:
            return unavailable(
                f"CRL from {source} is stale (next update {describe_time(next_update)})"
            )
        if next_update is None and crl.last_update_utc < now - MAX_AGE_WITHOUT_NEXT_UPDATE:
            return unavailable(
                f"CRL from {source} has no next update and is older than "
                f"{_hours(MAX_AGE_WITHOUT_NEXT_UPDATE)} hours"
            )
        entry = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
    except (ValueError, TypeError) as exc:
        return unavailable(f"CRL from {source} cannot be read: {exc}")
    if entry is not None and entry.revocation_date_utc <= at + CLOCK_SKEW:
        return RevocationAnswer(
            Revocation.REVOKED,
            at,
            source,
            next_update,
            data,
            f"revoked at {describe_time(entry.revocation_date_utc)} ({source})",
        )
    return RevocationAnswer(Revocation.GOOD, at, source, next_update, data)


# CRLs and OCSP responses a message carries that are looked at: a sender adds one or two; a
# hostile message may not make every signer check cost more.
MAX_CARRIED_CRLS = 8
MAX_CARRIED_OCSP_RESPONSES = 4  # one per certificate of a path is what a signer staples
# A real response is a few kilobytes (a status, a signature, perhaps the responder's certificate).
MAX_OCSP_RESPONSE_BYTES = 64 * 1024


class CarriedCrl:
    """A CRL a message carries (its SignedData's ``crls``), read once for the whole message:
    every signer and every link of every path asks about the same few."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self._signed_by: dict[bytes, bool] = {}

    @functools.cached_property
    def crl(self) -> x509.CertificateRevocationList | None:
        try:
            return x509.load_der_x509_crl(self.data)
        except ValueError:
            return None

    def signed_by(self, issuer: x509.Certificate) -> bool:
        key = issuer.public_bytes(serialization.Encoding.DER)
        if key not in self._signed_by:
            try:
                self._signed_by[key] = structure_signed_by(self.data, issuer.public_key())
            except (ValueError, TypeError, UnsupportedAlgorithm):
                self._signed_by[key] = False
        return self._signed_by[key]


def revoked_by_carried_crls(
    cert: x509.Certificate, issuer: x509.Certificate, crls: tuple[CarriedCrl, ...], at: datetime
) -> str | None:
    """Why ``cert`` was revoked at ``at``, when a CRL the message carries says so: a CRL of
    ``issuer``, signed by it, listing the serial with a revocation date not after ``at``; a
    certificate on hold counts unless a delta CRL of the issuer removes it again. None
    otherwise, also for CRLs that cannot be read or are not the issuer's: a message is no
    source of revocation information one can require, only of evidence. How old the CRL is
    does not matter for a revocation it lists (a CA does not revoke in advance). Never
    raises."""
    issuer_name = comparable_name(issuer.subject)
    listed: list[tuple[x509.RevokedCertificate, bool]] = []  # (entry, from a delta CRL)
    for carried in crls[:MAX_CARRIED_CRLS]:
        crl = carried.crl
        try:
            if crl is None or comparable_name(crl.issuer) != issuer_name or not _usable(crl):
                continue
            if not carried.signed_by(issuer):
                continue
            entry = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
            if entry is not None and not any(e.critical for e in entry.extensions):
                listed.append((entry, _is_delta(crl)))
        except (ValueError, TypeError):
            continue
    removed = any(_reason(entry) == x509.ReasonFlags.remove_from_crl for entry, _ in listed)
    for entry, delta in listed:
        reason = _reason(entry)
        if reason == x509.ReasonFlags.remove_from_crl:
            continue
        if reason == x509.ReasonFlags.certificate_hold and removed:
            continue  # put on hold, then released
        if entry.revocation_date_utc <= at + CLOCK_SKEW:
            return (
                f"was revoked at {describe_time(entry.revocation_date_utc)} (a "
                f"{'delta ' if delta else ''}CRL of {describe_subject(issuer)} the message "
                "carries)"
            )
    return None


class CarriedOcspResponse:
    """An OCSP response a message carries (RFC 5940's ``id-ri-ocsp-response`` among its
    SignedData's ``crls``: a signer "staples" its certificate's status), read once for the whole
    message."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self._signed_for: dict[tuple[bytes, datetime], bool] = {}

    @functools.cached_property
    def response(self) -> ocsp.OCSPResponse | None:
        """The response when it is readable and answered (status ``successful``), else None."""
        try:
            response = ocsp.load_der_ocsp_response(self.data)
        except ValueError:
            return None
        if response.response_status != ocsp.OCSPResponseStatus.SUCCESSFUL:
            return None
        return response

    def signed_for(self, issuer: x509.Certificate, at: datetime) -> bool:
        """Whether ``issuer``, or a responder it delegated that was valid at ``at``, signed it."""
        key = (issuer.public_bytes(serialization.Encoding.DER), at)
        if key not in self._signed_for:
            response = self.response
            try:
                signed = response is not None and _ocsp_signer(response, issuer, at) is not None
            except (ValueError, TypeError, UnsupportedAlgorithm):
                signed = False
            self._signed_for[key] = signed
        return self._signed_for[key]


def revoked_by_carried_ocsp(
    cert: x509.Certificate,
    issuer: x509.Certificate,
    responses: tuple[CarriedOcspResponse, ...],
    at: datetime,
) -> str | None:
    """Why ``cert`` was revoked at ``at``, when an OCSP response the message carries says so:
    signed by ``issuer`` or a responder it delegated, naming ``cert`` as revoked (or on hold)
    since a time not after ``at``. As with carried CRLs, only evidence of a revocation counts:
    a carried "good" proves nothing here (the message chose what to carry), nor does how old
    the response is. None otherwise, also for responses that cannot be read. Never raises."""
    for carried in responses[:MAX_CARRIED_OCSP_RESPONSES]:
        response = carried.response
        if response is None:
            continue
        try:
            single = _single_response(response, cert, issuer)
            if single is None or single.certificate_status != ocsp.OCSPCertStatus.REVOKED:
                continue
            revoked_at = single.revocation_time_utc
            on_hold = single.revocation_reason == x509.ReasonFlags.certificate_hold
        except (ValueError, TypeError):
            continue
        if revoked_at is None or revoked_at > at + CLOCK_SKEW:
            continue
        if not carried.signed_for(issuer, at):
            continue
        what = "put on hold" if on_hold else "revoked"
        return (
            f"was {what} at {describe_time(revoked_at)} (an OCSP response of "
            f"{describe_subject(issuer)} the message carries)"
        )
    return None


# The critical CRL extensions understood well enough to read a listing: RFC 5280 has a CRL
# with any other critical extension set aside.
_KNOWN_CRITICAL_CRL_EXTENSIONS = frozenset(
    {ExtensionOID.ISSUING_DISTRIBUTION_POINT, ExtensionOID.DELTA_CRL_INDICATOR}
)


def _usable(crl: x509.CertificateRevocationList) -> bool:
    """Whether a listing in ``crl`` may be read as it stands: no critical extension we do not
    know, and not an indirect CRL (whose entries may name another CA's certificates)."""
    for extension in crl.extensions:
        if extension.critical and extension.oid not in _KNOWN_CRITICAL_CRL_EXTENSIONS:
            return False
        value = extension.value
        if isinstance(value, x509.IssuingDistributionPoint) and value.indirect_crl:
            return False
    return True


def _is_delta(crl: x509.CertificateRevocationList) -> bool:
    try:
        crl.extensions.get_extension_for_oid(ExtensionOID.DELTA_CRL_INDICATOR)
    except x509.ExtensionNotFound:
        return False
    return True


def _reason(entry: x509.RevokedCertificate) -> x509.ReasonFlags | None:
    try:
        return entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
    except (x509.ExtensionNotFound, ValueError):
        return None


def chain_answer(
    leaf: RevocationAnswer, cas: list[tuple[x509.Certificate, RevocationAnswer]]
) -> RevocationAnswer:
    """One answer for a certificate and the CA certificates above it (``cas``: each
    intermediate between it and the trust anchor, with its own answer).

    A revoked CA revokes everything it issued (RFC 5280 path validation), so any revoked link
    makes the answer ``revoked``, naming the CA. A ``good`` leaf stays good only when no CA's
    status is in doubt: an unreachable or unknowing source for a CA turns it into that doubt,
    which the policy then weighs like the leaf's own. A CA naming no OCSP responder and no CRL
    is common for private CAs and says nothing either way, so it changes nothing. A lasting
    answer is kept until the earliest next update among them.
    """
    for ca, answer in cas:
        if answer.status == Revocation.REVOKED and leaf.status != Revocation.REVOKED:
            return _about_ca(ca, answer, leaf.checked, "is revoked")
    result = leaf
    if leaf.status == Revocation.GOOD:
        for ca, answer in cas:
            if answer.status in (Revocation.UNAVAILABLE, Revocation.UNKNOWN):
                result = _about_ca(ca, answer, leaf.checked, answer.reason or str(answer.status))
                break
    if result.next_update is None:  # an answer not to be kept: asked again soon
        return result
    updates = [a.next_update for a in (leaf, *(a for _, a in cas)) if a.next_update is not None]
    return replace(result, next_update=min(updates))


def _about_ca(
    ca: x509.Certificate, answer: RevocationAnswer, checked: datetime, what: str
) -> RevocationAnswer:
    return replace(answer, checked=checked, reason=f"the issuing CA {describe_subject(ca)}: {what}")

"""Checking a CMS SignedData (RFC 5652 section 5, RFC 8551): signature, chain, usage, address.

:func:`verify_signed_data` takes a parsed SignedData, the bytes that were signed (for a detached
signature) and the facts it must be judged against (trust anchors, a time, the From addresses) and
returns a :class:`~smime_companion.core.model.VerifyOutcome`. Untrusted input never makes it raise:
every problem becomes a status with a one-line reason.

Each SignerInfo is checked in this order, and the first failing check decides its status:

1. cryptography: the digest and signature algorithms are known (else ``unsupported``), the signed
   attributes are well formed (else ``malformed``), the messageDigest and contentType attributes
   match the content and the signature verifies with the signer certificate's key (else
   ``invalid``);
2. algorithm strength: SHA-1 (unless allowed), MD5, RSA keys under 2048 bits, and SHA-1 or MD5
   certificate signatures in the chain give ``weak-algorithm``;
3. chain: a path from the signer certificate to a trust anchor must exist (else ``untrusted``; a
   signer certificate that cannot be found is ``untrusted`` too, since a signature we cannot check
   against any certificate is not attributable to anyone), and every certificate on the chosen path
   must be valid at ``at`` (else ``expired`` / ``not-yet-valid``). Time only decides between paths
   that otherwise build: a missing issuer is ``untrusted`` even when the signer has also expired;
4. usage: the signer's extendedKeyUsage and every intermediate's must allow emailProtection, and the
   signer's keyUsage must allow digitalSignature or nonRepudiation (else ``bad-eku``);
5. address: the message must have exactly one From field holding exactly one address (the one
   From rule of :func:`smime_companion.core.mime.sender_of`), and it must be one of the signer
   certificate's addresses (else ``email-mismatch``).

A later failure is still named in the reason (``...; also untrusted``) so nothing is hidden.

When several certificates of the message match a SignerIdentifier (a duplicate issuer and serial
number, or subject key identifier, can be added by anyone: the certificate set is not signed),
each is tried, and the one whose key verifies the signature is the signer's. Trying them, and
building paths, spends the message's :class:`~smime_companion.core.chain.WorkBudget`.
The layer is ``valid`` when at least one signer is; otherwise it takes the most severe signer status
(:func:`~smime_companion.core.model.signed_data_verdict`).

Not checked here: revocation (CRL/OCSP need I/O; the daemon applies what its certificate store
learnt, see :func:`smime_companion.core.open.with_revoked_signers`), certificate policies,
countersignatures and other unsigned attributes, and name constraints on name forms other than
rfc822Name and directoryName.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from asn1crypto import cms, core
from cryptography import x509

from smime_companion.core.ber_walker import der_elements, oid_dotted
from smime_companion.core.chain import (
    MAX_CERTIFICATES,
    Cert,
    CertificateSet,
    WorkBudget,
    cert_of,
    certificates_in_set,
    dedupe,
)
from smime_companion.core.cms import ASN1_ERRORS
from smime_companion.core.model import SignerReport, VerifyOutcome, signed_data_verdict
from smime_companion.core.revocation import (
    MAX_CARRIED_CRLS,
    MAX_CARRIED_OCSP_RESPONSES,
    MAX_OCSP_RESPONSE_BYTES,
    CarriedCrl,
    CarriedOcspResponse,
)
from smime_companion.core.signatures import SIGNATURE_ALGORITHMS, digest_named_by
from smime_companion.core.signed_attributes import (
    NamedCertificate,
    check_content_attributes,
    read_informational_attributes,
    read_signed_attributes,
    signing_certificates,
)
from smime_companion.core.signer_certificate import check_address, check_chain, check_signer_usage
from smime_companion.core.signer_findings import SignerContext, SignerFindings, Stage, StopChecks
from smime_companion.core.signer_signature import (
    find_by_issuer,
    find_by_key_id,
    find_signer_certificate,
    name_signer,
    verifying_candidate,
)
from smime_companion.core.verdicts import SignatureStatus
from smime_companion.errors import MalformedInput, UsageError, one_line

# Bounds on the work one hostile message can cause.
MAX_SIGNERS = 16  # SignerInfos checked per SignedData; later ones are ignored (and said so)
MAX_EXTRA_CERTIFICATES = 4096  # extra_certificates considered (they come from our own store)


S = SignatureStatus

_ID_DATA = "1.2.840.113549.1.7.1"


# A broken structure, whether our readers or asn1crypto found it.
_BROKEN: tuple[type[Exception], ...] = (MalformedInput, *ASN1_ERRORS)


def verify_signed_data(
    info: cms.ContentInfo,
    detached_content: bytes | None,
    *,
    anchors: Sequence[x509.Certificate],
    at: datetime,
    from_addresses: Sequence[str],
    allow_sha1: bool = False,
    extra_certificates: Sequence[x509.Certificate] = (),
    allow_weak: bool = False,
    from_problem: str | None = None,
    budget: WorkBudget | None = None,
) -> VerifyOutcome:
    """Check every signature of a SignedData and return the verdict with one report per signer.

    ``info`` is a signed-data ``ContentInfo`` from :func:`core.cms.parse_content_info`.
    ``detached_content`` holds the exact signed bytes of a detached signature (multipart/signed);
    when given it is what is verified and returned, even if the SignedData also encapsulates
    content. With None, the encapsulated content is used (BER chunks joined). ``anchors`` are the
    trust anchors, ``at`` the aware time at which certificates must be valid, ``from_addresses``
    the message's From address (a signature is valid only when there is exactly one),
    ``from_problem`` why the message has no single From address (see
    :func:`smime_companion.core.mime.sender_of`; it fails the address check),
    ``extra_certificates`` further certificates (harvested ones, ``open --certfile``) to find the
    signer and its issuers among; a signer certificate the message left out is also looked for
    among the anchors (a self-signed signer, as gpgsm sends by default). ``allow_sha1`` accepts
    SHA-1, ``allow_weak`` every weak algorithm (SHA-1, MD5, RSA under 2048 bits); an accepted
    weakness is still listed in the signer's ``weaknesses``. ``budget`` is what the whole
    message may still spend on path search and certificate signature checks (a fresh
    :class:`WorkBudget` when None).

    Returns a ``VerifyOutcome`` whose ``content`` is the signed content whenever it could be
    found. Raises :class:`UsageError` only for misuse: ``info`` that is not signed-data, or a naive
    ``at``. Problems of the message are statuses, never exceptions.
    """
    if info["content_type"].native != "signed_data":
        raise UsageError(f"verify_signed_data needs signed-data, not {info['content_type'].native}")
    if at.tzinfo is None or at.utcoffset() is None:
        raise UsageError("verify_signed_data needs an aware time (UTC), got a naive datetime")
    signed_data = info["content"]
    try:
        signer_infos = list(signed_data["signer_infos"])
        if not signer_infos:
            raise MalformedInput("SignedData has no SignerInfo")
        content, econtent_type = _signed_content(signed_data, detached_content)
        certificate_set = _message_certificates(signed_data)
        message_certs = list(certificate_set.readable)
    except MalformedInput as exc:
        return VerifyOutcome(
            status=S.MALFORMED,
            content=_available_content(signed_data, detached_content),
            error=str(exc),
        )
    except ASN1_ERRORS as exc:
        return VerifyOutcome(
            status=S.MALFORMED,
            content=_available_content(signed_data, detached_content),
            error=f"SignedData is malformed: {one_line(exc)}",
        )
    note = None
    if len(signer_infos) > MAX_SIGNERS:
        note = f"only the first {MAX_SIGNERS} of {len(signer_infos)} signers were checked"
        signer_infos = signer_infos[:MAX_SIGNERS]

    crls, ocsp_responses = _carried_revocation(signed_data)
    context = SignerContext(
        content=content,
        econtent_type=econtent_type,
        message_certs=message_certs,
        unreadable_certs=certificate_set.unreadable,
        pool=dedupe(message_certs + _extra_certs(extra_certificates)),
        anchors=dedupe([cert_of(c) for c in anchors]),
        at=at,
        from_addresses=tuple(a.strip().lower() for a in from_addresses if a.strip()),
        from_problem=from_problem,
        allow_sha1=allow_sha1 or allow_weak,
        budget=budget if budget is not None else WorkBudget(),
        allow_weak=allow_weak,
        crls=crls,
        ocsp_responses=ocsp_responses,
    )
    reports = tuple(_check_signer_safely(i, si, context) for i, si in enumerate(signer_infos))
    status = signed_data_verdict([r.status for r in reports])
    return VerifyOutcome(status=status, signers=reports, content=content, error=note)


_last_extras: tuple[Sequence[x509.Certificate], list[Cert]] | None = None


def _extra_certs(extra: Sequence[x509.Certificate]) -> list[Cert]:
    """``extra`` as shared ``Cert`` objects. The daemon passes the same (possibly long) list of
    harvested certificates with every message: it is converted once, not per message."""
    global _last_extras
    if not extra:
        return []
    last = _last_extras
    if last is not None and last[0] is extra:
        return last[1]
    converted = [cert_of(c) for c in extra[:MAX_EXTRA_CERTIFICATES]]
    _last_extras = (extra, converted)
    return converted


# --- the signed content and the message's certificates -----------------------------------------


def _signed_content(signed_data: cms.SignedData, detached: bytes | None) -> tuple[bytes, str]:
    """The bytes to verify and the eContentType (dotted). Raises MalformedInput when absent."""
    encap = signed_data["encap_content_info"]
    econtent_type = encap["content_type"].dotted
    if detached is not None:
        return detached, econtent_type
    econtent = encap["content"]
    if isinstance(econtent, core.Void):
        raise MalformedInput("detached signature, but the signed content was not given")
    # bytes() joins the chunks of a BER constructed (streamed) OCTET STRING.
    return bytes(econtent), econtent_type


def _available_content(signed_data: cms.SignedData, detached: bytes | None) -> bytes | None:
    """The content of a SignedData that cannot be checked, when there is one; never raises."""
    try:
        return _signed_content(signed_data, detached)[0]
    except _BROKEN:
        return None


def _message_certificates(signed_data: cms.SignedData) -> CertificateSet:
    """The X.509 certificates of the SignedData (at most MAX_CERTIFICATES), skipping (and
    counting) any that cryptography cannot load, and skipping the other CertificateChoices
    (attribute certificates...)."""
    certs = signed_data["certificates"]
    if isinstance(certs, core.Void):
        return CertificateSet((), 0)
    # A sender attaches the same certificates to every message: read them once per encoding.
    return certificates_in_set(certs.contents)


def _carried_revocation(
    signed_data: cms.SignedData,
) -> tuple[tuple[CarriedCrl, ...], tuple[CarriedOcspResponse, ...]]:
    """The X.509 CRLs and the OCSP responses (RFC 5940) of the SignedData's ``crls``, other
    RevocationInfoChoices skipped; empty when there are none or they cannot be read."""
    try:
        choices = signed_data["crls"]
        if isinstance(choices, core.Void):
            return (), ()
        crls: list[bytes] = []
        responses: list[bytes] = []
        for choice in choices:
            if choice.name == "crl":
                if len(crls) < MAX_CARRIED_CRLS:
                    crls.append(choice.chosen.dump())
            elif len(responses) < MAX_CARRIED_OCSP_RESPONSES:  # looked into only while wanted
                other = choice.chosen
                if len(other.contents) > MAX_OCSP_RESPONSE_BYTES:
                    continue
                if other["other_rev_info_format"].native == "ocsp_response":
                    responses.append(other["other_rev_info"].dump())
        return tuple(map(CarriedCrl, crls)), tuple(map(CarriedOcspResponse, responses))
    except ASN1_ERRORS:
        return (), ()


def _check_signer_safely(
    index: int, signer_info: cms.SignerInfo, ctx: SignerContext
) -> SignerReport:
    # asn1crypto parses lazily, so a broken field may only fail when first read: any such
    # failure makes this signer malformed instead of escaping as an exception.
    findings = SignerFindings()
    try:
        _check_signer(signer_info, ctx, findings)
    except StopChecks:
        pass
    except _BROKEN as exc:
        findings.fail(
            Stage.CRYPTO, S.MALFORMED, f"SignerInfo {index + 1} is malformed: {one_line(exc)}"
        )
    return findings.report(ctx.message_certs)


@dataclass(frozen=True)
class _RawSigner:
    """The fields of a DER SignerInfo, read without asn1crypto (see :func:`_raw_signer`)."""

    digest_oid: str
    signature_oid: str
    sid: tuple[bytes, int] | bytes  # (issuer DER, serial number), or a subject key identifier
    signed_attrs: bytes | None  # the whole [0] IMPLICIT element, None without signed attributes
    signed_attrs_contents: bytes
    signature: bytes


def _raw_signer(si: cms.SignerInfo) -> _RawSigner | None:
    """The SignerInfo's fields read straight from its DER, or None when it is not the plain DER
    shape of RFC 5652 section 5.3 (asn1crypto then reads it). Every message has a new SignerInfo,
    and reading it through asn1crypto objects costs more than checking its RSA signature."""
    try:
        elements = der_elements(si.contents)
        if len(elements) < 5:
            return None
        (version_tag, _, _), (sid_tag, _, sid_value), (digest_tag, _, digest) = elements[:3]
        rest = elements[3:]
        signed_attrs, signed_contents = None, b""
        if rest[0][0] == 0xA0:
            signed_attrs, signed_contents = rest[0][1], rest[0][2]
            rest = rest[1:]
        if len(rest) not in (2, 3) or (len(rest) == 3 and rest[2][0] != 0xA1):
            return None
        (algorithm_tag, _, algorithm), (signature_tag, _, signature) = rest[:2]
        if (version_tag, digest_tag, algorithm_tag, signature_tag) != (0x02, 0x30, 0x30, 0x04):
            return None
        sid: tuple[bytes, int] | bytes
        if sid_tag == 0x80:  # [0] IMPLICIT SubjectKeyIdentifier
            sid = sid_value
        elif sid_tag == 0x30:
            (name_tag, name, _), (serial_tag, _, serial) = der_elements(sid_value)
            if name_tag != 0x30 or serial_tag != 0x02 or not serial:
                return None
            sid = (name, int.from_bytes(serial, "big", signed=True))
        else:
            return None
        digest_oid, signature_oid = (_algorithm_oid(v) for v in (digest, algorithm))
    except ValueError:
        return None
    if digest_oid is None or signature_oid is None:
        return None
    return _RawSigner(
        digest_oid, signature_oid, sid, signed_attrs, signed_contents, bytes(signature)
    )


def _algorithm_oid(contents: bytes) -> str | None:
    """The OID of an AlgorithmIdentifier's contents (OID, optional parameters), or None."""
    elements = der_elements(contents)
    if not 1 <= len(elements) <= 2 or elements[0][0] != 0x06:
        return None
    return oid_dotted(elements[0][2])


def _check_signer(si: cms.SignerInfo, ctx: SignerContext, f: SignerFindings) -> None:
    raw = _raw_signer(si)
    if raw is not None:
        digest_oid, sig_oid = raw.digest_oid, raw.signature_oid
    else:
        digest_oid = si["digest_algorithm"]["algorithm"].dotted
        sig_oid = si["signature_algorithm"]["algorithm"].dotted
    digest = digest_named_by(digest_oid)
    f.digest_algorithm = digest[0] if digest else digest_oid
    signature_kind = SIGNATURE_ALGORITHMS.get(sig_oid)
    f.signature_algorithm = signature_kind[0] if signature_kind else sig_oid
    if digest is None:
        f.fail(Stage.CRYPTO, S.UNSUPPORTED, f"digest algorithm {digest_oid} is not supported")
        raise StopChecks
    if signature_kind is None:
        f.fail(Stage.CRYPTO, S.UNSUPPORTED, f"signature algorithm {sig_oid} is not supported")
        raise StopChecks

    # Look the certificate up first so that every report names it, even an invalid one's.
    if raw is not None:
        candidates = (
            find_by_key_id(raw.sid, ctx.pool)
            if isinstance(raw.sid, bytes)
            else find_by_issuer(*raw.sid, ctx.pool)
        )
    else:
        candidates = find_signer_certificate(si["sid"], ctx.pool)
    if not candidates and ctx.anchors:
        # Not in the message nor among the extra certificates: a self-signed signer configured
        # as a trust anchor (gpgsm sends no certificate for one by default).
        candidates = (
            find_signer_certificate(si["sid"], ctx.anchors)
            if raw is None
            else find_by_key_id(raw.sid, ctx.anchors)
            if isinstance(raw.sid, bytes)
            else find_by_issuer(*raw.sid, ctx.anchors)
        )
    if candidates:
        name_signer(candidates[0], ctx, f)

    signed_attrs: cms.CMSAttributes | bytes | None
    if raw is not None:
        signed_attrs = raw.signed_attrs
    else:
        asn1_attrs = si["signed_attrs"]
        signed_attrs = None if isinstance(asn1_attrs, core.Void) else asn1_attrs
    named: list[NamedCertificate] = []
    if signed_attrs is not None:
        attrs = read_signed_attributes(signed_attrs, f)
        read_informational_attributes(attrs, f)
        check_content_attributes(attrs, digest[0], ctx, f)
        named = signing_certificates(attrs, f)
    elif ctx.econtent_type != _ID_DATA:
        # RFC 5652 section 5.3: without signed attributes nothing would bind the content type
        # to the signature, so they are required for any content other than id-data.
        f.fail(
            Stage.CRYPTO, S.MALFORMED, "content other than id-data signed without signed attributes"
        )
        raise StopChecks

    if not candidates:
        if len(ctx.message_certs) >= MAX_CERTIFICATES:  # the set was cut at the limit
            reason = (
                f"the signer certificate is not among the first {MAX_CERTIFICATES} certificates "
                "of the message (the rest were not read)"
            )
        elif ctx.unreadable_certs:
            reason = (
                f"the signer certificate is not among the certificates of the message that can "
                f"be read ({ctx.unreadable_certs} could not be: broken encoding or names), nor "
                "among the trust anchors and the certificates given"
            )
        else:
            reason = (
                "the signer certificate is not in the message, nor among the trust anchors "
                "and the certificates given (open --certfile, or harvested)"
            )
        f.fail(Stage.CHAIN, S.UNTRUSTED, reason)
        raise StopChecks

    if named and len(candidates) > 1:  # twins share the identifier: try the named one first
        preferred = next((c for c in candidates if all(n.names(c) for n in named)), None)
        if preferred is not None and preferred is not candidates[0]:
            candidates = [preferred, *(c for c in candidates if c is not preferred)]
            name_signer(preferred, ctx, f)
    signature = raw.signature if raw is not None else bytes(si["signature"].native)
    candidate = verifying_candidate(
        si, signature, sig_oid, digest[0], candidates, signed_attrs, ctx, f
    )
    if not all(n.names(candidate) for n in named):
        f.fail(
            Stage.CRYPTO,
            S.INVALID,
            "the signed signing-certificate attribute names another certificate than the one "
            "whose key verifies the signature (a certificate put in place of the signer's)",
        )
        raise StopChecks
    check_chain(candidate, ctx, f)
    check_signer_usage(candidate, f)
    check_address(ctx, f)

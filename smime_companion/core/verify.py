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

import hmac
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from asn1crypto import cms, core
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa

from smime_companion.core.cert_loading import certificate_notes
from smime_companion.core.certs import (
    capabilities_from_attribute,
    name_to_rfc4514,
)
from smime_companion.core.chain import (
    MAX_CERTIFICATES,
    Cert,
    PathBuilder,
    WorkBudget,
    cert_of,
    certificates_in_set,
    dedupe,
    name_constraint_violation,
)
from smime_companion.core.cms import ASN1_ERRORS, der_elements, oid_dotted, read_attributes
from smime_companion.core.model import (
    SIGNATURE_SEVERITY,
    SignatureStatus,
    SignerReport,
    VerifyOutcome,
    signed_data_verdict,
)
from smime_companion.core.signatures import (
    DIGESTS,
    HASH_FACTORIES,
    SIGNATURE_ALGORITHMS,
    KeyMismatch,
    SignatureAlgorithmError,
    signature_algorithm,
    signature_verifies,
)
from smime_companion.errors import MalformedInput, UsageError

# Bounds on the work one hostile message can cause.
MAX_SIGNERS = 16  # SignerInfos checked per SignedData; later ones are ignored (and said so)
MAX_EXTRA_CERTIFICATES = 4096  # extra_certificates considered (they come from our own store)

MIN_RSA_BITS = 2048

S = SignatureStatus

_ID_DATA = "1.2.840.113549.1.7.1"

_OID_MS_ENCRYPTION_KEY_PREFERENCE = "1.3.6.1.4.1.311.16.4"
# RFC 5652 section 11 / RFC 8551 section 2.5: attributes that may occur once, with one value.
_SINGLE_ATTRIBUTES = {
    "1.2.840.113549.1.9.3": "contentType",
    "1.2.840.113549.1.9.4": "messageDigest",
    "1.2.840.113549.1.9.5": "signingTime",
}

# A broken structure, whether our readers or asn1crypto found it.
_BROKEN: tuple[type[Exception], ...] = (MalformedInput, *ASN1_ERRORS)

# Stages of the per-signer checks, in the order of the issue-16 verdict model: a problem's
# severity (SIGNATURE_SEVERITY) decides the status; the stages order the paths compared.
_CRYPTO, _CHAIN, _USAGE, _ADDRESS, _WEAK = range(5)
_RANK = {status: rank for rank, status in enumerate(SIGNATURE_SEVERITY)}


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
        message_certs = _message_certificates(signed_data)
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
            error=f"SignedData is malformed: {_one_line(exc)}",
        )
    note = None
    if len(signer_infos) > MAX_SIGNERS:
        note = f"only the first {MAX_SIGNERS} of {len(signer_infos)} signers were checked"
        signer_infos = signer_infos[:MAX_SIGNERS]

    context = _Context(
        content=content,
        econtent_type=econtent_type,
        message_certs=message_certs,
        pool=dedupe(message_certs + _extra_certs(extra_certificates)),
        anchors=dedupe([cert_of(c) for c in anchors]),
        at=at,
        from_addresses=tuple(a.strip().lower() for a in from_addresses if a.strip()),
        from_problem=from_problem,
        allow_sha1=allow_sha1 or allow_weak,
        budget=budget if budget is not None else WorkBudget(),
        allow_weak=allow_weak,
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


def _message_certificates(signed_data: cms.SignedData) -> list[Cert]:
    """The X.509 certificates of the SignedData (at most MAX_CERTIFICATES), skipping any that
    cryptography cannot load and the other CertificateChoices (attribute certificates...)."""
    certs = signed_data["certificates"]
    if isinstance(certs, core.Void):
        return []
    # A sender attaches the same certificates to every message: read them once per encoding.
    return list(certificates_in_set(certs.contents))


# --- one signer ------------------------------------------------------------------------------


@dataclass
class _Context:
    content: bytes
    econtent_type: str
    message_certs: list[Cert]
    pool: list[Cert]  # message certificates, then extra certificates
    anchors: list[Cert]
    at: datetime
    from_addresses: tuple[str, ...]
    from_problem: str | None
    allow_sha1: bool
    budget: WorkBudget
    allow_weak: bool = False
    digests: dict[str, bytes] = field(default_factory=dict)  # content digest by algorithm name
    _builder: PathBuilder | None = None

    @property
    def builder(self) -> PathBuilder:
        """The path builder every signer of this SignedData shares (and its dead ends)."""
        if self._builder is None:
            self._builder = PathBuilder(self.anchors, self.pool, self.budget)
        return self._builder

    def content_digest(self, name: str) -> bytes:
        # Several signers usually share an algorithm: hash the (possibly large) content once.
        if name not in self.digests:
            h = hashes.Hash(HASH_FACTORIES[name]())
            h.update(self.content)
            self.digests[name] = h.finalize()
        return self.digests[name]


@dataclass
class _Findings:
    """What the checks of one signer learnt; becomes a SignerReport."""

    problems: list[tuple[int, SignatureStatus, str]] = field(default_factory=list)
    certificate: x509.Certificate | None = None
    chain: tuple[x509.Certificate, ...] = ()
    addresses: tuple[str, ...] = ()
    address: str | None = None
    digest_algorithm: str | None = None
    signature_algorithm: str | None = None
    signing_time: datetime | None = None
    capabilities: tuple[str, ...] = ()
    capability_oids: tuple[str, ...] = ()
    encryption_key_preference: tuple[Any, ...] | None = None
    weaknesses: list[str] = field(default_factory=list)

    def fail(self, stage: int, status: SignatureStatus, reason: str) -> None:
        self.problems.append((stage, status, reason))

    def weak(self, reason: str, allowed: bool) -> None:
        """A weak algorithm: always listed, a problem unless the caller accepts it."""
        if reason not in self.weaknesses:
            self.weaknesses.append(reason)
        if not allowed:
            self.fail(_WEAK, S.WEAK_ALGORITHM, reason)

    def report(self, message_certs: list[Cert]) -> SignerReport:
        if self.problems:
            # The most severe problem decides; sorted() is stable, so among equals the first
            # found wins.
            ordered = sorted(self.problems, key=lambda p: (_RANK[p[1]], p[0]))
            status, reason = ordered[0][1], ordered[0][2]
            others = list(dict.fromkeys(str(p[1]) for p in ordered[1:] if p[1] != status))
            if others:
                reason = f"{reason}; also {', '.join(others)}"
        else:
            status, reason = S.VALID, None
        return SignerReport(
            status=status,
            reason=reason,
            address=self.address,
            addresses=self.addresses,
            certificate=self.certificate,
            chain=self.chain,
            certificates_in_message=tuple(c.cert for c in message_certs),
            digest_algorithm=self.digest_algorithm,
            signature_algorithm=self.signature_algorithm,
            signing_time=self.signing_time,
            capabilities=self.capabilities,
            capability_oids=self.capability_oids,
            encryption_key_preference=self.encryption_key_preference,
            notes=tuple(n for c in self.chain or () for n in certificate_notes(c)),
            problems=tuple(
                dict.fromkeys(
                    (p[1], p[2]) for p in sorted(self.problems, key=lambda p: (_RANK[p[1]], p[0]))
                )
            ),
            weaknesses=tuple(self.weaknesses),
        )


class _Stop(Exception):
    """Ends the checks of one signer early (a problem was recorded in the findings)."""


def _check_signer_safely(index: int, signer_info: cms.SignerInfo, ctx: _Context) -> SignerReport:
    # asn1crypto parses lazily, so a broken field may only fail when first read: any such
    # failure makes this signer malformed instead of escaping as an exception.
    findings = _Findings()
    try:
        _check_signer(signer_info, ctx, findings)
    except _Stop:
        pass
    except _BROKEN as exc:
        findings.fail(
            _CRYPTO, S.MALFORMED, f"SignerInfo {index + 1} is malformed: {_one_line(exc)}"
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


def _check_signer(si: cms.SignerInfo, ctx: _Context, f: _Findings) -> None:
    raw = _raw_signer(si)
    if raw is not None:
        digest_oid, sig_oid = raw.digest_oid, raw.signature_oid
    else:
        digest_oid = si["digest_algorithm"]["algorithm"].dotted
        sig_oid = si["signature_algorithm"]["algorithm"].dotted
    digest = DIGESTS.get(digest_oid)
    f.digest_algorithm = digest[0] if digest else digest_oid
    signature_kind = SIGNATURE_ALGORITHMS.get(sig_oid)
    f.signature_algorithm = signature_kind[0] if signature_kind else sig_oid
    if digest is None:
        f.fail(_CRYPTO, S.UNSUPPORTED, f"digest algorithm {digest_oid} is not supported")
        raise _Stop
    if signature_kind is None:
        f.fail(_CRYPTO, S.UNSUPPORTED, f"signature algorithm {sig_oid} is not supported")
        raise _Stop

    # Look the certificate up first so that every report names it, even an invalid one's.
    if raw is not None:
        candidates = (
            _find_by_key_id(raw.sid, ctx.pool)
            if isinstance(raw.sid, bytes)
            else _find_by_issuer(*raw.sid, ctx.pool)
        )
    else:
        candidates = _find_signer_certificate(si["sid"], ctx.pool)
    if not candidates and ctx.anchors:
        # Not in the message nor among the extra certificates: a self-signed signer configured
        # as a trust anchor (gpgsm sends no certificate for one by default).
        candidates = (
            _find_signer_certificate(si["sid"], ctx.anchors)
            if raw is None
            else _find_by_key_id(raw.sid, ctx.anchors)
            if isinstance(raw.sid, bytes)
            else _find_by_issuer(*raw.sid, ctx.anchors)
        )
    if candidates:
        _name_signer(candidates[0], ctx, f)

    signed_attrs: cms.CMSAttributes | bytes | None
    if raw is not None:
        signed_attrs = raw.signed_attrs
    else:
        asn1_attrs = si["signed_attrs"]
        signed_attrs = None if isinstance(asn1_attrs, core.Void) else asn1_attrs
    if signed_attrs is not None:
        attrs = _read_signed_attributes(signed_attrs, f)
        _read_informational_attributes(attrs, f)
        _check_content_attributes(attrs, digest[0], ctx, f)
    elif ctx.econtent_type != _ID_DATA:
        # RFC 5652 section 5.3: without signed attributes nothing would bind the content type
        # to the signature, so they are required for any content other than id-data.
        f.fail(_CRYPTO, S.MALFORMED, "content other than id-data signed without signed attributes")
        raise _Stop

    if not candidates:
        if len(ctx.message_certs) >= MAX_CERTIFICATES:  # the set was cut at the limit
            reason = (
                f"the signer certificate is not among the first {MAX_CERTIFICATES} certificates "
                "of the message (the rest were not read)"
            )
        else:
            reason = (
                "the signer certificate is not in the message, nor among the trust anchors "
                "and the certificates given (open --certfile, or harvested)"
            )
        f.fail(_CHAIN, S.UNTRUSTED, reason)
        raise _Stop

    signature = raw.signature if raw is not None else bytes(si["signature"].native)
    candidate = _verifying_candidate(
        si, signature, sig_oid, digest[0], candidates, signed_attrs, ctx, f
    )
    _check_chain(candidate, ctx, f)
    _check_signer_usage(candidate, f)
    _check_address(ctx, f)


# --- signed attributes -----------------------------------------------------------------------


def _read_signed_attributes(
    signed_attrs: cms.CMSAttributes | bytes, f: _Findings
) -> dict[str, list[bytes]]:
    """The DER of the attribute values by dotted type; records ``malformed`` for a repeated
    one-off. ``signed_attrs`` is the parsed field or the whole [0] element's encoding. Values
    are decoded only where they are used (see the readers below)."""
    if isinstance(signed_attrs, bytes):
        contents = der_elements(signed_attrs)[0][2]
    else:
        contents = signed_attrs.contents
    try:
        # A direct walk of the DER: several times cheaper than asn1crypto's objects.
        listed = read_attributes(contents)
    except ValueError:
        # Not DER (an indefinite length, say): asn1crypto reads BER, and each value's encoding
        # as received is what the readers below decode.
        parsed = (
            cms.CMSAttributes.load(b"\x31" + signed_attrs[1:])
            if isinstance(signed_attrs, bytes)
            else signed_attrs
        )
        listed = [(a["type"].dotted, [v.dump() for v in a["values"]]) for a in parsed]
    attrs: dict[str, list[bytes]] = {}
    for oid, values in listed:
        if oid in attrs and oid in _SINGLE_ATTRIBUTES:
            f.fail(_CRYPTO, S.MALFORMED, f"signed attributes repeat {_SINGLE_ATTRIBUTES[oid]}")
            raise _Stop
        if oid in _SINGLE_ATTRIBUTES and len(values) != 1:
            f.fail(_CRYPTO, S.MALFORMED, f"{_SINGLE_ATTRIBUTES[oid]} attribute must have one value")
            raise _Stop
        attrs.setdefault(oid, []).extend(values)
    return attrs


def _check_content_attributes(
    attrs: dict[str, list[bytes]], digest_name: str, ctx: _Context, f: _Findings
) -> None:
    # RFC 5652 section 5.3: with signed attributes, contentType and messageDigest are required;
    # they are what binds the signature to this content.
    content_type = attrs.get("1.2.840.113549.1.9.3")
    if content_type is None:
        f.fail(_CRYPTO, S.INVALID, "signed attributes lack the contentType attribute")
        raise _Stop
    if _oid_value(content_type[0]) != ctx.econtent_type:
        f.fail(_CRYPTO, S.INVALID, "contentType attribute differs from the encapsulated type")
        raise _Stop
    message_digest = attrs.get("1.2.840.113549.1.9.4")
    if message_digest is None:
        f.fail(_CRYPTO, S.INVALID, "signed attributes lack the messageDigest attribute")
        raise _Stop
    expected = ctx.content_digest(digest_name)
    digest = _octet_string_value(message_digest[0])
    if not hmac.compare_digest(digest, expected):
        f.fail(_CRYPTO, S.INVALID, "message digest does not match the content (content altered)")
        raise _Stop


def _oid_value(encoded: bytes) -> str:
    """The dotted OID of a DER OBJECT IDENTIFIER. Raises ValueError for anything else."""
    if encoded[:1] != b"\x06":
        raise ValueError("contentType attribute is not an OBJECT IDENTIFIER")
    return oid_dotted(der_elements(encoded)[0][2])


def _octet_string_value(encoded: bytes) -> bytes:
    """The value of a DER OCTET STRING (a BER one through asn1crypto). Raises ValueError."""
    if encoded[:1] == b"\x04":
        return der_elements(encoded)[0][2]
    return bytes(core.OctetString.load(encoded, strict=True).native)


def _signing_time(encoded: bytes) -> datetime:
    """The time of a DER UTCTime or GeneralizedTime. The plain ``...Z`` forms DER requires are
    read here; anything else goes through asn1crypto. Raises ValueError."""
    tag, value = encoded[:1], encoded[2:]
    if encoded[1:2] == bytes([len(value)]) and value.endswith(b"Z") and value[:-1].isdigit():
        if tag == b"\x17" and len(value) == 13:  # UTCTime YYMMDDHHMMSSZ
            year = int(value[:2])
            # RFC 5280 section 4.1.2.5.1: YY under 50 is 20YY.
            return _utc_datetime(year + (2000 if year < 50 else 1900), value[2:12])
        if tag == b"\x18" and len(value) == 15:  # GeneralizedTime YYYYMMDDHHMMSSZ
            return _utc_datetime(int(value[:4]), value[4:14])
    native = cms.Time.load(encoded, strict=True).native
    if not isinstance(native, datetime):
        raise ValueError("signingTime is not a time")
    return native


def _utc_datetime(year: int, rest: bytes) -> datetime:
    """``rest`` is MMDDHHMMSS. Raises ValueError for an impossible date."""
    month, day, hour, minute, second = (int(rest[i : i + 2]) for i in range(0, 10, 2))
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def _read_informational_attributes(attrs: dict[str, list[bytes]], f: _Findings) -> None:
    """Signing time, capabilities and key preference. These only inform: a broken one is
    ignored rather than failing a signature that is otherwise sound."""
    signing_time = attrs.get("1.2.840.113549.1.9.5")
    if signing_time:
        try:
            f.signing_time = _signing_time(signing_time[0])
        except (ValueError, TypeError):
            pass
    capabilities = attrs.get("1.2.840.113549.1.9.15")
    if capabilities:
        try:
            f.capabilities, f.capability_oids = capabilities_from_attribute(capabilities[0])
        except MalformedInput:
            pass
    try:
        f.encryption_key_preference = _encryption_key_preference(attrs)
    except ASN1_ERRORS:
        pass


def _encryption_key_preference(attrs: dict[str, list[bytes]]) -> tuple[Any, ...] | None:
    """SMIMEEncryptionKeyPreference (RFC 8551 section 2.5.3) or Microsoft's attribute.

    Returns ``("issuer-serial", issuer_rfc4514, serial)``, ``("ski", hex)`` for a recipientKeyId,
    ``("alt-ski", hex)`` for a subjectAltKeyIdentifier, or None.
    """
    preference = attrs.get("1.2.840.113549.1.9.16.2.11")
    if preference:
        choice = cms.SMIMEEncryptionKeyPreference.load(preference[0], strict=True)
        if choice.name == "issuer_and_serial_number":
            ias = choice.chosen
            return ("issuer-serial", name_to_rfc4514(ias["issuer"]), ias["serial_number"].native)
        if choice.name == "recipientKeyId":
            return ("ski", bytes(choice.chosen["subjectKeyIdentifier"].native).hex())
        return ("alt-ski", bytes(choice.chosen.native).hex())
    microsoft = attrs.get(_OID_MS_ENCRYPTION_KEY_PREFERENCE)
    if microsoft:
        # asn1crypto does not know this OID: its value is an IssuerAndSerialNumber.
        ias = cms.IssuerAndSerialNumber.load(microsoft[0], strict=True)
        return ("issuer-serial", name_to_rfc4514(ias["issuer"]), ias["serial_number"].native)
    return None


def _signed_bytes(signed_attrs: cms.CMSAttributes | bytes) -> Iterator[bytes]:
    """What the signer signed: the DER SET OF the signed attributes (RFC 5652 section 5.4).

    The attributes arrive as ``[0] IMPLICIT``; the signature covers the same bytes with the
    universal SET tag (0x31). We use the bytes as received, never asn1crypto's re-serialisation;
    only when they are not DER (e.g. an indefinite length) is a DER re-encoding also tried, since
    the signer had to sign DER and we check the parsed attributes' values either way. A generator:
    the re-encoding costs as much as the rest of the check, so it is made only when needed.
    """
    encoded = signed_attrs if isinstance(signed_attrs, bytes) else signed_attrs.dump()
    as_set = b"\x31" + encoded[1:]
    yield as_set
    try:
        reencoded = cms.CMSAttributes.load(as_set).dump(force=True)
    except ASN1_ERRORS:
        # asn1crypto cannot re-encode every value it parses (bench/fuzz_open.py found one under
        # universal tag 8 that raised AttributeError): then the bytes as received are the only
        # candidate, and a signature that does not verify over them is invalid.
        return
    if reencoded != as_set:
        yield reencoded


# --- the signer certificate and the signature ------------------------------------------------


def _find_signer_certificate(sid: cms.SignerIdentifier, pool: list[Cert]) -> list[Cert]:
    """The certificates named by the SignerIdentifier: issuerAndSerialNumber or SKI."""
    if sid.name == "issuer_and_serial_number":
        return _find_by_issuer(*_issuer_and_serial(sid.chosen), pool)
    return _find_by_key_id(bytes(sid.chosen.native), pool)


def _find_by_issuer(issuer_der: bytes, serial: int, pool: list[Cert]) -> list[Cert]:
    """Every certificate of ``pool`` with that issuer and serial number, in pool order."""
    found = [c for c in pool if c.serial == serial and c.issuer_der == issuer_der]
    if found:
        return found
    # Fall back to asn1crypto's comparison, which normalises string types and case as
    # RFC 5280 section 7.1 asks, for issuers encoded differently than in the certificate.
    same_serial = [c for c in pool if c.serial == serial]
    if not same_serial:
        return []
    issuer = asn1_x509.Name.load(issuer_der)
    return [c for c in same_serial if _same_name(c.issuer, issuer)]


def _find_by_key_id(key_id: bytes, pool: list[Cert]) -> list[Cert]:
    """Every certificate of ``pool`` with that subject key identifier, in pool order."""
    return [c for c in pool if (ids := c.key_ids) is not None and ids[1] == key_id]


def _name_signer(cert: Cert, ctx: _Context, f: _Findings) -> None:
    """Record ``cert`` as the signer's certificate in the findings."""
    f.certificate = cert.cert
    f.chain = (cert.cert,)
    f.addresses = cert.addresses
    matching = [a for a in f.addresses if a in ctx.from_addresses]
    named = matching or list(f.addresses)
    f.address = named[0] if named else None


def _verifying_candidate(
    si: cms.SignerInfo,
    signature: bytes,
    signature_oid: str,
    digest_name: str,
    candidates: list[Cert],
    signed_attrs: cms.CMSAttributes | bytes | None,
    ctx: _Context,
    f: _Findings,
) -> Cert:
    """The first of ``candidates`` whose key verifies the signature, named in the findings with
    what its check found (a weak algorithm, say). When none does, the first candidate's failure
    is recorded and :class:`_Stop` raised. Every candidate after the first spends one signature
    check of the message's budget; when it runs out, the signer is ``untrusted``."""
    if len(candidates) == 1:  # the usual case: no trial findings to keep apart
        options = _signed_bytes(signed_attrs) if signed_attrs is not None else iter([ctx.content])
        _check_signature(si, signature, signature_oid, digest_name, candidates[0], options, ctx, f)
        return candidates[0]
    first: _Findings | None = None
    for index, cert in enumerate(candidates):
        if index and not ctx.budget.take_signature_check():
            f.fail(
                _CHAIN,
                S.UNTRUSTED,
                f"gave up after trying {index} certificates that share the signer's identifier",
            )
            raise _Stop
        trial = _Findings()
        options = _signed_bytes(signed_attrs) if signed_attrs is not None else iter([ctx.content])
        try:
            _check_signature(si, signature, signature_oid, digest_name, cert, options, ctx, trial)
        except _Stop:
            if first is None:
                first = trial
            continue
        if index:
            _name_signer(cert, ctx, f)
        f.problems.extend(trial.problems)
        f.weaknesses.extend(w for w in trial.weaknesses if w not in f.weaknesses)
        return cert
    assert first is not None
    f.problems.extend(first.problems)
    f.weaknesses.extend(w for w in first.weaknesses if w not in f.weaknesses)
    raise _Stop


def _issuer_and_serial(ias: cms.IssuerAndSerialNumber) -> tuple[bytes, int]:
    """The issuer's DER and the serial number, read from the DER directly when it is DER."""
    try:
        (name_tag, name, _), (int_tag, _, serial) = der_elements(ias.contents)
        if name_tag == 0x30 and int_tag == 0x02 and serial:
            return name, int.from_bytes(serial, "big", signed=True)
    except ValueError:
        pass
    return ias["issuer"].dump(), int(ias["serial_number"].native)


def _same_name(name: x509.Name, other: asn1_x509.Name) -> bool:
    try:
        return bool(asn1_x509.Name.load(name.public_bytes()) == other)
    except ASN1_ERRORS:
        return False  # a name asn1crypto cannot compare matches no certificate


def _check_signature(
    si: cms.SignerInfo,
    signature: bytes,
    signature_oid: str,
    digest_name: str,
    cert: Cert,
    candidates: Iterator[bytes],
    ctx: _Context,
    f: _Findings,
) -> None:
    try:
        key = cert.public_key
    except (ValueError, UnsupportedAlgorithm):
        f.fail(_CRYPTO, S.UNSUPPORTED, "the signer certificate's key type is not supported")
        raise _Stop from None
    # The hash inside the signature: fixed by the OID (sha256WithRSAEncryption...), by the PSS
    # parameters, or else the digestAlgorithm (rsaEncryption, id-ecPublicKey).
    is_pss = SIGNATURE_ALGORITHMS[signature_oid][0] == "rsa-pss"
    try:
        algorithm = signature_algorithm(
            signature_oid, si["signature_algorithm"]["parameters"] if is_pss else None, digest_name
        )
    except SignatureAlgorithmError as exc:
        f.fail(_CRYPTO, S.MALFORMED if exc.malformed else S.UNSUPPORTED, str(exc))
        raise _Stop from None
    for data in candidates:
        try:
            if signature_verifies(key, signature, data, algorithm):
                break
        except KeyMismatch:
            f.fail(
                _CRYPTO,
                S.INVALID,
                f"signature algorithm {algorithm.scheme} does not fit a {cert.key_description} key",
            )
            raise _Stop from None
        except (ValueError, UnsupportedAlgorithm) as exc:
            f.fail(
                _CRYPTO,
                S.UNSUPPORTED,
                f"cannot check {algorithm.scheme} signature: {_one_line(exc)}",
            )
            raise _Stop from None
    else:
        f.fail(_CRYPTO, S.INVALID, "signature does not verify with the signer certificate's key")
        raise _Stop

    # The signature is sound; now judge how strong its algorithms are.
    for used in dict.fromkeys((digest_name, algorithm.hash_name or digest_name)):
        if used in ("md5", "sha1"):
            f.weak(
                f"signed with {_HASH_NAMES[used]}, no longer trusted",
                ctx.allow_weak or (used == "sha1" and ctx.allow_sha1),
            )
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < MIN_RSA_BITS:
        f.weak(f"signer key is RSA-{key.key_size}, under {MIN_RSA_BITS}", ctx.allow_weak)


# --- the certificate path --------------------------------------------------------------------


def _check_chain(signer: Cert, ctx: _Context, f: _Findings) -> None:
    """Build the paths from the signer to an anchor and record the best path's problems."""
    builder = ctx.builder
    paths = builder.paths(signer)
    if not paths:
        f.fail(_CHAIN, S.UNTRUSTED, builder.why_not(signer))
        # Every problem found is reported: the signer's own validity too, beside the verdict.
        validity = _validity_problem(signer, "signer certificate", ctx.at)
        if validity is not None:
            f.fail(_CHAIN, *validity)
        return
    judged = []
    for path in paths:
        weaknesses: list[str] = []
        judged.append((path, _path_problems(path, ctx, f.addresses, weaknesses), weaknesses))
    # The best path is the one whose first problem comes latest (none at all is best), then the
    # one with fewest problems: a renewed intermediate wins over an expired twin.
    path, problems, path_weaknesses = min(
        judged, key=lambda item: (min((p[0] for p in item[1]), default=99) * -1, len(item[1]))
    )
    f.chain = tuple(c.cert for c in path)
    f.problems.extend(problems)
    for reason in path_weaknesses:
        if reason not in f.weaknesses:
            f.weaknesses.append(reason)


def _validity_problem(c: Cert, role: str, at: datetime) -> tuple[SignatureStatus, str] | None:
    """``expired`` or ``not-yet-valid`` with its reason when ``c`` is not valid at ``at``."""
    not_before, not_after = c.validity
    if at < not_before:
        return S.NOT_YET_VALID, f"{role} {c.subject_text} is valid from {not_before.date()}"
    if at > not_after:
        return S.EXPIRED, f"{role} {c.subject_text} expired on {not_after.date()}"
    return None


def _path_problems(
    path: tuple[Cert, ...], ctx: _Context, addresses: tuple[str, ...], weaknesses: list[str]
) -> list[tuple[int, SignatureStatus, str]]:
    """The problems of one path; its weak algorithms are added to ``weaknesses`` (and are
    problems only when not accepted)."""
    problems: list[tuple[int, SignatureStatus, str]] = []
    for position, c in enumerate(path):
        role = _role(position, len(path))
        subject = c.subject_text
        validity = _validity_problem(c, role, ctx.at)
        if validity is not None:
            problems.append((_CHAIN, *validity))
        if 0 < position < len(path) - 1 and not c.usable_for_email:
            problems.append((_USAGE, S.BAD_EKU, f"{role} {subject} is not for email protection"))
        if position < len(path) - 1:
            # The anchor's own signature and key are not judged: it is trusted by configuration.
            found: list[tuple[str, bool]] = []
            if 0 < position and c.rsa_bits < MIN_RSA_BITS:
                found.append((f"{role} {subject} has an RSA-{c.rsa_bits} key", ctx.allow_weak))
            if c.signature_hash in _HASH_NAMES:
                hash_name = str(c.signature_hash)
                found.append(
                    (
                        f"{role} {subject} is signed with {_HASH_NAMES[hash_name]}",
                        ctx.allow_weak or (hash_name == "sha1" and ctx.allow_sha1),
                    )
                )
            for reason, allowed in found:
                weaknesses.append(reason)
                if not allowed:
                    problems.append((_WEAK, S.WEAK_ALGORITHM, reason))
    constraint = name_constraint_violation(path, addresses)
    if constraint:
        problems.append((_CHAIN, S.UNTRUSTED, constraint))
    return problems


_HASH_NAMES = {"md5": "MD5", "sha1": "SHA-1"}  # the weak hashes, as reasons name them


def _role(position: int, length: int) -> str:
    if position == 0:
        return "signer certificate"
    return "trust anchor" if position == length - 1 else "intermediate"


# --- signer usage and address ----------------------------------------------------------------


def _check_signer_usage(signer: Cert, f: _Findings) -> None:
    if not signer.usable_for_email:
        f.fail(_USAGE, S.BAD_EKU, "signer certificate's extended key usage excludes email")
    if not signer.allows_signing:
        f.fail(
            _USAGE,
            S.BAD_EKU,
            "signer certificate's key usage has neither digitalSignature nor nonRepudiation",
        )


def _check_address(ctx: _Context, f: _Findings) -> None:
    # RFC 8550 section 3: the signer's address must be the From address; compared lower-cased.
    # Only one From address may be shown beside a valid signature: with two, a reader could be
    # shown the one the signer does not hold.
    matching = [a for a in f.addresses if a in ctx.from_addresses]
    if ctx.from_problem is not None:
        f.fail(
            _ADDRESS,
            S.EMAIL_MISMATCH,
            f"{ctx.from_problem}; a signature is valid only for exactly one From address",
        )
    elif not ctx.from_addresses:
        f.fail(_ADDRESS, S.EMAIL_MISMATCH, "message has no From address")
    elif len(ctx.from_addresses) > 1:
        f.fail(
            _ADDRESS,
            S.EMAIL_MISMATCH,
            f"the message names {len(ctx.from_addresses)} From addresses; a signature is valid "
            "only for exactly one",
        )
    elif not f.addresses:
        f.fail(_ADDRESS, S.EMAIL_MISMATCH, "signer certificate names no email address")
    elif not matching:
        f.fail(
            _ADDRESS,
            S.EMAIL_MISMATCH,
            f"signer is {', '.join(f.addresses)}, not the From address {ctx.from_addresses[0]}",
        )


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:200] if text else type(exc).__name__

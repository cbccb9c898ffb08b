"""Opening one S/MIME layer: a multipart/signed or CMS SignedData verified, an (Auth)EnvelopedData
decrypted, a CompressedData inflated, each into a :class:`LayerStep` (the layer's report and the
entity inside it).

A :class:`LayerOpener` holds what every layer of one message is opened with: our keys, the trust
anchors, the time and policy, and what the message may still spend (path search and signature
checks, decompressed bytes). The walk over the layers is :mod:`smime_companion.core.open`'s.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from asn1crypto import cms
from cryptography import x509

from smime_companion.core.chain import WorkBudget
from smime_companion.core.cms import (
    ASN1_ERRORS,
    ParsedCms,
    is_certificates_only,
    parse_cms_part,
)
from smime_companion.core.decrypt import decrypt
from smime_companion.core.layer_kinds import protection_of
from smime_companion.core.mime import (
    MESSAGE_TYPES,
    Entity,
    Sender,
    multipart_parts,
    parse_entity,
    sender_of,
    to_crlf,
)
from smime_companion.core.model import Identity, Layer, SignerReport, VerifyOutcome
from smime_companion.core.verdicts import (
    WARN_PARTIALLY_SIGNED,
    WARN_WEAK_CIPHER,
    Decryption,
    SignatureStatus,
)
from smime_companion.core.verify import verify_signed_data
from smime_companion.errors import LimitExceeded, MalformedInput, UnsupportedInput


@dataclass
class LayerStep:
    """What opening one layer produced: the layer report and the next entity (None: stop)."""

    layer: Layer
    next_raw: bytes | None
    signers: tuple[SignerReport, ...] = ()
    warnings: list[str] = field(default_factory=list)
    integrity_protected: bool = True


class LayerOpener:
    """Opens the layers of one message with its keys, anchors, time and policy, within the
    message's work budgets. ``max_parts`` and ``max_header_bytes`` bound each MIME parse;
    ``decompression_budget`` is what all compressed layers may expand to together."""

    def __init__(
        self,
        identities: Sequence[Identity],
        anchors: Sequence[x509.Certificate],
        at: datetime,
        extra_certificates: Sequence[x509.Certificate],
        *,
        allow_sha1: bool,
        allow_weak: bool,
        max_parts: int,
        max_header_bytes: int,
        decompression_budget: int,
    ) -> None:
        self.identities = identities
        self.anchors = anchors
        self.at = at
        self.extra_certificates = extra_certificates
        self.allow_sha1 = allow_sha1
        self.allow_weak = allow_weak
        self.max_parts = max_parts
        self.max_header_bytes = max_header_bytes
        # The entity parsed last, with its raw bytes: signed_from reads the From of the content
        # that the walk parses next, so the walk reuses that parse instead of repeating it.
        self._last_parsed: tuple[bytes, Entity] | None = None
        # What this message may still cost: path search and signature checks, decompression.
        self.budget = WorkBudget()
        self.decompression_budget = self.decompression_left = decompression_budget

    def parse(self, raw: bytes) -> Entity:
        """parse_entity of a layer's content (``as_content``) with the limits, reusing the last
        result for the same bytes object."""
        last = self._last_parsed
        if last is not None and last[0] is raw:
            return last[1]
        entity = parse_entity(raw, self.max_header_bytes, as_content=True)
        self._last_parsed = (raw, entity)
        return entity

    def open_layer(
        self, kind: str, entity: Entity, sender: Sender, inside_layer: bool
    ) -> LayerStep:
        """Open ``entity``, a layer of ``kind`` (see :func:`core.layer_kinds.layer_kind`),
        checking signatures against ``sender``; ``inside_layer`` when a layer encloses it.
        Never raises for the message's content: problems are in the step's layer."""
        if kind == "multipart/signed":
            return self._open_multipart_signed(entity, sender, inside_layer=inside_layer)
        if kind == "rfc822":
            return LayerStep(Layer(type="rfc822"), entity.decoded_body())
        return self._open_cms(entity, sender)

    def _open_multipart_signed(
        self, entity: Entity, sender: Sender, inside_layer: bool = False
    ) -> LayerStep:
        try:
            parts = multipart_parts(entity, self.max_parts)
            if len(parts) < 2:
                raise MalformedInput(f"multipart/signed has {len(parts)} parts instead of 2")
            # A list server (ezmlm, Sympa) may add its footer as a third part: the signature
            # still covers the first, which alone is shown, and the message is partly signed.
            signed_raw, signature_raw = parts[:2]
            signature_entity = parse_entity(signature_raw, self.max_header_bytes)
            # parse_cms, not asn1crypto directly: a large signature part is read by the counted,
            # linear BER walker first (a chunk flood must not cost asn1crypto's quadratic joins).
            info = parse_cms_part(signature_entity).info
            if info["content_type"].native != "signed_data":
                raise MalformedInput("the signature part of multipart/signed is not SignedData")
        except (MalformedInput, UnsupportedInput) as exc:
            status = (
                SignatureStatus.UNSUPPORTED
                if isinstance(exc, UnsupportedInput)
                else SignatureStatus.MALFORMED
            )
            return LayerStep(
                Layer(type="signed", signature=status, error=f"signature: {exc}"),
                # The content of a broken multipart/signed is still the first part, if any.
                next_raw=_first_part_or_none(entity, self.max_parts),
            )
        checked = self.signed_from(signed_raw, sender)
        canonical = to_crlf(signed_raw)
        outcome = self._verify(info, canonical, checked)
        retry = inside_layer and canonical is not signed_raw
        if outcome.status == SignatureStatus.INVALID and retry:
            # NSS/Thunderbird sign a multipart/signed nested inside an opaque signed or encrypted
            # layer over its bare-LF bytes, which no transport rewrote: like ``openssl cms
            # -binary``, verify the bytes as received when the canonical form fails. Never for
            # the top level, where mail is canonical CRLF by definition.
            as_received = self._verify(info, signed_raw, checked)
            if as_received.status != SignatureStatus.INVALID:
                outcome = as_received
        if outcome.status == SignatureStatus.INVALID and b"\r\r" in signed_raw:
            # Lines whose end a Windows program converted twice (CR CR LF) inside the part.
            # OpenSSL's canonical form strips every CR before a line's LF (and so verifies
            # such a part); when that form verifies, it is what is shown.
            collapsed = _CR_RUN.sub(b"\r\n", canonical)
            as_collapsed = self._verify(info, collapsed, checked)
            if as_collapsed.status != SignatureStatus.INVALID:
                outcome, signed_raw = as_collapsed, collapsed
        if outcome.status == SignatureStatus.INVALID and _MBOX_ESCAPED.search(signed_raw):
            # An mbox writer (Thunderbird's among them) put ">" before each body line that began
            # "From " and no reader took it off: the signature covers the line as it was sent.
            # When the content without that ">" verifies, that content is what is shown.
            unescaped = _MBOX_ESCAPED.sub(rb"\1", signed_raw)
            as_sent = self._verify(info, to_crlf(unescaped), checked)
            if as_sent.status != SignatureStatus.INVALID:
                outcome, signed_raw = as_sent, unescaped
        step = _signed_step("signed", outcome, signed_raw)
        if len(parts) > 2:
            step.warnings.append(WARN_PARTIALLY_SIGNED)
        return step

    def _verify(
        self, info: cms.ContentInfo, content: bytes | None, checked: Sender
    ) -> VerifyOutcome:
        """verify_signed_data with this message's anchors, time, policy and budget, against
        the ``checked`` sender (the one From rule)."""
        return verify_signed_data(
            info,
            content,
            anchors=self.anchors,
            at=self.at,
            from_addresses=checked.addresses,
            from_problem=checked.problem,
            allow_sha1=self.allow_sha1,
            allow_weak=self.allow_weak,
            extra_certificates=self.extra_certificates,
            budget=self.budget,
        )

    def _open_cms(self, entity: Entity, sender: Sender) -> LayerStep:
        smime_type = (entity.content_type.param("smime-type") or "").lower()
        try:
            # parse_cms cuts the large content out before asn1crypto copies it at every level.
            parsed = parse_cms_part(entity)
        except (MalformedInput, UnsupportedInput) as exc:
            return _unparsable_cms_step(smime_type, exc)
        kind = parsed.info["content_type"].native
        if kind == "signed_data":
            return self._open_signed_data(parsed, sender)
        if kind in ("enveloped_data", "authenticated_enveloped_data"):
            return self._open_enveloped(parsed)
        return self._open_compressed(parsed)

    def _open_signed_data(self, parsed: ParsedCms, sender: Sender) -> LayerStep:
        info = parsed.info
        if is_certificates_only(parsed):
            # How a client sends its certificate: nothing is signed and nothing is inside; the
            # entity itself is what is shown (an attachment), and it is no broken signature.
            return LayerStep(Layer(type="certs-only"), next_raw=None)
        # parse_cms hands out signed content as bytes (a view only for ciphertext); bytes() of a
        # bytes object is that object, so this never copies.
        cut = bytes(parsed.content) if parsed.content is not None else None
        encapsulated = cut if cut is not None else _encapsulated_content(info)
        checked = self.signed_from(encapsulated, sender)
        # The eContent cut out by parse_cms is checked as the signed bytes it is.
        outcome = self._verify(info, cut, checked)
        if _content_type_of(info) == _ID_CT_RECEIPT:
            # A signed receipt (RFC 2634 section 2.7, openssl cms -sign_receipt): what is signed
            # is a Receipt naming the message it confirms, not a message to unwrap; the entity
            # is shown as it came.
            return _signed_step("signed-receipt", outcome, None)
        next_raw = outcome.content if outcome.content is not None else encapsulated
        return _signed_step("signed-data", outcome, next_raw)

    def _open_enveloped(self, parsed: ParsedCms) -> LayerStep:
        info = parsed.info
        outcome = decrypt(
            info,
            self.identities,
            ciphertext=parsed.content,
            known_certificates=self.extra_certificates,
        )
        layer_type = (
            "auth-enveloped"
            if info["content_type"].native == "authenticated_enveloped_data"
            else "enveloped"
        )
        ok = outcome.status == Decryption.OK
        return LayerStep(
            Layer(
                type=layer_type,
                decryption=outcome.status,
                content_cipher=outcome.content_cipher,
                key_transport=outcome.key_transport,
                error=None if ok else _prefixed("decryption", outcome.error or str(outcome.status)),
            ),
            next_raw=outcome.plaintext if ok else None,
            warnings=[WARN_WEAK_CIPHER] if ok and outcome.weak else [],
            integrity_protected=outcome.integrity_protected,
        )

    def _open_compressed(self, parsed: ParsedCms) -> LayerStep:
        try:
            content = parsed.info["content"]
            algorithm = content["compression_algorithm"]["algorithm"].native
            if algorithm != "zlib":
                raise UnsupportedInput(f"compression algorithm {algorithm!r}")
            data = (
                parsed.content
                if parsed.content is not None
                else content["encap_content_info"]["content"].native or b""
            )
            # One budget for the whole message: nested layers cannot multiply it.
            plain = _bounded_inflate(data, self.decompression_left, self.decompression_budget)
            self.decompression_left -= len(plain)
        except (MalformedInput, UnsupportedInput) as exc:
            return LayerStep(Layer(type="compressed", error=f"compressed data: {exc}"), None)
        except ASN1_ERRORS as exc:
            return LayerStep(
                Layer(type="compressed", error=f"compressed data is malformed: {exc}"), None
            )
        return LayerStep(Layer(type="compressed"), plain)

    def signed_from(self, raw: bytes | None, outer: Sender) -> Sender:
        """The sender a signer must match (the one From rule, see ``sender_of``).

        Signed content that carries protected headers (or an RFC 8551 message/rfc822) names the
        From the reader will see, so that one counts. Otherwise the outer From counts; when the
        outer header has no From field (a bare S/MIME entity), the signed content's does. The
        walk shows the headers of whichever counted (see ``core.open``).
        """
        if not raw:
            return outer
        try:
            entity = self.parse(raw)
            if entity.content_type.mime_type in MESSAGE_TYPES:
                entity = parse_entity(entity.decoded_body(), self.max_header_bytes, as_content=True)
            elif protection_of(entity) is None and outer.field is not None:
                return outer
        except MalformedInput:
            return outer
        return sender_of(entity.fields) if entity.get("From") is not None else outer


def _signed_step(layer_type: str, outcome: VerifyOutcome, next_raw: bytes | None) -> LayerStep:
    """The step of a signed layer of ``layer_type`` that ``outcome`` judged, ``next_raw`` inside."""
    return LayerStep(
        Layer(
            type=layer_type,
            signature=outcome.status,
            signers=outcome.signers,
            error=_prefixed("signature", outcome.error),
        ),
        next_raw=next_raw,
        signers=outcome.signers,
    )


_ID_CT_RECEIPT = "1.2.840.113549.1.9.16.1.1"
# A body line an mbox writer escaped: one ">" too many before "From " (mboxo and mboxrd).
_MBOX_ESCAPED = re.compile(rb"(?m)^>(>*From )")
# A line end with more than one CR before its LF.
_CR_RUN = re.compile(rb"\r\r+\n")


def _content_type_of(info: cms.ContentInfo) -> str | None:
    """The eContentType of a SignedData, dotted; None when it cannot be read."""
    try:
        return str(info["content"]["encap_content_info"]["content_type"].dotted)
    except ASN1_ERRORS:
        return None


def _encapsulated_content(info: cms.ContentInfo) -> bytes | None:
    try:
        content = info["content"]["encap_content_info"]["content"]
        native = content.native if content is not None else None
    except ASN1_ERRORS:
        return None
    return native if isinstance(native, bytes) else None


def _bounded_inflate(data: bytes | memoryview, limit: int, budget: int) -> bytes:
    """zlib-inflate ``data`` refusing output past ``limit`` bytes, what is left of the
    message's ``budget`` (a compression bomb, or bombs nested in each other)."""
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error as exc:
        raise MalformedInput(f"zlib data is corrupt: {exc}") from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise LimitExceeded(
            f"compressed content expands past {limit} bytes (all compressed layers of this "
            f"message may expand to {budget} bytes together)"
        )
    return out


def _first_part_or_none(entity: Entity, max_parts: int) -> bytes | None:
    try:
        return multipart_parts(entity, max_parts)[0]
    except MalformedInput:
        return None


def _unparsable_cms_step(smime_type: str, exc: Exception) -> LayerStep:
    """The step of a CMS part that cannot be parsed, named after what its label claims (the
    label is all there is to go on; a label that claims nothing counts as encrypted)."""
    unsupported = isinstance(exc, UnsupportedInput)
    if smime_type in ("signed-data", "signed-receipt"):
        status = SignatureStatus.UNSUPPORTED if unsupported else SignatureStatus.MALFORMED
        layer_type = "signed-receipt" if smime_type == "signed-receipt" else "signed-data"
        return LayerStep(Layer(type=layer_type, signature=status, error=f"signature: {exc}"), None)
    if smime_type == "certs-only":  # nothing signed or encrypted is claimed: no such verdict
        return LayerStep(Layer(type="certs-only", error=f"certificates: {exc}"), None)
    if smime_type == "compressed-data":
        return LayerStep(Layer(type="compressed", error=f"compressed data: {exc}"), None)
    decryption = Decryption.UNSUPPORTED if unsupported else Decryption.MALFORMED
    layer_type = "auth-enveloped" if smime_type == "authenveloped-data" else "enveloped"
    return LayerStep(
        Layer(type=layer_type, decryption=decryption, error=f"decryption: {exc}"), None
    )


def _prefixed(what: str, error: str | None) -> str | None:
    return f"{what}: {error}" if error else None

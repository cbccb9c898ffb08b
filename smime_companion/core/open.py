"""Opening a message: unwrap every S/MIME layer, decrypting and verifying, into an ``OpenResult``.

The walk goes from the outside in. At each step the current MIME entity is either an S/MIME layer
(multipart/signed, application/pkcs7-mime and its aliases, an RFC 8551 message/rfc822 wrapper
inside a layer) which is opened to give the next entity, or anything else, which is the innermost
content and ends the walk. A layer that cannot be opened (no key, broken CMS) ends the walk too,
and its entity, still sealed, is the content.

Only a message whose *whole body* is an S/MIME object counts as signed or encrypted (EFAIL): S/MIME
parts found deeper inside an unprotected multipart are reported as warnings and left untouched.

What a verdict stands for is exactly what is shown:

- Headers: the outer header section, unless a layer's content carries protected headers (RFC 9788
  ``hp``, legacy ``protected-headers="v1"``, an RFC 8551 message/rfc822) *and* a signature covers
  that content (the content is inside a signed layer). Protected headers that no signature covers
  (an encryption layer anyone could have made around someone's signed message) are shown only
  when the message has no signature at all.
- From: one rule everywhere (:func:`~smime_companion.core.mime.sender_of`): a signature is
  ``valid`` only when the headers shown have exactly one From field holding exactly one address,
  and that address is the signer's. Checked per layer while unwrapping, and once more against
  the headers finally shown.
- Content decrypted from CBC (no authentication) is flagged ``not-integrity-protected`` unless a
  sound signature inside the encryption covers it: anyone can splice blocks into a CBC
  ciphertext (EFAIL's gadgets) and sign the result, so such content is not ``ok``.

A message's work is bounded: its :class:`Limits`, a budget of decompressed bytes over all its
compressed layers, and a :class:`~smime_companion.core.chain.WorkBudget` for path search and
certificate signature checks shared by every signer of every layer.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

from asn1crypto import cms
from cryptography import x509

from smime_companion.core import decrypt as decrypt_mod
from smime_companion.core import verify as verify_mod
from smime_companion.core.certs import fingerprint_sha256
from smime_companion.core.chain import WorkBudget
from smime_companion.core.cms import ASN1_ERRORS, ParsedCms, parse_cms
from smime_companion.core.input_forms import as_message, content_type_oid
from smime_companion.core.mime import (
    Entity,
    Sender,
    decode_transfer_encoding,
    multipart_parts,
    parse_entity,
    sender_of,
    to_crlf,
)
from smime_companion.core.model import (
    SIGNATURE_SEVERITY,
    SOUND_SIGNATURES,
    WARN_NOT_INTEGRITY_PROTECTED,
    Decryption,
    Identity,
    Layer,
    OpenResult,
    SignatureStatus,
    SignerReport,
    VerifyOutcome,
    signed_data_verdict,
    worst_decryption,
    worst_signature,
)
from smime_companion.errors import LimitExceeded, MalformedInput, UnsupportedInput

PKCS7_MIME_TYPES = frozenset({"application/pkcs7-mime", "application/x-pkcs7-mime"})
PKCS7_SIGNATURE_TYPES = frozenset({"application/pkcs7-signature", "application/x-pkcs7-signature"})

# Warnings (stable strings: the cache stores them and scripts read them).
WARN_PARTIALLY_ENCRYPTED = "partially-encrypted"
WARN_PARTIALLY_SIGNED = "partially-signed"
WARN_WEAK_CIPHER = "weak-cipher"
WARN_MIME_LIMIT = "mime-limit-reached"
# A signer used an algorithm we no longer trust (SHA-1, MD5, RSA under 2048 bits), whether that
# decided the verdict (weak-algorithm) or was accepted for archives (allow_weak, allow_sha1).
WARN_WEAK_ALGORITHM = "weak-algorithm"
# A signer's certificate (or a CA above it) has a serial number that is not positive: accepted,
# and named in that signer's ``notes``.
WARN_NON_POSITIVE_SERIAL = "non-positive-serial"


@dataclass(frozen=True)
class Limits:
    """Bounds on the work a hostile message can cause. The defaults suit real mail."""

    max_message_bytes: int = 256 * 1024 * 1024
    max_layers: int = 8  # S/MIME layers unwrapped (triple wrap needs 3)
    max_mime_depth: int = 32  # multipart nesting examined when looking for hidden S/MIME parts
    max_parts: int = 2000  # MIME parts in one multipart
    max_header_bytes: int = 256 * 1024  # one header section
    max_content_bytes: int = 256 * 1024 * 1024  # one decompressed layer
    # Decompressed bytes one message may produce, summed over all its compressed layers (a
    # ratio per layer multiplies when layers nest): this allowance, plus the message's own size
    # times decompressed_per_byte, within max_content_bytes. Real compressed mail expands a few
    # times, which the allowance covers for all but very large messages; a bomb expands a
    # thousandfold. Keeps opening within about four times the message's size plus 64 MB.
    decompression_allowance: int = 4 * 1024 * 1024
    decompressed_per_byte: int = 1


DEFAULT_LIMITS = Limits()


def is_smime_message(raw: bytes, limits: Limits = DEFAULT_LIMITS) -> bool:
    """True when the message's own Content-Type is an S/MIME layer (multipart/signed with a
    PKCS#7 signature, application/(x-)pkcs7-mime, or an ``.p7m`` octet stream): what the sync
    stores without ``cache_all``, decided from the header alone. A message whose header
    cannot be parsed is treated as S/MIME, so it is kept (and ``open`` says what is wrong)."""
    try:
        return (
            _layer_kind(parse_entity(raw, limits.max_header_bytes), inside_layer=False) is not None
        )
    except (MalformedInput, LimitExceeded):
        return True


def open_message(
    raw: bytes,
    *,
    identities: Sequence[Identity] = (),
    anchors: Sequence[x509.Certificate] = (),
    at: datetime,
    extra_certificates: Sequence[x509.Certificate] = (),
    allow_sha1: bool = False,
    limits: Limits = DEFAULT_LIMITS,
    allow_weak: bool = False,
) -> OpenResult:
    """Open ``raw`` (a whole RFC 5322 message, or any form :func:`core.input_forms.as_message`
    accepts: a leading mbox ``From `` line, a bare DER/BER/PEM CMS object): decrypt with
    ``identities``, verify against ``anchors`` at time ``at`` (timezone-aware), and unwrap every
    layer.

    Never raises for untrusted input: problems are statuses, warnings and ``error`` in the
    result, and the work is bounded (see the module docstring). ``extra_certificates``
    (harvested certificates, ``open --certfile``) are where a signer certificate the message left
    out, and its issuers, are looked for. ``allow_sha1`` accepts SHA-1; ``allow_weak`` accepts
    every weak algorithm (SHA-1, MD5, RSA under 2048 bits) for archives: either way the weakness
    is still reported (warning ``weak-algorithm``).
    """
    if at.tzinfo is None:
        raise ValueError("open_message needs a timezone-aware time")
    if len(raw) <= limits.max_message_bytes:
        raw = as_message(raw)
    walk = _LayerWalk(
        identities, anchors, at, extra_certificates, allow_sha1 or allow_weak, limits, allow_weak
    )
    return walk.run(raw)


def with_revoked_signers(result: OpenResult, revoked: Mapping[str, str]) -> OpenResult:
    """``result`` with every signer whose certificate is in ``revoked`` (SHA-256 fingerprint ->
    why, one line) made ``revoked``, and each layer's and the overall verdict recomputed.

    core.open has no network, so it cannot know that a certificate was revoked; the daemon
    learns it from OCSP or a CRL (its certificate store) and applies it here, so a message
    signed with a revoked key is never shown ``valid``. A signer whose signature is already
    broken (``invalid``, ``malformed``, ``unsupported``) keeps that verdict: it says more.
    """
    if not revoked:
        return result

    def mark(signer: SignerReport) -> SignerReport:
        if signer.certificate is None:
            return signer
        why = revoked.get(fingerprint_sha256(signer.certificate))
        if why is None or _SEVERITY[signer.status] <= _SEVERITY[SignatureStatus.REVOKED]:
            return signer
        reason = f"revoked: {why}"
        problems = ((SignatureStatus.REVOKED, reason), *signer.problems)
        return replace(signer, status=SignatureStatus.REVOKED, reason=reason, problems=problems)

    layers, signers = _remarked(result.layers, result.signers, mark)
    signed = [layer for layer in layers if layer.signature is not None]
    signature = worst_signature([layer.signature for layer in signed if layer.signature])
    return replace(
        result,
        layers=layers,
        signature=signature,
        signer=_deciding_signer_address(signed, signature),
        signers=signers,
    )


def _remarked(
    layers: Sequence[Layer],
    signers: Sequence[SignerReport],
    mark: Callable[[SignerReport], SignerReport],
) -> tuple[tuple[Layer, ...], tuple[SignerReport, ...]]:
    """``layers`` and ``signers`` with every signer passed through ``mark`` and each signed
    layer's verdict recomputed from its signers."""
    out = []
    for layer in layers:
        if layer.signature is not None and layer.signers:
            marked = tuple(mark(s) for s in layer.signers)
            verdict = signed_data_verdict([s.status for s in marked])
            layer = replace(layer, signature=verdict, signers=marked)
        out.append(layer)
    return tuple(out), tuple(mark(s) for s in signers)


_SEVERITY = {status: rank for rank, status in enumerate(SIGNATURE_SEVERITY)}


@dataclass
class _Step:
    """What opening one layer produced: the layer report and the next entity (None: stop)."""

    layer: Layer
    next_raw: bytes | None
    signers: tuple[SignerReport, ...] = ()
    warnings: list[str] = field(default_factory=list)
    integrity_protected: bool = True


class _LayerWalk:
    """One message's walk through its layers, outermost first: each S/MIME layer decrypted or
    verified and unwrapped, within one work budget, into an :class:`OpenResult`."""

    def __init__(
        self,
        identities: Sequence[Identity],
        anchors: Sequence[x509.Certificate],
        at: datetime,
        extra_certificates: Sequence[x509.Certificate],
        allow_sha1: bool,
        limits: Limits,
        allow_weak: bool = False,
    ) -> None:
        self.identities = identities
        self.anchors = anchors
        self.at = at
        self.extra_certificates = extra_certificates
        self.allow_sha1 = allow_sha1
        self.allow_weak = allow_weak
        self.limits = limits
        # The entity parsed last, with its raw bytes: _signed_from reads the From of the content
        # that the walk parses next, so the walk reuses that parse instead of repeating it.
        self._last_parsed: tuple[bytes, Entity] | None = None
        # What this message may still cost: path search and signature checks, decompression.
        self.budget = WorkBudget()
        self.decompression_budget = self.decompression_left = 0

    def _parse(self, raw: bytes) -> Entity:
        """parse_entity with the limits, reusing the last result for the same bytes object."""
        last = self._last_parsed
        if last is not None and last[0] is raw:
            return last[1]
        entity = parse_entity(raw, self.limits.max_header_bytes)
        self._last_parsed = (raw, entity)
        return entity

    def run(self, raw: bytes) -> OpenResult:
        # A message that cannot be read at all is malformed, never "not signed, not encrypted":
        # nothing about it was checked.
        if len(raw) > self.limits.max_message_bytes:
            return _malformed(raw, f"message of {len(raw)} bytes is larger than the limit")
        try:
            entity = parse_entity(raw, self.limits.max_header_bytes)
        except MalformedInput as exc:
            return _malformed(raw, f"message is malformed: {exc}")
        self.decompression_budget = self.decompression_left = min(
            self.limits.max_content_bytes,
            self.limits.decompression_allowance + self.limits.decompressed_per_byte * len(raw),
        )

        # The headers shown: the outer ones, or protected headers a signature covers; and the
        # sender they name (read again only when they change).
        headers = entity.fields
        sender = sender_of(headers)
        header_protection: str | None = None
        # Protected headers no signature covers: shown only if the message has no signature.
        uncovered: tuple[tuple[tuple[str, str], ...], str] | None = None
        layers: list[Layer] = []
        signers: list[SignerReport] = []
        warnings: list[str] = []
        unprotected_cbc = 0  # CBC (malleable) layers no sound signature inside covers yet
        covered = False  # a signed layer was opened: what follows is inside a signature
        error: str | None = None

        while True:
            kind = _layer_kind(entity, inside_layer=bool(layers))
            if kind is None:
                break
            if len(layers) >= self.limits.max_layers:
                error = f"more than {self.limits.max_layers} S/MIME layers; stopped unwrapping"
                break
            if kind == "multipart/signed":
                step = self._open_multipart_signed(entity, sender, inside_layer=bool(layers))
            elif kind == "rfc822":
                step = _Step(Layer(type="rfc822"), entity.decoded_body())
            else:
                step = self._open_cms(entity, sender)

            layers.append(step.layer)
            covered = covered or step.layer.signature is not None
            signers.extend(step.signers)
            warnings.extend(w for w in step.warnings if w not in warnings)
            if step.layer.signature in SOUND_SIGNATURES:
                unprotected_cbc = 0  # a sound signature inside covers the CBC layers outside it
            if step.layer.decryption == Decryption.OK and not step.integrity_protected:
                unprotected_cbc += 1
            if error is None and _is_processing_failure(step.layer):
                error = step.layer.error
            if step.next_raw is None:
                break
            try:
                entity = self._parse(step.next_raw)
            except MalformedInput as exc:
                error = error or f"content inside the {step.layer.type} layer is malformed: {exc}"
                entity = Entity(raw=step.next_raw, fields=())
                break
            protection = "rfc822" if step.layer.type == "rfc822" else _protection_of(entity)
            if protection is not None and covered:
                # Protected headers (RFC 9788 hp, legacy v1, RFC 8551 message/rfc822) win.
                headers, header_protection = entity.fields, protection
                sender = sender_of(headers)
            elif protection is not None:
                uncovered = (entity.fields, protection)
            elif step.signers and sender.field is None and entity.get("From") is not None:
                # A bare S/MIME entity (no From of its own): the signed content's header
                # section names the sender the signature was checked against; show it.
                headers = entity.fields
                sender = sender_of(headers)

        signed = [layer for layer in layers if layer.signature is not None]
        if uncovered is not None and not signed:
            headers, header_protection = uncovered
            sender = sender_of(headers)
        layer_tuple, signer_tuple = _checked_against_shown(layers, signers, sender)
        signed = [layer for layer in layer_tuple if layer.signature is not None]
        # Only a signature inside the encryption covers CBC content: its signer signed the
        # plaintext. One outside it covers the ciphertext, but anyone can sign a ciphertext
        # with blocks spliced in, and a broken signature inside covers nothing.
        if unprotected_cbc:
            warnings.append(WARN_NOT_INTEGRITY_PROTECTED)
        if any(s.notes for s in signer_tuple):
            warnings.append(WARN_NON_POSITIVE_SERIAL)
        if any(s.weaknesses for s in signer_tuple):
            # Reported beside the verdict, whether it decided it or was accepted for archives.
            warnings.append(WARN_WEAK_ALGORITHM)
        # S/MIME parts hidden in the content (an unprotected multipart, an attached message,
        # a decrypted multipart): named, never opened or joined to what is shown.
        mime_type = entity.content_type.mime_type
        if mime_type.startswith("multipart/") or mime_type == "message/rfc822":
            warnings.extend(w for w in self._hidden_smime_warnings(entity) if w not in warnings)

        encrypted = [layer for layer in layer_tuple if layer.decryption is not None]
        signature = worst_signature([layer.signature for layer in signed if layer.signature])
        decryption = worst_decryption([layer.decryption for layer in encrypted if layer.decryption])
        return OpenResult(
            decryption=decryption,
            signature=signature,
            signer=_deciding_signer_address(signed, signature),
            layers=layer_tuple,
            content_cipher=encrypted[0].content_cipher if encrypted else None,
            warnings=tuple(warnings),
            error=error,
            content=entity.raw,
            headers=headers,
            header_protection=header_protection,
            signers=signer_tuple,
        )

    # -- one layer each ---------------------------------------------------------------------

    def _open_multipart_signed(
        self, entity: Entity, sender: Sender, inside_layer: bool = False
    ) -> _Step:
        try:
            parts = multipart_parts(entity, self.limits.max_parts)
            if len(parts) != 2:
                raise MalformedInput(f"multipart/signed has {len(parts)} parts instead of 2")
            signed_raw, signature_raw = parts
            signature_entity = parse_entity(signature_raw, self.limits.max_header_bytes)
            # parse_cms, not asn1crypto directly: a large signature part is read by the counted,
            # linear BER walker first (a chunk flood must not cost asn1crypto's quadratic joins).
            info = parse_cms(signature_entity.decoded_body()).info
            if info["content_type"].native != "signed_data":
                raise MalformedInput("the signature part of multipart/signed is not SignedData")
        except (MalformedInput, UnsupportedInput) as exc:
            status = (
                SignatureStatus.UNSUPPORTED
                if isinstance(exc, UnsupportedInput)
                else SignatureStatus.MALFORMED
            )
            return _Step(
                Layer(type="signed", signature=status, error=f"signature: {exc}"),
                # The content of a broken multipart/signed is still the first part, if any.
                next_raw=_first_part_or_none(entity, self.limits.max_parts),
            )
        checked = self._signed_from(signed_raw, sender)
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
        return _Step(
            Layer(
                type="signed",
                signature=outcome.status,
                signers=outcome.signers,
                error=_prefixed("signature", outcome.error),
            ),
            next_raw=signed_raw,
            signers=outcome.signers,
        )

    def _verify(
        self, info: cms.ContentInfo, content: bytes | None, checked: Sender
    ) -> VerifyOutcome:
        """verify_signed_data with this message's anchors, time, policy and budget, against
        the ``checked`` sender (the one From rule)."""
        return verify_mod.verify_signed_data(
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

    def _open_cms(self, entity: Entity, sender: Sender) -> _Step:
        smime_type = (entity.content_type.param("smime-type") or "").lower()
        try:
            # parse_cms cuts the large content out before asn1crypto copies it at every level.
            parsed = parse_cms(entity.decoded_body())
        except (MalformedInput, UnsupportedInput) as exc:
            return _unparsable_cms_step(smime_type, exc)
        kind = parsed.info["content_type"].native
        if kind == "signed_data":
            return self._open_signed_data(parsed, sender)
        if kind in ("enveloped_data", "authenticated_enveloped_data"):
            return self._open_enveloped(parsed)
        return self._open_compressed(parsed)

    def _open_signed_data(self, parsed: ParsedCms, sender: Sender) -> _Step:
        info = parsed.info
        # parse_cms hands out signed content as bytes (a view only for ciphertext); bytes() of a
        # bytes object is that object, so this never copies.
        cut = bytes(parsed.content) if parsed.content is not None else None
        encapsulated = cut if cut is not None else _encapsulated_content(info)
        checked = self._signed_from(encapsulated, sender)
        # The eContent cut out by parse_cms is checked as the signed bytes it is.
        outcome = self._verify(info, cut, checked)
        return _Step(
            Layer(
                type="signed-data",
                signature=outcome.status,
                signers=outcome.signers,
                error=_prefixed("signature", outcome.error),
            ),
            next_raw=outcome.content if outcome.content is not None else encapsulated,
            signers=outcome.signers,
        )

    def _open_enveloped(self, parsed: ParsedCms) -> _Step:
        info = parsed.info
        outcome = decrypt_mod.decrypt(info, self.identities, ciphertext=parsed.content)
        layer_type = (
            "auth-enveloped"
            if info["content_type"].native == "authenticated_enveloped_data"
            else "enveloped"
        )
        ok = outcome.status == Decryption.OK
        return _Step(
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

    def _open_compressed(self, parsed: ParsedCms) -> _Step:
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
            return _Step(Layer(type="compressed", error=f"compressed data: {exc}"), None)
        except ASN1_ERRORS as exc:
            return _Step(
                Layer(type="compressed", error=f"compressed data is malformed: {exc}"), None
            )
        return _Step(Layer(type="compressed"), plain)

    # -- helpers -------------------------------------------------------------------------------

    def _signed_from(self, raw: bytes | None, outer: Sender) -> Sender:
        """The sender a signer must match (the one From rule, see ``sender_of``).

        Signed content that carries protected headers (or an RFC 8551 message/rfc822) names the
        From the reader will see, so that one counts. Otherwise the outer From counts; when the
        outer header has no From field (a bare S/MIME entity), the signed content's does. The
        walk shows the headers of whichever counted (see ``run``).
        """
        if not raw:
            return outer
        try:
            entity = self._parse(raw)
            if entity.content_type.mime_type == "message/rfc822":
                entity = parse_entity(entity.decoded_body(), self.limits.max_header_bytes)
            elif _protection_of(entity) is None and outer.field is not None:
                return outer
        except MalformedInput:
            return outer
        return sender_of(entity.fields) if entity.get("From") is not None else outer

    def _hidden_smime_warnings(self, top: Entity) -> list[str]:
        """Warnings for S/MIME parts inside the content shown (EFAIL's attack shape): inside an
        unprotected multipart, inside an attached message (message/rfc822), or inside a
        multipart that was decrypted. A part is S/MIME by its Content-Type, or (an
        application/octet-stream ``.p7m`` or a pkcs7-mime without smime-type) by the CMS
        content type at the start of its body.

        Those parts are not opened and never joined with the content around them.
        """
        found: list[str] = []
        stack: list[tuple[Entity, int]] = [(top, 0)]
        examined = 0
        while stack:
            entity, depth = stack.pop()
            mime_type = entity.content_type.mime_type
            if depth > 0:
                kind = _layer_kind(entity, inside_layer=False)
                if kind == "cms":  # no smime-type (Outlook's octet-stream smime.p7m): peek
                    kind = _peeked_cms_kind(entity)
                if kind == "multipart/signed" or kind == "signed":
                    _add(found, WARN_PARTIALLY_SIGNED)
                    continue
                if kind is not None:  # encrypted, compressed, or a CMS object of unknown kind
                    _add(found, WARN_PARTIALLY_ENCRYPTED)
                    continue
            inside_message = mime_type == "message/rfc822"
            if not mime_type.startswith("multipart/") and not inside_message:
                continue
            if depth >= self.limits.max_mime_depth:
                _add(found, WARN_MIME_LIMIT)
                continue
            try:
                parts = (
                    [entity.decoded_body()]
                    if inside_message
                    else multipart_parts(entity, self.limits.max_parts)
                )
            except MalformedInput:
                continue
            for part in parts:
                examined += 1
                if examined > self.limits.max_parts:
                    _add(found, WARN_MIME_LIMIT)
                    return found
                try:
                    stack.append((parse_entity(part, self.limits.max_header_bytes), depth + 1))
                except MalformedInput:
                    continue
        return found


# -- pure helpers -------------------------------------------------------------------------------


def _layer_kind(entity: Entity, inside_layer: bool) -> str | None:
    """What S/MIME layer ``entity`` is: ``multipart/signed``, ``signed``, ``encrypted``,
    ``compressed``, ``cms`` (unknown smime-type), ``rfc822``, or None for ordinary content."""
    ctype = entity.content_type
    mime_type = ctype.mime_type
    if mime_type == "multipart/signed":
        protocol = (ctype.param("protocol") or "").lower()
        return "multipart/signed" if protocol in PKCS7_SIGNATURE_TYPES else None
    if mime_type == "message/rfc822":
        return "rfc822" if inside_layer else None
    is_cms = mime_type in PKCS7_MIME_TYPES or (
        mime_type == "application/octet-stream" and _filename(entity).endswith(".p7m")
    )
    if not is_cms:
        return None
    smime_type = (ctype.param("smime-type") or "").lower()
    if smime_type == "signed-data":
        return "signed"
    if smime_type in ("enveloped-data", "authenveloped-data"):
        return "encrypted"
    if smime_type in ("compressed-data",):
        return "compressed"
    return "cms"


_PEEK_KINDS = {
    bytes.fromhex("06092a864886f70d010702"): "signed",
    bytes.fromhex("06092a864886f70d010703"): "encrypted",
    bytes.fromhex("060b2a864886f70d0109100117"): "encrypted",
    bytes.fromhex("060b2a864886f70d0109100109"): "compressed",
}


def _malformed(raw: bytes, error: str) -> OpenResult:
    return OpenResult.unopened(raw, error, Decryption.MALFORMED, SignatureStatus.MALFORMED)


def _peeked_cms_kind(entity: Entity) -> str:
    """What a CMS part without an smime-type holds, read from the first bytes of its body:
    ``signed``, ``encrypted`` (also when it cannot be told: an .p7m attachment is usually
    encrypted, and must never pass for plain content), or ``compressed``."""
    try:
        head = entity.body[:256]
        if entity.transfer_encoding == "base64":
            text = head.translate(None, b" \t\r\n")
            head = decode_transfer_encoding(text[: len(text) // 4 * 4], "base64")
        oid = content_type_oid(head)
    except MalformedInput:
        return "encrypted"
    return _PEEK_KINDS.get(oid, "encrypted") if oid is not None else "encrypted"


def _checked_against_shown(
    layers: Sequence[Layer], signers: Sequence[SignerReport], shown: Sender
) -> tuple[tuple[Layer, ...], tuple[SignerReport, ...]]:
    """``layers`` and ``signers`` with every ``valid`` signer checked once more against the
    From finally shown: a signer whose address it is not (or a header section without exactly
    one From address) is ``email-mismatch``. Each layer checked the From it knew while
    unwrapping; this makes sure that is the one the user sees."""
    valid, address = SignatureStatus.VALID, shown.address
    if shown.problem is None and all(s.status != valid or address in s.addresses for s in signers):
        return tuple(layers), tuple(signers)  # the common case: nothing to change

    def holds(signer: SignerReport) -> bool:
        return shown.problem is None and shown.address in signer.addresses

    def mark(signer: SignerReport) -> SignerReport:
        if signer.status != SignatureStatus.VALID or holds(signer):
            return signer
        if shown.problem is not None:
            reason = f"{shown.problem}; a signature is valid only for exactly one From address"
        else:
            held = ", ".join(signer.addresses) or "no address"
            reason = f"signer is {held}, not the From address {shown.address} shown"
        problems = ((SignatureStatus.EMAIL_MISMATCH, reason), *signer.problems)
        return replace(
            signer, status=SignatureStatus.EMAIL_MISMATCH, reason=reason, problems=problems
        )

    return _remarked(layers, signers, mark)


def _filename(entity: Entity) -> str:
    name = entity.content_type.param("name")
    if not name:
        disposition = entity.get("Content-Disposition") or ""
        for piece in disposition.split(";"):
            key, _, value = piece.strip().partition("=")
            if key.lower() == "filename":
                name = value.strip().strip('"')
    return (name or "").lower()


def _protection_of(entity: Entity) -> str | None:
    """How ``entity`` (just unwrapped) carries protected headers, if it does."""
    ctype = entity.content_type
    if ctype.param("hp") in ("cipher", "clear"):
        return "hp"
    if (ctype.param("protected-headers") or "").lower() == "v1":
        return "v1"
    return None


def _field(fields: tuple[tuple[str, str], ...], name: str) -> str | None:
    lname = name.lower()
    return next((v for k, v in fields if k.lower() == lname), None)


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


def _unparsable_cms_step(smime_type: str, exc: Exception) -> _Step:
    unsupported = isinstance(exc, UnsupportedInput)
    if smime_type == "signed-data":
        status = SignatureStatus.UNSUPPORTED if unsupported else SignatureStatus.MALFORMED
        return _Step(Layer(type="signed-data", signature=status, error=f"signature: {exc}"), None)
    if smime_type == "compressed-data":
        return _Step(Layer(type="compressed", error=f"compressed data: {exc}"), None)
    decryption = Decryption.UNSUPPORTED if unsupported else Decryption.MALFORMED
    layer_type = "auth-enveloped" if smime_type == "authenveloped-data" else "enveloped"
    return _Step(Layer(type=layer_type, decryption=decryption, error=f"decryption: {exc}"), None)


def _deciding_signer_address(signed: list[Layer], overall: SignatureStatus) -> str | None:
    """The address of the signer that decided the verdict, innermost signed layer first."""
    for layer in reversed(signed):
        if layer.signature != overall:
            continue
        for signer in layer.signers:
            if signer.status == overall and (signer.address or signer.addresses):
                return signer.address or signer.addresses[0]
    for layer in reversed(signed):
        for signer in layer.signers:
            if signer.address or signer.addresses:
                return signer.address or signer.addresses[0]
    return None


def _is_processing_failure(layer: Layer) -> bool:
    """True when a layer could not be processed at all (as opposed to a signature verdict, whose
    reason stays in the layer's report)."""
    if layer.error is None:
        return False
    if layer.signature is not None:
        return layer.signature in (SignatureStatus.MALFORMED, SignatureStatus.UNSUPPORTED)
    return True


def _prefixed(what: str, error: str | None) -> str | None:
    return f"{what}: {error}" if error else None


def _add(items: list[str], item: str) -> None:
    if item not in items:
        items.append(item)

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

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from cryptography import x509

from smime_companion.core.cert_loading import certificate_warnings
from smime_companion.core.certs import fingerprint_sha256
from smime_companion.core.input_forms import as_message
from smime_companion.core.layer_kinds import (
    hidden_smime_warnings,
    protection_of,
    walked_layer_kind,
    wrapped_file_name,
)
from smime_companion.core.layer_opening import LayerOpener, LayerStep
from smime_companion.core.lookalike import is_lookalike
from smime_companion.core.mime import (
    MESSAGE_TYPES,
    Entity,
    Sender,
    first_field,
    header_date,
    holds_address,
    parse_entity,
    sender_of,
)
from smime_companion.core.model import (
    Identity,
    Layer,
    OpenResult,
    SignerReport,
    signed_data_verdict,
    worst_decryption,
    worst_signature,
)
from smime_companion.core.verdicts import (
    SIGNATURE_SEVERITY,
    SOUND_SIGNATURES,
    WARN_DATE_MISMATCH,
    WARN_LOOKALIKE_ADDRESS,
    WARN_NOT_INTEGRITY_PROTECTED,
    WARN_WEAK_ALGORITHM,
    Decryption,
    SignatureStatus,
)
from smime_companion.errors import LimitExceeded, MalformedInput

Headers = tuple[tuple[str, str], ...]


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
            walked_layer_kind(
                parse_entity(raw, limits.max_header_bytes, received=True), inside_layer=False
            )
            is not None
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
    # A message that cannot be read at all is malformed, never "not signed, not encrypted":
    # nothing about it was checked.
    if len(raw) > limits.max_message_bytes:
        return _malformed(raw, f"message of {len(raw)} bytes is larger than the limit")
    try:
        entity = parse_entity(raw, limits.max_header_bytes, received=True)
    except MalformedInput as exc:
        return _malformed(raw, f"message is malformed: {exc}")
    opener = LayerOpener(
        identities,
        anchors,
        at,
        extra_certificates,
        allow_sha1=allow_sha1 or allow_weak,
        allow_weak=allow_weak,
        max_parts=limits.max_parts,
        max_header_bytes=limits.max_header_bytes,
        decompression_budget=min(
            limits.max_content_bytes,
            limits.decompression_allowance + limits.decompressed_per_byte * len(raw),
        ),
    )
    return _LayerWalk(opener, limits, entity).run()


# How far the Date shown may be from a signer's signing time (Thunderbird allows an hour too:
# clients date and sign a message when they send it).
DATE_TOLERANCE = timedelta(hours=1)


def _date_far_from_signing(date: str | None, signers: Sequence[SignerReport]) -> bool:
    """Whether ``date`` (the Date field shown) is further than DATE_TOLERANCE from the signing
    time of every signer whose signature held and said when it signed."""
    shown = header_date(date)
    sound = [s for s in signers if s.status in SOUND_SIGNATURES]
    times = [s.signing_time for s in sound if s.signing_time is not None]
    if shown is None or not times:
        return False  # nothing to compare; the reader shows the date as it came
    try:
        return all(abs(shown - t) > DATE_TOLERANCE for t in times)
    except TypeError:  # a signing time without a zone
        return False


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


class _LayerWalk:
    """One message's walk through its layers, outermost first: each S/MIME layer opened (by a
    :class:`LayerOpener`, within the message's budgets) and unwrapped, while keeping track of the
    headers that will be shown and the sender a signer must match; then the
    :class:`OpenResult`."""

    def __init__(self, opener: LayerOpener, limits: Limits, entity: Entity) -> None:
        self.opener = opener
        self.limits = limits
        # The entity reached so far (in the end, the content shown).
        self.entity = entity
        # The headers shown: the outer ones, or protected headers a signature covers; and the
        # sender they name (read again only when they change).
        self.headers: Headers = entity.fields
        self.sender: Sender = sender_of(self.headers)
        self.header_protection: str | None = None
        # Protected headers no signature covers: shown only if the message has no signature.
        self.uncovered: tuple[Headers, str] | None = None
        self.layers: list[Layer] = []
        self.signers: list[SignerReport] = []
        self.warnings: list[str] = []
        self.unprotected_cbc = 0  # CBC (malleable) layers no sound signature inside covers yet
        self.covered = False  # a signed layer was opened: what follows is inside a signature
        self.error: str | None = None
        self.content_name: str | None = None  # see OpenResult.content_name

    def run(self) -> OpenResult:
        """Unwrap every layer, then say what was found about what is shown."""
        while self._unwrap_one():
            pass
        return self._result()

    def _unwrap_one(self) -> bool:
        """Open the current entity when it is a layer and move inside it; False when the walk
        ends (ordinary content, the layer limit, a layer that cannot be opened)."""
        kind = walked_layer_kind(self.entity, inside_layer=bool(self.layers))
        if kind is None:
            return False
        if len(self.layers) >= self.limits.max_layers:
            self.error = f"more than {self.limits.max_layers} S/MIME layers; stopped unwrapping"
            return False
        step = self.opener.open_layer(kind, self.entity, self.sender, bool(self.layers))
        self._record(step)
        if step.next_raw is None:
            return False
        try:
            layer_entity, self.entity = self.entity, self.opener.parse(step.next_raw)
            if self.entity.headerless:
                self.content_name = wrapped_file_name(layer_entity)
        except MalformedInput as exc:
            self.error = (
                self.error or f"content inside the {step.layer.type} layer is malformed: {exc}"
            )
            self.entity = Entity(raw=step.next_raw, fields=())
            return False
        self._choose_headers(step)
        return True

    def _record(self, step: LayerStep) -> None:
        """Add the layer ``step`` opened to what the walk found."""
        self.layers.append(step.layer)
        self.covered = self.covered or step.layer.signature is not None
        self.signers.extend(step.signers)
        self.warnings.extend(w for w in step.warnings if w not in self.warnings)
        if step.layer.signature in SOUND_SIGNATURES:
            self.unprotected_cbc = 0  # a sound signature inside covers the CBC layers outside it
        if step.layer.decryption == Decryption.OK and not step.integrity_protected:
            self.unprotected_cbc += 1
        if self.error is None and _is_processing_failure(step.layer):
            self.error = step.layer.error

    def _choose_headers(self, step: LayerStep) -> None:
        """After unwrapping ``step``'s layer: show the protected headers of the entity inside
        when a signature covers them, and the signed content's From for a bare S/MIME entity."""
        entity = self.entity
        protection = "rfc822" if step.layer.type == "rfc822" else protection_of(entity)
        if protection is not None and self.covered:
            # Protected headers (RFC 9788 hp, legacy v1, RFC 8551 message/rfc822) win.
            self.headers, self.header_protection = entity.fields, protection
            self.sender = sender_of(self.headers)
        elif protection is not None:
            self.uncovered = (entity.fields, protection)
        elif step.signers and self.sender.field is None and entity.get("From") is not None:
            # A bare S/MIME entity (no From of its own): the signed content's header
            # section names the sender the signature was checked against; show it.
            self.headers = entity.fields
            self.sender = sender_of(self.headers)

    def _result(self) -> OpenResult:
        """The OpenResult of the finished walk: signers checked against the From shown, the
        warnings about the whole message, the overall verdicts."""
        headers, header_protection, sender = self.headers, self.header_protection, self.sender
        if self.uncovered is not None and all(la.signature is None for la in self.layers):
            headers, header_protection = self.uncovered
            sender = sender_of(headers)
        layers, signers = _checked_against_shown(self.layers, self.signers, sender)
        signed = [layer for layer in layers if layer.signature is not None]
        encrypted = [layer for layer in layers if layer.decryption is not None]
        signature = worst_signature([layer.signature for layer in signed if layer.signature])
        decryption = worst_decryption([layer.decryption for layer in encrypted if layer.decryption])
        return OpenResult(
            decryption=decryption,
            signature=signature,
            signer=_deciding_signer_address(signed, signature),
            layers=layers,
            content_cipher=encrypted[0].content_cipher if encrypted else None,
            warnings=tuple(self._message_warnings(signers, headers, sender)),
            error=self.error,
            content=self.entity.raw,
            headers=headers,
            header_protection=header_protection,
            signers=signers,
            content_name=self.content_name,
        )

    def _message_warnings(
        self,
        signers: Sequence[SignerReport],
        headers: Sequence[tuple[str, str]],
        sender: Sender,
    ) -> list[str]:
        """The layers' warnings, then those about the whole message and the content shown."""
        warnings = self.warnings
        # Only a signature inside the encryption covers CBC content: its signer signed the
        # plaintext. One outside it covers the ciphertext, but anyone can sign a ciphertext
        # with blocks spliced in, and a broken signature inside covers nothing.
        if self.unprotected_cbc:
            warnings.append(WARN_NOT_INTEGRITY_PROTECTED)
        for cert in dict.fromkeys(c for s in signers for c in s.chain):
            warnings.extend(w for w in certificate_warnings(cert) if w not in warnings)
        if any(s.weaknesses for s in signers):
            # Reported beside the verdict, whether it decided it or was accepted for archives.
            warnings.append(WARN_WEAK_ALGORITHM)
        if _date_far_from_signing(first_field(headers, "Date"), signers):
            warnings.append(WARN_DATE_MISMATCH)
        if sender.address is not None and is_lookalike(sender.address):
            warnings.append(WARN_LOOKALIKE_ADDRESS)
        # S/MIME parts hidden in the content (an unprotected multipart, an attached message,
        # a decrypted multipart): named, never opened or joined to what is shown.
        mime_type = self.entity.content_type.mime_type
        if mime_type.startswith("multipart/") or mime_type in MESSAGE_TYPES:
            hidden = hidden_smime_warnings(
                self.entity,
                max_depth=self.limits.max_mime_depth,
                max_parts=self.limits.max_parts,
                max_header_bytes=self.limits.max_header_bytes,
            )
            warnings.extend(w for w in hidden if w not in warnings)
        return warnings


def _malformed(raw: bytes, error: str) -> OpenResult:
    return OpenResult.unopened(raw, error, Decryption.MALFORMED, SignatureStatus.MALFORMED)


def _checked_against_shown(
    layers: Sequence[Layer], signers: Sequence[SignerReport], shown: Sender
) -> tuple[tuple[Layer, ...], tuple[SignerReport, ...]]:
    """``layers`` and ``signers`` with every ``valid`` signer checked once more against the
    From finally shown: a signer whose address it is not (or a header section without exactly
    one From address) is ``email-mismatch``. Each layer checked the From it knew while
    unwrapping; this makes sure that is the one the user sees."""
    valid, address = SignatureStatus.VALID, shown.address
    # (A Sender has its address exactly when it has no problem.)
    if address is not None and all(
        s.status != valid or holds_address(s.addresses, address) for s in signers
    ):
        return tuple(layers), tuple(signers)  # the common case: nothing to change

    def holds(signer: SignerReport) -> bool:
        return address is not None and holds_address(signer.addresses, address)

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

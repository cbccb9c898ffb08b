"""Values that flow out of the core: statuses, per-layer reports and the ``OpenResult``.

Every type here is immutable. The string values of the enums are part of the public interface
(``smime-companion open --json`` prints them; the cache stores them): never rename one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from smime_companion.core.verdicts import (
    DECRYPTION_SEVERITY,
    SIGNATURE_SEVERITY,
    WARN_NOT_INTEGRITY_PROTECTED,
    Decryption,
    SignatureStatus,
)

if TYPE_CHECKING:  # annotations only: a search need not load cryptography's X.509 (tens of ms)
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

# core.mime (and with it the email package) is imported where headers are read, not here.


@dataclass(frozen=True)
class Identity:
    """One of the user's own key pairs, used to decrypt (and, by ``seal``, to sign).

    ``chain`` holds intermediates to send along with the certificate when signing.
    """

    key: PrivateKeyTypes
    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...] = ()


@dataclass(frozen=True)
class SignerReport:
    """What was found about one SignerInfo.

    ``reason`` is one line explaining any status other than ``valid``. ``chain`` runs from the
    signer certificate to the trust anchor when a chain was built, else holds just the signer
    certificate when it was found. ``capabilities`` are the cipher names of the
    SMIMECapabilities signed attribute (e.g. ``aes-256-gcm``), in the sender's order of
    preference; ``capability_oids`` keeps every advertised OID, including ones we do not name.
    """

    status: SignatureStatus
    reason: str | None = None
    address: str | None = None
    addresses: tuple[str, ...] = ()
    certificate: x509.Certificate | None = None
    chain: tuple[x509.Certificate, ...] = ()
    certificates_in_message: tuple[x509.Certificate, ...] = ()
    digest_algorithm: str | None = None
    signature_algorithm: str | None = None
    signing_time: datetime | None = None
    capabilities: tuple[str, ...] = ()
    capability_oids: tuple[str, ...] = ()
    # SMIMEEncryptionKeyPreference (or Microsoft's variant): how the signer's preferred
    # encryption certificate is named, e.g. ("issuer-serial", "CN=CA", 1234) or ("ski", "ab01..").
    encryption_key_preference: tuple[Any, ...] | None = None
    # Defects of the signer's certificates that were tolerated, one line each (e.g. a serial
    # number that is not positive): never a reason for the status, always shown beside it.
    notes: tuple[str, ...] = ()
    # Every problem found, most severe first, as (status, one line): the status and reason
    # above are the first of them.
    problems: tuple[tuple[SignatureStatus, str], ...] = ()
    # Every weak algorithm found (SHA-1, MD5, RSA under 2048 bits), one line each, whether it
    # made the status weak-algorithm, was outranked by a worse problem, or was accepted.
    weaknesses: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready summary (no certificates, only their SHA-256 fingerprints)."""
        from cryptography.hazmat.primitives import hashes

        from smime_companion.core.certs import describe_subject

        return {
            "status": str(self.status),
            "reason": self.reason,
            "address": self.address,
            "addresses": list(self.addresses),
            "fingerprint": self.certificate.fingerprint(hashes.SHA256()).hex()
            if self.certificate is not None
            else None,
            "subject": describe_subject(self.certificate, empty="")
            if self.certificate is not None
            else None,
            "chain": [describe_subject(c, empty="") for c in self.chain],
            "digest_algorithm": self.digest_algorithm,
            "signature_algorithm": self.signature_algorithm,
            "signing_time": self.signing_time.isoformat() if self.signing_time else None,
            "capabilities": list(self.capabilities),
            "notes": list(self.notes),
            "problems": [{"status": str(s), "reason": r} for s, r in self.problems],
            "weaknesses": list(self.weaknesses),
        }


@dataclass(frozen=True)
class Layer:
    """One S/MIME layer, outermost first in ``OpenResult.layers``.

    ``type`` is one of ``signed`` (multipart/signed, detached), ``signed-data`` (opaque),
    ``signed-receipt`` (an RFC 2634 receipt: signed, with nothing inside to unwrap),
    ``enveloped`` (EnvelopedData), ``auth-enveloped`` (AuthEnvelopedData), ``compressed``,
    ``rfc822`` (an RFC 8551 message/rfc822 wrapper), ``certs-only`` (a SignedData with neither
    signer nor content, which only carries certificates: nothing is unwrapped).
    Signed layers fill ``signature`` and ``signers``; encrypted layers fill ``decryption``,
    ``content_cipher`` and ``key_transport``.
    """

    type: str
    signature: SignatureStatus | None = None
    signers: tuple[SignerReport, ...] = ()
    decryption: Decryption | None = None
    content_cipher: str | None = None
    key_transport: str | None = None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type}
        if self.signature is not None:
            out["signature"] = str(self.signature)
            out["signers"] = [s.to_json() for s in self.signers]
        if self.decryption is not None:
            out["decryption"] = str(self.decryption)
            out["content_cipher"] = self.content_cipher
            out["key_transport"] = self.key_transport
        if self.error is not None:
            out["error"] = self.error
        return out


@dataclass(frozen=True)
class DecryptOutcome:
    """Result of ``core.decrypt.decrypt``: the plaintext when ``status`` is ``ok``."""

    status: Decryption
    plaintext: bytes | None = None
    content_cipher: str | None = None  # "aes-256-gcm", "aes-128-cbc", "3des-cbc", ...
    key_transport: str | None = None  # "rsa-pkcs1v15", "rsa-oaep-sha256", "ecdh-p256-sha256", ...
    integrity_protected: bool = False  # True for AEAD (AuthEnvelopedData with a checked tag)
    weak: bool = False  # True for legacy ciphers (3DES, RC2)
    error: str | None = None  # one line when status is not ok


@dataclass(frozen=True)
class VerifyOutcome:
    """Result of ``core.verify.verify_signed_data`` for one SignedData."""

    status: SignatureStatus
    signers: tuple[SignerReport, ...] = ()
    content: bytes | None = None  # the signed content (the encapsulated content when opaque)
    error: str | None = None

    @property
    def signer(self) -> SignerReport | None:
        """The signer whose status decided the verdict."""
        for s in self.signers:
            if s.status == self.status:
                return s
        return self.signers[0] if self.signers else None


@dataclass(frozen=True)
class OpenResult:
    """Everything ``core.open.open_message`` learnt about one message.

    ``content`` is the innermost MIME entity (headers and body, as bytes) after every S/MIME layer
    was removed; when a layer could not be opened it is that layer's entity, unopened.
    ``headers`` are the effective message headers: protected headers (RFC 9788, legacy
    ``protected-headers="v1"``, or an RFC 8551 message/rfc822 wrapper) win over the outer ones.
    """

    decryption: Decryption
    signature: SignatureStatus
    signer: str | None
    layers: tuple[Layer, ...]
    content_cipher: str | None
    warnings: tuple[str, ...]
    error: str | None
    content: bytes
    headers: tuple[tuple[str, str], ...] = ()
    header_protection: str | None = None  # "hp", "v1", "rfc822" or None
    signers: tuple[SignerReport, ...] = field(default=())
    # The file name of content that came without a header of its own, from the name of the layer
    # around it (``contract.pdf`` inside ``contract.pdf.p7m``); None otherwise.
    content_name: str | None = None

    def all_signers(self) -> tuple[SignerReport, ...]:
        """Every signer of every layer: ``signers``, or the layers' own when a result was built
        without that summary."""
        return self.signers or tuple(s for layer in self.layers for s in layer.signers)

    @classmethod
    def unopened(
        cls,
        raw: bytes,
        error: str,
        decryption: Decryption = Decryption.NONE,
        signature: SignatureStatus = SignatureStatus.NONE,
    ) -> OpenResult:
        """The result for a message that could not be opened at all: no layers, ``error`` set,
        the raw message as the content (so it is still kept and shown)."""
        return cls(
            decryption=decryption,
            signature=signature,
            signer=None,
            layers=(),
            content_cipher=None,
            warnings=(),
            error=error,
            content=raw,
        )

    @property
    def ok(self) -> bool:
        """True when the message opened fully, without error, any signature is valid and the
        content is integrity-protected (the CLI's exit 0)."""
        return (
            self.error is None
            and self.decryption in (Decryption.OK, Decryption.NONE)
            and self.signature
            in (
                SignatureStatus.VALID,
                SignatureStatus.NONE,
            )
            and self.integrity_protected
        )

    @property
    def integrity_protected(self) -> bool:
        """False when the content came out of CBC decryption that no sound signature covers
        (``not-integrity-protected``): then it must not be trusted, nor rendered or exported as
        active HTML. True for everything else, plain mail included."""
        return WARN_NOT_INTEGRITY_PROTECTED not in self.warnings

    def header(self, name: str) -> str | None:
        """The first effective header of that name (case-insensitive), or None."""
        from smime_companion.core.mime import first_field

        return first_field(self.headers, name)

    def header_text(self, name: str) -> str | None:
        """The first effective header of that name with RFC 2047 encoded words decoded, for
        display and search (``header`` returns the raw value)."""
        from smime_companion.core.mime import decode_encoded_words

        value = self.header(name)
        return None if value is None else decode_encoded_words(value)

    def to_json(self) -> dict[str, Any]:
        """The object ``smime-companion open --json`` prints."""
        # The first field of each name: the one every other view shows, and the From the
        # signature was checked against (with two From fields it cannot be valid).
        from smime_companion.core.mime import decode_encoded_words

        headers: dict[str, str] = {}
        for name, value in self.headers:
            key = name.lower()
            if key in _SUMMARY_HEADERS and key not in headers:
                headers[key] = decode_encoded_words(value)
        return {
            "decryption": str(self.decryption),
            "signature": str(self.signature),
            "signer": self.signer,
            "layers": [layer.to_json() for layer in self.layers],
            "content_cipher": self.content_cipher,
            "warnings": list(self.warnings),
            "error": self.error,
            "header_protection": self.header_protection,
            "headers": headers,
            "content_name": self.content_name,
        }


_SUMMARY_HEADERS = frozenset({"from", "to", "cc", "subject", "date", "message-id"})


def worst_signature(statuses: Sequence[SignatureStatus]) -> SignatureStatus:
    """The overall verdict of several signed layers (``none`` when there are none)."""
    for status in SIGNATURE_SEVERITY:
        if status in statuses:
            return status
    return SignatureStatus.NONE


def signed_data_verdict(statuses: Sequence[SignatureStatus]) -> SignatureStatus:
    """The verdict of one SignedData from its signers' statuses: ``valid`` when any signer is
    valid (RFC 5652 section 5.6: a recipient may accept any one), else the worst of them."""
    return SignatureStatus.VALID if SignatureStatus.VALID in statuses else worst_signature(statuses)


def worst_decryption(statuses: Sequence[Decryption]) -> Decryption:
    """The overall verdict of several encrypted layers (``none`` when there are none)."""
    for status in DECRYPTION_SEVERITY:
        if status in statuses:
            return status
    return Decryption.NONE

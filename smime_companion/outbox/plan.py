"""Deciding what to do with one draft: pure rules from its bytes, the user's identities and the
certificates known for its recipients.

The outbox is a signing oracle for whoever can put a message in it (an auto-saved draft, a
shared folder, a compromised webmail session), so the plan rejects everything that is not
clearly the user's own mail: a draft whose From is not an address of one of the user's
identities, a draft too large, or one that cannot be read as a message. Those are
:class:`Rejected` and moved aside.

For the user's own drafts, every To/Cc/Bcc address is looked up through a
:class:`CertificateLookup`. When one lacks a certificate the ``missing_cert`` policy decides:

- ``hold`` (default): nothing is sent; :class:`Held` names who lacks a certificate;
- ``sign-only``: the draft is sent signed but not encrypted (the user gets a notice saying why);
- ``split``: the draft is sent encrypted to those with certificates and a draft addressed to the
  others only is held.

Nothing here reads the clock, the disk or the network: the time and the lookup are arguments.
"""

from __future__ import annotations

import email.utils
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Protocol

from cryptography import x509

from smime_companion.core.cert_vocabulary import CertRecord, Recipient, Trust
from smime_companion.core.certs import (
    advertised_capabilities,
    email_addresses,
    fingerprint_sha256,
    recipient_certificate_problem,
)
from smime_companion.core.mime import address_pairs, addresses, decode_encoded_words, parse_entity
from smime_companion.core.model import Identity
from smime_companion.core.seal import SealOptions
from smime_companion.core.selection import NoCertificate, Selected, Selection
from smime_companion.errors import MalformedInput

# A draft larger than this is rejected unless the config says otherwise: most submission servers
# refuse messages over 25-50 MB, and sealing adds a third (base64) on top.
DEFAULT_MAX_DRAFT_BYTES = 25 * 1024 * 1024
MAX_HEADER_BYTES = 256 * 1024

_RECIPIENT_FIELDS = ("to", "cc", "bcc")
DEFAULT_OPTIONS = SealOptions()


class MissingCertPolicy(StrEnum):
    """What to do when a recipient has no usable certificate (config ``missing_cert``)."""

    HOLD = "hold"
    SIGN_ONLY = "sign-only"
    SPLIT = "split"


class CertificateLookup(Protocol):
    """Where the outbox finds the certificate to encrypt to for an address.

    :class:`smime_companion.store.certstore.CertStore` is one (its ``select`` has this shape);
    :class:`CertificateList` is another, over certificates given directly (as
    ``seal --to-cert`` does).
    """

    def select(self, address: str, at: datetime) -> Selection:
        """The certificate and capabilities to encrypt to ``address`` at ``at``, or why none."""
        ...


class CertificateList:
    """A :class:`CertificateLookup` over a fixed list of certificates, matched by address.

    Used for certificates the user names directly (files), without the store's trust records:
    the user vouched for them by naming them. Among several for an address, the newest usable
    one wins.
    """

    def __init__(self, certificates: Sequence[x509.Certificate]) -> None:
        self._by_address: dict[str, list[x509.Certificate]] = {}
        for cert in certificates:
            for address in email_addresses(cert):
                self._by_address.setdefault(address, []).append(cert)

    def select(self, address: str, at: datetime) -> Selection:
        """See :meth:`CertificateLookup.select`. Never raises."""
        wanted = address.strip().lower()
        candidates = self._by_address.get(wanted, [])
        if not candidates:
            return NoCertificate(wanted, f"no certificate known for {wanted}")
        problems: list[str] = []
        usable: list[x509.Certificate] = []
        for cert in candidates:
            problem = recipient_certificate_problem(cert, at)
            if problem is None:
                usable.append(cert)
            else:
                problems.append(problem)
        if not usable:
            return NoCertificate(wanted, f"{wanted}: {problems[-1]}")
        best = max(usable, key=lambda c: c.not_valid_before_utc)
        return _selected(wanted, best)


def _selected(address: str, cert: x509.Certificate) -> Selected:
    # CertificateList has no store records; Selected wants one, so build the minimal record the
    # seal needs (address, certificate, capabilities).
    now = cert.not_valid_before_utc
    record = CertRecord(
        address=address,
        fingerprint=fingerprint_sha256(cert),
        certificate=cert,
        trust=Trust.TOFU,
        first_seen=now,
        last_seen=now,
        source="file",
    )
    return Selected(record, advertised_capabilities(cert))


@dataclass(frozen=True)
class DraftInfo:
    """What the plan read from a draft's header, for notices and the journal (no body).

    ``sender`` is the draft's one From address, or None when the draft breaks the one From
    rule (:func:`smime_companion.core.mime.sender_of`); ``sender_problem`` then says how.
    """

    sender: str | None
    subject: str
    message_id: str | None
    recipients: tuple[str, ...]
    sender_problem: str | None = None


@dataclass(frozen=True)
class SealPlan:
    """Seal ``draft`` with ``signer`` for ``recipients`` as ``options`` say.

    ``draft`` is the draft to seal: the original, or (``split``) the original addressed only to
    those with certificates. ``held_draft`` is the draft for the others under ``split`` (None
    otherwise), ``missing`` the addresses without a usable certificate (non-empty under
    ``sign-only`` and ``split``: the user is told, see ``outbox.notices``), ``warnings`` lines
    for the log (e.g. a revocation status that could not be checked).
    """

    draft: bytes
    info: DraftInfo
    signer: Identity
    recipients: tuple[Recipient, ...]
    options: SealOptions
    missing: tuple[NoCertificate, ...] = ()
    held_draft: bytes | None = None
    warnings: tuple[str, ...] = field(default=())


@dataclass(frozen=True)
class Held:
    """Do not send: hold the draft. ``reason`` is one line; ``missing`` says, per address, why it
    has no usable certificate."""

    info: DraftInfo
    reason: str
    missing: tuple[NoCertificate, ...]


@dataclass(frozen=True)
class Rejected:
    """Not the user's draft, or not processable at all: move it aside unsent. ``reason`` is one
    line for the notice and the journal."""

    reason: str
    info: DraftInfo | None = None


Plan = SealPlan | Held | Rejected


def draft_digest(draft: bytes) -> str:
    """The SHA-256 hex of a draft: how the journal recognises a draft it has seen."""
    return hashlib.sha256(draft).hexdigest()


def read_draft_info(draft: bytes) -> DraftInfo:
    """Sender, Subject, Message-ID and every To/Cc/Bcc address of ``draft``.

    The sender follows the one From rule: a draft with two From fields, or a From field holding
    two addresses, has no sender (``sender_problem`` says why), so it is never signed as one
    of them while the other is shown. Raises :class:`MalformedInput` (or its
    :class:`LimitExceeded`) for a header that cannot be read.
    """
    entity = parse_entity(draft, MAX_HEADER_BYTES)
    sender = entity.sender
    recipients: list[str] = []
    for name, value in entity.fields:
        if name.lower() in _RECIPIENT_FIELDS:
            recipients.extend(a for a in addresses(value) if a not in recipients)
    return DraftInfo(
        sender=sender.address,
        subject=decode_encoded_words(entity.get("Subject") or ""),
        message_id=(entity.get("Message-ID") or "").strip() or None,
        recipients=tuple(recipients),
        sender_problem=sender.problem,
    )


def plan_draft(
    draft: bytes,
    *,
    identities: Sequence[Identity],
    lookup: CertificateLookup,
    at: datetime,
    policy: MissingCertPolicy = MissingCertPolicy.HOLD,
    max_bytes: int = DEFAULT_MAX_DRAFT_BYTES,
    options: SealOptions = DEFAULT_OPTIONS,
) -> Plan:
    """Decide what to do with ``draft`` at time ``at``.

    Returns :class:`Rejected` for a draft larger than ``max_bytes``, one that cannot be read,
    without recipients, or whose From is not an address of a valid identity in ``identities``;
    :class:`Held` when a recipient lacks a usable certificate under ``hold`` (or under
    ``split`` when nobody has one); else a :class:`SealPlan`. Never raises.
    """
    if len(draft) > max_bytes:
        return Rejected(f"the draft is {len(draft)} bytes, larger than the limit of {max_bytes}")
    try:
        info = read_draft_info(draft)
    except MalformedInput as exc:
        return Rejected(f"the draft cannot be read: {exc}")
    if info.sender is None:
        problem = info.sender_problem or "the message has no From address"
        return Rejected(
            f"{problem.replace('the message', 'the draft', 1)}; the outbox seals only a draft "
            "with exactly one From field holding one of your addresses",
            info,
        )
    signer = _identity_for(info.sender, identities, at)
    if signer is None:
        return Rejected(
            f"the From address {info.sender} is not one of your S/MIME identities; "
            "the outbox only seals your own mail",
            info,
        )
    if not info.recipients:
        return Rejected("the draft has no To, Cc or Bcc recipient", info)
    if not options.encrypt:
        return SealPlan(draft, info, signer, (), options)
    found: list[Recipient] = []
    missing: list[NoCertificate] = []
    warnings: list[str] = []
    for address in info.recipients:
        if address == info.sender:
            continue  # seal encrypts to the signer's own certificate for the From address
        selection = lookup.select(address, at)
        if isinstance(selection, Selected):
            found.append(selection.recipient)
            warnings.extend(selection.warnings)
        else:
            missing.append(selection)
    if not missing:
        return SealPlan(draft, info, signer, tuple(found), options, warnings=tuple(warnings))
    return _plan_missing(draft, info, signer, found, missing, warnings, policy, options)


def _plan_missing(
    draft: bytes,
    info: DraftInfo,
    signer: Identity,
    found: list[Recipient],
    missing: list[NoCertificate],
    warnings: list[str],
    policy: MissingCertPolicy,
    options: SealOptions,
) -> Plan:
    """What ``policy`` makes of a draft some of whose recipients lack a certificate."""
    assert info.sender is not None  # plan_draft rejected a draft without one
    if policy == MissingCertPolicy.SIGN_ONLY and options.sign:
        return SealPlan(
            draft,
            info,
            signer,
            (),
            SealOptions(
                sign=True,
                encrypt=False,
                opaque=options.opaque,
                header_protection=options.header_protection,
                allow_3des=options.allow_3des,
            ),
            missing=tuple(missing),
            warnings=tuple(warnings),
        )
    if policy == MissingCertPolicy.SPLIT and (found or info.sender in info.recipients):
        keep = {r.address for r in found} | {info.sender}
        lacking = {m.address for m in missing}
        if found:
            return SealPlan(
                keep_recipients(draft, keep),
                info,
                signer,
                tuple(found),
                options,
                missing=tuple(missing),
                held_draft=keep_recipients(draft, lacking),
                warnings=tuple(warnings),
            )
    return Held(
        info,
        "no usable certificate for " + ", ".join(m.address for m in missing),
        tuple(missing),
    )


def _identity_for(sender: str, identities: Sequence[Identity], at: datetime) -> Identity | None:
    """The first identity (the current one comes first) whose certificate names ``sender`` and
    is valid at ``at``."""
    for identity in identities:
        cert = identity.certificate
        if sender in email_addresses(cert) and (
            cert.not_valid_before_utc <= at <= cert.not_valid_after_utc
        ):
            return identity
    return None


# --- rewriting the recipient fields (split) -----------------------------------------------------


def keep_recipients(draft: bytes, keep: set[str]) -> bytes:
    """``draft`` with its To, Cc and Bcc fields reduced to the addresses in ``keep``; a field left
    empty is dropped. The rest of the header and the body are kept byte for byte.

    Raises :class:`MalformedInput` for a draft whose header cannot be read.
    """
    entity = parse_entity(draft, MAX_HEADER_BYTES)
    newline = b"\r\n" if b"\r\n" in draft[: entity.body_start or len(draft)] else b"\n"
    header = draft[: entity.body_start] if entity.body_start else draft
    lines = header.split(newline)
    out: list[bytes] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        index += 1
        name = line.split(b":", 1)[0].strip().lower().decode("ascii", "replace")
        if line[:1] in (b" ", b"\t") or name not in _RECIPIENT_FIELDS:
            out.append(line)
            continue
        # Unfold the field: its value runs over the continuation lines that follow.
        parts = [line.split(b":", 1)[1]]
        while index < len(lines) and lines[index][:1] in (b" ", b"\t"):
            parts.append(lines[index])
            index += 1
        value = b"".join(parts).decode("utf-8", "replace").strip()
        kept = _format_addresses(value, keep)
        if kept:
            out.append(line.split(b":", 1)[0] + b": " + kept.encode("utf-8"))
    return newline.join(out) + (draft[entity.body_start :] if entity.body_start else b"")


def _format_addresses(value: str, keep: set[str]) -> str:
    kept: list[str] = []
    for name, address in address_pairs(value):
        if address.lower() in keep:
            # formataddr encodes a non-ASCII display name as an encoded word; decode first so an
            # already-encoded name is not quoted as literal text.
            kept.append(email.utils.formataddr((decode_encoded_words(name), address)))
    return ", ".join(kept)

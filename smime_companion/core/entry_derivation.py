"""Deriving a message's :class:`~smime_companion.core.cache_entry.CacheEntry` from its raw bytes
and open result, and revising both for revocations learnt after opening. Pure: the sync's worker
processes and a rebuild run it without a database.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import datetime, timedelta

from cryptography.hazmat.primitives import serialization

from smime_companion.core import text as mime_text
from smime_companion.core.cache_entry import REOPEN_DECRYPTION, UNREADABLE, CacheEntry, epoch
from smime_companion.core.input_forms import as_message
from smime_companion.core.mime import first_field, parse_entity
from smime_companion.core.model import OpenResult
from smime_companion.core.normalise import search_form
from smime_companion.core.open import with_revoked_signers
from smime_companion.core.verdicts import Decryption
from smime_companion.errors import MalformedInput

__all__ = [
    "derive_entry",
    "entry_maker",
    "indexed_text",
    "readable_text",
    "revised_for_revocations",
    "unindexed_entry",
]


def readable_text(
    content: bytes | None, decryption: str, error: str | None, content_name: str | None = None
) -> mime_text.MessageText:
    """The body text and attachments of a message whose readable content is ``content``
    (``content_name`` names content without a header, see ``OpenResult.content_name``).
    Nothing when nothing inside was read (an unopened layer is base64 noise: only the headers
    say anything)."""
    if content is None or decryption in UNREADABLE or error is not None:
        return mime_text.MessageText(body="", attachments=())
    return mime_text.extract_text(content, content_name)


def indexed_text(
    content: bytes | None, decryption: str, error: str | None, content_name: str | None = None
) -> mime_text.MessageText:
    """What to index of a message: :func:`readable_text` with the body in its search form."""
    extracted = readable_text(content, decryption, error, content_name)
    return replace(extracted, body=search_form(extracted.body))


# How far after its arrival a message's Date may lie and still be the date it is listed under.
FUTURE_DATE_TOLERANCE = timedelta(days=1)


def derive_entry(raw: bytes, result: OpenResult, arrived: datetime) -> CacheEntry:
    """The :class:`CacheEntry` of ``raw``, opened as ``result`` when it arrived at ``arrived``."""
    readable = result.decryption not in UNREADABLE
    headers = mime_text.summary_headers(result.headers or _outer_fields(raw))
    date = mime_text.header_date(headers.get("date")) or _received_date(raw) or arrived
    if date > arrived + FUTURE_DATE_TOLERANCE:
        # Dated after it arrived (spam, a sender's wrong clock): listed when it arrived, as
        # webmail lists mail, not pinned above everything until that date comes.
        date = arrived
    extracted = readable_text(result.content, result.decryption, result.error, result.content_name)
    content_is_raw = readable and result.content == raw
    return CacheEntry(
        content=result.content if readable and not content_is_raw else None,
        content_is_raw=content_is_raw,
        date=epoch(date),
        sender=headers.get("from", ""),
        to=headers.get("to", ""),
        cc=headers.get("cc", ""),
        subject=headers.get("subject", ""),
        message_id=headers.get("message-id", "").strip(),
        decryption=str(result.decryption),
        signature=str(result.signature),
        signer=result.signer,
        content_cipher=result.content_cipher,
        error=result.error,
        reopen=result.decryption in REOPEN_DECRYPTION
        or (result.error is not None and result.decryption != Decryption.NONE),
        report=_report(result, arrived),
        attachments=extracted.attachments,
        body=search_form(extracted.body),
        preview=extracted.preview,
        # Hashed here, not when storing: a worker process derives entries, and hashing every
        # message (317 MB in the sync bench) was the storing thread's to do.
        raw_sha256=hashlib.sha256(raw).hexdigest(),
    )


def unindexed_entry(raw: bytes, error: str, arrived: datetime) -> CacheEntry:
    """The entry of a message whose own entry could not be derived or stored (a bug of ours that
    its content triggers): nothing read from it but its size and hash, ``error`` saying why, so
    the raw original is still kept and a ``cache rebuild`` with a fixed version reads it."""
    result = OpenResult.unopened(b"", error, Decryption.MALFORMED)
    return CacheEntry(
        content=None,
        content_is_raw=False,
        date=epoch(arrived),
        sender="",
        to="",
        cc="",
        subject="",
        message_id="",
        decryption=str(result.decryption),
        signature=str(result.signature),
        signer=None,
        content_cipher=None,
        error=error,
        reopen=False,
        report=_report(result, arrived),
        attachments=(),
        body="",
        preview="",
        raw_sha256=hashlib.sha256(raw).hexdigest(),
    )


def revised_for_revocations(
    raw: bytes,
    result: OpenResult,
    entry: CacheEntry,
    arrived: datetime,
    revoked: Mapping[str, str],
) -> tuple[OpenResult, CacheEntry]:
    """``result`` and its ``entry`` with every signer whose certificate is in ``revoked``
    (SHA-256 fingerprint -> why) made ``revoked`` (see
    :func:`~smime_companion.core.open.with_revoked_signers`); the same pair when nothing in
    ``revoked`` applies. The sync and a rebuild both store what this returns, so a verdict learnt
    from OCSP or a CRL survives a rebuild."""
    revised = with_revoked_signers(result, revoked)
    if revised == result:
        return result, entry
    return revised, derive_entry(raw, revised, arrived)


def entry_maker(
    open_raw: Callable[[bytes, datetime], OpenResult],
    known_revoked: Callable[[OpenResult], Mapping[str, str]] | None = None,
) -> Callable[[bytes, datetime], CacheEntry]:
    """A function ``(raw, arrived) -> CacheEntry`` that opens ``raw`` with ``open_raw`` and
    derives its entry, revised for the revoked signers ``known_revoked`` names (e.g.
    ``harvest.CertHarvester.known_revoked``): a rebuild re-opens messages from their raw bytes
    and must keep the verdict the sync stored, ``revoked`` included."""

    def make(raw: bytes, arrived: datetime) -> CacheEntry:
        result = open_raw(raw, arrived)
        try:
            entry = derive_entry(raw, result, arrived)
            if known_revoked is None:
                return entry
            return revised_for_revocations(raw, result, entry, arrived, known_revoked(result))[1]
        except Exception as exc:  # a bug of ours that this message triggers: a rebuild goes on
            error = f"internal error while indexing: {type(exc).__name__}"
            return unindexed_entry(raw, error, arrived)

    return make


def _report(result: OpenResult, arrived: datetime) -> str:
    """The stored JSON report: the open report, its signers and the evidence a verdict rests on,
    so it stays explained later (when it was checked, and the exact certificates of each
    signer's chain)."""
    report = result.to_json()
    report["signers"] = [s.to_json() for s in result.signers]
    report["evidence"] = {
        "checked_at": arrived.isoformat(),
        "chains": [
            [
                base64.b64encode(c.public_bytes(serialization.Encoding.DER)).decode()
                for c in (signer.chain or ((signer.certificate,) if signer.certificate else ()))
            ]
            for signer in result.signers
        ],
    }
    return json.dumps(report, sort_keys=True)


def _received_date(raw: bytes) -> datetime | None:
    """When the receiving server took a message whose Date is missing or unreadable: the date
    after the last ``;`` of its topmost Received field (RFC 5321 section 4.4), which the server
    delivering to the mailbox writes. So an archive's dateless messages keep their place among
    the years, instead of all being listed on the day they were synced."""
    received = first_field(_outer_fields(raw), "received")
    if received is None or ";" not in received:
        return None
    return mime_text.header_date(received.rpartition(";")[2])


def _outer_fields(raw: bytes) -> tuple[tuple[str, str], ...]:
    # When opening produced no effective headers (e.g. an unparsable message), the outer header
    # section is the best we have; when even that is broken, the message has none.
    try:
        return parse_entity(as_message(raw), mime_text.MAX_HEADER_BYTES, received=True).fields
    except MalformedInput:
        return ()

"""What the outbox pipeline needs from the world, as protocols, and how submission fails.

The pipeline (:mod:`smime_companion.outbox.pipeline`) depends only on these: the IMAP adapter
(:mod:`smime_companion.imap.outbox_source`), the local directory source
(:mod:`smime_companion.outbox.localdir`) and the SMTP adapter (:mod:`smime_companion.smtp`)
implement them, and tests inject failures through them.

Submission failures are exceptions because they interrupt a network exchange, and they are split
by what the pipeline may do next (all in ``smime_companion.errors``): :class:`SubmissionDeferred`
(nothing was accepted: try again later), :class:`SubmissionRefused` (the server said no for good:
hold and tell the user) and :class:`SubmissionUncertain` (the connection broke after the whole
message was sent: the server may have accepted it, so it is never resent without the user's word).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol


class Place(StrEnum):
    """Where a draft may be: the outbox, or one of the folders drafts are moved aside to."""

    OUTBOX = "outbox"
    HELD = "held"  # waits for the user: missing certificates, a refused submission
    REJECTED = "rejected"  # not the user's mail (foreign From), too large, unreadable


@dataclass(frozen=True)
class DraftRef:
    """One draft as a source lists it. ``ref`` is opaque to the pipeline (a UID and folder, a
    file name) and is stored in the journal to find the draft again; ``size`` in bytes lets the
    pipeline refuse a draft too large before reading it."""

    ref: str
    size: int


class OutboxSource(Protocol):
    """Where drafts come from. Implementations raise a one-line
    :class:`~smime_companion.errors.SmimeCompanionError` subclass when the source cannot be used."""

    def drafts(self) -> list[DraftRef]:
        """The drafts now waiting in the outbox, oldest first."""
        ...

    def read(self, ref: str) -> bytes | None:
        """The raw draft, or None when it is gone (deleted or moved meanwhile)."""
        ...

    def remove(self, ref: str) -> None:
        """Delete the draft for good; a draft already gone is not an error."""
        ...

    def move_aside(self, ref: str, place: Place) -> str | None:
        """Move the draft to ``place``; returns its new ref (None when it was already gone)."""
        ...

    def put(self, draft: bytes, place: Place) -> None:
        """Store a new draft in ``place`` (the held part of a ``split`` draft)."""
        ...


class Submitter(Protocol):
    """Hands a finished message to the mail system (SMTP submission)."""

    def submit(self, message: bytes, sender: str, recipients: Sequence[str]) -> None:
        """Submit ``message`` with envelope ``sender`` and ``recipients``; returns when the
        server accepted it. Raises :class:`SubmissionDeferred`, :class:`SubmissionRefused` or
        :class:`SubmissionUncertain`."""
        ...


class SentFiler(Protocol):
    """Files the sealed copy of a sent message in the user's Sent folder."""

    def file_sent(self, message: bytes, message_id: str | None) -> None:
        """Store ``message`` (marked seen) in Sent. Storing a message whose ``message_id`` is
        already there does nothing, so filing again after a crash makes no duplicate."""
        ...


class Notifier(Protocol):
    """Tells the user something about their outbox (a message in their INBOX)."""

    def notify(self, message: bytes) -> None:
        """Deliver the notice ``message`` (a whole RFC 5322 message)."""
        ...

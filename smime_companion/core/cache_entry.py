"""What the cache keeps about a message besides its raw original: :class:`CacheEntry`, derived
from the raw message and its open result (:mod:`smime_companion.core.entry_derivation`) and
written by :mod:`smime_companion.store.cache`; and about a folder: :class:`FolderState`, what
the sync last knew of it. Plain values, so the sync and its worker processes use them without
importing the database.

:class:`MessageFacts` are the fields a message states about itself and its verdict; a
:class:`CacheEntry` (what is written) and a search hit (``store.cache.MessageSummary``, what is
read back) both carry them. Plain values, cheap to import: reading the cache needs them, not the
engines that derive them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from smime_companion.core.verdicts import Decryption

if TYPE_CHECKING:
    from smime_companion.core.text import Attachment

__all__ = [
    "REOPEN_DECRYPTION",
    "UNREADABLE",
    "CacheEntry",
    "FolderState",
    "MessageFacts",
    "epoch",
]

# Decryption results that mean "we could not read it yet": a newly imported key may fix them.
REOPEN_DECRYPTION = (Decryption.NO_KEY, Decryption.FAILED)
# Decryption results after which nothing inside the message was read (nothing to index).
UNREADABLE = (Decryption.NO_KEY, Decryption.FAILED, Decryption.MALFORMED, Decryption.UNSUPPORTED)


@dataclass(frozen=True)
class MessageFacts:
    """What a message says about itself (its effective headers, as one line each) and what
    opening it found."""

    sender: str
    to: str
    cc: str
    subject: str
    message_id: str
    decryption: str
    signature: str
    signer: str | None
    error: str | None


@dataclass(frozen=True)
class CacheEntry(MessageFacts):
    """Everything the cache keeps about a message besides its raw original and location, derived
    from the raw message and its open result by
    :func:`~smime_companion.core.entry_derivation.derive_entry`.

    Deriving (text extraction, header decoding, the JSON report) is kept apart from writing so it
    can run in a worker process beside the one that writes the database
    (:mod:`smime_companion.sync.opening`); it is plain data, cheap to pickle.
    """

    content: bytes | None  # decrypted innermost MIME; None when unreadable or the raw itself
    content_is_raw: bool  # plain mail: the content is the raw message, stored once
    date: int  # epoch seconds of the Date header, else of the arrival
    content_cipher: str | None
    reopen: bool  # could not be read yet: a newly imported key may open it
    report: str  # JSON: the open report, signers and evidence
    attachments: tuple[Attachment, ...]
    body: str  # the body text as indexed: in its search form (core.normalise), made here so
    # that the worker processes, not the storing thread, pay for it
    preview: str  # the first words of its text, for its row in a list (core.text.preview)
    raw_sha256: str  # of the raw message: finds it again after a UIDVALIDITY change


def epoch(moment: datetime) -> int:
    """``moment`` as epoch seconds. Raises ValueError for a naive datetime."""
    if moment.tzinfo is None:
        raise ValueError("the cache needs timezone-aware datetimes")
    return int(moment.timestamp())


@dataclass(frozen=True)
class FolderState:
    """What the sync last knew about a folder on the server."""

    uidvalidity: int
    highest_modseq: int | None = None
    uidnext: int | None = None
    last_sync: datetime | None = None
    error: str | None = None
    # The server's message count when UIDNEXT was ``uidnext`` (EXAMINE of the last complete
    # pass): without QRESYNC, the next pass sees expunges from the count alone.
    messages: int | None = None

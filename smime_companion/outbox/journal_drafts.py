"""The outbox of drafts kept in the journal itself: what the reader's Send and ``compose`` queue.

A draft written in the browser (or in ``$EDITOR`` by ``smime-companion compose``) holds the
plaintext of a reply and the decrypted text it quotes. It must never become a plaintext file or
a message on the provider's server, so it is kept in the outbox journal (``outbox.db``, encrypted
with the cache key) and this :class:`~smime_companion.outbox.protocols.OutboxSource` hands it to
the same pipeline as the IMAP and local outboxes: claimed, sealed, submitted, filed in Sent and
removed, exactly once. A draft the pipeline holds or rejects stays in the journal, in that place,
for the user to edit and send again.

Refs are ``draft:ID``; the pipeline stores them in its items, which is how the reader follows a
draft it queued (:meth:`~smime_companion.store.journal.Journal.item_for_ref`).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from smime_companion.outbox.protocols import DraftRef, Place
from smime_companion.store.journal import Journal

REF_PREFIX = "draft:"
QUEUED = "outbox"  # the drafts table's place for a draft waiting to be sent


def draft_ref(draft_id: int) -> str:
    """The ref the pipeline records for journal draft ``draft_id``."""
    return f"{REF_PREFIX}{draft_id}"


def draft_id_of(ref: str) -> int | None:
    """The journal draft id in ``ref``, or None when ``ref`` is not a journal draft's."""
    if not ref.startswith(REF_PREFIX) or not ref[len(REF_PREFIX) :].isdigit():
        return None
    return int(ref[len(REF_PREFIX) :])


def reader_label(account: str) -> str:
    """The outbox name the journal's items of ``account``'s journal drafts are kept under (as
    ``ACCOUNT/local`` is the local directory's)."""
    return f"{account}/reader"


class JournalDrafts:
    """The queued journal drafts of one account, as an outbox source."""

    def __init__(self, journal: Journal, account: str, clock: Callable[[], datetime]) -> None:
        self.journal = journal
        self.account = account
        self.clock = clock

    def drafts(self) -> list[DraftRef]:
        """The drafts queued to send, oldest first."""
        return [
            DraftRef(draft_ref(d.id), len(d.message))
            for d in self.journal.drafts(self.account, [QUEUED])
        ]

    def read(self, ref: str) -> bytes | None:
        """The draft's bytes, or None when it is gone."""
        draft_id = draft_id_of(ref)
        draft = self.journal.draft(draft_id) if draft_id is not None else None
        return draft.message if draft is not None else None

    def remove(self, ref: str) -> None:
        """Delete the draft (it was sent); a draft already gone is not an error."""
        draft_id = draft_id_of(ref)
        if draft_id is not None:
            self.journal.delete_draft(draft_id)

    def move_aside(self, ref: str, place: Place) -> str | None:
        """Keep the draft in the journal, in ``place``; returns its (unchanged) ref, or None
        when it is gone."""
        draft_id = draft_id_of(ref)
        if draft_id is None or not self.journal.move_draft(draft_id, str(place), self.clock()):
            return None
        return ref

    def put(self, draft: bytes, place: Place) -> None:
        """Keep a new draft (the held part of a ``split`` draft) in ``place``."""
        self.journal.save_draft(self.account, draft, str(place), self.clock())

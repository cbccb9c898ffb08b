"""What the sync exchanges with the world: the protocols of the server (:class:`Mailbox`), the
cache (:class:`SyncCache`), the harvester and the opening pool, and the values that cross them.

The sync talks to nothing else, so it can be read and tested on its own; the adapters are
:class:`smime_companion.imap.mailbox.ImapMailbox`, :class:`smime_companion.store.cache.Cache`,
:class:`smime_companion.harvest.CertHarvester` and
:class:`smime_companion.sync.opening.OpeningPool`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from smime_companion.core.cache_entry import CacheEntry, FolderState
from smime_companion.core.model import OpenResult

if TYPE_CHECKING:
    from smime_companion.sync.opening import OpenedBatch


@dataclass(frozen=True)
class FolderInfo:
    """What EXAMINE told about a folder. ``highest_modseq`` is None without CONDSTORE."""

    name: str
    uidvalidity: int
    uidnext: int | None
    exists: int
    highest_modseq: int | None = None


@dataclass(frozen=True)
class Summary:
    """One message before its body is fetched: enough to decide whether to download it.

    ``smime`` is None when BODYSTRUCTURE was not examined (``summaries(structure=False)``).
    """

    uid: int
    size: int  # RFC822.SIZE; 0 when the server gave none (or one outside 0..2^32-1)
    flags: tuple[str, ...]
    smime: bool | None
    internaldate: datetime | None = None
    size_announced: bool = True  # False: ``size`` is no announcement to hold the body to


@dataclass(frozen=True)
class Changes:
    """What changed since a MODSEQ: new flags of the given messages, and UIDs expunged;
    ``highest_modseq``: the largest MODSEQ among the answers (None when nothing changed)."""

    flags: dict[int, tuple[str, ...]]
    vanished: frozenset[int]
    highest_modseq: int | None = None


class Mailbox(Protocol):
    """The IMAP operations sync needs, on one connection. Implementations raise ImapError."""

    @property
    def capabilities(self) -> frozenset[str]:
        """The server's capabilities after login, upper-case (``IDLE``, ``QRESYNC``, ...)."""
        ...

    @property
    def qresync(self) -> bool:
        """True when QRESYNC is enabled on this connection (VANISHED responses available)."""
        ...

    def list_folders(self, patterns: Sequence[str]) -> list[str]:
        """Folder names matching any of the names or glob patterns (``Archive/*``)."""
        ...

    def examine(self, folder: str) -> FolderInfo:
        """Open ``folder`` read-only and return its state."""
        ...

    def still_open(self, folder: str) -> FolderInfo | None:
        """The state of ``folder`` as this connection's EXAMINE found it, when the folder is
        still the one open and the server keeps it current for us (QRESYNC: a folder watcher's
        connection); else None. ``uidnext`` is None (not asked again): a pass on it goes by
        the changes since the saved state instead of selecting the folder again."""
        ...

    def search_uids(self, start: int = 1) -> Sequence[int]:
        """UIDs >= ``start`` in the examined folder, ascending (compact: a million UIDs may
        come back)."""
        ...

    def search_smime_candidates(self, start: int = 1) -> Sequence[int] | None:
        """UIDs >= ``start`` whose Content-Type (or Content-Disposition) header mentions
        ``pkcs7`` or ``p7m``: a superset of the S/MIME messages, found by the server. None when
        the server refused the search (then every message's BODYSTRUCTURE must be read)."""
        ...

    def summaries(self, uids: Sequence[int], *, structure: bool = True) -> list[Summary]:
        """Size, flags and arrival time of these messages (expunged ones are absent) and, with
        ``structure``, their S/MIME-ness from BODYSTRUCTURE; without it ``smime`` is None (for
        callers that download every body anyway: BODYSTRUCTURE costs the server a parse)."""
        ...

    def bodies(
        self, uids: Sequence[int], sizes: Mapping[int, int] | None = None
    ) -> dict[int, bytes]:
        """The raw messages (BODY.PEEK[], so the \\Seen flag is not set). Missing: expunged.
        ``sizes`` are the RFC822.SIZEs the server announced: a literal much larger than its
        message's raises :class:`OversizedBody` (carrying the bodies received before it)."""
        ...

    def flags(self, uids: Sequence[int]) -> dict[int, tuple[str, ...]]:
        """Current flags of these messages (expunged ones are absent)."""
        ...

    def changes_since(
        self, uids: Sequence[int] | None, modseq: int, *, expected: int = 0
    ) -> Changes:
        """Flags changed since ``modseq`` among ``uids`` (None: in the whole folder, in one
        command whose answer holds only the changes; ``expected`` is the folder's message
        count, which bounds that answer) and, with QRESYNC, the UIDs expunged since."""
        ...

    def idle_start(self) -> None:
        """Enter IDLE on the examined folder (or prepare to poll when IDLE is missing)."""
        ...

    def idle_wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds; True when the server reported a change."""
        ...

    def idle_done(self) -> None:
        """Leave IDLE."""
        ...

    def close(self) -> None:
        """Log out and close the connection (never raises)."""
        ...


class SyncCache(Protocol):
    """The part of :class:`smime_companion.store.cache.Cache` that sync uses."""

    def store_message(
        self,
        *,
        account: str,
        folder: str,
        uidvalidity: int,
        uid: int,
        raw: bytes,
        entry: CacheEntry,
        arrived: datetime,
        flags: Sequence[str] = (),
    ) -> int: ...

    def uids(self, account: str, folder: str, uidvalidity: int, start: int = 1) -> set[int]: ...

    def forget_uids(
        self, account: str, folder: str, uidvalidity: int, uids: Iterable[int]
    ) -> int: ...

    def update_flags(
        self, account: str, folder: str, uidvalidity: int, uid: int, flags: Sequence[str]
    ) -> bool: ...

    def folder_state(self, account: str, folder: str) -> FolderState | None: ...

    def set_folder_state(self, account: str, folder: str, state: FolderState) -> None: ...

    def reset_folder(self, account: str, folder: str, new_uidvalidity: int) -> None: ...

    def drop_stale(self, account: str, folder: str) -> int: ...

    def transaction(self) -> AbstractContextManager[None]: ...


class Harvester(Protocol):
    """Receives every opened message so signer certificates can be collected (issue 4's
    certificate store). ``message_id`` is the Message-ID header, for its records."""

    def harvest(
        self, result: OpenResult, message_id: str | None, at: datetime
    ) -> Mapping[str, str]:
        """Collect what ``result`` teaches (signer chains, capabilities) as seen at ``at``;
        return its signers known to be revoked (SHA-256 fingerprint -> where that was learnt),
        which the message is then stored with. May raise: sync logs the error and carries on."""
        ...

    def known_revoked(self, result: OpenResult) -> Mapping[str, str]:
        """The signers of ``result`` already known to be revoked (asks no server)."""
        ...


class BatchOpener(Protocol):
    """Opens messages and derives their cache entries, possibly in another process
    (:class:`smime_companion.sync.opening.OpeningPool`, which binds the identities and anchors)."""

    # How many worker processes open batches (0: ``submit`` opens them before returning).
    workers: int

    def submit(self, items: Sequence[tuple[bytes, datetime]], *, here: bool = False) -> OpenedBatch:
        """Start opening ``(raw, arrival time)`` pairs (in this thread, at once, when ``here``);
        never raises for a bad message."""
        ...


@dataclass
class FolderReport:
    """What one pass over one folder did."""

    account: str
    folder: str
    uidvalidity: int | None = None
    new: int = 0  # messages seen for the first time
    stored: int = 0  # bodies fetched and stored
    skipped: int = 0  # not S/MIME (and cache_all off): not downloaded
    failed_to_open: int = 0  # stored with an error
    refused: int = 0  # bodies refused unread (far larger than announced), stored as failed
    expunged: int = 0
    flags_updated: int = 0
    uidvalidity_changed: bool = False
    dropped_stale: int = 0
    unchanged: bool = False
    complete: bool = False


class Stopped(Exception):
    """Raised inside a pass when the caller asked to stop (SIGTERM) between two messages."""

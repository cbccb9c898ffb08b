"""Synchronising one IMAP folder into the cache: the sync logic, free of any IMAP library.

:func:`sync_folder` talks to the server only through the
:class:`~smime_companion.imap.client.Mailbox` protocol and to the cache only through
:class:`SyncCache` (the methods of :class:`smime_companion.store.cache.Cache` it uses), so it
can be read and tested on its own.

One pass, read-only on the server:

1. EXAMINE the folder. A changed UIDVALIDITY means the server renumbered it: the cache keeps the
   old entries (still searchable) and each message found again is moved onto its old entry by its
   raw SHA-256 (``Cache.store_message`` does that), so nothing is lost or duplicated; entries not
   found again are dropped only after a complete pass.
2. Nothing changed (same HIGHESTMODSEQ and UIDNEXT under CONDSTORE): done, no further command.
3. Expunges and flag changes of cached messages: with QRESYNC from ``CHANGEDSINCE ... VANISHED``;
   otherwise by comparing a UID SEARCH with the cache (and CHANGEDSINCE or plain FLAGS fetches).
4. New messages (UIDs at or above the recorded UIDNEXT, or every UID not cached on a first pass):
   the server names the candidates (a header SEARCH) and each candidate's own header, fetched
   with its body, tells whether it is S/MIME (BODYSTRUCTURE where the server refuses the
   search), so only S/MIME bodies are downloaded (every body with ``cache_all``); bodies in
   batches bounded in bytes. Three stages overlap: a reader
   thread fetches the next batches, the opener (``smime_companion.opening``, worker processes
   when there are spare cores) opens each at its arrival time and derives its cache entry, and
   this thread stores the oldest opened batch in one transaction, offering each message to the
   certificate harvester. Progress (UIDNEXT) is saved once every batch of a summary batch is
   stored, so an interrupted pass resumes where it stopped; storing is idempotent, so a batch
   repeated after a crash adds nothing twice.

A message that cannot be opened is stored with its error and raw bytes, never dropped.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from smime_companion.core.cache_entry import CacheEntry
from smime_companion.core.entry_derivation import derive_entry, revised_for_revocations
from smime_companion.core.model import Decryption, OpenResult
from smime_companion.core.open import is_smime_message
from smime_companion.imap.client import Mailbox, OversizedBody, Summary
from smime_companion.opening import Opened
from smime_companion.store.cache import FolderState

log = logging.getLogger(__name__)

# Messages per BODYSTRUCTURE round trip.
SUMMARY_BATCH = 500
# A body batch closes at this many bytes or messages (bounds memory and the loss on a crash).
# Up to four batches are in flight at once (read ahead, queued, being opened, being stored).
BODY_BATCH_BYTES = 8 * 1024 * 1024
BODY_BATCH_COUNT = 50


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

    def uids(self, account: str, folder: str, uidvalidity: int) -> set[int]: ...

    def forget_uids(
        self, account: str, folder: str, uidvalidity: int, uids: Iterable[int]
    ) -> int: ...

    def update_flags(
        self, account: str, folder: str, uidvalidity: int, uid: int, flags: Sequence[str]
    ) -> None: ...

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


class OpenedBatch(Protocol):
    """A batch being opened (:class:`smime_companion.opening.OpenedBatch`)."""

    def result(self) -> list[Opened]:
        """One :class:`Opened` per submitted message, in order."""
        ...

    def done(self) -> bool:
        """True when :meth:`result` would not wait."""
        ...


class BatchOpener(Protocol):
    """Opens messages and derives their cache entries, possibly in another process
    (:class:`smime_companion.opening.Opener`, which binds the identities and anchors)."""

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
    stored_uids: list[int] = field(default_factory=list)


class Stopped(Exception):
    """Raised inside a pass when the caller asked to stop (SIGTERM) between two messages."""


def sync_folder(
    mailbox: Mailbox,
    cache: SyncCache,
    *,
    account: str,
    folder: str,
    opener: BatchOpener,
    now: Callable[[], datetime],
    cache_all: bool = False,
    harvester: Harvester | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    progress: Callable[[int, int], None] | None = None,
) -> FolderReport:
    """Bring the cache's copy of ``folder`` up to date with the server; return what was done.

    ``now`` gives the current time (for ``last_sync`` and messages without INTERNALDATE);
    ``progress(done, total)`` is called after each stored batch of new messages.
    Raises :class:`~smime_companion.errors.ImapError` when the connection fails (the progress
    made so far is kept), :class:`Stopped` when ``should_stop`` became true, and
    :class:`~smime_companion.errors.CacheError` when the cache cannot be written.
    """
    report = FolderReport(account=account, folder=folder)
    info = mailbox.examine(folder)
    report.uidvalidity = uv = info.uidvalidity
    state = cache.folder_state(account, folder)
    if state is not None and state.uidvalidity != uv:
        log.warning(
            "%s/%s: UIDVALIDITY changed %s -> %s; re-matching cached messages",
            account,
            folder,
            state.uidvalidity,
            uv,
        )
        cache.reset_folder(account, folder, uv)
        report.uidvalidity_changed = True
        state = cache.folder_state(account, folder)
    if state is None:
        state = FolderState(uidvalidity=uv)
        cache.set_folder_state(account, folder, state)

    if (
        info.highest_modseq is not None
        and state.highest_modseq == info.highest_modseq
        and state.uidnext == info.uidnext
    ):
        report.unchanged = report.complete = True
        _save(cache, account, folder, state, uidnext=state.uidnext, modseq=state.highest_modseq,
              last_sync=now())  # fmt: skip
        return report

    cached = cache.uids(account, folder, uv)
    start = state.uidnext or 1

    # -- expunges and flag changes of what we hold -------------------------------------------
    server_uids: list[int]
    if state.highest_modseq is not None and info.highest_modseq is not None and mailbox.qresync:
        changes = mailbox.changes_since(sorted(cached), state.highest_modseq)
        gone = set(changes.vanished)
        changed_flags = changes.flags
        server_uids = mailbox.search_uids(start)
    else:
        server_uids = mailbox.search_uids(1)
        gone = cached - set(server_uids)
        keep = sorted(cached - gone)
        if state.highest_modseq is not None and info.highest_modseq is not None:
            changed_flags = mailbox.changes_since(keep, state.highest_modseq).flags
        else:
            changed_flags = mailbox.flags(keep)
    if gone:
        report.expunged = cache.forget_uids(account, folder, uv, sorted(gone))
        log.info("%s/%s: %d expunged", account, folder, report.expunged)
    for uid, flags in changed_flags.items():
        if uid in cached and uid not in gone:
            cache.update_flags(account, folder, uv, uid, flags)
            report.flags_updated += 1

    # -- new messages -------------------------------------------------------------------------
    new = [u for u in server_uids if u >= start and u not in cached]
    report.new = len(new)
    # Unless everything is cached, let the server name the messages whose headers mention
    # PKCS#7 (a superset of S/MIME): the others need no BODYSTRUCTURE at all.
    candidates: set[int] | None = None
    if new and not cache_all:
        found = mailbox.search_smime_candidates(new[0])
        candidates = set(found) if found is not None else None
    # Three stages run side by side: a reader thread fetches batches of bodies (it alone uses
    # the connection until it has finished), the opener opens batches (in worker processes when
    # there are cores to spare), and this thread stores the oldest opened batch, in order.
    store = _Storer(cache, report, account, folder, uv, state, len(new), harvester,
                    should_stop, progress)  # fmt: skip
    in_flight: collections.deque[tuple[_Fetched, OpenedBatch]] = collections.deque()
    failed: Exception | None = None  # the reader's: raised once what arrived whole is stored
    with _Reader(mailbox, new, candidates, cache_all, report, now) as reader:
        batches = iter(reader)
        while True:
            try:
                fetched = next(batches)
            except StopIteration:
                break
            except Exception as exc:  # the connection failed: keep the batches read whole
                failed = exc
                break
            items = [(raw, at) for _s, raw, at in fetched.messages]
            # A batch goes to the workers, unless each already has one waiting behind the one
            # it is opening: then opening is the slower stage, and this thread opens the batch
            # itself (it has stored everything ready). So both cores stay busy whichever stage
            # is slower, and storing never waits behind opening it could have done.
            backlog = sum(not batch.done() for _f, batch in in_flight)
            in_flight.append((fetched, opener.submit(items, here=backlog >= 2 * opener.workers)))
            # Store what is ready, oldest first (storing is in UID order); wait for the oldest
            # only when more batches are in flight than the workers and this thread hold.
            limit = 2 * opener.workers + 1
            while in_flight and (in_flight[0][1].done() or len(in_flight) > limit):
                store(*in_flight.popleft())
        # Also after a failed read: batches received whole are stored (and progress saved), so a
        # connection that always dies at the same place still lets a first sync move on.
        while in_flight:
            store(*in_flight.popleft())
    if failed is not None:
        raise failed
    saved = store.saved

    # A complete pass under the current UIDVALIDITY: entries left under an older one were not
    # found again, so the server no longer has them (a no-op unless UIDVALIDITY changed, which
    # may have been in an earlier, interrupted pass).
    report.dropped_stale = cache.drop_stale(account, folder)
    uidnext = info.uidnext
    if uidnext is None:
        uidnext = max([*server_uids, start - 1]) + 1
    _save(cache, account, folder, saved, uidnext=max(uidnext, saved.uidnext or 1),
          modseq=info.highest_modseq, last_sync=now())  # fmt: skip
    report.complete = True
    log.info(
        "%s/%s: %d new (%d stored, %d not S/MIME), %d expunged, %d flag changes",
        account,
        folder,
        report.new,
        report.stored,
        report.skipped,
        report.expunged,
        report.flags_updated,
    )
    return report


def record_error(cache: SyncCache, account: str, folder: str, error: str) -> None:
    """Remember the last failure of a folder (shown by ``status``), keeping its sync state."""
    state = cache.folder_state(account, folder)
    if state is None:
        return  # never examined: nothing to attach the error to yet
    cache.set_folder_state(
        account,
        folder,
        FolderState(
            uidvalidity=state.uidvalidity,
            highest_modseq=state.highest_modseq,
            uidnext=state.uidnext,
            last_sync=state.last_sync,
            error=error,
        ),
    )


class _Storer:
    """Stores opened batches of one folder, in UID order, each in one transaction, and saves
    the folder's progress once every batch of a summary batch is stored."""

    def __init__(
        self,
        cache: SyncCache,
        report: FolderReport,
        account: str,
        folder: str,
        uidvalidity: int,
        state: FolderState,
        total: int,
        harvester: Harvester | None,
        should_stop: Callable[[], bool],
        progress: Callable[[int, int], None] | None,
    ) -> None:
        self.cache, self.report = cache, report
        self.account, self.folder, self.uidvalidity = account, folder, uidvalidity
        self.saved = state  # the folder state as last saved
        self.total, self.done = total, 0
        self.harvester, self.should_stop, self.progress = harvester, should_stop, progress

    def __call__(self, fetched: _Fetched, batch: OpenedBatch) -> None:
        """Store ``fetched`` as opened by ``batch``. Raises :class:`Stopped` when asked to stop
        (what was stored is committed; the rest is fetched again next time)."""
        where = f"{self.account}/{self.folder}"
        # One transaction per batch: a commit per message cost more than everything else
        # together; a crash loses at most this batch, and storing again is idempotent.
        with self.cache.transaction():
            stopped_at = self._store(fetched, batch.result())
        if stopped_at is not None:
            raise Stopped(f"{where}: stopped at UID {stopped_at}")
        if fetched.batch_end is not None:
            # Every UID of that summary batch is handled (stored or deliberately skipped):
            # the next pass resumes after it.
            self.done += fetched.batch_size
            self.saved = _save(self.cache, self.account, self.folder, self.saved,
                               uidnext=fetched.batch_end + 1, modseq=self.saved.highest_modseq,
                               last_sync=self.saved.last_sync)  # fmt: skip
            if self.progress is not None:
                self.progress(self.done, self.total)
            if self.should_stop():
                raise Stopped(f"{where}: stopped after UID {fetched.batch_end}")

    def _store(self, fetched: _Fetched, opened: list[Opened]) -> int | None:
        """Store one opened batch; returns the UID it stopped after when asked to stop."""
        report, where = self.report, f"{self.account}/{self.folder}"
        for (summary, raw, arrived), item in zip(fetched.messages, opened, strict=True):
            result, entry = item.result, item.entry
            message_id = entry.message_id
            # Harvested before storing: the certificate store may know the signer is revoked
            # (or learn it now), and then the message is stored with that verdict.
            revoked = self._harvest(result, message_id, arrived, summary.uid)
            if revoked:
                result, entry = revised_for_revocations(raw, result, entry, arrived, revoked)
                log.warning("%s UID %d %s: signed with a revoked certificate", where,
                            summary.uid, message_id)  # fmt: skip
            self.cache.store_message(
                account=self.account,
                folder=self.folder,
                uidvalidity=self.uidvalidity,
                uid=summary.uid,
                raw=raw,
                entry=entry,
                arrived=arrived,
                flags=summary.flags,
            )
            report.stored += 1
            report.stored_uids.append(summary.uid)
            if result.error is not None:
                report.failed_to_open += 1
                log.warning("%s UID %d %s: stored unopened: %s", where, summary.uid, message_id,
                            result.error)  # fmt: skip
            elif result.decryption != Decryption.NONE or result.signature != "none":
                log.info("%s UID %d %s: stored", where, summary.uid, message_id)
            else:  # plain mail (cache_all): one line each would drown the S/MIME ones
                log.debug("%s UID %d %s: stored", where, summary.uid, message_id)
            if self.should_stop():
                return summary.uid  # SIGTERM finishes the current message, then stops
        for summary, why, arrived in fetched.refused:
            result = OpenResult.unopened(b"", why)
            self.cache.store_message(
                account=self.account,
                folder=self.folder,
                uidvalidity=self.uidvalidity,
                uid=summary.uid,
                raw=b"",
                entry=derive_entry(b"", result, arrived),
                arrived=arrived,
                flags=summary.flags,
            )
            report.stored += 1
            report.failed_to_open += 1
            log.warning("%s UID %d: recorded as failed: %s", where, summary.uid, why)
        return None

    def _harvest(
        self, result: OpenResult, message_id: str, arrived: datetime, uid: int
    ) -> Mapping[str, str]:
        """Harvest ``result``'s signers; return those known to be revoked (see
        :class:`Harvester`). Never raises: harvesting must not lose the sync a message."""
        if self.harvester is None:
            return {}
        try:
            return self.harvester.harvest(result, message_id, arrived)
        except Exception as exc:  # harvesting is a bonus: never lose the sync over it
            log.warning("%s/%s UID %d: harvest failed: %s", self.account, self.folder, uid, exc)
            return {}


@dataclass(frozen=True)
class _Fetched:
    """One batch read from the server: (summary, raw, arrival time) of each message still there
    (an expunge between the two fetches drops it). ``batch_end`` is set on the last batch of a
    summary batch: once it is stored, every UID up to it is handled."""

    messages: list[tuple[Summary, bytes, datetime]]
    batch_end: int | None = None
    batch_size: int = 0
    # Messages whose body the server sent far larger than announced: stored as failed, with
    # the reason and no bytes (none were read).
    refused: list[tuple[Summary, str, datetime]] = field(default_factory=list)


class _Reader:
    """Reads summaries and bodies of the new messages on a thread, one batch ahead of the
    opener, into a queue of one; iterate it for the batches. It alone uses the connection from
    start until it is closed (which waits for the thread). A failure is raised to the reader's
    consumer when it reaches that point."""

    _END = object()

    def __init__(
        self,
        mailbox: Mailbox,
        new: list[int],
        candidates: set[int] | None,
        cache_all: bool,
        report: FolderReport,
        now: Callable[[], datetime],
    ) -> None:
        self._mailbox = mailbox
        self._now = now
        self._new = new
        self._candidates = candidates
        self._cache_all = cache_all
        self._report = report
        self._queue: queue.Queue[object] = queue.Queue(maxsize=1)
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._run, name="imap-reader", daemon=True)

    def __enter__(self) -> _Reader:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._closing.set()
        while self._thread.is_alive():
            try:
                self._queue.get(timeout=0.05)  # unblock a reader waiting to hand over
            except queue.Empty:
                pass
        self._thread.join()

    def __iter__(self) -> Iterator[_Fetched]:
        while True:
            item = self._queue.get()
            if item is self._END:
                return
            if isinstance(item, BaseException):
                raise item
            assert isinstance(item, _Fetched)
            yield item

    def _run(self) -> None:
        try:
            for batch in _batches(self._new, SUMMARY_BATCH):
                candidates = self._candidates
                look_at = batch if candidates is None else [u for u in batch if u in candidates]
                # BODYSTRUCTURE tells which messages are S/MIME only when the server could not
                # name candidates: a candidate's own header, fetched with its body, decides (a
                # false candidate costs one download, the BODYSTRUCTUREs a round trip per batch
                # and the server's parsing of every candidate). With cache_all no check at all.
                structure = candidates is None and not self._cache_all
                summaries = self._mailbox.summaries(look_at, structure=structure) if look_at else []
                wanted = [s for s in summaries if self._cache_all or s.smime is not False]
                self._report.skipped += len(batch) - len(wanted)
                groups = list(_body_groups(wanted)) or [[]]
                for i, group in enumerate(groups):
                    if self._closing.is_set():
                        return
                    refused: list[tuple[Summary, str, datetime]] = []
                    failure: OversizedBody | None = None
                    try:
                        bodies = self._bodies(group)
                    except OversizedBody as exc:
                        bodies, failure = exc.received, exc
                        refused = self._refused(group, bodies, exc)
                    if not self._cache_all:
                        bodies = self._smime_only(group, bodies)
                    # The time WE received the messages, not the server's INTERNALDATE: that
                    # is the server's claim (an APPEND sets any date), and signatures and
                    # revocation are judged at it.
                    received = self._now()
                    messages = [(s, bodies[s.uid], received) for s in group if s.uid in bodies]
                    last = i == len(groups) - 1 and failure is None
                    fetched = (
                        _Fetched(messages, max(batch), len(batch), refused)
                        if last
                        else _Fetched(messages, refused=refused)
                    )
                    if not self._hand_over(fetched):
                        return
                    if failure is not None:
                        raise failure  # the connection is gone; the next pass goes on
            self._hand_over(self._END)
        except BaseException as exc:  # raised again in the consuming thread
            self._hand_over(exc)

    def _bodies(self, group: list[Summary]) -> dict[int, bytes]:
        if not group:
            return {}
        sizes = {s.uid: s.size for s in group if s.size_announced}
        return self._mailbox.bodies([s.uid for s in group], sizes)

    def _refused(
        self, group: list[Summary], bodies: Mapping[int, bytes], exc: OversizedBody
    ) -> list[tuple[Summary, str, datetime]]:
        """The message a refused literal was for, to be stored as failed (so the next pass
        does not ask for it again). When the server had not named its UID, the lowest UID of
        the group that did not arrive: servers answer in UID order, and a server that does not
        is not one whose word decides which message it was."""
        if exc.uid is not None:
            blamed = [s for s in group if s.uid == exc.uid]
        else:
            blamed = [s for s in group if s.uid not in bodies][:1]
        self._report.refused += len(blamed)
        return [(s, str(exc), self._now()) for s in blamed]

    def _smime_only(self, group: list[Summary], bodies: dict[int, bytes]) -> dict[int, bytes]:
        """``bodies`` without the candidates whose header shows they are not S/MIME."""
        unknown = {s.uid for s in group if s.smime is None}
        kept = {u: raw for u, raw in bodies.items() if u not in unknown or is_smime_message(raw)}
        self._report.skipped += len(bodies) - len(kept)
        return kept

    def _hand_over(self, item: object) -> bool:
        while not self._closing.is_set():
            try:
                self._queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False


def _save(
    cache: SyncCache,
    account: str,
    folder: str,
    state: FolderState,
    *,
    uidnext: int | None,
    modseq: int | None,
    last_sync: datetime | None,
) -> FolderState:
    new = FolderState(
        uidvalidity=state.uidvalidity,
        highest_modseq=modseq,
        uidnext=uidnext,
        last_sync=last_sync,
        error=None,
    )
    cache.set_folder_state(account, folder, new)
    return new


def _batches(items: Sequence[int], size: int) -> Iterable[list[int]]:
    for i in range(0, len(items), size):
        yield list(items[i : i + size])


def _body_groups(summaries: Sequence[Summary]) -> Iterable[list[Summary]]:
    group: list[Summary] = []
    size = 0
    for summary in summaries:
        if group and (size + summary.size > BODY_BATCH_BYTES or len(group) >= BODY_BATCH_COUNT):
            yield group
            group, size = [], 0
        group.append(summary)
        size += summary.size
    if group:
        yield group

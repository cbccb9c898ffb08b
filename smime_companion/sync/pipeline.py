"""The pipeline of a sync pass: fetch the new messages' bodies, open them, store them.

Three stages overlap (see ``docs/performance.md``): a reader thread (:class:`_BodyFetcher`)
fetches batches of bodies (it alone uses the connection until it has finished), the opening pool
(:class:`~smime_companion.sync.opening.OpeningPool`, worker processes when there are spare
cores) opens each batch at its arrival time and derives its cache entries, and the calling
thread stores the oldest opened batch in one transaction (:class:`_Storer`), offering each
message to the certificate harvester. Progress (UIDNEXT) is saved once every batch of a summary
batch is stored, so an interrupted pass resumes where it stopped; storing is idempotent, so a
batch repeated after a crash adds nothing twice.

Only S/MIME bodies are downloaded (every body with ``cache_all``): the server names the
candidates (a header SEARCH, done by the caller) and each candidate's own header, fetched with
its body, decides (BODYSTRUCTURE where the server refused the search). A message that cannot be
opened is stored with its error and raw bytes, never dropped.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from smime_companion.core.cache_entry import CacheEntry, FolderState
from smime_companion.core.entry_derivation import (
    derive_entry,
    revised_for_revocations,
    unindexed_entry,
)
from smime_companion.core.model import OpenResult
from smime_companion.core.open import is_smime_message
from smime_companion.core.verdicts import Decryption
from smime_companion.errors import OversizedBody
from smime_companion.sync.opening import Opened, OpenedBatch
from smime_companion.sync.protocols import (
    BatchOpener,
    FolderReport,
    Harvester,
    Mailbox,
    Stopped,
    Summary,
    SyncCache,
)

log = logging.getLogger(__name__)

# Messages per summary round trip (and per saved progress).
SUMMARY_BATCH = 500
# A body batch closes at this many bytes or messages (bounds memory and the loss on a crash).
# Up to four batches are in flight at once (read ahead, queued, being opened, being stored).
BODY_BATCH_BYTES = 8 * 1024 * 1024
BODY_BATCH_COUNT = 50


@dataclass(frozen=True)
class PassContext:
    """Where a pass stores and what it reports to: the folder, its UIDVALIDITY and its state
    as last saved."""

    cache: SyncCache
    report: FolderReport
    account: str
    folder: str
    uidvalidity: int
    state: FolderState
    now: Callable[[], datetime]
    harvester: Harvester | None
    should_stop: Callable[[], bool]
    progress: Callable[[int, int], None] | None


def fetch_open_store(
    mailbox: Mailbox,
    opener: BatchOpener,
    context: PassContext,
    new: Sequence[int],
    candidates: set[int] | None,
    cache_all: bool,
) -> FolderState:
    """Fetch, open and store the messages ``new`` (only ``candidates`` and those whose header
    shows S/MIME, unless ``cache_all``; ``candidates`` None: BODYSTRUCTURE decides); return the
    folder state as last saved. Raises what the connection raised once every batch that
    arrived whole is stored, :class:`Stopped` when asked to stop, CacheError."""
    store = _Storer(context, len(new))
    in_flight: collections.deque[tuple[_Fetched, OpenedBatch]] = collections.deque()
    failed: Exception | None = None  # the reader's: raised once what arrived whole is stored
    with _BodyFetcher(mailbox, new, candidates, cache_all, context.report, context.now) as fetcher:
        batches = iter(fetcher)
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
    return store.saved


class _Storer:
    """Stores opened batches of one folder, in UID order, each in one transaction, and saves
    the folder's progress once every batch of a summary batch is stored."""

    def __init__(self, context: PassContext, total: int) -> None:
        self.cache, self.report = context.cache, context.report
        self.account, self.folder = context.account, context.folder
        self.uidvalidity = context.uidvalidity
        self.saved = context.state  # the folder state as last saved
        self.total, self.done = total, 0
        self.harvester = context.harvester
        self.should_stop, self.progress = context.should_stop, context.progress

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
            self.saved = save_state(self.cache, self.account, self.folder, self.saved,
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
            result = self._store_one(summary, raw, result, entry, arrived)
            report.stored += 1
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

    def _store_one(
        self,
        summary: Summary,
        raw: bytes,
        result: OpenResult,
        entry: CacheEntry,
        arrived: datetime,
    ) -> OpenResult:
        """Store one message; return its result as stored. A value of this message that the
        cache cannot write (a bug of ours that its content triggers, e.g. text SQLite cannot
        bind) must not stop the folder at this UID on every pass: the raw original is stored
        with an entry that holds nothing read from it, and the error says why. Storage errors
        (sqlite3's own, the disk) are not caught: the pass stops and is retried."""

        def store(entry: CacheEntry) -> None:
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

        try:
            store(entry)
            return result
        except (UnicodeError, ValueError, OverflowError, TypeError) as exc:
            log.exception("%s/%s UID %d: storing its entry failed", self.account, self.folder,
                          summary.uid)  # fmt: skip
            error = f"internal error while storing: {type(exc).__name__}"
        store(unindexed_entry(raw, error, arrived))
        return OpenResult.unopened(raw, error, Decryption.MALFORMED)

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


class _BodyFetcher:
    """Reads summaries and bodies of the new messages on a thread, one batch ahead of the
    opener, into a queue of one; iterate it for the batches. It alone uses the connection from
    start until it is closed (which waits for the thread). A failure is raised to the reader's
    consumer when it reaches that point."""

    _END = object()

    def __init__(
        self,
        mailbox: Mailbox,
        new: Sequence[int],
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

    def __enter__(self) -> _BodyFetcher:
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
            for start in range(0, len(self._new), SUMMARY_BATCH):
                batch = self._new[start : start + SUMMARY_BATCH]
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


def save_state(
    cache: SyncCache,
    account: str,
    folder: str,
    state: FolderState,
    *,
    uidnext: int | None,
    modseq: int | None,
    last_sync: datetime | None,
    messages: int | None = None,
) -> FolderState:
    """Save the folder's progress (clearing its last error) and return the state saved."""
    new = FolderState(
        uidvalidity=state.uidvalidity,
        highest_modseq=modseq,
        uidnext=uidnext,
        last_sync=last_sync,
        error=None,
        messages=messages,
    )
    cache.set_folder_state(account, folder, new)
    return new


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

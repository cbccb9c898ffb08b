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
   BODYSTRUCTURE first, in batches, so only S/MIME bodies are downloaded (all of them with
   ``cache_all``); bodies in batches bounded in bytes; each opened with ``core.open`` at its
   arrival time, stored in one transaction, and offered to the certificate harvester.
   Progress (UIDNEXT) is saved after every batch, so an interrupted pass resumes where it stopped;
   storing is idempotent, so a batch repeated after a crash adds nothing twice.

A message that cannot be opened is stored with its error and raw bytes, never dropped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from smime_companion.core.model import Decryption, OpenResult
from smime_companion.errors import SmimeCompanionError
from smime_companion.imap.client import Mailbox, Summary
from smime_companion.store.cache import FolderState

log = logging.getLogger(__name__)

# Messages per BODYSTRUCTURE round trip.
SUMMARY_BATCH = 500
# A body batch closes at this many bytes or messages (bounds memory and the loss on a crash).
BODY_BATCH_BYTES = 16 * 1024 * 1024
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
        result: OpenResult,
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

    def harvest(self, result: OpenResult, message_id: str | None, at: datetime) -> None:
        """Collect what ``result`` teaches (signer chains, capabilities) as seen at ``at``.
        May raise: sync logs the error and carries on."""
        ...


# Opens one raw message at a time (its arrival time): the daemon binds identities and anchors.
Opener = Callable[[bytes, datetime], OpenResult]


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
    open_raw: Opener,
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
    done = 0
    for batch in _batches(new, SUMMARY_BATCH):
        look_at = batch if candidates is None else [u for u in batch if u in candidates]
        summaries = mailbox.summaries(look_at) if look_at else []
        wanted = [s for s in summaries if s.smime or cache_all]
        report.skipped += len(batch) - len(wanted)
        groups = list(_body_groups(wanted))
        # The next batch of bodies is fetched on a second thread while this one is opened and
        # stored: the server's work and the socket reads overlap ours (the two cores both busy).
        # Only that thread touches the connection until the pool is shut down.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="imap-prefetch") as pool:
            ahead = pool.submit(mailbox.bodies, [s.uid for s in groups[0]]) if groups else None
            for i, group in enumerate(groups):
                assert ahead is not None
                bodies = ahead.result()
                ahead = (
                    pool.submit(mailbox.bodies, [s.uid for s in groups[i + 1]])
                    if i + 1 < len(groups)
                    else None
                )
                # One transaction per body batch: a commit per message (an fsync each) cost
                # more than everything else together; a crash loses at most this batch.
                with cache.transaction():
                    stopped_at = _store_bodies(bodies, cache, group, report, account, folder, uv,
                                               open_raw, now, harvester, should_stop)  # fmt: skip
                if stopped_at is not None:
                    # SIGTERM: the messages stored so far are committed; the rest of this batch
                    # is fetched again next time (storing is idempotent).
                    raise Stopped(f"{account}/{folder}: stopped at UID {stopped_at}")
        done += len(batch)
        # Every UID of this batch is now handled (stored or deliberately skipped): resume after it.
        state = _save(cache, account, folder, state, uidnext=max(batch) + 1,
                      modseq=state.highest_modseq, last_sync=state.last_sync)  # fmt: skip
        if progress is not None:
            progress(done, len(new))
        if should_stop():
            raise Stopped(f"{account}/{folder}: stopped after UID {max(batch)}")

    # A complete pass under the current UIDVALIDITY: entries left under an older one were not
    # found again, so the server no longer has them (a no-op unless UIDVALIDITY changed, which
    # may have been in an earlier, interrupted pass).
    report.dropped_stale = cache.drop_stale(account, folder)
    uidnext = info.uidnext
    if uidnext is None:
        uidnext = max([*server_uids, start - 1]) + 1
    _save(cache, account, folder, state, uidnext=max(uidnext, state.uidnext or 1),
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


def _store_bodies(
    bodies: dict[int, bytes],
    cache: SyncCache,
    group: list[Summary],
    report: FolderReport,
    account: str,
    folder: str,
    uidvalidity: int,
    open_raw: Opener,
    now: Callable[[], datetime],
    harvester: Harvester | None,
    should_stop: Callable[[], bool],
) -> int | None:
    """Open and store one batch; returns the UID it stopped after when asked to stop."""
    for summary in group:
        raw = bodies.get(summary.uid)
        if raw is None:
            continue  # expunged between the two fetches
        arrived = summary.internaldate or now()
        result = open_safely(open_raw, raw, arrived)
        cache.store_message(
            account=account,
            folder=folder,
            uidvalidity=uidvalidity,
            uid=summary.uid,
            raw=raw,
            result=result,
            arrived=arrived,
            flags=summary.flags,
        )
        report.stored += 1
        report.stored_uids.append(summary.uid)
        message_id = result.header("Message-ID")
        if result.error is not None:
            report.failed_to_open += 1
            log.warning(
                "%s/%s UID %d %s: stored unopened: %s",
                account,
                folder,
                summary.uid,
                message_id,
                result.error,
            )
        else:
            log.info("%s/%s UID %d %s: stored", account, folder, summary.uid, message_id)
        if harvester is not None:
            try:
                harvester.harvest(result, message_id, arrived)
            except Exception as exc:  # harvesting is a bonus: never lose the sync over it
                log.warning("%s/%s UID %d: harvest failed: %s", account, folder, summary.uid, exc)
        if should_stop():
            return summary.uid  # SIGTERM finishes the current message, then stops
    return None


def open_safely(open_raw: Opener, raw: bytes, at: datetime) -> OpenResult:
    """``open_raw(raw, at)``; an exception (hostile input past a limit, or a bug of ours)
    becomes a result carrying the error, so the message is still cached with its raw bytes."""
    try:
        return open_raw(raw, at)
    except SmimeCompanionError as exc:
        error = str(exc)
    except Exception as exc:
        log.exception("core.open failed on a message")
        error = f"internal error while opening: {type(exc).__name__}"
    return OpenResult.unopened(raw, error, decryption=Decryption.MALFORMED)


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

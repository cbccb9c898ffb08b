"""One sync pass over one folder: reconcile what the cache holds with the server, then fetch,
open and store what is new.

:func:`sync_folder` talks to the server only through the
:class:`~smime_companion.sync.protocols.Mailbox` protocol and to the cache only through
:class:`~smime_companion.sync.protocols.SyncCache`, so it can be read and tested on its own.

One pass, read-only on the server:

1. EXAMINE the folder (unless ``reuse_open`` and the connection has it open already: a folder
   watcher's, whose server process has just seen it change; see ``Mailbox.still_open``). A
   changed UIDVALIDITY means the server renumbered it: the cache keeps the
   old entries (still searchable) and each message found again is moved onto its old entry by its
   raw SHA-256 (``Cache.store_message`` does that), so nothing is lost or duplicated; entries not
   found again are dropped only after a complete pass.
2. Nothing changed (same HIGHESTMODSEQ and UIDNEXT under CONDSTORE): done, no further command.
3. Expunges and flag changes of cached messages, at the cost of the changes under CONDSTORE:
   one ``UID FETCH 1:* (FLAGS) (CHANGEDSINCE m [VANISHED])`` answers the changed flags and, with
   QRESYNC, the expunged UIDs; without QRESYNC the message count tells whether anything was
   expunged (only then are all UIDs compared). Without CONDSTORE, and on a first pass, every UID
   and flag is compared with the cache.
4. New messages (UIDs at or above the recorded UIDNEXT, found by ``UID SEARCH UID n:*``) go
   through the pipeline (:mod:`smime_companion.sync.pipeline`): fetched, opened, stored.

No step reads every cached UID of the folder after the first pass (unless the server lacks
CONDSTORE, or the count check says messages were expunged without QRESYNC).
"""

from __future__ import annotations

import logging
from array import array
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime

from smime_companion.core.cache_entry import FolderState
from smime_companion.sync.pipeline import PassContext, fetch_open_store, save_state
from smime_companion.sync.protocols import (
    BatchOpener,
    FolderInfo,
    FolderReport,
    Harvester,
    Mailbox,
    SyncCache,
)

log = logging.getLogger(__name__)


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
    reuse_open: bool = False,
) -> FolderReport:
    """Bring the cache's copy of ``folder`` up to date with the server; return what was done.

    ``now`` gives the current time (for ``last_sync`` and messages without INTERNALDATE);
    ``progress(done, total)`` is called after each stored batch of new messages.
    Raises :class:`~smime_companion.errors.ImapError` when the connection fails (the progress
    made so far is kept), :class:`~smime_companion.sync.protocols.Stopped` when ``should_stop``
    became true, and :class:`~smime_companion.errors.CacheError` when the cache cannot be
    written.
    """
    report = FolderReport(account=account, folder=folder)
    reused = mailbox.still_open(folder) if reuse_open else None
    info = reused or mailbox.examine(folder)
    report.uidvalidity = info.uidvalidity
    state = _state_under(info, cache, report)
    if reused is not None and state.highest_modseq is not None:
        return _sync_what_changed(mailbox, cache, info, state, report, opener, now, cache_all,
                                  harvester, should_stop, progress)  # fmt: skip
    if _nothing_changed(info, state):
        report.unchanged = report.complete = True
        save_state(cache, account, folder, state, uidnext=state.uidnext,
                   modseq=state.highest_modseq, last_sync=now(),
                   messages=state.messages)  # fmt: skip
        return report
    new = _reconcile(mailbox, cache, info, state, report)
    candidates = _smime_candidates(mailbox, new, cache_all)
    context = PassContext(cache, report, account, folder, info.uidvalidity, state, now,
                          harvester, should_stop, progress)  # fmt: skip
    saved = fetch_open_store(mailbox, opener, context, new, candidates, cache_all)
    # A complete pass under the current UIDVALIDITY: entries left under an older one were not
    # found again, so the server no longer has them (a no-op unless UIDVALIDITY changed, which
    # may have been in an earlier, interrupted pass).
    report.dropped_stale = cache.drop_stale(account, folder)
    if info.uidnext is not None:
        # The count and UIDNEXT of one moment (EXAMINE): the next pass's count check.
        save_state(cache, account, folder, saved, uidnext=max(info.uidnext, saved.uidnext or 1),
                   modseq=info.highest_modseq, last_sync=now(), messages=info.exists)  # fmt: skip
    else:  # a server without UIDNEXT: after the highest UID seen
        uidnext = max([*new, (state.uidnext or 1) - 1]) + 1
        save_state(cache, account, folder, saved, uidnext=max(uidnext, saved.uidnext or 1),
                   modseq=info.highest_modseq, last_sync=now())  # fmt: skip
    report.complete = True
    log.info(
        "%s/%s: %d new (%d stored, %d not S/MIME), %d expunged, %d flag changes",
        account, folder, report.new, report.stored, report.skipped, report.expunged,
        report.flags_updated,
    )  # fmt: skip
    return report


def _sync_what_changed(
    mailbox: Mailbox,
    cache: SyncCache,
    info: FolderInfo,
    state: FolderState,
    report: FolderReport,
    opener: BatchOpener,
    now: Callable[[], datetime],
    cache_all: bool,
    harvester: Harvester | None,
    should_stop: Callable[[], bool],
    progress: Callable[[int, int], None] | None,
) -> FolderReport:
    """A pass on a connection that has the folder open already (no EXAMINE, so no UIDNEXT or
    HIGHESTMODSEQ of this moment): the changes since the saved MODSEQ, the UIDs from the saved
    UIDNEXT. What is saved is never ahead of what was seen: the largest MODSEQ answered and the
    UID after the largest one found, so the next pass can only ask again, never miss."""
    account, folder = report.account, report.folder
    assert state.highest_modseq is not None
    start = state.uidnext or 1
    changes = mailbox.changes_since(None, state.highest_modseq, expected=info.exists)
    arrived = mailbox.search_uids(start)
    _forget(cache, report, info.uidvalidity, set(changes.vanished))
    flags = {u: f for u, f in changes.flags.items() if u not in changes.vanished}
    _update_flags(cache, report, info.uidvalidity, flags)
    new = _new_uids(cache, report, info.uidvalidity, arrived, start)
    candidates = _smime_candidates(mailbox, new, cache_all)
    context = PassContext(cache, report, account, folder, info.uidvalidity, state, now,
                          harvester, should_stop, progress)  # fmt: skip
    saved = fetch_open_store(mailbox, opener, context, new, candidates, cache_all)
    uidnext = max([*arrived, start - 1]) + 1
    modseq = max(state.highest_modseq, changes.highest_modseq or 0)
    save_state(cache, account, folder, saved, uidnext=max(uidnext, saved.uidnext or 1),
               modseq=modseq, last_sync=now(), messages=None)  # fmt: skip
    report.complete = True
    log.info("%s/%s: %d new (%d stored, %d not S/MIME), %d expunged, %d flag changes "
             "(on the watching connection)", account, folder, report.new, report.stored,
             report.skipped, report.expunged, report.flags_updated)  # fmt: skip
    return report


def record_error(cache: SyncCache, account: str, folder: str, error: str) -> None:
    """Remember the last failure of a folder (shown by ``status``), keeping its sync state."""
    state = cache.folder_state(account, folder)
    if state is None:
        return  # never examined: nothing to attach the error to yet
    cache.set_folder_state(account, folder, replace(state, error=error))


def _state_under(info: FolderInfo, cache: SyncCache, report: FolderReport) -> FolderState:
    """The folder's saved state under the server's UIDVALIDITY: a new one on a first pass, and
    after a change of UIDVALIDITY (whose old entries are kept to be re-matched)."""
    account, folder, uv = report.account, report.folder, info.uidvalidity
    state = cache.folder_state(account, folder)
    if state is not None and state.uidvalidity != uv:
        log.warning("%s/%s: UIDVALIDITY changed %s -> %s; re-matching cached messages",
                    account, folder, state.uidvalidity, uv)  # fmt: skip
        cache.reset_folder(account, folder, uv)
        report.uidvalidity_changed = True
        state = cache.folder_state(account, folder)
    if state is None:
        state = FolderState(uidvalidity=uv)
        cache.set_folder_state(account, folder, state)
    return state


def _nothing_changed(info: FolderInfo, state: FolderState) -> bool:
    """True when CONDSTORE says nothing happened since the last pass."""
    return (
        info.highest_modseq is not None
        and state.highest_modseq == info.highest_modseq
        and state.uidnext == info.uidnext
    )


def _reconcile(
    mailbox: Mailbox, cache: SyncCache, info: FolderInfo, state: FolderState, report: FolderReport
) -> Sequence[int]:
    """Apply expunges and flag changes to what the cache holds; return the new UIDs to fetch.

    Under CONDSTORE this costs what changed, not the folder: one ``CHANGEDSINCE`` fetch over
    the whole folder answers the changed flags (and, with QRESYNC, the expunged UIDs), and a
    ``UID SEARCH`` from the last UIDNEXT the new messages. Without QRESYNC, expunges show in
    the message count: only when it disagrees with the last pass's are all UIDs compared.
    Without CONDSTORE (or on a first pass) every UID and flag is compared."""
    account, folder, uv = report.account, report.folder, info.uidvalidity
    start = state.uidnext or 1
    if state.highest_modseq is None or info.highest_modseq is None:
        return _reconcile_everything(mailbox, cache, info, state, report)
    changes = mailbox.changes_since(None, state.highest_modseq, expected=info.exists)
    arrived = mailbox.search_uids(start)
    if mailbox.qresync:
        gone: set[int] = set(changes.vanished)
    elif state.messages is not None and state.messages + len(arrived) == info.exists:
        gone = set()  # as many messages as last time plus the new ones: none expunged
    else:
        gone = cache.uids(account, folder, uv).difference(mailbox.search_uids(1))
    _forget(cache, report, uv, gone)
    _update_flags(cache, report, uv, {u: f for u, f in changes.flags.items() if u not in gone})
    return _new_uids(cache, report, uv, arrived, start)


def _reconcile_everything(
    mailbox: Mailbox, cache: SyncCache, info: FolderInfo, state: FolderState, report: FolderReport
) -> Sequence[int]:
    """:func:`_reconcile` by comparing every UID and flag (first pass, no CONDSTORE)."""
    uv, start = info.uidvalidity, state.uidnext or 1
    server_uids = mailbox.search_uids(1)
    cached = cache.uids(report.account, report.folder, uv)
    gone = cached.difference(server_uids)  # no set of every server UID on a first pass
    _forget(cache, report, uv, gone)
    kept = sorted(cached - gone)
    if state.highest_modseq is not None and info.highest_modseq is not None:
        changed = mailbox.changes_since(kept, state.highest_modseq).flags
    else:
        changed = mailbox.flags(kept)
    _update_flags(cache, report, uv, changed)
    return _new_uids(cache, report, uv, server_uids, start)


def _forget(cache: SyncCache, report: FolderReport, uv: int, gone: set[int]) -> None:
    if gone:
        report.expunged = cache.forget_uids(report.account, report.folder, uv, sorted(gone))
        log.info("%s/%s: %d expunged", report.account, report.folder, report.expunged)


def _update_flags(
    cache: SyncCache, report: FolderReport, uv: int, changed: Mapping[int, Sequence[str]]
) -> None:
    for uid, flags in changed.items():
        if cache.update_flags(report.account, report.folder, uv, uid, flags):
            report.flags_updated += 1


def _new_uids(
    cache: SyncCache, report: FolderReport, uv: int, server_uids: Sequence[int], start: int
) -> Sequence[int]:
    """The UIDs from ``start`` on that the server has and the cache does not (an interrupted
    pass may have stored some past its saved UIDNEXT), 4 bytes each."""
    cached = cache.uids(report.account, report.folder, uv, start)
    new = array("I", (u for u in server_uids if u >= start and u not in cached))
    report.new = len(new)
    return new


def _smime_candidates(mailbox: Mailbox, new: Sequence[int], cache_all: bool) -> set[int] | None:
    """Unless everything is cached, the new messages whose headers mention PKCS#7 (a superset
    of S/MIME), named by the server: the others need no BODYSTRUCTURE at all. None: every
    message is a candidate (``cache_all``, or the server refused the search)."""
    if not new or cache_all:
        return None
    found = mailbox.search_smime_candidates(new[0])
    return set(found) if found is not None else None

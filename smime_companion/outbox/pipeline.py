"""The outbox pipeline: claim a draft, seal it, submit it, file it in Sent, remove it, exactly once.

One :class:`OutboxPipeline` serves one outbox (an account's IMAP folder, a local directory, the
drafts the reader queued) and depends only on the protocols of
:mod:`smime_companion.outbox.protocols`. Every step is written to the
:class:`~smime_companion.store.journal.Journal` before the next is taken, so a pass that stops
anywhere (a crash, SIGKILL, a dropped connection) is finished by the next one:

- ``claimed``: the draft is planned and sealed again (sealing is repeatable; nothing left yet);
- ``sealed``: the kept copies are submitted (after the backoff of a deferred attempt);
- ``submitting`` found at the start of a pass: the process stopped while a copy was in the
  server's hands, so the copy may have been accepted: the item becomes ``uncertain`` with a
  notice, and only ``outbox retry ID`` sends it again;
- ``submitted``: the Sent copy is filed (filing is idempotent by Message-ID);
- ``filed``: the split-off draft is stored in Held and the draft removed; then ``done``.

A draft not sent ends in one of four words, the same in the journal, the log, the CLI and the
README: ``deferred`` (the server said later; tried again on its own), ``held`` (waits for the
user in the Held folder), ``rejected`` (not the user's draft, or unreadable: moved to Rejected,
never sent) and ``uncertain`` (it may have been sent). "Refused" is only ever the mail server's
answer (a 5xx), after which the item is held. What the user is told is in
:mod:`smime_companion.outbox.notices`.

Only one pipeline may use a journal at a time (the caller holds :func:`outbox_lock`): that is what
makes ``submitting`` at the start of a pass mean "interrupted".
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import secrets
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from smime_companion.core.mime import parse_entity
from smime_companion.core.model import Identity
from smime_companion.core.seal import SealOptions, SealResult, seal
from smime_companion.errors import (
    MalformedInput,
    SealError,
    SmimeCompanionError,
    SubmissionDeferred,
    SubmissionRefused,
    SubmissionUncertain,
    UsageError,
    one_line,
)
from smime_companion.outbox import notices
from smime_companion.outbox.notices import NoticeText
from smime_companion.outbox.plan import (
    DEFAULT_MAX_DRAFT_BYTES,
    MAX_HEADER_BYTES,
    CertificateLookup,
    DraftInfo,
    Held,
    MissingCertPolicy,
    Rejected,
    SealPlan,
    draft_digest,
    plan_draft,
    read_draft_info,
)
from smime_companion.outbox.protocols import (
    DraftRef,
    Notifier,
    OutboxSource,
    Place,
    SentFiler,
    Submitter,
)
from smime_companion.store.journal import CopyState, ItemState, Journal, OutboxItem

log = logging.getLogger(__name__)

RETRY_BASE = timedelta(seconds=30)
RETRY_CAP = timedelta(hours=1)
# As mail servers do with a deferred message: tell the sender it is late after a few hours, give
# up (hold it, with a notice) after five days. ``[outbox] delay_notice_hours``, ``give_up_hours``.
DELAY_NOTICE_AFTER = timedelta(hours=4)
GIVE_UP_AFTER = timedelta(days=5)
# Items whose pipeline is not finished: a pass takes them further.
ACTIVE_STATES = (ItemState.CLAIMED, ItemState.SEALED, ItemState.SUBMITTED, ItemState.FILED)
LOCK_FILENAME = "outbox.lock"


class OutboxBusy(UsageError):
    """Another process is running an outbox pass on the same journal right now."""


@contextlib.contextmanager
def outbox_lock(directory: Path) -> Iterator[None]:
    """Hold the exclusive outbox lock of ``directory`` (the cache directory) while inside.

    Raises :class:`OutboxBusy` at once when another process holds it: a second process skips
    its pass instead of waiting. The lock is an advisory ``flock`` that the kernel releases when
    the holder dies, so a crash never leaves it stale.
    """
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(directory / LOCK_FILENAME, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OutboxBusy(
                "another smime-companion process is processing the outbox right now"
            ) from None
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


@dataclass(frozen=True)
class OutboxSettings:
    """How one account's outbox works (built from the config by ``runtime``).

    ``user_address`` receives the notices. ``identities`` are the user's own key pairs, the
    current one first: only drafts From one of their addresses are sealed.
    """

    account: str
    identities: tuple[Identity, ...]
    user_address: str
    policy: MissingCertPolicy = MissingCertPolicy.HOLD
    max_bytes: int = DEFAULT_MAX_DRAFT_BYTES
    seal_options: SealOptions = field(default_factory=SealOptions)
    retry_base: timedelta = RETRY_BASE
    retry_cap: timedelta = RETRY_CAP
    delay_notice_after: timedelta | None = DELAY_NOTICE_AFTER  # None: never
    give_up_after: timedelta | None = GIVE_UP_AFTER  # None: retry forever


@dataclass
class PassReport:
    """What one pass over one outbox did, by outbox item id, in the words of the module
    docstring (``sent``: accepted by the mail server; ``done``: filed in Sent and the draft
    removed). ``errors`` are one-line problems that stopped an item or the pass (the items stay
    in the journal and are taken up again next pass)."""

    account: str
    claimed: list[int] = field(default_factory=list)
    sent: list[int] = field(default_factory=list)
    done: list[int] = field(default_factory=list)
    deferred: list[int] = field(default_factory=list)
    held: list[int] = field(default_factory=list)
    rejected: list[int] = field(default_factory=list)
    uncertain: list[int] = field(default_factory=list)
    notices: int = 0
    errors: list[str] = field(default_factory=list)
    # The IMAP outbox folder as named on the server (set for IMAP outboxes): the daemon keeps
    # it in IDLE.
    folder: str | None = None

    def summary(self) -> str:
        """One line, the same in every command: ``1 sent, 0 deferred, 0 held, 0 rejected,
        0 uncertain``, then each error after a ``;``."""
        outcomes = {
            "sent": self.sent,
            "deferred": self.deferred,
            "held": self.held,
            "rejected": self.rejected,
            "uncertain": self.uncertain,
        }
        line = ", ".join(f"{len(ids)} {word}" for word, ids in outcomes.items())
        return line + "".join(f"; {error}" for error in self.errors)

    @property
    def went_wrong(self) -> bool:
        """True when the pass hit an error or rejected a draft; not when a draft merely waits
        (deferred, held) or may have gone (uncertain)."""
        return bool(self.errors or self.rejected)


def retry_item(journal: Journal, item_id: int, at: datetime) -> OutboxItem:
    """On the user's request (``outbox retry``, the reader's button): put item ``item_id`` back
    to be submitted on the next pass. Only an ``uncertain`` item, or one ``held`` after it was
    sealed (the server refused it, or kept deferring it), has copies to send again. Returns the
    item; raises :class:`UsageError` (one line saying what to do) for any other."""
    item = journal.find(item_id)
    if item is None:
        raise UsageError(notices.no_such_item(item_id))
    has_copies = bool(journal.copies(item_id))
    if item.state not in (ItemState.UNCERTAIN, ItemState.HELD) or not has_copies:
        raise UsageError(notices.not_retryable(item, has_copies))
    return journal.retry(item_id, at)


class OutboxPipeline:
    """Drives every draft of one outbox through the journal; see the module docstring."""

    def __init__(
        self,
        journal: Journal,
        source: OutboxSource,
        submitter: Submitter,
        filer: SentFiler,
        notifier: Notifier,
        lookup: CertificateLookup,
        settings: OutboxSettings,
        *,
        clock: Callable[[], datetime],
        random: Callable[[int], bytes] = secrets.token_bytes,
    ) -> None:
        self.journal = journal
        self.source = source
        self.submitter = submitter
        self.filer = filer
        self.notifier = notifier
        self.lookup = lookup
        self.settings = settings
        self.clock = clock
        self.random = random

    @property
    def account(self) -> str:
        return self.settings.account

    # -- one pass --------------------------------------------------------------------------------

    def run_pass(self) -> PassReport:
        """Take every draft and every unfinished item of this outbox as far as it can go now.

        Returns a :class:`PassReport`. A problem with one item (a refused submission, a filing
        failure, a bug of ours on one draft) is recorded in the journal and the report, and the
        others go on: one draft can never stop the rest. A failure of the source, the journal
        or the notices is in the report's ``errors`` (and logged as one line), never raised, so
        one broken account does not stop the others.
        """
        report = PassReport(self.account)
        try:
            self._run(report)
        except SmimeCompanionError as exc:
            log.error("outbox %s: %s", self.account, exc)
            report.errors.append(str(exc))
        return report

    def _run(self, report: PassReport) -> None:
        for item in self.journal.recover_interrupted(self.clock(), notices.uncertain):
            if item.account == self.account:
                log.warning("outbox item %d: interrupted while submitting: uncertain", item.id)
                report.uncertain.append(item.id)
        self._deliver_notices(report)
        for draft in self.source.drafts():
            try:
                self._take(draft, report)
            except Exception as exc:  # per draft, so the next one still goes
                self._record_error(f"draft {draft.ref}", exc, report)
        for item in self.journal.items(self.account, ACTIVE_STATES):
            try:
                self._advance(item, report)
            except Exception as exc:  # per item, so the next one still goes
                self._record_error(f"item {item.id}", exc, report)
        self._deliver_notices(report)

    def _record_error(self, what: str, exc: Exception, report: PassReport) -> None:
        """Record that ``what`` (a draft or an item) stopped on ``exc``: one line in the report
        and the log, the traceback too when it is a bug of ours rather than a known failure.
        The item stays where the journal has it, and the next pass takes it up again."""
        if isinstance(exc, SmimeCompanionError):
            line = str(exc)
            log.error("outbox %s: %s: %s", self.account, what, line)
        else:
            line = f"internal error: {type(exc).__name__}: {one_line(exc)}"
            log.error("outbox %s: %s: %s", self.account, what, line, exc_info=exc)
        report.errors.append(f"{what}: {line}")

    def _take(self, draft: DraftRef, report: PassReport) -> None:
        """Claim a draft not seen before (or reject a too-large one without reading it)."""
        now = self.clock()
        if draft.size > self.settings.max_bytes:
            # Not read, so no digest: key the record by its place, which moving it aside frees.
            item = self.journal.claim(self.account, f"size:{draft.ref}", draft.ref, now)
            reason = (
                f"the draft is {draft.size} bytes, larger than the limit of "
                f"{self.settings.max_bytes}"
            )
            self._reject(item, reason, report)
            return
        raw = self.source.read(draft.ref)
        if raw is None:
            return
        digest = draft_digest(raw)
        known = self.journal.open_item_for(self.account, digest)
        if known is not None:
            if known.ref != draft.ref:
                self.journal.set_ref(known.id, draft.ref)
            return
        try:
            info: DraftInfo | None = read_draft_info(raw)
        except MalformedInput:
            info = None  # planning rejects it in the next step, with the reason
        item = self.journal.claim(
            self.account,
            digest,
            draft.ref,
            now,
            sender=info.sender if info else None,
            subject=info.subject if info else None,
            message_id=info.message_id if info else None,
        )
        log.info("outbox %s: claimed draft %s as item %d", self.account, draft.ref, item.id)
        report.claimed.append(item.id)

    # -- moving one item on ----------------------------------------------------------------------

    def _advance(self, item: OutboxItem, report: PassReport) -> None:
        if item.state == ItemState.CLAIMED:
            item = self._seal(item, report)
        if item.state == ItemState.SEALED:
            item = self._submit(item, report)
        if item.state == ItemState.SUBMITTED:
            item = self._file(item)
        if item.state == ItemState.FILED:
            self._finish(item, report)

    def _seal(self, item: OutboxItem, report: PassReport) -> OutboxItem:
        raw = self.source.read(item.ref) if item.ref else None
        now = self.clock()
        if raw is None:
            reason = "the draft disappeared from the outbox before it was sent"
            self.journal.advance(
                item.id, {ItemState.CLAIMED}, ItemState.REJECTED, now, reason=reason
            )
            log.warning("outbox %s: item %d rejected: %s", self.account, item.id, reason)
            report.rejected.append(item.id)
            return self.journal.item(item.id)
        try:
            plan = plan_draft(
                raw,
                identities=self.settings.identities,
                lookup=self.lookup,
                at=now,
                policy=self.settings.policy,
                max_bytes=self.settings.max_bytes,
                options=self.settings.seal_options,
            )
            result = self._seal_plan(plan, now) if isinstance(plan, SealPlan) else None
        except SealError as exc:
            reason = f"the draft cannot be sealed: {exc}"
            self._hold(item, reason, notices.held(item, reason), report)
            return self.journal.item(item.id)
        except SmimeCompanionError:
            raise  # the certificate store failed: the item stays claimed for the next pass
        except Exception as exc:  # a draft our code cannot handle: a bug of ours
            # Planning and sealing are pure: the same draft would fail the same way on every
            # pass. So it goes aside, with a notice, rather than being tried forever.
            log.error("outbox %s: item %d: cannot be processed", self.account, item.id,
                      exc_info=exc)  # fmt: skip
            reason = f"the draft cannot be processed ({type(exc).__name__}: {one_line(exc)})"
            self._reject(item, reason, report)
            return self.journal.item(item.id)
        if isinstance(plan, Rejected):
            self._reject(item, plan.reason, report)
            return self.journal.item(item.id)
        if isinstance(plan, Held):
            policy = self.settings.policy
            missing = notices.held_for_certificates(item.id, plan.info, plan.missing, policy)
            self._hold(item, plan.reason, missing, report)
            return self.journal.item(item.id)
        assert result is not None
        sender = plan.info.sender or ""
        copies: list[tuple[str, Sequence[str], bytes]] = [
            (sender, result.main.envelope_recipients, result.main.message)
        ]
        copies.extend(
            (sender, copy.envelope_recipients, copy.message) for copy in result.bcc_copies.values()
        )
        notice = notices.sealed_without_some(item.id, plan)
        for warning in plan.warnings:
            log.warning("outbox %s: item %d: %s", self.account, item.id, warning)
        self.journal.record_sealed(
            item.id, copies, result.main.message, now, held_draft=plan.held_draft, notice=notice
        )
        log.info("outbox %s: item %d sealed (%d copies)", self.account, item.id, len(copies))
        return self.journal.item(item.id)

    def _seal_plan(self, plan: SealPlan, at: datetime) -> SealResult:
        return seal(
            plan.draft,
            signer=plan.signer,
            recipients=plan.recipients,
            at=at,
            options=plan.options,
            random=self.random,
        )

    def _submit(self, item: OutboxItem, report: PassReport) -> OutboxItem:
        now = self.clock()
        # A retry time further ahead than the longest backoff means the clock went back since it
        # was set: try now rather than wait out the jump.
        if (
            item.next_attempt is not None
            and now < item.next_attempt <= now + self.settings.retry_cap
        ):
            report.deferred.append(item.id)
            return item
        for copy in self.journal.copies(item.id):
            if copy.state == CopyState.SUBMITTED:
                continue
            self.journal.begin_submission(item.id, copy.index, self.clock())
            try:
                self.submitter.submit(copy.message, copy.sender, copy.recipients)
            except SubmissionDeferred as exc:
                delay = min(
                    self.settings.retry_cap,
                    self.settings.retry_base * (2 ** min(item.attempts, 16)),
                )
                now = self.clock()
                self.journal.copy_deferred(item.id, copy.index, str(exc), now, now + delay)
                log.warning(
                    "outbox %s: item %d deferred for %s: %s", self.account, item.id, delay, exc
                )
                return self._deferred(self.journal.item(item.id), str(exc), report)
            except SubmissionRefused as exc:
                self._refused_by_server(item, copy.index, str(exc), report)
                return self.journal.item(item.id)
            except SubmissionUncertain as exc:
                reason = f"the submission may not have gone through: {exc}"
                self.journal.copy_failed(
                    item.id,
                    copy.index,
                    CopyState.UNCERTAIN,
                    ItemState.UNCERTAIN,
                    reason,
                    self.clock(),
                    notice=notices.uncertain(item, str(exc)),
                )
                log.warning("outbox %s: item %d uncertain: %s", self.account, item.id, exc)
                report.uncertain.append(item.id)
                return self.journal.item(item.id)
            self.journal.copy_submitted(item.id, copy.index, self.clock())
            log.info(
                "outbox %s: item %d copy %d accepted for %d recipients",
                self.account,
                item.id,
                copy.index,
                len(copy.recipients),
            )
        report.sent.append(item.id)
        return self.journal.item(item.id)

    def _deferred(self, item: OutboxItem, reply: str, report: PassReport) -> OutboxItem:
        """After the server deferred ``item``: past ``give_up_after`` since its first deferral
        it is held with a notice; past ``delay_notice_after`` the user is told once that it is
        late; otherwise it simply waits for its next attempt."""
        now = self.clock()
        since = item.deferred_since or now
        give_up, warn = self.settings.give_up_after, self.settings.delay_notice_after
        if give_up is not None and now - since >= give_up:
            self._give_up(item, reply, now - since, report)
            return self.journal.item(item.id)
        report.deferred.append(item.id)
        if warn is not None and now - since >= warn and not item.delay_noticed:
            self.journal.delay_noticed(item.id, notices.late(item, reply, since, give_up), now)
            log.warning("outbox %s: item %d late since %s", self.account, item.id, since)
        return self.journal.item(item.id)

    def _give_up(self, item: OutboxItem, reply: str, trying: timedelta, report: PassReport) -> None:
        days = trying.total_seconds() / 86400
        reason = f"the mail server deferred it for {days:.1f} days: {reply}"
        notice = notices.gave_up(item, reply, days)
        self._hold(item, reason, notice, report, was=ItemState.SEALED)

    def _file(self, item: OutboxItem) -> OutboxItem:
        sent = self.journal.sent_copy(item.id)
        if sent is not None:
            # The sealed copy's own Message-ID (seal adds one when the draft has none) is what
            # makes filing again after a crash a no-op.
            message_id = parse_entity(sent, MAX_HEADER_BYTES).get("Message-ID")
            self.filer.file_sent(sent, message_id.strip() if message_id else None)
        self.journal.advance(item.id, {ItemState.SUBMITTED}, ItemState.FILED, self.clock())
        return self.journal.item(item.id)

    def _finish(self, item: OutboxItem, report: PassReport) -> None:
        held = self.journal.held_draft(item.id)
        if held is not None:
            self.source.put(held, Place.HELD)
            self.journal.held_draft_stored(item.id)
        if item.ref is not None:
            self.source.remove(item.ref)
        self.journal.advance(item.id, {ItemState.FILED}, ItemState.DONE, self.clock())
        log.info("outbox %s: item %d done", self.account, item.id)
        report.done.append(item.id)

    # -- moving drafts aside ---------------------------------------------------------------------

    def _reject(self, item: OutboxItem, reason: str, report: PassReport) -> None:
        """Not the user's draft (or unreadable): move it to Rejected, unsent, and say why."""
        new_ref = self.source.move_aside(item.ref, Place.REJECTED) if item.ref else None
        self.journal.set_ref(item.id, new_ref)
        self.journal.advance(
            item.id,
            {ItemState.CLAIMED},
            ItemState.REJECTED,
            self.clock(),
            reason=reason,
            notice=notices.rejected(item, reason),
        )
        log.warning("outbox %s: item %d rejected: %s", self.account, item.id, reason)
        report.rejected.append(item.id)

    def _hold(
        self,
        item: OutboxItem,
        reason: str,
        notice: NoticeText,
        report: PassReport,
        *,
        was: ItemState = ItemState.CLAIMED,
    ) -> None:
        """Move the draft to Held and the item from ``was`` to held, with ``notice``."""
        new_ref = self.source.move_aside(item.ref, Place.HELD) if item.ref else None
        self.journal.set_ref(item.id, new_ref)
        self.journal.advance(item.id, {was}, ItemState.HELD, self.clock(), reason=reason,
                             notice=notice)  # fmt: skip
        log.warning("outbox %s: item %d held: %s", self.account, item.id, reason)
        report.held.append(item.id)

    def _refused_by_server(
        self, item: OutboxItem, index: int, reply: str, report: PassReport
    ) -> None:
        reason = f"the mail server refused the message: {reply}"
        new_ref = self.source.move_aside(item.ref, Place.HELD) if item.ref else None
        self.journal.set_ref(item.id, new_ref)
        self.journal.copy_failed(
            item.id,
            index,
            CopyState.REFUSED,
            ItemState.HELD,
            reason,
            self.clock(),
            notice=notices.refused_by_server(item, reply),
        )
        log.warning("outbox %s: item %d refused by the server: %s", self.account, item.id, reply)
        report.held.append(item.id)

    # -- notices ---------------------------------------------------------------------------------

    def _deliver_notices(self, report: PassReport) -> None:
        for notice in self.journal.notices(self.account):
            message = notices.notice_message(
                self.settings.user_address, notice.subject, notice.text, self.clock(), self.random
            )
            try:
                self.notifier.notify(message)
            except SmimeCompanionError as exc:
                report.errors.append(f"notice {notice.id}: {exc}")
                log.error("outbox %s: cannot deliver a notice: %s", self.account, exc)
                return  # keep it queued; the next pass tries again
            self.journal.notice_delivered(notice.id)
            report.notices += 1

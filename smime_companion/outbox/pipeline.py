"""The outbox pipeline: claim a draft, seal it, submit it, file it in Sent, remove it, exactly once.

One :class:`OutboxPipeline` serves one account's outbox (an IMAP folder or a local directory) and
depends only on the protocols of :mod:`smime_companion.outbox.protocols`. Every step is written to
the :class:`~smime_companion.store.journal.Journal` before the next is taken, so a pass that stops
anywhere (a crash, SIGKILL, a dropped connection) is finished by the next one:

- ``claimed``: the draft is planned and sealed again (sealing is repeatable; nothing left yet);
- ``sealed``: the kept copies are submitted (after the backoff of a deferred attempt);
- ``submitting`` found at the start of a pass: the process stopped while a copy was in the
  server's hands, so the copy may have been accepted: the item becomes ``uncertain`` with a
  notice, and only ``outbox retry ID`` sends it again;
- ``submitted``: the Sent copy is filed (filing is idempotent by Message-ID);
- ``filed``: the split-off draft is stored in Held and the draft removed; then ``done``.

Only one pipeline may use a journal at a time (the caller holds a lock, see
``smime_companion.outbox.service``): that is what makes ``submitting`` at the start of a pass mean
"interrupted".
"""

from __future__ import annotations

import email.utils
import logging
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.policy import SMTP

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
)
from smime_companion.outbox.plan import (
    DEFAULT_MAX_DRAFT_BYTES,
    MAX_HEADER_BYTES,
    Blocked,
    CertificateLookup,
    DraftInfo,
    MissingCertPolicy,
    Refused,
    SealPlan,
    describe_draft,
    draft_digest,
    how_to_get_certificates,
    missing_lines,
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
from smime_companion.store.journal import (
    CopyState,
    ItemState,
    Journal,
    OutboxItem,
    uncertain_notice,
)

log = logging.getLogger(__name__)

RETRY_BASE = timedelta(seconds=30)
RETRY_CAP = timedelta(hours=1)
# As mail servers do with a deferred message: tell the sender it is late after a few hours, give
# up (hold it, with a notice) after five days. ``[outbox] delay_notice_hours``, ``give_up_hours``.
DELAY_NOTICE_AFTER = timedelta(hours=4)
GIVE_UP_AFTER = timedelta(days=5)


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
    """What one pass did, by outbox item id; ``errors`` are one-line problems that stopped an
    item or the pass (the items stay in the journal and are taken up again next pass)."""

    account: str
    claimed: list[int] = field(default_factory=list)
    sent: list[int] = field(default_factory=list)
    done: list[int] = field(default_factory=list)
    held: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    deferred: list[int] = field(default_factory=list)
    uncertain: list[int] = field(default_factory=list)
    notices: int = 0
    errors: list[str] = field(default_factory=list)
    # The IMAP outbox folder as named on the server (set for IMAP outboxes): the daemon keeps
    # it in IDLE.
    folder: str | None = None


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
        others go on: one draft can never stop the rest. Raises a :class:`SmimeCompanionError`
        only when the source itself cannot be listed.
        """
        report = PassReport(self.account)
        for item in self.journal.recover_interrupted(self.clock()):
            if item.account == self.account:
                log.warning("outbox item %d: interrupted while submitting: uncertain", item.id)
                report.uncertain.append(item.id)
        self._deliver_notices(report)
        for draft in self.source.drafts():
            try:
                self._take(draft, report)
            except Exception as exc:  # per draft, so the next one still goes
                self._failed(f"draft {draft.ref}", exc, report)
        active = (ItemState.CLAIMED, ItemState.SEALED, ItemState.SUBMITTED, ItemState.FILED)
        for item in self.journal.items(self.account, active):
            try:
                self._advance(item, report)
            except Exception as exc:  # per item, so the next one still goes
                self._failed(f"item {item.id}", exc, report)
        self._deliver_notices(report)
        return report

    def _failed(self, what: str, exc: Exception, report: PassReport) -> None:
        """Record that ``what`` (a draft or an item) stopped on ``exc``: one line in the report
        and the log, the traceback too when it is a bug of ours rather than a known failure.
        The item stays where the journal has it, and the next pass takes it up again."""
        if isinstance(exc, SmimeCompanionError):
            line = str(exc)
            log.error("outbox %s: %s: %s", self.account, what, line)
        else:
            line = f"internal error: {type(exc).__name__}: {_one_line(exc)}"
            log.error("outbox %s: %s: %s", self.account, what, line, exc_info=exc)
        report.errors.append(f"{what}: {line}")

    def _take(self, draft: DraftRef, report: PassReport) -> None:
        """Claim a draft not seen before (or refuse a too-large one without reading it)."""
        now = self.clock()
        if draft.size > self.settings.max_bytes:
            # Not read, so no digest: key the record by its place, which moving it aside frees.
            item = self.journal.claim(self.account, f"size:{draft.ref}", draft.ref, now)
            reason = (
                f"the draft is {draft.size} bytes, larger than the limit of "
                f"{self.settings.max_bytes}"
            )
            self._refuse(item, reason, report)
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
            info = None  # planning refuses it in the next step, with the reason
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
            self.journal.advance(item.id, {ItemState.CLAIMED}, ItemState.FAILED, now, reason=reason)
            report.failed.append(item.id)
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
            self._hold(item, f"the draft cannot be sealed: {exc}", report)
            return self.journal.item(item.id)
        except SmimeCompanionError:
            raise  # the certificate store failed: the item stays claimed for the next pass
        except Exception as exc:  # a draft our code cannot handle: a bug of ours
            # Planning and sealing are pure: the same draft would fail the same way on every
            # pass. So it goes aside, with a notice, rather than being tried forever.
            log.error("outbox %s: item %d: cannot be processed", self.account, item.id,
                      exc_info=exc)  # fmt: skip
            reason = f"the draft cannot be processed ({type(exc).__name__}: {_one_line(exc)})"
            self._refuse(item, reason, report)
            return self.journal.item(item.id)
        if isinstance(plan, Refused):
            self._refuse(item, plan.reason, report)
            return self.journal.item(item.id)
        if isinstance(plan, Blocked):
            self._hold_missing(item, plan, report)
            return self.journal.item(item.id)
        assert result is not None
        sender = plan.info.sender or ""
        copies: list[tuple[str, Sequence[str], bytes]] = [
            (sender, result.main.envelope_recipients, result.main.message)
        ]
        copies.extend(
            (sender, copy.envelope_recipients, copy.message) for copy in result.bcc_copies.values()
        )
        notice = None
        if plan.notice is not None:
            notice = (f"S/MIME outbox: about message {item.id}", plan.notice)
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
                subject, text = uncertain_notice(item)
                self.journal.copy_failed(
                    item.id,
                    copy.index,
                    CopyState.UNCERTAIN,
                    ItemState.UNCERTAIN,
                    reason,
                    self.clock(),
                    notice=(subject, f"{text}\nWhat happened: {exc}\n"),
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
            until = (
                f"It gives up on {_when(since + give_up)} and tells you then."
                if give_up is not None
                else "It keeps trying until the server takes it."
            )
            text = (
                f"Your message {describe_draft_item(item)} has not been sent yet: the mail "
                f"server has deferred it since {_when(since)} ({item.attempts} attempts). "
                f"Its last reply:\n\n  {reply}\n\nThe companion keeps trying. {until} "
                "Nothing needs doing unless the reply asks for something.\n"
            )
            self.journal.delay_noticed(
                item.id, (f"S/MIME outbox: message {item.id} is not sent yet", text), now
            )
            log.warning("outbox %s: item %d late since %s", self.account, item.id, since)
        return self.journal.item(item.id)

    def _give_up(self, item: OutboxItem, reply: str, trying: timedelta, report: PassReport) -> None:
        days = trying.total_seconds() / 86400
        reason = f"the mail server deferred it for {days:.1f} days: {reply}"
        text = (
            f"Your message {describe_draft_item(item)} was NOT sent: the mail server deferred "
            f"it for {days:.1f} days ({item.attempts} attempts). Its last reply:\n\n  {reply}\n\n"
            f"{_held_for_retry(item)}"
        )
        self._hold(item, reason, report, text, was=ItemState.SEALED, subject="was not sent")

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

    def _refuse(self, item: OutboxItem, reason: str, report: PassReport) -> None:
        """Not the user's draft (or unreadable): move it to Rejected, unsent, and say why."""
        new_ref = self.source.move_aside(item.ref, Place.REJECTED) if item.ref else None
        self.journal.set_ref(item.id, new_ref)
        text = (
            f"A message in your S/MIME outbox, {describe_draft_item(item)}, was NOT sent and "
            f"was moved to the outbox's Rejected folder:\n\n  {reason}\n\n"
            "The companion signs and sends only your own drafts, From one of your S/MIME "
            "identities. If you did not put this message there, someone else may have.\n"
        )
        self.journal.advance(
            item.id,
            {ItemState.CLAIMED},
            ItemState.FAILED,
            self.clock(),
            reason=reason,
            notice=(f"S/MIME outbox: message {item.id} was not sent", text),
        )
        log.warning("outbox %s: item %d refused: %s", self.account, item.id, reason)
        report.failed.append(item.id)

    def _hold_missing(self, item: OutboxItem, plan: Blocked, report: PassReport) -> None:
        text = (
            f"Your message {describe_draft(plan.info)} was NOT sent: these recipients have no "
            f"usable S/MIME certificate, so it cannot be encrypted to them "
            f"(missing_cert = {self.settings.policy}):\n\n{missing_lines(plan.missing)}\n\n"
            f"{how_to_get_certificates()}\n\nThe draft was moved to the outbox's Held folder; "
            "move it back into the outbox to send it once the certificates are known.\n"
        )
        self._hold(item, plan.reason, report, text)

    def _hold(
        self,
        item: OutboxItem,
        reason: str,
        report: PassReport,
        text: str | None = None,
        *,
        was: ItemState = ItemState.CLAIMED,
        subject: str = "is held",
    ) -> None:
        """Move the draft to Held and the item from ``was`` to held, with a notice (its
        subject ends in ``subject``; ``text`` by default quotes ``reason``)."""
        new_ref = self.source.move_aside(item.ref, Place.HELD) if item.ref else None
        self.journal.set_ref(item.id, new_ref)
        if text is None:
            text = (
                f"Your message {describe_draft_item(item)} was NOT sent:\n\n  {reason}\n\n"
                "The draft was moved to the outbox's Held folder.\n"
            )
        self.journal.advance(
            item.id,
            {was},
            ItemState.HELD,
            self.clock(),
            reason=reason,
            notice=(f"S/MIME outbox: message {item.id} {subject}", text),
        )
        log.warning("outbox %s: item %d held: %s", self.account, item.id, reason)
        report.held.append(item.id)

    def _refused_by_server(
        self, item: OutboxItem, index: int, reply: str, report: PassReport
    ) -> None:
        reason = f"the mail server refused the message: {reply}"
        text = (
            f"Your message {describe_draft_item(item)} was NOT sent: the mail server refused "
            f"it.\n\nThe server replied:\n\n  {reply}\n\n{_held_for_retry(item)}"
        )
        new_ref = self.source.move_aside(item.ref, Place.HELD) if item.ref else None
        self.journal.set_ref(item.id, new_ref)
        self.journal.copy_failed(
            item.id,
            index,
            CopyState.REFUSED,
            ItemState.HELD,
            reason,
            self.clock(),
            notice=(f"S/MIME outbox: message {item.id} was refused", text),
        )
        log.warning("outbox %s: item %d refused by the server: %s", self.account, item.id, reply)
        report.held.append(item.id)

    # -- notices ---------------------------------------------------------------------------------

    def _deliver_notices(self, report: PassReport) -> None:
        for notice in self.journal.notices(self.account):
            message = notice_message(
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


def _held_for_retry(item: OutboxItem) -> str:
    """The end of a notice for a sealed item moved to Held: how to send it once fixed."""
    return (
        "The draft was moved to the outbox's Held folder. Once the problem is fixed, send the "
        f"sealed message again with:\n\n    smime-companion outbox retry {item.id}\n"
    )


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:200] if text else type(exc).__name__


def _when(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def describe_draft_item(item: OutboxItem) -> str:
    """The item's subject and Message-ID, for notices."""
    subject = f'"{item.subject}"' if item.subject else "(no subject)"
    return f"{subject} {item.message_id or ''}".strip()


def notice_message(
    address: str, subject: str, text: str, at: datetime, random: Callable[[int], bytes]
) -> bytes:
    """A plain-text notice from the companion to ``address`` (CRLF line ends)."""
    message = EmailMessage(policy=SMTP)
    message["From"] = email.utils.formataddr(("S/MIME Companion", address))
    message["To"] = address
    message["Subject"] = subject
    message["Date"] = email.utils.format_datetime(at)
    domain = address.rpartition("@")[2] or "localhost"
    message["Message-ID"] = f"<notice.{random(12).hex()}@{domain}>"
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-replies to it
    message.set_content(text)
    return message.as_bytes()

"""Writing mail: new messages, replies, reply-all and forwards, each recipient's certificate
status, and queueing the draft in the encrypted outbox journal. The reader's compose page and
``smime-companion compose`` both use this module, so a reply is the same whichever way it is
written.

A draft is an RFC 5322 message whose From is one of the user's identities; the outbox pipeline
seals and sends it (``outbox.journal_drafts``). It is never written to a plaintext file or to
the provider's server: it goes straight into the journal (``Journal.save_draft``).
"""

from __future__ import annotations

import email.header
import email.utils
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from email.message import EmailMessage
from email.policy import SMTP

from smime_companion.core import printable
from smime_companion.core import text as mime_text
from smime_companion.core.certs import email_addresses
from smime_companion.core.mime import (
    address_pairs,
    addresses,
    ascii_address,
    parse_entity,
    shown_mailbox,
)
from smime_companion.core.model import Identity
from smime_companion.core.selection import Selected
from smime_companion.errors import MalformedInput, UsageError
from smime_companion.outbox.journal_drafts import QUEUED, draft_ref, reader_label
from smime_companion.outbox.plan import CertificateLookup
from smime_companion.reader import message_view
from smime_companion.reader.context import AccountInfo
from smime_companion.store.cache import Cache
from smime_companion.store.draft_table import DRAFT_SAVED
from smime_companion.store.journal import ItemState, Journal

MODES = ("reply", "reply-all", "forward")
MAX_BODY_CHARS = 2_000_000
_PREFIX = {"reply": "Re: ", "reply-all": "Re: ", "forward": "Fwd: "}
_HAS_PREFIX = re.compile(r"^\s*(re|fwd?|aw|wg|sv|vs)\s*:", re.IGNORECASE)


@dataclass(frozen=True)
class Attached:
    """A file carried by a draft (a forwarded message's attachments)."""

    filename: str
    mime_type: str
    data: bytes


@dataclass(frozen=True)
class DraftFields:
    """What the user writes. ``account`` sends it; ``sender`` is one of the identities'
    addresses."""

    account: str
    sender: str
    to: str = ""
    cc: str = ""
    bcc: str = ""
    subject: str = ""
    body: str = ""
    in_reply_to: str = ""
    references: str = ""
    attachments: tuple[Attached, ...] = field(default=())

    def recipients(self) -> list[str]:
        """Every To, Cc and Bcc address, in order, once each (lower case). Raises
        :class:`UsageError` for a field that cannot be read."""
        found: list[str] = []
        for name, value in (("To", self.to), ("Cc", self.cc), ("Bcc", self.bcc)):
            try:
                found.extend(a for a in addresses(value) if a not in found)
            except MalformedInput as exc:
                raise UsageError(f"{name}: {exc}") from None
        return found


@dataclass(frozen=True)
class Sender:
    """A From the user may choose: an identity's address, sent through an account."""

    account: str
    address: str

    @property
    def key(self) -> str:
        return f"{self.account} {self.address}"


def senders(accounts: Sequence[AccountInfo], identities: Sequence[Identity]) -> list[Sender]:
    """Every (account, identity address) pair that can send, the likeliest first: an account
    whose username is the address comes before the others."""
    sending = [a for a in accounts if a.can_send]
    out: list[Sender] = []
    for identity in identities:
        for address in email_addresses(identity.certificate):
            ordered = sorted(sending, key=lambda a: a.username.lower() != address)
            for account in ordered:
                choice = Sender(account.name, address)
                if choice not in out:
                    out.append(choice)
    return out


def _reply_subject(subject: str, mode: str) -> str:
    subject = _one_line(subject)
    if mode != "forward" and _HAS_PREFIX.match(subject):
        return subject
    return _PREFIX[mode] + subject


def _one_line(value: str) -> str:
    """A header value taken from the message answered, as one line: a bare CR or another line
    break inside a field of hostile mail must not make the answer unsendable."""
    return " ".join(value.split())


def _quote(text: str, limit: int = MAX_BODY_CHARS) -> str:
    return "\n".join("> " + line if line else ">" for line in text[:limit].splitlines())


def answer_fields(
    cache: Cache, message_id: int, mode: str, sender: Sender, own: Sequence[str]
) -> DraftFields:
    """The draft answering message ``message_id`` (``mode``: reply, reply-all or forward),
    from ``sender``; ``own`` are the user's addresses, left out of reply-all. Raises
    :class:`UsageError` for an unknown mode or message."""
    if mode not in MODES:
        raise UsageError(f"unknown answer {mode!r} (use {', '.join(MODES)})")
    summary = cache.summary(message_id)
    view_headers = {
        h.name.lower(): h.value for h in message_view.effective_headers(cache, message_id)
    }
    original_from = view_headers.get("from", summary.sender)
    # A message without a Date: the date it is listed under, written as a Date field would be.
    date = view_headers.get("date", email.utils.format_datetime(summary.date))
    text = message_view.quoted_text(cache, message_id)
    subject = _reply_subject(view_headers.get("subject", summary.subject), mode)
    if mode == "forward":
        attached = tuple(
            # The name as the page shows it (controls and direction overrides escaped).
            Attached(printable.for_terminal(p.filename) or f"part-{p.number}", p.mime_type, p.data)
            for p in message_view.attachment_parts(cache, message_id)
        )
        block = [
            "-------- Forwarded message --------",
            f"From: {original_from}",
            f"Date: {date}",
            f"Subject: {view_headers.get('subject', summary.subject)}",
            f"To: {view_headers.get('to', summary.to)}",
        ]
        if view_headers.get("cc"):
            block.append(f"Cc: {view_headers['cc']}")
        body = "\n\n" + "\n".join(block) + "\n\n" + text[:MAX_BODY_CHARS]
        return DraftFields(sender.account, sender.address, subject=subject, body=body,
                           attachments=attached)  # fmt: skip

    def mailboxes(name: str, shown: str) -> list[tuple[str, str]]:
        written = message_view.as_written(cache, message_id, name, shown)
        return _mailboxes(written) if written is not None else _shown_mailboxes(shown)

    reply_to = message_view.reply_to_of(cache, message_id)
    answer = mailboxes("reply-to", reply_to) if reply_to else mailboxes("from", original_from)
    own_lower = {a.lower() for a in own} | {sender.address.lower()}
    to = [a for a in answer if a[1].lower() not in own_lower] or answer
    cc: list[tuple[str, str]] = []
    if mode == "reply-all":
        seen = {a[1].lower() for a in to} | own_lower
        for name in ("to", "cc"):
            for pair in mailboxes(name, view_headers.get(name, "")):
                if pair[1].lower() not in seen:
                    cc.append(pair)
                    seen.add(pair[1].lower())
    references = message_view.references_of(cache, message_id)
    body = f"\n\nOn {date}, {original_from} wrote:\n{_quote(text)}\n"
    return DraftFields(
        sender.account,
        sender.address,
        to=", ".join(_shown(*pair) for pair in to),
        cc=", ".join(_shown(*pair) for pair in cc),
        subject=subject,
        body=body,
        in_reply_to=_one_line(summary.message_id),
        references=_one_line(references),
    )


# RFC 5322 specials: a display name holding one must be quoted (a comma would split it in two).
_SPECIALS = re.compile(r'[()<>\[\]:;@\\,."]')


def _shown(name: str, address: str) -> str:
    """One mailbox as a person reads and types it in the form: the name decoded and quoted when
    it holds a special, never RFC 2047-encoded (``email.utils.formataddr`` writes
    ``=?utf-8?b?...?=`` for "Jörg", and raises for an internationalised address);
    :func:`build_draft` encodes what it sends."""
    # One line of printable text: an encoded word can hide a line break or a control
    # character in a name, which a field of the form cannot hold.
    decoded = mime_text.decode_header_text(name)
    name = " ".join("".join(c if c.isprintable() else " " for c in decoded).split())
    if not name or name.lower() == address.lower():
        return address
    if _SPECIALS.search(name):
        name = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return f"{name} <{address}>"


def _shown_field(value: str) -> str:
    """An address field of a draft (RFC 2047-encoded as sent) as the form shows it; the field
    decoded as it is when it holds anything but mailboxes."""
    try:
        pairs = address_pairs(value)
    except MalformedInput:
        pairs = []
    if pairs and all("@" in address for _, address in pairs):
        return ", ".join(_shown(name, address) for name, address in pairs)
    return mime_text.decode_header_text(value).strip()


def _mailboxes(written: str) -> list[tuple[str, str]]:
    """The (name, address) pairs of an address field of the message answered, as written
    (:func:`message_view.as_written`; :func:`_shown` decodes the names). Empty when the field
    cannot be read (one nesting comments hundreds deep)."""
    try:
        pairs = address_pairs(written)
    except MalformedInput:
        return []
    return [(name, address) for name, address in pairs if "@" in address and _plain(address)]


def _shown_mailboxes(shown: str) -> list[tuple[str, str]]:
    """The same for a field only known decoded, where one ``name <address>`` is kept whole
    (see :func:`shown_mailbox`): the decoded "Müller, Jörg" holds a comma."""
    one = shown_mailbox(shown)
    if one is None:
        return _mailboxes(shown)
    return [one] if _plain(one[1]) else []


def _plain(address: str) -> bool:
    """No control character, blank or line boundary in ``address``: such text in a field of
    hostile mail is no address to answer to."""
    return address.isprintable() and not any(c.isspace() for c in address)


def build_draft(fields: DraftFields, at: datetime, message_id: str | None = None) -> bytes:
    """The RFC 5322 draft of ``fields`` at ``at`` (UTF-8 text, the attachments after it), ready
    to send. Raises :class:`UsageError` when it has no recipient or sender, or a header holds a
    line break."""
    if not fields.recipients():
        raise UsageError("give at least one recipient in To, Cc or Bcc")
    if "@" not in fields.sender:
        raise UsageError("choose who the message is from")
    return _message(fields, at, message_id)


def _message(fields: DraftFields, at: datetime, message_id: str | None) -> bytes:
    """The draft as it stands (a saved draft may still lack recipients)."""
    for name, value in (("From", fields.sender), ("To", fields.to), ("Cc", fields.cc),
                        ("Bcc", fields.bcc), ("Subject", fields.subject)):  # fmt: skip
        if value and value.splitlines() != [value]:
            # Every line boundary str.splitlines knows (the email package refuses them all).
            raise UsageError(f"{name} must be one line")
    message = EmailMessage(policy=SMTP)
    if fields.sender:
        message["From"] = fields.sender
    for name, value in (("To", fields.to), ("Cc", fields.cc), ("Bcc", fields.bcc)):
        if value.strip():
            message[name] = _sendable(name, value.strip())
    message["Subject"] = _literal(fields.subject.strip())
    message["Date"] = email.utils.format_datetime(at)
    domain = fields.sender.rpartition("@")[2] or "localhost"
    message["Message-ID"] = message_id or email.utils.make_msgid(domain=domain)
    if fields.in_reply_to:
        message["In-Reply-To"] = fields.in_reply_to
    if fields.references:
        message["References"] = fields.references
    body = fields.body.replace("\r\n", "\n")[:MAX_BODY_CHARS]
    message.set_content(body if body.endswith("\n") else body + "\n", charset="utf-8")
    for item in fields.attachments:
        maintype, _, subtype = item.mime_type.partition("/")
        message.add_attachment(
            item.data,
            maintype=maintype or "application",
            subtype=subtype or "octet-stream",
            filename=item.filename,
        )
    try:
        return message.as_bytes()
    except (UnicodeError, ValueError) as exc:
        # The email package's folding has corners of its own; one line, never a traceback.
        raise UsageError(
            f"the draft cannot be written as mail ({type(exc).__name__}: {exc}); "
            "check its Subject and address fields"
        ) from None


def _literal(text: str) -> str:
    """An unstructured header value the email package writes as ``text``. Given text holding
    ``=?`` (a broken encoded word a Subject kept, which a reply repeats), the package tries to
    decode it and can raise while folding; handed to it inside an encoded word of our own, the
    text is taken as text and written as it is."""
    if "=?" not in text:
        return text
    # One line: the words Header folds onto more lines are still one value when joined.
    return "".join(email.header.Header(text, "utf-8").encode().splitlines())


def _sendable(name: str, value: str) -> str:
    """Address field ``name`` as the draft carries it: an internationalised domain as its
    A-labels (the email package would put encoded words inside the address). Raises
    :class:`UsageError` for an address whose local part is not ASCII, which only SMTPUTF8
    could send."""
    if value.isascii():
        return value
    try:
        pairs = address_pairs(value)
    except MalformedInput as exc:
        raise UsageError(f"{name}: {exc}") from None
    if all(address.isascii() for _, address in pairs):
        return value
    for _, address in pairs:
        if not address.rpartition("@")[0].isascii():
            raise UsageError(
                f"{name}: {address} is an internationalised address (SMTPUTF8), which "
                "smime-companion cannot send yet; remove it or give the recipient's ASCII address"
            )
    return ", ".join(_shown(n, ascii_address(a)) for n, a in pairs if a)


def read_draft(raw: bytes, account: str) -> tuple[DraftFields, str | None]:
    """The fields of a kept draft (for editing it again) and its Message-ID. Raises
    :class:`MalformedInput` when it cannot be read."""
    entity = parse_entity(raw, mime_text.MAX_HEADER_BYTES)

    def get(name: str) -> str:
        return mime_text.decode_header_text(entity.get(name) or "").strip()

    body = ""
    attached: list[Attached] = []
    for part in mime_text.iter_parts(raw):
        if part.is_attachment or part.also_a_file:
            attached.append(Attached(part.filename, part.mime_type, part.data))
        elif not body and part.mime_type == "text/plain":
            body = mime_text.part_text(part)
    sender = (addresses(entity.get("From")) or ("",))[0]
    fields = DraftFields(
        account=account, sender=sender, to=_shown_field(entity.get("To") or ""),
        cc=_shown_field(entity.get("Cc") or ""), bcc=_shown_field(entity.get("Bcc") or ""),
        subject=get("Subject"), body=body, in_reply_to=get("In-Reply-To"),
        references=get("References"), attachments=tuple(attached),
    )  # fmt: skip
    return fields, (get("Message-ID") or None)


@dataclass(frozen=True)
class RecipientStatus:
    """What will happen for one recipient: ``encrypt`` (a usable certificate), else per the
    ``missing_cert`` policy ``hold``, ``sign-only`` or ``split``; ``detail`` says why."""

    address: str
    state: str
    detail: str


def recipient_status(
    address: str, lookup: CertificateLookup, at: datetime, policy: str, own: Sequence[str] = ()
) -> RecipientStatus:
    """The status of ``address`` for a draft sealed now."""
    wanted = address.strip().lower()
    if wanted in {a.lower() for a in own}:
        return RecipientStatus(wanted, "encrypt", "your own address: encrypted to your key")
    selection = lookup.select(wanted, at)
    if isinstance(selection, Selected):
        fingerprint = selection.record.fingerprint[:16]
        detail = f"will be encrypted (certificate {fingerprint}…, {selection.record.trust})"
        if selection.warnings:
            detail += "; " + "; ".join(selection.warnings)
        return RecipientStatus(wanted, "encrypt", detail)
    words = {
        "hold": "no usable certificate: the message will be held, not sent",
        "sign-only": "no usable certificate: the message will be sent signed, NOT encrypted",
        "split": "no usable certificate: a copy for this recipient will be held",
    }
    return RecipientStatus(wanted, policy, f"{words.get(policy, policy)} ({selection.reason})")


def save(
    journal: Journal,
    fields: DraftFields,
    at: datetime,
    *,
    send: bool,
    draft_id: int | None = None,
) -> int:
    """Keep the draft in the journal, queued to send when ``send``; returns its id. A draft
    edited again keeps its Message-ID. Raises :class:`UsageError` for a draft that cannot be
    sent (no recipient, a header with a line break)."""
    message_id = None
    if draft_id is not None:
        kept = journal.draft(draft_id)
        if kept is not None:
            try:
                message_id = read_draft(kept.message, kept.account)[1]
            except MalformedInput:
                message_id = None
    raw = build_draft(fields, at, message_id) if send else _message(fields, at, message_id)
    return journal.save_draft(
        fields.account, raw, QUEUED if send else DRAFT_SAVED, at, draft_id=draft_id
    )


@dataclass(frozen=True)
class Progress:
    """Where a draft queued in the reader is on its way: ``stage`` (one word), ``words`` (a
    sentence for the page), ``reason`` (the last problem), and what the user may do."""

    draft_id: int
    stage: str
    words: str
    reason: str | None = None
    item_id: int | None = None
    can_retry: bool = False
    can_send_again: bool = False
    finished: bool = False


def progress(journal: Journal, account: str, draft_id: int) -> Progress:
    """Where draft ``draft_id`` of ``account`` is: queued, sealed, submitted, filed, sent, held
    or deferred (with the server's reason), or why it was not sent."""
    item = journal.item_for_ref(reader_label(account), draft_ref(draft_id))
    draft = journal.draft(draft_id)
    if (
        draft is not None
        and draft.place in (DRAFT_SAVED, QUEUED)
        and (item is None or item.state in (ItemState.DONE, ItemState.HELD, ItemState.REJECTED))
    ):
        if draft.place == DRAFT_SAVED:
            return Progress(draft_id, "saved", "Saved as a draft (encrypted, on this machine).")
        return Progress(draft_id, "queued", "Queued: waiting for the outbox to seal and send it.")
    if item is None:
        if draft is not None and draft.place in ("held", "rejected"):
            return Progress(draft_id, draft.place, f"Not sent: {draft.place}.",
                            can_send_again=True)  # fmt: skip
        return Progress(draft_id, "gone", "This draft no longer exists.", finished=True)
    state, reason = item.state, item.reason
    words = {
        ItemState.CLAIMED: ("sealing", "Being signed and encrypted."),
        ItemState.SUBMITTING: ("submitting", "Being handed to the mail server."),
        ItemState.SUBMITTED: ("submitted", "Accepted by the mail server; being filed in Sent."),
        ItemState.FILED: ("filed", "Sent and filed in Sent."),
        ItemState.DONE: ("sent", "Sent: signed, encrypted, accepted by the server and filed "
                         "in Sent."),
        ItemState.UNCERTAIN: ("uncertain", "The connection broke while the server was taking "
                              "it: it may or may not have been sent."),
        ItemState.REJECTED: ("rejected", "Not sent: rejected."),
    }  # fmt: skip
    if state == ItemState.SEALED:
        if item.next_attempt is not None and reason:
            when = item.next_attempt.strftime("%H:%M UTC")
            return Progress(draft_id, "deferred", f"Deferred by the server; next try at {when}.",
                            reason, item.id)  # fmt: skip
        return Progress(draft_id, "sealed", "Signed and encrypted; being sent.", None, item.id)
    if state == ItemState.HELD:
        copies = journal.copies(item.id)
        return Progress(
            draft_id, "held", "Held, not sent.", reason, item.id,
            can_retry=bool(copies), can_send_again=not copies and draft is not None,
        )  # fmt: skip
    stage, sentence = words[state]
    return Progress(
        draft_id, stage, sentence,
        reason if state in (ItemState.UNCERTAIN, ItemState.REJECTED) else None, item.id,
        can_retry=state == ItemState.UNCERTAIN,
        can_send_again=state == ItemState.REJECTED and draft is not None,
        finished=state in (ItemState.DONE, ItemState.FILED, ItemState.REJECTED),
    )  # fmt: skip

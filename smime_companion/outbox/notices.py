"""Everything the outbox tells the user in words: the notices it mails to their INBOX, the hints
that name a command, and why an item cannot be retried.

One module, so that the outcome words stay the same everywhere (``sent``, ``deferred``, ``held``,
``rejected``, ``uncertain``; the server ``refused`` a message it will never take), and so that
the journal (``store.journal``) stores notices without writing them. A notice is a
:data:`NoticeText`, (subject, text); :func:`notice_message` makes the mail that carries it.
Pure: values in, text out; no clock, no I/O.
"""

from __future__ import annotations

import email.utils
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.policy import SMTP

from smime_companion.core.selection import NoCertificate
from smime_companion.outbox.plan import DraftInfo, SealPlan
from smime_companion.store.journal import ItemState, OutboxItem

# (subject, text) of one notice, as the journal queues it.
NoticeText = tuple[str, str]

SUBJECT = "S/MIME outbox: message {id}"


def _subject(item_id: int, what: str) -> str:
    return f"{SUBJECT.format(id=item_id)} {what}"


# -- naming a draft ------------------------------------------------------------------------------


def _title(subject: str | None, message_id: str | None) -> str:
    quoted = f'"{subject}"' if subject else "(no subject)"
    return f"{quoted} {message_id or ''}".strip()


def item_title(item: OutboxItem) -> str:
    """The item's subject and Message-ID, for notices (never its body)."""
    return _title(item.subject, item.message_id)


def draft_title(info: DraftInfo | None) -> str:
    """The draft's subject and Message-ID, for notices (never its body)."""
    return _title(info.subject, info.message_id) if info is not None else "(unreadable draft)"


def _when(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


# -- certificates that are missing ----------------------------------------------------------------


def how_to_get_certificates() -> str:
    """The advice every missing-certificate notice ends with."""
    return (
        "To get someone's certificate, ask them to send you a signed S/MIME message: the "
        "companion harvests the certificate from it. You can also import a certificate file "
        "with 'smime-companion certs import FILE'."
    )


def missing_lines(missing: Sequence[NoCertificate]) -> str:
    """One line per address lacking a certificate, with the reason."""
    return "\n".join(f"  - {m.address}: {m.reason}" for m in missing)


def sealed_without_some(item_id: int, plan: SealPlan) -> NoticeText | None:
    """The notice for a draft sealed although some recipients lack a certificate (``sign-only``:
    sent signed only; ``split``: the rest held), or None when nobody lacks one."""
    if not plan.missing:
        return None
    title, lines = draft_title(plan.info), missing_lines(plan.missing)
    if plan.held_draft is not None:
        text = (
            f"Your message {title} was sent encrypted to the recipients with a certificate. "
            f"A copy of the draft for these recipients, who have no usable certificate, is held "
            f"in the outbox's Held folder (missing_cert = split):\n{lines}\n\n"
            f"{how_to_get_certificates()}\n"
        )
    else:
        text = (
            f"Your message {title} was sent signed but NOT encrypted, because these "
            f"recipients have no usable certificate (missing_cert = sign-only):\n"
            f"{lines}\n\n{how_to_get_certificates()}\n"
        )
    return f"S/MIME outbox: about message {item_id}", text


def held_for_certificates(
    item_id: int, info: DraftInfo, missing: Sequence[NoCertificate], policy: str
) -> NoticeText:
    """The notice for a draft held because recipients lack a certificate."""
    text = (
        f"Your message {draft_title(info)} was NOT sent: these recipients have no "
        f"usable S/MIME certificate, so it cannot be encrypted to them "
        f"(missing_cert = {policy}):\n\n{missing_lines(missing)}\n\n"
        f"{how_to_get_certificates()}\n\nThe draft was moved to the outbox's Held folder; "
        "move it back into the outbox to send it once the certificates are known.\n"
    )
    return _subject(item_id, "is held"), text


# -- not sent ------------------------------------------------------------------------------------


def held(item: OutboxItem, reason: str) -> NoticeText:
    """The notice for a draft held for ``reason`` (e.g. it cannot be sealed)."""
    text = (
        f"Your message {item_title(item)} was NOT sent:\n\n  {reason}\n\n"
        "The draft was moved to the outbox's Held folder.\n"
    )
    return _subject(item.id, "is held"), text


def rejected(item: OutboxItem, reason: str) -> NoticeText:
    """The notice for a draft rejected (not the user's, too large, unreadable): moved to the
    outbox's Rejected folder, never sent."""
    text = (
        f"A message in your S/MIME outbox, {item_title(item)}, was NOT sent and "
        f"was moved to the outbox's Rejected folder:\n\n  {reason}\n\n"
        "The companion signs and sends only your own drafts, From one of your S/MIME "
        "identities. If you did not put this message there, someone else may have.\n"
    )
    return _subject(item.id, "was not sent"), text


def refused_by_server(item: OutboxItem, reply: str) -> NoticeText:
    """The notice for a message the mail server refused for good (it is held)."""
    text = (
        f"Your message {item_title(item)} was NOT sent: the mail server refused "
        f"it.\n\nThe server replied:\n\n  {reply}\n\n{held_for_retry(item)}"
    )
    return _subject(item.id, "was refused"), text


def late(
    item: OutboxItem, reply: str, since: datetime, give_up_after: timedelta | None
) -> NoticeText:
    """The one notice that a deferred message is late (the server keeps deferring it)."""
    until = (
        f"It gives up on {_when(since + give_up_after)} and tells you then."
        if give_up_after is not None
        else "It keeps trying until the server takes it."
    )
    text = (
        f"Your message {item_title(item)} has not been sent yet: the mail "
        f"server has deferred it since {_when(since)} ({item.attempts} attempts). "
        f"Its last reply:\n\n  {reply}\n\nThe companion keeps trying. {until} "
        "Nothing needs doing unless the reply asks for something.\n"
    )
    return _subject(item.id, "is not sent yet"), text


def gave_up(item: OutboxItem, reply: str, days: float) -> NoticeText:
    """The notice for a message the server deferred for ``days``: held, no longer tried."""
    text = (
        f"Your message {item_title(item)} was NOT sent: the mail server deferred "
        f"it for {days:.1f} days ({item.attempts} attempts). Its last reply:\n\n  {reply}\n\n"
        f"{held_for_retry(item)}"
    )
    return _subject(item.id, "was not sent"), text


def uncertain(item: OutboxItem, what_happened: str | None = None) -> NoticeText:
    """The notice for an item whose submission may or may not have gone through."""
    text = (
        f"Your message {item_title(item)} was being submitted when the connection or the "
        "companion stopped. The server may or may not have accepted it, so it was NOT sent "
        "again on its own (that could deliver it twice).\n\n"
        "If the recipients did not get it, send it again with:\n\n"
        f"    {retry_command(item.id)}\n"
    )
    if what_happened is not None:
        text += f"\nWhat happened: {what_happened}\n"
    return _subject(item.id, "may not have been sent"), text


def held_for_retry(item: OutboxItem) -> str:
    """The end of a notice for a sealed item moved to Held: how to send it once fixed."""
    return (
        "The draft was moved to the outbox's Held folder. Once the problem is fixed, send the "
        f"sealed message again with:\n\n    {retry_command(item.id)}\n"
    )


# -- commands ------------------------------------------------------------------------------------


def retry_command(item_id: int) -> str:
    """The command that sends item ``item_id`` again."""
    return f"smime-companion outbox retry {item_id}"


def no_such_item(item_id: int) -> str:
    """The one-line error for an item id that is not in the journal."""
    return f"no outbox item {item_id} (see 'outbox list')"


def not_retryable(item: OutboxItem, has_copies: bool) -> str:
    """The one-line error for an item ``outbox retry`` cannot send again."""
    if item.state == ItemState.HELD and not has_copies:
        return (
            f"outbox item {item.id} was held before it was sealed (a recipient "
            "lacks a certificate): once the certificate is known, move the draft "
            "from the outbox's Held folder back into the outbox and it is sent"
        )
    return (
        f"outbox item {item.id} is {item.state}: only an uncertain item, or one held "
        "after the server refused or kept deferring it, can be retried"
    )


# -- the mail that carries a notice ---------------------------------------------------------------


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

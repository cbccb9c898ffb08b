"""What a message list shows: one page of a folder or of a search, newest first, each row with
its sender, subject, the first words of its text, date, attachment mark, unread state and
verdict badges; and the folders with their counts.

A search runs the query language of ``smime-companion search`` unchanged (``Cache.search``), so
the reader and the command find the same messages. A folder is listed as the query
``account:A folder:"F"``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from email.utils import formataddr

from smime_companion.core import text as mime_text
from smime_companion.core.mime import address_pairs, addresses, holds_address, shown_mailbox
from smime_companion.errors import MalformedInput
from smime_companion.reader import dates
from smime_companion.reader.verdict_words import Badge, list_badges
from smime_companion.store.cache import Cache, FolderCount, MessageSummary

PAGE_SIZE = 50


@dataclass(frozen=True)
class Row:
    """One message in a list."""

    summary: MessageSummary
    sender: str
    preview: str
    date: str  # as a list shows it (dates.in_list); the full date and time in date_title
    date_title: str
    unread: bool
    badges: list[Badge]


@dataclass(frozen=True)
class ListPage:
    """One page of a list: its rows, its number (from 1), whether another follows."""

    rows: list[Row]
    page: int
    has_next: bool


def folder_query(account: str, folder: str) -> str:
    """The query that lists one folder of one account."""

    def quoted(value: str) -> str:
        # The language's quoted strings end at the next '"': a name holding one is matched
        # with a wildcard in its place (folder: takes * and ? as wildcards).
        return '"' + value.replace('"', "?") + '"'

    return f"account:{quoted(account)} folder:{quoted(folder)}"


def list_page(
    cache: Cache,
    query: str,
    page: int,
    now: datetime,
    page_size: int = PAGE_SIZE,
    own: Sequence[str] = (),
) -> ListPage:
    """Page ``page`` (from 1) of the messages ``query`` matches, newest first. A message from
    one of the ``own`` addresses (the user's) names whom it went to instead, as webmail lists
    sent mail. Raises :class:`UsageError` for a malformed query (one line naming the column)."""
    page = max(1, page)
    hits = cache.search(query, now=now, limit=page_size + 1, offset=(page - 1) * page_size)
    shown = hits[:page_size]
    unread = cache.unread_among(shown)
    warnings = cache.warnings_of([h.id for h in shown])
    derived = cache.fill_previews([h.id for h in shown if h.preview is None])
    rows = [
        Row(
            summary=hit,
            sender=_shown_correspondent(hit, own),
            preview=hit.preview if hit.preview is not None else derived.get(hit.id, ""),
            date=dates.in_list(hit.date, now),
            date_title=dates.in_full(hit.date),
            unread=hit.id in unread,
            badges=list_badges(hit.decryption, hit.signature, warnings.get(hit.id, [])),
        )
        for hit in shown
    ]
    return ListPage(rows, page, len(hits) > page_size)


def _shown_correspondent(hit: MessageSummary, own: Sequence[str]) -> str:
    """Who a row names: the sender, or "To: " and the first recipient of a message the user
    sent (the Sent folder would otherwise list the user on every row)."""
    sender = _address_of(hit.sender) if own else ""
    if sender and holds_address(own, sender):
        try:
            first = next(iter(address_pairs(mime_text.decode_header_text(hit.to))), None)
        except MalformedInput:
            first = None
        if first is not None:
            return "To: " + _display_sender(formataddr(first))
    return _display_sender(hit.sender)


def _address_of(value: str) -> str:
    """The one address of a From field, or "" (none, several, unreadable)."""
    try:
        found = addresses(value)
    except MalformedInput:
        return ""
    return found[0] if len(found) == 1 else ""


def _display_sender(value: str) -> str:
    """The sender's name when it has one, else the address. A name that holds an address
    ("alice@example.org" <mallory@example.net>) is replaced by the real address: beside a
    valid-signature badge it would pass for that other sender."""
    decoded = mime_text.decode_header_text(value)
    try:
        name, address = shown_mailbox(decoded) or next(iter(address_pairs(decoded)), ("", ""))
    except MalformedInput:  # comments nested hundreds deep: shown as it came
        name, address = "", ""
    if name and "@" in name and address:
        return address
    return name or address or decoded or "(no sender)"


def folders(cache: Cache) -> list[FolderCount]:
    """Every cached folder with its counts."""
    return cache.folder_counts()

"""What a message page shows, read from the stores: effective headers (and whether they were
protected), the verdict in plain words, the bodies, the attachments.

Nothing here knows about HTTP: the routes turn a :class:`MessageView` into a page. HTML bodies
are not inlined into the page; the page frames ``/message/ID/html/PART``, whose fragment
:func:`html_body` makes. HTML whose integrity nothing vouches for (content decrypted from CBC
with no signature inside, ``not-integrity-protected``: EFAIL's CBC gadgets can splice HTML into
it) is never rendered: it is shown as its text, and its fragment is refused.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from smime_companion.core import text as mime_text
from smime_companion.core.entry_derivation import derive_entry
from smime_companion.core.html_text import html_to_text
from smime_companion.core.invitation import Invitation, read_invitation
from smime_companion.core.layer_kinds import hidden_smime_entities
from smime_companion.core.mime import (
    MESSAGE_TYPES,
    Entity,
    ascii_address,
    parse_entity,
    sender_of,
)
from smime_companion.core.model import OpenResult
from smime_companion.core.verdicts import (
    WARN_LOOKALIKE_ADDRESS,
    WARN_NOT_INTEGRITY_PROTECTED,
    WARN_PARTIALLY_ENCRYPTED,
    WARN_PARTIALLY_SIGNED,
)
from smime_companion.errors import MalformedInput
from smime_companion.reader.html_mail import (
    MAX_INLINE_IMAGE_BYTES,
    MAX_INLINED_BYTES,
    CleanHtml,
    InlineImage,
    clean_html,
    picture_type,
)
from smime_companion.reader.quote_folding import FOLDED_HTML_START, FoldedText, fold_quotes
from smime_companion.reader.verdict_words import (
    Badge,
    VerdictLine,
    layer_lines,
    list_badges,
    verdict_lines,
)
from smime_companion.store.cache import Cache, MessageSummary, StoredAttachment
from smime_companion.store.certstore import CertStore

# Shown headers, in order, with their display names.
SHOWN_HEADERS = (("from", "From"), ("to", "To"), ("cc", "Cc"), ("subject", "Subject"),
                 ("date", "Date"))  # fmt: skip
# A text body longer than this is cut on the page (the whole is in the raw source).
MAX_SHOWN_TEXT = 2_000_000


@dataclass(frozen=True)
class HeaderLine:
    """An effective header; ``outer`` is what the unprotected outer header said when the
    protected one differs from it (None otherwise)."""

    name: str
    value: str
    protected: bool
    outer: str | None = None


@dataclass(frozen=True)
class Body:
    """A body part as shown: plain text, or an HTML part shown in a frame (by part number)."""

    part: int
    kind: str  # "text" or "html"
    text: str = ""
    alternative: int | None = None  # the part number of the other form of the same body
    # The height of an HTML body's frame, "brief", "short", "medium" or "tall" (_frame_height): the
    # frame is sandboxed without scripts, so the page cannot measure what it holds.
    height: str = "tall"
    # The header fields of the message it begins, when that message is embedded inline (a
    # digest's, a forward's): shown above it (core.text.Part.heading).
    heading: mime_text.Heading = ()
    # A later piece of an HTML body split around its pictures (Apple Mail): shown in place, but
    # the page's text view leaves it out, as the first piece's plain form holds its text.
    continued: bool = False
    # The pictures the sender placed before this piece, between it and the one before: shown
    # there rather than under the text (see _pictures_in_place).
    pictures: tuple[StoredAttachment, ...] = ()
    # The name of the text file this body is (core.text.Part.also_a_file): captioned with it,
    # so that where the message's own text ends is seen, as Thunderbird marks it.
    file_name: str = ""


@dataclass
class MessageView:
    """Everything the message page shows."""

    summary: MessageSummary
    headers: list[HeaderLine]
    header_protection: str | None
    verdict: list[VerdictLine]
    layers: list[str]
    bodies: list[Body]
    attachments: list[StoredAttachment]
    opened: bool
    badges: list[Badge] = field(default_factory=list)
    # Attached pictures shown under the text (see :func:`pictures`), by part number.
    pictures: list[StoredAttachment] = field(default_factory=list)
    # The parts an HTML body shown draws in place (cid: or Content-Location images, an
    # Outlook signature's logo): not listed with the attachments unless the page shows text.
    drawn: frozenset[int] = frozenset()
    # Meeting invitations the message carries, shown as cards above the text.
    invitations: list[Invitation] = field(default_factory=list)


def _outer_headers(raw: bytes) -> dict[str, str]:
    try:
        fields = parse_entity(raw, mime_text.MAX_HEADER_BYTES, received=True).fields
    except MalformedInput:
        return {}
    return mime_text.summary_headers(fields)


def _fields(content: bytes | None) -> dict[str, str]:
    """Every header of the innermost entity (lower-case names, first wins, decoded)."""
    return {name: mime_text.decode_header_text(value) for name, value in _written(content).items()}


def _written(data: bytes | None, as_content: bool = True) -> dict[str, str]:
    """Every header of ``data`` as written, RFC 2047 words still encoded (lower-case names,
    first wins)."""
    if data is None:
        return {}
    try:
        fields = parse_entity(
            data, mime_text.MAX_HEADER_BYTES, as_content=as_content, received=True
        ).fields
    except MalformedInput:
        return {}
    out: dict[str, str] = {}
    for name, value in fields:
        out.setdefault(name.lower(), value)
    return out


def key_changed(store: CertStore, report: dict[str, Any]) -> bool:
    """True when a signer's certificate is held as ``key-changed`` for its address."""
    for signer in report.get("signers") or []:
        fingerprint = signer.get("fingerprint")
        if not fingerprint:
            continue
        for record in store.records_for_fingerprint(fingerprint):
            if str(record.trust) == "key-changed":
                return True
    return False


def _header_lines(report: dict[str, Any], raw: bytes) -> list[HeaderLine]:
    outer = _outer_headers(raw)
    effective = {str(k).lower(): str(v) for k, v in (report.get("headers") or {}).items()}
    protection = report.get("header_protection")
    headers = []
    for key, name in SHOWN_HEADERS:
        value = effective.get(key) or outer.get(key, "")
        if not value and key in ("cc", "date"):
            continue
        protected = bool(protection) and key in effective
        differs = protected and outer.get(key, "") != value
        headers.append(HeaderLine(name, value, protected, outer.get(key, "") if differs else None))
    return headers


def _shown_lines(report: dict[str, Any], raw: bytes) -> list[HeaderLine]:
    """The header lines a page shows: a From whose address looks like another (the warning
    look-alike-address) with the address's A-label form after it ("id@аррӏе.com
    (id@xn--80ak6aa92e.com)"), as browsers show such names. (A reply answers the address.)"""
    lines = _header_lines(report, raw)
    if WARN_LOOKALIKE_ADDRESS not in (report.get("warnings") or []):
        return lines
    return [_with_ascii_form(line) if line.name == "From" else line for line in lines]


def _with_ascii_form(line: HeaderLine) -> HeaderLine:
    address = sender_of((("From", line.value),)).address
    if address is None or ascii_address(address) == address:
        return line
    return replace(line, value=f"{line.value} ({ascii_address(address)})")


def effective_headers(cache: Cache, message_id: int) -> list[HeaderLine]:
    """From, To, Cc, Subject and Date as the message means them: protected headers win over
    the outer ones. Raises :class:`UsageError` for an unknown message."""
    return _header_lines(cache.report(message_id), cache.raw(message_id))


def reply_to_of(cache: Cache, message_id: int) -> str:
    """The Reply-To of the message (the protected one first), or ""."""
    return _fields(cache.content(message_id)).get("reply-to") or outer_field(
        cache.raw(message_id), "reply-to"
    )


def as_written(cache: Cache, message_id: int, name: str, shown: str) -> str | None:
    """Header ``name`` of the message as written (RFC 2047 words still encoded) where it reads
    as ``shown``: the innermost entity's, else the outer one's; None when neither does.
    Replies split address lists this way: once decoded, the comma inside an encoded
    "Müller, Jörg" would cut that name in two."""
    for data, as_content in ((cache.content(message_id), True), (cache.raw(message_id), False)):
        value = _written(data, as_content).get(name.lower())
        if value is not None and mime_text.decode_header_text(value) == shown:
            return value
    return None


def references_of(cache: Cache, message_id: int) -> str:
    """The References a reply to the message carries: its own References and Message-ID."""
    inner = _fields(cache.content(message_id))
    own = cache.summary(message_id).message_id
    return " ".join(x for x in (inner.get("references", ""), own) if x).strip()


@dataclass
class AttachedView:
    """A message attached to a cached one (a message/rfc822 part, as "forward as attachment"
    sends it), or an S/MIME part a list or a gateway wrapped, opened on its own: its headers,
    its own verdict, its text (HTML as text: its frame route serves cached messages only) and
    the names of its attachments."""

    message_id: int
    part: int  # the attached message's part number; minus the number of an S/MIME part
    headers: list[HeaderLine]
    header_protection: str | None
    verdict: list[VerdictLine]
    layers: list[str]
    badges: list[Badge]
    bodies: list[Body]
    attachments: list[mime_text.Attachment]
    opened: bool

    @property
    def subject(self) -> str:
        return next((h.value for h in self.headers if h.name == "Subject"), "")


def is_attached_message(attachment: StoredAttachment) -> bool:
    """True for an attachment that is a whole message, which the reader can open."""
    return attachment.mime_type in MESSAGE_TYPES


def attached_view(
    cache: Cache,
    store: CertStore,
    message_id: int,
    part_number: int,
    open_attached: Callable[[bytes, datetime], OpenResult],
) -> AttachedView | None:
    """Part ``part_number`` of message ``message_id`` opened as a message of its own, judged at
    the time the message carrying it arrived (as that message was); None when the part is not
    a whole message. Raises :class:`UsageError` for an unknown message."""
    arrived = cache.summary(message_id).arrived
    content = cache.content(message_id)
    part = mime_text.get_part(content, part_number) if content is not None else None
    if part is None or part.mime_type not in MESSAGE_TYPES:
        return None
    return _opened_on_its_own(store, message_id, part_number, part.data, arrived, open_attached)


def smime_parts(cache: Cache, message_id: int) -> list[str]:
    """The kind ("signed" or "encrypted") of each S/MIME part the content shown holds inside
    its unprotected multiparts (a signed or encrypted message and the footer a mailing list or
    a gateway wrapped it with); each opens on its own (:func:`smime_part_view`). Looked for
    only in a message said to be partially signed or encrypted."""
    warnings = cache.report(message_id).get("warnings") or []
    if WARN_PARTIALLY_SIGNED not in warnings and WARN_PARTIALLY_ENCRYPTED not in warnings:
        return []
    return [kind for kind, _entity in _smime_parts(cache.content(message_id))]


def smime_part_view(
    cache: Cache,
    store: CertStore,
    message_id: int,
    number: int,
    open_attached: Callable[[bytes, datetime], OpenResult],
) -> AttachedView | None:
    """S/MIME part ``number`` (from 1) of message ``message_id``, opened on its own with the
    From, To, Date and Subject of the message carrying it (a list keeps its sender's From),
    judged when that message arrived; None when there is no such part. Raises
    :class:`UsageError` for an unknown message."""
    arrived = cache.summary(message_id).arrived
    content = cache.content(message_id)
    found = _smime_parts(content)
    if not 1 <= number <= len(found):
        return None
    carried = {**_written(cache.raw(message_id), as_content=False), **_written(content)}
    fields = "".join(
        f"{name}: {carried[name.lower()]}\r\n"
        for name in ("From", "To", "Cc", "Date", "Subject", "Message-ID")
        if name.lower() in carried
    )
    data = fields.encode() + found[number - 1][1].raw
    return _opened_on_its_own(store, message_id, -number, data, arrived, open_attached)


def _smime_parts(content: bytes | None) -> list[tuple[str, Entity]]:
    if content is None:
        return []
    try:
        top = parse_entity(content, mime_text.MAX_HEADER_BYTES, as_content=True)
    except MalformedInput:
        return []
    return hidden_smime_entities(
        top,
        max_depth=mime_text.MAX_DEPTH,
        max_parts=mime_text.MAX_PARTS,
        max_header_bytes=mime_text.MAX_HEADER_BYTES,
    )


def _opened_on_its_own(
    store: CertStore,
    message_id: int,
    part: int,
    data: bytes,
    arrived: datetime,
    open_attached: Callable[[bytes, datetime], OpenResult],
) -> AttachedView:
    result = open_attached(data, arrived)
    entry = derive_entry(data, result, arrived)
    report = json.loads(entry.report)
    opened = result.content is not None and result.error is None
    return AttachedView(
        message_id=message_id,
        part=part,
        headers=_shown_lines(report, data),
        header_protection=result.header_protection,
        verdict=verdict_lines(report, key_changed=key_changed(store, report)),
        layers=layer_lines(report),
        badges=list_badges(str(result.decryption), str(result.signature), list(result.warnings)),
        bodies=_bodies(result.content, trusted=False) if opened else [],
        attachments=list(entry.attachments),
        opened=opened,
    )


def message_view(cache: Cache, store: CertStore, message_id: int) -> MessageView:
    """The view of message ``message_id``. Raises :class:`UsageError` when it is unknown."""
    summary = cache.summary(message_id)
    report = cache.report(message_id)
    raw = cache.raw(message_id)
    content = cache.content(message_id)
    protection = report.get("header_protection")
    headers = _shown_lines(report, raw)
    opened = content is not None and report.get("error") is None
    parts = _parts(content) if content is not None else []
    bodies = _bodies_of(parts, _trusted(report))
    attachments = cache.attachments(message_id)
    drawn = _drawn_by_html(parts, bodies, attachments)
    bodies, under_text = _pictures_in_place(bodies, pictures(parts, drawn, attachments))
    changed = key_changed(store, report)
    return MessageView(
        summary=summary,
        headers=headers,
        header_protection=str(protection) if protection else None,
        verdict=verdict_lines(report, key_changed=changed, scan=summary.scan),
        layers=layer_lines(report),
        bodies=bodies,
        attachments=attachments,
        opened=opened,
        badges=list_badges(
            summary.decryption,
            summary.signature,
            [*(report.get("warnings") or []), *(["key-changed"] if changed else [])],
        ),
        pictures=under_text,
        drawn=drawn,
        invitations=invitations(parts),
    )


def invitations(parts: list[mime_text.Part]) -> list[Invitation]:
    """The meeting invitations among ``parts`` (text/calendar, as Outlook, Exchange and Google
    Calendar send them), each read from its first event."""
    found = []
    for part in parts:
        if part.mime_type in CALENDAR_TYPES:
            invitation = read_invitation(mime_text.decoded_text(part))
            if invitation is not None:
                found.append(invitation)
    return found


def pictures(
    parts: list[mime_text.Part], drawn: frozenset[int], attachments: list[StoredAttachment]
) -> list[StoredAttachment]:
    """The attachments shown as pictures under the text, as webmail shows attached photos: a
    PNG, JPEG, GIF or WebP that its bytes confirm (:func:`html_mail.picture_type`), not too
    large, not found infected, and not one an HTML body shown already draws (``drawn``)."""
    drawable = {
        p.number
        for p in parts
        if p.is_attachment
        and len(p.data) <= MAX_INLINE_IMAGE_BYTES
        and picture_type(p.data) is not None
        and p.number not in drawn
    }
    return [
        a for a in attachments if a.part in drawable and not (a.scan or "").startswith("infected:")
    ]


def _drawn_by_html(
    parts: list[mime_text.Part], bodies: list[Body], attachments: list[StoredAttachment]
) -> frozenset[int]:
    """The parts the HTML bodies shown draw in place: the images their ``cid:`` references
    and Content-Locations name, as :func:`html_body` inlines them (the same sanitiser decides,
    so a reference it drops, or an image it refuses, leaves the part listed)."""
    shown_html = {b.part for b in bodies if b.kind == "html"}
    images, locations = _inline_images(parts, attachments)
    if not shown_html or not (images or locations):
        return frozenset()
    used: set[str] = set()
    budget = _picture_budget(parts)
    for part in parts:
        if part.number in shown_html:
            html = mime_text.decoded_text(part)
            used |= clean_html(html, images, locations, pictures=False, budget=budget).inlined
    return frozenset(
        p.number
        for p in parts
        if (p.content_id and p.content_id.lower() in images and p.content_id.lower() in used)
        or (p.content_location in locations and p.content_location in used)
    )


def _picture_budget(parts: list[mime_text.Part]) -> int:
    """How many bytes of the message's pictures each of its HTML bodies may draw: the
    message's budget (html_mail.MAX_INLINED_BYTES) shared by them, so that a thousand bodies
    naming one large picture cost no more than one."""
    html_bodies = sum(
        1 for part, _plain in mime_text.body_forms(parts) if part.mime_type == "text/html"
    )
    return MAX_INLINED_BYTES // max(1, html_bodies)


def _inline_images(
    parts: list[mime_text.Part], attachments: list[StoredAttachment]
) -> tuple[dict[str, InlineImage], dict[str, InlineImage]]:
    """The parts an HTML body may draw, by Content-ID (lower case) and by Content-Location;
    never one the scanner found infected (listed with its finding instead)."""
    infected = {a.part for a in attachments if (a.scan or "").startswith("infected:")}
    usable = [p for p in parts if p.number not in infected]
    images = {
        p.content_id.lower(): InlineImage(p.mime_type, p.data) for p in usable if p.content_id
    }
    locations = {
        p.content_location: InlineImage(p.mime_type, p.data)
        for p in usable
        if p.content_location and p.is_attachment
    }
    return images, locations


def _pictures_in_place(
    bodies: list[Body], shown: list[StoredAttachment]
) -> tuple[list[Body], list[StoredAttachment]]:
    """Of the pictures ``shown``, those between two pieces of an HTML body split around them
    (Apple Mail) go with the later piece (``Body.pictures``), so that the page shows them where
    the sender placed them. The bodies so, and the pictures left to show under the text."""
    pictures = sorted(shown, key=lambda picture: picture.part)
    rest: list[StoredAttachment] = []
    placed: list[Body] = []
    taken = 0  # how many of ``pictures`` are placed, or left for under the text
    for body in bodies:
        between: list[StoredAttachment] = []
        while taken < len(pictures) and pictures[taken].part < body.part:
            picture = pictures[taken]
            after_piece = body.continued and bool(placed) and placed[-1].part < picture.part
            (between if after_piece else rest).append(picture)
            taken += 1
        placed.append(replace(body, pictures=tuple(between)) if between else body)
    return placed, rest + pictures[taken:]


def picture(cache: Cache, message_id: int, part_number: int) -> tuple[str, bytes] | None:
    """The media type (from its bytes) and bytes of picture ``part_number``, or None when that
    part is no picture the message page shows."""
    content = cache.content(message_id)
    part = mime_text.get_part(content, part_number) if content is not None else None
    if part is None or not part.is_attachment or len(part.data) > MAX_INLINE_IMAGE_BYTES:
        return None
    stored = next((a for a in cache.attachments(message_id) if a.part == part_number), None)
    if stored is not None and (stored.scan or "").startswith("infected:"):
        return None
    kind = picture_type(part.data)
    return (kind, part.data) if kind is not None else None


def outer_field(raw: bytes, name: str) -> str:
    """The first outer header ``name`` of ``raw``, decoded ("" when absent)."""
    return _fields(raw).get(name.lower(), "")


# The media types of an iCalendar part.
CALENDAR_TYPES = frozenset({"text/calendar", "application/ics"})


def _trusted(report: dict[str, Any]) -> bool:
    """False when the content is not integrity-protected (its HTML is then never rendered)."""
    return WARN_NOT_INTEGRITY_PROTECTED not in (report.get("warnings") or [])


def _bodies(content: bytes, trusted: bool = True) -> list[Body]:
    """The bodies of ``content`` (see :func:`_bodies_of`)."""
    return _bodies_of(_parts(content), trusted)


def _bodies_of(parts: list[mime_text.Part], trusted: bool) -> list[Body]:
    """The bodies (:func:`core.text.body_forms`): one in two forms is shown as HTML with the
    text one step away. For content that is not ``trusted`` HTML is never rendered: a body in
    two forms is its plain text, an HTML-only one the HTML's text."""
    bodies: list[Body] = []
    # The plain forms met, folded (quote_folding), by number: the pieces of a split HTML body
    # share one, which is read once however many pieces there are.
    folds: dict[int, FoldedText] = {}
    for part, plain in mime_text.body_forms(parts):
        continued = plain is not None and plain.number in folds
        if plain is not None and not continued:
            folds[plain.number] = fold_quotes(mime_text.part_text(plain))
        heading = () if continued else (plain or part).heading  # on the first of the forms
        if part.mime_type == "text/html" and trusted:
            number = plain.number if plain else None
            height = _frame_height(part, folds[plain.number] if plain else None)
            bodies.append(Body(part.number, "html", "", number, height, heading, continued))
            continue
        if trusted or plain is None:
            shown = part  # a text piece of a split HTML body is shown as it comes, like the HTML
        elif continued:
            continue  # its plain form is shown already
        else:
            shown = plain
        text = mime_text.part_text(shown)[:MAX_SHOWN_TEXT]
        file_name = shown.filename if shown.also_a_file else ""
        bodies.append(Body(shown.number, "text", text, heading=heading, file_name=file_name))
    return bodies


def _parts(content: bytes) -> list[mime_text.Part]:
    try:
        return list(mime_text.iter_parts(content))
    except MalformedInput:
        return []


def text_bodies(cache: Cache, message_id: int, part_numbers: set[int]) -> dict[int, str]:
    """The text of each of parts ``part_numbers`` that is plain text or HTML (HTML turned into
    text), by number; the content is read once, however many bodies the message has."""
    content = cache.content(message_id)
    if content is None or not part_numbers:
        return {}
    return {
        part.number: mime_text.part_text(part)[:MAX_SHOWN_TEXT]
        for part in _parts(content)
        if part.number in part_numbers and part.mime_type in ("text/plain", "text/html")
    }


def html_body(cache: Cache, message_id: int, part_number: int) -> CleanHtml | None:
    """The sanitised fragment of HTML part ``part_number``, its ``cid:`` images (and those it
    draws by a part's Content-Location) inlined from the message's own parts; None when that
    part is not HTML, or when the message's content is not integrity-protected (its HTML is
    never rendered)."""
    content = cache.content(message_id)
    if content is None or not _trusted(cache.report(message_id)):
        return None
    parts = _parts(content)
    html = next((p for p in parts if p.number == part_number), None)
    if html is None or html.mime_type != "text/html":
        return None
    images, locations = _inline_images(parts, cache.attachments(message_id))
    budget = _picture_budget(parts)
    return clean_html(mime_text.decoded_text(html), images, locations, budget=budget)


def _frame_height(html: mime_text.Part, plain: FoldedText | None = None) -> str:
    """How tall a frame an HTML body needs, from its text's lines (a long line wraps) and its
    pictures: a short note should not sit in a frame of most of the window. A reply counts
    only its own lines when the frame folds the message it answers away (quote_folding): as
    its plain form (``plain``, folded) folds, or without one, as the sanitised HTML does. A
    guess; the frame scrolls when it is short of the truth."""
    text = mime_text.part_text(html)
    if plain is not None:
        if plain.folded:
            text = "\n".join(block.text for block in plain.shown) + "\n\n"  # and the switch
    else:
        cleaned = clean_html(mime_text.decoded_text(html), {}).html
        fold = cleaned.find(FOLDED_HTML_START)
        if fold >= 0:
            text = html_to_text(cleaned[:fold]) + "\n\n"
    # A picture counts as ten lines: more than a short frame holds.
    lines = text.count("\n") + len(text) // 100 + 10 * html.data.lower().count(b"<img")
    if lines <= 2:
        return "brief"
    if lines <= 8:
        return "short"
    return "medium" if lines <= 24 else "tall"


def quoted_text(cache: Cache, message_id: int) -> str:
    """The message's text for quoting in a reply: each body the page shows, once, in its plain
    form (a text/plain and text/html pair, as most mail clients send, is one body: its plain
    part is quoted; HTML alone as its text)."""
    content = cache.content(message_id)
    if content is None:
        return ""
    return mime_text.shown_text(_parts(content))


def attachment_parts(cache: Cache, message_id: int) -> Sequence[mime_text.Part]:
    """The attachment parts of the message, with their bytes (for forwarding): also a text
    file sent to be shown inline, which the forward's quoted text holds as well."""
    content = cache.content(message_id)
    if content is None:
        return []
    return [p for p in _parts(content) if p.is_attachment or p.also_a_file]

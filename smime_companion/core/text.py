"""Decrypted MIME -> what the cache indexes and shows: header fields, body text, attachments.

Pure: bytes in, values out. The MIME is read with :mod:`smime_companion.core.mime` (raw slicing,
never re-serialised); HTML is turned into text by :mod:`core.html_text`.

Parts are numbered 1, 2, 3, ... in depth-first order over the *leaf* parts (non-multipart
entities); ``message/rfc822`` parts are descended into, and Outlook's TNEF attachment
(``winmail.dat``) is replaced by the body and files inside it (:mod:`core.tnef`), a BinHex part
by the file it holds (:mod:`core.binhex`). Files uuencoded or BinHexed inside plain text
(:mod:`core.uuencoded`, :mod:`core.binhex`) are taken out of it and numbered after every other
part. The numbers are what ``smime-companion show --part N`` takes.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

from smime_companion.core import binhex, legacy_display, printable, tnef, uuencoded
from smime_companion.core.charsets import decode_mail_text
from smime_companion.core.html_text import html_to_text
from smime_companion.core.mime import (
    MESSAGE_TYPES,
    Entity,
    base64_then_text,
    decode_encoded_words,
    header_date,
    parse_entity,
    parts_as_read,
)
from smime_companion.errors import MalformedInput, SmimeCompanionError

# Bounds on the work one (hostile) message can cost the indexer.
MAX_HEADER_BYTES = 256 * 1024
MAX_DEPTH = 32
MAX_PARTS = 2000
# Text beyond this many characters per message is not indexed (a 1 MB text body is already rare).
MAX_INDEXED_CHARS = 1_000_000
# A message list row shows this many characters of the message's text at most (see preview).
PREVIEW_CHARS = 160
# A file found inside a text part.
EmbeddedFile = uuencoded.UuencodedFile | binhex.BinhexFile

SUMMARY_HEADERS = ("from", "to", "cc", "subject", "date", "message-id")


@dataclass(frozen=True)
class Attachment:
    """One attachment: its part number, name (may be empty), type, decoded size and SHA-256,
    and whether it is ``inline``: a picture an HTML body of the message draws by its
    Content-ID or its Content-Location (a signature's logo), part of the text rather than a
    file sent to be saved, so not counted by the lists' paper clip nor by ``has:attachment``."""

    part: int
    filename: str
    mime_type: str
    size: int
    sha256: str
    inline: bool = False


# Header fields as (name, decoded value) pairs, in the order HEADING_FIELDS names them.
Heading = tuple[tuple[str, str], ...]
HEADING_FIELDS = ("From", "To", "Cc", "Date", "Subject")


@dataclass(frozen=True)
class Part:
    """One leaf part: number, type, name, whether it is an attachment, its decoded bytes and
    its declared charset."""

    number: int
    mime_type: str
    filename: str
    is_attachment: bool
    data: bytes
    charset: str | None = None
    content_id: str | None = None  # without angle brackets, as a cid: URL names it
    flowed: str | None = None  # text/plain format=flowed: "yes", or "delsp" with DelSp=yes
    # Its text starts with RFC 9788's legacy display of the protected Subject, which the reader
    # hides (the headers shown are the protected ones): see core.legacy_display.
    legacy_display: bool = False
    # The first part of a message embedded inline (a digest's messages; a message forwarded
    # inline by mutt or KMail): that message's From, To, Cc, Date and Subject, decoded, shown
    # above the part as a mail client does (heading_text). Empty for every other part.
    heading: Heading = ()
    # Where the part stands in the innermost multipart/alternative holding it: (which one,
    # numbered in the message from 1; which of its alternatives, from 0). None outside one.
    # body_forms reads an HTML body split around pictures (Apple Mail) as one body by it.
    alternative: tuple[int, int] | None = None
    # Its Content-Location (RFC 2557), blanks of a folded header taken out: the URL an HTML body
    # of the same message may draw it by instead of a cid: reference (Word, Lotus Notes, MHTML).
    content_location: str | None = None
    # A text/plain part sent inline under a file name (RFC 2183: "inline" asks for it to be
    # shown with the message, the name is what to save it as; Apple Mail and mutt attach text
    # files so): read as text like any inline part, and also offered as the file it names.
    also_a_file: bool = False


@dataclass(frozen=True)
class MessageText:
    """The searchable text of a message: its body text and its attachments; and the first
    words of its text for a list (:func:`preview`)."""

    body: str
    attachments: tuple[Attachment, ...]
    preview: str = ""


def decode_header_text(value: str | None) -> str:
    """A header value with RFC 2047 encoded words decoded (``""`` for None); never raises: a
    broken encoded word is shown as it was rather than dropping the header."""
    return decode_encoded_words(value) if value else ""


def summary_headers(fields: tuple[tuple[str, str], ...]) -> dict[str, str]:
    """From, To, Cc, Subject, Date, Message-ID of ``fields`` (first occurrence wins), decoded."""
    out: dict[str, str] = {}
    for name, value in fields:
        key = name.lower()
        if key in SUMMARY_HEADERS and key not in out:
            out[key] = decode_header_text(value)
    return out


def iter_parts(content: bytes, content_name: str | None = None) -> Iterator[Part]:
    """The leaf parts of the MIME entity ``content``, depth first, numbered from 1.

    A part whose structure is broken (no boundary, bad base64) is yielded with its raw bytes
    rather than failing the whole message. Content without a header is one part, named
    ``content_name`` (see ``OpenResult.content_name``). Raises :class:`MalformedInput` only when
    the top entity's header section is over the limit.
    """
    top = parse_entity(content, MAX_HEADER_BYTES, as_content=True)
    protected = top.content_type.param("hp") in ("cipher", "clear")
    name = content_name if top.headerless else None
    # An explicit stack rather than recursion: a container is dropped as soon as its children
    # are cut out of it, so a hostile nest of multiparts or attached messages (each one a copy
    # of nearly all of its parent) holds about two copies of the content at a time, not one per
    # level of depth. ``protected``: the entity is inside content that carries protected headers.
    # ``heading``: the header fields the leaf first found under the entity shows above it.
    # ``alternative``: where the entity stands in a multipart/alternative (Part.alternative).
    stack: list[tuple[Entity, int, str | None, bool, Heading, tuple[int, int] | None]] = [
        (top, 0, name, protected, (), None)
    ]
    del top
    number = 0
    alternatives = 0  # the multipart/alternatives met so far
    shown: Part | None = None  # the last inline text part, which a TNEF body may repeat
    found: list[EmbeddedFile] = []  # files uuencoded or BinHexed inside text parts
    room = binhex.Room.for_message(len(content))  # what BinHex files may still expand to
    while stack:
        entity, depth, name, protected, heading, alternative = stack.pop()
        broken = False  # a multipart without a part delimited by its boundary
        if depth < MAX_DEPTH and number < MAX_PARTS:
            inner = _inner_entities(entity)
            if depth == 0 and inner:
                inner = _without_legacy_display_part(entity, inner)
            if inner is not None:
                multipart = entity.content_type.mime_type.startswith("multipart/")
                # The children of an alternative are its alternatives; a multipart's other
                # children stand where it stands, an attached message's content in none.
                places: list[tuple[int, int] | None]
                if entity.content_type.mime_type == "multipart/alternative":
                    alternatives += 1
                    places = [(alternatives, branch) for branch in range(len(inner))]
                else:
                    places = [alternative if multipart else None] * len(inner)
                # A multipart's children keep the protection; an attached message is its own.
                keeps = protected and multipart
                # A multipart's first part inherits its heading; a message embedded inline (in
                # a digest, or forwarded so by mutt and KMail) is headed by its own fields, but
                # not the content itself when it is one (its fields are the message's own).
                headings = [heading] if multipart or depth == 0 else [_heading(inner[0])]
                headings += [()] * (len(inner) - 1)
                stack.extend(
                    (sub, depth + 1, None, keeps, first, place)
                    for sub, first, place in reversed(
                        # Not strict: a multipart with no parts has a heading and no child.
                        list(zip(inner, headings, places, strict=False))
                    )
                )
                continue
            broken = entity.content_type.mime_type.startswith("multipart/")
            if broken and _holds_no_text(entity):
                continue  # nothing a reader could show: no part, no text
        leaf = _leaf(entity, number + 1, name, protected, heading, alternative, broken)
        del entity
        for part in _unpacked(leaf, shown, room):
            number = part.number
            if not part.is_attachment:
                part = _without_embedded_files(part, found, room)
                shown = part
            yield part
    # Numbered after every MIME part, so that the numbers of those stay what they were before
    # files in text were looked for (the cache keeps scan verdicts and rows by part number).
    for file in found[: max(0, MAX_PARTS - number)]:
        number += 1
        yield Part(number, "application/octet-stream", file.filename, True, file.data)


def _inner_entities(entity: Entity) -> list[Entity] | None:
    """The entities a multipart or an attached message (not one marked as an attachment) holds,
    or None when ``entity`` is a leaf or its structure is too broken to descend into."""
    ctype = entity.content_type
    if ctype.mime_type.startswith("multipart/"):
        try:
            children = parts_as_read(entity, MAX_PARTS)
        except MalformedInput:
            return None
        parsed = []
        digest = ctype.mime_type == "multipart/digest"
        for child in children:
            try:
                sub = parse_entity(
                    child,
                    MAX_HEADER_BYTES,
                    as_content=True,
                    enclosing=(entity.raw, entity.body_start),
                )
            except MalformedInput:
                continue  # a part whose header is over the limit is left out
            if digest and sub.get("Content-Type") is None:
                # A digest's parts are messages unless they say otherwise (RFC 2046 5.1.5);
                # one that cannot be read as a message is kept as the part it is.
                with contextlib.suppress(MalformedInput):
                    sub = parse_entity(_DIGEST_DEFAULT + child, MAX_HEADER_BYTES)
            parsed.append(sub)
        return _without_redundant_forms(ctype.mime_type, parsed)
    if ctype.mime_type in MESSAGE_TYPES and not _disposition_is_attachment(entity):
        try:
            message = parse_entity(entity.decoded_body(), MAX_HEADER_BYTES, as_content=True)
        except MalformedInput:
            return None
        # Imported here: layer_kinds loads the CMS engine, which `show` and `search` of mail
        # without an embedded message never need (tests/test_cli_startup.py).
        from smime_companion.core.layer_kinds import layer_kind

        if layer_kind(message, inside_layer=False) is not None:
            # A signed or encrypted message forwarded inline: shown in place, its text would
            # stand under the verdict of the message carrying it. As an attachment it opens
            # on a page of its own with its own verdict, as a forward as attachment does.
            return None
        return [message]
    return None


_DIGEST_DEFAULT = b"Content-Type: message/rfc822\r\n"

# Text parts shown as the message's text (the rest are attachments).
_INLINE_TEXT_TYPES = ("text/plain", "text/html", "text/enriched", "text/richtext")
_ENRICHED_TYPES = ("text/enriched", "text/richtext")
# The parts of a delivery report (RFC 3464, RFC 6533), a read receipt (RFC 8098) and an abuse
# report (RFC 5965) that are text a person reads, each with the charset its fields are in.
_REPORT_TYPES = {
    "message/delivery-status": "us-ascii",
    "message/disposition-notification": "us-ascii",
    "message/feedback-report": "us-ascii",
    "text/rfc822-headers": "us-ascii",
    "message/rfc822-headers": "us-ascii",  # Lotus Domino's and Exchange's name for it
    "message/global-delivery-status": "utf-8",
    "message/global-disposition-notification": "utf-8",
    "message/global-headers": "utf-8",
}


def _without_redundant_forms(multipart: str, children: list[Entity]) -> list[Entity]:
    """``children`` less the parts that only repeat another child in a form a reader does not
    show: the Macintosh resource fork (application/applefile) of a multipart/appledouble file
    (old Apple Mail), and, in a multipart/alternative that has a plain or HTML form, its other
    unnamed text forms: text/enriched (Apple Mail, Eudora), Gmail's AMP (text/x-amp-html),
    Apple's text/watch-html, AOL's text/x-aol. They were listed as nameless attachments. A
    calendar (an invitation's text/calendar alternative) is kept."""
    if multipart == "multipart/appledouble":
        kept = [c for c in children if c.content_type.mime_type != "application/applefile"]
        return kept or children  # a resource fork alone is all there is: keep it
    if multipart == "multipart/alternative":
        kept = [c for c in children if not _another_text_form(c)]
        forms = {c.content_type.mime_type for c in kept}
        return kept if forms & {"text/plain", "text/html"} else children
    return children


def _another_text_form(alternative: Entity) -> bool:
    """Whether an alternative is an unnamed text form other than plain text, HTML or a
    calendar."""
    mime_type = alternative.content_type.mime_type
    return (
        mime_type.startswith("text/")
        and mime_type not in ("text/plain", "text/html")
        and "calendar" not in mime_type
        and not _filename(alternative)
        and not _disposition_is_attachment(alternative)
    )


def _without_legacy_display_part(top: Entity, children: list[Entity]) -> list[Entity]:
    """``children`` of the content's top entity less its first one when that is the Legacy
    Display part of the older protected-headers scheme (see ``legacy_display``): it repeats
    the protected header fields this reader already shows in place of the outer ones."""
    first = children[0]
    if not (
        top.content_type.mime_type == "multipart/mixed"
        and _marked_v1(top)
        and _marked_v1(first)
        and first.content_type.mime_type in legacy_display.LEGACY_PART_TYPES
        and not _disposition_is_attachment(first)
        and not _filename(first)
    ):
        return children
    try:
        text = decode_mail_text(first.decoded_body(), first.content_type.param("charset"))
    except MalformedInput:
        return children
    return children[1:] if legacy_display.is_element_only(text) else children


def _heading(message: Entity) -> Heading:
    """The fields of an embedded ``message`` a reader shows above its text."""
    found = []
    for name in HEADING_FIELDS:
        value = printable.for_header(decode_header_text(message.get(name)))
        if value:
            found.append((name, value))
    return tuple(found)


def heading_text(part: Part) -> str:
    """The heading of ``part`` as lines of text ending in a blank line ("From: ..."), or "":
    what a reply quotes and the index holds above that part's text."""
    if not part.heading:
        return ""
    return "".join(f"{name}: {value}\n" for name, value in part.heading) + "\n"


def _unpacked(leaf: Part, shown: Part | None, room: binhex.Room) -> Iterator[Part]:
    """``leaf``; or, when it is Outlook's TNEF attachment (winmail.dat), the body and the files
    it carries in its place, numbered on from its number (see :mod:`core.tnef`). A plain-text
    body is left out when it only repeats, up to line breaks and spacing, the inline text part
    ``shown`` before it (Outlook sends the plain text beside the TNEF). A TNEF that cannot be
    read, or not to its end, or holds nothing, is also offered as it came. A BinHex file
    (old Macintosh mail) is the file it holds, or as it came when it holds no sound one (or
    one larger than the ``room`` left for the message's BinHex files)."""
    if binhex.is_binhex(leaf.mime_type, leaf.filename):
        binhexed = binhex.read_binhex(leaf.data, room)
        if binhexed is not None:
            leaf = replace(
                leaf,
                mime_type="application/octet-stream",
                filename=binhexed.filename,
                is_attachment=True,
                data=binhexed.data,
                charset=None,
            )
        yield leaf
        return
    if not tnef.is_tnef(leaf.mime_type, leaf.filename):
        yield leaf
        return
    try:
        content = tnef.read_tnef(leaf.data)
    except MalformedInput:
        yield leaf
        return
    number = leaf.number
    body: list[Part] = []
    if content.html is not None:
        body.append(Part(number, "text/html", "", False, content.html.encode(), "utf-8"))
    elif content.text is not None and not _same_words(content.text, shown):
        body.append(Part(number, "text/plain", "", False, content.text.encode(), "utf-8"))
    yield from body
    number += len(body)
    for file in content.files[: max(0, MAX_PARTS - number + 1)]:  # numbered up to MAX_PARTS
        yield Part(number, file.mime_type, file.filename, True, file.data, None, file.content_id)
        number += 1
    empty = content.html is None and content.text is None and not content.files
    if empty or not content.complete:
        # Nothing was in it, or something may be missing: the file itself stays downloadable.
        yield replace(leaf, number=number)


def _without_embedded_files(part: Part, found: list[EmbeddedFile], room: binhex.Room) -> Part:
    """``part`` without the files uuencoded (:mod:`core.uuencoded`) or BinHexed
    (:mod:`core.binhex`) in it, which go to ``found``: plain text only, and only while the
    message has room for more parts."""
    if part.mime_type != "text/plain" or len(found) >= MAX_PARTS:
        return part
    text, files = uuencoded.split_uuencoded(part.data)
    text, binhexed = binhex.split_binhex(text, room)
    if not files and not binhexed:
        return part
    found.extend(files)
    found.extend(binhexed)
    return replace(part, data=text)


def _same_words(text: str, shown: Part | None) -> bool:
    return shown is not None and text.split() == part_text(shown).split()


def _marked_v1(entity: Entity) -> bool:
    return (entity.content_type.param("protected-headers") or "").lower() == "v1"


def _leaf(
    entity: Entity,
    number: int,
    name: str | None,
    protected: bool,
    heading: Heading = (),
    alternative: tuple[int, int] | None = None,
    broken_multipart: bool = False,
) -> Part:
    ctype = entity.content_type
    try:
        data = entity.decoded_body()
    except MalformedInput:
        data = entity.body
        if entity.transfer_encoding == "base64" and ctype.mime_type.startswith("text/"):
            data = base64_then_text(data) or data
    filename = name or _filename(entity)
    mime_type, charset = ctype.mime_type, ctype.param("charset")
    unnamed_inline = not filename and not _disposition_is_attachment(entity)
    if mime_type in _REPORT_TYPES and unnamed_inline:
        # A bounce's delivery status, a read receipt's disposition, the returned message's
        # header: lines of text, which mail clients show as such, not nameless attachments.
        mime_type, charset = "text/plain", charset or _REPORT_TYPES[mime_type]
    elif broken_multipart and unnamed_inline:
        # A multipart whose boundary is missing or never delimits a part (a list server or a
        # gateway mangled it, a client wrote it so): its body is the text there is, as mail
        # clients show it, not a nameless "multipart/mixed" attachment.
        mime_type = "text/plain"
    also_a_file = bool(filename) and mime_type == "text/plain" and _disposition_is_inline(entity)
    is_attachment = not also_a_file and (
        _disposition_is_attachment(entity) or bool(filename) or mime_type not in _INLINE_TEXT_TYPES
    )
    content_id = (entity.get("Content-ID") or "").strip().strip("<>").strip() or None
    location = "".join((entity.get("Content-Location") or "").split()).strip('<>"') or None
    flowed = None
    if (ctype.param("format") or "").lower() == "flowed":
        flowed = "delsp" if (ctype.param("delsp") or "").lower() == "yes" else "yes"
    legacy = protected and not is_attachment and ctype.param(legacy_display.PARAMETER) == "1"
    return Part(
        number, mime_type, filename, is_attachment, data, charset,
        content_id, flowed, legacy, heading, alternative, location, also_a_file,
    )  # fmt: skip


def _holds_no_text(multipart: Entity) -> bool:
    """Whether a multipart that holds no part holds nothing else either: an empty body, or
    only its close delimiter (a nested multipart that reused its parent's boundary, as Outlook
    Express for Macintosh wrote them, is cut so)."""
    body = multipart.body.strip()
    boundary = multipart.content_type.param("boundary") or ""
    return not body or body == b"--" + boundary.encode("utf-8", "replace") + b"--"


def _disposition_is_attachment(entity: Entity) -> bool:
    value = (entity.get("Content-Disposition") or "").strip().lower()
    return value.startswith("attachment")


def _disposition_is_inline(entity: Entity) -> bool:
    """Whether the part asks, in so many words, to be shown with the message."""
    value = (entity.get("Content-Disposition") or "").split(";", 1)[0]
    return value.strip().lower() == "inline"


def _filename(entity: Entity) -> str:
    """The file name a part is sent under: Content-Disposition's filename, else Content-Type's
    name (Apple Mail and Lotus Notes give only that one), each decoded (RFC 2231, and encoded
    words, which Outlook, Gmail and Apple Mail write there quoted), without the folders some
    clients put before it ("C:\\Users\\bob\\report.pdf": Outlook Express, Lotus Notes)."""
    disposition = entity.get("Content-Disposition")
    name = _param(disposition, "filename") if disposition else None
    if not name:
        name = decode_header_text(entity.content_type.param("name") or "")
    return _without_folders(name)


def _without_folders(name: str) -> str:
    """``name`` after its last slash or backslash (the whole of it when nothing follows)."""
    return _FOLDERS.split(name)[-1].strip() or name


_FOLDERS = re.compile(r"[/\\]")


def _param(value: str, name: str) -> str | None:
    # Content-Disposition has the same parameter syntax as Content-Type: reuse that parser.
    from smime_companion.core.mime import parse_content_type

    parsed = parse_content_type("x/x;" + value.partition(";")[2])
    found = parsed.param(name)
    return decode_header_text(found) if found else None


def body_forms(parts: list[Part]) -> list[tuple[Part, Part | None]]:
    """The bodies among ``parts`` (its inline text parts), each as (part, plain form), so that a
    reader, a reply or an export shows each body once.

    In a multipart/alternative (Part.alternative) the last alternative with HTML is shown,
    each of its parts with the alternative that is one text/plain part as its plain form: an
    HTML body Apple Mail splits around its pictures (the HTML, a picture, the rest of the HTML)
    is several parts with one plain form, which a text view shows once. Elsewhere a text/plain
    part followed by a text/html part is one body in two forms, (the HTML, the plain text), as
    Outlook's winmail.dat gives it beside its text. Any other inline part is a body of its
    own, (it, None)."""
    inline = [p for p in parts if not p.is_attachment]
    forms: list[tuple[Part, Part | None]] = []
    index = 0
    while index < len(inline):
        part = inline[index]
        following = inline[index + 1] if index + 1 < len(inline) else None
        if part.alternative is not None:
            end = index + 1
            while end < len(inline) and _same_alternative(inline[end], part):
                end += 1
            forms.extend(_alternative_forms(inline[index:end]))
            index = end
        elif part.mime_type == "text/plain" and following and following.mime_type == "text/html":
            forms.append((following, part))
            index += 2
        else:
            forms.append((part, None))
            index += 1
    return forms


def _same_alternative(part: Part, other: Part) -> bool:
    return (
        part.alternative is not None
        and other.alternative is not None
        and part.alternative[0] == other.alternative[0]
    )


def _alternative_forms(group: list[Part]) -> list[tuple[Part, Part | None]]:
    """The body forms of the inline parts of one multipart/alternative (see body_forms). With
    no HTML among them each is a body of its own, as elsewhere."""
    branches: dict[int, list[Part]] = {}
    for part in group:
        assert part.alternative is not None  # a group is of parts in an alternative
        branches.setdefault(part.alternative[1], []).append(part)
    rich = [b for b in branches.values() if any(p.mime_type == "text/html" for p in b)]
    if not rich:
        return [(part, None) for part in group]
    plain = next(
        (b[0] for b in branches.values() if len(b) == 1 and b[0].mime_type == "text/plain"), None
    )
    return [(part, plain) for part in rich[-1]]


def decoded_text(part: Part) -> str:
    """The part's bytes decoded with its charset (see :mod:`core.charsets`), HTML left as it is,
    less a legacy display of the protected Subject (``Part.legacy_display``). HTML without a
    MIME charset is read with the one its ``<meta>`` names, as browsers do."""
    charset = part.charset
    if charset is None and part.mime_type == "text/html":
        meta = _META_CHARSET.search(part.data, 0, 4096)
        charset = meta.group(1).decode("ascii") if meta else None
    text = decode_mail_text(part.data, charset)
    if not part.legacy_display:
        return text
    if part.mime_type == "text/html":
        return legacy_display.html_without_element(text)
    return legacy_display.text_without_element(text)


# <meta charset="x"> or <meta http-equiv="Content-Type" content="text/html; charset=x">.
_META_CHARSET = re.compile(rb"""<meta[^>]*?charset\s*=\s*["']?([A-Za-z0-9_.:-]+)""", re.I)


def part_text(part: Part) -> str:
    """The text of a text part: decoded with its charset, HTML converted to plain text, and
    format=flowed paragraphs joined (RFC 3676)."""
    text = decoded_text(part)
    if part.mime_type == "text/html":
        return html_to_text(text)
    if part.mime_type in _ENRICHED_TYPES:
        return _enriched_to_text(text, richtext=part.mime_type == "text/richtext")
    if part.flowed is not None:
        return unflowed(text, delsp=part.flowed == "delsp")
    return text


# text/enriched (RFC 1896): a "<<" is "<", a <param> holds a formatting command's argument, every
# other <...> is a command; text/richtext (RFC 1341) has <lt> and <nl> in their place.
# Each alternative is bounded, so a body of unclosed <param>s is read in linear time.
_ENRICHED_MARKUP = re.compile(r"<<|<param>[^<]{0,256}</param>|<[^<>]{0,60}>|(?:\r?\n)+", re.I)


def _enriched_to_text(text: str, richtext: bool) -> str:
    """The text of a text/enriched or text/richtext body: commands dropped, and its line breaks
    read as the RFC says: in text/enriched one line break is a space and n of them are n - 1
    (the reference converter of RFC 1896's appendix); in text/richtext every line break is a
    space and <nl> breaks the line."""

    def replaced(match: re.Match[str]) -> str:
        found = match.group(0)
        if found == "<<":
            return "<"
        if found[0] != "<":
            breaks = found.count("\n")
            return " " if richtext or breaks == 1 else "\n" * (breaks - 1)
        command = found[1:-1].strip().lower()
        if richtext and command in ("nl", "lt"):
            return "\n" if command == "nl" else "<"
        return ""

    return _ENRICHED_MARKUP.sub(replaced, text)


def unflowed(text: str, delsp: bool = False) -> str:
    """format=flowed text (RFC 3676 section 4.2) with its soft line breaks removed: a line that
    ends in a space continues on the next line of the same quote depth (Thunderbird sends all
    its plain text so, broken at 72 characters); quote marks and space-stuffing are read off
    each line and the quote marks written once per paragraph. ``delsp``: the space before a
    soft break is not part of the text."""
    out: list[str] = []
    paragraph: list[str] = []
    depth = 0
    # Split on line ends only: splitlines would also break at form feeds and U+2028.
    lines = text.split("\n")
    if text.endswith("\n"):
        lines.pop()
    for line in lines:
        line = line.removesuffix("\r")
        quotes = len(line) - len(line.lstrip(">"))
        line = line[quotes:]
        if line.startswith(" "):
            line = line[1:]  # space-stuffing
        if paragraph and quotes != depth:  # a soft break never crosses a quote depth change
            out.append(_quoted(depth, paragraph))
            paragraph = []
        depth = quotes
        soft = line.endswith(" ") and line != "-- "
        paragraph.append(line[:-1] if soft and delsp else line)
        if not soft:
            out.append(_quoted(depth, paragraph))
            paragraph = []
    if paragraph:
        out.append(_quoted(depth, paragraph))
    return "\n".join(out) + ("\n" if text.endswith("\n") else "")


def _quoted(depth: int, pieces: list[str]) -> str:
    """One paragraph of flowed text, behind its quote marks (``>> `` for depth 2)."""
    return (">" * depth + " " if depth else "") + "".join(pieces)


_LINES = re.compile(r"[^\n]+")


def preview(body: str, limit: int = PREVIEW_CHARS) -> str:
    """The first words of a message's own text, for its row in a list (as webmail shows them):
    ``body`` (the text as read, :func:`shown_text`) on one line, without the quoted lines of
    the message it answers, cut at a word before ``limit`` characters, an ellipsis marking the
    cut.

    Control and bidirectional characters are dropped (:data:`printable.UNSAFE`), and so are
    "words" with nothing visible in them: newsletters pad the text a list would show with
    zero-width joiners and the like so that only their chosen teaser appears. Reads ``body``
    line by line and stops at the limit: a long body costs what its first lines do.
    """
    words: list[str] = []
    size = 0
    for match in _LINES.finditer(body):
        line = match.group()
        if line.lstrip().startswith(">"):
            continue
        for word in printable.UNSAFE.sub(" ", line).split():
            if not any(unicodedata.category(c)[0] in "LNPS" for c in word):
                continue
            if size + len(word) > limit:
                return " ".join(words) + " …" if words else word[: limit - 1] + "…"
            words.append(word)
            size += len(word) + 1
    return " ".join(words)


def extract_text(content: bytes, content_name: str | None = None) -> MessageText:
    """Body text (every inline text part; HTML converted), attachments and preview of
    ``content`` (``content_name`` names content without a header, see :func:`iter_parts`).

    Never raises for broken MIME: what cannot be parsed is left out of the text.
    """
    chunks: list[str] = []
    size = 0
    attachments: list[Attachment] = []
    # Attached pictures by part number: their Content-ID (lower case, as "cid:" + it) and
    # Content-Location, and the sources the HTML bodies' images name.
    pictures: dict[int, tuple[str | None, str | None]] = {}
    named: set[str] = set()
    inline: list[Part] = []
    texts: dict[int, str] = {}
    try:
        for part in iter_parts(content, content_name):
            if part.is_attachment or part.also_a_file:
                attachments.append(
                    Attachment(
                        part=part.number,
                        filename=part.filename,
                        mime_type=part.mime_type,
                        size=len(part.data),
                        sha256=hashlib.sha256(part.data).hexdigest(),
                    )
                )
            if part.is_attachment:
                if part.mime_type.startswith("image/"):
                    cid = "cid:" + part.content_id.lower() if part.content_id else None
                    pictures[part.number] = (cid, part.content_location)
                continue
            if part.mime_type == "text/html":
                named.update(_picture_sources(part))
            if size < MAX_INDEXED_CHARS:
                text = _headed_text(part)[: MAX_INDEXED_CHARS - size]
                chunks.append(text)
                size += len(text)
                inline.append(part)
                texts[part.number] = text
    except SmimeCompanionError:
        pass  # the top header section is unparsable: nothing to index
    # The preview is of the text as read: a message sent as text and HTML (most are) would
    # otherwise show its first sentence twice.
    shown = shown_text(inline, lambda part: texts[part.number])
    attachments = [
        replace(a, inline=True) if named.intersection(pictures.get(a.part, ())) else a
        for a in attachments
    ]
    return MessageText("\n".join(chunks), tuple(attachments), preview(shown))


# An image's source in HTML: a cid: URL (RFC 2392; brackets and case do not count, as the
# reader resolves it) or another URL, which a part's Content-Location may name (RFC 2557).
_CID_URL = re.compile(r"""cid:\s*<?\s*([^\s"'<>()]+)""", re.IGNORECASE)
# Any element's src (a pattern tied to <img ...> backtracks over long attribute runs): a
# Content-Location named by another element's source is not drawn, and rare enough.
_IMAGE_SOURCE = re.compile(r"""\bsrc\s*=\s*["']?\s*([^"'\s>]+)""", re.IGNORECASE)


def _picture_sources(html: Part) -> set[str]:
    """The sources HTML part ``html`` names for pictures: "cid:" and the Content-ID (lower
    case) for each cid: URL anywhere, and each image's other source URL as written."""
    text = decoded_text(html)
    sources = {"cid:" + found.lower() for found in _CID_URL.findall(text)}
    sources.update(found for found in _IMAGE_SOURCE.findall(text) if found[:4].lower() != "cid:")
    return sources


def shown_text(parts: list[Part], text_of: Callable[[Part], str] | None = None) -> str:
    """The text a person reads of a message whose parts are ``parts``: each body once
    (:func:`body_forms`), in its plain form, under its heading. What ``show --text`` prints, a
    reply quotes and the list's preview starts from. ``text_of`` gives a part's text with its
    heading when the caller has it already."""
    if text_of is None:
        text_of = _headed_text
    shown: dict[int, Part] = {}  # by number: the pieces of a split HTML body share a plain form
    for part, plain in body_forms(parts):
        form = plain or part
        shown.setdefault(form.number, form)
    return "\n".join(text_of(form) for form in shown.values())


def _headed_text(part: Part) -> str:
    return heading_text(part) + part_text(part)


def get_part(content: bytes, number: int) -> Part | None:
    """Leaf part ``number`` (1-based) of ``content``, or None when there is no such part."""
    try:
        for part in iter_parts(content):
            if part.number == number:
                return part
    except SmimeCompanionError:
        return None
    return None


__all__ = [
    "Attachment",
    "MessageText",
    "Part",
    "HEADING_FIELDS",
    "Heading",
    "body_forms",
    "decode_header_text",
    "decoded_text",
    "extract_text",
    "get_part",
    "header_date",
    "heading_text",
    "iter_parts",
    "part_text",
    "preview",
    "shown_text",
    "summary_headers",
]

"""HTML mail made harmless with nh3 (the Ammonia sanitiser): the only module importing nh3.

What comes out is a fragment that can do nothing but show text and pictures of its own: no
script, event handler, form, frame, SVG, ``<meta refresh>``, ``<base>``, ``<link>`` or
``<style>`` element survives; links keep only http, https and mailto targets (and open in a new
tab, without referrer); style attributes keep only a list of harmless properties, so no CSS
``url()`` is left; and every image source that is not a ``cid:`` reference to a part of the
same message is removed, so nothing is ever fetched from the network (the EFAIL channel and
read-tracking pixels). ``cid:`` images become ``data:`` URIs made by us from the message's own
parts. The page that shows the fragment adds a strict Content-Security-Policy and a sandboxed
frame on top (``routes_mail``); the sanitiser is the first wall, not the only one.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from html import escape

import nh3

from smime_companion.core.html_text import html_to_text
from smime_companion.reader.quote_folding import fold_html_quote

# Image types a browser shows without running anything (SVG can carry script: never inlined).
INLINE_IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})
# What the first bytes of each of those types are: a picture is served as the type its bytes
# say, never as the type the sender declared (no SVG, no HTML a browser might sniff).
_PICTURE_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)


def picture_type(data: bytes) -> str | None:
    """The media type of a PNG, JPEG, GIF or WebP picture, told by its bytes; None for
    anything else."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return next((kind for magic, kind in _PICTURE_MAGIC if data.startswith(magic)), None)


# A cid: image larger than this is listed as an attachment instead of inlined.
MAX_INLINE_IMAGE_BYTES = 5 * 1024 * 1024
# The pictures a message's HTML may draw from its parts, in all (its HTML bodies share it): each
# reference is a data: URI of its own, so a short body naming one large part a thousand times
# would otherwise grow into gigabytes. Mail servers take messages of 25 to 35 MB; pictures past
# this are not drawn (CleanHtml.withheld).
MAX_INLINED_BYTES = 32 * 1024 * 1024

_TAGS = set(nh3.ALLOWED_TAGS) | {"font"}
_ATTRIBUTES: dict[str, set[str]] = {
    **{tag: set(values) for tag, values in nh3.ALLOWED_ATTRIBUTES.items()},
    "font": {"color", "face", "size"},
    "td": {"align", "valign", "colspan", "rowspan", "width", "height", "bgcolor"},
    "th": {"align", "valign", "colspan", "rowspan", "width", "height", "bgcolor"},
    "table": {"align", "width", "border", "cellpadding", "cellspacing", "bgcolor"},
    # Marks of the message a reply answers (quote_folding), kept with these values only.
    "div": {*nh3.ALLOWED_ATTRIBUTES.get("div", ()), "id"},
    "blockquote": {*nh3.ALLOWED_ATTRIBUTES.get("blockquote", ()), "type"},
    "*": {"style", "title", "dir", "lang"},
}
_CLASSES = {"div": {"gmail_quote", "moz-cite-prefix"}}
_MARK_VALUES = {("div", "id"): "divRplyFwdMsg", ("blockquote", "type"): "cite"}
# Removed with everything inside them (nh3 refuses a tag in both sets).
_DROP_WITH_CONTENT = {
    "script", "style", "svg", "math", "template", "title", "noscript", "head", "iframe",
    "object", "embed", "applet", "noembed", "noframes", "xmp", "textarea", "select",
}  # fmt: skip
# Style properties that change how text and boxes look and can fetch nothing.
_STYLE_PROPERTIES = {
    "color", "background-color", "font", "font-family", "font-size", "font-style",
    "font-weight", "text-align", "text-decoration", "text-transform", "line-height",
    "letter-spacing", "white-space", "vertical-align", "margin", "margin-top", "margin-right",
    "margin-bottom", "margin-left", "padding", "padding-top", "padding-right", "padding-bottom",
    "padding-left", "border", "border-top", "border-right", "border-bottom", "border-left",
    "border-color", "border-style", "border-width", "border-collapse", "border-spacing",
    "border-radius", "width", "height", "max-width", "min-width", "display", "direction",
}  # fmt: skip
_LINK_SCHEMES = ("http://", "https://", "mailto:")


# The HTML parser's work grows with the square of how deeply elements nest (50,000 nested <div>
# cost 9 s here; 2,000 cost milliseconds). A document nested deeper than this is shown as text.
MAX_NESTING = 2000
# And with the square of how many of these characters one text holds (the serialiser writes
# them as references): 1,000,000 ampersands cost 8.4 s, 100,000 a tenth of a second. HTML with
# more of them, or longer than MAX_RENDERED_HTML (a bound for what was not found), is shown as
# its text too; Gmail clips a message's HTML at a twentieth of that length.
_COSTLY_CHARACTERS = "&\xa0\xad\x85"
MAX_COSTLY_CHARACTERS = 100_000
MAX_RENDERED_HTML = 2_000_000
# Elements that nest nothing (void) or close themselves when a sibling starts (optional end
# tags): not counted as nesting, so an old table or list without end tags is not "deep".
_NOT_NESTING = frozenset(
    "area base br col embed hr img input link meta source track wbr p li dt dd td th tr "
    "tbody thead tfoot colgroup caption option optgroup rb rt rtc rp".split()
)
# A tag's start, whatever follows (a '<' inside an attribute value must not hide a tag).
_TAG_START = re.compile(r"<(/?)([A-Za-z][A-Za-z0-9-]*)")


def _too_costly(html: str) -> str:
    """Why parsing ``html`` would cost more than bounded time (for "This HTML ..."), or ""."""
    if len(html) > MAX_RENDERED_HTML:
        return f"is larger than {MAX_RENDERED_HTML // 1_000_000} MB"
    if too_deep(html):
        return "is nested too deeply"
    if sum(html.count(c) for c in _COSTLY_CHARACTERS) > MAX_COSTLY_CHARACTERS:
        return f"holds over {MAX_COSTLY_CHARACTERS:,} ampersands or special spaces"
    return ""


def too_deep(html: str, limit: int = MAX_NESTING) -> bool:
    """True when ``html`` may nest elements deeper than ``limit`` (an upper bound, counted in
    one linear pass without parsing)."""
    depth = 0
    for match in _TAG_START.finditer(html):
        if match.group(2).lower() in _NOT_NESTING:
            continue
        depth += -1 if match.group(1) else 1
        if depth > limit:
            return True
        depth = max(depth, 0)
    return False


@dataclass(frozen=True)
class InlineImage:
    """A part of the message that a ``cid:`` reference may show: its type and bytes."""

    mime_type: str
    data: bytes


@dataclass(frozen=True)
class CleanHtml:
    """A sanitised fragment, how many remote images were removed from it, and which cid
    images it shows inline (their Content-IDs)."""

    html: str
    remote_images: int
    inlined: frozenset[str]
    # Why the HTML is shown as its text ("is nested too deeply", "is larger than 2 MB": too
    # costly to parse in bounded time), or "" when it is shown as HTML.
    as_text: str = ""
    withheld: int = 0  # pictures of the message's own not drawn: past the budget


def clean_html(
    html: str,
    images: Mapping[str, InlineImage],
    locations: Mapping[str, InlineImage] | None = None,
    *,
    pictures: bool = True,
    budget: int | None = None,
) -> CleanHtml:
    """``html`` (a whole document or a fragment, any junk) as a harmless fragment.

    ``images`` maps Content-IDs (without angle brackets, lower case) to the parts a ``cid:``
    image may show; ``locations`` maps Content-Locations (RFC 2557) to the parts an image
    whose source is that very URL shows, in place of fetching it, up to ``budget`` bytes of
    them (MAX_INLINED_BYTES by default). Without ``pictures`` those images are decided on as
    ever (``inlined``, ``withheld``) but not written out, for a caller that only needs to know
    which parts the body draws. Never raises for hostile input; costs time linear in its size.
    """
    too_much = _too_costly(html)
    if too_much:
        text = html_to_text(html)
        return CleanHtml(f"<pre>{escape(text)}</pre>", 0, frozenset(), as_text=too_much)
    drawing = _Drawing(pictures, MAX_INLINED_BYTES if budget is None else budget)
    filter_attribute = _attribute_filter(images, locations or {}, drawing)
    cleaned = nh3.clean(
        html,
        tags=_TAGS,
        clean_content_tags=_DROP_WITH_CONTENT,
        attributes=_ATTRIBUTES,
        attribute_filter=filter_attribute,
        strip_comments=True,
        link_rel="noopener noreferrer",
        set_tag_attribute_values={"a": {"target": "_blank"}},
        # data: only survives as a picture's source (_embedded_picture); links never keep it.
        url_schemes={"http", "https", "mailto", "cid", "data"},
        filter_style_properties=_STYLE_PROPERTIES,
        allowed_classes=_CLASSES,
    )
    return CleanHtml(
        fold_html_quote(cleaned),
        drawing.blocked,
        frozenset(drawing.inlined),
        withheld=drawing.withheld,
    )


class _Drawing:
    """What the image sources of one HTML body came to: remote ones blocked, the message's own
    pictures drawn (their data: URIs written once each) within the budget, and those withheld
    past it."""

    def __init__(self, pictures: bool, budget: int) -> None:
        self.pictures = pictures  # write the data: URIs, or only decide (a placeholder)
        self.blocked = 0
        self.withheld = 0
        self.inlined: set[str] = set()
        self._left = budget
        self._uris: dict[int, str] = {}  # by id() of the image, alive in the caller's maps

    def draw(self, name: str, image: InlineImage) -> str | None:
        """The data: URI that draws ``image`` (known to the message as ``name``), or None when
        the budget is spent."""
        if len(image.data) > self._left:
            self.withheld += 1
            return None
        self._left -= len(image.data)
        self.inlined.add(name)
        if not self.pictures:
            return "data:,"
        if id(image) not in self._uris:
            self._uris[id(image)] = _data_uri(image)
        return self._uris[id(image)]


# The only CSS functions a kept style may call: colours. Anything else with a "(" (url(),
# image-set(), legacy expression(), var() games) is dropped, whatever its property.
_STYLE_FUNCTIONS = re.compile(r"\b(?:rgb|rgba|hsl|hsla)\(", re.IGNORECASE)


def _safe_style(value: str) -> str | None:
    """``value`` without the declarations that call anything but a colour function."""
    kept = [
        declaration.strip()
        for declaration in value.split(";")
        if declaration.strip()
        and "(" not in _STYLE_FUNCTIONS.sub("", declaration)
        and "\\" not in declaration  # CSS escapes can spell a function name
    ]
    return ";".join(kept) or None


def _attribute_filter(
    images: Mapping[str, InlineImage], locations: Mapping[str, InlineImage], drawing: _Drawing
) -> Callable[[str, str, str], str | None]:
    def keep(element: str, attribute: str, value: str) -> str | None:
        if attribute in ("src", "href", "cite") or (element == "area" and attribute == "href"):
            target = value.strip()
            if element == "img" and attribute == "src":
                if target.lower().startswith("cid:"):
                    cid = target[4:].strip().strip("<>").lower()
                    image = images.get(cid)
                    if image is not None and _inlinable(image):
                        return drawing.draw(cid, image)
                    return None
                if target[:5].lower() == "data:":
                    return _embedded_picture(target)
                image = locations.get(target)
                if image is not None and _inlinable(image):
                    return drawing.draw(target, image)
                drawing.blocked += 1
                return None
            if attribute == "cite":
                return None  # a URL nobody needs to see, and no reason to keep one
            return target if target.lower().startswith(_LINK_SCHEMES) else None
        if attribute == "style":
            return _safe_style(value)
        if (element, attribute) in _MARK_VALUES:
            return value if value == _MARK_VALUES[element, attribute] else None
        return value

    return keep


def _embedded_picture(uri: str) -> str | None:
    """A picture the HTML carries itself as a base64 ``data:`` URI (pasted into a message by
    some clients and newsletters): nothing is fetched, so it is shown, written again from its
    bytes with the type they say; None for anything but a PNG, JPEG, GIF or WebP picture of at
    most MAX_INLINE_IMAGE_BYTES (an SVG, HTML, a declared type that lies)."""
    header, comma, payload = uri.partition(",")
    if not comma or not header.lower().rstrip().endswith(";base64"):
        return None
    if len(payload) > MAX_INLINE_IMAGE_BYTES * 4 // 3 + 4096:
        return None
    try:
        data = base64.b64decode("".join(payload.split()), validate=True)
    except ValueError:  # binascii.Error, or characters beyond ASCII
        return None
    kind = picture_type(data)
    return _data_uri(InlineImage(kind, data)) if kind is not None else None


def _data_uri(image: InlineImage) -> str:
    return f"data:{image.mime_type};base64," + base64.b64encode(image.data).decode("ascii")


def _inlinable(image: InlineImage) -> bool:
    return image.mime_type in INLINE_IMAGE_TYPES and len(image.data) <= MAX_INLINE_IMAGE_BYTES

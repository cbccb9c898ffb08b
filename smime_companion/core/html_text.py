"""HTML -> readable plain text, in time linear in the HTML, whatever it holds.

What the index, the reader's text view, exports and reply quotes show of an HTML part. The
standard library's ``html.parser`` was used before; it reads an unfinished construct (``<div``
without its ``>``, an open comment or quote) again from its start at every later ``<``, so a
page of 80,000 characters of ``<div `` cost 21 s and a megabyte hours. This tokenizer reads
each character a bounded number of times: it follows the WHATWG tokenizer where that decides
what is text (a ``<`` that starts no tag is text; a quoted attribute value runs to its closing
quote, across ``>``; a tag, comment or quote that never ends drops the rest of the document;
script and style hold no markup) and ignores the rest of HTML's rules, which only build a tree.

Pure: text in, text out.
"""

from __future__ import annotations

import html
import re

_BLOCK_TAGS = frozenset(
    "address article aside blockquote br dd div dl dt fieldset figcaption figure footer form "
    "h1 h2 h3 h4 h5 h6 header hr li main nav ol p pre section table td th tr ul".split()
)
# Elements whose text is not the message's: skipped with everything inside them.
_SKIP_TAGS = frozenset({"head", "title", "template", "noscript"})
# Elements whose content is not markup at all: skipped to their end tag.
_RAW_TEXT_TAGS = frozenset({"script", "style", "xmp", "iframe", "noembed", "noframes"})
# Links open at once (an <a> inside an <a>): more are not followed to their end.
_MAX_OPEN_LINKS = 64

_TAG_START = re.compile(r"<(/?)([A-Za-z][^\s/>]*)")
_SPACE_AND_SLASHES = re.compile(r"[\s/]*")
_ATTRIBUTE_NAME = re.compile(r"[^\s/>=]*")
_SPACE = re.compile(r"\s*")
_UNQUOTED_VALUE = re.compile(r"[^\s>]*")
_SPACES = re.compile(r"[ \t\r\f\v]+")
_BLANK_LINES = re.compile(r"\n\s*\n+")


def html_to_text(document: str) -> str:
    """Readable plain text of an HTML document: tags dropped, entities decoded, script and style
    left out, block elements on their own lines, each link's target after its text
    (``Pay here <https://...>``) unless the text already shows it, and the lines of a
    ``<blockquote>`` (the message a reply quotes) marked ``> `` per depth, as plain text quotes."""
    extractor = _Extractor()
    extractor.read(document)
    lines = [_SPACES.sub(" ", line).strip() for line in "".join(extractor.out).split("\n")]
    return _BLANK_LINES.sub("\n\n", "\n".join(_tidy_quotes(lines))).strip()


def _tidy_quotes(lines: list[str]) -> list[str]:
    """``lines`` less the quoted blank lines (``>`` alone) that open or close a quote or repeat
    one: such a line stays only between two quoted paragraphs at least as deep."""
    # The depth of the next line that is not a quoted blank line, for each line (from the end).
    next_depth = [0] * (len(lines) + 1)
    for index in range(len(lines) - 1, -1, -1):
        blank = _QUOTE_MARKS.fullmatch(lines[index])
        next_depth[index] = next_depth[index + 1] if blank else _depth(lines[index])
    kept: list[str] = []
    for index, line in enumerate(lines):
        if not _QUOTE_MARKS.fullmatch(line):
            kept.append(line)
            continue
        depth = line.count(">")
        previous = kept[-1] if kept else ""
        between = _depth(previous) >= depth and next_depth[index + 1] >= depth
        if between and not _QUOTE_MARKS.fullmatch(previous):
            kept.append(">" * depth)
    return kept


def split_quote_marks(line: str) -> tuple[int, str]:
    """A plain text line's quote depth (its leading ``>`` marks, a space after any of them:
    ``> > x``, ``>> x``) and its text without them. The one reading of quote marks: what
    html_to_text writes, the reader's quote folding reads."""
    marks = _QUOTE_MARKS.match(line)
    if marks is None:
        return 0, line
    return marks.group().count(">"), line[marks.end() :]


def _depth(line: str) -> int:
    return split_quote_marks(line)[0]


# How a quoted line starts (a quoted blank line is only that). Quote marks are written for this
# many levels at most (a deeper quote is drawn at it: a hostile nest costs no more per line).
_QUOTE_MARKS = re.compile(r"(?:> ?)+")
_MAX_QUOTE_MARKS = 16


class _Extractor:
    def __init__(self) -> None:
        self.out: list[str] = []
        self.skip_depth = 0
        # The target of each open <a>, and where its text starts in ``out``.
        self.links: list[tuple[str | None, int]] = []
        self.quotes = 0  # blockquotes open
        self.marks = ""  # what each line inside them starts with

    def read(self, document: str) -> None:
        position, end = 0, len(document)
        while position < end:
            lt = document.find("<", position)
            if lt < 0:
                self.data(document[position:])
                return
            if lt > position:
                self.data(document[position:lt])
            position = self.markup(document, lt)

    def markup(self, document: str, lt: int) -> int:
        """Read the markup at ``lt`` (a ``<``); return where the text after it starts."""
        if document.startswith("<!--", lt):
            close = document.find("-->", lt + 4)
            return len(document) if close < 0 else close + 3
        if document.startswith(("<!", "<?"), lt):  # doctype, CDATA, processing instruction
            close = document.find(">", lt + 2)
            return len(document) if close < 0 else close + 1
        tag = _TAG_START.match(document, lt)
        if tag is None and document.startswith("</", lt) and lt + 2 < len(document):
            # "</>" is nothing, "</ p>" a bogus comment to the next ">".
            close = document.find(">", lt + 2)
            return len(document) if close < 0 else close + 1
        if tag is None:
            self.data("<")  # a "<" that starts no tag is text ("a < b")
            return lt + 1
        closing, name = bool(tag.group(1)), tag.group(2).lower()
        attributes, after = _attributes(document, tag.end())
        if after < 0:
            return len(document)  # the tag never ends: the rest is inside it
        if closing:
            self.end_tag(name)
        elif name in _RAW_TEXT_TAGS:
            end_tag = re.compile(rf"</{re.escape(name)}[\s/>]", re.I).search(document, after)
            return len(document) if end_tag is None else end_tag.start()
        else:
            self.start_tag(name, attributes)
        return after

    def start_tag(self, name: str, attributes: dict[str, str]) -> None:
        if name in _SKIP_TAGS:
            self.skip_depth += 1
        elif name in _BLOCK_TAGS:
            if name == "blockquote":
                self.quote(+1)
            self.newline()
        elif name == "img":
            alt = attributes.get("alt")
            # Outlook writes the picture's cid: address as its alt text: no words of the author.
            if alt and not alt.strip().lower().startswith("cid:"):
                self.out.append(f" {alt} ")
        elif name == "a" and len(self.links) < _MAX_OPEN_LINKS:
            self.links.append((attributes.get("href"), len(self.out)))

    def end_tag(self, name: str) -> None:
        if name in _SKIP_TAGS:
            self.skip_depth = max(0, self.skip_depth - 1)
        elif name == "a" and self.links:
            href, start = self.links.pop()
            target = _link_target(href)
            # The target after the link's text, unless the text already says it: a link whose
            # words hide where it goes is exactly what a reader (and a search) must see.
            if target and target not in "".join(self.out[start:]):
                self.out.append(f" <{target}>")
        elif name in _BLOCK_TAGS:
            if name == "blockquote":
                self.quote(-1)
            self.newline()

    def data(self, text: str) -> None:
        if not self.skip_depth:
            text = html.unescape(text)
            self.out.append(text.replace("\n", "\n" + self.marks) if self.marks else text)

    def newline(self) -> None:
        self.out.append("\n" + self.marks)

    def quote(self, step: int) -> None:
        self.quotes = max(0, self.quotes + step)
        self.marks = "> " * min(self.quotes, _MAX_QUOTE_MARKS)


def _attributes(document: str, position: int) -> tuple[dict[str, str], int]:
    """The attributes of a tag whose name ends at ``position``, and where the text after its
    ``>`` starts; -1 when the document ends inside the tag. The first of a name wins."""
    found: dict[str, str] = {}
    end = len(document)
    while True:
        position = _skip(_SPACE_AND_SLASHES, document, position)
        if position >= end:
            return found, -1
        if document[position] == ">":
            return found, position + 1
        # A name runs to a space, "/", ">" or "=" (one "=" first is part of it).
        start = position
        position = _skip(_ATTRIBUTE_NAME, document, position + 1)
        name = document[start:position].lower()
        after_space = _skip(_SPACE, document, position)
        value = ""
        if after_space < end and document[after_space] == "=":
            position = _skip(_SPACE, document, after_space + 1)
            if position < end and document[position] in "\"'":
                close = document.find(document[position], position + 1)
                if close < 0:
                    return found, -1  # an open quote to the end: the rest is inside the tag
                value, position = document[position + 1 : close], close + 1
            else:
                start, position = position, _skip(_UNQUOTED_VALUE, document, position)
                value = document[start:position]
        found.setdefault(name, html.unescape(value))


def _skip(pattern: re.Pattern[str], document: str, position: int) -> int:
    """Where ``pattern`` (which matches the empty string too) stops matching from ``position``."""
    found = pattern.match(document, position)
    assert found is not None
    return found.end()


def _link_target(href: str | None) -> str | None:
    """The part of a link worth showing: web and mail addresses (``mailto:`` dropped), not
    in-page anchors or scripts."""
    if not href:
        return None
    href = href.strip()
    lowered = href.lower()
    if lowered.startswith("mailto:"):
        return href[7:].split("?", 1)[0] or None
    if lowered.startswith(("http://", "https://", "ftp://")):
        return href
    return None


__all__ = ["html_to_text"]

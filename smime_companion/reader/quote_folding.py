"""A reply as the message page shows it: the lines it quotes set apart by depth (a bar per level
instead of the ``>`` marks), and the message it answers, when it ends the text, folded away
behind "Show quoted text", as webmail does. A reply to a long thread is then its few new lines,
not a screen of older mail.

In plain text (:func:`fold_quotes`) the message answered is the quoted run that ends the text
together with the line introducing it ("On Monday, Alice wrote:"), or everything from a
separator Outlook writes above it ("-----Original Message-----" or a line of underscores, then
"From: ..."). In sanitised HTML (:func:`fold_html_quote`) it starts at the mark a mail client
puts on it (Gmail, Thunderbird, Apple Mail, Outlook). Only a reply with text of its own before
that is folded: a message that is all quote shows it all.

Pure: text in, blocks or HTML out. Each line is looked at once with patterns anchored at its
start; the HTML in one pass of the standard library's parser, when a mark is present at all.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from html.parser import HTMLParser

from smime_companion.core.html_text import split_quote_marks

__all__ = ["FoldedText", "TextBlock", "fold_html_quote", "fold_quotes"]

# Outlook's separators above the message a plain text reply answers: "-----Original
# Message-----" in the sender's language, or a line of underscores; then a field ("From:",
# "Von:", "De :").
_SEPARATOR = re.compile(r"-{3,} ?[^-\n]{3,60}? ?-{3,}|_{10,}")
_FIELD = re.compile(r"[^\W\d_][\w -]{0,24}:")
# Quote depths shown apart at most: deeper quotes are drawn at this one (a bar each would leave
# no room for text on a phone).
MAX_SHOWN_DEPTH = 4


@dataclass(frozen=True)
class TextBlock:
    """Consecutive lines of one quote depth (0: the writer's own), without their quote marks."""

    depth: int
    text: str


@dataclass(frozen=True)
class FoldedText:
    """The blocks shown, and the blocks of the message answered, folded away (empty when the
    text ends in no such message)."""

    shown: list[TextBlock]
    folded: list[TextBlock] = field(default_factory=list)


def fold_quotes(text: str) -> FoldedText:
    """``text`` as blocks by quote depth, its ending quote folded away (see the module)."""
    lines = [split_quote_marks(line) for line in text.split("\n")]
    start = _answered_from(lines)
    return FoldedText(_blocks(lines[:start]), _blocks(lines[start:]))


def _answered_from(lines: list[tuple[int, str]]) -> int:
    """Where the message the text answers starts (``len(lines)`` when it answers none, or has
    nothing of its own before it)."""
    for index, (depth, line) in enumerate(lines):
        if depth == 0 and _SEPARATOR.fullmatch(line.strip()):
            following = next((x for _, x in lines[index + 1 : index + 3] if x.strip()), "")
            if _FIELD.match(following.strip()):
                return _if_own_text_before(lines, index)
    start = len(lines)
    while start > 0 and (lines[start - 1][0] > 0 or not lines[start - 1][1].strip()):
        start -= 1
    if not any(depth for depth, _ in lines[start:]):
        return len(lines)  # the text does not end in a quote
    introduction = start - 1
    while introduction >= 0 and not lines[introduction][1].strip():
        introduction -= 1
    if introduction >= 0 and lines[introduction][1].rstrip().endswith(":"):
        start = introduction
        # Gmail wraps a long introduction after the address: "On ..., Alice <a@example.org>"
        # then "wrote:". (A short line of the reply's own before a quote, "See below:", keeps
        # the line above it in view.)
        above = lines[start - 1][1] if start > 0 and not lines[start - 1][0] else ""
        if len(lines[start][1].split()) <= 3 and "@" in above:
            start -= 1
    return _if_own_text_before(lines, start)


def _if_own_text_before(lines: list[tuple[int, str]], start: int) -> int:
    return start if any(line.strip() for _, line in lines[:start]) else len(lines)


def _blocks(lines: list[tuple[int, str]]) -> list[TextBlock]:
    """The lines grouped by depth (a blank line stays in the block it stands in), each block
    without the blank lines around it."""
    blocks: list[TextBlock] = []
    run: list[str] = []
    depth = 0
    for line_depth, line in lines:
        shown = min(line_depth, MAX_SHOWN_DEPTH) if line_depth or line.strip() else depth
        if shown != depth and run:
            blocks.append(TextBlock(depth, "\n".join(run).strip("\n").rstrip()))
            run = []
        depth = shown
        run.append(line)
    if run:
        blocks.append(TextBlock(depth, "\n".join(run).strip("\n").rstrip()))
    return [block for block in blocks if block.text]


# --- HTML -------------------------------------------------------------------------------------

# What starts the message an HTML reply answers, in the sanitised fragment (html_mail keeps
# these attribute values and no others): Gmail's quote, Thunderbird's "On ... wrote:", the
# blockquote Apple Mail and Thunderbird quote in, and Outlook's header block of the message
# answered (Outlook on the web: an id; desktop Outlook: a rule above it, in two colours).
_OUTLOOK_RULE = re.compile(r"border-top:\s*solid\s+#(?:E1E1E1|B5C4DF)\s+1\.0pt", re.I)
# Any of those marks as nh3 writes attributes (double quotes, in the order they came).
_ANY_MARK = re.compile(
    r'class="(?:gmail_quote|moz-cite-prefix)"|type="cite"|id="divRplyFwdMsg"|'
    + _OUTLOOK_RULE.pattern,
    re.I,
)
_VOID = frozenset("area base br col embed hr img input link meta source track wbr".split())
FOLDED_HTML_START = (
    '<details class="quoted"><summary><span class="closed">Show quoted text</span>'
    '<span class="open">Hide quoted text</span></summary>'
)


def fold_html_quote(fragment: str) -> str:
    """The sanitised HTML ``fragment`` with the message it answers, when that ends it, folded
    into a ``<details>`` element: from the first mark of a quote (above) to the end of the
    element holding it. Outlook's answered message follows its header block as siblings, so
    after Outlook's marks everything is folded; after the others only quotes may follow, so
    that answers written between quotes stay in view. Nothing is folded when no text of the
    reply's own comes before. The fragment must be well formed (nh3 writes it so)."""
    if not _ANY_MARK.search(fragment):
        return fragment  # most HTML: no pass of the (pure Python) parser
    finder = _QuoteFinder()
    finder.feed(fragment)
    finder.close()
    if finder.fold is None or not finder.own_before or finder.own_after:
        return fragment
    start, end = finder.fold, finder.fold_end
    offsets = _line_offsets(fragment)
    first = offsets[start[0] - 1] + start[1]
    last = len(fragment) if end is None else offsets[end[0] - 1] + end[1]
    return (
        fragment[:first] + FOLDED_HTML_START + fragment[first:last] + "</details>" + fragment[last:]
    )


def _line_offsets(text: str) -> list[int]:
    offsets = [0]
    offsets.extend(match.end() for match in re.finditer("\n", text))
    return offsets


class _QuoteFinder(HTMLParser):
    """One pass over a well-formed fragment: where the fold starts and ends, and whether the
    reply has text before it and after it (outside quotes)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        # The open elements: the count of visible texts before each began, its start (line,
        # column), and whether it is a quote.
        self.stack: list[tuple[int, tuple[int, int], bool]] = []
        self.texts = 0  # visible texts so far
        self.quotes = 0  # quotes open
        self.fold: tuple[int, int] | None = None
        self.fold_depth = 0  # how many elements hold the fold's first element
        self.fold_end: tuple[int, int] | None = None  # None: the fragment's end
        self.to_end = False  # folded to the end of its holder whatever follows (Outlook)
        self.own_before = False
        self.own_after = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _VOID:
            return
        mark = _quote_mark(tag, dict(attrs))
        position = self.getpos()
        if mark is not None and self.fold is None:
            # The fold starts at the outermost element that holds this one and no text before
            # it (Apple Mail's blockquote in an empty div; Outlook's header in a wrapper).
            depth = len(self.stack)
            while depth > 0 and self.stack[depth - 1][0] == self.texts:
                depth -= 1
            self.fold = position if depth == len(self.stack) else self.stack[depth][1]
            self.fold_depth = depth
            self.to_end = mark == "outlook"
        self.stack.append((self.texts, position, mark is not None))
        self.quotes += mark is not None

    def handle_endtag(self, tag: str) -> None:
        if tag in _VOID or not self.stack:
            return
        _, _, quote = self.stack.pop()
        self.quotes -= quote
        if self.fold is not None and self.fold_end is None and len(self.stack) < self.fold_depth:
            self.fold_end = self.getpos()  # the holder of the fold closes here

    def handle_data(self, data: str) -> None:
        if not data.strip():
            return
        self.texts += 1
        if self.fold is None:
            self.own_before = True
        elif self.fold_end is None and not self.quotes and not self.to_end:
            self.own_after = True


def _quote_mark(tag: str, attrs: dict[str, str | None]) -> str | None:
    """ "outlook" or "quote" when the element starts the message a reply answers, else None."""
    if tag == "blockquote" and attrs.get("type") == "cite":
        return "quote"
    if tag != "div":
        return None
    if (attrs.get("class") or "") in ("gmail_quote", "moz-cite-prefix"):
        return "quote"
    if attrs.get("id") == "divRplyFwdMsg" or _OUTLOOK_RULE.search(attrs.get("style") or ""):
        return "outlook"
    return None

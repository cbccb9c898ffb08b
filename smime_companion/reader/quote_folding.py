"""A plain text body as the message page shows it: the lines it quotes set apart by depth (a bar
per level instead of the ``>`` marks), and the message it answers, when it ends the text, folded
away behind "Show quoted text", as webmail does. A reply to a long thread is then its few new
lines, not a screen of older mail.

The message answered is the quoted run that ends the text together with the line introducing it
("On Monday, Alice wrote:"), or everything from a separator Outlook writes above it in plain text
("-----Original Message-----" or a line of underscores, then "From: ..."). Only text that has
lines of its own before that is folded: a message that is all quote shows it all.

Pure: text in, blocks out. Each line is looked at once with patterns anchored at its start.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = ["FoldedText", "TextBlock", "fold_quotes"]

# The quote marks that start a line: ">" each, a space after any of them ("> > x", ">> x").
_MARKS = re.compile(r"(?:> ?)+")
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
    lines = [_quoted_line(line) for line in text.split("\n")]
    start = _answered_from(lines)
    return FoldedText(_blocks(lines[:start]), _blocks(lines[start:]))


def _quoted_line(line: str) -> tuple[int, str]:
    """A line's quote depth and its text without the quote marks."""
    marks = _MARKS.match(line)
    if marks is None:
        return 0, line
    return marks.group().count(">"), line[marks.end() :]


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

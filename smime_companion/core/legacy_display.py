"""RFC 9788's Legacy Display Element: the protected Subject written at the top of the text.

An encrypted message with header protection shows ``Subject: [...]`` outside. A reader that
knows RFC 9788 shows the real Subject from inside the encryption; Outlook, Apple Mail and
Thunderbird (for S/MIME) do not, and would show no subject at all. So the sender also writes
the obscured fields as lines at the top of each main body part (``Subject: ...`` and a blank
line; in HTML a ``div`` of class ``header-protection-legacy-display``) and marks that part with
the Content-Type parameter ``hp-legacy-display="1"`` (RFC 9788 section 4.5.3).

A reader that shows the protected headers hides those lines again (section 4.5.3.3): only in a
part so marked, inside content that carries protected headers (``hp``), and only when they
really are header-field lines, so a sender cannot make the first paragraph of a message vanish
by marking it.

Pure: text in, text out.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator, Sequence

PARAMETER = "hp-legacy-display"
HTML_CLASS = "header-protection-legacy-display"

# Before RFC 9788, the protected-headers draft it replaced (draft-autocrypt-lamps-protected-
# headers, "Legacy Display", 2019; written by Enigmail and by the samples of the early
# draft-ietf-lamps-header-protection) put the obscured fields in a part of their own: the
# first part of a multipart/mixed marked ``protected-headers="v1"``, of one of these types and
# marked the same way, whose text is only those header lines. Readers that show the protected
# headers leave that part out; ``core.text`` does, when ``is_element_only`` holds.
LEGACY_PART_TYPES = ("text/rfc822-headers", "text/plain")

# The fields a reader shows that the baseline policy can obscure (RFC 9788 "user-facing").
USER_FACING = ("subject", "from", "to", "cc", "date", "reply-to", "followup-to")

# A legacy display element is a handful of header lines; a longer head is the message's text.
_MAX_LINES = 20
_FIELD_LINE = re.compile(r"[!-9;-~]+:[^\r\n]*")
# Tags are found by their start and then the next ">" (str.find): a pattern that scans for the
# ">" from every "<div" would cost the square of a page of unclosed tags.
_DIV_START = re.compile(r"<(/?)div\b", re.I)
_BODY_START = re.compile(r"<body\b", re.I)
_CLASS_VALUE = re.compile(r"""\bclass\s*=\s*("[^"]*"|'[^']*'|[^\s>]+)""", re.I)


def element_lines(
    protected: Sequence[tuple[str, str]], outer: Sequence[tuple[str, str]]
) -> list[str]:
    """The lines of the element: each user-facing field whose value inside differs from the
    value shown outside (under the baseline policy, only the Subject), as ``Name: value``."""
    shown = {(name.lower(), value) for name, value in outer}
    return [
        f"{name}: {value}"
        for name, value in protected
        if name.lower() in USER_FACING and (name.lower(), value) not in shown
    ]


def text_with_element(text: str, lines: Sequence[str], newline: str = "\r\n") -> str:
    """``text`` with the element's lines and a blank line in front of it."""
    return "".join(line + newline for line in lines) + newline + text


def html_with_element(document: str, lines: Sequence[str]) -> str:
    """``document`` with the element as the first thing in its body. Characters outside ASCII
    are written as character references, so the part's charset need not change."""
    shown = "\n".join(html.escape(line, quote=False) for line in lines)
    shown = shown.encode("ascii", "xmlcharrefreplace").decode("ascii")
    element = f'<div class="{HTML_CLASS}"><pre>{shown}</pre></div>'
    body = _BODY_START.search(document)
    at = document.find(">", body.end()) + 1 if body else 0
    return document[:at] + element + document[at:]


def text_without_element(text: str) -> str:
    """``text`` without the element at its top: the lines up to and including the first blank
    line, when there is at least one and every one is a header field (or a field's folded
    continuation). Anything else is left as it is."""
    position = fields = 0
    while fields <= _MAX_LINES:
        end = text.find("\n", position)
        if end < 0:
            return text  # no blank line: the whole text would go
        line = text[position:end].removesuffix("\r")
        position = end + 1
        if not line:
            return text[position:] if fields else text
        if not (_FIELD_LINE.fullmatch(line) or (fields and line[0] in " \t")):
            return text
        fields += 1
    return text


def is_element_only(text: str) -> bool:
    """True when ``text`` is nothing but a legacy display's header-field lines (and their
    folded continuations), blank lines after them at most: the test a Legacy Display *part*
    (:data:`LEGACY_PART_TYPES`) must pass before a reader may leave it out."""
    # Only the first _MAX_LINES lines are split off: a long text is no legacy display.
    head, *rest = text.split("\n", _MAX_LINES)
    lines = [head, *rest[: _MAX_LINES - 1]]
    if len(rest) == _MAX_LINES and rest[-1].strip():
        return False
    lines = [line.removesuffix("\r") for line in lines]
    while lines and not lines[-1]:
        lines.pop()
    if not lines or not _FIELD_LINE.fullmatch(lines[0]):
        return False
    return all(_FIELD_LINE.fullmatch(line) or line[:1] in (" ", "\t") for line in lines)


def html_without_element(document: str) -> str:
    """``document`` without its first element of class ``header-protection-legacy-display``
    (through the matching ``</div>``); left whole when that element does not end."""
    opening = None
    depth = 0
    for start, end, closing in _div_tags(document):
        if opening is None:
            if not closing and _is_element(document[start:end]):
                opening, depth = start, 1
            continue
        depth += -1 if closing else 1
        if depth == 0:
            return document[:opening] + document[end:]
    return document


def _div_tags(document: str) -> Iterator[tuple[int, int, bool]]:
    """(start, end, is a closing tag) of each ``<div ...>`` and ``</div>`` in ``document``."""
    position = 0
    while (found := _DIV_START.search(document, position)) is not None:
        end = document.find(">", found.end())
        if end < 0:
            return
        yield found.start(), end + 1, bool(found.group(1))
        position = end + 1


def _is_element(tag: str) -> bool:
    return any(
        HTML_CLASS in value.strip("\"'").lower().split() for value in _CLASS_VALUE.findall(tag)
    )


__all__ = [
    "HTML_CLASS",
    "LEGACY_PART_TYPES",
    "PARAMETER",
    "USER_FACING",
    "element_lines",
    "html_with_element",
    "html_without_element",
    "is_element_only",
    "text_with_element",
    "text_without_element",
]

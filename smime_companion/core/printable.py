"""Text from a message made harmless where we write it: on a terminal, and in a header field.

A decoded header value is the sender's text: RFC 2047 lets it hold any character, including
CR, LF, NUL, ESC and the Unicode line and bidirectional controls. Written raw into a header it
starts new fields or ends the header section (EFAIL by export); printed raw on a terminal it
moves the cursor, rewrites earlier lines or changes the terminal's state. Every place that
writes such text goes through one of the two functions here.

Pure: strings in, strings out.
"""

from __future__ import annotations

import re

# Bidirectional controls: they reorder what follows on the line (the "Trojan Source" trick),
# so a Subject could make the verdict printed after it read backwards.
_BIDI_CONTROLS = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)
_NAMED_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\"}


def _escape(char: str) -> str:
    named = _NAMED_ESCAPES.get(char)
    if named is not None:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


_UNSAFE_OR_BACKSLASH = re.compile(
    "[\\\\\x00-\x1f\x7f-\x9f\u2028\u2029" + "".join(sorted(_BIDI_CONTROLS)) + "]"
)
# The unsafe characters: Unicode's Cc (C0 and C1 controls and DEL: ESC, CSI U+009B, NUL...),
# Zl and Zp (U+2028, U+2029, which some terminals and every JavaScript engine treat as line
# breaks) and the bidirectional controls; for a search or a substitution in one pass
# (tests/test_printable.py checks the set against Unicode's categories).
UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029" + "".join(sorted(_BIDI_CONTROLS)) + "]")
_UNSAFE_KEEP_LINES = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029" + "".join(sorted(_BIDI_CONTROLS)) + "]"
)


def for_terminal(text: str) -> str:
    """``text`` on one line, safe to print: every control character (C0, C1, DEL), line break
    (CR, LF, U+2028, U+2029) and bidirectional control is shown escaped (``\\n``, ``\\x1b``,
    ``\\u202e``), and a backslash is doubled so an escape cannot be faked. Never raises."""
    return _UNSAFE_OR_BACKSLASH.sub(lambda m: _escape(m.group()), text)


def for_terminal_lines(text: str) -> str:
    """Like :func:`for_terminal` for a multi-line text (a message body): LF and TAB are kept,
    CR and every other control character is shown escaped. Backslashes are left as they are
    (a body is prose, not one field that an escape could forge)."""
    return _UNSAFE_KEEP_LINES.sub(lambda m: _escape(m.group()), text.replace("\r\n", "\n"))


_SPACES = re.compile(r"[ \t]+")


def for_header(text: str) -> str:
    """``text`` fit to be one header field value: every control character, line break and
    bidirectional control becomes a space, runs of spaces become one, and the ends are
    trimmed. The result can neither start a new field nor end the header section."""
    return _SPACES.sub(" ", UNSAFE.sub(" ", text)).strip()


__all__ = ["UNSAFE", "for_header", "for_terminal", "for_terminal_lines"]

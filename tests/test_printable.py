"""core.printable: the one helper every terminal line and every written header goes through."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smime_companion.core.printable import UNSAFE, for_header, for_terminal, for_terminal_lines


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("plain Grüße", "plain Grüße"),
        ("a\r\nb", "a\\r\\nb"),
        ("\x1b]0;pwned\x07\x1b[2J", "\\x1b]0;pwned\\x07\\x1b[2J"),
        ("csi \x9b31m", "csi \\x9b31m"),
        ("nul\x00del\x7f", "nul\\x00del\\x7f"),
        ("rtl \u202egnp.exe", "rtl \\u202egnp.exe"),
        ("line\u2028sep", "line\\u2028sep"),
        ("a fake \\n escape", "a fake \\\\n escape"),
    ],
)
def test_terminal_text_shows_every_control_escaped(text: str, shown: str) -> None:
    assert for_terminal(text) == shown


def _unsafe(c: str) -> bool:
    return unicodedata.category(c) in ("Cc", "Zl", "Zp") or c in "\u202e\u2066\u200f"


@given(st.text())
def test_terminal_text_never_holds_a_control_character(text: str) -> None:
    assert not any(_unsafe(c) for c in for_terminal(text))


@given(st.text())
def test_a_body_keeps_its_lines_and_loses_every_other_control(text: str) -> None:
    shown = for_terminal_lines(text)
    assert not any(_unsafe(c) and c not in "\n\t" for c in shown)
    assert shown.count("\n") == text.replace("\r\n", "\n").count("\n")


@given(st.text())
def test_a_header_value_is_one_line_without_controls(text: str) -> None:
    value = for_header(text)
    assert not any(_unsafe(c) for c in value)
    assert value == value.strip() and "  " not in value


def test_the_unsafe_characters_are_the_controls_separators_and_bidi_controls() -> None:
    # UNSAFE is what for_header replaces and the list preview drops: every character of
    # Unicode's categories Cc, Zl and Zp, and the bidirectional controls, and nothing else.
    bidi = set("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
    for code in range(0x20000):
        char = chr(code)
        if 0xD800 <= code <= 0xDFFF:
            continue
        unsafe = unicodedata.category(char) in ("Cc", "Zl", "Zp") or char in bidi
        assert bool(UNSAFE.fullmatch(char)) == unsafe, hex(code)
        if unsafe:
            assert for_header(f"a{char}b") == "a b", hex(code)

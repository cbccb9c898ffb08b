"""The one text normalisation of the search index: applied to everything indexed and to every
word searched for, so that both sides always agree.

:func:`search_form` makes text comparable across spellings and scripts:

- NFKC (full-width ``ＡＢＣ`` and ligatures ``ﬁ`` become ``ABC`` and ``fi``), then casefold
  (``Straße`` -> ``strasse``, ``ΣΑΣ`` -> ``σασ``);
- diacritics removed from Latin and Greek letters (``é`` -> ``e``, ``ά`` -> ``α``), but not the
  marks that are letters' own in other scripts (Thai vowels, Devanagari matras, Cyrillic ``й``);
- letters that are no base letter plus a mark, spelled out as their users type them without
  the key: ``ø`` -> ``o``, ``ł`` -> ``l``, ``æ`` -> ``ae``, ``œ`` -> ``oe``, ``đ`` -> ``d``,
  ``þ`` -> ``th``, ...;
- runs of scripts written without spaces (Han, Hiragana, Katakana, Hangul, Thai, Lao, Khmer,
  Myanmar) cut into overlapping pairs of characters, ``日本語の`` -> ``日本 本語 語の``, as Xapian's
  CJK n-gram mode does: a word inside such a run is then found as the phrase of its pairs, and
  the index's own tokenizer (FTS5 ``unicode61``) needs no dictionary of these languages.

Text that is all ASCII only needs lower-casing, which is what most mail is: the cost of the rest
is paid only by text that needs it.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["search_form", "is_unspaced"]

# Letters that do not decompose into a base letter and a mark (NFD leaves them alone), written
# as people type them on a keyboard without them. Applied after casefold (so lower case only).
_LETTERS = str.maketrans(
    {
        "ø": "o",
        "ł": "l",
        "æ": "ae",
        "œ": "oe",
        "đ": "d",
        "ð": "d",
        "þ": "th",
        "ħ": "h",
        "ı": "i",
        "ŀ": "l",
        "ŧ": "t",
        "ĸ": "k",
        "ŋ": "n",
        "ƒ": "f",
        "ɨ": "i",
        "ʉ": "u",
    }
)

# A combining mark (Unicode's general-purpose blocks) after a Latin or Greek letter: an accent.
_ACCENTS = re.compile(
    "(?<=[A-Za-z\u00c0-\u024f\u0370-\u03ff\u1e00-\u1fff])"
    "[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f]+"
)

# Scripts written without spaces between words, with the marks that belong to them.
_UNSPACED = (
    "\u0e00-\u0e7f"  # Thai
    "\u0e80-\u0eff"  # Lao
    "\u1000-\u109f"  # Myanmar
    "\u1780-\u17ff"  # Khmer
    "\u1100-\u11ff"  # Hangul Jamo
    "\u3040-\u309f"  # Hiragana
    "\u30a0-\u30ff"  # Katakana (with the prolonged sound mark)
    "\u3130-\u318f"  # Hangul compatibility Jamo
    "\u31f0-\u31ff"  # Katakana phonetic extensions
    "\u3400-\u4dbf"  # CJK extension A
    "\u4e00-\u9fff"  # CJK unified ideographs
    "\ua960-\ua97f"  # Hangul Jamo extended A
    "\uac00-\ud7ff"  # Hangul syllables and Jamo extended B
    "\uf900-\ufaff"  # CJK compatibility ideographs
    "\U00020000-\U0003134f"  # CJK extensions B to G
)
_UNSPACED_RUN = re.compile(f"[{_UNSPACED}]+")


def _clusters(run: str) -> list[str]:
    """The characters of ``run`` with their marks (Thai ``ที่`` is one letter and two marks)."""
    clusters: list[str] = []
    for char in run:
        if clusters and unicodedata.category(char) in ("Mn", "Mc"):
            clusters[-1] += char
        else:
            clusters.append(char)
    return clusters


def _pairs(match: re.Match[str]) -> str:
    run = match.group(0)
    letters = _clusters(run) if not run.isalpha() else list(run)
    if len(letters) == 1:
        return f" {run} "
    return " " + " ".join(a + b for a, b in zip(letters, letters[1:], strict=False)) + " "


# Where the work is: each stretch of non-ASCII text, with the ASCII letter before it (the base
# of an accent written as a combining mark).
_NON_ASCII = re.compile(r"[A-Za-z]?[^\x00-\x7f]+")


def _fold(match: re.Match[str]) -> str:
    text = unicodedata.normalize("NFKC", match.group(0)).casefold().translate(_LETTERS)
    text = unicodedata.normalize("NFC", _ACCENTS.sub("", unicodedata.normalize("NFD", text)))
    return _UNSPACED_RUN.sub(_pairs, text)


def search_form(text: str) -> str:
    """``text`` as the search index stores it and as a search term is looked up (see the module
    docstring). Words stay in order, so a phrase of the input is a phrase of the output."""
    if text.isascii():
        return text.lower()
    # Only the non-ASCII stretches need the Unicode work: most of a message rarely does.
    return _NON_ASCII.sub(_fold, text).lower()


def is_unspaced(text: str) -> bool:
    """True when ``text`` is one letter (with its marks) of a script written without spaces: it is
    found only as the start of a pair (the search asks for the pairs that begin with it)."""
    return _UNSPACED_RUN.fullmatch(text) is not None and len(_clusters(text)) == 1

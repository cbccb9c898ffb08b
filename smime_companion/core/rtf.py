"""The body of an Outlook TNEF attachment (winmail.dat): compressed RTF -> RTF -> HTML or text.

Outlook sends rich mail to other mail systems as a TNEF attachment whose body is often only the
MAPI property PR_RTF_COMPRESSED. Three steps make it readable:

- ``decompress``: [MS-OXRTFCP] (Rich Text Format (RTF) Compression Algorithm), section 2.1.3.1
  with the grammar of section 2.1.3.1.1: a 16-byte header, then either the RTF itself ("MELA")
  or LZ77 runs ("LZFu") against a 4096-byte dictionary that starts with a fixed RTF prefix.
- ``html_from_rtf``: [MS-OXRTFEX] (Rich Text Format (RTF) Extensions Algorithm). Outlook wraps
  an HTML mail in RTF: ``\\fromhtml1`` in the header (recognized as in section 2.2.3.1), the
  markup in ``{\\*\\htmltagN ...}`` groups, the text between them, and RTF-only additions in
  ``\\htmlrtf`` ... ``\\htmlrtf0`` spans; the de-encapsulation the same specification
  describes takes it back out.
- ``text_from_rtf``: the text of any RTF: a ``\\fromtext`` document de-encapsulated the same way,
  a ``\\fromhtml1`` one through its HTML, native RTF by a small reader that
  keeps the text and skips destinations (font tables, pictures, field instructions, ...).

All three read hostile bytes in time linear in their length, with bounded memory and no recursion
(groups nested deeper than ``_MAX_DEPTH`` count as one); only ``decompress`` raises, and only
``ValueError`` for a header that is too short or of an unknown type.

Pure: bytes in, values out.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterator
from typing import NamedTuple

from smime_companion.core.charsets import codepage_codec
from smime_companion.core.html_text import html_to_text

# --- MS-OXRTFCP --------------------------------------------------------------------------------

_COMPRESSED = 0x75465A4C  # "LZFu"
_UNCOMPRESSED = 0x414C454D  # "MELA"
_DICTIONARY_SIZE = 4096
# The dictionary's first 207 bytes; the rest starts as zeros. CR LF after \blue0, not the LF CR
# some implementations have: CR LF gives the bytes Debian's tnef writes (tests/test_rtf.py).
_DICTIONARY_START = (
    b"{\\rtf1\\ansi\\mac\\deff0\\deftab720{\\fonttbl;}{\\f0\\fnil \\froman \\fswiss \\fmodern "
    b"\\fscript \\fdecor MS Sans SerifSymbolArialTimes New RomanCourier{\\colortbl\\red0\\green0"
    b"\\blue0\r\n\\par \\pard\\plain\\f0\\fs20\\b\\i\\u\\tab\\tx"
)
assert len(_DICTIONARY_START) == 207


def decompress(data: bytes, limit: int) -> bytes:
    """The RTF in a PR_RTF_COMPRESSED value: at most ``limit`` bytes, and at most the header's
    RAWSIZE. The CRC is not checked; input that ends early ends the output. Raises
    ``ValueError`` for a header shorter than 16 bytes or a COMPTYPE other than LZFu or MELA."""
    if len(data) < 16:
        raise ValueError(f"compressed RTF: {len(data)} bytes, shorter than its 16-byte header")
    _compsize, rawsize, comptype, _crc = struct.unpack_from("<4I", data)
    cap = max(0, min(limit, rawsize))
    if comptype == _UNCOMPRESSED:
        return data[16 : 16 + cap]
    if comptype != _COMPRESSED:
        raise ValueError(f"compressed RTF: unknown COMPTYPE 0x{comptype:08X}")
    return _lzfu(data, cap)


def _lzfu(data: bytes, cap: int) -> bytes:
    """The LZFu runs of ``data[16:]``, up to ``cap`` bytes of output.

    The output is kept after the dictionary's initial contents, arranged so that the byte at
    ``out[i]`` sits at dictionary position ``(i + 207) % 4096``: the zeros first, then the
    207-byte prefix, so the first byte written lands at position 207. A dictionary position's
    current byte is then the latest byte of ``out`` at that position, ``d`` bytes back from the
    end, and a reference is a slice of ``out`` (repeated when it overlaps what it writes)."""
    start = _DICTIONARY_SIZE
    out = bytearray(_DICTIONARY_SIZE - len(_DICTIONARY_START)) + _DICTIONARY_START
    end = start + cap
    position, size = 16, len(data)
    while position < size and len(out) < end:
        control = data[position]
        position += 1
        for bit in range(8):
            if position >= size or len(out) >= end:
                break
            if not control & (1 << bit):
                out.append(data[position])
                position += 1
                continue
            if position + 2 > size:
                position = size
                break
            word = data[position] << 8 | data[position + 1]
            position += 2
            write = (len(out) + len(_DICTIONARY_START)) % _DICTIONARY_SIZE
            back = (write - (word >> 4)) % _DICTIONARY_SIZE
            if back == 0:  # a reference to the write position: the end of the stream
                return bytes(out[start:end])
            length = (word & 0xF) + 2
            source = len(out) - back
            if back >= length:
                out += out[source : source + length]
            else:  # the copy reads bytes it writes itself: the last ``back`` bytes, repeated
                out += (out[source:] * (length // back + 1))[:length]
    return bytes(out[start:end])


# --- the tokenizer -----------------------------------------------------------------------------

_OPEN, _CLOSE, _WORD, _SYMBOL, _HEX, _TEXT, _BINARY = range(7)


class _Token(NamedTuple):
    kind: int
    word: str = ""  # a control word's name, a control symbol's character
    param: int | None = None  # a control word's parameter
    data: bytes = b""  # text, a hex escape's byte, binary data


_TOKEN = re.compile(
    rb"\\(?:([A-Za-z]+)(-?[0-9]+)? ?|'([0-9A-Fa-f]{2})|(.))"  # word, hex escape, symbol
    rb"|([{}])|([^\\{}\r\n]+)|[\r\n]+|\\",  # group, text, line ends (not text), a last "\"
    re.DOTALL,
)
_INT32 = 2**31


def _tokens(rtf: bytes) -> Iterator[_Token]:
    """The tokens of ``rtf``, in order. Line ends are dropped (they are no text in RTF), the
    space that ends a control word is part of it, and ``\\binN`` is followed by a binary token
    holding its N bytes."""
    start: int | None = 0
    while start is not None:
        resume = None
        for match in _TOKEN.finditer(rtf, start):
            name, digits, hex_digits, symbol, brace, text = match.groups()
            if text is not None:
                yield _Token(_TEXT, data=text)
            elif name is not None:
                param = None if digits is None else _parameter(digits)
                yield _Token(_WORD, name.decode("ascii"), param)
                if name == b"bin" and param is not None and param > 0:
                    resume = match.end() + param
                    yield _Token(_BINARY, data=rtf[match.end() : resume])
                    break  # the tokens go on after the binary data
            elif hex_digits is not None:
                yield _Token(_HEX, data=bytes.fromhex(hex_digits.decode("ascii")))
            elif symbol is not None:
                yield _Token(_SYMBOL, symbol.decode("latin-1"))
            elif brace is not None:
                yield _Token(_OPEN if brace == b"{" else _CLOSE)
        start = resume


def _parameter(digits: bytes) -> int:
    """A control word's parameter, held to a signed 32-bit value (a longer one costs no time)."""
    significant = digits.lstrip(b"-0")
    value = int(significant or b"0") if len(significant) <= 10 else _INT32
    return -min(value, _INT32) if digits.startswith(b"-") else min(value, _INT32 - 1)


# --- MS-OXRTFEX: recognizing encapsulation -----------------------------------------------------


def _encapsulation(rtf: bytes) -> str | None:
    """What the document encapsulates (MS-OXRTFEX): "html" when its header (its outer group
    before the first text) holds ``\\fromhtml1``, "text" when it holds ``\\fromtext``, else
    None."""
    depth = 0
    for token in _tokens(rtf):
        if token.kind == _OPEN:
            depth += 1
        elif token.kind == _CLOSE:
            depth -= 1
            if depth <= 0:
                return None
        elif depth != 1:
            continue
        elif token.kind == _WORD:
            if token.word == "fromhtml" and token.param == 1:
                return "html"
            if token.word == "fromtext":
                return "text"
            if token.word == "u":
                return None
        elif token.kind == _HEX or (token.kind == _TEXT and token.data.strip()):
            return None
    return None


# --- reading --------------------------------------------------------------------------------

_MAX_DEPTH = 1000
# Groups whose text is not the document's: they hold tables, pictures, fields' instructions,
# headers, footers and footnotes, bookmarks, metadata. A ``{\*...}`` group is skipped as well.
_DESTINATIONS = frozenset(
    "fonttbl colortbl stylesheet info pict header headerl headerr headerf footer footerl footerr "
    "footerf footnote annotation fldinst listtable listoverridetable revtbl rsidtbl generator "
    "filetbl themedata colorschememapping latentstyles datastore xmlnstbl objdata nonshppict "
    "shppict bkmkstart bkmkend mhtmltag xe tc".split()
)
_CHARACTERS = {
    "emdash": "\u2014",
    "endash": "\u2013",
    "bullet": "\u2022",
    "lquote": "\u2018",
    "rquote": "\u2019",
    "ldblquote": "\u201c",
    "rdblquote": "\u201d",
}
# What a control word stands for in a de-encapsulated document (MS-OXRTFEX: CRLF line ends) and
# in the text of native RTF.
_ENCAPSULATED_WORDS = _CHARACTERS | {"par": "\r\n", "line": "\r\n", "tab": "\t"}
_NATIVE_WORDS = _CHARACTERS | dict.fromkeys(("par", "line", "row", "page", "sect"), "\n")
_NATIVE_WORDS |= {"tab": "\t", "cell": "\t"}
_FONT_WORDS = frozenset(("f", "fcharset", "cpg", "ansicpg", "deff", "plain"))
_SYMBOLS = {"{": "{", "}": "}", "\\": "\\", "~": "\u00a0", "_": "-"}
# The Windows code page of a font's \fcharsetN (RTF specification 1.9.1, the \fcharset table):
# a font's \'hh bytes are in it, whatever \ansicpg says (Cyrillic text in a "Arial Cyr" font of
# a western document). 1 (default), 2 (Symbol) and the charsets whose code page Python lacks
# are left out: such a font's bytes are read in the document's code page.
_FONT_CHARSETS = {
    0: 1252, 77: 10000, 84: 10004, 85: 10006, 86: 10081, 88: 10029, 89: 10007, 128: 932,
    129: 949, 130: 1361, 134: 936, 136: 950, 161: 1253, 162: 1254, 163: 1258, 177: 1255,
    178: 1256, 186: 1257, 204: 1251, 222: 874, 238: 1250, 254: 437, 255: 850,
}  # fmt: skip


class _Output:
    """Text gathered from characters and from bytes in the document's code page; consecutive
    bytes are decoded together, so a double-byte character split over two ``\\'hh`` is one."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.pending = bytearray()
        self.codec = "cp1252"

    def add_bytes(self, data: bytes) -> None:
        self.pending += data

    def add_text(self, text: str) -> None:
        self._flush()
        self.parts.append(text)

    def set_codec(self, codec: str) -> None:
        if codec != self.codec:
            self._flush()
            self.codec = codec

    def text(self) -> str:
        self._flush()
        # \uN gives UTF-16 code units: pairs become one character, a lone one U+FFFD.
        utf16 = "".join(self.parts).encode("utf-16-le", "surrogatepass")
        return utf16.decode("utf-16-le", "replace")

    def _flush(self) -> None:
        if self.pending:
            self.parts.append(self.pending.decode(self.codec, "replace"))
            self.pending.clear()


class _Reader:
    """Walks the tokens with the group state on an explicit stack. ``encapsulated`` reads as
    MS-OXRTFEX de-encapsulation (htmltag groups kept, ``\\htmlrtf`` spans dropped); otherwise
    as native RTF."""

    def __init__(self, encapsulated: bool) -> None:
        self.encapsulated = encapsulated
        self.words = _ENCAPSULATED_WORDS if encapsulated else _NATIVE_WORDS
        self.out = _Output()
        self.stack: list[tuple[bool, bool, bool, int, bool, int | None]] = []
        self.too_deep = 0  # groups opened past _MAX_DEPTH, read as part of their parent
        self.skip = False  # in a destination whose text is not the document's
        self.htmlrtf = False  # in an \htmlrtf span
        self.htmltag = False  # in an htmltag group
        self.uc = 1  # the fallback characters that follow a \uN
        self.fallback = 0  # fallback characters still to drop
        # Fonts: the code page of each font the font table gives one (\fcharset, \cpg); the
        # table's font being defined; the document's code page (\ansicpg) and default font
        # (\deff); and, kept per group like the state above, whether this is the font table
        # and the font of the text (\f).
        self.font_codecs: dict[int, str] = {}
        self.defining: int | None = None
        self.document_codec = self.out.codec
        self.default_font: int | None = None
        self.fonttbl = False
        self.font: int | None = None

    def read(self, rtf: bytes) -> str:
        starred = False  # the last token was \*: this control word names a destination
        for token in _tokens(rtf):
            kind = token.kind
            if kind == _OPEN:
                self._open()
            elif kind == _CLOSE:
                if self._close():
                    break  # the document's group closed: what follows is padding
            elif self.fallback and kind != _BINARY:
                self._drop_fallback(token)
            elif kind == _WORD:
                self._word(token.word, token.param, starred)
            elif kind == _SYMBOL:
                self._symbol(token.word)
            elif kind == _TEXT or kind == _HEX:
                self._bytes(token.data)
            starred = kind == _SYMBOL and token.word == "*"
        return self.out.text()

    def _open(self) -> None:
        self.fallback = 0
        if len(self.stack) >= _MAX_DEPTH:
            self.too_deep += 1
        else:
            self.stack.append(
                (self.skip, self.htmlrtf, self.htmltag, self.uc, self.fonttbl, self.font)
            )

    def _close(self) -> bool:
        """True when this closes the document's outermost group."""
        self.fallback = 0
        if self.too_deep:
            self.too_deep -= 1
        elif self.stack:
            state = self.stack.pop()
            self.skip, self.htmlrtf, self.htmltag, self.uc, self.fonttbl, self.font = state
            self._use_font_codec()
            return not self.stack
        return False

    def _drop_fallback(self, token: _Token) -> None:
        """Drop one of the characters that stand in for the last \\uN (a text token may hold
        several, and what remains of it is text)."""
        if token.kind != _TEXT:
            self.fallback -= 1
            return
        dropped = min(self.fallback, len(token.data))
        self.fallback -= dropped
        if dropped < len(token.data):
            self._bytes(token.data[dropped:])

    def _word(self, word: str, param: int | None, starred: bool) -> None:
        if self.encapsulated and word == "htmltag":
            self.htmltag, self.htmlrtf = True, False
        elif starred or word in _DESTINATIONS:
            self.skip = True
            self.fonttbl = self.fonttbl or word == "fonttbl"
        elif word in _FONT_WORDS:
            self._font_word(word, param)
        elif word == "htmlrtf":
            self.htmlrtf = param != 0
        elif word == "uc":
            self.uc = max(0, param if param is not None else 1)
        elif word == "u" and param is not None:
            if self._visible():
                self.out.add_text(_utf16_unit(param))
            self.fallback = self.uc
        elif word in self.words and self._visible():
            self.out.add_text(self.words[word])

    def _font_word(self, word: str, param: int | None) -> None:
        """The control words that decide the code page of the text's ``\\'hh`` bytes."""
        if self.fonttbl:
            if word == "f":
                self.defining = param
            elif self.defining is not None and word in ("fcharset", "cpg") and param is not None:
                codepage = _FONT_CHARSETS.get(param) if word == "fcharset" else param
                if codepage is not None:
                    self.font_codecs[self.defining] = codepage_codec(codepage)
            return
        if word == "ansicpg" and not self.stack[1:]:
            self.document_codec = codepage_codec(param)
        elif word == "deff" and not self.stack[1:]:
            self.default_font = param
        elif word == "f":
            self.font = param
        elif word == "plain":  # the default character formatting: the default font
            self.font = None
        self._use_font_codec()

    def _use_font_codec(self) -> None:
        font = self.default_font if self.font is None else self.font
        codec = self.font_codecs.get(font) if font is not None else None
        self.out.set_codec(codec or self.document_codec)

    def _symbol(self, symbol: str) -> None:
        if symbol in "\r\n" and self._visible():  # a backslash before a line end: \par
            self.out.add_text(self.words["par"])
        elif symbol in _SYMBOLS and self._visible():
            self.out.add_text(_SYMBOLS[symbol])

    def _bytes(self, data: bytes) -> None:
        if self._visible():
            self.out.add_bytes(data)

    def _visible(self) -> bool:
        if not self.stack or self.skip:
            return False
        return self.htmltag or not (self.encapsulated and self.htmlrtf)


def _utf16_unit(param: int) -> str:
    """The character of ``\\uN``: N is a signed 16-bit UTF-16 code unit."""
    unit = param + 65536 if param < 0 else param
    return chr(unit) if 0 <= unit <= 0xFFFF else "\ufffd"


# --- the public readers ------------------------------------------------------------------------


def html_from_rtf(rtf: bytes) -> str | None:
    """The HTML that a ``\\fromhtml1`` RTF document encapsulates (MS-OXRTFEX), or None when the
    document encapsulates none. Never raises."""
    if _encapsulation(rtf) != "html":
        return None
    return _Reader(encapsulated=True).read(rtf)


def text_from_rtf(rtf: bytes) -> str:
    """The plain text of an RTF document, with "\\n" line ends and at most one newline after the
    last text: the encapsulated text of a ``\\fromtext`` document, the text of the HTML of a
    ``\\fromhtml1`` one, else the text of the RTF itself. Never raises."""
    kind = _encapsulation(rtf)
    if kind == "html":
        text = html_to_text(_Reader(encapsulated=True).read(rtf))
    else:
        text = _Reader(encapsulated=kind == "text").read(rtf)
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    trimmed = text.rstrip()
    return trimmed + "\n" if trimmed and "\n" in text[len(trimmed) :] else trimmed

"""core.rtf: the body of an Outlook TNEF attachment, from compressed RTF to HTML or text.

- ``decompress`` (MS-OXRTFCP) gives exactly the RTF that Debian's ``tnef`` program writes for the
  same TNEF files (real Outlook samples from tnefparse, in tests/vectors/tnef/), and never more
  than its limit or the header's RAWSIZE.
- ``html_from_rtf`` (MS-OXRTFEX) gives back the HTML a ``\\fromhtml1`` document encapsulates:
  ``htmltag`` groups and the text between them, without the ``\\htmlrtf`` spans.
- ``text_from_rtf`` reads any RTF: encapsulated text, the text of encapsulated HTML, or the text
  of native RTF without its destinations (font tables, pictures, field instructions, ...).
- Hostile input costs time linear in its length and never raises (but a bad header does, in
  ``decompress``).
"""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from smime_companion.core.rtf import decompress, html_from_rtf, text_from_rtf

VECTORS = Path(__file__).parent / "vectors" / "tnef"
TNEF = shutil.which("tnef")
needs_tnef = pytest.mark.skipif(
    TNEF is None, reason="the tnef program (Debian package tnef), the oracle, is not installed"
)
# The samples whose message has a PR_RTF_COMPRESSED body, and what their RTF is.
SAMPLES = {
    "rtf": "native RTF",
    "umlaut": "\\fromhtml1, 5,190 bytes: the dictionary wraps",
    "long-filename": "\\fromtext",
    "triples": "native RTF in code page 1251",
    "data-before-name": "native RTF with attachment placeholders",
}
LZFU, MELA = 0x75465A4C, 0x414C454D


def _compressed_rtf(name: str) -> bytes:
    """A sample's PR_RTF_COMPRESSED value: its tag (type PT_BINARY 0x0102, then id 0x1009, both
    little-endian) is followed by a count of values (1), the value's length and its bytes."""
    data = (VECTORS / f"{name}.tnef").read_bytes()
    at = data.index(b"\x02\x01\x09\x10")
    count, length = struct.unpack_from("<II", data, at + 4)
    assert count == 1
    return data[at + 12 : at + 12 + length]


def _rtf(name: str) -> bytes:
    return decompress(_compressed_rtf(name), 1 << 20)


def _tnef_saves(name: str, directory: Path) -> Path:
    """The directory where ``tnef`` wrote the sample's body (body.rtf, the decompressed RTF)."""
    assert TNEF is not None
    sample = VECTORS / f"{name}.tnef"
    command = [TNEF, "-C", str(directory), "--save-body=body", "--body-pref=all", "-f", str(sample)]
    subprocess.run(command, check=True, capture_output=True, timeout=60)
    return directory


def _lzfu(*tokens: int | tuple[int, int] | None, rawsize: int = 0xFFFFFFFF) -> bytes:
    """A PR_RTF_COMPRESSED value of LZFu runs: an int is a literal byte, (offset, length) a
    reference into the dictionary (a negative offset counts back from the write position), None
    the end (a reference to the write position)."""
    body, write = bytearray(), 207
    for start in range(0, len(tokens), 8):
        run, control = bytearray(), 0
        for bit, token in enumerate(tokens[start : start + 8]):
            if isinstance(token, int):
                run.append(token)
                write += 1
                continue
            control |= 1 << bit
            offset, length = (write, 2) if token is None else token
            offset = (write + offset if offset < 0 else offset) % 4096
            run += struct.pack(">H", offset << 4 | (length - 2))
            write += length
        body += bytes((control,)) + run
    return struct.pack("<4I", len(body) + 12, rawsize, LZFU, 0) + bytes(body)


# --- decompress: the oracle --------------------------------------------------------------------


@needs_tnef
@pytest.mark.parametrize("name", SAMPLES)
def test_decompress_gives_the_rtf_tnef_writes(name: str, tmp_path: Path) -> None:
    # The dictionary's prefix ends its \blue0 with CR LF: LF CR gives other bytes for all five.
    expected = (_tnef_saves(name, tmp_path) / "body.rtf").read_bytes()
    assert decompress(_compressed_rtf(name), 1 << 20) == expected


@needs_tnef
def test_the_text_of_native_rtf_is_the_messages_own_plain_text(tmp_path: Path) -> None:
    # triples.tnef carries PR_BODY as well: tnef writes it as body.txt (CR LF, a NUL at the end).
    own = (_tnef_saves("triples", tmp_path) / "body.txt").read_bytes()
    assert own.rstrip(b"\0").decode("ascii").replace("\r\n", "\n") == text_from_rtf(_rtf("triples"))


# --- decompress: the rules ---------------------------------------------------------------------


def test_references_copy_from_the_dictionary_and_may_overlap_what_they_write() -> None:
    # Offset 0 holds the dictionary's prefix "{\rtf1\ansi\mac..."; a reference to the byte just
    # written repeats it, byte by byte.
    assert decompress(_lzfu((0, 6), None), 100) == b"{\\rtf1"
    assert decompress(_lzfu(ord("a"), (207, 5), ord("b"), None), 100) == b"aaaaaab"


def test_a_reference_to_the_write_position_ends_the_stream() -> None:
    # One "a", then references of 17 bytes to where it was written: the write position comes
    # back to 207 (the circular dictionary) after 3,855 of them, 65,536 bytes in all.
    stream = _lzfu(ord("a"), *[(207, 17)] * 4000)
    assert decompress(stream, 1 << 20) == b"a" * 65536


def test_output_stops_at_the_limit_and_at_rawsize() -> None:
    stream = _lzfu(ord("a"), *[(207, 17)] * 3000)
    assert decompress(stream, 1000) == b"a" * 1000
    assert decompress(_lzfu(ord("a"), *[(207, 17)] * 3000, rawsize=10), 1000) == b"a" * 10
    assert decompress(stream, 0) == b""


def test_an_uncompressed_value_is_its_raw_bytes() -> None:
    raw = b"{\\rtf1 plain}"
    value = struct.pack("<4I", len(raw) + 12, len(raw), MELA, 0) + raw + b"\0\0\0"
    assert decompress(value, 100) == raw
    assert decompress(value, 5) == raw[:5]


def test_the_crc_is_not_checked() -> None:
    value = bytearray(_compressed_rtf("rtf"))
    value[12:16] = b"\0\0\0\0"
    assert decompress(bytes(value), 1 << 20) == _rtf("rtf")


def test_input_that_ends_early_ends_the_output() -> None:
    value = _compressed_rtf("umlaut")
    whole = decompress(value, 1 << 20)
    for end in range(16, len(value), 37):
        assert whole.startswith(decompress(value[:end], 1 << 20))
    assert decompress(value[:16], 1 << 20) == b""


@pytest.mark.parametrize(
    "value,message",
    [
        (b"", "shorter than its 16-byte header"),
        (b"\x20\0\0\0\x10\0\0\0LZF", "shorter than its 16-byte header"),
        (struct.pack("<4I", 12, 4, 0x12345678, 0) + b"abcd", "unknown COMPTYPE 0x12345678"),
    ],
)
def test_a_bad_header_is_a_value_error(value: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message) as raised:
        decompress(value, 100)
    assert "\n" not in str(raised.value)


# --- html_from_rtf -----------------------------------------------------------------------------


def test_the_html_of_an_outlook_html_mail() -> None:
    html = html_from_rtf(_rtf("umlaut"))
    assert html is not None
    assert html.startswith('<html xmlns:v="urn:schemas-microsoft-com:vml" ')
    assert html.endswith("</body></html>")
    assert '<meta name=Generator content="Microsoft Word 14 (filtered medium)">' in html
    # Text between the tags, its \'e4\'f6\'fc in code page 1252; \par in a tag is CR LF.
    assert "<p class=MsoNormal><b>TEST äöü +-*/~<o:p></o:p></b></p>" in html
    assert "<!--\r\n/* Font Definitions */\r\n@font-face\r\n\t{font-family:Calibri;" in html
    # The \htmlrtf spans (the image's RTF stand-in, the \'a0 after &nbsp;) are left out.
    assert '<img width=38 height=25 id="Grafik_x0020_3" src="cid:image003.jpg@' in html
    assert "<o:p>&nbsp;</o:p>" in html
    assert "\\" not in html.replace("v\\:*", "").replace("o\\:*", "").replace("w\\:*", "")


@pytest.mark.parametrize("name", ["rtf", "long-filename", "triples"])
def test_rtf_that_encapsulates_no_html_has_none(name: str) -> None:
    assert html_from_rtf(_rtf(name)) is None


@pytest.mark.parametrize(
    "rtf,html",
    [
        # text outside htmltag groups is HTML too; \htmlrtf ... \htmlrtf0 is not
        (rb"{\rtf1\fromhtml1 {\*\htmltag64 <p>}\htmlrtf {\b \htmlrtf0 Hi\htmlrtf\par}"
         rb"\htmlrtf0 there{\*\htmltag72 </p>}}", "<p>Hithere</p>"),
        # \htmlrtf belongs to its group: the group's end restores it
        (rb"{\rtf1\fromhtml1 a{\htmlrtf hidden}b\htmlrtf {\htmlrtf0 c}hidden}", "abc"),
        # \par, \tab, \line, escaped braces and backslashes, in a tag and between tags
        (rb"{\rtf1\fromhtml1 {\*\htmltag241 <style>p \{x:y\}\par\tab a\\b</style>}1\line 2}",
         "<style>p {x:y}\r\n\ta\\b</style>1\r\n2"),
        # an mhtmltag is the URL form of the htmltag before it: left out
        (rb'{\rtf1\fromhtml1 {\*\htmltag84 <img src="a.png">}'
         rb'{\*\mhtmltag84 <img src="cid:a">}}', '<img src="a.png">'),
        # the header's tables and other destinations are not HTML
        (rb"{\rtf1\ansi\ansicpg1252\fromhtml1 \deff0{\fonttbl{\f0\fswiss Arial;}}"
         rb"{\colortbl\red0\green0\blue0;}{\*\generator Riched20;}{\*\htmltag19 <html>}}",
         "<html>"),
        # \'hh in the document's code page, \uN with its fallback dropped
        (rb"{\rtf1\ansi\ansicpg1251\fromhtml1 {\*\htmltag84 <b>}\'cf\'f0\u1080?\'e2}",
         "<b>Прив"),
        # ... or in its font's (Outlook's HTML mail from a Greek or Russian system)
        (rb"{\rtf1\ansi\ansicpg1252\fromhtml1 \deff0{\fonttbl{\f0\fswiss\fcharset161 Arial;}"
         rb"{\f1\fmodern\fcharset204 Courier New;}}{\*\htmltag19 <p>}\'e3\'e5\'e9\'e1 "
         rb"{\f1 \'cc\'e8\'f0}{\*\htmltag19 </p>}}", "<p>γεια Мир</p>"),
    ],
)  # fmt: skip
def test_de_encapsulation_rules(rtf: bytes, html: str) -> None:
    assert html_from_rtf(rtf) == html


@pytest.mark.parametrize(
    "rtf",
    [
        rb"{\rtf1 Hello \fromhtml1 {\*\htmltag64 <p>}}",  # not in the header: after text
        rb"{\rtf1{\info\fromhtml1}{\*\htmltag64 <p>}}",  # not in the header: in a group
        rb"{\rtf1\fromhtml0 {\*\htmltag64 <p>}}",
        rb"{\rtf1\fromtext Hello}",
        rb"",
    ],
)
def test_html_only_from_fromhtml1_in_the_header(rtf: bytes) -> None:
    assert html_from_rtf(rtf) is None


# --- text_from_rtf -----------------------------------------------------------------------------


def test_the_text_of_native_rtf() -> None:
    text = text_from_rtf(_rtf("rtf"))
    lines = text.split("\n")
    assert "\\hge" in lines  # \\ in RTF: one backslash
    assert lines[lines.index("Greg Allen") - 1 :][:5] == [
        "-- Greg",
        "Greg Allen",
        "Senior Engineer/QADirector Team",
        "Compuware Corporation",
        "gallen@numega.com",
    ]
    assert "aafgag'alga'kgk" in lines  # the space after \b ends the control word
    assert "Arial" not in text  # the font table is no text
    assert text.endswith("978-318-6939 (Fax)\n")


def test_the_text_of_encapsulated_text_and_of_encapsulated_html() -> None:
    text = text_from_rtf(_rtf("long-filename"))
    assert text.startswith("I've attached a temp. license for QARun 4.7.  Do you need")
    assert "\nFrom: Mark Simpson [mailto:msimpson@numega.com]\nSent: Wednesday," in text
    assert "\nMark Simpson" + " " * 49 + "Software Engineer\n" in text
    assert "\r" not in text and text.endswith("msimpson@numega.com\n")
    # The HTML inside: its text (a picture whose alt text is its cid: address adds nothing).
    assert text_from_rtf(_rtf("umlaut")) == "TEST äöü +-*/~"
    assert text_from_rtf(_rtf("triples")) == "Sample description\n"  # \ansicpg1251


@pytest.mark.parametrize(
    "rtf,text",
    [
        # \uN is a UTF-16 code unit (negative: plus 65536), followed by \ucN fallback bytes
        (rb"{\rtf1 a\u8364?b\uc2\u8364\'80\'80c\uc0\u8364 d}", "a€b€c€d"),
        (rb"{\rtf1 {\uc2 \u8364xx}\u8364?x}", "€€x"),
        (rb"{\rtf1 \u-10179?\u-8704?\u-10179?.}", "😀\ufffd."),
        # \'hh in the document's code page: 1252 unless \ansicpg says otherwise
        (rb"{\rtf1 gr\'fc\'df}", "grüß"),
        (rb"{\rtf1\ansi\ansicpg932 \'93\'fa\'96\'7b}", "日本"),  # \'7b: the trail byte "{"
        (rb"{\rtf1\ansi\ansicpg936 \'d6\'d0\'ce\'c4}", "中文"),
        # ... or in the code page of the font's \fcharset (\cpg), which \f chooses for its
        # group, \deff for the document and \plain resets to \deff's (RTF 1.9.1's table)
        (rb"{\rtf1\ansi\ansicpg1252\deff0{\fonttbl{\f0\fswiss\fcharset0 Arial;}"
         rb"{\f1\fswiss\fcharset204 Arial Cyr;}}Gr\'fc\'dfe {\f1 \'cf\'f0\'e8\'e2\'e5\'f2}"
         rb" gr\'fc\'df}",
         "Grüße Привет grüß"),
        (rb"{\rtf1\ansi\deff1{\fonttbl\f0\fcharset0 A;\f1\fcharset161 G;}"
         rb"\'e1\'e2\f0\'e1\plain\'e1}",
         "αβáα"),
        (rb"{\rtf1\ansi{\fonttbl{\f0\fcharset0\cpg1251 X;}{\f1\fcharset238 E;}}\f0\'e0\f1\'b3}",
         "\u0430ł"),  # a Cyrillic a
        # a charset without a code page of its own (Symbol) is read in the document's
        (rb"{\rtf1\ansi\ansicpg1251{\fonttbl{\f0\fcharset2 Symbol;}}\f0\'e0}", "а"),
        # \binN: N bytes of data, whatever they hold
        (b"{\\rtf1 a{\\pict\\bin5 }}{\\{}b}", "ab"),
        # destinations: {\*...}, tables, fields' instructions (not their results), and more
        (rb"{\rtf1 a{\*\unknown hidden {deeper}}b}", "ab"),
        (rb"{\rtf1{\fonttbl{\f0 Arial;}}{\colortbl;\red0;}{\stylesheet{Normal;}}{\info{\title T}}"
         rb"{\header H}{\footer F}{\footnote N}x}", "x"),
        (rb'{\rtf1 See {\field{\*\fldinst HYPERLINK "https://x.example/"}{\fldrslt the page}}.}',
         "See the page."),
        (rb"{\rtf1 Page {\field{\fldinst PAGE}{\fldrslt 3}}}", "Page 3"),
        (rb"{\rtf1 a{\*\bkmkstart b1}b{\*\bkmkend b1}c{\pict\pngblip 89504e47}}", "abc"),
        # escaped braces and backslash; the characters control words stand for
        (rb"{\rtf1 a\{b\}c\\d}", "a{b}c\\d"),
        (rb"{\rtf1 1\emdash 2\endash 3\bullet 4\lquote 5\rquote 6\ldblquote 7\rdblquote 8}",
         "1—2–3•4‘5’6“7”8"),
        (rb"{\rtf1 a\~b\_c\-d}", "a\xa0b-cd"),
        (rb"{\rtf1 a\par b\line c\row d\page e\sect f\tab g\cell h}", "a\nb\nc\nd\ne\nf\tg\th"),
        # line ends in the source are no text, a space after a control word is its end
        (b"{\\rtf1 one\r\ntwo\\b three\\b0  four}", "onetwothree four"),
        # the end: trailing whitespace down to one newline, and nothing after the document
        (rb"{\rtf1 a\par\par \par  }", "a\n"),
        (rb"{\rtf1 a\tab }", "a"),
        (b"{\\rtf1 a}\r\n\0garbage", "a"),
        (b"", ""),
        (b"not RTF at all", ""),
    ],
)  # fmt: skip
def test_native_rtf_rules(rtf: bytes, text: str) -> None:
    assert text_from_rtf(rtf) == text


def test_encapsulated_text_rules() -> None:
    rtf = (
        rb"{\rtf1\ansi\ansicpg1252\fromtext \deff0{\fonttbl{\f0\fmodern Courier New;}}"
        rb"\htmlrtf{\f0\fs20\htmlrtf0 Line one\par\htmlrtf\b\htmlrtf0 Tab\tab gr\'fc\'dfe\par}}"
    )
    assert html_from_rtf(rtf) is None
    assert text_from_rtf(rtf) == "Line one\nTab\tgrüße\n"


# --- hostile input -----------------------------------------------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "rtf",
    [
        b"{" * 100_000 + b"deep" + b"}" * 100_000,
        b"{\\rtf1\\fromhtml1 " + b"{" * 100_000 + b"{\\*\\htmltag0 deep}",
        b"{\\rtf1 " + b"}" * 100_000 + b"{" * 100_000,
        b"{\\rtf1 \\" + b"x" * 1_000_000 + b"-" + b"9" * 1_000_000 + b" a}",
        b"{\\rtf1 \\bin99999999999999999999 " + b"{" * 1_000_000,
        b"{\\rtf1 \\uc2147483647 \\u8364 " + b"\\'80" * 200_000 + b"}",
        b"{\\rtf1 \\u99999999999\\u-99999999999\\ansicpg-1\\'ff\\",
        b"{\\rtf1\\fromhtml1 {\\*\\htmltag" + b"{\\*" * 100_000 + b"\\'",
        b"{\\rtf1 " + bytes(range(256)).replace(b"}", b"") * 4000,
    ],
    ids=lambda rtf: repr(rtf[:24]),
)
def test_hostile_rtf_is_read_in_linear_time_and_never_raises(rtf: bytes) -> None:
    assert isinstance(text_from_rtf(rtf), str)
    html = html_from_rtf(rtf)
    assert html is None or isinstance(html, str)


def test_nesting_past_the_depth_limit_is_read_as_one_group() -> None:
    deep = b"{\\rtf1 a" + b"{" * 5000 + b"b" + b"}" * 5000 + b"c}"
    assert text_from_rtf(deep) == "abc"
    hidden = b"{\\rtf1 a{\\*\\x" + b"{" * 5000 + b"b" + b"}" * 5000 + b"}c}"
    assert text_from_rtf(hidden) == "ac"


@pytest.mark.timeout(60)
def test_hostile_lzfu_is_bounded_by_its_limit() -> None:
    # 17 bytes of input for 136 bytes of output: 1.7 MB, of which the limit allows 50,000
    stream = _lzfu(ord("a"), *[(-1, 17)] * 100_000)
    assert decompress(stream, 50_000) == b"a" * 50_000
    assert decompress(stream, 1 << 30) == b"a" * 1_700_001
    # junk after the header: whatever it decodes to, within the limit, without an exception
    junk = struct.pack("<4I", 12, 0xFFFFFFFF, LZFU, 0) + bytes(range(256)) * 4000
    assert len(decompress(junk, 100_000)) <= 100_000


def test_a_code_page_python_names_otherwise_reads_as_that_code_page() -> None:
    # 28592 is ISO 8859-2 (Python's iso8859-2, not cp28592): \'b3 is "ł", not windows-1252's "³".
    assert text_from_rtf(b"{\\rtf1\\ansi\\ansicpg28592 \\'b3\\'f3d\\'bc}") == "łódź"

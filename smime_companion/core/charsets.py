"""Mail text bytes as text: a body part with its declared charset, a header, an encoded word.

Mail says which charset it is written in, and is often wrong or silent: a body labelled
``iso-8859-1`` holding Windows quotes, raw Latin-1 in a header of 2003, ``charset=unknown-8bit``,
a UTF-8 body labelled ``us-ascii`` or ``iso-8859-1``. A reader that decodes with the label
shows "Gr��e" or "GrÃ¼ÃŸe" and cannot find "Grüße". So, as browsers do (the WHATWG Encoding
Standard's labels: ``iso-8859-1`` and ``us-ascii`` mean windows-1252, ``gb2312`` means GBK...):
UTF-8 when the bytes are UTF-8 beyond ASCII, or mostly (text in another charset almost never
is; a flaw becomes a replacement character), else the declared charset when it decodes the
bytes cleanly, else the declared charset with replacement characters; without a usable label,
ISO-2022-JP when its escapes say so, else windows-1252 unless the words read as Cyrillic, Greek,
Hebrew, Arabic, Japanese, Chinese, Korean or Thai in one of the charsets old mail used for them,
or as Central European, Turkish or Baltic words in windows-1250, ISO 8859-2, windows-1254 or
windows-1257 (:func:`guessed_codec`).
"""

from __future__ import annotations

import codecs
import contextlib
import re
from typing import NamedTuple

# WHATWG Encoding Standard labels whose decoder is a superset of what Python's codec of the same
# name accepts, as mail clients and browsers read them.
_SUPERSETS = {
    "iso8859-1": "cp1252",  # iso-8859-1, latin1, l1
    "iso8859-9": "cp1254",
    "iso8859-11": "cp874",
    "tis-620": "cp874",
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "euc_kr": "cp949",  # euc-kr, ks_c_5601-1987 (Outlook's name for Korean)
    "shift_jis": "cp932",
    "big5": "big5hkscs",
}
# WHATWG labels Python does not know, by the codec Python knows them as (the "x-" ones are also
# tried without their prefix, and "iso8859N" as "iso8859-N"). Java and Japanese systems write
# windows-31j, old Korean mail ks_c_5601-1989 or windows-949.
_LABELS = {
    label: codec
    for codec, labels in {
        "cp874": "windows-874 dos-874",
        "iso8859-6": "csiso88596e csiso88596i iso-8859-6-e iso-8859-6-i",
        "iso8859-7": "sun_eu_greek",
        "iso8859-8": "iso-8859-8-i csiso88598i logical csiso88598e iso-8859-8-e visual",
        "iso8859-15": "csisolatin9",
        "koi8-r": "koi koi8",
        "koi8-u": "koi8-ru",
        "mac-roman": "mac csmacintosh",
        "mac-cyrillic": "x-mac-ukrainian",
        "big5": "cn-big5 x-x-big5",
        "gbk": "gb_2312-80 gb_2312 csgb2312",
        "euc_jp": "cseucpkdfmtjapanese",
        "cp932": "windows-31j",
        "cp949": "windows-949 ks_c_5601-1989 ksc_5601 cseuckr csksc56011987 iso-ir-149",
        "utf-8": "x-unicode20utf8",
        # Outlook and Windows name UTF-16 "unicode" (little-endian, as WHATWG reads the label).
        "utf-16-le": "unicode csunicode iso-10646-ucs-2 ucs-2 unicodefeff",
        "utf-16-be": "unicodefffe",
    }.items()
    for label in labels.split()
}
_ISO8859_WITHOUT_DASH = re.compile(r"iso8859(\d{1,2})")
# Labels that say nothing about 8-bit bytes: UTF-8 is tried, then windows-1252.
_NO_CHARSET = frozenset({"ascii", "utf-8"})
# Python text codecs that are no charset of mail: a sender naming one would have its own rules
# applied to the text (backslash escapes), an exception raised (idna, undefined), or, for
# punycode, decoding that costs the square of the body's length.
_NOT_CHARSETS = frozenset({"idna", "punycode", "unicode-escape", "raw-unicode-escape", "undefined"})
_FALLBACK = "cp1252"  # the charset of western mail written without a label


def decode_mail_text(data: bytes, charset: str | None = None) -> str:
    """``data`` as text, read with ``charset`` (a MIME charset label, or None) as mail readers
    read it (see the module's docstring), without a byte order mark in front (Windows writes
    one before UTF-8 and UTF-16 text; a reply would quote it, an export write it). Never
    raises."""
    text = _decoded(data, charset)
    return text[1:] if text.startswith("\ufeff") else text


def _decoded(data: bytes, charset: str | None) -> str:
    codec = _codec(charset)
    # ASCII is read by its label first (UTF-7, ISO-2022 are 7-bit), and so is UTF-16 or
    # UTF-32 (their bytes are no 8-bit text); anything else is UTF-8 when it reads as UTF-8.
    label_first = codec is not None and (data.isascii() or codec.startswith(_WIDE_CODECS))
    if codec is not None and label_first:
        with contextlib.suppress(UnicodeError):
            return _without_lone_surrogates(data.decode(codec))
    text = _without_charset(data)
    if text is not None:
        return text
    if codec is not None and not label_first:
        with contextlib.suppress(UnicodeError):
            return _without_lone_surrogates(data.decode(codec))
    try:
        return _without_lone_surrogates(data.decode(codec or guessed_codec(data), "replace"))
    except UnicodeError:  # a stateful codec (utf-7, iso-2022) that "replace" does not cover
        return data.decode(_FALLBACK, "replace")


_WIDE_CODECS = ("utf-16", "utf-32", "utf_16", "utf_32")
_UTF8_SAMPLE = 64 * 1024


def _mostly_utf8(data: bytes) -> bool:
    """Whether the start of ``data`` (which is not UTF-8 throughout) reads as UTF-8 with at
    least as many characters beyond ASCII as flaws: UTF-8 with a flaw, not text in an 8-bit
    charset, whose letters beyond ASCII rarely form UTF-8 sequences. (Read by the codec, in
    C: a regular expression over the bytes cost 2 ms per 64 KB of Latin-1.)"""
    text = data[:_UTF8_SAMPLE].decode("utf-8", "replace")
    flaws = text.count("\ufffd")
    beyond_ascii = len(text) - len(text.encode("ascii", "ignore"))
    return beyond_ascii - flaws >= max(flaws, 1)


# An ISO-2022 escape that designates a double-byte set (JIS X 0208, GB 2312, KS C 5601) or
# JIS-Roman: old Japanese mail wrote its headers so, raw, without encoded words.
_ISO2022_ESCAPE = re.compile(rb"\x1b(?:\$[@AB]|\$\([CD]|\(J)")


def decode_header_bytes(
    data: bytes, charset: str | None = None, *, guessed: str | None = None
) -> str:
    """A header field's raw value as text. RFC 6532 says UTF-8; mail from before it wrote
    headers raw in the charset of its own text (a KOI8-R subject above a KOI8-R body, Shift_JIS,
    ISO-2022-JP with its escapes). So: ASCII as it is (ISO-2022 escapes read as such), else
    UTF-8 when the bytes are UTF-8, else ``charset`` (one the message declares for its text,
    as Thunderbird falls back to the body's charset) when it reads them cleanly; else
    windows-1252 when they read as plainly western words there, else the codec ``guessed``
    for the text beneath, else as :func:`guessed_codec` reads them. Never raises."""
    text = _without_charset(data)
    if text is not None:
        return text
    declared = _strictly(data, charset)
    if declared is not None:
        return declared
    sample = data[:_GUESS_SAMPLE]
    as_western = sample.decode(_FALLBACK, "replace")
    western = _western_share(as_western)
    if western is not None and western >= 0.8:  # "Jörg Müller" above a KOI8-R letter
        return data.decode(_latin_codec(sample, as_western), "replace")
    return _strictly(data, guessed) or data.decode(guessed_codec(data), "replace")


def _without_charset(data: bytes) -> str | None:
    """``data`` as text when it needs no charset, whatever a label says: ASCII (Japanese mail
    before MIME, and after it without a label: ISO-2022-JP is 7-bit and its escapes say what
    it is, as Thunderbird reads it), UTF-8, or UTF-8 with a flaw (:func:`_mostly_utf8`: a
    character cut short, a stray byte, read as a replacement character); else None. Scripts
    and web forms send UTF-8 under ``charset=iso-8859-1`` (and encoded words
    ``=?iso-8859-1?Q?...?=``) that windows-1252 reads without complaint as "GrÃ¼ÃŸe"; text
    really written in an 8-bit charset is almost never also UTF-8 (a letter beyond ASCII would
    have to be followed by symbols such as "Â©")."""
    if data.isascii():
        return _iso2022(data) or data.decode("ascii")
    try:
        return data.decode("utf-8")
    except UnicodeError:
        pass
    if _mostly_utf8(data):
        return _without_lone_surrogates(data.decode("utf-8", "replace"))
    return None


def _strictly(data: bytes, label: str | None) -> str | None:
    """``data`` read with the charset ``label`` when it reads it cleanly (a header is never in
    UTF-16 or UTF-32, whatever a label says); else None."""
    codec = _codec(label)
    if codec is None or codec.startswith(("utf-16", "utf-32")):
        return None
    try:
        return _without_lone_surrogates(data.decode(codec))
    except UnicodeError:
        return None


# Unlabelled 8-bit text that is not UTF-8 is western (windows-1252) unless its words read as
# one of these: the charsets Russian, Ukrainian, Bulgarian, Greek, Hebrew, Arabic, Japanese,
# Chinese, Korean and Thai mail used without a label (DOS's cp866 included), the more common first:
# a reading scoring almost as well as the best is taken before it (a word or two cannot tell
# KOI8-R from ISO 8859-5 by letter frequencies). Latin-script charsets are told apart by
# _latin_codec.
_GUESSES = (
    ("koi8-u", "cyrillic"), ("cp1251", "cyrillic"), ("cp1253", "greek"), ("cp1255", "hebrew"),
    ("cp1256", "arabic"), ("cp866", "cyrillic"), ("iso8859-5", "cyrillic"),
    ("cp932", "japanese"), ("euc_jp", "japanese"), ("gb18030", "chinese"),
    ("big5hkscs", "chinese-traditional"), ("cp949", "korean"), ("cp874", "thai"),
)  # fmt: skip
_NEAR_BEST = 0.8  # of the best score: a more common charset scoring so is taken instead


class _Script(NamedTuple):
    """A script's letters as patterns: a word of it alone (no other letter beside it), a run
    of its letters, of its upper-case ones (None for a script without case) and of its most
    frequent letters; and how much its frequent letters count (East Asian scripts spread
    their text over thousands of characters: the frequent ones are a smaller share of it); and
    the marks left out of a reading before it is scored (the vowel and tone marks of Thai, which
    are no letters to Python's patterns and would cut each word in pieces)."""

    alone: re.Pattern[str]
    letters: re.Pattern[str]
    upper: re.Pattern[str] | None
    frequent: re.Pattern[str]
    weight: float
    marks: dict[int, None]


def _script(
    letters: str, upper: str | None, frequent: str, weight: float = 1.0, marks: str = ""
) -> _Script:
    return _Script(
        re.compile(rf"(?<![^\W\d_])[{letters}]+(?![^\W\d_])"),
        re.compile(f"[{letters}]+"),
        re.compile(f"[{upper}]+") if upper else None,
        re.compile(f"[{frequent}]+"),
        weight,
        dict.fromkeys(map(ord, marks)),
    )


# Thai's vowel and tone marks (combining characters written above and below the consonants).
_THAI_MARKS = "".join(map(chr, [0x0E31, *range(0x0E34, 0x0E3B), *range(0x0E47, 0x0E4F)]))
_SCRIPTS = {
    "cyrillic": _script("\u0400-\u052f", "\u0400-\u042f", "оеаинтсрвлкдмпуіОЕАИНТСРВЛКДМПУІ"),
    "greek": _script("\u0386-\u03ce", "\u0386-\u03ab", "αοειτνσςυρηκμπλΑΟΕΙΤΝΣΥΡΗΚΜΠΛ"),
    "hebrew": _script("\u05d0-\u05ea", None, "יוהלארתבמנשע"),
    "arabic": _script("\u0621-\u064a", None, "اليمنوهرتبعد"),
    # Kana and kanji: the particles and endings written in hiragana are the frequent ones.
    "japanese": _script(
        "\u3041-\u30ff\u4e00-\u9fff",
        None,
        "のにはをたがでてとしいるれかなっこまもうくすおご",
        2.0,
    ),
    "chinese": _script(
        "\u4e00-\u9fff",
        None,
        "的一是不了在人有我他这中大来上们个国和说地也子时道出要会请",
        3.0,
    ),
    "chinese-traditional": _script(
        "\u4e00-\u9fff",
        None,
        "的一是不了在人有我他這中大來上們個國和說地也子時道出要會請",
        3.0,
    ),
    # Thai: consonants and vowels, its vowel and tone marks left out before scoring.
    "thai": _script(
        "\u0e01-\u0e30\u0e32\u0e33\u0e40-\u0e46", None, "านรอกเมงดยสวลทตไบ", marks=_THAI_MARKS
    ),
    "korean": _script(
        "\uac00-\ud7a3",
        None,
        "이다는에의을하고가지기도서한사로으리어를게있니습요세해주",
        1.5,
    ),
}
_GUESS_SAMPLE = 4096  # bytes of a text its charset is guessed from
# A word (a run of letters: each character is looked at once); a word of Latin letters.
_WORD = re.compile(r"[^\W\d_]+")
_LATIN_WORD = re.compile(r"[A-Za-z\u00c0-\u024f]+")
_ASCII_LETTER = re.compile(r"[A-Za-z]")


def guessed_codec(data: bytes) -> str:
    """The codec unlabelled 8-bit text that is not UTF-8 reads best in: windows-1252, the
    charset of western mail, unless its words are no western words (a word with letters
    beyond ASCII and none within it, as "Ïðèâåò" is; or mostly symbols) and read better, in
    one of the charsets of other scripts, as words of that script alone, mostly in lower case
    and made of its frequent letters (a KOI8-R "Привет" read as windows-1251 is "пРИВЕТ"); or
    unless Latin-script text reads as one Central European, Turkish or Baltic language in
    windows-1250, ISO 8859-2, windows-1254 or windows-1257 (:func:`_latin_codec`). Looks at the
    first 4 KB, with regular expressions only; western text of one language costs one reading."""
    sample = data[:_GUESS_SAMPLE]
    as_western = sample.decode(_FALLBACK, "replace")
    western = _western_share(as_western)
    if western is not None and western >= 0.8:
        return _latin_codec(sample, as_western)  # the common case
    scores = [(_FALLBACK, (western or 0.0) * _letter_share(as_western))]
    scores += [
        (codec, _script_score(sample.decode(codec, "replace"), _SCRIPTS[script]))
        for codec, script in _GUESSES
    ]
    best = max(score for _, score in scores)
    if best < 0.45:  # no guess is sure enough
        return _latin_codec(sample, as_western)
    codec = next(codec for codec, score in scores if score >= best * _NEAR_BEST)
    return _latin_codec(sample, as_western) if codec == _FALLBACK else codec


# Latin-script text is windows-1252 unless its letters read as one language only in the charset
# of Central European, Turkish or Baltic mail: "Za¿ó³æ gê¶l±" is Polish in ISO 8859-2 ("Zażółć
# gęślą"), "Pøíliš žlu�ouèký" Czech in windows-1250, "Aèiû" Lithuanian in windows-1257 ("Ačiū").
# Each group is the letters beyond ASCII one language (or a few that share them) writes; a
# reading is as consistent as the largest share of its such letters one group holds.
_LATIN_CODECS = ("cp1250", "iso8859-2", "cp1254", "cp1257")
_LATIN_GROUPS = tuple(
    frozenset(letters)
    for letters in (
        "äöüßé", "àâçèéêëîïôùûüÿœæ", "áéíóúñü", "áâãàçéêíóôõú", "àèéìíîòóù",  # de fr es pt it
        "àçèéíïòóú", "åäöæøéüáíóúýþð", "éëïèöüáó", "äöåõüšž",  # ca, Nordic, nl, fi and et
        "ąćęłńóśźż", "áčďéěíĺľňóôŕřšťúůýžä", "áéíóöőúüű", "čćđšž", "ăâîşţ",  # pl cs/sk hu hr ro
        "çğıöşüâî", "ąčęėįšųūž", "āčēģīķļņšūž",  # Turkish, Lithuanian, Latvian
    )
)  # fmt: skip
_LETTER_BEYOND_ASCII = re.compile(r"[^\x00-\x7f\W\d_]")  # and superscript digits: see isalpha


def _latin_codec(sample: bytes, as_western: str) -> str:
    """The codec of Latin-script text (its windows-1252 reading ``as_western`` reads as words
    of a western language): windows-1252 unless windows-1250, ISO 8859-2, windows-1254 or
    windows-1257 reads it clearly better, as letters of one language where windows-1252 made
    symbols of some ("przes³anie") or mixed the letters of several ("veèer", "tûrõ", "Ðmidt").
    One count of the letters beyond ASCII; western text of one language costs nothing more."""
    western = _latin_reading_score(as_western)
    if western >= 0.95:
        return _FALLBACK
    # The first of the best: text that reads the same in two of them (Polish without ą, ś or
    # ź) is taken as the more common charset.
    scores = {
        codec: _latin_reading_score(sample.decode(codec, "replace")) for codec in _LATIN_CODECS
    }
    codec = max(scores, key=scores.__getitem__)
    return codec if scores[codec] >= 0.9 and scores[codec] > western + 0.1 else _FALLBACK


def _latin_reading_score(text: str) -> float:
    """How plainly ``text`` reads as one Latin-script language: the share of its characters
    beyond ASCII that are letters, times the largest share of those letters one language's
    group holds."""
    beyond_ascii = len(text) - len(text.encode("ascii", "ignore"))
    letters = [c for c in _LETTER_BEYOND_ASCII.findall(text.lower()) if c.isalpha()]
    if not letters:
        return 0.0
    consistent = max(sum(c in group for c in letters) for group in _LATIN_GROUPS)
    return len(letters) / beyond_ascii * consistent / len(letters)


def _western_share(text: str) -> float | None:
    """Of the words of ``text`` with two letters or more, one of them beyond ASCII, the share
    a western language writes: Latin letters only, some of them ASCII ("für", "déjà"). None
    when there are none (Shift_JIS read so is mostly symbols; so are curly quotes)."""
    words = [w for w in _beyond_ascii_words(text) if len(w) > 1]
    if not words:
        return None
    western = sum(
        _LATIN_WORD.fullmatch(w) is not None and _ASCII_LETTER.search(w) is not None for w in words
    )
    return western / len(words)


def _beyond_ascii_words(text: str) -> list[str]:
    """The words of ``text`` with a letter beyond ASCII. (One pattern for "a word holding such
    a letter" backtracks through every long ASCII word once per letter of it.)"""
    return [w for w in _WORD.findall(text) if not w.isascii()]


def _letter_share(text: str) -> float:
    """The share of the characters of ``text`` beyond ASCII that are letters (Shift_JIS read
    as windows-1252 is mostly quotes, daggers and per-mille signs)."""
    beyond_ascii = len(text) - len(text.encode("ascii", "ignore"))
    letters = sum(len(w) - len(w.encode("ascii", "ignore")) for w in _beyond_ascii_words(text))
    return letters / beyond_ascii if beyond_ascii else 0.0


def _script_score(text: str, script: _Script) -> float:
    """How well ``text`` reads as ``script``: the share of its words with letters beyond ASCII
    that are of that script alone, times the share of the script's letters that are its
    frequent ones, times the share of the characters beyond ASCII that are its letters at all
    (a wrong charset reads many bytes as box drawing or symbols), damped when most of its
    letters are upper case (as KOI8-R read as windows-1251 is)."""
    alone, letters_run, upper_run, frequent_run, weight, marks = script
    if marks:
        text = text.translate(marks)
    words = len(_beyond_ascii_words(text))
    beyond_ascii = len(text) - len(text.encode("ascii", "ignore"))
    letters = sum(map(len, letters_run.findall(text)))
    if not words or not letters:
        return 0.0
    alone_share = len(alone.findall(text)) / words
    frequent_share = sum(map(len, frequent_run.findall(text))) / letters
    letter_share = letters / beyond_ascii
    score = alone_share * weight * frequent_share * letter_share
    if upper_run is not None:
        lower_share = 1 - sum(map(len, upper_run.findall(text))) / letters
        score *= min(1.0, 2 * lower_share)
    return score


def _iso2022(data: bytes) -> str | None:
    """ASCII ``data`` read as ISO-2022-JP (with its -2 extensions, or as Windows reads it: see
    :func:`_iso2022_jp_windows`) when it holds that encoding's escapes and decodes cleanly;
    else None."""
    if b"\x1b" not in data or _ISO2022_ESCAPE.search(data) is None:
        return None
    try:
        return data.decode("iso2022_jp_2")
    except UnicodeError:
        return _iso2022_jp_windows(data)


# The escapes of ISO-2022-JP as Windows writes it (code pages 50220/50221): ASCII, JIS-Roman,
# half-width katakana, and the double-byte set (JIS X 0208, old and new designation).
_ISO2022_JP_SWITCH = re.compile(rb"(\x1b\([BJI]|\x1b\$[@B])")


def _iso2022_jp_windows(data: bytes) -> str | None:
    """ISO-2022-JP ``data`` as Windows and Japanese mail clients read it, or None when it is
    not that. Outlook writes the NEC and IBM characters of code page 932 (①, №, ㈱, Roman
    numerals: common in Japanese business mail) in ISO-2022-JP's double-byte runs, which
    Python's codecs refuse as outside JIS X 0208. Each such run is taken to Shift_JIS (the
    same table, arithmetically rearranged) and read as code page 932, which holds them."""
    pieces = _ISO2022_JP_SWITCH.split(data)
    text: list[str] = []
    mode = b"\x1b(B"
    try:
        for index, piece in enumerate(pieces):
            if index % 2:  # the separators split() keeps: the escapes
                mode = piece
            elif b"\x1b" in piece or b"\x0e" in piece or b"\x0f" in piece:
                return None  # another escape, or a shift: not this encoding
            elif mode.startswith(b"\x1b$"):
                text.append(_shift_jis(piece).decode("cp932"))
            elif mode == b"\x1b(I":  # JIS X 0201 katakana: Shift_JIS's single bytes A1-DF
                text.append(piece.translate(_HIGH_BIT).decode("cp932"))
            else:
                text.append(piece.decode("ascii"))
    except (UnicodeError, ValueError):
        return None
    return "".join(text)


# JIS row -> Shift_JIS lead byte; whether the row is odd (as the bit 0x80); and (that bit |
# the JIS cell) -> Shift_JIS trail byte. Bytes outside rows and cells map to 0 (no code).
_SJIS_LEAD = bytes(
    (r + 1) // 2 + (0x70 if r <= 0x5E else 0xB0) if 0x21 <= r <= 0x7E else 0 for r in range(256)
)
_ODD_ROW = bytes(0x80 if r % 2 else 0 for r in range(256))
_HIGH_BIT = bytes(b | 0x80 for b in range(256))
_SJIS_TRAIL = bytes(
    (c + (0x1F if c <= 0x5F else 0x20) if odd else c + 0x7E) if 0x21 <= c <= 0x7E else 0
    for odd, c in ((b & 0x80, b & 0x7F) for b in range(256))
)


def _shift_jis(jis: bytes) -> bytes:
    """A run of JIS double-byte codes (rows and cells 0x21-0x7E) as the same characters in
    Shift_JIS, computed with byte tables (no loop in Python: a run may be megabytes). Raises
    ValueError for a byte outside a code or a run cut in half."""
    if len(jis) % 2 or jis.translate(None, bytes(range(0x21, 0x7F))):
        raise ValueError("not a run of JIS double-byte codes")
    rows, cells = jis[0::2], jis[1::2]
    # The row's parity joins its cell as the top bit (cells are 7-bit): one table then gives
    # the trail byte. OR on the runs as integers is bytewise, with no carry between bytes.
    marked = int.from_bytes(cells) | int.from_bytes(rows.translate(_ODD_ROW))
    out = bytearray(len(jis))
    out[0::2] = rows.translate(_SJIS_LEAD)
    out[1::2] = marked.to_bytes(len(cells)).translate(_SJIS_TRAIL)
    return bytes(out)


# A code point of the surrogate range on its own: a decoded str holds a proper pair as the one
# character it encodes, so any such code point is unpaired.
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _without_lone_surrogates(text: str) -> str:
    """``text`` with every unpaired surrogate replaced by U+FFFD. UTF-7 decodes "+2DQ-" to a
    lone surrogate without complaint; such a str cannot be written as UTF-8 (the cache, the
    page, the export and the terminal all raise on it)."""
    if _LONE_SURROGATE.search(text) is None:
        return text
    return _LONE_SURROGATE.sub("\ufffd", text)


def _codec(charset: str | None) -> str | None:
    """The Python codec for a MIME charset label, or None for no label, an unknown one, one
    that is no text charset (base64, zlib, punycode: the sender chooses the label), or one
    (us-ascii, utf-8, unknown-8bit) that leaves the bytes to UTF-8 and the fallback."""
    if not charset:
        return None
    label = charset.strip().strip('"').lower()
    label = _LABELS.get(label, label)
    if (dashless := _ISO8859_WITHOUT_DASH.fullmatch(label)) is not None:
        label = f"iso8859-{dashless.group(1)}"
    # x-sjis, x-mac-roman, x-cp1250: WHATWG's names, which Python knows without the "x-".
    info = _lookup(label) or _lookup(label.removeprefix("x-"))
    if info is None or not info._is_text_encoding or info.name in _NOT_CHARSETS:
        return None
    if info.name in _NO_CHARSET:
        return None
    return _SUPERSETS.get(info.name, info.name)


def _lookup(label: str) -> codecs.CodecInfo | None:
    try:
        return codecs.lookup(label)
    except (LookupError, ValueError):  # ValueError: a NUL or a lone surrogate in the label
        return None


# Windows code page numbers (TNEF's attOemCodepage and PR_INTERNET_CPID, RTF's \ansicpg) whose
# Python codec is not called cpNNNN.
_CODEPAGE_CODECS = {
    65001: "utf-8", 1200: "utf-16-le", 20127: "ascii", 20866: "koi8-r", 21866: "koi8-u",
    50220: "iso2022-jp", 50221: "iso2022-jp", 50222: "iso2022-jp", 51932: "euc-jp",
    51949: "euc-kr", 52936: "hz", 54936: "gb18030", 10000: "mac-roman", 10004: "mac-arabic",
    10006: "mac-greek", 10007: "mac-cyrillic", 10029: "mac-latin2", 10081: "mac-turkish",
    1361: "johab",
} | {28590 + n: f"iso8859-{n}" for n in range(1, 16)}  # fmt: skip


def codepage_codec(codepage: int | None) -> str:
    """The Python codec of a Windows code page number; windows-1252 for one Python does not
    know (or none)."""
    name = _CODEPAGE_CODECS.get(codepage or 0, f"cp{codepage}")
    try:
        return codecs.lookup(name).name
    except LookupError:
        return _FALLBACK

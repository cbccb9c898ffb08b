"""Files uuencoded inside a text body: what ``uuencode FILE NAME | mail`` sends from Unix scripts
to this day, and what Outlook Express, Eudora and Pegasus Mail sent as "attachments" in plain
text mode before MIME was everywhere. Such a body is one text/plain part holding

    begin 644 report.csv
    M<...61 characters of data...>
    `
    end

between the lines of text. A mail client (Thunderbird among them) shows the file as an
attachment and the text without the block; so does :func:`core.text.iter_parts` with
:func:`split_uuencoded`.

Pure: bytes in, values out. One pass over the text; a block is taken only when every line
between ``begin`` and ``end`` is a well-formed uuencoded line, so prose that happens to say
"begin 644 ..." stays text.
"""

from __future__ import annotations

import binascii
import re
from dataclasses import dataclass

__all__ = ["UuencodedFile", "split_uuencoded"]

# "begin MODE NAME": the mode in octal (uuencode writes three or four digits), the name the rest
# of the line. Only at the start of a line: a quoted block ("> begin 644 x") stays quoted text.
_BEGIN = re.compile(rb"^begin [0-7]{3,4} +([^\r\n]*?)[ \t]*\r?$", re.MULTILINE)
_END = re.compile(rb"^end[ \t]*\r?$", re.MULTILINE)
_LINE = re.compile(rb"[^\n]+")
_ALPHABET = re.compile(rb"[ -`]+")  # the 64 characters uuencode writes, and its length byte
# Files found in one body at most: past that the rest of the text stays as it is.
MAX_FILES = 100


@dataclass(frozen=True)
class UuencodedFile:
    """One file found in a text: its name as the ``begin`` line gave it and its bytes."""

    filename: str
    data: bytes


def split_uuencoded(text: bytes) -> tuple[bytes, list[UuencodedFile]]:
    """``text`` without its uuencoded blocks, and the files they hold, in order. A text
    without a well-formed block comes back unchanged with no files."""
    if b"begin " not in text:
        return text, []
    kept: list[bytes] = []
    files: list[UuencodedFile] = []
    position = 0  # the text before it is decided: kept or part of a block
    search = 0
    end: re.Match[bytes] | None = None
    while len(files) < MAX_FILES:
        begin = _BEGIN.search(text, search)
        if begin is None:
            break
        if end is None or end.start() < begin.end():
            # The first "end" after this begin line; one found for an earlier begin line is
            # still it when it lies beyond (searching again for each would be quadratic).
            end = _END.search(text, begin.end())
        if end is None:
            break  # no block ends after this line, nor after any later one
        data = _decoded(text, begin.end(), end.start())
        if data is None:
            search = begin.end()  # not a block: look for another begin line after this one
            continue
        kept.append(text[position : begin.start()])
        files.append(UuencodedFile(_name(begin.group(1)), data))
        # The line break after "end" goes with the block, so the text closes up around it.
        position = search = end.end() + (text[end.end() : end.end() + 1] == b"\n")
    if not files:
        return text, []
    kept.append(text[position:])
    return b"".join(kept), files


def _decoded(text: bytes, start: int, stop: int) -> bytes | None:
    """The data of the lines of ``text[start:stop]`` (between ``begin`` and ``end``), or None
    when any of them is not a uuencoded line (its first character gives its length; the rest
    must carry that many bytes in the uuencoding alphabet). An empty file is one length-0 line
    (a grave accent). Read line by line without copying: a line that is no data ends the work
    at once, so many ``begin`` lines before one ``end`` cost one pass, not one each."""
    out = bytearray()
    lines = 0
    for match in _LINE.finditer(text, start, stop):
        line = match.group().rstrip(b"\r")
        if not line.strip():
            continue  # a blank line before "end"
        length = (line[0] - 32) & 0x3F
        if len(line) - 1 < (length + 2) // 3 * 4 or not _ALPHABET.fullmatch(line):
            return None
        try:
            out += binascii.a2b_uu(line)
        except binascii.Error:
            return None
        lines += 1
    return bytes(out) if lines else None


def _name(raw: bytes) -> str:
    """The file's name as written (UTF-8 when it is, else Latin-1, as old clients wrote it),
    without a directory some uuencode versions put before it."""
    try:
        name = raw.decode("utf-8")
    except UnicodeDecodeError:
        name = raw.decode("latin-1")
    return name.replace("\\", "/").rsplit("/", 1)[-1].strip()

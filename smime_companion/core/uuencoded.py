"""Files uuencoded inside a text body: what ``uuencode FILE NAME | mail`` sends from Unix scripts
to this day, and what Outlook Express, Eudora and Pegasus Mail sent as "attachments" in plain
text mode before MIME was everywhere. Such a body is one text/plain part holding

    begin 644 report.csv
    M<...61 characters of data...>
    `
    end

between the lines of text; or, from ``uuencode -m`` (POSIX), the same in base64 between
``begin-base64 644 report.csv`` and a line ``====``. A mail client (Thunderbird among them)
shows the file as an attachment and the text without the block; so does
:func:`core.text.iter_parts` with :func:`split_uuencoded`.

Pure: bytes in, values out. One pass over the text; a block is taken only when every line
between ``begin`` and ``end`` is a well-formed line of its encoding, so prose that happens to
say "begin 644 ..." stays text.
"""

from __future__ import annotations

import binascii
import re
from dataclasses import dataclass

__all__ = ["UuencodedFile", "split_uuencoded"]

# "begin MODE NAME" ("begin-base64 MODE NAME" for base64): the mode in octal (uuencode writes
# three or four digits), the name the rest of the line. Only at the start of a line: a quoted
# block ("> begin 644 x") stays quoted text.
_BEGIN = re.compile(rb"^begin(-base64)? [0-7]{3,4} +([^\r\n]*?)[ \t]*\r?$", re.MULTILINE)
# The line that ends a block, by its encoding: uuencoding, base64.
_ENDS = (
    re.compile(rb"^end[ \t]*\r?$", re.MULTILINE),
    re.compile(rb"^====[ \t]*\r?$", re.MULTILINE),
)
_LINE = re.compile(rb"[^\n]+")
_ALPHABET = re.compile(rb"[ -`]+")  # the 64 characters uuencode writes, and its length byte
_BASE64 = re.compile(rb"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")
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
    if b"begin" not in text:
        return text, []
    kept: list[bytes] = []
    files: list[UuencodedFile] = []
    position = 0  # the text before it is decided: kept or part of a block
    search = 0
    # By encoding, the first line that ends a block after the last begin line looked at, None
    # when there is none. One found for an earlier begin line is still it when it lies beyond
    # (searching again for each begin line would be quadratic).
    ends: dict[int, re.Match[bytes] | None] = {}
    while len(files) < MAX_FILES:
        begin = _BEGIN.search(text, search)
        if begin is None:
            break
        encoding = int(begin.group(1) is not None)
        end = ends.get(encoding)
        if encoding not in ends or (end is not None and end.start() < begin.end()):
            end = ends[encoding] = _ENDS[encoding].search(text, begin.end())
        data = _decoded(text, begin.end(), end.start(), encoding) if end is not None else None
        if end is None or data is None:
            search = begin.end()  # not a block: look for another begin line after this one
            continue
        kept.append(text[position : begin.start()])
        files.append(UuencodedFile(_name(begin.group(2)), data))
        # The line break after the end line goes with the block, so the text closes up.
        position = search = end.end() + (text[end.end() : end.end() + 1] == b"\n")
    if not files:
        return text, []
    kept.append(text[position:])
    return b"".join(kept), files


def _decoded(text: bytes, start: int, stop: int, encoding: int) -> bytes | None:
    """The data of the lines of ``text[start:stop]`` (between the begin and the end line), or
    None when any of them is not a line of the ``encoding`` (0: uuencoding, whose first
    character gives the line's length and the rest must carry that many bytes in its
    alphabet; 1: base64). An empty file is one length-0 line (a grave accent) uuencoded, no
    line in base64. Read line by line without copying: a line that is no data ends the work at
    once, so many begin lines before one end line cost one pass, not one each."""
    out = bytearray()
    lines = 0
    for match in _LINE.finditer(text, start, stop):
        line = match.group().rstrip(b"\r")
        if not line.strip():
            continue  # a blank line before the end line
        if encoding:
            if not _BASE64.fullmatch(line):
                return None
            out += binascii.a2b_base64(line)
        else:
            length = (line[0] - 32) & 0x3F
            if len(line) - 1 < (length + 2) // 3 * 4 or not _ALPHABET.fullmatch(line):
                return None
            try:
                out += binascii.a2b_uu(line)
            except binascii.Error:
                return None
        lines += 1
    return bytes(out) if lines or encoding else None


def _name(raw: bytes) -> str:
    """The file's name as written (UTF-8 when it is, else Latin-1, as old clients wrote it),
    without a directory some uuencode versions put before it."""
    try:
        name = raw.decode("utf-8")
    except UnicodeDecodeError:
        name = raw.decode("latin-1")
    return name.replace("\\", "/").rsplit("/", 1)[-1].strip()

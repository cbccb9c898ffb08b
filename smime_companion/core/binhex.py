"""Files in BinHex 4.0: how Macintosh mail sent attachments before MIME reached the Mac, and
long after (Eudora, Claris Emailer, early Apple Mail; ``.hqx`` downloads). Old archives hold
them two ways: as a part ``application/mac-binhex40`` (RFC 1741), and inside a plain text body
after the line ``(This file must be converted with BinHex 4.0)``. A mail client shows the file
as an attachment and the text without the block; so does :func:`core.text.iter_parts` with
:func:`read_binhex` and :func:`split_binhex`.

The format (RFC 1741's appendix and the BinHex 4.0 definition it cites): between two colons,
64 characters of an alphabet of its own carry six bits each, line breaks ignored; the bytes
they make are run-length encoded (0x90 followed by a count repeats the byte before it; 0x90 0
is a literal 0x90); the result is a header (name, type, creator, flags, the two forks'
lengths), the data fork and the resource fork, each followed by a CRC-16 (XMODEM). Only the
data fork is a file on any other system; the resource fork is left out, as a multipart/
appledouble's ``application/applefile`` part is. A Mac file needed no extension (its type
code said what it was): a name without one gets the one its type stands for.

Pure: bytes in, values out. A block is taken only when its header and data fork check against
their CRCs; anything else stays what it was (text, or the attachment as it came). What the
blocks of one message may expand to together is bounded (:class:`Room`: a few megabytes plus
the message's own size, as CMS compressed layers are), so a run-length bomb (a kilobyte can
announce and spell out a hundred) is refused before it is expanded.
"""

from __future__ import annotations

import binascii
import re
from dataclasses import dataclass

__all__ = ["MEDIA_TYPES", "BinhexFile", "Room", "is_binhex", "read_binhex", "split_binhex"]

# The media types senders labelled BinHex with (RFC 1741's, and the ones before it).
MEDIA_TYPES = frozenset(
    {
        "application/mac-binhex40",
        "application/mac-binhex",
        "application/x-mac-binhex40",
        "application/x-binhex40",
        "application/binhex",
        "application/binhex4",
    }
)
_ALPHABET = b"!\"#$%&'()*+,-012345689@ABCDEFGHIJKLMNPQRSTUVXYZ[`abcdefhijklmpqr"
_BASE64 = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
# BinHex's alphabet to base64's, so that binascii decodes the six-bit groups in C; any other
# byte becomes a NUL, which strict base64 decoding refuses.
_TO_BASE64 = bytes(
    _BASE64[_ALPHABET.index(byte)] if byte in _ALPHABET else 0 for byte in range(256)
)
# The data between two colons: the alphabet and white space only. A block that meets any other
# character before its closing colon is no block, so the scan for one stops there.
_BLOCK = re.compile(rb":([" + re.escape(_ALPHABET) + rb"\s]*):")
# The line BinHex starts its text with; what follows it is the block (other encoders than
# BinHex 4.0 itself wrote other words in the brackets, hence the loose end).
_INTRODUCTION = re.compile(
    rb"^\(This file must be converted[^\r\n]{0,80}\)[ \t]*\r?\n\s*(?=:)", re.MULTILINE
)
_RUN = 0x90
MAX_FILES = 100  # files taken out of one text
# What one message's blocks may expand to together: this, plus the message's own size.
ALLOWANCE = 4 * 1024 * 1024
_MAX_HEADER = 1 + 255 + 22  # the longest name, the fixed fields and the header's CRC


@dataclass
class Room:
    """What the BinHex blocks of one message may still expand to, in bytes."""

    left: int

    @classmethod
    def for_message(cls, size: int) -> Room:
        return cls(ALLOWANCE + size)


@dataclass(frozen=True)
class BinhexFile:
    """One file found: its name as the BinHex header gives it and its data fork."""

    filename: str
    data: bytes


def is_binhex(mime_type: str, filename: str) -> bool:
    """Whether a part with this media type and file name is a BinHex file."""
    return mime_type in MEDIA_TYPES or (
        filename.lower().endswith(".hqx") and mime_type == "application/octet-stream"
    )


def read_binhex(data: bytes, room: Room) -> BinhexFile | None:
    """The file in the BinHex text ``data`` (an ``application/mac-binhex40`` part: text before
    the block is skipped), or None when it holds no sound block or one larger than ``room``
    (which its data fork then takes up)."""
    introduction = _INTRODUCTION.search(data)
    block = _BLOCK.search(data, introduction.end() if introduction is not None else 0)
    return _decoded(block.group(1), room) if block is not None else None


def split_binhex(text: bytes, room: Room) -> tuple[bytes, list[BinhexFile]]:
    """``text`` without its BinHex blocks (introduction line and block), and the files they
    hold, in order, as far as ``room`` goes. A text without a sound block comes back unchanged
    with no files."""
    if b"(This file must be converted" not in text:
        return text, []
    kept: list[bytes] = []
    files: list[BinhexFile] = []
    position = 0
    for introduction in _INTRODUCTION.finditer(text):
        if len(files) >= MAX_FILES or introduction.start() < position:
            continue
        block = _BLOCK.match(text, introduction.end())
        file = _decoded(block.group(1), room) if block is not None else None
        if block is None or file is None:
            continue
        kept.append(text[position : introduction.start()])
        files.append(file)
        # The line break after the closing colon goes with the block, so the text closes up.
        end = block.end()
        position = end + 2 if text.startswith(b"\r\n", end) else end + text.startswith(b"\n", end)
    if not files:
        return text, []
    kept.append(text[position:])
    return b"".join(kept), files


def _decoded(encoded: bytes, room: Room) -> BinhexFile | None:
    """The file of one block's text (between its colons), or None when it is not sound or
    its data fork is larger than ``room``, which it takes up."""
    compact = encoded.translate(None, b" \t\r\n\f\v")
    if len(compact) % 4 == 1:
        compact = compact[:-1]  # six bits alone make no byte
    compact = compact.translate(_TO_BASE64) + b"=" * (-len(compact) % 4)
    try:
        packed = binascii.a2b_base64(compact, strict_mode=True)
    except binascii.Error:
        return None
    raw = _expanded(packed, max(room.left, 0) + _MAX_HEADER + 2)
    if raw is None or not raw:
        return None
    name_length = raw[0]
    header_end = 1 + name_length + 1 + 4 + 4 + 2 + 4 + 4
    if len(raw) < header_end + 2 or _crc(raw, 0, header_end) != raw[header_end : header_end + 2]:
        return None
    data_length = int.from_bytes(raw[header_end - 8 : header_end - 4], "big")
    data_start = header_end + 2
    data_end = data_start + data_length
    if len(raw) < data_end + 2 or _crc(raw, data_start, data_end) != raw[data_end : data_end + 2]:
        return None
    name = _safe_name(bytes(raw[1 : 1 + name_length]).decode("mac-roman"))
    file_type = bytes(raw[name_length + 2 : name_length + 6])
    room.left -= data_length
    return BinhexFile(_with_extension(name, file_type), bytes(raw[data_start:data_end]))


def _expanded(packed: bytes, limit: int) -> bytearray | None:
    """``packed`` with its runs expanded, up to the end of the data fork's CRC (the resource
    fork is not needed); None when the header asks for more than ``limit`` bytes."""
    out = bytearray()
    need = limit
    header_read = False
    position = 0
    while len(out) < need:
        mark = packed.find(_RUN, position)
        if mark < 0:
            out += packed[position:]
        else:
            out += packed[position:mark]
            if mark + 1 < len(packed):
                count = packed[mark + 1]
                if count == 0:
                    out.append(_RUN)
                elif out:
                    out += out[-1:] * (count - 1)
        position = len(packed) if mark < 0 else mark + 2
        if not header_read and out and len(out) >= out[0] + 22:
            header_read = True
            header_end = out[0] + 20
            data_length = int.from_bytes(out[header_end - 8 : header_end - 4], "big")
            need = header_end + 2 + data_length + 2
            if need > limit:
                return None
        if position >= len(packed):
            break
    return out


def _crc(data: bytearray, start: int, end: int) -> bytes:
    """BinHex's CRC-16 (XMODEM: CCITT polynomial, start 0) of ``data[start:end]``."""
    return binascii.crc_hqx(memoryview(data)[start:end], 0).to_bytes(2, "big")


# Macintosh file type codes of documents people mailed, by the extension other systems open
# them by: a Mac file needed no extension ("Budget", type XLS8), a Windows or Linux one does.
_EXTENSIONS = {
    b"PDF ": ".pdf", b"TEXT": ".txt", b"RTF ": ".rtf", b"JPEG": ".jpg", b"GIFf": ".gif",
    b"PNGf": ".png", b"TIFF": ".tif", b"8BPS": ".psd", b"EPSF": ".eps", b"MooV": ".mov",
    b"W8BN": ".doc", b"W6BN": ".doc", b"WDBN": ".doc", b"XLS8": ".xls", b"XLS5": ".xls",
    b"XLS4": ".xls", b"SLD8": ".ppt", b"SLD3": ".ppt", b"ZIP ": ".zip", b"SIT!": ".sit",
    b"SITD": ".sit", b"SIT5": ".sit",
}  # fmt: skip
_HAS_EXTENSION = re.compile(r"\.[A-Za-z0-9]{1,5}$")


def _with_extension(name: str, file_type: bytes) -> str:
    """``name``, with the extension its Macintosh file type stands for when it has none."""
    extension = _EXTENSIONS.get(file_type)
    if extension is None or _HAS_EXTENSION.search(name):
        return name
    return name + extension


def _safe_name(name: str) -> str:
    """The Macintosh file name as a name on other systems: a colon (the Mac's directory mark)
    or slash made harmless, control characters dropped."""
    cleaned = "".join(c for c in name if c.isprintable()).replace(":", "_").replace("/", "_")
    return cleaned.strip() or "binhex-file"

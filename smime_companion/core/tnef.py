"""Outlook's TNEF attachment (``winmail.dat``, ``application/ms-tnef``) read into the body and
the files it carries.

Outlook and Exchange send a message written in Rich Text, or one whose recipient is marked to
receive "Outlook rich text", as a MIME message whose only real content is a ``winmail.dat``
attachment: the body (HTML, RTF or plain text) and every attached file are inside it. Mail
clients other than Outlook show a useless ``winmail.dat``; inside S/MIME no server-side gateway
can unpack it either. :mod:`core.text` shows what this module reads in its place.

Pure: bytes in, values out. The format is Microsoft's [MS-OXTNEF]: a signature, a key, then
attributes (level, id, length, data, checksum), two of which (``attMsgProps``,
``attAttachment``) hold lists of MAPI properties (section 2.1.3.4). Checksums are not checked
(Outlook writes some wrong and the ``tnef`` program refuses those; the content is still what the
sender sent, and the S/MIME layers around it are what vouch for it).

Hostile input costs time linear in its size: every length is checked against what is left, no
recursion, and a compressed RTF body expands at most eightfold (:mod:`core.rtf`).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field

from smime_companion.core import rtf
from smime_companion.core.charsets import codepage_codec
from smime_companion.errors import MalformedInput

# The media types Outlook and Exchange label it with; some gateways send it as
# application/octet-stream, so a part named winmail.dat is one too (see :func:`is_tnef`).
MEDIA_TYPES = frozenset({"application/ms-tnef", "application/vnd.ms-tnef"})
_SIGNATURE = 0x223E9F78

# Attribute ids ([MS-OXTNEF] 2.1.3.3), the low 16 bits of the attribute's id field.
_ATT_BODY = 0x800C  # attBody: the plain-text body, in the OEM code page
_ATT_ATTACH_DATA = 0x800F  # attAttachData: an attachment's bytes
_ATT_ATTACH_TITLE = 0x8010  # attAttachTitle: its (often 8.3) file name
_ATT_ATTACH_RENDDATA = 0x9002  # attAttachRendData: starts an attachment
_ATT_MSG_PROPS = 0x9003  # attMsgProps: the message's MAPI properties
_ATT_ATTACHMENT = 0x9005  # attAttachment: the attachment's MAPI properties
_ATT_OEM_CODEPAGE = 0x9007  # attOemCodepage
_LEVEL_ATTACHMENT = 2

# MAPI property ids ([MS-OXPROPS]).
_PR_BODY = 0x1000
_PR_RTF_COMPRESSED = 0x1009
_PR_BODY_HTML = 0x1013
_PR_DISPLAY_NAME = 0x3001
_PR_ATTACH_DATA = 0x3701  # PT_BINARY, or PT_OBJECT for an embedded message or OLE object
_PR_ATTACH_FILENAME = 0x3704
_PR_ATTACH_LONG_FILENAME = 0x3707
_PR_ATTACH_MIME_TAG = 0x370E
_PR_ATTACH_CONTENT_ID = 0x3712
_PR_INTERNET_CPID = 0x3FDE

# MAPI property types: the fixed sizes (each value padded to four bytes in TNEF) and the ones
# whose values carry their own length.
_PT_STRING8 = 0x001E
_PT_UNICODE = 0x001F
_PT_BINARY = 0x0102
_PT_OBJECT = 0x000D
_VARIABLE_TYPES = frozenset({_PT_STRING8, _PT_UNICODE, _PT_BINARY, _PT_OBJECT})
_FIXED_SIZES = {
    0x0001: 4, 0x0002: 4, 0x0003: 4, 0x0004: 4, 0x0005: 8, 0x0006: 8, 0x0007: 8, 0x000A: 4,
    0x000B: 4, 0x0014: 8, 0x0040: 8, 0x0048: 16,
}  # fmt: skip
_MULTI_VALUED = 0x1000
_NAMED_PROPERTIES = 0x8000  # ids from here on are named: a GUID and a number or a name follow

# A compressed RTF body expands at most about eightfold; this caps it (and the time reading it,
# about half a second per megabyte of control words) for any input, and for every page the
# reader shows of it. Real bodies are kilobytes; pictures inside them are not shown anyway.
_MAX_RTF_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True)
class TnefFile:
    """One file the TNEF carried: its name, media type (``application/octet-stream`` unless
    Outlook recorded one), bytes, and the Content-ID an HTML body's ``cid:`` image names."""

    filename: str
    mime_type: str
    data: bytes
    content_id: str | None = None


@dataclass(frozen=True)
class TnefContent:
    """What a TNEF holds: its body as HTML or as plain text (at most one of them; neither when
    it has none) and its files. ``complete`` is False when the stream ended inside an
    attribute (cut short, or bytes after its end that are no attribute): then something in it
    may not have been read."""

    html: str | None
    text: str | None
    files: tuple[TnefFile, ...]
    complete: bool = True


def is_tnef(mime_type: str, filename: str) -> bool:
    """Whether a MIME part with this type and file name is a TNEF attachment."""
    return mime_type in MEDIA_TYPES or (
        filename.lower() == "winmail.dat" and mime_type == "application/octet-stream"
    )


@dataclass
class _Attachment:
    props: dict[int, tuple[int, bytes]] = field(default_factory=dict)
    title: bytes = b""
    data: bytes | None = None


def read_tnef(data: bytes) -> TnefContent:
    """The body and files of the TNEF stream ``data``. Raises :class:`MalformedInput` when it
    is not one (no TNEF signature); a stream cut short gives what came before the cut."""
    if len(data) < 6 or struct.unpack_from("<I", data)[0] != _SIGNATURE:
        raise MalformedInput("not a TNEF attachment (winmail.dat): no TNEF signature")
    message: dict[int, tuple[int, bytes]] = {}
    attachments: list[_Attachment] = []
    body = b""
    oem_codepage = 1252
    walk = _Attributes(data)
    for level, ident, value in walk:
        if ident == _ATT_ATTACH_RENDDATA or (level == _LEVEL_ATTACHMENT and not attachments):
            attachments.append(_Attachment())
        if level == _LEVEL_ATTACHMENT:
            current = attachments[-1]
            if ident == _ATT_ATTACH_TITLE:
                current.title = value
            elif ident == _ATT_ATTACH_DATA:
                current.data = value
            elif ident == _ATT_ATTACHMENT:
                current.props.update(_mapi_properties(value))
        elif ident == _ATT_BODY:
            body = value
        elif ident == _ATT_MSG_PROPS:
            message.update(_mapi_properties(value))
        elif ident == _ATT_OEM_CODEPAGE and len(value) >= 4:
            oem_codepage = struct.unpack_from("<I", value)[0]
    codepage = _integer(message.get(_PR_INTERNET_CPID)) or oem_codepage
    html, text = _body(message, body, codepage)
    files = tuple(_file(a, index, codepage) for index, a in enumerate(attachments, 1))
    kept = tuple(f for f in files if f is not None)
    return TnefContent(html, text, kept, complete=walk.offset >= len(data))


class _Attributes:
    """(level, id, data) of each attribute after the signature and key, until the data ends or
    an attribute claims more than is left; ``offset`` is then where reading stopped."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.offset = 6

    def __iter__(self) -> Iterator[tuple[int, int, bytes]]:
        data = self.data
        while self.offset + 9 <= len(data):
            level, ident, length = struct.unpack_from("<BII", data, self.offset)
            start = self.offset + 9
            if length > len(data) - start:
                return
            self.offset = start + length + 2  # the checksum
            yield level, ident & 0xFFFF, data[start : start + length]


def _mapi_properties(data: bytes) -> dict[int, tuple[int, bytes]]:
    """The first value of each MAPI property in an ``attMsgProps``/``attAttachment`` block, as
    (type, bytes) by property id ([MS-OXTNEF] 2.1.3.4). Named properties are read past but not
    kept (none of them is one this module uses); reading stops at the first property that does
    not fit or whose type is unknown."""
    out: dict[int, tuple[int, bytes]] = {}
    reader = _Reader(data)
    try:
        count = reader.uint32()
        for _ in range(min(count, len(data) // 4)):
            ptype, pid = reader.uint16(), reader.uint16()
            if pid >= _NAMED_PROPERTIES:
                reader.skip(16)  # the property set's GUID
                if reader.uint32() == 0:
                    reader.skip(4)  # a numeric name
                else:
                    reader.skip_padded(reader.uint32())  # a UTF-16 name
            base = ptype & ~_MULTI_VALUED
            variable = base in _VARIABLE_TYPES
            values = reader.uint32() if (ptype & _MULTI_VALUED or variable) else 1
            first = None
            for _ in range(min(values, reader.left() // 4 + 1)):
                if variable:
                    value = reader.take_padded(reader.uint32())
                elif base in _FIXED_SIZES:
                    value = reader.take(_FIXED_SIZES[base])
                else:
                    return out  # an unknown type: its size, and so the rest, cannot be read
                first = value if first is None else first
            if first is not None and pid < _NAMED_PROPERTIES:
                out.setdefault(pid, (base, first))
    except ValueError:
        pass  # cut short: keep what was read
    return out


class _Reader:
    """Little-endian reads from a bytes value that raise ValueError past its end."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.offset = 0

    def left(self) -> int:
        return len(self.data) - self.offset

    def take(self, size: int) -> bytes:
        if size > self.left():
            raise ValueError("past the end")
        self.offset += size
        return self.data[self.offset - size : self.offset]

    def take_padded(self, size: int) -> bytes:
        value = self.take(size)
        self.skip(-size % 4)
        return value

    def skip(self, size: int) -> None:
        self.take(size)

    def skip_padded(self, size: int) -> None:
        self.take_padded(size)

    def uint16(self) -> int:
        return int.from_bytes(self.take(2), "little")

    def uint32(self) -> int:
        return int.from_bytes(self.take(4), "little")


def _body(
    message: dict[int, tuple[int, bytes]], body: bytes, codepage: int
) -> tuple[str | None, str | None]:
    """(HTML, plain text) of the message, at most one of them: its HTML body, else the HTML an
    RTF body encapsulates, else its plain-text body, else the text of its RTF body."""
    html = message.get(_PR_BODY_HTML)
    if html is not None:
        return _string(html, codepage), None
    rtf_body = b""
    compressed = message.get(_PR_RTF_COMPRESSED)
    if compressed is not None:
        try:
            rtf_body = rtf.decompress(compressed[1], _MAX_RTF_BYTES)
        except ValueError:
            rtf_body = b""
    if rtf_body:
        encapsulated = rtf.html_from_rtf(rtf_body)
        if encapsulated is not None:
            return encapsulated, None
    plain = message.get(_PR_BODY)
    if plain is not None:
        return None, _string(plain, codepage)
    if body:
        return None, _decode(body.rstrip(b"\0"), codepage)
    if rtf_body:
        return None, rtf.text_from_rtf(rtf_body)
    return None, None


def _file(attachment: _Attachment, index: int, codepage: int) -> TnefFile | None:
    props = attachment.props
    data = attachment.data
    if data is None and _PR_ATTACH_DATA in props:
        ptype, value = props[_PR_ATTACH_DATA]
        # PT_OBJECT: the interface's GUID, then the object (an embedded message's own TNEF, an
        # OLE compound file); offered as its bytes.
        data = value[16:] if ptype == _PT_OBJECT else value
    if data is None:
        return None  # a placeholder without content (an OLE picture's rendering, say)
    # The long name first: attAttachTitle is often its 8.3 short form.
    name = (
        _text(props, _PR_ATTACH_LONG_FILENAME, codepage)
        or _decode(attachment.title.split(b"\0", 1)[0], codepage).strip()
        or _text(props, _PR_ATTACH_FILENAME, codepage)
        or _text(props, _PR_DISPLAY_NAME, codepage)
        or f"attachment-{index}"
    )
    mime_type = _text(props, _PR_ATTACH_MIME_TAG, codepage).lower()
    if not _is_media_type(mime_type):
        mime_type = "application/octet-stream"
    cid = _text(props, _PR_ATTACH_CONTENT_ID, codepage).strip("<>") or None
    return TnefFile(name, mime_type, data, cid)


def _text(props: dict[int, tuple[int, bytes]], pid: int, codepage: int) -> str:
    """The string property ``pid`` without surrounding blanks; "" when it is missing."""
    return _string(props[pid], codepage).strip() if pid in props else ""


def _is_media_type(value: str) -> bool:
    kind, slash, subtype = value.partition("/")
    return bool(slash and kind.isascii() and kind.isalnum() and subtype) and " " not in value


def _string(prop: tuple[int, bytes], codepage: int) -> str:
    """A string property's text: PT_UNICODE is UTF-16LE, PT_STRING8 (and PT_BINARY, in which
    Outlook stores PR_BODY_HTML) is in the message's code page; the terminating NUL dropped."""
    ptype, value = prop
    if ptype == _PT_UNICODE:
        return value.decode("utf-16-le", "replace").split("\0", 1)[0]
    return _decode(value.split(b"\0", 1)[0], codepage)


def _integer(prop: tuple[int, bytes] | None) -> int:
    if prop is None or len(prop[1]) < 4:
        return 0
    return int.from_bytes(prop[1][:4], "little")


def _decode(value: bytes, codepage: int) -> str:
    return value.decode(codepage_codec(codepage), "replace")


__all__ = ["MEDIA_TYPES", "TnefContent", "TnefFile", "is_tnef", "read_tnef"]

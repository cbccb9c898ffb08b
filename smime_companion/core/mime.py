"""Reading MIME on the raw bytes: headers, content types, multipart bodies, transfer encodings.

Signed content must be verified exactly as it was signed, and Python's ``email`` package changes
bytes when it re-serialises a part (header spacing, refolding, a trailing CRLF, ``>From``). So this
module never re-serialises: it slices the raw message at the boundaries and hands out those slices.
The ``email`` package is only used to parse single header values (parameters, RFC 2231, addresses).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import Message
from email.utils import getaddresses
from functools import cached_property

from smime_companion.errors import LimitExceeded, MalformedInput

_HEADER_END = re.compile(rb"\r?\n\r?\n")
_FIELD_NAME = re.compile(rb"^[!-9;-~]+$")  # printable ASCII except colon (RFC 5322 ftext)


@dataclass(frozen=True)
class Entity:
    """One MIME entity: its raw header section, its parsed fields and its raw body.

    ``fields`` keeps the order and the unfolded values (bytes decoded as UTF-8 with replacement,
    which is what RFC 6532 mail uses and keeps legacy 8-bit headers readable).
    """

    raw: bytes
    fields: tuple[tuple[str, str], ...]
    body: bytes

    def get(self, name: str) -> str | None:
        """The first field of that name (case-insensitive), or None."""
        lname = name.lower()
        for key, value in self.fields:
            if key.lower() == lname:
                return value
        return None

    @cached_property
    def content_type(self) -> ContentType:
        # Cached: the walk in core.open asks for it several times per entity. cached_property
        # writes the instance __dict__ directly, which a frozen dataclass allows.
        return parse_content_type(self.get("Content-Type"))

    @property
    def transfer_encoding(self) -> str:
        return (self.get("Content-Transfer-Encoding") or "7bit").strip().lower()

    def decoded_body(self) -> bytes:
        """The body with its Content-Transfer-Encoding removed."""
        return decode_transfer_encoding(self.body, self.transfer_encoding)

    @property
    def from_addresses(self) -> tuple[str, ...]:
        return addresses(self.get("From"))


@dataclass(frozen=True)
class ContentType:
    """A parsed Content-Type: lower-cased ``type/subtype`` and its parameters."""

    mime_type: str
    params: tuple[tuple[str, str], ...]

    def param(self, name: str) -> str | None:
        lname = name.lower()
        for key, value in self.params:
            if key == lname:
                return value
        return None


def parse_entity(raw: bytes, max_header_bytes: int) -> Entity:
    """Split a MIME entity into header fields and body (LF or CRLF line ends).

    An entity that starts with an empty line has no header fields. Raises :class:`LimitExceeded`
    when the header section is larger than ``max_header_bytes`` and :class:`MalformedInput` when a
    header line is neither a field nor a continuation.
    """
    if raw.startswith(b"\r\n") or raw.startswith(b"\n"):
        return Entity(raw=raw, fields=(), body=raw[2:] if raw.startswith(b"\r\n") else raw[1:])
    match = _HEADER_END.search(raw, 0, max_header_bytes + 4)
    if match is None:
        if len(raw) > max_header_bytes:
            raise LimitExceeded(f"header section is larger than {max_header_bytes} bytes")
        header_bytes, body = raw, b""
    else:
        header_bytes, body = raw[: match.start()], raw[match.end() :]
    return Entity(raw=raw, fields=_parse_fields(header_bytes), body=body)


def _parse_fields(header_bytes: bytes) -> tuple[tuple[str, str], ...]:
    fields: list[tuple[bytes, list[bytes]]] = []
    for line in header_bytes.split(b"\n"):
        line = line.rstrip(b"\r")
        if not line:
            continue
        if line[:1] in (b" ", b"\t"):
            if not fields:
                raise MalformedInput("header section starts with a continuation line")
            fields[-1][1].append(line)
            continue
        name, sep, value = line.partition(b":")
        if not sep or not _FIELD_NAME.match(name.rstrip()):
            shown = line[:40].decode("ascii", "replace")
            raise MalformedInput(f"header line is not a field: {shown!r}")
        fields.append((name.rstrip(), [value]))
    return tuple(
        (
            name.decode("ascii"),
            b" ".join(part.strip() for part in parts).decode("utf-8", "replace"),
        )
        for name, parts in fields
    )


def parse_content_type(value: str | None) -> ContentType:
    """Parse a Content-Type value; a missing or unparsable one is ``text/plain`` (RFC 2045)."""
    if not value:
        return ContentType("text/plain", ())
    msg = Message()
    msg["Content-Type"] = value
    mime_type = msg.get_content_type()
    params: list[tuple[str, str]] = []
    for key, param in msg.get_params(failobj=[])[1:]:
        text = param if isinstance(param, str) else _rfc2231_text(param)
        params.append((key.lower(), text))
    return ContentType(mime_type, tuple(params))


def _rfc2231_text(param: tuple[str | None, str | None, str]) -> str:
    charset, _, text = param
    try:
        return text.encode("latin-1", "surrogateescape").decode(charset or "ascii", "replace")
    except LookupError:
        return text


def addresses(value: str | None) -> tuple[str, ...]:
    """The lower-cased addresses of an address-list header (From, To, Cc)."""
    if not value:
        return ()
    return tuple(addr.lower() for _, addr in getaddresses([value]) if "@" in addr)


def decode_transfer_encoding(body: bytes, encoding: str) -> bytes:
    """Remove a Content-Transfer-Encoding. Raises :class:`MalformedInput` on bad base64."""
    if encoding == "base64":
        # bytes.translate drops the line breaks in one C pass and one copy (split/join would
        # build a list object per line: megabytes for a large attachment).
        compact = body.translate(None, b" \t\r\n")
        if len(compact) % 4:
            # Tolerate missing padding (some gateways strip it); anything else is an error.
            compact += b"=" * (-len(compact) % 4)
        try:
            return base64.b64decode(compact, validate=True)
        except binascii.Error:
            raise MalformedInput(
                "the base64 body is corrupt (invalid characters or padding)"
            ) from None
    if encoding == "quoted-printable":
        return binascii.a2b_qp(body)
    return body


def multipart_parts(entity: Entity, max_parts: int) -> list[bytes]:
    """The raw bytes of each body part of a multipart entity, exactly as they appear.

    Per RFC 2046 the line break before a delimiter belongs to the delimiter, so it is not part of
    the preceding body part. Raises :class:`MalformedInput` without a boundary or without any
    delimiter, :class:`LimitExceeded` past ``max_parts``.
    """
    boundary = entity.content_type.param("boundary")
    if not boundary:
        raise MalformedInput(f"{entity.content_type.mime_type} has no boundary parameter")
    delimiter = b"--" + boundary.encode("utf-8", "replace")
    body = entity.body
    parts: list[bytes] = []
    start: int | None = None  # where the current part began, None before the first delimiter
    closed = False
    for found in _delimiter_lines(body, delimiter):
        line_start, line_end, is_close = found
        if start is not None:
            parts.append(body[start:line_start])
            if len(parts) > max_parts:
                raise LimitExceeded(f"more than {max_parts} MIME parts")
        if is_close:
            closed = True
            break
        start = line_end
    if not closed and start is not None:  # no close delimiter: take the rest, as clients do
        parts.append(body[start:])
    if not parts:
        mime_type = entity.content_type.mime_type
        raise MalformedInput(f"{mime_type} body has no part delimited by its boundary")
    return parts


def _delimiter_lines(body: bytes, delimiter: bytes) -> Iterator[tuple[int, int, bool]]:
    """(start, end, is_close) of each delimiter line: ``--boundary`` at the start of a line,
    optionally ``--`` (the close delimiter), optional transport padding, then the line end.

    ``start`` includes the line break before the delimiter (RFC 2046: it belongs to the
    delimiter); ``end`` is just after the delimiter line's own line break. A plain ``find``
    loop: a regular expression anchored on line starts is several times slower here.
    """
    pos = 0
    size = len(body)
    while (i := body.find(delimiter, pos)) >= 0:
        pos = i + 1
        if i == 0:
            start = 0
        elif body[i - 1] == 0x0A:  # "\n"
            start = i - 2 if i >= 2 and body[i - 2] == 0x0D else i - 1
        else:
            continue
        k = i + len(delimiter)
        is_close = body.startswith(b"--", k)
        if is_close:
            k += 2
        while k < size and body[k] in (0x20, 0x09):
            k += 1
        if body.startswith(b"\r\n", k):
            end = k + 2
        elif body.startswith(b"\n", k) or k == size:
            end = min(k + 1, size)
        else:
            continue  # the boundary text goes on: not a delimiter line
        yield start, end, is_close
        pos = end


def to_crlf(data: bytes) -> bytes:
    """Canonical CRLF line ends (RFC 5751 section 3.1.1): every bare LF becomes CRLF."""
    line_feeds = data.count(b"\n")
    if line_feeds == 0 or line_feeds == data.count(b"\r\n"):
        return data  # already canonical: no copy of a possibly large entity
    return re.sub(rb"(?<!\r)\n", b"\r\n", data)

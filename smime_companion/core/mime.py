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
from dataclasses import dataclass
from email.message import Message
from email.utils import getaddresses

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

    @property
    def content_type(self) -> ContentType:
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
        compact = b"".join(body.split())
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
    # Delimiter lines: at the start of the body or after a line break, then optional "--",
    # then optional transport padding (whitespace) and the end of the line.
    pattern = re.compile(
        rb"(?:\A|\r?\n)" + re.escape(delimiter) + rb"(--)?[ \t]*(?:\r?\n|\Z)",
    )
    parts: list[bytes] = []
    start: int | None = None
    for match in pattern.finditer(body):
        if start is not None:
            parts.append(body[start : match.start()])
            if len(parts) > max_parts:
                raise LimitExceeded(f"more than {max_parts} MIME parts")
        if match.group(1):  # the close delimiter
            start = None
            break
        start = match.end()
    else:
        if start is not None:  # no close delimiter: take the rest, as mail clients do
            parts.append(body[start:])
    if not parts:
        raise MalformedInput(
            f"{entity.content_type.mime_type} body has no part delimited by its boundary"
        )
    return parts


def to_crlf(data: bytes) -> bytes:
    """Canonical CRLF line ends (RFC 5751 section 3.1.1): every bare LF becomes CRLF."""
    if b"\n" not in data:
        return data
    return re.sub(rb"(?<!\r)\n", b"\r\n", data)

"""Reading MIME on the raw bytes: headers, content types, multipart bodies, transfer encodings.

Signed content must be verified exactly as it was signed, and Python's ``email`` package changes
bytes when it re-serialises a part (header spacing, refolding, a trailing CRLF, ``>From``). So this
module never re-serialises: it slices the raw message at the boundaries and hands out those slices.
The ``email`` package is only used to parse single header values (parameters, RFC 2231, addresses).
"""

from __future__ import annotations

import binascii
import re
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import Message
from email.utils import getaddresses, parsedate_to_datetime
from functools import cached_property

from smime_companion.core.charsets import decode_header_bytes, decode_mail_text, guessed_codec
from smime_companion.errors import LimitExceeded, MalformedInput

_HEADER_END = re.compile(rb"\r?\n\r?\n")
# A whole message as a MIME part: RFC 2046's, and RFC 6532's with UTF-8 headers.
MESSAGE_TYPES = frozenset({"message/rfc822", "message/global"})
_FIELD_NAME = re.compile(rb"^[!-9;-~]+$")  # printable ASCII except colon (RFC 5322 ftext)


@dataclass(frozen=True)
class Entity:
    """One MIME entity: its raw bytes, its parsed header fields and where its body starts.

    ``fields`` keeps the order and the unfolded values (bytes decoded as UTF-8 with replacement,
    which is what RFC 6532 mail uses and keeps legacy 8-bit headers readable). The body is not
    copied out of ``raw`` unless :attr:`body` is read: opening a large message works on ``raw``.
    """

    raw: bytes
    fields: tuple[tuple[str, str], ...]
    body_start: int = 0
    # True when the content began with a line that is not a header field, so that all of it is
    # body (see :func:`parse_entity`'s ``as_content``).
    headerless: bool = False

    @cached_property
    def body(self) -> bytes:
        """The raw body (a copy of the end of ``raw``, made on first use)."""
        return self.raw[self.body_start :] if self.body_start else self.raw

    def get(self, name: str) -> str | None:
        """The first field of that name (case-insensitive), or None."""
        return first_field(self.fields, name)

    @cached_property
    def content_type(self) -> ContentType:
        # Cached: the walk in core.open asks for it several times per entity. cached_property
        # writes the instance __dict__ directly, which a frozen dataclass allows.
        if self.headerless and b"\0" in self.raw:
            # Content without a header section is text/plain by RFC 2045's default, but a
            # signed PDF or image (an Italian ``document.pdf.p7m``) is not text: a NUL byte
            # says so, and the content is offered as a file instead of shown as garbage.
            return ContentType("application/octet-stream", ())
        return parse_content_type(self.get("Content-Type"))

    @property
    def transfer_encoding(self) -> str:
        """The Content-Transfer-Encoding's token, lower case: as mail readers read it, also when
        a sender quoted it or wrote something after it (``"base64"``, ``base64; x``,
        ``quoted-printable (sic)``)."""
        value = self.get("Content-Transfer-Encoding") or ""
        token = _TRANSFER_ENCODING.match(value)
        return token.group(1).lower() if token is not None else "7bit"

    def decoded_body(self) -> bytes:
        """The body with its Content-Transfer-Encoding removed. Raises :class:`MalformedInput`
        for corrupt base64."""
        encoding = self.transfer_encoding
        if encoding == "base64":
            # Decoded straight from ``raw``: no copy of a possibly large encoded body.
            return _decode_base64(self.raw, self.body_start)
        if "body" in self.__dict__ or not self.body_start:
            return decode_transfer_encoding(self.body, encoding)
        # Not through the cached property: the copy is dropped with the caller's result.
        return decode_transfer_encoding(self.raw[self.body_start :], encoding)

    @property
    def sender(self) -> Sender:
        """The entity's :class:`Sender` (the one From rule)."""
        return sender_of(self.fields)


# The token of a Content-Transfer-Encoding, after blanks and an opening quote.
_TRANSFER_ENCODING = re.compile(r"""[\s"']*([A-Za-z0-9_.+-]+)""")


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


def parse_entity(
    raw: bytes,
    max_header_bytes: int,
    *,
    as_content: bool = False,
    received: bool = False,
    enclosing: tuple[bytes, int] | None = None,
) -> Entity:
    """Split a MIME entity into header fields and body (LF or CRLF line ends).

    An entity that starts with an empty line has no header fields. Raises :class:`LimitExceeded`
    when the header section is larger than ``max_header_bytes`` and :class:`MalformedInput` when a
    header line is neither a field nor a continuation.

    ``as_content`` reads the content of a MIME part or of an S/MIME layer as mail readers do:
    the header section ends at a line that is neither a field nor a continuation and that no
    field follows (one that fields follow continues the field before it), and
    content whose first line is not a field has no header section at all (``headerless``: all
    of it is body, text/plain by RFC 2045's default). Senders make such content: PHP's
    ``openssl_pkcs7_sign``/``openssl_pkcs7_encrypt`` and ``openssl smime`` without ``-text``
    sign or encrypt a bare text file. A whole message and a draft stay strict.

    ``received`` reads a whole message as it arrived: a line inside its header section that is
    neither a field nor a continuation (a field folded without its leading blank, as in
    ``References: <a@x>, <b.\nc@x>``, or a relay's stray line) is read as a continuation of the
    field before it when more fields follow, as mail readers keep such messages readable, and
    otherwise starts the body, rather than making the message malformed. Its first line must
    still be a field; a draft stays strict. Content (``as_content``) is read the same way.

    ``enclosing`` (the raw bytes of the multipart holding the entity, and where its body
    starts) is where a charset for raw 8-bit header bytes is looked for when the entity's own
    section and body name none: a Shift_JIS file name above a PDF, beside a Shift_JIS letter.
    """
    if raw.startswith(b"\r\n") or raw.startswith(b"\n"):
        return Entity(raw=raw, fields=(), body_start=2 if raw.startswith(b"\r\n") else 1)
    match = _HEADER_END.search(raw, 0, max_header_bytes + 4)
    if match is None:
        if len(raw) > max_header_bytes:
            if as_content and not starts_with_field(raw):
                return Entity(raw=raw, fields=(), headerless=True)
            raise LimitExceeded(f"header section is larger than {max_header_bytes} bytes")
        header_bytes, body_start = raw, len(raw)
    else:
        header_bytes, body_start = raw[: match.start()], match.end()
    fields, stopped_at = _parse_fields(
        header_bytes,
        stop_at_non_field=as_content,
        stray_lines_continue=received,
        body=(raw, body_start),
        enclosing=enclosing,
    )
    if stopped_at is None:
        return Entity(raw=raw, fields=fields, body_start=body_start)
    return Entity(raw=raw, fields=fields, body_start=stopped_at, headerless=not fields)


def starts_with_field(raw: bytes) -> bool:
    """Whether the first line of ``raw`` is a header field (``name:``)."""
    name, sep, _ = raw[:1000].partition(b":")
    return bool(sep) and b"\n" not in name and _FIELD_NAME.match(name.rstrip()) is not None


def _parse_fields(
    header_bytes: bytes,
    *,
    stop_at_non_field: bool,
    stray_lines_continue: bool = False,
    body: tuple[bytes, int] = (b"", 0),
    enclosing: tuple[bytes, int] | None = None,
) -> tuple[tuple[tuple[str, str], ...], int | None]:
    """The fields of a header section, and None; or, with ``stop_at_non_field`` or
    ``stray_lines_continue``, the fields before a line that is not one and that line's offset
    (where the body starts). In those two modes a stray line between fields (a field folded
    without its leading blank, an Exchange diagnostic's second line, a relay's junk line)
    continues the field before it, as readers keep such a section whole; only one after the
    last field ends the section there. Strict, a stray line raises."""
    lines = header_bytes.split(b"\n")
    last_field: int | None = None  # found at the first stray line: most sections have none
    fields: list[tuple[bytes, list[bytes]]] = []
    offset = 0
    for index, line in enumerate(lines):
        start, offset = offset, offset + len(line) + 1
        line = line.rstrip(b"\r")
        if not line:
            continue
        if line[:1] in (b" ", b"\t"):
            if not fields:
                if stop_at_non_field:
                    return (), start
                raise MalformedInput("header section starts with a continuation line")
            fields[-1][1].append(line)
            continue
        name, sep, value = line.partition(b":")
        if not sep or not _FIELD_NAME.match(name.rstrip()):
            if fields and (stop_at_non_field or stray_lines_continue):
                if last_field is None:
                    last_field = _last_field_index(lines)
                if index < last_field:
                    fields[-1][1].append(line)  # more fields follow: it continues this one
                    continue
            if stop_at_non_field or (stray_lines_continue and fields):
                return _decoded(fields, body, enclosing), start
            shown = line[:40].decode("ascii", "replace")
            raise MalformedInput(f"header line is not a field: {shown!r}")
        fields.append((name.rstrip(), [value]))
    return _decoded(fields, body, enclosing), None


def _is_field(line: bytes) -> bool:
    """Whether ``line`` (no line end, not a continuation) starts a header field."""
    name, sep, _ = line.partition(b":")
    return bool(sep) and _FIELD_NAME.match(name.rstrip()) is not None


def _last_field_index(lines: list[bytes]) -> int:
    """The index of the last line of ``lines`` that starts a header field, or -1."""
    for index in range(len(lines) - 1, -1, -1):
        line = lines[index].rstrip(b"\r")
        if line and line[:1] not in (b" ", b"\t") and _is_field(line):
            return index
    return -1


def _decoded(
    fields: list[tuple[bytes, list[bytes]]],
    body: tuple[bytes, int],
    enclosing: tuple[bytes, int] | None = None,
) -> tuple[tuple[str, str], ...]:
    # Values are UTF-8 (RFC 6532), or raw 8-bit text of old mail: read in the charset the same
    # header section names for its content, or for a multipart the first its body names (the
    # text part of a KOI8-R letter with an attachment), or for a part the first its enclosing
    # multipart names (a sibling's), else as western text, else in the charset the unlabelled
    # body is guessed to be in (core.charsets.decode_header_bytes).
    values = [b" ".join(part.strip() for part in parts) for _, parts in fields]
    declared = guessed = None
    if any(not _is_utf8(value) for value in values):
        declared = _declared_charset(fields) or _body_charset(*body)
        if declared is None and enclosing is not None:
            declared = _body_charset(*enclosing)
        if declared is None:
            guessed = _guessed_charset(*body)
    return tuple(
        (name.decode("ascii"), decode_header_bytes(value, declared, guessed=guessed))
        for (name, _), value in zip(fields, values, strict=True)
    )


_CHARSET_PARAM = re.compile(rb"""charset\s*=\s*["']?([A-Za-z0-9_.:+-]{1,40})""", re.IGNORECASE)


def _declared_charset(fields: list[tuple[bytes, list[bytes]]]) -> str | None:
    """The charset parameter of the section's first Content-Type field when it names an 8-bit
    charset (us-ascii says nothing about raw 8-bit bytes), or None."""
    for name, parts in fields:
        if name.lower() == b"content-type":
            match = _CHARSET_PARAM.search(b" ".join(parts))
            label = match.group(1).decode("ascii") if match is not None else None
            return label if label is not None and label.lower() not in _UNINFORMATIVE else None
    return None


# How far into a body the charset of its first text part is looked for, and which labels say
# nothing about 8-bit bytes (a us-ascii part before the one in KOI8-R).
_BODY_CHARSET_WINDOW = 16 * 1024
_UNINFORMATIVE = frozenset({"us-ascii", "ascii", "utf-8", "utf8"})


def _is_utf8(value: bytes) -> bool:
    """Whether ``value`` is ASCII or UTF-8 (RFC 6532): it needs no charset to be read."""
    if value.isascii():
        return True
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _guessed_charset(raw: bytes, start: int) -> str | None:
    """The charset the start of an unlabelled 8-bit body reads in (core.charsets guesses it:
    a body says more than a subject of one word), or None when it is ASCII or UTF-8."""
    sample = raw[start : start + _BODY_CHARSET_WINDOW]
    if sample.isascii():
        return None
    try:
        sample.decode("utf-8")
    except UnicodeDecodeError as cut:
        if cut.start < len(sample) - 4:  # not merely a character cut at the window's end
            return guessed_codec(sample)
    return None


def _body_charset(raw: bytes, start: int) -> str | None:
    """The first charset parameter in the start of ``raw[start:]`` that names an 8-bit
    charset, or None."""
    for match in _CHARSET_PARAM.finditer(raw, start, start + _BODY_CHARSET_WINDOW):
        label = match.group(1).decode("ascii")
        if label.lower() not in _UNINFORMATIVE:
            return label
    return None


_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_SIMPLE_TYPE = re.compile(rf"\s*({_TOKEN}/{_TOKEN})\s*")
_MEDIA_TYPE = re.compile(rf"{_TOKEN}/{_TOKEN}")
# One parameter without RFC 2231 encoding, comments or quoted-pair escapes.
_SIMPLE_PARAM = re.compile(rf';\s*({_TOKEN})\s*=\s*(?:"([^"\\]*)"|([^\s;"()\\]+))\s*')
_TRAILING = re.compile(r"[;\s]*")


def parse_content_type(value: str | None) -> ContentType:
    """Parse a Content-Type value; a missing or unparsable one is ``text/plain`` (RFC 2045)."""
    if not value:
        return ContentType("text/plain", ())
    # The common shape (``type/subtype; name=value; name="quoted"``) is read with two regular
    # expressions; everything else (RFC 2231, comments, escapes, odd syntax) goes through the
    # email package, which costs ten times more but knows every corner of the syntax.
    simple = _parse_simple_content_type(value)
    if simple is not None:
        return simple
    msg = Message()
    msg["Content-Type"] = value
    mime_type = msg.get_content_type()
    if not _MEDIA_TYPE.fullmatch(mime_type):
        # The email package takes anything around one "/" (a CR, a space, any letter); RFC 2045
        # section 5.2: a syntactically invalid Content-Type is read as text/plain.
        mime_type = "text/plain"
    params: list[tuple[str, str]] = []
    try:
        parsed = msg.get_params(failobj=[])[1:]
    except (TypeError, ValueError, IndexError, LookupError):
        # The email package's RFC 2231 joining raises on some broken values (``name*`` beside
        # ``name*0`` makes it sort None against 0): read every parameter as written instead.
        return ContentType(mime_type, _parameters_as_written(value))
    extended: list[tuple[str, str]] = []
    for key, param in parsed:
        if isinstance(param, str):
            params.append((key.lower(), param))
        else:
            extended.append((key.lower(), _rfc2231_text(param)))
    # A name given both ways (``filename="report.pdf"; filename*=utf-8''r%C3%A9port.pdf``, the
    # plain form for readers that know no RFC 2231) means the extended one, the only one that
    # can say the name exactly; param() takes the first, so it comes first.
    return ContentType(mime_type, tuple(extended + params))


def _parameters_as_written(value: str) -> tuple[tuple[str, str], ...]:
    """Each ``name=value`` after the first ``;`` of a Content-Type, unquoted, nothing decoded."""
    params = []
    for piece in value.split(";")[1:]:
        key, sep, text = piece.partition("=")
        if sep and key.strip():
            params.append((key.strip().lower(), text.strip().strip('"')))
    return tuple(params)


def _parse_simple_content_type(value: str) -> ContentType | None:
    """The Content-Type when it has the common simple shape, else None."""
    match = _SIMPLE_TYPE.match(value)
    if match is None:
        return None
    params: list[tuple[str, str]] = []
    pos = match.end()
    while pos < len(value):
        param = _SIMPLE_PARAM.match(value, pos)
        if param is None:
            break
        key = param.group(1)
        if "*" in key:
            return None  # RFC 2231 encoded or continued: the email package decodes it
        quoted = param.group(2)
        params.append((key.lower(), quoted if quoted is not None else param.group(3)))
        pos = param.end()
    if _TRAILING.fullmatch(value, pos) is None:
        return None
    return ContentType(match.group(1).lower(), tuple(params))


def _rfc2231_text(param: tuple[str | None, str | None, str]) -> str:
    charset, _, text = param
    try:
        raw = text.encode("latin-1", "surrogateescape")
    except UnicodeEncodeError:
        # Raw UTF-8 where RFC 2231 wants percent-escapes: our header fields are already decoded
        # from UTF-8, so the text is the value (found by bench/fuzz_open.py).
        return text
    # The charset is the sender's word: decoded as every other mail text is (core.charsets),
    # never with a codec that is no charset (zlib, idna, punycode).
    return decode_mail_text(raw, charset)


_DOT_ATOM_ADDRESS = r"[A-Za-z0-9%+_-]+(?:\.[A-Za-z0-9%+_-]+)*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"
_BARE_ADDRESS = re.compile(rf"\s*(?:<({_DOT_ATOM_ADDRESS})>|({_DOT_ATOM_ADDRESS}))\s*")


def address_pairs(value: str) -> list[tuple[str, str]]:
    """(display name, address) of each entry of an address-list header value, as
    :func:`email.utils.getaddresses` reads them.

    Raises :class:`MalformedInput` for a value the parser cannot read: the email package
    recurses once per nested comment ``(`` or group ``:``, so a few hundred of them (a "poison"
    header) would otherwise end in RecursionError, which no caller expects from a header.
    """
    try:
        return getaddresses([value])
    except RecursionError:
        raise MalformedInput(
            "an address field nests comments or groups too deeply to be read"
        ) from None


# No two parts of it can match the same characters: linear in the length of a hostile field.
_ONE_ANGLE_ADDRESS = re.compile(r"([^<>]*)<([^<>@\s]+@[^<>@\s]+)>\s*")


def shown_mailbox(value: str) -> tuple[str, str] | None:
    """(display name, address) of a decoded field that holds one ``name <address>``, the name
    unquoted: once RFC 2047 words are decoded, a comma inside a name (Exchange's
    ``=?utf-8?q?M=C3=BCller=2C_J=C3=B6rg?= <jm@example.de>``) would split it in two for the
    address parser. None for any other shape (parse those with :func:`address_pairs`)."""
    match = _ONE_ANGLE_ADDRESS.fullmatch(value)
    if match is None:
        return None
    name = match.group(1).strip()
    if len(name) >= 2 and name[0] == name[-1] == '"':
        name = name[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    return name, match.group(2)


def addresses(value: str | None) -> tuple[str, ...]:
    """The lower-cased addresses of an address-list header (From, To, Cc).

    Raises :class:`MalformedInput` for a value that cannot be read (see :func:`address_pairs`).
    """
    if not value:
        return ()
    bare = _BARE_ADDRESS.fullmatch(value)
    if bare is not None:  # one plain address: no need for the full RFC 5322 parser
        return ((bare.group(1) or bare.group(2)).lower(),)
    return tuple(addr.lower() for _, addr in address_pairs(value) if "@" in addr)


# A DNS label is at most 63 octets; longer "xn--" text is no label and is not decoded (punycode
# decoding costs the square of its length).
_MAX_LABEL = 63


def comparable_address(address: str) -> str:
    """``address`` in the form two addresses are compared in: lower case, NFC, and each ``xn--``
    label of the domain read as the Unicode label it stands for.

    A certificate names an internationalised domain with A-labels (rfc822Name is ASCII), while a
    From field may carry the U-labels (RFC 6532) or a SmtpUTF8Mailbox the reverse. Reading
    A-labels back is exact: unlike IDNA 2003's mapping (``ß`` to ``ss``), it never makes two
    different domains one."""
    local, at, domain = address.rpartition("@")
    if at and "xn--" in domain.lower():
        labels = []
        for label in domain.split("."):
            if label[:4].lower() == "xn--" and len(label) <= _MAX_LABEL:
                try:
                    label = label[4:].encode("ascii").decode("punycode")
                except UnicodeError:
                    pass  # not a valid A-label: compared as written
            labels.append(label)
        address = f"{local}@{'.'.join(labels)}"
    return unicodedata.normalize("NFC", address.lower())


def ascii_address(address: str) -> str:
    """``address`` with each non-ASCII label of its domain written as its A-label (``xn--``,
    punycode of the lower-case NFC label), the form every relay accepts; the local part as it
    is (only SMTPUTF8 can carry one outside ASCII)."""
    local, at, domain = address.rpartition("@")
    if not at or domain.isascii():
        return address
    labels = []
    for label in unicodedata.normalize("NFC", domain.lower()).split("."):
        labels.append(label if label.isascii() else "xn--" + label.encode("punycode").decode())
    return f"{local}@{'.'.join(labels)}"


def holds_address(addresses: Iterable[str], address: str) -> bool:
    """True when ``address`` is one of ``addresses``, compared as :func:`comparable_address`
    says (the one comparison of a signer's addresses with a From address)."""
    wanted = comparable_address(address)
    return any(comparable_address(a) == wanted for a in addresses)


@dataclass(frozen=True)
class Sender:
    """Who a header section says sent the message, under the one rule every part of the
    product applies (verification, display, the cache, the outbox): a message has a sender only
    when it has exactly one From field and that field holds exactly one address.

    ``field`` is the value of the first From field (the one shown and checked), or None when
    there is none; ``address`` the one address, lower-cased, when the rule holds; otherwise
    ``problem`` says in one line why there is no single sender.
    """

    field: str | None
    address: str | None
    problem: str | None

    @property
    def addresses(self) -> tuple[str, ...]:
        """The sender's address as a tuple (empty when the rule does not hold)."""
        return (self.address,) if self.address is not None else ()


def sender_of(fields: tuple[tuple[str, str], ...]) -> Sender:
    """The :class:`Sender` of a header section's ``fields``. Never raises."""
    values = [value for name, value in fields if name.lower() == "from"]
    if not values:
        return Sender(None, None, "the message has no From address")
    first = values[0]
    if len(values) > 1:
        return Sender(first, None, f"the message has {len(values)} From fields instead of one")
    try:
        found = addresses(first)
    except MalformedInput as exc:
        return Sender(first, None, f"the From field cannot be read: {exc}")
    if not found:
        return Sender(first, None, "the From field holds no address")
    if len(found) > 1:
        return Sender(first, None, f"the From field holds {len(found)} addresses instead of one")
    return Sender(first, found[0], None)


def decode_transfer_encoding(body: bytes, encoding: str) -> bytes:
    """Remove a Content-Transfer-Encoding. Raises :class:`MalformedInput` on bad base64."""
    if encoding == "base64":
        return _decode_base64(body, 0)
    if encoding == "quoted-printable":
        return binascii.a2b_qp(body)
    if encoding in _UUENCODE:
        return _decode_uuencode(body)
    return body


# The names old clients (Pegasus Mail, Mulberry, early Netscape) gave uuencoding as a transfer
# encoding; it was never standardised.
_UUENCODE = frozenset({"x-uuencode", "uuencode", "x-uue", "uue"})


def _decode_uuencode(body: bytes) -> bytes:
    """The data of a uuencoded body: the lines between "begin MODE NAME" (or from the start,
    when there is none) and "end"; a line that does not decode is left out."""
    lines = body.splitlines()
    start = next((i + 1 for i, line in enumerate(lines) if line.startswith(b"begin ")), 0)
    out = bytearray()
    for line in lines[start:]:
        if line.rstrip() == b"end":
            break
        try:
            out += binascii.a2b_uu(line)
        except binascii.Error:
            continue
    return bytes(out)


_B64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_B64_SPACE = b" \t\r\n"
_B64_SLICE = 1 << 20
_B64_TAIL_MAX = 4096


def _corrupt_base64() -> MalformedInput:
    return MalformedInput("the base64 body is corrupt (invalid characters or padding)")


# The first byte that is no base64 and no blank; the first blank line.
_NOT_BASE64 = re.compile(rb"[^A-Za-z0-9+/=\s]")
_BLANK_LINE = re.compile(rb"\n[ \t\r]*\n")


def base64_then_text(body: bytes) -> bytes | None:
    """A text part's base64 followed by plain lines (a mailing list's footer or a company's
    disclaimer added below it, a base64 body cut short and continued by hand): the base64
    decoded, then the rest as it is. None when nothing before such lines decodes."""
    content = body.lstrip()
    end = len(content)
    if (other := _NOT_BASE64.search(content)) is not None:
        end = content.rfind(b"\n", 0, other.start()) + 1
    if (blank := _BLANK_LINE.search(content, 0, end)) is not None:
        end = blank.start() + 1
    if not content[:end].strip():
        return None
    try:
        decoded = _decode_base64(content[:end], 0)
    except MalformedInput:
        return None
    rest = content[end:].lstrip(b"\r\n")
    return decoded + (b"\r\n" + rest if rest else b"")


def _decode_base64(data: bytes, start: int) -> bytes:
    """Decode the base64 text ``data[start:]``, line breaks and blanks ignored, without copying
    the (possibly large) text. Raises :class:`MalformedInput` on any other character, on text
    after the padding, or on a length no padding can mend."""
    corrupt = _corrupt_base64  # made only when needed: an exception costs microseconds to build
    size = len(data)
    if size - start <= _B64_SLICE:
        # Small (the usual case): drop the blanks in one copy and let binascii's strict mode
        # reject any other character and text after the padding, all in C.
        compact = data[start:].translate(None, _B64_SPACE)
        if len(compact) % 4:
            compact += b"=" * (-len(compact) % 4)  # tolerate padding stripped by a gateway
        try:
            return binascii.a2b_base64(compact, strict_mode=True)
        except binascii.Error:
            raise corrupt() from None
    # Large: never copy the text whole.
    # Validate slice by slice: deleting the alphabet leaves only blanks (a few percent).
    for offset in range(start, size, _B64_SLICE):
        others = data[offset : offset + _B64_SLICE].translate(None, _B64_ALPHABET)
        if others.translate(None, _B64_SPACE + b"="):
            raise corrupt()
    first_pad = data.find(b"=", start)
    if first_pad >= 0:
        # Padding ends the text: only blanks may follow it, and never kilobytes of them (which
        # also keeps this copy small).
        if size - first_pad > _B64_TAIL_MAX:
            raise corrupt()
        tail = data[first_pad:]
        if tail.translate(None, _B64_SPACE + b"=") or tail.count(b"=") > 2:
            raise corrupt()
    blanks = sum(data.count(bytes([c]), start) for c in _B64_SPACE)
    missing = -(size - start - blanks) % 4
    text: bytes | memoryview = memoryview(data)[start:]
    if missing:
        # Tolerate missing padding (some gateways strip it); a rare case, so a copy is fine.
        text = bytes(text) + b"=" * missing
    try:
        # Not strict mode: it skips the blanks we just accepted.
        return binascii.a2b_base64(text)
    except binascii.Error:
        raise corrupt() from None


def multipart_parts(entity: Entity, max_parts: int, boundary: str | None = None) -> list[bytes]:
    """The raw bytes of each body part of a multipart entity, exactly as they appear.

    Per RFC 2046 the line break before a delimiter belongs to the delimiter, so it is not part of
    the preceding body part. Raises :class:`MalformedInput` without a boundary or without any
    delimiter, :class:`LimitExceeded` past ``max_parts``. ``boundary`` replaces the one the
    Content-Type names (see :func:`boundary_in_body`).
    """
    boundary = boundary or entity.content_type.param("boundary")
    if not boundary:
        raise MalformedInput(f"{entity.content_type.mime_type} has no boundary parameter")
    delimiter = b"--" + boundary.encode("utf-8", "replace")
    # Sliced from ``raw`` directly: the body itself is never copied, only the parts are.
    body = entity.raw
    parts: list[bytes] = []
    start: int | None = None  # where the current part began, None before the first delimiter
    closed = False
    for found in _delimiter_lines(body, delimiter, entity.body_start):
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


# A line that reads as a delimiter: "--", a boundary, then a header field of a body part.
_DELIMITER_LIKE = re.compile(
    rb"^--([!-~]{1,70})\r?\n(?=content-[a-z-]+:)", re.IGNORECASE | re.MULTILINE
)


def boundary_in_body(entity: Entity) -> str | None:
    """The boundary a multipart's body uses, read off its first line that looks like a
    delimiter (``--`` and a boundary, then a ``Content-...`` field), for a multipart whose
    Content-Type names none or one its body never uses (a script that wrote two random
    boundaries, a gateway that rewrote one of them); None when no line looks like one."""
    found = _DELIMITER_LIKE.search(entity.raw, entity.body_start)
    return found.group(1).decode("ascii") if found is not None else None


def parts_as_read(entity: Entity, max_parts: int) -> list[bytes]:
    """The body parts of a multipart as a reader shows them: by its boundary, else by the one
    its body uses (:func:`boundary_in_body`). What is shown and what the hidden S/MIME parts
    are looked for in must be split alike. Raises as :func:`multipart_parts` does when neither
    delimits a part. (A multipart/signed is verified by its own boundary only.)"""
    try:
        return multipart_parts(entity, max_parts)
    except MalformedInput:
        boundary = boundary_in_body(entity)
        if boundary is None:
            raise
        return multipart_parts(entity, max_parts, boundary)


def _delimiter_lines(
    body: bytes, delimiter: bytes, begin: int = 0
) -> Iterator[tuple[int, int, bool]]:
    """(start, end, is_close) of each delimiter line: ``--boundary`` at the start of a line,
    optionally ``--`` (the close delimiter), optional transport padding, then the line end.

    ``start`` includes the line break before the delimiter (RFC 2046: it belongs to the
    delimiter); ``end`` is just after the delimiter line's own line break. A plain ``find``
    loop: a regular expression anchored on line starts is several times slower here. The search
    starts at ``begin`` (the body's offset in an entity's raw bytes).
    """
    pos = begin
    size = len(body)
    while (i := body.find(delimiter, pos)) >= 0:
        pos = i + 1
        if i == begin:
            start = begin
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


def header_date(value: str | None) -> datetime | None:
    """The Date header as an aware UTC datetime, or None when missing or unparsable.

    Beside RFC 5322's form, two that scripts and some old mailers write: an offset with a colon
    (``+01:00``, which the email package would drop, reading the time as UTC) and ISO 8601
    (``2026-12-07T10:00:00+01:00``). A time without a zone is taken as UTC."""
    if not value:
        return None
    if len(value) <= _LONGEST_DATE:
        value = _COLON_OFFSET.sub(r"\1\2", value)
    parsed: datetime | None
    try:
        parsed = parsedate_to_datetime(value)
    # OverflowError: a year too large for a C long, or one a time zone moves past 9999.
    except (TypeError, ValueError, IndexError, OverflowError):
        parsed = _iso_date(value)
    if parsed is None:
        return None
    if parsed.tzinfo is None:  # "-0000" means UTC with unknown local zone (RFC 5322)
        parsed = parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:  # a zone that moves the time past year 9999 (or before 1)
        return None


# "+01:00" at the end of a date (or before a trailing comment): RFC 5322 writes "+0100". Only
# looked for in a value of a date's length (a long one is no date anyone wrote).
_LONGEST_DATE = 200
_COLON_OFFSET = re.compile(r"(?<=\d\d:\d\d )([+-]\d\d):(\d\d)(?=\s*(?:\([^()]*\))?\s*$)")
# ISO 8601 as scripts write it: a date, "T" or a blank, a time, an optional zone.
_ISO_DATE = re.compile(
    r"\s*\d{4}-\d\d-\d\d[T ]\d\d:\d\d(?::\d\d(?:\.\d{1,6})?)?(?:Z|[+-]\d\d:?\d\d)?\s*"
)


def _iso_date(value: str) -> datetime | None:
    if _ISO_DATE.fullmatch(value) is None:
        return None
    try:
        return datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None


def first_field(fields: Sequence[tuple[str, str]], name: str) -> str | None:
    """The value of the first field of that name in ``fields`` (case-insensitive), or None."""
    lname = name.lower()
    return next((value for key, value in fields if key.lower() == lname), None)


# An RFC 2047 encoded word. Its text may hold raw spaces (some encoders write them) but never a
# "?", which also keeps a header full of unclosed "=?" openings linear to scan.
_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?]*)\?=")


def decode_encoded_words(value: str) -> str:
    """``value`` with RFC 2047 encoded words decoded, each with its charset as
    :func:`core.charsets.decode_mail_text` reads it; whitespace between two encoded words is
    dropped, and adjacent words in one charset are decoded together (encoders split a character
    across them). A broken word (bad base64) is left as it is. Never raises."""
    if "=?" not in value:
        return value
    out: list[str] = []
    pending: tuple[str, bytearray] | None = None  # adjacent words' bytes, not yet decoded
    last_was_word = False
    pos = 0
    for match in _ENCODED_WORD.finditer(value):
        between = value[pos : match.start()]
        word = _encoded_word_bytes(match)
        joins = last_was_word and word is not None and not between.strip()
        if pending is not None and not (joins and word is not None and word[0] == pending[0]):
            out.append(decode_mail_text(bytes(pending[1]), pending[0]))
            pending = None
        if not joins:
            out.append(between)
        if word is None:
            out.append(match.group(0))
        else:
            if pending is None:
                pending = (word[0], bytearray())
            pending[1].extend(word[1])
        last_was_word = word is not None
        pos = match.end()
    if pending is not None:
        out.append(decode_mail_text(bytes(pending[1]), pending[0]))
    out.append(value[pos:])
    return "".join(out)


def _encoded_word_bytes(match: re.Match[str]) -> tuple[str, bytes] | None:
    """The charset (without an RFC 2231 language) and the bytes of one encoded word, or None
    when its base64 is broken or not ASCII."""
    charset, encoding, text = match.group(1).split("*")[0].lower(), match.group(2), match.group(3)
    if encoding in "qQ":
        return charset, binascii.a2b_qp(text.encode("utf-8"), header=True)
    data = "".join(text.split())
    try:
        return charset, binascii.a2b_base64(data + "=" * (-len(data) % 4), strict_mode=True)
    except ValueError:  # binascii.Error, or a non-ASCII character (raw 8-bit header bytes)
        return None

"""Building the MIME that ``core.seal`` signs and encrypts.

Three jobs, all pure (bytes in, bytes out):

* :func:`parse_draft` reads a draft (an RFC 5322 message) and splits it into the message header
  fields and a MIME tree.
* :func:`payload_entity` writes that tree back out *transport-safe*: CRLF line ends, 7-bit only
  (quoted-printable for text, base64 for everything else that is not already 7-bit clean), no
  trailing whitespace, no line starting with ``From `` and no line longer than SMTP allows. A
  relay may rewrite any of those, and a signature over the original bytes would then fail.
* Header protection (RFC 9788): the cryptographic payload carries the real header fields and the
  ``hp`` Content-Type parameter; :func:`outer_header_fields` gives the header fields shown outside,
  with the baseline confidentiality policy applied to encrypted messages, whose main body parts
  then begin with the obscured Subject for readers without header protection
  (:mod:`core.legacy_display`).
"""

from __future__ import annotations

import base64
import codecs
import email.header
import email.message
import email.policy
import email.utils
import quopri
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from email import errors as email_errors
from email.parser import BytesParser

from smime_companion.core import legacy_display
from smime_companion.core.charsets import decode_mail_text
from smime_companion.core.mime import address_pairs
from smime_companion.errors import MalformedInput, SealError

# SMTP limits a line to 998 octets plus CRLF (RFC 5321 sec 4.5.3.1.6).
MAX_LINE = 998
# The outer Subject of an encrypted message under RFC 9788's baseline policy (hcp_baseline).
OBSCURED_SUBJECT = "[...]"
# Header fields the baseline policy removes from the outside of an encrypted message.
_BASELINE_REMOVED = frozenset({"comments", "keywords"})
# Bcc never appears in any copy: RecipientInfos aside, the header itself would reveal them.
_NEVER_COPIED = frozenset({"bcc", "resent-bcc"})
# Header fields a mail client keeps in its own drafts and removes when it sends: Thunderbird's
# Fcc (the IMAP account and server of the Sent folder), X-Identity-Key and X-Mozilla-Draft-Info;
# Apple Mail's draft markers; KMail's, Evolution's and Claws Mail's transport and folder
# choices; the status lines of an mbox. Sent on, they would tell every recipient the sender's
# account names, servers and folders, which the client itself never sends.
_DRAFT_ONLY_FIELDS = frozenset(
    {
        "fcc",
        "x-identity-key",
        "x-account-key",
        "x-uniform-type-identifier",
        "x-universally-unique-identifier",
        "x-unsent",
        "x-draft-info",
        "status",
        "x-status",
        "x-keywords",
        "x-uid",
        "lines",
    }
)
_DRAFT_ONLY_PREFIXES = ("x-mozilla-", "x-apple-", "x-kmail-", "x-evolution-", "x-claws-")

_HEADER_LINE = re.compile(rb"^[!-9;-~]+[ \t]*:")
_END_OF_HEADER = re.compile(rb"\r?\n\r?\n")


@dataclass(frozen=True)
class Draft:
    """A parsed draft.

    ``header_fields`` are the message's own header fields (everything except the structural
    ``Content-*`` and ``MIME-Version`` fields and those only the draft's mail client reads, such
    as Thunderbird's ``Fcc``), in order, each as ``(name, value)`` with the value
    unfolded and decoded to text. ``root`` is the parsed MIME tree of the body.
    """

    header_fields: tuple[tuple[str, str], ...]
    root: email.message.Message

    def values(self, name: str) -> tuple[str, ...]:
        """Every value of header field ``name`` (case-insensitive), in order."""
        lname = name.lower()
        return tuple(v for k, v in self.header_fields if k.lower() == lname)

    def addresses(self, *names: str) -> tuple[str, ...]:
        """The addresses (lower-cased, de-duplicated, in order) named by the given fields."""
        return addresses_in(v for name in names for v in self.values(name))


def addresses_in(values: Iterable[str]) -> tuple[str, ...]:
    """The bare addresses in address-list header values, lower-cased and de-duplicated.

    Raises :class:`SealError` for a value that holds something that is not an address.
    """
    seen: list[str] = []
    for value in values:
        for addr in _value_addresses(value):
            if "@" not in addr or any(c.isspace() for c in addr):
                raise SealError(f"draft names an invalid address {addr!r}")
            if addr.lower() not in seen:
                seen.append(addr.lower())
    return tuple(seen)


# Characters after which a header value is no longer a plain list of "addr" / "Name <addr>".
_ADDRESS_SYNTAX = frozenset('"()\\:;')


def _value_addresses(value: str) -> list[str]:
    """The addresses of one address-list value. Plain lists (no quotes, comments, groups or
    escapes) are split directly; anything else goes through the full RFC 5322 parser, which is
    several times slower."""
    if _ADDRESS_SYNTAX.isdisjoint(value):
        out = []
        for item in value.split(","):
            item = item.strip()
            if "<" in item:
                start, stop = item.rfind("<"), item.rfind(">")
                if stop < start or item[stop + 1 :].strip():
                    break  # not "Name <addr>": let the full parser judge it
                item = item[start + 1 : stop].strip()
            if item:
                out.append(item)
        else:
            return out
    return [addr for _name, addr in _address_pairs(value) if addr]


def _address_pairs(value: str) -> list[tuple[str, str]]:
    """:func:`core.mime.address_pairs`, its refusal as a :class:`SealError`."""
    try:
        return address_pairs(value)
    except MalformedInput as exc:
        raise SealError(f"draft {exc}") from None


def parse_draft(raw: bytes) -> Draft:
    """Parse a draft message.

    Returns a :class:`Draft`. Raises :class:`SealError` when the bytes are not a MIME message (no
    header section, a header line that is not a field, a bare CR or a NUL in the header section,
    a broken multipart) or have no From field.
    """
    if b"\n" not in raw:  # a classic Mac file: CR alone ends every line
        raw = raw.replace(b"\r", b"\r\n")
    raw = raw.lstrip(b"\r\n")
    if not raw.strip():
        raise SealError("draft is empty")
    if not _HEADER_LINE.match(raw.split(b"\n", 1)[0]):
        raise SealError("draft is not a MIME message: it does not start with a header section")
    end = _END_OF_HEADER.search(raw)
    head, body = (raw[: end.end()], raw[end.end() :]) if end else (raw, b"")
    _refuse_hidden_line_breaks(head)
    raw_fields = _header_fields(head)
    root = email.message.Message(policy=email.policy.compat32)
    for name, value in raw_fields:
        if _is_structural(name):
            root[name] = value
    if root.get_content_maintype() in ("multipart", "message"):
        root = BytesParser(policy=email.policy.compat32).parsebytes(raw)
        _check_defects(root)
    else:
        # A single-part body needs no MIME parsing (the email parser would walk every line of
        # it): attach it as the parser would, octets as surrogate escapes.
        root.set_payload(body.decode("ascii", "surrogateescape"))
    fields = tuple(
        (name, _unfold(_header_text(value)))
        for name, value in raw_fields
        if not _is_structural(name) and not _is_draft_only(name)
    )
    draft = Draft(header_fields=fields, root=root)
    # The one From rule (core.mime.sender_of): the signature vouches for exactly one sender.
    senders = draft.values("From")
    if not senders:
        raise SealError("draft has no From header")
    if len(senders) > 1:
        raise SealError(f"draft has {len(senders)} From fields; exactly one is needed")
    found = _value_addresses(senders[0])
    if not found:
        raise SealError("draft's From header holds no address")
    if len(found) > 1:
        raise SealError(f"draft's From header holds {len(found)} addresses; exactly one is needed")
    return draft


_BARE_CR = re.compile(rb"\r(?!\n)")


def _refuse_hidden_line_breaks(head: bytes) -> None:
    """Raise :class:`SealError` for a header section holding a bare CR or a NUL.

    Programs disagree on a bare CR: our field reader keeps it inside the value, the email
    package and smtplib (which turns every bare CR into CRLF before DATA) end the line there.
    Sealed as it is, ``Subject: x<CR>Bcc: y`` would be checked as one Subject and delivered as
    two fields. A NUL ends the line for C programs on the way. Such a draft is refused rather
    than guessed at: the user saves it again."""
    for name, pattern in (("a bare CR", _BARE_CR), ("a NUL byte", re.compile(rb"\x00"))):
        found = pattern.search(head)
        if found is not None:
            line_start = head.rfind(b"\n", 0, found.start()) + 1
            field = head[line_start : found.start()].split(b":", 1)[0][:40]
            shown = field.decode("ascii", "backslashreplace")
            raise SealError(
                f"draft header {shown!r} holds {name}, which mail programs read as a line "
                "break or an end; save the draft again from your mail client"
            )


def _header_fields(head: bytes) -> list[tuple[str, str]]:
    """The fields of a header section as ``(name, raw value)``; folded lines stay joined by CRLF
    and octets stay surrogate escapes (as the email package keeps them). Raises
    :class:`SealError` for a line that is neither a field nor a continuation."""
    fields: list[tuple[str, str]] = []
    for line in head.split(b"\n"):
        line = line[:-1] if line.endswith(b"\r") else line
        if not line:
            continue
        text = line.decode("ascii", "surrogateescape")
        if text[0] in " \t" and fields:
            name, value = fields[-1]
            fields[-1] = (name, value + "\r\n" + text)
            continue
        name, colon, value = text.partition(":")
        if not colon or not _HEADER_LINE.match(line):
            shown = text[:40].encode("ascii", "backslashreplace").decode("ascii")
            raise SealError(f"draft is not a MIME message: bad header line {shown!r}")
        fields.append((name.rstrip(" \t"), value.lstrip(" \t")))
    return fields


def _check_defects(part: email.message.Message) -> None:
    """Refuse a draft whose structure the parser had to guess: we would sign the guess."""
    fatal = (
        email_errors.MissingHeaderBodySeparatorDefect,
        email_errors.NoBoundaryInMultipartDefect,
        email_errors.StartBoundaryNotFoundDefect,
        email_errors.MultipartInvariantViolationDefect,
        email_errors.FirstHeaderLineIsContinuationDefect,
        email_errors.MisplacedEnvelopeHeaderDefect,
    )
    for defect in part.defects:
        if isinstance(defect, fatal):
            raise SealError(f"draft is not a well-formed MIME message: {type(defect).__name__}")
    # is_multipart, never get_payload(), to ask: get_payload() decodes a leaf's 8-bit text with
    # its declared charset, and a label with a NUL (or a codec such as idna) raises there.
    if part.is_multipart():
        for sub in part.get_payload():
            if isinstance(sub, email.message.Message):
                _check_defects(sub)


def _is_draft_only(name: str) -> bool:
    """True for a header field that only the draft's own mail client reads (never sent)."""
    lname = name.lower()
    return lname in _DRAFT_ONLY_FIELDS or lname.startswith(_DRAFT_ONLY_PREFIXES)


def _is_structural(name: str) -> bool:
    lname = name.lower()
    return lname.startswith("content-") or lname == "mime-version"


def _header_text(value: object) -> str:
    """A raw header value as text: the parser keeps 8-bit octets as surrogate escapes."""
    text = str(value)
    try:
        return text.encode("ascii", "surrogateescape").decode("utf-8")
    except UnicodeError:
        # Not UTF-8: Latin-1 maps every octet, so nothing is lost or refused.
        return text.encode("ascii", "surrogateescape").decode("latin-1")


def _unfold(value: str) -> str:
    return re.sub(r"\r?\n(?=[ \t])", "", value).strip()


def format_header(name: str, value: str) -> bytes:
    """One header field as 7-bit bytes ending in CRLF.

    Non-ASCII values are RFC 2047 encoded (in address fields only the display names, so the
    addresses stay readable to relays); long values are folded at whitespace; no line ends in
    whitespace. Raises :class:`SealError` for a non-ASCII address (SMTPUTF8 is not supported)
    and for a structured field with a line longer than SMTP allows that cannot be folded.
    """
    if any(c in value for c in "\r\n\x00"):
        # Folding is ours to add: a line break or NUL in a value would start a new field.
        raise SealError(f"header {name} holds a line break or NUL")
    if value.isascii():
        folded = _fold_ascii(f"{name}: {value}")
        if max(map(len, folded.split(b"\r\n"))) <= MAX_LINE:
            return folded
        if name.lower() in _ADDRESS_FIELDS or name.lower() in _STRUCTURED_FIELDS:
            raise SealError(f"header {name} has a line longer than {MAX_LINE} octets")
        # An unstructured field may be carried in encoded words, which fold anywhere.
        encoded = email.header.Header(value, "utf-8", header_name=name).encode(linesep="\r\n")
        return f"{name}: {encoded}\r\n".encode("ascii")
    if name.lower() in _ADDRESS_FIELDS:
        pairs = _address_pairs(value)
        if any(not addr.isascii() for _n, addr in pairs):
            raise SealError(
                f"header {name} holds a non-ASCII address, which cannot be sent as 7-bit"
            )
        items = [email.utils.formataddr((n, a), charset="utf-8") for n, a in pairs]
        return (f"{name}: " + ",\r\n ".join(items) + "\r\n").encode("ascii")
    # email.header.Header keeps the whitespace between encoded words inside them; the newer
    # policy-based folder can drop a space there (a CPython bug), changing the Subject.
    encoded = email.header.Header(value, "utf-8", header_name=name).encode(linesep="\r\n")
    return f"{name}: {encoded}\r\n".encode("ascii")


# Fields whose syntax encoded words would break (RFC 2047 sec 5).
_STRUCTURED_FIELDS = frozenset(
    {"date", "message-id", "in-reply-to", "references", "resent-date", "resent-message-id"}
)
_ADDRESS_FIELDS = frozenset(
    {"from", "to", "cc", "bcc", "reply-to", "sender", "resent-from", "resent-to", "resent-cc"}
)


def _fold_ascii(line: str, limit: int = 78) -> bytes:
    """Fold an ASCII header line before whitespace so that lines stay within ``limit`` where a
    fold point exists (folding adds CRLF before existing whitespace: the value is unchanged)."""
    out: list[str] = []
    rest = line.rstrip(" \t")
    while len(rest) > limit:
        cut = max(rest.rfind(" ", 0, limit), rest.rfind("\t", 0, limit))
        if cut <= len(rest.split(":", 1)[0]) + 1:
            cut = min(
                (i for i in (rest.find(" ", limit), rest.find("\t", limit)) if i > 0), default=-1
            )
            if cut < 0:
                break
        out.append(rest[:cut].rstrip(" \t"))
        rest = rest[cut:]
    out.append(rest)
    return ("\r\n".join(out) + "\r\n").encode("ascii")


@dataclass(frozen=True)
class _LegacyDisplay:
    """The lines of a legacy display element and the parts (by ``id``) that begin with it."""

    lines: tuple[str, ...]
    parts: frozenset[int]


def payload_entity(
    draft: Draft,
    *,
    protected_fields: Sequence[tuple[str, str]] = (),
    hp: str | None = None,
    legacy_lines: Sequence[str] = (),
) -> bytes:
    """The draft's body as one transport-safe MIME entity (CRLF, 7-bit).

    ``protected_fields`` are written first in the entity's header section (header protection);
    ``hp`` (``"clear"`` or ``"cipher"``) is added as the RFC 9788 Content-Type parameter of the
    root part; ``legacy_lines`` (``Subject: ...``) begin each main body part as its legacy
    display element. Raises :class:`SealError` for a part that cannot be encoded.
    """
    legacy = None
    if legacy_lines:
        parts = frozenset(id(p) for p in _main_body_parts(draft.root))
        legacy = _LegacyDisplay(tuple(legacy_lines), parts)
    head = b"".join(format_header(n, v) for n, v in protected_fields)
    return head + _entity(draft.root, hp=hp, top=True, legacy=legacy)


def _main_body_parts(part: email.message.Message) -> list[email.message.Message]:
    """The parts a reader shows as the message's text: an inline text/plain or text/html part;
    each alternative of a multipart/alternative; the root of a multipart/related (its first
    part); the first part of any other multipart. Never inside an attached message."""
    if part.is_multipart():
        children = [c for c in part.get_payload() if isinstance(c, email.message.Message)]
        if part.get_content_maintype() != "multipart" or not children:
            return []
        if part.get_content_type() == "multipart/alternative":
            return [found for child in children for found in _main_body_parts(child)]
        return _main_body_parts(children[0])
    # The raw value: get() would hand a Header object for 8-bit text.
    disposition = next(
        (str(v) for n, v in part.raw_items() if n.lower() == "content-disposition"), ""
    )
    attachment = disposition.strip().lower().startswith("attachment")
    if part.get_content_type() in ("text/plain", "text/html") and not attachment:
        return [part]
    return []


def _entity(
    part: email.message.Message,
    *,
    hp: str | None,
    top: bool = False,
    legacy: _LegacyDisplay | None = None,
) -> bytes:
    ctype = part.get_content_type()
    maintype = part.get_content_maintype()
    headers: list[tuple[str, str]] = []
    has_ctype = False
    for name, value in part.raw_items():
        lname = name.lower()
        if top and not _is_structural(name):
            continue  # message header fields are written by the caller (or kept outside)
        if lname in ("content-transfer-encoding", "mime-version", "content-length"):
            continue  # written anew (or, for an mbox's Content-Length, wrong once re-encoded)
        text = _unfold(_header_text(value))
        if lname == "content-type":
            has_ctype = True
            text = _without_param(text, "hp")
            if top and hp is not None:
                text = f'{text}; hp="{hp}"'
        headers.append((name, text))

    if part.is_multipart():
        if maintype == "multipart":
            body = _multipart_body(part, legacy)
            boundary = part.get_boundary()
            if boundary is None:  # pragma: no cover - refused by _check_defects
                raise SealError("draft multipart has no boundary")
        else:  # message/rfc822 and friends: the payload is one embedded message
            inner = part.get_payload()
            body = b"".join(
                _whole_message(m) for m in inner if isinstance(m, email.message.Message)
            )
        cte = None
    else:
        raw = part.get_payload(decode=True)
        data = raw if isinstance(raw, bytes) else b""
        if legacy is not None and id(part) in legacy.parts:
            data, charset = _with_legacy_display(part, data, legacy.lines)
            ctext = next((v for n, v in headers if n.lower() == "content-type"), "text/plain")
            for param in ("charset", legacy_display.PARAMETER, "hp"):
                ctext = _without_param(ctext, param)
            ctext += f'; charset={charset}; {legacy_display.PARAMETER}="1"'
            if top and hp is not None:
                ctext += f'; hp="{hp}"'
            headers = [(n, v) for n, v in headers if n.lower() != "content-type"]
            headers.insert(0, ("Content-Type", ctext))
            has_ctype = True
        if maintype == "text" or not has_ctype:
            cte, body = _encode_text(data)
        else:
            cte, body = "base64", base64_lines(data)
        if not has_ctype and top:
            charset = "us-ascii" if data.isascii() else "utf-8"
            ctext = f"text/plain; charset={charset}"
            if hp is not None:
                ctext += f'; hp="{hp}"'
            headers.insert(0, ("Content-Type", ctext))
            has_ctype = True
    if not has_ctype and top:
        headers.insert(0, ("Content-Type", ctype))
    out = b"".join(format_header(n, v) for n, v in headers)
    if cte is not None:
        out += format_header("Content-Transfer-Encoding", cte)
    return out + b"\r\n" + body


def _whole_message(msg: email.message.Message) -> bytes:
    """An embedded message (message/rfc822): its header fields, then its body, all 7-bit."""
    head = b"".join(
        format_header(n, _unfold(_header_text(v)))
        for n, v in msg.raw_items()
        if not _is_structural(n)
    )
    return head + _entity(msg, hp=None, top=True)


def _with_legacy_display(
    part: email.message.Message, data: bytes, lines: Sequence[str]
) -> tuple[bytes, str]:
    """``data`` (a main body part's decoded bytes) with the legacy display element in front,
    and the charset to declare: the part's own when it can write the element (HTML writes any
    character as a reference), else UTF-8 with the text converted."""
    charset = part.get_content_charset() or ("us-ascii" if data.isascii() else "utf-8")
    try:
        codec = codecs.lookup(charset).name
        ascii_based = "a\r\n<".encode(codec) == b"a\r\n<"
    except (LookupError, UnicodeError, ValueError):  # ValueError: a NUL in the label
        codec, ascii_based = "", False
    if part.get_content_type() == "text/html" and ascii_based:
        # latin-1 maps bytes to characters one to one: the element is ASCII, the rest untouched.
        document = legacy_display.html_with_element(data.decode("latin-1"), lines)
        return document.encode("latin-1"), charset
    if part.get_content_type() == "text/plain" and ascii_based:
        try:
            head = legacy_display.text_with_element("", lines).encode(codec)
            return head + data, charset
        except UnicodeEncodeError:
            pass  # the Subject has characters the part's charset lacks
    text = decode_mail_text(data, part.get_content_charset())
    if part.get_content_type() == "text/html":
        return legacy_display.html_with_element(text, lines).encode("utf-8"), "utf-8"
    return legacy_display.text_with_element(text, lines).encode("utf-8"), "utf-8"


def _multipart_body(part: email.message.Message, legacy: _LegacyDisplay | None) -> bytes:
    boundary = part.get_boundary()
    assert boundary is not None
    # The preamble and epilogue are dropped: no reader shows them, and their lines (trailing
    # whitespace, 8-bit text) would be one more thing a relay could rewrite under the signature.
    out = b""
    for sub in part.get_payload():
        if not isinstance(sub, email.message.Message):  # pragma: no cover - parser invariant
            continue
        out += f"--{boundary}\r\n".encode("ascii")
        out += _entity(sub, hp=None, legacy=legacy) + b"\r\n"
    out += f"--{boundary}--\r\n".encode("ascii")
    return out


def _without_param(content_type: str, param: str) -> str:
    pieces = _split_params(content_type)
    kept = [pieces[0]] + [p for p in pieces[1:] if p.split("=", 1)[0].strip().lower() != param]
    return "; ".join(p.strip() for p in kept)


def _split_params(value: str) -> list[str]:
    """Split a Content-Type value at semicolons that are not inside quotes."""
    out, cur, quoted = [], "", False
    for ch in value:
        if ch == '"':
            quoted = not quoted
        if ch == ";" and not quoted:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    out.append(cur)
    return [p for p in out if p.strip()] or [value]


def _crlf(data: bytes) -> bytes:
    """Canonical line ends: CRLF for every CRLF, bare LF and bare CR."""
    return data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")


def _is_7bit_clean(data: bytes) -> bool:
    """True when ``data`` (CRLF text) can travel as-is through any SMTP relay: 7-bit without
    NUL, no whitespace before a line end, no ``From `` at a line start, no overlong line.

    Written as substring tests (which run in C): a regex with these alternatives took longer
    than the RSA signature on a 10 KB body."""
    if not data.isascii() or b"\x00" in data:
        return False
    if b" \r\n" in data or b"\t\r\n" in data or data.endswith((b" ", b"\t")):
        return False
    if data.startswith(b"From ") or b"\r\nFrom " in data:
        return False
    return max(map(len, data.split(b"\r\n")), default=0) <= MAX_LINE


def _encode_text(data: bytes) -> tuple[str, bytes]:
    """Encode a text part: as-is when 7-bit clean, else quoted-printable (CRLF)."""
    text = _crlf(data)
    if _is_7bit_clean(text):
        return "7bit", text
    encoded = quopri.encodestring(text.replace(b"\r\n", b"\n"), quotetabs=False)
    # quopri leaves "From " at a line start alone; mbox-minded relays rewrite it to ">From ".
    encoded = re.sub(rb"(?m)^From ", b"=46rom ", encoded)
    return "quoted-printable", encoded.replace(b"\n", b"\r\n")


def base64_lines(data: bytes) -> bytes:
    """``data`` in base64, 76 characters a line, each line ending in CRLF.

    (``base64.encodebytes`` makes one C call per 57 input bytes and then needs its LFs replaced;
    slicing one encoding is several times faster on large parts.)"""
    text = base64.b64encode(data)
    if not text:
        return b""
    return b"\r\n".join([text[i : i + 76] for i in range(0, len(text), 76)]) + b"\r\n"


def protected_payload(draft: Draft, *, header_protection: bool, encrypted: bool) -> bytes:
    """The payload entity of ``draft`` for sealing: with the RFC 9788 protected header fields
    when ``header_protection`` (and, when ``encrypted``, ``HP-Outer`` fields naming what is shown
    outside and a legacy display of the obscured Subject), else the plain entity."""
    if not header_protection:
        return payload_entity(draft, protected_fields=[], hp=None)
    protected = protected_header_fields(draft)
    if not encrypted:
        return payload_entity(draft, protected_fields=protected, hp="clear")
    outer = outer_header_fields(draft, encrypted=True)
    lines = legacy_display.element_lines(protected, outer)
    protected += hp_outer_fields(outer)
    return payload_entity(draft, protected_fields=protected, hp="cipher", legacy_lines=lines)


def hp_outer_fields(outer: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """The RFC 9788 ``HP-Outer`` fields recording which header fields an encrypted message shows
    outside (each as ``Name: value``), to be placed in the cryptographic payload."""
    return [("HP-Outer", f"{name}: {value}") for name, value in outer]


def protected_header_fields(draft: Draft) -> list[tuple[str, str]]:
    """The header fields the cryptographic payload carries: all of the draft's, except Bcc."""
    return [(n, v) for n, v in draft.header_fields if n.lower() not in _NEVER_COPIED]


def outer_header_fields(draft: Draft, *, encrypted: bool) -> list[tuple[str, str]]:
    """The header fields shown outside the S/MIME layers.

    Never Bcc. For an encrypted message, RFC 9788's baseline policy: the Subject becomes
    ``[...]`` and Comments and Keywords are removed; every other field is kept so that mail
    routing and threading still work.
    """
    out: list[tuple[str, str]] = []
    for name, value in protected_header_fields(draft):
        lname = name.lower()
        if encrypted and lname in _BASELINE_REMOVED:
            continue
        if encrypted and lname == "subject":
            value = OBSCURED_SUBJECT
        out.append((name, value))
    return out

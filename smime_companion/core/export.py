"""A cached message -> a message any mail client opens (``smime-companion export``, ``show``).

Everything that comes from the message is the sender's (or an attacker's) text, and an exported
message is read by a mail client that renders HTML and loads what it references. So:

- our verdict fields (``X-SMIME-Companion-*``) come first, and every incoming field of that
  name is dropped, so no message can supply or precede its own verdict;
- every header value we write (the effective, possibly protected, From/To/Cc/Subject/Date/
  Message-ID, decoded from RFC 2047) is cleaned by :func:`printable.for_header` (no CR, LF, NUL
  or other control character) and re-encoded where it is not plain ASCII, so a crafted Subject
  cannot add fields or start the body before the decrypted secret (EFAIL by export);
- fields copied from the raw message keep their own bytes but lose bare CRs, NULs and other
  controls, and a line that is not a field (no name and colon) is dropped, so none can end the
  header section early;
- content that is not integrity-protected (decrypted with a CBC cipher and not covered by a valid
  signature: see :func:`is_integrity_protected`) is rebuilt from its parts with no active
  content: HTML becomes its plain text, active types become opaque attachments, every part is
  base64 under our own boundary. A CBC gadget can then change what the text says, never make a
  mail client fetch a URL with the plaintext in it.

Pure: bytes and values in, bytes out. Line ends are LF, as mbox and Maildir files use.
"""

from __future__ import annotations

import base64
import hashlib
import re
from email.header import Header
from email.utils import encode_rfc2231

from smime_companion.core import printable
from smime_companion.core.text import SUMMARY_HEADERS, body_forms, iter_parts, part_text
from smime_companion.core.verdicts import WARN_NOT_INTEGRITY_PROTECTED
from smime_companion.errors import SmimeCompanionError

VERDICT_PREFIX = "x-smime-companion-"
# Content types a mail client runs or renders as a document that can load remote content.
ACTIVE_TYPES = frozenset(
    {
        "text/html",
        "application/xhtml+xml",
        "image/svg+xml",
        "text/xml",
        "application/xml",
        "text/javascript",
        "application/javascript",
    }
)
# The authenticated content ciphers, by the names the cache records: written out rather than
# read from core.cms_algorithms, which loads asn1crypto into `show` (tests/test_export.py
# holds the two lists together).
AEAD_CIPHER_NAMES = (
    "aes-128-gcm", "aes-192-gcm", "aes-256-gcm", "aes-128-ccm", "aes-192-ccm", "aes-256-ccm",
    "chacha20-poly1305",
)  # fmt: skip
_UNSTRUCTURED = frozenset({"subject"})

_CONTENT_FIELD = re.compile(rb"^(content-[!-9;-~]*|mime-version)\s*:", re.IGNORECASE)
_FIELD = re.compile(rb"^[!-9;-~]+[ \t]*:")
_HEADER_END = re.compile(rb"\r?\n\r?\n")
# Bytes that must not survive in a copied field: C0 controls but TAB (the folding LF is put
# back by us), and DEL.
_RAW_CONTROLS = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_MIME_TYPE = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*$")


def is_integrity_protected(
    decryption: str, signature: str, content_cipher: str | None, warnings: tuple[str, ...]
) -> bool:
    """Whether decrypted content may be trusted not to have been changed in transit, and so may
    be exported with active content: True when nothing was decrypted (``decryption`` not
    ``ok``: no secret is inside), when the cipher is authenticated (AES-GCM), or when a valid
    signature covers it; False when ``core.open`` warned ``not-integrity-protected`` (CBC with
    no signature inside) and for CBC content whose signature is not ``valid`` (a gadget that
    altered signed content breaks the signature, and the altered content is what is shown)."""
    if WARN_NOT_INTEGRITY_PROTECTED in warnings:
        return False
    if decryption != "ok":
        return True
    if content_cipher is not None and content_cipher.lower().startswith(AEAD_CIPHER_NAMES):
        return True
    return signature == "valid"


def export_message(
    raw: bytes,
    content: bytes | None,
    effective_headers: tuple[tuple[str, str], ...],
    verdict: tuple[tuple[str, str], ...],
    *,
    integrity_protected: bool = True,
) -> bytes:
    """The exported message: the ``verdict`` fields (``X-SMIME-Companion-*``) first, then the
    outer header fields of ``raw`` (without Content-*, MIME-Version and incoming verdict
    fields, and with the ``effective_headers``, decoded values, in place of the outer
    From/To/Cc/Subject/Date/Message-ID), then the decrypted ``content``: its Content-* fields
    and body as they are when ``integrity_protected``, else rebuilt without active content.
    When ``content`` is None (the message could not be opened) the raw original's fields and
    body follow the verdict. Never raises for hostile input."""
    verdict_lines = [_field_line(name, value) for name, value in verdict]
    raw_fields, raw_body = _header_lines(raw)
    raw_fields = [f for f in raw_fields if not _field_name(f).startswith(VERDICT_PREFIX)]
    if content is None:
        out = b"\n".join([*verdict_lines, *raw_fields]) + b"\n\n" + raw_body
        return out.replace(b"\r\n", b"\n")
    effective = {k.lower(): v for k, v in reversed(effective_headers)}
    replaced = {name for name in SUMMARY_HEADERS if name in effective}
    outer = [
        f for f in raw_fields if not _CONTENT_FIELD.match(f) and _field_name(f) not in replaced
    ]
    # The first field of each name, as every other view shows it (and the From the signature
    # was checked against): a second From field never reaches the exported copy.
    protected: list[bytes] = []
    for name, value in effective_headers:
        if name.lower() in replaced:
            replaced.discard(name.lower())
            protected.append(_field_line(name, value))
    if integrity_protected:
        inner_fields, inner_body = _header_lines(content)
        inner = [f for f in inner_fields if _CONTENT_FIELD.match(f)]
        if not any(_field_name(f) == "mime-version" for f in inner):
            inner.insert(0, b"MIME-Version: 1.0")
    else:
        inner, inner_body = _inactive_body(content)
        verdict_lines.append(
            b"X-SMIME-Companion-Content: rebuilt without active content (not integrity-protected)"
        )
    head = b"\n".join([*verdict_lines, *outer, *protected, *inner])
    return (head + b"\n\n" + inner_body).replace(b"\r\n", b"\n")


def header_value(name: str, value: str) -> str:
    """``value`` (decoded text) as the value of a header field ``name`` we write: cleaned of
    controls and line breaks; a Subject that is not plain ASCII (or holds ``=?``, which a
    client would decode once more) RFC 2047-encoded; other fields kept as UTF-8 (RFC 6532),
    because encoding an address field needs a parse that could change what was checked."""
    cleaned = printable.for_header(value)
    if name.lower() in _UNSTRUCTURED and (not cleaned.isascii() or "=?" in cleaned):
        return Header(cleaned, "utf-8", maxlinelen=76, header_name=name).encode(linesep="\n")
    return cleaned


def _field_line(name: str, value: str) -> bytes:
    return f"{name}: {header_value(name, value)}".encode("utf-8", "replace")


def _header_lines(raw: bytes) -> tuple[list[bytes], bytes]:
    """The header fields of ``raw`` (each with its continuation lines joined by LF, without
    the final line break; controls and bare CRs made spaces; lines that are no field dropped)
    and the body after the blank line."""
    if raw.startswith((b"\r\n", b"\n")):
        return [], raw.split(b"\n", 1)[1]
    match = _HEADER_END.search(raw)
    head, body = (raw[: match.start()], raw[match.end() :]) if match else (raw, b"")
    fields: list[bytes] = []
    keep_continuation = False
    for line in head.split(b"\n"):
        line = _RAW_CONTROLS.sub(b" ", line.removesuffix(b"\r"))
        if line[:1] in (b" ", b"\t"):
            if keep_continuation and line.strip():
                fields[-1] += b"\n" + line
        elif _FIELD.match(line):
            fields.append(line)
            keep_continuation = True
        else:
            # Not a field: a mail client would end the header section here and show the rest
            # as body. Dropped, with what continues it.
            keep_continuation = False
    return fields, body


def _field_name(field: bytes) -> str:
    return field.split(b":", 1)[0].strip().decode("ascii", "replace").lower()


def _inactive_body(content: bytes) -> tuple[list[bytes], bytes]:
    """``content`` rebuilt as multipart/mixed under a boundary of ours: text/plain parts as
    UTF-8 text, HTML as its plain text (or left out when it is the HTML form of the text part
    before it), everything else as a base64 attachment (active types as
    application/octet-stream). The header fields and the body."""
    boundary = "=_smime-companion-" + hashlib.sha256(content).hexdigest()[:32]
    chunks: list[bytes] = []
    try:
        parts = list(iter_parts(content))
    except SmimeCompanionError:
        parts = []
    # A body sent as text and as HTML is written once, as its text (body_forms); so is an HTML
    # body split around its pictures, whose pieces share that text.
    with_plain_form = {part.number for part, plain in body_forms(parts) if plain is not None}
    for part in parts:
        fields: list[str]
        if part.number in with_plain_form:
            continue
        if not part.is_attachment:
            # An inline part is text/plain or text/html (iter_parts makes the rest attachments);
            # part_text turns HTML into its text.
            text = part_text(part)
            fields = ["Content-Type: text/plain; charset=utf-8"]
            if part.also_a_file:  # a text file sent to be shown: shown, under its name
                fields.append("Content-Disposition: inline; " + _filename_param(part.filename))
            data = text.encode("utf-8")
        else:
            mime_type = part.mime_type if _MIME_TYPE.match(part.mime_type) else ""
            if not mime_type or mime_type in ACTIVE_TYPES:
                mime_type = "application/octet-stream"
            disposition = "attachment"
            if part.filename:
                disposition += "; " + _filename_param(part.filename)
            fields = [f"Content-Type: {mime_type}", f"Content-Disposition: {disposition}"]
            data = part.data
        fields.append("Content-Transfer-Encoding: base64")
        chunks.append(
            f"--{boundary}\n".encode()
            + "\n".join(fields).encode("ascii")
            + b"\n\n"
            + base64.encodebytes(data)
        )
    body = b"".join(chunks) + f"--{boundary}--\n".encode()
    head = [
        b"MIME-Version: 1.0",
        f'Content-Type: multipart/mixed; boundary="{boundary}"'.encode("ascii"),
    ]
    return head, body


def _filename_param(name: str) -> str:
    cleaned = printable.for_header(name).replace('"', "'").replace("\\", "_")
    if cleaned.isascii():
        return f'filename="{cleaned}"'
    return "filename*=" + encode_rfc2231(cleaned, "utf-8")


__all__ = [
    "ACTIVE_TYPES",
    "AEAD_CIPHER_NAMES",
    "export_message",
    "header_value",
    "is_integrity_protected",
]

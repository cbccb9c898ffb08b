"""What a user hands ``open``, turned into the message ``core.open`` walks.

People open more than RFC 5322 messages: mail saved from an mbox (or KMail's files) starts with
the mbox ``From `` separator line; an attachment saved from webmail or Outlook (``smime.p7m``),
or ``openssl cms -out`` with ``-outform DER`` or ``PEM``, is a bare CMS ContentInfo in DER, BER,
base64 or PEM armour (``PKCS7``, ``CMS``, Netscape's ``PKCS #7 SIGNED DATA``, gpgsm's
``SIGNED MESSAGE`` and ``ENCRYPTED MESSAGE``). :func:`as_message`
recognises those forms, as ``openssl cms -inform`` does, and gives the message they stand for;
anything else is returned unchanged (the same object, never a copy). Pure and cheap: a message
costs a look at its first bytes.
"""

from __future__ import annotations

import binascii
import re

from smime_companion.core.mime import starts_with_field

# The content types a bare ContentInfo may hold, by the DER of their OID, and the smime-type
# parameter of the application/pkcs7-mime entity that stands for it.
_SMIME_TYPES = {
    bytes.fromhex("06092a864886f70d010702"): "signed-data",
    bytes.fromhex("06092a864886f70d010703"): "enveloped-data",
    bytes.fromhex("060b2a864886f70d0109100117"): "authEnveloped-data",
    bytes.fromhex("060b2a864886f70d0109100109"): "compressed-data",
}
# Other CMS content types a bare file may hold: recognised so that opening says what it is
# (no S/MIME layer of ours) instead of reading DER as a header section.
_OTHER_CMS_TYPES = frozenset(
    {
        bytes.fromhex("06092a864886f70d010701"),  # data
        bytes.fromhex("06092a864886f70d010704"),  # signedAndEnvelopedData (PKCS #7)
        bytes.fromhex("06092a864886f70d010705"),  # digestedData
        bytes.fromhex("06092a864886f70d010706"),  # encryptedData
        bytes.fromhex("060b2a864886f70d0109100102"),  # authenticatedData
    }
)
# The armour labels: RFC 7468's (PKCS7, CMS), Netscape's, and gpgsm's (its --armor output).
_PEM = re.compile(
    rb"\A\s*-----BEGIN (PKCS7|CMS|PKCS #7 SIGNED DATA|SIGNED MESSAGE|ENCRYPTED MESSAGE)-----"
    rb"\r?\n(.*?)-----END \1-----\s*\Z",
    re.S,
)
_UTF8_BOM = b"\xef\xbb\xbf"  # in front of .eml files some Windows programs save
# How far blanks and empty lines before a message's first field are looked through.
_MAX_LEADING_BLANKS = 1024
_BASE64_TEXT = re.compile(rb"\A[A-Za-z0-9+/=\r\n\t ]+\Z")


def as_message(raw: bytes) -> bytes:
    """The message ``raw`` stands for: without a leading byte order mark or mbox ``From `` line,
    without blanks before its first field (see :func:`_without_leading_blanks`),
    with CR CR LF line ends repaired (see :func:`_with_line_ends_repaired`), and with a bare
    CMS object (DER, BER, base64 or PEM) wrapped as an ``application/pkcs7-mime`` entity whose
    ``smime-type`` names the object's content type. Anything else comes back unchanged.
    Never raises."""
    raw = _without_mbox_separator(raw.removeprefix(_UTF8_BOM))
    raw = _with_line_ends_repaired(_without_leading_blanks(raw))
    head = raw[:2]
    if head[:1] == b"\x30":
        return _wrapped(raw) if content_type_oid(raw) is not None else raw
    if head == b"MI" or raw.lstrip()[:5] == b"-----":
        der = _decoded_text(raw)
        if der is not None and content_type_oid(der) is not None:
            return _wrapped(der)
    return raw


def _with_line_ends_repaired(raw: bytes) -> bytes:
    """``raw`` with CR CR LF line ends made CRLF when its first line ends so: what a message
    converted to CRLF twice (a Windows tool run over a file that had CRLF already) looks like.
    Nothing else is touched."""
    end = raw.find(b"\n", 0, 4096)
    if end < 2 or not raw.startswith(b"\r\r", end - 2):
        return raw
    return raw.replace(b"\r\r\n", b"\r\n")


def _without_mbox_separator(raw: bytes) -> bytes:
    """``raw`` without its first line when that is an mbox ``From `` separator (``From addr
    date``), never a header field (``From:``, or the obsolete ``From :``)."""
    if not raw.startswith(b"From "):
        return raw
    end = raw.find(b"\n")
    if end < 0 or raw[5:end].lstrip().startswith(b":"):
        return raw
    return raw[end + 1 :]


def _without_leading_blanks(raw: bytes) -> bytes:
    """``raw`` from its first header field on, when only blanks and empty lines stand before
    that field: a message saved with its first field indented (" From: ...") or after an empty
    line (a script that printed one first). Read as they are, the first would be malformed (a
    header section cannot start with a continuation line) and the second all body, its fields
    shown as text. Anything else comes back unchanged."""
    if raw[:1] not in (b" ", b"\t", b"\r", b"\n"):
        return raw
    window = raw[:_MAX_LEADING_BLANKS]
    start = len(window) - len(window.lstrip(b" \t\r\n"))
    # starts_with_field reads a line's first 1,000 bytes: the slice copies no more.
    if start == len(window) or not starts_with_field(raw[start : start + 1000]):
        return raw
    return raw[start:]


def content_type_oid(der: bytes) -> bytes | None:
    """The DER of the OID at the start of a ContentInfo SEQUENCE when it names a CMS content
    type we open, else None. Reads only the first bytes (definite or indefinite length)."""
    if len(der) < 4 or der[0] != 0x30:
        return None
    first = der[1]
    if first == 0x80:  # indefinite length (BER, as gpgsm and openssl -stream write)
        pos = 2
    elif first & 0x80:
        pos = 2 + (first & 0x7F)
    else:
        pos = 2
    if pos + 2 > len(der) or der[pos] != 0x06:
        return None
    oid = der[pos : pos + 2 + der[pos + 1]]
    return oid if oid in _SMIME_TYPES or oid in _OTHER_CMS_TYPES else None


def der_of_text(data: bytes) -> bytes:
    """``data``, or the DER it holds as base64 or PEM text: a CMS part whose sender left out
    its Content-Transfer-Encoding arrives as text, and a ContentInfo's DER never starts with
    a base64 letter (it starts with 0x30, base64 ``MI``). Never raises."""
    if data[:1] == b"\x30":
        return data
    der = _decoded_text(data)
    return der if der is not None and der[:1] == b"\x30" else data


def _decoded_text(raw: bytes) -> bytes | None:
    """The DER inside PEM armour or plain base64 text, or None when ``raw`` is neither."""
    armour = _PEM.match(raw)
    if armour is not None:
        body = armour.group(2)
    elif _BASE64_TEXT.match(raw[:4096]) and b":" not in raw[:4096]:
        body = raw
    else:
        return None
    try:
        return binascii.a2b_base64(body.translate(None, b" \t\r\n"), strict_mode=True)
    except binascii.Error:
        return None


def _wrapped(der: bytes) -> bytes:
    oid = content_type_oid(der)
    smime_type = _SMIME_TYPES.get(oid) if oid is not None else None
    return (
        b"MIME-Version: 1.0\r\n"
        b"Content-Type: application/pkcs7-mime; smime-type="
        + (smime_type or "").encode()
        + b'; name="smime.p7m"\r\n'
        b"Content-Transfer-Encoding: binary\r\n\r\n" + der
    )

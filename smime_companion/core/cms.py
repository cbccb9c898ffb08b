"""Parsing CMS (RFC 5652) objects from untrusted bytes into asn1crypto's typed structures.

asn1crypto parses lazily: a broken inner structure only fails when it is first touched. The
functions here force the parse of what the rest of the core will read, so that every parse error
surfaces here as one :class:`MalformedInput` naming the structure, never as a stray exception later.
A large object first goes through the BER walker (:mod:`smime_companion.core.ber_walker`): its
large content is cut out and its chunked strings joined before asn1crypto sees the rest.
"""

from __future__ import annotations

from dataclasses import dataclass

from asn1crypto import cms, core

from smime_companion.core.ber_walker import (
    BerWalk,
    UnexpectedEncoding,
    complete,
    element_end,
    first_child,
    flattened,
    octets,
    read_tlv,
    wrap,
)
from smime_companion.core.input_forms import der_of_text
from smime_companion.core.mime import Entity
from smime_companion.errors import MalformedInput, UnsupportedInput, one_line

# Upper bound on a CMS object we agree to parse; larger input is refused before parsing.
MAX_CMS_BYTES = 256 * 1024 * 1024
# parse_cms cuts the content out of objects from this size on (see _cut_content), and hands
# asn1crypto the rest only once the BER walker has joined every chunked string in it. Smaller
# objects go to asn1crypto whole: its joins are quadratic, but at this size they hold at most
# about 11,000 chunks, joined in well under a tenth of a second.
CUT_MIN_BYTES = 32 * 1024

# What asn1crypto raises when a structure it parses lazily turns out to be broken or hostile:
# AttributeError included, for a value under universal tag 8 (EXTERNAL / INSTANCE OF) where the
# schema leaves the type open (an unknown name attribute, an algorithm's parameters), which it
# parses but cannot read as a native value (bench/fuzz_open.py found it three times).
ASN1_ERRORS: tuple[type[Exception], ...] = (
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    OverflowError,
    AttributeError,
)

CONTENT_TYPE_NAMES = {
    "signed_data": "signed-data",
    "enveloped_data": "enveloped-data",
    "authenticated_enveloped_data": "auth-enveloped-data",
    "compressed_data": "compressed-data",
    "data": "data",
}


def parse_content_info(der: bytes) -> cms.ContentInfo:
    """Parse a DER or BER ``ContentInfo`` and force the parse of its content.

    Returns the asn1crypto ``ContentInfo``. Raises :class:`MalformedInput` when the bytes are not a
    ContentInfo (trailing garbage included) and :class:`UnsupportedInput` for a content type other
    than signed, enveloped, auth-enveloped or compressed data.
    """
    if len(der) > MAX_CMS_BYTES:
        raise MalformedInput(f"CMS object of {len(der)} bytes is larger than the limit")
    try:
        info = cms.ContentInfo.load(der, strict=True)
        content_type = info["content_type"].native
        content = info["content"]
        # Touch the content so a broken inner structure fails here.
        if isinstance(content, core.Sequence):
            for key in content:
                content[key]
    except MalformedInput:
        raise
    except ASN1_ERRORS as exc:
        raise MalformedInput(f"not a valid CMS ContentInfo: {one_line(exc)}") from None
    if content_type not in CONTENT_TYPE_NAMES or content_type == "data":
        raise UnsupportedInput(f"unsupported CMS content type {content_type!r}")
    return info


def content_type_name(info: cms.ContentInfo) -> str:
    """The content type in our vocabulary: ``signed-data``, ``enveloped-data``, ..."""
    return CONTENT_TYPE_NAMES.get(info["content_type"].native, info["content_type"].dotted)


# --- cutting the large content out before asn1crypto sees it -----------------------------------
#
# asn1crypto copies an element's contents each time a child is first read, and every parent keeps
# its copy: reading a 25 MB encryptedContent through ContentInfo -> [0] -> EnvelopedData ->
# EncryptedContentInfo costs four 25 MB copies that live as long as the ContentInfo. So before
# asn1crypto parses anything, a small tag/length walker finds the one large field (the
# encryptedContent of (Auth)EnvelopedData, the eContent of SignedData), takes its value out (a
# view of a DER string, BER chunks joined once), and re-encodes the (small) rest without it.
# Both fields are OPTIONAL in their SEQUENCE, so the remainder is still a valid ContentInfo; the
# content travels beside it.

_OID_SIGNED_DATA = bytes.fromhex("06092a864886f70d010702")
_OID_ENVELOPED_DATA = bytes.fromhex("06092a864886f70d010703")
_OID_AUTH_ENVELOPED_DATA = bytes.fromhex("060b2a864886f70d0109100117")
_OID_COMPRESSED_DATA = bytes.fromhex("060b2a864886f70d0109100109")
_CUT_TYPES = {
    _OID_SIGNED_DATA: "signed_data",
    _OID_ENVELOPED_DATA: "enveloped_data",
    _OID_AUTH_ENVELOPED_DATA: "authenticated_enveloped_data",
    _OID_COMPRESSED_DATA: "compressed_data",
}
# Nesting of BER constructed strings (chunks of chunks) we follow when cutting; deeper input is
# left to the flattener (see flattened), which refuses nesting past _MAX_FLATTEN_DEPTH.


@dataclass(frozen=True)
class ParsedCms:
    """A parsed ContentInfo and, when it was cut out, its large content.

    ``content`` is the value of the EnvelopedData/AuthEnvelopedData encryptedContent (the
    ciphertext) or of the SignedData or CompressedData eContent (the signed or compressed bytes),
    BER chunks joined; ``info`` then lacks that field. Those eContents are always ``bytes``; a
    ciphertext that was one primitive string is a ``memoryview`` into the input instead of a copy,
    since it is only read once by the cipher. ``content`` is None when the object had no such
    field or was not cut (``info`` is then complete, exactly as :func:`parse_content_info`
    returns it).
    """

    info: cms.ContentInfo
    content: bytes | memoryview | None


def parse_cms(data: bytes) -> ParsedCms:
    """Parse a DER or BER ``ContentInfo`` like :func:`parse_content_info`, but with the large
    content (encryptedContent or eContent) cut out beforehand, so that a big message is held in
    memory about once rather than once per nesting level.

    asn1crypto joins the chunks of a BER string one ``+=`` at a time, which costs the square of
    their number: so in an object of ``CUT_MIN_BYTES`` or more, every chunked string (the cut
    content and any other) is joined here, by a walker that reads each element once and counts
    them against a budget proportional to the object's size (see
    ``ber_walker.BER_BASE_ELEMENTS``), before asn1crypto sees the rest. Smaller objects are
    parsed whole (``content`` None): there the copies and joins cost less than the walk.

    ``data`` may also be the object's base64 or PEM text (see :func:`input_forms.der_of_text`).

    Returns a :class:`ParsedCms`. Raises what :func:`parse_content_info` raises, for the same
    input, and :class:`LimitExceeded` for an object made of more BER elements than its size
    allows (a chunk flood) or nested past 64 levels.
    """
    if len(data) > MAX_CMS_BYTES:
        raise MalformedInput(f"CMS object of {len(data)} bytes is larger than the limit")
    data = der_of_text(data)
    if len(data) < CUT_MIN_BYTES:
        # Small objects: asn1crypto's copies cost less than the walk that would avoid them.
        return ParsedCms(parse_content_info(data), None)
    walk = BerWalk(len(data))
    try:
        rest, content = _cut_content(data, walk)
    except (UnexpectedEncoding, IndexError):
        return ParsedCms(parse_content_info(flattened(data, walk)), None)
    return ParsedCms(parse_content_info(flattened(rest, walk)), content)


def parse_cms_part(part: Entity) -> ParsedCms:
    """The CMS object a MIME part carries (:func:`parse_cms` of its decoded body). A body
    whose base64 is "corrupt" because it is PEM armour sent under a base64 label (a
    ``-----BEGIN PKCS7-----`` line, as some scripts and Java programs write it) is read as
    the armoured text it is."""
    try:
        body = part.decoded_body()
    except MalformedInput:
        if not part.body.lstrip().startswith(b"-----BEGIN "):
            raise
        body = part.body
    return parse_cms(body)


def is_certificates_only(parsed: ParsedCms) -> bool:
    """True for a SignedData with neither a signer nor content (RFC 5652 section 5.2's degenerate
    case): a certificates-only message (RFC 8551 section 3.7, ``smime.p7c``), which is how a
    client sends its certificate. Nothing in it is signed. The content may be absent (OpenSSL's
    ``crl2pkcs7``) or empty (NSS's ``cmsutil -O``). False when it cannot be read."""
    try:
        info = parsed.info
        if info["content_type"].native != "signed_data" or parsed.content:
            return False
        signed = info["content"]
        return len(signed["signer_infos"]) == 0 and not (
            signed["encap_content_info"]["content"].native
        )
    except ASN1_ERRORS:
        return False


def _cut_content(data: bytes, walk: BerWalk) -> tuple[bytes, bytes | memoryview]:
    """(the encoding without the large field, the field's value). Raises UnexpectedEncoding."""
    top = read_tlv(data, 0)
    if top.tag != 0x30 or element_end(data, top, 0, walk) != len(data):
        raise UnexpectedEncoding  # not one SEQUENCE: let asn1crypto name the problem
    oid = read_tlv(data, top.value_start)
    kind = _CUT_TYPES.get(data[oid.start : oid.end])
    if kind is None:
        raise UnexpectedEncoding
    explicit = read_tlv(data, oid.end)  # content [0] EXPLICIT
    if explicit.tag != 0xA0:
        raise UnexpectedEncoding
    body = read_tlv(data, explicit.value_start)  # SignedData / (Auth)EnvelopedData
    if body.tag != 0x30:
        raise UnexpectedEncoding
    # The first universal SEQUENCE in the body is EncapsulatedContentInfo or
    # (Auth)EncryptedContentInfo: the fields before it are an INTEGER, a [0] and a SET. In
    # CompressedData it is the second: the compressionAlgorithm comes first.
    inner = first_child(data, body, 0x30, walk, skip=kind == "compressed_data")
    type_oid = read_tlv(data, inner.value_start)
    if type_oid.tag != 0x06:
        raise UnexpectedEncoding
    if kind in ("signed_data", "compressed_data"):
        after = type_oid.end
        if after >= inner.value_end:
            raise UnexpectedEncoding  # no eContent: nothing to cut
        field_tlv = complete(data, read_tlv(data, after), walk)  # eContent [0] EXPLICIT
        if field_tlv.tag != 0xA0:
            raise UnexpectedEncoding
        string = read_tlv(data, field_tlv.value_start)
        if string.tag not in (0x04, 0x24):
            raise UnexpectedEncoding
        if element_end(data, string, 0, walk) != field_tlv.value_end:
            raise UnexpectedEncoding
        content: bytes | memoryview = bytes(octets(data, string, 0, walk))
    else:
        algorithm = read_tlv(data, type_oid.end)
        after = element_end(data, algorithm, 0, walk)
        if after >= inner.value_end:
            raise UnexpectedEncoding  # encryptedContent absent (detached): decrypt reports it
        field_tlv = read_tlv(data, after)  # encryptedContent [0] IMPLICIT OCTET STRING
        if field_tlv.tag not in (0x80, 0xA0):
            raise UnexpectedEncoding
        content = octets(data, field_tlv, 0, walk)
    field_end = element_end(data, field_tlv, 0, walk)
    if field_end != inner.value_end:
        raise UnexpectedEncoding  # something follows the field: not a shape we cut
    # Re-encode from the inside out, each ancestor with its new length.
    chain = [inner, *(complete(data, tlv, walk) for tlv in (body, explicit, top))]
    rebuilt = data[inner.value_start : field_tlv.start]
    for level, tlv in enumerate(chain):
        rebuilt = wrap(data, tlv, rebuilt)
        if level + 1 < len(chain):
            parent = chain[level + 1]
            rebuilt = (
                data[parent.value_start : tlv.start] + rebuilt + data[tlv.end : parent.value_end]
            )
    return rebuilt, content

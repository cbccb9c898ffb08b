"""A counted, linear walk over BER (X.690) from untrusted bytes, without asn1crypto objects.

asn1crypto joins the chunks of a BER constructed string one ``+=`` at a time (quadratic in their
number) and copies an element's contents at every nesting level. This walker reads each element
once, counting elements and string chunks against a budget proportional to the object's size
(:class:`BerWalk`), so a hostile object costs bounded time: it finds where indefinite-length
elements end, joins chunked strings (:func:`octets`), and re-encodes an object without chunked
strings for asn1crypto (:func:`flattened`). :func:`der_elements`, :func:`read_attributes` and
:func:`oid_dotted` read DER directly on the hot paths (signer infos, attributes, recipients).
"""

from __future__ import annotations

from typing import NamedTuple

from smime_companion.core import der_writer
from smime_companion.errors import LimitExceeded, MalformedInput

# BER element reads parse_cms may make in one object, each costing its walker a microsecond or
# two: BER_BASE_ELEMENTS, plus one per BER_BYTES_PER_ELEMENT bytes of the object; and of those,
# chunks of strings: BER_BASE_CHUNKS plus one per BER_BYTES_PER_CHUNK bytes. Streaming encoders
# write chunks of a kilobyte or more (openssl 4 KB: a 256 MB object in 128-byte chunks would be
# two million, the most allowed), and DER is read without visiting any element that holds no
# indefinite length; a flood of one-byte chunks (three bytes each) only comes from someone
# trying to waste our time, and is refused after a fortieth of its chunks.
BER_BASE_ELEMENTS = 16_384
BER_BYTES_PER_ELEMENT = 16
BER_BASE_CHUNKS = 2_048
BER_BYTES_PER_CHUNK = 128
# Nesting of BER constructed strings (chunks of chunks) followed when cutting; deeper input is
# left to the flattener (see flattened), which refuses nesting past _MAX_FLATTEN_DEPTH.
_MAX_BER_DEPTH = 16
_MAX_FLATTEN_DEPTH = 64


class UnexpectedEncoding(Exception):
    """The walker met an encoding it does not follow; asn1crypto parses the whole object."""


class Tlv(NamedTuple):
    """One BER element: where it starts, where its value starts and ends, where it ends.

    A NamedTuple: the walker makes one per element, and a tuple is several times cheaper to
    build than a frozen dataclass."""

    start: int
    value_start: int
    value_end: int  # for an indefinite length: where the end-of-contents octets start
    end: int
    tag: int  # the first identifier octet (class, constructed bit, low tag number)
    indefinite: bool


def wrap(data: bytes, tlv: Tlv, value: bytes) -> bytes:
    """``value`` under ``tlv``'s identifier, with an indefinite length when it had one."""
    identifier = data[tlv.start : tlv.start + _identifier_size(data, tlv.start)]
    if tlv.indefinite:
        return identifier + b"\x80" + value + b"\x00\x00"
    return identifier + der_writer.length(len(value)) + value


def _identifier_size(data: bytes, offset: int) -> int:
    if data[offset] & 0x1F != 0x1F:
        return 1
    size = 1
    while data[offset + size] & 0x80:
        size += 1
        if size > 5:
            raise UnexpectedEncoding
    return size + 1


def read_tlv(data: bytes, offset: int) -> Tlv:
    """The element at ``offset``. Raises UnexpectedEncoding (or IndexError past the end)."""
    tag = data[offset]
    pos = offset + _identifier_size(data, offset)
    first = data[pos]
    pos += 1
    if first == 0x80:
        if not tag & 0x20:
            raise UnexpectedEncoding  # an indefinite length needs a constructed element
        # The end is found by walking the children (element_end); value_end stays unknown.
        return Tlv(offset, pos, -1, -1, tag, True)
    if first & 0x80:
        size = first & 0x7F
        if size > 8:
            raise UnexpectedEncoding
        length = int.from_bytes(data[pos : pos + size], "big")
        pos += size
    else:
        length = first
    end = pos + length
    if end > len(data):
        raise UnexpectedEncoding
    return Tlv(offset, pos, end, end, tag, False)


class BerWalk:
    """The state of the walks over one BER object of ``size`` bytes.

    ``ends`` holds where the end-of-contents octets of each indefinite-length element start, by
    the element's offset: filled by the first pass, so that no chunk list is walked twice to find
    the same end. ``elements`` and ``chunks`` count the elements read and, of those, the chunks
    of strings, against limits proportional to ``size`` (see ``BER_BASE_ELEMENTS``): a hostile
    object can hold millions of one-byte chunks, each costing the walker a microsecond or two.
    """

    __slots__ = ("ends", "elements", "chunks", "size", "changes", "max_elements", "max_chunks")

    def __init__(self, size: int) -> None:
        self.ends: dict[int, int] = {}
        self.elements = 0
        self.chunks = 0
        self.size = size
        self.changes = 0  # elements flattened re-encoded
        self.max_elements = BER_BASE_ELEMENTS + size // BER_BYTES_PER_ELEMENT
        self.max_chunks = BER_BASE_CHUNKS + size // BER_BYTES_PER_CHUNK

    def count(self) -> None:
        """Count one element read. Raises :class:`LimitExceeded` past the object's limit."""
        self.elements += 1
        if self.elements > self.max_elements:
            raise LimitExceeded(
                f"CMS object of {self.size} bytes is made of more than {self.max_elements} BER "
                "elements; refused"
            )

    def chunk(self) -> None:
        """Count one chunk of a string read. Raises :class:`LimitExceeded` past the limit."""
        self.chunks += 1
        if self.chunks > self.max_chunks:
            raise LimitExceeded(
                f"CMS object of {self.size} bytes has strings split into more than "
                f"{self.max_chunks} chunks (a flood of tiny chunks); refused"
            )
        self.count()


def element_end(data: bytes, tlv: Tlv, depth: int, walk: BerWalk) -> int:
    """Where ``tlv`` ends; for an indefinite length, after its end-of-contents octets."""
    if not tlv.indefinite:
        return tlv.end
    return _children_end(data, tlv, depth, walk) + 2


def _children_end(data: bytes, tlv: Tlv, depth: int, walk: BerWalk) -> int:
    """Where the end-of-contents octets of an indefinite-length ``tlv`` start."""
    known = walk.ends.get(tlv.start)
    if known is not None:
        return known
    if depth > _MAX_BER_DEPTH:
        raise UnexpectedEncoding
    pos = tlv.value_start
    while True:
        tag, first = data[pos], data[pos + 1]
        if tag == 0 and first == 0:
            break
        if tag & 0xDF == 0x04:  # an OCTET STRING: a chunk, if tlv is a string
            walk.chunk()
        else:
            walk.count()
        if first < 0x80 and tag & 0x3F < 0x1F:  # primitive, short form: the common chunk
            pos += 2 + first
            continue
        pos = element_end(data, read_tlv(data, pos), depth + 1, walk)
    walk.ends[tlv.start] = pos
    return pos


def complete(data: bytes, tlv: Tlv, walk: BerWalk) -> Tlv:
    """``tlv`` with ``value_end`` and ``end`` known (walking an indefinite length's children)."""
    if not tlv.indefinite:
        return tlv
    value_end = _children_end(data, tlv, 0, walk)
    return Tlv(tlv.start, tlv.value_start, value_end, value_end + 2, tlv.tag, True)


def first_child(data: bytes, parent: Tlv, tag: int, walk: BerWalk, skip: int = 0) -> Tlv:
    """The first child of ``parent`` with identifier ``tag`` (after ``skip`` such children),
    completed. Raises UnexpectedEncoding."""
    pos = parent.value_start
    limit = parent.value_end if not parent.indefinite else len(data)
    while pos < limit:
        if parent.indefinite and data[pos] == 0 and data[pos + 1] == 0:
            break
        child = complete(data, read_tlv(data, pos), walk)
        if child.tag == tag:
            if not skip:
                return child
            skip -= 1
        pos = child.end
    raise UnexpectedEncoding


def octets(data: bytes, tlv: Tlv, depth: int, walk: BerWalk) -> bytes | memoryview:
    """The value of an OCTET STRING (IMPLICIT-tagged or not): a view of a primitive one's bytes,
    the joined chunks of a constructed (BER) one."""
    if not tlv.tag & 0x20:
        return memoryview(data)[tlv.value_start : tlv.value_end]
    if depth > _MAX_BER_DEPTH:
        raise UnexpectedEncoding
    view = memoryview(data)
    chunks: list[memoryview | bytes] = []
    # Chunks whose end was found already were counted then: each is counted once.
    counted = tlv.indefinite and tlv.start in walk.ends
    pos = tlv.value_start
    while True:
        if tlv.indefinite:
            if data[pos] == 0 and data[pos + 1] == 0:
                walk.ends[tlv.start] = pos
                break
        elif pos >= tlv.value_end:
            break
        if not counted:
            walk.chunk()
        if data[pos] == 0x04 and data[pos + 1] < 0x80:  # primitive, short form
            end = pos + 2 + data[pos + 1]
            if end > len(data):
                raise UnexpectedEncoding
            chunks.append(view[pos + 2 : end])
            pos = end
            continue
        chunk = read_tlv(data, pos)
        if chunk.tag == 0x04:
            chunks.append(view[chunk.value_start : chunk.value_end])
            pos = chunk.end
        elif chunk.tag == 0x24:
            chunks.append(octets(data, chunk, depth + 1, walk))
            pos = element_end(data, chunk, depth + 1, walk)
        else:
            raise UnexpectedEncoding
    if not tlv.indefinite and pos != tlv.value_end:
        raise UnexpectedEncoding
    # One copy: the chunks are views into ``data``.
    return b"".join(chunks)


# --- joining every chunked string before asn1crypto reads the object ---------------------------
#
# asn1crypto accepts a constructed (chunked) string only with an indefinite length, and joins its
# chunks with ``+=`` when the value is first read: quadratic in their number (11.7 MB of chunks
# took minutes). flattened re-encodes an object so that it holds no such string: universal
# strings (OCTET STRING, BIT STRING, the character strings and times) become primitive, and an
# indefinite-length element of another class whose elements are all OCTET STRINGs (an IMPLICIT
# [n] OCTET STRING in chunks, such as encryptedContent) keeps its form with one joined chunk,
# which reads the same whether the schema tags it IMPLICIT (a string) or EXPLICIT (one element).
# Other indefinite lengths become definite. An element with nothing to change is copied as
# received (so signed attributes and certificates keep their exact bytes), and a definite-length
# one without a 0x80 octet inside cannot hold an indefinite length, so it is not even visited.

# Universal tag numbers of the string types asn1crypto joins.
_STRING_TAGS = frozenset({3, 4, 12, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 30})


def flattened(data: bytes, walk: BerWalk) -> bytes:
    """``data`` (one BER element, possibly followed by trailing bytes, kept for asn1crypto to
    refuse) without chunked strings; ``data`` itself when it holds none. Raises
    :class:`MalformedInput` for an encoding the walk cannot follow, :class:`LimitExceeded` past
    the walk's element budget or ``_MAX_FLATTEN_DEPTH`` levels of nesting."""
    out = bytearray()
    changes = walk.changes
    try:
        end = _rewrite(data, read_tlv(data, 0), 0, walk, out)
    except (UnexpectedEncoding, IndexError):
        raise MalformedInput("not a valid CMS ContentInfo: the BER encoding is broken") from None
    if walk.changes == changes:
        return data
    out += memoryview(data)[end:]
    return bytes(out)


def _rewrite(data: bytes, tlv: Tlv, depth: int, walk: BerWalk, out: bytearray) -> int:
    """Append the new encoding of ``tlv`` to ``out`` (the bytes as received when nothing in it
    changes); return where ``tlv`` ends in ``data``."""
    walk.count()
    view = memoryview(data)
    if not tlv.indefinite and (
        not tlv.tag & 0x20 or data.find(b"\x80", tlv.value_start, tlv.value_end) < 0
    ):
        # Primitive, or definite with no 0x80 octet inside, so no indefinite length either:
        # nothing asn1crypto would join (it refuses definite-length chunked strings).
        out += view[tlv.start : tlv.end]
        return tlv.end
    if depth > _MAX_FLATTEN_DEPTH:
        raise LimitExceeded(f"CMS object nested more than {_MAX_FLATTEN_DEPTH} levels deep")
    mark = len(out)
    universal = not tlv.tag & 0xC0
    if tlv.indefinite and universal and tlv.tag & 0x1F in _STRING_TAGS:
        walk.changes += 1  # a universal string in chunks: primitive
        end = _join_string(data, tlv, tlv.tag & 0x1F, depth, walk, out)
        out[mark:mark] = bytes([tlv.tag & ~0x20]) + der_writer.length(len(out) - mark)
        return end
    identifier = data[tlv.start : tlv.start + _identifier_size(data, tlv.start)]
    if tlv.indefinite and not universal and data[tlv.value_start] & 0xDF == 0x04:
        # Another class, in chunks that are OCTET STRINGs: an IMPLICIT [n] OCTET STRING (or one
        # OCTET STRING under an EXPLICIT [n]). One joined chunk reads the same either way.
        try:
            end = _join_string(data, tlv, 4, depth, walk, out)
        except UnexpectedEncoding:  # an element that is no OCTET STRING: not a string after all
            del out[mark:]
        else:
            walk.changes += 1
            out[mark:mark] = identifier + b"\x80\x04" + der_writer.length(len(out) - mark)
            out += b"\x00\x00"
            return end
    changes = walk.changes
    pos = tlv.value_start
    while True:
        if tlv.indefinite:
            if data[pos] == 0 and data[pos + 1] == 0:
                end = pos + 2
                break
        elif pos >= tlv.value_end:
            if pos != tlv.value_end:
                raise UnexpectedEncoding
            end = pos
            break
        pos = _rewrite(data, read_tlv(data, pos), depth + 1, walk, out)
    if tlv.indefinite:
        walk.changes += 1
    if walk.changes == changes:  # nothing inside changed: the bytes as received
        del out[mark:]
        out += view[tlv.start : end]
    else:
        out[mark:mark] = identifier + der_writer.length(len(out) - mark)
    return end


def _join_string(
    data: bytes, tlv: Tlv, number: int, depth: int, walk: BerWalk, out: bytearray
) -> int:
    """Append the value of the string ``tlv`` (universal tag ``number``: its chunks may be
    OCTET STRINGs or of that type, primitive or chunked again) to ``out``; return where it ends.
    Raises UnexpectedEncoding for a chunk of another type. A BIT STRING's chunks each start with
    their unused-bits octet, which only the last may set: the value keeps one, the last
    chunk's."""
    if not tlv.tag & 0x20:
        if number == 3 and tlv.value_end == tlv.value_start:
            raise UnexpectedEncoding  # a BIT STRING chunk needs its unused-bits octet
        out += memoryview(data)[tlv.value_start : tlv.value_end]
        return tlv.end
    if depth > _MAX_FLATTEN_DEPTH:
        raise LimitExceeded(f"CMS object nested more than {_MAX_FLATTEN_DEPTH} levels deep")
    view = memoryview(data)
    bits_at = len(out)  # where a BIT STRING's unused-bits octet is kept
    pos = tlv.value_start
    while True:
        if tlv.indefinite:
            if data[pos] == 0 and data[pos + 1] == 0:
                return pos + 2
        elif pos >= tlv.value_end:
            if pos != tlv.value_end:
                raise UnexpectedEncoding
            return pos
        walk.chunk()
        tag, first = data[pos], data[pos + 1]
        if number != 3 and tag in (4, number) and first < 0x80:  # primitive, short form
            end = pos + 2 + first
            if end > len(data):
                raise UnexpectedEncoding
            out += view[pos + 2 : end]
            pos = end
            continue
        chunk = read_tlv(data, pos)
        if chunk.tag & 0xDF not in (4, number):  # a chunk is of this type or an OCTET STRING
            raise UnexpectedEncoding
        before = len(out)
        pos = _join_string(data, chunk, number, depth + 1, walk, out)
        if number == 3 and before > bits_at:
            if out[bits_at]:
                raise MalformedInput("a BIT STRING chunk other than the last has unused bits")
            out[bits_at] = out[before]  # this chunk's unused bits, in place of the earlier ones
            del out[before]


# --- reading attribute sets without building asn1crypto objects --------------------------------
#
# The signed attributes of every message are new bytes, and walking them through asn1crypto
# builds three objects per attribute; verification only needs each attribute's type and the DER
# of its values, which a direct walk gives for a fraction of the cost.

_OID_NAMES: dict[bytes, str] = {}
_OID_NAMES_MAX = 4096


def oid_dotted(value: bytes) -> str:
    """The dotted form of an OBJECT IDENTIFIER's value octets (``2a864886f70d010703`` ->
    ``1.2.840.113549.1.7.3``). Raises ValueError for octets that are no OID encoding."""
    known = _OID_NAMES.get(value)
    if known is not None:
        return known
    if not value or value[-1] & 0x80:
        raise ValueError("OBJECT IDENTIFIER encoding is truncated")
    arcs: list[int] = []
    arc = 0
    for octet in value:
        if arc == 0 and octet == 0x80:
            raise ValueError("OBJECT IDENTIFIER arc has a leading zero octet")
        arc = (arc << 7) | (octet & 0x7F)
        if not octet & 0x80:
            arcs.append(arc)
            arc = 0
    first = min(arcs[0] // 40, 2)
    dotted = ".".join(map(str, (first, arcs[0] - 40 * first, *arcs[1:])))
    if len(_OID_NAMES) < _OID_NAMES_MAX:
        _OID_NAMES[value] = dotted
    return dotted


def read_attributes(contents: bytes) -> list[tuple[str, list[bytes]]]:
    """The attributes in the contents octets of a DER ``SET OF Attribute`` (RFC 5652 section
    5.3): for each, its dotted type and the complete DER of each of its values, in order.

    Raises ValueError when the contents are not a definite-length SET OF SEQUENCE { OBJECT
    IDENTIFIER, SET } (an indefinite length included: a caller may then fall back to asn1crypto).
    """
    try:
        out: list[tuple[str, list[bytes]]] = []
        pos, end = 0, len(contents)
        while pos < end:
            attribute = read_tlv(contents, pos)
            if attribute.tag != 0x30 or attribute.indefinite:
                raise ValueError("attribute is not a SEQUENCE")
            oid = read_tlv(contents, attribute.value_start)
            values = read_tlv(contents, oid.end) if oid.tag == 0x06 else None
            if values is None or values.tag != 0x31 or values.indefinite:
                raise ValueError("attribute is not a type and a SET of values")
            if values.end != attribute.end:
                raise ValueError("attribute has data after its values")
            raw: list[bytes] = []
            cursor = values.value_start
            while cursor < values.end:
                value = read_tlv(contents, cursor)
                if value.indefinite:
                    raise ValueError("attribute value has an indefinite length")
                raw.append(contents[value.start : value.end])
                cursor = value.end
            if cursor != values.end:
                raise ValueError("attribute values overrun their SET")
            out.append((oid_dotted(contents[oid.value_start : oid.end]), raw))
            pos = attribute.end
    except (UnexpectedEncoding, IndexError):
        raise ValueError("attributes are not DER") from None
    if pos != end:
        raise ValueError("attributes overrun their SET")
    return out


def der_elements(contents: bytes) -> list[tuple[int, bytes, bytes]]:
    """The elements in the contents octets of a DER constructed value, in order: for each, its
    first identifier octet, its whole encoding and its value octets.

    Raises ValueError for anything that is not definite-length DER filling ``contents`` exactly.
    """
    out: list[tuple[int, bytes, bytes]] = []
    pos, end = 0, len(contents)
    try:
        while pos < end:
            element = read_tlv(contents, pos)
            if element.indefinite:
                raise ValueError("indefinite length in DER")
            out.append(
                (
                    element.tag,
                    contents[element.start : element.end],
                    contents[element.value_start : element.value_end],
                )
            )
            pos = element.end
    except (UnexpectedEncoding, IndexError):
        raise ValueError("elements are not DER") from None
    return out

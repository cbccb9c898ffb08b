"""Which S/MIME layer a MIME entity is, and the S/MIME parts hidden in content that is shown.

A layer is known by its Content-Type (multipart/signed with a PKCS#7 signature protocol,
application/(x-)pkcs7-mime and its smime-type, an ``.p7m`` octet stream, an RFC 8551
message/rfc822 inside a layer); a CMS part without an smime-type is told by the content type at
the start of its body. Protected headers (RFC 9788 ``hp``, legacy ``protected-headers="v1"``) are
read off the Content-Type too.
"""

from __future__ import annotations

from collections.abc import Iterator

from smime_companion.core.cms import is_certificates_only, parse_cms_part
from smime_companion.core.input_forms import content_type_oid
from smime_companion.core.mime import (
    MESSAGE_TYPES,
    Entity,
    decode_transfer_encoding,
    multipart_parts,
    parse_entity,
    parts_as_read,
)
from smime_companion.core.verdicts import (
    WARN_MIME_LIMIT,
    WARN_PARTIALLY_ENCRYPTED,
    WARN_PARTIALLY_SIGNED,
)
from smime_companion.errors import MalformedInput, UnsupportedInput

PKCS7_MIME_TYPES = frozenset({"application/pkcs7-mime", "application/x-pkcs7-mime"})
PKCS7_SIGNATURE_TYPES = frozenset({"application/pkcs7-signature", "application/x-pkcs7-signature"})


def layer_kind(entity: Entity, inside_layer: bool) -> str | None:
    """What S/MIME layer ``entity`` is: ``multipart/signed``, ``signed``, ``encrypted``,
    ``compressed``, ``cms`` (unknown smime-type), ``rfc822``, or None for ordinary content."""
    ctype = entity.content_type
    mime_type = ctype.mime_type
    if mime_type == "multipart/signed":
        protocol = (ctype.param("protocol") or "").lower()
        if protocol in PKCS7_SIGNATURE_TYPES:
            return "multipart/signed"
        if protocol != "application/pgp-signature" and _signed_by_pkcs7_part(entity):
            return "multipart/signed"  # the protocol left out or misspelt
        return None
    if mime_type in MESSAGE_TYPES:
        return "rfc822" if inside_layer else None
    is_cms = mime_type in PKCS7_MIME_TYPES or (
        mime_type == "application/octet-stream" and _filename(entity).endswith(".p7m")
    )
    if not is_cms:
        return None
    smime_type = (ctype.param("smime-type") or "").lower()
    if smime_type == "signed-data":
        return "signed"
    if smime_type in ("enveloped-data", "authenveloped-data"):
        return "encrypted"
    if smime_type in ("compressed-data",):
        return "compressed"
    return "cms"


def walked_layer_kind(entity: Entity, inside_layer: bool) -> str | None:
    """:func:`layer_kind` of the entity the opening walk stands on: also ``cms`` for a PKCS#7
    signature standing alone (the second part of a multipart/signed whose first part a gateway
    or a "save the signature" dropped), so that opening says its signed content is missing
    instead of passing it as ordinary content with no signature. An attached .p7s inside
    other content is still an attachment (see :func:`hidden_smime_warnings`)."""
    kind = layer_kind(entity, inside_layer)
    if kind is None and entity.content_type.mime_type in PKCS7_SIGNATURE_TYPES:
        return "cms"
    return kind


# The header section of a signature part is a few lines; a larger one is not looked at.
_SIGNATURE_PART_HEADER_BYTES = 16 * 1024


def _signed_by_pkcs7_part(entity: Entity) -> bool:
    """For a multipart/signed whose protocol parameter is missing or names no known protocol
    (RFC 1847 requires it, yet some senders and list servers that rewrite the Content-Type
    leave it out or garble it): whether its second part is a PKCS#7 signature, by type or as an
    octet stream named ``.p7s``."""
    try:
        parts = multipart_parts(entity, 2)
        if len(parts) != 2:
            return False
        signature = parse_entity(parts[1], _SIGNATURE_PART_HEADER_BYTES, as_content=True)
    except MalformedInput:
        return False
    mime_type = signature.content_type.mime_type
    return mime_type in PKCS7_SIGNATURE_TYPES or (
        mime_type == "application/octet-stream" and _filename(signature).endswith(".p7s")
    )


_PEEK_KINDS = {
    bytes.fromhex("06092a864886f70d010702"): "signed",
    bytes.fromhex("06092a864886f70d010703"): "encrypted",
    bytes.fromhex("060b2a864886f70d0109100117"): "encrypted",
    bytes.fromhex("060b2a864886f70d0109100109"): "compressed",
}


def _peeked_cms_kind(entity: Entity) -> str:
    """What a CMS part without an smime-type holds, read from the first bytes of its body:
    ``signed``, ``encrypted`` (also when it cannot be told: an .p7m attachment is usually
    encrypted, and must never pass for plain content), or ``compressed``."""
    try:
        head = entity.body[:256]
        if entity.transfer_encoding == "base64":
            text = head.translate(None, b" \t\r\n")
            head = decode_transfer_encoding(text[: len(text) // 4 * 4], "base64")
        oid = content_type_oid(head)
    except MalformedInput:
        return "encrypted"
    return _PEEK_KINDS.get(oid, "encrypted") if oid is not None else "encrypted"


def _carries_only_certificates(entity: Entity) -> bool:
    """True when ``entity``'s body is a certificates-only SignedData (see
    :func:`~smime_companion.core.cms.is_certificates_only`), whatever its label says."""
    try:
        return is_certificates_only(parse_cms_part(entity))
    except (MalformedInput, UnsupportedInput):
        return False


def _filename(entity: Entity) -> str:
    return _named(entity).lower()


def _named(entity: Entity) -> str:
    """The part's file name (Content-Type name, else Content-Disposition filename), or ""."""
    name = entity.content_type.param("name")
    if not name:
        disposition = entity.get("Content-Disposition") or ""
        for piece in disposition.split(";"):
            key, _, value = piece.strip().partition("=")
            if key.lower() == "filename":
                name = value.strip().strip('"')
    return name or ""


def wrapped_file_name(entity: Entity) -> str | None:
    """The name of the file an S/MIME part wraps, by the convention of signed documents:
    ``contract.pdf`` inside ``contract.pdf.p7m``; None for ``smime.p7m`` or an unnamed part."""
    name = _named(entity)
    stem, dot, suffix = name.rpartition(".")
    if not dot or suffix.lower() not in ("p7m", "p7s") or stem.lower() in ("", "smime"):
        return None
    return stem


def protection_of(entity: Entity) -> str | None:
    """How ``entity`` (just unwrapped) carries protected headers, if it does."""
    ctype = entity.content_type
    if ctype.param("hp") in ("cipher", "clear"):
        return "hp"
    if (ctype.param("protected-headers") or "").lower() == "v1":
        return "v1"
    return None


def hidden_smime_warnings(
    top: Entity, *, max_depth: int, max_parts: int, max_header_bytes: int
) -> list[str]:
    """Warnings for S/MIME parts inside the content shown (EFAIL's attack shape): inside an
    unprotected multipart, inside an attached message (message/rfc822), or inside a
    multipart that was decrypted. A part is S/MIME by its Content-Type, or (an
    application/octet-stream ``.p7m`` or a pkcs7-mime without smime-type) by the CMS
    content type at the start of its body.

    Those parts are not opened and never joined with the content around them.
    """
    found: list[str] = []
    for warning, _entity, _in_message in _hidden_smime(
        top, max_depth=max_depth, max_parts=max_parts, max_header_bytes=max_header_bytes
    ):
        _add(found, warning)
    return found


def hidden_smime_entities(
    top: Entity, *, max_depth: int, max_parts: int, max_header_bytes: int
) -> list[tuple[str, Entity]]:
    """("signed" or "encrypted", the entity) for each S/MIME part inside the unprotected
    multiparts of the content shown, in the order they come: what a mailing list wraps with
    its footer, or a gateway with its disclaimer (a signed or encrypted message, then text, in
    a multipart/mixed). Never joined with the content around them; a reader may open each on
    its own. Those inside an attached message are left out: the attached message opens on its
    own. ("encrypted" also stands for a compressed part or a CMS object of unknown kind.)"""
    kinds = {WARN_PARTIALLY_SIGNED: "signed", WARN_PARTIALLY_ENCRYPTED: "encrypted"}
    return [
        (kinds[warning], entity)
        for warning, entity, in_message in _hidden_smime(
            top, max_depth=max_depth, max_parts=max_parts, max_header_bytes=max_header_bytes
        )
        if warning in kinds and entity is not None and not in_message
    ]


def _hidden_smime(
    top: Entity, *, max_depth: int, max_parts: int, max_header_bytes: int
) -> Iterator[tuple[str, Entity | None, bool]]:
    """(warning, the S/MIME entity or None, whether it is inside an attached message) for each
    S/MIME part inside ``top`` in document order, and WARN_MIME_LIMIT (with None) where the
    walk stopped at a limit."""
    stack: list[tuple[Entity, int, bool]] = [(top, 0, False)]
    examined = 0
    while stack:
        entity, depth, in_message = stack.pop()
        mime_type = entity.content_type.mime_type
        if depth > 0:
            kind = layer_kind(entity, inside_layer=False)
            if kind == "cms":  # no smime-type (Outlook's octet-stream smime.p7m): peek
                kind = _peeked_cms_kind(entity)
            if kind == "signed" and _carries_only_certificates(entity):
                continue  # an attached certificate (smime.p7c): nothing is signed in it
            if kind == "multipart/signed" or kind == "signed":
                yield WARN_PARTIALLY_SIGNED, entity, in_message
                continue
            if kind is not None:  # encrypted, compressed, or a CMS object of unknown kind
                yield WARN_PARTIALLY_ENCRYPTED, entity, in_message
                continue
        inside_message = mime_type in MESSAGE_TYPES
        if not mime_type.startswith("multipart/") and not inside_message:
            continue
        if depth >= max_depth:
            yield WARN_MIME_LIMIT, None, in_message
            continue
        try:
            parts = [entity.decoded_body()] if inside_message else parts_as_read(entity, max_parts)
        except MalformedInput:
            continue
        children = []
        for part in parts:
            examined += 1
            if examined > max_parts:
                yield WARN_MIME_LIMIT, None, in_message
                return
            try:
                child = parse_entity(part, max_header_bytes, as_content=True)
            except MalformedInput:
                continue
            children.append((child, depth + 1, in_message or inside_message))
        stack.extend(reversed(children))  # popped in document order


def _add(items: list[str], item: str) -> None:
    if item not in items:
        items.append(item)

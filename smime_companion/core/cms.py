"""Parsing CMS (RFC 5652) objects from untrusted bytes with asn1crypto.

asn1crypto parses lazily: a broken inner structure only fails when it is first touched. The
functions here force the parse of what the rest of the core will read, so that every parse error
surfaces here as one :class:`MalformedInput` naming the structure, never as a stray exception later.
"""

from __future__ import annotations

from asn1crypto import cms, core

from smime_companion.errors import MalformedInput, UnsupportedInput

# Upper bound on a CMS object we agree to parse; larger input is refused before parsing.
MAX_CMS_BYTES = 256 * 1024 * 1024

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
    except (ValueError, TypeError, KeyError, IndexError, OverflowError) as exc:
        raise MalformedInput(f"not a valid CMS ContentInfo: {_one_line(exc)}") from None
    if content_type not in CONTENT_TYPE_NAMES or content_type == "data":
        raise UnsupportedInput(f"unsupported CMS content type {content_type!r}")
    return info


def content_type_name(info: cms.ContentInfo) -> str:
    """The content type in our vocabulary: ``signed-data``, ``enveloped-data``, ..."""
    return CONTENT_TYPE_NAMES.get(info["content_type"].native, info["content_type"].dotted)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:200] if text else type(exc).__name__

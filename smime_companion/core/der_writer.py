"""Writing DER by hand: tag, length and value, for the fixed structures ``core.seal`` makes.

Building those structures as asn1crypto objects cost ten times the RSA signature itself
(``bench/seal.py``), so they are written as bytes directly. The tests parse every structure back
with asn1crypto, OpenSSL, gpgsm and NSS. Pure: values in, bytes out; never raises on valid input.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime

from asn1crypto import core
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import serialization

NULL = b"\x05\x00"
INT_0, INT_1, INT_2, INT_3 = (bytes((0x02, 0x01, n)) for n in range(4))


def length(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    octets = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((0x80 | len(octets),)) + octets


def tlv(tag: int, content: bytes) -> bytes:
    return bytes((tag,)) + length(len(content)) + content


def seq(*parts: bytes) -> bytes:
    return tlv(0x30, b"".join(parts))


def retag(der: bytes, tag: int) -> bytes:
    """``der`` under another tag (an IMPLICIT tag replaces the outer one, contents unchanged)."""
    return bytes((tag,)) + der[1:]


@functools.lru_cache(maxsize=128)
def oid(dotted: str) -> bytes:
    return bytes(core.ObjectIdentifier(dotted).dump())


def attribute(oid: bytes, value: bytes) -> bytes:
    return seq(oid, tlv(0x31, value))


def der_time(at: datetime) -> bytes:
    # RFC 5652 sec 11.3: UTCTime for 1950-2049, GeneralizedTime otherwise; always UTC, seconds.
    utc = at.astimezone(UTC)
    if 1950 <= utc.year < 2050:
        return tlv(0x17, utc.strftime("%y%m%d%H%M%SZ").encode("ascii"))
    return tlv(0x18, utc.strftime("%Y%m%d%H%M%SZ").encode("ascii"))


@functools.lru_cache(maxsize=256)
def certificate_der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


@functools.lru_cache(maxsize=256)
def issuer_and_serial(cert: x509.Certificate) -> bytes:
    """DER IssuerAndSerialNumber of ``cert``, with the issuer Name exactly as the certificate
    encodes it (recipients match it octet for octet)."""
    parsed = asn1_x509.Certificate.load(certificate_der(cert))
    issuer = parsed["tbs_certificate"]["issuer"].dump()
    serial = parsed["tbs_certificate"]["serial_number"].dump()
    return seq(issuer, serial)

"""Certificates from DER, including the ones real mail carries that cryptography refuses.

Every certificate that enters the package from outside (a message, the certificate store, a key
file, a worker process) is loaded by :func:`load_certificate`. Two kinds of defect are tolerated,
because CAs issued such certificates for years, old mail keeps carrying them, and OpenSSL, NSS and
gpgsm accept most of them:

- a serial number that is zero or negative (RFC 5280 section 4.1.2.2 forbids it; cryptography 51
  warns on each one and has announced it will refuse them);
- an encoding that is BER but not DER: a BOOLEAN TRUE written as 01 rather than FF, a default
  value written out (``critical FALSE``) (OpenSSL accepts both), a UTCTime without seconds.
  cryptography refuses these;
- names holding a TeletexString (T.61) with Latin-1 letters in it, as European CAs wrote
  "Düsseldorf" around 2000 (T.61 spells accents otherwise; OpenSSL and gpgsm read them as
  Latin-1). cryptography refuses the names; the copy carries them as UTF8String.

Such a certificate is loaded from a DER copy (re-encoded by asn1crypto, its serial made positive)
and wrapped so that everything that identifies the certificate (its serial number, its bytes, its
fingerprint, what its issuer signed) is the original's. :func:`certificate_notes` names the defect
for the report.
"""

from __future__ import annotations

import hashlib
from typing import Any

from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding

from smime_companion.core.ber_walker import der_elements
from smime_companion.core.certs import describe_subject
from smime_companion.core.der_writer import tlv
from smime_companion.core.verdicts import WARN_NON_DER_CERTIFICATE, WARN_NON_POSITIVE_SERIAL

# How load_certificate's error starts for a certificate whose names cannot be read.
UNREADABLE_NAMES = "the certificate's names cannot be read"


def load_certificate(der: bytes) -> x509.Certificate:
    """The certificate in ``der``, as cryptography loads it or, when cryptography refuses only
    its non-positive serial number, its non-DER encoding or its names' Teletex strings, as a
    stand-in that behaves as the original.

    Raises ``ValueError`` for anything that is not a certificate cryptography can read, names
    included: cryptography parses the subject and issuer only when first read, and a name it
    refuses then (a broken string, a bit string under the wrong attribute type) would raise out
    of whatever read it later, the report of a message among them.
    """
    cert = _loaded(der)
    try:
        cert.subject, cert.issuer  # noqa: B018 (read for the parsing)
    except (ValueError, TypeError) as exc:
        readable = _with_teletex_names_as_utf8(der)
        if readable is None:
            raise ValueError(f"{UNREADABLE_NAMES}: {exc}") from None
        return readable
    return cert


def _loaded(der: bytes) -> x509.Certificate:
    try:
        return x509.load_der_x509_certificate(der)
    except ValueError as exc:
        refused = exc
    try:
        parsed = asn1_x509.Certificate.load(der, strict=True)  # no bytes after it
        not_der = parsed.dump(force=True) != der
        tbs = parsed["tbs_certificate"]
        serial = int(tbs["serial_number"].native)
        if serial <= 0:
            # Any positive number will do for the copy: it is never shown, compared or signed over.
            tbs["serial_number"] = -serial + 1
        loadable = x509.load_der_x509_certificate(parsed.dump(force=True))
    except (ValueError, TypeError, KeyError):
        raise refused from None
    return _ToleratedCertificate(loadable, der, serial, not_der)  # type: ignore[return-value]


def _with_teletex_names_as_utf8(der: bytes) -> x509.Certificate | None:
    """A stand-in for a certificate whose names cryptography refuses only for their
    TeletexStrings: a copy with those values as UTF8String, read as Latin-1 (as OpenSSL and
    gpgsm show them). Rewritten byte by byte, not by asn1crypto, which would re-encode every
    Teletex string it has read (one in an extension too) and fail on the same letters. None
    when that is not what is wrong."""
    try:
        ((cert_tag, _, cert_value),) = der_elements(der)
        tbs, *rest = der_elements(cert_value)
        fields = [encoding for _, encoding, _ in der_elements(tbs[2])]
        first = 1 if fields[0][:1] == b"\xa0" else 0  # the optional [0] version
        issuer, subject = first + 2, first + 4
        fields[issuer], changed_issuer = _utf8_name(fields[issuer])
        fields[subject], changed_subject = _utf8_name(fields[subject])
        if not (changed_issuer or changed_subject) or cert_tag != 0x30:
            return None
        ((_, _, serial_value),) = der_elements(fields[first])
        if not serial_value or serial_value[0] & 0x80 or serial_value == b"\x00":
            fields[first] = b"\x02\x01\x01"  # a non-positive serial, as in _loaded
        copy = tlv(0x30, tlv(0x30, b"".join(fields)) + b"".join(e for _, e, _ in rest))
        loadable = x509.load_der_x509_certificate(copy)
        loadable.subject, loadable.issuer  # noqa: B018 (read for the parsing)
        serial = int(asn1_x509.Certificate.load(der)["tbs_certificate"]["serial_number"].native)
    except (ValueError, TypeError, KeyError, IndexError, UnicodeError):
        return None
    return _ToleratedCertificate(  # type: ignore[return-value]
        loadable, der, serial, not_der=False, teletex_names=True
    )


_TELETEX_STRING, _UTF8_STRING = 0x14, 0x0C


def _utf8_name(name: bytes) -> tuple[bytes, bool]:
    """The Name ``name`` (DER) with each TeletexString value as a UTF8String of its Latin-1
    reading, and whether there was any. Raises ValueError for what is not DER."""
    ((_, _, rdns),) = der_elements(name)
    changed = False
    out = []
    for _, _, rdn in der_elements(rdns):
        pairs = []
        for _, _, pair in der_elements(rdn):
            (_, type_der, _), (tag, value_der, value) = der_elements(pair)
            if tag == _TELETEX_STRING:
                value_der = tlv(_UTF8_STRING, value.decode("latin-1").encode())
                changed = True
            pairs.append(tlv(0x30, type_der + value_der))
        out.append(tlv(0x31, b"".join(sorted(pairs))))
    return tlv(0x30, b"".join(out)), changed


def certificate_notes(cert: x509.Certificate) -> tuple[str, ...]:
    """Defects of ``cert`` that were tolerated, one line each (empty for a sound certificate)."""
    defects = _defects(cert)
    if not defects:
        return ()
    subject = describe_subject(cert)
    return tuple(
        f"certificate {subject} has {text}; accepted, as other mail programs do"
        for text in defects.values()
    )


def certificate_warnings(cert: x509.Certificate) -> tuple[str, ...]:
    """The message warnings (``core.verdicts``) for the defects of ``cert`` that were tolerated."""
    return tuple(_defects(cert))


def _defects(cert: x509.Certificate) -> dict[str, str]:
    """Each tolerated defect of ``cert``: its warning and the words that describe it."""
    defects: dict[str, str] = {}
    serial = cert.serial_number  # the original's, for a tolerated certificate
    if serial <= 0:  # loaded by a cryptography that only warns about it, or a stand-in
        defects[WARN_NON_POSITIVE_SERIAL] = (
            f"serial number {serial}, which RFC 5280 forbids (not positive)"
        )
    if isinstance(cert, _ToleratedCertificate) and cert.not_der:
        defects[WARN_NON_DER_CERTIFICATE] = "an encoding that is not DER"
    elif isinstance(cert, _ToleratedCertificate) and cert.teletex_names:
        defects[WARN_NON_DER_CERTIFICATE] = (
            "names in Teletex strings holding Latin-1 letters, read as Latin-1"
        )
    return defects


class _ToleratedCertificate:
    """A certificate loaded from a DER copy (serial made positive), answering as the original: its
    serial number, DER/PEM bytes, fingerprints, to-be-signed bytes, equality and pickling come from
    the original; every other fact (names, extensions, key, validity) is the copy's, which is
    identical. Signatures are checked by :mod:`smime_companion.core.signatures` over
    ``public_bytes()``, so the original's signature is what gets checked."""

    def __init__(
        self,
        loadable: x509.Certificate,
        der: bytes,
        serial: int,
        not_der: bool,
        teletex_names: bool = False,
    ) -> None:
        self._loadable = loadable
        self._der = der
        self._serial = serial
        self.not_der = not_der  # besides its serial, its encoding was tolerated
        self.teletex_names = teletex_names  # its names' TeletexStrings are UTF8Strings in the copy

    @property
    def serial_number(self) -> int:
        return self._serial

    @property
    def tbs_certificate_bytes(self) -> bytes:
        return bytes(asn1_x509.Certificate.load(self._der)["tbs_certificate"].dump())

    def public_bytes(self, encoding: Encoding) -> bytes:
        if encoding == Encoding.DER:
            return self._der
        if encoding == Encoding.PEM:
            import base64

            body = base64.encodebytes(self._der).replace(b"\n", b"")
            lines = [body[i : i + 64] for i in range(0, len(body), 64)]
            return (
                b"-----BEGIN CERTIFICATE-----\n"
                + b"\n".join(lines)
                + (b"\n-----END CERTIFICATE-----\n")
            )
        raise ValueError(f"unsupported encoding {encoding}")

    def fingerprint(self, algorithm: hashes.HashAlgorithm) -> bytes:
        digest = hashes.Hash(algorithm)
        digest.update(self._der)
        return digest.finalize()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loadable, name)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, _ToleratedCertificate):
            return self._der == other._der
        if isinstance(other, x509.Certificate):
            return self._der == other.public_bytes(Encoding.DER)
        return NotImplemented

    def __hash__(self) -> int:
        return int.from_bytes(hashlib.sha256(self._der).digest()[:8], "big")

    def __repr__(self) -> str:
        return f"<Certificate(subject={self._loadable.subject}, serial={self._serial})>"

    def __reduce__(self) -> tuple[Any, tuple[bytes]]:
        return load_certificate, (self._der,)

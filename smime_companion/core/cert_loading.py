"""Certificates from DER, including the ones real mail carries that cryptography refuses.

Every certificate that enters the package from outside (a message, the certificate store, a key
file, a worker process) is loaded by :func:`load_certificate`. The one defect tolerated here is a
serial number that is zero or negative: RFC 5280 section 4.1.2.2 forbids it, but CAs issued such
certificates for years and old mail keeps carrying them, and OpenSSL, NSS and gpgsm accept them.
cryptography 51 warns on each one and has announced it will refuse them; when it does, such a
certificate is loaded from a copy whose serial is made positive, and wrapped so that everything
that identifies the certificate (its serial number, its bytes, its fingerprint, what was signed)
is the original's. :func:`certificate_notes` names the defect for the report.
"""

from __future__ import annotations

import hashlib
from typing import Any

from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding


def load_certificate(der: bytes) -> x509.Certificate:
    """The certificate in ``der``, as cryptography loads it or, when cryptography refuses only
    its non-positive serial number, as a stand-in that behaves as the original.

    Raises ``ValueError`` for anything that is not a certificate cryptography can read.
    """
    try:
        return x509.load_der_x509_certificate(der)
    except ValueError:
        serial = _serial_of(der)
        if serial is None or serial > 0:
            raise
    return _with_original_serial(der, serial)


def certificate_notes(cert: x509.Certificate) -> tuple[str, ...]:
    """Defects of ``cert`` that were tolerated, one line each (empty for a sound certificate)."""
    serial = cert.serial_number
    if serial > 0:
        return ()
    try:
        subject = cert.subject.rfc4514_string() or "(empty subject)"
    except ValueError:
        subject = "(unreadable subject)"
    return (
        f"certificate {subject} has serial number {serial}, which RFC 5280 forbids "
        "(not positive); accepted, as other mail programs do",
    )


def _serial_of(der: bytes) -> int | None:
    try:
        return int(asn1_x509.Certificate.load(der)["tbs_certificate"]["serial_number"].native)
    except (ValueError, TypeError, KeyError):
        return None


def _with_original_serial(der: bytes, serial: int) -> x509.Certificate:
    parsed = asn1_x509.Certificate.load(der)
    tbs = parsed["tbs_certificate"]
    # Any positive number will do for the copy: it is never shown, compared or signed over.
    tbs["serial_number"] = -serial + 1
    loadable = x509.load_der_x509_certificate(parsed.dump(force=True))
    return _OriginalSerialCertificate(loadable, der, serial)  # type: ignore[return-value]


class _OriginalSerialCertificate:
    """A certificate loaded from a copy with a positive serial, answering as the original: its
    serial number, DER/PEM bytes, fingerprints, to-be-signed bytes, equality and pickling come from
    the original; every other fact (names, extensions, key, validity) is the copy's, which is
    identical. Signatures are checked by :mod:`smime_companion.core.signatures` over
    ``public_bytes()``, so the original's signature is what gets checked."""

    def __init__(self, loadable: x509.Certificate, der: bytes, serial: int) -> None:
        self._loadable = loadable
        self._der = der
        self._serial = serial

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
        if isinstance(other, _OriginalSerialCertificate):
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

"""Certificates from DER, including the ones real mail carries that cryptography refuses.

Every certificate that enters the package from outside (a message, the certificate store, a key
file, a worker process) is loaded by :func:`load_certificate`. Two kinds of defect are tolerated,
because CAs issued such certificates for years, old mail keeps carrying them, and OpenSSL, NSS and
gpgsm accept most of them:

- a serial number that is zero or negative (RFC 5280 section 4.1.2.2 forbids it; cryptography 51
  warns on each one and has announced it will refuse them);
- an encoding that is BER but not DER: a BOOLEAN TRUE written as 01 rather than FF, a default
  value written out (``critical FALSE``) (OpenSSL accepts both), a UTCTime without seconds.
  cryptography refuses these.

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

from smime_companion.core.certs import describe_subject
from smime_companion.core.verdicts import WARN_NON_DER_CERTIFICATE, WARN_NON_POSITIVE_SERIAL


def load_certificate(der: bytes) -> x509.Certificate:
    """The certificate in ``der``, as cryptography loads it or, when cryptography refuses only
    its non-positive serial number or its non-DER encoding, as a stand-in that behaves as the
    original.

    Raises ``ValueError`` for anything that is not a certificate cryptography can read, names
    included: cryptography parses the subject and issuer only when first read, and a name it
    refuses then (a broken string, a bit string under the wrong attribute type) would raise out
    of whatever read it later, the report of a message among them.
    """
    cert = _loaded(der)
    try:
        cert.subject, cert.issuer  # noqa: B018 (read for the parsing)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"the certificate's names cannot be read: {exc}") from None
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
    return defects


class _ToleratedCertificate:
    """A certificate loaded from a DER copy (serial made positive), answering as the original: its
    serial number, DER/PEM bytes, fingerprints, to-be-signed bytes, equality and pickling come from
    the original; every other fact (names, extensions, key, validity) is the copy's, which is
    identical. Signatures are checked by :mod:`smime_companion.core.signatures` over
    ``public_bytes()``, so the original's signature is what gets checked."""

    def __init__(self, loadable: x509.Certificate, der: bytes, serial: int, not_der: bool) -> None:
        self._loadable = loadable
        self._der = der
        self._serial = serial
        self.not_der = not_der  # besides its serial, its encoding was tolerated

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

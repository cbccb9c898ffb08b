"""Loading keys and certificates from files (PEM, DER, PKCS#12) into core values.

The only module that reads key material from disk; the core takes the loaded objects.
"""

from __future__ import annotations

import base64
import os
import re
import ssl
from collections.abc import Iterable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.serialization import pkcs12

from smime_companion.core.cert_loading import UNREADABLE_NAMES, load_certificate
from smime_companion.core.model import Identity
from smime_companion.errors import KeyLoadError


def _read(path: Path, what: str) -> bytes:
    try:
        return path.expanduser().read_bytes()
    except OSError as exc:
        raise KeyLoadError(f"cannot read {what} {path}: {exc.strerror or exc}") from None


def load_certificates(path: Path) -> list[x509.Certificate]:
    """Every certificate in a PEM file (one or more) or a single DER certificate."""
    return certificates_from_bytes(_read(path, "certificate file"), str(path))


def certificates_from_bytes(data: bytes, name: str) -> list[x509.Certificate]:
    """Every certificate in PEM ``data`` (one or more) or a single DER certificate; ``name``
    says where it came from in the error. Raises :class:`KeyLoadError`."""
    try:
        if b"-----BEGIN" in data:
            certificates = [load_certificate(der) for der in _pem_certificates(data)]
            if not certificates:
                raise ValueError("no certificate")
            return certificates
        return [load_certificate(data)]
    except ValueError as exc:
        if str(exc).startswith(UNREADABLE_NAMES):  # a certificate, but not one we can read
            raise KeyLoadError(f"{name}: {exc}") from None
        raise KeyLoadError(f"{name}: not a PEM or DER certificate") from None


_PEM_CERTIFICATE = re.compile(
    rb"-----BEGIN (?:X509 )?CERTIFICATE-----(.*?)-----END (?:X509 )?CERTIFICATE-----", re.S
)


def _pem_certificates(data: bytes) -> list[bytes]:
    """The DER of every certificate block in PEM text (decoded here, so that a certificate
    cryptography refuses can still be loaded by :func:`load_certificate`)."""
    return [
        base64.b64decode(b"".join(body.split()), validate=True)
        for body in _PEM_CERTIFICATE.findall(data)
    ]


def load_private_key(path: Path, password: bytes | None = None) -> PrivateKeyTypes:
    """A private key from a PEM or DER file (PKCS#8 or traditional; encrypted with ``password``)."""
    data = _read(path, "private key file")
    try:
        if b"-----BEGIN" in data:
            return serialization.load_pem_private_key(data, password=password)
        return serialization.load_der_private_key(data, password=password)
    except TypeError:
        raise KeyLoadError(f"{path}: the private key is encrypted; give its password") from None
    except ValueError:
        raise KeyLoadError(f"{path}: not a private key, or the password is wrong") from None


_PEM_PKCS12 = re.compile(rb"-----BEGIN PKCS12-----(.*?)-----END PKCS12-----", re.S)


def is_armoured_pkcs12(data: bytes) -> bool:
    """True when ``data`` holds a PEM-armoured PKCS#12 (``-----BEGIN PKCS12-----``)."""
    return _PEM_PKCS12.search(data) is not None


def _pkcs12_der(data: bytes) -> bytes:
    """The DER of a PKCS#12 file: the file itself, or the body of its PEM armour, which is what
    ``gpgsm --export-secret-key-p12 --armor`` writes (after a few lines describing the key).
    Raises ``ValueError`` for an armour whose body is not base64."""
    armour = _PEM_PKCS12.search(data)
    if armour is None:
        return data
    lines = [line.strip() for line in armour.group(1).splitlines()]
    # RFC 1421-style headers ("Name: value") may precede the base64 body.
    body = b"".join(line for line in lines if line and b":" not in line)
    return base64.b64decode(body, validate=True)


def load_pkcs12(path: Path, password: bytes | None) -> Identity:
    """The key, certificate and chain of a PKCS#12 file, DER or PEM-armoured."""
    data = _read(path, "PKCS#12 file")
    try:
        bundle = pkcs12.load_pkcs12(_pkcs12_der(data), password)
    except ValueError:  # binascii.Error (bad armour) included
        raise KeyLoadError(f"{path}: wrong PKCS#12 password, or not a PKCS#12 file") from None
    if bundle.key is None or bundle.cert is None:
        raise KeyLoadError(f"{path}: the PKCS#12 file holds no key with its certificate")
    return Identity(
        key=bundle.key,  # type: ignore[arg-type]
        certificate=bundle.cert.certificate,
        chain=tuple(c.certificate for c in bundle.additional_certs),
    )


def password_from_env(var: str | None) -> bytes | None:
    """The password held in environment variable ``var`` (None when no variable is named)."""
    if var is None:
        return None
    value = os.environ.get(var)
    if value is None:
        raise KeyLoadError(f"environment variable {var} (the PKCS#12 password) is not set")
    return value.encode()


def public_keys_match(key: PrivateKeyTypes, cert: x509.Certificate) -> bool:
    """True when ``cert`` certifies the public half of ``key``."""
    fmt = serialization.PublicFormat.SubjectPublicKeyInfo
    enc = serialization.Encoding.DER
    return key.public_key().public_bytes(enc, fmt) == cert.public_key().public_bytes(enc, fmt)


def pair_keys_with_certificates(
    keys: Iterable[PrivateKeyTypes], certs: Iterable[x509.Certificate]
) -> list[Identity]:
    """Match each key with the certificate of its public key.

    A key without a certificate raises :class:`KeyLoadError`, since recipients are found by
    the certificate's issuer and serial or subject key identifier.
    """
    cert_list = list(certs)
    identities = []
    for key in keys:
        match = next((c for c in cert_list if public_keys_match(key, c)), None)
        if match is None and not cert_list:
            raise KeyLoadError(
                "a private key came without its certificate; give the certificate too "
                "(--cert, the config's cert, or in the same PEM file)"
            )
        if match is None:
            raise KeyLoadError(
                f"the private key matches none of the {len(cert_list)} certificate(s) given: "
                "each key needs the certificate of its own public key (compare "
                "'openssl pkey -pubout' with 'openssl x509 -pubkey -noout')"
            )
        chain = tuple(c for c in cert_list if c is not match)
        identities.append(Identity(key=key, certificate=match, chain=chain))
    return identities


def system_anchors() -> list[x509.Certificate]:
    """The system's CA certificates (OpenSSL's default CA file; empty when there is none).

    A certificate of the bundle that cannot be read is skipped rather than failing the whole
    bundle (old roots with a negative serial number are read, see core.cert_loading).
    """
    cafile = ssl.get_default_verify_paths().cafile
    if not cafile or not os.path.exists(cafile):
        return []
    anchors = []
    for der in _pem_certificates(_read(Path(cafile), "system CA bundle")):
        try:
            anchors.append(load_certificate(der))
        except ValueError:
            continue
    return anchors

"""Loading keys and certificates from files (PEM, DER, PKCS#12) into core values.

The only module that reads key material from disk; the core takes the loaded objects.
"""

from __future__ import annotations

import os
import ssl
import warnings
from collections.abc import Iterable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.serialization import pkcs12

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
            return x509.load_pem_x509_certificates(data)
        return [x509.load_der_x509_certificate(data)]
    except ValueError:
        raise KeyLoadError(f"{name}: not a PEM or DER certificate") from None


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


def load_pkcs12(path: Path, password: bytes | None) -> Identity:
    """The key, certificate and chain of a PKCS#12 file."""
    data = _read(path, "PKCS#12 file")
    try:
        bundle = pkcs12.load_pkcs12(data, password)
    except ValueError:
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
        if match is None:
            raise KeyLoadError("a private key has no matching certificate; add it with --cert")
        chain = tuple(c for c in cert_list if c is not match)
        identities.append(Identity(key=key, certificate=match, chain=chain))
    return identities


def system_anchors() -> list[x509.Certificate]:
    """The system's CA certificates (OpenSSL's default CA file; empty when there is none).

    Certificates of the bundle that cryptography refuses or warns about (some old roots have
    a negative serial number) are skipped one by one rather than failing the whole bundle.
    """
    cafile = ssl.get_default_verify_paths().cafile
    if not cafile or not os.path.exists(cafile):
        return []
    end = b"-----END CERTIFICATE-----"
    anchors = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for block in _read(Path(cafile), "system CA bundle").split(end)[:-1]:
            try:
                anchors.append(x509.load_pem_x509_certificate(block + end))
            except ValueError:
                continue
    return anchors

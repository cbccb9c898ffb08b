"""The tests' Dovecot: the server itself lives in :mod:`smime_companion.testing.dovecot` (the demo
runs it too); this module re-exports it for the fixtures and adds the test mail, made at test time
with openssl from the test PKI."""

from __future__ import annotations

from smime_companion.testing.dovecot import (
    MAIL_UID,
    PASSWORD,
    SEPARATORS,
    USERS,
    WITHOUT_CONDSTORE,
    Dovecot,
    free_port,
    make_tls_certificate,
    running_dovecot,
)
from smime_companion.testing.pki import TestPki
from tests.tools import openssl_cms

__all__ = [
    "MAIL_UID",
    "PASSWORD",
    "SEPARATORS",
    "USERS",
    "WITHOUT_CONDSTORE",
    "Dovecot",
    "encrypted_mail",
    "free_port",
    "make_tls_certificate",
    "plain_mail",
    "running_dovecot",
    "signed_mail",
]


# -- test mail, made at test time with openssl from the test PKI ----------------------------------


def _headers(marker: str, sender: str, to: str) -> bytes:
    return (
        f"From: {sender}\r\nTo: {to}\r\nSubject: Test {marker}\r\n"
        f"Date: Wed, 25 Nov 2026 09:00:00 +0000\r\nMessage-ID: <{marker}@test.example.org>\r\n"
    ).encode()


def plain_mail(
    marker: str, sender: str = "alice@example.org", to: str = "bob@example.org"
) -> bytes:
    """A plain (not S/MIME) text message whose body holds ``marker``."""
    return (
        _headers(marker, sender, to)
        + b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        + f"Plain {marker}\r\n".encode()
    )


def _entity(marker: str) -> bytes:
    return f"Content-Type: text/plain; charset=utf-8\r\n\r\nSecret {marker}\r\n".encode()


def signed_mail(pki: TestPki, marker: str, user: str = "alice", to: str = "bob") -> bytes:
    """A multipart/signed message from ``user`` (openssl cms -sign, detached)."""
    out = openssl_cms(
        ["-sign", "-signer", pki.cert(user), "-inkey", pki.key(user),
         "-certfile", pki.intermediate, "-crlfeol"],
        _entity(marker),
    )  # fmt: skip
    return _headers(marker, pki.email(user), pki.email(to)) + out


def encrypted_mail(pki: TestPki, marker: str, to: str = "bob", sender: str = "alice") -> bytes:
    """An application/pkcs7-mime enveloped message for ``to`` (openssl cms -encrypt, AES-256)."""
    out = openssl_cms(["-encrypt", "-aes256", "-recip", pki.cert(to), "-crlfeol"], _entity(marker))
    return _headers(marker, pki.email(sender), pki.email(to)) + out

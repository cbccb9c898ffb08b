"""Shared fixtures: a test PKI made once per test session, and loaders for its files."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from smime_companion.core.model import Identity
from smime_companion.testing.pki import TestPki, make_test_pki


@pytest.fixture(scope="session")
def pki_now() -> dt.datetime:
    """The time the test PKI is made around (read from the clock once per session): its users are
    valid from a day before it for two years. Module- and session-wide fixtures that judge
    certificates use it; a test uses ``now``."""
    return dt.datetime.now(dt.UTC)


@pytest.fixture
def now(pki_now: dt.datetime) -> dt.datetime:
    """The time a test judges certificates at: the clock when the test starts, so that it agrees
    with what the tools it runs stamp (openssl's signingTime, a CRL's thisUpdate) even late in a
    long run, and always inside the PKI's validity.

    Never write a date instead: a test that judged a certificate at a fixed date would start
    failing once the calendar passed the certificate's validity (``scripts/test-time-moved``
    runs the suite years ahead to catch that).
    """
    return max(pki_now, dt.datetime.now(dt.UTC))


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory, pki_now: dt.datetime) -> TestPki:
    """A fresh test PKI (root, email intermediate, users of every key type and defect), its
    validity periods around ``pki_now``."""
    return make_test_pki(tmp_path_factory.mktemp("pki"), pki_now)


def load_cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def load_identity(pki: TestPki, user: str) -> Identity:
    key = serialization.load_pem_private_key(pki.key(user).read_bytes(), password=None)
    return Identity(key=key, certificate=load_cert(pki.cert(user)))


@pytest.fixture(scope="session")
def anchors(pki: TestPki) -> tuple[x509.Certificate, ...]:
    """The trust anchors of the test PKI: its root only (never the rogue root)."""
    return (load_cert(pki.root),)


@pytest.fixture(scope="session")
def identities(pki: TestPki) -> dict[str, Identity]:
    """The key pair of every user who can receive encrypted mail, by user name."""
    users = ("alice", "bob", "carol", "dave", "frank", "gisela", "hedda", "ines")
    return {user: load_identity(pki, user) for user in users}

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
def now() -> dt.datetime:
    """The time every verification in the tests is made at: the PKI is made around it.

    Taken from the clock once per session, never written as a date: a test that judged a
    certificate at a fixed date would start failing once the calendar passed the certificate's
    validity (``scripts/test-time-moved`` runs the suite years ahead to catch that).
    """
    return dt.datetime.now(dt.UTC)


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory, now: dt.datetime) -> TestPki:
    """A fresh test PKI (root, email intermediate, users of every key type and defect), its
    validity periods around ``now``."""
    return make_test_pki(tmp_path_factory.mktemp("pki"), now)


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
    return {user: load_identity(pki, user) for user in ("alice", "bob", "carol", "dave", "frank")}

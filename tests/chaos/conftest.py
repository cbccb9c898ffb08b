"""Fixtures of the chaos tests: fresh servers per test (a kill leaves nothing shared behind) and a
daemon :class:`~tests.chaos.harness.Setup` in the test's temporary directory."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from smime_companion.testing.pki import TestPki
from tests.chaos.harness import Setup
from tests.dovecot import Dovecot, running_dovecot
from tests.smtpd import SmtpServer, running_smtpd


@pytest.fixture()
def dovecot() -> Iterator[Dovecot]:
    yield from running_dovecot()


@pytest.fixture()
def smtpd(dovecot: Dovecot) -> Iterator[SmtpServer]:
    # Dovecot's certificate, so the account's one ca_file trusts both servers.
    yield from running_smtpd("starttls", dovecot.cert.parent)


@pytest.fixture()
def setup(pki: TestPki, dovecot: Dovecot, smtpd: SmtpServer, tmp_path: Path) -> Setup:
    """A written config for alice's account on both servers, bob's PKCS#12 as the identity."""
    result = Setup(pki, dovecot, smtpd, tmp_path / "home")
    result.write_config()
    return result

"""The remembered unlock (cli/unlock.py): a command that unlocked the cache leaves the derived page
key, never the passphrase, in the kernel's user keyring, and the next command opens the cache
with it without asking for the passphrase; ``cache lock``, ``cache rekey``, a time-out and
``remember_unlock_minutes = 0`` each end that.

"Without asking" is shown by taking the passphrase away: the second command runs with no
``TEST_CACHE_KEY`` at all, so it can only succeed through the remembered key."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from smime_companion import kernel_keys
from smime_companion.errors import CacheError
from smime_companion.store import Cache, db
from smime_companion.testing.pki import TestPki
from tests.test_cache import KEY
from tests.test_cli_cache import _config, cli


@pytest.fixture(autouse=True)
def _kernel_keyring() -> None:
    name = f"smime-companion-test:{uuid.uuid4()}"
    if not kernel_keys.remember(name, b"probe", 5):
        pytest.skip("the kernel's key service is not available here (seccomp or no keyrings)")
    kernel_keys.forget(name)


def _cache(tmp_path: Path, pki: TestPki, extra: str = "") -> Path:
    config = _config(tmp_path, pki, extra=extra)
    Cache.open(tmp_path / "data", KEY).close()
    return config


def test_the_derived_page_key_opens_the_cache_and_another_does_not(tmp_path: Path) -> None:
    Cache.open(tmp_path, KEY).close()
    path = tmp_path / db.DB_FILENAME
    page_key = db.page_key(path, KEY)
    assert page_key is not None and len(page_key) == db.PAGE_KEY_BYTES
    with Cache.open(tmp_path, page_key) as cache:  # our PBKDF2 is sqlite3mc's
        assert cache.stats()["messages"] == 0
    assert db.page_key(path, KEY + "x") != page_key
    with pytest.raises(CacheError, match="wrong cache key"):
        Cache.open(tmp_path, db.page_key(path, KEY + "x"))
    assert db.page_key(tmp_path / "missing.db", KEY) is None


def test_a_second_search_needs_no_passphrase_until_the_cache_is_locked(
    tmp_path: Path, pki: TestPki
) -> None:
    config = _cache(tmp_path, pki)
    assert cli(config, "search", "anything").returncode == 0
    remembered = cli(config, "search", "anything", key=None)
    assert remembered.returncode == 0, remembered.stderr.decode()
    locked = cli(config, "cache", "lock", key=None)
    assert locked.returncode == 0
    assert b"forgot 1" in locked.stderr
    refused = cli(config, "search", "anything", key=None)
    assert refused.returncode != 0
    assert b"TEST_CACHE_KEY" in refused.stderr  # the configured source, named


def test_nothing_is_remembered_when_turned_off(tmp_path: Path, pki: TestPki) -> None:
    config = _cache(tmp_path, pki, extra="remember_unlock_minutes = 0\n")
    assert cli(config, "search", "anything").returncode == 0
    assert cli(config, "search", "anything", key=None).returncode != 0


def test_the_certificate_store_is_remembered_on_its_own_key(tmp_path: Path, pki: TestPki) -> None:
    config = _cache(tmp_path, pki)
    assert cli(config, "certs", "list").returncode == 0
    assert cli(config, "certs", "list", key=None).returncode == 0
    # The message cache has a salt of its own: its page key was not remembered by certs.
    assert cli(config, "search", "anything", key=None).returncode != 0
    assert b"forgot 1" in cli(config, "cache", "lock", key=None).stderr


def test_a_rekeyed_cache_forgets_the_old_key_and_needs_the_new_passphrase(
    tmp_path: Path, pki: TestPki
) -> None:
    config = _cache(tmp_path, pki)
    assert cli(config, "search", "anything").returncode == 0
    rekeyed = cli(config, "cache", "rekey", "--new-key-env", "NEW_KEY", env={"NEW_KEY": "new one"})
    assert rekeyed.returncode == 0, rekeyed.stderr.decode()
    assert cli(config, "search", "anything", key=None).returncode != 0
    assert cli(config, "search", "anything", key="new one").returncode == 0
    assert cli(config, "search", "anything", key=None).returncode == 0  # the new one, remembered
    cli(config, "cache", "lock", key=None)


def test_a_cache_made_again_in_the_same_place_is_not_opened_by_the_old_key(
    tmp_path: Path, pki: TestPki
) -> None:
    config = _cache(tmp_path, pki)
    assert cli(config, "search", "anything").returncode == 0
    for file in (tmp_path / "data").iterdir():
        file.unlink()
    Cache.open(tmp_path / "data", "another passphrase").close()
    # The old page key is named after the old salt: the new cache wants its own passphrase.
    refused = cli(config, "search", "anything", key=None)
    assert refused.returncode != 0
    wrong = cli(config, "search", "anything")  # the configured, now wrong, passphrase
    assert b"wrong cache key" in wrong.stderr


def test_the_kernel_keeps_a_secret_only_until_its_timeout() -> None:
    name = f"smime-companion-test:{uuid.uuid4()}"
    assert kernel_keys.remember(name, b"\x01" * 32, 1)
    assert kernel_keys.recall(name) == b"\x01" * 32
    deadline = time.monotonic() + 10
    while kernel_keys.recall(name) is not None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert kernel_keys.recall(name) is None
    assert not kernel_keys.forget(name)


def test_a_forgotten_secret_is_gone_and_nothing_else_is_touched() -> None:
    kept, dropped = (f"smime-companion-test:{uuid.uuid4()}" for _ in range(2))
    assert kernel_keys.remember(kept, b"kept", 60)
    assert kernel_keys.remember(dropped, b"dropped", 60)
    assert kernel_keys.forget(dropped)
    assert kernel_keys.recall(dropped) is None
    assert kernel_keys.recall(kept) == b"kept"
    assert kernel_keys.forget(kept)

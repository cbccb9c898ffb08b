"""The cache key in the OS keyring (the default when the config names no other source), and
``cache rekey`` updating it there. The keyring is a small file-backed backend defined here and
selected with ``PYTHON_KEYRING_BACKEND``, so the real keyring code path runs in the CLI process."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import keyring.backend
import pytest

from smime_companion.errors import CacheError
from smime_companion.store import Cache
from smime_companion.testing.pki import TestPki
from tests.test_cache import KEY, mail, opener, store
from tests.test_cli_cache import _config, cli

REPO = Path(__file__).resolve().parent.parent


class FileKeyring(keyring.backend.KeyringBackend):
    """A keyring in the JSON file named by ``$TEST_KEYRING_FILE`` (tests only)."""

    priority = 1  # type: ignore[assignment]

    def _path(self) -> Path:
        return Path(os.environ["TEST_KEYRING_FILE"])

    def _load(self) -> dict[str, str]:
        path = self._path()
        return json.loads(path.read_text()) if path.exists() else {}

    def get_password(self, service: str, username: str) -> str | None:
        return self._load().get(f"{service}/{username}")

    def set_password(self, service: str, username: str, password: str) -> None:
        entries = self._load()
        entries[f"{service}/{username}"] = password
        self._path().write_text(json.dumps(entries))

    def delete_password(self, service: str, username: str) -> None:
        entries = self._load()
        entries.pop(f"{service}/{username}", None)
        self._path().write_text(json.dumps(entries))


def test_the_key_comes_from_the_keyring_by_default_and_rekey_updates_it(
    pki: TestPki, tmp_path: Path
) -> None:
    now = dt.datetime.now(dt.UTC)
    ring = tmp_path / "keyring.json"
    ring.write_text(json.dumps({"smime-companion/cache": KEY}))
    env = {
        "PYTHON_KEYRING_BACKEND": "tests.test_cache_keyring.FileKeyring",
        "TEST_KEYRING_FILE": str(ring),
        "PYTHONPATH": str(REPO),
        "TEST_NEW_KEY": "rotated passphrase",
    }
    config = _config(tmp_path, pki, key_source="")  # no key_env: the default keyring entry
    with Cache.open(tmp_path / "data", KEY) as cache:
        store(cache, mail(pki, body="Pangolin\r\n"), opener(pki), now, uid=1)

    proc = cli(config, "search", "--json", "pangolin", key=None, env=env)
    assert proc.returncode == 0, proc.stderr
    assert len(json.loads(proc.stdout)) == 1

    proc = cli(config, "cache", "rekey", "--new-key-env", "TEST_NEW_KEY", key=None, env=env)
    assert proc.returncode == 0, proc.stderr
    assert b"saved in the keyring" in proc.stderr
    assert json.loads(ring.read_text()) == {"smime-companion/cache": "rotated passphrase"}
    with pytest.raises(CacheError, match="wrong cache key"):
        Cache.open(tmp_path / "data", KEY)
    proc = cli(config, "search", "--json", "pangolin", key=None, env=env)
    assert proc.returncode == 0, proc.stderr
    assert len(json.loads(proc.stdout)) == 1


def test_a_missing_keyring_entry_is_one_line_naming_it(pki: TestPki, tmp_path: Path) -> None:
    env = {
        "PYTHON_KEYRING_BACKEND": "tests.test_cache_keyring.FileKeyring",
        "TEST_KEYRING_FILE": str(tmp_path / "empty.json"),
        "PYTHONPATH": str(REPO),
    }
    proc = cli(_config(tmp_path, pki, key_source=""), "cache", "stats", key=None, env=env)
    assert proc.returncode == 2
    assert proc.stderr.decode() == (
        "smime-companion cache: cache.key: no keyring entry smime-companion/cache "
        "(store one with: keyring set smime-companion cache)\n"
    )

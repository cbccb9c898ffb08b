"""Unlocking the cache's databases from the command line, remembering the page key between calls.

Every ``search``, ``show`` or ``certs list`` is a new process, and unlocking an encrypted
database costs SQLite3 Multiple Ciphers' key derivation (PBKDF2, about 25 ms of a 120 ms call):
slow on purpose, so that a copied cache resists guessing. A script or a mail client that calls
``search`` once per query pays it every time. So, like ``sudo`` and ``gpg-agent``, a command
that has unlocked a database keeps the derived page key (never the passphrase) in the kernel's
user keyring (:mod:`smime_companion.kernel_keys`) for ``[cache] remember_unlock_minutes``
(default 10, 0 turns it off); the next command within that time opens the database with it.
``smime-companion cache lock`` forgets it at once, and ``cache rekey`` forgets the old one.

A remembered key is named after the database's path and its salt, so a cache that was deleted
and made again, or another cache, never meets it; one that no longer opens (rekeyed elsewhere) is
forgotten and the passphrase is asked for as before.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from smime_companion import kernel_keys
from smime_companion.cli.common import cache_key
from smime_companion.errors import CacheError
from smime_companion.store import db

if TYPE_CHECKING:
    from smime_companion.config import Config
    from smime_companion.store.db import Key

T = TypeVar("T")

# Every database in the cache directory that shares the cache key (store.db.rekey_directory).
_DATABASES = ("cache.db", "certs.db", "outbox.db")


def unlocked(config: Config, filename: str, open_with: Callable[[Key | None], T]) -> T:
    """``open_with(key)`` for the database ``filename`` of the cache directory: with its
    remembered page key when the kernel still has one that opens it, else with the configured
    passphrase (asked for on a terminal), remembering the page key for next time."""
    if not config.cache.encrypt:
        return open_with(None)
    path = Path(config.cache.path).expanduser() / filename
    minutes = config.cache.remember_unlock_minutes
    name = _key_name(path) if minutes else None
    if name is not None:
        remembered = kernel_keys.recall(name)
        if remembered is not None and len(remembered) == db.PAGE_KEY_BYTES:
            try:
                return open_with(remembered)
            except CacheError as exc:
                if str(exc) != db.WRONG_KEY:
                    raise
                kernel_keys.forget(name)  # rekeyed since: ask for the passphrase below
    passphrase = cache_key(config)
    opened = open_with(passphrase)
    # A database created just now has its salt only now: name it again.
    name = _key_name(path) if minutes else None
    if name is not None and passphrase is not None:
        page_key = db.page_key(path, passphrase)
        if page_key is not None:
            kernel_keys.remember(name, page_key, minutes * 60)
    return opened


def forget_all(config: Config) -> int:
    """Forget the remembered page keys of the cache directory's databases. Returns how many
    there were."""
    names = (_key_name(Path(config.cache.path).expanduser() / f) for f in _DATABASES)
    return sum(kernel_keys.forget(name) for name in names if name is not None)


def _key_name(path: Path) -> str | None:
    """The keyring name of ``path``'s page key: its salt (random for each database, and not
    secret: it is the file's first bytes) and the file's real path, or None when there is no
    such database yet."""
    salt = db.salt_of(path)
    if salt is None:
        return None
    return f"smime-companion:page-key:{salt.hex()}:{os.path.realpath(path)}"

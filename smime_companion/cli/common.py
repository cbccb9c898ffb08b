"""Helpers shared by the subcommands: reading input, writing output atomically, the cache key
(asked for on a terminal when no configured source has it), loading identities and trust
anchors."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from smime_companion import runtime
from smime_companion.errors import SecretUnavailable, UsageError

if TYPE_CHECKING:
    from cryptography import x509

    from smime_companion.config import Config
    from smime_companion.core.model import Identity

# A message file larger than this is refused before it is read into memory.
MAX_INPUT_BYTES = 256 * 1024 * 1024


def read_input(name: str) -> bytes:
    """The bytes of file ``name``, or of standard input for ``-``."""
    if name == "-":
        data = sys.stdin.buffer.read(MAX_INPUT_BYTES + 1)
    else:
        try:
            with open(name, "rb") as handle:
                data = handle.read(MAX_INPUT_BYTES + 1)
        except OSError as exc:
            raise UsageError(f"cannot read {name}: {exc.strerror or exc}") from None
    if len(data) > MAX_INPUT_BYTES:
        raise UsageError(f"{name} is larger than {MAX_INPUT_BYTES // (1024 * 1024)} MB")
    return data


def write_output(name: str, data: bytes) -> None:
    """Write ``data`` to file ``name`` atomically (or to stdout for ``-``)."""
    if name == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return
    import tempfile  # here: it loads shutil, random and more, which most commands never need

    target = Path(name)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent or Path("."))
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, target)
    except OSError as exc:
        raise UsageError(f"cannot write {name}: {exc.strerror or exc}") from None


def load_identities(
    keys: Sequence[Path], certs: Sequence[Path], p12s: Sequence[Path], p12_password_env: str | None
) -> list[Identity]:
    """Identities from --key/--cert pairs and --p12 files."""
    from smime_companion import keyfiles

    identities: list[Identity] = []
    if p12s:
        password = keyfiles.password_from_env(p12_password_env)
        identities.extend(keyfiles.load_pkcs12(p, password) for p in p12s)
    if keys:
        all_certs = [c for path in certs for c in keyfiles.load_certificates(path)]
        identities.extend(
            keyfiles.pair_keys_with_certificates(
                (keyfiles.load_private_key(k) for k in keys), all_certs
            )
        )
    return identities


def load_anchors(paths: Sequence[Path], system: bool) -> list[x509.Certificate]:
    """Trust anchors from files, plus the system CA bundle when ``system`` is set."""
    from smime_companion import keyfiles

    anchors = [c for path in paths for c in keyfiles.load_certificates(path)]
    if system:
        anchors.extend(keyfiles.system_anchors())
    return anchors


def cache_key(config: Config) -> str | None:
    """The cache key from its configured source, else asked for when standard input is a
    terminal (None: a plain cache). Raises :class:`SecretUnavailable` otherwise."""
    try:
        return runtime.cache_key(config)
    except SecretUnavailable:
        if not sys.stdin.isatty():
            raise
        import getpass

        return getpass.getpass("cache passphrase: ")

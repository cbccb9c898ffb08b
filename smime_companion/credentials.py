"""Resolving secrets (passwords, the cache key) from where the config says they are.

The only module that imports ``keyring``. Secrets are returned to the caller and never logged;
error messages name where a secret was looked for, never its value.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from types import ModuleType

from smime_companion.config import SecretRef
from smime_companion.errors import SecretUnavailable

COMMAND_TIMEOUT_SECONDS = 30


def resolve(ref: SecretRef) -> str:
    """The secret ``ref`` points to. Raises :class:`SecretUnavailable` with one line."""
    if ref.env:
        value = os.environ.get(ref.env)
        if value is None:
            raise SecretUnavailable(f"{ref.what}: environment variable {ref.env} is not set")
        return value
    if ref.command:
        return _from_command(ref)
    if ref.keyring:
        return _from_keyring(ref)
    if ref.credential:
        return _from_credential(ref)
    raise SecretUnavailable(
        f"{ref.what}: not configured (set {ref.what.split('.')[-1]}_env, _command, _keyring "
        "or _credential)"
    )


def _from_credential(ref: SecretRef) -> str:
    """A systemd credential (``LoadCredential=`` or ``LoadCredentialEncrypted=``): the file
    ``$CREDENTIALS_DIRECTORY/NAME``, which systemd decrypts for the service alone; without its
    final newline."""
    assert ref.credential is not None
    directory = os.environ.get("CREDENTIALS_DIRECTORY")
    if not directory:
        raise SecretUnavailable(
            f"{ref.what}: systemd credential {ref.credential!r} wanted, but $CREDENTIALS_DIRECTORY "
            "is not set (run under systemd with LoadCredentialEncrypted="
            f"{ref.credential}:FILE, see contrib/systemd)"
        )
    path = os.path.join(directory, ref.credential)
    try:
        with open(path, encoding="utf-8") as handle:
            value = handle.read()
    except FileNotFoundError:
        raise SecretUnavailable(
            f"{ref.what}: systemd credential {ref.credential!r} is not in {directory} (add "
            f"LoadCredentialEncrypted={ref.credential}:FILE to the unit)"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SecretUnavailable(
            f"{ref.what}: cannot read systemd credential {ref.credential!r}: {exc}"
        ) from None
    value = value[:-1] if value.endswith("\n") else value
    if not value:
        raise SecretUnavailable(f"{ref.what}: systemd credential {ref.credential!r} is empty")
    return value


def _from_command(ref: SecretRef) -> str:
    import subprocess  # here: most secrets come from elsewhere, and every command resolves one

    assert ref.command is not None
    try:
        proc = subprocess.run(
            ref.command, shell=True, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_SECONDS
        )
    except subprocess.TimeoutExpired:
        raise SecretUnavailable(
            f"{ref.what}: command {ref.command!r} did not finish in {COMMAND_TIMEOUT_SECONDS} s"
        ) from None
    if proc.returncode != 0:
        raise SecretUnavailable(
            f"{ref.what}: command {ref.command!r} failed (exit {proc.returncode})"
        )
    value = proc.stdout.splitlines()[0] if proc.stdout else ""
    if not value:
        raise SecretUnavailable(f"{ref.what}: command {ref.command!r} printed nothing")
    return value


@contextlib.contextmanager
def _keyring(ref: SecretRef) -> Iterator[ModuleType]:
    """The ``keyring`` module, imported on first use (it costs every start a twentieth of a
    second, and most configs never use it); a backend failure inside the block becomes one line
    naming the secret (never its value)."""
    import keyring
    from keyring.errors import KeyringError

    try:
        yield keyring
    except KeyringError as exc:
        raise SecretUnavailable(
            f"{ref.what}: the OS keyring is unavailable ({type(exc).__name__})"
        ) from None


def _from_keyring(ref: SecretRef) -> str:
    assert ref.keyring is not None
    service, user = ref.keyring
    with _keyring(ref) as ring:
        value = ring.get_password(service, user)
    if value is None:
        raise SecretUnavailable(
            f"{ref.what}: no keyring entry {service}/{user} "
            f"(store one with: keyring set {service} {user})"
        )
    return value


def keyring_problem(service: str) -> str | None:
    """Why the OS keyring cannot keep secrets here (one line), or None when it can: a lookup
    of an entry that does not exist must answer "none" rather than fail."""
    ref = SecretRef(what="the OS keyring", keyring=(service, "probe"))
    try:
        with _keyring(ref) as ring:
            ring.get_password(service, "probe")
    except SecretUnavailable as exc:
        return str(exc).split(": ", 1)[-1]  # without the probe's name
    return None


def store_in_keyring(ref: SecretRef, value: str) -> None:
    """Save ``value`` as ``ref``'s keyring entry. Raises :class:`SecretUnavailable`."""
    if not ref.keyring:
        raise SecretUnavailable(f"{ref.what}: not configured as a keyring entry")
    with _keyring(ref) as ring:
        ring.set_password(ref.keyring[0], ref.keyring[1], value)

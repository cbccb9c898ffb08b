"""Linux's key retention service: a few bytes kept in kernel memory under a name, with a timeout.

The command line uses it to remember the cache's page key (not the passphrase) between calls,
the way ``sudo`` remembers a password or ``gpg-agent`` a passphrase: a ``search`` typed a minute
after the last one skips the key derivation. Keys go into the user keyring (``@u``), readable by
processes of this user only (the same who can read the cache files and the passphrase's own
source); they are never written to disk or swap, and the kernel deletes each one when its
timeout passes (``keyctl show @u`` lists them). Not the session keyring: a process started
outside a login session (a container, cron, most services) gets a session keyring of its own
that dies with it, so nothing would be remembered from one call to the next.

This is the only module that calls ``add_key``/``keyctl`` (through libc's ``syscall``, so no
library is needed). Everything here is best effort: where the kernel, a seccomp filter (a
container's default profile) or a quota refuses, :func:`recall` answers None and
:func:`remember` False, and the caller simply derives the key again.
"""

from __future__ import annotations

import ctypes
import logging
import os

log = logging.getLogger(__name__)

# The system call numbers of the two calls we need, per architecture (they differ; see
# <asm/unistd.h>). Elsewhere the service is treated as absent.
_SYSCALLS = {
    "x86_64": (248, 250),
    "aarch64": (217, 219),
}
_KEY_SPEC_USER_KEYRING = -4
_KEYCTL_SETPERM = 5
_KEYCTL_SET_TIMEOUT = 15
_KEYCTL_SEARCH = 10
_KEYCTL_READ = 11
_KEYCTL_UNLINK = 9
_KEY_TYPE = b"user"
# The holder may do anything; other processes of the same user may find and read it (by default
# only a process that "possesses" the key through its session keyring could, see keyrings(7)).
_PERMISSIONS = 0x3F000000 | 0x000B0000
_MAX_PAYLOAD = 4096


def _calls() -> tuple[ctypes.CDLL, int, int] | None:
    numbers = _SYSCALLS.get(os.uname().machine) if hasattr(os, "uname") else None
    if numbers is None:
        return None
    return ctypes.CDLL(None, use_errno=True), numbers[0], numbers[1]


def _failed(what: str) -> None:
    log.debug("kernel keyring: %s failed: %s", what, os.strerror(ctypes.get_errno()))


def remember(name: str, secret: bytes, seconds: int) -> bool:
    """Keep ``secret`` under ``name`` in the user keyring for ``seconds``, replacing what was
    there. Returns whether the kernel took it."""
    calls = _calls()
    if calls is None or not 0 < len(secret) <= _MAX_PAYLOAD or seconds <= 0:
        return False
    libc, add_key, keyctl = calls
    serial = libc.syscall(
        add_key, _KEY_TYPE, name.encode(), secret, ctypes.c_size_t(len(secret)),
        _KEY_SPEC_USER_KEYRING,
    )  # fmt: skip
    if serial < 0:
        _failed("add_key")
        return False
    for what, option, value in (
        ("set_timeout", _KEYCTL_SET_TIMEOUT, seconds),
        ("setperm", _KEYCTL_SETPERM, _PERMISSIONS),
    ):
        if libc.syscall(keyctl, option, serial, ctypes.c_uint(value)) < 0:
            # A key that would never expire, or that the next call cannot read: take it back.
            _failed(what)
            libc.syscall(keyctl, _KEYCTL_UNLINK, serial, _KEY_SPEC_USER_KEYRING)
            return False
    return True


def recall(name: str) -> bytes | None:
    """The secret kept under ``name``, or None (never kept, expired, or no key service)."""
    found = _find(name)
    if found is None:
        return None
    libc, keyctl, serial = found
    buffer = ctypes.create_string_buffer(_MAX_PAYLOAD)
    size = libc.syscall(keyctl, _KEYCTL_READ, serial, buffer, ctypes.c_size_t(_MAX_PAYLOAD))
    if size < 0:
        _failed("read")
        return None
    return buffer.raw[: min(size, _MAX_PAYLOAD)]


def forget(name: str) -> bool:
    """Drop the secret kept under ``name``. Returns whether there was one."""
    found = _find(name)
    if found is None:
        return False
    libc, keyctl, serial = found
    return libc.syscall(keyctl, _KEYCTL_UNLINK, serial, _KEY_SPEC_USER_KEYRING) == 0


def _find(name: str) -> tuple[ctypes.CDLL, int, int] | None:
    """libc, the keyctl call's number and the serial of the key called ``name``, or None."""
    calls = _calls()
    if calls is None:
        return None
    libc, _, keyctl = calls
    serial = libc.syscall(
        keyctl, _KEYCTL_SEARCH, _KEY_SPEC_USER_KEYRING, _KEY_TYPE, name.encode(), 0
    )
    return (libc, keyctl, serial) if serial >= 0 else None

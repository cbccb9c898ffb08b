"""The exception family of smime-companion.

Checking untrusted mail produces *results* (see ``core.model``), not exceptions. These exceptions
are for misuse (bad arguments, unreadable files, wrong passwords) and for input that cannot be
parsed at all; callers at the edge turn them into one clear line for the user.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class SmimeCompanionError(Exception):
    """Base of every error this package raises on purpose. ``str(err)`` is one line for the user."""


class UsageError(SmimeCompanionError):
    """The caller asked for something impossible: a missing file, a bad option, a bad argument."""


class KeyLoadError(UsageError):
    """A private key, certificate or PKCS#12 file could not be loaded (unreadable, wrong password,
    key that does not match its certificate)."""


class ConfigError(UsageError):
    """The configuration file is missing, is not valid TOML, or has an unknown key or a bad value.
    The message names the file, the line and the key."""


class SecretUnavailable(UsageError):
    """A secret (password, cache key) could not be obtained from where the config says it is:
    an unset environment variable, a failing command, no keyring backend or entry."""


class MalformedInput(SmimeCompanionError):
    """Untrusted input (MIME, CMS, base64, a certificate) is not well formed. The message names the
    structure that is broken."""


class LimitExceeded(MalformedInput):
    """Untrusted input goes past a safety limit (nesting depth, part count, size) meant to bound the
    time and memory a hostile message can cost."""


class UnsupportedInput(SmimeCompanionError):
    """Input is well formed but uses an algorithm or structure this engine does not implement."""


class SealError(SmimeCompanionError):
    """A draft cannot be sealed as asked: no From, a recipient without a certificate, a non-MIME
    draft, a signing key that does not match its certificate."""


class CacheError(SmimeCompanionError):
    """The message cache cannot be used as asked: a wrong or missing key, a damaged database file,
    a full disk or another I/O failure. The message names which; the database is left as it was
    (a failed change is rolled back, never half-applied)."""


class ImapError(SmimeCompanionError):
    """Talking to an IMAP server failed: it could not be reached, refused TLS or the login, does
    not have a folder, or broke the connection. The message names the account or host and the step
    that failed, never a password or token."""


class AuthenticationFailed(ImapError):
    """The IMAP server refused the login (wrong password, expired token). Retrying soon would
    only risk a lockout of the account: the daemon backs off for minutes, not seconds."""


class OversizedBody(ImapError):
    """A body FETCH was refused because the server sent a literal much larger than the
    message's RFC822.SIZE (or than any message of the batch, before naming its UID).

    ``uid`` is the message's UID (None when the server had not named it yet), ``received``
    the bodies that arrived whole before it. The connection is shut down: where the next
    response starts is unknown, and reading on would be reading what was refused."""

    def __init__(self, message: str, uid: int | None, received: Mapping[int, Any] | None = None):
        super().__init__(message)
        self.uid = uid
        # The reader's items by UID while reading; the bodies by UID once out of the mailbox.
        self.received: dict[int, Any] = dict(received or {})


class AlreadyRunning(SmimeCompanionError):
    """Another ``smime-companion run`` holds this config's cache: one daemon per config."""


class SubmissionError(SmimeCompanionError):
    """Submitting a message failed; the message quotes the server's reply when there was one."""


class SubmissionDeferred(SubmissionError):
    """Nothing was accepted and trying again later may work: a 4xx reply, a connection, TLS or
    login failure before the message was sent."""


class SubmissionRefused(SubmissionError):
    """The server refused the message or a recipient for good (a 5xx reply)."""


class SubmissionUncertain(SubmissionError):
    """The connection broke after the message was sent and before the server's reply: it may or
    may not have been accepted."""


def one_line(exc: BaseException) -> str:
    """``exc``'s message on one line (white space folded) of at most 200 characters, or its
    class name when it has no message: a reason fit for a status line or a log."""
    text = " ".join(str(exc).split())
    return text[:200] if text else type(exc).__name__

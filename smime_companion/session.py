"""What every network session of ours shares, IMAP and SMTP alike: a verifying TLS context,
one-line reasons for a library's exceptions, and server bytes as text.

No protocol library is imported here (``imap.session`` wraps imapclient, ``smtp`` smtplib);
this module is the one place where their common parts are written.
"""

from __future__ import annotations

import re
import ssl
from pathlib import Path
from typing import Any

from smime_companion.errors import SmimeCompanionError


def tls_context(
    ca_file: Path | None,
    error: type[SmimeCompanionError],
    what: str = "ca_file",
) -> ssl.SSLContext:
    """A verifying TLS context: the system CAs plus ``ca_file`` when given. Raises ``error``
    (``cannot load WHAT PATH: why``) when the file cannot be loaded."""
    context = ssl.create_default_context()
    if ca_file is not None:
        try:
            context.load_verify_locations(cafile=str(ca_file))
        except (OSError, ssl.SSLError) as exc:
            raise error(f"cannot load {what} {ca_file}: {exc}") from None
    return context


def tls_hint(exc: BaseException, tls: str, advice: str) -> str:
    """A hint for a TLS handshake that met a server speaking no TLS on that port (a plain or
    STARTTLS port configured as implicit TLS), else ``""``. ``advice`` says which setting to
    change (``set tls = "starttls", usually with port 143``)."""
    if tls == "implicit" and "WRONG_VERSION_NUMBER" in str(exc):
        return f"; the server did not answer with TLS: this port may expect STARTTLS ({advice})"
    return ""


# How Python shows bytes in an exception's text: b'...' or b"..." (imaplib passes the server's
# reply as bytes, and imapclient turns the exception into a string).
_BYTES_REPR = re.compile(r"\bb'((?:[^'\\]|\\.)*)'" + r'|\bb"((?:[^"\\]|\\.)*)"')


def reason(exc: BaseException) -> str:
    """A one-line reason for a library exception, with the server's words as text (never a
    Python ``b'...'``), at most about 200 characters; ``timed out`` for every timeout."""
    if isinstance(exc, TimeoutError):
        return "timed out"
    text = " ".join(text_of(a) for a in exc.args) if exc.args else type(exc).__name__
    text = _BYTES_REPR.sub(lambda m: m.group(1) if m.group(1) is not None else m.group(2), text)
    text = " ".join(text.split())
    return (text[:200] + "...") if len(text) > 200 else text or type(exc).__name__


def text_of(value: Any) -> str:
    """``value`` as text: bytes decoded as UTF-8 (undecodable bytes replaced), else ``str``."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def bytes_of(value: Any) -> bytes:
    """``value`` as bytes: bytes as they are, else its ``str`` encoded as UTF-8."""
    if isinstance(value, bytes):
        return value
    return str(value).encode("utf-8", "replace")

"""Running openssl, one of the S/MIME implementations we did not write (gpgsm and NSS cmsutil are
in ``tests/peers.py``). Each helper returns the tool's output and fails the test with its stderr."""

from __future__ import annotations

import binascii
import email.utils
import os
import subprocess
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path


def run(
    argv: Sequence[str | Path],
    stdin: bytes | None = None,
    check: bool = True,
    cwd: Path | None = None,
) -> bytes:
    """Run a command (in ``cwd``); return stdout. On failure raise AssertionError with its
    stderr."""
    proc = subprocess.run(
        [str(a) for a in argv], input=stdin, capture_output=True, timeout=60, cwd=cwd
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(str(a) for a in argv)} failed ({proc.returncode}): "
            f"{proc.stderr.decode(errors='replace')}"
        )
    return proc.stdout


def minimal_env(**values: str) -> dict[str, str]:
    """An environment for a command under test holding only PATH and ``values``, plus what moves
    the clock in a time-moved run (scripts/test-time-moved), so the command sees the same time
    as the test that made its certificates."""
    env = {"PATH": "/usr/bin:/bin", **values}
    for name in ("LD_PRELOAD", "CLOCKSHIFT_SECONDS"):
        if name in os.environ:
            env[name] = os.environ[name]
    return env


def openssl_cms(args: Sequence[str | Path], data: bytes | None = None) -> bytes:
    """``openssl cms ARGS`` with ``data`` on stdin; returns stdout."""
    return run(["openssl", "cms", *args], stdin=data)


def mime_message(
    body: str = "Hello Bob,\r\nthis is a test.\r\n",
    sender: str = "alice@example.org",
    to: str = "bob@example.org",
    subject: str = "Test message",
) -> bytes:
    """A small plain-text MIME message with CRLF line ends, dated now: a peer signs it now,
    and a Date far from the signing time is a warning of its own (date-mismatch)."""
    date = email.utils.format_datetime(datetime.now(UTC).replace(microsecond=0))
    return (
        f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\n"
        f"Date: {date}\r\nMessage-ID: <test@example.org>\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        f"{body}"
    ).encode()


_BINHEX_TABLE = bytes.maketrans(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
    b"!\"#$%&'()*+,-012345689@ABCDEFGHIJKLMNPQRSTUVXYZ[`abcdefhijklmpqr",
)


def binhex_block(name: bytes, data_length: int, stream: bytes) -> bytes:
    """A BinHex 4.0 block assembled by hand, for shapes macutils' ``binhex`` never writes: a
    header naming ``name`` (type TEXT) and announcing ``data_length`` bytes, its CRC, then
    ``stream`` as it is (the data fork, run-length encoded or not, with its CRC or not)."""
    header = bytes([len(name)]) + name + b"\x00TEXTMACA\x00\x00"
    header += data_length.to_bytes(4, "big") + bytes(4)
    raw = header + binascii.crc_hqx(header, 0).to_bytes(2, "big") + stream
    encoded = binascii.b2a_base64(raw, newline=False).rstrip(b"=").translate(_BINHEX_TABLE)
    return b"(This file must be converted with BinHex 4.0)\r\n:" + encoded + b":\r\n"

"""Malware scanning of decrypted mail: ClamAV's clamd over its unix socket (INSTREAM), or a
configured command. Servers cannot scan inside encrypted mail, so the cache is where it happens.

A verdict is a string, as the cache stores it: ``clean``, ``infected:NAME`` or ``error``.
Scanning never blocks caching: messages are stored first with no verdict, :func:`scan_pending`
scans them afterwards, and an unreachable scanner records ``error`` (retried on the next call).

Plaintext on disk: clamd writes what it scans (or a normalised copy) to its TemporaryDirectory,
whether it is sent the bytes (INSTREAM) or a descriptor (FILDES); no protocol avoids that, so
``contrib/clamav`` puts that directory on a private tmpfs. A scan command gets a clean
environment, never the daemon's secrets.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import struct
import subprocess
from pathlib import Path
from typing import Protocol

from smime_companion.core.text import iter_parts
from smime_companion.errors import SmimeCompanionError
from smime_companion.store import Cache
from smime_companion.store.cache import SCAN_CLEAN, SCAN_ERROR, SCAN_INFECTED_PREFIX

log = logging.getLogger(__name__)

CHUNK_BYTES = 64 * 1024  # well under clamd's default StreamMaxLength chunking
TIMEOUT_SECONDS = 60.0
_FOUND = re.compile(r"^(?:[^:]*:\s*)?(?P<name>\S.*?)\s+FOUND$")


class Scanner(Protocol):
    """Something that gives a verdict on a blob of bytes."""

    def scan(self, data: bytes) -> str:
        """``clean``, ``infected:NAME`` or ``error``; never raises."""
        ...


class ClamdScanner:
    """clamd's INSTREAM command over its local (unix) socket."""

    def __init__(self, socket_path: Path, timeout: float = TIMEOUT_SECONDS) -> None:
        self.socket_path = socket_path
        self.timeout = timeout

    def scan(self, data: bytes) -> str:
        """Stream ``data`` to clamd; returns the verdict (``error`` when clamd cannot be reached
        or answers with an error, e.g. a stream over its size limit)."""
        try:
            reply = self._instream(data)
        except OSError as exc:
            log.warning("clamd at %s unreachable: %s", self.socket_path, exc)
            return SCAN_ERROR
        return parse_clamd_reply(reply)

    def _instream(self, data: bytes) -> str:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(self.timeout)
            sock.connect(str(self.socket_path))
            sock.sendall(b"zINSTREAM\0")
            try:
                for start in range(0, len(data), CHUNK_BYTES):
                    chunk = data[start : start + CHUNK_BYTES]
                    sock.sendall(struct.pack(">I", len(chunk)) + chunk)
                sock.sendall(struct.pack(">I", 0))
            except BrokenPipeError:
                pass  # clamd closes early when the stream is over its limit; read its reason
            reply = b""
            while not reply.endswith(b"\0"):
                got = sock.recv(4096)
                if not got:
                    break
                reply += got
        return reply.rstrip(b"\0").decode("utf-8", "replace").strip()


def parse_clamd_reply(reply: str) -> str:
    """The verdict of one clamd reply line: ``stream: OK``, ``stream: NAME FOUND`` or an
    ``... ERROR`` (then ``error``)."""
    if reply.endswith(" OK") or reply == "OK":
        return SCAN_CLEAN
    found = _FOUND.match(reply)
    if found:
        return SCAN_INFECTED_PREFIX + found.group("name")
    log.warning("clamd answered with an error: %s", reply[:200])
    return SCAN_ERROR


# What a scan command may see of the daemon's environment: enough to find programs and speak
# the user's language. Everything else stays out, above all the ``*_env`` secrets the config
# names (IMAP, SMTP and PKCS#12 passwords, the cache key).
PASSED_ENVIRONMENT = (
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "TMPDIR",
)
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"


def scan_command_environment(environ: dict[str, str] | os._Environ[str]) -> dict[str, str]:
    """The environment a scan command runs with: only :data:`PASSED_ENVIRONMENT` taken from
    ``environ`` (PATH defaulting to :data:`DEFAULT_PATH`)."""
    env = {name: environ[name] for name in PASSED_ENVIRONMENT if name in environ}
    env.setdefault("PATH", DEFAULT_PATH)
    return env


class CommandScanner:
    """A command (run by the shell) that reads the content on stdin and exits like clamdscan:
    0 clean, 1 infected (the name is taken from a ``NAME FOUND`` line, else ``unknown``), any
    other status an error. It runs with a clean environment (:func:`scan_command_environment`)
    and no inherited file descriptors; it is run on decrypted content, so it must not write
    that content to disk (clamscan does, for standard input: use clamdscan, see contrib)."""

    def __init__(self, command: str, timeout: float = TIMEOUT_SECONDS) -> None:
        self.command = command
        self.timeout = timeout

    def scan(self, data: bytes) -> str:
        """Run the command on ``data``; returns the verdict."""
        try:
            proc = subprocess.run(
                self.command,
                shell=True,
                input=data,
                capture_output=True,
                timeout=self.timeout,
                env=scan_command_environment(os.environ),
                close_fds=True,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            log.warning("scan command failed to run: %s", type(exc).__name__)
            return SCAN_ERROR
        if proc.returncode == 0:
            return SCAN_CLEAN
        if proc.returncode == 1:
            for line in proc.stdout.decode("utf-8", "replace").splitlines():
                found = _FOUND.match(line.strip())
                if found:
                    return SCAN_INFECTED_PREFIX + found.group("name")
            return SCAN_INFECTED_PREFIX + "unknown"
        log.warning("scan command exited %d", proc.returncode)
        return SCAN_ERROR


def make_scanner(clamd_socket: Path | None, command: str | None) -> Scanner | None:
    """The configured scanner: clamd when a socket is given, else the command, else None."""
    if clamd_socket is not None:
        return ClamdScanner(clamd_socket)
    if command:
        return CommandScanner(command)
    return None


def scan_content(scanner: Scanner, content: bytes) -> tuple[str, dict[int, str]]:
    """Scan a decrypted message as a whole and each attachment on its own (decoded, so a
    signature for the file matches). Returns (message verdict, {part number: verdict})."""
    whole = scanner.scan(content)
    parts: dict[int, str] = {}
    try:
        for part in iter_parts(content):
            if part.is_attachment:
                parts[part.number] = scanner.scan(part.data)
    except SmimeCompanionError:
        pass  # unparsable MIME: the whole-message scan above still ran
    return whole, parts


def scan_pending(cache: Cache, scanner: Scanner, limit: int = 100) -> int:
    """Scan up to ``limit`` cached messages that have no verdict yet or whose last scan was an
    ``error``, and store the verdicts. Returns how many were scanned."""
    done = 0
    for message_id in cache.messages_to_scan(limit):
        content = cache.content(message_id)
        if content is None:
            continue
        whole, parts = scan_content(scanner, content)
        verdict = cache.record_scan(message_id, whole, parts)
        if verdict.startswith(SCAN_INFECTED_PREFIX):
            log.warning("message %d: %s", message_id, verdict)
        done += 1
    return done

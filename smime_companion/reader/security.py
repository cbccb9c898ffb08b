"""The reader's locks: one-time sign-in tokens, sessions, and the checks every request passes.

The pages hold decrypted mail, so the server trusts nothing about a request but what it can
check (docs/reader.md has the threat model):

- **Sign-in**: ``smime-companion reader`` (run by the user, who can read the 0700 cache
  directory) writes a one-time token there; the browser trades it at ``/signin`` for a session.
  The token lives two minutes and is removed as it is used, so a second use fails. Only its
  SHA-256 is kept on disk, so reading the directory later gives nothing.
- **Sessions** live in the server's memory only: a random id in an HttpOnly, SameSite=Strict
  cookie, ended by sign-out, by ``idle`` time without a request, and by a restart.
- **Host**: a request must name the loopback address and port the server listens on (a DNS
  rebinding page names its own host); **Origin** must be ours on every state change (or, for
  our own forms, ``null`` with ``Sec-Fetch-Site: same-origin``), and so must the session's CSRF
  token, sent in a form field or the ``X-CSRF-Token`` header.

Nothing here imports the web framework: the routes call these with plain values.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import json
import os
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

TOKEN_LIFETIME = timedelta(minutes=2)
SIGNIN_DIR = "reader-signin"
SERVER_FILE = "reader-server.json"
COOKIE = "smime_reader_session"
CSRF_FIELD = "csrf"
CSRF_HEADER = "X-CSRF-Token"
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def _private_dir(path: Path) -> Path:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


class SignInTokens:
    """One-time sign-in tokens kept (as their SHA-256) in the private state directory, so the
    command that issues one and the server that redeems it may be different processes."""

    def __init__(self, state_dir: Path) -> None:
        self.directory = state_dir / SIGNIN_DIR

    def issue(self, now: datetime) -> str:
        """A new token, valid for :data:`TOKEN_LIFETIME` from ``now``."""
        directory = _private_dir(self.directory)
        token = secrets.token_urlsafe(32)
        path = directory / _digest(token)
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(str(int((now + TOKEN_LIFETIME).timestamp())))
        return token

    def launcher(self, token: str, url: str) -> Path:
        """A private HTML file that sends a browser on to ``url``: opening the browser on it
        keeps the token out of the browser's command line, which other local users can see."""
        path = _private_dir(self.directory) / f"{_digest(token)}.html"
        fd = os.open(path, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(
                '<!doctype html><meta charset="utf-8"><meta name="referrer" content="no-referrer">'
                f'<meta http-equiv="refresh" content="0;url={html.escape(url)}">'
                "<title>Signing in</title><p>Signing in to the S/MIME reader…</p>"
            )
        return path

    def redeem(self, token: str, now: datetime) -> bool:
        """True exactly once for a token issued and not expired at ``now``; the token (and its
        launcher file) is gone afterwards either way."""
        if not token or len(token) > 200:
            return False
        path = self.directory / _digest(token)
        try:
            expires = int(path.read_text().strip() or "0")
            path.unlink()  # only one caller's unlink succeeds: that one signs in
        except (OSError, ValueError):
            return False
        finally:
            self._sweep(now, keep=path)
        (self.directory / f"{path.name}.html").unlink(missing_ok=True)
        return now.timestamp() <= expires

    def _sweep(self, now: datetime, keep: Path) -> None:
        """Remove expired tokens and launchers left by sign-ins that never happened."""
        try:
            entries = list(self.directory.iterdir())
        except OSError:
            return
        horizon = now.timestamp() - TOKEN_LIFETIME.total_seconds()
        for entry in entries:
            if entry == keep:
                continue
            try:
                if entry.stat().st_mtime < horizon:
                    entry.unlink()
            except OSError:
                continue


@dataclass
class Session:
    """A signed-in browser: its CSRF token and when it was last used (monotonic seconds)."""

    csrf: str
    last_seen: float


class Sessions:
    """The signed-in sessions, in memory; looked up by the SHA-256 of the cookie value."""

    def __init__(self, idle: timedelta, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.idle = idle.total_seconds()
        self._monotonic = monotonic
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def create(self) -> tuple[str, Session]:
        """A new session: its cookie value and the session."""
        cookie = secrets.token_urlsafe(32)
        session = Session(secrets.token_urlsafe(32), self._monotonic())
        with self._lock:
            self._sessions[_digest(cookie)] = session
        return cookie, session

    def get(self, cookie: str | None) -> Session | None:
        """The live session of ``cookie`` (its idle time restarts), or None: unknown, ended,
        or idle longer than the limit (it is then ended)."""
        if not cookie or len(cookie) > 200:
            return None
        key = _digest(cookie)
        now = self._monotonic()
        with self._lock:
            session = self._sessions.get(key)
            if session is None:
                return None
            if now - session.last_seen > self.idle:
                del self._sessions[key]
                return None
            session.last_seen = now
            return session

    def end(self, cookie: str | None) -> None:
        """Sign the session of ``cookie`` out (no-op when there is none)."""
        if cookie:
            with self._lock:
                self._sessions.pop(_digest(cookie), None)


def allowed_hosts(port: int) -> frozenset[str]:
    """The Host header values a request to the reader on ``port`` may carry."""
    return frozenset(f"{name}:{port}" for name in LOOPBACK_NAMES)


def host_ok(host: str | None, port: int) -> bool:
    """True when ``host`` (the Host header) names the loopback server on ``port``."""
    return (host or "").lower() in allowed_hosts(port)


def origin_ok(
    origin: str | None, host: str | None, port: int, fetch_site: str | None = None
) -> bool:
    """True when the request comes from the reader's own pages, as reached through ``host``:
    its Origin header is our origin, or, for a form our page submitted, Origin is ``null`` and
    ``Sec-Fetch-Site`` is ``same-origin``. (With ``Referrer-Policy: no-referrer`` browsers send
    ``Origin: null`` on form submissions; ``Sec-Fetch-Site`` is set by the browser itself and no
    page can forge it.) A state change without either is refused."""
    if not host_ok(host, port):
        return False
    if origin and origin.lower() == f"http://{(host or '').lower()}":
        return True
    return origin == "null" and (fetch_site or "").lower() == "same-origin"


def csrf_ok(session: Session, sent: str | None) -> bool:
    """True when ``sent`` is the session's CSRF token (compared in constant time)."""
    return bool(sent) and hmac.compare_digest(session.csrf.encode(), (sent or "").encode())


def write_server_file(state_dir: Path, port: int, pid: int) -> None:
    """Record where this process serves the reader, for ``smime-companion reader``."""
    path = state_dir / SERVER_FILE
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump({"port": port, "pid": pid}, handle)
    os.replace(tmp, path)


def read_server_file(state_dir: Path) -> tuple[int, int] | None:
    """(port, pid) of the process that last said it serves the reader here, or None."""
    try:
        data = json.loads((state_dir / SERVER_FILE).read_text())
        return int(data["port"]), int(data["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def remove_server_file(state_dir: Path, pid: int) -> None:
    """Forget the server file when it is this process's (``pid``)."""
    found = read_server_file(state_dir)
    if found is not None and found[1] == pid:
        (state_dir / SERVER_FILE).unlink(missing_ok=True)

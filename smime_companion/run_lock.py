"""One daemon per config: the lock file in the cache directory that ``run`` holds."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from smime_companion.errors import AlreadyRunning

LOCK_FILE = "daemon.lock"


class DaemonLock:
    """One daemon per config: an exclusive ``flock`` on ``daemon.lock`` in the cache directory,
    which holds the running daemon's pid. The kernel drops the lock when the process dies, so a
    crash never leaves it stale."""

    def __init__(self, cache_dir: Path) -> None:
        self.path = Path(cache_dir) / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock and write our pid. Raises :class:`AlreadyRunning` naming the pid that
        holds it, at once (never waits)."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise AlreadyRunning(
                f"smime-companion run is already running for this config (pid {holder}; lock "
                f"{self.path}): stop it first (kill {holder}), or reload it with kill -HUP"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        """Drop the lock (the file stays: removing it would race with a new daemon)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> DaemonLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

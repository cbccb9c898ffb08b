"""The daemon's status file (``daemon-status.json`` in the cache directory): what the running
daemon last said about each account and folder, written by :class:`StatusBoard` and read by
``status`` and the reader without importing the daemon itself.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from datetime import datetime
from pathlib import Path
from typing import Any

__all__ = ["STATUS_FILE", "StatusBoard", "read_status_file"]

log = logging.getLogger(__name__)

STATUS_FILE = "daemon-status.json"


class StatusBoard:
    """What the daemon's threads report (an account's last error, each watcher's state), kept
    under a lock and written to the status file atomically (0600, no secrets)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._status: dict[str, Any] = {"pid": os.getpid(), "accounts": {}}

    def set_account(self, account: str, **values: Any) -> None:
        """Record facts about ``account`` (e.g. ``error=...``)."""
        with self._lock:
            self._status["accounts"].setdefault(account, {"folders": {}}).update(values)

    def set_folder(self, account: str, folder: str, state: str) -> None:
        """Record a watcher's state (``idle``, ``polling``, ``reconnecting``, ``stopped``)."""
        with self._lock:
            entry = self._status["accounts"].setdefault(account, {"folders": {}})
            entry["folders"][folder] = state

    def write(self, running: bool, now: datetime) -> None:
        """Write a snapshot; a failure to write is logged (debug) and otherwise ignored: the
        status file is a courtesy to ``status``, never a reason to stop."""
        with self._lock:
            snapshot = json.loads(json.dumps(self._status))
        snapshot.update(running=running, updated=now.isoformat())
        try:
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp.write_text(json.dumps(snapshot, indent=1))
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
        except OSError as exc:
            log.debug("cannot write %s: %s", self.path, exc)


def read_status_file(cache_dir: Path) -> dict[str, Any] | None:
    """The daemon's last status snapshot, or None when there is none (never ran, unreadable).
    ``running`` is corrected to False when the process that wrote it is gone (killed)."""
    try:
        data = json.loads((Path(cache_dir) / STATUS_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    if data.get("running") and not _pid_alive(data.get("pid")):
        data["running"] = False
    return data


def _pid_alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True

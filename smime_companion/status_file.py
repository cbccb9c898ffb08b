"""The daemon's status file (``daemon-status.json`` in the cache directory): what the running
daemon last said about each account and folder, read by ``status`` and the reader without
importing the daemon itself.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["STATUS_FILE", "read_status_file"]

STATUS_FILE = "daemon-status.json"


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

"""systemd integration without a dependency: the notify protocol, the watchdog and journald's
log priorities.

- :func:`notify` sends ``READY=1``, ``RELOADING=1``, ``STOPPING=1``, ``WATCHDOG=1`` or
  ``STATUS=...`` as one datagram to the socket systemd names in ``$NOTIFY_SOCKET`` (a path, or
  ``@name`` for the abstract namespace), as ``sd_notify(3)`` does; outside systemd it does
  nothing. ``Type=notify`` units then know when the daemon is up, reloading or stopping.
- :func:`starting` keeps systemd's start timeout from stopping a long start-up (a cache
  being upgraded: compressed or re-indexed once after an upgrade, minutes at a large archive)
  by extending it (``EXTEND_TIMEOUT_USEC``) while the start-up runs.
- :func:`watchdog_interval` reads ``$WATCHDOG_USEC`` (for this process, ``$WATCHDOG_PID``):
  with ``WatchdogSec=`` the daemon must send ``WATCHDOG=1`` more often than that, or systemd
  restarts it.
- :class:`JournalFormatter` puts ``<3>``-style priority prefixes before each log line when
  stderr is journald's stream (``$JOURNAL_STREAM`` names it), so ``journalctl -p err`` finds
  the errors.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["JournalFormatter", "journal_stream", "notify", "starting", "watchdog_interval"]

# syslog priorities by logging level (sd-daemon(3)).
_PRIORITIES = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}


def notify(*states: str) -> bool:
    """Send ``states`` (``READY=1``, ...) to systemd in one datagram; returns False (and does
    nothing) outside a ``Type=notify`` unit. Never raises: a daemon must not die because its
    supervisor went away."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address or not states:
        return False
    if address.startswith("@"):  # the abstract namespace
        address = "\0" + address[1:]
    import socket  # here: every command loads this module for its log format, few notify

    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall("\n".join(states).encode("utf-8"))
    except OSError:
        return False
    return True


def reloading() -> bool:
    """Tell systemd a reload began (``RELOADING=1`` with the monotonic time, as
    ``Type=notify-reload`` requires); send ``READY=1`` when it is done."""
    return notify("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}")


@contextmanager
def starting(what: str, every: float = 30.0) -> Iterator[None]:
    """While the block runs, tell systemd every ``every`` seconds that the start-up goes on
    (``EXTEND_TIMEOUT_USEC`` of three periods, with ``STATUS=what``), so ``TimeoutStartSec``
    (90 s by default) does not stop and restart a start-up that is slow but progressing, such
    as a cache upgrade. Outside systemd it does nothing but run the block."""
    if not os.environ.get("NOTIFY_SOCKET"):
        yield
        return
    done = threading.Event()
    extend = f"EXTEND_TIMEOUT_USEC={int(every * 3 * 1_000_000)}"

    def keep_extending() -> None:
        while not done.wait(every):
            notify(extend, f"STATUS={what}")

    notify(extend, f"STATUS={what}")
    thread = threading.Thread(target=keep_extending, name="systemd start-up", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def watchdog_interval() -> float | None:
    """Seconds within which systemd expects ``WATCHDOG=1`` (``WatchdogSec=``), or None when no
    watchdog watches this process."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        seconds = int(usec) / 1_000_000
    except ValueError:
        return None
    return seconds if seconds > 0 else None


def journal_stream() -> bool:
    """True when stderr is connected to journald (``$JOURNAL_STREAM`` is ``device:inode`` of
    the stream systemd gave the service, and stderr is still that stream)."""
    value = os.environ.get("JOURNAL_STREAM", "")
    device, _, inode = value.partition(":")
    if not device or not inode:
        return False
    try:
        stat = os.fstat(2)
        return (stat.st_dev, stat.st_ino) == (int(device), int(inode))
    except (OSError, ValueError):
        return False


class JournalFormatter(logging.Formatter):
    """Prefixes each line of a record with its syslog priority (``<3>`` for errors), which
    journald strips and records as the message's priority."""

    def format(self, record: logging.LogRecord) -> str:
        priority = _PRIORITIES.get(record.levelno)
        if priority is None:
            priority = 3 if record.levelno > logging.WARNING else 6
        text = super().format(record)
        return "\n".join(f"<{priority}>{line}" for line in text.splitlines() or [""])

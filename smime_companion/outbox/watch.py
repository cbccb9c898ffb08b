"""Watching a local outbox directory with watchdog, so a saved draft is sent within moments.

Editors and mail clients save atomically: they write a temporary file and rename it over the
target, and Maildir delivers through ``tmp/`` and a rename into ``new/``. So a draft arrives as a
*move* into the directory far more often than as a created file; both (and a file closed after
writing, where the platform reports it) wake the watcher. The watcher only signals: the pipeline
then lists the directory itself, so a missed or doubled event costs nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from watchdog.events import (
    DirCreatedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer

from smime_companion.outbox.localdir import LocalDirectory


class DraftWatcher:
    """Signals when a draft may have arrived in ``source``'s directory.

    Use :meth:`wait` in a loop (it returns True when something arrived) or pass ``on_draft``,
    which is called from watchdog's thread. Start with :meth:`start` (or ``with``) and
    :meth:`stop` at the end.
    """

    def __init__(self, source: LocalDirectory, on_draft: Callable[[], None] | None = None) -> None:
        self.source = source
        self.on_draft = on_draft
        self._arrived = threading.Event()
        self._observer: Observer | None = None  # type: ignore[valid-type]

    def start(self) -> None:
        """Start watching (the directory, and a Maildir's ``new/`` and ``cur/``, must exist)."""
        observer = Observer()
        handler = _Handler(self)
        # Watch the top directory recursively: a Maildir's new/ and cur/ are below it, and a
        # watch on the parent also sees those subdirectories being created later.
        observer.schedule(handler, str(self.source.directory), recursive=True)
        observer.daemon = True
        observer.start()
        self._observer = observer

    def stop(self) -> None:
        """Stop watching and wait for watchdog's thread to end."""
        observer, self._observer = self._observer, None
        if observer is not None:
            observer.stop()
            observer.join(timeout=5)

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds; True when a draft may have arrived since the last
        call (the signal is then cleared)."""
        arrived = self._arrived.wait(timeout)
        self._arrived.clear()
        return arrived

    def _seen(self, path: str) -> None:
        if self.source.is_draft_name(Path(path)):
            self._arrived.set()
            if self.on_draft is not None:
                self.on_draft()

    def __enter__(self) -> DraftWatcher:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class _Handler(FileSystemEventHandler):
    def __init__(self, watcher: DraftWatcher) -> None:
        self.watcher = watcher

    def on_any_event(self, event: FileSystemEvent) -> None:
        if isinstance(event, DirCreatedEvent | DirMovedEvent):
            return
        if isinstance(event, FileMovedEvent):
            # An atomic save: the draft's name is the destination of the rename.
            self.watcher._seen(_path(event.dest_path))
        elif isinstance(event, FileCreatedEvent | FileClosedEvent):
            self.watcher._seen(_path(event.src_path))


def _path(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value

"""A local directory as an outbox: ``.eml`` files, or a Maildir (``new/`` and ``cur/``).

:class:`LocalDirectory` implements :class:`~smime_companion.outbox.protocols.OutboxSource`. A
draft's ref is its path relative to the directory. Drafts moved aside go to the ``Held`` and
``Rejected`` subdirectories (created 0700: drafts are private).

A draft is taken only once it is complete, so only names that a finished save produces count:
``*.eml`` files (editors and mail clients write a temporary file and rename it over the target)
and Maildir files in ``new/`` or ``cur/`` (Maildir delivers through ``tmp/`` and a rename).
Hidden files, ``*.tmp``, ``*.part`` and backup files (``~``) are ignored.
"""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path

from smime_companion.errors import UsageError
from smime_companion.outbox.protocols import DraftRef, Place

_PLACE_DIRS = {Place.HELD: "Held", Place.REJECTED: "Rejected"}
_IGNORED_SUFFIXES = (".tmp", ".part", ".swp", "~")


class LocalDirectory:
    """Drafts in ``directory``; see the module docstring. Methods raise :class:`UsageError`
    (one line) when the directory cannot be read or written."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    @classmethod
    def created(cls, directory: Path) -> LocalDirectory:
        """The local outbox ``directory``, created (0700) when missing. Raises
        :class:`UsageError` when it cannot be."""
        try:
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise UsageError(f"cannot create the outbox directory {directory}: {exc}") from None
        return cls(directory)

    @property
    def is_maildir(self) -> bool:
        """True when the directory is a Maildir (has ``new/`` and ``cur/``)."""
        return (self.directory / "new").is_dir() and (self.directory / "cur").is_dir()

    def draft_directories(self) -> list[Path]:
        """Where new drafts appear (what a watcher watches)."""
        if self.is_maildir:
            return [self.directory / "new", self.directory / "cur"]
        return [self.directory]

    def is_draft_name(self, path: Path) -> bool:
        """True when a file at ``path`` would be taken as a draft."""
        name = path.name
        if name.startswith(".") or name.endswith(_IGNORED_SUFFIXES):
            return False
        if path.parent not in self.draft_directories():
            return False
        return self.is_maildir or name.endswith(".eml")

    def drafts(self) -> list[DraftRef]:
        """The drafts now in the directory, oldest (by modification time) first."""
        found: list[tuple[float, DraftRef]] = []
        for folder in self.draft_directories():
            try:
                entries = list(os.scandir(folder))
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise UsageError(f"cannot read the outbox directory {folder}: {exc}") from None
            for entry in entries:
                path = Path(entry.path)
                if not self.is_draft_name(path):
                    continue
                try:
                    stat = entry.stat()
                except FileNotFoundError:
                    continue  # taken away meanwhile
                if not entry.is_file():
                    continue
                ref = str(path.relative_to(self.directory))
                found.append((stat.st_mtime, DraftRef(ref, stat.st_size)))
        return [ref for _mtime, ref in sorted(found, key=lambda f: (f[0], f[1].ref))]

    def read(self, ref: str) -> bytes | None:
        """The draft's bytes, or None when the file is gone."""
        try:
            return self._path(ref).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise UsageError(f"cannot read the draft {ref}: {exc.strerror or exc}") from None

    def remove(self, ref: str) -> None:
        """Delete the draft file; a file already gone is fine."""
        try:
            self._path(ref).unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise UsageError(f"cannot remove the draft {ref}: {exc.strerror or exc}") from None

    def move_aside(self, ref: str, place: Place) -> str | None:
        """Move the draft file into the ``place`` subdirectory; returns its new ref."""
        source = self._path(ref)
        target_dir = self._place_dir(place)
        target = target_dir / source.name
        if target.exists():
            target = target_dir / f"{int(time.time())}-{secrets.token_hex(4)}-{source.name}"
        try:
            os.replace(source, target)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise UsageError(f"cannot move the draft {ref}: {exc.strerror or exc}") from None
        return str(target.relative_to(self.directory))

    def put(self, draft: bytes, place: Place) -> None:
        """Write a new draft file into the ``place`` subdirectory (atomically)."""
        target_dir = self._place_dir(place)
        name = f"{int(time.time())}-{secrets.token_hex(6)}.eml"
        tmp = target_dir / f".{name}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(draft)
            os.replace(tmp, target_dir / name)
        except OSError as exc:
            raise UsageError(f"cannot write a draft into {target_dir}: {exc}") from None

    def _place_dir(self, place: Place) -> Path:
        target = self.directory / _PLACE_DIRS[place]
        try:
            target.mkdir(mode=0o700, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"cannot create {target}: {exc.strerror or exc}") from None
        return target

    def _path(self, ref: str) -> Path:
        # Refs come from our own journal, but a damaged one must not reach outside the directory.
        path = (self.directory / ref).resolve()
        if self.directory.resolve() not in path.parents:
            raise UsageError(f"draft reference {ref!r} is outside the outbox directory")
        return path

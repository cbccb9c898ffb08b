"""Opening the store's SQLite database: encrypted at rest, private files, migrations, transactions.

The database is SQLite3 Multiple Ciphers (``apsw-sqlite3mc``) with its default ChaCha20-Poly1305
cipher: every page, including the write-ahead log, is encrypted, so neither the database file nor
its ``-wal``/``-shm`` companions hold plaintext or even the ``SQLite format 3`` header. We chose it
over ``sqlcipher3`` because it costs about the same on inserts (12% against 13%) but 39 ms per open
instead of 150 ms, and ships a current SQLite with FTS5 as a wheel.

The key is handed to SQLite as ``PRAGMA hexkey`` (the passphrase's UTF-8 bytes in hex), so no
user text is ever spliced into SQL. A wrong key is detected by reading the schema right after the
key is set, before anything is written: a wrong key never changes a byte of the file.

SQLite3 Multiple Ciphers turns the passphrase into the page key with PBKDF2 (about 25 ms, on
purpose). :func:`page_key` derives the same page key, and a key given as ``bytes`` is that page
key itself (sqlite3mc's ``raw:`` form), so the command line can remember it between calls
instead of the passphrase (``cli.unlock``).

This module and the rest of ``store`` are the only places that import a SQLite binding.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import apsw

from smime_companion.errors import CacheError

DB_FILENAME = "cache.db"
_PLAIN_HEADER = b"SQLite format 3\x00"
BUSY_TIMEOUT_MS = 10_000
# Log pages after which a commit copies the log into the database, when no Checkpointer does: a
# sync batch writes megabytes, and checkpointing every 40 MiB (4 MiB by default) writes each
# index page fewer times (with the cache's bigger page cache, storing 10,000 messages took 13%
# less time).
AUTOCHECKPOINT_PAGES = 10_000

# SQLite3 Multiple Ciphers' ChaCha20 cipher: the page key is PBKDF2-HMAC-SHA256 over the
# passphrase and the 16-byte salt at the start of the file, with this many iterations (its
# default ``kdf_iter``); tests/test_cache_unlock.py checks that our derivation opens a cache.
_KDF_ITERATIONS = 64_007
_SALT_BYTES = 16
PAGE_KEY_BYTES = 32

# A passphrase (str), or the page key derived from it (bytes), see page_key().
Key = str | bytes

log = logging.getLogger(__name__)

WRONG_KEY = "wrong cache key: the database could not be decrypted"

# One migration per schema version, applied in order inside one transaction each; the version
# reached is recorded in PRAGMA user_version. Never edit a released migration: append a new one.
Migration = Callable[[apsw.Connection], None]


def private_directory(directory: Path) -> Path:
    """Create ``directory`` (and parents) if needed and make it 0700. Returns it.

    Raises :class:`CacheError` when it cannot be created.
    """
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(directory, 0o700)
    except OSError as exc:
        raise CacheError(f"cannot create the cache directory {directory}: {exc.strerror}") from None
    return directory


def connect(path: Path, key: Key | None, migrations: list[Migration]) -> apsw.Connection:
    """Open (or create) the database at ``path`` with ``key`` (None: a plain database), check the
    key, set the pragmas and apply pending ``migrations``.

    Raises :class:`CacheError` with one line for a wrong or missing key, a damaged file, a
    plain database opened with a key (or the reverse), or an I/O failure.
    """
    return _open(path, key, migrations)


def _open(path: Path, key: Key | None, migrations: list[Migration] | None) -> apsw.Connection:
    # migrations None: open an existing database as it is (for rekeying), never migrate.
    private_directory(path.parent)
    with _opening_lock(path):
        return _open_locked(path, key, migrations)


@contextlib.contextmanager
def _opening_lock(path: Path) -> Iterator[None]:
    """Hold ``PATH.lock`` exclusively while a database is opened, created or migrated.

    Two processes creating the same encrypted database at once (the daemon's first start and a
    ``search`` typed meanwhile) each wrote a header with its own cipher salt, and the loser's
    pages no longer decrypted: "wrong cache key" on a database nobody could read again. An
    flock on a file of its own (SQLite's own locks are POSIX locks on the database file, which
    an flock does not touch) makes opening one at a time; it is held for milliseconds.
    """
    try:
        fd = os.open(f"{path}.lock", os.O_CREAT | os.O_RDWR, 0o600)
    except OSError as exc:
        raise CacheError(f"cannot create the lock file {path}.lock: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _open_locked(
    path: Path, key: Key | None, migrations: list[Migration] | None
) -> apsw.Connection:
    existed = path.exists() and path.stat().st_size > 0
    if not existed:
        # Create the file 0600 ourselves: SQLite gives -wal and -shm the main file's mode.
        try:
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
        except OSError as exc:
            raise CacheError(f"cannot create the cache database {path}: {exc.strerror}") from None
    try:
        os.chmod(path, 0o600)
    except OSError as exc:
        raise CacheError(f"cannot protect the cache database {path}: {exc.strerror}") from None
    if isinstance(key, str) and "\x00" in key:
        raise CacheError("the cache key contains a NUL character")
    plain_on_disk = existed and _starts_with_plain_header(path)
    if existed and key is not None and plain_on_disk:
        raise CacheError(
            "the cache database is not encrypted but a cache key was given "
            "(set encrypt_cache = false, or move the old cache away)"
        )
    if existed and key is None and not plain_on_disk:
        raise CacheError("the cache database is encrypted (or damaged): a cache key is needed")
    try:
        conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READWRITE)
    except apsw.Error as exc:
        raise CacheError(f"cannot open the cache database {path}: {exc}") from None
    try:
        conn.setbusytimeout(BUSY_TIMEOUT_MS)
        if key is not None:
            conn.execute("PRAGMA cipher = 'chacha20'")
            conn.execute(f"PRAGMA hexkey = '{_key_material(key).hex()}'")
        # Reading the schema is the first page read: it fails here, before any write, when the
        # key is wrong or the file is not a database.
        conn.execute("SELECT count(*) FROM sqlite_master").fetchall()
        conn.execute("PRAGMA journal_mode = WAL").fetchall()
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA secure_delete = ON")  # deleted mail is overwritten, not left in pages
        if migrations is not None:
            _migrate(conn, migrations)
    except apsw.NotADBError:
        conn.close()
        if key is None:
            raise CacheError(f"the cache database {path} is damaged: not a database") from None
        raise CacheError(WRONG_KEY) from None
    except apsw.Error as exc:
        conn.close()
        raise translate(exc, "open the cache") from None
    return conn


def _key_material(key: Key) -> bytes:
    if isinstance(key, bytes):
        if len(key) != PAGE_KEY_BYTES:
            raise CacheError(f"a page key has {PAGE_KEY_BYTES} bytes, not {len(key)}")
        return b"raw:" + key  # sqlite3mc: use these bytes as the page key, skip the derivation
    return key.encode("utf-8")


def salt_of(path: Path) -> bytes | None:
    """The cipher salt of the encrypted database at ``path`` (its first 16 bytes, random for
    each database), or None when the file is missing or too short to hold one."""
    try:
        with open(path, "rb") as handle:
            salt = handle.read(_SALT_BYTES)
    except OSError:
        return None
    return salt if len(salt) == _SALT_BYTES else None


def page_key(path: Path, passphrase: str) -> bytes | None:
    """The page key SQLite3 Multiple Ciphers derives from ``passphrase`` for the encrypted
    database at ``path``, or None when it has no salt yet (see :func:`salt_of`). Costs what
    opening with the passphrase costs."""
    import hashlib  # here: it loads OpenSSL (3 ms), which a call with a remembered key skips

    salt = salt_of(path)
    if salt is None:
        return None
    return hashlib.pbkdf2_hmac(
        "sha256", passphrase.encode("utf-8"), salt, _KDF_ITERATIONS, PAGE_KEY_BYTES
    )


def _starts_with_plain_header(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(len(_PLAIN_HEADER)) == _PLAIN_HEADER


def _migrate(conn: apsw.Connection, migrations: list[Migration]) -> None:
    version = int(str(conn.execute("PRAGMA user_version").fetchall()[0][0]))
    if version > len(migrations):
        raise CacheError(
            f"the cache database has schema version {version}, newer than this program "
            f"knows ({len(migrations)}): upgrade smime-companion"
        )
    for number, migration in enumerate(migrations[version:], start=version + 1):
        with conn:
            migration(conn)
            conn.execute(f"PRAGMA user_version = {int(number)}")


def translate(exc: apsw.Error, doing: str) -> CacheError:
    """One line for an SQLite failure while ``doing`` something (e.g. ``store a message``)."""
    if isinstance(exc, apsw.FullError):
        return CacheError(f"cannot {doing}: the disk is full; the cache was not changed")
    if isinstance(exc, apsw.IOError):
        return CacheError(
            f"cannot {doing}: the cache database could not be written or read "
            f"(disk full or I/O error); the cache was not changed"
        )
    if isinstance(exc, apsw.CorruptError | apsw.NotADBError):
        return CacheError(f"cannot {doing}: the cache database is damaged ({exc})")
    if isinstance(exc, apsw.BusyError):
        return CacheError(f"cannot {doing}: the cache is locked by another process")
    if isinstance(exc, apsw.ReadOnlyError | apsw.CantOpenError | apsw.PermissionsError):
        return CacheError(f"cannot {doing}: the cache database is not writable ({exc})")
    return CacheError(f"cannot {doing}: {type(exc).__name__}: {exc}")


T = TypeVar("T")


def guarded(doing: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """Decorator: an SQLite failure inside the method becomes one :class:`CacheError` line."""

    def wrap(func: Callable[..., T]) -> Callable[..., T]:
        def inner(*args: Any, **kwargs: Any) -> T:
            try:
                return func(*args, **kwargs)
            except apsw.Error as exc:
                raise translate(exc, doing) from None

        inner.__name__ = func.__name__
        inner.__qualname__ = func.__qualname__
        inner.__doc__ = func.__doc__
        inner.__wrapped__ = func  # type: ignore[attr-defined]
        return inner

    return wrap


@contextlib.contextmanager
def savepoint(conn: apsw.Connection) -> Iterator[None]:
    """A nestable transaction (apsw's connection context uses SAVEPOINT): commits on success,
    rolls back on any exception. An SQLite failure, the commit's included (the disk filling up
    as a sync batch is committed), is raised as one :class:`CacheError` line."""
    try:
        with conn:
            yield
    except apsw.Error as exc:
        raise translate(exc, "commit to the cache") from None


def rekey(conn: apsw.Connection, new_key: str) -> None:
    """Re-encrypt the whole database under ``new_key``. Raises :class:`CacheError`.

    Rewriting every page is done by SQLite3MC in one transaction; WAL mode is left for the
    duration because re-encrypting the log itself is not supported.
    """
    if "\x00" in new_key or not new_key:
        raise CacheError("the new cache key must be non-empty and contain no NUL character")
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        conn.execute("PRAGMA journal_mode = DELETE").fetchall()
        try:
            result = conn.execute(f"PRAGMA hexrekey = '{new_key.encode('utf-8').hex()}'")
            result.fetchall()
        finally:
            conn.execute("PRAGMA journal_mode = WAL").fetchall()
    except apsw.Error as exc:
        raise translate(exc, "change the cache key") from None


def rekey_directory(directory: Path, key: str, new_key: str) -> list[Path]:
    """Re-encrypt every database (``*.db``) in ``directory`` from ``key`` to ``new_key``: the
    cache, the certificate store and the outbox journal share the cache key, so they change
    together. Every file is opened with ``key`` first, and nothing is changed unless all open.
    Returns the files rekeyed. Raises :class:`CacheError` naming the file that failed.
    """
    paths = sorted(p for p in directory.glob("*.db") if p.is_file())
    conns: list[tuple[Path, apsw.Connection]] = []
    try:
        for path in paths:
            try:
                conns.append((path, _open(path, key, None)))
            except CacheError as exc:
                raise CacheError(f"{path.name}: {exc}; no key was changed") from None
        done: list[Path] = []
        for path, conn in conns:
            try:
                rekey(conn, new_key)
            except CacheError as exc:
                changed = ", ".join(p.name for p in done) or "none"
                raise CacheError(
                    f"{path.name}: {exc} (already under the new key: {changed})"
                ) from None
            done.append(path)
        return done
    finally:
        for _, conn in conns:
            conn.close()


class Checkpointer:
    """Copies a writing connection's write-ahead log into the database file from a thread of its
    own, so the thread that writes does not also copy every page a second time.

    In WAL mode each committed page is first appended to the log and later copied into the
    database file by a checkpoint, which SQLite otherwise runs inside the writer's commit once
    the log passes a size (``wal_autocheckpoint``). For a first sync that stores hundreds of
    megabytes, that copy (decrypting and re-encrypting each page, writing it) was a third of the
    storing thread's time: storing 10,000 messages (300 MB) took 2.9 s with it and 1.9 s with
    the copy moved here, on the other core. The thread has its own connection, and SQLite lets a
    PASSIVE checkpoint run beside a writer.

    The log is still bounded. A passive checkpoint cannot reset the log while the writer keeps
    appending, so once it holds ``limit_pages`` the writer, right after its commit, waits for one
    checkpoint pass to finish; its next transaction then starts the log again from the top. The
    wait is short, since the thread has copied all but the last few batches by then.

    Nothing here decides durability: a checkpoint only moves committed pages between two files
    SQLite already keeps consistent, and a crash in the middle leaves the log to be replayed.
    """

    def __init__(
        self,
        writer: apsw.Connection,
        path: Path,
        key: Key | None,
        *,
        step_pages: int = 5_000,
        limit_pages: int = 25_000,
    ) -> None:
        self._writer = writer
        self._step = step_pages
        self._limit = limit_pages
        self._conn = _open(path, key, None)
        self._lock = threading.Condition()
        self._requested = 0  # passes asked for
        self._finished = 0  # the request number the last finished pass covered
        self._copied = 0  # log frames the last pass left copied
        self._stopping = False
        writer.set_wal_hook(self._committed)
        self._thread = threading.Thread(target=self._run, name="cache-checkpoint", daemon=True)
        self._thread.start()

    def _committed(self, _conn: apsw.Connection, _name: str, pages: int) -> int:
        """SQLite's WAL hook, called in the writer's thread after each commit with the log's
        length in pages (the writer holds no lock by then)."""
        if pages < self._copied:  # the log was started again from the top
            self._copied = 0
        if pages >= self._limit:
            with self._lock:
                self._requested += 1
                wanted = self._requested
                self._lock.notify_all()
                while self._finished < wanted and not self._stopping:
                    self._lock.wait()
        elif pages - self._copied >= self._step:
            with self._lock:
                self._requested += 1
                self._lock.notify_all()
        return apsw.SQLITE_OK

    def _run(self) -> None:
        failing = ""  # the last failure, said once
        while True:
            with self._lock:
                while self._finished >= self._requested and not self._stopping:
                    self._lock.wait()
                if self._stopping:
                    return
                covering = self._requested
            try:
                _, self._copied = self._conn.wal_checkpoint(mode=apsw.SQLITE_CHECKPOINT_PASSIVE)
                if failing:
                    log.warning("cache checkpoints work again")
                failing = ""
            except apsw.BusyError:
                pass  # another checkpoint is running (a second daemon's, a CLI's): next time
            except apsw.Error as exc:
                # The log keeps everything committed; it only grows until a pass succeeds.
                # Said once, not at every commit past the limit.
                if str(exc) != failing:
                    log.warning("cache checkpoint failed (the write-ahead log grows): %s", exc)
                failing = str(exc)
            finally:
                with self._lock:
                    self._finished = covering
                    self._lock.notify_all()

    def close(self) -> None:
        """Stop the thread (after its current pass) and give the checkpoints back to the
        writer's commits. Idempotent."""
        with self._lock:
            if self._stopping:
                return
            self._stopping = True
            self._lock.notify_all()
        self._thread.join()
        self._conn.close()
        with contextlib.suppress(apsw.Error):  # the writer may be closed already
            self._writer.wal_autocheckpoint(AUTOCHECKPOINT_PAGES)


class Handle:
    """What every store object (cache, certificate store, outbox journal) shares: one open
    connection in ``_conn``, :meth:`close`, and use as a context manager."""

    _conn: apsw.Connection
    _checkpointer: Checkpointer | None = None

    def close(self) -> None:
        """Close the database (idempotent)."""
        if self._checkpointer is not None:
            self._checkpointer.close()
        self._conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

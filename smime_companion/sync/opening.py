"""Opening fetched mail for the cache: ``core.open`` plus the cache entry derived from its result,
in a worker process when the machine has a core to spare.

The sync hands over a batch of raw messages and later collects, for each, the open result and
its :class:`~smime_companion.core.cache_entry.CacheEntry` (an :class:`Opened`). Meanwhile it stores
the previous batch and the IMAP thread reads the next one, so reading, opening and writing the
database run side by side on the machine's cores (see ``docs/performance.md``).

Workers are processes, since opening is pure Python under the GIL. They are started with
``spawn``, never ``fork``: the daemon has threads (watchers, the IMAP reader), and a forked child
can inherit a lock some other thread held. Each worker receives the identities' private keys once,
through its start-up pipe (PKCS#8 DER: never a file, an argument or a log line), and the trust
anchors. If a worker dies (killed, out of memory), the batch is opened in this process instead
and a new worker is started for the next one: a message is never lost to a worker.

A message that cannot be opened (hostile input past a limit, or a bug of ours) becomes a result
carrying its error, so it is still cached with its raw bytes. So does one that takes longer than
the time limit per message (``[cache] open_time_limit``): the core bounds the work of every
hostile shape it knows (path search, decompression, BER), and the limit catches what it does
not, so that no message can hold the sync, the messages after it and the outbox.
"""

from __future__ import annotations

import contextlib
import copyreg
import ctypes
import io
import itertools
import logging
import multiprocessing
import multiprocessing.connection
import os
import pickle
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from smime_companion.core.cache_entry import CacheEntry
from smime_companion.core.cert_loading import load_certificate
from smime_companion.core.entry_derivation import derive_entry, unindexed_entry
from smime_companion.core.model import Identity, OpenResult
from smime_companion.core.open import open_message
from smime_companion.core.verdicts import Decryption, SignatureStatus
from smime_companion.errors import SmimeCompanionError
from smime_companion.logs import route_library_warnings

log = logging.getLogger(__name__)

# Most workers worth starting: beyond this the single process writing the database is the limit.
MAX_WORKERS = 4
# Worker deaths (killed, out of memory) after which an OpeningPool stops starting new ones.
MAX_WORKER_DEATHS = 5
# Seconds one message may take to open and index (``[cache] open_time_limit``). Real mail takes
# milliseconds, a 256 MB message a few seconds; every hostile message of bench/hostile_open.py
# under one.
DEFAULT_TIME_LIMIT = 30.0


@dataclass(frozen=True)
class Opened:
    """One message opened for the cache: what ``core.open`` found and what will be stored."""

    result: OpenResult
    entry: CacheEntry


def default_workers() -> int:
    """Worker processes to use: one per core beyond the one the sync's own threads (the IMAP
    reader, the database writer) keep busy; none on a single core, where opening in-process
    costs less than handing messages over. Measured on two cores: a second worker made a full
    sync slower, since it took CPU from the database writer."""
    return max(0, min(MAX_WORKERS, (os.cpu_count() or 1) - 1))


class TookTooLong(BaseException):
    """Raised in the thread opening a message once the message's time is up. A BaseException,
    so that no ``except Exception`` on the way (the core reports every failure it knows as a
    value) can swallow it."""


class _Watchdog:
    """Interrupts a thread that is still opening a message when its time is up.

    A thread arms it with :meth:`limit` around the work; one daemon thread per process sleeps
    until the earliest deadline and, if that message is still being opened, raises
    :class:`TookTooLong` in the thread (CPython's ``PyThreadState_SetAsyncExc``: at its next
    bytecode, so a single long call into C, such as one decryption, finishes first). Arming costs
    a lock and a clock read: the watchdog is woken only when it was idle.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._armed: dict[int, tuple[float, int]] = {}  # thread -> (deadline, token)
        self._fired: set[int] = set()  # tokens whose thread was interrupted
        self._tokens = itertools.count()
        self._next_wake = float("inf")  # the deadline the watchdog sleeps until
        self._thread: threading.Thread | None = None

    @contextlib.contextmanager
    def limit(self, seconds: float) -> Iterator[None]:
        """Run the block for at most ``seconds``; past them raise :class:`TookTooLong` in it.
        Raises TookTooLong also when the time ran out just as the block ended."""
        thread, token = threading.get_ident(), next(self._tokens)
        deadline = time.monotonic() + seconds
        with self._lock:
            self._armed[thread] = (deadline, token)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="open-watchdog", daemon=True)
                self._thread.start()
            elif deadline < self._next_wake:
                self._changed.notify()
        try:
            yield
        finally:
            with self._lock:
                if self._armed.get(thread, (0.0, -1))[1] == token:
                    del self._armed[thread]
                fired = token in self._fired
                self._fired.discard(token)
            if fired:
                _interrupt(thread, None)  # cancel it, if it is still on its way
                raise TookTooLong from None

    def _run(self) -> None:
        with self._lock:
            while True:
                now = time.monotonic()
                for thread, (deadline, token) in list(self._armed.items()):
                    if deadline <= now and token not in self._fired:
                        self._fired.add(token)
                        _interrupt(thread, TookTooLong)
                waiting = [d for d, t in self._armed.values() if t not in self._fired]
                self._next_wake = min(waiting, default=float("inf"))
                self._changed.wait(self._next_wake - now + 0.01 if waiting else None)


def _interrupt(thread: int, exc: type[BaseException] | None) -> None:
    """Raise ``exc`` in ``thread`` at its next bytecode (None: cancel a pending one)."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread), ctypes.py_object(exc) if exc is not None else None
    )


_WATCHDOG = _Watchdog()


def _timed_out(raw: bytes, seconds: float, stage: str) -> OpenResult:
    log.warning("gave up on a message after %g s of %s: stored unopened", seconds, stage)
    return OpenResult.unopened(
        raw,
        f"gave up after {seconds:g} s of {stage} (the time limit per message); "
        "stored unopened with its raw message",
        Decryption.MALFORMED,
        SignatureStatus.MALFORMED,  # nothing about it was checked
    )


def _open(
    raw: bytes,
    at: datetime,
    identities: Sequence[Identity],
    anchors: Sequence[x509.Certificate],
    allow_sha1: bool,
    allow_weak: bool,
    extra_certificates: Sequence[x509.Certificate],
) -> OpenResult:
    """``core.open``, a failure of ours or a limit turned into an unopened result."""
    try:
        return open_message(
            raw,
            identities=identities,
            anchors=anchors,
            at=at,
            allow_sha1=allow_sha1,
            allow_weak=allow_weak,
            extra_certificates=extra_certificates,
        )
    except SmimeCompanionError as exc:
        error = str(exc)
    except Exception as exc:
        log.exception("core.open failed on a message")
        error = f"internal error while opening: {type(exc).__name__}"
    return OpenResult.unopened(raw, error, Decryption.MALFORMED, SignatureStatus.MALFORMED)


def open_safely(
    raw: bytes,
    at: datetime,
    identities: Sequence[Identity],
    anchors: Sequence[x509.Certificate],
    allow_sha1: bool,
    allow_weak: bool = False,
    extra_certificates: Sequence[x509.Certificate] = (),
    time_limit: float = DEFAULT_TIME_LIMIT,
) -> OpenResult:
    """``core.open`` of ``raw`` as of ``at``; never raises: a failure, or opening that takes
    longer than ``time_limit`` seconds, becomes an unopened result carrying the error (one
    line), with the raw message as its content."""
    try:
        with _WATCHDOG.limit(time_limit):
            return _open(raw, at, identities, anchors, allow_sha1, allow_weak, extra_certificates)
    except TookTooLong:
        return _timed_out(raw, time_limit, "opening")


def open_for_cache(
    raw: bytes,
    at: datetime,
    identities: Sequence[Identity],
    anchors: Sequence[x509.Certificate],
    allow_sha1: bool,
    allow_weak: bool = False,
    extra_certificates: Sequence[x509.Certificate] = (),
    time_limit: float = DEFAULT_TIME_LIMIT,
) -> Opened:
    """Open ``raw`` (arrived at ``at``) and derive its cache entry, within ``time_limit``
    seconds for both; never raises. Past the limit, the entry is the raw message's, unopened,
    with the error saying so."""
    stage = "opening"
    try:
        with _WATCHDOG.limit(time_limit):
            result = _open(raw, at, identities, anchors, allow_sha1, allow_weak, extra_certificates)
            stage = "indexing"
            try:
                return Opened(result, derive_entry(raw, result, at))
            except Exception as exc:  # a bug of ours while indexing: keep the message, say why
                log.exception("indexing failed on a message")
                error = f"internal error while indexing: {type(exc).__name__}"
                result = OpenResult.unopened(raw, error, Decryption.MALFORMED)
    except TookTooLong:
        result = _timed_out(raw, time_limit, stage)
    try:
        return Opened(result, derive_entry(raw, result, at))
    except Exception as exc:  # even its outer headers break our indexing: keep the raw alone
        log.exception("indexing the headers failed on a message")
        error = result.error or f"internal error while indexing: {type(exc).__name__}"
        return Opened(result, unindexed_entry(raw, error, at))


class OpenedBatch:
    """A batch being opened; :meth:`result` waits for it."""

    def __init__(
        self,
        owner: OpeningPool,
        items: Sequence[tuple[bytes, datetime]],
        future: Future[list[Opened]] | Future[bytes],
        workers: ProcessPoolExecutor | None = None,
    ) -> None:
        self._owner = owner
        self._items = items
        self._future = future
        self._workers = workers  # the worker pool it went to (None: opened here)

    def done(self) -> bool:
        """True when :meth:`result` would not wait."""
        return self._future.done()

    def result(self) -> list[Opened]:
        """One :class:`Opened` per item, in order."""
        try:
            answer = self._future.result()
        except BrokenProcessPool:
            log.warning("the opening worker died; opening %d messages here", len(self._items))
            self._owner.replace_broken(self._workers)
            return [self._owner.open_for_cache(raw, at) for raw, at in self._items]
        if isinstance(answer, bytes):  # from a worker: see _SharedBytesPickler
            return _unpickled(answer, [raw for raw, _at in self._items])
        return answer


class OpeningPool:
    """Opens messages with the user's identities and anchors, here or in worker processes.

    ``extra_certificates`` (the certificate store's, harvested from earlier mail) are where a
    signer certificate a message leaves out, and its issuers, are looked for."""

    def __init__(
        self,
        identities: Sequence[Identity],
        anchors: Sequence[x509.Certificate],
        *,
        allow_sha1: bool = False,
        workers: int | None = None,
        allow_weak: bool = False,
        extra_certificates: Sequence[x509.Certificate] = (),
        time_limit: float = DEFAULT_TIME_LIMIT,
    ) -> None:
        self.identities = list(identities)
        self.anchors = list(anchors)
        self.allow_sha1 = allow_sha1
        self.allow_weak = allow_weak
        self.extra_certificates = list(extra_certificates)
        self.time_limit = time_limit
        self.workers = default_workers() if workers is None else workers
        self._pool: ProcessPoolExecutor | None = None
        self._deaths = 0
        if self.workers:
            self._start()

    def open(self, raw: bytes, at: datetime) -> OpenResult:
        """Open one message in this process (see :func:`open_safely`)."""
        return open_safely(
            raw, at, self.identities, self.anchors, self.allow_sha1, self.allow_weak,
            self.extra_certificates, self.time_limit,
        )  # fmt: skip

    def open_for_cache(self, raw: bytes, at: datetime) -> Opened:
        """Open one message and derive its cache entry here (see :func:`open_for_cache`)."""
        return open_for_cache(
            raw, at, self.identities, self.anchors, self.allow_sha1, self.allow_weak,
            self.extra_certificates, self.time_limit,
        )  # fmt: skip

    def submit(self, items: Sequence[tuple[bytes, datetime]], *, here: bool = False) -> OpenedBatch:
        """Start opening ``(raw, arrival time)`` items; a worker does it when there is one,
        unless ``here`` (the caller has nothing better to do while the workers are busy): then
        they are opened before this returns. Arrival times must be timezone-aware; they are
        used as UTC (the same instant), since not every library's tzinfo survives the trip to a
        worker."""
        items = [(raw, at.astimezone(UTC)) for raw, at in items]
        if self._pool is None or here:
            done: Future[list[Opened]] = Future()
            done.set_result([self.open_for_cache(raw, at) for raw, at in items])
            return OpenedBatch(self, items, done)
        pool = self._pool
        try:
            return OpenedBatch(self, items, pool.submit(_open_in_worker, list(items)), pool)
        except BrokenProcessPool:
            self.replace_broken(pool)
            return self.submit(items, here=True)

    def replace_broken(self, pool: ProcessPoolExecutor | None) -> None:
        """Start new workers in place of ``pool``, whose worker died, unless that was done
        already (every batch in flight on a dead pool reports it; the new pool, which may have
        work by then, must not be replaced again). After :data:`MAX_WORKER_DEATHS` deaths,
        everything is opened in this process: slower, but a worker that cannot live (no
        memory for it, say) must not be restarted forever."""
        if pool is None or pool is not self._pool:
            return
        self.close()
        self._deaths += 1
        if self._deaths >= MAX_WORKER_DEATHS:
            log.error("opening workers died %d times: opening in this process from now on",
                      self._deaths)  # fmt: skip
            self.workers = 0
            return
        self._start()

    def close(self) -> None:
        """Stop the workers (waiting for a batch under way)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> OpeningPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _start(self) -> None:
        keys = [
            (
                i.key.private_bytes(
                    serialization.Encoding.DER,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                ),
                _der(i.certificate),
                [_der(c) for c in i.chain],
            )
            for i in self.identities
        ]
        self._pool = ProcessPoolExecutor(
            max_workers=self.workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start_worker,
            initargs=(
                keys,
                [_der(a) for a in self.anchors],
                self.allow_sha1,
                self.allow_weak,
                [_der(c) for c in self.extra_certificates],
                self.time_limit,
            ),
        )
        # Start the workers now (importing the engine takes them a few tenths of a second),
        # while the caller logs in and lists its folders, rather than on the first batch.
        self._pool.submit(int)


# -- inside a worker ------------------------------------------------------------------------------

_IdentityDer = tuple[bytes, bytes, list[bytes]]
_worker: (
    tuple[list[Identity], list[x509.Certificate], bool, bool, list[x509.Certificate], float] | None
) = None


def _start_worker(
    keys: list[_IdentityDer],
    anchors: list[bytes],
    allow_sha1: bool,
    allow_weak: bool = False,
    extra: Sequence[bytes] = (),
    time_limit: float = DEFAULT_TIME_LIMIT,
) -> None:
    global _worker
    # Ctrl-C in a terminal and systemd's stop signal reach the whole process group: the daemon
    # finishes its current message and then stops its workers; a worker must not die first
    # (with a traceback) under the batch it is opening.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    route_library_warnings(verbose=False)  # the worker's stderr is the daemon's terminal
    _exit_with_parent()
    identities = [
        Identity(
            key=serialization.load_der_private_key(key, None),  # type: ignore[arg-type]
            certificate=load_certificate(cert),
            chain=tuple(load_certificate(c) for c in chain),
        )
        for key, cert, chain in keys
    ]
    _worker = (
        identities,
        [load_certificate(a) for a in anchors],
        allow_sha1,
        allow_weak,
        [load_certificate(c) for c in extra],
        time_limit,
    )


def _exit_with_parent() -> None:
    """End this worker as soon as the daemon that started it is gone. A worker waits for work on
    a pipe whose writing end it holds itself, so a daemon killed outright (SIGKILL, the OOM
    killer) would leave it waiting forever, with the user's keys in its memory."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        multiprocessing.connection.wait([parent.sentinel])  # readable once the parent is gone
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _open_in_worker(items: list[tuple[bytes, datetime]]) -> bytes:
    """Open ``items`` for the cache; the :class:`Opened` list pickled so that no byte string
    the parent sent is sent back (see :class:`_SharedBytesPickler`)."""
    assert _worker is not None, "worker not initialised"
    identities, anchors, allow_sha1, allow_weak, extra, time_limit = _worker
    # Past the time limit a message is given up on here, in the worker, and the batch goes on:
    # the sync stores it unopened, with its raw bytes, and moves on.
    opened = [
        open_for_cache(raw, at, identities, anchors, allow_sha1, allow_weak, extra, time_limit)
        for raw, at in items
    ]
    out = io.BytesIO()
    _SharedBytesPickler(out, [raw for raw, _at in items]).dump(opened)
    return out.getvalue()


# -- sending results back without the bytes the parent holds ----------------------------------


class _SharedBytesPickler(pickle.Pickler):
    """Pickles results, naming each byte string equal to one of ``shared`` (the raw messages
    the parent sent, which plain mail's content is) by its index instead of copying it: a
    result travels back whole, and the parent's own copy of the raw message is put in its
    place (:func:`_unpickled`)."""

    def __init__(self, file: io.BytesIO, shared: Sequence[bytes]) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self._by_length: dict[int, list[tuple[int, bytes]]] = {}
        for index, raw in enumerate(shared):
            self._by_length.setdefault(len(raw), []).append((index, raw))

    def persistent_id(self, obj: object) -> int | None:  # type: ignore[override]
        if type(obj) is bytes and len(obj) in self._by_length:
            for index, raw in self._by_length[len(obj)]:
                if obj is raw or obj == raw:
                    return index
        return None


class _SharedBytesUnpickler(pickle.Unpickler):
    def __init__(self, file: io.BytesIO, shared: Sequence[bytes]) -> None:
        super().__init__(file)
        self._shared = shared

    def persistent_load(self, pid: object) -> bytes:
        assert isinstance(pid, int)
        return self._shared[pid]


def _unpickled(data: bytes, shared: Sequence[bytes]) -> list[Opened]:
    opened = _SharedBytesUnpickler(io.BytesIO(data), shared).load()
    assert isinstance(opened, list)
    return opened


# -- pickling certificates ------------------------------------------------------------------------


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def _reduce_certificate(
    cert: x509.Certificate,
) -> tuple[Callable[[bytes], x509.Certificate], tuple[bytes]]:
    # A function of ours: pickle cannot name cryptography's Rust-level loader.
    return load_certificate, (_der(cert),)


# Results name signer certificates, which cryptography's objects cannot pickle by themselves:
# they travel as DER and are parsed again on arrival. Registered on import, so in the workers too.
# (Since cryptography 42, ``x509.Certificate`` is the concrete class of every loaded certificate.)
copyreg.pickle(x509.Certificate, _reduce_certificate)

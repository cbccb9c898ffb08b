"""What the reader's pages need from the rest of the program, as plain collaborators.

The reader never reads the config: ``runtime.reader_context`` builds a :class:`ReaderContext`
for ``run`` and for ``smime-companion reader`` alike. The stores are opened once per serving
thread (:class:`ThreadStores`): an apsw connection is used by one thread at a time, and opening
an encrypted database costs a key derivation, too slow to pay per request.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509

from smime_companion.core.certs import email_addresses
from smime_companion.core.model import Identity, OpenResult
from smime_companion.outbox.plan import CertificateLookup
from smime_companion.store.cache import Cache, MessageSummary
from smime_companion.store.certstore import CertStore
from smime_companion.store.journal import Journal


@dataclass(frozen=True)
class AccountInfo:
    """An account as the reader shows it: its name, its username, and whether it can send."""

    name: str
    username: str
    can_send: bool


@dataclass(frozen=True)
class StoreOpeners:
    """How to open each store (with the cache key already bound)."""

    cache: Callable[[], Cache]
    certs: Callable[[], CertStore]
    journal: Callable[[], Journal]


class ThreadStores:
    """One connection per store and per thread, opened on first use and closed together."""

    def __init__(self, openers: StoreOpeners) -> None:
        self._openers = openers
        self._local = threading.local()
        self._lock = threading.Lock()
        self._open: list[Any] = []

    def _get(self, name: str, opener: Callable[[], Any]) -> Any:
        handle = getattr(self._local, name, None)
        if handle is None:
            handle = opener()
            setattr(self._local, name, handle)
            with self._lock:
                self._open.append(handle)
        return handle

    def cache(self) -> Cache:
        """This thread's cache connection."""
        cache: Cache = self._get("cache", self._openers.cache)
        return cache

    def certs(self) -> CertStore:
        """This thread's certificate store connection."""
        store: CertStore = self._get("certs", self._openers.certs)
        return store

    def journal(self) -> Journal:
        """This thread's outbox journal connection."""
        journal: Journal = self._get("journal", self._openers.journal)
        return journal

    def close(self) -> None:
        """Close every connection any thread opened (call once serving stopped)."""
        with self._lock:
            handles, self._open = self._open, []
        for handle in handles:
            handle.close()


@dataclass
class ReaderContext:
    """Everything the reader application is given.

    ``state_dir`` is the private (0700) cache directory: sign-in tokens and the server's
    address file live there. ``kick_outbox(account)`` asks for an outbox pass now (the daemon's
    queue, or a thread of the foreground reader). ``mark_seen`` sets ``\\Seen`` on the server
    (None unless ``mark_seen_on_server``). ``daemon_status`` reads the running daemon's status.
    ``open_attached(raw, at)`` opens a message attached to a cached one as the daemon opens
    mail (the same keys, anchors, algorithm policy and known certificates), judged at ``at``.
    """

    state_dir: Path
    stores: StoreOpeners
    accounts: tuple[AccountInfo, ...]
    identities: Callable[[], Sequence[Identity]]
    anchors: Callable[[], Sequence[x509.Certificate]]
    lookup: Callable[[CertStore], CertificateLookup]
    missing_cert: str = "hold"
    kick_outbox: Callable[[str], None] = lambda account: None
    mark_seen: Callable[[MessageSummary], None] | None = None
    daemon_status: Callable[[], dict[str, Any] | None] = lambda: None
    idle: timedelta = timedelta(minutes=30)
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    open_attached: Callable[[bytes, datetime], OpenResult] | None = None

    def own_addresses(self) -> list[str]:
        """The addresses of the user's identities (lower case, as certificates give them)."""
        return [a for i in self.identities() for a in email_addresses(i.certificate)]

"""Serving the reader with waitress on loopback only (the only module importing waitress).

The server listens on 127.0.0.1 and ::1 at one port, never on another interface (where IPv6 is
off, on 127.0.0.1 alone). It runs in a thread of its own, so the daemon serves it beside its
sync loop, and ``smime-companion reader`` in the foreground; the pages are answered by a small
pool of threads (waitress's), each with its own store connections.
"""

from __future__ import annotations

import logging
import os
import threading
from datetime import datetime
from pathlib import Path
from typing import Any

from waitress.server import create_server

from smime_companion.errors import UsageError
from smime_companion.reader.app import create_app
from smime_companion.reader.context import ReaderContext
from smime_companion.reader.security import (
    SignInTokens,
    remove_server_file,
    write_server_file,
)

log = logging.getLogger(__name__)
THREADS = 4


class ReaderServer:
    """The reader served on ``port`` of the loopback addresses, in a thread.

    :meth:`start` binds (raising :class:`UsageError` when the port is taken) and serves;
    :meth:`stop` stops and closes the store connections. ``url`` is the address to print.
    """

    def __init__(self, context: ReaderContext, port: int) -> None:
        if not 0 < port < 65536:
            raise UsageError(f"the reader's port must be from 1 to 65535, not {port}")
        self.context = context
        self.port = port
        self.app = create_app(context, port)
        self._server: Any = None
        self._stopping = False
        self._thread: threading.Thread | None = None
        # waitress's own notices ("Serving on...", queue depth) are not for the user's terminal.
        logging.getLogger("waitress").setLevel(logging.ERROR)

    @property
    def url(self) -> str:
        """The reader's address (without a sign-in token)."""
        return f"http://127.0.0.1:{self.port}/"

    def _bind(self) -> Any:
        options: dict[str, Any] = {"threads": THREADS, "ident": "", "expose_tracebacks": False}
        last: OSError | None = None
        for listen in (f"127.0.0.1:{self.port} [::1]:{self.port}", f"127.0.0.1:{self.port}"):
            try:
                return create_server(self.app, listen=listen, **options)
            except OSError as exc:  # ::1 missing (IPv6 off), or the port taken
                last = exc
        raise UsageError(
            f"cannot serve the reader on 127.0.0.1:{self.port}: {last.strerror if last else ''} "
            "(is another reader running? choose another [reader] port or --port)"
        )

    def start(self) -> None:
        """Bind and serve in a background thread."""
        self._server = self._bind()
        self._stopping = False
        self._thread = threading.Thread(target=self._serve, name="reader", daemon=True)
        self._thread.start()
        write_server_file(self.context.state_dir, self.port, os.getpid())
        log.info("reader: serving on %s", self.url)

    def _serve(self) -> None:
        server = self._server
        try:
            server.run()
        except (OSError, ValueError):
            # stop() closed the sockets under the loop's select: that is how it ends.
            if not self._stopping:
                raise

    def sign_in_url(self) -> str:
        """A fresh one-time sign-in address (valid two minutes)."""
        return sign_in_url(self.context.state_dir, self.port, self.context.clock())

    def wait(self) -> None:
        """Block until the server thread ends (Ctrl-C raises KeyboardInterrupt here)."""
        while self._thread is not None and self._thread.is_alive():
            self._thread.join(0.5)

    def stop(self) -> None:
        """Stop serving and close the store connections. Idempotent."""
        server, self._server = self._server, None
        self._stopping = True
        if server is not None:
            server.close()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        self.app.extensions["reader"].stores.close()
        remove_server_file(self.context.state_dir, os.getpid())


def sign_in_url(state_dir: Path, port: int, now: datetime) -> str:
    """A fresh one-time sign-in address for the reader on ``port``, valid two minutes from
    ``now``; the token is written to the private ``state_dir`` (the cache directory), so any
    process of the user may issue one for the server, whichever process that is."""
    token = SignInTokens(state_dir).issue(now)
    return f"http://127.0.0.1:{port}/signin?token={token}"

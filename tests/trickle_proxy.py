"""A loopback TCP proxy that makes a real IMAP server slow: once the client has sent a command
line matching ``trigger``, every byte from the server reaches the client ``interval`` seconds
after the one before (each read well within any socket timeout: only a time limit on the whole
answer can end the wait). Plaintext only. Bounded: at most ``max_seconds`` of trickling per
connection, and everything stops when the proxy is closed."""

from __future__ import annotations

import socket
import threading
import time


class TrickleProxy:
    def __init__(
        self,
        upstream: tuple[str, int],
        trigger: bytes,
        interval: float = 0.5,
        max_seconds: float = 120.0,
    ) -> None:
        self.upstream, self.trigger = upstream, trigger
        self.interval, self.max_seconds = interval, max_seconds
        self.trickled = 0
        self._closing = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> TrickleProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._closing.set()
        # close() alone does not wake a thread blocked in accept(), which would keep the port
        # listening for whatever test gets that port number next: shut it down first.
        try:
            self._listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._listener.close()
        self._thread.join(timeout=10)

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self._closing.is_set():
                client.close()
                return
            try:
                server = socket.create_connection(self.upstream, timeout=10)
            except OSError:
                client.close()
                continue
            slow = threading.Event()
            threading.Thread(target=self._up, args=(client, server, slow), daemon=True).start()
            threading.Thread(target=self._down, args=(server, client, slow), daemon=True).start()

    def _up(self, client: socket.socket, server: socket.socket, slow: threading.Event) -> None:
        seen = b""
        try:
            while not self._closing.is_set():
                data = client.recv(65536)
                if not data:
                    break
                seen = (seen + data)[-4096:]
                if self.trigger in seen:
                    slow.set()
                server.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (client, server):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def _down(self, server: socket.socket, client: socket.socket, slow: threading.Event) -> None:
        started: float | None = None
        try:
            while not self._closing.is_set():
                data = server.recv(65536)
                if not data:
                    break
                if not slow.is_set():
                    client.sendall(data)
                    continue
                started = started or time.monotonic()
                for i in range(len(data)):
                    if self._closing.is_set() or time.monotonic() - started > self.max_seconds:
                        return
                    client.sendall(data[i : i + 1])
                    self.trickled += 1
                    time.sleep(self.interval)
        except OSError:
            pass
        finally:
            for sock in (client, server):
                try:
                    sock.close()
                except OSError:
                    pass

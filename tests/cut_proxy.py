"""A loopback TCP proxy that cuts an IMAP connection at a chosen byte of a chosen response.

:class:`CutProxy` sits between the daemon and a plaintext IMAP port and forwards both ways. When
armed with a command pattern, it watches the client's command lines; at the ``nth`` line that
matches, it holds back the server's answer until the command's tagged completion has arrived
whole, asks ``locate`` where in that answer to cut, forwards exactly that many bytes and closes
both sockets (a FIN to each side, as a server or a NAT that gives up would). Waiting for the whole
answer makes the cut exact: the offset is chosen on the real response, not guessed, and is
recorded (:attr:`CutProxy.cuts`) so a test can prove the cut happened where it meant.

:func:`layout` splits a recorded answer into its responses and literals, so ``locate`` functions
can name places such as "inside the second body literal" or "just before the tagged OK".

Plaintext only: through TLS the proxy would see no command lines and no literals.
"""

from __future__ import annotations

import re
import selectors
import socket
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

# Where the cut falls, given the server's whole answer to the marked command (its untagged
# responses, literals and tagged completion): a byte offset in 0..len(answer).
Locate = Callable[[bytes], int]

_LITERAL_HEADER = re.compile(rb"\{(\d+)\}\Z")


@dataclass(frozen=True)
class Literal:
    """One literal of a response: ``header`` is where ``{n}`` starts, ``start``/``end`` delimit
    its ``n`` bytes."""

    header: int
    start: int
    end: int


@dataclass(frozen=True)
class Response:
    """One response of an answer, from its first byte to just after its final CRLF."""

    start: int
    end: int
    literals: tuple[Literal, ...]


@dataclass(frozen=True)
class Layout:
    """An answer split into its untagged responses and the offset of its tagged completion."""

    untagged: tuple[Response, ...]
    tagged: int


def layout(answer: bytes) -> Layout:
    """Split the server's answer to one command into responses, reading literals by their
    announced size (a literal may hold any bytes, CRLFs included). Raises ValueError when the
    answer does not end with a tagged completion."""
    responses: list[Response] = []
    pos = 0
    while pos < len(answer):
        start, literals = pos, []
        while True:
            eol = answer.find(b"\r\n", pos)
            if eol < 0:
                raise ValueError(f"answer ends inside a line at {pos}")
            header = _LITERAL_HEADER.search(answer, pos, eol)
            if header is None:
                pos = eol + 2
                break
            size = int(header.group(1))
            literals.append(Literal(header.start(), eol + 2, eol + 2 + size))
            pos = eol + 2 + size  # the response goes on after the literal
        if not answer.startswith(b"* ", start):
            if pos != len(answer):
                raise ValueError(f"tagged completion at {start} is not the last line")
            return Layout(tuple(responses), start)
        responses.append(Response(start, pos, tuple(literals)))
    raise ValueError("answer has no tagged completion")


@dataclass(frozen=True)
class Cut:
    """One cut made: the command line it answered, the answer's length and where it was cut."""

    command: bytes
    answer_length: int
    offset: int


@dataclass
class _Arming:
    command: re.Pattern[bytes]
    locate: Locate
    nth: int
    reset: bool = False
    seen: int = 0


@dataclass
class _Held:
    """The answer being held back: the marked command's tag, line, and the bytes so far."""

    tag: bytes
    command: bytes
    answer: bytearray = field(default_factory=bytearray)


class CutProxy:
    """Forwards ``127.0.0.1:port`` to ``upstream`` for every connection made to it; cuts once
    per :meth:`arm`. Use as a context manager (``close`` stops it and every connection)."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.cuts: list[Cut] = []
        self.errors: list[str] = []  # what went wrong inside the proxy (a test asserts none)
        self._lock = threading.Lock()
        self._arming: _Arming | None = None
        self._closing = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.port: int = self._listener.getsockname()[1]
        self._threads: list[threading.Thread] = []
        self._accepter = threading.Thread(target=self._accept, name="cut-proxy", daemon=True)
        self._accepter.start()

    def __enter__(self) -> CutProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def arm(self, command: str, locate: Locate, nth: int = 1, *, reset: bool = False) -> None:
        """Cut the answer to the ``nth`` client command line matching the regular expression
        ``command`` (counted over all connections from now) at ``locate(answer)`` bytes; with
        ``reset`` the client's side ends with a TCP reset (RST) instead of a clean close."""
        with self._lock:
            self._arming = _Arming(re.compile(command.encode()), locate, nth, reset)

    def disarm(self) -> None:
        """Forward everything from now on."""
        with self._lock:
            self._arming = None

    def close(self) -> None:
        """Stop accepting, end every connection, wait for the threads."""
        self._closing.set()
        self._accepter.join()
        self._listener.close()
        for thread in self._threads:
            thread.join()

    # -- inside ----------------------------------------------------------------------------------

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream)
            except OSError as exc:  # the server is down: the client sees its connection close
                self.errors.append(f"cannot reach {self.upstream}: {exc}")
                client.close()
                continue
            thread = threading.Thread(
                target=self._pump, args=(client, server), name="cut-proxy-conn", daemon=True
            )
            self._threads.append(thread)
            thread.start()

    def _marked(self, line: bytes) -> bool:
        """True when ``line`` (a whole client command line) is the one to cut the answer of."""
        with self._lock:
            arming = self._arming
            if arming is None or arming.command.search(line) is None:
                return False
            arming.seen += 1
            return arming.seen == arming.nth

    def _pump(self, client: socket.socket, server: socket.socket) -> None:
        selector = selectors.DefaultSelector()
        selector.register(client, selectors.EVENT_READ)
        selector.register(server, selectors.EVENT_READ)
        pending_line = b""  # the client's current, unfinished command line
        held: _Held | None = None
        try:
            while not self._closing.is_set():
                for key, _ in selector.select(timeout=0.1):
                    sock = key.fileobj
                    assert isinstance(sock, socket.socket)
                    data = sock.recv(65536)
                    if not data:
                        return  # either side closed: close the other
                    if sock is client:
                        server.sendall(data)
                        pending_line += data
                        while (eol := pending_line.find(b"\r\n")) >= 0:
                            line, pending_line = pending_line[:eol], pending_line[eol + 2 :]
                            if held is None and self._marked(line):
                                held = _Held(line.split(b" ", 1)[0], line)
                    elif held is None:
                        client.sendall(data)
                    else:
                        held.answer += data
                        if self._complete(held):
                            self._cut(held, client)
                            return
        except OSError:
            return  # a side reset the connection: nothing more to forward
        except Exception as exc:  # a bad locate: reported to the test, never a silent hang
            self.errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            selector.close()
            for sock in (client, server):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()

    @staticmethod
    def _complete(held: _Held) -> bool:
        """True when the held answer ends with its tagged completion line."""
        answer = bytes(held.answer)
        if not answer.endswith(b"\r\n"):
            return False
        previous = answer.rfind(b"\r\n", 0, len(answer) - 2)
        if not answer.startswith(held.tag + b" ", previous + 2 if previous >= 0 else 0):
            return False
        try:  # the tag could end a literal's line by chance: only a whole layout is complete
            layout(answer)
        except ValueError:
            return False
        return True

    def _cut(self, held: _Held, client: socket.socket) -> None:
        answer = bytes(held.answer)
        with self._lock:
            arming, self._arming = self._arming, None  # one cut per arm
        assert arming is not None
        offset = arming.locate(answer)
        if not 0 <= offset <= len(answer):
            raise ValueError(f"cut offset {offset} outside the answer (0..{len(answer)})")
        client.sendall(answer[:offset])
        if arming.reset:
            # Linger on with a zero timeout: close() then sends RST, the way a crashed
            # middlebox or a NAT timeout ends a connection. shutdown() would send FIN first.
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            client.close()
        self.cuts.append(Cut(held.command, len(answer), offset))

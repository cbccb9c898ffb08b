"""A hostile IMAP server for the tests: speaks just enough IMAP4rev1 (plaintext, on loopback) for
a sync to log in, EXAMINE INBOX, UID SEARCH and UID FETCH, and misbehaves on request:

- a body literal larger than the RFC822.SIZE it announced (streamed until the client leaves);
- an answer trickled one byte at a time (a server holding the client);
- an endless flood of untagged responses before a tagged completion that never comes;
- UIDs outside 1..2^32-1 in SEARCH and FETCH answers.

Every loop is bounded (bytes, lines, seconds) and stops when the client goes away or the server
is closed, so no test can leave it running.
"""

from __future__ import annotations

import socket
import socketserver
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

USER, PASSWORD = "alice", "hostile-pw"
# Upper bounds on what one misbehaviour sends, so a client that never stops reading still ends.
MAX_STREAM_BYTES = 2 * 1024**3
MAX_FLOOD_LINES = 5_000_000
MAX_TRICKLE_SECONDS = 120.0


@dataclass
class Message:
    uid: int
    body: bytes
    announced: int | None = None  # RFC822.SIZE (default: the body's length)
    sent: int | None = None  # the literal's size when it lies (padding follows the body)
    internaldate: str = "01-Jan-2000 00:00:00 +0000"  # whatever the server claims


@dataclass
class Behaviour:
    uidvalidity: int = 7
    extra_search_uids: tuple[int, ...] = ()  # UIDs SEARCH names that no message has
    unsolicited_fetch_uids: tuple[int, ...] = ()  # FETCH responses for UIDs nobody asked for
    trickle: str | None = None  # "FETCH-BODY", "SEARCH": that answer a byte per trickle_interval
    trickle_interval: float = 1.0
    flood: str | None = None  # "FETCH-BODY" or "SEARCH": endless untagged lines instead
    uidnext: int | None = None


@dataclass
class Record:
    commands: list[str] = field(default_factory=list)
    bytes_streamed: int = 0
    connections: int = 0


class HostileImap:
    def __init__(self, messages: list[Message], behaviour: Behaviour) -> None:
        self.messages = sorted(messages, key=lambda m: m.uid)
        self.behaviour = behaviour
        self.record = Record()
        self.closing = threading.Event()
        outer = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                outer.record.connections += 1
                try:
                    outer._session(self.connection, self.rfile)
                except (OSError, ValueError):
                    pass  # the client went away (as a guarded client does)

        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self.closing.set()
        self._server.shutdown()
        self._server.server_close()

    # -- one connection ------------------------------------------------------------------------

    def _session(self, sock: socket.socket, rfile) -> None:  # type: ignore[no-untyped-def]
        sock.sendall(b"* OK [CAPABILITY IMAP4rev1] hostile ready\r\n")
        while not self.closing.is_set():
            line = rfile.readline(65536)
            if not line:
                return
            tag, _, rest = line.rstrip(b"\r\n").partition(b" ")
            command = rest.decode("ascii", "replace")
            self.record.commands.append(command)
            word = command.split(" ", 1)[0].upper()
            if word == "UID":
                word = "UID " + command.split(" ", 2)[1].upper()
            done = tag + b" OK done\r\n"
            if word == "CAPABILITY":
                sock.sendall(b"* CAPABILITY IMAP4rev1\r\n" + done)
            elif word == "LOGIN":
                sock.sendall(done if PASSWORD in command else tag + b" NO wrong password\r\n")
            elif word == "LIST":
                sock.sendall(b'* LIST () "/" INBOX\r\n' + done)
            elif word in ("EXAMINE", "SELECT"):
                b = self.behaviour
                uidnext = b.uidnext or (max((m.uid for m in self.messages), default=0) + 1)
                sock.sendall(
                    f"* {len(self.messages)} EXISTS\r\n* 0 RECENT\r\n"
                    f"* OK [UIDVALIDITY {b.uidvalidity}] ok\r\n* OK [UIDNEXT {uidnext}] ok\r\n"
                    "* FLAGS (\\Seen)\r\n".encode()
                    + tag
                    + (
                        b" OK [READ-ONLY] done\r\n"
                        if word == "EXAMINE"
                        else b" OK [READ-WRITE] done\r\n"
                    )
                )
            elif word == "UID SEARCH":
                if self.behaviour.flood == "SEARCH":
                    self._flood(sock)
                    return
                uids = [m.uid for m in self.messages] + list(self.behaviour.extra_search_uids)
                answer = b"* SEARCH " + " ".join(map(str, uids)).encode() + b"\r\n" + done
                if self.behaviour.trickle == "SEARCH":
                    self._trickle(sock, answer)
                    return
                sock.sendall(answer)
            elif word == "UID FETCH":
                if not self._fetch(sock, tag, command):
                    return
            elif word == "NOOP":
                sock.sendall(done)
            elif word == "LOGOUT":
                sock.sendall(b"* BYE bye\r\n" + done)
                return
            else:
                sock.sendall(tag + b" BAD not here\r\n")

    def _fetch(self, sock: socket.socket, tag: bytes, command: str) -> bool:
        """Answer one UID FETCH; False when the connection is finished."""
        _uid, _fetch, uid_set, items = command.split(" ", 3)
        wanted = _uid_set(uid_set)
        body = "BODY.PEEK[]" in items.upper()
        b = self.behaviour
        if body and b.flood == "FETCH-BODY":
            self._flood(sock)
            return False
        answer = bytearray()
        streams: list[Message] = []
        for seq, message in enumerate(self.messages, start=1):
            if message.uid not in wanted:
                continue
            if body and message.sent is not None:
                streams.append(message)
                continue
            answer += self._response(seq, message, body)
        for uid in b.unsolicited_fetch_uids:
            answer += f"* 99 FETCH (UID {uid} FLAGS ())\r\n".encode()
        if body and b.trickle == "FETCH-BODY":
            self._trickle(sock, bytes(answer) + tag + b" OK done\r\n")
            return False
        sock.sendall(bytes(answer))
        for message in streams:
            seq = self.messages.index(message) + 1
            sock.sendall(f"* {seq} FETCH (UID {message.uid} BODY[] {{{message.sent}}}\r\n".encode())
            self._stream(sock, message.body, message.sent or 0)
            sock.sendall(b")\r\n")
        sock.sendall(tag + b" OK done\r\n")
        return True

    def _response(self, seq: int, message: Message, body: bool) -> bytes:
        if body:
            return (
                f"* {seq} FETCH (UID {message.uid} BODY[] {{{len(message.body)}}}\r\n".encode()
                + message.body
                + b")\r\n"
            )
        size = message.announced if message.announced is not None else len(message.body)
        return (
            f"* {seq} FETCH (UID {message.uid} RFC822.SIZE {size} FLAGS () "
            f'INTERNALDATE "{message.internaldate}")\r\n'
        ).encode()

    def _stream(self, sock: socket.socket, start: bytes, size: int) -> None:
        """Send ``size`` bytes: ``start``, then filler, until done or the client leaves."""
        size = min(size, MAX_STREAM_BYTES)
        chunk = b"X" * 65536
        sock.sendall(start[:size])
        sent = len(start[:size])
        while sent < size and not self.closing.is_set():
            piece = chunk[: size - sent]
            sock.sendall(piece)
            sent += len(piece)
            self.record.bytes_streamed = sent

    def _flood(self, sock: socket.socket) -> None:
        line = b"* OK still thinking about it\r\n" * 1000
        for _ in range(MAX_FLOOD_LINES // 1000):
            if self.closing.is_set():
                return
            sock.sendall(line)
            self.record.bytes_streamed += len(line)

    def _trickle(self, sock: socket.socket, answer: bytes) -> None:
        deadline = time.monotonic() + MAX_TRICKLE_SECONDS
        for i in range(len(answer)):
            if self.closing.is_set() or time.monotonic() > deadline:
                return
            sock.sendall(answer[i : i + 1])
            self.record.bytes_streamed += 1
            time.sleep(self.behaviour.trickle_interval)


def _uid_set(text: str) -> set[int]:
    out: set[int] = set()
    for part in text.split(","):
        low, _, high = part.partition(":")
        a = int(low) if low != "*" else 2**32 - 1
        b = int(high) if high and high != "*" else (2**32 - 1 if high == "*" else a)
        if b - a > 1_000_000:
            b = a + 1_000_000
        out.update(range(min(a, b), max(a, b) + 1))
    return out


@contextmanager
def hostile_imap(
    messages: list[Message], behaviour: Behaviour | None = None
) -> Iterator[HostileImap]:
    server = HostileImap(messages, behaviour or Behaviour())
    server.start()
    try:
        yield server
    finally:
        server.close()

"""The FETCH reader: a pure parser of the responses to one tagged ``UID FETCH`` command.

Bodies (and summaries without BODYSTRUCTURE) bypass imaplib's response loop and imapclient's
parser, which cost about 7 s of CPU for 317 MB: :class:`FetchReader` reads the responses from
two callables (``readline`` and ``read(n)``, imaplib's methods on the mailbox's connection),
reads each literal with one ``read(n)`` and parses the item lists itself; untagged responses
other than FETCH are handed back in the form imaplib's ``untagged_responses`` keeps them. A body
literal much larger than its message's RFC822.SIZE is refused unread
(:class:`~smime_companion.errors.OversizedBody`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from smime_companion.errors import ImapError, OversizedBody
from smime_companion.imap.structure import valid_uid
from smime_companion.session import text_of

# A body literal may exceed the message's RFC822.SIZE by this factor plus this slack (servers
# count line ends differently); a larger one is refused unread.
BODY_SIZE_FACTOR = 2
BODY_SIZE_SLACK = 1024 * 1024
# A literal larger than this is refused before anything is allocated for it: read(n) allocates n
# bytes at once, and a hostile or broken server could announce any size.
MAX_LITERAL = 512 * 1024 * 1024
# Nesting deeper than this in one item list is refused (BODYSTRUCTUREs nest a few levels).
MAX_DEPTH = 64

# One token of a FETCH item list, after optional spaces. Groups: 1 "(", 2 ")", 3 a quoted string's
# content, 4 a literal's size (only at the end of a line), 5 an atom or number, where an item name
# may carry a section and a partial range (``BODY[HEADER.FIELDS (TO)]<0>``).
_TOKEN = re.compile(
    rb' *(?:(\()|(\))|"((?:[^"\\]|\\.)*)"|\{(\d+)\}\Z'
    rb'|([^ ()"{}\[\]]+(?:\[[^\]]*\](?:<\d+(?:\.\d+)?>)?)?))'
)
_QUOTED_ESCAPE = re.compile(rb"\\(.)")
_FETCH = re.compile(rb"\* (\d+) FETCH \(")
# imaplib's own patterns for the other untagged responses, so they are stored as it stores them.
_UNTAGGED = re.compile(rb"\* (?P<type>[A-Z-]+)( (?P<data>.*))?", re.ASCII)
_UNTAGGED_STATUS = re.compile(rb"\* (?P<data>\d+) (?P<type>[A-Z-]+)( (?P<data2>.*))?", re.ASCII)
_LITERAL_AT_END = re.compile(rb".*{(?P<size>\d+)}$", re.ASCII)
_RESPONSE_CODE = re.compile(rb"\[(?P<type>[A-Z-]+)( (?P<data>.*))?\]", re.ASCII)


class FetchReader:
    """Reads the responses to one tagged FETCH command from a connection's stream.

    ``readline()`` returns one line with its CRLF (b"" at end of stream) and ``read(n)`` n bytes
    (imaplib's methods of the same names); ``keep(type, data)`` receives every untagged response
    that is not a FETCH, in the form imaplib's ``_append_untagged`` stores it (the data, or a
    ``(data, literal)`` tuple for each literal in it), so EXISTS, EXPUNGE, VANISHED and response
    codes reach whoever reads ``untagged_responses`` later. Raises ImapError (without the
    server's name: the caller adds it) on a response it cannot parse, a closed stream or a BYE.
    """

    def __init__(
        self,
        readline: Callable[[], bytes],
        read: Callable[[int], bytes],
        keep: Callable[[str, Any], None],
        allowance: Callable[[int | None], int] | None = None,
    ) -> None:
        self._readline = readline
        self._read = read
        self._keep = keep
        # The largest literal accepted inside a FETCH for a UID (None: the UID is not named
        # yet); None: MAX_LITERAL for every literal.
        self._allowance = allowance
        self._messages: dict[int, dict[bytes, Any]] = {}

    def read_until(self, tag: bytes) -> tuple[str, bytes, dict[int, dict[bytes, Any]]]:
        """Read up to the tagged completion of ``tag``: (``OK``/``NO``/``BAD``, its text, the
        items of each FETCH response by UID). Items are keyed by upper-case name (``BODY[]``,
        ``FLAGS``); values are int (numbers), bytes (atoms, quoted strings, literals), None (NIL)
        or tuples (lists). Responses without a UID (unsolicited, for another message) are
        dropped; two for one UID are merged."""
        messages = self._messages = {}
        prefix = tag + b" "
        while True:
            line = self._line()
            fetch = _FETCH.match(line)
            if fetch is not None:
                items = self._item_list(line, fetch.end())
                uid = items.get(b"UID")
                if valid_uid(uid):  # a UID outside 1..2^32-1 names no message
                    messages.setdefault(uid, {}).update(items)
            elif line.startswith(b"* "):
                self._untagged(line)
            elif line.startswith(prefix):
                status, _, text = line[len(prefix) :].partition(b" ")
                if status not in (b"OK", b"NO", b"BAD"):
                    raise _unparsable(line)
                self._response_code(text)
                return status.decode("ascii"), text, messages
            else:  # a continuation or another command's tag: not a FETCH exchange
                raise _unparsable(line)

    def _line(self) -> bytes:
        line = self._readline()
        if not line:
            raise ImapError("connection closed by the server during FETCH")
        if not line.endswith(b"\n"):
            # readline stops short of a line end only where the stream ended (imaplib raises
            # for an overlong line): the connection died mid-line; the server said nothing wrong.
            raise ImapError("connection closed by the server during FETCH, in the middle of a line")
        if not line.endswith(b"\r\n"):
            raise _unparsable(line)
        return line[:-2]

    def _literal(self, size: int) -> bytes:
        if size > MAX_LITERAL:
            raise ImapError(f"server announced a literal of {size} bytes (limit {MAX_LITERAL})")
        data = self._read(size)
        if len(data) != size:
            raise ImapError("connection closed by the server inside a literal")
        return data

    def _item_list(self, line: bytes, pos: int) -> dict[bytes, Any]:
        """The ``name value`` pairs of the list opened just before ``pos``, read on through
        literals and the lines after them."""
        stack: list[list[Any]] = [[]]
        while True:
            token = _TOKEN.match(line, pos)
            if token is None:
                raise _unparsable(line)
            pos = token.end()
            kind = token.lastindex
            if kind == 5:
                atom = token.group(5)
                if atom.isdigit():
                    stack[-1].append(int(atom))
                else:
                    stack[-1].append(None if atom.upper() == b"NIL" else atom)
            elif kind == 4:
                size = int(token.group(4))
                if self._allowance is not None:
                    self._check_body_size(size, stack[0])
                stack[-1].append(self._literal(size))
                line, pos = self._line(), 0  # the response goes on after the literal
            elif kind == 3:
                quoted = token.group(3)
                stack[-1].append(_QUOTED_ESCAPE.sub(rb"\1", quoted) if b"\\" in quoted else quoted)
            elif kind == 1:
                if len(stack) >= MAX_DEPTH:
                    raise _unparsable(line)
                stack.append([])
            else:  # ")"
                done = stack.pop()
                if stack:
                    stack[-1].append(tuple(done))
                    continue
                if line[pos:].strip(b" ") or len(done) % 2:
                    raise _unparsable(line)
                names = done[0::2]
                if not all(isinstance(name, bytes) for name in names):
                    raise _unparsable(line)
                return {name.upper(): value for name, value in zip(names, done[1::2], strict=True)}

    def _check_body_size(self, size: int, items: list[Any]) -> None:
        """Raise :class:`OversizedBody` when a literal of ``size`` bytes, in a FETCH whose
        top-level items read so far are ``items``, is larger than its message's allowance."""
        assert self._allowance is not None
        uid = next((v for k, v in zip(items[0::2], items[1::2], strict=False) if k == b"UID"), None)
        uid = uid if valid_uid(uid) else None
        allowed = self._allowance(uid)
        if size > allowed:
            which = f"UID {uid}" if uid is not None else "a message not named yet"
            raise OversizedBody(
                f"server sent a literal of {size} bytes for {which}, more than the {allowed} "
                "its announced size allows; refused unread",
                uid,
                self._messages,
            )

    def _untagged(self, line: bytes) -> None:
        """Store a non-FETCH untagged response as imaplib's ``_get_response`` would."""
        data2 = None
        match = _UNTAGGED.match(line)
        if match is None:
            match = _UNTAGGED_STATUS.match(line)
            if match is None:
                raise _unparsable(line)
            data2 = match.group("data2")
        kind = match.group("type").decode("ascii")
        data = match.group("data") or b""
        if data2:
            data = data + b" " + data2
        while (literal := _LITERAL_AT_END.match(data)) is not None:
            self._keep(kind, (data, self._literal(int(literal.group("size")))))
            data = self._line()
        self._keep(kind, data)
        if kind in ("OK", "NO", "BAD"):
            self._response_code(data)
        if kind == "BYE":
            raise ImapError(f"server closed the connection: {text_of(data)[:80]}")

    def _response_code(self, text: bytes) -> None:
        """Keep ``[CODE data]`` of an OK/NO/BAD as imaplib does (``untagged_responses[CODE]``)."""
        if (code := _RESPONSE_CODE.match(text)) is not None:
            self._keep(code.group("type").decode("ascii"), code.group("data"))


def allowances(uids: Sequence[int], sizes: Mapping[int, int]) -> Callable[[int | None], int]:
    """The literal allowance of each asked-for UID (a UID not asked for, or not named yet: the
    largest of the batch)."""
    largest = max((body_allowance(sizes.get(uid)) for uid in uids), default=BODY_SIZE_SLACK)
    wanted = set(uids)

    def allowance(uid: int | None) -> int:
        if uid is None or uid not in wanted:
            return largest
        return body_allowance(sizes.get(uid))

    return allowance


def _unparsable(line: bytes) -> ImapError:
    # At most 80 bytes: a line after a wrong literal size may be message text.
    return ImapError(f"unparsable FETCH response {line[:80]!r}")


def body_allowance(size: int | None) -> int:
    """The largest literal accepted for a message whose RFC822.SIZE is ``size`` (None:
    unknown): ``BODY_SIZE_FACTOR`` times it plus ``BODY_SIZE_SLACK``, at most MAX_LITERAL."""
    if size is None:
        return MAX_LITERAL
    return min(BODY_SIZE_FACTOR * size + BODY_SIZE_SLACK, MAX_LITERAL)

"""The FETCH response reader of the IMAP adapter on hand-written server output: items in any
order, unsolicited items and responses, quoted strings, NIL, literals whose content looks like
protocol, the tagged completion, and refusal of what it cannot follow."""

from __future__ import annotations

import io
from typing import Any

import pytest

from smime_companion.errors import ImapError
from smime_companion.imap.responses import MAX_LITERAL, FetchReader
from smime_companion.imap.structure import sequence_set

TAG = b"ABCD7"


class Wire:
    """Server output in memory, read the way imaplib reads a socket, with what the reader kept."""

    def __init__(self, *parts: bytes) -> None:
        self.stream = io.BytesIO(b"".join(parts))
        self.kept: list[tuple[str, Any]] = []

    def read_until(self, tag: bytes = TAG) -> tuple[str, bytes, dict[int, dict[bytes, Any]]]:
        reader = FetchReader(self.stream.readline, self.stream.read, self._keep)
        return reader.read_until(tag)

    def _keep(self, kind: str, data: Any) -> None:
        self.kept.append((kind, data))

    def rest(self) -> bytes:
        return self.stream.read()


def literal(data: bytes) -> bytes:
    return b"{%d}\r\n" % len(data) + data


def test_uid_may_come_after_the_body_and_each_body_is_its_literal_exactly() -> None:
    first = b"Subject: a\r\n\r\n) {5}\r\n* 9 EXPUNGE\r\nABCD7 OK fake\r\n"
    second = b"bare\nLF and 8-bit \xe9\xff\x80 bytes\n"
    wire = Wire(
        b"* 1 FETCH (BODY[] " + literal(first) + b" UID 41)\r\n",
        b"* 2 FETCH (UID 42 BODY[] " + literal(second) + b")\r\n",
        TAG + b" OK Fetch completed.\r\n",
    )
    status, text, messages = wire.read_until()
    assert (status, text) == ("OK", b"Fetch completed.")
    assert messages[41][b"BODY[]"] == first
    assert messages[42][b"BODY[]"] == second
    assert messages.keys() == {41, 42}


def test_unsolicited_flags_and_modseq_are_parsed_beside_the_asked_items() -> None:
    wire = Wire(
        b"* 3 FETCH (FLAGS (\\Seen $Junk) UID 7 MODSEQ (12345) BODY[] {0}\r\n)\r\n",
        TAG + b" OK done\r\n",
    )
    _, _, messages = wire.read_until()
    assert messages[7] == {
        b"FLAGS": (b"\\Seen", b"$Junk"),
        b"UID": 7,
        b"MODSEQ": (12345,),
        b"BODY[]": b"",
    }


def test_nil_quoted_strings_with_escapes_and_nested_lists_become_values() -> None:
    wire = Wire(
        b'* 4 FETCH (UID 8 INTERNALDATE "25-Nov-2026 09:00:00 +0000" '
        b'X-NAME "say \\"hi\\" \\\\ there" BODY[] NIL '
        b'BODY[HEADER.FIELDS (SUBJECT TO)]<0> ((NIL "a") ()) RFC822.SIZE 1234)\r\n',
        TAG + b" OK done\r\n",
    )
    _, _, messages = wire.read_until()
    assert messages[8] == {
        b"UID": 8,
        b"INTERNALDATE": b"25-Nov-2026 09:00:00 +0000",
        b"X-NAME": b'say "hi" \\ there',
        b"BODY[]": None,
        b"BODY[HEADER.FIELDS (SUBJECT TO)]<0>": ((None, b"a"), ()),
        b"RFC822.SIZE": 1234,
    }


def test_other_untagged_responses_are_kept_as_imaplib_keeps_them() -> None:
    wire = Wire(
        b"* 12 EXPUNGE\r\n",
        b"* 5 FETCH (UID 50 BODY[] {2}\r\nhi)\r\n",
        b"* VANISHED 3:4,9\r\n",
        b"* 3 EXISTS\r\n",
        b"* OK [HIGHESTMODSEQ 99] Highest\r\n",
        b"* 6 FETCH (UID 60 BODY[] {3}\r\nyou)\r\n",
        TAG + b" OK [EXPUNGEISSUED] Some messages were also expunged.\r\n",
    )
    status, _, messages = wire.read_until()
    assert status == "OK"
    assert {uid: m[b"BODY[]"] for uid, m in messages.items()} == {50: b"hi", 60: b"you"}
    assert wire.kept == [
        ("EXPUNGE", b"12"),
        ("VANISHED", b"3:4,9"),
        ("EXISTS", b"3"),
        ("OK", b"[HIGHESTMODSEQ 99] Highest"),
        ("HIGHESTMODSEQ", b"99"),
        ("EXPUNGEISSUED", None),
    ]


def test_a_fetch_without_uid_is_dropped_and_two_for_one_uid_are_merged() -> None:
    wire = Wire(
        b"* 1 FETCH (FLAGS (\\Deleted))\r\n",
        b"* 2 FETCH (UID 20 FLAGS (\\Seen))\r\n",
        b"* 2 FETCH (UID 20 BODY[] {1}\r\nx)\r\n",
        TAG + b" OK done\r\n",
    )
    _, _, messages = wire.read_until()
    assert messages == {20: {b"UID": 20, b"FLAGS": (b"\\Seen",), b"BODY[]": b"x"}}


def test_no_and_bad_completions_are_returned_with_their_text() -> None:
    wire = Wire(
        b"* 1 FETCH (UID 3 BODY[] {1}\r\nx)\r\n",
        TAG + b" NO Some messages could not be FETCHed\r\n",
        b"* 2 EXISTS\r\n",
    )
    status, text, messages = wire.read_until()
    assert (status, text) == ("NO", b"Some messages could not be FETCHed")
    assert 3 in messages
    assert wire.rest() == b"* 2 EXISTS\r\n"  # nothing read past the completion
    assert Wire(TAG + b" BAD No mailbox selected\r\n").read_until()[0] == "BAD"


def test_a_non_fetch_untagged_response_with_a_literal_is_kept_with_it() -> None:
    wire = Wire(b'* LIST () "/" {3}\r\nodd\r\n', TAG + b" OK done\r\n")
    wire.read_until()
    assert wire.kept == [("LIST", (b'() "/" {3}', b"odd")), ("LIST", b"")]


@pytest.mark.parametrize(
    "line",
    [
        b"* 1 FETCH (UID 3 BODY[] {2}\r\nab\r\n",  # the list is never closed
        b"* 1 FETCH (UID 3 BODY[])\r\n",  # a name without a value
        b"* 1 FETCH (UID 3) trailing\r\n",
        b"* 1 FETCH (UID {5} 3)\r\n",  # a literal that does not end its line
        b'* 1 FETCH (UID "3)\r\n',
        b"+ go ahead\r\n",
        b"OTHER1 OK not ours\r\n",
        TAG + b" MAYBE done\r\n",
        b"* 1 FETCH (UID 3)\n",  # not CRLF
    ],
)
def test_a_response_it_cannot_follow_is_an_error_quoting_at_most_80_bytes(line: bytes) -> None:
    with pytest.raises(ImapError, match="unparsable FETCH response") as info:
        Wire(line, TAG + b" OK done\r\n").read_until()
    assert len(str(info.value)) < 130


def test_the_error_quotes_only_the_start_of_a_long_line() -> None:
    line = b"* 1 FETCH (UID 3 X " + b"secret words " * 50 + b"\r\n"
    with pytest.raises(ImapError) as info:
        Wire(line).read_until()
    assert str(info.value).count("secret words") < 7


def test_end_of_stream_inside_a_literal_or_before_completion_is_an_error() -> None:
    with pytest.raises(ImapError, match="inside a literal"):
        Wire(b"* 1 FETCH (UID 3 BODY[] {10}\r\nshort").read_until()
    with pytest.raises(ImapError, match="closed by the server during FETCH"):
        Wire(b"* 1 FETCH (UID 3 BODY[] {1}\r\nx)\r\n").read_until()


def test_an_announced_literal_past_the_limit_is_refused_before_reading_it() -> None:
    reads: list[int] = []

    def read(size: int) -> bytes:
        reads.append(size)
        return b""

    stream = io.BytesIO(b"* 1 FETCH (UID 3 BODY[] {%d}\r\n" % (MAX_LITERAL + 1))
    reader = FetchReader(stream.readline, read, lambda *a: None)
    with pytest.raises(ImapError, match="literal of"):
        reader.read_until(TAG)
    assert reads == []


def test_bye_ends_the_exchange_with_an_error_and_is_kept() -> None:
    wire = Wire(b"* BYE Server shutting down.\r\n")
    with pytest.raises(ImapError, match="server closed the connection: Server shutting down"):
        wire.read_until()
    assert wire.kept == [("BYE", b"Server shutting down.")]


def test_deep_nesting_is_refused_rather_than_recursed_into() -> None:
    line = b"* 1 FETCH (UID 3 X " + b"(" * 1000 + b")" * 1000 + b")\r\n"
    with pytest.raises(ImapError, match="unparsable"):
        Wire(line).read_until()


def test_sequence_set_writes_runs_as_ranges() -> None:
    assert sequence_set([7, 1, 2, 3, 3, 9, 10]) == b"1:3,7,9:10"
    assert sequence_set([5]) == b"5"
    assert sequence_set([]) == b""

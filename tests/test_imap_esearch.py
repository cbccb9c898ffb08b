"""ESEARCH answers (RFC 4731) read into compact UID arrays, bounded against a hostile server."""

from __future__ import annotations

import pytest

from smime_companion.errors import ImapError
from smime_companion.imap.structure import esearch_all


def test_an_esearch_answer_becomes_the_ascending_uids_it_names() -> None:
    answer = b'(TAG "A5") UID ALL 7,1:3,10:11'
    assert list(esearch_all(answer, 100)) == [1, 2, 3, 7, 10, 11]


def test_an_answer_without_all_means_nothing_matched() -> None:
    assert list(esearch_all(b'(TAG "A5") UID', 100)) == []


def test_overlapping_ranges_name_each_uid_once() -> None:
    assert list(esearch_all(b"UID ALL 1:5,3:7,6", 100)) == [1, 2, 3, 4, 5, 6, 7]


def test_a_million_contiguous_uids_cost_four_bytes_each() -> None:
    uids = esearch_all(b"UID ALL 1:1000000", 1_000_000)
    assert len(uids) == 1_000_000 and uids.itemsize == 4 and uids[-1] == 1_000_000


@pytest.mark.parametrize(
    "answer,words",
    [
        (b"UID ALL 1:x", "malformed"),
        (b"UID ALL 0:5", "outside"),
        (b"UID ALL 1:4294967296", "outside"),
        (b"UID ALL 1:4294967295", "more UIDs than the folder holds"),
    ],
)
def test_a_hostile_answer_is_refused_before_anything_is_allocated(
    answer: bytes, words: str
) -> None:
    with pytest.raises(ImapError, match=words):
        esearch_all(answer, 1000)

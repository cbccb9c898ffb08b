"""An HTML body Apple Mail splits around a picture placed in its text (multipart/alternative of
the plain text and a multipart/mixed of HTML, picture, HTML) is one body on the message page:
its pieces framed in order with the picture between them, one "plain text" switch, and in the
text view (and under CBC, where HTML is never rendered) the plain form once."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest

from smime_companion.testing.pki import TestPki
from tests.reader_world import World, encrypted, make_world, message
from tests.test_text import APPLE_SPLIT


@pytest.fixture()
def world(tmp_path: Path, pki: TestPki, now: dt.datetime) -> Iterator[World]:
    mail = [
        message("alice@example.org", "Hotel", now, encrypted(pki, APPLE_SPLIT), "gcm"),
        message("alice@example.org", "Hotel", now, encrypted(pki, APPLE_SPLIT, "-aes256"), "cbc"),
    ]
    yield from make_world(tmp_path, pki, now, mail)


def _get(world: World, path: str) -> str:
    cookie, _ = world.session()
    status, _, body = world.request("GET", path, {"Cookie": cookie})
    assert status == 200
    return body.decode()


def test_the_pieces_are_framed_in_order_under_one_switch(world: World) -> None:
    page = _get(world, "/message/1")
    assert page.index("/message/1/html/2") < page.index("/message/1/html/4")
    assert page.count("Show as plain text") == 1
    assert "Wish you were here" not in page  # the text is in the frames, not beside them
    assert "Wish you were here" in _get(world, "/message/1/html/4")


def test_the_text_view_shows_the_plain_form_once(world: World) -> None:
    page = _get(world, "/message/1?view=text")
    assert page.count("view from the hotel") == 1 and page.count("Wish you were here") == 1
    assert page.count("Show as HTML") == 1


def test_under_cbc_the_plain_form_is_shown_once(world: World) -> None:
    page = _get(world, "/message/2")
    assert "/message/2/html/" not in page
    assert page.count("view from the hotel") == 1 and page.count("Wish you were here") == 1


def test_a_reply_quotes_the_text_once(world: World) -> None:
    page = _get(world, "/compose?reply=1")
    assert page.count("&gt; Wish you were here") == 1


def test_the_picture_stands_between_the_pieces_as_the_sender_placed_it(world: World) -> None:
    page = _get(world, "/message/1")
    between = page[page.index("/message/1/html/2") : page.index("/message/1/html/4")]
    assert "/message/1/picture/3" in between
    assert page.count("/message/1/picture/3") == 1  # not again under the text


def test_each_picture_goes_between_the_pieces_it_stands_between() -> None:
    from smime_companion.reader.message_view import Body, _pictures_in_place
    from smime_companion.store.cache import StoredAttachment

    def picture(part: int) -> StoredAttachment:
        return StoredAttachment(part, f"{part}.png", "image/png", 10, "", None)

    bodies = [
        Body(2, "html"),
        Body(5, "html", continued=True),
        Body(6, "html", continued=True),
        Body(8, "text"),  # another body: a picture before it is no piece's
    ]
    shown = [picture(n) for n in (1, 3, 4, 7, 9)]
    placed, under_text = _pictures_in_place(bodies, shown)
    assert [[p.part for p in b.pictures] for b in placed] == [[], [3, 4], [], []]
    assert [p.part for p in under_text] == [1, 7, 9]

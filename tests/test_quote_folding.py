"""reader.quote_folding: a plain text body's quotes set apart by depth, and the message a reply
answers folded away when it ends the text, as webmail shows a reply."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest

from smime_companion.reader.html_mail import clean_html
from smime_companion.reader.quote_folding import (
    FOLDED_HTML_START,
    FoldedText,
    TextBlock,
    fold_html_quote,
    fold_quotes,
)
from smime_companion.testing.pki import TestPki
from tests.reader_world import World, encrypted, make_world, message, text_entity

B = TextBlock


def test_a_reply_above_the_message_it_answers_folds_that_message_and_its_introduction() -> None:
    text = (
        "Sounds good, see you then.\n\nBob\n\n"
        "On Mon, 7 Dec 2026 at 10:00, Alice <alice@example.org> wrote:\n"
        "> Lunch at noon?\n>\n> > Are you free this week?\n> Alice\n"
    )
    assert fold_quotes(text) == FoldedText(
        [B(0, "Sounds good, see you then.\n\nBob")],
        [
            B(0, "On Mon, 7 Dec 2026 at 10:00, Alice <alice@example.org> wrote:"),
            B(1, "Lunch at noon?"),
            B(2, "Are you free this week?"),
            B(1, "Alice"),
        ],
    )


def test_an_introduction_gmail_wrapped_over_two_lines_is_folded_whole() -> None:
    introduction = "On Mon, Dec 7, 2026 at 10:00 AM Alice Example <alice@example.org>\nwrote:"
    text = f"Yes!\n\n{introduction}\n\n> Lunch?\n"
    assert fold_quotes(text) == FoldedText(
        [B(0, "Yes!")],
        [B(0, introduction), B(1, "Lunch?")],
    )  # fmt: skip
    # A short line of the reply's own before the quote does not take the line above with it.
    folded = fold_quotes("Hello,\n\nMy answer is yes.\nSee below:\n> Lunch?\n")
    assert folded.shown == [B(0, "Hello,\n\nMy answer is yes.")]


@pytest.mark.parametrize(
    "separator",
    ["-----Original Message-----", "-----Ursprüngliche Nachricht-----", "_" * 32],
)
def test_outlooks_plain_text_reply_folds_from_its_separator(separator: str) -> None:
    text = f"Approved.\n\n{separator}\nFrom: Alice\nSent: Monday\nSubject: Budget\n\nOld text\n"
    folded = fold_quotes(text)
    assert folded.shown == [B(0, "Approved.")]
    assert folded.folded[0].text.startswith(separator + "\nFrom: Alice")


def test_answers_between_quotes_are_shown_with_their_quotes() -> None:
    text = "> Lunch?\nYes.\n\n>> Where?\n> The noodle bar?\nFine.\n"
    assert fold_quotes(text) == FoldedText(
        [B(1, "Lunch?"), B(0, "Yes."), B(2, "Where?"), B(1, "The noodle bar?"), B(0, "Fine.")]
    )


@pytest.mark.parametrize(
    "text",
    [
        "> A message that is all quote\n> is shown, not folded.\n",
        "\n\nOn Monday Alice wrote:\n> only the quote\n",  # nothing of its own before it
        "Just text.\nNo quote at all:\n",
        "A separator without a field after it\n-----Original Message-----\nplain prose\n",
    ],
)
def test_text_with_nothing_of_its_own_before_a_quote_folds_nothing(text: str) -> None:
    assert fold_quotes(text).folded == []


def test_deep_quotes_are_drawn_at_the_deepest_shown_depth() -> None:
    assert fold_quotes(">>>>>>>> deep\n") == FoldedText([B(4, "deep")])


def test_hostile_lines_cost_linear_time() -> None:
    # One pattern a line, anchored at its start: a megabyte of marks, dashes or underscores,
    # as lines or as one line, is read in one pass (the test's own limit is the time out).
    for text in ["> " * 500_000, "-" * 1_000_000, "---a" * 250_000, ("-----x-----\n" * 80_000)]:
        folded = fold_quotes(text + "\nend")
        assert folded.shown or folded.folded


# On the message page (a served reader, tests.reader_world).

REPLY = "Sounds good, see you then.\n\nOn Monday, Alice wrote:\n> Lunch at noon?\n> > Free?\n"


@pytest.fixture()
def world(tmp_path: Path, pki: TestPki, now: dt.datetime) -> Iterator[World]:
    mail = [message("alice@example.org", "Re: Lunch", now, encrypted(pki, text_entity(REPLY)), "r")]
    yield from make_world(tmp_path, pki, now, mail)


def test_the_page_shows_the_reply_and_folds_the_message_it_answers(world: World) -> None:
    cookie, _ = world.session()
    status, _, body = world.request("GET", "/message/1", {"Cookie": cookie})
    page = body.decode()
    assert status == 200
    shown, _, folded = page.partition('<details class="quoted"><summary>')
    assert folded.startswith('<span class="closed">Show quoted text</span>')
    assert "Sounds good, see you then." in shown and "Lunch at noon?" not in shown
    assert "On Monday, Alice wrote:" in folded
    assert '<pre class="body quote depth-1">Lunch at noon?</pre>' in folded
    assert '<pre class="body quote depth-2">Free?</pre>' in folded
    assert "&gt; Lunch" not in page  # the quote marks are drawn as bars


# HTML replies, through the sanitiser (reader.html_mail keeps the marks of a quote and no other
# class or id): the reply's own text stays in view, the message it answers is folded.

GMAIL = (
    '<div dir="ltr">Sounds good.<div><br></div></div><br>'
    '<div class="gmail_quote gmail_quote_container"><div dir="ltr" class="gmail_attr">'
    "On Mon, 7 Dec 2026 at 10:00, Alice &lt;a@x&gt; wrote:<br></div>"
    '<blockquote class="gmail_quote" style="margin:0 0 0 .8ex;border-left:1px #ccc solid">'
    '<div dir="ltr">Lunch?</div></blockquote></div>'
)
THUNDERBIRD = (
    '<html><body><p>Sounds good.</p><div class="moz-cite-prefix">On 07.12.26 10:00, Alice '
    'wrote:<br></div><blockquote type="cite" cite="mid:x@y"><p>Lunch?</p></blockquote><br>'
    "</body></html>"
)
APPLE_MAIL = (
    '<html><body style="word-wrap: break-word;">Sounds good.<div><br></div><div><br>'
    '<blockquote type="cite"><div>On 7 Dec 2026, at 10:00, Alice wrote:</div>'
    '<br class="Apple-interchange-newline"><div>Lunch?</div></blockquote></div></body></html>'
)
OUTLOOK = (
    '<div class=WordSection1><p class=MsoNormal>Sounds good.<o:p></o:p></p><div><div style="'
    'border:none;border-top:solid #E1E1E1 1.0pt;padding:3.0pt 0cm 0cm 0cm"><p class=MsoNormal>'
    "<b>From:</b> Alice<br><b>Sent:</b> Monday</p></div></div><p class=MsoNormal>Lunch?</p></div>"
)
OUTLOOK_WEB = (
    '<div>Sounds good.</div><hr style="display:inline-block;width:98%" tabindex="-1">'
    '<div id="divRplyFwdMsg" dir="ltr"><b>From:</b> Alice</div><div>Lunch?</div>'
)


@pytest.mark.parametrize(
    "html",
    [GMAIL, THUNDERBIRD, APPLE_MAIL, OUTLOOK, OUTLOOK_WEB],
    ids=["gmail", "thunderbird", "apple-mail", "outlook", "outlook-web"],
)
def test_an_html_reply_folds_the_message_it_answers(html: str) -> None:
    cleaned = clean_html(html, {}).html
    shown, _, folded = cleaned.partition(FOLDED_HTML_START)
    assert "Sounds good." in shown and "Lunch?" not in shown
    assert "Lunch?" in folded.partition("</details>")[0]


@pytest.mark.parametrize(
    "html",
    [
        # answers written between quotes
        '<p>Hi</p><div class="moz-cite-prefix">On X wrote:</div><blockquote type="cite">q1'
        '</blockquote><p>answer</p><blockquote type="cite">q2</blockquote>',
        '<div><br><blockquote type="cite">q</blockquote>and my answer after it</div>',
        # nothing of the reply's own before the quote: a forward, a quote alone
        '<div class="gmail_quote">---------- Forwarded message ---------<br>Text</div>',
        # a mark only as text, in an attribute value or in a comment
        "<p>Hi</p><p>&lt;div class=\"gmail_quote\"&gt;</p><p>more</p>",
        '<p title=\'<div class="gmail_quote">\'>Hi</p><p>more</p>',
        '<p>Hi</p><!-- <div class="gmail_quote"> --><p>more</p>',
        # another class or id is no mark
        '<p>Hi</p><div class="quote">q</div>',
        '<p>Hi</p><div id="quote">q</div>',
    ],
    ids=["interleaved", "answer-after", "forward", "as-text", "in-attribute", "in-comment",
         "other-class", "other-id"],
)  # fmt: skip
def test_html_that_ends_in_no_answered_message_is_not_folded(html: str) -> None:
    assert FOLDED_HTML_START not in clean_html(html, {}).html


def test_the_sanitiser_keeps_only_the_marks_of_a_quote() -> None:
    cleaned = clean_html(
        '<div class="gmail_quote evil" id="x">a</div><div id="divRplyFwdMsg">b</div>'
        '<blockquote type="evil">c</blockquote>',
        {},
    ).html
    assert 'class="gmail_quote"' in cleaned and "evil" not in cleaned and 'id="x"' not in cleaned
    assert 'id="divRplyFwdMsg"' in cleaned and "type=" not in cleaned


def test_folding_html_costs_one_pass() -> None:
    # Many marks, deeply nested and side by side: each element is looked at once.
    nested = "<p>Hi</p>" + '<div class="gmail_quote">q' * 1_900 + "</div>" * 1_900
    flat = "<p>Hi</p>" + '<blockquote type="cite">q</blockquote><p>a</p>' * 50_000
    assert FOLDED_HTML_START in fold_html_quote(nested)
    assert FOLDED_HTML_START not in fold_html_quote(flat)


def test_a_reply_whose_plain_form_folds_gets_a_frame_for_its_own_lines() -> None:
    from smime_companion.core.text import Part, part_text
    from smime_companion.reader.message_view import _frame_height

    html = Part(2, "text/html", "", False, ("<p>Sounds good.</p>" + "<p>old</p>" * 60).encode())
    quoted = "".join(f"> old line {n}\n" for n in range(60))
    plain = Part(1, "text/plain", "", False, f"Sounds good.\n\nAlice wrote:\n{quoted}".encode())
    assert _frame_height(html) == "tall"
    assert _frame_height(html, fold_quotes(part_text(plain))) == "brief"
    # Without a plain form, the HTML as the frame folds it: a quote a client marked as the
    # answered message folds, another quote does not.
    quoting = b"<p>Yes.</p><blockquote>" + b"<p>old</p>" * 60
    assert _frame_height(Part(2, "text/html", "", False, quoting)) == "tall"
    cited = quoting.replace(b"<blockquote>", b'<blockquote type="cite">')
    assert _frame_height(Part(2, "text/html", "", False, cited)) == "brief"

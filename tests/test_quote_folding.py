"""reader.quote_folding: a plain text body's quotes set apart by depth, and the message a reply
answers folded away when it ends the text, as webmail shows a reply."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest

from smime_companion.reader.quote_folding import FoldedText, TextBlock, fold_quotes
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

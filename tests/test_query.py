"""The search language, form by form, against a cache of openssl-made messages; and malformed
queries, each one line saying where."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from smime_companion.errors import UsageError
from smime_companion.store import Cache
from smime_companion.testing.pki import TestPki
from tests.test_cache import KEY, mail, opener, store

# Relative dates are anchored here; the messages' Date headers are set around it.
# The clock relative date terms (`date:7d..`) are read against, fixed so that they meet the
# fixed Date fields below. Signatures are judged at the session's `now`, which the PKI was made
# around: never at a calendar date.
NOW = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)

PDF_PART = (
    '--b0\r\nContent-Type: application/pdf; name="contract.pdf"\r\n'
    'Content-Disposition: attachment; filename="contract.pdf"\r\n'
    "Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n"
)


@pytest.fixture(scope="module")
def corpus(pki: TestPki, tmp_path_factory: pytest.TempPathFactory, pki_now: dt.datetime):
    """A cache of seven messages, named by what they are; yields (cache, name -> id)."""
    specs = {
        "plain": dict(kind="plain", subject="Quarterly numbers", body="The zebra budget.\r\n",
                      date="Thu, 15 Jan 2026 10:00:00 +0000"),
        "signed": dict(kind="signed", subject="Signed contract", extra_parts=PDF_PART,
                       body="The lemur agreement is final.",
                       date="Tue, 10 Feb 2026 10:00:00 +0000", folder="Archive/2026"),
        "encrypted": dict(kind="encrypted", sender="carol", cc="frank", subject="Secret plans",
                          body="Giraffe launch next week.\r\n",
                          date="Fri, 20 Mar 2026 10:00:00 +0000"),
        "both": dict(kind="signed+encrypted", subject="Crossing", body="A zebra crossing.\r\n",
                     date="Fri, 20 Nov 2026 10:00:00 +0000"),
        "untrusted": dict(kind="signed", sender="rogue", subject="Trust me",
                          body="Wombat offer.\r\n", date="Wed, 31 Dec 2025 23:00:00 +0000"),
        "nokey": dict(kind="encrypted", to="carol", subject="Not for Bob",
                      body="Capybara notes.\r\n", date="Mon, 02 Mar 2026 10:00:00 +0000"),
        "html": dict(kind="plain", subject="Newsletter", content_type="text/html",
                     body="<html><head><style>p {color: red}</style></head><body>"
                          "<p>Okapi &amp; fr&eacute;res</p><script>hiddenword()</script>"
                          "</body></html>",
                     date="Sat, 01 Aug 2026 10:00:00 +0000"),
    }  # fmt: skip
    ids: dict[str, int] = {}
    with Cache.open(tmp_path_factory.mktemp("query"), KEY) as cache:
        for uid, (name, spec) in enumerate(specs.items(), start=1):
            folder = str(spec.pop("folder", "INBOX"))
            raw = mail(pki, message_id=f"<{name}@example.org>", **spec)  # type: ignore[arg-type]
            ids[name] = store(cache, raw, opener(pki), pki_now, uid=uid, folder=folder)
        yield cache, ids


def found(corpus, query: str) -> set[str]:
    cache, ids = corpus
    names = {v: k for k, v in ids.items()}
    return {names[m.id] for m in cache.search(query, now=NOW)}


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("zebra", {"plain", "both"}),
        ("ZEBRA", {"plain", "both"}),
        ("zeb*", {"plain", "both"}),
        ("zebra budget", {"plain"}),
        ('"zebra budget"', {"plain"}),
        ('"budget zebra"', set()),
        ("zebra AND crossing", {"both"}),
        ("zebra OR giraffe", {"plain", "both", "encrypted"}),
        ("zebra AND NOT crossing", {"plain"}),
        ("NOT zebra NOT okapi", {"signed", "encrypted", "untrusted", "nokey"}),
        ("(zebra OR giraffe) is:encrypted", {"both", "encrypted"}),
        ("okapi", {"html"}),
        ("freres", {"html"}),  # HTML entities decoded, diacritics folded
        ("hiddenword OR color", set()),  # script and style are not text
        ("lemur", {"signed"}),
    ],
)
def test_words_phrases_prefixes_and_boolean_operators(corpus, query, expected) -> None:
    assert found(corpus, query) == expected


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("from:carol", {"encrypted"}),
        ("from:carol@example.org", {"encrypted"}),
        ('from:"alice@example.org" zebra', {"plain", "both"}),
        ("to:frank", {"encrypted"}),  # Cc counts as a recipient
        ("to:carol", {"nokey"}),
        ("subject:secret", {"encrypted"}),
        ('subject:"secret plans"', {"encrypted"}),
        ("subject:zebra", set()),  # the word is in bodies, not subjects
        ("attachment:contract.pdf", {"signed"}),
        ("folder:Archive/2026", {"signed"}),
        ("folder:Archive/*", {"signed"}),
        ("folder:INBOX NOT is:signed", {"plain", "encrypted", "nokey", "html"}),
        ("account:work zebra", {"plain", "both"}),
        ("account:home", set()),
        ("id:secret@example.org", set()),
        ("id:<encrypted@example.org>", {"encrypted"}),
        ("id:encrypted@example.org", {"encrypted"}),
        ("signer:ALICE@example.org", {"signed", "both"}),
    ],
)
def test_field_searches(corpus, query, expected) -> None:
    assert found(corpus, query) == expected


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("date:2026-01-01..2026-03-31", {"plain", "signed", "encrypted", "nokey"}),
        ("date:2026-03-20", {"encrypted"}),
        ("date:2026-02", {"signed"}),
        ("date:2025", {"untrusted"}),
        ("date:..2025-12-31", {"untrusted"}),
        ("date:2026-08-01..", {"both", "html"}),
        ("date:7d..", {"both"}),
        ("date:2w.. zebra", {"both"}),
        ("date:1y..6mo", {"plain", "signed", "encrypted", "untrusted", "nokey"}),
        ("date:2026-01-01..2026-12-31 zebra", {"plain", "both"}),
        ("date:today", set()),
    ],
)
def test_date_ranges_absolute_and_relative(corpus, query, expected) -> None:
    assert found(corpus, query) == expected


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("is:encrypted", {"encrypted", "both", "nokey"}),
        ("is:decrypted", {"encrypted", "both"}),
        ("is:signed", {"signed", "both", "untrusted"}),
        ("is:unopened", {"nokey"}),
        ("sig:valid", {"signed", "both"}),
        ("sig:untrusted", {"untrusted"}),
        ("sig:invalid", set()),
        ("dec:no-key", {"nokey"}),
        ("has:attachment", {"signed"}),
        ("scan:pending is:signed", {"signed", "both", "untrusted"}),
        ("scan:infected", set()),
    ],
)
def test_verdict_searches(corpus, query, expected) -> None:
    assert found(corpus, query) == expected


def test_results_are_newest_first_and_limited(corpus) -> None:
    cache, ids = corpus
    dates = [m.date for m in cache.search("", now=NOW)]
    assert dates == sorted(dates, reverse=True) and len(dates) == 7
    assert [m.id for m in cache.search("", now=NOW, limit=2)] == [ids["both"], ids["html"]]
    assert [m.id for m in cache.search("", now=NOW, limit=1, offset=2)] == [ids["encrypted"]]


def test_scan_verdicts_are_searchable(pki: TestPki, tmp_path: Path, now: dt.datetime) -> None:
    with Cache.open(tmp_path, KEY) as cache:
        a = store(cache, mail(pki, subject="one"), opener(pki), now, uid=1)
        b = store(cache, mail(pki, subject="two"), opener(pki), now, uid=2)
        assert cache.record_scan(a, "clean", {}) == "clean"
        assert cache.record_scan(b, "clean", {2: "infected:Eicar-Test"}) == "infected:Eicar-Test"
        assert [m.id for m in cache.search("scan:infected", now=NOW)] == [b]
        assert [m.id for m in cache.search("scan:infected:Eicar-Test", now=NOW)] == [b]
        assert [m.id for m in cache.search("scan:clean", now=NOW)] == [a]


@pytest.mark.parametrize(
    "query",
    [
        "'; DROP TABLE messages; --",
        'zebra" OR "1"="1',
        "NEAR(zebra budget)",
        'subject:"\'); DELETE FROM messages; --"',
        "folder:'OR'1'='1",
        "{sender}:zebra",
        "zebra^ -budget +",
        "* OR *",
    ],
)
def test_hostile_input_is_searched_as_text_never_as_sql_or_fts_syntax(corpus, query) -> None:
    cache, _ = corpus
    try:
        cache.search(query, now=NOW)
    except UsageError as exc:  # refused as a malformed query is fine; anything else is not
        assert str(exc).startswith("malformed query at column ")
    assert len(cache.search("", now=NOW)) == 7


@pytest.mark.parametrize(
    ("query", "column", "says"),
    [
        ('zebra "budget', 7, "never closed"),
        ("(zebra OR giraffe", 1, "'(' is never closed"),
        ("zebra)", 6, "no matching '('"),
        ("zebra OR", 7, "OR needs a search term after it"),
        ("AND zebra", 1, "AND needs a search term before it"),
        ("zebra AND NOT", 11, "NOT needs a search term after it"),
        ("()", 2, "empty parentheses"),
        ("colour:red", 1, "unknown field 'colour:'"),
        ("date:yesteryear", 1, "'yesteryear' is not a date"),
        ("date:2026-13-01", 1, "is not a date"),
        ("date:2026-03-01..2026-01-01", 1, "empty range"),
        ("date:..", 1, "at least one end"),
        ("zebra is:shiny", 7, "is:shiny is unknown"),
        ("sig:great", 1, "sig:great is unknown"),
        ("from:", 1, "from: needs a value"),
        ('subject:"..."', 1, "no word to search for"),
    ],
)
def test_a_malformed_query_is_one_line_saying_where(corpus, query, column, says) -> None:
    cache, _ = corpus
    with pytest.raises(UsageError) as info:
        cache.search(query, now=NOW)
    message = str(info.value)
    assert message.startswith(f"malformed query at column {column}: "), message
    assert says in message and "\n" not in message

"""Search in every language: one normalisation for the index and the query (accents, case, ß,
ø, ł, ...; Japanese, Chinese, Korean and Thai as character pairs), the aliases Gmail and notmuch
users type, and a cache of an earlier version re-indexed on opening."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from smime_companion.core.normalise import search_form
from smime_companion.errors import UsageError
from smime_companion.store import Cache, db
from smime_companion.store.compression import decompress
from smime_companion.testing.pki import TestPki
from tests.test_cache import KEY, mail, opener, store

NOW = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)

TEXTS = {
    "japanese": ("日本語のテキストです。東京で会いましょう。", "会議"),
    "chinese": ("我们明天在北京见面。", "通知"),
    "korean": ("한국어 텍스트를 검색합니다.", "안내"),
    "thai": ("สวัสดีครับ ภาษาไทย", "ประชุม"),
    "german": ("Wir treffen uns in der Schloßstraße.", "Straße"),
    "nordic": ("Møde i Ærøskøbing med Œuvre-gruppen, Þórður og Đorđe.", "Møde"),
    "polish": ("Spotkanie w Łodzi, ul. Żółta.", "Łódź"),
    "greek": ("Καλημέρα, συνάντηση στην Αθήνα.", "Ραντεβού"),
    "russian": ("Встреча в Йошкар-Оле, ёлка.", "Встреча"),
    "french": ("Réunion à l'hôtel, café crème.", "Réunion"),
}


@pytest.fixture(scope="module")
def corpus(pki: TestPki, tmp_path_factory: pytest.TempPathFactory, pki_now: dt.datetime):
    """A cache with one encrypted message per language; yields (cache, name -> id)."""
    ids: dict[str, int] = {}
    with Cache.open(tmp_path_factory.mktemp("languages"), KEY) as cache:
        for uid, (name, (body, subject)) in enumerate(TEXTS.items(), start=1):
            raw = mail(
                pki,
                kind="encrypted",
                subject=subject,
                body=body + "\r\n",
                date="Fri, 20 Nov 2026 10:00:00 +0000",
                message_id=f"<{name}@example.org>",
            )
            ids[name] = store(cache, raw, opener(pki), pki_now, uid=uid)
        yield cache, ids


def found(corpus, query: str) -> set[str]:
    cache, ids = corpus
    names = {v: k for k, v in ids.items()}
    return {names[m.id] for m in cache.search(query, now=NOW)}


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("日本語", {"japanese"}),
        ("テキスト", {"japanese"}),
        ("東京", {"japanese"}),
        ("日本語のテキスト", {"japanese"}),
        ('"テキストです"', {"japanese"}),
        ("本", {"japanese"}),  # one character: the pairs it starts
        ("北京", {"chinese"}),
        ("明天 见面", {"chinese"}),
        ("텍스트", {"korean"}),
        ("검색", {"korean"}),
        ("ภาษาไทย", {"thai"}),
        ("strasse", {"german"}),
        ("STRASSE", {"german"}),
        ("schloßstraße", {"german"}),
        ("subject:strasse", {"german"}),
        ("mode", {"nordic"}),
        ("aeroskobing", {"nordic"}),
        ("oeuvre", {"nordic"}),
        ("thordur", {"nordic"}),
        ("dorde", {"nordic"}),
        ("lodzi", {"polish"}),
        ("subject:lodz", {"polish"}),
        ("zolta", {"polish"}),
        ("καλημερα", {"greek"}),
        ("ΑΘΗΝΑ", {"greek"}),
        ("ραντεβου", {"greek"}),
        ("йошкар", {"russian"}),  # й is a letter of its own, not и with an accent
        ("ёлка", {"russian"}),
        ("reunion", {"french"}),
        ("hotel", {"french"}),
        ("cafe creme", {"french"}),
        ("ｔｅｘｔ", set()),  # full-width Latin is Latin: no message says "text"
        ("東京 -テキスト", set()),
    ],
)
def test_words_are_found_in_every_language_whatever_the_accents_case_or_script(
    corpus, query: str, expected: set[str]
) -> None:
    assert found(corpus, query) == expected


def test_a_word_inside_a_run_of_ideographs_is_not_found_across_a_gap() -> None:
    # The pairs of the query must be adjacent in the index: 日本 and 語 apart is not 日本語.
    assert search_form("日本語").split() == ["日本", "本語"]
    assert search_form("日本 語").split() == ["日本", "語"]
    assert search_form("ภาษาไทย").split() == ["ภา", "าษ", "ษา", "าไ", "ไท", "ทย"]


@pytest.mark.parametrize(
    ("text", "form"),
    [
        ("Straße", "strasse"),
        ("Øre", "ore"),
        ("Łódź", "lodz"),
        ("Æble", "aeble"),
        ("Œuf", "oeuf"),
        ("Đakovo", "dakovo"),
        ("Þór", "thor"),
        ("Ἀθῆναι", "αθηναι"),
        ("ﬁnance", "finance"),
        ("ＡＢＣ", "abc"),
        ("Йод", "йод"),
        ("ที่", " ที่ "),  # Thai marks are the letters' own: kept
        ("plain ASCII Text", "plain ascii text"),
    ],
)
def test_the_one_normalisation_folds_letters_as_their_users_type_them(text: str, form: str) -> None:
    assert search_form(text) == form


# -- what Gmail and notmuch users type -------------------------------------------------------------

PDF_PART = (
    '--b0\r\nContent-Type: application/pdf; name="Angebot.pdf"\r\n'
    'Content-Disposition: attachment; filename="Angebot.pdf"\r\n'
    "Content-Transfer-Encoding: base64\r\n\r\n" + "JVBERi0xLjQK" * 2000 + "\r\n"
)


@pytest.fixture(scope="module")
def aliases(pki: TestPki, tmp_path_factory: pytest.TempPathFactory, pki_now: dt.datetime):
    specs = {
        "old": dict(subject="Old news", body="Zebra report.",
                    date="Mon, 05 Jan 2026 10:00:00 +0000"),
        "recent": dict(subject="Fresh news", body="Zebra update.",
                       date="Tue, 24 Nov 2026 10:00:00 +0000", folder="Archive"),
        "big": dict(subject="Offer", body="Lemur offer attached.", extra_parts=PDF_PART,
                    date="Wed, 18 Nov 2026 10:00:00 +0000"),
    }  # fmt: skip
    ids: dict[str, int] = {}
    with Cache.open(tmp_path_factory.mktemp("aliases"), KEY) as cache:
        for uid, (name, spec) in enumerate(specs.items(), start=1):
            folder = str(spec.pop("folder", "INBOX"))
            raw = mail(pki, message_id=f"<{name}@example.org>", **spec)  # type: ignore[arg-type]
            ids[name] = store(cache, raw, opener(pki), pki_now, uid=uid, folder=folder)
        yield cache, ids


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("zebra -update", {"old"}),
        ("-zebra", {"big"}),
        ("-(zebra OR lemur)", set()),
        ("-subject:news", {"big"}),
        ("older_than:30d", {"old"}),
        ("newer_than:3d", {"recent"}),
        ("newer_than:2m", {"recent", "big"}),  # Gmail's m: months
        ("newer_than:1y", {"old", "recent", "big"}),
        ("filename:angebot", {"big"}),
        ("filename:angebot.pdf", {"big"}),
        ("larger:20K", {"big"}),
        ("smaller:20K", {"old", "recent"}),
        ("larger:1M", set()),
        ("in:inbox", {"old", "big"}),
        ("in:archive", {"recent"}),
        ("in:arch*", {"recent"}),
        ("in:anywhere zebra", {"old", "recent"}),
        ("date:2w", {"recent", "big"}),
        ("date:1y", {"old", "recent", "big"}),
        ("date:3mo", {"recent", "big"}),
        ("e-mail", set()),  # a hyphen inside a word is no NOT
    ],
)
def test_gmail_and_notmuch_aliases_mean_what_their_users_expect(
    aliases, query: str, expected: set[str]
) -> None:
    assert found(aliases, query) == expected


@pytest.mark.parametrize(
    ("query", "problem"),
    [
        ("larger:huge", "larger:huge needs a size"),
        ("older_than:yesterday", "older_than:yesterday needs a time"),
    ],
)
def test_a_malformed_alias_says_what_it_needs(aliases, query: str, problem: str) -> None:
    cache, _ids = aliases
    with pytest.raises(UsageError, match=problem):
        cache.search(query, now=NOW)


# -- an existing cache ---------------------------------------------------------------------------


def test_a_cache_indexed_by_an_earlier_version_is_reindexed_when_opened(
    pki: TestPki, tmp_path: Path, now: dt.datetime
) -> None:
    directory = tmp_path / "old"
    with Cache.open(directory, KEY) as cache:
        for uid, name in enumerate(("japanese", "german", "polish"), start=1):
            body, subject = TEXTS[name]
            raw = mail(pki, kind="encrypted", subject=subject, body=body + "\r\n")
            store(cache, raw, opener(pki), now, uid=uid)
    # What the first version wrote: the text as it is (one token per CJK run), schema 1.
    conn = db._open(directory / "cache.db", KEY, None)  # as it is, without migrating
    with conn:
        conn.execute("INSERT INTO message_text (message_text) VALUES ('delete-all')")
        for (key,) in conn.execute("SELECT sort_key FROM messages").fetchall():
            conn.execute(
                "INSERT INTO message_text (rowid, body) VALUES (?, ?)",
                (key, "日本語のテキストです Schloßstraße Łodzi"),
            )
        # ... and none of what later migrations add (the reader's read state and indexes, the
        # compressed raw messages and contents).
        conn.execute(
            "DROP TABLE local_state; DROP INDEX messages_unseen; DROP INDEX messages_by_folder"
        )
        for message_id, raw, content in conn.execute(
            "SELECT id, raw, content FROM messages"
        ).fetchall():
            conn.execute(
                "UPDATE messages SET raw = ?, content = ? WHERE id = ?",
                (decompress(raw), decompress(content) if content is not None else None,
                 message_id),
            )  # fmt: skip
        conn.execute(
            "DROP INDEX messages_to_compress; DROP INDEX messages_encrypted; "
            "DROP INDEX messages_signed; DROP INDEX messages_by_signature; "
            "DROP INDEX messages_by_decryption; ALTER TABLE messages DROP COLUMN compressed; "
            "ALTER TABLE messages DROP COLUMN raw_size; DROP TABLE text_pending"
        )
        conn.execute("PRAGMA user_version = 1")
    conn.close()
    with Cache.open(directory, KEY) as cache:
        for query, subject in (("テキスト", "会議"), ("strasse", "Straße"), ("lodzi", "Łódź")):
            assert [m.subject for m in cache.search(query, now=NOW)] == [subject]

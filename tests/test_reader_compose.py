"""Writing mail with the reader's compose logic (shared by the compose page and the compose
command): replies address the right people and quote the original, forwards carry its
attachments, each recipient's fate is said before sending, and a sent draft lives only in the
encrypted journal, from where the outbox pipeline takes it."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest

from smime_companion import runtime
from smime_companion.core.mime import parse_entity
from smime_companion.errors import UsageError
from smime_companion.outbox.journal_drafts import JournalDrafts, draft_ref
from smime_companion.outbox.plan import CertificateList
from smime_companion.outbox.protocols import Place
from smime_companion.reader import compose
from smime_companion.store.journal import Journal
from smime_companion.testing.pki import TestPki
from tests.conftest import load_cert
from tests.reader_world import World, make_world, message, text_entity

BOB = compose.Sender("work", "bob@example.org")


@pytest.fixture()
def world(tmp_path: Path, pki: TestPki, now: dt.datetime) -> Iterator[World]:
    original = message(
        "Alice <alice@example.org>",
        "Lunch on Friday",
        now,
        b"Reply-To: Alice Work <alice.work@example.org>\r\n"
        b"Cc: Carol <carol@example.org>, bob@example.org\r\n"
        b"References: <earlier@test.example>\r\n" + text_entity("Noodles?\nOr pizza?"),
        "lunch",
    )
    attached = message(
        "Carol <carol@example.org>",
        "Budget",
        now,
        b"Content-Type: multipart/mixed; boundary=M\r\n\r\n--M\r\n" + text_entity("See file.")
        + b"--M\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; "
        b'filename="budget.pdf"\r\n\r\n%PDF budget\r\n--M--\r\n',
        "budget",
    )  # fmt: skip
    # Exchange's "Last, First" in an encoded word, and an internationalised address (RFC 6532).
    german = message(
        "=?utf-8?q?M=C3=BCller=2C_J=C3=B6rg?= <jm@example.de>", "Angebot", now,
        b"Cc: =?utf-8?b?SsO2cmc=?= <j\xc3\xb6rg@beispiel.de>,\r\n"
        b" =?utf-8?q?Schr=C3=B6der=2C_Anna?= <as@example.de>\r\n" + text_entity("Anbei."),
        "angebot",
    )  # fmt: skip
    # A poison From: comments nested 2,000 deep (the email package recurses once per level).
    poison = message("(" * 2000 + "x", "Poison", now, text_entity("Hello."), "poison")
    # Bare CRs where header values end up in an answer (a Subject, the Message-ID, a media type,
    # a file name) and a control character inside a Cc address: shapes the fuzz corpus holds,
    # which the email package refuses in a draft.
    carriage = message(
        "Carol <carol@example.org>", "Minutes\rBcc: eve@example.org", now,
        b"Cc: frank@example.org, dave@ex\x1eample.org, Erin <erin@example.org>\r\n"
        b'Content-Type: multipart/mixed; boundary="M"\r\n\r\n--M\r\n' + text_entity("See file.")
        + b"--M\r\nContent-Type: image/png\r0100\r\n"
        b'Content-Disposition: attachment; filename="notes\r.txt"\r\n\r\nPNG\r\n--M--\r\n',
        "minutes\rx",
    )  # fmt: skip
    # What most clients send: the same text as plain text and as HTML.
    alternative = message(
        "Alice <alice@example.org>", "Both forms", now,
        b'Content-Type: multipart/alternative; boundary="A"\r\n\r\n--A\r\n'
        + text_entity("See you at noon.") + b"--A\r\nContent-Type: text/html\r\n\r\n"
        b"<p>See you at <b>noon</b>.</p>\r\n--A--\r\n",
        "both",
    )  # fmt: skip
    # A name whose encoded word hides a line break and a tab (a spammer's, or a broken client's).
    broken_name = message(
        "=?utf-8?q?Mallory=0A_Bcc=3A_eve=40example=2Eorg=09?= <mallory@example.net>",
        "Hidden line", now, text_entity("Answer me."), "hidden",
    )  # fmt: skip
    # An archived message without a Date: listed at its Received date.
    undated = (
        b"Received: from relay.example.net by mx.example.org; Sat, 14 Mar 2009 09:15:00 +0100\r\n"
        b"From: Alice <alice@example.org>\r\nTo: Bob <bob@example.org>\r\nSubject: Old news\r\n"
        + text_entity("From the archive.")
    )
    # A text file attached as Apple Mail and mutt attach one: inline, under its name.
    text_file = message(
        "Carol <carol@example.org>", "Minutes", now,
        b"Content-Type: multipart/mixed; boundary=M\r\n\r\n--M\r\n" + text_entity("Below.")
        + b"--M\r\nContent-Type: text/plain; name=minutes.txt\r\n"
        b"Content-Disposition: inline; filename=minutes.txt\r\n\r\nQuorum reached.\r\n--M--\r\n",
        "minutes",
    )  # fmt: skip
    mail = [original, attached, german, poison, carriage, alternative, broken_name, undated,
            text_file]  # fmt: skip
    yield from make_world(tmp_path, pki, now, mail)


def test_a_reply_goes_to_reply_to_quotes_the_text_and_threads(world: World) -> None:
    with runtime.open_cache(world.config) as cache:
        fields = compose.answer_fields(cache, 1, "reply", BOB, ["bob@example.org"])
    assert fields.to == "Alice Work <alice.work@example.org>"
    assert fields.cc == ""
    assert fields.subject == "Re: Lunch on Friday"
    assert fields.in_reply_to == "<lunch@test.example>"
    assert fields.references == "<earlier@test.example> <lunch@test.example>"
    assert "wrote:\n> Noodles?\n> Or pizza?" in fields.body


def test_a_reply_quotes_a_message_sent_as_text_and_html_once(world: World) -> None:
    with runtime.open_cache(world.config) as cache:
        fields = compose.answer_fields(cache, 6, "reply", BOB, ["bob@example.org"])
    assert fields.body.count("See you at noon.") == 1
    assert "wrote:\n> See you at noon." in fields.body


def test_reply_all_adds_the_others_but_never_yourself(world: World) -> None:
    with runtime.open_cache(world.config) as cache:
        fields = compose.answer_fields(cache, 1, "reply-all", BOB, ["bob@example.org"])
    assert fields.to == "Alice Work <alice.work@example.org>"
    assert fields.cc == "Carol <carol@example.org>"


def test_answering_a_message_without_a_date_names_the_date_it_is_listed_under(
    world: World,
) -> None:
    with runtime.open_cache(world.config) as cache:
        forward = compose.answer_fields(cache, 8, "forward", BOB, [])
        reply = compose.answer_fields(cache, 8, "reply", BOB, ["bob@example.org"])
    assert "Date: Sat, 14 Mar 2009 08:15:00 +0000" in forward.body
    assert "On Sat, 14 Mar 2009 08:15:00 +0000, Alice <alice@example.org> wrote:" in reply.body


def test_a_forward_carries_the_attachments_and_the_original_header(world: World) -> None:
    with runtime.open_cache(world.config) as cache:
        fields = compose.answer_fields(cache, 2, "forward", BOB, [])
    assert fields.subject == "Fwd: Budget" and fields.to == ""
    assert "From: Carol <carol@example.org>" in fields.body and "See file." in fields.body
    (item,) = fields.attachments
    assert (item.filename, item.mime_type, item.data) == ("budget.pdf", "application/pdf",
                                                          b"%PDF budget")  # fmt: skip
    built = compose.build_draft(
        compose.DraftFields(**{**fields.__dict__, "to": "dave@example.org"}), world.now
    )
    again, _ = compose.read_draft(built, "work")
    assert again.attachments == fields.attachments


def test_a_text_file_sent_inline_is_quoted_and_a_forward_also_carries_it(world: World) -> None:
    with runtime.open_cache(world.config) as cache:
        reply = compose.answer_fields(cache, 9, "reply", BOB, ["bob@example.org"])
        forward = compose.answer_fields(cache, 9, "forward", BOB, [])
    assert "> Below.\n> Quorum reached." in reply.body and not reply.attachments
    assert "Quorum reached." in forward.body
    (item,) = forward.attachments
    assert (item.filename, item.mime_type, item.data) == ("minutes.txt", "text/plain",
                                                          b"Quorum reached.")  # fmt: skip


def test_a_reply_shows_names_as_written_never_encoded_words(world: World) -> None:
    with runtime.open_cache(world.config) as cache:
        fields = compose.answer_fields(cache, 3, "reply-all", BOB, ["bob@example.org"])
    # email.utils.formataddr wrote =?utf-8?b?...?= for the name, and raised for the address.
    assert fields.to == '"Müller, Jörg" <jm@example.de>'
    # Each encoded "Last, First" of a list stays one name: the list is split as written.
    assert fields.cc == 'Jörg <jörg@beispiel.de>, "Schröder, Anna" <as@example.de>'
    # Jörg's address needs SMTPUTF8: said before anything is written, never sent mangled.
    with pytest.raises(UsageError, match="^Cc: jörg@beispiel.de is an internationalised"):
        compose.build_draft(fields, world.now)
    sendable = dataclasses.replace(fields, cc='"Schröder, Anna" <as@example.de>')
    again, _ = compose.read_draft(compose.build_draft(sendable, world.now), "work")
    assert (again.to, again.cc) == (sendable.to, sendable.cc)  # commas stay inside the names


def test_an_internationalised_domain_is_written_as_its_a_labels(world: World) -> None:
    fields = compose.DraftFields("work", "bob@example.org", to="Jörg <jm@Bücher.example>")
    built = compose.build_draft(fields, world.now)
    to = parse_entity(built, 65536).get("To")
    assert to == "=?utf-8?q?J=C3=B6rg?= <jm@xn--bcher-kva.example>"


def test_a_poison_sender_neither_breaks_the_list_nor_a_reply(world: World) -> None:
    with runtime.open_cache(world.config) as cache:
        fields = compose.answer_fields(cache, 4, "reply", BOB, ["bob@example.org"])
    assert fields.to == "" and fields.subject == "Re: Poison"
    cookie, _ = world.session()
    for path in ("/mail", "/message/4", "/compose?reply=4", "/mail?q=poison"):
        status, _, body = world.request("GET", path, {"Cookie": cookie})
        assert status == 200, path
    assert b"Poison" in body


def test_answers_to_fields_with_bare_carriage_returns_can_be_sent(world: World) -> None:
    me = ["bob@example.org"]
    with runtime.open_cache(world.config) as cache:
        answers = [compose.answer_fields(cache, 5, mode, BOB, me) for mode in compose.MODES]
    for fields in answers:
        sendable = dataclasses.replace(fields, to=fields.to or "dave@example.org")
        again, _ = compose.read_draft(compose.build_draft(sendable, world.now), "work")
        assert "\r" not in again.subject and "\r" not in again.in_reply_to
    # An "address" holding a control character is no one to answer to; a bare address before
    # a named one is a mailbox of its own, not part of the name.
    cc = answers[compose.MODES.index("reply-all")].cc
    assert cc == "frank@example.org, Erin <erin@example.org>"
    forward = answers[compose.MODES.index("forward")]
    (item,) = forward.attachments
    # An invalid media type is text/plain (RFC 2045 section 5.2); the name as the page shows it.
    assert (item.filename, item.mime_type) == ("notes\\r.txt", "text/plain")
    assert forward.subject == "Fwd: Minutes Bcc: eve@example.org"


def test_a_name_hiding_a_line_break_is_answered_on_one_line(world: World) -> None:
    # The reply form's To held the line break and the draft was refused ("To must be one
    # line"): the name is one line of printable text, the address the one written.
    with runtime.open_cache(world.config) as cache:
        fields = compose.answer_fields(cache, 7, "reply", BOB, ["bob@example.org"])
    assert fields.to == '"Mallory Bcc: eve@example.org" <mallory@example.net>'
    again, _ = compose.read_draft(compose.build_draft(fields, world.now), "work")
    assert again.to == fields.to


@pytest.mark.parametrize(
    "subject",
    [
        "Re: =?utf-8?b?w4R\x18ZmVs?= and more",
        "Re: =?iso-8859-1?q?J=F6rg??= x",
        "Re: =?utf-8?b?w4R\x18ZmVs?=" + " long" * 40,
        "Grüße",
    ],
    ids=["broken-base64-word", "broken-q-word", "long", "umlauts"],
)
def test_a_subject_holding_a_broken_encoded_word_is_sent_as_written(
    world: World, subject: str
) -> None:
    # A Subject the answered message kept undecoded (its encoded word was broken): the email
    # package raised UnicodeEncodeError folding it, so the reply could not be saved or sent.
    fields = compose.DraftFields("work", "bob@example.org", to="dave@example.org", subject=subject)
    again, _ = compose.read_draft(compose.build_draft(fields, world.now), "work")
    assert again.subject == subject


def test_a_draft_needs_a_recipient_and_one_line_headers(world: World) -> None:
    with pytest.raises(UsageError, match="at least one recipient"):
        compose.build_draft(compose.DraftFields("work", "bob@example.org"), world.now)
    with pytest.raises(UsageError, match="^Cc: an address field nests comments"):
        compose.build_draft(
            compose.DraftFields(
                "work", "bob@example.org", to="a@example.org", cc="(" * 2000 + "c@example.org"
            ),  # fmt: skip
            world.now,
        )
    with pytest.raises(UsageError, match="^Cc must be one line"):
        compose.build_draft(
            compose.DraftFields("work", "bob@example.org", to="a@example.org", cc="c@e\x1ex.org"),
            world.now,
        )
    with pytest.raises(UsageError, match="Subject must be one line"):
        compose.build_draft(
            compose.DraftFields(
                "work", "bob@example.org", to="a@example.org", subject="x\r\nBcc: eve@example.org"
            ),  # fmt: skip
            world.now,
        )


def test_each_recipient_is_told_what_will_happen(pki: TestPki, now: dt.datetime) -> None:
    lookup = CertificateList([load_cert(pki.cert("alice"))])
    alice = compose.recipient_status("Alice@Example.org", lookup, now, "hold")
    assert alice.state == "encrypt" and "will be encrypted" in alice.detail
    held = compose.recipient_status("zed@example.org", lookup, now, "hold")
    assert held.state == "hold" and "held, not sent" in held.detail
    signed_only = compose.recipient_status("zed@example.org", lookup, now, "sign-only")
    assert "NOT encrypted" in signed_only.detail
    own = compose.recipient_status("bob@example.org", lookup, now, "hold", ["bob@example.org"])
    assert own.state == "encrypt"


def test_send_keeps_the_draft_in_the_encrypted_journal_for_the_pipeline(
    world: World, tmp_path: Path
) -> None:
    fields = compose.DraftFields("work", "bob@example.org", to="alice@example.org",
                                 subject="Secret lunch", body="marzipan at noon")  # fmt: skip
    with runtime.open_outbox_journal(world.config) as journal:
        draft_id = compose.save(journal, fields, world.now, send=True)
        progress = compose.progress(journal, "work", draft_id)
        assert progress.stage == "queued"
        source = JournalDrafts(journal, "work", lambda: world.now)
        (ref,) = source.drafts()
        assert ref.ref == draft_ref(draft_id)
        raw = source.read(ref.ref)
        assert raw is not None and b"marzipan at noon" in raw
        assert parse_entity(raw, 65536).get("Subject") == "Secret lunch"
        # Held by the pipeline: kept, in its place, offered to send again.
        assert source.move_aside(ref.ref, Place.HELD) == ref.ref
        assert source.drafts() == []
        source.remove(ref.ref)
        assert source.read(ref.ref) is None
    # Nowhere on disk in the clear: not in the journal file, not beside it.
    for path in (tmp_path / "cache").iterdir():
        if path.is_file():
            assert b"marzipan at noon" not in path.read_bytes(), path


def test_a_saved_draft_keeps_its_message_id_when_edited_and_sent(world: World) -> None:
    with Journal.open(world.config.cache.path, "reader test cache key") as journal:
        fields = compose.DraftFields("work", "bob@example.org", subject="Draft")
        draft_id = compose.save(journal, fields, world.now, send=False)
        kept = journal.draft(draft_id)
        assert kept is not None and kept.place == "saved"
        first_id = compose.read_draft(kept.message, "work")[1]
        edited = compose.DraftFields("work", "bob@example.org", to="alice@example.org",
                                     subject="Draft")  # fmt: skip
        assert compose.save(journal, edited, world.now, send=True, draft_id=draft_id) == draft_id
        sent = journal.draft(draft_id)
        assert sent is not None and sent.place == "outbox"
        assert compose.read_draft(sent.message, "work")[1] == first_id

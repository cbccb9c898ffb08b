"""core.text: decrypted MIME -> searchable text, attachments and parts (export: test_export.py)."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
from email.header import decode_header, make_header

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from smime_companion.core.html_text import html_to_text
from smime_companion.core.text import (
    Part,
    body_forms,
    decode_header_text,
    decoded_text,
    extract_text,
    get_part,
    header_date,
    iter_parts,
    part_text,
    preview,
    shown_text,
    summary_headers,
    unflowed,
)

NESTED = (
    b'Content-Type: multipart/mixed; boundary="outer"\r\n\r\n'
    b"--outer\r\n"
    b'Content-Type: multipart/alternative; boundary="alt"\r\n\r\n'
    b"--alt\r\nContent-Type: text/plain; charset=iso-8859-1\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n\r\nCaf=E9 cr=E8me\r\n"
    b"--alt\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
    b"<div>Caf\xc3\xa9 <i>cr\xc3\xa8me</i></div>\r\n"
    b"--alt--\r\n"
    b"--outer\r\nContent-Type: message/rfc822\r\n\r\n"
    b"Subject: forwarded\r\nContent-Type: text/plain\r\n\r\nForwarded walrus text\r\n"
    b"--outer\r\nContent-Type: image/png\r\nContent-Disposition: attachment; "
    b"filename*=utf-8''%C3%A9t%C3%A9.png\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    b"iVBORw0KGgo=\r\n"
    b"--outer--\r\n"
)


def test_every_text_part_is_indexed_and_charsets_are_honoured() -> None:
    text = extract_text(NESTED)
    assert "Café crème" in text.body  # quoted-printable latin-1
    assert "Forwarded walrus text" in text.body  # inside message/rfc822
    assert text.body.count("Café") == 2  # the HTML alternative, converted


def test_attachments_carry_part_number_decoded_name_size_and_hash() -> None:
    [png] = extract_text(NESTED).attachments
    assert png.part == 4 and png.filename == "été.png" and png.mime_type == "image/png"
    assert png.size == 8 and png.sha256 == hashlib.sha256(b"\x89PNG\r\n\x1a\n").hexdigest()


def test_parts_are_numbered_depth_first_over_leaves() -> None:
    assert [(p.number, p.mime_type) for p in iter_parts(NESTED)] == [
        (1, "text/plain"),
        (2, "text/html"),
        (3, "text/plain"),
        (4, "image/png"),
    ]
    part = get_part(NESTED, 4)
    assert part is not None and part.data == b"\x89PNG\r\n\x1a\n"
    assert get_part(NESTED, 5) is None


def test_html_becomes_readable_text_without_script_or_style() -> None:
    html = (
        "<html><head><title>T</title><style>.x{}</style></head><body><h1>Hello&nbsp;there</h1>"
        "<p>one &lt;two&gt;</p><script>var secret = 1;</script><ul><li>a</li><li>b</li></ul>"
        '<img alt="logo"></body></html>'
    )
    assert html_to_text(html) == "Hello\xa0there\n\none <two>\n\na\n\nb\n\nlogo"


def test_broken_mime_is_indexed_as_far_as_it_goes_and_never_raises() -> None:
    broken = (
        b"Content-Type: multipart/mixed\r\n\r\nno boundary at all"  # multipart without boundary
    )
    assert extract_text(broken).body == "no boundary at all"  # the text there is
    bad_base64 = (
        b"Content-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!not base64!!!"
    )
    assert "not base64" in extract_text(bad_base64).body
    # Content whose first line is not a field has no header section; with a NUL byte it is a
    # file, not text (a signed PDF inside a .p7m).
    (headerless_binary,) = extract_text(b"\x00\x01 not a header\r\n\r\nbody").attachments
    assert (headerless_binary.mime_type, headerless_binary.size) == ("application/octet-stream", 23)
    assert extract_text(b"Not a header, just text\r\n\r\nbody").body.startswith("Not a header")


@pytest.mark.parametrize(
    "added",
    [
        b"\r\n_______________________________________________\r\nLists mailing list\r\n",
        b"\r\nThanks\r\nAlice\r\n",  # lines of base64 letters after a blank line
        b"-- \r\nSent from my phone\r\n",  # right below the base64, no blank line
    ],
)
def test_a_footer_added_below_a_base64_text_is_shown_after_the_decoded_text(added: bytes) -> None:
    # A list server or a company's gateway appended its lines to a base64 body: the body was
    # shown as base64. The base64 is decoded, what follows it shown as it is.
    body = base64.encodebytes("Grüße aus Köln, hier ist der Bericht.\n".encode())
    content = (
        b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + body + added
    )  # fmt: skip
    shown = extract_text(content).body
    assert shown.startswith("Grüße aus Köln, hier ist der Bericht.\n")
    assert shown.rstrip().endswith(added.decode().rstrip())


def test_encoded_words_and_dates_are_decoded() -> None:
    fields = (
        ("Subject", "=?utf-8?q?Gr=C3=BC=C3=9Fe?= aus Wien"),
        ("From", "=?iso-8859-1?q?J=F6rg?= <jorg@example.org>"),
        ("Date", "Tue, 10 Feb 2026 11:30:00 +0100"),
        ("Subject", "second subject is ignored"),
    )
    headers = summary_headers(fields)
    assert headers["subject"] == "Grüße aus Wien"
    assert headers["from"] == "Jörg <jorg@example.org>"
    assert header_date(headers["date"]) == dt.datetime(2026, 2, 10, 10, 30, tzinfo=dt.UTC)
    assert header_date("yesterday-ish") is None and header_date(None) is None


@pytest.mark.parametrize(
    ("value", "utc"),
    [
        ("Tue, 10 Feb 2026 11:30:00 +0100 (CET)", "2026-02-10 10:30"),
        ("Tue, 10 Feb 2026 11:30:00 +01:00", "2026-02-10 10:30"),  # read as UTC before
        ("Tue, 10 Feb 2026 11:30 -05:30 (IST?)", "2026-02-10 17:00"),
        ("2026-02-10T11:30:00+01:00", "2026-02-10 10:30"),  # ISO 8601, as scripts write it
        ("2026-02-10T10:30:00Z", "2026-02-10 10:30"),
        ("2026-02-10 10:30:00", "2026-02-10 10:30"),  # no zone: UTC
        ("2026-02-30T10:30:00Z", None),
        ("9999-12-31T23:59:59-12:00", None),  # past year 9999 in UTC
        ("10:00 +01:00 (" * 5000, None),  # long: no date, and no time spent looking
    ],
)  # fmt: skip
def test_dates_in_the_forms_mailers_and_scripts_write(value: str, utc: str | None) -> None:
    expected = None if utc is None else dt.datetime.fromisoformat(utc).replace(tzinfo=dt.UTC)
    assert header_date(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "Mon, 1 Jan 99999999999999999999 00:00:00 +0000",  # raised OverflowError (fuzz_open)
        "Fri, 31 Dec 9999 23:59:59 -1200",  # past year 9999 once moved to UTC
        "Mon, 1 Jan 2026 99:99:99 +0000",
    ],
)
def test_a_date_no_calendar_holds_is_no_date(value: str) -> None:
    assert header_date(value) is None


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=60))
def test_a_header_without_encoded_words_reads_as_the_email_package_reads_it(value: str) -> None:
    assume("=?" not in value)
    assert decode_header_text(value) == str(make_header(decode_header(value)))


def test_an_encoded_word_with_broken_base64_is_shown_as_it_was_never_raised() -> None:
    # The email package raises HeaderParseError for it; a hostile Subject must not stop the
    # summary (and with it the message's cache entry).
    broken = "=?utf-8?b?Q=?= Rechnung"
    assert decode_header_text(broken) == broken
    assert summary_headers((("Subject", broken),))["subject"] == broken


def test_an_encoded_word_with_raw_non_ascii_inside_is_shown_as_it_was() -> None:
    # A header's raw 8-bit bytes are read as UTF-8 before the words are decoded, so an
    # encoded word can hold non-ASCII text, which base64 decoding refuses with a ValueError
    # (found by bench/fuzz_open.py: the message was cached unindexed, "internal error").
    for broken in ("=?utf-8?b?w6\ufffd=?=", "=?utf-8?B?Zä==?= x", "=?x?b?\u202e?="):
        assert decode_header_text(broken) == broken


@given(
    st.text(alphabet="=?bBqQ_ a-zA-Z0-9+/\u00e4\ufffd\x00", max_size=40),
    st.sampled_from(["utf-8", "iso-8859-1", "x-unknown", "utf-8*de", "zlib"]),
    st.sampled_from("bBqQ"),
)
def test_any_encoded_word_decodes_or_stays_as_it_was_never_raising(
    text: str, charset: str, encoding: str
) -> None:
    value = f"Re: =?{charset}?{encoding}?{text}?= and =?{charset}?{encoding}?{text[::-1]}?="
    assert isinstance(decode_header_text(value), str)


THUNDERBIRD_FLOWED = (
    b"Content-Type: text/plain; charset=UTF-8; format=flowed\r\n"
    b"Content-Transfer-Encoding: 7bit\r\n\r\n"
    b"Hello Bob, \r\nthis line was broken \r\nat 72 characters.\r\n\r\n"
    b"> Quoted text that \r\n> goes on.\r\n>> deeper \r\n>> still\r\n\r\n"
    b" From here, space-stuffed.\r\n-- \r\nAlice\r\n"
)


def test_format_flowed_paragraphs_are_joined_as_rfc_3676_says() -> None:
    # Thunderbird sends every plain-text message so: shown and indexed as the paragraphs written.
    body = extract_text(THUNDERBIRD_FLOWED).body
    assert body.splitlines() == [
        "Hello Bob, this line was broken at 72 characters.",
        "",
        "> Quoted text that goes on.",
        ">> deeper still",
        "",
        "From here, space-stuffed.",
        "-- ",
        "Alice",
    ]
    delsp = THUNDERBIRD_FLOWED.replace(b"format=flowed", b"format=flowed; delsp=yes")
    assert extract_text(delsp).body.startswith("Hello Bob,this line was brokenat 72")
    # Only line ends break lines: a form feed or U+2028 inside a paragraph stays in it.
    assert unflowed("a\x0cb \r\nc\u2028d\r\n") == "a\x0cb c\u2028d\n"
    # Without format=flowed, every line break is the sender's.
    fixed = THUNDERBIRD_FLOWED.replace(b"; format=flowed", b"")
    assert extract_text(fixed).body.startswith("Hello Bob, \r\nthis line")


# --- RFC 9788's legacy display element --------------------------------------------------------

# The shape of RFC 9788's examples: an encrypted message's main body parts begin with the
# obscured Subject (for readers without header protection), marked hp-legacy-display="1".
LEGACY_TEXT = (
    b'Content-Type: text/plain; charset="us-ascii"; hp-legacy-display="1";\r\n hp="cipher"\r\n'
    b"Subject: Dinner plans\r\n\r\n"
    b"Subject: Dinner plans\r\n\r\nLet's meet at Rama's Roti Shop at 8pm.\r\n"
)
LEGACY_ALTERNATIVE = (
    b'Content-Type: multipart/alternative; boundary="c"; hp="cipher"\r\n'
    b"Subject: Dinner plans\r\n\r\n"
    b'--c\r\nContent-Type: text/plain; charset="us-ascii"; hp-legacy-display="1"\r\n\r\n'
    b"Subject: Dinner plans\r\n\r\nLet's meet at 8pm.\r\n"
    b'--c\r\nContent-Type: text/html; charset="us-ascii"; hp-legacy-display="1"\r\n\r\n'
    b'<html><body><div class="header-protection-legacy-display">'
    b"<pre>Subject: Dinner plans</pre></div><p>Let's meet at <b>8pm</b>.</p></body></html>\r\n"
    b"--c--\r\n"
)


def test_the_legacy_display_of_the_subject_is_hidden_in_content_with_protected_headers() -> None:
    assert extract_text(LEGACY_TEXT).body == "Let's meet at Rama's Roti Shop at 8pm.\r\n"
    plain, html = iter_parts(LEGACY_ALTERNATIVE)
    assert plain.legacy_display and html.legacy_display
    assert part_text(plain) == "Let's meet at 8pm."  # the CRLF before a boundary is the boundary's
    assert decoded_text(html) == "<html><body><p>Let's meet at <b>8pm</b>.</p></body></html>"
    assert "Dinner" not in extract_text(LEGACY_ALTERNATIVE).body


def test_a_legacy_display_mark_without_protected_headers_hides_nothing() -> None:
    # hp-legacy-display alone (no hp on the content): the Subject shown is the outer one, so
    # the lines are the only place the reader can see the real one.
    unprotected = LEGACY_TEXT.replace(b'; hp="cipher"', b"").replace(b"\r\n hp", b" x")
    assert not next(iter_parts(unprotected)).legacy_display
    assert extract_text(unprotected).body.startswith("Subject: Dinner plans\r\n\r\n")


def test_only_header_lines_ended_by_a_blank_line_are_taken_for_a_legacy_display() -> None:
    def shown(body: bytes) -> str:
        return extract_text(LEGACY_TEXT.split(b"\r\n\r\n")[0] + b"\r\n\r\n" + body).body

    # A marked part whose first paragraph is not header fields keeps it: marking a part
    # cannot make the start of a message vanish.
    assert shown(b"Dear Bob,\r\n\r\nthe plan.\r\n") == "Dear Bob,\r\n\r\nthe plan.\r\n"
    assert (
        shown(b"Subject: x\r\nno blank line after\r\n") == "Subject: x\r\nno blank line after\r\n"
    )
    assert shown(b"Subject: x\r\n") == "Subject: x\r\n"
    assert shown(b"\r\nstarts with a blank line\r\n") == "\r\nstarts with a blank line\r\n"
    assert shown(b"Subject: a\r\n folded\r\nTo: bob@example.org\r\n\r\nbody\r\n") == "body\r\n"
    fields = b"".join(b"X-%d: y\r\n" % i for i in range(40))
    assert shown(fields + b"\r\nbody\r\n").startswith("X-0: y")


def test_a_legacy_display_part_is_only_header_lines_and_not_too_many() -> None:
    # The older scheme's Legacy Display part (tests/test_header_protection_samples.py has the
    # public samples): the first part of a multipart/mixed marked protected-headers="v1".
    def parts(first_body: bytes) -> list[str]:
        content = (
            b'Content-Type: multipart/mixed; boundary="m"; protected-headers="v1"\r\n\r\n'
            b'--m\r\nContent-Type: text/rfc822-headers; protected-headers="v1"\r\n\r\n'
            + first_body
            + b"\r\n--m\r\nContent-Type: text/plain\r\n\r\nThe text.\r\n--m--\r\n"
        )
        return [p.mime_type for p in iter_parts(content)]

    assert parts(b"Subject: Dinner plans\r\nTo: bob@example.org\r\n") == ["text/plain"]
    fields = b"".join(b"X-%d: y\r\n" % i for i in range(20))
    assert parts(fields + b"\r\n\r\n") == ["text/plain"]
    # More lines than a legacy display holds, or a line that is no field: the sender's text,
    # shown as text (as the header section a bounce returns is).
    kept = ["text/plain", "text/plain"]
    assert parts(fields + b"X-20: y\r\n") == kept
    assert parts(b"Subject: x\r\n\r\nDinner is at 8.\r\n") == kept


def test_an_unclosed_legacy_display_div_leaves_the_html_whole() -> None:
    broken = LEGACY_ALTERNATIVE.replace(b"</pre></div>", b"</pre>")
    html = list(iter_parts(broken))[1]
    assert "Subject: Dinner plans" in decoded_text(html)


# --- reports: bounces, read receipts ----------------------------------------------------------

BOUNCE = (
    b"From: MAILER-DAEMON@mx.example.org\r\nSubject: Undelivered Mail Returned to Sender\r\n"
    b'Content-Type: multipart/report; report-type=delivery-status; boundary="r"\r\n\r\n'
    b"--r\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n"
    b"--r\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.org"
    b"\r\n\r\nFinal-Recipient: rfc822; nobody@example.com\r\nAction: failed\r\n"
    b"Status: 5.1.1\r\n--r\r\nContent-Type: text/rfc822-headers\r\n\r\n"
    b"From: alice@example.org\r\nSubject: Lunch\r\n--r--\r\n"
)


def test_a_bounce_shows_its_delivery_status_and_the_returned_header_as_text() -> None:
    # Postfix, Exim and Exchange bounce so (RFC 3464); mail clients show the report's parts as
    # text, and an archive holds thousands: nameless attachments say nothing.
    parts = list(iter_parts(BOUNCE))
    assert [(p.mime_type, p.is_attachment) for p in parts] == [("text/plain", False)] * 3
    text = extract_text(BOUNCE)
    assert text.attachments == ()
    assert "Final-Recipient: rfc822; nobody@example.com" in text.body
    assert "Subject: Lunch" in text.body
    assert text.preview.startswith("Your message could not be delivered. Reporting-MTA")
    # Lotus Domino and Exchange name the returned header section message/rfc822-headers.
    domino = BOUNCE.replace(b"text/rfc822-headers", b"message/rfc822-headers")
    assert extract_text(domino).attachments == () and "Subject: Lunch" in extract_text(domino).body


def test_a_read_receipt_and_an_internationalised_report_are_text() -> None:
    receipt = (
        b'Content-Type: multipart/report; report-type=disposition-notification; boundary="d"\r\n'
        b"\r\n--d\r\nContent-Type: text/plain\r\n\r\nYour message was read.\r\n--d\r\n"
        b"Content-Type: message/disposition-notification\r\n\r\nReporting-UA: Outlook\r\n"
        b"Final-Recipient: rfc822;bob@example.org\r\nDisposition: manual-action/MDN-sent-"
        b"manually; displayed\r\n--d\r\nContent-Type: message/global-delivery-status\r\n\r\n"
        + "Final-Recipient: utf-8; jörg@bücher.example\r\n".encode()
        + b"--d--\r\n"
    )
    body = extract_text(receipt).body
    assert "Disposition: manual-action/MDN-sent-manually; displayed" in body
    assert "jörg@bücher.example" in body  # RFC 6533: UTF-8 without a charset parameter


def test_a_report_part_sent_as_a_named_attachment_stays_one() -> None:
    named = BOUNCE.replace(
        b"Content-Type: message/delivery-status\r\n",
        b"Content-Type: message/delivery-status\r\nContent-Disposition: attachment; "
        b"filename=status.txt\r\n",
    )
    [attachment] = extract_text(named).attachments
    assert (attachment.mime_type, attachment.filename) == ("message/delivery-status", "status.txt")


def text_file_message(disposition: str, content_type: str = "text/plain") -> bytes:
    """A note and a text file (as Apple Mail and mutt attach one: inline, under its name)."""
    return (
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain\r\n\r\nThe minutes are below.\r\n"
        + f"--b\r\nContent-Type: {content_type}; name=minutes.txt\r\n".encode()
        + (f"Content-Disposition: {disposition}\r\n".encode() if disposition else b"")
        + b"\r\nQuorum reached; the walrus budget passed.\r\n--b--\r\n"
    )


@pytest.mark.parametrize(
    "disposition",
    ["inline; filename=minutes.txt", 'INLINE ; filename="minutes.txt"', "inline"],
)
def test_a_text_file_sent_inline_is_read_in_the_text_and_offered_as_its_file(
    disposition: str,
) -> None:
    # RFC 2183: "inline" asks for the part to be shown with the message; its name is what to
    # save it as. Thunderbird and Apple Mail show such a file in the text, and list it.
    message = text_file_message(disposition)
    text = extract_text(message)
    assert "the walrus budget passed" in text.body  # searchable, and in the preview
    assert text.preview.startswith("The minutes are below. Quorum reached")
    [file] = text.attachments
    assert (file.part, file.filename, file.mime_type, file.inline) == (
        2, "minutes.txt", "text/plain", False,
    )  # fmt: skip
    part = get_part(message, 2)
    assert part is not None and part.also_a_file and not part.is_attachment
    assert "walrus budget" in shown_text(list(iter_parts(message)))  # what a reply quotes


@pytest.mark.parametrize(
    ("disposition", "content_type"),
    [
        ("attachment; filename=minutes.txt", "text/plain"),  # sent to be saved
        ("", "text/plain"),  # a name alone (Lotus Notes): as before, a file
        ("inline; filename=minutes.txt", "text/html"),  # an HTML file is never drawn as the text
        ("inline; filename=minutes.txt", "text/csv"),
    ],
)
def test_other_named_parts_stay_files_only(disposition: str, content_type: str) -> None:
    text = extract_text(text_file_message(disposition, content_type))
    assert "walrus" not in text.body
    assert [a.filename for a in text.attachments] == ["minutes.txt"]


# --- old Apple Mail and Eudora forms ---------------------------------------------------------

ENRICHED = (
    "<bold>Now</bold> is the time for <italic>all</italic> good men\r\n<smaller>(and <<women>)"
    "</smaller> to\r\n<ignoreme>come</ignoreme>\r\n\r\nto the aid of their\r\n\r\n\r\n"
    "<color><param>red</param>beloved</color> country.\r\n"
)


def test_a_text_enriched_body_is_text_as_rfc_1896_reads_it() -> None:
    content = f"Content-Type: text/enriched\r\n\r\n{ENRICHED}".encode()
    [part] = iter_parts(content)
    assert not part.is_attachment
    # RFC 1896's own example, converted as its reference converter does.
    assert part_text(part) == (
        "Now is the time for all good men (and <women>) to come\n"
        "to the aid of their\n\nbeloved country. "
    )
    richtext = b"Content-Type: text/richtext\r\n\r\nOne<nl>two <lt>3\r\nfour"
    assert part_text(next(iter_parts(richtext))) == "One\ntwo <3 four"


def test_an_enriched_alternative_beside_plain_text_is_not_shown_twice() -> None:
    content = (
        b'Content-Type: multipart/alternative; boundary="a"\r\n\r\n--a\r\n'
        b"Content-Type: text/plain\r\n\r\nNow is the time.\r\n--a\r\n"
        b"Content-Type: text/enriched\r\n\r\n<bold>Now</bold> is the time.\r\n--a--\r\n"
    )
    assert [p.mime_type for p in iter_parts(content)] == ["text/plain"]
    alone = content.replace(b"Content-Type: text/plain", b"Content-Type: image/png")
    assert [p.mime_type for p in iter_parts(alone)] == ["image/png", "text/enriched"]


@pytest.mark.parametrize(
    "form",
    ["text/x-amp-html", "text/watch-html", "text/x-aol", "text/markdown"],
)
def test_other_text_forms_of_an_alternative_are_not_listed_as_attachments(form: str) -> None:
    # Gmail's AMP mail (plain, AMP, HTML), Apple's watch form, AOL's own: one more rendering
    # of the same text, which no reader shows. They were listed as nameless attachments.
    content = (
        b'Content-Type: multipart/alternative; boundary="a"\r\n\r\n--a\r\n'
        b"Content-Type: text/plain\r\n\r\nYour booking.\r\n--a\r\n"
        b"Content-Type: " + form.encode() + b"\r\n\r\n<html>Your booking.</html>\r\n--a\r\n"
        b"Content-Type: text/html\r\n\r\n<p>Your booking.</p>\r\n--a--\r\n"
    )
    assert [p.mime_type for p in iter_parts(content)] == ["text/plain", "text/html"]
    assert extract_text(content).attachments == ()
    # Named, or marked as an attachment, it is a file the sender attached: still listed.
    named = content.replace(form.encode(), form.encode() + b'; name="booking.txt"')
    assert [p.filename for p in iter_parts(named) if p.is_attachment] == ["booking.txt"]


@pytest.mark.parametrize(
    ("fields", "name"),
    [
        ('Content-Type: image/jpeg; name="=?UTF-8?B?U3RyYcOfZS5qcGc=?="', "Straße.jpg"),
        ("Content-Type: image/jpeg; name==?iso-8859-1?Q?Stra=DFe.jpg?=", "Straße.jpg"),
        ('Content-Type: image/jpeg; name="=?UTF-8?Q?Gro=C3=9Fe?= =?UTF-8?Q?_Stra=C3=9Fe.jpg?="',
         "Große Straße.jpg"),
        ("Content-Type: image/jpeg; name*=utf-8''Stra%C3%9Fe.jpg", "Straße.jpg"),
        ('Content-Type: image/jpeg\r\nContent-Disposition: attachment;\r\n'
         ' filename="=?UTF-8?B?U3RyYcOfZS5qcGc=?="', "Straße.jpg"),
        ('Content-Type: image/jpeg; name="C:\\Documents\\Photos\\Haus.jpg"', "Haus.jpg"),
        ('Content-Type: image/jpeg; name="../../.ssh/id_rsa"', "id_rsa"),
        ('Content-Type: image/jpeg; name="Photos/"', "Photos/"),
        # Long names split in RFC 2231 continuations, plain (Thunderbird, ASCII names) or
        # encoded, in any order; the plain pieces were read as a parameter "name*0".
        ('Content-Type: image/jpeg\r\nContent-Disposition: attachment;\r\n'
         ' filename*0="Holiday photos from the ";\r\n filename*1="lake, 2026.jpg"',
         "Holiday photos from the lake, 2026.jpg"),
        ('Content-Type: image/jpeg;\r\n name*1="Haus.jpg";\r\n name*0="Unser "', "Unser Haus.jpg"),
        ("Content-Type: image/jpeg\r\nContent-Disposition: attachment;\r\n"
         " filename*0*=utf-8''Gro%C3%9Fe;\r\n filename*1=\" Stra\";\r\n filename*2*=%C3%9Fe.jpg",
         "Große Straße.jpg"),
        # Both forms (the plain one for readers without RFC 2231): the exact one is meant.
        ("Content-Type: image/jpeg\r\nContent-Disposition: attachment;\r\n"
         " filename=\"Strasse.jpg\"; filename*=utf-8''Stra%C3%9Fe.jpg", "Straße.jpg"),
        ("Content-Type: image/jpeg\r\nContent-Disposition: attachment;\r\n"
         " filename*=utf-8''Stra%C3%9Fe.jpg; filename=\"Strasse.jpg\"", "Straße.jpg"),
    ],
)  # fmt: skip
def test_a_file_name_is_decoded_and_shown_without_folders(fields: str, name: str) -> None:
    # Apple Mail and Lotus Notes name a file only in Content-Type, in encoded words as Outlook
    # and Gmail also write them; Outlook Express and Notes sent the folders too.
    content = (
        'Content-Type: multipart/mixed; boundary="m"\r\n\r\n--m\r\n'
        "Content-Type: text/plain\r\n\r\nA photo.\r\n--m\r\n"
        f"{fields}\r\n\r\nJPEG\r\n--m--\r\n"
    ).encode()
    assert [a.filename for a in extract_text(content).attachments] == [name]


@pytest.mark.parametrize(
    "content_type",
    ["multipart/mixed", 'multipart/mixed; boundary="never-used"', "multipart/alternative;"],
)
def test_a_multipart_without_a_delimited_part_shows_its_text(content_type: str) -> None:
    # No boundary parameter, or one the body never uses (a gateway rewrote the body, a client
    # wrote it so): the body is the text there is, as mail clients show it. It was a nameless
    # "multipart/mixed" attachment and no text.
    content = (
        f"Content-Type: {content_type}\r\n\r\nHi there,\r\nthis is the dingus fish.\r\n"
    ).encode()
    text = extract_text(content)
    assert (text.body.strip(), text.attachments) == ("Hi there,\r\nthis is the dingus fish.", ())


@pytest.mark.parametrize(
    "content_type", ['multipart/mixed; boundary="BOUNDARY_"', "multipart/alternative"]
)
def test_a_multipart_is_read_by_the_boundary_its_body_uses(content_type: str) -> None:
    # A script that wrote one random boundary into the header and another into the body, or
    # none into the header: the body's delimiter lines (a line "--" and a boundary, then a
    # Content- field) say which. Shown as raw MIME text before.
    content = (
        f"Content-Type: {content_type}\r\n\r\n--BOUNDARY\r\nContent-Type: text/plain\r\n\r\n"
        "message 1\r\n--BOUNDARY\r\nContent-Type: text/html\r\n\r\n<p>message 2</p>\r\n"
        "--BOUNDARY--\r\n"
    ).encode()
    assert [p.mime_type for p in iter_parts(content)] == ["text/plain", "text/html"]
    assert "Content-Type" not in extract_text(content).body


def test_an_empty_nested_multipart_is_no_attachment() -> None:
    # Outlook Express for Macintosh gave a nested multipart/alternative its parent's boundary:
    # the nested one is cut empty, its alternatives become the parent's parts. A nested
    # multipart holding only its close delimiter is nothing either.
    content = (
        b'Content-Type: multipart/mixed; boundary="X"\r\n\r\n--X\r\n'
        b'Content-Type: multipart/alternative; boundary="X"\r\n\r\n\r\n--X\r\n'
        b"Content-Type: text/plain\r\n\r\nSome text.\r\n--X\r\n"
        b'Content-Type: multipart/mixed; boundary="Y"\r\n\r\n--Y--\r\n--X--\r\n'
    )
    text = extract_text(content)
    assert (text.body.strip(), text.attachments) == ("Some text.", ())


def test_a_calendar_alternative_is_kept_beside_plain_text_and_html() -> None:
    content = (
        b'Content-Type: multipart/alternative; boundary="a"\r\n\r\n--a\r\n'
        b"Content-Type: text/plain\r\n\r\nMeeting.\r\n--a\r\n"
        b"Content-Type: text/html\r\n\r\n<p>Meeting.</p>\r\n--a\r\n"
        b"Content-Type: text/calendar; method=REQUEST\r\n\r\nBEGIN:VCALENDAR\r\n"
        b"END:VCALENDAR\r\n--a--\r\n"
    )
    assert [p.mime_type for p in iter_parts(content)][-1] == "text/calendar"


def test_an_appledouble_file_is_its_data_without_the_resource_fork() -> None:
    content = (
        b'Content-Type: multipart/mixed; boundary="m"\r\n\r\n--m\r\n'
        b"Content-Type: text/plain\r\n\r\nThe report.\r\n--m\r\n"
        b'Content-Type: multipart/appledouble; boundary="d"\r\n\r\n--d\r\n'
        b'Content-Type: application/applefile; name="report.pdf"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\nAAUWBwACAAA=\r\n--d\r\n"
        b'Content-Type: application/pdf; name="report.pdf"\r\n\r\n%PDF-1.4\r\n--d--\r\n--m--\r\n'
    )
    parts = list(iter_parts(content))
    assert [(p.number, p.mime_type, p.filename) for p in parts] == [
        (1, "text/plain", ""),
        (2, "application/pdf", "report.pdf"),
    ]
    fork_only = content.replace(b"application/pdf", b"application/applefile")
    assert len(list(iter_parts(fork_only))) == 3  # nothing else holds it: every part kept


def test_a_preview_is_the_first_words_of_the_text_without_the_message_it_answers() -> None:
    body = (
        "Hello Bob,\n\nyes, Friday suits me.\n\nOn Monday, Alice wrote:\n"
        "> Shall we meet on Friday?\n>> Older words\n \t> indented quote\n\nAlice"
    )
    assert preview(body) == "Hello Bob, yes, Friday suits me. On Monday, Alice wrote: Alice"
    assert preview("") == ""
    assert preview("> only quoted\n> text") == ""


def test_a_long_text_is_cut_at_a_word_and_the_cut_is_marked() -> None:
    body = "The quarterly figures are attached. " * 20
    shown = preview(body, limit=40)
    assert shown == "The quarterly figures are attached. The …"
    assert len(shown) <= 42
    assert preview("x" * 500, limit=40) == "x" * 39 + "…"  # one word longer than the limit
    assert preview("a few words", limit=40) == "a few words"


def test_a_preview_drops_controls_and_the_invisible_padding_of_newsletters() -> None:
    # Newsletters follow their teaser with zero-width non-joiners and combining grapheme
    # joiners so that a list shows nothing of the text after it; a bidirectional override
    # would turn the rest of the row around.
    padded = "Winter sale starts today" + " \u200c\u034f" * 80 + "\nDear customer"
    assert preview(padded) == "Winter sale starts today Dear customer"
    assert preview("Invoice\u202e fdp.exe\x1b[2J paid") == "Invoice fdp.exe [2J paid"


def test_a_preview_reads_only_the_start_of_a_long_body() -> None:
    # A megabyte of text costs the lines the preview needs (the words after the limit are
    # never split), and a megabyte of quoted lines one pass over them.
    assert preview("word " * 200_000).startswith("word word")
    assert preview("> quoted line\n" * 70_000 + "mine") == "mine"


DIGEST = (
    b'Subject: list digest\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="o"'
    b"\r\n\r\n--o\r\nContent-Type: text/plain\r\n\r\nToday's topics: 1. Lunch 2. Budget\r\n"
    b'--o\r\nContent-Type: multipart/digest; boundary="d"\r\n\r\n'
    # A digest's part without a Content-Type is a message (RFC 2046 section 5.1.5) ...
    b"--d\r\n\r\nFrom: Alice <alice@example.org>\r\nDate: Mon, 7 Dec 2026 10:00:00 +0100\r\n"
    b"Subject: Lunch\r\n\r\nNoodles at noon?\r\n"
    # ... and one that says so is one too, whatever it holds.
    b"--d\r\nContent-Type: message/rfc822\r\n\r\nFrom: =?utf-8?q?J=C3=B6rg?= <j@example.org>\r\n"
    b'Subject: Budget\r\nContent-Type: multipart/alternative; boundary="a"\r\n\r\n'
    b"--a\r\nContent-Type: text/plain\r\n\r\nSee figures.\r\n"
    b"--a\r\nContent-Type: text/html\r\n\r\n<p>See figures.</p>\r\n--a--\r\n--d--\r\n--o--\r\n"
)


def test_each_message_of_a_digest_is_headed_by_its_own_fields() -> None:
    parts = list(iter_parts(DIGEST))
    assert [(p.number, p.mime_type, p.heading) for p in parts] == [
        (1, "text/plain", ()),
        (2, "text/plain", (("From", "Alice <alice@example.org>"),
                           ("Date", "Mon, 7 Dec 2026 10:00:00 +0100"), ("Subject", "Lunch"))),
        (3, "text/plain", (("From", "Jörg <j@example.org>"), ("Subject", "Budget"))),
        (4, "text/html", ()),  # the other form of the same body: headed once
    ]  # fmt: skip
    assert parts[1].data == b"Noodles at noon?"  # the message's text, not its header
    body = extract_text(DIGEST).body
    assert "From: Alice <alice@example.org>\nDate: Mon, 7 Dec 2026" in body
    assert "From: Jörg <j@example.org>\nSubject: Budget\n\nSee figures." in body


def test_only_a_message_inside_the_content_is_headed() -> None:
    # Content that is itself a message/rfc822 (a wrapped message, as some clients sign or
    # encrypt) shows its fields as the message's own: no heading of its own.
    wrapped = b"Content-Type: message/rfc822\r\n\r\nFrom: a@example.org\r\nSubject: s\r\n\r\nHi\r\n"
    assert [p.heading for p in iter_parts(wrapped)] == [()]
    # A message forwarded inline, as mutt and KMail attach it, is headed; one forwarded as an
    # attachment is an attachment (the reader opens it with its own verdict).
    forward = (
        b'Content-Type: multipart/mixed; boundary="m"\r\n\r\n--m\r\nContent-Type: text/plain\r\n'
        b"\r\nFYI\r\n--m\r\nContent-Type: message/rfc822\r\nContent-Disposition: inline\r\n\r\n"
        b"From: b@example.org\r\nSubject: Old\r\n\r\nThe old words.\r\n--m--\r\n"
    )
    assert [p.heading for p in iter_parts(forward)] == [
        (),
        (("From", "b@example.org"), ("Subject", "Old")),
    ]
    # A signed (or encrypted) message forwarded inline is an attachment too: its text would
    # otherwise stand in place, under the verdict of the message carrying it.
    signed = forward.replace(
        b"Subject: Old\r\n\r\nThe old words.\r\n",
        b'Subject: Old\r\nContent-Type: multipart/signed; protocol="application/pkcs7-signature";'
        b' boundary="s"\r\n\r\n--s\r\n\r\nThe old words.\r\n--s\r\n'
        b"Content-Type: application/pkcs7-signature\r\n\r\nMIAGCSqGSIb3DQEHAq\r\n--s--\r\n",
    )
    assert [(p.mime_type, p.is_attachment) for p in iter_parts(signed)][1:] == [
        ("message/rfc822", True)
    ]
    attached = forward.replace(b"Disposition: inline", b"Disposition: attachment")
    assert [(p.mime_type, p.heading) for p in iter_parts(attached)][1] == ("message/rfc822", ())


# Apple Mail sends a picture placed in the text as multipart/alternative of the plain text and a
# multipart/mixed of the HTML before the picture, the picture, and the HTML after it.
APPLE_SPLIT = (
    b'Content-Type: multipart/alternative; boundary="Apple-Mail=_A"\r\n\r\n'
    b"--Apple-Mail=_A\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
    b"Here is the view from the hotel.\r\n\r\n\r\nWish you were here.\r\n"
    b'--Apple-Mail=_A\r\nContent-Type: multipart/mixed; boundary="Apple-Mail=_B"\r\n\r\n'
    b"--Apple-Mail=_B\r\nContent-Type: text/html; charset=us-ascii\r\n\r\n"
    b"<html><body><div>Here is the view from the hotel.</div><div></div></body></html>\r\n"
    b"--Apple-Mail=_B\r\nContent-Disposition: inline; filename=view.jpg\r\n"
    b'Content-Type: image/jpeg; name="view.jpg"\r\nContent-Transfer-Encoding: base64\r\n\r\n'
    b"/9j/4AAQSkZJRg==\r\n"
    b"--Apple-Mail=_B\r\nContent-Type: text/html; charset=us-ascii\r\n\r\n"
    b"<html><body><div></div><div>Wish you were here.</div></body></html>\r\n"
    b"--Apple-Mail=_B--\r\n--Apple-Mail=_A--\r\n"
)


def test_an_html_body_split_around_a_picture_is_one_body_with_one_plain_form() -> None:
    parts = list(iter_parts(APPLE_SPLIT))
    assert [(p.number, p.mime_type, p.alternative) for p in parts] == [
        (1, "text/plain", (1, 0)),
        (2, "text/html", (1, 1)),
        (3, "image/jpeg", (1, 1)),
        (4, "text/html", (1, 1)),
    ]
    plain = parts[0]
    assert body_forms(parts) == [(parts[1], plain), (parts[3], plain)]
    shown = shown_text(parts)
    assert shown.count("view from the hotel") == 1 and shown.count("Wish you were here") == 1
    assert preview(shown) == "Here is the view from the hotel. Wish you were here."
    # Search still finds the words of every part.
    assert extract_text(APPLE_SPLIT).body.count("Wish you were here") == 2


def test_of_a_multipart_alternative_the_last_html_form_is_shown_with_the_plain_one() -> None:
    def alternative(*forms: bytes) -> bytes:
        return (
            b'Content-Type: multipart/alternative; boundary="a"\r\n\r\n'
            + b"".join(b"--a\r\n" + form for form in forms)
            + b"--a--\r\n"
        )

    plain = b"Content-Type: text/plain\r\n\r\nSee you at noon.\r\n"
    html = b"Content-Type: text/html\r\n\r\n<p>See you at <b>noon</b>.</p>\r\n"
    older = b"Content-Type: text/html\r\n\r\n<p>See you at noon (old form).</p>\r\n"
    shown = [
        (part.number, plain and plain.number) for part, plain in _forms(alternative(plain, html))
    ]
    assert shown == [(2, 1)]
    # The plain text after the HTML (the wrong order some scripts write) is still its plain form.
    assert [(p.number, q and q.number) for p, q in _forms(alternative(html, plain))] == [(1, 2)]
    # Of several HTML forms the last is the best (RFC 2046 5.1.4): only it is shown.
    assert [(p.number, q and q.number) for p, q in _forms(alternative(plain, older, html))] == [
        (3, 1)
    ]
    assert "old form" not in shown_text(list(iter_parts(alternative(plain, older, html))))
    # Without HTML every form is a body of its own, as before.
    second = b"Content-Type: text/plain\r\n\r\nA second text.\r\n"
    assert [(p.number, q) for p, q in _forms(alternative(plain, second))] == [(1, None), (2, None)]


def _forms(content: bytes) -> list[tuple[Part, Part | None]]:
    return body_forms(list(iter_parts(content)))


def test_outside_an_alternative_a_plain_part_before_an_html_one_is_its_plain_form() -> None:
    # Outlook's winmail.dat gives its HTML body after the plain text sent beside it.
    parts = [
        Part(1, "text/plain", "", False, b"Hello"),
        Part(2, "text/html", "", False, b"<p>Hello</p>"),
        Part(3, "text/plain", "", False, b"Footer"),
    ]
    assert body_forms(parts) == [(parts[1], parts[0]), (parts[2], None)]


def test_a_digest_part_that_is_no_message_is_kept_and_an_empty_multipart_is_empty() -> None:
    # Found by the fuzzer: a digest part with no Content-Type whose first line is no header
    # field cannot be read as a message; it is kept as the part it is (here a download).
    digest = (
        b'Content-Type: multipart/digest; boundary="d"\r\n\r\n'
        b"--d\r\n\x00\x00\r\nFrom: x\r\n\r\nbody\r\n--d--\r\n"
    )
    [part] = iter_parts(digest)
    assert b"From: x" in part.data and b"body" in part.data
    # A multipart whose every part is left out (headers over the limit) holds no part.
    huge = b"X-Long: " + b"a" * 300_000 + b"\r\n"
    empty = (
        b'Content-Type: multipart/mixed; boundary="m"\r\n\r\n--m\r\n' + huge + b"\r\nx\r\n--m--\r\n"
    )
    assert list(iter_parts(empty)) == []


def test_only_pictures_an_html_body_draws_by_content_id_or_location_are_inline() -> None:
    # Brackets and case do not count in a cid: URL (RFC 2392), as the reader resolves it; Word
    # and Lotus Notes name a picture by its Content-Location (RFC 2557) instead.
    message = (
        b"MIME-Version: 1.0\r\nContent-Type: multipart/related; boundary=r\r\n\r\n"
        b'--r\r\nContent-Type: text/html\r\n\r\n<img src="cid:<Logo@X>"><img src=CID:chart@x>'
        b'<img width=40 src="file:///C:/Temp/image002.gif">'
        b'<a href="cid:doc@x">the contract</a>\r\n'
        b"--r\r\nContent-Type: image/png\r\nContent-ID: <logo@x>\r\n\r\nPNG\r\n"
        b"--r\r\nContent-Type: image/gif\r\nContent-ID: <Chart@X>\r\n\r\nGIF\r\n"
        b"--r\r\nContent-Type: image/gif\r\nContent-Location: file:///C:/Temp/image002.gif\r\n"
        b"\r\nGIF\r\n"
        b"--r\r\nContent-Type: image/jpeg; name=holiday.jpg\r\nContent-ID: <photo@x>\r\n\r\nJPG\r\n"
        b"--r\r\nContent-Type: application/pdf; name=contract.pdf\r\nContent-ID: <doc@x>\r\n\r\n"
        b"%PDF\r\n--r--\r\n"
    )
    attachments = extract_text(message).attachments
    assert [(a.mime_type, a.inline) for a in attachments] == [
        ("image/png", True),
        ("image/gif", True),
        ("image/gif", True),
        ("image/jpeg", False),  # named by no cid: URL: a photo sent along
        ("application/pdf", False),  # a document, even one the HTML links to
    ]

"""The reader's pages over plain HTTP (a signed-in session): protected headers win over the
outer ones and say so, a partially encrypted message is flagged in the list and explained, the
status and outbox pages show the accounts and the queue, and a certificate file can be
imported."""

from __future__ import annotations

import base64
import datetime as dt
import html
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from smime_companion import runtime
from smime_companion.cli import main
from smime_companion.reader.dates import in_list, shown_header_date
from smime_companion.testing.pki import PKCS12_PASSWORD, TestPki
from tests.reader_world import World, encrypted, make_world, message, signed, text_entity
from tests.tools import mime_message, openssl_cms


def _sealed_with_header_protection(pki: TestPki, tmp_path: Path, now: dt.datetime) -> bytes:
    draft = tmp_path / "draft.eml"
    draft.write_bytes(mime_message("The real subject is inside.\r\n", subject="Salary review"))
    out = tmp_path / "sealed.eml"
    code = main(["seal", str(draft), "-o", str(out), "--p12", str(pki.p12("alice")),
                 "--p12-password-env", "READER_P12_PASSWORD", "--to-cert",
                 str(pki.cert("bob"))])  # fmt: skip
    assert code == 0
    return out.read_bytes()


def _partially_encrypted(pki: TestPki, now: dt.datetime) -> bytes:
    inner = encrypted(pki, text_entity("someone else's secret"))
    body = (
        b"Content-Type: multipart/mixed; boundary=P\r\n\r\n--P\r\n"
        + text_entity("Please read the attached and click my link.")
        + b"--P\r\n" + inner + b"\r\n--P--\r\n"
    )  # fmt: skip
    return message("Mallory <mallory@example.net>", "Wrapped", now, body, "wrapped")


PDF = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n<< /Length 4 >>\nstream\n\x00\x01\x02\x03\nendstream\n"


def _signed_document(pki: TestPki, now: dt.datetime) -> bytes:
    """A signed PDF as Italian certified mail carries it: contract.pdf.p7m, no MIME inside."""
    p7m = openssl_cms(["-sign", "-nodetach", "-binary", "-outform", "DER", "-signer",
                       pki.cert("alice"), "-inkey", pki.key("alice"), "-certfile",
                       pki.intermediate], PDF)  # fmt: skip
    body = (
        b'Content-Type: application/pkcs7-mime; smime-type=signed-data; name="contract.pdf.p7m"'
        b"\r\nContent-Transfer-Encoding: base64\r\n\r\n" + base64.encodebytes(p7m)
    )
    return message("Alice <alice@example.org>", "The contract", now, body, "contract")


def _forwarded(pki: TestPki, now: dt.datetime, altered: bool, inline: bool = False) -> bytes:
    """Carol forwards, as an attachment, a message Alice signed (its text changed on the way
    when ``altered``); ``inline``: as mutt and KMail forward, the message shown in place."""
    words = signed(pki, "alice", text_entity("The forwarded words."))
    original = message("Alice <alice@example.org>", "The original", now, words, "original")
    if altered:
        original = original.replace(b"forwarded words", b"forwarded lies.")
    body = (
        b"Content-Type: multipart/mixed; boundary=F\r\n\r\n--F\r\n"
        + text_entity("See the attached message.")
        + b"--F\r\nContent-Type: message/rfc822\r\n"
        + (b"Content-Disposition: inline\r\n\r\n" if inline else
           b'Content-Disposition: attachment; filename="original.eml"\r\n\r\n')
        + original + b"\r\n--F--\r\n"
    )  # fmt: skip
    tag = f"fwd{altered}{inline}"
    return message("Carol <carol@example.org>", "Fwd: the original", now, body, tag)


def _disguised_attachment(now: dt.datetime) -> bytes:
    """An attachment whose name holds a right-to-left override: "invoice", U+202E, "gpj.exe"
    is displayed as "invoiceexe.jpg" wherever the character takes effect."""
    body = (
        b"Content-Type: multipart/mixed; boundary=D\r\n\r\n--D\r\n"
        + text_entity("The invoice is attached.")
        + b"--D\r\nContent-Type: application/octet-stream\r\n"
        + b"Content-Disposition: attachment; filename*=utf-8''invoice%E2%80%AEgpj.exe\r\n"
        + b"Content-Transfer-Encoding: base64\r\n\r\nTVqQAAMAAAAEAAAA\r\n"
        + b"--D\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; "
        + b"filename*=utf-8''%D0%BE%D1%82%D1%87%D1%91%D1%82.pdf\r\n\r\n%PDF-1.4\r\n--D--\r\n"
    )  # fmt: skip
    return message("Mallory <mallory@example.net>", "Invoice", now, body, "disguised")


def _outlook_rich_text(pki: TestPki, now: dt.datetime) -> bytes:
    """Outlook's Rich Text mail, signed and encrypted: the plain text, then winmail.dat (a TNEF
    sample Outlook wrote; its HTML body wrapped in compressed RTF, three files), then a meeting
    invitation as Outlook sends one (a text/calendar part without a name)."""
    tnef = (Path(__file__).parent / "vectors" / "tnef" / "umlaut.tnef").read_bytes()
    entity = (
        b"Content-Type: multipart/mixed; boundary=W\r\n\r\n--W\r\n"
        + text_entity("TEST \u00e4\u00f6\u00fc +-*/~")
        + b'--W\r\nContent-Type: application/ms-tnef; name="winmail.dat"\r\n'
        + b"Content-Transfer-Encoding: base64\r\n\r\n"
        + base64.encodebytes(tnef).replace(b"\n", b"\r\n")
        + b"--W\r\nContent-Type: text/calendar; method=REQUEST; charset=utf-8\r\n\r\n"
        + b"BEGIN:VCALENDAR\r\nMETHOD:REQUEST\r\nVERSION:2.0\r\nBEGIN:VEVENT\r\n"
        + b'ORGANIZER;CN="M\xc3\xbcller, J\xc3\xb6rg":mailto:jm@example.de\r\n'
        + b"SUMMARY;LANGUAGE=de-DE:Quartalszahlen\\, Entwurf\r\n"
        + b"DTSTART;TZID=W. Europe Standard Time:20261207T100000\r\n"
        + b"DTEND;TZID=W. Europe Standard Time:20261207T110000\r\nLOCATION:Raum 4.12 /\r\n"
        + b"  Teams\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n--W--\r\n"
    )  # fmt: skip
    return message("Alice <alice@example.org>", "Rich text", now,
                   encrypted(pki, signed(pki, "alice", entity)), "richtext")  # fmt: skip


@pytest.fixture()
def world(
    tmp_path: Path, pki: TestPki, now: dt.datetime, monkeypatch: pytest.MonkeyPatch
) -> Iterator[World]:
    monkeypatch.setenv("READER_P12_PASSWORD", PKCS12_PASSWORD)
    mail = [
        _sealed_with_header_protection(pki, tmp_path, now),
        _partially_encrypted(pki, now),
        _signed_document(pki, now),
        _forwarded(pki, now, altered=False),
        _forwarded(pki, now, altered=True),
        _disguised_attachment(now),
        message(
            '"alice@example.org" <mallory@example.net>',
            "Spoofed name",
            now,
            text_entity("Trust me."),
            "spoofed",
        ),  # fmt: skip
        _outlook_rich_text(pki, now),
        _forwarded_inline(pki, now),
        # Sent by the user (Bob, the reader's identity), as the Sent folder holds it.
        b"From: Bob <bob@example.org>\r\nTo: Carol <carol@example.org>, dave@example.org\r\n"
        b"Subject: Sent by me\r\nDate: Fri, 4 Dec 2026 08:00:00 +0000\r\n\r\nHi Carol\r\n",
        _forwarded(pki, now, altered=True, inline=True),
        # "аррӏе" in Cyrillic letters, which reads "apple".
        message("Apple ID <id@аррӏе.com>", "Locked", now, text_entity("Sign in."), "lookalike"),
        _through_a_mailing_list(pki, now),
        _with_a_text_file(pki, now),
    ]
    yield from make_world(tmp_path, pki, now, mail)


def _with_a_text_file(pki: TestPki, now: dt.datetime) -> bytes:
    """Signed and encrypted: a note and a text file, attached as Apple Mail attaches one
    (inline, under its name)."""
    entity = (
        b'Content-Type: multipart/mixed; boundary="Apple-Mail=_1"\r\n\r\n--Apple-Mail=_1\r\n'
        + text_entity("The log you asked for.")
        + b"--Apple-Mail=_1\r\nContent-Disposition: inline; filename=build.log\r\n"
        + b'Content-Type: text/plain; x-unix-mode=0644; name="build.log"\r\n\r\n'
        + b"error: the walrus is out of memory\r\n--Apple-Mail=_1--\r\n"
    )  # fmt: skip
    sealed = encrypted(pki, signed(pki, "alice", entity))
    return message("Alice <alice@example.org>", "Build log", now, sealed, "log")


def _through_a_mailing_list(pki: TestPki, now: dt.datetime) -> bytes:
    """Alice's signed message as Mailman sends it on: in a multipart/mixed with the list's
    footer after it, the From kept."""
    body = (
        b'Content-Type: multipart/mixed; boundary="===L==="\r\n\r\n--===L===\r\n'
        + signed(pki, "alice", text_entity("The minutes, signed."))
        + b"\r\n--===L===\r\nContent-Type: text/plain\r\n\r\n"
        + b"_______________________________________________\r\nteam mailing list\r\n"
        + b"--===L===--\r\n"
    )  # fmt: skip
    return message("Alice <alice@example.org>", "[team] Minutes", now, body, "list")


def _forwarded_inline(pki: TestPki, now: dt.datetime) -> bytes:
    """Encrypted to Bob: a message forwarded inline as mutt and KMail forward (a message/rfc822
    part shown in place), whose Subject tries to break out of the page."""
    entity = (
        b'Content-Type: multipart/mixed; boundary="m"\r\n\r\n--m\r\n'
        b"Content-Type: text/plain\r\n\r\nFYI, see below.\r\n--m\r\n"
        b"Content-Type: message/rfc822\r\nContent-Disposition: inline\r\n\r\n"
        b"From: Carol <carol@example.org>\r\nDate: Fri, 4 Dec 2026 09:30:00 +0000\r\n"
        b"Subject: Minutes </dd><script>x()</script>\r\n\r\nThe minutes of Friday.\r\n--m--\r\n"
    )
    return message("Alice <alice@example.org>", "Fwd: Minutes", now, encrypted(pki, entity), "fwd")


def _page(world: World, path: str) -> str:
    cookie, _ = world.session()
    status, _, body = world.request("GET", path, {"Cookie": cookie})
    assert status == 200, (path, status)
    return body.decode()


def test_protected_headers_win_and_the_page_says_what_the_outside_said(world: World) -> None:
    page = _page(world, "/message/1")
    assert '<h1 id="subject">Salary review</h1>' in page
    assert "protected</span>" in page
    assert "outside it said: <q>[...]</q>" in page
    listing = _page(world, "/mail")
    assert "Salary review" in listing and "[...]" not in listing
    # seal wrote "Subject: Salary review" atop the text for readers without header protection
    # (RFC 9788's legacy display); this one shows the Subject above, so not in the text again,
    # and a reply does not quote it.
    assert "The real subject is inside." in page
    assert "Subject: Salary review" not in page
    reply = _page(world, "/compose?reply=1")
    assert "The real subject is inside." in reply and "Subject: Salary review" not in reply


def test_a_partially_encrypted_message_is_flagged_and_explained(world: World) -> None:
    listing = _page(world, "/mail")
    assert "partially encrypted" in listing
    page = _page(world, "/message/2")
    assert "Partially encrypted" in page
    assert "The encrypted part is not shown with it" in page
    assert "someone else" not in page  # never joined with the wrapper's text (EFAIL)
    # Opened only on a page of its own, under its own verdict, without the wrapper's words.
    assert "/message/2/smime/1" in page and "Open the encrypted part" in page
    part = _page(world, "/message/2/smime/1")
    assert "someone else&#39;s secret" in part and "click my link" not in part
    assert "Partially encrypted" not in part


def test_status_and_outbox_pages_show_the_accounts_and_the_queue(world: World) -> None:
    status = _page(world, "/status")
    assert "daemon not running" in status and "INBOX" in status
    outbox = _page(world, "/outbox")
    assert "No drafts." in outbox and "Nothing sent yet." in outbox


def test_a_certificate_file_is_imported_from_the_certificates_page(
    world: World, pki: TestPki
) -> None:
    cookie, csrf = world.session()
    boundary = "XyZ"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="csrf"\r\n\r\n{csrf}\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="d.pem"\r\n'
            "Content-Type: application/x-pem-file\r\n\r\n"
        ).encode()
        + pki.chain("dave").read_bytes()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    status, headers, _ = world.request(
        "POST", "/certificates/import",
        {"Cookie": cookie, "Origin": f"http://127.0.0.1:{world.port}",
         "Content-Type": f"multipart/form-data; boundary={boundary}"},
        body,
    )  # fmt: skip
    assert status == 302, headers
    assert "Imported: dave@example.org (anchor)" in headers["Location"].replace("+", " ")
    page = _page(world, "/certificates")
    assert "dave@example.org" in page and "anchor" in page


def test_a_signed_document_is_offered_under_the_name_it_was_sent_as(world: World) -> None:
    # contract.pdf.p7m holds a bare PDF: no MIME header names it, the .p7m's own name does.
    page = _page(world, "/message/3")
    assert "contract.pdf</a>" in page and "valid" in page
    cookie, _ = world.session()
    status, headers, body = world.request("GET", "/message/3/part/1", {"Cookie": cookie})
    assert (status, body) == (200, PDF)
    assert 'filename="contract.pdf"' in headers["Content-Disposition"]


def test_a_file_name_cannot_hide_its_real_extension_behind_a_direction_override(
    world: World,
) -> None:
    page = _page(world, "/message/6")
    assert "\u202e" not in page
    assert "invoice\\u202egpj.exe</a>" in page
    cookie, _ = world.session()
    status, headers, _ = world.request("GET", "/message/6/part/2", {"Cookie": cookie})
    assert status == 200
    # Saved under the name the page showed, never one a file manager would display reversed.
    assert "%E2%80%AE" not in headers["Content-Disposition"]
    assert "invoice%5Cu202egpj.exe" in headers["Content-Disposition"]


def test_a_file_named_in_cyrillic_downloads_under_its_name(world: World) -> None:
    cookie, _ = world.session()
    status, headers, body = world.request("GET", "/message/6/part/3", {"Cookie": cookie})
    # The plain filename was built with str.isalnum, true for Cyrillic: the server could not
    # encode the header and answered 500.
    assert (status, body) == (200, b"%PDF-1.4")
    disposition = headers["Content-Disposition"]
    assert disposition.isascii()
    assert "filename*=UTF-8''%D0%BE%D1%82%D1%87%D1%91%D1%82.pdf" in disposition


def test_a_sender_name_that_holds_an_address_is_listed_as_the_real_address(
    world: World,
) -> None:
    listing = _page(world, "/mail")
    sender_cell = r'<td class="from">(?:<span[^>]*>[^<]*</span>)?([^<]*)</td>\s*'
    row = re.search(sender_cell + r'<td class="subject"><a[^>]*>Spoofed name<', listing)
    assert row is not None
    assert row.group(1) == "mallory@example.net"
    # The message itself shows the whole field, name and address.
    assert "&#34;alice@example.org&#34; &lt;mallory@example.net&gt;" in _page(world, "/message/7")


def test_a_look_alike_address_is_named_and_shown_as_browsers_show_it(world: World) -> None:
    page = _page(world, "/message/12")
    assert "Apple ID &lt;id@аррӏе.com&gt; (id@xn--80ak6aa92e.com)" in page
    assert "Look-alike address" in page and "look-alike address" in _page(world, "/mail")


def test_a_signed_message_a_mailing_list_wrapped_opens_on_its_own_with_its_verdict(
    world: World,
) -> None:
    # Mailman puts a signed message and its footer in a multipart/mixed: the message as a whole
    # is only partly signed (the footer could say anything), and the signed part opens on a
    # page of its own, under the message's From, with its own verdict.
    page = _page(world, "/message/13")
    assert "partially signed" in page and "/message/13/smime/1" in page
    assert "Signed by alice@example.org: valid" not in page
    part = _page(world, "/message/13/smime/1")
    assert "Signed by alice@example.org: valid" in part
    assert "The minutes, signed." in part and "team mailing list" not in part
    cookie, _ = world.session()
    assert world.request("GET", "/message/13/smime/2", {"Cookie": cookie})[0] == 404
    assert "/smime/" not in _page(world, "/message/4")  # an attached message opens as such


def test_a_message_forwarded_as_an_attachment_opens_with_its_own_verdict(world: World) -> None:
    page = _page(world, "/message/4")
    link = re.search(r'href="(/message/4/attached/(\d+))"', page)
    assert link is not None, "no link to open the attached message"
    attached = _page(world, link.group(1))
    assert '<h1 id="subject">The original</h1>' in attached
    assert "The forwarded words." in attached
    assert "Signed by alice@example.org: valid" in attached
    # Changed on the way: its own verdict says so (the message carrying it is not signed).
    altered = _page(world, f"/message/5/attached/{link.group(2)}")
    assert "forwarded lies." in altered
    assert "Signed by alice@example.org: valid" not in altered
    assert "Signed by alice@example.org: invalid" in altered


def test_a_signed_message_forwarded_inline_opens_with_its_own_verdict_not_in_place(
    world: World,
) -> None:
    # Shown in place, Alice's changed words would stand on Carol's page with no verdict of
    # their own; as an attachment they open under Alice's (invalid) signature.
    page = _page(world, "/message/11")
    assert "forwarded lies." not in page and "smime.p7s" not in page
    link = re.search(r'href="(/message/11/attached/(\d+))"', page)
    assert link is not None, "no link to open the forwarded message"
    attached = _page(world, link.group(1))
    assert "forwarded lies." in attached
    assert "Signed by alice@example.org: invalid" in attached


def test_only_a_whole_message_part_opens_as_one(world: World) -> None:
    cookie, _ = world.session()
    for path in ("/message/4/attached/1", "/message/3/attached/1", "/message/99/attached/2"):
        status, _, _ = world.request("GET", path, {"Cookie": cookie})
        assert status == 404, path


def test_outlook_rich_text_shows_what_winmail_dat_holds(world: World) -> None:
    page = _page(world, "/message/8")
    assert "valid" in page and "winmail.dat" not in page
    for name in ("TBZ PARIV GmbH.jpg", "UmlautAnhang-\u00e4\u00fc\u00f6.txt"):
        assert f"{html.escape(name)}</a>" in page
    # The HTML Outlook wrapped in RTF is the body (its plain text one step away), and its
    # inline picture is drawn from the file Outlook sent with it.
    assert '/message/8/html/2"' in page
    assert 'class="html-body medium"' in page  # a line and a picture: no window-high frame
    frame = _page(world, "/message/8/html/2")
    assert "data:image/jpeg;base64," in frame and "\u00e4\u00f6\u00fc" in frame
    cookie, _ = world.session()
    status, headers, body = world.request("GET", "/message/8/part/5", {"Cookie": cookie})
    assert (status, body) == (200, b"TEST \xe4\xf6\xfc +-*/~")  # Windows-1252, as sent


def test_a_picture_the_html_draws_is_listed_with_the_attachments_only_in_the_text_view(
    world: World,
) -> None:
    # image003.jpg is the logo Outlook's HTML draws by its cid (as every Outlook signature
    # does): webmail does not list it again; the text view draws nothing, so lists it.
    assert "image003.jpg</a>" not in _page(world, "/message/8")
    assert "image003.jpg</a>" in _page(world, "/message/8?view=text")


def test_a_picture_the_scanner_found_infected_is_never_drawn_and_stays_listed(
    world: World,
) -> None:
    with runtime.open_cache(world.config) as cache:
        cache.record_scan(8, "clean", {4: "infected:Eicar-Test-Signature"})
    frame = _page(world, "/message/8/html/2")
    assert "data:image/jpeg;base64," not in frame
    page = _page(world, "/message/8")
    assert "image003.jpg</a>" in page and "infected:Eicar-Test-Signature" in page


def test_an_attached_photo_is_shown_as_a_picture_under_the_text(world: World) -> None:
    # The Rich Text message's winmail.dat holds a JPEG that Outlook typed
    # application/octet-stream (part 3), the logo its HTML draws (part 4) and a text file.
    page = _page(world, "/message/8")
    assert '<img src="/message/8/picture/3"' in page
    assert "/message/8/picture/4" not in page  # drawn by the HTML body already
    cookie, _ = world.session()
    status, headers, body = world.request("GET", "/message/8/picture/3", {"Cookie": cookie})
    assert status == 200 and body.startswith(b"\xff\xd8\xff")
    # Served as what its bytes are, never as what the sender said, and never sniffed.
    assert headers["Content-Type"] == "image/jpeg"
    assert headers["X-Content-Type-Options"] == "nosniff"
    for path in ("/message/8/picture/5", "/message/6/picture/2", "/message/8/picture/99"):
        status, _, _ = world.request("GET", path, {"Cookie": cookie})
        assert status == 404, path


def test_a_text_file_sent_inline_is_shown_under_its_name_and_listed(world: World) -> None:
    page = _page(world, "/message/14")
    caption = 'Attached text file <a href="/message/14/part/2" download>build.log</a>'
    assert caption in page
    assert page.index("The log you asked for.") < page.index(caption)
    assert page.index(caption) < page.index("the walrus is out of memory")
    assert page.count("build.log") == 2  # the caption and the attachments table
    cookie, _ = world.session()
    status, headers, body = world.request("GET", "/message/14/part/2", {"Cookie": cookie})
    assert status == 200 and body == b"error: the walrus is out of memory"
    assert "filename*=UTF-8''build.log" in headers["Content-Disposition"]
    listed = _page(world, "/mail?q=walrus")
    assert "Build log" in listed  # the file's words are searched with the text


def test_an_invitation_is_shown_as_a_card_above_the_text(world: World) -> None:
    page = _page(world, "/message/8")
    found = re.search(r'<section class="invitation".*?</section>', page, re.S)
    assert found is not None
    card = found.group()
    assert "Invitation: Quartalszahlen, Entwurf" in card
    assert "2026-12-07 10:00 (W. Europe Standard Time) to 2026-12-07 11:00" in card
    assert "Raum 4.12 / Teams" in card  # a folded line, unfolded
    assert html.escape("Müller, Jörg <jm@example.de>") in card


def test_a_nameless_invitation_downloads_under_a_name_a_calendar_opens(world: World) -> None:
    cookie, _ = world.session()
    status, headers, body = world.request("GET", "/message/8/part/6", {"Cookie": cookie})
    assert status == 200 and body.startswith(b"BEGIN:VCALENDAR")
    assert 'filename="part-6.ics"' in headers["Content-Disposition"]


def test_each_row_of_a_list_shows_the_first_words_of_its_text(world: World) -> None:
    listing = _page(world, "/mail")
    previews = dict(
        re.findall(
            r'<a href="/message/(\d+)[^"]*">[^<]*</a>[^\n]*?<span class="preview">([^<]*)<', listing
        )
    )
    # Decrypted for the list as for the page: the header-protected message's words, without
    # the legacy display of its Subject written above them for other readers.
    assert previews["1"] == "The real subject is inside."
    assert previews["7"] == "Trust me."
    # Outlook's Rich Text: the HTML inside its winmail.dat, once, though the plain text beside
    # it says the same.
    assert previews["8"] == "TEST äöü +-*/~"


def test_a_list_dates_mail_as_webmail_does_in_the_time_zone_of_the_machine(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TZ", "CET-1CEST,M3.5.0,M10.5.0/3")  # Berlin's rule, without tzdata
    time.tzset()
    try:
        now = dt.datetime(2026, 12, 7, 0, 30, tzinfo=dt.UTC)  # 01:30 in Berlin

        def at(*when: int) -> dt.datetime:
            return dt.datetime(*when, tzinfo=dt.UTC)

        assert in_list(at(2026, 12, 6, 23, 15), now) == "00:15"  # today there, not in UTC
        assert in_list(at(2026, 12, 6, 22, 15), now) == "6 Dec"
        assert in_list(at(2025, 12, 31, 23, 30), now) == "1 Jan"  # this year there
        assert in_list(at(2025, 6, 1, 12, 0), now) == "2025-06-01"
        # A message's Date field in full, in the same zone; as it came when it is no date.
        assert shown_header_date("Mon, 07 Dec 2026 01:20:45 +0000") == "7 Dec 2026, 02:20 CET"
        assert shown_header_date("yesterday-ish") == "yesterday-ish"
    finally:
        monkeypatch.undo()
        time.tzset()


def test_a_message_forwarded_inline_is_shown_under_its_own_header(world: World) -> None:
    page = _page(world, "/message/9")
    heading = re.search(r'<dl class="embedded-heading"[^>]*>(.*?)</dl>', page, re.S)
    assert heading is not None
    fields = dict(re.findall(r"<dt>([^<]*)</dt><dd>(?:<time[^>]*>)?([^<]*)<", heading.group(1)))
    assert fields == {
        "From": "Carol &lt;carol@example.org&gt;",
        "Date": shown_header_date("Fri, 4 Dec 2026 09:30:00 +0000"),
        "Subject": "Minutes &lt;/dd&gt;&lt;script&gt;x()&lt;/script&gt;",
    }
    assert page.index("FYI, see below.") < heading.start() < page.index("The minutes of Friday.")
    reply = html.unescape(_page(world, "/compose?reply=9"))
    assert "> From: Carol <carol@example.org>\n> Date: Fri, 4 Dec 2026" in reply


def test_a_message_the_user_sent_is_listed_by_whom_it_went_to(world: World) -> None:
    listing = _page(world, "/mail")
    cell = (
        r'<td class="from">(?:<span[^>]*>[^<]*</span>)?([^<]*)</td>\s*<td class="subject"><a[^>]*>'
    )
    rows = dict((subject, who) for who, subject in re.findall(cell + r"([^<]*)<", listing))
    assert rows["Sent by me"] == "To: Carol"  # the first recipient, by name
    assert rows["Fwd: Minutes"] == "Alice"  # mail from others: its sender, as before

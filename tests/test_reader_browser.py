"""The reader in a real headless Chromium over a cache of mail made by OpenSSL: signing in, the
list with its verdict badges, search with the query language, a message with its verdict panel
and protected headers, an attachment downloaded, hostile HTML rendered inert with zero requests
leaving 127.0.0.1, a key change confirmed, keyboard shortcuts, and a phone-sized window. Each
test saves a screenshot in its tmp directory."""

from __future__ import annotations

import base64
import datetime as dt
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from smime_companion import runtime
from smime_companion.core.certs import fingerprint_sha256
from smime_companion.store.certstore import Sighting
from smime_companion.testing.pki import TestPki
from tests.browser import (
    leaving_loopback,
    needs_chromium,
    requested_urls,
    screenshot,
    start_browser,
    stop_browser,
    wait_for,
)
from tests.reader_world import World, encrypted, make_world, message, signed, text_entity
from tests.test_certstore import issue_certificate

pytestmark = needs_chromium

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAABAAAAAQCAIAAACQkWg2AAAAF0lEQVR4nGP8z8DAwMDAxMDAwMDAwAAAKiQDB7o"
    "qHbQAAAAASUVORK5CYII="
)
HOSTILE_HTML = b"""<html><head>
<meta http-equiv="refresh" content="0;url=http://evil.example/refresh">
<link rel="stylesheet" href="http://evil.example/style.css">
<style>body { background: url(http://evil.example/style-bg.png) }</style>
<script>fetch("http://evil.example/script"); document.title = "pwned";</script>
<base href="http://evil.example/">
</head>
<body onload="fetch('http://evil.example/onload')">
<h1 style="color: #0b57d0; background-image: url(http://evil.example/h1.png)">Quarterly report</h1>
<p>Dear Bob, please <a href="http://evil.example/phish">https://bank.example/login</a> today.</p>
<img src="http://evil.example/pixel.gif" width="1" height="1" alt="">
<img src="https://evil.example/tracker.png" onerror="fetch('http://evil.example/onerror')">
<img src="cid:logo@test" alt="our logo">
<img srcset="http://evil.example/srcset.png 2x" src="relative.png">
<form action="http://evil.example/form"><input name="q" value="x"><button>Go</button></form>
<svg><image href="http://evil.example/svg.png"/><script>fetch('http://evil.example/svg')</script></svg>
<iframe src="http://evil.example/frame"></iframe>
<object data="http://evil.example/object"></object>
<video poster="http://evil.example/poster.png" src="http://evil.example/video.mp4"></video>
<div style="width: 10px; background: url('http://evil.example/div-bg.png')">styled</div>
<table background="http://evil.example/table-bg.png"><tr><td>cell</td></tr></table>
<a href="javascript:fetch('http://evil.example/js')">click me</a>
<p>Thanks, <b>Alice</b></p>
</body></html>"""


def _related(html: bytes) -> bytes:
    return (
        b"Content-Type: multipart/related; boundary=REL\r\n\r\n--REL\r\n"
        b"Content-Type: text/html; charset=utf-8\r\n\r\n" + html + b"\r\n--REL\r\n"
        b"Content-Type: image/png\r\nContent-ID: <logo@test>\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n"
        + base64.encodebytes(PNG).replace(b"\n", b"\r\n") + b"--REL--\r\n"
    )  # fmt: skip


def _with_attachment(text: str, name: str, data: bytes) -> bytes:
    """Text, the PDF ``name`` holding ``data``, and a photo (chart.png)."""
    return (
        b"Content-Type: multipart/mixed; boundary=MIX\r\n\r\n--MIX\r\n" + text_entity(text)
        + b"--MIX\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; "
        + f'filename="{name}"'.encode() + b"\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + base64.encodebytes(data).replace(b"\n", b"\r\n")
        + b'--MIX\r\nContent-Type: image/png; name="chart.png"\r\n'
        + b"Content-Transfer-Encoding: base64\r\n\r\n"
        + base64.encodebytes(PNG).replace(b"\n", b"\r\n") + b"--MIX--\r\n"
    )  # fmt: skip


@pytest.fixture()
def world(tmp_path: Path, pki: TestPki, now: dt.datetime) -> Iterator[World]:
    def at(minutes: int) -> dt.datetime:
        return now - dt.timedelta(minutes=minutes)

    alice, carol = "Alice <alice@example.org>", "Carol <carol@example.org>"
    mail = [
        message(carol, "Budget draft", at(60), encrypted(pki, signed(pki, "carol", _with_attachment(
            "The budget is attached.", "budget.pdf", b"%PDF-1.4 budget figures")), "-aes256"),
            "budget"),
        message(alice, "Lunch on Friday", at(50), signed(pki, "alice", text_entity(
            "Shall we try the new noodle bar on Friday?\n-- Alice")), "lunch"),
        message(alice, "Transfer", at(40), signed(pki, "alice", text_entity(
            "Please transfer 250 EUR.")).replace(b"250 EUR", b"950 EUR"), "transfer"),
        message(alice, "Quarterly report", at(30), encrypted(pki, signed(pki, "alice",
            _related(HOSTILE_HTML))), "report"),
        message(carol, "Door code", at(20), encrypted(pki, text_entity(
            "The door code is 4711; the password is marzipan."), "-aes256"), "door"),
    ]  # fmt: skip
    yield from make_world(tmp_path, pki, now, mail)


@pytest.fixture()
def browser(tmp_path: Path) -> Iterator[Any]:
    driver = start_browser(downloads=tmp_path / "downloads")
    try:
        yield driver
    finally:
        stop_browser(driver)


def _sign_in(browser: Any, world: World) -> None:
    """Sign in and wait for the mailbox page to be loaded, its script included (the sign-in
    page moves on by a refresh, which selenium's get does not wait for)."""
    browser.get(world.sign_in_url())
    wait_for(
        lambda: (
            browser.current_url.endswith("/mail")
            and browser.execute_script("return document.readyState") == "complete"
            and bool(browser.find_elements("css selector", "table.messages"))
        )
    )


def _row(browser: Any, subject: str) -> Any:
    for row in browser.find_elements("css selector", "table.messages tbody tr"):
        if subject in row.text:
            return row
    raise AssertionError(f"no row {subject!r}")


def test_sign_in_and_the_list_shows_every_message_with_its_verdict(
    browser: Any, world: World, tmp_path: Path
) -> None:
    _sign_in(browser, world)
    rows = browser.find_elements("css selector", "table.messages tbody tr")
    assert [r.find_element("css selector", "td.subject a").text.strip() for r in rows] == [
        "Door code", "Quarterly report", "Transfer", "Lunch on Friday", "Budget draft",
    ]  # fmt: skip
    # Beside each subject the first words of the decrypted text, on the row's one line.
    door = _row(browser, "Door code").find_element("css selector", ".preview")
    assert door.text == "The door code is 4711; the password is marzipan."
    subject = _row(browser, "Door code").find_element("css selector", "td.subject a")
    assert door.size["height"] < 1.5 * subject.size["height"]  # not wrapped onto a second line
    assert "encrypted" in _row(browser, "Door code").text
    # CBC without a signature inside: the warning is on the row.
    assert "not integrity-protected" in _row(browser, "Door code").text
    assert "signature invalid" in _row(browser, "Transfer").text
    assert "signed" in _row(browser, "Lunch on Friday").text
    assert _row(browser, "Budget draft").find_elements("css selector", ".clip")
    assert all("unread" in r.get_attribute("class") for r in rows)
    inbox = browser.find_element("css selector", 'aside [data-folder="work/INBOX"]').text
    assert "5" in inbox
    screenshot(browser, tmp_path / "screenshots", "list")


def test_search_uses_the_query_language_and_finds_what_the_command_finds(
    browser: Any, world: World, tmp_path: Path
) -> None:
    _sign_in(browser, world)
    box = browser.find_element("id", "q")
    box.send_keys("marzipan\n")
    wait_for(lambda: "q=marzipan" in browser.current_url)
    subjects = [e.text for e in browser.find_elements("css selector", "td.subject a")]
    assert subjects == ["Door code"]
    with runtime.open_cache(world.config) as cache:
        assert [h.subject for h in cache.search("marzipan", now=world.now)] == subjects
    browser.get(f"http://127.0.0.1:{world.port}/mail?q=sig:invalid")
    assert [e.text for e in browser.find_elements("css selector", "td.subject a")] == ["Transfer"]
    browser.get(f"http://127.0.0.1:{world.port}/mail?q=from:(")
    assert "malformed query at column" in browser.find_element("css selector", ".error").text
    browser.get(f"http://127.0.0.1:{world.port}/mail")
    browser.find_element("css selector", ".help-toggle").click()
    help_text = browser.find_element("id", "search-help").text
    assert "sig:valid" in help_text and "date:" in help_text
    screenshot(browser, tmp_path / "screenshots", "search-help")


def test_a_message_shows_its_verdict_in_plain_words_and_its_attachment_downloads(
    browser: Any, world: World, tmp_path: Path
) -> None:
    _sign_in(browser, world)
    _row(browser, "Budget draft").find_element("css selector", "td.subject a").click()
    wait_for(lambda: "/message/" in browser.current_url)
    verdict = browser.find_element("css selector", "section.verdict").text
    assert "Encrypted with AES-256-CBC" in verdict
    assert "Signed by carol@example.org: valid" in verdict
    assert "reaches your trust anchor CN=Test Root CA" in verdict
    assert "Not integrity-protected" not in verdict  # CBC, but signed inside: protected
    assert "The budget is attached." in browser.find_element("css selector", "pre.body").text
    attachments = browser.find_element("css selector", "section.attachments").text
    assert "budget.pdf" in attachments and "application/pdf" in attachments
    # The attached photo is drawn under the text (16 pixels wide), as webmail shows photos.
    photo = browser.find_element("css selector", "section.pictures img")
    wait_for(lambda: browser.execute_script("return arguments[0].naturalWidth", photo) == 16)
    assert photo.get_attribute("alt") == "chart.png"
    screenshot(browser, tmp_path / "screenshots", "message")
    browser.find_element("link text", "budget.pdf").click()
    downloaded = tmp_path / "downloads" / "budget.pdf"
    wait_for(lambda: downloaded.exists() and downloaded.read_bytes() == b"%PDF-1.4 budget figures")
    # Opened: read now, in the reader only.
    browser.get(f"http://127.0.0.1:{world.port}/mail")
    assert "unread" not in _row(browser, "Budget draft").get_attribute("class")
    assert "unread" in _row(browser, "Door code").get_attribute("class")


def test_hostile_html_renders_inert_and_no_request_leaves_loopback(
    browser: Any, world: World, tmp_path: Path
) -> None:
    _sign_in(browser, world)
    requested_urls(browser)  # drain the log: count from opening the message on
    _row(browser, "Quarterly report").find_element("css selector", "td.subject a").click()
    wait_for(lambda: "/message/" in browser.current_url)
    time.sleep(2)  # time for anything the mail might try (refresh, scripts, image loads)
    urls = requested_urls(browser)
    assert leaving_loopback(urls) == [], urls
    assert not any("evil.example" in u for u in urls)
    assert browser.title.startswith("Quarterly report")  # no script renamed it
    assert "/message/" in browser.current_url  # no meta refresh moved us
    frame = browser.find_element("css selector", "iframe.html-body")
    assert frame.get_attribute("sandbox") == "allow-popups allow-popups-to-escape-sandbox"
    browser.switch_to.frame(frame)
    body = browser.find_element("tag name", "body")
    text = body.text
    assert "Quarterly report" in text and "Thanks, Alice" in text
    assert "3 remote images not loaded" in text  # two remote, one relative
    html = body.get_attribute("innerHTML")
    for forbidden in ("<script", "onload", "onerror", "<form", "<svg", "<iframe", "<object",
                      "<video", "javascript:", "url(", "evil.example/pixel", "srcset",
                      "<meta", "<base", "<link"):  # fmt: skip
        assert forbidden not in html, forbidden
    link = browser.find_element("css selector", "a[href]")
    assert link.get_attribute("href") == "http://evil.example/phish"  # shown with its target
    target = browser.execute_script(
        "return getComputedStyle(arguments[0], '::after').content", link
    )
    assert "evil.example/phish" in target
    logo = browser.find_element("css selector", 'img[alt="our logo"]')
    assert logo.get_attribute("src").startswith("data:image/png;base64,")
    assert browser.execute_script("return arguments[0].naturalWidth", logo) == 16
    browser.switch_to.default_content()
    screenshot(browser, tmp_path / "screenshots", "hostile-html")
    time.sleep(1)
    assert leaving_loopback(requested_urls(browser)) == []


def test_keyboard_shortcuts_move_open_and_search(
    browser: Any, world: World, tmp_path: Path
) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    _sign_in(browser, world)
    ActionChains(browser).send_keys("jj").perform()
    selected = browser.find_elements("css selector", "tr.selected")
    assert len(selected) == 1 and "Quarterly report" in selected[0].text
    ActionChains(browser).send_keys("k").send_keys("\n").perform()
    wait_for(lambda: "/message/" in browser.current_url)
    assert browser.find_element("id", "subject").text == "Door code"
    ActionChains(browser).send_keys("j").perform()  # j on a message: the older one
    wait_for(lambda: browser.find_element("id", "subject").text == "Quarterly report")
    ActionChains(browser).send_keys("u").perform()
    wait_for(lambda: "/mail" in browser.current_url)
    ActionChains(browser).send_keys("/").perform()
    assert browser.switch_to.active_element.get_attribute("id") == "q"


def test_a_changed_key_is_flagged_and_confirmed_from_the_certificates_page(
    browser: Any, world: World, pki: TestPki, tmp_path: Path, now: dt.datetime
) -> None:
    # Pat's first key is pinned on first use; a second key for the same address is not.
    first, _ = issue_certificate(pki, "pat@example.net", now, self_signed=True)
    second, _ = issue_certificate(pki, "pat@example.net", now, self_signed=True)
    pat = frozenset({"pat@example.net"})
    with runtime.open_certstore(world.config) as store:
        store.record(Sighting(first, "<1@pat>", now, anchored=False, tofu_addresses=pat))
        store.record(Sighting(second, "<2@pat>", now, anchored=False, tofu_addresses=pat))
    _sign_in(browser, world)
    browser.get(f"http://127.0.0.1:{world.port}/certificates")
    alert = browser.find_element("css selector", "section.alert").text
    assert "pat@example.net" in alert
    screenshot(browser, tmp_path / "screenshots", "key-change")
    browser.find_element("xpath", "//button[contains(., 'Confirm')]").click()
    wait_for(lambda: "Trusted the new key" in browser.page_source)
    assert not browser.find_elements("css selector", "section.alert")
    with runtime.open_certstore(world.config) as store:
        trust = {r.fingerprint: str(r.trust) for r in store.records("pat@example.net")}
    assert trust[fingerprint_sha256(second)] == "tofu"
    assert trust[fingerprint_sha256(first)] == "untrusted"


def test_a_phone_sized_window_shows_the_list_in_one_column(
    browser: Any, world: World, tmp_path: Path
) -> None:
    browser.set_window_size(390, 844)
    _sign_in(browser, world)
    table = browser.find_element("css selector", "table.messages")
    assert table.size["width"] <= 390
    assert browser.execute_script("return document.documentElement.scrollWidth") <= 400
    screenshot(browser, tmp_path / "screenshots", "phone")


ATTACK_PAGE = """<!doctype html><html><head><meta name="referrer" content="no-referrer"></head>
<body><form id="f" method="post" action="{reader}/message/{id}/read" target="sink">
<input name="read" value="1"><input name="csrf" value="guessed"></form>
<iframe name="sink"></iframe>
<script>
fetch("{reader}/api/mailbox", {{credentials: "include"}})
  .then(r => r.text()).then(t => {{ document.title = "READ:" + t.slice(0, 40); }})
  .catch(e => {{ document.title = "blocked"; }});
fetch("{reader}/message/{id}/read", {{method: "POST", credentials: "include", mode: "no-cors",
  headers: {{"Content-Type": "application/x-www-form-urlencoded"}}, body: "read=1"}});
document.getElementById("f").submit();
</script></body></html>"""


def test_a_page_of_another_origin_can_neither_read_nor_change_anything(
    browser: Any, world: World, tmp_path: Path
) -> None:
    import http.server
    import threading

    from tests.dovecot import free_port

    _sign_in(browser, world)  # the session cookie is in this browser now
    with runtime.open_cache(world.config) as cache:
        target = cache.search("subject:Transfer", now=world.now)[0]
    page = ATTACK_PAGE.format(reader=f"http://127.0.0.1:{world.port}", id=target.id).encode()

    class Attack(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server hook
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, *args: Any) -> None:
            pass

    # Another port of the same loopback address: same-site for cookies, another origin.
    attacker = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Attack)
    threading.Thread(target=attacker.serve_forever, daemon=True).start()
    try:
        browser.get(f"http://127.0.0.1:{attacker.server_address[1]}/")
        wait_for(lambda: browser.title in ("blocked",) or browser.title.startswith("READ:"))
        time.sleep(1)
        assert browser.title == "blocked"  # CORS: the answer never reached the page
        screenshot(browser, tmp_path / "screenshots", "attack")
    finally:
        attacker.shutdown()
    with runtime.open_cache(world.config) as cache:
        assert cache.unread_among([cache.summary(target.id)]) == {target.id}  # unchanged


def test_a_message_of_many_html_bodies_loads_only_the_frames_in_sight(
    tmp_path: Path, pki: TestPki, now: dt.datetime, browser: Any
) -> None:
    # Each frame reads the message again on the server: a digest or a hostile message of 300
    # bodies opened 300 of them at once, each costing what the whole message costs to read.
    bodies = b"".join(
        b"--o\r\nContent-Type: multipart/alternative; boundary=a%d\r\n\r\n"
        b"--a%d\r\nContent-Type: text/plain\r\n\r\nplain %d\r\n"
        b"--a%d\r\nContent-Type: text/html\r\n\r\n<p>html %d</p>\r\n--a%d--\r\n" % ((i,) * 6)
        for i in range(300)
    )
    digest = (
        b"From: list@example.org\r\nSubject: Digest\r\nDate: Mon, 07 Dec 2026 10:00:00 +0000\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=o\r\n\r\n"
        + bodies + b"--o--\r\n"
    )  # fmt: skip
    worlds = make_world(tmp_path / "digest", pki, now, [digest])
    world = next(worlds)
    try:
        _sign_in(browser, world)
        requested_urls(browser)
        frames: list[str] = []  # the frames asked for so far (reading the log drains it)

        def asked_for(part: int) -> bool:
            frames.extend(u for u in requested_urls(browser) if "/message/1/html/" in u)
            return any(u.endswith(f"/message/1/html/{part}") for u in frames)

        browser.get(f"http://127.0.0.1:{world.port}/message/1")
        wait_for(lambda: asked_for(2))
        time.sleep(1)  # what the page would still ask for
        asked_for(2)
        assert len(frames) < 60, len(frames)
        browser.execute_script("window.scrollTo(0, document.body.scrollHeight)")
        wait_for(lambda: asked_for(600))
    finally:
        next(worlds, None)

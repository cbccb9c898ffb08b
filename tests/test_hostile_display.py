"""``search``, ``show``, ``export``, ``outbox list``, ``certs`` and the log on hostile text.

The message is encrypted to the user with AES-CBC and not signed (so nothing authenticates
what it decrypts to), its Subject decodes (RFC 2047) to line breaks, a header injection and
terminal escapes, it carries its own ``X-SMIME-Companion-*`` verdict, and its body is HTML that
would load a URL. None of that may reach a terminal raw or give an exported message a structure
the attacker chose.
"""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import logging
import mailbox
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from smime_companion.cli import TerminalSafeFormatter
from smime_companion.store import Cache
from smime_companion.store.certstore import CertStore, Sighting
from smime_companion.store.journal import Journal
from smime_companion.testing.pki import TestPki
from tests.test_cache import KEY, opener, store
from tests.test_cli_cache import _config, cli
from tests.tools import openssl_cms

# "Hi" CRLF "Content-Type: text/html" CRLF CRLF "<img src='http://attacker.example/?" ESC[2J
HOSTILE_SUBJECT = (
    "=?utf-8?q?Hi=0D=0AContent-Type=3A_text/html=0D=0A=0D=0A"
    "<img_src=3D'http://attacker.example/=3F=1B[2J?="
)
HTML_BODY = (
    "<html><body><p>The launch code is 4711.\x1b]0;owned\x07</p>"
    "<img src='http://attacker.example/pixel'></body></html>\r\n"
)


def _hostile(pki: TestPki) -> bytes:
    inner = (
        "MIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n\r\n" + HTML_BODY
    ).encode()
    sealed = openssl_cms(["-encrypt", "-aes-256-cbc", "-recip", pki.cert("bob")], inner)
    head = (
        f"From: =?utf-8?q?Mallory=0D=0AX-Evil=3A_1?= <{pki.email('alice')}>\r\n"
        f"To: {pki.email('bob')}\r\nSubject: {HOSTILE_SUBJECT}\r\n"
        "Date: Wed, 25 Nov 2026 09:00:00 +0000\r\nMessage-ID: <hostile@t>\r\n"
        "X-SMIME-Companion-Signature: valid\r\n"
    )
    return head.encode() + sealed


@pytest.fixture(scope="module")
def hostile_cache(pki: TestPki, tmp_path_factory: pytest.TempPathFactory, pki_now: dt.datetime):
    tmp = tmp_path_factory.mktemp("hostile-display")
    config = _config(tmp, pki)
    with Cache.open(tmp / "data", KEY) as cache:
        at = max(pki_now, dt.datetime.now(dt.UTC))
        message_id = store(cache, _hostile(pki), opener(pki), at, uid=1)
        report = cache.report(message_id)
    assert report["decryption"] == "ok" and "not-integrity-protected" in report["warnings"]
    return config, message_id, tmp


def _assert_terminal_safe(out: bytes) -> None:
    text = out.decode()
    assert "\x1b" not in text and "\r" not in text
    # No printed line starts with a field the attacker wrote.
    lines = text.split("\n")
    assert not any(line.startswith(("Content-Type: text/html", "X-Evil", "<img")) for line in lines)


def test_search_prints_each_hostile_hit_on_one_escaped_line(hostile_cache) -> None:
    config, _, _ = hostile_cache
    proc = cli(config, "search", "")
    assert proc.returncode == 0, proc.stderr
    _assert_terminal_safe(proc.stdout)
    (line,) = proc.stdout.decode().splitlines()
    assert "Hi\\r\\nContent-Type: text/html\\r\\n\\r\\n<img" in line and "\\x1b[2J" in line


@pytest.mark.parametrize("view", [[], ["--headers"], ["--text"]])
def test_show_escapes_what_the_sender_wrote(hostile_cache, view: list[str]) -> None:
    config, message_id, _ = hostile_cache
    proc = cli(config, "show", str(message_id), *view)
    assert proc.returncode == 0, proc.stderr
    _assert_terminal_safe(proc.stdout)
    if not view:
        assert "Subject: Hi\\r\\nContent-Type: text/html" in proc.stdout.decode()
    if view != ["--headers"]:
        assert "The launch code is 4711." in proc.stdout.decode()


def _exported(config: Path, tmp: Path) -> email.message.EmailMessage:
    mbox_path = tmp / "out.mbox"
    mbox_path.unlink(missing_ok=True)
    proc = cli(config, "export", "--mbox", mbox_path)
    assert proc.returncode == 0, proc.stderr
    (message,) = list(mailbox.mbox(str(mbox_path)))
    return email.message_from_bytes(message.as_bytes(), policy=email.policy.default)


def test_export_keeps_the_hostile_subject_inside_its_field_and_our_verdict_first(
    hostile_cache,
) -> None:
    config, _, tmp = hostile_cache
    msg = _exported(config, tmp)
    assert not msg.defects
    assert msg.keys()[0] == "X-SMIME-Companion-Decryption"
    assert msg.get_all("X-SMIME-Companion-Signature") == ["none"]
    assert msg["X-Evil"] is None
    assert "\n" not in str(msg["Subject"]) and str(msg["Subject"]).startswith("Hi Content-Type")
    assert msg.get_content_type() == "multipart/mixed"


def test_export_of_unauthenticated_cbc_content_has_no_active_html(hostile_cache) -> None:
    config, _, tmp = hostile_cache
    msg = _exported(config, tmp)
    assert [p.get_content_type() for p in msg.walk()] == ["multipart/mixed", "text/plain"]
    text = next(p for p in msg.walk() if p.get_content_type() == "text/plain").get_content()
    assert "The launch code is 4711." in text and "attacker" not in text
    assert "not-integrity-protected" in msg["X-SMIME-Companion-Warnings"]


def test_outbox_list_prints_a_hostile_draft_subject_on_one_escaped_line(
    hostile_cache, now: dt.datetime
) -> None:
    config, _, tmp = hostile_cache
    with Journal.open(tmp / "data", KEY) as journal:
        journal.claim(
            "work", "d" * 64, "ref-1", now, sender="bob@example.org",
            subject="Report\r\n    7  done  2026-01-01  work  forged\x1b[2J\u202e",
        )  # fmt: skip
    proc = cli(config, "outbox", "list")
    assert proc.returncode == 0, proc.stderr
    _assert_terminal_safe(proc.stdout)
    lines = proc.stdout.decode().splitlines()
    assert len(lines) == 1 and "Report\\r\\n    7  done" in lines[0] and "\\u202e" in lines[0]


def test_certs_list_escapes_an_address_a_certificate_chose(
    hostile_cache, pki: TestPki, now: dt.datetime
) -> None:
    config, _, tmp = hostile_cache
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "evil\x1b[2J\r\nroot")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(7)
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName([x509.RFC822Name("x\x1b]0;t\x07@evil.example")]), False
        )
        .sign(key, hashes.SHA256())
    )
    with CertStore.open(tmp / "data", KEY) as certs:
        certs.record(Sighting(cert, "message", now, anchored=False))
    for argv in (["certs", "list"], ["certs", "show", "x\x1b]0;t\x07@evil.example"]):
        proc = cli(config, *argv)
        assert proc.returncode == 0, proc.stderr
        assert b"\x1b" not in proc.stdout and b"\x07" not in proc.stdout
        assert b"x\\x1b]0;t\\x07@evil.example" in proc.stdout


def test_log_lines_escape_what_a_server_or_sender_wrote() -> None:
    formatter = TerminalSafeFormatter("%(levelname)s %(name)s: %(message)s")
    record = logging.LogRecord(
        "smime_companion.imap.sync", logging.WARNING, __file__, 1,
        "folder %s: %s", ("IN\x1b[2JBOX", "bad\r\nWARNING forged: line"), None,
    )  # fmt: skip
    assert formatter.format(record) == (
        "WARNING smime_companion.imap.sync: folder IN\\x1b[2JBOX: bad\\r\\nWARNING forged: line"
    )

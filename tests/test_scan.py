"""The scan hook: decrypted messages and their attachments go to a real clamd (one EICAR
signature written by the fixture) or to a command; verdicts are stored and searchable; an
unreachable scanner records ``error``, never blocks caching, and is retried."""

from __future__ import annotations

import base64
import datetime as dt
from pathlib import Path

import pytest

from smime_companion.scan import (
    ClamdScanner,
    CommandScanner,
    make_scanner,
    parse_clamd_reply,
    scan_content,
    scan_pending,
)
from smime_companion.store import Cache
from smime_companion.testing.pki import TestPki
from tests.clamd import EICAR, Clamd, clamd  # noqa: F401  (clamd is a fixture)
from tests.test_cache import KEY, mail, opener, store


def _attachment(name: str, data: bytes) -> str:
    return (
        f'--b0\r\nContent-Type: application/octet-stream; name="{name}"\r\n'
        f'Content-Disposition: attachment; filename="{name}"\r\n'
        "Content-Transfer-Encoding: base64\r\n\r\n"
        f"{base64.b64encode(data).decode()}\r\n"
    )


@pytest.fixture
def cache(tmp_path: Path):
    with Cache.open(tmp_path, KEY) as opened:
        yield opened


def test_clamd_finds_the_test_signature_inside_an_encrypted_message(
    cache: Cache,
    pki: TestPki,
    clamd: Clamd,  # noqa: F811
    now: dt.datetime,
) -> None:
    infected = mail(pki, kind="encrypted", subject="invoice",
                    extra_parts=_attachment("invoice.com", EICAR))  # fmt: skip
    photo = _attachment("photo.jpg", b"\xff\xd8\xff\xe0 not a virus")
    harmless = mail(pki, kind="encrypted", subject="photos", extra_parts=photo)
    bad_id = store(cache, infected, opener(pki), now, uid=1)
    good_id = store(cache, harmless, opener(pki), now, uid=2)
    assert [m.id for m in cache.search("scan:pending", now=now)] == [good_id, bad_id]

    assert scan_pending(cache, ClamdScanner(clamd.socket)) == 2

    verdict = f"infected:{clamd.signature_name}"
    assert cache.summary(bad_id).scan == verdict
    assert [a.scan for a in cache.attachments(bad_id)] == [verdict]
    assert cache.summary(good_id).scan == "clean"
    assert [m.id for m in cache.search("scan:infected", now=now)] == [bad_id]
    assert [m.id for m in cache.search("scan:clean", now=now)] == [good_id]
    assert scan_pending(cache, ClamdScanner(clamd.socket)) == 0  # nothing left to scan


def test_clamd_scans_whole_messages_and_each_attachment(pki: TestPki, clamd: Clamd) -> None:  # noqa: F811
    content = mail(pki, extra_parts=_attachment("a.bin", b"fine") + _attachment("b.com", EICAR))
    whole, parts = scan_content(ClamdScanner(clamd.socket), content)
    assert whole in ("clean", f"infected:{clamd.signature_name}")  # clamd may unpack the MIME
    assert parts == {2: "clean", 3: f"infected:{clamd.signature_name}"}


def test_an_unreachable_scanner_records_error_and_the_next_pass_retries(
    cache: Cache,
    pki: TestPki,
    tmp_path: Path,
    clamd: Clamd,  # noqa: F811
    now: dt.datetime,
) -> None:
    message_id = store(cache, mail(pki, kind="encrypted"), opener(pki), now, uid=1)
    assert scan_pending(cache, ClamdScanner(tmp_path / "no-such.sock")) == 1
    assert cache.summary(message_id).scan == "error"
    assert [m.id for m in cache.search("scan:error", now=now)] == [message_id]
    # The message stayed fully usable while the scanner was down.
    assert b"zebra" in (cache.content(message_id) or b"")
    assert scan_pending(cache, ClamdScanner(clamd.socket)) == 1
    assert cache.summary(message_id).scan == "clean"


def test_messages_that_could_not_be_opened_are_not_scanned(
    cache: Cache, pki: TestPki, now: dt.datetime
) -> None:
    store(cache, mail(pki, kind="encrypted", to="carol"), opener(pki), now, uid=1)
    assert scan_pending(cache, CommandScanner("exit 0")) == 0
    assert [m.scan for m in cache.search("", now=now)] == [None]


def test_a_scan_command_follows_clamdscan_exit_codes(
    cache: Cache, pki: TestPki, now: dt.datetime
) -> None:
    command = "if grep -q EICAR; then echo 'stream: Eicar-Test-Signature FOUND'; exit 1; fi; exit 0"
    scanner = CommandScanner(command)
    assert scanner.scan(b"hello") == "clean"
    assert scanner.scan(EICAR) == "infected:Eicar-Test-Signature"
    assert CommandScanner("exit 1").scan(b"x") == "infected:unknown"
    assert CommandScanner("exit 2").scan(b"x") == "error"
    infected = mail(pki, extra_parts=_attachment("x.com", EICAR))
    message_id = store(cache, infected, opener(pki), now, uid=1)
    scan_pending(cache, scanner)
    assert cache.summary(message_id).scan == "infected:Eicar-Test-Signature"


@pytest.mark.parametrize(
    ("reply", "verdict"),
    [
        ("stream: OK", "clean"),
        ("stream: Win.Test.EICAR_HDB-1 FOUND", "infected:Win.Test.EICAR_HDB-1"),
        ("INSTREAM size limit exceeded. ERROR", "error"),
        ("", "error"),
    ],
)
def test_clamd_replies_become_verdicts(reply: str, verdict: str) -> None:
    assert parse_clamd_reply(reply) == verdict


def test_make_scanner_prefers_clamd_then_the_command_then_nothing(tmp_path: Path) -> None:
    assert isinstance(make_scanner(tmp_path / "s", "cmd"), ClamdScanner)
    assert isinstance(make_scanner(None, "cmd"), CommandScanner)
    assert make_scanner(None, None) is None

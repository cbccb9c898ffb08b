"""A time limit per message in the opening worker (issue 14): a message that takes longer than
the limit is given up on where it is being opened (a worker process, or the daemon itself), is
stored unopened with its raw bytes and its error, and the messages after it are opened as
usual. The core bounds every hostile shape it knows; the limit is what holds when it does not.

A real message that takes a few tenths of a second (30 MB, signed) stands in for one that would
take forever, against a limit of a few hundredths."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from smime_companion.core.verdicts import SignatureStatus
from smime_companion.imap.mailbox import connect
from smime_companion.imap.session import ServerSpec
from smime_companion.store.cache import Cache
from smime_companion.sync.folder import sync_folder
from smime_companion.sync.opening import OpeningPool as Opener
from smime_companion.testing.pki import TestPki
from tests.conftest import load_identity
from tests.dovecot import PASSWORD, Dovecot, running_dovecot, signed_mail
from tests.tools import mime_message, openssl_cms

pytestmark = pytest.mark.timeout(120)

LIMIT = 0.03


@pytest.fixture(scope="module")
def slow(pki: TestPki) -> bytes:
    """Alice's opaque signed message of about 30 MB (a few tenths of a second to open)."""
    body = "0123456789 abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789\r\n"
    sealed = openssl_cms(
        ["-sign", "-nodetach", "-binary", "-signer", pki.cert("alice"), "-inkey",
         pki.key("alice"), "-certfile", pki.intermediate],
        mime_message(body=body * (22 * 1024 * 1024 // len(body))),
    )  # fmt: skip
    crlf = sealed.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")  # as IMAP delivers it
    return b"Subject: Test slow\r\nMessage-ID: <slow@test>\r\n" + crlf


@pytest.mark.parametrize("workers", [0, 1], ids=["in-process", "worker"])
def test_a_message_past_the_time_limit_is_given_up_and_the_next_one_opens(
    pki: TestPki, anchors: tuple[x509.Certificate, ...], now: dt.datetime, slow: bytes, workers
) -> None:
    good = signed_mail(pki, "after")
    with Opener([load_identity(pki, "bob")], anchors, workers=workers, time_limit=LIMIT) as opener:
        first, second = opener.submit([(slow, now), (good, now)]).result()
    assert first.result.error is not None
    assert f"gave up after {LIMIT:g} s of opening" in first.result.error
    assert first.result.content == slow  # the raw message, kept whole
    assert first.entry.reopen
    assert second.result.signature == SignatureStatus.VALID
    assert second.result.error is None


def test_without_a_tight_limit_the_same_message_opens(
    pki: TestPki, anchors: tuple[x509.Certificate, ...], now: dt.datetime, slow: bytes
) -> None:
    opener = Opener([load_identity(pki, "bob")], anchors, workers=0)
    assert opener.open(slow, now).signature == SignatureStatus.VALID


@pytest.fixture(scope="module")
def server() -> Iterator[Dovecot]:
    yield from running_dovecot()


def test_a_sync_stores_the_message_past_the_limit_with_its_raw_bytes_and_goes_on(
    server: Dovecot,
    pki: TestPki,
    anchors: tuple[x509.Certificate, ...],
    slow: bytes,
    tmp_path: Path,
) -> None:
    for raw in (signed_mail(pki, "before"), slow, signed_mail(pki, "after")):
        server.deliver("alice", raw, "Slow")
    spec = ServerSpec(
        host="localhost",
        port=server.tls_port,
        username="alice",
        secret=lambda: PASSWORD,
        ca_file=server.cert,
        name="work",
        timeout=30,
    )
    mailbox = connect(spec)
    opener = Opener([load_identity(pki, "bob")], anchors, workers=1, time_limit=LIMIT)
    try:
        with Cache.open(tmp_path / "cache", None) as cache:
            report = sync_folder(
                mailbox,
                cache,
                account="work",
                folder="Slow",
                opener=opener,
                now=lambda: dt.datetime.now(dt.UTC),
            )
            assert (report.stored, report.failed_to_open, report.complete) == (3, 1, True)
            hits = {h.subject: h for h in cache.search("folder:Slow", now=dt.datetime.now(dt.UTC))}
            assert hits["Test before"].signature == SignatureStatus.VALID
            assert hits["Test after"].signature == SignatureStatus.VALID
            assert "time limit" in (hits["Test slow"].error or "")
            assert cache.raw(hits["Test slow"].id) == slow
    finally:
        opener.close()
        mailbox.close()

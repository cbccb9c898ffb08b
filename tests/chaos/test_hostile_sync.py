"""Hostile messages through the daemon's sync path into the cache: ``run --once`` (in process, so
its allocation peak can be measured) over a folder holding every hostile message between two good
ones. Each hostile message is cached with its status or error, never dropped; the good ones after
them are cached valid: the daemon keeps going.
"""

from __future__ import annotations

from typing import Any

import pytest

from smime_companion.cli import main
from smime_companion.core.verdicts import SignatureStatus
from smime_companion.store import Cache
from smime_companion.testing.pki import TestPki
from tests.chaos import hostile
from tests.chaos.harness import FOLDER, Setup, cached_summaries, check_cache
from tests.dovecot import signed_mail

pytestmark = pytest.mark.timeout(120)

MB = 1 << 20


def _subject(raw: bytes) -> str:
    return raw.split(b"Subject: ", 1)[1].split(b"\r\n", 1)[0].decode()


# Opened in this process (0), where the allocation peak is measured, and by a worker process.
@pytest.mark.parametrize("open_workers", [0, 1])
def test_a_folder_of_hostile_mail_is_cached_message_by_message_and_the_sync_goes_on(
    setup: Setup, pki: TestPki, monkeypatch: pytest.MonkeyPatch, open_workers: int
) -> None:
    setup.write_config(cache_all=True, open_workers=open_workers)
    hostile_mail = [
        # Past the default 256 MiB content limit: the one case that costs real memory.
        hostile.compression_bomb(300 * MB, "Bomb"),
        hostile.deep_ber(100_000, "Deep BER"),
        hostile.many_recipients(pki, 2000, "Many recipients"),
        hostile.huge_chain(pki, 300, keep_real=True, subject="Huge chain"),
        hostile.many_header_fields(20_000, "Many header fields"),
        hostile.broken_headers_signed(pki, b"Broken headers"),
        b"Subject: Not mail\r\n\r\n" + bytes(range(256)) * 64,
        # Raw UTF-8 in an RFC 2231 parameter: open_message raised on it until 9102f6a (found
        # by bench/fuzz_open.py); now it is cached like any plain message.
        b"Subject: Raw UTF-8 parameter\r\n"
        b"Content-Type: text/plain; name*=utf-8''\xe2\x82\xac\r\n\r\nx\r\n",
        # A signed attribute under universal tag 8: open_message raised on it until 83b90e6
        # (found by bench/fuzz_open.py); now a status like any broken signature.
        hostile.capability_with_tag_8(pki),
        hostile.unfinished_html("Unfinished HTML"),
    ]
    first = signed_mail(pki, "first")
    last = signed_mail(pki, "last")
    for raw in [first, *hostile_mail, last]:
        setup.dovecot.deliver("alice", raw, FOLDER)
    for name, value in setup.secrets.env().items():
        monkeypatch.setenv(name, value)

    code, peak = hostile.measured(lambda: main(["run", "--once", "--config", str(setup.config)]))
    assert code == 0

    state = check_cache(setup)
    assert state.integrity == "ok"
    assert state.rows == len(hostile_mail) + 2  # every message cached, once
    cached = cached_summaries(setup)
    assert cached["Test first"].signature == SignatureStatus.VALID
    assert cached["Test last"].signature == SignatureStatus.VALID  # the sync went on after all
    assert "expands past" in (cached["Bomb"].error or "")
    assert cached["Deep BER"].decryption == "malformed"
    assert cached["Many recipients"].decryption == "ok"
    assert cached["Huge chain"].signature != SignatureStatus.VALID
    assert cached["Broken headers"].signature == SignatureStatus.VALID
    assert cached["Raw UTF-8 parameter"].error is None
    assert cached["Capability tag 8"].signature not in (SignatureStatus.VALID, "none")
    assert cached["Unfinished HTML"].error is None  # its text indexed, in bounded time
    for subject in ("Bomb", "Deep BER"):
        assert "\n" not in (cached[subject].error or "")
    if open_workers == 0:
        # The bomb's inflation bounds the whole pass: about twice the 256 MiB limit, no more.
        assert peak < 640 * MB


def test_a_message_whose_entry_the_cache_cannot_write_is_kept_raw_and_the_folder_goes_on(
    setup: Setup, pki: TestPki, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Failure injection: the cache refuses one message's derived entry as SQLite refused text
    # holding a lone surrogate (UTF-7, before core.charsets replaced them). That raised out of
    # the pass at the same UID on every pass, so nothing after it was ever cached.
    setup.write_config(cache_all=True, open_workers=0)
    poison = b"From: alice@example.org\r\nSubject: Poison\r\n\r\nbody\r\n"
    for raw in (signed_mail(pki, "first"), poison, signed_mail(pki, "last")):
        setup.dovecot.deliver("alice", raw, FOLDER)
    for name, value in setup.secrets.env().items():
        monkeypatch.setenv(name, value)
    store = Cache.store_message

    def refusing(self: Cache, **kwargs: Any) -> int:
        if kwargs["entry"].subject == "Poison":
            raise UnicodeEncodeError("utf-8", "\ud834", 0, 1, "surrogates not allowed")
        return store(self, **kwargs)

    monkeypatch.setattr(Cache, "store_message", refusing)
    assert main(["run", "--once", "--config", str(setup.config)]) == 0

    state = check_cache(setup)
    assert state.rows == 3 and state.subjects["Poison"] == 1  # its raw original, once
    cached = cached_summaries(setup)
    assert cached["Test last"].signature == SignatureStatus.VALID  # the folder went on
    kept = cached[""]  # nothing read from it is kept, not even its subject
    assert kept.error == "internal error while storing: UnicodeEncodeError"
    assert kept.decryption == "malformed"

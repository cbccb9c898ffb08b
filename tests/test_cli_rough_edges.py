"""What a new user met on the first day (issue 17), each now as the README says: a reader that
stops early ends the command quietly, times in the user's clock, an error that points at
``init``, exports into a new directory, link targets in the text of HTML mail, the config's own
identity listed, and an outbox item that cannot be retried says what to do instead."""

from __future__ import annotations

import datetime as dt
import mailbox
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from smime_companion.cli import main
from smime_companion.cli.daemon_cmds import _local_time
from smime_companion.config import load_config
from smime_companion.core.entry_derivation import derive_entry
from smime_companion.core.html_text import html_to_text
from smime_companion.core.open import open_message
from smime_companion.errors import AuthenticationFailed, ConfigError, ImapError, UsageError
from smime_companion.imap.mailbox import connect
from smime_companion.imap.session import ServerSpec
from smime_companion.outbox.pipeline import retry_item
from smime_companion.store import Cache
from smime_companion.store.journal import ItemState, Journal
from smime_companion.testing.pki import TestPki
from tests.dovecot import PASSWORD, Dovecot, running_dovecot
from tests.tools import minimal_env


def _plain(n: int) -> bytes:
    return (
        f"From: alice@example.org\r\nTo: bob@example.org\r\nSubject: Zebra note {n}\r\n"
        f"Message-ID: <n{n}@example.org>\r\nDate: Wed, 25 Nov 2026 09:00:00 +0000\r\n\r\n"
        f"Zebra body {n}\r\n"
    ).encode()


@pytest.fixture
def config(tmp_path: Path, pki: TestPki) -> Path:
    """A config with a plain cache of 3,000 plain messages (more than a pipe holds as a listing)
    and bob's PKCS#12 as the identity."""
    cache_dir = tmp_path / "cache"
    now = dt.datetime.now(dt.UTC)
    with Cache.open(cache_dir, None) as cache, cache.transaction():
        for n in range(3000):
            raw = _plain(n)
            result = open_message(raw, identities=[], anchors=[], at=now)
            cache.store_message(
                account="work", folder="INBOX", uidvalidity=1, uid=n + 1, raw=raw,
                entry=derive_entry(raw, result, now), arrived=now, flags=(),
            )  # fmt: skip
    path = tmp_path / "config.toml"
    path.write_text(
        f'[identity]\np12 = "{pki.p12("bob")}"\np12_password_env = "T_P12"\n'
        f'system_anchors = false\n\n[cache]\npath = "{cache_dir}"\nencrypt_cache = false\n'
    )
    return path


def test_a_reader_that_stops_early_ends_search_quietly(config: Path) -> None:
    command = [sys.executable, "-m", "smime_companion", "search", "zebra", "--config", str(config)]
    proc = subprocess.run(
        f"{' '.join(command)} | head -n 1",
        shell=True,
        capture_output=True,
        text=True,
        env=minimal_env(),
        timeout=120,
    )
    assert proc.stdout.count("\n") == 1
    assert proc.stderr == ""  # no "internal error (BrokenPipeError)", no traceback


def test_status_shows_times_in_the_users_clock_to_the_second() -> None:
    shown = _local_time("2026-12-06T08:14:03.123456+00:00")
    assert len(shown) == len("2026-12-06 09:14:03") and "." not in shown and "+" not in shown
    assert _local_time(None) == "never"


def test_a_missing_config_points_at_init(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="smime-companion init --p12"):
        load_config(tmp_path / "none.toml")


def test_export_makes_a_missing_parent_directory(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "new" / "deeper" / "zebra.mbox"
    assert main(["export", "--mbox", str(target), "--config", str(config), "Zebra note 7"]) == 0
    assert len(mailbox.mbox(str(target))) == 1
    maildir = tmp_path / "other" / "Maildir"
    assert main(["export", "--maildir", str(maildir), "--config", str(config), "note 8"]) == 0
    assert len(mailbox.Maildir(str(maildir))) == 1


def test_html_mail_keeps_where_its_links_go() -> None:
    text = html_to_text(
        '<p>Please <a href="https://pay.example.net/x?id=1">pay here</a> or write to '
        '<a href="mailto:billing@example.org?subject=hi">billing</a>; '
        '<a href="https://example.org">https://example.org</a> <a href="#top">top</a></p>'
    )
    assert "pay here <https://pay.example.net/x?id=1>" in text
    assert "billing <billing@example.org>" in text
    assert text.count("https://example.org") == 1  # the text already said it
    assert "#top" not in text


def test_identity_list_shows_the_identity_the_config_names(
    config: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("T_P12", "test")
    assert main(["identity", "list", "--config", str(config)]) == 0
    [line] = capsys.readouterr().out.splitlines()
    assert line.startswith("bob@example.org") and "current" in line and "(config)" in line


def test_retrying_a_draft_held_for_a_missing_certificate_says_to_move_it_back(
    tmp_path: Path,
) -> None:
    at = dt.datetime(2026, 11, 25, tzinfo=dt.UTC)
    with Journal.open(tmp_path, None) as journal:
        item = journal.claim("work", "d1", '["SMIME Outbox", 1, 1]', at)
        journal.advance(item.id, {ItemState.CLAIMED}, ItemState.HELD, at, reason="no cert")
        with pytest.raises(UsageError, match="move the draft from the outbox's Held folder back"):
            retry_item(journal, item.id, at)


# -- what a wrong port or password says -----------------------------------------------------------


@pytest.fixture
def dovecot() -> Iterator[Dovecot]:
    yield from running_dovecot()


def _spec(dovecot: Dovecot, port: int, password: str = PASSWORD) -> ServerSpec:
    return ServerSpec(
        host="127.0.0.1", port=port, username="alice", secret=lambda: password,
        tls="implicit", ca_file=dovecot.cert, timeout=10, name="work",
    )  # fmt: skip


def test_implicit_tls_on_a_plain_port_suggests_starttls(dovecot: Dovecot) -> None:
    with pytest.raises(ImapError) as info:
        connect(_spec(dovecot, dovecot.port))  # the STARTTLS port, configured as TLS
    assert 'tls = "starttls"' in str(info.value)


def test_a_refused_login_quotes_the_server_as_text_not_python_bytes(dovecot: Dovecot) -> None:
    with pytest.raises(AuthenticationFailed) as info:
        connect(_spec(dovecot, dovecot.tls_port, password="wrong"))
    text = str(info.value)
    assert "login refused for alice" in text and "AUTHENTICATIONFAILED" in text
    assert "b'" not in text and 'b"' not in text

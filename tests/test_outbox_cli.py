"""``smime-companion outbox run|list|retry`` from a config file, against a real Dovecot and a real
aiosmtpd: the command-line path builds the same pipeline as the daemon (``runtime.process_outbox``)
from the config, with the journal encrypted under the cache key."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from smime_companion import keyfiles
from smime_companion.cli import main
from smime_companion.cli.daemon_cmds import build_daemon
from smime_companion.config import load_config
from smime_companion.daemon import Daemon
from smime_companion.status_file import read_status_file
from smime_companion.store.certstore import CertStore, Sighting
from smime_companion.store.journal import DB_FILENAME
from smime_companion.testing.pki import TestPki
from tests.dovecot import PASSWORD, SEPARATORS, Dovecot, running_dovecot
from tests.outbox_world import OUTBOX, SENT, draft, open_as
from tests.smtpd import PASSWORD as SMTP_PASSWORD
from tests.smtpd import SmtpServer, running_smtpd

CACHE_KEY = "cli-cache-key"


@pytest.fixture(params=SEPARATORS, ids=lambda sep: f"separator{sep}")
def dovecot(request: pytest.FixtureRequest) -> Iterator[Dovecot]:
    """Dovecot with each hierarchy separator: ``.`` as Debian ships it, ``/`` as Gmail has."""
    yield from running_dovecot(separator=request.param)


@pytest.fixture()
def smtpd(dovecot: Dovecot) -> Iterator[SmtpServer]:
    # Dovecot's certificate, so that the account's one ca_file trusts both servers (two
    # self-signed certificates with the same subject in one bundle confuse OpenSSL's lookup).
    yield from running_smtpd("starttls", dovecot.cert.parent)


@pytest.fixture()
def config(
    pki: TestPki,
    dovecot: Dovecot,
    smtpd: SmtpServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Path:
    """A config for alice's account on the test servers, with bob's certificate in the store."""
    dovecot.maildir("alice")
    cache = tmp_path / "cache"
    monkeypatch.setenv("T_P12_PW", "test")
    monkeypatch.setenv("T_CACHE_KEY", CACHE_KEY)
    monkeypatch.setenv("T_IMAP_PW", PASSWORD)
    monkeypatch.setenv("T_SMTP_PW", SMTP_PASSWORD)
    path = tmp_path / "config.toml"
    path.write_text(
        f"""
[identity]
p12 = "{pki.p12("alice")}"
p12_password_env = "T_P12_PW"
trust_anchors = ["{pki.root}"]
system_anchors = false

[cache]
path = "{cache}"
key_env = "T_CACHE_KEY"

[certificates]
revocation = "off"

[[accounts]]
name = "work"
host = "127.0.0.1"
port = {dovecot.tls_port}
tls = "implicit"
ca_file = "{dovecot.cert}"
username = "alice"
password_env = "T_IMAP_PW"
smtp_host = "127.0.0.1"
smtp_port = {smtpd.port}
smtp_tls = "starttls"
smtp_password_env = "T_SMTP_PW"
"""
    )
    with CertStore.open(cache, CACHE_KEY) as store:
        cert = keyfiles.load_certificates(pki.cert("bob"))[0]
        store.record(Sighting(cert, "import", dt.datetime.now(dt.UTC), anchored=True))
    return path


def _list(config: Path, capsys: pytest.CaptureFixture[str]) -> list[dict[str, object]]:
    capsys.readouterr()
    assert main(["outbox", "list", "--json", "--config", str(config)]) == 0
    return json.loads(capsys.readouterr().out)  # type: ignore[no-any-return]


def test_outbox_run_once_sends_a_draft_and_list_shows_it_done(
    config: Path,
    dovecot: Dovecot,
    smtpd: SmtpServer,
    pki: TestPki,
    capsys: pytest.CaptureFixture[str],
) -> None:
    dovecot.append("alice", draft(pki, "cli"), OUTBOX)
    assert main(["outbox", "run", "--once", "--config", str(config)]) == 0
    assert "outbox work: 1 sent" in capsys.readouterr().out
    [got] = smtpd.received
    assert b"Secret body cli" in open_as(pki, got.data, "bob")
    [item] = _list(config, capsys)
    assert item["state"] == "done" and item["subject"] == "Outbox test cli"
    # The journal is encrypted at rest: neither the subject nor the SQLite header is readable.
    raw = (config.parent / "cache" / DB_FILENAME).read_bytes()
    assert b"Outbox test cli" not in raw and not raw.startswith(b"SQLite format 3")


def test_an_uncertain_item_is_listed_and_sent_again_only_after_outbox_retry(
    config: Path,
    dovecot: Dovecot,
    smtpd: SmtpServer,
    pki: TestPki,
    capsys: pytest.CaptureFixture[str],
) -> None:
    smtpd.answer_next("drop")
    dovecot.append("alice", draft(pki, "unsure"), OUTBOX)
    assert main(["outbox", "run", "--once", "--config", str(config)]) == 0
    assert main(["outbox", "run", "--once", "--config", str(config)]) == 0
    [item] = _list(config, capsys)
    assert item["state"] == "uncertain"
    assert len(smtpd.received) == 1
    assert main(["outbox", "retry", str(item["id"]), "--config", str(config)]) == 0
    assert main(["outbox", "run", "--once", "--config", str(config)]) == 0
    assert len(smtpd.received) == 2
    assert [i["state"] for i in _list(config, capsys)] == ["done"]


def test_retrying_a_done_item_is_a_usage_error_in_one_line(
    config: Path, dovecot: Dovecot, pki: TestPki, capsys: pytest.CaptureFixture[str]
) -> None:
    dovecot.append("alice", draft(pki, "fine"), OUTBOX)
    main(["outbox", "run", "--once", "--config", str(config)])
    capsys.readouterr()
    assert main(["outbox", "retry", "1", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "outbox item 1 is done" in err and len(err.strip().splitlines()) == 1
    assert main(["outbox", "retry", "99", "--config", str(config)]) == 2
    assert "no outbox item 99" in capsys.readouterr().err


def test_the_sent_copy_is_filed_once_in_the_configured_sent_folder(
    config: Path, dovecot: Dovecot, pki: TestPki
) -> None:
    dovecot.append("alice", draft(pki, "filed"), OUTBOX)
    main(["outbox", "run", "--once", "--config", str(config)])
    main(["outbox", "run", "--once", "--config", str(config)])
    imap = dovecot.client("alice")
    try:
        imap.select_folder(SENT, readonly=True)
        assert len(imap.search(["ALL"])) == 1
        imap.select_folder(OUTBOX, readonly=True)
        assert imap.search(["ALL"]) == []
    finally:
        imap.logout()


def _folder(dovecot: Dovecot, folder: str) -> list[bytes]:
    imap = dovecot.client("alice")
    try:
        imap.select_folder(folder, readonly=True)
        uids = imap.search(["ALL"])
        return [bytes(m[b"BODY[]"]) for m in imap.fetch(uids, ["BODY.PEEK[]"]).values()]
    finally:
        imap.logout()


def test_with_the_default_config_a_draft_in_the_folder_the_daemon_made_is_sent_in_one_run(
    config: Path,
    dovecot: Dovecot,
    smtpd: SmtpServer,
    pki: TestPki,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The config names no outbox or Sent folder. The first pass makes the outbox folder...
    assert main(["run", "--once", "--config", str(config)]) == 0
    imap = dovecot.client("alice")
    try:
        assert imap.folder_exists(OUTBOX)
    finally:
        imap.logout()
    # ...the user saves a draft there, and one more pass seals, sends, files and removes it.
    dovecot.append("alice", draft(pki, "stock"), OUTBOX)
    assert main(["run", "--once", "--config", str(config)]) == 0
    assert "work: outbox: 1 sent" in capsys.readouterr().out
    [got] = smtpd.received
    assert b"Secret body stock" in open_as(pki, got.data, "bob")
    [filed] = _folder(dovecot, SENT)
    assert b"Secret body stock" not in filed and b"pkcs7-mime" in filed  # the sealed copy
    assert _folder(dovecot, OUTBOX) == []


def _run_daemon(config: Path) -> tuple[Daemon, threading.Thread]:
    daemon = build_daemon(load_config(config))
    thread = threading.Thread(target=daemon.run, name="daemon under test")
    thread.start()
    return daemon, thread


def _stop(daemon: Daemon, thread: threading.Thread) -> None:
    daemon.stop.set()
    thread.join(timeout=20)
    assert not thread.is_alive()


def _wait_until(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


def _outbox_watched(config: Path) -> bool:
    status = read_status_file(config.parent / "cache") or {}
    folders = status.get("accounts", {}).get("work", {}).get("folders", {})
    return bool(folders.get(OUTBOX) == "idle")


def test_a_running_daemon_sends_a_draft_as_soon_as_it_lands_in_the_outbox_folder(
    config: Path, dovecot: Dovecot, smtpd: SmtpServer, pki: TestPki
) -> None:
    daemon, thread = _run_daemon(config)
    try:
        assert _wait_until(lambda: _outbox_watched(config), 15), "the outbox folder is not in IDLE"
        dovecot.append("alice", draft(pki, "live"), OUTBOX)
        # IDLE wakes an outbox pass at once; without it the next pass is a minute away.
        assert _wait_until(lambda: len(smtpd.received) == 1, 10)
    finally:
        _stop(daemon, thread)
    assert b"Secret body live" in open_as(pki, smtpd.received[0].data, "bob")


def test_a_running_daemon_sends_a_draft_saved_into_the_local_outbox_directory(
    config: Path, dovecot: Dovecot, smtpd: SmtpServer, pki: TestPki
) -> None:
    outbox_dir = config.parent / "outbox"
    outbox_dir.mkdir()
    config.write_text(config.read_text() + f'\n[outbox]\ndirectory = "{outbox_dir}"\n')
    daemon, thread = _run_daemon(config)
    try:
        assert _wait_until(lambda: _outbox_watched(config), 15)
        tmp = outbox_dir / ".draft.eml.tmp"
        tmp.write_bytes(draft(pki, "local-live"))
        tmp.rename(outbox_dir / "draft.eml")  # an atomic save, as editors do
        assert _wait_until(lambda: len(smtpd.received) == 1, 10)
    finally:
        _stop(daemon, thread)
    assert b"Secret body local-live" in open_as(pki, smtpd.received[0].data, "bob")
    assert not (outbox_dir / "draft.eml").exists()


# -- doctor on the outbox, Sent, SMTP and the harvested certificates ------------------------------


def _doctor(config: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    capsys.readouterr()
    code = main(["doctor", "--config", str(config)])
    return code, capsys.readouterr().out.splitlines()


def test_doctor_makes_the_outbox_finds_sent_and_logs_in_to_smtp_without_sending(
    config: Path, dovecot: Dovecot, smtpd: SmtpServer, capsys: pytest.CaptureFixture[str]
) -> None:
    code, lines = _doctor(config, capsys)
    assert code == 0, lines
    [outbox] = [line for line in lines if "outbox folder" in line]
    held = dovecot.name(OUTBOX, "Held")
    assert outbox.startswith("ok") and f"{OUTBOX!r}" in outbox and repr(held) in outbox
    assert "Sent folder 'Sent'" in outbox
    [smtp] = [line for line in lines if "SMTP" in line]
    assert smtp.startswith("ok") and "STARTTLS, AUTH" in smtp
    assert smtpd.received == []  # nothing was sent
    imap = dovecot.client("alice")
    try:
        assert imap.folder_exists(OUTBOX) and imap.folder_exists(held)
    finally:
        imap.logout()


def test_doctor_fails_on_a_wrong_smtp_password_and_a_missing_folder_saying_what_to_fix(
    config: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("T_SMTP_PW", "not the password")
    config.write_text(
        config.read_text().replace(
            'username = "alice"', 'username = "alice"\nfolders = ["INBOX", "Archiv"]'
        )
    )
    code, lines = _doctor(config, capsys)
    assert code == 1
    [smtp] = [line for line in lines if "SMTP" in line]
    assert smtp.startswith("FAIL") and "login refused" in smtp and "fix smtp_password" in smtp
    [folder] = [line for line in lines if "Archiv" in line]
    assert folder.startswith("FAIL") and "fix 'folders'" in folder and "INBOX" in folder


def test_doctor_warns_when_harvested_certificates_chain_to_no_anchor_and_names_the_fix(
    config: Path, pki: TestPki, capsys: pytest.CaptureFixture[str]
) -> None:
    rogue = keyfiles.load_certificates(pki.cert("rogue"))[0]
    with CertStore.open(config.parent / "cache", CACHE_KEY) as store:
        store.record(Sighting(rogue, "<r@example.org>", dt.datetime.now(dt.UTC), anchored=False))
    code, lines = _doctor(config, capsys)
    assert code == 0  # a warning: mail still flows
    [warn] = [line for line in lines if line.startswith("warn  harvested")]
    assert "1 issued by CN=Rogue Root CA" in warn and "trust_anchors" in warn
    assert "smime-companion certs trust " in warn
    # With the correspondents' CA among the anchors, the same check is fine.
    config.write_text(
        config.read_text().replace(
            f'trust_anchors = ["{pki.root}"]', f'trust_anchors = ["{pki.root}", "{pki.rogue_root}"]'
        )
    )
    code, lines = _doctor(config, capsys)
    assert any(line.startswith("ok    harvested certificates: all 1") for line in lines), lines

"""The daemon and its commands (run --once, sync, status, doctor) on a real Dovecot, with a config
file written by the test: several accounts, one of them broken; IDLE; reconnecting after a server
restart; SIGTERM."""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from smime_companion.backoff import Backoff
from smime_companion.cli import main
from smime_companion.cli.daemon_cmds import build_daemon
from smime_companion.config import load_config
from smime_companion.daemon import Daemon
from smime_companion.runtime import load_anchors, load_identities, open_cache, open_certstore
from smime_companion.status_file import read_status_file
from smime_companion.testing.pki import PKCS12_PASSWORD, TestPki
from tests.dovecot import (
    PASSWORD,
    Dovecot,
    encrypted_mail,
    free_port,
    plain_mail,
    running_dovecot,
    signed_mail,
)


@pytest.fixture(scope="module")
def server() -> Iterator[Dovecot]:
    yield from running_dovecot()


@pytest.fixture(autouse=True)
def secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_IMAP_PASSWORD", PASSWORD)
    monkeypatch.setenv("TEST_P12_PASSWORD", PKCS12_PASSWORD)
    monkeypatch.setenv("TEST_CACHE_KEY", "cache key for the daemon tests")


def write_config(
    path: Path,
    server: Dovecot,
    pki: TestPki,
    folders: list[str],
    *,
    extra_accounts: str = "",
    ca_file: Path | None = None,
) -> Path:
    path.write_text(
        f"""
[identity]
p12 = "{pki.p12("bob")}"
p12_password_env = "TEST_P12_PASSWORD"
trust_anchors = ["{pki.root}"]
system_anchors = false

[cache]
path = "{path.parent / "cache"}"
key_env = "TEST_CACHE_KEY"

[[accounts]]
name = "work"
host = "localhost"
port = {server.tls_port}
tls = "implicit"
ca_file = "{ca_file or server.cert}"
username = "alice"
password_env = "TEST_IMAP_PASSWORD"
folders = {json.dumps(folders)}
{extra_accounts}
"""
    )
    return path


def cached_subjects(config_path: Path, folder: str) -> list[str]:
    with open_cache(load_config(config_path)) as cache:
        hits = cache.search(f'folder:"{folder}"', now=dt.datetime.now(dt.UTC))
    return sorted(h.subject for h in hits)


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


def test_run_once_syncs_the_good_account_and_names_the_broken_ones_in_one_line_each(
    server: Dovecot, pki: TestPki, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server.deliver("alice", signed_mail(pki, "once-1"), "Once")
    server.deliver("alice", plain_mail("once-plain"), "Once")
    broken = f"""
[[accounts]]
name = "down"
host = "127.0.0.1"
port = {free_port()}
tls = "plain"
insecure_plaintext = true
username = "x"
password_env = "TEST_IMAP_PASSWORD"

[[accounts]]
name = "nosecret"
host = "localhost"
port = {server.tls_port}
ca_file = "{server.cert}"
username = "alice"
password_env = "UNSET_VARIABLE_FOR_TEST"
"""
    config = write_config(tmp_path / "c.toml", server, pki, ["Once"], extra_accounts=broken)
    assert main(["run", "--once", "--config", str(config)]) == 1
    out = capsys.readouterr()
    assert "work/Once: 2 new, 1 stored, 1 not S/MIME" in out.out
    [down] = [line for line in out.out.splitlines() if line.startswith("down:")]
    assert "cannot connect" in down
    [nosecret] = [line for line in out.out.splitlines() if line.startswith("nosecret:")]
    assert "UNSET_VARIABLE_FOR_TEST is not set" in nosecret
    assert cached_subjects(config, "Once") == ["Test once-1"]
    # The signer's certificate was harvested into the certificate store.
    with open_certstore(load_config(config)) as store:
        assert store.records("alice@example.org")


def test_sync_limited_to_one_folder_leaves_the_others_alone(
    server: Dovecot, pki: TestPki, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server.deliver("alice", signed_mail(pki, "only-a"), "OnlyA")
    server.deliver("alice", signed_mail(pki, "only-b"), "OnlyB")
    config = write_config(tmp_path / "c.toml", server, pki, ["OnlyA", "OnlyB"])
    args = ["sync", "--account", "work", "--folder", "OnlyA", "--json", "--config", str(config)]
    assert main(args) == 0
    [account] = json.loads(capsys.readouterr().out)
    assert [f["folder"] for f in account["folders"]] == ["OnlyA"]
    assert cached_subjects(config, "OnlyA") == ["Test only-a"]
    assert cached_subjects(config, "OnlyB") == []


def test_sync_folder_without_account_is_a_usage_error(tmp_path: Path) -> None:
    assert main(["sync", "--folder", "INBOX", "--config", str(tmp_path / "none.toml")]) == 2


def test_status_json_reports_last_sync_cached_count_and_errors(
    server: Dovecot, pki: TestPki, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for i in range(2):
        server.deliver("alice", signed_mail(pki, f"st{i}"), "Stat")
    config = write_config(tmp_path / "c.toml", server, pki, ["Stat"])
    before = dt.datetime.now(dt.UTC)
    assert main(["sync", "--config", str(config)]) == 0
    capsys.readouterr()
    assert main(["status", "--json", "--config", str(config)]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["daemon"]["running"] is False
    [account] = status["accounts"]
    [folder] = account["folders"]
    assert folder["folder"] == "Stat" and folder["cached"] == 2 and folder["error"] is None
    assert dt.datetime.fromisoformat(folder["last_sync"]) >= before


def make_daemon(config_path: Path) -> Daemon:
    config = load_config(config_path)
    return Daemon(
        config,
        open_cache(config),
        identities=load_identities(config.identity),
        anchors=load_anchors(config.identity),
    )


def test_running_daemon_caches_a_new_message_reported_by_idle_and_stops_on_request(
    server: Dovecot, pki: TestPki, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = "Live"
    server.deliver("alice", signed_mail(pki, "live-0"), folder)
    config = write_config(tmp_path / "c.toml", server, pki, [folder])
    daemon = make_daemon(config)
    thread = threading.Thread(target=daemon.run)
    thread.start()
    try:
        assert wait_until(lambda: daemon.cache.uids("work", folder, _uv(server, folder)) != set())
        assert wait_until(
            lambda: (
                (read_status_file(tmp_path / "cache") or {})
                .get("accounts", {})
                .get("work", {})
                .get("folders", {})
                .get(folder)
                == "idle"
            )
        )
        assert main(["status", "--json", "--config", str(config)]) == 0
        status = json.loads(capsys.readouterr().out)
        assert status["daemon"]["running"] is True
        [live] = status["accounts"][0]["folders"]
        assert (live["folder"], live["idle"], live["cached"]) == (folder, "idle", 1)
        server.deliver("alice", signed_mail(pki, "live-1"), folder)
        # The IDLE watcher notices within about a second; nothing else polls that fast.
        assert wait_until(
            lambda: len(daemon.cache.uids("work", folder, _uv(server, folder))) == 2, 5
        )
    finally:
        daemon.stop.set()
        thread.join(timeout=15)
    assert not thread.is_alive()
    daemon.cache.close()
    assert (read_status_file(tmp_path / "cache") or {}).get("running") is False


class _CallLog:
    """A connection that records the names of the methods called on it (and passes them on)."""

    def __init__(self, box: Any) -> None:
        self._box = box
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._box, name)
        if callable(value):
            self.calls.append(name)
        return value


def test_a_change_idle_reports_is_synced_on_the_watchers_own_connection(
    server: Dovecot, pki: TestPki, tmp_path: Path
) -> None:
    """The watcher's server process has just seen the folder change; the sync connection's would
    have to look again (seconds on a huge Maildir). So the pass borrows the watcher's connection,
    does not select the folder again (that too made Dovecot open it afresh), and the watcher goes
    back to IDLE after it (the second message shows it is listening)."""
    folder = "Borrowed"
    server.deliver("alice", signed_mail(pki, "lend-0"), folder)
    config = write_config(tmp_path / "c.toml", server, pki, [folder])
    daemon = make_daemon(config)
    boxes: list[_CallLog] = []
    connect_for_real = daemon.connector

    def connector(spec: Any) -> Any:
        boxes.append(_CallLog(connect_for_real(spec)))
        return boxes[-1]

    daemon.connector = connector
    thread = threading.Thread(target=daemon.run)
    thread.start()
    try:
        uv = _uv(server, folder)
        assert wait_until(lambda: len(boxes) == 2 and "idle_start" in boxes[1].calls)
        sync_box, watch_box = boxes
        assert len(daemon.cache.uids("work", folder, uv)) == 1
        sync_calls = len(sync_box.calls)
        for n in (1, 2):
            watch_calls = len(watch_box.calls)
            server.deliver("alice", signed_mail(pki, f"lend-{n}"), folder)
            assert wait_until(lambda n=n: len(daemon.cache.uids("work", folder, uv)) == n + 1, 10)
            assert wait_until(lambda: watch_box.calls[-1] == "idle_wait")  # listening again
            during_pass = watch_box.calls[watch_calls:]
            assert "changes_since" in during_pass and "search_uids" in during_pass
            assert "examine" not in during_pass
        assert len(sync_box.calls) == sync_calls  # the sync connection was not asked anything
        assert len(boxes) == 2
    finally:
        daemon.stop.set()
        thread.join(timeout=15)
        daemon.cache.close()


def test_daemon_reconnects_after_a_server_restart_and_catches_up(
    server: Dovecot, pki: TestPki, tmp_path: Path
) -> None:
    folder = "Comeback"
    server.deliver("alice", signed_mail(pki, "back-0"), folder)
    config = write_config(tmp_path / "c.toml", server, pki, [folder])
    daemon = make_daemon(config)
    thread = threading.Thread(target=daemon.run)
    thread.start()
    try:
        uv = _uv(server, folder)
        assert wait_until(lambda: len(daemon.cache.uids("work", folder, uv)) == 1)
        server.stop()
        server.deliver("alice", signed_mail(pki, "back-1"), folder)  # arrives while down
        server.start()
        # Failed reconnects back off 1, 2, 4, 8, 16 s (jittered down to half): on a loaded machine
        # the restart alone can cost the first three, so allow for the fifth attempt.
        assert wait_until(lambda: len(daemon.cache.uids("work", folder, uv)) == 2, 40)
    finally:
        daemon.stop.set()
        thread.join(timeout=15)
        daemon.cache.close()


def _uv(server: Dovecot, folder: str) -> int:
    imap = server.client()
    try:
        return int(imap.select_folder(folder, readonly=True)[b"UIDVALIDITY"])
    finally:
        imap.logout()


def test_sigterm_stops_run_cleanly(server: Dovecot, pki: TestPki, tmp_path: Path) -> None:
    server.maildir("alice", "Term")
    config = write_config(tmp_path / "c.toml", server, pki, ["Term"])
    proc = subprocess.Popen(
        [sys.executable, "-m", "smime_companion", "run", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ},
    )
    try:
        assert wait_until(
            lambda: (read_status_file(tmp_path / "cache") or {}).get("running") is True, 15
        )
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stderr = proc.stderr.read().decode() if proc.stderr else ""
    assert PASSWORD not in stderr
    assert (read_status_file(tmp_path / "cache") or {}).get("running") is False


def test_doctor_passes_on_a_good_config_and_fails_on_an_untrusted_server_certificate(
    server: Dovecot, pki: TestPki, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path / "c.toml", server, pki, ["INBOX"])
    assert main(["doctor", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "FAIL" not in out
    assert "IDLE, CONDSTORE, QRESYNC offered" in out
    assert "identity" in out and "valid until" in out
    assert "clock: " in out and "behind" not in out

    wrong_ca = tmp_path / "wrong"
    from tests.dovecot import make_tls_certificate

    bad = write_config(
        tmp_path / "bad.toml", server, pki, ["INBOX"], ca_file=make_tls_certificate(wrong_ca)
    )
    assert main(["doctor", "--config", str(bad)]) == 1
    assert "TLS certificate not trusted" in capsys.readouterr().out


def test_backoff_doubles_with_jitter_up_to_the_cap_and_resets() -> None:
    backoff = Backoff(base=1, cap=8, rng=random.Random(7))
    delays = [backoff.next_delay() for _ in range(6)]
    for n, delay in enumerate(delays):
        ceiling = min(8, 2**n)
        assert ceiling / 2 <= delay <= ceiling
    assert len({round(d, 6) for d in delays}) == len(delays)  # jittered, not fixed
    backoff.reset()
    assert backoff.next_delay() <= 1


def test_reload_with_an_added_old_key_reopens_the_messages_that_could_not_be_opened(
    server: Dovecot, pki: TestPki, tmp_path: Path
) -> None:
    folder = "Reload"
    server.deliver("alice", encrypted_mail(pki, "for-carol", to="carol"), folder)
    config_path = write_config(tmp_path / "c.toml", server, pki, [folder])
    daemon = make_daemon(config_path)
    thread = threading.Thread(target=daemon.run, args=(lambda: load_config(config_path),))
    thread.start()

    def decryption() -> str | None:
        hits = daemon.cache.search(f"folder:{folder}", now=dt.datetime.now(dt.UTC))
        return hits[0].decryption if hits else None

    try:
        assert wait_until(lambda: decryption() == "no-key")
        text = config_path.read_text().replace(
            'p12_password_env = "TEST_P12_PASSWORD"',
            f'p12_password_env = "TEST_P12_PASSWORD"\nold_p12 = ["{pki.p12("carol")}"]',
        )
        config_path.write_text(text)
        daemon.reload.set()  # what SIGHUP does
        assert wait_until(lambda: decryption() == "ok")
    finally:
        daemon.stop.set()
        thread.join(timeout=15)
        daemon.cache.close()


def test_doctor_warns_when_the_server_clock_is_ahead_of_ours(
    server: Dovecot, pki: TestPki, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Maildir's arrival time is the file's mtime: a message that arrived two hours from now.
    path = server.deliver("alice", plain_mail("future"), "Clock")
    later = time.time() + 2 * 3600
    os.utime(path, (later, later))
    config = write_config(tmp_path / "c.toml", server, pki, ["Clock"])
    assert main(["doctor", "--config", str(config)]) == 0
    [line] = [x for x in capsys.readouterr().out.splitlines() if "clock:" in x]
    assert line.startswith("warn") and "clock is behind" in line


def test_run_once_also_passes_over_the_outbox_and_defers_what_smtp_refuses(
    server: Dovecot, pki: TestPki, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server.deliver("alice", signed_mail(pki, "ob-1"), "OutboxSync")
    # A draft from the identity (bob) to alice, whose certificate the same pass harvests.
    draft = plain_mail("draft", sender="bob@example.org", to="alice@example.org")
    server.append("alice", draft, "S/MIME Outbox")
    config = write_config(tmp_path / "c.toml", server, pki, ["OutboxSync"])
    text = config.read_text().replace(
        'folders = ["OutboxSync"]',
        'folders = ["OutboxSync"]\nsmtp_host = "127.0.0.1"\n'
        f'smtp_port = {free_port()}\nsmtp_tls = "plain"\ninsecure_plaintext = true',
    )
    config.write_text(text)
    code = main(["run", "--once", "--config", str(config)])
    out = capsys.readouterr().out
    assert "work/OutboxSync: 1 new, 1 stored" in out  # the sync is done whatever the outbox does
    [outbox] = [line for line in out.splitlines() if line.startswith("work: outbox")]
    # Sealed (alice's certificate was harvested by the sync just before), then deferred: the
    # SMTP server is down, so the item waits in the journal for the next pass.
    assert outbox == "work: outbox: 0 sent, 1 deferred, 0 held, 0 rejected, 0 uncertain"
    assert code == 0


def test_run_once_exits_1_when_a_watched_folder_is_missing(
    server: Dovecot, pki: TestPki, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server.deliver("alice", plain_mail("here"), "Present")
    config = write_config(tmp_path / "c.toml", server, pki, ["Present", "Absent"])
    assert main(["run", "--once", "--config", str(config)]) == 1
    out = capsys.readouterr().out
    assert "work/Present: 1 new" in out  # what exists is still synced
    assert "work: FAILED: the server has no folder 'Absent'" in out


def test_run_once_and_sync_exit_1_when_the_outbox_failed_and_say_why_with_the_servers_words(
    server: Dovecot, pki: TestPki, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server.deliver("alice", plain_mail("fine"), "OutboxFails")
    config = write_config(tmp_path / "c.toml", server, pki, ["OutboxFails"])
    config.write_text(
        config.read_text().replace(
            'folders = ["OutboxFails"]',
            'folders = ["OutboxFails"]\noutbox_folder = "~Outbox"\nsmtp_host = "127.0.0.1"\n'
            f'smtp_port = {free_port()}\nsmtp_tls = "plain"\ninsecure_plaintext = true',
        )
    )
    for command in (["run", "--once"], ["sync"]):
        assert main([*command, "--config", str(config)]) == 1
        out = capsys.readouterr().out
        assert "work/OutboxFails:" in out
        assert "CREATE '~Outbox' failed: [CANNOT] Invalid mailbox name" in out


def test_a_second_run_for_the_same_config_stops_at_once_naming_the_first(
    server: Dovecot, pki: TestPki, tmp_path: Path
) -> None:
    server.maildir("alice", "Lock")
    config = write_config(tmp_path / "c.toml", server, pki, ["Lock"])
    command = [sys.executable, "-m", "smime_companion", "run", "--config", str(config)]
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert wait_until(
            lambda: (read_status_file(tmp_path / "cache") or {}).get("running") is True, 15
        )
        second = subprocess.run(command, capture_output=True, text=True, timeout=30)
        assert second.returncode == 1
        [line] = second.stderr.strip().splitlines()
        assert "already running for this config" in line and f"pid {first.pid}" in line
        assert (tmp_path / "cache" / "daemon.lock").read_text().strip() == str(first.pid)
        # run --once beside it is refused the same way: two writers of one outbox journal.
        once = subprocess.run([*command, "--once"], capture_output=True, text=True, timeout=30)
        assert once.returncode == 1 and "already running" in once.stderr
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(timeout=15)
    # Once the first is gone, the lock is free again (the kernel dropped it with the process).
    assert main(["run", "--once", "--config", str(config)]) == 0


def test_a_refused_login_is_said_once_and_not_retried_for_minutes(
    server: Dovecot,
    pki: TestPki,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("TEST_IMAP_PASSWORD", "wrong password")
    server.maildir("alice", "Refused")
    config = write_config(tmp_path / "c.toml", server, pki, ["Refused"])
    config.write_text(
        config.read_text().replace(
            'folders = ["Refused"]',
            f'folders = ["Refused"]\nsmtp_host = "127.0.0.1"\nsmtp_port = {free_port()}\n'
            'smtp_tls = "plain"\ninsecure_plaintext = true',
        )
    )
    daemon = build_daemon(load_config(config))
    thread = threading.Thread(target=daemon.run)
    log_before = server.log().count("auth failed") + server.log().count("Password mismatch")
    with caplog.at_level("DEBUG", logger="smime_companion"):
        thread.start()
        try:
            time.sleep(6)  # the old backoff retried a dozen times in this while
        finally:
            daemon.stop.set()
            thread.join(timeout=15)
            daemon.shutdown()
    refused = [r for r in caplog.records if r.levelname == "ERROR" and "login refused" in r.message]
    assert len(refused) == 1
    assert (
        "Not trying again for" in refused[0].message and "wrong password" not in refused[0].message
    )
    logins = server.log().count("auth failed") + server.log().count("Password mismatch")
    assert 1 <= logins - log_before <= 1  # one attempt: no outbox pass, no watcher behind it


def _verdicts(config_path: Path, folder: str = "Trust") -> tuple[str, str]:
    """The cached signature of the rogue's message in ``folder`` and the stored trust of the
    rogue's certificate (``-`` for what is not there yet)."""
    config = load_config(config_path)
    with open_cache(config) as cache:
        hits = cache.search(f"folder:{folder}", now=dt.datetime.now(dt.UTC))
    with open_certstore(config) as store:
        records = store.records("rogue@example.org")
    return (
        hits[0].signature if len(hits) == 1 else "-",
        str(records[0].trust) if len(records) == 1 else "-",
    )


def test_a_trust_anchor_added_or_removed_later_rejudges_cached_verdicts_and_certificates(
    server: Dovecot, pki: TestPki, tmp_path: Path
) -> None:
    server.deliver("alice", signed_mail(pki, "rogue-1", user="rogue"), "Trust")
    config = write_config(tmp_path / "c.toml", server, pki, ["Trust"])
    assert main(["run", "--once", "--config", str(config)]) == 0
    assert _verdicts(config) == ("untrusted", "untrusted")
    with_rogue = config.read_text().replace(
        f'trust_anchors = ["{pki.root}"]', f'trust_anchors = ["{pki.root}", "{pki.rogue_root}"]'
    )
    config.write_text(with_rogue)
    assert main(["run", "--once", "--config", str(config)]) == 0  # nothing new on the server
    assert _verdicts(config) == ("valid", "anchor")
    config.write_text(with_rogue.replace(f', "{pki.rogue_root}"', ""))
    assert main(["run", "--once", "--config", str(config)]) == 0
    assert _verdicts(config) == ("untrusted", "untrusted")


def test_a_tofu_policy_added_on_reload_pins_the_certificates_it_now_covers(
    server: Dovecot, pki: TestPki, tmp_path: Path
) -> None:
    server.deliver("alice", signed_mail(pki, "rogue-2", user="rogue"), "Tofu")
    config = write_config(tmp_path / "c.toml", server, pki, ["Tofu"])
    daemon = build_daemon(load_config(config))
    thread = threading.Thread(target=daemon.run, args=(lambda: load_config(config),))
    thread.start()
    try:
        assert wait_until(lambda: _verdicts(config, "Tofu") == ("untrusted", "untrusted"), 15)
        config.write_text(config.read_text() + '\n[certificates]\ntofu = ["example.org"]\n')
        daemon.reload.set()  # what SIGHUP does
        assert wait_until(lambda: _verdicts(config, "Tofu")[1] == "tofu", 15)
    finally:
        daemon.stop.set()
        thread.join(timeout=15)
        daemon.shutdown()

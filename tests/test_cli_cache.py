"""``smime-companion search|show|export|cache`` as a user runs them: a config file, a key in an
environment variable, a cache filled with openssl-made mail; exports read back with ``mailbox``."""

from __future__ import annotations

import datetime as dt
import json
import mailbox
import os
import pty
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from smime_companion.errors import CacheError
from smime_companion.store import Cache, db
from smime_companion.testing.pki import TestPki
from tests.test_cache import KEY, mail, opener, store
from tests.test_query import PDF_PART


def _config(
    tmp: Path,
    pki: TestPki,
    *,
    old_p12: list[Path] | None = None,
    extra: str = "",
    key_source: str = 'key_env = "TEST_CACHE_KEY"',
) -> Path:
    path = tmp / "config.toml"
    old = ", ".join(f'"{p}"' for p in (old_p12 or []))
    path.write_text(
        "[identity]\n"
        f'p12 = "{pki.p12("bob")}"\n'
        'p12_password_env = "TEST_P12_PASSWORD"\n'
        f"old_p12 = [{old}]\n"
        f'trust_anchors = ["{pki.root}"]\n'
        "system_anchors = false\n"
        "[cache]\n"
        f'path = "{tmp / "data"}"\n'
        f"{key_source}\n" + extra
    )
    return path


def cli(
    config: Path, *args: str | Path, key: str | None = KEY, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("TEST_CACHE_KEY",)} | (env or {})
    env["TEST_P12_PASSWORD"] = "test"
    if key is not None:
        env["TEST_CACHE_KEY"] = key
    argv = [sys.executable, "-m", "smime_companion", *map(str, args)]
    # --config goes on the subcommand (and the action for "cache ...").
    argv += ["--config", str(config)]
    return subprocess.run(argv, capture_output=True, timeout=60, env=env, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def setup(pki: TestPki, tmp_path_factory: pytest.TempPathFactory, pki_now: dt.datetime):
    """A config and a cache with: a signed+encrypted message with a PDF, a plain message, and
    one encrypted to Carol (whose key the config does not have). Yields (config, ids, raws)."""
    tmp = tmp_path_factory.mktemp("cli-cache")
    config = _config(tmp, pki)
    raws = {
        "sealed": mail(pki, kind="signed+encrypted", subject="Sealed report", extra_parts=PDF_PART,
                       body="The aardvark figures.", date="Mon, 23 Nov 2026 10:00:00 +0000"),
        "plain": mail(pki, subject="Lunch", body="Tapir soup today.\r\n",
                      date="Tue, 24 Nov 2026 10:00:00 +0000"),
        "carol": mail(pki, kind="encrypted", to="carol", subject="For Carol",
                      body="Quokka plans.\r\n", date="Sun, 22 Nov 2026 10:00:00 +0000"),
    }  # fmt: skip
    ids = {}
    with Cache.open(tmp / "data", KEY) as cache:
        for uid, (name, raw) in enumerate(raws.items(), start=1):
            ids[name] = store(cache, raw, opener(pki), pki_now, uid=uid)
    return config, ids, raws


def test_search_json_lists_the_pinned_fields_newest_first(setup) -> None:
    config, ids, _ = setup
    proc = cli(config, "search", "--json", "")
    assert proc.returncode == 0, proc.stderr
    hits = json.loads(proc.stdout)
    assert [h["id"] for h in hits] == [ids["plain"], ids["sealed"], ids["carol"]]
    sealed = hits[1]
    for key in ("id", "folder", "uid", "from", "to", "subject", "date", "encrypted",
                "signature", "signer"):  # fmt: skip
        assert key in sealed
    assert sealed["encrypted"] is True and sealed["signature"] == "valid"
    assert sealed["signer"] == "alice@example.org" and sealed["folder"] == "INBOX"
    assert sealed["preview"] == "The aardvark figures."  # decrypted, for a script's list


def test_search_prints_one_line_per_hit_and_honours_limit(setup) -> None:
    config, _, _ = setup
    proc = cli(config, "search", "--limit", "1", "is:encrypted", "OR", "tapir")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.decode().splitlines()
    assert len(lines) == 1 and "Lunch" in lines[0]
    proc = cli(config, "search", "aardvark")
    assert "Sealed report" in proc.stdout.decode() and "sig:valid" in proc.stdout.decode()


def test_a_malformed_query_is_one_line_and_exit_2(setup) -> None:
    config, _, _ = setup
    proc = cli(config, "search", '"unclosed')
    assert proc.returncode == 2
    assert proc.stderr.decode() == (
        "smime-companion search: malformed query at column 1: this quote is never closed\n"
    )


def test_a_wrong_or_missing_key_is_one_line(setup) -> None:
    config, _, _ = setup
    # Earlier commands left the page key in the kernel keyring (test_cache_unlock.py): forget it,
    # or the passphrase would not even be read.
    assert cli(config, "cache", "lock", key=None).returncode == 0
    proc = cli(config, "search", "tapir", key="wrong")
    assert proc.returncode == 1
    assert proc.stderr.decode() == (
        "smime-companion search: wrong cache key: the database could not be decrypted\n"
    )
    proc = cli(config, "cache", "stats", key=None)
    assert proc.returncode == 2
    assert proc.stderr.decode().count("\n") == 1 and "TEST_CACHE_KEY" in proc.stderr.decode()


def test_show_gives_verdict_raw_headers_text_and_parts(setup, tmp_path: Path) -> None:
    config, ids, raws = setup
    proc = cli(config, "show", ids["sealed"])
    out = proc.stdout.decode()
    assert proc.returncode == 0, proc.stderr
    assert "Subject: Sealed report" in out and "X-SMIME-Companion-Signature: valid" in out
    assert "aardvark figures" in out and "contract.pdf" in out
    assert cli(config, "show", "--raw", ids["sealed"]).stdout == raws["sealed"]
    headers = cli(config, "show", "--headers", ids["sealed"]).stdout.decode()
    assert "X-SMIME-Companion-Decryption: ok" in headers and "aardvark" not in headers
    assert (
        cli(config, "show", "--text", ids["plain"]).stdout.decode().strip() == "Tapir soup today."
    )
    target = tmp_path / "contract.pdf"
    proc = cli(config, "show", "--part", "2", "-o", target, ids["sealed"])
    assert proc.returncode == 0, proc.stderr
    assert target.read_bytes() == b"%PDF-1.4\n"
    proc = cli(config, "show", "--part", "9", ids["sealed"])
    assert proc.returncode == 2 and b"has no part 9" in proc.stderr
    proc = cli(config, "show", "424242")
    assert proc.returncode == 2 and proc.stderr.decode().endswith(
        "no message with id 424242 in the cache\n"
    )


def test_show_text_prints_a_body_sent_as_text_and_html_once(
    pki: TestPki, tmp_path: Path, now: dt.datetime
) -> None:
    config = _config(tmp_path, pki)
    # As Gmail, Outlook and Apple Mail send it: the text, then the same as HTML.
    raw = (
        b"From: alice@example.org\r\nTo: bob@example.org\r\nSubject: Noon\r\n"
        b'MIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary="alt"\r\n\r\n'
        b"--alt\r\nContent-Type: text/plain\r\n\r\nSee you at noon.\r\n--alt\r\n"
        b"Content-Type: text/html\r\n\r\n<p>See you <b>at noon</b>.</p>\r\n--alt--\r\n"
    )
    with Cache.open(tmp_path / "data", KEY) as cache:
        message_id = store(cache, raw, opener(pki), now, uid=1)
    proc = cli(config, "show", "--text", message_id)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.decode() == "See you at noon.\n"
    shown = json.loads(cli(config, "show", "--json", message_id).stdout)
    assert shown["text"] == "See you at noon." and shown["preview"] == "See you at noon."


def test_export_to_mbox_opens_back_with_the_mailbox_module(setup, tmp_path: Path) -> None:
    config, _, _ = setup
    target = tmp_path / "out.mbox"
    proc = cli(config, "export", "--mbox", target, "")
    assert proc.returncode == 0, proc.stderr
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    box = mailbox.mbox(str(target))
    messages = {m["Subject"]: m for m in box}
    assert set(messages) == {"Sealed report", "Lunch", "For Carol"}
    sealed = messages["Sealed report"]
    assert sealed["X-SMIME-Companion-Signature"] == "valid"
    assert sealed["X-SMIME-Companion-Decryption"] == "ok"
    assert sealed["X-SMIME-Companion-Signer"] == "alice@example.org"
    assert sealed["From"] == "alice@example.org"
    assert sealed.get_content_type() == "multipart/mixed"
    text_part, pdf_part = sealed.get_payload()
    assert "aardvark figures" in text_part.get_payload(decode=True).decode()
    assert pdf_part.get_filename() == "contract.pdf"
    assert pdf_part.get_payload(decode=True) == b"%PDF-1.4\n"
    carol = messages["For Carol"]  # not opened: exported as fetched, with its verdict
    assert carol["X-SMIME-Companion-Decryption"] == "no-key"
    assert carol.get_content_type() in ("application/pkcs7-mime", "application/x-pkcs7-mime")


def test_export_to_maildir_takes_a_query(setup, tmp_path: Path) -> None:
    config, _, _ = setup
    target = tmp_path / "Maildir"
    proc = cli(config, "export", "--maildir", target, "is:signed")
    assert proc.returncode == 0, proc.stderr
    box = mailbox.Maildir(str(target), create=False)
    [only] = list(box)
    assert only["Subject"] == "Sealed report"
    assert only["X-SMIME-Companion-Scan"] == "not-scanned"
    assert stat.S_IMODE(target.stat().st_mode) == 0o700


def test_cache_stats(setup) -> None:
    config, _, _ = setup
    proc = cli(config, "cache", "stats", "--json")
    assert proc.returncode == 0, proc.stderr
    stats = json.loads(proc.stdout)
    assert stats["messages"] == 3 and stats["encrypted"] is True
    assert stats["encrypted_messages"] == 2 and stats["unopened"] == 1
    assert stats["attachments"] == 1 and stats["scan"] == {"pending": 3}
    human = cli(config, "cache", "stats").stdout.decode()
    assert "messages: 3" in human and "(encrypted)" in human


def test_cache_rebuild_opens_old_mail_after_a_key_import(
    pki: TestPki, tmp_path: Path, now: dt.datetime
) -> None:
    config = _config(tmp_path, pki)
    with Cache.open(tmp_path / "data", KEY) as cache:
        store(cache, mail(pki, kind="encrypted", to="carol", body="Numbat\r\n"), opener(pki),
              now, uid=1)  # fmt: skip
    assert json.loads(cli(config, "search", "--json", "numbat").stdout) == []
    proc = cli(config, "cache", "rebuild")
    assert proc.returncode == 0 and b"1 still cannot be opened" in proc.stderr
    # The user imports Carol's old key: it goes into old_p12.
    config = _config(tmp_path, pki, old_p12=[pki.p12("carol")])
    proc = cli(config, "cache", "rebuild")
    assert proc.returncode == 0, proc.stderr
    assert b"rebuilt 1 message; 0 still cannot be opened" in proc.stderr
    [hit] = json.loads(cli(config, "search", "--json", "numbat").stdout)
    assert hit["encrypted"] is True and hit["decryption"] == "ok"


def _sibling_database(directory: Path, key: str) -> None:
    # Another database sharing the cache key (as the certificate store and outbox journal do).
    def migration(conn) -> None:
        conn.execute("CREATE TABLE t (x TEXT); INSERT INTO t VALUES ('sibling')")

    db.connect(directory / "sibling.db", key, [migration]).close()


def test_identity_import_then_cache_rebuild_opens_mail_for_the_imported_key(
    pki: TestPki, tmp_path: Path, now: dt.datetime
) -> None:
    config = _config(tmp_path, pki)
    with Cache.open(tmp_path / "data", KEY) as cache:
        store(cache, mail(pki, kind="encrypted", to="carol", body="Echidna\r\n"), opener(pki),
              now, uid=1)  # fmt: skip
    proc = cli(config, "identity", "import", pki.p12("carol"), "--password-env",
               "TEST_P12_PASSWORD")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    proc = cli(config, "cache", "rebuild")
    assert proc.returncode == 0, proc.stderr
    assert b"rebuilt 1 message; 0 still cannot be opened" in proc.stderr
    [hit] = json.loads(cli(config, "search", "--json", "echidna").stdout)
    assert hit["decryption"] == "ok"


def test_cache_rekey_changes_the_key_of_every_database_in_the_directory(
    pki: TestPki, tmp_path: Path, now: dt.datetime
) -> None:
    config = _config(tmp_path, pki)
    with Cache.open(tmp_path / "data", KEY) as cache:
        store(cache, mail(pki, body="Dugong\r\n"), opener(pki), now, uid=1)
    _sibling_database(tmp_path / "data", KEY)
    proc = cli(config, "cache", "rekey", "--new-key-env", "NEW", env={"NEW": "new passphrase"})
    assert proc.returncode == 0, proc.stderr
    assert b"re-encrypted cache.db, sibling.db" in proc.stderr
    assert b"update environment variable TEST_CACHE_KEY" in proc.stderr
    assert cli(config, "search", "dugong").returncode == 1
    assert b"Dugong" not in b"".join(p.read_bytes() for p in (tmp_path / "data").iterdir())
    hits = json.loads(cli(config, "search", "--json", "dugong", key="new passphrase").stdout)
    assert len(hits) == 1
    with pytest.raises(CacheError, match="wrong cache key"):
        db.connect(tmp_path / "data" / "sibling.db", KEY, []).close()
    conn = db.connect(tmp_path / "data" / "sibling.db", "new passphrase", [lambda c: None])
    assert conn.execute("SELECT x FROM t").fetchall() == [("sibling",)]
    conn.close()


def test_cache_rekey_changes_nothing_when_one_database_does_not_open(
    pki: TestPki, tmp_path: Path
) -> None:
    config = _config(tmp_path, pki)
    Cache.open(tmp_path / "data", KEY).close()
    _sibling_database(tmp_path / "data", "some other key")
    before = {p.name: p.read_bytes() for p in (tmp_path / "data").glob("*.db")}
    proc = cli(config, "cache", "rekey", "--new-key-env", "NEW", env={"NEW": "new passphrase"})
    assert proc.returncode == 1
    assert proc.stderr.decode() == (
        "smime-companion cache: sibling.db: wrong cache key: the database could not be "
        "decrypted; no key was changed\n"
    )
    assert {p.name: p.read_bytes() for p in (tmp_path / "data").glob("*.db")} == before


def test_cache_scan_uses_the_configured_command(
    pki: TestPki, tmp_path: Path, now: dt.datetime
) -> None:
    command = "grep -q Dugong && echo 'x: Test.Dugong FOUND' && exit 1 || exit 0"
    config = _config(tmp_path, pki, extra=f'scan_command = "{command}"\n')
    with Cache.open(tmp_path / "data", KEY) as cache:
        store(cache, mail(pki, body="Dugong\r\n"), opener(pki), now, uid=1)
        store(cache, mail(pki, body="Manatee\r\n"), opener(pki), now, uid=2)
    proc = cli(config, "cache", "scan")
    assert proc.returncode == 0, proc.stderr
    assert b"scanned 2 messages; 1 infected" in proc.stderr
    [hit] = json.loads(cli(config, "search", "--json", "scan:infected").stdout)
    assert hit["scan"] == "infected:Test.Dugong"


def test_on_a_terminal_without_a_configured_key_the_passphrase_is_asked_for(setup) -> None:
    config, ids, _ = setup
    assert cli(config, "cache", "lock", key=None).returncode == 0  # nothing remembered
    master, slave = pty.openpty()
    env = {k: v for k, v in os.environ.items() if k != "TEST_CACHE_KEY"}
    env["TEST_P12_PASSWORD"] = "test"
    proc = subprocess.Popen(
        [sys.executable, "-m", "smime_companion", "search", "--json", "tapir",
         "--config", str(config)],
        stdin=slave, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
        start_new_session=True,  # no controlling terminal: getpass uses the pty on stdin
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        prompt = b""
        while not prompt.endswith(b"passphrase: "):
            chunk = proc.stderr.read(1)
            assert chunk, f"no passphrase prompt; stderr so far: {prompt!r}"
            prompt += chunk
        # Typed only now: getpass flushes pending input when it turns echo off.
        os.write(master, KEY.encode() + b"\n")
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
        os.close(master)
        os.close(slave)
    assert proc.returncode == 0, err
    assert [h["id"] for h in json.loads(out)] == [ids["plain"]]

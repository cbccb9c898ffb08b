"""``smime-companion init``: from a PKCS#12 file and a few answers to a config that loads, with
every secret in the OS keyring (a file-backed test keyring, run in a real CLI process) or named
environment variables, never in the file; bad answers are one line and write nothing."""

from __future__ import annotations

import hashlib
import json
import os
import select
import stat
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from smime_companion.config import load_config
from smime_companion.testing.pki import PKCS12_PASSWORD, TestPki
from tests.dovecot import PASSWORD, Dovecot, running_dovecot
from tests.tools import minimal_env

REPO = Path(__file__).resolve().parent.parent


def _init(
    tmp_path: Path, *args: str | Path, stdin: str = "", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``init`` in a subprocess whose home, config and data directories are under tmp_path,
    with the test keyring, answering prompts from ``stdin`` (not a terminal)."""
    full_env = {
        **os.environ,
        "HOME": str(tmp_path / "home"),
        "XDG_CONFIG_HOME": str(tmp_path / "home" / ".config"),
        "XDG_DATA_HOME": str(tmp_path / "home" / ".local" / "share"),
        "PYTHON_KEYRING_BACKEND": "tests.test_cache_keyring.FileKeyring",
        "TEST_KEYRING_FILE": str(tmp_path / "keyring.json"),
        "PYTHONPATH": str(REPO),
        **(env or {}),
    }
    full_env.pop("SMIME_COMPANION_CONFIG", None)
    return subprocess.run(
        [sys.executable, "-m", "smime_companion", *map(str, args)],
        input=stdin,
        capture_output=True,
        text=True,
        env=full_env,
        timeout=60,
    )


def _values(table: object) -> list[object]:
    """Every value in a parsed TOML document, however deep."""
    if isinstance(table, dict):
        return [v for value in table.values() for v in _values(value)]
    if isinstance(table, list):
        return [v for value in table for v in _values(value)]
    return [table]


def _written(tmp_path: Path) -> Path:
    return tmp_path / "home" / ".config" / "smime-companion" / "config.toml"


def test_answers_on_standard_input_give_a_config_and_the_secrets_go_to_the_keyring(
    tmp_path: Path, pki: TestPki
) -> None:
    # The PKCS#12 password, the IMAP password, and Enter for "SMTP password: the same".
    answers = f"{PKCS12_PASSWORD}\nimap secret\n\n"
    proc = _init(tmp_path, "init", "--p12", pki.p12("bob"), "--host", "127.0.0.1", stdin=answers)
    assert proc.returncode == 0, proc.stderr
    path = _written(tmp_path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    values = _values(tomllib.loads(path.read_text()))
    assert PKCS12_PASSWORD not in values and "imap secret" not in values
    config = load_config(path)
    [account] = config.accounts
    # The address comes from the certificate, the rest from its domain.
    assert (account.name, account.host, account.username) == ("example", "127.0.0.1",
                                                              "bob@example.org")  # fmt: skip
    assert account.smtp_host == "smtp.example.org" and config.identity.p12 == pki.p12("bob")
    ring = json.loads((tmp_path / "keyring.json").read_text())
    assert ring["smime-companion/identity"] == PKCS12_PASSWORD
    assert ring["smime-companion/example/imap"] == "imap secret"
    assert ring["smime-companion/example/smtp"] == "imap secret"
    assert len(ring["smime-companion/cache"]) >= 40  # a generated key, never typed
    assert f"wrote {path}" in proc.stdout and "smime-companion doctor" in proc.stdout
    # The written config works: the cache opens with the keyring's key.
    stats = _init(tmp_path, "cache", "stats", "--config", path)
    assert stats.returncode == 0, stats.stderr


def test_with_env_secrets_nothing_is_asked_and_the_variables_are_named(
    tmp_path: Path, pki: TestPki
) -> None:
    target = tmp_path / "elsewhere" / "config.toml"
    proc = _init(
        tmp_path, "init", "--config", target, "--p12", pki.p12("alice"), "--secrets", "env",
        "--email", "alice@example.org", "--name", "work", "--host", "mail.example.org",
        "--port", "143",
        "--smtp-host", "mail.example.org", "--smtp-port", "587", "--cache-all",
        env={"SMIME_P12_PASSWORD": PKCS12_PASSWORD},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    config = load_config(target)
    account = config.account("work")
    assert (account.smtp_port, account.smtp_tls) == (587, "starttls")
    assert (account.port, account.tls) == (143, "starttls")
    assert account.password.env == "SMIME_IMAP_PASSWORD" and config.cache.cache_all
    assert config.cache.key.env == "SMIME_CACHE_KEY"
    assert "SMIME_P12_PASSWORD SMIME_CACHE_KEY SMIME_IMAP_PASSWORD" in proc.stdout
    assert not (tmp_path / "keyring.json").exists()


def test_a_wrong_pkcs12_password_is_one_line_and_writes_nothing(
    tmp_path: Path, pki: TestPki
) -> None:
    proc = _init(tmp_path, "init", "--p12", pki.p12("bob"), stdin="not the password\n")
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "wrong PKCS#12 password" in proc.stderr
    assert not _written(tmp_path).exists() and not (tmp_path / "keyring.json").exists()


def test_an_existing_config_is_kept_unless_forced(tmp_path: Path, pki: TestPki) -> None:
    path = _written(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text("# mine\n")
    proc = _init(tmp_path, "init", "--p12", pki.p12("bob"), stdin=f"{PKCS12_PASSWORD}\n")
    assert proc.returncode == 2 and "already exists (use --force to replace it)" in proc.stderr
    assert path.read_text() == "# mine\n"


def test_without_a_terminal_a_missing_answer_names_its_option(tmp_path: Path) -> None:
    proc = _init(tmp_path, "init")
    assert proc.returncode == 2
    assert proc.stderr.strip().endswith("give --p12")


def test_without_a_usable_keyring_nothing_is_asked_or_written_and_env_is_suggested(
    tmp_path: Path, pki: TestPki
) -> None:
    # Nothing on standard input: the keyring is checked before the first question.
    proc = _init(
        tmp_path, "init", "--p12", pki.p12("bob"),
        env={"PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring"},
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "the OS keyring is unavailable" in proc.stderr
    assert "nothing was asked or written: use --secrets env" in proc.stderr
    assert not _written(tmp_path).exists()


def test_a_missing_file_a_bad_address_or_port_is_named_before_any_question(
    tmp_path: Path, pki: TestPki
) -> None:
    cases = [
        (("--p12", tmp_path / "none.p12"), "no such PKCS#12 file"),
        (("--p12", pki.p12("bob"), "--secrets", "env", "--email", "bob"), "is not an email"),
        (("--p12", pki.p12("bob"), "--port", "0"), "'0' is not a port number (1 to 65535)"),
    ]
    for args, said in cases:
        proc = _init(tmp_path, "init", *args)  # nothing on standard input: no question asked
        assert proc.returncode == 2, proc.stderr
        # One line saying what is wrong (argparse puts its usage lines before a bad option's).
        [line] = [line for line in proc.stderr.splitlines() if said in line]
        assert not line.startswith("usage"), proc.stderr
        assert not _written(tmp_path).exists()


# -- the whole dialogue on a terminal ------------------------------------------------------------


class Terminal:
    """``smime-companion ARGS`` on a pseudo-terminal of its own (no controlling terminal
    besides it, so getpass reads it too), with what it showed so far."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.master, slave = os.openpty()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "smime_companion", *args],
            stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True,
        )  # fmt: skip
        os.close(slave)
        self.screen = ""
        self._seen = 0

    def _read(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.master], [], [], timeout)
        if not ready:
            return True
        try:
            data = os.read(self.master, 4096)
        except OSError:  # EIO: the program ended and closed the terminal
            return False
        if not data:
            return False
        self.screen += data.decode("utf-8", "replace").replace("\r\n", "\n")
        return True

    def answer(self, prompt: str, text: str, timeout: float = 30) -> None:
        """Wait until ``prompt`` shows (after the previous one), then type ``text`` + Enter."""
        deadline = time.monotonic() + timeout
        while prompt not in self.screen[self._seen :]:
            if time.monotonic() > deadline or not self._read(0.2):
                raise AssertionError(f"no {prompt!r} on the screen:\n{self.screen}")
        self._seen = self.screen.index(prompt, self._seen) + len(prompt)
        os.write(self.master, text.encode() + b"\n")

    def finish(self, timeout: float = 60) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self._read(0.2):
            pass
        code = self.proc.wait(timeout=10)
        os.close(self.master)
        return code


def _terminal_env(tmp_path: Path) -> dict[str, str]:
    env = minimal_env(
        HOME=str(tmp_path / "home"),
        XDG_CONFIG_HOME=str(tmp_path / "home" / ".config"),
        XDG_DATA_HOME=str(tmp_path / "home" / ".local" / "share"),
        PYTHON_KEYRING_BACKEND="tests.test_cache_keyring.FileKeyring",
        TEST_KEYRING_FILE=str(tmp_path / "keyring.json"),
        PYTHONPATH=str(REPO),
        TERM="dumb",
    )
    return env


@pytest.fixture
def dovecot() -> Iterator[Dovecot]:
    yield from running_dovecot(separator=".")


def test_the_whole_dialogue_on_a_terminal_pins_the_servers_certificate_and_gives_a_working_config(
    tmp_path: Path, pki: TestPki, dovecot: Dovecot
) -> None:
    env = _terminal_env(tmp_path)
    outbox_dir = tmp_path / "drafts"
    term = Terminal(["init", "--p12", str(pki.p12("bob"))], env)
    term.answer("Password of bob.p12: ", PKCS12_PASSWORD)
    term.answer("Your email address [bob@example.org]: ", "")
    term.answer("IMAP server [imap.example.org]: ", "127.0.0.1")
    term.answer("IMAP port (993: TLS, 143: STARTTLS) [993]: ", "nine")
    term.answer("IMAP port (993: TLS, 143: STARTTLS) [993]: ", str(dovecot.tls_port))  # again
    term.answer("Trust this certificate for this server from now on? (yes/no) [no]: ", "yes")
    term.answer("IMAP login [bob@example.org]: ", "bob")
    term.answer(
        "Folders to watch (comma-separated; * matches any name) [INBOX]: ", "INBOX, Lists.*"
    )
    term.answer("SMTP server (for the outbox) [smtp.example.org]: ", "127.0.0.1")
    term.answer("SMTP port (465: TLS, 587: STARTTLS) [465]: ", "587")
    term.answer("(drafts saved there are sealed and sent; - for none) [-]: ", str(outbox_dir))
    term.answer("IMAP password for bob: ", PASSWORD)
    term.answer("SMTP password (Enter: the same): ", "")
    assert term.finish() == 0, term.screen
    screen = term.screen
    assert "'nine' is not a port number" in screen
    # The fingerprint shown is the server's, as ssh shows it, and no password was echoed.
    der = x509.load_pem_x509_certificate(dovecot.cert.read_bytes()).public_bytes(
        serialization.Encoding.DER
    )
    digest = hashlib.sha256(der).hexdigest().upper()
    assert ":".join(digest[i : i + 2] for i in range(0, 64, 2)) in screen
    assert PKCS12_PASSWORD + "\n" not in screen and PASSWORD not in screen
    # The cache key is explained, and the last line is the next command to type.
    assert "without it the cache cannot be read" in screen and "keyring get" in screen
    assert screen.strip().splitlines()[-2].startswith("next: smime-companion doctor")
    config = load_config(_written(tmp_path))
    [account] = config.accounts
    assert account.ca_file is not None and account.ca_file.read_bytes() == dovecot.cert.read_bytes()
    assert account.folders == ("INBOX", "Lists.*") and account.port == dovecot.tls_port
    assert (account.smtp_port, account.smtp_tls) == (587, "starttls")
    assert config.outbox.directory == outbox_dir
    # The config works against the server whose certificate was pinned.
    proc = subprocess.run(
        [sys.executable, "-m", "smime_companion", "sync", "--config", str(_written(tmp_path))],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "example/INBOX: 0 new" in proc.stdout


def test_an_expired_identity_is_opened_and_warned_about_also_with_env_secrets(
    tmp_path: Path, pki: TestPki
) -> None:
    proc = _init(
        tmp_path, "init", "--p12", pki.p12("expired"), "--secrets", "env", "--host", "127.0.0.1",
        stdin=f"{PKCS12_PASSWORD}\n",  # asked only to open it: the config names the variable
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "warning: your certificate expired on" in proc.stderr
    assert PKCS12_PASSWORD not in _values(tomllib.loads(_written(tmp_path).read_text()))
    wrong = _init(
        tmp_path, "init", "--force", "--p12", pki.p12("bob"), "--secrets", "env",
        env={"SMIME_P12_PASSWORD": "wrong"},
    )  # fmt: skip
    assert wrong.returncode == 2 and "wrong PKCS#12 password" in wrong.stderr

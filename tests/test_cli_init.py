"""``smime-companion init``: from a PKCS#12 file and a few answers to a config that loads, with
every secret in the OS keyring (a file-backed test keyring, run in a real CLI process) or named
environment variables, never in the file; bad answers are one line and write nothing."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

from smime_companion.config import load_config
from smime_companion.testing.pki import PKCS12_PASSWORD, TestPki

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


def test_without_a_usable_keyring_nothing_is_written_and_env_is_suggested(
    tmp_path: Path, pki: TestPki
) -> None:
    answers = f"{PKCS12_PASSWORD}\nimap secret\n\n"
    proc = _init(
        tmp_path, "init", "--p12", pki.p12("bob"), stdin=answers,
        env={"PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring"},
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "the OS keyring is unavailable" in proc.stderr
    assert "nothing was written (try --secrets env)" in proc.stderr
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

"""The config file: the documented shape loads; every mistake is one line naming file, line, key."""

from __future__ import annotations

from pathlib import Path

import pytest

from smime_companion.config import load_config, parse_config
from smime_companion.credentials import resolve
from smime_companion.errors import ConfigError, SecretUnavailable

EXAMPLE = Path(__file__).resolve().parent.parent / "config.example.toml"

MINIMAL = """
[identity]
p12 = "/tmp/me.p12"
p12_password_env = "P12"

[cache]
path = "/tmp/cache"
key_env = "CACHE_KEY"

[[accounts]]
name = "work"
host = "imap.example.org"
username = "alice@example.org"
password_env = "IMAP_PASSWORD"
"""


def test_the_example_config_loads() -> None:
    config = load_config(EXAMPLE)
    account = config.account("work")
    assert (account.host, account.port, account.tls) == ("imap.example.org", 993, "implicit")
    assert account.folders == ("INBOX", "Archive/*")
    assert account.password.env == "IMAP_PASSWORD"
    assert config.cache.key.env == "SMIME_CACHE_KEY" and config.cache.encrypt
    assert config.identity.p12 == Path("~/.config/smime-companion/me.p12").expanduser()


def test_defaults_fill_what_is_left_out() -> None:
    config = parse_config(MINIMAL)
    account = config.account("work")
    assert account.folders == ("INBOX",)
    # Folder names left out are found on the server (a name valid everywhere; Sent by \\Sent).
    assert account.outbox_folder is None and account.sent_folder is None
    assert config.cache.cache_all is False and config.identity.system_anchors is True


def test_folder_names_given_in_the_file_are_kept_as_they_are() -> None:
    text = MINIMAL.replace(
        'name = "work"', 'name = "work"\noutbox_folder = "S/MIME Outbox"\nsent_folder = "Gesendet"'
    )
    account = parse_config(text).account("work")
    assert (account.outbox_folder, account.sent_folder) == ("S/MIME Outbox", "Gesendet")


def _error(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(text, Path("/etc/sc.toml"))
    message = str(info.value)
    assert "\n" not in message
    return message


def test_an_unknown_key_names_file_line_and_key_with_a_suggestion() -> None:
    message = _error(MINIMAL.replace('host = "imap', 'hots = "imap'))
    assert message.startswith("/etc/sc.toml:12: accounts.hots: unknown key")
    assert "did you mean host?" in message


def test_a_password_in_the_file_is_refused() -> None:
    message = _error(MINIMAL + 'password = "hunter2"\n')
    assert "accounts.password: secrets are never read from the config file" in message
    assert "hunter2" not in message


def test_a_bad_value_is_named() -> None:
    assert "accounts.tls: must be one of implicit, starttls, plain" in _error(
        MINIMAL + 'tls = "ssl"\n'
    )
    assert "accounts.port: must be a port number" in _error(MINIMAL + "port = 99999\n")


def _with_cache_line(line: str) -> str:
    return MINIMAL.replace('key_env = "CACHE_KEY"\n', f'key_env = "CACHE_KEY"\n{line}\n')


def test_open_workers_is_auto_by_default_or_a_number_and_anything_else_is_named() -> None:
    assert parse_config(MINIMAL).cache.open_workers is None  # one per spare core
    assert parse_config(_with_cache_line('open_workers = "auto"')).cache.open_workers is None
    assert parse_config(_with_cache_line("open_workers = 0")).cache.open_workers == 0
    for bad in ('"many"', "-1", "17", "true"):
        message = _error(_with_cache_line(f"open_workers = {bad}"))
        assert 'cache.open_workers: must be "auto" or a number from 0 to 16' in message


def test_the_outbox_tells_of_a_late_message_after_4_hours_and_gives_up_after_5_days() -> None:
    outbox = parse_config(MINIMAL).outbox
    assert (outbox.delay_notice_hours, outbox.give_up_hours) == (4, 120)
    changed = parse_config(MINIMAL + "[outbox]\ndelay_notice_hours = 0\ngive_up_hours = 48\n")
    assert (changed.outbox.delay_notice_hours, changed.outbox.give_up_hours) == (0, 48)
    for bad in ("-1", "9000", '"5d"', "true"):
        message = _error(MINIMAL + f"[outbox]\ngive_up_hours = {bad}\n")
        assert "outbox.give_up_hours: must be a number of hours from 0 (never) to 8760" in message


def test_plain_imap_needs_the_explicit_insecure_flag() -> None:
    assert "insecure_plaintext = true" in _error(MINIMAL + 'tls = "plain"\n')
    config = parse_config(MINIMAL + 'tls = "plain"\ninsecure_plaintext = true\nport = 1143\n')
    assert config.account("work").tls == "plain"


def test_invalid_toml_is_one_line() -> None:
    assert "not valid TOML" in _error("[identity\n")


def test_a_missing_file_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no config file"):
        load_config(tmp_path / "nope.toml")


def test_secrets_resolve_from_env_and_command(monkeypatch: pytest.MonkeyPatch) -> None:
    config = parse_config(
        MINIMAL.replace('password_env = "IMAP_PASSWORD"', 'password_command = "echo s3cret"')
    )
    assert resolve(config.account("work").password) == "s3cret"
    monkeypatch.setenv("CACHE_KEY", "k")
    assert resolve(config.cache.key) == "k"
    monkeypatch.delenv("CACHE_KEY")
    with pytest.raises(SecretUnavailable, match="CACHE_KEY is not set"):
        resolve(config.cache.key)


def test_a_failing_secret_command_does_not_echo_its_output() -> None:
    config = parse_config(
        MINIMAL.replace('password_env = "IMAP_PASSWORD"', 'password_command = "echo leaked; false"')
    )
    with pytest.raises(SecretUnavailable) as info:
        resolve(config.account("work").password)
    assert "leaked" not in str(info.value).split("command")[0]
    assert "exit 1" in str(info.value)


def test_the_reader_is_served_on_port_8765_with_a_30_minute_idle_limit_and_local_read_state() -> (
    None
):
    reader = parse_config(MINIMAL).reader
    assert (reader.enabled, reader.port, reader.idle_minutes) == (True, 8765, 30)
    assert reader.mark_seen_on_server is False
    changed = parse_config(
        MINIMAL + "[reader]\nport = 9000\nidle_minutes = 5\nmark_seen_on_server = true\n"
        "enabled = false\n"
    ).reader
    assert (changed.enabled, changed.port, changed.idle_minutes) == (False, 9000, 5)
    assert changed.mark_seen_on_server is True
    assert "reader.port: must be a port number" in _error(MINIMAL + "[reader]\nport = 0\n")
    assert "reader.idle_minutes: must be a number of minutes from 1 to 1440" in _error(
        MINIMAL + "[reader]\nidle_minutes = 0\n"
    )
    assert "reader.listen: unknown key" in _error(MINIMAL + '[reader]\nlisten = "0.0.0.0"\n')


def test_how_long_an_unlock_is_remembered_is_read_and_bounded() -> None:
    assert parse_config(MINIMAL).cache.remember_unlock_minutes == 10
    cache = MINIMAL.replace("[cache]\n", "[cache]\nremember_unlock_minutes = 0\n")
    assert parse_config(cache).cache.remember_unlock_minutes == 0  # never
    for bad in ("-1", "1441", "true", '"10"'):
        text = MINIMAL.replace("[cache]\n", f"[cache]\nremember_unlock_minutes = {bad}\n")
        assert "cache.remember_unlock_minutes: must be a number of minutes from 0 to 1440" in (
            _error(text)
        )


def test_an_accounts_command_time_limit_is_read_and_bounded(tmp_path: Path) -> None:
    base = (
        '[identity]\np12 = "me.p12"\n[cache]\npath = "c"\n'
        '[[accounts]]\nname = "w"\nhost = "h"\nusername = "u"\npassword_env = "P"\n'
    )
    path = tmp_path / "config.toml"
    path.write_text(base)
    assert load_config(path).accounts[0].command_time_limit == 300
    path.write_text(base + "command_time_limit = 60\n")
    assert load_config(path).accounts[0].command_time_limit == 60
    for bad in ("0", "5", "true", '"60"', "100000"):
        path.write_text(base + f"command_time_limit = {bad}\n")
        with pytest.raises(ConfigError, match="command_time_limit"):
            load_config(path)

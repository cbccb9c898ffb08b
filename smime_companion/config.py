"""The configuration file (TOML), read once at the edge into frozen dataclasses.

Only ``cli`` and ``daemon`` import this module; everything else takes plain arguments.

Where the file is: ``--config FILE``, else ``$SMIME_COMPANION_CONFIG``, else
``$XDG_CONFIG_HOME/smime-companion/config.toml`` (``~/.config/...``).

Secrets are never read from the file itself. Each secret ``NAME`` is given as ``NAME_env`` (an
environment variable), ``NAME_command`` (a command whose first output line is the secret) or
``NAME_keyring`` (``true`` for the default entry, or ``"service/user"``), and resolved only when
needed by :mod:`smime_companion.credentials`.

Every problem is reported as one :class:`ConfigError` line with the file, the line and the key.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from smime_companion.errors import ConfigError

KEYRING_SERVICE = "smime-companion"


@dataclass(frozen=True)
class SecretRef:
    """Where a secret comes from: exactly one of an environment variable, a command, a keyring
    entry (``service``, ``user``), a systemd credential (a file of that name in
    ``$CREDENTIALS_DIRECTORY``). ``what`` names it in messages (``accounts.work.password``)."""

    what: str
    env: str | None = None
    command: str | None = None
    keyring: tuple[str, str] | None = None
    credential: str | None = None

    @property
    def given(self) -> bool:
        return bool(self.env or self.command or self.keyring or self.credential)

    def describe(self) -> str:
        """Where the secret is looked up, for messages (never the secret itself)."""
        if self.env:
            return f"environment variable {self.env}"
        if self.command:
            return f"command {self.command!r}"
        if self.keyring:
            return f"keyring entry {self.keyring[0]}/{self.keyring[1]}"
        if self.credential:
            return f"systemd credential {self.credential}"
        return "nowhere (not configured)"


@dataclass(frozen=True)
class IdentityConfig:
    """The user's own S/MIME identity and the trust anchors."""

    p12: Path | None = None
    p12_password: SecretRef = SecretRef("identity.p12_password")
    key: Path | None = None
    cert: Path | None = None
    old_p12: tuple[Path, ...] = ()  # retired identities, kept to open old mail
    trust_anchors: tuple[Path, ...] = ()
    system_anchors: bool = True
    allow_sha1: bool = False
    # For archives: accept SHA-1, MD5-signed certificates and RSA keys under 2048 bits as valid
    # (the weakness is still reported, warning weak-algorithm). Implies allow_sha1.
    allow_weak_algorithms: bool = False


@dataclass(frozen=True)
class ScanConfig:
    """Malware scanning of decrypted content: clamd socket, or a command, or nothing."""

    clamd_socket: Path | None = None
    command: str | None = None


@dataclass(frozen=True)
class CacheConfig:
    path: Path
    encrypt: bool = True
    key: SecretRef = SecretRef("cache.key", keyring=(KEYRING_SERVICE, "cache"))
    cache_all: bool = False
    scan: ScanConfig = ScanConfig()
    # Worker processes that open and index mail during a sync; None: one per spare core.
    open_workers: int | None = None
    # Seconds one message may take to open and index; past them it is stored unopened.
    open_time_limit: int = 30
    # Minutes a command-line call keeps the unlocked cache's page key in the kernel keyring for
    # the next call (cli/unlock.py); 0: never, every call derives it from the passphrase.
    remember_unlock_minutes: int = 10


@dataclass(frozen=True)
class AccountConfig:
    name: str
    host: str
    username: str
    password: SecretRef
    port: int = 993
    tls: str = "implicit"  # "implicit", "starttls", or "plain" (insecure_plaintext only)
    ca_file: Path | None = None
    auth: str = "password"  # or "xoauth2"
    oauth2_token_command: str | None = None
    folders: tuple[str, ...] = ("INBOX",)
    smtp_host: str | None = None
    smtp_port: int = 465
    smtp_tls: str = "implicit"
    smtp_username: str | None = None  # default: username
    smtp_password: SecretRef | None = None  # default: the IMAP password
    # None: found on the server (``SMIME Outbox``; Sent by its \\Sent mark), see
    # smime_companion.imap.outbox_source; a name given in the file is used as it is.
    outbox_folder: str | None = None
    sent_folder: str | None = None
    command_time_limit: int = 300  # seconds for the whole answer to one IMAP command


@dataclass(frozen=True)
class CertificatesConfig:
    """The certificate store's policies: ``revocation`` is ``off``, ``soft`` (an unreachable
    responder does not block) or ``hard`` (it does); ``tofu`` lists who gets trust on first use
    for certificates that chain to no anchor: ``*``, addresses or domains (with subdomains)."""

    revocation: str = "soft"
    tofu: tuple[str, ...] = ()
    revocation_timeout: int = 10  # seconds per OCSP or CRL request


@dataclass(frozen=True)
class OutboxConfig:
    """The outbox: ``missing_cert`` is ``hold`` (do not send), ``sign-only`` (send signed, not
    encrypted) or ``split`` (encrypted to those with a certificate, held for the others);
    ``directory`` is an optional local outbox (``.eml`` files or a Maildir) sent through the
    SMTP server of ``directory_account`` (default: the first account); ``imap`` turns the IMAP
    outbox folders on or off."""

    missing_cert: str = "hold"
    max_draft_bytes: int = 25 * 1024 * 1024
    directory: Path | None = None
    directory_account: str | None = None
    imap: bool = True
    # A message the server keeps deferring (4xx): tell the user after this many hours, hold it
    # after this many; 0 turns either off.
    delay_notice_hours: int = 4
    give_up_hours: int = 120


@dataclass(frozen=True)
class ReaderConfig:
    """The local web reader: ``run`` serves it on ``port`` of 127.0.0.1 and ::1 (never another
    interface) unless ``enabled = false``; a session ends after ``idle_minutes`` without a
    request; ``mark_seen_on_server`` also sets ``\\Seen`` on the server when a message is opened
    (by default read state stays local and the server is untouched)."""

    enabled: bool = True
    port: int = 8765
    idle_minutes: int = 30
    mark_seen_on_server: bool = False


@dataclass(frozen=True)
class Config:
    source: Path | None
    identity: IdentityConfig
    cache: CacheConfig
    accounts: tuple[AccountConfig, ...] = field(default=())
    certificates: CertificatesConfig = CertificatesConfig()
    outbox: OutboxConfig = OutboxConfig()
    reader: ReaderConfig = ReaderConfig()

    def account(self, name: str) -> AccountConfig:
        for account in self.accounts:
            if account.name == name:
                return account
        known = ", ".join(a.name for a in self.accounts) or "none"
        raise ConfigError(f"no account named {name!r} in the config (accounts: {known})")


def default_config_path() -> Path:
    """``$SMIME_COMPANION_CONFIG``, else the XDG config location."""
    env = os.environ.get("SMIME_COMPANION_CONFIG")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "smime-companion" / "config.toml"


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "smime-companion"


def load_config(path: Path | None = None) -> Config:
    """Read and validate the config file; raises :class:`ConfigError` (one line) on any problem."""
    path = (path or default_config_path()).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: no config file; make one with 'smime-companion init --p12 YOUR.p12' "
            "(or pass --config FILE)"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc}") from None
    return parse_config(text, path)


def parse_config(text: str, path: Path | None = None) -> Config:
    """Validate TOML ``text`` (read from ``path``, named in errors)."""
    where = str(path or "<config>")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: not valid TOML: {exc}") from None
    reader = _Reader(text, where)
    reader.known(data, "", {"identity", "cache", "accounts", "certificates", "outbox", "reader"})
    identity = reader.identity(data.get("identity", {}))
    cache = reader.cache(data.get("cache", {}))
    raw_accounts = data.get("accounts", [])
    if not isinstance(raw_accounts, list):
        raise reader.error("accounts", "", "must be an array of tables: [[accounts]]")
    accounts = tuple(reader.account(a, i) for i, a in enumerate(raw_accounts))
    names = [a.name for a in accounts]
    for name in names:
        if names.count(name) > 1:
            raise reader.error("accounts", "name", f"account name {name!r} is used twice")
    certificates = reader.certificates(data.get("certificates", {}))
    outbox = reader.outbox(data.get("outbox", {}), names)
    return Config(
        source=path, identity=identity, cache=cache, accounts=accounts, certificates=certificates,
        outbox=outbox, reader=reader.reader(data.get("reader", {})),
    )  # fmt: skip


_SECRET_SUFFIXES = ("_env", "_command", "_keyring", "_credential")


class _Reader:
    """Validation with error messages that point at the file, line and key."""

    def __init__(self, text: str, where: str) -> None:
        self.lines = text.splitlines()
        self.where = where

    # -- error reporting -----------------------------------------------------------------------

    def _line(self, section: str, key: str, index: int = 0) -> int | None:
        """Best-effort line of ``key`` in ``[section]`` (the index-th ``[[section]]``)."""
        header = re.compile(r"^\s*\[\[?\s*" + re.escape(section) + r"\s*\]\]?\s*$")
        any_header = re.compile(r"^\s*\[")
        key_re = re.compile(r"^\s*" + re.escape(key) + r"\s*=") if key else None
        seen = -1
        inside = not section
        for number, line in enumerate(self.lines, 1):
            if any_header.match(line):
                inside = bool(header.match(line))
                if inside:
                    seen += 1
                    if key_re is None and seen == index:
                        return number
                continue
            if inside and (not section or seen == index) and key_re and key_re.match(line):
                return number
        return None

    def error(self, section: str, key: str, problem: str, index: int = 0) -> ConfigError:
        line = self._line(section, key, index)
        place = f"{self.where}:{line}" if line else self.where
        dotted = ".".join(p for p in (section, key) if p)
        return ConfigError(f"{place}: {dotted}: {problem}")

    # -- typed getters -------------------------------------------------------------------------

    def known(self, table: Mapping[str, Any], section: str, allowed: set[str], index: int = 0):
        for key in table:
            if key in allowed:
                continue
            if key.endswith(("password", "_key", "secret", "token")) or key in (
                "key",
                "passphrase",
            ):
                raise self.error(
                    section, key,
                    "secrets are never read from the config file; use "
                    f"{key}_env, {key}_command, {key}_keyring or {key}_credential",
                    index,
                )  # fmt: skip
            hint = _close_match(key, allowed)
            raise self.error(
                section, key, "unknown key" + (f" (did you mean {hint}?)" if hint else ""), index
            )

    def string(self, table, section, key, default=None, index=0, choices=None) -> Any:
        value = table.get(key, default)
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip():
            raise self.error(section, key, "must be a non-empty string", index)
        if choices and value not in choices:
            raise self.error(
                section, key, f"must be one of {', '.join(choices)}; got {value!r}", index
            )
        return value

    def path(self, table, section, key, index=0) -> Path | None:
        value = self.string(table, section, key, index=index)
        return Path(value).expanduser() if value else None

    def paths(self, table, section, key, index=0) -> tuple[Path, ...]:
        value = table.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.error(section, key, "must be a list of paths", index)
        return tuple(Path(v).expanduser() for v in value)

    def boolean(self, table, section, key, default: bool, index=0) -> bool:
        value = table.get(key, default)
        if not isinstance(value, bool):
            raise self.error(section, key, "must be true or false", index)
        return value

    def port(self, table, section, key, default: int, index=0) -> int:
        value = table.get(key, default)
        if not isinstance(value, int) or isinstance(value, bool) or not 0 < value < 65536:
            raise self.error(section, key, "must be a port number between 1 and 65535", index)
        return value

    def secret(self, table, section, name, what, index=0, default_keyring=None) -> SecretRef:
        env = self.string(table, section, f"{name}_env", index=index)
        command = self.string(table, section, f"{name}_command", index=index)
        credential = self.string(table, section, f"{name}_credential", index=index)
        if credential is not None and ("/" in credential or credential in (".", "..")):
            raise self.error(
                section, f"{name}_credential", "must be a credential name, not a path", index
            )
        keyring_value = table.get(f"{name}_keyring")
        keyring: tuple[str, str] | None = None
        if keyring_value is True:
            keyring = default_keyring
            if keyring is None:
                raise self.error(
                    section, f"{name}_keyring", 'give the entry as "service/user"', index
                )
        elif isinstance(keyring_value, str) and "/" in keyring_value:
            service, _, user = keyring_value.partition("/")
            keyring = (service, user)
        elif keyring_value not in (None, False):
            raise self.error(section, f"{name}_keyring", 'must be true or "service/user"', index)
        given = [x for x in (env, command, keyring, credential) if x]
        if len(given) > 1:
            raise self.error(
                section,
                f"{name}_env",
                f"give only one of {name}_env, {name}_command, {name}_keyring, {name}_credential",
                index,
            )
        if not given and default_keyring is not None:
            keyring = default_keyring
        return SecretRef(
            what=what, env=env, command=command, keyring=keyring, credential=credential
        )

    # -- sections ------------------------------------------------------------------------------

    def identity(self, table: Any) -> IdentityConfig:
        s = "identity"
        if not isinstance(table, dict):
            raise self.error(s, "", "must be a table: [identity]")
        self.known(
            table, s,
            {"p12", "key_file", "cert", "old_p12", "trust_anchors", "system_anchors", "allow_sha1",
             "allow_weak_algorithms"}
            | {f"p12_password{x}" for x in _SECRET_SUFFIXES},
        )  # fmt: skip
        p12 = self.path(table, s, "p12")
        key = self.path(table, s, "key_file")
        cert = self.path(table, s, "cert")
        if p12 and (key or cert):
            raise self.error(s, "key_file", "give either p12 or key_file + cert, not both")
        if bool(key) != bool(cert):
            raise self.error(s, "key_file" if cert else "cert", "key_file and cert go together")
        return IdentityConfig(
            p12=p12,
            p12_password=self.secret(table, s, "p12_password", "identity.p12_password"),
            key=key,
            cert=cert,
            old_p12=self.paths(table, s, "old_p12"),
            trust_anchors=self.paths(table, s, "trust_anchors"),
            system_anchors=self.boolean(table, s, "system_anchors", True),
            allow_sha1=self.boolean(table, s, "allow_sha1", False),
            allow_weak_algorithms=self.boolean(table, s, "allow_weak_algorithms", False),
        )

    def cache(self, table: Any) -> CacheConfig:
        s = "cache"
        if not isinstance(table, dict):
            raise self.error(s, "", "must be a table: [cache]")
        self.known(
            table, s,
            {"path", "encrypt_cache", "cache_all", "clamd_socket", "scan_command", "open_workers",
             "open_time_limit", "remember_unlock_minutes"}
            | {f"key{x}" for x in _SECRET_SUFFIXES},
        )  # fmt: skip
        encrypt = self.boolean(table, s, "encrypt_cache", True)
        workers = table.get("open_workers", "auto")
        if workers != "auto" and (
            not isinstance(workers, int) or isinstance(workers, bool) or not 0 <= workers <= 16
        ):
            raise self.error(s, "open_workers", 'must be "auto" or a number from 0 to 16')
        time_limit = table.get("open_time_limit", 30)
        if (
            not isinstance(time_limit, int)
            or isinstance(time_limit, bool)
            or not (1 <= time_limit <= 3600)
        ):
            raise self.error(s, "open_time_limit", "must be a number of seconds from 1 to 3600")
        remember = table.get("remember_unlock_minutes", CacheConfig.remember_unlock_minutes)
        if not isinstance(remember, int) or isinstance(remember, bool) or not 0 <= remember <= 1440:
            raise self.error(
                s, "remember_unlock_minutes", "must be a number of minutes from 0 to 1440"
            )
        return CacheConfig(
            path=self.path(table, s, "path") or default_data_dir(),
            encrypt=encrypt,
            key=self.secret(
                table, s, "key", "cache.key", default_keyring=(KEYRING_SERVICE, "cache")
            ),
            cache_all=self.boolean(table, s, "cache_all", False),
            scan=ScanConfig(
                clamd_socket=self.path(table, s, "clamd_socket"),
                command=self.string(table, s, "scan_command"),
            ),
            open_workers=None if workers == "auto" else workers,
            open_time_limit=time_limit,
            remember_unlock_minutes=remember,
        )

    def certificates(self, table: Any) -> CertificatesConfig:
        s = "certificates"
        if not isinstance(table, dict):
            raise self.error(s, "", "must be a table: [certificates]")
        self.known(table, s, {"revocation", "tofu", "revocation_timeout"})
        tofu = table.get("tofu", [])
        if not isinstance(tofu, list) or not all(isinstance(t, str) and t.strip() for t in tofu):
            raise self.error(s, "tofu", 'must be a list of "*", addresses or domains')
        timeout = table.get("revocation_timeout", 10)
        if not isinstance(timeout, int) or isinstance(timeout, bool) or not 0 < timeout <= 300:
            raise self.error(s, "revocation_timeout", "must be a number of seconds from 1 to 300")
        return CertificatesConfig(
            revocation=self.string(table, s, "revocation", "soft", choices=("off", "soft", "hard")),
            tofu=tuple(t.strip().lower() for t in tofu),
            revocation_timeout=timeout,
        )

    def outbox(self, table: Any, accounts: list[str]) -> OutboxConfig:
        s = "outbox"
        if not isinstance(table, dict):
            raise self.error(s, "", "must be a table: [outbox]")
        self.known(
            table,
            s,
            {"missing_cert", "max_draft_bytes", "directory", "directory_account", "imap",
             "delay_notice_hours", "give_up_hours"},
        )  # fmt: skip
        hours = {}
        for key in ("delay_notice_hours", "give_up_hours"):
            value = table.get(key, getattr(OutboxConfig, key))
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 8760:
                raise self.error(s, key, "must be a number of hours from 0 (never) to 8760")
            hours[key] = value
        limit = table.get("max_draft_bytes", OutboxConfig.max_draft_bytes)
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1024:
            raise self.error(s, "max_draft_bytes", "must be a number of bytes, at least 1024")
        directory_account = self.string(table, s, "directory_account")
        if directory_account is not None and directory_account not in accounts:
            raise self.error(
                s, "directory_account", f"no account named {directory_account!r} in the config"
            )
        return OutboxConfig(
            missing_cert=self.string(
                table, s, "missing_cert", "hold", choices=("hold", "sign-only", "split")
            ),
            max_draft_bytes=limit,
            directory=self.path(table, s, "directory"),
            directory_account=directory_account,
            imap=self.boolean(table, s, "imap", True),
            **hours,
        )

    def reader(self, table: Any) -> ReaderConfig:
        s = "reader"
        if not isinstance(table, dict):
            raise self.error(s, "", "must be a table: [reader]")
        self.known(table, s, {"enabled", "port", "idle_minutes", "mark_seen_on_server"})
        idle = table.get("idle_minutes", ReaderConfig.idle_minutes)
        if not isinstance(idle, int) or isinstance(idle, bool) or not 1 <= idle <= 24 * 60:
            raise self.error(s, "idle_minutes", "must be a number of minutes from 1 to 1440")
        return ReaderConfig(
            enabled=self.boolean(table, s, "enabled", True),
            port=self.port(table, s, "port", ReaderConfig.port),
            idle_minutes=idle,
            mark_seen_on_server=self.boolean(table, s, "mark_seen_on_server", False),
        )

    def account(self, table: Any, index: int) -> AccountConfig:
        s = "accounts"
        if not isinstance(table, dict):
            raise self.error(s, "", "each [[accounts]] entry must be a table", index)
        secret_keys = {f"{n}{x}" for n in ("password", "smtp_password") for x in _SECRET_SUFFIXES}
        self.known(
            table, s,
            {"name", "host", "port", "tls", "insecure_plaintext", "ca_file", "username", "auth",
             "oauth2_token_command", "folders", "smtp_host", "smtp_port", "smtp_tls",
             "smtp_username", "outbox_folder", "sent_folder", "command_time_limit"}
            | secret_keys,
            index,
        )  # fmt: skip
        for required in ("name", "host", "username"):
            if required not in table:
                raise self.error(s, "", f"account #{index + 1} has no {required!r}", index)
        name = self.string(table, s, "name", index=index)
        tls = self.string(table, s, "tls", "implicit", index, ("implicit", "starttls", "plain"))
        insecure = self.boolean(table, s, "insecure_plaintext", False, index)
        if tls == "plain" and not insecure:
            raise self.error(
                s,
                "tls",
                "plain IMAP needs insecure_plaintext = true (meant for loopback tests)",
                index,
            )
        auth = self.string(table, s, "auth", "password", index, ("password", "xoauth2"))
        token_command = self.string(table, s, "oauth2_token_command", index=index)
        if auth == "xoauth2" and not token_command:
            raise self.error(s, "auth", "xoauth2 needs oauth2_token_command", index)
        password = self.secret(table, s, "password", f"accounts.{name}.password", index,
                               default_keyring=(KEYRING_SERVICE, f"{name}/imap"))  # fmt: skip
        folders = table.get("folders", ["INBOX"])
        if (
            not isinstance(folders, list)
            or not folders
            or not all(isinstance(f, str) and f for f in folders)
        ):
            raise self.error(
                s, "folders", "must be a non-empty list of folder names or patterns", index
            )
        smtp_tls = self.string(
            table, s, "smtp_tls", "implicit", index, ("implicit", "starttls", "plain")
        )
        if smtp_tls == "plain" and not insecure:
            raise self.error(s, "smtp_tls", "plain SMTP needs insecure_plaintext = true", index)
        limit = table.get("command_time_limit", 300)
        if not isinstance(limit, int) or isinstance(limit, bool) or not 10 <= limit <= 86400:
            raise self.error(
                s, "command_time_limit", "must be a number of seconds from 10 to 86400", index
            )
        smtp_password = None
        if any(f"smtp_password{x}" in table for x in _SECRET_SUFFIXES):
            smtp_password = self.secret(
                table, s, "smtp_password", f"accounts.{name}.smtp_password", index
            )
        return AccountConfig(
            name=name,
            host=self.string(table, s, "host", index=index),
            username=self.string(table, s, "username", index=index),
            password=password,
            port=self.port(table, s, "port", 993 if tls == "implicit" else 143, index),
            tls=tls,
            ca_file=self.path(table, s, "ca_file", index),
            auth=auth,
            oauth2_token_command=token_command,
            folders=tuple(folders),
            smtp_host=self.string(table, s, "smtp_host", index=index),
            smtp_port=self.port(
                table, s, "smtp_port", 465 if smtp_tls == "implicit" else 587, index
            ),
            smtp_tls=smtp_tls,
            smtp_username=self.string(table, s, "smtp_username", index=index),
            smtp_password=smtp_password,
            outbox_folder=self.string(table, s, "outbox_folder", index=index),
            sent_folder=self.string(table, s, "sent_folder", index=index),
            command_time_limit=limit,
        )


def _close_match(key: str, allowed: set[str]) -> str | None:
    import difflib

    matches = difflib.get_close_matches(key, sorted(allowed), n=1)
    return matches[0] if matches else None

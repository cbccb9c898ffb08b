"""``smime-companion init``: write a working config for one account from a few answers.

Setting up by hand means copying ``config.example.toml`` and learning its keys. ``init`` asks for
what it cannot find out (the PKCS#12 file; the rest has defaults taken from the certificate's
address), checks the identity opens, and writes the config with the secrets kept out of it: in
the OS keyring (asked for once, stored there) or named environment variables. Every answer can
also be given as an option, so a script can run it without a terminal.
"""

from __future__ import annotations

import argparse
import getpass
import os
import secrets
import sys
import tempfile
from pathlib import Path

from smime_companion import credentials, keyfiles
from smime_companion.config import (
    KEYRING_SERVICE,
    SecretRef,
    default_config_path,
    default_data_dir,
    parse_config,
)
from smime_companion.core.certs import email_addresses
from smime_companion.errors import KeyLoadError, SecretUnavailable, UsageError

# The environment variables an ``--secrets env`` config names.
ENV_NAMES = {
    "p12": "SMIME_P12_PASSWORD",
    "cache": "SMIME_CACHE_KEY",
    "imap": "SMIME_IMAP_PASSWORD",
    "smtp": "SMIME_SMTP_PASSWORD",
}
# Providers that refuse passwords over IMAP: say so instead of writing a config that fails.
OAUTH_ONLY = ("gmail.com", "googlemail.com", "outlook.com", "hotmail.com", "live.com")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "init",
        help="write a config for your account and identity, asking what it needs",
        description="Write a config for one account: asks for what is not given as an option "
        "(PKCS#12 file and its password, address, servers), checks the identity opens, and keeps "
        "every secret out of the file (in the OS keyring, or named environment variables).",
    )
    parser.add_argument("--config", metavar="FILE", type=Path,
                        help="where to write it (default: $SMIME_COMPANION_CONFIG, else "
                        "~/.config/smime-companion/config.toml)")  # fmt: skip
    parser.add_argument("--p12", metavar="FILE", type=Path, help="your S/MIME identity (PKCS#12)")
    parser.add_argument("--email", help="your address (default: the certificate's)")
    parser.add_argument("--name", help="a short name for the account (default: from the domain)")
    parser.add_argument("--host", help="IMAP server (default: imap.DOMAIN)")
    parser.add_argument(
        "--port", type=_port, help="IMAP port (default: 993, TLS; 143 uses STARTTLS)"
    )
    parser.add_argument("--username", help="IMAP login (default: the address)")
    parser.add_argument("--smtp-host", help="SMTP server for the outbox (default: smtp.DOMAIN)")
    parser.add_argument("--smtp-port", type=_port,
                        help="SMTP port (default: 465, TLS; 587 uses STARTTLS)")  # fmt: skip
    parser.add_argument("--secrets", choices=("keyring", "env"), default="keyring",
                        help="keep passwords and the cache key in the OS keyring (default; "
                        "asked for now) or in environment variables you set")  # fmt: skip
    parser.add_argument("--cache-all", action="store_true",
                        help="archive all mail in the cache, not only S/MIME")  # fmt: skip
    parser.add_argument("--force", action="store_true", help="replace an existing config")
    parser.set_defaults(func=cmd_init)


def _port(text: str) -> int:
    """A port number option (argparse reports the error in one line)."""
    try:
        port = int(text)
    except ValueError:
        port = 0
    if not 0 < port < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (1 to 65535)")
    return port


class _Asker:
    """Answers from the options, else from the user. On a terminal every question is asked
    (Enter takes the default); from a pipe, questions with a default take it and the others
    (the PKCS#12 file unless given, the secrets) are read a line each, in the order asked."""

    def __init__(self) -> None:
        self.tty = sys.stdin.isatty()

    def value(self, given: str | None, question: str, default: str | None, option: str) -> str:
        if given:
            return given
        if default and not self.tty:
            return default
        shown = f" [{default}]" if default else ""
        answer = self._line(f"{question}{shown}: ", option).strip()
        if not answer and default:
            return default
        if not answer:
            raise UsageError(f"{question}: no answer (give {option})")
        return answer

    def secret(self, question: str) -> str:
        if self.tty:
            return getpass.getpass(f"{question}: ")
        return self._line("", "the secret on standard input").rstrip("\r\n")

    def _line(self, prompt: str, option: str) -> str:
        if self.tty:
            return input(prompt)
        line = sys.stdin.readline()
        if not line:
            raise UsageError(f"no terminal to ask and nothing on standard input: give {option}")
        return line


def cmd_init(args: argparse.Namespace) -> int:
    path = (args.config or default_config_path()).expanduser()
    if path.exists() and not args.force:
        raise UsageError(f"{path} already exists (use --force to replace it)")
    ask = _Asker()
    p12 = Path(ask.value(str(args.p12) if args.p12 else None, "Your S/MIME identity (PKCS#12 "
                         "file)", None, "--p12")).expanduser()  # fmt: skip
    if not p12.is_file():  # said before its password is asked for
        raise UsageError(f"{p12}: no such PKCS#12 file")
    found: dict[str, str] = {}  # secret name -> value, stored only once the config is written
    if args.secrets == "keyring":
        found["p12"] = ask.secret(f"Password of {p12.name}")
        password: bytes | None = found["p12"].encode()
    else:
        password = os.environ.get(ENV_NAMES["p12"], "").encode() or None
    try:
        identity = keyfiles.load_pkcs12(p12, password)
    except KeyLoadError as exc:
        if args.secrets == "env" and password is None:
            identity = None  # checked by doctor once the variable is set
        else:
            raise UsageError(str(exc)) from None
    addresses = list(email_addresses(identity.certificate)) if identity else []
    email = ask.value(args.email, "Your email address", addresses[0] if addresses else None,
                      "--email").strip().lower()  # fmt: skip
    local, _, domain = email.rpartition("@")
    if not local or "." not in domain:
        raise UsageError(f"{email!r} is not an email address (like alice@example.org)")
    if identity and email not in addresses:
        certified = ", ".join(addresses) or "no address"
        print(
            f"note: the certificate is for {certified}, not {email}: "
            "mail you seal will fail the recipients' address check",
            file=sys.stderr,
        )
    name = args.name or domain.split(".")[0]
    host = ask.value(args.host, "IMAP server", f"imap.{domain}", "--host")
    username = ask.value(args.username, "IMAP login", email, "--username")
    smtp_host = ask.value(args.smtp_host, "SMTP server (for the outbox)", f"smtp.{domain}",
                          "--smtp-host")  # fmt: skip
    if args.secrets == "keyring":
        found["imap"] = ask.secret(f"IMAP password for {username}")
        found["smtp"] = ask.secret("SMTP password (Enter: the same)") or found["imap"]
        found["cache"] = secrets.token_urlsafe(32)  # never typed: the keyring keeps it
    text = _config_text(args, p12, name, host, username, smtp_host)
    config = parse_config(text, path)  # what is written must load, or it is our bug
    if args.secrets == "keyring":
        # Stored before the file is written: without a usable keyring nothing is left behind.
        account = config.account(name)
        assert account.smtp_password is not None
        refs: dict[str, SecretRef] = {
            "p12": config.identity.p12_password,
            "cache": config.cache.key,
            "imap": account.password,
            "smtp": account.smtp_password,
        }
        try:
            for key, ref in refs.items():
                credentials.store_in_keyring(ref, found[key])
        except SecretUnavailable as exc:
            raise SecretUnavailable(f"{exc}; nothing was written (try --secrets env)") from None
    _write_private(path, text)
    _say_next(path, args.secrets, domain)
    return 0


def _config_text(
    args: argparse.Namespace, p12: Path, name: str, host: str, username: str, smtp_host: str
) -> str:
    keyring = args.secrets == "keyring"

    def secret(key: str, entry: str, keyring_entry: str | None) -> str:
        """The config line for a secret: its environment variable, or its keyring entry
        (None: the entry the config names by default, ``KEYRING_SERVICE/NAME/imap``)."""
        if not keyring:
            return f'{key}_env = "{ENV_NAMES[entry]}"'
        if keyring_entry is None:
            return f"{key}_keyring = true"
        return f'{key}_keyring = "{KEYRING_SERVICE}/{keyring_entry}"'

    lines = [
        "# Written by smime-companion init. Every key is explained in config.example.toml.",
        "",
        "[identity]",
        f"p12 = {_toml(str(p12))}",
        secret("p12_password", "p12", "identity"),
        "",
        "[cache]",
        f"path = {_toml(str(default_data_dir()))}",
        # keyring: the default entry smime-companion/cache, so no line
        *([] if keyring else [f'key_env = "{ENV_NAMES["cache"]}"']),
        f"cache_all = {'true' if args.cache_all else 'false'}",
        "",
        "[[accounts]]",
        f"name = {_toml(name)}",
        f"host = {_toml(host)}",
        *([f"port = {args.port}"] if args.port else []),
        *(['tls = "starttls"'] if args.port == 143 else []),  # the plain port: STARTTLS
        f"username = {_toml(username)}",
        secret("password", "imap", None),
        'folders = ["INBOX"]',
        f"smtp_host = {_toml(smtp_host)}",
        *([f"smtp_port = {args.smtp_port}"] if args.smtp_port else []),
        *(['smtp_tls = "starttls"'] if args.smtp_port == 587 else []),  # submission port
        secret("smtp_password", "smtp", f"{name}/smtp"),
        "",
    ]
    return "\n".join(lines)


def _toml(value: str) -> str:
    """A TOML basic string."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` as 0600 (its directory 0700 when created), atomically."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".config-", suffix=".toml")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _say_next(path: Path, mode: str, domain: str) -> None:
    print(f"wrote {path}")
    if mode == "keyring":
        print(f"saved the passwords and a new cache key in the OS keyring ({KEYRING_SERVICE})")
    else:
        names = " ".join(ENV_NAMES.values())
        print(f"set these environment variables before running it: {names}")
    if domain in OAUTH_ONLY:
        print(
            f'note: {domain} refuses passwords over IMAP: set auth = "xoauth2" and '
            "oauth2_token_command in the account (contrib/README.md shows how)"
        )
    print(
        "your correspondents' certificates are trusted through the system's CA bundle; for a "
        "private CA, add its certificate to [identity] trust_anchors"
    )
    print("next: smime-companion doctor   (checks the identity, the cache and the server)")
    print("then: smime-companion run      (or contrib/systemd, contrib/launchd)")

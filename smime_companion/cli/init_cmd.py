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
import hashlib
import os
import secrets
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from smime_companion import credentials, keyfiles
from smime_companion.cli.flags import add_command
from smime_companion.config import (
    KEYRING_SERVICE,
    Config,
    SecretRef,
    default_config_path,
    default_data_dir,
    parse_config,
)
from smime_companion.core.certs import describe_name, describe_subject, email_addresses
from smime_companion.core.model import Identity
from smime_companion.core.printable import for_terminal
from smime_companion.errors import ImapError, KeyLoadError, SecretUnavailable, UsageError
from smime_companion.imap.session import server_certificate

# The environment variables an ``--secrets env`` config names.
ENV_NAMES = {
    "p12": "SMIME_P12_PASSWORD",
    "cache": "SMIME_CACHE_KEY",
    "imap": "SMIME_IMAP_PASSWORD",
    "smtp": "SMIME_SMTP_PASSWORD",
}
# An identity that expires sooner than this gets a warning (as doctor gives).
EXPIRY_WARNING_DAYS = 30
# Providers that refuse passwords over IMAP: say so instead of writing a config that fails.
OAUTH_ONLY = ("gmail.com", "googlemail.com", "outlook.com", "hotmail.com", "live.com")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = add_command(
        sub,
        "init",
        cmd_init,
        help="write a config for your account and identity, asking what it needs",
        description="Write a config for one account: checks the OS keyring first (with the "
        "default --secrets keyring), asks for what is not given as an option (PKCS#12 file and "
        "its password, address, servers and ports, folders, a local outbox), opens the identity "
        "and warns about its expiry, shows the IMAP server's TLS certificate fingerprint when "
        "the system does not trust it and offers to pin it (as ssh does), explains where the "
        "cache key is and how to back it up, and keeps every secret out of the file (in the OS "
        "keyring, or named environment variables). It ends with the next command to type.",
        config=False,
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
    parser.add_argument("--ca-file", type=Path, metavar="FILE",
                        help="the IMAP server's CA certificate, when the system does not trust "
                        "it (on a terminal, init offers to pin the server's own)")  # fmt: skip
    parser.add_argument("--folders", help="folders to watch, comma-separated (default: INBOX)")
    parser.add_argument(
        "--outbox-dir", metavar="DIR", help="a local outbox directory too ('-': none, the default)"
    )
    parser.add_argument("--secrets", choices=("keyring", "env"), default="keyring",
                        help="keep passwords and the cache key in the OS keyring (default; "
                        "asked for now) or in environment variables you set")  # fmt: skip
    parser.add_argument("--cache-all", action="store_true",
                        help="archive all mail in the cache, not only S/MIME")  # fmt: skip
    parser.add_argument("--force", action="store_true", help="replace an existing config")


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

    def value(
        self,
        given: str | None,
        question: str,
        default: str | None,
        option: str,
        check: Callable[[str], object] | None = None,
    ) -> str:
        """The option's value, else the answer (Enter: ``default``); on a terminal an answer
        that ``check`` refuses (raising ArgumentTypeError or ValueError) is asked again."""
        if given:
            return given
        if default and not self.tty:
            return default
        shown = f" [{default}]" if default else ""
        while True:
            answer = self._line(f"{question}{shown}: ", option).strip() or (default or "")
            if not answer:
                raise UsageError(f"{question}: no answer (give {option})")
            if check is None:
                return answer
            try:
                check(answer)
                return answer
            except (argparse.ArgumentTypeError, ValueError) as exc:
                if not self.tty:
                    raise UsageError(f"{question}: {exc}") from None
                print(f"  {exc}")

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
    """``init``: check what can be checked before asking anything (the target, the options,
    the keyring), then ask, open the identity, look at the server's TLS certificate, and write
    the config; returns 0. Raises UsageError or SecretUnavailable (one line, nothing written)."""
    path = (args.config or default_config_path()).expanduser()
    _check_before_asking(args, path)
    ask = _Asker()
    found: dict[str, str] = {}  # secret name -> value, stored only once the config is written
    p12, identity = _open_identity(args, ask, found)
    email, domain = _ask_address(args, ask, identity.certificate)
    name = args.name or domain.split(".")[0]
    host = ask.value(args.host, "IMAP server", f"imap.{domain}", "--host")
    port = int(ask.value(str(args.port) if args.port else None, "IMAP port (993: TLS, 143: "
                         "STARTTLS)", "993", "--port", check=_port))  # fmt: skip
    ca_file = args.ca_file or _server_trust(ask, path, host, port)
    username = ask.value(args.username, "IMAP login", email, "--username")
    folders = [
        f.strip()
        for f in ask.value(
            args.folders,
            "Folders to watch (comma-separated; * matches any name)",
            "INBOX",
            "--folders",
        ).split(",")  # fmt: skip
        if f.strip()
    ]
    smtp_host = ask.value(args.smtp_host, "SMTP server (for the outbox)", f"smtp.{domain}",
                          "--smtp-host")  # fmt: skip
    smtp_port = int(
        ask.value(str(args.smtp_port) if args.smtp_port else None,
                  "SMTP port (465: TLS, 587: STARTTLS)", "465", "--smtp-port", check=_port)
    )  # fmt: skip
    outbox_dir = ask.value(
        args.outbox_dir,
        "A local outbox directory as well (drafts saved there are sealed and sent; - for none)",
        "-",
        "--outbox-dir",
    )
    if args.secrets == "keyring":
        found["imap"] = ask.secret(f"IMAP password for {username}")
        found["smtp"] = ask.secret("SMTP password (Enter: the same)") or found["imap"]
        found["cache"] = secrets.token_urlsafe(32)  # never typed: the keyring keeps it
    local = None if outbox_dir in ("-", "") else Path(outbox_dir).expanduser()
    answers = _Answers(
        p12, name, host, port, ca_file, username, folders, smtp_host, smtp_port, local
    )
    text = _config_text(args, answers)
    config = parse_config(text, path)  # what is written must load, or it is our bug
    if args.secrets == "keyring":
        # Stored before the file is written: without a usable keyring nothing is left behind.
        _store_in_keyring(config, name, found)
    _write_private(path, text)
    _say_next(path, args.secrets, domain, config.cache.path)
    return 0


def _check_before_asking(args: argparse.Namespace, path: Path) -> None:
    """Refuse at once what no answer can mend: an existing config, a bad --email, a keyring
    that is not there (so that no answer is typed in vain)."""
    if path.exists() and not args.force:
        raise UsageError(f"{path} already exists (use --force to replace it)")
    if args.email:
        _check_address(args.email)
    if args.secrets == "keyring":
        problem = credentials.keyring_problem(KEYRING_SERVICE)
        if problem is not None:
            raise SecretUnavailable(
                f"{problem}; nothing was asked or written: use --secrets env (or a systemd "
                "credential, see contrib/README.md)"
            )


def _open_identity(
    args: argparse.Namespace, ask: _Asker, found: dict[str, str]
) -> tuple[Path, Identity]:
    """Ask for the PKCS#12 file and its password and open it (its validity is said). The
    password is kept in ``found`` only for the keyring. Raises UsageError (one line)."""
    p12 = Path(ask.value(str(args.p12) if args.p12 else None, "Your S/MIME identity (PKCS#12 "
                         "file)", None, "--p12")).expanduser()  # fmt: skip
    if not p12.is_file():  # said before its password is asked for
        raise UsageError(f"{p12}: no such PKCS#12 file")
    if args.secrets == "keyring":
        found["p12"] = ask.secret(f"Password of {p12.name}")
        password = found["p12"]
    else:
        # Checked now in every mode (an expired or wrong identity is found today, not when the
        # daemon starts), but only kept where the config says: the environment variable.
        password = os.environ.get(ENV_NAMES["p12"]) or ask.secret(
            f"Password of {p12.name} (only to check it opens; the config names ${ENV_NAMES['p12']})"
        )
    try:
        identity = keyfiles.load_pkcs12(p12, password.encode() or None)
    except KeyLoadError as exc:
        raise UsageError(str(exc)) from None
    _say_validity(identity.certificate)
    return p12, identity


def _ask_address(
    args: argparse.Namespace, ask: _Asker, certificate: x509.Certificate
) -> tuple[str, str]:
    """The user's address (offered: the certificate's) and its domain; a note when the
    certificate is for another address."""
    addresses = list(email_addresses(certificate))
    email = ask.value(args.email, "Your email address", addresses[0] if addresses else None,
                      "--email").strip().lower()  # fmt: skip
    domain = _check_address(email)
    if email not in addresses:
        certified = ", ".join(addresses) or "no address"
        print(
            f"note: the certificate is for {certified}, not {email}: "
            "mail you seal will fail the recipients' address check",
            file=sys.stderr,
        )
    return email, domain


def _store_in_keyring(config: Config, name: str, found: dict[str, str]) -> None:
    """Put the secrets ``found`` where ``config`` says they are. Raises SecretUnavailable."""
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


@dataclass(frozen=True)
class _Answers:
    p12: Path
    name: str
    host: str
    port: int
    ca_file: Path | None
    username: str
    folders: list[str]
    smtp_host: str
    smtp_port: int
    outbox_dir: Path | None


def _check_address(email: str) -> str:
    """The domain of ``email``; raises UsageError when it is no address."""
    local, _, domain = email.strip().lower().rpartition("@")
    if not local or "." not in domain:
        raise UsageError(f"{email!r} is not an email address (like alice@example.org)")
    return domain


def _say_validity(cert: x509.Certificate) -> None:
    """Warn (stderr) when the identity's certificate is expired, not yet valid, or expires
    within 30 days: it still opens old mail, but new mail sealed with it fails."""
    now = datetime.now(UTC)
    until = cert.not_valid_after_utc
    if until < now:
        print(
            f"warning: your certificate expired on {until:%Y-%m-%d}: it still opens old mail, "
            "but what you sign or seal with it will fail; ask your CA for a new one",
            file=sys.stderr,
        )
    elif cert.not_valid_before_utc > now:
        print(
            f"warning: your certificate is not valid before {cert.not_valid_before_utc:%Y-%m-%d}"
            " (or this machine's clock is wrong)",
            file=sys.stderr,
        )
    elif until - now < timedelta(days=EXPIRY_WARNING_DAYS):
        print(
            f"warning: your certificate expires on {until:%Y-%m-%d} (in {(until - now).days} "
            "days): ask your CA for a new one and import it with 'smime-companion identity "
            "import'",
            file=sys.stderr,
        )


def _server_trust(ask: _Asker, config_path: Path, host: str, port: int) -> Path | None:
    """Look at the IMAP server's TLS certificate. When the system does not trust it, show its
    SHA-256 fingerprint and offer to pin it, as ssh does: the certificate is saved beside the
    config and becomes the account's ``ca_file``. Returns that file, or None."""
    tls = "starttls" if port == 143 else "implicit"
    try:
        seen = server_certificate(host, port, tls)
    except ImapError as exc:
        print(
            for_terminal(f"note: {exc}; the TLS certificate is checked again by 'doctor'"),
            file=sys.stderr,
        )
        return None
    if seen.trusted:
        return None
    cert = x509.load_der_x509_certificate(seen.der)
    fingerprint = hashlib.sha256(seen.der).hexdigest().upper()
    pretty = ":".join(fingerprint[i : i + 2] for i in range(0, len(fingerprint), 2))
    # The certificate is the server's (or a man in the middle's): its names are shown escaped.
    print(
        for_terminal(
            f"The TLS certificate of {host}:{port} is not trusted by this system ({seen.problem})."
        )
    )
    print(for_terminal(f"  subject: {describe_subject(cert, '')}"))
    print(for_terminal(f"  issuer:  {describe_name(cert.issuer, '')}"))
    print(f"  SHA-256 fingerprint: {pretty}")
    print("Compare the fingerprint with what your mail provider or administrator shows.")
    if not ask.tty:
        print("note: not pinned (no terminal to ask): pass --ca-file with the server's CA")
        return None
    answer = ask.value(None, "Trust this certificate for this server from now on? (yes/no)",
                       "no", "--ca-file").strip().lower()  # fmt: skip
    if answer not in ("y", "yes"):
        print("not pinned: the daemon will refuse this server until ca_file names its CA")
        return None
    pinned = config_path.parent / f"{host}-{port}.pem"
    _write_private(pinned, cert.public_bytes(serialization.Encoding.PEM).decode())
    print(f"pinned: saved it as {pinned} (the account's ca_file)")
    return pinned


def _config_text(args: argparse.Namespace, answers: _Answers) -> str:
    keyring = args.secrets == "keyring"
    name = answers.name

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
        f"p12 = {_toml(str(answers.p12))}",
        secret("p12_password", "p12", "identity"),
        "",
        "[cache]",
        f"path = {_toml(str(default_data_dir()))}",
        # keyring: the default entry smime-companion/cache, so no line
        *([] if keyring else [f'key_env = "{ENV_NAMES["cache"]}"']),
        f"cache_all = {'true' if args.cache_all else 'false'}",
        "",
        *(
            ["[outbox]", f"directory = {_toml(str(answers.outbox_dir))}", ""]
            if answers.outbox_dir
            else []
        ),  # fmt: skip
        "[[accounts]]",
        f"name = {_toml(name)}",
        f"host = {_toml(answers.host)}",
        *([f"port = {answers.port}"] if answers.port != 993 else []),
        *(['tls = "starttls"'] if answers.port == 143 else []),  # the plain port: STARTTLS
        *([f"ca_file = {_toml(str(answers.ca_file))}"] if answers.ca_file else []),
        f"username = {_toml(answers.username)}",
        secret("password", "imap", None),
        f"folders = [{', '.join(_toml(f) for f in answers.folders)}]",
        f"smtp_host = {_toml(answers.smtp_host)}",
        *([f"smtp_port = {answers.smtp_port}"] if answers.smtp_port != 465 else []),
        *(['smtp_tls = "starttls"'] if answers.smtp_port == 587 else []),  # submission port
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


def _say_next(path: Path, mode: str, domain: str, cache_dir: Path) -> None:
    print(f"wrote {path}")
    if mode == "keyring":
        print(f"saved the passwords and a new cache key in the OS keyring ({KEYRING_SERVICE})")
        print(
            "the cache key: your decrypted mail is kept encrypted under a random key in the OS "
            "keyring; without it the cache cannot be read. Back it up now, e.g. into your "
            f"password manager: keyring get {KEYRING_SERVICE} cache"
        )
    else:
        names = " ".join(ENV_NAMES.values())
        print(f"set these environment variables before running it: {names}")
        print(
            f"the cache key ({ENV_NAMES['cache']}): choose a long random one (e.g. openssl rand "
            "-base64 32) and keep a copy in your password manager: without it the cache in "
            f"{cache_dir} cannot be read"
        )
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

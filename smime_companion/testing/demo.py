"""The demo: the whole product, end to end, on this machine
(``python -m smime_companion.testing.demo DIR``; ``scripts/demo`` installs what it needs first).

1. A test PKI; OpenSSL signs a message as Alice and encrypts it to Bob; ``smime-companion open``
   opens it as Bob (a valid signature), and a forged copy (an invalid one).
2. A local Dovecot as Debian ships it (Maildir++, hierarchy separator ``.``; IMAPS on a free
   loopback port, in a temporary directory, with a generated TLS certificate) and a local SMTP
   sink (aiosmtpd: STARTTLS, AUTH, every message written to DIR).
3. Six messages into Bob's INBOX, made by OpenSSL: signed, encrypted, signed and encrypted,
   forged, plain, and an encrypted one in Japanese and German.
4. A config for Bob's account: cache in DIR, secrets from environment variables, TLS trusting
   the demo's server certificate.
5. ``run --once`` (which also makes the outbox folder), ``search`` (a word inside the encrypted
   message, ``sig:invalid``, and ``日本語``, ``テキスト`` and ``strasse``), ``show --headers``,
   ``certs list`` (harvested from the signed mail) and ``status``.
6. A draft from Bob to Alice in Bob's ``SMIME Outbox`` (the default folder the first pass made);
   ``run --once`` seals and submits it, and ``smime-companion open`` as Alice opens what the SMTP
   sink received, with a valid signature.
7. Both servers stopped (also on an error or Ctrl-C).
8. The reader on the demo's cache (``smime-companion reader --no-browser``): its one-time
   sign-in address printed. On a terminal it serves until Ctrl-C; otherwise (a script, a test)
   it is stopped at once. Then where everything is.

Every command is shown as it runs, from DIR (so its paths are short), and its result checked; the
exit code is 0 only if every check passed. The servers need root (Dovecot switches users): run by
another user, the demo does step 1, says in one line why it stops, and exits 1.
"""

from __future__ import annotations

import datetime as dt
import http.client
import os
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import textwrap
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from smime_companion.errors import SmimeCompanionError, UsageError
from smime_companion.imap.outbox_source import DEFAULT_OUTBOX_FOLDER
from smime_companion.logs import route_library_warnings
from smime_companion.testing.demo_mail import (
    INBOX_SUMMARY,
    SECRET_WORD,
    make_draft,
    make_inbox,
)
from smime_companion.testing.dovecot import Dovecot, free_port, missing_requirement
from smime_companion.testing.pki import PKCS12_PASSWORD, TestPki, make_test_pki
from smime_companion.testing.smtp_sink import SmtpSink

# Secrets reach the daemon through environment variables named in the config, never the file.
# They are demo values, printed at the end so that the commands can be tried again by hand.
SECRETS = {
    "DEMO_P12_PASSWORD": PKCS12_PASSWORD,
    "DEMO_CACHE_KEY": "demo cache key",
    "DEMO_IMAP_PASSWORD": "bob-imap-demo",
    "DEMO_SMTP_PASSWORD": "bob-smtp-demo",
}
# Written into the demo directory, so that a second run may clear a directory it made itself
# and never one that merely happens to have the same name.
MARKER = ".smime-companion-demo"
OUTBOX_FOLDER = DEFAULT_OUTBOX_FOLDER  # the config names none: the default


@dataclass
class Demo:
    """The demo's state: its directory, the checks made so far, the environment for commands."""

    out: Path
    failures: list[str] = field(default_factory=list)
    step: int = 0
    env: dict[str, str] = field(default_factory=dict)

    # -- output ----------------------------------------------------------------------------------

    def heading(self, title: str) -> None:
        """Print the next step's numbered heading."""
        self.step += 1
        print(f"\n== {self.step}. {title}", flush=True)

    def say(self, text: str) -> None:
        """Print a short explanation, wrapped and indented."""
        wrapped = textwrap.fill(" ".join(text.split()), 96, initial_indent="   ",
                                subsequent_indent="   ")  # fmt: skip
        print(wrapped, flush=True)

    def check(self, ok: bool, what: str) -> bool:
        """Print and record whether the expectation ``what`` held; returns ``ok``."""
        print(f"   {'ok' if ok else 'FAILED'}: {what}", flush=True)
        if not ok:
            self.failures.append(what)
        return ok

    # -- commands --------------------------------------------------------------------------------

    def run(
        self, argv: Sequence[str], *, shown: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Show ``argv`` (or ``shown``), run it in the demo directory and print its output,
        indented; returns the finished process (stdout and stderr as text)."""
        print(f"   $ {shown or shlex.join(argv)}", flush=True)
        proc = subprocess.run(
            list(argv), cwd=self.out, env=self.env, capture_output=True, text=True, timeout=120
        )
        for line in (proc.stdout + proc.stderr).splitlines():
            print(f"     {line}", flush=True)
        return proc

    def smime(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``smime-companion ARGS`` from this very installation (the interpreter running us)."""
        return self.run(
            [sys.executable, "-m", "smime_companion", *args],
            shown=shlex.join(["smime-companion", *args]),
        )

    def openssl(self, *args: str) -> None:
        """``openssl cms ARGS``; raises :class:`SmimeCompanionError` with openssl's complaint when
        it fails (the demo cannot go on without the message)."""
        proc = self.run(["openssl", "cms", *args])
        if proc.returncode != 0:
            raise SmimeCompanionError(f"openssl cms {args[0]} failed: {proc.stderr.strip()[-300:]}")


def _opening(demo: Demo, pki: TestPki) -> None:
    """Step 1, the demo as it always was: OpenSSL seals, ``smime-companion open`` opens."""
    demo.heading("OpenSSL signs as Alice and encrypts to Bob; smime-companion opens it as Bob")
    demo.say("A test PKI (root, intermediate, a dozen users; PKCS#12 password 'test') is in pki/.")
    (demo.out / "message.txt").write_bytes(
        b"From: Alice <alice@example.org>\r\nTo: Bob <bob@example.org>\r\n"
        b"Subject: Quarterly figures\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        b"Hi Bob,\r\nthe figures are attached in spirit.\r\n"
    )
    demo.openssl("-sign", "-in", "message.txt", "-signer", "pki/alice.cert.pem",
                  "-inkey", "pki/alice.key.pem", "-certfile", "pki/intermediate.pem",
                  "-out", "signed.eml")  # fmt: skip
    demo.openssl("-encrypt", "-in", "signed.eml", "-aes-256-gcm", "-recip", "pki/bob.cert.pem",
                 "-from", "alice@example.org", "-to", "bob@example.org",
                 "-subject", "Quarterly figures", "-out", "sealed.eml")  # fmt: skip
    bob = ("--p12", "pki/bob.p12", "--p12-password-env", "DEMO_P12_PASSWORD")
    proc = demo.smime("open", "sealed.eml", *bob, "--anchor", "pki/root.pem", "-o", "opened.eml")
    demo.check(proc.returncode == 0, "sealed.eml opens (exit 0): decrypted, signature valid")
    opened = (demo.out / "opened.eml").read_bytes() if (demo.out / "opened.eml").exists() else b""
    demo.check(b"figures are attached" in opened, "opened.eml holds Alice's text")

    demo.say("A forged copy: one word of Alice's signed text changed, then encrypted again.")
    signed = (demo.out / "signed.eml").read_bytes()
    (demo.out / "forged-signed.eml").write_bytes(signed.replace(b"figures are", b"figures ARE"))
    demo.openssl("-encrypt", "-in", "forged-signed.eml", "-aes-256-gcm",
                 "-recip", "pki/bob.cert.pem", "-out", "forged.eml")  # fmt: skip
    proc = demo.smime("open", "forged.eml", *bob, "--anchor", "pki/root.pem")
    demo.check(
        proc.returncode == 1 and "invalid" in proc.stdout,
        "forged.eml is reported with an invalid signature (exit 1)",
    )


def _config(demo: Demo, pki: TestPki, imap_port: int, smtp_port: int, ca_file: Path) -> Path:
    """Step 4's config file for Bob's account; returns its path."""
    path = demo.out / "config.toml"
    path.write_text(
        f"""\
# Written by the smime-companion demo. Secrets come from the environment variables named here.
[identity]
p12 = "{pki.p12("bob")}"
p12_password_env = "DEMO_P12_PASSWORD"
trust_anchors = ["{pki.root}"]
system_anchors = false

[cache]
path = "{demo.out / "cache"}"
key_env = "DEMO_CACHE_KEY"

[certificates]
revocation = "off"          # the test PKI has no OCSP responder or CRL to ask

[[accounts]]
name = "demo"
host = "localhost"
port = {imap_port}
tls = "implicit"
ca_file = "{ca_file}"       # the demo's own server certificate: TLS verified, not skipped
username = "bob"
password_env = "DEMO_IMAP_PASSWORD"
folders = ["INBOX"]
smtp_host = "localhost"
smtp_port = {smtp_port}
smtp_tls = "starttls"
smtp_password_env = "DEMO_SMTP_PASSWORD"

[reader]
port = {free_port()}              # the web reader, on 127.0.0.1 and ::1 only
"""
    )
    return path


def _tls_greeting(host: str, port: int, ca_file: Path) -> str:
    """The first line a TLS server sends, its certificate checked against ``ca_file`` and
    ``host``; an empty string when the connection or the check fails."""
    context = ssl.create_default_context(cafile=str(ca_file))
    try:
        with socket.create_connection((host, port), timeout=10) as raw:
            with context.wrap_socket(raw, server_hostname=host) as tls:
                return tls.recv(512).decode("ascii", "replace").splitlines()[0]
    except (OSError, IndexError):  # ssl.SSLError is an OSError
        return ""


def _first_id(listing: str) -> str | None:
    """The message id that starts the first line of ``search`` output, or None."""
    for line in listing.splitlines():
        first = line.split(maxsplit=1)[0] if line.strip() else ""
        if first.isdigit():
            return first
    return None


def _servers_part(demo: Demo, pki: TestPki) -> None:
    """Steps 2 to 7: everything that needs the two servers, which are stopped in any case."""
    demo.heading("A local Dovecot (IMAPS) and a local SMTP sink (STARTTLS, AUTH)")
    dovecot: Dovecot | None = None
    sink: SmtpSink | None = None
    try:
        # Debian's stock layout: Maildir++, where "/" is no separator and "." is.
        dovecot = Dovecot(users=("bob",), password=SECRETS["DEMO_IMAP_PASSWORD"], separator=".")
        dovecot.start()
        # One unwrapped line each, so that a reader (or a test) finds the pid and directory.
        print(f"   Dovecot: pid {dovecot.pid}, directory {dovecot.dir}", flush=True)
        demo.say(
            f"It serves IMAPS on 127.0.0.1:{dovecot.tls_port} with a TLS certificate made just "
            "now for localhost, knows one user, bob, and keeps Debian's folder layout "
            "(separator '.')."
        )
        tls = demo.out / "tls"
        tls.mkdir()
        ca_file = tls / "server-ca.pem"
        shutil.copyfile(dovecot.cert, ca_file)
        sink = SmtpSink(
            "starttls",
            dovecot.cert.parent,  # the same certificate: one ca_file trusts both servers
            username="bob",
            password=SECRETS["DEMO_SMTP_PASSWORD"],
            capture_dir=demo.out / "smtp-received",
        )
        print(f"   SMTP sink: 127.0.0.1:{sink.port}, writing to smtp-received/", flush=True)
        demo.say(
            "The sink serves the same certificate, requires STARTTLS and Bob's login, and keeps "
            "every message it accepts."
        )
        demo.check(
            _tls_greeting("localhost", dovecot.tls_port, ca_file).startswith("* OK"),
            "Dovecot greets over TLS, its certificate verified with tls/server-ca.pem",
        )
        _mail_part(demo, pki, dovecot, sink, ca_file)
    finally:
        demo.heading("Stopping both servers")
        if sink is not None:
            sink.stop()
            print("   the SMTP sink is stopped", flush=True)
        if dovecot is not None:
            log = dovecot.dir / "log" / "dovecot.log"
            if log.exists():
                shutil.copyfile(log, demo.out / "dovecot.log")
            dovecot.remove()
            print(f"   Dovecot is stopped and {dovecot.dir} removed (its log: dovecot.log)")


def _mail_part(demo: Demo, pki: TestPki, dovecot: Dovecot, sink: SmtpSink, ca_file: Path) -> None:
    """Steps 3 to 6, with both servers running."""
    demo.heading("Six messages for Bob, made by OpenSSL from the test PKI")
    messages = make_inbox(demo.out / "mail", demo.openssl, dt.datetime.now(dt.UTC))
    for name, raw in messages:
        dovecot.deliver("bob", raw)
        print(f"   delivered mail/{name} to Bob's INBOX", flush=True)
    demo.say(INBOX_SUMMARY)

    demo.heading("A config for Bob's account")
    config = _config(demo, pki, dovecot.tls_port, sink.port, ca_file)
    for line in config.read_text().splitlines():
        print(f"     {line}")
    demo.say(
        "Passwords and the cache key come from DEMO_* environment variables; the servers' "
        "TLS certificate is checked against tls/server-ca.pem (no insecure_plaintext)."
    )
    cfg = ("--config", "config.toml")
    _cache_part(demo, cfg)
    _outbox_part(demo, dovecot, cfg)


def _cache_part(demo: Demo, cfg: tuple[str, ...]) -> None:
    """Step 5: the daemon's first pass, then what the cache answers."""
    demo.heading("The daemon's first pass, then the cache")
    proc = demo.smime("run", "--once", *cfg)
    demo.check(
        proc.returncode == 0 and "demo/INBOX: 6 new, 5 stored, 1 not S/MIME" in proc.stdout,
        "run --once stores the five S/MIME messages and passes over the plain one",
    )
    proc = demo.smime("search", SECRET_WORD, *cfg)
    demo.check(
        proc.returncode == 0 and "Door code" in proc.stdout and len(proc.stdout.splitlines()) == 1,
        f"'{SECRET_WORD}', a word only inside the encrypted message, finds it",
    )
    found = _first_id(proc.stdout)
    proc = demo.smime("search", "sig:invalid", *cfg)
    demo.check(
        proc.returncode == 0 and "Transfer" in proc.stdout and len(proc.stdout.splitlines()) == 1,
        "sig:invalid finds the forged message, and only it",
    )
    if demo.check(found is not None, "the search gave the encrypted message's id"):
        proc = demo.smime("show", str(found), "--headers", *cfg)
        demo.check(
            proc.returncode == 0 and "Subject: Door code" in proc.stdout,
            "show --headers prints its effective headers and verdict",
        )
    proc = demo.smime("certs", "list", *cfg)
    demo.check(
        proc.returncode == 0
        and "alice@example.org" in proc.stdout
        and "carol@example.org" in proc.stdout,
        "certs list holds Alice's and Carol's certificates, harvested from their signed mail",
    )
    for word in ("日本語", "テキスト", "strasse"):
        proc = demo.smime("search", word, *cfg)
        demo.check(
            proc.returncode == 0
            and "Reiseplan" in proc.stdout
            and len(proc.stdout.splitlines()) == 1,
            f"'{word}' finds the encrypted message in Japanese and German (it says Straße)",
        )
    proc = demo.smime("status", *cfg)
    demo.check(proc.returncode == 0 and "INBOX" in proc.stdout, "status reports the INBOX")


def _outbox_part(demo: Demo, dovecot: Dovecot, cfg: tuple[str, ...]) -> None:
    """Step 6: a draft in Bob's outbox folder, sealed and sent; Alice opens what was sent."""
    demo.heading(f"A draft from Bob to Alice in the '{OUTBOX_FOLDER}' folder, sealed and sent")
    draft = make_draft(dt.datetime.now(dt.UTC))
    (demo.out / "mail" / "draft.eml").write_bytes(draft)
    dovecot.append("bob", draft, OUTBOX_FOLDER)
    print(f"   appended mail/draft.eml to Bob's '{OUTBOX_FOLDER}' (over IMAPS)", flush=True)
    demo.say(
        "The daemon signs it as Bob and encrypts it to Alice with the certificate it "
        "harvested from her signed mail (and to Bob, for his Sent copy)."
    )
    proc = demo.smime("run", "--once", *cfg)
    demo.check(
        proc.returncode == 0 and "demo: outbox: 1 sent" in proc.stdout,
        "run --once sends the draft",
    )
    received = sorted((demo.out / "smtp-received").glob("*.eml"))
    if not demo.check(len(received) == 1, "the SMTP sink received one message"):
        return
    captured = str(received[0].relative_to(demo.out))
    demo.check(
        b"Noodles at noon" not in received[0].read_bytes(),
        f"{captured} does not show the draft's text: it is encrypted",
    )
    proc = demo.smime(
        "open", captured, "--p12", "pki/alice.p12", "--p12-password-env", "DEMO_P12_PASSWORD",
        "--anchor", "pki/root.pem", "-o", "smtp-received/opened-as-alice.eml",
    )  # fmt: skip
    opened = demo.out / "smtp-received" / "opened-as-alice.eml"
    demo.check(
        proc.returncode == 0 and opened.exists() and b"Noodles at noon" in opened.read_bytes(),
        "Alice opens it: decrypted, Bob's signature valid (exit 0)",
    )


def _reader_part(demo: Demo) -> None:
    """Step 8: the reader on the demo's cache, served by ``smime-companion reader`` in the
    foreground; its sign-in address printed. On a terminal it serves until Ctrl-C."""
    demo.heading("The reader: your mail in the browser, on this machine only")
    argv = [sys.executable, "-m", "smime_companion", "reader", "--no-browser",
            "--config", "config.toml"]  # fmt: skip
    print("   $ smime-companion reader --no-browser --config config.toml", flush=True)
    proc = subprocess.Popen(
        argv, cwd=demo.out, env=demo.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        if not demo.check(url.startswith("http://127.0.0.1:"), "the reader prints its sign-in URL"):
            return
        print(f"   Sign in: {url}", flush=True)
        port = int(url.split(":")[2].split("/")[0])
        demo.check(
            _http_status(port, "/mail") == 401,
            "the reader answers on loopback, and shows nothing without signing in",
        )
        demo.say(
            "Open the address in a browser on this machine within two minutes: the list, the "
            "verdicts, search, replies (sealed, sent through the outbox). A new link any time: "
            "smime-companion reader --config config.toml"
        )
        if sys.stdin.isatty():
            print("   The reader runs until you press Ctrl-C.", flush=True)
            try:
                proc.wait()
            except KeyboardInterrupt:
                pass
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        print("   the reader is stopped", flush=True)


def _http_status(port: int, path: str) -> int:
    """The status of GET ``path`` on the loopback reader (0 when it does not answer)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers={"Host": f"127.0.0.1:{port}"})
        return conn.getresponse().status
    except OSError:
        return 0
    finally:
        conn.close()


@contextmanager
def _stop_on_signals() -> Iterator[None]:
    """Turn SIGTERM and SIGHUP into KeyboardInterrupt (as Ctrl-C is), so that the servers are
    stopped by the ``finally`` blocks whichever way the demo is ended."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = {s: signal.signal(s, interrupt) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _prepare(out: Path) -> None:
    """Make ``out`` empty: a fresh directory, or one an earlier demo run made (and marked).
    Raises :class:`UsageError` for any other non-empty directory, which is never deleted."""
    if out.exists() and any(out.iterdir()):
        if not (out / MARKER).exists():
            raise UsageError(f"{out} is not empty and was not made by the demo; give another DIR")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("made by python -m smime_companion.testing.demo\n")


def _summary(demo: Demo) -> None:
    out = demo.out
    print(f"\n== Where everything is (in {out})")
    for path, what in (
        ("pki/", "the test PKI (PKCS#12 password 'test')"),
        ("sealed.eml, forged.eml", "step 1's messages; opened.eml, the opened one"),
        ("mail/", "the messages delivered to Bob, and his draft"),
        ("config.toml", "Bob's account"),
        ("cache/", "the encrypted cache and certificate store"),
        ("tls/server-ca.pem", "the servers' TLS certificate"),
        ("smtp-received/", "what the SMTP sink accepted, and Alice's opened copy"),
        ("dovecot.log", "the IMAP server's log"),
    ):
        if (out / path.split(",")[0].strip()).exists():
            print(f"   {path:24} {what}")
    print("   To look around (the servers are stopped; the cache stays):")
    exports = " ".join(
        f"{k}={shlex.quote(v)}" for k, v in SECRETS.items() if k != "DEMO_IMAP_PASSWORD"
    )
    print(f"     cd {shlex.quote(str(out))} && export {exports}")
    # The command beside this interpreter (the venv's), as it may not be on PATH.
    command = Path(sys.executable).parent / "smime-companion"
    shown = shlex.quote(str(command)) if command.exists() else "smime-companion"
    print(f"     {shown} search --config config.toml is:encrypted")
    print(f"     {shown} reader --config config.toml      # your mail in the browser")


def run_demo(out: Path) -> int:
    """Run the whole demo in ``out`` (created; an earlier demo's directory is cleared). Returns
    0 when every check passed, 1 when one failed or the servers cannot run here (not root, no
    Dovecot), 130 on Ctrl-C (or SIGTERM, SIGHUP). A failed step is reported and counted, not
    raised; raises :class:`UsageError` only when ``out`` is a non-empty directory the demo did
    not make."""
    out = out.resolve()
    _prepare(out)
    demo = Demo(out, env={**os.environ, **SECRETS})
    try:
        with _stop_on_signals():
            pki = make_test_pki(out / "pki", dt.datetime.now(dt.UTC))
            _opening(demo, pki)
            reason = missing_requirement()
            if reason:
                print(f"\nThe server part of the demo is skipped: {reason}.")
                return 1
            _servers_part(demo, pki)
            if (demo.out / "config.toml").exists():
                _reader_part(demo)
    except KeyboardInterrupt:
        print("\ndemo interrupted; the servers are stopped", file=sys.stderr)
        return 130
    except Exception as exc:  # reported in one line: the demo's job is to say what went wrong
        demo.failures.append(f"{type(exc).__name__}: {exc}")
        print(f"\nFAILED: {type(exc).__name__}: {exc}", file=sys.stderr)
    _summary(demo)
    if demo.failures:
        print(f"\nThe demo FAILED: {len(demo.failures)} check(s) did not hold:")
        for what in demo.failures:
            print(f"   - {what}")
        return 1
    print("\nThe demo passed: every step gave the expected result.")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m smime_companion.testing.demo [DIR]`` (default ``demo-out``); returns the exit
    code of :func:`run_demo`, or 2 for a bad command line or a DIR it must not clear."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) > 1 or (args and args[0].startswith("-")):
        print("usage: python -m smime_companion.testing.demo [DIR]", file=sys.stderr)
        return 2
    route_library_warnings(verbose=False)
    try:
        return run_demo(Path(args[0] if args else "demo-out"))
    except UsageError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

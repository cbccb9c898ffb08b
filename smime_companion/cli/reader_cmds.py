"""``smime-companion reader`` and ``smime-companion compose``: the web reader, and writing mail
from the terminal with the same compose logic.

``reader`` gives the browser a fresh one-time sign-in address: the running daemon's reader
when there is one (``run`` serves it on ``[reader] port``), else a server of its own in the
foreground, which also sends what is queued in it. The address is printed as one line on
standard output (``http://127.0.0.1:PORT/signin?token=...``), for scripts.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import webbrowser
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from smime_companion import runtime
from smime_companion.cli.common import cache_key
from smime_companion.cli.flags import Subcommands, add_command, config_from_args
from smime_companion.config import Config
from smime_companion.core.certs import email_addresses
from smime_companion.errors import SmimeCompanionError, UsageError
from smime_companion.outbox.pipeline import OutboxBusy
from smime_companion.reader import compose
from smime_companion.reader.context import AccountInfo
from smime_companion.reader.security import SignInTokens, read_server_file
from smime_companion.status_file import read_status_file

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_NOT_GOOD = 1
TEMPLATE_NOTE = (
    "# Write your message below the blank line. Lines starting with # above it are ignored.\n"
    "# Save and quit to send (signed, and encrypted to every recipient with a certificate);\n"
    "# delete everything to cancel. This file is private and removed when you quit.\n"
)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``reader`` and ``compose`` subcommands."""
    _declare_reader(sub)
    _declare_compose(sub)


# -- helpers ---------------------------------------------------------------------------------------


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return True
    except OSError:
        return False


def _running_reader(config: Config, wanted: int | None) -> int | None:
    """The port of a live reader serving this cache (the daemon's, or another ``reader``)."""
    found = read_server_file(config.cache.path)
    if found is None:
        return None
    port, pid = found
    if wanted is not None and wanted != port:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return port if _listening(port) else None


def _open_browser(state_dir: Path, url: str) -> None:
    """Open ``url`` through a private launcher file, so the token is not on a command line."""
    token = url.partition("token=")[2]
    launcher = SignInTokens(state_dir).launcher(token, url)
    try:
        opened = webbrowser.open(launcher.as_uri())
    except webbrowser.Error:
        opened = False
    if not opened:
        print("no browser could be started: open the address above yourself", file=sys.stderr)


def outbox_pass(config: Config, key: str | None, account: str) -> list[str]:
    """One outbox pass of ``account`` (what the daemon would run), from this process; returns
    its problems, one line each. A pass running elsewhere (the daemon's) is left to finish."""
    now = lambda: dt.datetime.now(dt.UTC)  # noqa: E731
    try:
        with (
            runtime.open_certstore(config, key) as store,
            runtime.open_outbox_journal(config, key) as journal,
        ):
            reports = runtime.process_outbox(
                config,
                account,
                journal=journal,
                identities=runtime.identities_with_store(config, store),
                lookup=runtime.certificate_lookup(config, store),
                clock=now,
            )
    except OutboxBusy:
        return []
    except SmimeCompanionError as exc:
        return [str(exc)]
    return [e for r in reports for e in r.errors]


class ForegroundOutbox:
    """Outbox passes for the foreground reader: a kick wakes a thread that runs one pass of
    each kicked account (the daemon does this itself when it serves the reader)."""

    def __init__(self, config: Config, key: str | None) -> None:
        self.config, self.key = config, key
        self._pending: set[str] = set()
        self._lock = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="reader-outbox", daemon=True)
        self._thread.start()

    def kick(self, account: str) -> None:
        with self._lock:
            self._pending.add(account)
            self._lock.notify()

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._pending and not self._stopping:
                    self._lock.wait(60.0)
                    if not self._pending and not self._stopping:
                        # Deferred items are retried on their own time, as the daemon does.
                        self._pending.update(a.name for a in self.config.accounts)
                if self._stopping:
                    return
                accounts, self._pending = sorted(self._pending), set()
            for account in accounts:
                for problem in outbox_pass(self.config, self.key, account):
                    log.error("outbox %s: %s", account, problem)

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            self._lock.notify()
        self._thread.join(timeout=30)


# -- reader ----------------------------------------------------------------------------------------


def _declare_reader(sub: Subcommands) -> None:
    """Declare ``reader`` and its flags (run by :func:`cmd_reader` below)."""
    reader = add_command(
        sub,
        "reader",
        cmd_reader,
        help="read, search and answer your mail in the browser (on this machine only)",
        description=(
            "Open the reader in the browser with a fresh one-time sign-in link (valid two "
            "minutes). The running daemon serves the reader on [reader] port (127.0.0.1 and "
            "::1 only); when none runs, this command serves it in the foreground until Ctrl-C, "
            "and sends what you write in it. The sign-in address is printed as one line on "
            "standard output."
        ),
    )
    reader.add_argument(
        "--no-browser", action="store_true", help="print the sign-in address, open no browser"
    )
    reader.add_argument(
        "--port", type=int, metavar="N", help="serve on this port (default: [reader] port)"
    )


def cmd_reader(args: argparse.Namespace) -> int:
    """``reader``: a sign-in address for the running reader, or a reader of our own."""
    config = config_from_args(args)
    if args.port is not None and not 0 < args.port < 65536:
        raise UsageError("--port must be from 1 to 65535")
    # The web server (flask, waitress) only now: every other command would pay for it.
    from smime_companion.reader.server import ReaderServer, sign_in_url

    now = dt.datetime.now(dt.UTC)
    port = _running_reader(config, args.port)
    if port is not None:
        url = sign_in_url(config.cache.path, port, now)
        print(url, flush=True)
        if not args.no_browser:
            _open_browser(config.cache.path, url)
        return EXIT_OK
    key = cache_key(config)
    runtime.open_cache(config, key).close()  # a wrong key: one line now, not in the browser
    sender = ForegroundOutbox(config, key)
    context = runtime.reader_context(
        config,
        key,
        kick_outbox=sender.kick,
        daemon_status=lambda: read_status_file(config.cache.path),
    )
    server = ReaderServer(context, args.port or config.reader.port)

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        server.start()
        url = server.sign_in_url()
        print(url, flush=True)
        print(
            f"serving the reader on {server.url} until Ctrl-C (sign-in link valid 2 minutes)",
            file=sys.stderr,
            flush=True,
        )
        if not args.no_browser:
            _open_browser(config.cache.path, url)
        server.wait()
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.stop()
        sender.stop()
    return EXIT_OK


# -- compose ---------------------------------------------------------------------------------------


def _editor() -> list[str]:
    command = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
    return shlex.split(command)


def _private_dir(config: Config) -> Path:
    """Where the file being edited lives: the user's runtime directory (memory, not disk) when
    there is one, else the private cache directory."""
    runtime_dir = os.environ.get("XDG_RUNTIME_DIR")
    if runtime_dir and Path(runtime_dir).is_dir() and os.access(runtime_dir, os.W_OK):
        return Path(runtime_dir)
    path = Path(config.cache.path)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def _template(fields: compose.DraftFields) -> str:
    lines = [
        f"From: {fields.sender}",
        f"To: {fields.to}",
        f"Cc: {fields.cc}",
        f"Bcc: {fields.bcc}",
        f"Subject: {fields.subject}",
    ]
    return TEMPLATE_NOTE + "\n".join(lines) + "\n\n" + fields.body


def _parse_edited(text: str, base: compose.DraftFields) -> compose.DraftFields | None:
    """The fields of the edited file, or None when it was emptied (cancelled)."""
    if not text.strip():
        return None
    head, _, body = text.partition("\n\n")
    values: dict[str, str] = {}
    for line in head.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, colon, value = line.partition(":")
        if not colon or name.strip().lower() not in ("from", "to", "cc", "bcc", "subject"):
            raise UsageError(f"unknown line above the text: {line[:60]!r}")
        values[name.strip().lower()] = value.strip()
    return compose.DraftFields(
        account=base.account,
        sender=values.get("from", base.sender),
        to=values.get("to", ""),
        cc=values.get("cc", ""),
        bcc=values.get("bcc", ""),
        subject=values.get("subject", ""),
        body=body,
        in_reply_to=base.in_reply_to,
        references=base.references,
        attachments=base.attachments,
    )


def _edit(config: Config, text: str) -> str:
    """Let the user edit ``text`` in their editor; the file is private and removed after."""
    fd, name = tempfile.mkstemp(prefix="smime-compose-", suffix=".eml", dir=_private_dir(config))
    path = Path(name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        try:
            code = subprocess.call([*_editor(), str(path)])
        except OSError as exc:
            raise UsageError(f"cannot start the editor {_editor()[0]!r}: {exc.strerror}") from None
        if code != 0:
            raise UsageError(f"the editor exited with {code}: nothing was queued")
        return path.read_text(encoding="utf-8", errors="replace")
    finally:
        try:  # the plaintext of a reply: overwritten before it is unlinked
            size = path.stat().st_size
            with open(path, "r+b") as handle:
                handle.write(b"\0" * size)
        except OSError:
            pass
        path.unlink(missing_ok=True)


def _choose_sender(senders: Sequence[compose.Sender], wanted: str | None) -> compose.Sender:
    if not senders:
        raise UsageError("no identity can send: configure an account with smtp_host")
    if wanted is None:
        return senders[0]
    for choice in senders:
        if choice.address == wanted.strip().lower():
            return choice
    raise UsageError(
        f"{wanted} is none of your identities' addresses "
        f"({', '.join(sorted({s.address for s in senders}))})"
    )


def _declare_compose(sub: Subcommands) -> None:
    """Declare ``compose`` and its flags (run by :func:`cmd_compose` below)."""
    comp = add_command(
        sub,
        "compose",
        cmd_compose,
        help="write a message (or a reply) in $EDITOR and queue it, sealed, in the outbox",
        description=(
            "Write a new message, or answer a cached one, in $VISUAL or $EDITOR. The file "
            "opened holds From, To, Cc, Bcc and Subject lines, a blank line and the text (an "
            "answer quotes the original). When you save and quit, the draft goes straight into "
            "the encrypted outbox journal (never to the server or a plaintext file), each "
            "recipient's certificate status is shown, and one outbox pass signs, encrypts and "
            "sends it (when the daemon is busy with the outbox, its next pass does). Exit 0 "
            "when queued, 1 when cancelled or not sent."
        ),
    )
    answer = comp.add_mutually_exclusive_group()
    answer.add_argument("--reply", type=int, metavar="ID", help="reply to message ID")
    answer.add_argument("--reply-all", type=int, metavar="ID", help="reply to all of message ID")
    answer.add_argument("--forward", type=int, metavar="ID", help="forward message ID")
    comp.add_argument("--from", dest="sender", metavar="ADDRESS", help="send as this identity")
    comp.add_argument(
        "--no-send", action="store_true", help="only queue it: the daemon's outbox sends it"
    )


def cmd_compose(args: argparse.Namespace) -> int:
    """``compose``: write in $EDITOR, queue in the journal, send with one outbox pass."""
    config = config_from_args(args)
    key = cache_key(config)
    now = dt.datetime.now(dt.UTC)
    accounts = [AccountInfo(a.name, a.username, bool(a.smtp_host)) for a in config.accounts]
    with (
        runtime.open_certstore(config, key) as store,
        runtime.open_cache(config, key) as cache,
        runtime.open_outbox_journal(config, key) as journal,
    ):
        identities = runtime.identities_with_store(config, store)
        own = [a for i in identities for a in email_addresses(i.certificate)]
        sender = _choose_sender(compose.senders(accounts, identities), args.sender)
        modes = {"reply": args.reply, "reply-all": args.reply_all, "forward": args.forward}
        answered = [(m, i) for m, i in modes.items() if i is not None]
        if answered:
            fields = compose.answer_fields(cache, answered[0][1], answered[0][0], sender, own)
        else:
            fields = compose.DraftFields(sender.account, sender.address)
        edited = _parse_edited(_edit(config, _template(fields)), fields)
        if edited is None:
            print("cancelled: nothing was queued", file=sys.stderr)
            return EXIT_NOT_GOOD
        chosen = _choose_sender(compose.senders(accounts, identities), edited.sender)
        if chosen.account != edited.account:
            edited = compose.DraftFields(**{**edited.__dict__, "account": chosen.account})
        lookup = runtime.certificate_lookup(config, store)
        for address in edited.recipients():
            status = compose.recipient_status(address, lookup, now, config.outbox.missing_cert, own)
            print(f"{status.address}: {status.detail}")
        draft_id = compose.save(journal, edited, now, send=True)
    print(f"queued as draft {draft_id} in the encrypted outbox journal")
    if args.no_send:
        return EXIT_OK
    problems = outbox_pass(config, key, edited.account)
    for problem in problems:
        print(f"outbox: {problem}", file=sys.stderr)
    with runtime.open_outbox_journal(config, key) as journal:
        progress = compose.progress(journal, edited.account, draft_id)
    print(
        f"{progress.stage}: {progress.words}" + (f" ({progress.reason})" if progress.reason else "")
    )
    good = progress.stage in ("sent", "filed", "submitted", "sealed", "queued", "deferred")
    return EXIT_OK if good and not problems else EXIT_NOT_GOOD

"""Which of our files one message passes through from IMAP to the cache, in order.

Run: ``.venv/bin/python bench/message_path.py`` (as root, like the tests: it starts a
throwaway Dovecot). Not a speed benchmark: it measures the shape of the code that
``docs/architecture.md`` draws as "the path of one message", so the drawing can be checked.

One signed-then-encrypted message (OpenSSL, from Alice to Bob) arrives in a folder the daemon
has already synced once; the second pass is traced with ``sys.setprofile`` on every thread
(opening runs in-process: ``open_workers = 0``). It prints each file of ours in the order it
is first entered, how many calls it got, and the files *re-entered*: called back by a file
entered after them, once control had left them (no frame of theirs on the stack). Lines
tagged ``core`` are the opening engine's modules; the others are the stages the message is
handed through.
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # tests/ holds the mail makers the tests use

import smime_companion  # noqa: E402
from smime_companion.cli.daemon_cmds import build_daemon  # noqa: E402
from smime_companion.config import load_config  # noqa: E402
from smime_companion.testing.dovecot import running_dovecot  # noqa: E402
from smime_companion.testing.pki import PKCS12_PASSWORD, make_test_pki  # noqa: E402
from tests.dovecot import PASSWORD, signed_mail  # noqa: E402
from tests.tools import openssl_cms  # noqa: E402

PACKAGE = str(Path(smime_companion.__file__).parent) + os.sep


class PathTracer:
    """A profile function recording the files of ours entered, in order, and re-entries."""

    def __init__(self) -> None:
        self.order: list[str] = []
        self.calls: dict[str, int] = {}
        self.reentered: dict[str, set[str]] = {}

    def __call__(self, frame: FrameType, event: str, arg: Any) -> None:
        name = frame.f_code.co_filename
        if event != "call" or not name.startswith(PACKAGE):
            return
        here = name[len(PACKAGE) :]
        self.calls[here] = self.calls.get(here, 0) + 1
        if here not in self.order:
            self.order.append(here)
            return
        caller = frame.f_back
        back = caller
        while back is not None:
            if back.f_code.co_filename == name:
                return  # still inside this file: a call within it, not a re-entry
            back = back.f_back
        origin = caller.f_code.co_filename if caller is not None else ""
        if not origin.startswith(PACKAGE):
            return
        origin = origin[len(PACKAGE) :]
        if self.order.index(origin) > self.order.index(here):  # a call back upstream
            self.reentered.setdefault(here, set()).add(f"{frame.f_code.co_name} from {origin}")


def _config(directory: Path, server: Any, pki: Any) -> Path:
    path = directory / "config.toml"
    path.write_text(
        f"""
[identity]
p12 = "{pki.p12("bob")}"
p12_password_env = "TRACE_P12_PASSWORD"
trust_anchors = ["{pki.root}"]
system_anchors = false

[cache]
path = "{directory / "cache"}"
key_env = "TRACE_CACHE_KEY"
open_workers = 0

[[accounts]]
name = "work"
host = "localhost"
port = {server.tls_port}
tls = "implicit"
ca_file = "{server.cert}"
username = "bob"
password_env = "TRACE_IMAP_PASSWORD"
folders = ["Traced"]
"""
    )
    return path


def main() -> int:
    os.environ.update(
        TRACE_P12_PASSWORD=PKCS12_PASSWORD, TRACE_CACHE_KEY="trace", TRACE_IMAP_PASSWORD=PASSWORD
    )
    dovecot = contextmanager(running_dovecot)
    with tempfile.TemporaryDirectory() as tmp, dovecot() as server:
        directory = Path(tmp)
        pki = make_test_pki(directory / "pki")
        server.deliver("bob", signed_mail(pki, "first"), "Traced")
        daemon = build_daemon(load_config(_config(directory, server, pki)))
        try:
            daemon.sync_once()  # the folder known; the traced pass is the incremental one
            signed = signed_mail(pki, "traced")
            head, _, _ = signed.partition(b"MIME-Version:")
            inner = signed[len(head) :]
            sealed = openssl_cms(["-encrypt", "-aes256", "-recip", pki.cert("bob"), "-crlfeol"],
                                 inner)  # fmt: skip
            server.deliver("bob", head + sealed, "Traced")
            tracer = PathTracer()
            threading.setprofile(tracer)
            sys.setprofile(tracer)
            try:
                daemon.sync_once()
            finally:
                sys.setprofile(None)
                threading.setprofile(None)
        finally:
            daemon.shutdown()
    core = [f for f in tracer.order if f.startswith("core" + os.sep)]
    print(f"{len(tracer.order)} files of ours entered ({len(core)} of them core), in order:")
    for number, name in enumerate(tracer.order, 1):
        tag = "core " if name in core else "stage"
        print(f"{number:3d}  {tag}  {name}  ({tracer.calls[name]} calls)")
    print(f"{len(tracer.reentered)} files called back by a file entered after them:")
    for name, callers in tracer.reentered.items():
        print(f"     {name}: {', '.join(sorted(callers))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

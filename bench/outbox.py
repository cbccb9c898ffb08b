"""Benchmark of the outbox with IDLE: how long from a draft landing in the outbox folder until
the SMTP server accepted the sealed message, and until the sealed copy is filed in Sent.

Run (as root: it starts a throwaway Dovecot): ``.venv/bin/python bench/outbox.py [--count 20]``

A real Dovecot and a real aiosmtpd (STARTTLS + AUTH) on loopback, a test PKI, and the daemon
(`smime-companion run`, built exactly as the command builds it) running in a thread. Each round
appends one draft from Alice to Bob over IMAP and times the two arrivals. The reference measured
in the same run is one IMAP APPEND round trip on the same server (the floor of any reaction to a
new message). Targets: median < 2 s for both latencies.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from smime_companion import keyfiles
from smime_companion.cli.daemon_cmds import build_daemon
from smime_companion.config import load_config
from smime_companion.imap.outbox_source import DEFAULT_OUTBOX_FOLDER
from smime_companion.store.certstore import CertStore, Sighting
from smime_companion.testing.dovecot import PASSWORD, Dovecot, missing_requirement
from smime_companion.testing.pki import PKCS12_PASSWORD, make_test_pki
from smime_companion.testing.smtp_sink import PASSWORD as SMTP_PASSWORD
from smime_companion.testing.smtp_sink import SmtpSink

OUTBOX = DEFAULT_OUTBOX_FOLDER  # what a config without outbox_folder uses
SENT = "Sent"
CACHE_KEY = "bench-outbox-key"


def draft(index: int) -> bytes:
    return (
        "From: alice@example.org\r\nTo: bob@example.org\r\n"
        f"Subject: bench {index}\r\nMessage-ID: <bench-{index}@example.org>\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        f"Benchmark draft {index}\r\n"
    ).encode()


def write_config(work: Path, dovecot: Dovecot, smtpd: SmtpSink, pki_dir: Path) -> Path:
    path = work / "config.toml"
    path.write_text(
        f"""
[identity]
p12 = "{pki_dir / "alice.p12"}"
p12_password_env = "BENCH_P12"
trust_anchors = ["{pki_dir / "root.pem"}"]
system_anchors = false

[cache]
path = "{work / "cache"}"
key_env = "BENCH_CACHE_KEY"

[certificates]
revocation = "off"

[[accounts]]
name = "work"
host = "127.0.0.1"
port = {dovecot.tls_port}
tls = "implicit"
ca_file = "{dovecot.cert}"
username = "alice"
password_env = "BENCH_IMAP_PW"
smtp_host = "127.0.0.1"
smtp_port = {smtpd.port}
smtp_tls = "starttls"
smtp_password_env = "BENCH_SMTP_PW"
"""
    )
    os.environ.update(
        BENCH_P12=PKCS12_PASSWORD,
        BENCH_CACHE_KEY=CACHE_KEY,
        BENCH_IMAP_PW=PASSWORD,
        BENCH_SMTP_PW=SMTP_PASSWORD,
    )
    return path


def sent_message_ids(dovecot: Dovecot) -> set[bytes]:
    imap = dovecot.client("alice")
    try:
        if not imap.folder_exists(SENT):
            return set()
        imap.select_folder(SENT, readonly=True)
        uids = imap.search(["ALL"])
        if not uids:
            return set()
        fetched = imap.fetch(uids, ["BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]"])
        return {bytes(v[b"BODY[HEADER.FIELDS (MESSAGE-ID)]"]).strip() for v in fetched.values()}
    finally:
        imap.logout()


def wait_for(condition: Callable[[], bool], timeout: float) -> float | None:
    """The perf_counter time when ``condition`` first held, or None after ``timeout`` s."""
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        if condition():
            return time.perf_counter()
        time.sleep(0.01)
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20, help="drafts to time (default 20)")
    args = parser.parse_args()
    reason = missing_requirement()
    if reason:
        print(f"bench/outbox.py: {reason}", file=sys.stderr)
        return 2

    work = Path(tempfile.mkdtemp(prefix="bench-outbox-"))
    pki = make_test_pki(work / "pki")
    dovecot = Dovecot()
    dovecot.start()
    smtpd = SmtpSink("starttls", dovecot.cert.parent)
    daemon = None
    thread = None
    try:
        dovecot.maildir("alice")
        config = write_config(work, dovecot, smtpd, pki.directory)
        with CertStore.open(work / "cache", CACHE_KEY) as store:
            cert = keyfiles.load_certificates(pki.cert("bob"))[0]
            store.record(Sighting(cert, "import", dt.datetime.now(dt.UTC), anchored=True))
        daemon = build_daemon(load_config(config))
        thread = threading.Thread(target=daemon.run, name="daemon", daemon=True)
        thread.start()
        time.sleep(3)  # the first pass, and the watchers entering IDLE

        append_times: list[float] = []
        accepted: list[float] = []
        filed: list[float] = []
        for index in range(args.count):
            before = len(smtpd.received)
            message_id = f"<bench-{index}@example.org>".encode()
            start = time.perf_counter()
            dovecot.append("alice", draft(index), OUTBOX)
            append_times.append(time.perf_counter() - start)
            got = wait_for(lambda: len(smtpd.received) > before, 30)  # noqa: B023
            done = wait_for(lambda: any(message_id in m for m in sent_message_ids(dovecot)), 30)  # noqa: B023
            if got is None or done is None:
                print(f"draft {index} was not sent within 30 s", file=sys.stderr)
                return 1
            accepted.append(got - start)
            filed.append(done - start)
    finally:
        if daemon is not None and thread is not None:
            daemon.stop.set()
            thread.join(timeout=20)
        smtpd.stop()
        dovecot.remove()

    def row(name: str, values: list[float], target: str = "") -> None:
        values = sorted(values)
        p95 = values[min(len(values) - 1, int(0.95 * len(values)))]
        print(f"{name:<44} {statistics.median(values):>9.3f} {p95:>9.3f} {target:>9}")

    print()
    title = f"measure (seconds, {args.count} drafts)"
    print(f"{title:<44} {'median':>9} {'p95':>9} {'target':>9}")
    print("-" * 74)
    row("IMAP APPEND of the draft (reference)", append_times)
    row("draft appended -> accepted by SMTP", accepted, "< 2")
    row("draft appended -> filed in Sent", filed, "< 2")
    ratio = statistics.median(filed) / statistics.median(append_times)
    print(f"(filed-in-Sent median is {ratio:.0f}x one APPEND round trip)")
    return 0 if statistics.median(accepted) < 2 and statistics.median(filed) < 2 else 1


if __name__ == "__main__":
    raise SystemExit(main())

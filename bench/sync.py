"""Benchmark of the IMAP sync: first-sync wall time beside mbsync, IDLE latency, peak memory.

Run: ``nice .venv/bin/python bench/sync.py [--messages 10000] [--samples 20] [--rounds 3]
[--only first-sync-all,latency,...] [--delivery lda,append,maildir] [--mailbox-format mdbox]
[--profile DIR]``

mbsync comes from Debian's ``isync`` (``apt-get install isync``; a bench-only tool, not in
``scripts/bootstrap``): without it the first-sync rows have no ratio. ``--profile DIR`` runs
each of our first syncs under cProfile (the main process; workers are not profiled) and keeps
the profiles there; py-spy, if installed in the venv by hand, gives the workers too.

The archive is generated once per (``--messages``, ``--smime-ratio``, ``--seed``) under
``--archive-dir`` (default ``/var/tmp/smime-companion-bench``) and hard-linked into each fresh
Dovecot, so a 1,000,000-message folder is written once, not per run. Messages are written
without fsync; the S/MIME bodies are a few templates made by ``openssl cms``, each message with
its own header (so every file is unique).

It starts a throwaway Dovecot (as the tests do, see ``tests/dovecot.py``), fills INBOX with
``--messages`` messages as Maildir files (10% S/MIME: half signed, half signed-then-encrypted by
``openssl cms`` for the test PKI; sizes from 2 KB to 2 MB, most of them small), then measures:

1. First sync: ``smime-companion run --once`` into an empty encrypted cache, with
   ``cache_all = false`` (only S/MIME bodies are downloaded) and with ``cache_all = true``
   (every body, every message opened and indexed), each beside ``mbsync`` (``FSync no``) pulling
   the same folder into a fresh Maildir in the same run. ``--rounds`` rounds alternate the two,
   each from scratch; the ratios are of the medians, ours / mbsync's (targets: <= 1.0 and
   <= 1.5).
2. Arrival-to-searchable latency: with ``smime-companion run`` in IDLE, a new S/MIME message is
   delivered and the cache is polled until ``search`` finds it; median of ``--samples``
   (target < 1 s). The clock starts when the delivery has returned (the server has the
   message). ``--delivery`` names the ways, each a row (default ``lda,maildir``):

   - ``lda`` (the target's row): Dovecot's own delivery agent, ``dovecot-lda -d alice``, as a
     server's MTA hands it mail (LMTP does the same work). It updates the folder's index as it
     saves, so a client in IDLE hears of it after Dovecot's 0.5 s notify delay (at 1,000,000
     messages a Maildir still costs Dovecot about 2 s: docs/performance.md).
   - ``append``: IMAP APPEND on a connection of its own, as another client files a message.
   - ``maildir``: the file is renamed into the Maildir's ``new/`` behind Dovecot's back (how
     the bench measured before): Dovecot then rescans the whole Maildir before it tells anyone
     (0.7 to 1.7 s at 100,000 messages, 2 to 9 s at 1,000,000 here, depending on how much of
     it is in the page cache), so this row measures that scan more than us.

   Beside each, the reference: how long Dovecot takes to tell a bare IMAP client in IDLE about
   a message delivered the same way (the server's own share of ours).
3. Peak memory: the largest resident memory of a ``run --once`` process and its opening
   workers together, sampled every 20 ms (target < 200 MB).

``--mailbox-format mdbox`` stores the folder in Dovecot's mdbox (``doveadm import`` from the
Maildir, about 100 s for 1,000,000 messages) instead of Debian's default Maildir: at 1,000,000
messages Dovecot itself takes over 2 s to notice a delivery into a Maildir (it reads the folder's
file list again), against its 0.5 s notify delay with mdbox, so the mdbox rows show our share at
that size (the ``maildir`` delivery makes no sense there).

Before the timed runs the message files are read once (page cache) and Dovecot indexes the
folder (one EXAMINE and UID SEARCH), so neither contender pays for the other's warm-up.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # tests/dovecot.py runs the server and makes the test mail

from smime_companion.config import load_config  # noqa: E402
from smime_companion.runtime import open_cache  # noqa: E402
from smime_companion.testing.pki import PKCS12_PASSWORD, TestPki, make_test_pki  # noqa: E402
from tests.dovecot import MAIL_UID, PASSWORD, Dovecot  # noqa: E402

MIN_SIZE = 2 * 1024
MAX_SIZE = 2 * 1024 * 1024
SMIME_SIZES = (2 * 1024, 8 * 1024, 32 * 1024, 128 * 1024, 512 * 1024, 2 * 1024 * 1024)
TEMPLATES_PER_SIZE = 4


def message_size(rng: random.Random, small: bool = False) -> int:
    """Sizes from 2 KB to 2 MB, skewed small like a real mailbox (mean about 40 KB): most are
    2-64 KB, 3% are 64 KB-2 MB (attachments). ``small``: 2-4 KB only, for folders whose count
    matters, not their bytes (1,000,000 messages in 3 GB rather than 28 GB)."""
    if small:
        return MIN_SIZE + rng.randrange(MIN_SIZE)
    if rng.random() < 0.03:
        return int(64 * 1024 * (MAX_SIZE / (64 * 1024)) ** rng.random())
    return int(MIN_SIZE * 32 ** (rng.random() ** 1.5))


def filler(size: int, seed: int) -> bytes:
    line = (f"{seed:08d} lorem ipsum " * 8)[:76].encode() + b"\r\n"
    return (line * (size // len(line) + 1))[:size]


def openssl(*args: str | Path, data: bytes) -> bytes:
    return subprocess.run(
        ["openssl", "cms", *map(str, args)], input=data, capture_output=True, check=True
    ).stdout


def smime_template(pki: TestPki, size: int, seed: int, encrypt: bool) -> bytes:
    """An S/MIME body (MIME headers and all) from alice to bob, about ``size`` bytes."""
    entity = b"Content-Type: text/plain; charset=us-ascii\r\n\r\n" + filler(
        max(size * 3 // 4 - 3000, 200), seed
    )
    signed = openssl(
        "-sign", "-signer", pki.cert("alice"), "-inkey", pki.key("alice"),
        "-certfile", pki.intermediate, "-crlfeol", data=entity,
    )  # fmt: skip
    if not encrypt:
        return signed
    return openssl("-encrypt", "-aes256", "-recip", pki.cert("bob"), "-crlfeol", data=signed)


def headers(index: int, subject: str) -> bytes:
    return (
        f"From: alice@example.org\r\nTo: bob@example.org\r\nSubject: {subject}\r\n"
        f"Date: Wed, 25 Nov 2026 09:00:00 +0000\r\nMessage-ID: <{index}.bench@example.org>\r\n"
    ).encode()


def plain_message(index: int, size: int) -> bytes:
    head = headers(index, f"plain {index}") + b"MIME-Version: 1.0\r\n"
    if size < 16 * 1024:
        return head + b"Content-Type: text/plain; charset=us-ascii\r\n\r\n" + filler(size, index)
    # Bigger ones carry an attachment, as big mail does.
    attachment = filler(size * 3 // 4, index)
    import base64

    b64 = base64.encodebytes(attachment).replace(b"\n", b"\r\n")
    return head + (
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n'
        b"Content-Type: text/plain\r\n\r\nSee attached.\r\n--b\r\n"
        b"Content-Type: application/octet-stream; name=data.bin\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n" + b64 + b"--b--\r\n"
    )


ARCHIVE_VERSION = 1  # bump when the generated messages change


def generate(
    directory: Path, pki: TestPki, count: int, smime_ratio: float, seed: int, small: bool
) -> tuple[int, int]:
    """Write ``count`` messages as files into ``directory`` (no fsync); returns (S/MIME count,
    total bytes). The S/MIME ones are signed or signed-then-encrypted for ``pki``'s bob."""
    rng = random.Random(seed)
    templates: dict[int, list[bytes]] = {}
    for size in SMIME_SIZES[:1] if small else SMIME_SIZES:
        templates[size] = [
            smime_template(pki, size, size + i, encrypt=i % 2 == 1)
            for i in range(TEMPLATES_PER_SIZE)
        ]
    directory.mkdir(parents=True, exist_ok=True)
    smime = total = 0
    for index in range(count):
        size = message_size(rng, small)
        if rng.random() < smime_ratio:
            bucket = min(templates, key=lambda s: abs(s - size))
            raw = headers(index, f"smime {index}") + rng.choice(templates[bucket])
            smime += 1
        else:
            raw = plain_message(index, size)
        total += len(raw)
        name = f"{1700000000 + index}.M{index}P1.bench,S={len(raw)}:2,"
        with open(directory / name, "wb") as out:
            out.write(raw)
    return smime, total


def archive_path(root: Path, count: int, smime_ratio: float, seed: int, small: bool) -> Path:
    size = "-small" if small else ""
    return root / f"v{ARCHIVE_VERSION}-n{count}-r{smime_ratio}-s{seed}{size}"


def fill(
    server: Dovecot, archive: Path, count: int, smime_ratio: float, seed: int, small: bool
) -> tuple[int, int, float]:
    """Hard-link the archive of these parameters (generated on first use, with its own test
    PKI, in ``archive/pki``) into alice's INBOX; returns (S/MIME count, total bytes, seconds
    spent generating, 0 when the archive was reused)."""
    summary = archive / "summary.json"
    made = 0.0
    if not summary.exists():
        shutil.rmtree(archive, ignore_errors=True)
        started = time.perf_counter()
        pki = make_test_pki(archive / "pki")
        smime, total = generate(archive / "cur", pki, count, smime_ratio, seed, small)
        summary.write_text(json.dumps({"smime": smime, "total": total}))
        made = time.perf_counter() - started
    facts = json.loads(summary.read_text())
    box = server.maildir("alice")
    os.chown(archive / "cur", MAIL_UID, MAIL_UID)
    for entry in os.scandir(archive / "cur"):
        os.chown(entry.path, MAIL_UID, MAIL_UID)
        os.link(entry.path, box / "cur" / entry.name)
    for path in (box, box / "cur"):
        os.chown(path, MAIL_UID, MAIL_UID)
    return int(facts["smime"]), int(facts["total"]), made


MAILBOX_FORMATS = ("maildir", "mdbox")


def to_mdbox(server: Dovecot) -> float:
    """Move alice's INBOX from the Maildir ``fill`` made into the mdbox the server's
    ``mail_location`` names (``doveadm import``); returns the seconds it took."""
    maildir = server.maildir("alice")
    for sub in ("new", "tmp"):
        (maildir / sub).mkdir(exist_ok=True)
        os.chown(maildir / sub, MAIL_UID, MAIL_UID)
    started = time.perf_counter()
    conf = server.dir / "dovecot.conf"
    argv = ["doveadm", "-c", str(conf), "import", "-u", "alice", f"maildir:{maildir}", "", "all"]
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"doveadm import failed ({done.returncode}): {done.stderr[-500:]}")
    shutil.rmtree(maildir)  # the files are the archive's (hard links); the mdbox has copies
    return time.perf_counter() - started


def warm_up(server: Dovecot) -> None:
    maildir = server.maildir("alice") / "cur"
    for entry in os.scandir(maildir) if maildir.exists() else ():
        with open(entry.path, "rb") as handle:
            while handle.read(1 << 20):
                pass
    imap = server.client()
    try:
        imap.select_folder("INBOX", readonly=True)
        imap._imap.uid("SEARCH", "RETURN (COUNT) ALL")  # a plain SEARCH line passes 1 MB
    finally:
        imap.logout()


def write_config(directory: Path, server: Dovecot, pki: TestPki, cache_all: bool) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "config.toml"
    path.write_text(
        f"""
[identity]
p12 = "{pki.p12("bob")}"
p12_password_env = "BENCH_P12_PASSWORD"
trust_anchors = ["{pki.root}"]
system_anchors = false

[cache]
path = "{directory / "cache"}"
key_env = "BENCH_CACHE_KEY"
cache_all = {"true" if cache_all else "false"}

[[accounts]]
name = "bench"
host = "localhost"
port = {server.tls_port}
tls = "implicit"
ca_file = "{server.cert}"
username = "alice"
password_env = "BENCH_IMAP_PASSWORD"
folders = ["INBOX"]
"""
    )
    return path


def env() -> dict[str, str]:
    return {
        **os.environ,
        "BENCH_P12_PASSWORD": PKCS12_PASSWORD,
        "BENCH_CACHE_KEY": "bench cache key",
        "BENCH_IMAP_PASSWORD": PASSWORD,
    }


def _tree_rss_kb(root: int) -> int:
    """Resident memory (KB) of ``root`` and all its descendants (the opening workers)."""
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        try:
            with open(f"/proc/{pid}/status") as status:
                total += next((int(x.split()[1]) for x in status if x.startswith("VmRSS:")), 0)
            with open(f"/proc/{pid}/task/{pid}/children") as children:
                todo.extend(int(c) for c in children.read().split())
        except (OSError, ValueError):
            continue  # it just exited
    return total


CPU_SECONDS: list[float] = []  # user + system of each timed run, its workers included


def timed(argv: list[str]) -> tuple[float, int]:
    """Run ``argv``; return (wall seconds, peak resident memory in KB of the process and its
    worker processes together, sampled every 20 ms), and note its CPU seconds (its own and
    its reaped workers') in CPU_SECONDS: on a shared machine they move less than the wall
    time. Fails loudly on a non-zero exit."""
    with tempfile.TemporaryFile() as log:  # a file, not a pipe: nobody reads while it runs
        started = time.perf_counter()
        proc = subprocess.Popen(argv, env=env(), stdout=subprocess.DEVNULL, stderr=log)
        peak = 0
        while True:
            # wait4 with WNOHANG reaps the process the moment it ends, without a thread.
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            peak = max(peak, _tree_rss_kb(proc.pid))
            time.sleep(0.02)
        wall = time.perf_counter() - started
        CPU_SECONDS.append(usage.ru_utime + usage.ru_stime)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            log.seek(0)
            err = log.read().decode(errors="replace")
            raise SystemExit(f"{argv[0]} failed ({proc.returncode}): {err[-2000:]}")
    # ru_maxrss covers the last moments between two samples (the largest single process).
    return wall, max(peak, usage.ru_maxrss)


def ours(config: Path, profile: Path | None = None) -> tuple[float, int]:
    argv = [sys.executable]
    if profile is not None:
        argv += ["-m", "cProfile", "-o", str(profile)]
    return timed(argv + ["-m", "smime_companion", "run", "--once", "--config", str(config)])


def mbsync(directory: Path, server: Dovecot) -> float | None:
    if shutil.which("mbsync") is None:
        return None
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "mail").mkdir(exist_ok=True)
    rc = directory / "mbsyncrc"
    rc.write_text(
        f"""FSync no

IMAPAccount bench
Host localhost
Port {server.tls_port}
User alice
Pass {PASSWORD}
SSLType IMAPS
CertificateFile {server.cert}

IMAPStore remote
Account bench

MaildirStore local
Path {directory / "mail"}/
Inbox {directory / "mail" / "INBOX"}

Channel bench
Far :remote:INBOX
Near :local:INBOX
Sync Pull
Create Near
SyncState *
"""
    )
    os.chmod(rc, 0o600)
    wall, _rss = timed(["mbsync", "-q", "-c", str(rc), "bench"])
    return wall


LDA = Path("/usr/lib/dovecot/dovecot-lda")
DELIVERIES = ("lda", "append", "maildir")


class Delivery:
    """Hands a message to the bench's Dovecot for alice's INBOX one way (``DELIVERIES``), each
    call returning once the server has it. ``append`` keeps a connection of its own open."""

    def __init__(self, how: str, server: Dovecot) -> None:
        self.how = how
        self.server = server
        self.imap = server.client() if how == "append" else None

    def __call__(self, raw: bytes) -> None:
        if self.how == "lda":
            # As root with -d, the LDA looks the user up over the master's auth socket and
            # switches to the mail uid; the bench's userdb allows that lookup (main).
            conf = self.server.dir / "dovecot.conf"
            argv = [str(LDA), "-c", str(conf), "-d", "alice", "-m", "INBOX"]
            done = subprocess.run(argv, input=raw, capture_output=True, timeout=60)
            if done.returncode != 0:
                err = (done.stderr or done.stdout).decode(errors="replace").strip()
                raise SystemExit(f"dovecot-lda failed ({done.returncode}): {err[-500:]}; "
                                 f"Dovecot's log: {self.server.log()[-1000:]}")  # fmt: skip
        elif self.imap is not None:
            self.imap.append("INBOX", raw)
        else:
            self.server.deliver("alice", raw)

    def close(self) -> None:
        if self.imap is not None:
            self.imap.logout()


def latency(
    config: Path,
    server: Dovecot,
    pki: TestPki,
    samples: int,
    deliveries: list[str],
    daemon_log: Path | None = None,
) -> dict[str, list[float]]:
    """For each way in ``deliveries``, the seconds from a message's delivery returning to
    ``search`` finding it in the cache, ``samples`` times, with one daemon in IDLE throughout.

    ``daemon_log``: run the daemon with ``-v`` and keep its log there, each line stamped with
    the monotonic clock, beside lines marking each delivery and each find (where the time goes:
    every IMAP command's duration is a debug line of imap/session.py)."""
    cfg = load_config(config)
    verbose = ["-v"] if daemon_log else []
    proc = subprocess.Popen(
        [sys.executable, "-m", "smime_companion", *verbose, "run", "--config", str(config)],
        env=env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE if daemon_log else subprocess.DEVNULL,
        text=True,
    )
    stamp = _stamped_log(proc, daemon_log) if daemon_log else (lambda line: None)
    results: dict[str, list[float]] = {}
    try:
        status = cfg.cache.path / "daemon-status.json"
        deadline = time.monotonic() + 1800  # a first sync of 1,000,000 comes first
        while time.monotonic() < deadline:
            try:
                data = json.loads(status.read_text())
                if data["accounts"]["bench"]["folders"]["INBOX"] == "idle":
                    break
            except (OSError, ValueError, KeyError):
                pass
            if proc.poll() is not None:
                raise SystemExit(f"the daemon exited ({proc.returncode}) before IDLE")
            time.sleep(0.1)
        else:
            raise SystemExit("the daemon never reached IDLE")
        template = smime_template(pki, 8 * 1024, 4242, encrypt=True)
        with open_cache(cfg) as cache:
            for way, how in enumerate(deliveries):
                deliver = Delivery(how, server)
                results[how] = []
                try:
                    for n in range(samples):
                        word = f"latency{way}x{n}x{random.randrange(10**9)}"
                        deliver(headers(900000 + 1000 * way + n, word) + template)
                        started = time.perf_counter()
                        stamp(f"bench: {how} {n + 1} delivered")
                        while True:
                            if cache.search(f"subject:{word}", now=dt.datetime.now(dt.UTC)):
                                break
                            if time.perf_counter() - started > 60:
                                raise SystemExit(f"{how} message {n} never became searchable")
                            time.sleep(0.005)
                        results[how].append(time.perf_counter() - started)
                        stamp(f"bench: {how} {n + 1} found")
                        print(f"  {how} {n + 1}: {results[how][-1] * 1000:.0f} ms", flush=True)
                        time.sleep(0.2)
                finally:
                    deliver.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return results


def _stamped_log(proc: subprocess.Popen[str], path: Path) -> Callable[[str], None]:
    """Copy the daemon's stderr to ``path``, each line behind the monotonic clock; returns a
    function that writes the bench's own lines the same way."""
    out = path.open("w", buffering=1)
    lock = threading.Lock()

    def stamp(line: str) -> None:
        with lock:
            out.write(f"{time.monotonic():.3f} {line.rstrip()}\n")

    def copy() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            stamp(line)

    threading.Thread(target=copy, daemon=True).start()
    return stamp


MEASURES = ("first-sync", "first-sync-all", "latency")


def server_notice(server: Dovecot, pki: TestPki, samples: int, how: str) -> list[float]:
    """The reference for the IDLE latency: seconds from a message's delivery (``how``, as in
    ``DELIVERIES``) returning to Dovecot telling a bare IMAP client in IDLE about it (the
    server's own share of ours: for a file dropped into a Maildir it rescans the folder
    first). Zero when the notice came before the delivery returned."""
    imap = server.client()
    deliver = Delivery(how, server)
    results: list[float] = []
    try:
        imap.select_folder("INBOX", readonly=True)
        template = smime_template(pki, 8 * 1024, 4243, encrypt=True)
        for n in range(samples):
            imap.idle()
            deliver(headers(950000 + 1000 * DELIVERIES.index(how) + n, f"notice{n}") + template)
            started = time.perf_counter()
            while not any(r[1] == b"EXISTS" for r in imap.idle_check(30) if len(r) > 1):
                if time.perf_counter() - started > 60:
                    raise SystemExit("Dovecot never reported the new message")
            results.append(time.perf_counter() - started)
            imap.idle_done()
            time.sleep(0.2)
    finally:
        deliver.close()
        imap.logout()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--smime-ratio", type=float, default=0.10)
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3, help="first syncs of each, medians")
    parser.add_argument(
        "--only",
        default=",".join(MEASURES),
        help="comma-separated: first-sync (cache_all = false), first-sync-all, latency",
    )
    parser.add_argument(
        "--delivery",
        default="lda,maildir",
        help="comma-separated ways a new message arrives for the latency rows: lda (Dovecot's "
        "delivery agent, the target's row), append (IMAP APPEND), maildir (a file dropped into "
        "new/, which Dovecot finds only by rescanning the folder)",
    )
    parser.add_argument("--small", action="store_true", help="messages of 2-4 KB only")
    parser.add_argument(
        "--mailbox-format",
        choices=MAILBOX_FORMATS,
        default="maildir",
        help="how Dovecot stores the folder: maildir (Debian's default) or mdbox (imported "
        "from the Maildir before the runs)",
    )
    parser.add_argument("--no-mbsync", action="store_true", help="skip the reference runs")
    parser.add_argument("--archive-dir", type=Path, default=Path("/var/tmp/smime-companion-bench"))
    parser.add_argument("--profile", type=Path, help="keep a cProfile of each first sync here")
    parser.add_argument("--daemon-log", type=Path, help="keep the latency daemon's -v log here")
    args = parser.parse_args()
    chosen = [m.strip() for m in args.only.split(",") if m.strip()]
    if unknown := set(chosen) - set(MEASURES):
        parser.error(f"unknown measurements {sorted(unknown)}; choose from {MEASURES}")
    deliveries = [d.strip() for d in args.delivery.split(",") if d.strip()]
    if not deliveries or set(deliveries) - set(DELIVERIES):
        parser.error(f"--delivery takes a comma-separated choice of {DELIVERIES}")
    if args.mailbox_format == "mdbox" and "maildir" in deliveries:
        parser.error("--delivery maildir drops files into a Maildir: not with mdbox")
    if "lda" in deliveries and not LDA.exists():
        parser.error(f"{LDA} is missing (Debian dovecot-core); choose another --delivery")
    os.environ.update(env())

    work = Path(tempfile.mkdtemp(prefix="bench-sync-"))
    server = Dovecot()
    # Dovecot's default 256 MB per process is too little for the index of a million-message
    # Maildir (the IMAP process is killed on the first SELECT).
    conf = server.dir / "dovecot.conf"
    # The delivery agent looks alice up in the userdb alone; the static userdb answers such a
    # lookup only when told that every user exists (the passdb checks the password at login).
    text = conf.read_text().replace("\n  args = uid=", "\n  args = allow_all_users=yes uid=", 1)
    if args.mailbox_format == "mdbox":
        text = text.replace("mail_location = maildir:~/Maildir", "mail_location = mdbox:~/mdbox")
    conf.write_text(text + "service imap {\n  vsz_limit = 4G\n}\n")
    try:
        archive = archive_path(
            args.archive_dir, args.messages, args.smime_ratio, args.seed, args.small
        )
        smime, total, made = fill(
            server, archive, args.messages, args.smime_ratio, args.seed, args.small
        )
        pki = TestPki(archive / "pki")  # the one the archive's S/MIME messages were made for
        print(
            f"mailbox: {args.messages} messages, {smime} S/MIME, {total / 1e6:.0f} MB "
            + (f"(made in {made:.1f} s)" if made else "(archive reused)")
        )
        started = time.perf_counter()
        server.start()
        if args.mailbox_format == "mdbox":
            print(f"imported into mdbox in {to_mdbox(server):.0f} s")
        warm_up(server)
        print(f"Dovecot indexed the folder in {time.perf_counter() - started:.1f} s")
        rows = first_syncs(args, chosen, work, server, pki)
        if rows:
            print_first_syncs(rows)
            peak = max(r[2] for r in rows) / 1024
            print(f"peak memory of run --once and its workers: {peak:.0f} MB (target < 200 MB)")
        if "latency" in chosen:
            latency_config = write_config(work / "ours-latency", server, pki, cache_all=False)
            samples = latency(
                latency_config, server, pki, args.samples, deliveries, args.daemon_log
            )
            notices = {how: server_notice(server, pki, args.samples, how) for how in deliveries}
            print_latencies(args.messages, args.mailbox_format, samples, notices)
    finally:
        server.stop()
        shutil.rmtree(server.dir, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
    return 0


def first_syncs(
    args: argparse.Namespace, chosen: list[str], work: Path, server: Dovecot, pki: TestPki
) -> list[tuple[bool, float, int, float | None, float]]:
    """The first-sync rows: (cache_all, our median wall, our peak KB, mbsync's median wall or
    None, target ratio)."""
    rows = []
    wanted = [(False, 1.0)] if "first-sync" in chosen else []
    wanted += [(True, 1.5)] if "first-sync-all" in chosen else []
    for cache_all, target in wanted:
        # Rounds alternate ours and mbsync, each from scratch, and the medians are compared:
        # on a shared machine one run of either moved by up to 50% from the next.
        walls, rsss, references = [], [], []
        for round_ in range(args.rounds):
            directory = work / f"ours-{cache_all}-{round_}"
            profile = None
            if args.profile is not None:
                args.profile.mkdir(parents=True, exist_ok=True)
                profile = args.profile / f"first-sync-{cache_all}-{round_}.prof"
            wall, rss = ours(write_config(directory, server, pki, cache_all), profile)
            walls.append(wall)
            rsss.append(rss)
            shutil.rmtree(directory)
            reference = None if args.no_mbsync else mbsync(work / f"mbsync-{cache_all}", server)
            if reference is not None:
                references.append(reference)
            shutil.rmtree(work / f"mbsync-{cache_all}", ignore_errors=True)
            ours_cpu = CPU_SECONDS[-2] if reference is not None else CPU_SECONDS[-1]
            mbsync_cpu = f", CPU {CPU_SECONDS[-1]:.1f} s" if reference is not None else ""
            print(f"  cache_all={cache_all} round {round_ + 1}: ours {wall:.2f} s "
                  f"(CPU {ours_cpu:.1f} s, {rss / 1024:.0f} MB), mbsync "
                  f"{reference if reference is None else round(reference, 2)} s{mbsync_cpu}",
                  flush=True)  # fmt: skip
        median = statistics.median(references) if references else None
        rows.append((cache_all, statistics.median(walls), max(rsss), median, target))
    return rows


def print_first_syncs(rows: list[tuple[bool, float, int, float | None, float]]) -> None:
    print()
    head = f"{'first sync':<28}{'ours s':>9}{'mbsync s':>10}{'ratio':>8}{'target':>8}"
    print(head + f"{'peak MB':>9}")
    for cache_all, wall, rss, reference, target in rows:
        ratio = f"{wall / reference:.2f}" if reference else "n/a"
        ref = f"{reference:.1f}" if reference else "absent"
        label = f"cache_all = {'true' if cache_all else 'false'}"
        print(f"{label:<28}{wall:>9.1f}{ref:>10}{ratio:>8}{'<= ' + str(target):>8}"
              f"{rss / 1024:>9.0f}")  # fmt: skip
    if rows[0][3] is None and shutil.which("mbsync") is None:
        print("mbsync is not installed (Debian: apt-get install isync): no ratio")


def print_latencies(
    messages: int, form: str, samples: dict[str, list[float]], notices: dict[str, list[float]]
) -> None:
    """The latency table: one row per way of delivery, ours beside Dovecot's notice."""
    print()
    print(f"arrival -> searchable with IDLE, {messages} messages in the folder ({form}), "
          "ms from the delivery returning (target: median < 1000 ms with lda)")  # fmt: skip
    head = f"{'delivery':<34}{'n':>4}{'median':>9}{'max':>8}{'Dovecot':>9}{'max':>8}{'ours-it':>9}"
    print(head)
    labels = {
        "lda": "lda (as a server delivers; target)",
        "append": "IMAP APPEND (another client)",
        "maildir": "file into new/ (Dovecot rescans)",
    }
    for how, ours_s in samples.items():
        ref = notices[how]
        ours_ms, ref_ms = statistics.median(ours_s) * 1000, statistics.median(ref) * 1000
        print(f"{labels[how]:<34}{len(ours_s):>4}{ours_ms:>9.0f}{max(ours_s) * 1000:>8.0f}"
              f"{ref_ms:>9.0f}{max(ref) * 1000:>8.0f}{ours_ms - ref_ms:>9.0f}")  # fmt: skip
    print("Dovecot: its IDLE notice to a bare client for a message delivered the same way "
          "(the server's share); ours-it: the difference of the medians")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())

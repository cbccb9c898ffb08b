"""The chaos campaign's world: a real Dovecot and aiosmtpd, a config file for one account, the
daemon run as a subprocess (``smime-companion run --once``) that can be SIGKILLed at any moment,
and the checks made afterwards on the cache, the outbox journal and the SMTP sink.

Shared by the CI tests in this package (small counts) and ``bench/chaos.py`` (the big counts),
so both run exactly the same scenario.
"""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from smime_companion import keyfiles
from smime_companion.store import db
from smime_companion.store.cache import MIGRATIONS, Cache, MessageSummary
from smime_companion.store.cache_reading import stored_bytes
from smime_companion.store.certstore import CertStore, Sighting
from smime_companion.testing.pki import PKCS12_PASSWORD, TestPki
from tests.dovecot import PASSWORD, Dovecot
from tests.outbox_world import OUTBOX, SENT, draft
from tests.smtpd import PASSWORD as SMTP_PASSWORD
from tests.smtpd import SmtpServer
from tests.tools import openssl_cms

FOLDER = "Chaos"
IDENTITY = "bob"  # the configured identity: mail is encrypted to bob, drafts are from bob
CORRESPONDENT = "alice"  # drafts go to alice, whose certificate is in the store
REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Secrets:
    """The secrets handed to the daemon through its environment (each unique, so a search for it
    cannot match anything else)."""

    imap_password: str = PASSWORD
    smtp_password: str = SMTP_PASSWORD
    p12_password: str = PKCS12_PASSWORD
    cache_key: str = "chaos-cache-key-7f3a9c"

    def env(self) -> dict[str, str]:
        return {
            "CHAOS_IMAP_PW": self.imap_password,
            "CHAOS_SMTP_PW": self.smtp_password,
            "CHAOS_P12_PW": self.p12_password,
            "CHAOS_CACHE_KEY": self.cache_key,
        }


@dataclass
class Setup:
    """One daemon configuration on running servers, in ``home`` (config, cache)."""

    pki: TestPki
    dovecot: Dovecot
    smtpd: SmtpServer | None
    home: Path
    secrets: Secrets = field(default_factory=Secrets)
    p12: Path | None = None  # the identity's PKCS#12 (default: the test PKI's, password "test")

    @property
    def config(self) -> Path:
        return self.home / "config.toml"

    @property
    def cache_dir(self) -> Path:
        return self.home / "cache"

    def write_config(
        self,
        folders: tuple[str, ...] = (FOLDER,),
        cache_all: bool = False,
        open_workers: int | str = "auto",
    ) -> Path:
        """Write the config: bob's PKCS#12 as identity, alice's IMAP account, SMTP if any;
        ``cache_all`` caches plain mail too; ``open_workers`` as the config takes it."""
        self.home.mkdir(parents=True, exist_ok=True)
        for folder in folders:
            self.dovecot.maildir("alice", folder)
        smtp = ""
        if self.smtpd is not None:
            smtp = (
                f'smtp_host = "127.0.0.1"\nsmtp_port = {self.smtpd.port}\n'
                'smtp_tls = "starttls"\nsmtp_password_env = "CHAOS_SMTP_PW"\n'
            )
        self.config.write_text(
            f"""
[identity]
p12 = "{self.p12 or self.pki.p12(IDENTITY)}"
p12_password_env = "CHAOS_P12_PW"
trust_anchors = ["{self.pki.root}"]
system_anchors = false

[cache]
path = "{self.cache_dir}"
key_env = "CHAOS_CACHE_KEY"
cache_all = {"true" if cache_all else "false"}
open_workers = {open_workers if isinstance(open_workers, int) else f'"{open_workers}"'}

[certificates]
revocation = "off"

[[accounts]]
name = "work"
host = "127.0.0.1"
port = {self.dovecot.tls_port}
tls = "implicit"
ca_file = "{self.dovecot.cert}"
username = "alice"
password_env = "CHAOS_IMAP_PW"
folders = {json.dumps(list(folders))}
{smtp}"""
        )
        return self.config

    def trust_correspondent(self) -> None:
        """Put alice's certificate into the certificate store, so drafts to her can be sealed."""
        with CertStore.open(self.cache_dir, self.secrets.cache_key) as store:
            cert = keyfiles.load_certificates(self.pki.cert(CORRESPONDENT))[0]
            store.record(Sighting(cert, "import", _utcnow(), anchored=True))

    def command(self, *args: str, verbose: bool = False) -> list[str]:
        flags = ["-v"] if verbose else []
        return [
            sys.executable,
            "-m",
            "smime_companion",
            *flags,
            *args,
            "--config",
            str(self.config),
        ]

    def env(self) -> dict[str, str]:
        # HOME, the XDG directories and TMPDIR inside ``home``: whatever the daemon writes
        # beside its cache lands where the secrets test searches.
        places = {
            name: str(self.home / "user" / sub)
            for name, sub in (
                ("HOME", "home"),
                ("XDG_CONFIG_HOME", "config"),
                ("XDG_STATE_HOME", "state"),
                ("XDG_CACHE_HOME", "cache"),
                ("XDG_DATA_HOME", "data"),
                ("XDG_RUNTIME_DIR", "run"),
                ("TMPDIR", "tmp"),
            )
        }
        for place in places.values():
            Path(place).mkdir(parents=True, exist_ok=True, mode=0o700)
        return {**os.environ, "PYTHONPATH": str(REPO), **places, **self.secrets.env()}

    def run_once(
        self, verbose: bool = False, timeout: float = 300
    ) -> subprocess.CompletedProcess[bytes]:
        """``smime-companion run --once`` to its end; returns the finished process."""
        return subprocess.run(
            self.command("run", "--once", verbose=verbose),
            env=self.env(),
            capture_output=True,
            timeout=timeout,
            cwd=self.home,
        )

    def start_run_once(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            self.command("run", "--once"),
            env=self.env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            cwd=self.home,
        )

    def outbox_items(self) -> list[dict[str, object]]:
        """``outbox list --json``: the journal's items."""
        proc = subprocess.run(
            self.command("outbox", "list", "--json"),
            env=self.env(),
            capture_output=True,
            timeout=60,
            check=True,
        )
        items: list[dict[str, object]] = json.loads(proc.stdout)
        return items


def _utcnow() -> dt.datetime:
    """The wall clock (the daemon under test reads it too; the harness only stamps with it)."""
    return dt.datetime.now(dt.UTC)


# -- mail for the sync trials -------------------------------------------------------------------


def fill_folder(setup: Setup, count: int, folder: str = FOLDER) -> None:
    """Deliver ``count`` distinct messages encrypted to the identity into ``folder``.

    One CMS body made by openssl serves them all (encrypting 2,000 times would cost more than
    the trial); each message has its own headers (Subject ``Chaos N``, Message-ID), so every
    raw message is distinct and can be told apart in the cache.
    """
    entity = b"Content-Type: text/plain; charset=utf-8\r\n\r\nChaos content\r\n"
    body = openssl_cms(
        ["-encrypt", "-aes256", "-recip", setup.pki.cert(IDENTITY), "-crlfeol"], entity
    )
    for n in range(count):
        headers = (
            f"From: alice@example.org\r\nTo: bob@example.org\r\nSubject: Chaos {n}\r\n"
            f"Date: Wed, 25 Nov 2026 09:00:00 +0000\r\nMessage-ID: <chaos-{n}@example.org>\r\n"
        ).encode()
        setup.dovecot.deliver("alice", headers + body, folder)


# -- killing ------------------------------------------------------------------------------------


@dataclass
class KillReport:
    """What happened in one trial: the kills made and the runs it took to finish."""

    kills: int = 0
    runs: int = 0
    finished_on_its_own: int = 0  # runs that ended before their kill came
    delays: list[float] = field(default_factory=list)


def kill_until_done(
    setup: Setup, rng: random.Random, kills: int, window: float, finish_timeout: float = 300
) -> KillReport:
    """Start ``run --once`` and SIGKILL it after a random delay in [0, ``window``] seconds,
    ``kills`` times (each a fresh start on what the last one left), then run it to its end.

    Returns the report; raises AssertionError when the last run fails.
    """
    report = KillReport()
    for _ in range(kills):
        proc = setup.start_run_once()
        delay = rng.uniform(0, window)
        report.delays.append(delay)
        report.runs += 1
        try:
            proc.wait(timeout=delay)
            report.finished_on_its_own += 1  # it was quicker than the kill
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
            report.kills += 1
        finally:
            if proc.stderr is not None:
                proc.stderr.close()
    last = setup.run_once(timeout=finish_timeout)
    report.runs += 1
    assert last.returncode == 0, last.stdout.decode() + last.stderr.decode(errors="replace")
    return report


def timed_run(setup: Setup) -> float:
    """Run ``run --once`` to its end and return its wall time (seconds)."""
    start = time.monotonic()
    proc = setup.run_once()
    assert proc.returncode == 0, proc.stdout.decode() + proc.stderr.decode(errors="replace")
    return time.monotonic() - start


# -- checks -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CacheCheck:
    """The cache's state after a trial."""

    integrity: str  # PRAGMA integrity_check's answer ("ok" when sound)
    rows: int
    per_uid: Counter[int]
    subjects: Counter[str]


def cached_summaries(setup: Setup, folder: str = FOLDER) -> dict[str, MessageSummary]:
    """The cached messages of ``folder`` by subject (each subject is unique in a trial)."""
    with Cache.open(setup.cache_dir, setup.secrets.cache_key) as cache:
        hits = cache.search(f'folder:"{folder}"', now=_utcnow())
    return {hit.subject: hit for hit in hits}


def check_cache(setup: Setup, folder: str = FOLDER) -> CacheCheck:
    """Open the cache database read-only under its key and read what a trial checks."""
    conn = db.connect(setup.cache_dir / db.DB_FILENAME, setup.secrets.cache_key, MIGRATIONS)
    try:
        integrity = "; ".join(str(r[0]) for r in conn.execute("PRAGMA integrity_check"))
        rows = [
            (uid, stored_bytes(raw, compressed))
            for uid, raw, compressed in conn.execute(
                "SELECT uid, raw, compressed FROM messages WHERE folder = ?", (folder,)
            )
        ]
    finally:
        conn.close()
    subjects: Counter[str] = Counter()
    for _, raw in rows:
        message = email.message_from_bytes(bytes(raw), policy=email.policy.compat32)
        subjects[str(message["Subject"])] += 1
    return CacheCheck(integrity, len(rows), Counter(int(uid) for uid, _ in rows), subjects)


def put_drafts(setup: Setup, count: int, tag: str) -> list[str]:
    """APPEND ``count`` drafts from the identity to alice into the outbox folder; returns their
    Message-IDs (``<tag-N@example.org>``)."""
    imap = setup.dovecot.client("alice")
    try:
        if not imap.folder_exists(OUTBOX):
            imap.create_folder(OUTBOX)
        ids = []
        for n in range(count):
            marker = f"{tag}-{n}"
            imap.append(OUTBOX, draft(setup.pki, marker, sender=IDENTITY, to=(CORRESPONDENT,)))
            ids.append(f"<{marker}@example.org>")
    finally:
        imap.logout()
    return ids


def folder_message_ids(setup: Setup, folder: str) -> list[str]:
    """The Message-ID header of every message in alice's ``folder``."""
    imap = setup.dovecot.client("alice")
    try:
        if not imap.folder_exists(folder):
            return []
        imap.select_folder(folder, readonly=True)
        uids = imap.search("ALL")
        fetched = imap.fetch(uids, ["BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]"]) if uids else {}
    finally:
        imap.logout()
    ids = []
    for data in fetched.values():
        header = data[b"BODY[HEADER.FIELDS (MESSAGE-ID)]"].decode()
        ids.append(header.split(":", 1)[1].strip())
    return ids


def delivered_ids(smtpd: SmtpServer) -> Counter[str]:
    """Message-IDs of what the SMTP sink accepted, with their counts."""
    found: Counter[str] = Counter()
    for received in smtpd.received:
        message = email.message_from_bytes(received.data, policy=email.policy.compat32)
        found[str(message["Message-ID"]).strip()] += 1
    return found


@dataclass(frozen=True)
class OutboxCheck:
    """Where each draft ended after a trial."""

    delivered: Counter[str]
    states: dict[str, str]  # journal item state by Message-ID
    still_in_outbox: list[str]
    in_sent: Counter[str]

    def lost(self, ids: list[str]) -> list[str]:
        """Drafts neither delivered nor kept (in the outbox, with an item asking the user)."""
        return [i for i in ids if self.delivered[i] == 0 and i not in self.still_in_outbox]

    def unaccounted(self, message_id: str) -> str | None:
        """What is wrong with where the draft ``message_id`` ended, or None when it is one of:
        ``done``, delivered once, filed in Sent once, gone from the outbox; or ``uncertain``
        (the kill came while it was being submitted: the server may or may not have it, at most
        once), kept in the outbox for the user to decide, not filed."""
        state = self.states.get(message_id)
        delivered, filed = self.delivered[message_id], self.in_sent[message_id]
        kept = message_id in self.still_in_outbox
        if state == "done" and delivered == 1 and filed == 1 and not kept:
            return None
        if state == "uncertain" and delivered <= 1 and filed == 0 and kept:
            return None
        return (
            f"{message_id}: state {state}, delivered {delivered}, filed {filed}, "
            f"{'still' if kept else 'not'} in the outbox"
        )

    def twice(self) -> list[str]:
        return [i for i, n in self.delivered.items() if n > 1]


def check_outbox(setup: Setup) -> OutboxCheck:
    """Read the SMTP sink, the journal and the IMAP folders after an outbox trial."""
    assert setup.smtpd is not None
    states = {}
    for item in setup.outbox_items():
        states[str(item.get("message_id"))] = str(item["state"])
    return OutboxCheck(
        delivered_ids(setup.smtpd),
        states,
        folder_message_ids(setup, OUTBOX),
        Counter(folder_message_ids(setup, SENT)),
    )


def database_files(directory: Path) -> list[Path]:
    """Every file under ``directory`` (the daemon's databases, their -wal/-shm, status file)."""
    return sorted(p for p in directory.rglob("*") if p.is_file())

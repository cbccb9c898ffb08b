"""The outbox tests' world: a real Dovecot (outbox, Sent, INBOX), a real aiosmtpd submission
server, a certificate store holding the recipients' certificates, and a journal, wired the way
``runtime.process_outbox`` wires them. Failures are injected by wrapping the real adapters: each
wrapper calls ``die`` just before or just after the real operation (raising an exception in
process, or SIGKILL in :func:`killed_pass`, run as a subprocess)."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import json
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from smime_companion import keyfiles
from smime_companion.core.model import Identity
from smime_companion.core.selection import Selection
from smime_companion.imap.outbox_source import DEFAULT_OUTBOX_FOLDER, ImapOutbox
from smime_companion.imap.session import ServerSpec
from smime_companion.outbox.pipeline import OutboxPipeline, OutboxSettings, PassReport
from smime_companion.outbox.plan import CertificateLookup, MissingCertPolicy
from smime_companion.outbox.protocols import (
    DraftRef,
    Notifier,
    OutboxSource,
    Place,
    SentFiler,
    Submitter,
)
from smime_companion.smtp import SmtpSpec, SmtpSubmitter
from smime_companion.store.certstore import CertStore, Sighting
from smime_companion.store.journal import Journal
from smime_companion.testing.pki import TestPki
from tests.dovecot import PASSWORD, Dovecot
from tests.smtpd import PASSWORD as SMTP_PASSWORD
from tests.smtpd import USERNAME as SMTP_USERNAME
from tests.smtpd import SmtpServer
from tests.tools import openssl_cms

# The names the outbox finds by itself on a server that has neither folder yet.
OUTBOX = DEFAULT_OUTBOX_FOLDER
JOURNAL_KEY = "journal-key"
SENT = "Sent"


def draft(
    pki: TestPki,
    marker: str,
    *,
    sender: str = "alice",
    to: Sequence[str] = ("bob",),
    cc: Sequence[str] = (),
    bcc: Sequence[str] = (),
    to_addresses: Sequence[str] = (),
) -> bytes:
    """A plain draft whose body holds ``marker``; recipients are test-PKI users (or addresses)."""
    lines = [
        f"From: {pki.email(sender) if '@' not in sender else sender}",
        "To: " + ", ".join([pki.email(u) for u in to] + list(to_addresses)),
    ]
    if cc:
        lines.append("Cc: " + ", ".join(pki.email(u) for u in cc))
    if bcc:
        lines.append("Bcc: " + ", ".join(pki.email(u) for u in bcc))
    lines += [
        f"Subject: Outbox test {marker}",
        f"Message-ID: <{marker}@example.org>",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=utf-8",
        "",
        f"Secret body {marker}",
        "",
    ]
    return "\r\n".join(lines).encode()


def open_as(pki: TestPki, message: bytes, user: str) -> bytes:
    """Decrypt ``message`` with ``user``'s key and verify the signature inside against the test
    root with ``openssl cms``; returns the verified content (the test fails otherwise)."""
    signed = openssl_cms(["-decrypt", "-recip", pki.cert(user), "-inkey", pki.key(user)], message)
    return openssl_cms(["-verify", "-purpose", "smimesign", "-CAfile", pki.root], signed)


def verify_signed(pki: TestPki, message: bytes) -> bytes:
    """Verify a signed (not encrypted) message with ``openssl cms``; returns its content."""
    return openssl_cms(["-verify", "-purpose", "smimesign", "-CAfile", pki.root], message)


@dataclass
class World:
    pki: TestPki
    dovecot: Dovecot
    smtpd: SmtpServer
    journal: Journal
    store: CertStore
    cache_dir: Path
    identity: Identity
    imap: ImapOutbox
    submitter: SmtpSubmitter
    now: dt.datetime
    clock_offset: dt.timedelta = field(default=dt.timedelta())

    def clock(self) -> dt.datetime:
        return self.now + self.clock_offset

    def settings(
        self, policy: MissingCertPolicy = MissingCertPolicy.HOLD, account: str = "alice"
    ) -> OutboxSettings:
        return OutboxSettings(
            account=account,
            identities=(self.identity,),
            user_address=self.pki.email("alice"),
            policy=policy,
        )

    def pipeline(
        self,
        *,
        source: OutboxSource | None = None,
        submitter: Submitter | None = None,
        filer: SentFiler | None = None,
        notifier: Notifier | None = None,
        lookup: CertificateLookup | None = None,
        policy: MissingCertPolicy = MissingCertPolicy.HOLD,
        account: str = "alice",
    ) -> OutboxPipeline:
        return OutboxPipeline(
            self.journal,
            source or self.imap,
            submitter or self.submitter,
            filer or self.imap,
            notifier or self.imap,
            lookup or self.store,
            self.settings(policy, account),
            clock=self.clock,
        )

    def run(self, **kwargs: object) -> PassReport:
        return self.pipeline(**kwargs).run_pass()  # type: ignore[arg-type]

    def put_draft(self, raw: bytes) -> int:
        return self.dovecot.append("alice", raw, OUTBOX)

    def folder(self, folder: str) -> list[bytes]:
        """Every message in an IMAP folder of alice, by UID (an absent folder is empty)."""
        imap = self.dovecot.client("alice")
        try:
            if not imap.folder_exists(folder):
                return []
            imap.select_folder(folder, readonly=True)
            uids = sorted(imap.search(["ALL"]))
            if not uids:
                return []
            data = imap.fetch(uids, ["BODY.PEEK[]", "FLAGS"])
            return [bytes(data[u][b"BODY[]"]) for u in uids]
        finally:
            imap.logout()

    def flags(self, folder: str) -> list[tuple[bytes, ...]]:
        imap = self.dovecot.client("alice")
        try:
            imap.select_folder(folder, readonly=True)
            uids = sorted(imap.search(["ALL"]))
            data = imap.fetch(uids, ["FLAGS"]) if uids else {}
            return [tuple(data[u][b"FLAGS"]) for u in uids]
        finally:
            imap.logout()

    def notices(self) -> list[str]:
        """The companion's notices in alice's INBOX: subject and decoded text of each."""
        found = []
        for raw in self.folder("INBOX"):
            message = email.message_from_bytes(raw, policy=email.policy.default)
            if message["Auto-Submitted"] == "auto-generated":
                body = message.get_body(("plain",))
                assert body is not None
                found.append(f"{message['Subject']}\n{body.get_content()}")  # type: ignore[attr-defined]
        return found


def make_world(pki: TestPki, dovecot: Dovecot, smtpd: SmtpServer) -> Iterator[World]:
    """Generator for fixtures: a world on running servers, closed after the ``yield``."""
    dovecot.maildir("alice")  # the mail home, owned by the mail uid, before any IMAP CREATE
    cache_dir = Path(tempfile.mkdtemp(prefix="smime-outbox-"))
    now = dt.datetime.now(dt.UTC)
    store = CertStore.open(cache_dir, None)
    for user in ("bob", "carol", "dave"):
        cert = keyfiles.load_certificates(pki.cert(user))[0]
        store.record(Sighting(cert, "import", now, anchored=True))
    identity = keyfiles.load_pkcs12(pki.p12("alice"), b"test")
    spec = ServerSpec(
        host="127.0.0.1",
        port=dovecot.tls_port,
        username="alice",
        secret=lambda: PASSWORD,
        tls="implicit",
        ca_file=dovecot.cert,
        timeout=10,
        name="alice",
    )
    imap = ImapOutbox(spec, None, None)  # names found on the server, as with a default config
    submitter = SmtpSubmitter(
        SmtpSpec(
            "127.0.0.1",
            smtpd.port,
            SMTP_USERNAME,
            lambda: SMTP_PASSWORD,
            tls=smtpd.tls,
            ca_file=smtpd.cert,
            timeout=10,
        )
    )
    journal = Journal.open(cache_dir, JOURNAL_KEY)
    world = World(pki, dovecot, smtpd, journal, store, cache_dir, identity, imap, submitter, now)
    try:
        yield world
    finally:
        imap.close()
        journal.close()
        store.close()
        shutil.rmtree(cache_dir, ignore_errors=True)


# -- failure injection ---------------------------------------------------------------------------

Die = Callable[[str], None]


class DyingSubmitter:
    def __init__(self, real: Submitter, after: bool, die: Die) -> None:
        self.real, self.after, self.die = real, after, die

    def submit(self, message: bytes, sender: str, recipients: Sequence[str]) -> None:
        if not self.after:
            self.die("before the submission")
        self.real.submit(message, sender, recipients)
        self.die("after the server accepted, before the journal knew")


class DyingFiler:
    def __init__(self, real: SentFiler, after: bool, die: Die) -> None:
        self.real, self.after, self.die = real, after, die

    def file_sent(self, message: bytes, message_id: str | None) -> None:
        if not self.after:
            self.die("before filing")
        self.real.file_sent(message, message_id)
        self.die("after filing, before the journal knew")


class DyingRemove:
    """The real source, dying around the removal of the draft."""

    def __init__(self, real: OutboxSource, after: bool, die: Die) -> None:
        self.real, self.after, self.die = real, after, die

    def drafts(self) -> list[DraftRef]:
        return self.real.drafts()

    def read(self, ref: str) -> bytes | None:
        return self.real.read(ref)

    def put(self, draft: bytes, place: Place) -> None:
        self.real.put(draft, place)

    def move_aside(self, ref: str, place: Place) -> str | None:
        return self.real.move_aside(ref, place)

    def remove(self, ref: str) -> None:
        if not self.after:
            self.die("before removing the draft")
        self.real.remove(ref)
        self.die("after removing the draft, before the journal knew")


class DyingLookup:
    """Dies while the draft is being planned (item ``claimed``)."""

    def __init__(self, die: Die) -> None:
        self.die = die

    def select(self, address: str, at: dt.datetime) -> Selection:
        self.die("while sealing")
        raise AssertionError("unreachable")


STEPS = (
    "sealing",
    "before-submit",
    "after-submit",
    "before-file",
    "after-file",
    "before-remove",
    "after-remove",
)


def dying_parts(world: World, step: str, die: Die) -> dict[str, object]:
    """The pipeline parts (keyword arguments of :meth:`World.run`) that die at ``step``."""
    return {
        "sealing": {"lookup": DyingLookup(die)},
        "before-submit": {"submitter": DyingSubmitter(world.submitter, False, die)},
        "after-submit": {"submitter": DyingSubmitter(world.submitter, True, die)},
        "before-file": {"filer": DyingFiler(world.imap, False, die)},
        "after-file": {"filer": DyingFiler(world.imap, True, die)},
        "before-remove": {"source": DyingRemove(world.imap, False, die)},
        "after-remove": {"source": DyingRemove(world.imap, True, die)},
    }[step]


# -- a pass in a subprocess that SIGKILLs itself ---------------------------------------------------


def killed_pass_command(world: World, step: str) -> list[str]:
    """The argv of a subprocess that runs one pass on ``world``'s servers and journal and kills
    itself with SIGKILL at ``step``."""
    params = {
        "pki": str(world.pki.directory),
        "imap_port": world.dovecot.tls_port,
        "imap_ca": str(world.dovecot.cert),
        "smtp_port": world.smtpd.port,
        "smtp_tls": world.smtpd.tls,
        "smtp_ca": str(world.smtpd.cert),
        "cache": str(world.cache_dir),
        "step": step,
    }
    code = "import sys, tests.outbox_world as w; w.killed_pass(sys.argv[1])"
    return [sys.executable, "-c", code, json.dumps(params)]


def killed_pass(params_json: str) -> None:
    """Subprocess entry point: see :func:`killed_pass_command`. Never returns normally."""
    params = json.loads(params_json)

    def die(where: str) -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    pki = TestPki(Path(params["pki"]))
    store = CertStore.open(Path(params["cache"]), None)
    journal = Journal.open(Path(params["cache"]), JOURNAL_KEY)
    spec = ServerSpec(
        "127.0.0.1", params["imap_port"], "alice", lambda: PASSWORD, tls="implicit",
        ca_file=Path(params["imap_ca"]), timeout=10, name="alice",
    )  # fmt: skip
    submitter = SmtpSubmitter(
        SmtpSpec(
            "127.0.0.1", params["smtp_port"], SMTP_USERNAME, lambda: SMTP_PASSWORD,
            tls=params["smtp_tls"], ca_file=Path(params["smtp_ca"]), timeout=10,
        )
    )  # fmt: skip
    imap = ImapOutbox(spec, None, None)  # names found on the server, as with a default config
    identity = keyfiles.load_pkcs12(pki.p12("alice"), b"test")
    world = World(pki, None, None, journal, store, Path(params["cache"]), identity, imap,  # type: ignore[arg-type]
                  submitter, dt.datetime.now(dt.UTC))  # fmt: skip
    world.run(**dying_parts(world, params["step"], die))  # type: ignore[arg-type]
    sys.exit(3)  # the step was never reached: the parent test fails on this code

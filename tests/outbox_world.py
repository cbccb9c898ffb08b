"""The outbox tests' world: a real Dovecot (outbox, Sent, INBOX), a real aiosmtpd submission
server, a certificate store holding the recipients' certificates, and a journal, wired the way
``runtime.process_outbox`` wires them. Failures are injected by wrapping the real adapters."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from smime_companion import keyfiles
from smime_companion.core.model import Identity
from smime_companion.imap.client import ServerSpec
from smime_companion.imap.outbox_source import ImapOutbox
from smime_companion.outbox.pipeline import OutboxPipeline, OutboxSettings, PassReport
from smime_companion.outbox.plan import CertificateLookup, MissingCertPolicy
from smime_companion.outbox.protocols import Notifier, OutboxSource, SentFiler, Submitter
from smime_companion.smtp import SmtpSpec, SmtpSubmitter
from smime_companion.store.certstore import CertStore, Sighting
from smime_companion.store.journal import Journal
from smime_companion.testing.pki import TestPki
from tests.dovecot import PASSWORD, Dovecot
from tests.smtpd import PASSWORD as SMTP_PASSWORD
from tests.smtpd import USERNAME as SMTP_USERNAME
from tests.smtpd import SmtpServer
from tests.tools import openssl_cms

OUTBOX = "S/MIME Outbox"
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
    imap = ImapOutbox(spec, OUTBOX, SENT)
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
    journal = Journal.open(cache_dir, "journal-key")
    world = World(pki, dovecot, smtpd, journal, store, cache_dir, identity, imap, submitter, now)
    try:
        yield world
    finally:
        imap.close()
        journal.close()
        store.close()
        shutil.rmtree(cache_dir, ignore_errors=True)

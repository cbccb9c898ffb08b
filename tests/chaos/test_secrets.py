"""No secret and no plaintext is written in the clear: after ``run --once -v`` (sync and outbox
pass) against Dovecot and aiosmtpd, every file the daemon wrote (config dir, cache dir with the
databases' -wal/-shm, status file, journal, HOME and the XDG directories it was given) and its
whole log output are searched byte for byte for the test message's plaintext marker, the IMAP,
SMTP and PKCS#12 passwords, the cache key and the identity's private key (PEM lines, DER, a prime).
Each is unique to this test, so a hit can only be a leak."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from smime_companion.testing.dovecot import Dovecot
from smime_companion.testing.pki import TestPki
from smime_companion.testing.smtp_sink import SmtpSink
from tests.chaos.harness import (
    CORRESPONDENT,
    FOLDER,
    IDENTITY,
    Secrets,
    Setup,
    check_outbox,
    database_files,
)
from tests.outbox_world import OUTBOX
from tests.tools import openssl_cms, run

pytestmark = pytest.mark.timeout(120)

MARKER = "PLAINTEXT-MARKER-q8Zr2VwX"
SECRETS = Secrets(
    imap_password="IMAP-PW-MARKER-k3Jd9sLq",
    smtp_password="SMTP-PW-MARKER-u7Fh2mNc",
    p12_password="P12-PW-MARKER-x5Tb8wRe",
    cache_key="CACHE-KEY-MARKER-g4Yp6zAa",
)


@pytest.fixture()
def servers(tmp_path: Path) -> Iterator[tuple[Dovecot, SmtpSink]]:
    dovecot = Dovecot(password=SECRETS.imap_password)
    try:
        dovecot.start()
        smtpd = SmtpSink("starttls", dovecot.cert.parent, password=SECRETS.smtp_password)
        try:
            yield dovecot, smtpd
        finally:
            smtpd.stop()
    finally:
        dovecot.remove()


def _p12_with_unique_password(pki: TestPki, directory: Path) -> Path:
    """Bob's key and certificate in a PKCS#12 under the test's own password (outside ``home``)."""
    path = directory / "identity.p12"
    run(
        ["openssl", "pkcs12", "-export", "-inkey", pki.key(IDENTITY), "-in", pki.cert(IDENTITY),
         "-passout", f"pass:{SECRETS.p12_password}", "-out", path]
    )  # fmt: skip
    return path


def _needles(pki: TestPki) -> dict[str, bytes]:
    """Every byte string that must not be found, by name."""
    key = serialization.load_pem_private_key(pki.key(IDENTITY).read_bytes(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    pkcs8 = key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    traditional = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    p = key.private_numbers().p
    found = {
        "plaintext marker": MARKER.encode(),
        "plaintext marker (base64)": base64.b64encode(MARKER.encode())[:20],
        "IMAP password": SECRETS.imap_password.encode(),
        "SMTP password": SECRETS.smtp_password.encode(),
        "PKCS#12 password": SECRETS.p12_password.encode(),
        "cache key": SECRETS.cache_key.encode(),
        "cache key (hex, as handed to SQLite)": SECRETS.cache_key.encode().hex().encode(),
        "private key DER (PKCS#8)": pkcs8,
        "private key DER (traditional)": traditional,
        "private key prime p": p.to_bytes((p.bit_length() + 7) // 8, "big"),
    }
    # Each 64-character line of the PEM body, so a partial dump is caught too.
    pem_lines = [
        line for line in pki.key(IDENTITY).read_bytes().splitlines() if b"-----" not in line
    ]
    for n, line in enumerate(pem_lines[1:-1]):  # full-length lines: long enough to be unique
        found[f"private key PEM line {n}"] = line
    return found


def test_no_file_the_daemon_writes_and_no_log_line_holds_a_secret_or_the_plaintext(
    pki: TestPki, servers: tuple[Dovecot, SmtpSink], tmp_path: Path
) -> None:
    dovecot, smtpd = servers
    setup = Setup(
        pki, dovecot, smtpd, tmp_path / "home", SECRETS, _p12_with_unique_password(pki, tmp_path)
    )
    setup.write_config()
    setup.trust_correspondent()  # the draft to alice can be sealed whatever the sync harvests
    # Incoming: signed by alice, then encrypted to bob (the identity), the marker inside.
    entity = f"Content-Type: text/plain; charset=utf-8\r\n\r\nBody {MARKER}\r\n".encode()
    signed = openssl_cms(
        ["-sign", "-signer", pki.cert(CORRESPONDENT), "-inkey", pki.key(CORRESPONDENT),
         "-certfile", pki.intermediate, "-crlfeol"], entity,
    )  # fmt: skip
    sealed = openssl_cms(["-encrypt", "-aes256", "-recip", pki.cert(IDENTITY), "-crlfeol"], signed)
    headers = (
        b"From: alice@example.org\r\nTo: bob@example.org\r\nSubject: Secret test\r\n"
        b"Message-ID: <secret@example.org>\r\n"
    )
    dovecot.deliver("alice", headers + sealed, FOLDER)
    # Outgoing: a draft from bob to alice whose body (only: a Message-ID may be logged) holds
    # the marker; it is fetched in the clear from the outbox folder and sealed.
    draft_id = "<secret-draft@example.org>"
    dovecot.append(
        "alice",
        (
            f"From: bob@example.org\r\nTo: alice@example.org\r\nSubject: Draft\r\n"
            f"Message-ID: {draft_id}\r\nMIME-Version: 1.0\r\n"
            f"Content-Type: text/plain; charset=utf-8\r\n\r\nDraft {MARKER}\r\n"
        ).encode(),
        OUTBOX,
    )

    proc = setup.run_once(verbose=True)
    assert proc.returncode == 0, proc.stdout.decode() + proc.stderr.decode(errors="replace")
    # The pass really did the work whose output is searched: the message was cached (the
    # database is non-trivial) and the draft was sealed and delivered.
    state = check_outbox(setup)
    assert state.delivered[draft_id] == 1 and state.still_in_outbox == []

    written = database_files(setup.home)
    assert any(p.name.endswith("-wal") or p.suffix == ".db" for p in written)
    haystacks = {str(p.relative_to(setup.home)): p.read_bytes() for p in written}
    haystacks["stdout"] = proc.stdout
    haystacks["stderr (-v log)"] = proc.stderr
    assert b"INFO" in proc.stderr  # the verbose log was captured

    leaks = [
        f"{name} in {where}"
        for name, needle in _needles(pki).items()
        for where, data in haystacks.items()
        if needle in data
    ]
    assert leaks == []

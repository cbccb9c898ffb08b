"""The IMAP adapter against a real Dovecot: TLS, login, folders, S/MIME detection from
BODYSTRUCTURE, read-only fetching, CONDSTORE/QRESYNC changes and IDLE."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from smime_companion.errors import ImapError
from smime_companion.imap.client import (
    ImapMailbox,
    ServerSpec,
    connect,
    is_smime_structure,
    uid_set,
)
from smime_companion.testing.pki import TestPki
from tests.dovecot import (
    PASSWORD,
    Dovecot,
    encrypted_mail,
    plain_mail,
    running_dovecot,
    signed_mail,
)


@pytest.fixture(scope="module")
def server() -> Iterator[Dovecot]:
    yield from running_dovecot()


def spec_for(
    server: Dovecot,
    *,
    tls: str = "implicit",
    ca_file: Path | None = None,
    password: str = PASSWORD,
    user: str = "alice",
) -> ServerSpec:
    port = server.tls_port if tls == "implicit" else server.port
    return ServerSpec(
        host="127.0.0.1" if tls == "plain" else "localhost",
        port=port,
        username=user,
        secret=lambda: password,
        tls=tls,
        ca_file=ca_file if ca_file is not None else (None if tls == "plain" else server.cert),
        name="test",
        timeout=10,
    )


@pytest.fixture
def mailbox(server: Dovecot) -> Iterator[ImapMailbox]:
    box = connect(spec_for(server))
    yield box
    box.close()


def test_implicit_tls_with_the_configured_ca_file_logs_in_and_enables_qresync(
    server: Dovecot,
) -> None:
    box = connect(spec_for(server))
    try:
        assert {"IDLE", "CONDSTORE", "QRESYNC"} <= box.capabilities
        assert box.qresync
    finally:
        box.close()


def test_starttls_with_the_configured_ca_file_logs_in(server: Dovecot) -> None:
    connect(spec_for(server, tls="starttls")).close()


def test_server_certificate_not_trusted_is_refused_with_one_line(
    server: Dovecot, tmp_path: Path
) -> None:
    other = tmp_path / "other-ca.pem"
    from tests.dovecot import make_tls_certificate

    other = make_tls_certificate(tmp_path / "other")
    with pytest.raises(ImapError, match="TLS certificate not trusted") as info:
        connect(spec_for(server, ca_file=other))
    assert "\n" not in str(info.value)


def test_wrong_password_is_a_login_error_that_does_not_echo_the_password() -> None:
    # A server of its own: Dovecot delays the next logins from an address after a failure.
    for server in running_dovecot():
        with pytest.raises(ImapError, match="login refused for alice") as info:
            connect(spec_for(server, password="not-the-Pa55word"))
    assert "not-the-Pa55word" not in str(info.value)


def test_unreachable_server_is_a_connect_error() -> None:
    from tests.dovecot import free_port

    spec = ServerSpec(
        host="127.0.0.1", port=free_port(), username="x", secret=lambda: "x", tls="plain"
    )
    with pytest.raises(ImapError, match="cannot connect"):
        connect(spec)


def test_folder_patterns_select_names_and_globs(server: Dovecot, mailbox: ImapMailbox) -> None:
    for folder in ("Archive/2024", "Archive/2025", "Lists"):
        server.maildir("alice", folder)
    assert mailbox.list_folders(["inbox", "Archive/*"]) == ["INBOX", "Archive/2024", "Archive/2025"]
    assert mailbox.list_folders(["Nothing*"]) == []


def test_bodystructure_tells_smime_from_plain_mail(
    server: Dovecot, mailbox: ImapMailbox, pki: TestPki
) -> None:
    folder = "Detect"
    server.deliver("alice", plain_mail("d-plain"), folder)
    server.deliver("alice", signed_mail(pki, "d-signed"), folder)
    server.deliver("alice", encrypted_mail(pki, "d-enc"), folder)
    opaque = signed_mail(pki, "d-opaque").replace(
        b"multipart/signed", b"multipart/mixed", 1
    )  # a signed-looking message that is not multipart/signed
    server.deliver("alice", opaque, folder)
    mailbox.examine(folder)
    uids = mailbox.search_uids()
    summaries = mailbox.summaries(uids)
    assert [s.smime for s in summaries] == [False, True, True, False]
    assert all(s.size > 0 and s.internaldate is not None for s in summaries)
    # The server's header search is a superset (the fake still names the PKCS#7 protocol);
    # BODYSTRUCTURE then rules it out.
    assert mailbox.search_smime_candidates() == uids[1:]
    assert mailbox.search_smime_candidates(uids[2]) == uids[2:]


def test_is_smime_structure_accepts_p7m_attachment_and_x_types() -> None:
    p7m = (b"application", b"octet-stream", (b"name", b"smime.p7m"), None, None, b"base64", 10)
    assert is_smime_structure(p7m)
    xtype = (b"application", b"x-pkcs7-mime", (b"smime-type", b"enveloped-data"))
    assert is_smime_structure(xtype)
    text = (b"text", b"plain", (b"charset", b"utf-8"), None, None, b"7bit", 10)
    assert not is_smime_structure(text)
    assert not is_smime_structure(None)


def test_fetching_bodies_does_not_mark_messages_seen(server: Dovecot, mailbox: ImapMailbox) -> None:
    folder = "ReadOnly"
    raw = plain_mail("ro")
    server.deliver("alice", raw, folder)
    mailbox.examine(folder)
    [uid] = mailbox.search_uids()
    assert mailbox.bodies([uid])[uid].replace(b"\r\n", b"\n") == raw.replace(b"\r\n", b"\n")
    assert "\\Seen" not in mailbox.flags([uid])[uid]


def test_changes_since_reports_flag_changes_and_vanished_uids(
    server: Dovecot, mailbox: ImapMailbox
) -> None:
    folder = "Changes"
    uids = [server.append("alice", plain_mail(f"c{i}"), folder) for i in range(4)]
    before = mailbox.examine(folder)
    assert before.highest_modseq is not None
    server.set_flags("alice", [uids[1]], [b"\\Flagged"], folder)
    server.expunge("alice", [uids[2]], folder)
    mailbox.examine(folder)
    changes = mailbox.changes_since(uids, before.highest_modseq)
    assert changes.vanished == {uids[2]}
    assert "\\Flagged" in changes.flags[uids[1]]
    assert uids[0] not in changes.flags


def test_search_from_a_uid_returns_only_newer_uids(server: Dovecot, mailbox: ImapMailbox) -> None:
    folder = "Newer"
    uids = [server.append("alice", plain_mail(f"n{i}"), folder) for i in range(3)]
    mailbox.examine(folder)
    assert mailbox.search_uids(uids[1]) == uids[1:]
    assert mailbox.search_uids(uids[-1] + 1) == []


def test_idle_reports_a_new_message(server: Dovecot, mailbox: ImapMailbox) -> None:
    folder = "Idle"
    server.maildir("alice", folder)
    mailbox.examine(folder)
    mailbox.idle_start()
    try:
        assert not mailbox.idle_wait(0.3)
        threading.Timer(0.2, server.append, ("alice", plain_mail("idle"), folder)).start()
        started = time.monotonic()
        assert mailbox.idle_wait(5)
        assert time.monotonic() - started < 3
    finally:
        mailbox.idle_done()


def test_uid_set_parses_ranges_and_rejects_garbage() -> None:
    assert uid_set("1:3,7,9:8") == {1, 2, 3, 7, 8, 9}
    with pytest.raises(ImapError):
        uid_set("1:x")


def test_idle_on_a_connection_the_server_dropped_raises_instead_of_waiting_forever() -> None:
    for server in running_dovecot():
        box = connect(spec_for(server))
        try:
            box.examine("INBOX")
            box.idle_start()
            server.stop()
            with pytest.raises(ImapError, match="connection closed by the server during IDLE"):
                box.idle_wait(5)
        finally:
            box.close()

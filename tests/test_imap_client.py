"""The IMAP adapter against a real Dovecot: TLS, login, folders, S/MIME detection from
BODYSTRUCTURE, read-only fetching, CONDSTORE/QRESYNC changes and IDLE."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from smime_companion.errors import AuthenticationFailed, ImapError
from smime_companion.imap.mailbox import ImapMailbox, connect
from smime_companion.imap.session import ServerSpec
from smime_companion.imap.structure import is_smime_structure, uid_set
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


def test_a_connection_dropped_during_login_is_no_refused_login() -> None:
    """A server going down while we log in (a restart) drops the connection; imapclient calls
    that a LoginError too, but it must not look like a wrong password: that would put the
    account (or a folder's watcher) on the five-minute back-off of a refused login."""
    import socket

    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = listener.accept()
        with conn, conn.makefile("rb") as lines:
            conn.sendall(b"* OK ready\r\n")
            while not (line := lines.readline()).split(b" ")[1:2] == [b"LOGIN"]:
                tag = line.split(b" ")[0]  # CAPABILITY and the like: answered
                conn.sendall(b"* CAPABILITY IMAP4rev1\r\n" + tag + b" OK done\r\n")
        # LOGIN: hung up on
        listener.close()

    threading.Thread(target=serve, daemon=True).start()
    spec = ServerSpec(
        host="127.0.0.1", port=listener.getsockname()[1], username="x", secret=lambda: "x",
        tls="plain",
    )  # fmt: skip
    with pytest.raises(ImapError, match="login failed") as info:
        connect(spec)
    assert not isinstance(info.value, AuthenticationFailed)


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
    assert list(mailbox.search_uids(uids[1])) == uids[1:]
    assert list(mailbox.search_uids(uids[-1] + 1)) == []


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


# -- the lean FETCH reader (bodies, summaries without BODYSTRUCTURE) -----------------------------

AWKWARD_MAIL = {
    "crlf": plain_mail("crlf"),
    "bare-lf": b"Subject: bare\nFrom: a@example.org\n\nline one\nline two\n",
    "8-bit": (
        b"Subject: 8bit\r\nContent-Type: text/plain; charset=latin1\r\n\r\n\xe9t\xe9 \xff\x80\r\n"
    ),
    "protocol-lookalike": (
        b"Subject: ) {5}\r\n\r\n) {5}\r\nhello\r\n* 3 EXPUNGE\r\nA001 OK done\r\n)\r\n"
    ),
    "headers-only": b"Subject: empty\r\n\r\n",
    "empty": b"",
}


def test_bodies_are_byte_for_byte_what_imapclient_reads(
    server: Dovecot, mailbox: ImapMailbox
) -> None:
    folder = "Awkward"
    for raw in AWKWARD_MAIL.values():
        server.deliver("alice", raw, folder)
    mailbox.examine(folder)
    uids = mailbox.search_uids()
    bodies = mailbox.bodies(uids)
    reference = mailbox._imap.fetch(uids, ["BODY.PEEK[]"])
    assert bodies == {uid: item[b"BODY[]"] for uid, item in reference.items()}
    by_name = dict(zip(AWKWARD_MAIL, uids, strict=True))
    for name in ("crlf", "8-bit", "protocol-lookalike", "headers-only", "empty"):
        assert bodies[by_name[name]] == AWKWARD_MAIL[name], name
    # Dovecot sends bare LF as CRLF.
    assert bodies[by_name["bare-lf"]] == AWKWARD_MAIL["bare-lf"].replace(b"\n", b"\r\n")


def test_bodies_leave_out_a_message_expunged_meanwhile_and_changes_since_still_sees_it(
    server: Dovecot, mailbox: ImapMailbox
) -> None:
    folder = "Vanishing"
    uids = [server.append("alice", plain_mail(f"v{i}"), folder) for i in range(3)]
    before = mailbox.examine(folder)
    assert before.highest_modseq is not None
    server.expunge("alice", [uids[1]], folder)  # by another session, while ours has it in view
    bodies = mailbox.bodies(uids)
    assert bodies.keys() == {uids[0], uids[2]}
    assert b"Plain v2" in bodies[uids[2]]
    # The server's VANISHED, sent during the body fetch, is kept for changes_since.
    assert mailbox.changes_since(uids, before.highest_modseq).vanished == {uids[1]}


def test_summaries_without_structure_agree_with_those_with_it_except_smime(
    server: Dovecot, mailbox: ImapMailbox, pki: TestPki
) -> None:
    folder = "Summaries"
    server.deliver("alice", plain_mail("s-plain"), folder)
    server.deliver("alice", signed_mail(pki, "s-signed"), folder)
    server.deliver("alice", encrypted_mail(pki, "s-enc"), folder)
    server.deliver("alice", plain_mail("s-flagged"), folder)
    mailbox.examine(folder)
    uids = mailbox.search_uids()
    server.set_flags("alice", uids[-1:], [b"\\Flagged", b"$Label1"], folder)
    mailbox.examine(folder)
    full = mailbox.summaries(uids)
    lean = mailbox.summaries(uids, structure=False)
    assert [s.smime for s in lean] == [None] * 4
    assert [s.smime for s in full] == [False, True, True, False]
    assert [(s.uid, s.size, s.flags, s.internaldate) for s in lean] == [
        (s.uid, s.size, s.flags, s.internaldate) for s in full
    ]
    assert {"\\Flagged", "$Label1"} <= set(lean[-1].flags)
    assert all(s.internaldate is not None and s.internaldate.tzinfo for s in lean)


def test_after_bodies_the_connection_still_searches_fetches_flags_and_idles(
    server: Dovecot, mailbox: ImapMailbox
) -> None:
    folder = "After"
    uids = [server.append("alice", plain_mail(f"a{i}"), folder) for i in range(3)]
    mailbox.examine(folder)
    assert len(mailbox.bodies(uids)) == 3
    assert list(mailbox.search_uids()) == uids
    assert set(mailbox.flags(uids)) == set(uids)
    assert len(mailbox.summaries(uids)) == 3
    assert len(mailbox.bodies(uids[:1])) == 1
    mailbox.idle_start()
    try:
        threading.Timer(0.2, server.append, ("alice", plain_mail("after-idle"), folder)).start()
        assert mailbox.idle_wait(5)
    finally:
        mailbox.idle_done()
    assert len(mailbox.search_uids()) == 4


def test_a_refused_body_fetch_is_an_error_naming_the_step_and_the_connection_goes_on(
    server: Dovecot, mailbox: ImapMailbox
) -> None:
    # No folder examined yet: Dovecot answers BAD.
    with pytest.raises(ImapError, match=r"UID FETCH BODY\.PEEK\[\] failed: BAD") as info:
        mailbox.bodies([1])
    assert str(info.value).startswith(f"test (localhost:{server.tls_port}): ")
    mailbox.examine("INBOX")
    mailbox.search_uids()


def test_a_socket_failure_inside_a_body_is_one_line_without_the_body_and_drops_the_connection(
    server: Dovecot, mailbox: ImapMailbox
) -> None:
    folder = "Broken"
    uid = server.append("alice", plain_mail("confidential-words"), folder)
    mailbox.examine(folder)
    imap = mailbox._imap._imap
    real_read = imap.read

    def failing_read(size: int) -> bytes:
        real_read(size // 2)  # part of the body arrives, then the network fails
        raise TimeoutError("timed out")

    imap.read = failing_read  # failure injection
    with pytest.raises(ImapError) as info:
        mailbox.bodies([uid])
    message = str(info.value)
    assert "UID FETCH BODY.PEEK[] 'Broken' failed: timed out" in message
    assert "\n" not in message and "confidential" not in message
    # Where the next response starts is unknown: the connection is closed, not misread.
    with pytest.raises(ImapError):
        mailbox.search_uids()

"""Read state: opening a message in the reader marks it read there and nowhere else; the IMAP
server's flags change only with ``mark_seen_on_server = true``. Against a real Dovecot, with the
mail synced by the daemon's own code."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from smime_companion import runtime
from smime_companion.cli import main
from smime_companion.config import load_config
from smime_companion.reader.server import ReaderServer
from smime_companion.testing.pki import PKCS12_PASSWORD, TestPki
from tests.dovecot import PASSWORD, Dovecot, free_port, running_dovecot
from tests.reader_world import World, encrypted, message, signed, text_entity


@pytest.fixture(scope="module")
def dovecot() -> Iterator[Dovecot]:
    yield from running_dovecot()


def _flags(dovecot: Dovecot, folder: str) -> list[tuple[bytes, ...]]:
    imap = dovecot.client("bob")
    try:
        imap.select_folder(folder, readonly=True)
        return [tuple(f) for f in imap.get_flags(imap.search()).values()]
    finally:
        imap.logout()


def _world(
    tmp_path: Path, pki: TestPki, dovecot: Dovecot, folder: str, mark: bool,
    monkeypatch: pytest.MonkeyPatch, now: dt.datetime,
) -> World:  # fmt: skip
    monkeypatch.setenv("RS_P12", PKCS12_PASSWORD)
    monkeypatch.setenv("RS_CACHE", "read state key")
    monkeypatch.setenv("RS_IMAP", PASSWORD)
    dovecot.maildir("bob", folder)
    sealed = encrypted(pki, signed(pki, "alice", text_entity("Noodles?")))
    raw = message("Alice <alice@example.org>", "Lunch", now, sealed, f"lunch-{folder}")
    dovecot.deliver("bob", raw, folder)
    path = tmp_path / "config.toml"
    path.write_text(f"""
[identity]
p12 = "{pki.p12("bob")}"
p12_password_env = "RS_P12"
trust_anchors = ["{pki.root}"]
system_anchors = false
[cache]
path = "{tmp_path / "cache"}"
key_env = "RS_CACHE"
[certificates]
revocation = "off"
[reader]
mark_seen_on_server = {"true" if mark else "false"}
[[accounts]]
name = "bob"
host = "localhost"
port = {dovecot.tls_port}
ca_file = "{dovecot.cert}"
username = "bob"
password_env = "RS_IMAP"
folders = ["{folder}"]
""")  # fmt: skip
    assert main(["sync", "--config", str(path)]) == 0
    config = load_config(path)
    context = runtime.reader_context(
        config, "read state key", kick_outbox=lambda a: None, daemon_status=lambda: None
    )
    server = ReaderServer(context, free_port())
    server.start()
    return World(config, server, now)


@pytest.mark.parametrize("mark", [False, True], ids=["default", "mark_seen_on_server"])
def test_opening_a_message_marks_it_read_here_and_on_the_server_only_when_asked(
    tmp_path: Path, pki: TestPki, dovecot: Dovecot, mark: bool,
    monkeypatch: pytest.MonkeyPatch, now: dt.datetime,
) -> None:  # fmt: skip
    folder = "MarkSeen" if mark else "KeepUnseen"
    world = _world(tmp_path, pki, dovecot, folder, mark, monkeypatch, now)
    try:
        cookie, _ = world.session()
        with runtime.open_cache(world.config) as cache:
            (hit,) = cache.search(f"folder:{folder}", now=now)
            assert cache.unread_among([hit]) == {hit.id}
        status, _, page = world.request("GET", f"/message/{hit.id}", {"Cookie": cookie})
        assert status == 200 and b"Noodles?" in page
        with runtime.open_cache(world.config) as cache:
            assert cache.unread_among([cache.summary(hit.id)]) == set()
            (count,) = [c for c in cache.folder_counts() if c.folder == folder]
            assert (count.messages, count.unread) == (1, 0)
        deadline = time.monotonic() + 10
        while mark and b"\\Seen" not in _flags(dovecot, folder)[0] and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(0 if mark else 1)
        assert (b"\\Seen" in _flags(dovecot, folder)[0]) is mark
    finally:
        world.server.stop()

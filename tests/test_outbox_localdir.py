"""A local outbox directory (``.eml`` files or a Maildir), watched with watchdog: an atomic save
(a rename into the directory) wakes the watcher, and the draft is sealed, sent, filed in the
account's Sent folder and deleted, like an IMAP draft."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from smime_companion.errors import UsageError
from smime_companion.outbox.localdir import LocalDirectory
from smime_companion.outbox.protocols import Place
from smime_companion.outbox.watch import DraftWatcher
from smime_companion.store.journal import ItemState
from smime_companion.testing.pki import TestPki
from tests.dovecot import Dovecot, running_dovecot
from tests.outbox_world import SENT, World, draft, make_world, open_as
from tests.smtpd import SmtpServer, running_smtpd


@pytest.fixture()
def dovecot() -> Iterator[Dovecot]:
    yield from running_dovecot()


@pytest.fixture()
def smtpd() -> Iterator[SmtpServer]:
    yield from running_smtpd("implicit")


@pytest.fixture()
def world(pki: TestPki, dovecot: Dovecot, smtpd: SmtpServer) -> Iterator[World]:
    yield from make_world(pki, dovecot, smtpd)


def _atomic_save(directory: Path, name: str, data: bytes) -> None:
    """Save as editors do: write a hidden temporary file, then rename it into place."""
    tmp = directory / f".{name}.tmp"
    tmp.write_bytes(data)
    os.replace(tmp, directory / name)


def test_an_atomically_saved_eml_draft_wakes_the_watcher_and_is_sent_once(
    world: World, pki: TestPki, tmp_path: Path
) -> None:
    source = LocalDirectory(tmp_path)
    with DraftWatcher(source) as watcher:
        _atomic_save(tmp_path, "letter.eml", draft(pki, "local1", to=("carol",)))
        assert watcher.wait(5.0), "the rename into the directory was not noticed"
    report = world.run(source=source, account="alice/local")
    assert report.errors == [] and len(report.done) == 1
    [got] = world.smtpd.received
    assert got.recipients == ("carol@example.org",)
    assert b"Secret body local1" in open_as(pki, got.data, "carol")
    [sent] = world.folder(SENT)
    assert b"Secret body local1" in open_as(pki, sent, "alice")
    assert not (tmp_path / "letter.eml").exists()
    assert [i.state for i in world.journal.items()] == [ItemState.DONE]


def test_a_maildir_draft_delivered_through_tmp_is_sent(
    world: World, pki: TestPki, tmp_path: Path
) -> None:
    for sub in ("tmp", "new", "cur"):
        (tmp_path / sub).mkdir()
    source = LocalDirectory(tmp_path)
    with DraftWatcher(source) as watcher:
        (tmp_path / "tmp" / "1700000000.M1P1.host").write_bytes(draft(pki, "maildir"))
        # A file in tmp/ is still being written: it is no draft yet.
        assert source.drafts() == []
        os.replace(
            tmp_path / "tmp" / "1700000000.M1P1.host", tmp_path / "new" / "1700000000.M1P1.host"
        )
        assert watcher.wait(5.0)
    world.run(source=source, account="alice/local")
    assert len(world.smtpd.received) == 1
    assert list((tmp_path / "new").iterdir()) == []


def test_temporary_hidden_and_backup_files_are_not_drafts(tmp_path: Path) -> None:
    for name in (".letter.eml.tmp", "letter.eml~", "letter.eml.part", "notes.txt", ".hidden.eml"):
        (tmp_path / name).write_bytes(b"From: a@example.org\r\n\r\nx\r\n")
    (tmp_path / "real.eml").write_bytes(b"From: a@example.org\r\n\r\nx\r\n")
    assert [d.ref for d in LocalDirectory(tmp_path).drafts()] == ["real.eml"]


def test_a_foreign_draft_is_moved_to_the_rejected_subdirectory(
    world: World, pki: TestPki, tmp_path: Path
) -> None:
    _atomic_save(tmp_path, "evil.eml", draft(pki, "evil", sender="mallory@example.net"))
    source = LocalDirectory(tmp_path)
    world.run(source=source, account="alice/local")
    assert world.smtpd.received == []
    assert not (tmp_path / "evil.eml").exists()
    assert (tmp_path / "Rejected" / "evil.eml").exists()
    assert oct((tmp_path / "Rejected").stat().st_mode & 0o777) == "0o700"
    [notice] = world.notices()
    assert "not one of your S/MIME identities" in notice


def test_a_draft_larger_than_the_limit_is_moved_aside_unread(
    world: World, pki: TestPki, tmp_path: Path
) -> None:
    big = draft(pki, "big") + b"x" * (30 * 1024 * 1024)
    _atomic_save(tmp_path, "big.eml", big)
    source = LocalDirectory(tmp_path)
    world.run(source=source, account="alice/local")
    assert world.smtpd.received == []
    assert (tmp_path / "Rejected" / "big.eml").exists()
    [notice] = world.notices()
    assert "larger than the limit" in notice


def test_a_reference_outside_the_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="outside the outbox directory"):
        LocalDirectory(tmp_path / "box").move_aside("../secret.eml", Place.HELD)

"""Files in BinHex 4.0 (core.binhex): what Macintosh mail sent as attachments, as an
``application/mac-binhex40`` part or inside a plain text body, and what old archives keep.

The blocks are made at test time by macutils' ``binhex`` and each is checked to come back whole
from its ``hexbin``: implementations we did not write on both sides.
"""

from __future__ import annotations

import binascii
import datetime as dt
import os
from pathlib import Path

import pytest
from cryptography import x509

from smime_companion.core.binhex import ALLOWANCE, MAX_FILES, Room, read_binhex, split_binhex
from smime_companion.core.open import open_message
from smime_companion.core.text import extract_text, get_part, iter_parts
from smime_companion.core.verdicts import SignatureStatus
from tests.tools import binhex_block, openssl_cms, run


def _binhexed(tmp_path: Path, data: bytes, name: str, *options: str) -> bytes:
    """``binhex -d`` of ``data`` as the Macintosh file ``name`` (``options``: ``-R`` for no
    run-length encoding), checked to come back whole from ``hexbin -d``."""
    folder = tmp_path / f"binhex-{len(list(tmp_path.iterdir()))}"
    folder.mkdir()
    (folder / name).write_bytes(data)
    block = run(["binhex", "-d", *options, name], cwd=folder)
    out = folder / "out"
    out.mkdir()
    run(["hexbin", "-d"], stdin=block, cwd=out)
    [decoded] = out.iterdir()
    assert decoded.read_bytes() == data
    return block


# A file with long runs (run-length encoded) and the run marker byte itself.
PDF_LIKE = b"%PDF-1.3\n" + b"\x00" * 700 + b"\x90\x90\x90" + os.urandom(2000) + b" " * 300


@pytest.mark.parametrize("options", [(), ("-R",)], ids=["run-length", "no-run-length"])
def test_a_mac_binhex40_part_is_the_file_it_holds(tmp_path: Path, options: tuple[str, ...]) -> None:
    block = _binhexed(tmp_path, PDF_LIKE, "Quarterly report.pdf", *options)
    message = (
        b"From: mac@example.org\r\nTo: bob@example.org\r\nSubject: Report\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n'
        b"Content-Type: text/plain\r\n\r\nThe report, as promised.\r\n--b\r\n"
        b'Content-Type: application/mac-binhex40; name="Quarterly report.pdf.hqx"\r\n'
        b"Content-Disposition: attachment\r\n\r\n" + block + b"\r\n--b--\r\n"
    )
    parts = list(iter_parts(message))
    assert [(p.number, p.mime_type, p.filename, p.is_attachment) for p in parts] == [
        (1, "text/plain", "", False),
        (2, "application/octet-stream", "Quarterly report.pdf", True),
    ]
    assert parts[1].data == PDF_LIKE
    found = get_part(message, 2)  # what `show --part 2` and the reader's download give
    assert found is not None and found.data == PDF_LIKE
    [attachment] = extract_text(message).attachments
    assert (attachment.filename, attachment.size) == ("Quarterly report.pdf", len(PDF_LIKE))


def test_a_binhex_block_in_a_text_body_is_an_attachment_and_the_text_closes_up(
    tmp_path: Path,
) -> None:
    # Eudora and Claris Emailer in plain text mode: the block between the lines of the letter.
    picture = os.urandom(1500)
    # A colon is the Mac's folder mark; a Mac file needed no extension: its type says JPEG.
    block = _binhexed(tmp_path, picture, "Photo:Beach", "-t", "JPEG")
    message = (
        b"From: mac@example.org\r\nTo: bob@example.org\r\nSubject: Holiday\r\n\r\n"
        b"Hello Bob,\r\n\r\nthe picture:\r\n" + block + b"\r\nBye.\r\n"
    )
    parts = list(iter_parts(message))
    assert [(p.mime_type, p.filename, p.is_attachment) for p in parts] == [
        ("text/plain", "", False),
        ("application/octet-stream", "Photo_Beach.jpg", True),
    ]
    assert parts[0].data.replace(b"\r\n", b"\n") == b"Hello Bob,\n\nthe picture:\n\nBye.\n"
    assert parts[1].data == picture
    assert "converted" not in extract_text(message).body


@pytest.mark.parametrize(
    ("name", "file_type", "saved_as"),
    [
        ("Budget", "XLS8", "Budget.xls"),
        ("Contract", "PDF ", "Contract.pdf"),
        ("Budget.xls", "XLS8", "Budget.xls"),  # it has one already
        ("Release v2", "TEXT", "Release v2.txt"),
        ("Game", "APPL", "Game"),  # an application: nothing to open it with elsewhere
    ],
)
def test_a_mac_file_without_an_extension_gets_the_one_its_type_stands_for(
    tmp_path: Path, name: str, file_type: str, saved_as: str
) -> None:
    block = _binhexed(tmp_path, b"data", name, "-t", file_type)
    found = read_binhex(block, Room.for_message(len(block)))
    assert found is not None and found.filename == saved_as


def test_a_binhex_file_inside_a_signed_message_keeps_the_signature_valid(
    pki, anchors: tuple[x509.Certificate, ...], now: dt.datetime, tmp_path: Path
) -> None:
    data = os.urandom(4000)
    block = _binhexed(tmp_path, data, "Budget.xls").replace(b"\n", b"\r\n")
    entity = (
        b'Content-Type: multipart/mixed; boundary="m"\r\n\r\n--m\r\n'
        b"Content-Type: text/plain\r\n\r\nAttached.\r\n--m\r\n"
        b"Content-Type: application/mac-binhex40\r\n\r\n" + block + b"\r\n--m--\r\n"
    )
    signer = ["-signer", pki.cert("alice"), "-inkey", pki.key("alice")]
    signed = openssl_cms(["-sign", *signer, "-certfile", pki.intermediate, "-crlfeol"], entity)
    message = b"From: alice@example.org\r\nTo: bob@example.org\r\nSubject: Budget\r\n" + signed
    result = open_message(message, anchors=anchors, at=now)
    assert result.signature == SignatureStatus.VALID
    [attachment] = extract_text(result.content).attachments
    assert attachment.filename == "Budget.xls"
    found = get_part(result.content, attachment.part)
    assert found is not None and found.data == data


def test_a_damaged_block_is_offered_as_it_came_and_text_stays_text(tmp_path: Path) -> None:
    block = _binhexed(tmp_path, os.urandom(600), "notes.txt")
    lines = block.split(b"\n")
    lines[3] = lines[3][:10] + (b"A" if lines[3][10:11] != b"A" else b"B") + lines[3][11:]
    damaged = b"\n".join(lines)  # the data fork's CRC no longer holds
    assert read_binhex(damaged, Room.for_message(len(damaged))) is None
    part = b'Content-Type: application/mac-binhex40; name="notes.hqx"\r\n\r\n' + damaged + b"\r\n"
    [kept] = iter_parts(part)
    assert (kept.mime_type, kept.filename, kept.data) == (
        "application/mac-binhex40",
        "notes.hqx",
        damaged + b"\r\n",
    )
    text = b"See below.\r\n" + damaged
    assert split_binhex(text, Room.for_message(len(text))) == (text, [])
    prose = b"(This file must be converted with BinHex 4.0)\r\n:says who? the old manual:\r\n"
    assert split_binhex(prose, Room.for_message(len(prose))) == (prose, [])


def test_hostile_blocks_cost_bounded_memory_and_one_pass() -> None:
    # A run-length bomb: a kilobyte of runs announcing a gigabyte is refused before expanding.
    bomb = binhex_block(b"x", 1 << 30, b"A" + b"\x90\xff" * 500)
    assert read_binhex(bomb, Room.for_message(len(bomb))) is None
    # What one message's blocks expand to together is bounded: a few megabytes and its size.
    room = Room.for_message(10_000)
    fits = ALLOWANCE // 2
    runs = b"\x00" + b"\x90\xff" * (fits // 254)
    runs += b"\x00" * (fits - 1 - fits // 254 * 254)
    half = binhex_block(b"x", fits, runs + binascii.crc_hqx(bytes(fits), 0).to_bytes(2, "big"))
    assert [read_binhex(half, room) is not None for _ in range(3)] == [True, True, False]
    # Many introductions, each before a block that never closes: one pass, no file.
    many = (b"(This file must be converted with BinHex 4.0)\r\n:" + b"A" * 60 + b"\r\n") * 20_000
    assert split_binhex(many, Room.for_message(len(many))) == (many, [])
    # Many sound blocks: the first MAX_FILES are files, the rest stays text.
    sound = binhex_block(b"x", 3, b"abc" + binascii.crc_hqx(b"abc", 0).to_bytes(2, "big"))
    text, files = split_binhex(sound * (MAX_FILES + 5), Room.for_message(0))
    assert len(files) == MAX_FILES and {f.data for f in files} == {b"abc"}
    assert text.count(b"converted with BinHex") == 5


def test_a_file_that_shrinks_far_by_run_length_encoding_is_still_read(tmp_path: Path) -> None:
    # A mostly empty document: 30 KB of zeros in a block of a few hundred characters.
    sparse = b"%PDF-1.3 " + bytes(30_000)
    block = _binhexed(tmp_path, sparse, "Form.pdf")
    assert len(block) < 1000
    found = read_binhex(block, Room.for_message(len(block)))
    assert found is not None and found.data == sparse

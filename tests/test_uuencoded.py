"""Files uuencoded inside a plain text body (core.uuencoded): what ``uuencode FILE NAME | mail``
sends, and Outlook Express, Eudora and Pegasus Mail sent in plain text mode.

The blocks are made at test time by sharutils' ``uuencode`` and the expected bytes are what its
``uudecode`` writes: implementations we did not write on both sides.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest
from cryptography import x509

from smime_companion.core.open import open_message
from smime_companion.core.text import extract_text, get_part, iter_parts
from smime_companion.core.uuencoded import MAX_FILES, split_uuencoded
from smime_companion.core.verdicts import Decryption, SignatureStatus
from tests.conftest import load_identity
from tests.tools import openssl_cms, run


def _uuencoded(tmp_path: Path, data: bytes, name: str, base64: bool = False) -> bytes:
    """``uuencode`` of ``data`` under ``name`` (``uuencode -m``, base64, with ``base64``),
    checked to come back whole from ``uudecode``."""
    source = tmp_path / "source.bin"
    source.write_bytes(data)
    block = run(["uuencode", *(["-m"] if base64 else []), source, name])
    decoded = tmp_path / "decoded.bin"
    run(["uudecode", "-o", decoded], stdin=block)
    assert decoded.read_bytes() == data
    return block


def _plain_message(body: bytes) -> bytes:
    """A mail as ``mail(1)`` sends it from a script: no MIME structure, one text body."""
    return (
        b"From: cron@example.org\r\nTo: bob@example.org\r\nSubject: Nightly report\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n" + body
    )


def test_a_uuencoded_file_is_an_attachment_and_the_text_closes_up_around_it(
    tmp_path: Path,
) -> None:
    report = os.urandom(5000)
    block = _uuencoded(tmp_path, report, "report.bin")
    message = _plain_message(b"Hello Bob,\n\nthe report:\n" + block + b"Regards,\ncron\n")
    parts = list(iter_parts(message))
    assert [(p.number, p.mime_type, p.filename, p.is_attachment) for p in parts] == [
        (1, "text/plain", "", False),
        (2, "application/octet-stream", "report.bin", True),
    ]
    assert parts[0].data == b"Hello Bob,\n\nthe report:\nRegards,\ncron\n"
    assert parts[1].data == report
    found = get_part(message, 2)  # what `show --part 2` and the reader's download give
    assert found is not None and found.data == report
    text = extract_text(message)
    assert text.body == "Hello Bob,\n\nthe report:\nRegards,\ncron\n"  # no lines of noise
    assert [(a.filename, a.size) for a in text.attachments] == [("report.bin", 5000)]


def test_every_block_is_a_file_and_mime_attachments_keep_their_numbers(tmp_path: Path) -> None:
    first, second, empty = os.urandom(700), b"col1,col2\r\n1,2\r\n", b""
    body = (
        _uuencoded(tmp_path, first, "logs/nightly.tar.gz")
        + b"and\n"
        + _uuencoded(tmp_path, second, "figures.csv")
        + _uuencoded(tmp_path, empty, "empty.txt")
    )
    message = (
        b'Subject: x\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain\r\n\r\n" + body + b"\r\n--b\r\n"
        b'Content-Type: application/pdf; name="a.pdf"\r\n\r\n%PDF-1.4\r\n--b--\r\n'
    )
    parts = list(iter_parts(message))
    # The PDF keeps number 2, as before uuencoded files were looked for (the cache stores
    # attachments and scan verdicts by number); the files follow every MIME part.
    assert [(p.number, p.filename, p.data) for p in parts[1:]] == [
        (2, "a.pdf", b"%PDF-1.4"),
        (3, "nightly.tar.gz", first),  # a directory before the name is not part of it
        (4, "figures.csv", second),
        (5, "empty.txt", empty),
    ]
    assert parts[0].data == b"and\n"


def test_a_file_uuencoded_in_base64_is_an_attachment_too(tmp_path: Path) -> None:
    # uuencode -m (POSIX): the same block in base64, between "begin-base64" and "====".
    data, empty = os.urandom(4000), b""
    block = _uuencoded(tmp_path, data, "backup.tar", base64=True)
    assert block.startswith(b"begin-base64 ") and block.endswith(b"====\n")
    body = b"Backup:\n" + block + _uuencoded(tmp_path, empty, "none", base64=True) + b"Done.\n"
    parts = list(iter_parts(_plain_message(body.replace(b"\n", b"\r\n"))))
    assert [(p.filename, p.data) for p in parts[1:]] == [("backup.tar", data), ("none", b"")]
    assert parts[0].data == b"Backup:\r\nDone.\r\n"
    # Both encodings in one body, each up to its own end line.
    mixed = _uuencoded(tmp_path, b"uu", "a") + block + _uuencoded(tmp_path, b"uu2", "b")
    assert [f.data for f in split_uuencoded(mixed)[1]] == [b"uu", data, b"uu2"]


@pytest.mark.parametrize(
    "text",
    [
        b"We begin 644 meetings a year.\nbegin 644 plans\nfor the next quarter\nend\n",
        b"> begin 644 quoted.bin\n> M86)C\n> end\n",  # a quoted block stays a quote
        b"begin 644 never-ended.bin\nM86)C9&5F9VAI:FML;6YO<'%R<W1U=G=X>7I!0D-$149'2$E*2TQ-3D]0\n",
        b"begin 644 empty-block\nend\n",
        b"begin-base64 644 notes.txt\nThese are not base64 lines.\n====\n",
        b"begin-base64 644 never-ended.bin\nAAAA\n",
    ],
    ids=["prose", "quoted", "no-end", "no-data", "base64-prose", "base64-no-end"],
)
def test_text_that_only_looks_like_a_block_stays_text(text: bytes) -> None:
    assert split_uuencoded(text) == (text, [])
    parts = list(iter_parts(_plain_message(text)))
    assert [p.data for p in parts] == [text]


def test_a_uuencoded_file_inside_a_signed_and_encrypted_message(
    pki, anchors: tuple[x509.Certificate, ...], now: dt.datetime, tmp_path: Path
) -> None:
    data = os.urandom(3000)
    entity = b"Content-Type: text/plain\r\n\r\nAttached.\r\n" + _uuencoded(
        tmp_path, data, "photo.jpg"
    ).replace(b"\n", b"\r\n")
    signer = ["-signer", pki.cert("alice"), "-inkey", pki.key("alice")]
    signed = openssl_cms(["-sign", *signer, "-certfile", pki.intermediate, "-crlfeol"], entity)
    head = b"From: alice@example.org\r\nTo: bob@example.org\r\nSubject: Photo\r\n"
    sealed = head + openssl_cms(["-encrypt", "-aes256", pki.cert("bob")], signed)
    result = open_message(sealed, identities=[load_identity(pki, "bob")], anchors=anchors, at=now)
    assert (result.decryption, result.signature) == (Decryption.OK, SignatureStatus.VALID)
    text = extract_text(result.content)
    assert text.body.strip() == "Attached." and text.preview == "Attached."
    [attachment] = text.attachments
    assert attachment.filename == "photo.jpg"
    found = get_part(result.content, attachment.part)
    assert found is not None and found.data == data


def test_hostile_blocks_cost_one_pass_and_a_bounded_number_of_files() -> None:
    data_line = b"M" + b"A" * 60 + b"\n"
    # Thousands of begin lines, each before data that a later begin line breaks, and one end:
    # each begin line is judged by reading up to the next one, never to the end again.
    many = (b"begin 644 x\n" + data_line * 20) * 20_000 + b"end\n"
    text, files = split_uuencoded(many)
    assert len(files) == 1 and len(files[0].data) == 20 * 45
    # The same in base64, and begin lines of one encoding before the end line of the other.
    base64_line = b"A" * 60 + b"\n"
    many = (b"begin 644 y\nbegin-base64 644 x\n" + base64_line * 20) * 20_000 + b"====\n"
    text, files = split_uuencoded(many)
    assert len(files) == 1 and len(files[0].data) == 20 * 45
    # Many well-formed blocks: the first MAX_FILES are files, the rest stays text.
    blocks = (b"begin 644 x\n" + data_line + b"end\n") * (MAX_FILES + 50)
    text, files = split_uuencoded(blocks)
    assert len(files) == MAX_FILES and text.count(b"begin 644 x") == 50

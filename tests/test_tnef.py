"""Outlook's winmail.dat (TNEF) is shown as the body and files inside it, also inside S/MIME.

The samples in ``tests/vectors/tnef/`` were written by Outlook and Exchange (origin and licence in
tests/interop_cases.md); Debian's ``tnef`` program, a reader we did not write, says at test time
what each one holds. A few hostile streams are assembled here by :func:`_tnef`, from the layout
in [MS-OXTNEF] 2.1.3.
"""

from __future__ import annotations

import base64
import datetime as dt
import os
import struct
from pathlib import Path

import pytest
from cryptography import x509

from smime_companion.core import tnef as tnef_module
from smime_companion.core.open import open_message
from smime_companion.core.text import extract_text, get_part, iter_parts, part_text
from smime_companion.core.tnef import is_tnef, read_tnef
from smime_companion.core.verdicts import Decryption, SignatureStatus
from smime_companion.errors import MalformedInput
from smime_companion.store import Cache, db
from tests.conftest import load_identity
from tests.test_cache import KEY, opener, store
from tests.tools import openssl_cms, run

VECTORS = Path(__file__).parent / "vectors" / "tnef"
SAMPLES = sorted(p.name for p in VECTORS.glob("*.tnef"))


def _extracted_by_tnef(sample: str, into: Path, *options: str) -> dict[str, bytes]:
    """The files Debian's ``tnef`` program writes for ``sample``; names read as Windows-1252,
    which is what Outlook wrote them in (tnef writes the bytes as they are)."""
    into.mkdir()
    run(["tnef", "-C", into, *options, "-f", VECTORS / sample], check=False)
    return {os.fsencode(p.name).decode("cp1252"): p.read_bytes() for p in into.iterdir()}


@pytest.mark.parametrize("sample", SAMPLES)
def test_each_sample_carries_the_files_the_tnef_program_extracts(
    sample: str, tmp_path: Path
) -> None:
    expected = _extracted_by_tnef(sample, tmp_path / "out")
    content = read_tnef((VECTORS / sample).read_bytes())
    assert {f.filename: f.data for f in content.files} == expected


def test_an_html_body_is_the_html_outlook_stored(tmp_path: Path) -> None:
    bodies = _extracted_by_tnef("body.tnef", tmp_path / "out", "--save-body=body", "--body-pref=h")
    content = read_tnef((VECTORS / "body.tnef").read_bytes())
    assert content.html is not None and content.text is None
    assert content.html.encode("cp1252") == bodies["body.html"]
    assert "THE BILL OF RIGHTS" in content.html


def test_a_plain_text_body_is_read_in_the_code_page_it_names() -> None:
    content = read_tnef((VECTORS / "triples.tnef").read_bytes())
    assert content.html is None
    assert content.text is not None and content.text.startswith("Sample description")


def test_an_rtf_only_body_becomes_its_text() -> None:
    content = read_tnef((VECTORS / "rtf.tnef").read_bytes())
    assert content.html is None and content.text is not None
    assert "Greg Allen" in content.text and "gallen@numega.com" in content.text


def test_html_that_outlook_wrapped_in_rtf_is_shown_as_html_with_its_inline_image() -> None:
    content = read_tnef((VECTORS / "umlaut.tnef").read_bytes())
    assert content.html is not None
    assert "cid:image003.jpg@01D2EE6A.85652C70" in content.html
    files = {f.filename: f for f in content.files}
    assert files["image003.jpg"].content_id == "image003.jpg@01D2EE6A.85652C70"
    assert files["image003.jpg"].mime_type == "image/jpeg"
    assert files["UmlautAnhang-äüö.txt"].mime_type == "application/octet-stream"


def test_a_long_file_name_wins_over_the_short_title() -> None:
    content = read_tnef((VECTORS / "long-filename.tnef").read_bytes())
    assert [f.filename for f in content.files] == ["allproductsmar2000.dat"]


def test_bytes_after_the_last_attribute_mark_it_incomplete() -> None:
    assert read_tnef((VECTORS / "two-files.tnef").read_bytes()).complete
    assert not read_tnef((VECTORS / "garbage-at-end.tnef").read_bytes()).complete


def test_what_counts_as_tnef() -> None:
    assert is_tnef("application/ms-tnef", "")
    assert is_tnef("application/vnd.ms-tnef", "x")
    assert is_tnef("application/octet-stream", "WINMAIL.DAT")
    assert not is_tnef("application/octet-stream", "winmail.txt")
    assert not is_tnef("text/plain", "winmail.dat")
    with pytest.raises(MalformedInput, match="no TNEF signature"):
        read_tnef(b"PK\x03\x04 a zip file")


# --- inside a MIME message, as Outlook sends it --------------------------------------------------


def _outlook_message(tnef: bytes, plain: str = "Plain version of the body.\r\n") -> bytes:
    """What Outlook sends for a Rich Text message: the plain text, then winmail.dat."""
    encoded = base64.encodebytes(tnef).replace(b"\n", b"\r\n")
    return (
        b"From: alice@example.org\r\nTo: bob@example.org\r\nSubject: Rich text\r\n"
        b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b1"\r\n\r\n'
        b"--b1\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n" + plain.encode() + b"\r\n"
        b'--b1\r\nContent-Type: application/ms-tnef; name="winmail.dat"\r\n'
        b'Content-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename="winmail'
        b'.dat"\r\n\r\n' + encoded + b"--b1--\r\n"
    )


def test_the_parts_of_a_message_list_what_winmail_dat_holds_in_its_place() -> None:
    message = _outlook_message((VECTORS / "umlaut.tnef").read_bytes())
    parts = list(iter_parts(message))
    assert [(p.number, p.mime_type, p.filename, p.is_attachment) for p in parts] == [
        (1, "text/plain", "", False),
        (2, "text/html", "", False),
        (3, "application/octet-stream", "TBZ PARIV GmbH.jpg", True),
        (4, "image/jpeg", "image003.jpg", True),
        (5, "application/octet-stream", "UmlautAnhang-äüö.txt", True),
    ]
    # A part number names the same file when asked for alone (what `show --part` and the
    # reader's downloads do).
    third = get_part(message, 5)
    assert third is not None and third.data == parts[4].data
    assert "winmail.dat" not in [a.filename for a in extract_text(message).attachments]


def test_winmail_dat_as_the_whole_content_is_unpacked_too() -> None:
    # Exchange can send Rich Text as nothing but the TNEF, and sign or encrypt just that.
    tnef = (VECTORS / "two-files.tnef").read_bytes()
    content = b"Content-Type: application/ms-tnef\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    parts = list(iter_parts(content + base64.encodebytes(tnef)))
    assert [(p.number, p.filename) for p in parts] == [(1, "AUTHORS"), (2, "README")]


def test_a_plain_body_repeating_the_text_beside_it_is_shown_once() -> None:
    tnef = _tnef(_attribute(1, 0x0002800C, b"Plain version\r\nof the body.\0"))
    message = _outlook_message(tnef, plain="Plain version of the body.\r\n")
    assert [p.mime_type for p in iter_parts(message)] == ["text/plain"]
    other = _outlook_message(tnef, plain="Something else entirely.\r\n")
    assert [part_text(p) for p in iter_parts(other)][1].startswith("Plain version\r\nof")


def test_winmail_dat_that_cannot_be_read_to_its_end_is_also_offered_as_it_came() -> None:
    cut = (VECTORS / "two-files.tnef").read_bytes()[:-400]  # inside README's data
    parts = list(iter_parts(_outlook_message(cut)))
    assert [p.filename for p in parts if p.is_attachment] == ["AUTHORS", "winmail.dat"]
    assert parts[-1].data == cut
    broken = list(iter_parts(_outlook_message(b"not TNEF at all")))
    assert [p.filename for p in broken if p.is_attachment] == ["winmail.dat"]


def test_winmail_dat_inside_a_signed_and_encrypted_message_opens_to_its_body_and_files(
    pki, anchors: tuple[x509.Certificate, ...], now: dt.datetime, tmp_path: Path
) -> None:
    message = _outlook_message((VECTORS / "umlaut.tnef").read_bytes())
    signer = ["-signer", pki.cert("alice"), "-inkey", pki.key("alice")]
    signed = openssl_cms(["-sign", *signer, "-certfile", pki.intermediate, "-crlfeol"], message)
    sealed = openssl_cms(["-encrypt", "-aes256", "-crlfeol", pki.cert("bob")], signed)
    result = open_message(sealed, identities=[load_identity(pki, "bob")], anchors=anchors, at=now)
    assert (result.decryption, result.signature) == (Decryption.OK, SignatureStatus.VALID)
    text = extract_text(result.content)
    assert "Umlaut" in text.body or "ä" in text.body
    expected = _extracted_by_tnef("umlaut.tnef", tmp_path / "out")
    assert {a.filename for a in text.attachments} == set(expected)
    for attachment in text.attachments:
        part = get_part(result.content, attachment.part)
        assert part is not None and part.data == expected[attachment.filename]


# --- hostile streams ---------------------------------------------------------------------------


def _attribute(level: int, ident: int, data: bytes) -> bytes:
    checksum = sum(data) & 0xFFFF
    return struct.pack("<BII", level, ident, len(data)) + data + struct.pack("<H", checksum)


def _tnef(*attributes: bytes) -> bytes:
    return struct.pack("<IH", 0x223E9F78, 0x0001) + b"".join(attributes)


def test_a_hundred_thousand_empty_attachments_give_a_bounded_number_of_parts() -> None:
    one = _attribute(2, 0x00069002, b"\0" * 14) + _attribute(2, 0x0006800F, b"")
    parts = list(iter_parts(_outlook_message(_tnef(*[one] * 100_000))))
    assert len(parts) == 2000  # MAX_PARTS: the text, then the first 1,999 files


@pytest.mark.parametrize(
    "props",
    [
        struct.pack("<I", 0xFFFFFFFF),  # four thousand million properties, none there
        struct.pack("<IHH", 1, 0x101E, 0x3707) + struct.pack("<I", 0xFFFFFFFF),  # values
        struct.pack("<IHH", 1, 0x001F, 0x3707) + struct.pack("<II", 1, 0x7FFFFFFF),  # length
        struct.pack("<IHH", 1, 0x0102, 0x8001) + b"\0" * 16 + struct.pack("<II", 1, 0xFFFFFFF0),
        struct.pack("<IHH", 1, 0x0999, 0x3707) + b"\0" * 64,  # a type of unknown size
    ],
    ids=["count", "value-count", "value-length", "name-length", "unknown-type"],
)
def test_mapi_properties_that_claim_more_than_is_there_are_read_past(props: bytes) -> None:
    stream = _tnef(
        _attribute(2, 0x00069002, b"\0" * 14),
        _attribute(2, 0x0006800F, b"the file"),
        _attribute(2, 0x00069005, props),
    )
    content = read_tnef(stream)
    assert [(f.filename, f.data) for f in content.files] == [("attachment-1", b"the file")]


def test_an_attribute_longer_than_the_stream_ends_reading_there() -> None:
    stream = _tnef(_attribute(1, 0x0002800C, b"body\0")) + struct.pack("<BII", 2, 0x9002, 1 << 31)
    content = read_tnef(stream)
    assert (content.text, content.files, content.complete) == ("body", (), False)


# --- a cache from before -----------------------------------------------------------------------


def test_a_cache_from_before_shows_and_finds_what_winmail_dat_holds_once_upgraded(
    pki, now: dt.datetime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The message as this version's predecessor cached it: winmail.dat as an attachment, its
    # body's words not indexed, and a scan verdict for part 2 (then winmail.dat).
    message = _outlook_message((VECTORS / "two-files.tnef").read_bytes(), plain="Hello.\r\n")
    directory = tmp_path / "data"
    with monkeypatch.context() as old:
        old.setattr(tnef_module, "is_tnef", lambda mime_type, filename: False)
        with Cache.open(directory, KEY) as cache:
            message_id = store(cache, message, opener(pki), now, uid=1)
            cache.record_scan(message_id, "clean", {2: "clean"})
            assert [a.filename for a in cache.attachments(message_id)] == ["winmail.dat"]
            assert cache.search("readme", now=now) == []
    conn = db._open(directory / db.DB_FILENAME, KEY, None)  # as it is, without migrating
    with conn:
        conn.execute("PRAGMA user_version = 6")
    conn.close()

    with Cache.open(directory, KEY) as cache:
        stored = cache.attachments(message_id)
        assert [(a.part, a.filename) for a in stored] == [(2, "AUTHORS"), (3, "README")]
        assert [m.id for m in cache.search("attachment:readme", now=now)] == [message_id]
        assert cache.messages_to_scan(10) == [message_id]  # scanned again: its parts changed

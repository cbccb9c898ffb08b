"""Coverage-guided fuzzing of ``core.open.open_message`` with atheris (libFuzzer for Python), and
of what the daemon and the reader do next with what it returns: the cache entry
(``core.entry_derivation.derive_entry``: text extraction, header decoding, the report) and each
inline part as the reader shows it (HTML through ``reader.html_mail.clean_html``, text through
``core.text.part_text``, invitation cards, attached pictures), and the message as ``export``
writes it (``core.export``).

Run: ``.venv/bin/python bench/fuzz_open.py [-runs=1000000] [-max_total_time=SECONDS] [-jobs=N]``
(any libFuzzer flag is passed on). atheris is bench-only: when it is missing this prints how to
install it (``.venv/bin/pip install atheris``) and exits 2.

Seeds are made at start, in a temporary directory, from the test PKI: detached and opaque signatures
by openssl (RSA, P-256, P-384 signers; one with ``-cades``), an openssl envelope for bob, signed
then encrypted, CompressedData, a message sealed by our own ``core.seal`` (signed and encrypted,
with header protection), small hostile messages (``tests/chaos/hostile.py``), and issue 14's shapes
(``tests/chaos/costly.py``, ``tests/chaos/forged.py``): certificate-graph mazes, compression nested
in compression, BER chunk floods in CompressedData, SignedData, EnvelopedData and a detached
signature, two From fields or addresses, a poison From, protected headers outside the signature, a
CBC gadget, an impostor certificate with the signer's identifier; and NIST PKITS messages
(tests/vectors/pkits) that reach certificate policy processing, name constraints on every SAN
form and the CRLs a message carries; and a signed message carrying an OCSP response (RFC
5940) that names its signer revoked. libFuzzer mutates them as bytes
(MIME-level damage: headers, boundaries, base64 line breaks); the custom mutator also decodes the
base64 CMS body of a message, mutates the DER with libFuzzer's mutator and encodes it again
(CMS-level damage that survives the base64 decoding). Plain mail of the shapes the text walk reads
(alternatives, HTML with cid images, attached messages, flowed text, legacy charsets, RFC 2047 and
RFC 2231 names, uuencode, broken base64, the older protected-headers scheme's Legacy Display
part) seeds the indexing side.

Every input is opened as bob with the test root and PKITS's root as the anchors. A finding is:
- an exception out of ``open_message`` (it must return a status or an error line, never raise),
  out of ``derive_entry`` (the daemon would cache the message unindexed, "internal error while
  indexing"), out of the reader's rendering of a part or out of the export;
- an input whose opening, indexing, rendering and export together take more than
  ``HANG_SECONDS`` (1 s) of CPU time (CPU, not wall time: the machine is shared, and a
  neighbour's load is not our cost);
- a ``valid`` signature verdict for content that is not exactly one of the seeds' signed
  contents (a mutation that changed what was signed must never verify), or beside headers that
  do not have exactly one From field holding the signer's address (the one From rule);
- memory past libFuzzer's ``-rss_limit_mb`` (2048 by default here).
Each finding stops the run with the input written to ``crash-*`` in the current directory;
defects already reported (``KNOWN_DEFECTS``) are counted, their first input written to
``known-*``, and the run goes on (``FUZZ_STOP_ON_KNOWN=1`` stops on them too).
"""

from __future__ import annotations

import atexit
import base64
import binascii
import datetime as dt
import json
import os
import random
import sys
import tempfile
import time
import traceback
import zlib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

HANG_SECONDS = 1.0

try:
    import atheris
except ImportError:
    print(
        "bench/fuzz_open.py needs atheris (bench-only, not a test dependency):\n"
        "    .venv/bin/pip install atheris\n"
        "then run it again.",
        file=sys.stderr,
    )
    sys.exit(2)

with atheris.instrument_imports(include=["smime_companion", "asn1crypto"]):
    from smime_companion.core import text as mime_text
    from smime_companion.core.cache_entry import UNREADABLE
    from smime_companion.core.entry_derivation import derive_entry
    from smime_companion.core.export import export_message
    from smime_companion.core.mime import sender_of, to_crlf
    from smime_companion.core.open import open_message
    from smime_companion.core.verdicts import SignatureStatus
    from smime_companion.reader.html_mail import InlineImage, clean_html, picture_type
    from smime_companion.reader.message_view import _bodies_of, invitations
    from smime_companion.reader.quote_folding import fold_quotes

from asn1crypto import cms  # noqa: E402
from cryptography import x509  # noqa: E402

from smime_companion import keyfiles  # noqa: E402
from smime_companion.core.cert_vocabulary import Recipient  # noqa: E402
from smime_companion.core.model import Identity  # noqa: E402
from smime_companion.core.seal import seal  # noqa: E402
from smime_companion.errors import MalformedInput  # noqa: E402
from smime_companion.testing.pki import PKCS12_PASSWORD, TestPki, make_test_pki  # noqa: E402
from tests.chaos import costly, forged, hostile  # noqa: E402
from tests.tools import (  # noqa: E402
    binhex_block,
    mime_message,
    ocsp_index_line,
    openssl_cms,
    openssl_ocsp_response,
    signed_carrying_revocation,
)

NOW = dt.datetime.now(dt.UTC)
SIGNED_TEXT = mime_message(body="Pay 100 EUR to account 1234.\r\n")


class World:
    """The identity, anchors and the seeds' signed contents, made once before fuzzing."""

    identity: Identity
    anchors: tuple[x509.Certificate, ...]
    valid_contents: set[bytes]


WORLD = World()


def _revoking_alice(pki: TestPki, directory: Path) -> bytes:
    """The test intermediate's OCSP response naming alice revoked a day ago."""
    alice = x509.load_pem_x509_certificate(pki.cert("alice").read_bytes())
    index = ocsp_index_line(
        alice.serial_number, alice.not_valid_after_utc, NOW - dt.timedelta(days=1)
    )
    key = pki.directory / "intermediate.key.pem"
    return openssl_ocsp_response(
        index, pki.intermediate, alice.serial_number, pki.intermediate, key, directory / "ocsp"
    )


def make_seeds(directory: Path) -> list[bytes]:
    """Make the seed messages (see the module docstring); fill ``WORLD``; return the seeds."""
    pki = make_test_pki(directory / "pki")
    WORLD.identity = keyfiles.load_pkcs12(pki.p12("bob"), PKCS12_PASSWORD.encode())
    pkits = REPO / "tests" / "vectors" / "pkits"
    WORLD.anchors = (
        x509.load_pem_x509_certificate(pki.root.read_bytes()),
        # NIST's PKITS root: its messages below reach policy processing and carried CRLs.
        x509.load_pem_x509_certificate((pkits / "TrustAnchorRootCertificate.pem").read_bytes()),
    )
    seeds = []
    for user in ("alice", "carol", "dave"):
        base: list[str | Path] = [
            "-signer", pki.cert(user), "-inkey", pki.key(user), "-certfile", pki.intermediate
        ]  # fmt: skip
        seeds.append(openssl_cms(["-sign", *base], SIGNED_TEXT))
        seeds.append(openssl_cms(["-sign", "-nodetach", *base], SIGNED_TEXT))
    # A signing-certificate attribute (ESS signingCertificateV2), as CAdES signers write it.
    cades = ["-sign", "-cades", "-signer", pki.cert("alice"), "-inkey", pki.key("alice")]
    seeds.append(openssl_cms([*cades, "-certfile", pki.intermediate], SIGNED_TEXT))
    encrypted = openssl_cms(["-encrypt", "-aes256", "-recip", pki.cert("bob")], SIGNED_TEXT)
    seeds.append(encrypted)
    signed = openssl_cms(
        ["-sign", "-signer", pki.cert("alice"), "-inkey", pki.key("alice"), "-crlfeol"],
        SIGNED_TEXT,
    )
    seeds.append(openssl_cms(["-encrypt", "-aes128", "-recip", pki.cert("bob")], signed))
    # CompressedData (this openssl has no zlib): asn1crypto around zlib, as a peer would send it.
    compressed = cms.ContentInfo(
        {
            "content_type": "compressed_data",
            "content": {
                "version": "v0",
                "compression_algorithm": {"algorithm": "zlib"},
                "encap_content_info": {
                    "content_type": "data",
                    "content": zlib.compress(SIGNED_TEXT),
                },
            },
        }
    )
    seeds.append(hostile.pkcs7_mime("compressed-data", compressed.dump(), "Compressed"))
    alice = keyfiles.load_pkcs12(pki.p12("alice"), PKCS12_PASSWORD.encode())
    sealed = seal(
        SIGNED_TEXT,
        signer=alice,
        recipients=[Recipient("bob@example.org", WORLD.identity.certificate)],
        at=NOW,
    )
    seeds.append(sealed.main.message)
    seeds += [
        hostile.deep_ber(50),
        hostile.many_recipients(pki, 3),
        hostile.huge_chain(pki, 3, keep_real=True),
        hostile.broken_headers_signed(pki, b"=?utf-8?B?/w==?="),
        # Issue 14: what costs work...
        costly.self_issued_maze(16, 16),
        costly.cross_certified_mesh(6, 4),
        costly.maze_beside_a_real_signer(pki),
        costly.nested_compression(2 * 1024 * 1024, layers=3),
        costly.compressed_chunk_flood(5_000),  # under parse_cms's cut size: asn1crypto's
        costly.compressed_chunk_flood(12_000),  # over it: the counted walker's
        costly.signature_value_flood(pki, 12_000),
        costly.signed_data_chunk_flood(pki, 7),
        costly.enveloped_chunk_flood(pki, 12_000, chunk=64),
        # ...and what tries to forge a verdict.
        forged.two_from_fields(pki),
        forged.two_addresses_in_from(pki),
        forged.two_from_fields_protected(pki),
        forged.poison_from_signed(pki),
        forged.protected_subject_outside_the_signature(pki),
        forged.cbc_gadget(pki)[1],
        forged.duplicate_signer_id(pki),
        forged.encrypted_message_attached(pki),
        *plain_shapes(),
        # Certificate policies, name constraints on every SAN form, CRLs carried in the message.
        *(
            (pkits / f"Signed{name}.eml").read_bytes()
            for name in (
                "ValidPolicyMappingTest1",
                "InvalidinhibitPolicyMappingTest1",
                "InvalidMappingFromanyPolicyTest7",
                "ValidRequireExplicitPolicyTest2",
                "InvalidRevokedEETest3",
                "ValiddeltaCRLTest5",
                "InvalidDNSnameConstraintsTest31",
                "ValidURInameConstraintsTest34",
                "ValidNameChainingCapitalizationTest5",
            )
        ),
        # An OCSP response the signer stapled (RFC 5940), made by openssl ocsp: alice revoked.
        signed_carrying_revocation(pki, ocsp_responses=(_revoking_alice(pki, directory),)),
        # The older protected-headers scheme's Legacy Display part, encrypted as it is sent.
        openssl_cms(["-encrypt", "-aes-256-gcm", "-recip", pki.cert("bob")], LEGACY_DISPLAY_PART),
    ]
    # The contents a valid verdict may show: whatever the untouched signed seeds open to.
    WORLD.valid_contents = set()
    for seed in seeds:
        result = open_message(seed, identities=[WORLD.identity], anchors=WORLD.anchors, at=NOW)
        if result.signature == SignatureStatus.VALID:
            WORLD.valid_contents.add(to_crlf(result.content))
    assert WORLD.valid_contents, "no seed verified: the PKI or the tools are broken"
    return seeds


LEGACY_DISPLAY_PART = (
    b"From: alice@example.org\r\nTo: bob@example.org\r\nSubject: Lunch\r\n"
    b'Content-Type: multipart/mixed; boundary="ld"; protected-headers="v1"\r\n\r\n'
    b'--ld\r\nContent-Type: text/plain; charset=us-ascii; protected-headers="v1"\r\n'
    b"Content-Disposition: inline\r\n\r\n"
    b"Subject: Lunch\r\nTo: bob@example.org,\r\n carol@example.org\r\n"
    b"\r\n--ld\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nAt noon.\r\n--ld--\r\n"
)


def plain_shapes() -> list[bytes]:
    """Unsigned mail in the shapes the text walk and the reader read (see the module docstring)."""
    head = (
        b"From: =?iso-8859-1?q?J=F6rg?= <joerg@example.org>\r\nTo: bob@example.org\r\n"
        b"Subject: =?utf-8?b?w4RwZmVs?= and more\r\nDate: Wed, 25 Nov 2026 10:00:00 +0100\r\n"
        b"Message-ID: <shape@example.org>\r\nMIME-Version: 1.0\r\n"
    )
    png = base64.b64encode(b"\x89PNG\r\n\x1a\n" + bytes(40))
    alternative = (
        b'Content-Type: multipart/alternative; boundary="alt"\r\n\r\n'
        b"--alt\r\nContent-Type: text/plain; charset=utf-8; format=flowed; delsp=yes\r\n"
        b"Content-Transfer-Encoding: quoted-printable\r\n\r\n> quoted =C3=A4 \r\nsoft \r\nend\r\n"
        b"--alt\r\nContent-Type: text/html; charset=windows-1252\r\n\r\n"
        b'<html><body><p style="color:red">Gr\xfc\xdfe</p><img src="cid:logo@x">'
        b'<a href="http://example.org/">x</a><table><tr><td>1<td>2</table></body></html>\r\n'
        b"--alt--\r\n"
    )
    related = (
        b'Content-Type: multipart/related; boundary="rel"\r\n\r\n--rel\r\n' + alternative
        + b"\r\n--rel\r\nContent-Type: image/png\r\nContent-ID: <logo@x>\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n" + png + b"\r\n--rel--\r\n"
    )  # fmt: skip
    mixed = (
        b'Content-Type: multipart/mixed; boundary="mix"\r\n\r\npreamble\r\n--mix\r\n' + related
        + b"\r\n--mix\r\nContent-Type: application/pdf\r\n"
        b"Content-Disposition: attachment; filename*0*=utf-8''R%C3%A9sum; filename*1=.pdf\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n"
        b"--mix\r\nContent-Type: message/rfc822\r\n\r\n" + head
        + b"Content-Type: text/plain; charset=koi8-r\r\n\r\n\xf0\xd2\xc9\xd7\xc5\xd4\r\n"
        b"--mix\r\nContent-Type: text/plain; name=old.txt\r\n"
        b"Content-Transfer-Encoding: x-uuencode\r\n\r\nbegin 644 old.txt\r\n#86)C\r\n`\r\nend\r\n"
        b"--mix\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        b"SGVsbG8*=garbage\r\n--mix--\r\nepilogue\r\n"
    )  # fmt: skip
    # Outlook's Rich Text mail: winmail.dat (TNEF samples Outlook wrote: an RTF-only body; a
    # plain body and two files), once in base64 and once as raw bytes, which mutations reach.
    vectors = REPO / "tests" / "vectors" / "tnef"
    outlook = (
        b'Content-Type: multipart/mixed; boundary="tn"\r\n\r\n--tn\r\n'
        b"Content-Type: text/plain\r\n\r\nPlain version.\r\n--tn\r\n"
        b'Content-Type: application/ms-tnef; name="winmail.dat"\r\nContent-Transfer-Encoding: '
    )
    in_base64 = b"base64\r\n\r\n" + base64.encodebytes((vectors / "rtf.tnef").read_bytes())
    as_bytes = b"binary\r\n\r\n" + (vectors / "two-files.tnef").read_bytes() + b"\r\n"
    invitation = (
        b'Content-Type: multipart/alternative; boundary="cal"\r\n\r\n--cal\r\n'
        b"Content-Type: text/plain\r\n\r\nLunch?\r\n--cal\r\n"
        b"Content-Type: text/calendar; method=REQUEST; charset=utf-8\r\n\r\nBEGIN:VCALENDAR\r\n"
        b'METHOD:REQUEST\r\nBEGIN:VEVENT\r\nORGANIZER;CN="M\xc3\xbcller, J":mailto:j@x\r\n'
        b"SUMMARY:Lunch\\, maybe\r\nDTSTART;TZID=Europe/Berlin:20261207T120000\r\n"
        b"LOCATION:Kantine\r\n  oben\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n--cal--\r\n"
    )
    # A file uuencoded in a plain text body, as `uuencode | mail` sends it (two blocks, one
    # of them empty), which core.uuencoded takes out of the text.
    log = b"Hello world! This is a line of log text. " * 3
    lines = b"".join(binascii.b2a_uu(log[i : i + 45]) for i in range(0, len(log), 45))
    uuencoded = (
        b"Content-Type: text/plain\r\n\r\nThe log:\r\nbegin 644 dir/log.txt\r\n"
        + lines.replace(b"\n", b"\r\n")
        + b"`\r\nend\r\nbegin 600 empty\r\n`\r\nend\r\nThanks\r\n"
    )
    # A list digest: parts without a Content-Type are messages, each headed by its fields.
    digest = (
        b'Content-Type: multipart/digest; boundary="dg"\r\n\r\n--dg\r\n\r\n'
        b"From: =?utf-8?q?J=C3=B6rg?= <j@x>\r\nSubject: One\r\n\r\nFirst.\r\n--dg\r\n"
        b"Content-Type: message/rfc822\r\n\r\nSubject: Two\r\nContent-Type: multipart/mixed; "
        b'boundary="in"\r\n\r\n--in\r\n\r\nSecond.\r\n--in--\r\n--dg--\r\n'
    )
    # An HTML body Apple Mail splits around a picture, beside its plain text, and a file
    # uuencoded in base64 (uuencode -m) in that plain text: one body with one plain form.
    split = (
        b'Content-Type: multipart/alternative; boundary="al"\r\n\r\n--al\r\n'
        b"Content-Type: text/plain\r\n\r\nBefore.\r\nbegin-base64 644 a.bin\r\nAAEC\r\n====\r\n"
        b'After.\r\n--al\r\nContent-Type: multipart/mixed; boundary="sp"\r\n\r\n--sp\r\n'
        b"Content-Type: text/html\r\n\r\n<p>Before.</p>\r\n--sp\r\nContent-Type: image/gif\r\n"
        b"Content-Disposition: inline; filename=a.gif\r\n\r\nGIF89a\r\n--sp\r\n"
        b"Content-Type: text/html\r\n\r\n<p>After.</p>\r\n--sp--\r\n--al--\r\n"
    )
    # BinHex 4.0 (core.binhex): a mac-binhex40 part with a run, and the same block in a text
    # body under a KOI8-R subject written raw (core.mime reads it in the body's charset).
    fork = b"A\x90\x05B" + binascii.crc_hqx(b"AAAAAB", 0).to_bytes(2, "big")
    hqx = binhex_block(b"a.txt", 6, fork)
    binhexed = (
        b'Content-Type: multipart/mixed; boundary="bh"\r\n\r\n--bh\r\n'
        b"Content-Type: application/mac-binhex40; name=a.hqx\r\n\r\n" + hqx + b"--bh--\r\n"
    )
    in_text = (
        b"Subject: \xf0\xd2\xc9\xd7\xc5\xd4\r\nContent-Type: text/plain; charset=koi8-r\r\n"
        b"\r\nFile:\r\n" + hqx + b"Bye\r\n"
    )
    # Text without a charset label (core.charsets guesses it): KOI8-R and ISO-2022-JP.
    unlabelled = (
        b'Content-Type: multipart/mixed; boundary="ul"\r\n\r\n--ul\r\n\r\n'
        + "Привет, посылаю отчёт за квартал.\r\n".encode("koi8-r")
        + b"--ul\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
        + "会議は明日です。\r\n".encode("iso2022_jp")
        + b"--ul--\r\n"
    )
    return [
        head + unlabelled,
        head + binhexed,
        head + in_text,
        head + split,
        head + digest,
        head + uuencoded,
        head + invitation,
        head + outlook + in_base64 + b"--tn--\r\n",
        head + outlook + as_bytes + b"--tn--\r\n",
        head + mixed,
        head + related,
        head + b"Content-Type: text/html\r\n\r\n<div><div><p>unclosed <b>bold <!-- note",
        # An HTML reply: the answered message in a Gmail quote, quoted again inside.
        head + b'Content-Type: text/html\r\n\r\n<p>Yes.</p><div class="gmail_quote">On Monday'
        b' A wrote:<blockquote type="cite"><p>Lunch?</p><blockquote>Free?\n</blockquote>'
        b"</blockquote></div>",
        head + LEGACY_DISPLAY_PART.replace(b"text/plain; charset=us", b"text/rfc822-headers; x"),
        head.replace(b"\r\n", b"\n") + b"Content-Type: text/plain; charset=iso-2022-jp\n\n"
        b"\x1b$B$3$s$K$A$O\x1b(B\n",
    ]


class Finding(Exception):
    """An input broke one of the fuzzer's rules."""


# Defects already found and reported, by (exception type, innermost function): counted and
# sampled instead of stopping the run, so the run can find the next one. FUZZ_STOP_ON_KNOWN=1
# makes them stop it like any other finding.
# None is open. Fixed so far: ("UnicodeEncodeError", "_rfc2231_text"), raw UTF-8 in an RFC 2231
# parameter (core/mime.py, commit 9102f6a); ("AttributeError", "dump"), a signed attribute value
# under universal tag 8 (core/verify.py, commit 83b90e6); ("ValueError", "_encoded_word_bytes"),
# non-ASCII inside an RFC 2047 word's base64 (core/mime.py, d5e19fd); ("ValueError", "to_json"),
# a signer certificate whose subject cannot be parsed (core/model.py, eae60f9).
KNOWN_DEFECTS: set[tuple[str, str]] = set()
KNOWN_SEEN: dict[tuple[str, str], int] = {}
STOP_ON_KNOWN = os.environ.get("FUZZ_STOP_ON_KNOWN") == "1"


def _known(exc: BaseException) -> tuple[str, str] | None:
    frames = traceback.extract_tb(exc.__traceback__)
    key = (type(exc).__name__, frames[-1].name if frames else "")
    return key if key in KNOWN_DEFECTS and not STOP_ON_KNOWN else None


def _report_known() -> None:
    for (kind, where), count in sorted(KNOWN_SEEN.items()):
        print(f"known defect {kind} in {where}: {count} inputs", file=sys.stderr)


def test_one_input(data: bytes) -> None:
    """Open ``data``, index and render what it opens to; raise :class:`Finding` on a hang or a
    valid verdict for other content (any exception from opening, indexing or rendering
    propagates: libFuzzer reports it, unless it is one of ``KNOWN_DEFECTS``, which are
    counted)."""
    start = time.process_time()
    try:
        result = open_message(data, identities=[WORLD.identity], anchors=WORLD.anchors, at=NOW)
    except Exception as exc:
        key = _known(exc)
        if key is None:
            raise
        if key not in KNOWN_SEEN:
            Path(f"known-{key[0]}-{key[1]}").write_bytes(data)
        KNOWN_SEEN[key] = KNOWN_SEEN.get(key, 0) + 1
        if KNOWN_SEEN[key] in (1, 10, 100) or KNOWN_SEEN[key] % 1000 == 0:
            # libFuzzer may end the process without Python's atexit: say it as it happens.
            print(f"known defect {key[0]} in {key[1]}: {KNOWN_SEEN[key]} inputs", file=sys.stderr)
        return
    entry = derive_entry(data, result, NOW)  # as the daemon caches it, opened or not
    if result.decryption not in UNREADABLE:
        _render(result.content)
    _export(data, entry.content if not entry.content_is_raw else data, entry.report)
    elapsed = time.process_time() - start
    if elapsed > HANG_SECONDS:
        raise Finding(f"took {elapsed:.2f} s of CPU time")
    if result.signature == SignatureStatus.VALID:
        if to_crlf(result.content) not in WORLD.valid_contents:
            raise Finding("valid verdict for content that was not signed")
        sender = sender_of(result.headers).address
        signers = {s.address for s in result.signers if s.status == SignatureStatus.VALID}
        if sender is None or sender not in signers:
            raise Finding(f"valid verdict beside From {sender!r}, not a valid signer's")


def _render(content: bytes) -> None:
    """The page's bodies and each inline part as the reader shows it (``reader.message_view``)."""
    try:
        parts = list(mime_text.iter_parts(content))
    except MalformedInput:  # the reader shows no body for content whose header is over the limit
        return
    images = {p.content_id.lower(): InlineImage(p.mime_type, p.data) for p in parts if p.content_id}
    invitations(parts)  # the meeting invitation cards
    for trusted in (True, False):  # the bodies of the page, text folded as the page folds it
        for body in _bodies_of(parts, trusted):
            fold_quotes(body.text)
    for part in parts:
        if part.mime_type == "text/html" and not part.is_attachment:
            clean_html(mime_text.decoded_text(part), images)
        elif not part.is_attachment:
            mime_text.part_text(part)
        else:
            picture_type(part.data)  # the attached pictures


def _export(raw: bytes, content: bytes | None, report_json: str) -> None:
    """The message as ``export`` and ``show --eml`` write it, with and without active content."""
    report = json.loads(report_json)
    effective = tuple((name, value) for name, value in (report.get("headers") or {}).items())
    verdict = (("X-SMIME-Companion-Signature", str(report.get("signature"))),)
    for protected in (True, False):
        export_message(raw, content, effective, verdict, integrity_protected=protected)


def _split_body(message: bytes) -> tuple[bytes, bytes] | None:
    for separator in (b"\r\n\r\n", b"\n\n"):
        head, found, body = message.partition(separator)
        if found:
            return head + separator, body
    return None


def custom_mutator(data: bytes, max_size: int, seed: int) -> bytes:
    """Half the time a byte-level mutation of the whole message; otherwise, when the body is
    base64 (a pkcs7-mime message), a mutation of the decoded DER, encoded again."""
    rng = random.Random(seed)
    if rng.random() < 0.5:
        return bytes(atheris.Mutate(data, max_size))
    parts = _split_body(data)
    if parts is None:
        return bytes(atheris.Mutate(data, max_size))
    head, body = parts
    try:
        der = base64.b64decode(body, validate=False)
    except ValueError:
        return bytes(atheris.Mutate(data, max_size))
    if not der:
        return bytes(atheris.Mutate(data, max_size))
    mutated = bytes(atheris.Mutate(der, max(len(der) * 2, 64)))
    out = head + base64.encodebytes(mutated).replace(b"\n", b"\r\n")
    return out[:max_size]


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="fuzz-open-"))
    seeds = make_seeds(work)
    corpus = work / "corpus"
    corpus.mkdir()
    for n, seed in enumerate(seeds):
        (corpus / f"seed-{n}").write_bytes(seed)
    print(f"{len(seeds)} seeds in {corpus}", file=sys.stderr, flush=True)
    argv = [sys.argv[0], *sys.argv[1:]]
    if not any(a.startswith("-rss_limit_mb") for a in argv):
        argv.append("-rss_limit_mb=2048")
    if not any(a.startswith("-max_len") for a in argv):
        argv.append("-max_len=65536")
    argv.append(str(corpus))
    atexit.register(_report_known)
    atheris.Setup(argv, test_one_input, custom_mutator=custom_mutator)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main())

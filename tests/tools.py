"""Running openssl, one of the S/MIME implementations we did not write (gpgsm and NSS cmsutil are
in ``tests/peers.py``). Each helper returns the tool's output and fails the test with its stderr."""

from __future__ import annotations

import base64
import binascii
import email.utils
import os
import subprocess
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from asn1crypto import cms
from asn1crypto import crl as asn1_crl
from asn1crypto import ocsp as asn1_ocsp

if TYPE_CHECKING:
    from smime_companion.testing.pki import TestPki


def run(
    argv: Sequence[str | Path],
    stdin: bytes | None = None,
    check: bool = True,
    cwd: Path | None = None,
) -> bytes:
    """Run a command (in ``cwd``); return stdout. On failure raise AssertionError with its
    stderr."""
    proc = subprocess.run(
        [str(a) for a in argv], input=stdin, capture_output=True, timeout=60, cwd=cwd
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(str(a) for a in argv)} failed ({proc.returncode}): "
            f"{proc.stderr.decode(errors='replace')}"
        )
    return proc.stdout


def minimal_env(**values: str) -> dict[str, str]:
    """An environment for a command under test holding only PATH and ``values``, plus what moves
    the clock in a time-moved run (scripts/test-time-moved), so the command sees the same time
    as the test that made its certificates."""
    env = {"PATH": "/usr/bin:/bin", **values}
    for name in ("LD_PRELOAD", "CLOCKSHIFT_SECONDS"):
        if name in os.environ:
            env[name] = os.environ[name]
    return env


def openssl_cms(args: Sequence[str | Path], data: bytes | None = None) -> bytes:
    """``openssl cms ARGS`` with ``data`` on stdin; returns stdout."""
    return run(["openssl", "cms", *args], stdin=data)


def ocsp_index_line(serial: int, expires: datetime, revoked: datetime | None = None) -> str:
    """One line of an OpenSSL CA index (what ``openssl ocsp -index`` answers from): the
    certificate ``serial`` is valid, or revoked at ``revoked``."""
    when = revoked.strftime("%y%m%d%H%M%SZ") if revoked else ""
    status = "R" if revoked else "V"
    return f"{status}\t{expires:%y%m%d%H%M%SZ}\t{when}\t{serial:X}\tunknown\t/CN=test\n"


def openssl_ocsp_response(
    index: str, issuer: Path, serial: int, signer: Path, signer_key: Path, work: Path
) -> bytes:
    """The DER OCSP response ``openssl ocsp`` gives as a responder, offline: about the
    certificate ``serial`` of ``issuer``, from ``index`` (lines of :func:`ocsp_index_line`),
    signed with ``signer_key`` as ``signer`` (the issuer itself, or a delegated responder,
    whose certificate it includes)."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "index.txt").write_text(index)
    request, response = work / "request.der", work / "response.der"
    run(["openssl", "ocsp", "-issuer", issuer, "-serial", hex(serial), "-no_nonce",
         "-reqout", request])  # fmt: skip
    run(["openssl", "ocsp", "-index", work / "index.txt", "-CA", issuer, "-rsigner", signer,
         "-rkey", signer_key, "-reqin", request, "-respout", response, "-ndays", "1"])  # fmt: skip
    return response.read_bytes()


def mime_message(
    body: str = "Hello Bob,\r\nthis is a test.\r\n",
    sender: str = "alice@example.org",
    to: str = "bob@example.org",
    subject: str = "Test message",
) -> bytes:
    """A small plain-text MIME message with CRLF line ends, dated now: a peer signs it now,
    and a Date far from the signing time is a warning of its own (date-mismatch)."""
    date = email.utils.format_datetime(datetime.now(UTC).replace(microsecond=0))
    return (
        f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\n"
        f"Date: {date}\r\nMessage-ID: <test@example.org>\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        f"{body}"
    ).encode()


_BINHEX_TABLE = bytes.maketrans(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
    b"!\"#$%&'()*+,-012345689@ABCDEFGHIJKLMNPQRSTUVXYZ[`abcdefhijklmpqr",
)


def binhex_block(name: bytes, data_length: int, stream: bytes) -> bytes:
    """A BinHex 4.0 block assembled by hand, for shapes macutils' ``binhex`` never writes: a
    header naming ``name`` (type TEXT) and announcing ``data_length`` bytes, its CRC, then
    ``stream`` as it is (the data fork, run-length encoded or not, with its CRC or not)."""
    header = bytes([len(name)]) + name + b"\x00TEXTMACA\x00\x00"
    header += data_length.to_bytes(4, "big") + bytes(4)
    raw = header + binascii.crc_hqx(header, 0).to_bytes(2, "big") + stream
    encoded = binascii.b2a_base64(raw, newline=False).rstrip(b"=").translate(_BINHEX_TABLE)
    return b"(This file must be converted with BinHex 4.0)\r\n:" + encoded + b":\r\n"


def signed_carrying_revocation(
    pki: TestPki, crl: bytes = b"", ocsp_responses: tuple[bytes, ...] = ()
) -> bytes:
    """An opaque signed message by alice whose SignedData carries ``crl`` and
    ``ocsp_responses`` (the crls field lies outside what the signature covers)."""
    der = openssl_cms(
        ["-sign", "-nodetach", "-outform", "DER", "-signer", pki.cert("alice"),
         "-inkey", pki.key("alice"), "-certfile", pki.intermediate],
        mime_message(),
    )  # fmt: skip
    info = cms.ContentInfo.load(der)
    signed = info["content"]
    choices = []
    if crl:
        choices.append(
            cms.RevocationInfoChoice(name="crl", value=asn1_crl.CertificateList.load(crl))
        )
    for response in ocsp_responses:
        other = cms.OtherRevocationInfoFormat(
            {"other_rev_info_format": "ocsp_response",
             "other_rev_info": asn1_ocsp.OCSPResponse.load(response)}
        )  # fmt: skip
        choices.append(cms.RevocationInfoChoice(name="other", value=other))
    signed["crls"] = cms.RevocationInfoChoices(choices)
    body = base64.encodebytes(info.dump(force=True)).replace(b"\n", b"\r\n")
    return (
        b"From: alice@example.org\r\nTo: bob@example.org\r\nSubject: Signed\r\n"
        b"MIME-Version: 1.0\r\n"
        b'Content-Type: application/pkcs7-mime; smime-type=signed-data; name="smime.p7m"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\n" + body
    )

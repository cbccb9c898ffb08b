"""Hostile messages, made at test time from the test PKI with openssl, asn1crypto and cryptography:
a CompressedData bomb, BER nested past any sane depth, thousands of RecipientInfos, a SignedData
carrying hundreds of look-alike issuer certificates, tens of thousands of header fields, malformed
UTF-8 and encoded-words. Each builder returns a whole message (bytes, CRLF).

Shared by ``test_hostile_input.py`` (through ``open_message``), ``test_hostile_sync.py`` (through
the daemon's sync into the cache) and ``bench/fuzz_open.py`` (as seeds).
"""

from __future__ import annotations

import base64
import datetime as dt
import tracemalloc
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from asn1crypto import cms
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from smime_companion.testing.pki import TestPki
from tests.tools import mime_message, openssl_cms

T = TypeVar("T")

SMIME_HEADERS = {
    "compressed-data": b"Content-Type: application/pkcs7-mime; smime-type=compressed-data\r\n",
    "enveloped-data": b"Content-Type: application/pkcs7-mime; smime-type=enveloped-data\r\n",
    "signed-data": b"Content-Type: application/pkcs7-mime; smime-type=signed-data\r\n",
}


def pkcs7_mime(kind: str, der: bytes, subject: str = "Hostile") -> bytes:
    """A whole message whose body is the CMS object ``der`` (base64)."""
    return (
        f"From: alice@example.org\r\nTo: bob@example.org\r\nSubject: {subject}\r\n"
        f"Message-ID: <{subject.replace(' ', '-')}@example.org>\r\nMIME-Version: 1.0\r\n"
    ).encode() + (
        SMIME_HEADERS[kind] + b"Content-Transfer-Encoding: base64\r\n\r\n"
        + base64.encodebytes(der).replace(b"\n", b"\r\n")
    )  # fmt: skip


def measured(call: Callable[[], T]) -> tuple[T, int]:
    """Run ``call`` under tracemalloc; return its result and the peak of Python allocations
    (bytes) while it ran."""
    tracemalloc.start()
    try:
        result = call()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return result, peak


# -- the builders ---------------------------------------------------------------------------------


def compression_bomb(expanded: int, subject: str = "Compression bomb") -> bytes:
    """CompressedData (RFC 3274, zlib) whose content inflates to ``expanded`` zero bytes; the
    zeros are compressed in 1 MiB steps, so making it does not hold them in memory."""
    packer = zlib.compressobj(9)
    chunk = b"\0" * (1 << 20)
    parts = [packer.compress(chunk) for _ in range(expanded >> 20)]
    parts.append(packer.flush())
    info = cms.ContentInfo(
        {
            "content_type": "compressed_data",
            "content": {
                "version": "v0",
                "compression_algorithm": {"algorithm": "zlib"},
                "encap_content_info": {"content_type": "data", "content": b"".join(parts)},
            },
        }
    )
    return pkcs7_mime("compressed-data", info.dump(), subject)


def deep_ber(depth: int, subject: str = "Deep BER") -> bytes:
    """An EnvelopedData ContentInfo whose content is ``depth`` nested indefinite-length
    SEQUENCEs (``30 80`` ... ``00 00``): 2 bytes a level, so 100,000 levels fit in 400 KB."""
    oid = b"\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x07\x03"  # 1.2.840.113549.1.7.3 envelopedData
    inner = b"\x30\x80" * depth + b"\x00\x00" * depth
    der = b"\x30\x80" + oid + b"\xa0\x80" + inner + b"\x00\x00" + b"\x00\x00"
    return pkcs7_mime("enveloped-data", der, subject)


def many_recipients(pki: TestPki, count: int, subject: str = "Many recipients") -> bytes:
    """A message encrypted to bob by openssl, with ``count`` extra KeyTransRecipientInfos
    (alice's, copied) in front of bob's: the recipient search must walk them all."""
    sealed = openssl_cms(["-encrypt", "-aes256", "-recip", pki.cert("bob")], mime_message())
    der = base64.b64decode(sealed.split(b"\n\n", 1)[1])
    for_alice = openssl_cms(["-encrypt", "-aes256", "-recip", pki.cert("alice")], mime_message())
    alice_der = base64.b64decode(for_alice.split(b"\n\n", 1)[1])
    alice_ri = cms.ContentInfo.load(alice_der)["content"]["recipient_infos"][0]
    info = cms.ContentInfo.load(der)
    enveloped = info["content"]
    bob_ri = enveloped["recipient_infos"][0]
    enveloped["recipient_infos"] = cms.RecipientInfos(
        [cms.RecipientInfo.load(alice_ri.dump()) for _ in range(count)] + [bob_ri]
    )
    return pkcs7_mime("enveloped-data", info.dump(force=True), subject)


def _look_alike_issuers(pki: TestPki, count: int) -> list[bytes]:
    """``count`` self-signed CA certificates with the email intermediate's subject name, each
    with its own key: every one is a candidate issuer of the signer that fails its signature."""
    intermediate = x509.load_pem_x509_certificate(pki.intermediate.read_bytes())
    now = dt.datetime.now(dt.UTC)
    certs = []
    for serial in range(1, count + 1):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(intermediate.subject)
            .issuer_name(intermediate.subject)
            .public_key(key.public_key())
            .serial_number(serial)
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256())
        )
        certs.append(cert.public_bytes(serialization.Encoding.DER))
    return certs


def huge_chain(pki: TestPki, count: int, keep_real: bool, subject: str = "Huge chain") -> bytes:
    """Alice's opaque signed message (signature intact) whose certificate set carries ``count``
    look-alike issuers, and the real intermediate too when ``keep_real``. The certificate set
    is outside what is signed, so changing it leaves the signature valid."""
    base: list[str | Path] = [
        "-sign", "-nodetach", "-signer", pki.cert("alice"), "-inkey", pki.key("alice")
    ]  # fmt: skip
    if keep_real:
        base += ["-certfile", pki.intermediate]
    sealed = openssl_cms(base, mime_message())
    info = cms.ContentInfo.load(base64.b64decode(sealed.split(b"\n\n", 1)[1]))
    signed = info["content"]
    certs = list(signed["certificates"])
    # The look-alikes first: a path builder taking the first candidate must try them all.
    fakes = [cms.CertificateChoices.load(der) for der in _look_alike_issuers(pki, count)]
    signed["certificates"] = cms.CertificateSet(fakes + certs)
    return pkcs7_mime("signed-data", info.dump(force=True), subject)


def many_header_fields(count: int, subject: str = "Many header fields") -> bytes:
    """A plain message with ``count`` short header fields (each under the section limit)."""
    fields = b"".join(b"X-H%d: v\r\n" % n for n in range(count))
    return (
        f"From: alice@example.org\r\nSubject: {subject}\r\n".encode()
        + fields
        + b"Content-Type: text/plain\r\n\r\nbody\r\n"
    )


def nested_containers(kind: str, depth: int, subject: str = "Nested containers") -> bytes:
    """A plain message whose body is ``depth`` multiparts (``kind`` "multipart") or attached
    messages ("message") each inside the last, around one line of text: every level is a copy of
    nearly the whole message once it is cut out of its parent."""
    head = f"From: alice@example.org\r\nTo: bob@example.org\r\nSubject: {subject}\r\n".encode()
    if kind == "message":
        level = b"Content-Type: message/rfc822\r\n\r\n" + head
        return head + level * depth + b"Content-Type: text/plain\r\n\r\ninnermost\r\n"
    opening = b"".join(
        b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (n, n)
        for n in range(depth)
    )
    closing = b"".join(b"\r\n--b%d--" % n for n in reversed(range(depth)))
    return head + opening + b"Content-Type: text/plain\r\n\r\ninnermost" + closing + b"\r\n"


def unfinished_html(subject: str = "Unfinished HTML") -> bytes:
    """A plain message whose HTML part is a megabyte of tags that never end: html.parser read
    each one again at every later "<" (hours of indexing for this one message)."""
    return (
        f"From: alice@example.org\r\nSubject: {subject}\r\n".encode()
        + b"Content-Type: text/html; charset=utf-8\r\n\r\n<p>findable</p>"
        + b"<div " * 200_000
    )


BROKEN_HEADER_VALUES = [
    b"\xff\xfe invalid UTF-8 \xc3\x28 \xe2\x82",  # not UTF-8 at all, truncated sequences
    b"=?utf-8?B?////?=",  # base64 of bytes that are not UTF-8
    b"=?utf-8?Q?=FF=FE=C3?=",  # the same in Q
    b"=?x-no-such-charset?Q?abc?=",  # an unknown charset
    b"=?utf-8?B?" + b"QUFB" * 5000 + b"?=",  # one 20,000-character encoded-word
    b"=?utf-8?B?not base64 ===?=",  # broken base64
    b"=?utf-8?X?unknown encoding?=",  # neither B nor Q
    b"=?" * 2000,  # many openers, no word
    b"=?a?q?x" * 8_000,  # many unclosed words: a lazy pattern reads to the end from each
    b"nul\x00byte and \x1b[31m escape",
]


def broken_headers_signed(pki: TestPki, subject: bytes) -> bytes:
    """Alice's valid detached signed message behind outer headers with malformed UTF-8 and
    encoded-words (``subject`` as the Subject, every broken value in other fields)."""
    sealed = openssl_cms(
        ["-sign", "-signer", pki.cert("alice"), "-inkey", pki.key("alice"),
         "-certfile", pki.intermediate, "-crlfeol"],
        mime_message(),
    )  # fmt: skip
    extra = b"".join(b"X-Broken-%d: %s\r\n" % (n, v) for n, v in enumerate(BROKEN_HEADER_VALUES))
    return (
        b"From: =?utf-8?B?/w==?= <alice@example.org>\r\nTo: bob@example.org\r\n"
        b"Subject: " + subject + b"\r\n" + extra + sealed
    )


# openssl's smimeCapabilities attribute lists RC2-CBC with its key size as an INTEGER; the same
# parameter under universal tag 8 (EXTERNAL / INSTANCE OF) is what bench/fuzz_open.py's finding
# came down to.
RC2_CAPABILITY = bytes.fromhex("06082a864886f70d030202020080")
RC2_CAPABILITY_TAG_8 = bytes.fromhex("06082a864886f70d030208020080")


def capability_with_tag_8(pki: TestPki, subject: str = "Capability tag 8") -> bytes:
    """Alice's opaque signed message whose signed smimeCapabilities attribute has the RC2 key
    size under universal tag 8 instead of INTEGER (the signature no longer matches, of course)."""
    sealed = openssl_cms(
        ["-sign", "-nodetach", "-signer", pki.cert("alice"), "-inkey", pki.key("alice")],
        mime_message(),
    )
    der = base64.b64decode(sealed.split(b"\n\n", 1)[1])
    assert RC2_CAPABILITY in der, "openssl no longer lists RC2 in smimeCapabilities"
    return pkcs7_mime("signed-data", der.replace(RC2_CAPABILITY, RC2_CAPABILITY_TAG_8), subject)

"""Helpers shared by the ``test_seal_*`` files: drafts of every shape, identities and recipients
from the test PKI, and readers for what ``seal`` wrote. (No tests here.)"""

from __future__ import annotations

import base64
import datetime as dt
import email
import email.header
import email.message
import email.policy
import functools
import re
from collections.abc import Sequence

from asn1crypto import cms
from cryptography import x509

from smime_companion import keyfiles
from smime_companion.core.cert_vocabulary import Recipient
from smime_companion.core.certs import email_addresses
from smime_companion.core.model import Identity
from smime_companion.core.seal import SealOptions, SealResult, seal
from smime_companion.testing.pki import PKCS12_PASSWORD, TestPki

UTF8_BODY = "Grüße aus Köln, Ørsted and 東京.   \r\nFrom the start of a line.\r\n" + "é" * 300
HTML_BODY = "<html><body><p>Grüße <b>bold</b></p></body></html>\r\n"
# Every byte value, so that CR, LF, NUL and 8-bit octets all appear in the attachment.
BINARY = bytes(range(256)) * 8 + b"\r\n\r\r\n\x00trailing  \n"


@functools.lru_cache(maxsize=64)
def identity(pki: TestPki, user: str) -> Identity:
    """``user``'s signing identity from their PKCS#12 (key, certificate, intermediate).

    Cached: opening a PKCS#12 runs its password KDF, which dominates a small seal."""
    return keyfiles.load_pkcs12(pki.p12(user), PKCS12_PASSWORD.encode())


def certificate(pki: TestPki, user: str) -> x509.Certificate:
    return keyfiles.load_certificates(pki.cert(user))[0]


def recipient(pki: TestPki, user: str, capabilities: Sequence[str] = ()) -> Recipient:
    return Recipient(pki.email(user), certificate(pki, user), tuple(capabilities))


def headers(sender: str, to: Sequence[str], cc: Sequence[str] = (), bcc: Sequence[str] = ()) -> str:
    lines = [f"From: {sender}", "To: " + ", ".join(to)]
    if cc:
        lines.append("Cc: " + ", ".join(cc))
    if bcc:
        lines.append("Bcc: " + ", ".join(bcc))
    lines += [
        "Subject: Quarterly numbers — confidential",
        "Keywords: budget, secret",
        "Date: Wed, 25 Nov 2026 09:00:00 +0000",
        "Message-ID: <draft-1@example.org>",
        "MIME-Version: 1.0",
    ]
    return "\r\n".join(lines) + "\r\n"


def text_draft(
    sender: str = "alice@example.org",
    to: Sequence[str] = ("bob@example.org",),
    cc: Sequence[str] = (),
    bcc: Sequence[str] = (),
    body: str = UTF8_BODY,
) -> bytes:
    """A text/plain draft with an 8-bit UTF-8 body (trailing spaces, a ``From `` line)."""
    return (
        headers(sender, to, cc, bcc)
        + "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        + body
    ).encode()


def alternative_draft(
    sender: str = "alice@example.org", to: Sequence[str] = ("bob@example.org",)
) -> bytes:
    """multipart/alternative: 8-bit text and HTML, with LF-only line ends as editors write."""
    return (
        headers(sender, to)
        + 'Content-Type: multipart/alternative; boundary="alt-1"\n\n'
        + "--alt-1\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n"
        + UTF8_BODY.replace("\r\n", "\n")
        + "\n--alt-1\nContent-Type: text/html; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n"
        + HTML_BODY.replace("\r\n", "\n")
        + "\n--alt-1--\n"
    ).encode()


def attachment_draft(
    sender: str = "alice@example.org", to: Sequence[str] = ("bob@example.org",)
) -> bytes:
    """multipart/mixed: 8-bit text and a binary attachment sent as raw 8-bit octets."""
    return (
        headers(sender, to).encode()
        + b'Content-Type: multipart/mixed; boundary="mix-1"\r\n\r\n'
        + b"--mix-1\r\nContent-Type: text/plain; charset=utf-8\r\n"
        + b"Content-Transfer-Encoding: 8bit\r\n\r\n"
        + UTF8_BODY.encode()
        + b"\r\n--mix-1\r\nContent-Type: application/octet-stream\r\n"
        + b'Content-Disposition: attachment; filename="data.bin"\r\n'
        + b"Content-Transfer-Encoding: binary\r\n\r\n"
        + BINARY
        + b"\r\n--mix-1--\r\n"
    )


DRAFTS = {
    "utf8-text": text_draft,
    "html-alternative": alternative_draft,
    "binary-attachment": attachment_draft,
}


def seal_draft(
    pki: TestPki,
    draft: bytes,
    *,
    signer: str | None = "alice",
    recipients: Sequence[Recipient] = (),
    options: SealOptions | None = None,
    at: dt.datetime | None = None,
) -> SealResult:
    return seal(
        draft,
        signer=identity(pki, signer) if signer else None,
        recipients=recipients,
        at=at or dt.datetime.now(dt.UTC),
        options=options or SealOptions(),
    )


def leaf_payloads(raw: bytes) -> list[tuple[str, bytes]]:
    """(content type, decoded payload) of every leaf part, text with canonical CRLF line ends:
    what a reader sees, whatever transfer encoding carried it. Detached signatures are not
    payload and are left out, and so is the legacy display of the Subject that seal writes at
    the top of an encrypted message's text (RFC 9788, ``hp-legacy-display="1"``; its own tests
    look at it)."""
    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    out = []
    for part in msg.walk():
        if part.is_multipart() or part.get_content_type() == "application/pkcs7-signature":
            continue
        data = part.get_payload(decode=True)
        assert isinstance(data, bytes)
        if part.get_content_maintype() == "text":
            data = data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        if part.get_param("hp-legacy-display") == "1":
            data = without_legacy_display(part.get_content_type(), data)
        out.append((part.get_content_type(), data))
    return out


LEGACY_TEXT = re.compile(rb"(?:Subject: [^\r\n]*\r\n)+\r\n")
LEGACY_HTML = re.compile(rb'<div class="header-protection-legacy-display"><pre>[^<]*</pre></div>')


def without_legacy_display(content_type: str, data: bytes) -> bytes:
    """``data`` less the legacy display element seal wrote (which must be there, in the form
    RFC 9788's examples show)."""
    if content_type == "text/html":
        found = LEGACY_HTML.search(data)
    else:
        found = LEGACY_TEXT.match(data)
    assert found is not None, f"no legacy display element in {data[:200]!r}"
    return data[: found.start()] + data[found.end() :]


def decoded_header(raw: bytes, name: str) -> str | None:
    """Header ``name`` of message ``raw`` with RFC 2047 words decoded, or None."""
    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    value = msg.get(name)
    return None if value is None else decode_words(str(value))


def decode_words(value: str) -> str:
    return str(email.header.make_header(email.header.decode_header(value)))


def cms_of(message: bytes) -> cms.ContentInfo:
    """The CMS ContentInfo of an application/pkcs7-mime message."""
    msg = email.message_from_bytes(message, policy=email.policy.compat32)
    der = msg.get_payload(decode=True)
    assert isinstance(der, bytes)
    return cms.ContentInfo.load(der)


def recipient_addresses(message: bytes, pki: TestPki, users: Sequence[str]) -> set[str]:
    """Which of ``users`` the RecipientInfos of an encrypted message name (by issuer+serial)."""
    info = cms_of(message)
    rids = set()
    for ri in info["content"]["recipient_infos"]:
        if ri.name == "ktri":
            sid = ri.chosen["rid"].chosen
            rids.add(sid["serial_number"].native)
        else:
            for rek in ri.chosen["recipient_encrypted_keys"]:
                rids.add(rek["rid"].chosen["serial_number"].native)
    found = set()
    for user in users:
        cert = certificate(pki, user)
        if cert.serial_number in rids:
            found.update(email_addresses(cert))
    return found


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()

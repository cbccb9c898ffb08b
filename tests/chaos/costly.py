"""Hostile messages that try to cost work (issue 14): certificate-graph mazes for the path
search, compression nested in compression, BER chunk floods for every CMS path, and stapled
OCSP responses stuffed with answers or look-alike responders. Each builder
makes a whole message (bytes, CRLF) at test time, with cryptography, asn1crypto and openssl;
none is ever ``valid``.

Shared by ``test_hostile_cost.py`` (through ``open_message``), ``test_maze_daemon.py`` (through
the daemon and Dovecot), ``bench/hostile_open.py`` (what each costs in ``smime-companion open``)
and ``bench/fuzz_open.py`` (as seeds).
"""

from __future__ import annotations

import base64
import datetime as dt
import random
import tempfile
import zlib
from collections.abc import Sequence
from pathlib import Path

from asn1crypto import cms
from asn1crypto import ocsp as asn1_ocsp
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from smime_companion.testing.pki import TestPki
from tests.chaos.hostile import pkcs7_mime
from tests.tools import (
    mime_message,
    ocsp_index_line,
    openssl_cms,
    openssl_ocsp_response,
    signed_carrying_revocation,
)

_DAY = dt.timedelta(days=1)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _ca_certificate(
    subject: x509.Name,
    issuer: x509.Name,
    key: ec.EllipticCurvePublicKey,
    signer: ec.EllipticCurvePrivateKey,
    serial: int,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key)
        .serial_number(serial)
        .not_valid_before(now - _DAY)
        .not_valid_after(now + 30 * _DAY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()), critical=False
        )
        .sign(signer, hashes.SHA256())
    )


def _signer_certificate(
    email: str, serial: int, issuer: x509.Name, signer: ec.EllipticCurvePrivateKey
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(f"Maze signer {serial}"))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(now - _DAY)
        .not_valid_after(now + 30 * _DAY)
        .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(email)]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()), critical=False
        )
        .sign(signer, hashes.SHA256())
    )
    return cert, key


def _signed_by_all(
    signers: Sequence[tuple[x509.Certificate, ec.EllipticCurvePrivateKey]],
    extra: Sequence[x509.Certificate],
    subject: str,
) -> bytes:
    """A detached multipart/signed message (openssl) with one SignerInfo per signer and
    ``extra`` in its certificate set, behind From/To/Subject headers."""
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        args: list[str | Path] = ["-sign"]
        for n, (cert, key) in enumerate(signers):
            (directory / f"s{n}.pem").write_bytes(_pem(cert))
            (directory / f"k{n}.pem").write_bytes(
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )
            args += ["-signer", directory / f"s{n}.pem", "-inkey", directory / f"k{n}.pem"]
        (directory / "extra.pem").write_bytes(b"".join(_pem(c) for c in extra))
        sealed = openssl_cms([*args, "-certfile", directory / "extra.pem"], mime_message())
    return (
        f"From: alice@example.org\r\nTo: bob@example.org\r\nSubject: {subject}\r\n"
        f"Message-ID: <{subject.replace(' ', '-')}@example.org>\r\n"
    ).encode() + sealed.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def self_issued_maze(cas: int = 16, signers: int = 16, subject: str = "Path maze") -> bytes:
    """``cas`` self-issued CA certificates that share one name and one key (so each has issued
    every other), and ``signers`` signers they issued, none chaining to any anchor: the shape
    that took the path search 21 minutes (16 and 16 make a message of about 16 KB)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name("Maze CA")
    ca_certs = [_ca_certificate(name, name, key.public_key(), key, n) for n in range(1, cas + 1)]
    people = [_signer_certificate("alice@example.org", 100 + n, name, key) for n in range(signers)]
    return _signed_by_all(people, ca_certs, subject)


def cross_certified_mesh(names: int = 7, signers: int = 8, subject: str = "Mesh maze") -> bytes:
    """``names`` CAs, each with its own name and key, every one cross-certified by every other
    (and self-signed): all orders of the names are paths, so the simple paths grow with the
    factorial of ``names``; ``signers`` signers issued by the first, no anchor anywhere."""
    keys = [ec.generate_private_key(ec.SECP256R1()) for _ in range(names)]
    subjects = [_name(f"Mesh CA {n}") for n in range(names)]
    certs = [
        _ca_certificate(subjects[j], subjects[i], keys[j].public_key(), keys[i], 1000 * i + j + 1)
        for i in range(names)
        for j in range(names)
    ]
    people = [
        _signer_certificate("alice@example.org", 100 + n, subjects[0], keys[0])
        for n in range(signers)
    ]
    return _signed_by_all(people, certs, subject)


def maze_beside_a_real_signer(pki: TestPki, subject: str = "Maze beside alice") -> bytes:
    """Alice's valid signature (her certificate and the test intermediate), with the 16-by-16
    self-issued maze's signers and CA certificates added to the same SignedData: the maze may
    cost its own signers their verdict, never alice hers."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name("Maze CA")
    ca_certs = [_ca_certificate(name, name, key.public_key(), key, n) for n in range(1, 17)]
    people = [_signer_certificate("alice@example.org", 100 + n, name, key) for n in range(15)]
    alice_cert = x509.load_pem_x509_certificate(pki.cert("alice").read_bytes())
    alice_key = serialization.load_pem_private_key(pki.key("alice").read_bytes(), None)
    intermediate = x509.load_pem_x509_certificate(pki.intermediate.read_bytes())
    return _signed_by_all(
        [*people, (alice_cert, alice_key)],  # type: ignore[list-item]
        [*ca_certs, intermediate],
        subject,
    )


# -- compression --------------------------------------------------------------------------------


def _compressed_data(data: bytes, huffman_only: bool = False) -> bytes:
    if huffman_only:
        packer = zlib.compressobj(9, zlib.DEFLATED, 15, 9, zlib.Z_HUFFMAN_ONLY)
        stream = packer.compress(data) + packer.flush()
    else:
        stream = zlib.compress(data, 9)
    return cms.ContentInfo(
        {
            "content_type": "compressed_data",
            "content": {
                "version": "v0",
                "compression_algorithm": {"algorithm": "zlib"},
                "encap_content_info": {"content_type": "data", "content": stream},
            },
        }
    ).dump()


def nested_compression(
    expanded: int = 64 * 1024 * 1024, layers: int = 3, subject: str = "Nested compression"
) -> bytes:
    """CompressedData inside CompressedData, ``layers`` deep, around ``expanded`` zero bytes.

    Each layer is deflated with Huffman codes only (no back-references), so it expands about
    eight times, far under the old limit of 100 times per layer, and its output is mostly zero
    bytes again, which the layer around it compresses as well: 64 MiB fit in about 200 KB, and
    the layers together expand to 73 MiB. The inner layers are binary entities."""
    entity = b"Content-Type: application/octet-stream\r\n\r\n" + bytes(expanded)
    for _ in range(layers - 1):
        entity = (
            b"Content-Type: application/pkcs7-mime; smime-type=compressed-data\r\n"
            b"Content-Transfer-Encoding: binary\r\n\r\n" + _compressed_data(entity, True)
        )
    return pkcs7_mime("compressed-data", _compressed_data(entity, True), subject)


# -- BER chunk floods ---------------------------------------------------------------------------


def _length(size: int) -> bytes:
    if size < 0x80:
        return bytes([size])
    octets = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(octets)]) + octets


def _tlv(tag: int, value: bytes) -> bytes:
    return bytes([tag]) + _length(len(value)) + value


def chunked(value: bytes, size: int = 1, tag: int = 0x24) -> bytes:
    """``value`` as a constructed, indefinite-length OCTET STRING (``tag``: 0x24, or 0xA0 for an
    IMPLICIT [0] one) of ``size``-byte chunks: what a streaming encoder writes, at its worst."""
    chunks = b"".join(_tlv(0x04, value[i : i + size]) for i in range(0, len(value), size))
    return bytes([tag, 0x80]) + chunks + b"\x00\x00"


_OID_DATA = bytes.fromhex("06092a864886f70d010701")
_OID_SIGNED_DATA = bytes.fromhex("06092a864886f70d010702")
_OID_COMPRESSED_DATA = bytes.fromhex("060b2a864886f70d0109100109")
_ZLIB_ALGORITHM = bytes.fromhex("300d060b2a864886f70d0109100308")


def _compressed_chunk_flood_der(expanded: int, chunk: int, random_text: bool) -> bytes:
    if random_text:  # printable, but as random as its alphabet allows
        letters = bytes(range(0x21, 0x7F))
        filler = bytes(random.Random(expanded).choices(letters, k=expanded))
    else:
        filler = b"B" * expanded
    text = b"Content-Type: text/plain\r\n\r\n" + filler
    stream = zlib.compress(text, 0)  # level 0: stored blocks, as long as the text
    econtent = _tlv(0xA0, chunked(stream, chunk))
    encap = _tlv(0x30, _OID_DATA + econtent)
    compressed = _tlv(0x30, b"\x02\x01\x00" + _ZLIB_ALGORITHM + encap)
    return _tlv(0x30, _OID_COMPRESSED_DATA + _tlv(0xA0, compressed))


def compressed_chunk_flood(
    expanded: int, chunk: int = 1, subject: str = "Compressed chunk flood"
) -> bytes:
    """CompressedData whose zlib stream (of a text entity ``expanded`` bytes long, stored
    rather than deflated so it is as long) is an OCTET STRING of ``chunk``-byte chunks: 11.7 MB
    of them took 172 s, joined by asn1crypto one ``+=`` at a time."""
    der = _compressed_chunk_flood_der(expanded, chunk, random_text=False)
    return pkcs7_mime("compressed-data", der, subject)


def flood_wrapped_in_compression(
    expanded: int, chunk: int = 1, subject: str = "Flood in compression"
) -> bytes:
    """A chunk flood (:func:`compressed_chunk_flood`, of random text) as the binary content of
    one more CompressedData, which expands it less than three times (well within the old limit
    of 100 times per layer): 169 KB of such mail took 182 s in the review."""
    inner = _compressed_chunk_flood_der(expanded, chunk, random_text=True)
    entity = (
        b"Content-Type: application/pkcs7-mime; smime-type=compressed-data\r\n"
        b"Content-Transfer-Encoding: binary\r\n\r\n" + inner
    )
    return pkcs7_mime("compressed-data", _compressed_data(entity), subject)


def _children(der: bytes) -> list[bytes]:
    """The whole encodings of the elements of a definite-length DER constructed value."""
    value = _value(der)
    pos, out = 0, []
    while pos < len(value):
        first = value[pos + 1]
        octets = first & 0x7F if first & 0x80 else 0
        length = int.from_bytes(value[pos + 2 : pos + 2 + octets], "big") if octets else first
        end = pos + 2 + octets + length
        out.append(value[pos:end])
        pos = end
    return out


def _value(tlv: bytes) -> bytes:
    """The value octets of one definite-length DER element."""
    return tlv[2 + (tlv[1] & 0x7F if tlv[1] & 0x80 else 0) :]


def _alice_signed_der(pki: TestPki, *extra: str, body: int = 0) -> bytes:
    text = "Pay 100 EUR to account 1234.\r\n"
    content = mime_message(body=text * (body // len(text) + 1)) if body else mime_message()
    return openssl_cms(
        ["-sign", "-binary", "-outform", "DER", *extra, "-signer", pki.cert("alice"),
         "-inkey", pki.key("alice"), "-certfile", pki.intermediate],
        content,
    )  # fmt: skip


def signed_data_chunk_flood(
    pki: TestPki, chunk: int = 1, subject: str | None = None, body: int = 0
) -> bytes:
    """Alice's opaque SignedData (signature intact) whose eContent (a text of about ``body``
    bytes, or a short one) is re-encoded as an OCTET STRING of ``chunk``-byte chunks."""
    oid, explicit = _children(_alice_signed_der(pki, "-nodetach", body=body))
    fields = _children(_children(explicit)[0])
    encap_oid, econtent = _children(fields[2])
    value = _value(_children(econtent)[0])
    fields[2] = _tlv(0x30, encap_oid + _tlv(0xA0, chunked(value, chunk)))
    der = _tlv(0x30, oid + _tlv(0xA0, _tlv(0x30, b"".join(fields))))
    return pkcs7_mime("signed-data", der, subject or f"Signed chunk flood {chunk}")


def signature_value_flood(pki: TestPki, size: int, chunk: int = 1) -> bytes:
    """Alice's detached multipart/signed message whose SignerInfo carries a ``size``-byte
    signature value in ``chunk``-byte chunks (asn1crypto reads a SignerInfo that is not DER, so
    it would join them); of course it is not her signature any more."""
    oid, explicit = _children(_alice_signed_der(pki))
    fields = _children(_children(explicit)[0])
    signer_info = _children(_children(fields[-1])[0])
    value = _value(signer_info[-1])
    signer_info[-1] = chunked((value * (size // len(value) + 1))[:size], chunk)
    fields[-1] = _tlv(0x31, _tlv(0x30, b"".join(signer_info)))
    der = _tlv(0x30, oid + _tlv(0xA0, _tlv(0x30, b"".join(fields))))
    boundary = b"----flood"
    return (
        b"From: alice@example.org\r\nTo: bob@example.org\r\nSubject: Signature flood\r\n"
        b"MIME-Version: 1.0\r\n"
        b'Content-Type: multipart/signed; protocol="application/pkcs7-signature"; '
        b'micalg="sha-256"; boundary="' + boundary + b'"\r\n\r\n'
        b"--" + boundary + b"\r\n" + mime_message() + b"\r\n--" + boundary + b"\r\n"
        b"Content-Type: application/pkcs7-signature; name=smime.p7s\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n"
        + base64.encodebytes(der).replace(b"\n", b"\r\n")
        + b"\r\n--" + boundary + b"--\r\n"
    )  # fmt: skip


def enveloped_chunk_flood(pki: TestPki, size: int, chunk: int = 1) -> bytes:
    """An envelope to bob (openssl, AES-256-CBC) of ``size`` bytes of text whose
    encryptedContent, an IMPLICIT [0] OCTET STRING, is re-encoded in ``chunk``-byte chunks."""
    text = b"Content-Type: text/plain\r\n\r\n" + b"C" * size
    der = openssl_cms(
        ["-encrypt", "-binary", "-stream", "-outform", "DER", "-aes256", "-recip",
         pki.cert("bob")],
        text,
    )  # fmt: skip
    start = der.index(b"\xa0\x80\x04")  # openssl streams the ciphertext as [0] of chunks
    pos, pieces = start + 2, []
    while der[pos : pos + 2] != b"\x00\x00":
        octets = der[pos + 1] & 0x7F if der[pos + 1] & 0x80 else 0
        length = int.from_bytes(der[pos + 2 : pos + 2 + octets], "big") if octets else der[pos + 1]
        pieces.append(der[pos + 2 + octets : pos + 2 + octets + length])
        pos += 2 + octets + length
    flood = chunked(b"".join(pieces), chunk, tag=0xA0)
    return pkcs7_mime("enveloped-data", der[:start] + flood + der[pos + 2 :], "Enveloped flood")


def _stuffed_ocsp_response(
    pki: TestPki, user: str, revoked: dt.datetime, answers: int, look_alikes: int
) -> bytes:
    """The test intermediate's OCSP response (``openssl ocsp``) naming ``user`` revoked at
    ``revoked``, its one answer repeated ``answers`` times and ``look_alikes`` certificates added
    that name the intermediate as issuer (each a signature check for a reader that tries every
    one). Repeating answers breaks the response's signature; adding certificates does not."""
    cert = x509.load_pem_x509_certificate(pki.cert(user).read_bytes())
    index = ocsp_index_line(cert.serial_number, cert.not_valid_after_utc, revoked)
    key = pki.directory / "intermediate.key.pem"
    with tempfile.TemporaryDirectory() as tmp:
        response = openssl_ocsp_response(
            index, pki.intermediate, cert.serial_number, pki.intermediate, key, Path(tmp)
        )
    parsed = asn1_ocsp.OCSPResponse.load(response)
    basic = parsed["response_bytes"]["response"].parsed
    if answers > 1:
        one = basic["tbs_response_data"]["responses"][0]
        basic["tbs_response_data"]["responses"] = [one] * answers
    if look_alikes:
        fake_key = ec.generate_private_key(ec.SECP256R1())
        issuer = x509.load_pem_x509_certificate(pki.intermediate.read_bytes())
        look_alike = (
            x509.CertificateBuilder()
            .subject_name(_name("Responder"))
            .issuer_name(issuer.subject)
            .public_key(fake_key.public_key())
            .serial_number(1)
            .not_valid_before(revoked - _DAY)
            .not_valid_after(revoked + 365 * _DAY)
            .sign(fake_key, hashes.SHA256())
        )
        copy = asn1_x509.Certificate.load(look_alike.public_bytes(serialization.Encoding.DER))
        basic["certs"] = [copy] * look_alikes
    parsed["response_bytes"]["response"] = basic
    return parsed.dump(force=True)


def ocsp_look_alike_responders(pki: TestPki, revoked: dt.datetime, count: int = 2000) -> bytes:
    """Alice's signed message stapling the intermediate's response that names her revoked at
    ``revoked``, beside ``count`` look-alike responder certificates."""
    response = _stuffed_ocsp_response(pki, "alice", revoked, 1, count)
    return signed_carrying_revocation(pki, ocsp_responses=(response,))


def ocsp_answer_flood(pki: TestPki, answers: int = 20_000, responses: int = 8) -> bytes:
    """Alice's signed message stapling ``responses`` copies of a response that answers
    ``answers`` times about bob (none about alice)."""
    revoked = dt.datetime.now(dt.UTC) - _DAY
    response = _stuffed_ocsp_response(pki, "bob", revoked, answers, 0)
    return signed_carrying_revocation(pki, ocsp_responses=(response,) * responses)

"""Sealing a draft: sign and/or encrypt it so that every S/MIME client opens it (RFC 8551).

The order is RFC 8551's: the transport-safe payload (carrying the real header fields, RFC 9788)
is signed (detached ``multipart/signed``, or opaque ``signed-data``), then the signed entity is
encrypted to every To/Cc recipient and to the sender. Each Bcc recipient gets a copy encrypted
separately, so that no RecipientInfo reveals a Bcc recipient to anyone else.

The CMS structures (RFC 5652, 5083, 5084, 5753, 8551) are written here as DER; cryptography
supplies only the primitives. Its own PKCS#7 builders cannot do what is needed (opaque signing,
the RFC 8551 signature media type, AES-GCM, RSA-OAEP, ECDH recipients; see issue 3), and building
the structures as asn1crypto objects cost ten times the RSA signature (``bench/seal.py``).

Pure: no file or network access and no clock reads; the time is an argument and the randomness a
function that can be replaced.
"""

from __future__ import annotations

import email.utils
import functools
import hashlib
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timezone

from cryptography import x509
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives import hashes, padding, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric import padding as asym_padding
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import aes_key_wrap

from smime_companion.core import mime_build
from smime_companion.core.ber_walker import der_elements
from smime_companion.core.cert_vocabulary import (
    AES_128_CBC,
    AES_256_CBC,
    AES_256_GCM,
    RSA_OAEP,
    TRIPLE_DES,
    Recipient,
)
from smime_companion.core.certs import (
    CAPABILITY_OIDS,
    email_addresses,
    recipient_certificate_problem,
)
from smime_companion.core.cms_algorithms import (
    CURVES,
    ECDH_SCHEMES,
    AnyAlgorithmIdentifier,
    ecc_cms_shared_info,
    x963_kdf,
)
from smime_companion.core.der_writer import (
    INT_0,
    INT_1,
    INT_2,
    INT_3,
    NULL,
    attribute,
    certificate_der,
    der_time,
    issuer_and_serial,
    oid,
    retag,
    seq,
    tlv,
)
from smime_companion.core.model import Identity
from smime_companion.errors import SealError, UnsupportedInput

RandomBytes = Callable[[int], bytes]

# What we advertise in our SMIMECapabilities signed attribute, most preferred first.
OUR_CAPABILITIES: tuple[str, ...] = (
    AES_256_GCM,
    "aes-128-gcm",
    AES_256_CBC,
    AES_128_CBC,
    RSA_OAEP,
    "ecdh-sha256",
    "ecdh-sha384",
    "ecdh-sha512",
)

# What the sender's own certificate is assumed to accept when it is a recipient of the Sent copy.
SENDER_CAPABILITIES: tuple[str, ...] = (AES_256_GCM, AES_256_CBC, AES_128_CBC)

# Microsoft's variant of SMIMEEncryptionKeyPreference (an IssuerAndSerialNumber); Outlook reads it.
_MS_ENCRYPTION_KEY_PREFERENCE = "1.3.6.1.4.1.311.16.4"

# The dhSinglePass-stdDH scheme of each KDF hash a curve is paired with (cms_algorithms.CURVES).
_STD_DH_SCHEMES = {s.hash_name: s.oid for s in ECDH_SCHEMES.values() if not s.cofactor}


@dataclass(frozen=True)
class _CipherSpec:
    name: str
    oid: str
    key_size: int
    aead: bool
    wrap_oid: str  # the AES key wrap that carries this key to ECDH recipients
    kek_size: int  # its key-encryption-key size in bytes


_CIPHERS = {
    AES_256_GCM: _CipherSpec(
        AES_256_GCM, "2.16.840.1.101.3.4.1.46", 32, True, "2.16.840.1.101.3.4.1.45", 32
    ),
    AES_256_CBC: _CipherSpec(
        AES_256_CBC, "2.16.840.1.101.3.4.1.42", 32, False, "2.16.840.1.101.3.4.1.45", 32
    ),
    AES_128_CBC: _CipherSpec(
        AES_128_CBC, "2.16.840.1.101.3.4.1.2", 16, False, "2.16.840.1.101.3.4.1.5", 16
    ),
    # A 3DES key is 24 bytes: AES-256 wrap carries it (RFC 5753 lets the KEK be stronger).
    TRIPLE_DES: _CipherSpec(
        TRIPLE_DES, "1.2.840.113549.3.7", 24, False, "2.16.840.1.101.3.4.1.45", 32
    ),
}


@dataclass(frozen=True)
class SealOptions:
    """How to seal. ``allow_3des`` permits Triple-DES for a recipient that advertised nothing
    better; without it such a recipient still gets AES-128-CBC (which RFC 8551 makes mandatory)."""

    sign: bool = True
    encrypt: bool = True
    opaque: bool = False
    header_protection: bool = True
    allow_3des: bool = False


@dataclass(frozen=True)
class KeyDelivery:
    """How the content key reached one recipient: ``rsa-pkcs1v15``, ``rsa-oaep-sha256`` or
    ``ecdh-p256-sha256``-style names (the ones ``core.decrypt`` reports)."""

    address: str
    key_transport: str


@dataclass(frozen=True)
class SealedMessage:
    """One finished message and the envelope addresses it is for."""

    message: bytes
    envelope_recipients: tuple[str, ...]
    deliveries: tuple[KeyDelivery, ...] = ()


@dataclass(frozen=True)
class SealResult:
    """What :func:`seal` made.

    ``main`` goes to the sender's Sent folder and to every To/Cc recipient; ``bcc_copies`` maps
    each Bcc address to its own copy (empty when not encrypting: then ``main`` goes to Bcc
    recipients too and is listed in its envelope). ``content_cipher`` is None when not encrypted.
    """

    main: SealedMessage
    bcc_copies: dict[str, SealedMessage] = field(default_factory=dict)
    content_cipher: str | None = None
    signed: bool = False
    encrypted: bool = False
    micalg: str | None = None


def seal(
    draft: bytes,
    *,
    signer: Identity | None,
    recipients: Sequence[Recipient],
    at: datetime,
    options: SealOptions = SealOptions(),
    random: RandomBytes = secrets.token_bytes,
) -> SealResult:
    """Sign and/or encrypt ``draft`` (a whole RFC 5322 message) as ``options`` ask.

    ``signer`` signs (required when ``options.sign``); its certificate is also an encryption
    recipient for the From address unless ``recipients`` names that address. ``recipients`` must
    cover every To, Cc and Bcc address (and From, when there is no signer) when encrypting.
    ``at`` is the signing time and the Date of a draft without one. The main message is
    encrypted to the sender and every To/Cc address; each Bcc address gets its own copy,
    encrypted to it and the sender only. No output carries a Bcc field.

    Returns a :class:`SealResult`. Raises :class:`SealError` for a draft that cannot be sealed
    (not MIME, no From, recipients without certificate, a signer key that does not match its
    certificate or address) and :class:`UnsupportedInput` for a key type we cannot use.
    """
    if not (options.sign or options.encrypt):
        raise SealError("nothing to do: neither signing nor encrypting was asked for")
    parsed = mime_build.parse_draft(draft)
    sender = parsed.addresses("From")[0]
    to_cc = parsed.addresses("To", "Cc")
    # A Bcc that is also To/Cc, or the sender, learns nothing from the main message's
    # RecipientInfos, so it needs no copy of its own.
    all_bcc = parsed.addresses("Bcc")
    bcc = tuple(a for a in all_bcc if a not in to_cc and a != sender)
    main_envelope = to_cc + ((sender,) if sender in all_bcc and sender not in to_cc else ())
    if options.sign:
        if signer is None:
            raise SealError("signing was asked for but no signing key was given")
        _check_signer(signer, sender)
    parsed = _with_date_and_id(parsed, at, sender, random)

    by_address = _recipient_table(recipients, signer, sender)
    if options.encrypt:
        _check_recipients(by_address, (sender, *to_cc, *bcc), at)
    payload = mime_build.protected_payload(
        parsed, header_protection=options.header_protection, encrypted=options.encrypt
    )

    micalg = None
    if options.sign:
        assert signer is not None
        digest_name = _digest_for(signer.key)
        micalg = _MICALG[digest_name]
        entity = _signed_entity(payload, signer, at, options.opaque, random)
    else:
        entity = payload

    # Obscuring outer fields is only safe when the payload carries the real ones.
    obscure = options.encrypt and options.header_protection
    outer_fields = mime_build.outer_header_fields(parsed, encrypted=obscure)
    if not options.encrypt:
        message = _message(outer_fields, entity)
        everyone = tuple(dict.fromkeys((*main_envelope, *bcc)))
        return SealResult(main=SealedMessage(message, everyone), signed=options.sign, micalg=micalg)

    main_rcpts = [by_address[a] for a in dict.fromkeys((sender, *to_cc))]
    cipher = _CIPHERS[choose_content_cipher(main_rcpts, allow_3des=options.allow_3des)]
    main = _encrypted_message(outer_fields, entity, main_rcpts, cipher, random, main_envelope)
    copies: dict[str, SealedMessage] = {}
    for address in bcc:
        rcpts = [by_address[address], by_address[sender]]
        copy_cipher = _CIPHERS[choose_content_cipher(rcpts, allow_3des=options.allow_3des)]
        copies[address] = _encrypted_message(
            outer_fields, entity, rcpts, copy_cipher, random, (address,)
        )
    return SealResult(
        main=main,
        bcc_copies=copies,
        content_cipher=cipher.name,
        signed=options.sign,
        encrypted=True,
        micalg=micalg,
    )


def choose_content_cipher(recipients: Sequence[Recipient], *, allow_3des: bool = False) -> str:
    """The content cipher every recipient can decrypt.

    AES-256-GCM only when every recipient advertised it; else AES-256-CBC when every recipient
    advertised it or advertised nothing; else AES-128-CBC; 3DES only with ``allow_3des`` and a
    recipient whose advertised list has 3DES but no AES. Returns the cipher's name.
    """
    caps = [set(r.capabilities) for r in recipients]
    if caps and all(AES_256_GCM in c for c in caps):
        return AES_256_GCM
    if all(not c or AES_256_CBC in c or AES_256_GCM in c for c in caps):
        # A recipient advertising GCM-256 but not CBC-256 has the key size, and RFC 8551
        # makes CBC mandatory: AES-256-CBC is safe for it.
        return AES_256_CBC
    aes = {AES_256_GCM, AES_256_CBC, AES_128_CBC, "aes-128-gcm", "aes-192-cbc", "aes-192-gcm"}
    if allow_3des and any(c and TRIPLE_DES in c and not (c & aes) for c in caps):
        return TRIPLE_DES
    return AES_128_CBC


# --- draft preparation --------------------------------------------------------------------------


def _check_signer(signer: Identity, sender: str) -> None:
    fmt = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if signer.key.public_key().public_bytes(
        der, fmt
    ) != signer.certificate.public_key().public_bytes(der, fmt):
        raise SealError("the signing key does not match the signing certificate")
    addresses = email_addresses(signer.certificate)
    if sender not in addresses:
        shown = ", ".join(addresses) or "no address"
        raise SealError(f"the signing certificate is for {shown}, not the From address {sender}")


def _with_date_and_id(
    draft: mime_build.Draft, at: datetime, sender: str, random: RandomBytes
) -> mime_build.Draft:
    """The Date is the sealing time, as a mail client dates a message when it sends it (RFC
    5322: when it was ready to enter the mail system), in the draft Date's time zone: a draft
    carries the time it was saved, and Thunderbird judges a signature whose signing time is
    more than an hour from the Date invalid. A Message-ID, which lets replies thread, is added
    when the draft lacks one. Both before signing, so that they are protected too."""
    date = email.utils.format_datetime(at.astimezone(_zone_of(draft.values("Date"))))
    fields = [(name, value) for name, value in draft.header_fields if name.lower() != "date"]
    dated = [i for i, (name, _) in enumerate(draft.header_fields) if name.lower() == "date"]
    fields.insert(dated[0] if dated else len(fields), ("Date", date))
    if not draft.values("Message-ID"):
        domain = sender.rsplit("@", 1)[1]
        fields.append(("Message-ID", f"<{random(16).hex()}@{domain}>"))
    return mime_build.Draft(header_fields=tuple(fields), root=draft.root)


def _zone_of(dates: Sequence[str]) -> timezone:
    """The time zone the first of a draft's Date fields is written in; UTC without one."""
    try:
        parsed = email.utils.parsedate_to_datetime(dates[0]) if dates else None
    except (ValueError, TypeError, IndexError, OverflowError):
        parsed = None
    offset = parsed.utcoffset() if parsed is not None else None
    return timezone(offset) if offset is not None else UTC


def _recipient_table(
    recipients: Sequence[Recipient], signer: Identity | None, sender: str
) -> dict[str, Recipient]:
    table: dict[str, Recipient] = {}
    for r in recipients:
        table.setdefault(r.address.lower(), r)
    if signer is not None and sender not in table and sender in email_addresses(signer.certificate):
        # The sender reads the Sent copy with the key it signs with, possibly in another client:
        # assume the content ciphers every current client reads, but not OAEP (gpgsm 2.2 lacks it).
        table[sender] = Recipient(sender, signer.certificate, SENDER_CAPABILITIES)
    return table


def _check_recipients(
    by_address: dict[str, Recipient], addresses: Sequence[str], at: datetime
) -> None:
    """Raise :class:`SealError` unless every one of ``addresses`` has a usable certificate."""
    missing = [a for a in addresses if a not in by_address]
    if missing:
        raise SealError("no certificate for recipient(s): " + ", ".join(missing))
    unusable = [
        f"{a} ({problem})"
        for a in dict.fromkeys(addresses)
        if (problem := recipient_certificate_problem(by_address[a].certificate, at))
    ]
    if unusable:
        raise SealError("cannot encrypt to recipient(s): " + ", ".join(unusable))


# --- MIME framing -------------------------------------------------------------------------------


def _message(outer_fields: Sequence[tuple[str, str]], entity: bytes) -> bytes:
    head = b"".join(mime_build.format_header(n, v) for n, v in outer_fields)
    return head + b"MIME-Version: 1.0\r\n" + entity


def _base64(der: bytes) -> bytes:
    return mime_build.base64_lines(der)


def _pkcs7_mime(smime_type: str, der: bytes) -> bytes:
    return (
        f'Content-Type: application/pkcs7-mime; smime-type={smime_type}; name="smime.p7m"\r\n'
        'Content-Disposition: attachment; filename="smime.p7m"\r\n'
        "Content-Transfer-Encoding: base64\r\n\r\n"
    ).encode("ascii") + _base64(der)


def _boundary(random: RandomBytes, content: bytes) -> str:
    while True:
        boundary = "----smime-" + random(12).hex()
        if boundary.encode("ascii") not in content:
            return boundary


# --- signing ------------------------------------------------------------------------------------

_MICALG = {"sha256": "sha-256", "sha512": "sha-512"}


def _signing_certificate_v2(cert: x509.Certificate) -> bytes:
    """SigningCertificateV2 (RFC 5035) naming ``cert`` by its SHA-256 (the default hash, so no
    hashAlgorithm is written) and its issuer and serial: a receiver that checks it (``core``
    does, and ``openssl cms -verify -cades``) takes no other certificate for the same key as
    the signer's."""
    ((_, _, contents),) = der_elements(issuer_and_serial(cert))
    (_, issuer, _), (_, serial, _) = der_elements(contents)
    issuer_serial = seq(seq(tlv(0xA4, issuer)), serial)  # GeneralNames: one directoryName
    cert_id = seq(tlv(0x04, hashlib.sha256(certificate_der(cert)).digest()), issuer_serial)
    return seq(seq(cert_id))


def _digest_for(key: object) -> str:
    # Ed25519 signs with SHA-512 as its message digest (RFC 8419 sec 3.1); everything else
    # SHA-256, the one digest every client in use verifies.
    return "sha512" if isinstance(key, ed25519.Ed25519PrivateKey) else "sha256"


def _signed_entity(
    payload: bytes, signer: Identity, at: datetime, opaque: bool, random: RandomBytes
) -> bytes:
    """The payload signed: a multipart/signed entity, or an opaque signed-data entity."""
    der = sign_content(payload, signer, at, detached=not opaque)
    if opaque:
        return _pkcs7_mime("signed-data", der)
    digest = _MICALG[_digest_for(signer.key)]
    boundary = _boundary(random, payload)
    return (
        (
            f'Content-Type: multipart/signed; protocol="application/pkcs7-signature"; '
            f'micalg={digest};\r\n boundary="{boundary}"\r\n\r\n'
            "This is a cryptographically signed message in MIME format.\r\n\r\n"
            f"--{boundary}\r\n"
        ).encode("ascii")
        + payload
        + (
            f"\r\n--{boundary}\r\n"
            'Content-Type: application/pkcs7-signature; name="smime.p7s"\r\n'
            'Content-Disposition: attachment; filename="smime.p7s"\r\n'
            "Content-Transfer-Encoding: base64\r\n\r\n"
        ).encode("ascii")
        + _base64(der)
        + f"\r\n--{boundary}--\r\n".encode("ascii")
    )


def sign_content(content: bytes, signer: Identity, at: datetime, *, detached: bool) -> bytes:
    """DER of a CMS ContentInfo holding SignedData over ``content`` by ``signer``.

    The signed attributes are contentType, signingTime, messageDigest, SMIMECapabilities,
    SMIMEEncryptionKeyPreference and Microsoft's variant of it, and signingCertificateV2; the
    certificates are the signer's and its ``chain``. Raises :class:`UnsupportedInput` for a key
    type we cannot sign with.
    """
    digest_name = _digest_for(signer.key)
    digest_alg = _DIGEST_ALGORITHMS[digest_name]
    issuer_serial = issuer_and_serial(signer.certificate)
    attributes = [
        attribute(_OID_CONTENT_TYPE, _OID_DATA),
        attribute(_OID_SIGNING_TIME, der_time(at)),
        attribute(_OID_MESSAGE_DIGEST, tlv(0x04, hashlib.new(digest_name, content).digest())),
        attribute(_OID_SMIME_CAPABILITIES, _OUR_CAPABILITIES_DER),
        # SMIMEEncryptionKeyPreference: the [0] IMPLICIT issuerAndSerialNumber choice.
        attribute(_OID_ENCRYPTION_KEY_PREFERENCE, retag(issuer_serial, 0xA0)),
        attribute(_OID_MS_ENCRYPTION_KEY_PREFERENCE, issuer_serial),
        attribute(_OID_SIGNING_CERTIFICATE_V2, _signing_certificate_v2(signer.certificate)),
    ]
    # DER orders a SET OF by its elements' encodings; the signature covers the SET OF (tag 17),
    # while the SignerInfo carries the same contents under [0] IMPLICIT.
    attrs_content = b"".join(sorted(attributes))
    signature, sig_alg = _sign(signer.key, tlv(0x31, attrs_content), digest_name)
    signer_info = seq(
        INT_1, issuer_serial, digest_alg, tlv(0xA0, attrs_content), sig_alg, tlv(0x04, signature)
    )
    encap = seq(_OID_DATA) if detached else seq(_OID_DATA, tlv(0xA0, tlv(0x04, content)))
    certificates = [certificate_der(signer.certificate)] + [
        certificate_der(c) for c in signer.chain if c != signer.certificate
    ]
    signed_data = seq(
        INT_1,
        tlv(0x31, digest_alg),
        encap,
        tlv(0xA0, b"".join(sorted(set(certificates)))),
        tlv(0x31, signer_info),
    )
    return seq(_OID_SIGNED_DATA, tlv(0xA0, signed_data))


def _sign(key: object, data: bytes, digest_name: str) -> tuple[bytes, bytes]:
    """The signature over ``data`` and the DER AlgorithmIdentifier naming it."""
    if isinstance(key, rsa.RSAPrivateKey):
        sig = key.sign(data, asym_padding.PKCS1v15(), hashes.SHA256())
        # rsaEncryption with the digest named separately, as every S/MIME agent writes it.
        return sig, seq(oid("1.2.840.113549.1.1.1"), NULL)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        sig = key.sign(data, ec.ECDSA(hashes.SHA256()))
        return sig, seq(oid("1.2.840.10045.4.3.2"))  # ecdsa-with-SHA256, no parameters
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(data), seq(oid("1.3.101.112"))  # id-Ed25519 (RFC 8419)
    raise UnsupportedInput(f"cannot sign with a {type(key).__name__}")


# --- encryption ---------------------------------------------------------------------------------


def _encrypted_message(
    outer_fields: Sequence[tuple[str, str]],
    entity: bytes,
    recipients: Sequence[Recipient],
    cipher: _CipherSpec,
    random: RandomBytes,
    envelope: Sequence[str],
) -> SealedMessage:
    der, deliveries = encrypt_content(entity, recipients, cipher.name, random=random)
    smime_type = "authEnveloped-data" if cipher.aead else "enveloped-data"
    message = _message(outer_fields, _pkcs7_mime(smime_type, der))
    return SealedMessage(message, tuple(envelope), deliveries)


def encrypt_content(
    content: bytes,
    recipients: Sequence[Recipient],
    cipher_name: str,
    *,
    random: RandomBytes = secrets.token_bytes,
) -> tuple[bytes, tuple[KeyDelivery, ...]]:
    """DER of a CMS ContentInfo holding EnvelopedData (CBC) or AuthEnvelopedData (GCM) of
    ``content`` to every recipient, and how the key went to each.

    RSA recipients get RSAES-OAEP (SHA-256) when they advertised ``rsaes-oaep``, else PKCS#1
    v1.5; EC recipients get ECDH (RFC 5753, ephemeral-static, X9.63 KDF) with AES key wrap.
    Raises :class:`UnsupportedInput` for a certificate key that cannot receive encrypted mail
    and for an unknown cipher name.
    """
    spec = _CIPHERS.get(cipher_name)
    if spec is None:
        raise UnsupportedInput(f"unknown content cipher {cipher_name!r}")
    cek = random(spec.key_size)
    infos = []
    deliveries = []
    for r in recipients:
        info, method = _recipient_info(r, cek, spec)
        infos.append(info)
        deliveries.append(KeyDelivery(r.address, method))
    recipient_infos = tlv(0x31, b"".join(sorted(infos)))
    if spec.aead:
        nonce = random(12)
        sealed = AESGCM(cek).encrypt(nonce, content, None)
        ciphertext, tag = sealed[:-16], sealed[-16:]
        # GCMParameters (RFC 5084): the nonce, and the 16-byte tag length spelt out.
        alg = seq(oid(spec.oid), seq(tlv(0x04, nonce), tlv(0x02, b"\x10")))
        eci = seq(_OID_DATA, alg, tlv(0x80, ciphertext))
        auth = seq(INT_0, recipient_infos, eci, tlv(0x04, tag))
        return seq(_OID_AUTH_ENVELOPED_DATA, tlv(0xA0, auth)), tuple(deliveries)
    block = 8 if spec.name == TRIPLE_DES else 16
    iv = random(block)
    padder = padding.PKCS7(block * 8).padder()
    padded = padder.update(content) + padder.finalize()
    algorithm = TripleDES(cek) if spec.name == TRIPLE_DES else algorithms.AES(cek)
    encryptor = Cipher(algorithm, modes.CBC(iv)).encryptor()
    ciphertext = encryptor.update(padded) + encryptor.finalize()
    eci = seq(_OID_DATA, seq(oid(spec.oid), tlv(0x04, iv)), tlv(0x80, ciphertext))
    # RFC 5652 sec 6.1: version 2 as soon as one RecipientInfo is not a version 0 KTRI.
    version = INT_2 if any(i[0] == 0xA1 for i in infos) else INT_0
    enveloped = seq(version, recipient_infos, eci)
    return seq(_OID_ENVELOPED_DATA, tlv(0xA0, enveloped)), tuple(deliveries)


def _recipient_info(recipient: Recipient, cek: bytes, spec: _CipherSpec) -> tuple[bytes, str]:
    """The DER RecipientInfo carrying ``cek`` to ``recipient``, and the key-transport name."""
    public = _public_key(recipient.certificate)
    rid = issuer_and_serial(recipient.certificate)
    if isinstance(public, rsa.RSAPublicKey):
        if RSA_OAEP in recipient.capabilities:
            oaep = asym_padding.OAEP(
                mgf=asym_padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None
            )
            encrypted, kea, method = public.encrypt(cek, oaep), _OAEP_SHA256, "rsa-oaep-sha256"
        else:
            encrypted = public.encrypt(cek, asym_padding.PKCS1v15())
            kea, method = _RSA_ENCRYPTION, "rsa-pkcs1v15"
        return seq(INT_0, rid, kea, tlv(0x04, encrypted)), method
    if isinstance(public, ec.EllipticCurvePublicKey):
        return _kari(public, rid, cek, spec)
    raise UnsupportedInput(
        f"the certificate of {recipient.address} has a {type(public).__name__}, which cannot "
        "receive encrypted mail"
    )


def _kari(
    public: ec.EllipticCurvePublicKey, rid: bytes, cek: bytes, spec: _CipherSpec
) -> tuple[bytes, str]:
    """A KeyAgreeRecipientInfo ([1] IMPLICIT): ephemeral-static ECDH (RFC 5753 sec 3.1.1)."""
    curve = CURVES.get(public.curve.name)
    if curve is None:
        raise UnsupportedInput(f"cannot encrypt to an EC key on curve {public.curve.name}")
    hash_name = curve.kdf_hash
    scheme_oid = _STD_DH_SCHEMES[hash_name]
    ephemeral = ec.generate_private_key(public.curve)
    shared = ephemeral.exchange(ec.ECDH(), public)
    wrap_alg = seq(oid(spec.wrap_oid))
    shared_info = ecc_cms_shared_info(AnyAlgorithmIdentifier.load(wrap_alg), None)
    kek = x963_kdf(hash_name, shared, spec.kek_size, shared_info)
    point = ephemeral.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    # originatorKey [1] IMPLICIT OriginatorPublicKey { id-ecPublicKey + named curve, point }.
    originator_alg = seq(oid("1.2.840.10045.2.1"), oid(curve.oid))
    originator = tlv(0xA0, tlv(0xA1, originator_alg + tlv(0x03, b"\x00" + point)))
    key_encryption = seq(oid(scheme_oid), wrap_alg)
    encrypted_key = seq(seq(rid, tlv(0x04, aes_key_wrap(kek, cek))))
    kari = tlv(0xA1, INT_3 + originator + key_encryption + encrypted_key)
    return kari, f"ecdh-{curve.short}-{hash_name}"


@functools.lru_cache(maxsize=256)
def _public_key(cert: x509.Certificate) -> CertificatePublicKeyTypes:
    # Parsing the key out of the certificate costs a third of an RSA public-key operation.
    return cert.public_key()


_OID_DATA = oid("1.2.840.113549.1.7.1")
_OID_SIGNED_DATA = oid("1.2.840.113549.1.7.2")
_OID_ENVELOPED_DATA = oid("1.2.840.113549.1.7.3")
_OID_AUTH_ENVELOPED_DATA = oid("1.2.840.113549.1.9.16.1.23")
_OID_CONTENT_TYPE = oid("1.2.840.113549.1.9.3")
_OID_MESSAGE_DIGEST = oid("1.2.840.113549.1.9.4")
_OID_SIGNING_TIME = oid("1.2.840.113549.1.9.5")
_OID_SMIME_CAPABILITIES = oid("1.2.840.113549.1.9.15")
_OID_ENCRYPTION_KEY_PREFERENCE = oid("1.2.840.113549.1.9.16.2.11")
_OID_SIGNING_CERTIFICATE_V2 = oid("1.2.840.113549.1.9.16.2.47")
_OID_MS_ENCRYPTION_KEY_PREFERENCE = oid(_MS_ENCRYPTION_KEY_PREFERENCE)
_DIGEST_ALGORITHMS = {
    "sha256": seq(oid("2.16.840.1.101.3.4.2.1"), NULL),
    "sha512": seq(oid("2.16.840.1.101.3.4.2.3"), NULL),
}
_OUR_CAPABILITIES_DER = seq(*(seq(oid(CAPABILITY_OIDS[name])) for name in OUR_CAPABILITIES))
_RSA_ENCRYPTION = seq(oid("1.2.840.113549.1.1.1"), NULL)
# RSAES-OAEP with SHA-256 and MGF1-SHA-256 (RFC 4055 sec 4.1; the SHA-1 defaults are not used).
_SHA256_ALG = seq(oid("2.16.840.1.101.3.4.2.1"), NULL)
_OAEP_SHA256 = seq(
    oid("1.2.840.113549.1.1.7"),
    seq(tlv(0xA0, _SHA256_ALG), tlv(0xA1, seq(oid("1.2.840.113549.1.1.8"), _SHA256_ALG))),
)

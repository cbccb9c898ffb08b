"""Decrypting CMS EnvelopedData and AuthEnvelopedData (RFC 5652, RFC 5083) with our own keys.

asn1crypto reads the structure; cryptography does the arithmetic. cryptography's own
``pkcs7_decrypt_der`` is not used: it cannot do OAEP, ECDH, AES-192, GCM, subject key identifiers
or BER, all of which real mail uses.

The message is untrusted, so :func:`decrypt` reports every problem with it as a
:class:`~smime_companion.core.model.Decryption` status in a ``DecryptOutcome`` and never raises for
it. Recipients are matched to our certificates by issuer and serial number or by subject key
identifier; a key is never tried against a RecipientInfo that does not name its certificate (a
blind RSA PKCS#1 v1.5 trial would be slow and would hand a padding oracle to whoever sent the mail).
"""

from __future__ import annotations

import functools
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from asn1crypto import cms, core
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import InvalidTag, UnsupportedAlgorithm
from cryptography.hazmat.decrepit.ciphers.algorithms import RC2, TripleDES
from cryptography.hazmat.primitives import padding as sym_padding
from cryptography.hazmat.primitives.asymmetric import ec, rsa, x448, x25519
from cryptography.hazmat.primitives.asymmetric import padding as rsa_padding
from cryptography.hazmat.primitives.ciphers import Cipher, CipherAlgorithm, modes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.ciphers.algorithms import AES
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap
from cryptography.hazmat.primitives.serialization import Encoding

from smime_companion.core import rc2
from smime_companion.core.cms import ASN1_ERRORS, der_elements, oid_dotted
from smime_companion.core.cms_algorithms import (
    CONTENT_CIPHERS,
    CURVE_NAMES,
    CURVE_OIDS,
    ECDH_SCHEMES,
    HASHES,
    HKDF_SCHEMES,
    KEY_WRAPS,
    X_CURVES,
    ContentCipher,
    GcmParameters,
    decode_key_wrap_algorithm,
    describe_oid,
    ecc_cms_shared_info,
    hkdf,
    rc2_cipher,
    unwrap_key,
    x963_kdf,
)
from smime_companion.core.model import DECRYPTION_SEVERITY, Decryption, DecryptOutcome, Identity
from smime_companion.errors import one_line

# A hostile message may name our certificate in thousands of RecipientInfos to make us do
# thousands of private-key operations; past this many tries per key we stop.
MAX_ATTEMPTS_PER_IDENTITY = 64
# Matching is cheap, but a message with more recipients than this is not mail: refuse it.
MAX_RECIPIENTS = 10_000

_RSA_PKCS1 = "1.2.840.113549.1.1.1"
_RSA_OAEP = "1.2.840.113549.1.1.7"
_EC_PUBLIC_KEY = "1.2.840.10045.2.1"
_RC2_CBC = "1.2.840.113549.3.2"

# What asn1crypto raises when a lazily parsed structure turns out to be broken.
_PARSE_ERRORS = ASN1_ERRORS

_KIND_NAMES = {
    "enveloped_data": "EnvelopedData",
    "authenticated_enveloped_data": "AuthEnvelopedData",
}


class _Failure(Exception):
    """Internal control flow: this envelope or this recipient attempt ends with ``status``."""

    def __init__(self, status: Decryption, message: str, key_transport: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.key_transport = key_transport


@dataclass(frozen=True)
class _Recipient:
    """One recipient named in the message: a KeyTransRecipientInfo, or one RecipientEncryptedKey
    of a KeyAgreeRecipientInfo (``info`` is then the whole KeyAgreeRecipientInfo)."""

    info: cms.KeyTransRecipientInfo | cms.KeyAgreeRecipientInfo
    encrypted_key: bytes
    issuer: asn1_x509.Name | bytes | None  # bytes: the Name's DER, read without asn1crypto
    serial: int | None
    ski: bytes | None
    # The keyEncryptionAlgorithm OID when read from the DER with the rest (None: ask ``info``).
    algorithm_oid: str | None = None


@dataclass(frozen=True)
class _Envelope:
    """The parts of an (Auth)EnvelopedData that decryption needs, read into plain values."""

    recipients: tuple[_Recipient, ...]
    other_recipients: int  # KEK, password and other RecipientInfos, which we never match
    cipher: ContentCipher | None  # None when ``cipher_problem`` says why we cannot decrypt
    cipher_problem: _Failure | None
    iv: bytes  # the CBC IV or the GCM nonce
    ciphertext: bytes | memoryview  # a view into the CMS object when parse_cms cut it out
    tag: bytes  # the GCM tag (AuthEnvelopedData's mac), empty for CBC
    aad: bytes  # the DER of the authenticated attributes, empty when there are none


@dataclass(frozen=True)
class _OurKey:
    """One of our identities with the ways a RecipientInfo can name its certificate."""

    identity: Identity
    issuer: asn1_x509.Name
    serial: int
    skis: frozenset[bytes]


@dataclass(frozen=True)
class _Cek:
    """A recovered content-encryption key and how it was transported."""

    key: bytes
    key_transport: str
    weak: bool


def decrypt(
    info: cms.ContentInfo,
    identities: Sequence[Identity],
    *,
    ciphertext: bytes | memoryview | None = None,
) -> DecryptOutcome:
    """Decrypt an EnvelopedData or AuthEnvelopedData with whichever of ``identities`` it is for.

    ``info`` comes from :func:`smime_companion.core.cms.parse_content_info`, or from
    :func:`~smime_companion.core.cms.parse_cms` with the encryptedContent cut out and given as
    ``ciphertext`` (which then replaces the field; a large message is not copied again). Returns a
    :class:`DecryptOutcome`: ``ok`` with the plaintext; ``no-key`` when no RecipientInfo names one
    of our certificates; ``failed`` when one does but the key, the padding or the GCM tag does not
    check out; ``malformed`` for broken structure; ``unsupported`` naming an algorithm OID we do
    not implement. Never raises for anything in the message; raises ``ValueError`` only when
    ``info`` is not enveloped or auth-enveloped data (a caller's mistake).
    """
    content_type = info["content_type"].native
    if content_type not in _KIND_NAMES:
        raise ValueError(f"decrypt() takes enveloped or auth-enveloped data, not {content_type!r}")
    kind = _KIND_NAMES[content_type]
    try:
        envelope = _read_envelope(
            info["content"], auth=content_type != "enveloped_data", ciphertext=ciphertext
        )
    except _Failure as failure:
        return DecryptOutcome(status=failure.status, error=failure.message)
    except _PARSE_ERRORS as exc:
        return DecryptOutcome(
            status=Decryption.MALFORMED, error=f"malformed {kind}: {one_line(exc)}"
        )

    our_keys = [_our_key(identity) for identity in identities]
    candidates, skipped = _match(envelope.recipients, our_keys)
    if not candidates:
        return DecryptOutcome(status=Decryption.NO_KEY, error=_no_key_message(envelope, our_keys))
    if envelope.cipher is None:
        assert envelope.cipher_problem is not None
        return DecryptOutcome(
            status=envelope.cipher_problem.status, error=envelope.cipher_problem.message
        )
    cipher = envelope.cipher

    failures: list[_Failure] = []
    for recipient, ours in candidates:
        try:
            cek = _recover_cek(recipient, ours.identity, cipher)
        except _Failure as failure:
            failures.append(failure)
            continue
        try:
            plaintext = _decrypt_content(envelope, cipher, cek.key)
        except _Failure as failure:
            failure.key_transport = cek.key_transport
            failures.append(failure)
            continue
        return DecryptOutcome(
            status=Decryption.OK,
            plaintext=plaintext,
            content_cipher=cipher.name,
            key_transport=cek.key_transport,
            integrity_protected=cipher.aead,
            weak=cipher.weak or cek.weak,
        )

    worst = _worst(failures)
    message = worst.message
    if skipped:
        message += f" (gave up after {MAX_ATTEMPTS_PER_IDENTITY} tries with one key)"
    return DecryptOutcome(
        status=worst.status,
        content_cipher=cipher.name,
        key_transport=worst.key_transport,
        weak=cipher.weak,
        error=message,
    )


# --- reading the envelope ---------------------------------------------------------------------


def _read_envelope(
    content: cms.EnvelopedData | cms.AuthEnvelopedData,
    *,
    auth: bool,
    ciphertext: bytes | memoryview | None = None,
) -> _Envelope:
    """Read the recipients and the encrypted content (``ciphertext`` when the caller cut it out
    beforehand). Raises _Failure or a parse error."""
    eci = content["auth_encrypted_content_info" if auth else "encrypted_content_info"]
    algorithm = eci["content_encryption_algorithm"]
    oid = algorithm["algorithm"].dotted
    if ciphertext is None:
        encrypted = eci["encrypted_content"]
        if isinstance(encrypted, core.Void):
            raise _Failure(
                Decryption.UNSUPPORTED, "the encrypted content is detached (not in the CMS)"
            )
        # A BER (streamed) message carries the ciphertext as a constructed OCTET STRING in
        # chunks; asn1crypto's native value joins them.
        ciphertext = bytes(encrypted.native)
    recipients, others = _read_recipients(content["recipient_infos"])

    cipher = CONTENT_CIPHERS.get(oid)
    problem: _Failure | None = None
    if cipher is None:
        problem = _Failure(
            Decryption.UNSUPPORTED,
            f"content encryption algorithm {describe_oid(oid)} is not supported",
        )
    elif auth and not cipher.aead:
        problem = _Failure(
            Decryption.UNSUPPORTED,
            f"{cipher.name} in AuthEnvelopedData: it needs an authenticated cipher",
        )
    elif not auth and cipher.aead:
        # RFC 5084 and RFC 8103 put the AEADs in AuthEnvelopedData only; EnvelopedData has no
        # field for the tag.
        problem = _Failure(
            Decryption.UNSUPPORTED,
            f"{cipher.name} in EnvelopedData, which has no place for its tag",
        )
    if cipher is None or problem is not None:
        return _Envelope(recipients, others, None, problem, b"", b"", b"", b"")

    if cipher.mode == "cbc":
        iv = algorithm["parameters"]
        if cipher.oid == _RC2_CBC:
            cipher, iv_bytes = _rc2_parameters(iv)
        else:
            iv_bytes = bytes(iv.native) if isinstance(iv, core.OctetString) else b""
        block = cipher.block_size
        if len(iv_bytes) != block:
            raise _Failure(Decryption.MALFORMED, f"the {cipher.name} IV has {len(iv_bytes)} bytes")
        if not ciphertext or len(ciphertext) % block:
            raise _Failure(
                Decryption.MALFORMED,
                f"{cipher.name} ciphertext of {len(ciphertext)} bytes is not whole blocks",
            )
        return _Envelope(recipients, others, cipher, None, iv_bytes, ciphertext, b"", b"")

    params_value = algorithm["parameters"]
    if cipher.mode == "chacha20-poly1305":
        return _chacha_envelope(content, recipients, others, cipher, params_value, ciphertext)
    if isinstance(params_value, core.Void):
        raise _Failure(Decryption.MALFORMED, f"{cipher.name} without GCMParameters")
    params = GcmParameters.load(params_value.dump(), strict=True)
    nonce = bytes(params["aes_nonce"].native)
    icv_len = int(params["aes_icvlen"].native)
    tag = bytes(content["mac"].native)
    # RFC 5084 allows GCM tags of 12 to 16 bytes (AES-GCMICVlen); fewer would ease forgery.
    if not 12 <= icv_len <= 16:
        raise _Failure(Decryption.MALFORMED, f"GCM tag length {icv_len} is outside 12..16")
    if len(tag) != icv_len:
        raise _Failure(
            Decryption.MALFORMED, f"the GCM tag has {len(tag)} bytes, the parameters say {icv_len}"
        )
    if not 8 <= len(nonce) <= 128:
        raise _Failure(Decryption.UNSUPPORTED, f"GCM nonce of {len(nonce)} bytes")
    return _Envelope(
        recipients, others, cipher, None, nonce, ciphertext, tag, _auth_attrs_aad(content)
    )


def _rc2_parameters(parameters: core.Asn1Value) -> tuple[ContentCipher, bytes]:
    """The RC2 variant and IV of rc2-cbc parameters. Raises _Failure when they are unusable."""
    try:
        return rc2_cipher(parameters.dump())
    except ValueError as exc:
        raise _Failure(Decryption.MALFORMED, f"rc2-cbc parameters: {one_line(exc)}") from None


def _chacha_envelope(
    content: cms.AuthEnvelopedData,
    recipients: tuple[_Recipient, ...],
    others: int,
    cipher: ContentCipher,
    parameters: core.Asn1Value,
    ciphertext: bytes | memoryview,
) -> _Envelope:
    """RFC 8103: the parameters are the 12-byte nonce (an OCTET STRING), the mac the 16-byte
    Poly1305 tag. Raises _Failure for anything else."""
    try:
        [(tag_number, _, nonce)] = der_elements(parameters.dump())
    except ValueError:
        tag_number, nonce = 0, b""
    if tag_number != 0x04 or len(nonce) != 12:
        raise _Failure(Decryption.MALFORMED, f"{cipher.name} needs a 12-byte nonce parameter")
    tag = bytes(content["mac"].native)
    if len(tag) != 16:
        raise _Failure(Decryption.MALFORMED, f"the {cipher.name} tag has {len(tag)} bytes, not 16")
    return _Envelope(
        recipients, others, cipher, None, nonce, ciphertext, tag, _auth_attrs_aad(content)
    )


def _auth_attrs_aad(content: cms.AuthEnvelopedData) -> bytes:
    """RFC 5083 section 2.1: the AAD is the DER of authAttrs with an EXPLICIT SET OF tag (0x31)
    in place of the IMPLICIT [1] the message carries, and empty when there are none."""
    attrs = content["auth_attrs"]
    if isinstance(attrs, core.Void):
        return b""
    # authAttrs MUST be DER even in a BER message, so the bytes as sent are the bytes to check.
    encoded = attrs.dump()
    return b"\x31" + encoded[1:]


def _read_recipients(infos: cms.RecipientInfos) -> tuple[tuple[_Recipient, ...], int]:
    """Every key-transport and key-agreement recipient, and the count of the other kinds."""
    recipients: list[_Recipient] = []
    others = 0
    for ri in infos:
        if ri.name == "ktri":
            ktri = ri.chosen
            fields = _key_transport_fields(ktri.contents)
            if fields is None:  # not plain DER: asn1crypto reads it
                issuer, serial, ski = _recipient_id(ktri["rid"])
                recipients.append(
                    _Recipient(ktri, bytes(ktri["encrypted_key"].native), issuer, serial, ski)
                )
            else:
                issuer_der, serial_number, key_id, encrypted_key, algorithm_oid = fields
                recipients.append(
                    _Recipient(
                        ktri, encrypted_key, issuer_der, serial_number, key_id, algorithm_oid
                    )
                )
        elif ri.name == "kari":
            kari = ri.chosen
            for rek in kari["recipient_encrypted_keys"]:
                issuer, serial, ski = _recipient_id(rek["rid"])
                recipients.append(
                    _Recipient(kari, bytes(rek["encrypted_key"].native), issuer, serial, ski)
                )
                if len(recipients) > MAX_RECIPIENTS:
                    break
        else:
            others += 1
        if len(recipients) + others > MAX_RECIPIENTS:
            raise _Failure(Decryption.MALFORMED, f"more than {MAX_RECIPIENTS} recipients")
    return tuple(recipients), others


def _key_transport_fields(
    contents: bytes,
) -> tuple[bytes | None, int | None, bytes | None, bytes, str] | None:
    """(issuer DER, serial, subject key identifier, encrypted key, key encryption OID) of a DER
    KeyTransRecipientInfo, read without asn1crypto (one per recipient of every message); None
    when the encoding is not the plain DER shape, for asn1crypto to read instead."""
    try:
        (version_tag, _, _), (rid_tag, _, rid), (alg_tag, _, alg), (key_tag, _, key) = der_elements(
            contents
        )
        if version_tag != 0x02 or alg_tag != 0x30 or key_tag != 0x04:
            return None
        oid_tag, _, oid = der_elements(alg)[0]
        if oid_tag != 0x06:
            return None
        algorithm_oid = oid_dotted(oid)
        if rid_tag == 0x80:  # [0] IMPLICIT SubjectKeyIdentifier
            return None, None, rid, key, algorithm_oid
        if rid_tag != 0x30:
            return None
        (name_tag, name, _), (serial_tag, _, serial) = der_elements(rid)
        if name_tag != 0x30 or serial_tag != 0x02 or not serial:
            return None
        return name, int.from_bytes(serial, "big", signed=True), None, key, algorithm_oid
    except (ValueError, IndexError):  # a different number of elements, or not DER
        return None


def _recipient_id(rid: core.Choice) -> tuple[asn1_x509.Name | None, int | None, bytes | None]:
    """(issuer, serial, None) or (None, None, subject key identifier) from a recipient id."""
    if rid.name == "issuer_and_serial_number":
        ias = rid.chosen
        return ias["issuer"], int(ias["serial_number"].native), None
    if rid.name == "subject_key_identifier":  # KeyTransRecipientInfo
        return None, None, bytes(rid.chosen.native)
    # KeyAgreeRecipientInfo's rKeyId: a RecipientKeyIdentifier around the key identifier.
    return None, None, bytes(rid.chosen["subject_key_identifier"].native)


# --- matching recipients with our keys ----------------------------------------------------------


def _our_key(identity: Identity) -> _OurKey:
    """How RecipientInfos may name ``identity``'s certificate."""
    issuer, serial, skis = _certificate_ids(identity.certificate)
    return _OurKey(identity, issuer, serial, skis)


@functools.lru_cache(maxsize=64)
def _certificate_ids(cert: x509.Certificate) -> tuple[asn1_x509.Name, int, frozenset[bytes]]:
    """(issuer, serial, subject key identifiers) of one of our certificates. Cached: the same
    few identities open every message, and reading them costs as much as the matching."""
    parsed = asn1_x509.Certificate.load(cert.public_bytes(Encoding.DER))
    skis: set[bytes] = set()
    try:
        skis.add(cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest)
    except x509.ExtensionNotFound:
        pass
    # Senders that compute the identifier themselves use RFC 5280's method 1 (SHA-1 of the key).
    try:
        skis.add(x509.SubjectKeyIdentifier.from_public_key(cert.public_key()).digest)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        pass
    tbs = parsed["tbs_certificate"]
    return tbs["issuer"], int(tbs["serial_number"].native), frozenset(skis)


def _match(
    recipients: Sequence[_Recipient], our_keys: Sequence[_OurKey]
) -> tuple[list[tuple[_Recipient, _OurKey]], bool]:
    """Pairs (recipient, our key) where the recipient names our certificate, in message order,
    at most MAX_ATTEMPTS_PER_IDENTITY per key; and whether any pair was dropped for that limit."""
    pairs: list[tuple[_Recipient, _OurKey]] = []
    tries = [0] * len(our_keys)
    skipped = False
    for recipient in recipients:
        for index, ours in enumerate(our_keys):
            if recipient.ski is not None:
                named = recipient.ski in ours.skis
            else:
                named = recipient.serial == ours.serial and _same_name(
                    recipient.issuer, ours.issuer
                )
            if not named:
                continue
            if tries[index] >= MAX_ATTEMPTS_PER_IDENTITY:
                skipped = True
                continue
            tries[index] += 1
            pairs.append((recipient, ours))
    return pairs, skipped


def _same_name(named: asn1_x509.Name | bytes | None, ours: asn1_x509.Name) -> bool:
    """RFC 5280 name equality. Identical DER (the usual case) is decided without computing the
    normalised form, which costs more than the rest of matching."""
    if named is None:
        return False
    try:
        named_der = named if isinstance(named, bytes) else named.dump()
        if named_der == ours.dump():
            return True
        parsed = asn1_x509.Name.load(named, strict=True) if isinstance(named, bytes) else named
        return bool(parsed.hashable == ours.hashable)
    except _PARSE_ERRORS:  # a name the message mangled matches nothing
        return False


def _no_key_message(envelope: _Envelope, our_keys: Sequence[_OurKey]) -> str:
    count = len(our_keys)
    message = f"no RecipientInfo matches any of our {count} key{'' if count == 1 else 's'}"
    if envelope.other_recipients:
        message += f" ({envelope.other_recipients} KEK, password or other recipient(s) not handled)"
    return message


# --- recovering the content-encryption key ------------------------------------------------------


def _recover_cek(recipient: _Recipient, identity: Identity, cipher: ContentCipher) -> _Cek:
    """The content-encryption key for ``recipient`` under ``identity``'s key. Raises _Failure."""
    try:
        if isinstance(recipient.info, cms.KeyTransRecipientInfo):
            return _key_transport(recipient, identity, cipher)
        return _key_agreement(recipient, identity)
    except UnsupportedAlgorithm as exc:
        # The OpenSSL under cryptography may lack a hash or curve the message asks for.
        raise _Failure(Decryption.UNSUPPORTED, f"not available here: {one_line(exc)}") from None
    except _PARSE_ERRORS as exc:
        raise _Failure(Decryption.MALFORMED, f"malformed RecipientInfo: {one_line(exc)}") from None


def _key_transport(recipient: _Recipient, identity: Identity, cipher: ContentCipher) -> _Cek:
    """RSA key transport, PKCS#1 v1.5 (RFC 5652) or RSAES-OAEP (RFC 3560 / RFC 8017)."""
    oid = recipient.algorithm_oid or recipient.info["key_encryption_algorithm"]["algorithm"].dotted
    key = identity.key
    if oid == _RSA_PKCS1:
        name = "rsa-pkcs1v15"
        _require_rsa(key, name)
        assert isinstance(key, rsa.RSAPrivateKey)
        # Against Bleichenbacher-style padding oracles: draw the fallback key first, and on any
        # padding failure or a key of the wrong size continue with it, so that a bad padding shows
        # only as a content decryption failure, like any wrong key.
        fallback = secrets.token_bytes(cipher.key_size)
        try:
            cek = key.decrypt(recipient.encrypted_key, rsa_padding.PKCS1v15())
        except ValueError:
            cek = fallback
        if len(cek) != cipher.key_size:
            cek = fallback
        return _Cek(cek, name, weak=False)
    if oid == _RSA_OAEP:
        oaep, name = _oaep_padding(recipient.info["key_encryption_algorithm"]["parameters"])
        _require_rsa(key, name)
        assert isinstance(key, rsa.RSAPrivateKey)
        try:
            cek = key.decrypt(recipient.encrypted_key, oaep)
        except ValueError:
            raise _Failure(
                Decryption.FAILED,
                "RSA-OAEP did not decrypt the content-encryption key: wrong key or altered message",
                name,
            ) from None
        return _Cek(cek, name, weak=False)
    raise _Failure(
        Decryption.UNSUPPORTED, f"key transport algorithm {describe_oid(oid)} is not supported"
    )


def _require_rsa(key: object, name: str) -> None:
    if not isinstance(key, rsa.RSAPrivateKey):
        raise _Failure(
            Decryption.FAILED,
            f"{name} recipient, but the matching certificate's key is not RSA",
            name,
        )


def _oaep_padding(parameters: core.Asn1Value) -> tuple[rsa_padding.OAEP, str]:
    """The OAEP padding the RSAES-OAEP-params describe (all SHA-1 when absent), and its name."""
    hash_name, mgf_hash_name, label = "sha1", "sha1", b""
    if not isinstance(parameters, core.Void):
        hash_name = parameters["hash_algorithm"]["algorithm"].native
        mgf = parameters["mask_gen_algorithm"]
        if mgf["algorithm"].native != "mgf1":
            raise _Failure(
                Decryption.UNSUPPORTED,
                f"RSA-OAEP mask generation {mgf['algorithm'].dotted} is not supported",
            )
        mgf_hash_name = mgf["parameters"]["algorithm"].native
        source = parameters["p_source_algorithm"]
        if source["algorithm"].native != "p_specified":
            raise _Failure(
                Decryption.UNSUPPORTED,
                f"RSA-OAEP label source {source['algorithm'].dotted} is not supported",
            )
        label = bytes(source["parameters"].native or b"")
    for chosen in (hash_name, mgf_hash_name):
        if chosen not in HASHES:
            raise _Failure(Decryption.UNSUPPORTED, f"RSA-OAEP with hash {chosen} is not supported")
    name = f"rsa-oaep-{hash_name}"
    if mgf_hash_name != hash_name:
        name += f"-mgf1-{mgf_hash_name}"
    padding = rsa_padding.OAEP(
        mgf=rsa_padding.MGF1(HASHES[mgf_hash_name]),
        algorithm=HASHES[hash_name],
        label=label or None,
    )
    return padding, name


def _key_agreement(recipient: _Recipient, identity: Identity) -> _Cek:
    """Ephemeral-static ECDH (RFC 5753): X9.63 KDF over ECC-CMS-SharedInfo, then key unwrap."""
    kari = recipient.info
    originator = kari["originator"]
    if originator.name != "originator_key":
        raise _Failure(
            Decryption.UNSUPPORTED,
            "key agreement with the originator's certificate (static-static ECDH) is not supported",
        )
    public_key_info = originator.chosen
    key_algorithm = public_key_info["algorithm"]["algorithm"].dotted
    if key_algorithm in X_CURVES:
        return _x_key_agreement(recipient, identity, X_CURVES[key_algorithm])
    if key_algorithm != _EC_PUBLIC_KEY:
        raise _Failure(
            Decryption.UNSUPPORTED,
            f"ECDH with originator key type {describe_oid(key_algorithm)} is not supported",
        )
    scheme_oid = kari["key_encryption_algorithm"]["algorithm"].dotted
    scheme = ECDH_SCHEMES.get(scheme_oid)
    if scheme is None:
        raise _Failure(
            Decryption.UNSUPPORTED,
            f"key agreement algorithm {describe_oid(scheme_oid)} is not supported",
        )
    key = identity.key
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise _Failure(
            Decryption.FAILED, "ECDH recipient, but the matching certificate's key is not EC"
        )
    curve = CURVE_NAMES.get(key.curve.name)
    if curve is None:
        raise _Failure(Decryption.UNSUPPORTED, f"ECDH on curve {key.curve.name} is not supported")
    # Cofactor DH multiplies by the curve's cofactor, which is 1 for the NIST prime curves, so
    # both variants compute the same shared secret here.
    name = f"ecdh-{curve}-{scheme.hash_name}" + ("-cofactor" if scheme.cofactor else "")

    curve_params = public_key_info["algorithm"]["parameters"]
    # OpenSSL leaves the originator's curve out (it must be the recipient's); when present it
    # has to name our curve.
    if not isinstance(curve_params, core.Void) and curve_params.name == "named":
        their_curve = CURVE_OIDS.get(curve_params.chosen.dotted, curve_params.chosen.dotted)
        if their_curve != key.curve.name:
            raise _Failure(
                Decryption.FAILED,
                f"originator key is on curve {their_curve}, our key on {key.curve.name}",
                name,
            )
    elif not isinstance(curve_params, core.Void) and curve_params.name == "specified":
        raise _Failure(
            Decryption.UNSUPPORTED, "originator key with explicit curve parameters", name
        )

    wrap_algorithm = decode_key_wrap_algorithm(kari["key_encryption_algorithm"]["parameters"])
    wrap_oid = wrap_algorithm["algorithm"].dotted
    wrap = KEY_WRAPS.get(wrap_oid)
    if wrap is None:
        raise _Failure(
            Decryption.UNSUPPORTED,
            f"key wrap algorithm {describe_oid(wrap_oid)} is not supported",
            name,
        )
    point = bytes(public_key_info["public_key"].native)
    try:
        peer = ec.EllipticCurvePublicKey.from_encoded_point(key.curve, point)
    except ValueError:
        raise _Failure(
            Decryption.MALFORMED, f"the originator key is not a point on {key.curve.name}", name
        ) from None
    shared_secret = key.exchange(ec.ECDH(), peer)
    ukm = kari["ukm"]
    ukm_bytes = None if isinstance(ukm, core.Void) else bytes(ukm.native)
    kek = x963_kdf(
        scheme.hash_name,
        shared_secret,
        wrap.kek_size,
        ecc_cms_shared_info(wrap_algorithm, ukm_bytes),
    )
    try:
        cek = unwrap_key(wrap, kek, recipient.encrypted_key)
    except (InvalidUnwrap, ValueError):
        raise _Failure(
            Decryption.FAILED,
            f"{wrap.name} unwrap failed: wrong key or altered message",
            name,
        ) from None
    return _Cek(cek, name, weak=wrap.kind == "3des")


def _x_key_agreement(recipient: _Recipient, identity: Identity, curve: str) -> _Cek:
    """Ephemeral-static X25519 / X448 (RFC 8418): HKDF, or the X9.63 KDF of RFC 5753, over
    ECC-CMS-SharedInfo, then key unwrap."""
    kari = recipient.info
    key = identity.key
    private_type = x25519.X25519PrivateKey if curve == "x25519" else x448.X448PrivateKey
    public_type = x25519.X25519PublicKey if curve == "x25519" else x448.X448PublicKey
    if not isinstance(key, private_type):
        raise _Failure(
            Decryption.FAILED,
            f"{curve} recipient, but the matching certificate's key is not {curve}",
        )
    scheme_oid = kari["key_encryption_algorithm"]["algorithm"].dotted
    x963 = ECDH_SCHEMES.get(scheme_oid)
    hkdf_hash = HKDF_SCHEMES.get(scheme_oid)
    if x963 is None and hkdf_hash is None:
        raise _Failure(
            Decryption.UNSUPPORTED,
            f"key agreement algorithm {describe_oid(scheme_oid)} is not supported with {curve}",
        )
    name = f"{curve}-hkdf-{hkdf_hash}" if hkdf_hash else f"{curve}-{x963.hash_name}"  # type: ignore[union-attr]
    wrap_algorithm = decode_key_wrap_algorithm(kari["key_encryption_algorithm"]["parameters"])
    wrap_oid = wrap_algorithm["algorithm"].dotted
    wrap = KEY_WRAPS.get(wrap_oid)
    if wrap is None:
        raise _Failure(
            Decryption.UNSUPPORTED,
            f"key wrap algorithm {describe_oid(wrap_oid)} is not supported",
            name,
        )
    point = bytes(kari["originator"].chosen["public_key"].native)
    try:
        shared_secret = key.exchange(public_type.from_public_bytes(point))  # type: ignore[arg-type]
    except ValueError:
        # A point of the wrong size, or one of small order (an all-zero shared secret).
        raise _Failure(
            Decryption.MALFORMED, f"the originator key is not a usable {curve} key", name
        ) from None
    ukm = kari["ukm"]
    ukm_bytes = None if isinstance(ukm, core.Void) else bytes(ukm.native)
    shared_info = ecc_cms_shared_info(wrap_algorithm, ukm_bytes)
    if hkdf_hash is None:
        assert x963 is not None
        keks = [x963_kdf(x963.hash_name, shared_secret, wrap.kek_size, shared_info)]
    else:
        # RFC 8418 puts the ukm into the SharedInfo; some senders also use it as HKDF's salt.
        # The key wrap's integrity check tells which one the sender meant.
        salts = [None, ukm_bytes] if ukm_bytes else [None]
        keks = [hkdf(hkdf_hash, shared_secret, wrap.kek_size, shared_info, s) for s in salts]
    for kek in keks:
        try:
            return _Cek(unwrap_key(wrap, kek, recipient.encrypted_key), name, weak=False)
        except (InvalidUnwrap, ValueError):
            continue
    raise _Failure(
        Decryption.FAILED, f"{wrap.name} unwrap failed: wrong key or altered message", name
    )


# --- decrypting the content ---------------------------------------------------------------------


def _decrypt_content(envelope: _Envelope, cipher: ContentCipher, cek: bytes) -> bytes:
    """The plaintext, after checking the CBC padding or the GCM tag. Raises _Failure."""
    try:
        return _decrypt_with(envelope, cipher, cek)
    except UnsupportedAlgorithm as exc:  # e.g. an OpenSSL built without Triple-DES
        raise _Failure(Decryption.UNSUPPORTED, f"{cipher.name}: {one_line(exc)}") from None


def _decrypt_with(envelope: _Envelope, cipher: ContentCipher, cek: bytes) -> bytes:
    if len(cek) != cipher.key_size:
        raise _Failure(
            Decryption.FAILED,
            f"content-encryption key of {len(cek)} bytes, {cipher.name} needs {cipher.key_size}",
        )
    if cipher.mode == "gcm":
        decryptor = Cipher(
            AES(cek), modes.GCM(envelope.iv, envelope.tag, min_tag_length=len(envelope.tag))
        ).decryptor()
        decryptor.authenticate_additional_data(envelope.aad)
        plaintext = decryptor.update(envelope.ciphertext)
        try:
            return plaintext + decryptor.finalize()
        except InvalidTag:
            raise _Failure(
                Decryption.FAILED, "GCM tag mismatch: content was altered or the key is wrong"
            ) from None

    if cipher.mode == "chacha20-poly1305":
        try:
            # One buffer of ciphertext and tag, as cryptography's AEAD interface takes it.
            return ChaCha20Poly1305(cek).decrypt(
                envelope.iv, bytes(envelope.ciphertext) + envelope.tag, envelope.aad
            )
        except InvalidTag:
            raise _Failure(
                Decryption.FAILED, "Poly1305 tag mismatch: content was altered or the key is wrong"
            ) from None
    if cipher.oid == _RC2_CBC and (cipher.effective_bits != 128 or len(cek) != 16):
        return _rc2_python_decrypt(envelope, cipher, cek)
    return _cbc_decrypt(_cbc_algorithm(cipher, cek), envelope.iv, envelope.ciphertext)


def _cbc_algorithm(cipher: ContentCipher, cek: bytes) -> CipherAlgorithm:
    """cryptography's block cipher for a CBC content cipher and its key."""
    if cipher.name == "3des-cbc":
        return TripleDES(cek)
    if cipher.name == "des-cbc":
        # Triple-DES with three equal keys is single DES (cryptography's 8-byte form of the
        # same thing is deprecated and warns).
        return TripleDES(cek * 3)
    if cipher.oid == _RC2_CBC:
        return RC2(cek)  # RC2-128: the one RC2 cryptography implements
    return AES(cek)


def _rc2_python_decrypt(envelope: _Envelope, cipher: ContentCipher, cek: bytes) -> bytes:
    """RC2 at 40 or 64 effective bits (core.rc2, in Python), padding checked here."""
    try:
        padded = rc2.cbc_decrypt(cek, cipher.effective_bits, envelope.iv, envelope.ciphertext)
    except ValueError as exc:
        raise _Failure(Decryption.UNSUPPORTED, f"{cipher.name}: {one_line(exc)}") from None
    unpadder = sym_padding.PKCS7(64).unpadder()
    try:
        tail = unpadder.update(padded[-8:]) + unpadder.finalize()
    except ValueError:
        raise _Failure(
            Decryption.FAILED, "CBC padding is invalid: wrong key or altered content"
        ) from None
    return padded[:-8] + tail


def _cbc_decrypt(algorithm: CipherAlgorithm, iv: bytes, ciphertext: bytes | memoryview) -> bytes:
    """CBC-decrypt and remove the PKCS#7 padding, copying the plaintext as little as possible.

    Everything but the last block is decrypted in one call; the last block, decrypted on its
    own by the same context, goes through the padding check, and its few plaintext bytes are
    appended. A 25 MB body so costs the plaintext once plus one concatenation, instead of the
    three copies a padding object over the whole plaintext makes. Raises _Failure for a bad
    padding.
    """
    block = len(iv)
    view = memoryview(ciphertext)
    decryptor = Cipher(algorithm, modes.CBC(iv)).decryptor()
    head = decryptor.update(view[:-block]) if len(view) > block else b""
    last = decryptor.update(view[-block:])
    # cryptography's unpadder checks the padding (in constant time) on that one block.
    unpadder = sym_padding.PKCS7(block * 8).unpadder()
    try:
        tail = unpadder.update(last) + unpadder.finalize()
    except ValueError:
        raise _Failure(
            Decryption.FAILED, "CBC padding is invalid: wrong key or altered content"
        ) from None
    return head + tail if tail else head


# --- helpers ------------------------------------------------------------------------------------


def _worst(failures: Sequence[_Failure]) -> _Failure:
    """The first failure of the most severe status (the order of the overall verdict)."""
    for status in DECRYPTION_SEVERITY:
        for failure in failures:
            if failure.status == status:
                return failure
    return failures[0]

"""An (Auth)EnvelopedData (RFC 5652, RFC 5083) read into the plain values decryption needs.

The recipients (each KeyTransRecipientInfo, each RecipientEncryptedKey of a
KeyAgreeRecipientInfo, read from the DER directly where it is plain DER), the content cipher and
its parameters (IV, GCM nonce and tag, ChaCha20-Poly1305 nonce and tag), the ciphertext and the
authenticated attributes. Also the values decryption passes between its steps: a
:class:`DecryptFailure` that ends an attempt with a status, and a recovered :class:`ContentKey`.
"""

from __future__ import annotations

from dataclasses import dataclass

from asn1crypto import cms, core
from asn1crypto import x509 as asn1_x509

from smime_companion.core.ber_walker import der_elements, oid_dotted
from smime_companion.core.cms_algorithms import (
    CONTENT_CIPHERS,
    RC2_CBC_OID,
    ContentCipher,
    GcmParameters,
    describe_oid,
    rc2_cipher,
)
from smime_companion.core.verdicts import Decryption
from smime_companion.errors import one_line

# Matching is cheap, but a message with more recipients than this is not mail: refuse it.
MAX_RECIPIENTS = 10_000


class DecryptFailure(Exception):
    """Ends this envelope or this recipient attempt with ``status`` (internal control flow of
    decryption: :func:`smime_companion.core.decrypt.decrypt` turns it into its outcome)."""

    def __init__(self, status: Decryption, message: str, key_transport: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.key_transport = key_transport


@dataclass(frozen=True)
class EnvelopeRecipient:
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
class Envelope:
    """The parts of an (Auth)EnvelopedData that decryption needs, read into plain values."""

    recipients: tuple[EnvelopeRecipient, ...]
    other_recipients: int  # KEK, password and other RecipientInfos, which we never match
    cipher: ContentCipher | None  # None when ``cipher_problem`` says why we cannot decrypt
    cipher_problem: DecryptFailure | None
    iv: bytes  # the CBC IV or the GCM nonce
    ciphertext: bytes | memoryview  # a view into the CMS object when parse_cms cut it out
    tag: bytes  # the GCM tag (AuthEnvelopedData's mac), empty for CBC
    aad: bytes  # the DER of the authenticated attributes, empty when there are none


@dataclass(frozen=True)
class ContentKey:
    """A recovered content-encryption key and how it was transported."""

    key: bytes
    key_transport: str
    weak: bool


def read_envelope(
    content: cms.EnvelopedData | cms.AuthEnvelopedData,
    *,
    auth: bool,
    ciphertext: bytes | memoryview | None = None,
) -> Envelope:
    """Read the recipients and the encrypted content (``ciphertext`` when the caller cut it out
    beforehand). Returns an :class:`Envelope` whose ``cipher_problem`` says why the content
    cipher cannot be used, if it cannot. Raises :class:`DecryptFailure` for a detached or
    malformed content, or a parse error of asn1crypto (``ASN1_ERRORS``)."""
    eci = content["auth_encrypted_content_info" if auth else "encrypted_content_info"]
    algorithm = eci["content_encryption_algorithm"]
    oid = algorithm["algorithm"].dotted
    if ciphertext is None:
        ciphertext = _encrypted_content(eci)
    recipients, others = _read_recipients(content["recipient_infos"])

    cipher = CONTENT_CIPHERS.get(oid)
    problem = _cipher_problem(oid, cipher, auth)
    if cipher is None or problem is not None:
        return Envelope(recipients, others, None, problem, b"", b"", b"", b"")
    parameters = algorithm["parameters"]
    if cipher.mode == "cbc":
        return _cbc_envelope(recipients, others, cipher, parameters, ciphertext)
    if cipher.mode == "chacha20-poly1305":
        nonce, tag = _chacha_nonce_and_tag(content, cipher, parameters)
    else:
        nonce, tag = _aes_aead_nonce_and_tag(content, cipher, parameters)
    aad = _auth_attrs_aad(content)
    return Envelope(recipients, others, cipher, None, nonce, ciphertext, tag, aad)


def _encrypted_content(eci: cms.EncryptedContentInfo) -> bytes:
    """The ciphertext in the message. Raises DecryptFailure when it is detached."""
    encrypted = eci["encrypted_content"]
    if isinstance(encrypted, core.Void):
        raise DecryptFailure(
            Decryption.UNSUPPORTED, "the encrypted content is detached (not in the CMS)"
        )
    # A BER (streamed) message carries the ciphertext as a constructed OCTET STRING in
    # chunks; asn1crypto's native value joins them.
    return bytes(encrypted.native)


def _cipher_problem(oid: str, cipher: ContentCipher | None, auth: bool) -> DecryptFailure | None:
    """Why the content cipher ``oid`` cannot decrypt this envelope, or None when it can."""
    if cipher is None:
        return DecryptFailure(
            Decryption.UNSUPPORTED,
            f"content encryption algorithm {describe_oid(oid)} is not supported",
        )
    if auth and not cipher.aead:
        return DecryptFailure(
            Decryption.UNSUPPORTED,
            f"{cipher.name} in AuthEnvelopedData: it needs an authenticated cipher",
        )
    if not auth and cipher.aead:
        # RFC 5084 and RFC 8103 put the AEADs in AuthEnvelopedData only; EnvelopedData has no
        # field for the tag.
        return DecryptFailure(
            Decryption.UNSUPPORTED,
            f"{cipher.name} in EnvelopedData, which has no place for its tag",
        )
    return None


def _cbc_envelope(
    recipients: tuple[EnvelopeRecipient, ...],
    others: int,
    cipher: ContentCipher,
    iv: core.Asn1Value,
    ciphertext: bytes | memoryview,
) -> Envelope:
    """A CBC cipher's envelope: an IV of one block, whole blocks of ciphertext. Raises
    DecryptFailure for anything else."""
    if cipher.oid == RC2_CBC_OID:
        cipher, iv_bytes = _rc2_parameters(iv)
    else:
        iv_bytes = _octets(iv)
    block = cipher.block_size
    if len(iv_bytes) != block:
        raise DecryptFailure(
            Decryption.MALFORMED, f"the {cipher.name} IV has {len(iv_bytes)} bytes"
        )
    if not ciphertext or len(ciphertext) % block:
        raise DecryptFailure(
            Decryption.MALFORMED,
            f"{cipher.name} ciphertext of {len(ciphertext)} bytes is not whole blocks",
        )
    return Envelope(recipients, others, cipher, None, iv_bytes, ciphertext, b"", b"")


def _octets(value: core.Asn1Value) -> bytes:
    """An OCTET STRING parameter (a CBC IV), also when asn1crypto does not know the algorithm
    and left it unparsed (Camellia, SEED); b"" for anything else."""
    if isinstance(value, core.OctetString):
        return bytes(value.native)
    if isinstance(value, core.Any):
        try:
            return bytes(core.OctetString.load(value.dump(), strict=True).native)
        except (ValueError, TypeError):
            return b""
    return b""


# The nonce lengths RFC 5084 allows: any for GCM (12 recommended; we read 8 to 128), 7 to 13
# for CCM, whose nonce and length field share 15 bytes.
_NONCE_SIZES = {"gcm": range(8, 129), "ccm": range(7, 14)}


def _aes_aead_nonce_and_tag(
    content: cms.AuthEnvelopedData, cipher: ContentCipher, parameters: core.Asn1Value
) -> tuple[bytes, bytes]:
    """RFC 5084: the nonce of the GCMParameters or CCMParameters and the tag in the mac, of the
    length the parameters say. Raises DecryptFailure for anything else."""
    mode = cipher.mode.upper()
    if isinstance(parameters, core.Void):
        raise DecryptFailure(Decryption.MALFORMED, f"{cipher.name} without {mode}Parameters")
    params = GcmParameters.load(parameters.dump(), strict=True)
    nonce = bytes(params["aes_nonce"].native)
    icv_len = int(params["aes_icvlen"].native)
    tag = bytes(content["mac"].native)
    try:
        length_left_out = len(der_elements(params.contents)) == 1
    except ValueError:  # not DER (indefinite lengths): read as the parameters say
        length_left_out = False
    if length_left_out and 12 < len(tag) <= 16:
        # The length left out (meaning 12) beside a longer tag: its writer forgot to write the
        # length (TaaviE/smime-rs's CCM messages). The tag is still checked, in full.
        icv_len = len(tag)
    # RFC 5084 allows GCM tags of 12 to 16 bytes and CCM tags of 4 to 16 (even lengths); fewer
    # than 12 would ease forgery, so both are read from 12 bytes up.
    if not 12 <= icv_len <= 16 or (cipher.mode == "ccm" and icv_len % 2):
        raise DecryptFailure(
            Decryption.MALFORMED, f"{mode} tag length {icv_len} is outside what we accept (12..16)"
        )
    if len(tag) != icv_len:
        raise DecryptFailure(
            Decryption.MALFORMED,
            f"the {mode} tag has {len(tag)} bytes, the parameters say {icv_len}",
        )
    if len(nonce) not in _NONCE_SIZES[cipher.mode]:
        raise DecryptFailure(Decryption.UNSUPPORTED, f"{mode} nonce of {len(nonce)} bytes")
    return nonce, tag


def _rc2_parameters(parameters: core.Asn1Value) -> tuple[ContentCipher, bytes]:
    """The RC2 variant and IV of rc2-cbc parameters. Raises DecryptFailure when they are
    unusable."""
    try:
        return rc2_cipher(parameters.dump())
    except ValueError as exc:
        raise DecryptFailure(Decryption.MALFORMED, f"rc2-cbc parameters: {one_line(exc)}") from None


def _chacha_nonce_and_tag(
    content: cms.AuthEnvelopedData, cipher: ContentCipher, parameters: core.Asn1Value
) -> tuple[bytes, bytes]:
    """RFC 8103: the parameters are the 12-byte nonce (an OCTET STRING), the mac the 16-byte
    Poly1305 tag. Raises DecryptFailure for anything else."""
    try:
        [(tag_number, _, nonce)] = der_elements(parameters.dump())
    except ValueError:
        tag_number, nonce = 0, b""
    if tag_number != 0x04 or len(nonce) != 12:
        raise DecryptFailure(Decryption.MALFORMED, f"{cipher.name} needs a 12-byte nonce parameter")
    tag = bytes(content["mac"].native)
    if len(tag) != 16:
        raise DecryptFailure(
            Decryption.MALFORMED, f"the {cipher.name} tag has {len(tag)} bytes, not 16"
        )
    return nonce, tag


def _auth_attrs_aad(content: cms.AuthEnvelopedData) -> bytes:
    """RFC 5083 section 2.1: the AAD is the DER of authAttrs with an EXPLICIT SET OF tag (0x31)
    in place of the IMPLICIT [1] the message carries, and empty when there are none."""
    attrs = content["auth_attrs"]
    if isinstance(attrs, core.Void):
        return b""
    # authAttrs MUST be DER even in a BER message, so the bytes as sent are the bytes to check.
    encoded = attrs.dump()
    return b"\x31" + encoded[1:]


def _read_recipients(infos: cms.RecipientInfos) -> tuple[tuple[EnvelopeRecipient, ...], int]:
    """Every key-transport and key-agreement recipient, and the count of the other kinds."""
    recipients: list[EnvelopeRecipient] = []
    others = 0
    for ri in infos:
        if ri.name == "ktri":
            ktri = ri.chosen
            fields = _key_transport_fields(ktri.contents)
            if fields is None:  # not plain DER: asn1crypto reads it
                issuer, serial, ski = _recipient_id(ktri["rid"])
                recipients.append(
                    EnvelopeRecipient(
                        ktri, bytes(ktri["encrypted_key"].native), issuer, serial, ski
                    )
                )
            else:
                issuer_der, serial_number, key_id, encrypted_key, algorithm_oid = fields
                recipients.append(
                    EnvelopeRecipient(
                        ktri, encrypted_key, issuer_der, serial_number, key_id, algorithm_oid
                    )
                )
        elif ri.name == "kari":
            kari = ri.chosen
            for rek in kari["recipient_encrypted_keys"]:
                issuer, serial, ski = _recipient_id(rek["rid"])
                recipients.append(
                    EnvelopeRecipient(kari, bytes(rek["encrypted_key"].native), issuer, serial, ski)
                )
                if len(recipients) > MAX_RECIPIENTS:
                    break
        else:
            others += 1
        if len(recipients) + others > MAX_RECIPIENTS:
            raise DecryptFailure(Decryption.MALFORMED, f"more than {MAX_RECIPIENTS} recipients")
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

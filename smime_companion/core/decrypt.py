"""Decrypting CMS EnvelopedData and AuthEnvelopedData (RFC 5652, RFC 5083) with our own keys.

asn1crypto reads the structure; cryptography does the arithmetic. cryptography's own
``pkcs7_decrypt_der`` is not used: it cannot do OAEP, ECDH, AES-192, GCM, subject key identifiers
or BER, all of which real mail uses.

The message is untrusted, so :func:`decrypt` reports every problem with it as a
:class:`~smime_companion.core.verdicts.Decryption` status in a ``DecryptOutcome`` and never
raises for it. Recipients are matched to our certificates by issuer and serial number or by
subject key identifier; a key is never tried against a RecipientInfo that does not name its
certificate (a blind RSA PKCS#1 v1.5 trial would be slow and would hand a padding oracle to
whoever sent the mail). A certificate is ours when it holds one of our keys: mail encrypted to
the certificate a renewed one replaced (same key, new serial) opens when that older certificate
is among the ones the caller knows (harvested from our own signed mail, or given).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

from asn1crypto import cms
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.serialization import Encoding

from smime_companion.core.certs import describe_cms_name
from smime_companion.core.cms import ASN1_ERRORS
from smime_companion.core.cms_algorithms import ContentCipher
from smime_companion.core.content_decryption import decrypt_content
from smime_companion.core.envelope import (
    ContentKey,
    DecryptFailure,
    Envelope,
    EnvelopeRecipient,
    read_envelope,
)
from smime_companion.core.key_agreement import key_agreement
from smime_companion.core.key_transport import key_transport
from smime_companion.core.model import DecryptOutcome, Identity
from smime_companion.core.verdicts import DECRYPTION_SEVERITY, Decryption
from smime_companion.errors import one_line

# A hostile message may name our certificate in thousands of RecipientInfos to make us do
# thousands of private-key operations; past this many tries per key we stop.
MAX_ATTEMPTS_PER_IDENTITY = 64

_KIND_NAMES = {
    "enveloped_data": "EnvelopedData",
    "authenticated_enveloped_data": "AuthEnvelopedData",
}


@dataclass(frozen=True)
class _OurKey:
    """One of our identities with the ways a RecipientInfo can name its certificate."""

    identity: Identity
    issuer: asn1_x509.Name
    serial: int
    skis: frozenset[bytes]


def decrypt(
    info: cms.ContentInfo,
    identities: Sequence[Identity],
    *,
    ciphertext: bytes | memoryview | None = None,
    known_certificates: Sequence[x509.Certificate] = (),
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

    ``known_certificates`` are looked at only when no RecipientInfo names one of our own
    certificates: one of them that holds one of our keys (an earlier certificate of ours) names
    that key too.
    """
    content_type = info["content_type"].native
    if content_type not in _KIND_NAMES:
        raise ValueError(f"decrypt() takes enveloped or auth-enveloped data, not {content_type!r}")
    kind = _KIND_NAMES[content_type]
    try:
        envelope = read_envelope(
            info["content"], auth=content_type != "enveloped_data", ciphertext=ciphertext
        )
    except DecryptFailure as failure:
        return DecryptOutcome(status=failure.status, error=failure.message)
    except ASN1_ERRORS as exc:
        return DecryptOutcome(
            status=Decryption.MALFORMED, error=f"malformed {kind}: {one_line(exc)}"
        )

    our_keys = [_our_key(identity) for identity in identities]
    candidates, skipped = _match(envelope.recipients, our_keys)
    if not candidates and known_certificates:
        earlier = _earlier_certificates(identities, known_certificates)
        candidates, skipped = _match(envelope.recipients, earlier)
    if not candidates:
        return DecryptOutcome(status=Decryption.NO_KEY, error=_no_key_message(envelope, our_keys))
    if envelope.cipher is None:
        assert envelope.cipher_problem is not None
        return DecryptOutcome(
            status=envelope.cipher_problem.status, error=envelope.cipher_problem.message
        )
    cipher = envelope.cipher

    failures: list[DecryptFailure] = []
    for recipient, ours in candidates:
        try:
            cek = _recover_cek(recipient, ours.identity, cipher)
        except DecryptFailure as failure:
            failures.append(failure)
            continue
        try:
            plaintext = decrypt_content(envelope, cipher, cek.key)
        except DecryptFailure as failure:
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


# --- matching recipients with our keys ----------------------------------------------------------


def _our_key(identity: Identity) -> _OurKey:
    """How RecipientInfos may name ``identity``'s certificate."""
    issuer, serial, skis = _certificate_ids(identity.certificate)
    return _OurKey(identity, issuer, serial, skis)


def _earlier_certificates(
    identities: Sequence[Identity], certificates: Sequence[x509.Certificate]
) -> list[_OurKey]:
    """``certificates`` that hold the key of one of ``identities`` (under another name: a
    renewed certificate keeps the key and changes the serial), as that identity's."""
    by_key = {_key_of(identity.certificate): identity for identity in identities}
    found = []
    for cert in certificates:
        identity = by_key.get(_key_of(cert))
        if identity is not None and cert != identity.certificate:
            issuer, serial, skis = _certificate_ids(cert)
            found.append(_OurKey(identity, issuer, serial, skis))
    return found


@functools.lru_cache(maxsize=4096)
def _key_of(cert: x509.Certificate) -> bytes:
    """The certificate's SubjectPublicKeyInfo as it is encoded in the certificate."""
    tbs = asn1_x509.Certificate.load(cert.public_bytes(Encoding.DER))["tbs_certificate"]
    return tbs["subject_public_key_info"].dump()


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
    recipients: Sequence[EnvelopeRecipient], our_keys: Sequence[_OurKey]
) -> tuple[list[tuple[EnvelopeRecipient, _OurKey]], bool]:
    """Pairs (recipient, our key) where the recipient names our certificate, in message order,
    at most MAX_ATTEMPTS_PER_IDENTITY per key; and whether any pair was dropped for that limit."""
    pairs: list[tuple[EnvelopeRecipient, _OurKey]] = []
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
    except ASN1_ERRORS:  # a name the message mangled matches nothing
        return False


# Recipients a no-key error names, and the length of each name or number in it: enough to
# recognise one's own (old) certificate, short enough that a message to thousands, or with
# names a kilobyte long, still gives one short line.
_NAMED_RECIPIENTS = 2
_SHOWN_CHARACTERS = 64


def _no_key_message(envelope: Envelope, our_keys: Sequence[_OurKey]) -> str:
    """Says which certificates the message was encrypted to, so that the reader can tell
    whose key (or which of their own older certificates) would open it."""
    count = len(our_keys)
    recipients = envelope.recipients
    if count:
        message = f"not encrypted to any of our {count} key{'' if count == 1 else 's'}"
    else:
        message = "no key to decrypt with"
    if recipients:
        named = "; ".join(_recipient_label(r) for r in recipients[:_NAMED_RECIPIENTS])
        more = len(recipients) - _NAMED_RECIPIENTS
        message += f"; encrypted to {named}" + (f" and {more} more" if more > 0 else "")
    if envelope.other_recipients:
        message += f" ({envelope.other_recipients} KEK, password or other recipient(s) not handled)"
    return message


def _recipient_label(recipient: EnvelopeRecipient) -> str:
    """A recipient as its RecipientInfo names it: the certificate's issuer and serial number
    (in hex, as ``openssl x509 -serial`` prints it), or its subject key identifier."""
    if recipient.ski is not None:
        return f"the certificate with key identifier {_clipped(recipient.ski.hex().upper())}"
    if recipient.issuer is None or recipient.serial is None:
        return "an unnamed certificate"
    issuer = _clipped(describe_cms_name(recipient.issuer))
    return f"serial {_clipped(f'{recipient.serial:X}')} from {issuer}"


def _clipped(text: str) -> str:
    return text if len(text) <= _SHOWN_CHARACTERS else text[: _SHOWN_CHARACTERS - 3] + "..."


# --- recovering the content-encryption key ------------------------------------------------------


def _recover_cek(
    recipient: EnvelopeRecipient, identity: Identity, cipher: ContentCipher
) -> ContentKey:
    """The content-encryption key for ``recipient`` under ``identity``'s key. Raises
    DecryptFailure."""
    try:
        if isinstance(recipient.info, cms.KeyTransRecipientInfo):
            return key_transport(recipient, identity, cipher)
        return key_agreement(recipient, identity)
    except UnsupportedAlgorithm as exc:
        # The OpenSSL under cryptography may lack a hash or curve the message asks for.
        raise DecryptFailure(
            Decryption.UNSUPPORTED, f"not available here: {one_line(exc)}"
        ) from None
    except ASN1_ERRORS as exc:
        raise DecryptFailure(
            Decryption.MALFORMED, f"malformed RecipientInfo: {one_line(exc)}"
        ) from None


# --- helpers ------------------------------------------------------------------------------------


def _worst(failures: Sequence[DecryptFailure]) -> DecryptFailure:
    """The first failure of the most severe status (the order of the overall verdict)."""
    for status in DECRYPTION_SEVERITY:
        for failure in failures:
            if failure.status == status:
                return failure
    return failures[0]

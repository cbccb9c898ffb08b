"""The words of a verdict: what decrypting and checking a signature can conclude, which
conclusion outranks which, and the warnings an opened message can carry.

Stable strings: the cache stores them, ``--json`` prints them and scripts read them. Kept apart
from :mod:`smime_companion.core.model` (the result values) so that what only reads verdicts,
the query compiler and the cache's listing among them, loads no more than this.
"""

from __future__ import annotations

from enum import StrEnum


class Decryption(StrEnum):
    """Outcome of decrypting a message (the overall verdict, or one layer's)."""

    OK = "ok"  # every encrypted layer was decrypted
    NONE = "none"  # the message was not encrypted
    NO_KEY = "no-key"  # encrypted, but to none of the keys we hold
    FAILED = "failed"  # a key matched but decryption failed (wrong key, bad padding, bad GCM tag)
    MALFORMED = "malformed"  # the encrypted structure could not be parsed
    UNSUPPORTED = "unsupported"  # an algorithm we do not implement


class SignatureStatus(StrEnum):
    """Outcome of checking a signature (the overall verdict, one layer's, or one signer's)."""

    VALID = "valid"
    INVALID = "invalid"  # the signature or the message digest does not match the content
    UNTRUSTED = "untrusted"  # sound signature, but the certificate chains to no trust anchor
    EXPIRED = "expired"  # a certificate in the chain had expired at the time checked
    NOT_YET_VALID = "not-yet-valid"  # a certificate in the chain was not yet valid
    BAD_EKU = "bad-eku"  # the signer certificate is not for email protection
    EMAIL_MISMATCH = "email-mismatch"  # the signer's address is not the message's From
    WEAK_ALGORITHM = (
        "weak-algorithm"  # sound, but made with an algorithm we no longer trust (SHA-1)
    )
    NONE = "none"  # the message was not signed
    MALFORMED = "malformed"  # the signed structure could not be parsed
    UNSUPPORTED = "unsupported"  # an algorithm we do not implement
    # Sound and chained, but the signer's certificate (or a CA above it) is revoked. Never from
    # core.open itself, which has no network: the daemon applies what the certificate store
    # learnt from OCSP or a CRL (see core.open.with_revoked_signers).
    REVOKED = "revoked"


# When several signed layers disagree, and among the problems of one signer, the verdict is the
# first of these that occurs: a broken signature outranks a trust problem, which outranks time,
# then usage, then the address; a weak algorithm is the least severe, so it never hides another
# problem (it is still reported beside the verdict: SignerReport.weaknesses).
SIGNATURE_SEVERITY: tuple[SignatureStatus, ...] = (
    SignatureStatus.INVALID,
    SignatureStatus.MALFORMED,
    SignatureStatus.UNSUPPORTED,
    SignatureStatus.REVOKED,
    SignatureStatus.UNTRUSTED,
    SignatureStatus.EXPIRED,
    SignatureStatus.NOT_YET_VALID,
    SignatureStatus.BAD_EKU,
    SignatureStatus.EMAIL_MISMATCH,
    SignatureStatus.WEAK_ALGORITHM,
    SignatureStatus.VALID,
    SignatureStatus.NONE,
)

# Signer verdicts reached on a path built to a trust anchor (verify reports the later
# problems only on a built path): the signers whose certificate is worth trusting or revoking.
ANCHORED_STATUSES = frozenset(
    {
        SignatureStatus.VALID,
        SignatureStatus.EMAIL_MISMATCH,
        SignatureStatus.WEAK_ALGORITHM,
        SignatureStatus.EXPIRED,
        SignatureStatus.NOT_YET_VALID,
    }
)

# Verdicts of a signature that verified over the content (the cryptography held), whatever was
# then found about the signer: content under such a signature cannot have been altered.
SOUND_SIGNATURES: frozenset[SignatureStatus | None] = frozenset(SIGNATURE_SEVERITY) - {
    SignatureStatus.INVALID,
    SignatureStatus.MALFORMED,
    SignatureStatus.UNSUPPORTED,
    SignatureStatus.NONE,
}

# The warning for content decrypted from CBC (no authentication) that no sound signature covers:
# blocks spliced into the ciphertext (EFAIL's CBC gadgets) would decrypt without error, so the
# content is not trusted (``OpenResult.ok`` is False, exit 1) and must never be shown or exported
# as active HTML. A stable string: the cache stores it and scripts read it.
WARN_NOT_INTEGRITY_PROTECTED = "not-integrity-protected"
# The other warnings of an OpenResult (stable strings too).
WARN_PARTIALLY_ENCRYPTED = "partially-encrypted"
WARN_PARTIALLY_SIGNED = "partially-signed"
WARN_WEAK_CIPHER = "weak-cipher"
WARN_MIME_LIMIT = "mime-limit-reached"
# The Date shown is more than DATE_TOLERANCE from every signer's signing time: an old signed
# message may have been sent again under a new Date (which the signature does not cover unless
# the headers are protected). Thunderbird calls such a signature invalid; here it stays what it
# is, and the reader says why the date is in doubt.
WARN_DATE_MISMATCH = "date-mismatch"
# The sender's address mixes Latin, Cyrillic and Greek letters, or a label of its domain is
# written in Cyrillic or Greek letters that read as Latin ones (core.lookalike): a valid
# signature says only that the message comes from that address, which may imitate another.
WARN_LOOKALIKE_ADDRESS = "look-alike-address"
# A signer used an algorithm we no longer trust (SHA-1, MD5, RSA under 2048 bits), whether that
# decided the verdict (weak-algorithm) or was accepted for archives (allow_weak, allow_sha1).
WARN_WEAK_ALGORITHM = "weak-algorithm"
# A signer's certificate (or a CA above it) has a serial number that is not positive: accepted,
# and named in that signer's ``notes``.
WARN_NON_POSITIVE_SERIAL = "non-positive-serial"
# One of them is BER but not DER (a BOOLEAN TRUE as 01, ``critical FALSE`` written out, a UTCTime
# without seconds): accepted, as OpenSSL accepts most of them, and named in the ``notes`` too.
WARN_NON_DER_CERTIFICATE = "non-der-certificate"

DECRYPTION_SEVERITY: tuple[Decryption, ...] = (
    Decryption.FAILED,
    Decryption.MALFORMED,
    Decryption.UNSUPPORTED,
    Decryption.NO_KEY,
    Decryption.OK,
    Decryption.NONE,
)

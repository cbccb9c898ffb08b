"""What the open report means, in plain words: the list's badges and a message's verdict panel.

Pure: a message's summary fields and its stored report in, sentences out. Every status the core
can give (``core.model``) and every warning it emits has words here; an unknown one (a newer
core) is shown by its name rather than hidden.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from smime_companion.reader import dates

# How a line or badge looks: good (green), warn (amber), bad (red), info (neutral).
GOOD, WARN, BAD, INFO = "good", "warn", "bad", "info"


@dataclass(frozen=True)
class Badge:
    """A short mark in the message list, with a longer tooltip."""

    text: str
    level: str
    title: str


@dataclass(frozen=True)
class VerdictLine:
    """One line of the verdict panel: a headline and its explanation."""

    level: str
    title: str
    detail: str = ""


_SIGNATURE: dict[str, tuple[str, str, str]] = {
    # status: (badge, level, what it means)
    "valid": (
        "signed",
        GOOD,
        "The signature is valid: the message was not changed after it was "
        "signed, and the signer's certificate is trusted.",
    ),
    "invalid": (
        "signature invalid",
        BAD,
        "The signature does not match the message: it was "
        "changed after it was signed, or the signature is forged. Do not trust it.",
    ),
    "untrusted": (
        "signer untrusted",
        WARN,
        "The signature matches the message, but the "
        "signer's certificate does not lead to any certificate authority you trust: "
        "anyone could have made it.",
    ),
    "expired": (
        "certificate expired",
        WARN,
        "The signature matches, but a certificate in the "
        "signer's chain had expired when it was checked.",
    ),
    "not-yet-valid": (
        "certificate not yet valid",
        WARN,
        "The signature matches, but a "
        "certificate in the signer's chain was not valid yet when it was checked.",
    ),
    "bad-eku": (
        "certificate not for email",
        WARN,
        "The signature matches, but the signer's certificate is not meant for email protection.",
    ),
    "email-mismatch": (
        "signer is not the sender",
        BAD,
        "The signature is valid, but the "
        "certificate belongs to another address than the message's From: "
        "someone else signed it.",
    ),
    "weak-algorithm": (
        "weak signature",
        WARN,
        "The signature matches, but it was made with an "
        "algorithm that is no longer safe (SHA-1): it could be forged.",
    ),
    "revoked": (
        "signer revoked",
        BAD,
        "The signer's certificate (or a CA above it) has been "
        "revoked: its owner or issuer declared it must no longer be trusted.",
    ),
    "malformed": (
        "signature unreadable",
        BAD,
        "The signature could not be read: the signed structure is damaged.",
    ),
    "unsupported": (
        "signature not checked",
        WARN,
        "The signature uses an algorithm this program does not support, so it was not checked.",
    ),
}
_DECRYPTION: dict[str, tuple[str, str, str]] = {
    "ok": ("encrypted", GOOD, "The message was encrypted to you: nobody on the way could read it."),
    "no-key": (
        "no key",
        BAD,
        "The message is encrypted to a key you do not have here. Import "
        "the identity it was sent to (identity import), and it is opened again.",
    ),
    "failed": (
        "decryption failed",
        BAD,
        "A key of yours matched, but decryption failed: the "
        "message is damaged or was tampered with.",
    ),
    "malformed": ("encryption unreadable", BAD, "The encrypted structure could not be read."),
    "unsupported": (
        "cipher not supported",
        WARN,
        "The message uses an encryption algorithm this program does not support.",
    ),
}
WARNINGS: dict[str, tuple[str, str, str]] = {
    # warning: (short, level, explanation)
    "not-integrity-protected": (
        "not integrity-protected",
        WARN,
        "The encryption (CBC without a "
        "signature inside it) does not show whether the message was "
        "changed on the way. An attacker could have altered parts of it "
        "(the EFAIL attacks); treat links and requests in it with care.",
    ),
    "partially-encrypted": (
        "partially encrypted",
        BAD,
        "Only a part of this message was "
        "encrypted; the rest was added by whoever sent it, in the clear. The "
        "encrypted part is not shown with it and nothing outside it is protected: "
        "an attacker may have wrapped someone's encrypted mail in their own "
        "text (EFAIL). A mailing list's footer or a gateway's disclaimer is added so too: "
        "the encrypted part opens on its own, with its own verdict.",
    ),
    "partially-signed": (
        "partially signed",
        WARN,
        "Only a part of this message is signed; the rest could have been added by anyone. "
        "The signed part (a mailing list wraps a signed message with its footer so) opens "
        "on its own, with its own verdict; a message forwarded as an attachment opens from "
        "the attachments.",
    ),
    "weak-cipher": (
        "weak cipher",
        WARN,
        "The message was encrypted with an old cipher (3DES or "
        "RC2) that no longer offers good protection.",
    ),
    "date-mismatch": (
        "date in doubt",
        WARN,
        "The message's date is more than an hour from when it was signed (the signing time "
        "in the verdict above). Mail programs sign a message when they send it: an old signed "
        "message may have been sent again under a new date. The signature itself is sound.",
    ),
    "look-alike-address": (
        "look-alike address",
        WARN,
        "The sender's address mixes letters of different alphabets, or writes its domain in "
        "Cyrillic or Greek letters that look like Latin ones: it may imitate an address you "
        "know. A valid signature only says the message comes from this address.",
    ),
    "mime-limit-reached": (
        "not fully read",
        WARN,
        "The message is nested deeper or has more "
        "parts than this program examines; the rest was not shown.",
    ),
    "weak-algorithm": (
        "weak algorithm",
        WARN,
        "A signer used an algorithm that is no longer safe (SHA-1, MD5, or an RSA key under "
        "2048 bits). Accepted for old archives if you allowed it, but it could be forged.",
    ),
    "non-positive-serial": (
        "odd certificate",
        INFO,
        "A certificate of the signer has a serial number of zero or below, which the rules "
        "forbid. Certificate authorities issued such certificates for years and other mail "
        "programs accept them; so does this one.",
    ),
    "non-der-certificate": (
        "odd certificate",
        INFO,
        "A certificate of the signer is encoded loosely (not in the strict form the rules ask "
        "for), as some older certificate authorities wrote them. Other mail programs accept "
        "it; so does this one.",
    ),
    "key-changed": (
        "key changed",
        BAD,
        "This sender used a different key before. If they did "
        "not tell you they changed it, someone may be impersonating them. Confirm or "
        "refuse the new key on the Certificates page.",
    ),
}


def list_badges(decryption: str, signature: str, warnings: Sequence[str]) -> list[Badge]:
    """The marks of one row in the message list."""
    badges: list[Badge] = []
    if decryption != "none":
        text, level, title = _DECRYPTION.get(decryption, (decryption, WARN, decryption))
        badges.append(Badge(text, level, title))
    if signature != "none":
        text, level, title = _SIGNATURE.get(signature, (signature, WARN, signature))
        badges.append(Badge(text, level, title))
    for warning in warnings:
        if warning == signature:  # weak-algorithm: the signature's badge says it already
            continue
        text, level, title = WARNINGS.get(warning, (warning, WARN, warning))
        badges.append(Badge(text, level, title))
    return badges


def _anchor_of(signer: Mapping[str, Any]) -> str | None:
    chain = signer.get("chain") or []
    return str(chain[-1]) if len(chain) > 1 else None


def verdict_lines(
    report: Mapping[str, Any], *, key_changed: bool = False, scan: str | None = None
) -> list[VerdictLine]:
    """The verdict panel of a message: encryption, each signer, the layers, every warning and
    the malware scan, as sentences."""
    lines: list[VerdictLine] = []
    decryption = str(report.get("decryption", "none"))
    cipher = report.get("content_cipher")
    if decryption == "none":
        lines.append(VerdictLine(INFO, "Not encrypted", "This message was sent in the clear: "
                                 "the mail servers on its way could read it."))  # fmt: skip
    else:
        _, level, detail = _DECRYPTION.get(decryption, (decryption, WARN, decryption))
        title = f"Encrypted with {str(cipher).upper()}" if cipher else f"Encryption: {decryption}"
        if decryption != "ok":
            title = _DECRYPTION.get(decryption, (decryption,))[0].capitalize()
        lines.append(VerdictLine(level, title, detail))
    signature = str(report.get("signature", "none"))
    signers = list(report.get("signers") or [])
    if signature == "none":
        lines.append(VerdictLine(INFO, "Not signed", "Nothing shows who wrote this message or "
                                 "that it arrived unchanged."))  # fmt: skip
    for signer in signers:
        status = str(signer.get("status", "none"))
        _, level, meaning = _SIGNATURE.get(status, (status, WARN, status))
        who = signer.get("address") or signer.get("subject") or "an unknown signer"
        title = f"Signed by {who}: {status}"
        parts = [meaning]
        anchor = _anchor_of(signer)
        if anchor and status in ("valid", "email-mismatch", "weak-algorithm", "revoked"):
            parts.append(f"The certificate chain reaches your trust anchor {anchor}.")
        if signer.get("reason") and status != "valid":
            parts.append(f"Why: {signer['reason']}.")
        if signer.get("signing_time"):
            when = dates.shown_iso_time(str(signer["signing_time"]))
            parts.append(f"Signed at {when} (as the signer's clock said).")
        if signer.get("fingerprint"):
            parts.append(f"Certificate SHA-256 {signer['fingerprint'][:32]}…")
        lines.append(VerdictLine(level, title, " ".join(parts)))
    if signature != "none" and not signers:
        _, level, meaning = _SIGNATURE.get(signature, (signature, WARN, signature))
        lines.append(VerdictLine(level, f"Signature: {signature}", meaning))
    warnings = list(report.get("warnings") or [])
    if key_changed:
        warnings.append("key-changed")
    for warning in warnings:
        short, level, detail = WARNINGS.get(warning, (warning, WARN, warning))
        lines.append(VerdictLine(level, short.capitalize(), detail))
    if report.get("error"):
        lines.append(VerdictLine(BAD, "Could not be opened completely", str(report["error"])))
    if scan:
        if scan.startswith("infected:"):
            lines.append(VerdictLine(BAD, "Malware found", f"The scanner found {scan[9:]} in "
                                     "this message. Do not open its attachments."))  # fmt: skip
        elif scan == "clean":
            lines.append(VerdictLine(GOOD, "Scanned: clean", "The malware scanner found nothing "
                                     "in the decrypted message and its attachments."))  # fmt: skip
        elif scan == "error":
            lines.append(VerdictLine(WARN, "Scan failed", "The malware scanner could not check "
                                     "this message; it is tried again."))  # fmt: skip
    return lines


def layer_lines(report: Mapping[str, Any]) -> list[str]:
    """The S/MIME layers, outermost first, one sentence each."""
    out = []
    for number, layer in enumerate(report.get("layers") or [], start=1):
        kind = str(layer.get("type"))
        if "decryption" in layer:
            cipher = layer.get("content_cipher") or "unknown cipher"
            transport = layer.get("key_transport") or "unknown key transport"
            name = "authenticated encryption" if kind == "auth-enveloped" else "encryption"
            out.append(f"{number}. {name}: {cipher}, key by {transport} ({layer['decryption']})")
        elif "signature" in layer:
            forms = {"signed": "detached (multipart/signed)", "signed-receipt": "a signed receipt"}
            form = forms.get(kind, "opaque (signed-data)")
            out.append(f"{number}. signature, {form}: {layer['signature']}")
        elif kind == "compressed":
            out.append(f"{number}. compression")
        elif kind == "certs-only":
            out.append(f"{number}. certificates only (someone's certificate, nothing signed)")
        elif kind == "rfc822":
            out.append(f"{number}. wrapped message (message/rfc822)")
        else:
            out.append(f"{number}. {kind}")
        if layer.get("error"):
            out[-1] += f": {layer['error']}"
    return out

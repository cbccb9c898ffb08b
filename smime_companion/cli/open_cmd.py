"""``smime-companion open``: decrypt, verify and unwrap one message."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

from cryptography import x509

from smime_companion.cli.common import (
    add_json_flag,
    load_anchors,
    load_identities,
    read_input,
    write_output,
)
from smime_companion.core.model import OpenResult
from smime_companion.core.open import open_message, with_revoked_signers
from smime_companion.errors import UsageError
from smime_companion.revocation import RevocationChecker


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "open",
        help="decrypt, verify and unwrap an S/MIME message",
        description=(
            "Open MSG (a whole message; '-' reads stdin): decrypt it with your keys, verify every "
            "signature against the trust anchors, and write the innermost MIME to OUT. "
            "Exit 0 when decryption is ok/none, the signature valid/none and the content "
            "integrity-protected (not CBC without a signature inside), 1 otherwise, "
            "2 for usage errors."
        ),
    )
    p.add_argument("message", metavar="MSG", help="message file, or - for standard input")
    p.add_argument(
        "-o", "--output", metavar="OUT", help="write the innermost MIME entity here ('-': stdout)"
    )
    p.add_argument(
        "--key",
        metavar="PEM",
        action="append",
        default=[],
        type=Path,
        help="a private key to decrypt with (repeatable; pair it with its --cert)",
    )
    p.add_argument(
        "--cert",
        metavar="PEM",
        action="append",
        default=[],
        type=Path,
        help="certificate(s) of the --key private keys (repeatable)",
    )
    p.add_argument(
        "--p12",
        metavar="FILE",
        action="append",
        default=[],
        type=Path,
        help="a PKCS#12 identity to decrypt with (repeatable)",
    )
    p.add_argument(
        "--p12-password-env",
        metavar="VAR",
        help="environment variable holding the PKCS#12 password",
    )
    p.add_argument(
        "--anchor",
        metavar="PEM",
        action="append",
        default=[],
        type=Path,
        help="a trust anchor certificate file (repeatable)",
    )
    p.add_argument("--system-anchors", action="store_true", help="also trust the system CA bundle")
    p.add_argument(
        "--at", metavar="ISO-8601", help="check certificate validity at this time instead of now"
    )
    p.add_argument(
        "--allow-sha1",
        action="store_true",
        help="accept SHA-1 signatures as valid instead of weak-algorithm",
    )
    p.add_argument(
        "--check-revocation",
        action="store_true",
        help="ask the OCSP responders and CRLs the signer's certificate and its CAs name "
        "(HTTP); a revoked one makes the signature 'revoked'",
    )
    add_json_flag(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    at = _parse_time(args.at)
    identities = load_identities(args.key, args.cert, args.p12, args.p12_password_env)
    anchors: list[x509.Certificate] = load_anchors(args.anchor, args.system_anchors)
    raw = read_input(args.message)
    result = open_message(
        raw, identities=identities, anchors=anchors, at=at, allow_sha1=args.allow_sha1
    )
    if args.check_revocation:
        result = with_revoked_signers(result, RevocationChecker().revoked_signers(result, at))
    if args.output:
        write_output(args.output, result.content)
    if args.json:
        json.dump(result.to_json(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(_summary(result))
    return 0 if result.ok else 1


def _parse_time(text: str | None) -> dt.datetime:
    if text is None:
        return dt.datetime.now(dt.UTC)
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(
            f"--at {text!r} is not an ISO-8601 time (e.g. 2026-01-31T12:00:00Z)"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def _summary(result: OpenResult) -> str:
    lines = [
        f"decryption: {result.decryption}"
        + (f" ({result.content_cipher})" if result.content_cipher else ""),
        f"signature:  {result.signature}" + (f" by {result.signer}" if result.signer else ""),
        "layers:     " + (" > ".join(layer.type for layer in result.layers) or "none"),
    ]
    for layer in result.layers:
        for signer in layer.signers:
            if signer.reason:
                lines.append(f"  signer {signer.address or '?'}: {signer.reason}")
            lines.extend(f"  note: {note}" for note in signer.notes)
    if result.warnings:
        lines.append("warnings:   " + ", ".join(result.warnings))
    if not result.integrity_protected:
        lines.append(
            "content:    not trusted: decrypted from CBC with no signature inside, so anyone "
            "could have changed it"
        )
    if result.error:
        lines.append(f"error:      {result.error}")
    return "\n".join(lines)

"""``smime-companion open``: decrypt, verify and unwrap one message."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys

from cryptography import x509

from smime_companion import keyfiles, runtime
from smime_companion.cli.common import load_anchors, load_identities, read_input, write_output
from smime_companion.cli.flags import add_command, add_paths_flag, config_from_args
from smime_companion.config import Config, default_config_path
from smime_companion.core.model import OpenResult
from smime_companion.core.open import open_message, with_revoked_signers
from smime_companion.core.printable import for_terminal
from smime_companion.errors import UsageError
from smime_companion.revocation_fetch import RevocationChecker


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = add_command(
        sub,
        "open",
        run,
        help="decrypt, verify and unwrap an S/MIME message",
        description=(
            "Open MSG (a whole message, an mbox-saved one, or a bare .p7m/CMS file in DER, BER or "
            "PEM; '-' reads stdin): decrypt it with your keys, verify every signature against "
            "the trust anchors, and write the innermost MIME to OUT. With a config file, its "
            "identity and anchors are used unless given here. "
            "Exit 0 when decryption is ok/none, the signature valid/none and the content "
            "integrity-protected (not CBC without a signature inside), 1 otherwise, "
            "2 for usage errors."
        ),
        json=True,
    )
    p.add_argument("message", metavar="MSG", help="message file, or - for standard input")
    p.add_argument(
        "-o",
        "--output",
        metavar="OUT",
        help="write the innermost MIME entity here ('-': stdout, and the report to stderr)",
    )
    add_paths_flag(
        p, "--key", "PEM", "a private key to decrypt with (repeatable; pair it with its --cert)"
    )
    add_paths_flag(p, "--cert", "PEM", "certificate(s) of the --key private keys (repeatable)")
    add_paths_flag(p, "--p12", "FILE", "a PKCS#12 identity to decrypt with (repeatable)")
    p.add_argument(
        "--p12-password-env",
        metavar="VAR",
        help="environment variable holding the PKCS#12 password",
    )
    add_paths_flag(p, "--anchor", "PEM", "a trust anchor certificate file (repeatable)")
    p.add_argument("--system-anchors", action="store_true", help="also trust the system CA bundle")
    p.add_argument(
        "--at", metavar="ISO-8601", help="check certificate validity at this time instead of now"
    )
    add_paths_flag(
        p,
        "--certfile",
        "PEM",
        "certificates (PEM or DER, repeatable) among which the signer's certificate and its "
        "issuers are looked for when the message leaves them out; one that holds your key (a "
        "certificate a renewal replaced) also names that key for decryption",
    )
    p.add_argument(
        "--allow-sha1",
        action="store_true",
        help="accept SHA-1 signatures as valid instead of weak-algorithm",
    )
    p.add_argument(
        "--allow-weak",
        action="store_true",
        help="for archives: accept SHA-1, MD5-signed certificates and RSA keys under 2048 bits "
        "as valid (still reported: warning weak-algorithm)",
    )
    p.add_argument(
        "--check-revocation",
        action="store_true",
        help="ask the OCSP responders and CRLs the signer's certificate and its CAs name "
        "(HTTP); a revoked one makes the signature 'revoked'",
    )
    p.add_argument(
        "--no-config",
        action="store_true",
        help="ignore the config file (by default its identity, anchors and weak-algorithm "
        "settings are used when no --key/--p12, no --anchor/--system-anchors are given)",
    )


def run(args: argparse.Namespace) -> int:
    at = _parse_time(args.at)
    config = _config(args)
    identities = load_identities(args.key, args.cert, args.p12, args.p12_password_env)
    anchors: list[x509.Certificate] = load_anchors(args.anchor, args.system_anchors)
    allow_sha1, allow_weak = args.allow_sha1, args.allow_weak
    if config is not None:
        # The configured identity and anchors, unless the command line names its own.
        try:
            if not (args.key or args.p12):
                identities = runtime.load_identities(config.identity)
            if not (args.anchor or args.system_anchors):
                anchors = runtime.load_anchors(config.identity)
        except UsageError as exc:
            raise UsageError(f"{exc} (config {config.source}; --no-config ignores it)") from None
        allow_sha1 = allow_sha1 or config.identity.allow_sha1
        allow_weak = allow_weak or config.identity.allow_weak_algorithms
    extra = [c for path in args.certfile for c in keyfiles.load_certificates(path)]
    raw = read_input(args.message)
    result = open_message(
        raw,
        identities=identities,
        anchors=anchors,
        at=at,
        allow_sha1=allow_sha1,
        allow_weak=allow_weak,
        extra_certificates=extra,
    )
    if args.check_revocation:
        result = with_revoked_signers(result, RevocationChecker().revoked_signers(result, at))
    if args.output:
        write_output(args.output, result.content)
    # With the content on standard output the report goes to standard error, so that neither
    # is spoilt by the other (a pipe gets the message alone, as openssl's does).
    report = sys.stderr if args.output == "-" else sys.stdout
    if args.json:
        json.dump(result.to_json(), report, indent=2)
        report.write("\n")
    else:
        print(_summary(result), file=report)
    return 0 if result.ok else 1


def _config(args: argparse.Namespace) -> Config | None:
    """The config ``open`` uses: none with --no-config; the one named by --config or
    $SMIME_COMPANION_CONFIG (which must then load); else the default file when it exists."""
    if args.no_config:
        return None
    if args.config is None and not os.environ.get("SMIME_COMPANION_CONFIG"):
        if not default_config_path().expanduser().is_file():
            return None
    return config_from_args(args)


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
    elif result.content_name:
        lines.append(f"content:    the file {result.content_name} (write it with -o)")
    if result.error:
        lines.append(f"error:      {result.error}")
    # Addresses and reasons quote the message's certificates and structure: one line each.
    return "\n".join(for_terminal(line) for line in lines)

"""``smime-companion seal``: sign and/or encrypt a draft for sending."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509

from smime_companion import keyfiles
from smime_companion.cli.common import read_input
from smime_companion.cli.flags import add_command, add_paths_flag
from smime_companion.core.cert_vocabulary import Recipient
from smime_companion.core.certs import advertised_capabilities, email_addresses
from smime_companion.core.model import Identity
from smime_companion.core.seal import SealOptions, SealResult, seal
from smime_companion.errors import KeyLoadError, UsageError


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``seal`` subcommand to ``sub``; its ``func`` is :func:`run`."""
    p = add_command(
        sub,
        "seal",
        run,
        help="sign and encrypt a draft so that every S/MIME client opens it",
        description=(
            "Seal DRAFT (a whole RFC 5322 message; '-' reads stdin): sign it, then encrypt it to "
            "every To/Cc recipient and to the sender; each Bcc recipient gets a separately "
            "encrypted copy written to OUT.bcc-ADDRESS. Recipients are matched to --to-cert "
            "files by the certificate's address. Exit 0 on success, 1 when the draft cannot be "
            "sealed (no From, a recipient without certificate), 2 for usage errors (bad option, "
            "wrong password, a key that does not match its certificate). Nothing is written "
            "unless everything succeeded."
        ),
        json=True,
        config=False,
    )
    p.add_argument("draft", metavar="DRAFT", help="draft message file, or - for standard input")
    p.add_argument(
        "-o", "--output", metavar="OUT", default="-", help="write the sealed message here"
    )
    p.add_argument("--p12", metavar="FILE", type=Path, help="PKCS#12 file of the signing identity")
    p.add_argument(
        "--p12-password-env", metavar="VAR", help="environment variable holding its password"
    )
    p.add_argument("--sign-key", metavar="PEM", type=Path, help="signing private key (PEM/DER)")
    p.add_argument(
        "--sign-cert",
        metavar="PEM",
        type=Path,
        help="certificate of --sign-key, optionally followed by its intermediates",
    )
    add_paths_flag(
        p,
        "--to-cert",
        "PEM",
        "a recipient's certificate file (repeatable); matched by its email address",
    )
    p.add_argument("--no-sign", action="store_true", help="encrypt only")
    p.add_argument("--no-encrypt", action="store_true", help="sign only")
    p.add_argument(
        "--opaque", action="store_true", help="sign as opaque signed-data, not multipart/signed"
    )
    p.add_argument(
        "--no-header-protection",
        action="store_true",
        help="do not protect the header fields (RFC 9788); the Subject then stays visible",
    )
    p.add_argument(
        "--allow-3des",
        action="store_true",
        help="use Triple-DES for recipients that advertise nothing better (legacy)",
    )


def run(args: argparse.Namespace) -> int:
    """Seal the draft as ``args`` ask and write every output, or none; return the exit code (0).

    Raises :class:`UsageError` / :class:`KeyLoadError` for bad options, files and passwords
    (exit 2) and :class:`SealError` for a draft that cannot be sealed (exit 1).
    """
    options = SealOptions(
        sign=not args.no_sign,
        encrypt=not args.no_encrypt,
        opaque=args.opaque,
        header_protection=not args.no_header_protection,
        allow_3des=args.allow_3des,
    )
    if args.no_sign and args.no_encrypt:
        raise UsageError("--no-sign and --no-encrypt together leave nothing to do")
    if args.opaque and args.no_sign:
        raise UsageError("--opaque is a form of signing; it cannot go with --no-sign")
    if args.json and args.output == "-":
        raise UsageError("--json prints a report on stdout: write the message with -o OUT")
    signer = _load_signer(args)
    if options.sign and signer is None:
        raise UsageError("signing needs --p12 or --sign-key with --sign-cert (or use --no-sign)")
    recipients = _load_recipients(args.to_cert)
    draft = read_input(args.draft)
    at = dt.datetime.now(dt.UTC)
    result = seal(draft, signer=signer, recipients=recipients, at=at, options=options)
    outputs = {args.output: result.main.message}
    if result.bcc_copies:
        if args.output == "-":
            raise UsageError(
                "the draft has Bcc recipients: give -o OUT so that each Bcc copy "
                "can be written beside it"
            )
        for address, copy in result.bcc_copies.items():
            outputs[_bcc_path(args.output, address)] = copy.message
    _write_all(outputs)
    if args.json:
        json.dump(_report(result, args.output), sys.stdout, indent=2)
        sys.stdout.write("\n")
    return 0


def _bcc_path(output: str, address: str) -> str:
    return f"{output}.bcc-{address}"


def _load_signer(args: argparse.Namespace) -> Identity | None:
    if args.p12 is not None and (args.sign_key is not None or args.sign_cert is not None):
        raise UsageError("give either --p12 or --sign-key/--sign-cert, not both")
    if args.p12 is not None:
        password = keyfiles.password_from_env(args.p12_password_env)
        return keyfiles.load_pkcs12(args.p12, password)
    if (args.sign_key is None) != (args.sign_cert is None):
        raise UsageError("--sign-key and --sign-cert go together")
    if args.sign_key is None:
        return None
    key = keyfiles.load_private_key(args.sign_key)
    certs = keyfiles.load_certificates(args.sign_cert)
    if not keyfiles.public_keys_match(key, certs[0]):
        raise KeyLoadError(
            f"{args.sign_key}: the key does not match the certificate in {args.sign_cert}"
        )
    return Identity(key=key, certificate=certs[0], chain=tuple(certs[1:]))


def _load_recipients(paths: Sequence[Path]) -> list[Recipient]:
    """A Recipient for each address of each certificate in the files (CA certificates in a
    chain file name no address and so add nothing)."""
    recipients: list[Recipient] = []
    for path in paths:
        for cert in keyfiles.load_certificates(path):
            recipients.extend(_recipients_of(cert))
    return recipients


def _recipients_of(cert: x509.Certificate) -> list[Recipient]:
    caps = advertised_capabilities(cert)
    return [Recipient(address, cert, caps) for address in email_addresses(cert)]


def _write_all(outputs: dict[str, bytes]) -> None:
    """Write every output, or none: each goes to a temporary file first, renamed at the end."""
    if "-" in outputs:
        data = outputs.pop("-")
        _write_all(outputs)
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return
    temps: list[tuple[str, str]] = []
    try:
        for name, data in outputs.items():
            target = Path(name)
            fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
            temps.append((tmp, name))
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
        for tmp, name in temps:
            os.replace(tmp, name)
    except OSError as exc:
        for tmp, _name in temps:
            if os.path.exists(tmp):
                os.unlink(tmp)
        raise UsageError(f"cannot write output: {exc.strerror or exc}") from None


def _report(result: SealResult, output: str) -> dict[str, object]:
    return {
        "output": output,
        "signed": result.signed,
        "encrypted": result.encrypted,
        "micalg": result.micalg,
        "content_cipher": result.content_cipher,
        "envelope_recipients": list(result.main.envelope_recipients),
        "key_transport": {d.address: d.key_transport for d in result.main.deliveries},
        "bcc_copies": {
            address: {
                "output": _bcc_path(output, address),
                "key_transport": {d.address: d.key_transport for d in copy.deliveries},
            }
            for address, copy in result.bcc_copies.items()
        },
    }

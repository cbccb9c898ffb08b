"""``certs list|show|import|export|trust|forget`` and ``identity import|list``: the certificate
and identity store from the command line.

Every subcommand takes ``--config FILE``; the store is ``certs.db`` in the cache directory,
under the cache key (asked for on a terminal when no configured source has it). Bad input (a file
that is not a certificate, a corrupt PKCS#12, a wrong password) is one line and exit 2, and the
store is left unchanged: everything is loaded and checked before anything is written.
"""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import json
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization

from smime_companion import keyfiles, runtime
from smime_companion.cli.common import write_output as _write_output
from smime_companion.cli.flags import (
    Subcommands,
    add_command,
    add_group,
    add_output_flag,
    config_from_args,
)
from smime_companion.cli.unlock import unlocked
from smime_companion.config import Config
from smime_companion.core.cert_vocabulary import CertRecord
from smime_companion.core.certs import (
    describe_name,
    describe_subject,
    describe_time,
    fingerprint_sha256,
)
from smime_companion.core.model import Identity
from smime_companion.core.printable import for_terminal
from smime_companion.core.selection import NoCertificate, effective_trust
from smime_companion.errors import KeyLoadError, UsageError
from smime_companion.harvest import import_sightings
from smime_companion.store.certstore import CertStore, StoredIdentity, expiry_warnings

EXIT_OK = 0
EXIT_NOT_GOOD = 1


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``certs`` and ``identity`` subcommands to the main parser."""
    certs_sub = add_group(
        sub,
        "certs",
        help="correspondents' certificates: list, show, import, export, trust, forget",
        description="The certificates harvested from signed mail or imported, by address, with "
        "their trust: anchor (chains to a trust anchor), tofu (pinned), untrusted, key-changed "
        "(a new key for a pinned address: confirm with 'certs trust'), revoked, expired.",
        dest="certs_command",
    )

    _declare_list(certs_sub)
    _declare_show(certs_sub)
    _declare_import(certs_sub)
    _declare_export(certs_sub)
    _declare_trust(certs_sub)
    _declare_forget(certs_sub)
    identity_sub = add_group(
        sub,
        "identity",
        help="your own key pairs: import, list",
        description="Your own S/MIME identities, kept encrypted in the store. The latest "
        "imported is current; older ones stay to decrypt old mail.",
        dest="identity_command",
    )
    _declare_identity_import(identity_sub)
    _declare_identity_list(identity_sub)


# -- helpers -------------------------------------------------------------------------------------


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _open(config: Config) -> CertStore:
    """The store, with a remembered page key or else the passphrase (asked for on a terminal
    when no configured source has it), see :mod:`smime_companion.cli.unlock`."""
    from smime_companion.store.certstore import DB_FILENAME

    return unlocked(config, DB_FILENAME, lambda key: runtime.open_certstore(config, key))


def _record_json(record: CertRecord, at: dt.datetime) -> dict[str, Any]:
    return {
        "address": record.address,
        "fingerprint": record.fingerprint,
        "subject": describe_subject(record.certificate, ""),
        "issuer": describe_name(record.certificate.issuer, ""),
        "not_before": record.not_before.isoformat(),
        "not_after": record.not_after.isoformat(),
        "trust": str(effective_trust(record, at)),
        "capabilities": list(record.capabilities),
        "source": record.source,
        "first_seen": record.first_seen.isoformat(),
        "last_seen": record.last_seen.isoformat(),
        "preferred": record.preferred,
        "revocation": str(record.revocation),
        "revocation_checked": record.revocation_checked.isoformat()
        if record.revocation_checked
        else None,
        "chain": [describe_subject(c, "") for c in record.chain],
    }


def _line(record: CertRecord, at: dt.datetime) -> str:
    return (
        f"{record.address:32} {record.fingerprint[:16]}  {effective_trust(record, at)!s:11} "
        f"until {record.not_after.date().isoformat()}  from {record.source}"
    )


def _print_json(value: object) -> None:
    print(json.dumps(value, indent=2))


# -- certs ---------------------------------------------------------------------------------------


def _declare_list(sub: Subcommands) -> None:
    """Declare ``list`` and its flags (run by :func:`run_list` below)."""
    add_command(
        sub,
        "list",
        run_list,
        help="every certificate, one line per address",
        json=True,
    )


def run_list(args: argparse.Namespace) -> int:
    """``certs list``: every (address, certificate) record."""
    now = _now()
    with _open(config_from_args(args)) as store:
        records = store.records()
    if args.json:
        _print_json([_record_json(r, now) for r in records])
    else:
        for record in records:
            print(for_terminal(_line(record, now)))
    return EXIT_OK


def _declare_show(sub: Subcommands) -> None:
    """Declare ``show`` and its flags (run by :func:`run_show` below)."""
    show = add_command(
        sub,
        "show",
        run_show,
        help="the certificates of an address, or one certificate",
        description="Show the certificates recorded for ADDRESS (and which one encryption "
        "would use), or the certificate with FINGERPRINT (a unique prefix of 8+ hex digits).",
        json=True,
    )
    show.add_argument("what", metavar="ADDRESS|FINGERPRINT")


def run_show(args: argparse.Namespace) -> int:
    """``certs show``: an address's records and the selection, or one certificate's records."""
    config = config_from_args(args)
    now = _now()
    with _open(config) as store:
        if "@" in args.what:
            records = store.records(args.what)
            if not records:
                raise UsageError(f"no certificate recorded for {args.what.strip().lower()}")
            selection = store.select(args.what, now, config.certificates.revocation)
        else:
            records = store.records_for_fingerprint(store.resolve(args.what))
            selection = None
        evidence = {r.fingerprint: store.revocation_evidence(r.fingerprint)[0] for r in records}
    if args.json:
        out: dict[str, Any] = {"records": [_record_json(r, now) for r in records]}
        if selection is not None:
            out["encrypt_to"] = (
                None if isinstance(selection, NoCertificate) else selection.record.fingerprint
            )
            out["reason"] = selection.reason if isinstance(selection, NoCertificate) else None
        _print_json(out)
        return EXIT_OK
    for record in records:
        print(for_terminal(_line(record, now)))
        print(for_terminal(f"  subject      {describe_subject(record.certificate, '')}"))
        print(for_terminal(f"  issuer       {describe_name(record.certificate.issuer, '')}"))
        print(for_terminal(f"  fingerprint  {record.fingerprint}"))
        print(for_terminal(f"  capabilities {', '.join(record.capabilities) or '-'}"))
        checked = describe_time(record.revocation_checked) if record.revocation_checked else "never"
        where = evidence[record.fingerprint] or "-"
        print(for_terminal(f"  revocation   {record.revocation} (checked {checked}; {where})"))
        for issuer in record.chain:
            print(for_terminal(f"  chain        {describe_subject(issuer, '')}"))
    if selection is not None:
        if isinstance(selection, NoCertificate):
            print(for_terminal(f"encryption: none ({selection.reason})"))
        else:
            print(for_terminal(f"encryption: {selection.record.fingerprint}"))
            for warning in selection.warnings:
                print(for_terminal(f"warning: {warning}"))
    return EXIT_OK


def _declare_import(sub: Subcommands) -> None:
    """Declare ``import`` and its flags (run by :func:`run_import` below)."""
    imp = add_command(
        sub,
        "import",
        run_import,
        help="add certificates from a PEM or DER file",
        description="Add the email certificates of FILE (PEM, several allowed, or DER). One "
        "that chains to a trust anchor is trusted; any other is kept untrusted until "
        "'certs trust'. CA certificates in the file help build the chains.",
    )
    imp.add_argument("file", type=Path, metavar="FILE")


def run_import(args: argparse.Namespace) -> int:
    """``certs import FILE``: record the file's email certificates (anchored or untrusted)."""
    config = config_from_args(args)
    certs = keyfiles.load_certificates(args.file)  # KeyLoadError: not a certificate file
    anchors = runtime.load_anchors(config.identity)
    now = _now()
    with _open(config) as store:
        # Decide everything first; then write (each record is one transaction).
        sightings = import_sightings(certs, store.intermediates(), anchors, now)
        if not sightings:
            raise UsageError(f"{args.file}: holds no email certificate (no address in any of them)")
        for sighting in sightings:
            for record in store.record(sighting):
                print(for_terminal(_line(record, now)))
                if record.trust == "untrusted":
                    print(
                        "  not trusted: no anchor vouches for it; if you checked it, run "
                        f"'smime-companion certs trust {record.fingerprint}'"
                    )
    return EXIT_OK


def _declare_export(sub: Subcommands) -> None:
    """Declare ``export`` and its flags (run by :func:`run_export` below)."""
    export = add_command(
        sub,
        "export",
        run_export,
        help="write the certificate encryption to ADDRESS would use",
        description="Write, as PEM, the certificate that encrypting to ADDRESS would use now.",
    )
    export.add_argument("address", metavar="ADDRESS")
    add_output_flag(export)


def run_export(args: argparse.Namespace) -> int:
    """``certs export ADDRESS``: the PEM of the certificate encryption would use."""
    config = config_from_args(args)
    with _open(config) as store:
        selection = store.select(args.address, _now(), config.certificates.revocation)
    if isinstance(selection, NoCertificate):
        print(for_terminal(f"smime-companion certs export: {selection.reason}"), file=sys.stderr)
        return EXIT_NOT_GOOD
    _write_output(
        args.output, selection.record.certificate.public_bytes(serialization.Encoding.PEM)
    )
    return EXIT_OK


def _declare_trust(sub: Subcommands) -> None:
    """Declare ``trust`` and its flags (run by :func:`run_trust` below)."""
    trust = add_command(
        sub,
        "trust",
        run_trust,
        help="pin a certificate (confirm a changed key)",
        description="Trust the certificate with FINGERPRINT for its addresses: it is pinned, "
        "and other keys pinned for those addresses are un-pinned.",
    )
    trust.add_argument("fingerprint", metavar="FINGERPRINT")


def run_trust(args: argparse.Namespace) -> int:
    """``certs trust FINGERPRINT``: pin it for its addresses."""
    now = _now()
    with _open(config_from_args(args)) as store:
        for record in store.trust(args.fingerprint):
            print(for_terminal(_line(record, now)))
    return EXIT_OK


def _declare_forget(sub: Subcommands) -> None:
    """Declare ``forget`` and its flags (run by :func:`run_forget` below)."""
    forget = add_command(
        sub,
        "forget",
        run_forget,
        help="delete a certificate from the store",
        description="Delete the certificate with FINGERPRINT and every record of it.",
    )
    forget.add_argument("fingerprint", metavar="FINGERPRINT")


def run_forget(args: argparse.Namespace) -> int:
    """``certs forget FINGERPRINT``: delete it."""
    with _open(config_from_args(args)) as store:
        print(for_terminal(f"forgot {store.forget(args.fingerprint)}"))
    return EXIT_OK


# -- identity ------------------------------------------------------------------------------------


def _password(args: argparse.Namespace) -> bytes | None:
    if args.password_env:
        value = os.environ.get(args.password_env)
        if value is None:
            raise KeyLoadError(f"environment variable {args.password_env} is not set")
        return value.encode()
    if sys.stdin.isatty():
        return getpass.getpass(f"password of {args.file}: ").encode()
    return None


def load_identity_file(path: Path, password: bytes | None) -> Identity:
    """An identity from a PKCS#12 file or a PEM file holding a private key and its certificate
    (plus chain). Raises :class:`KeyLoadError` with one line (unreadable, corrupt, wrong
    password, no key, key without certificate)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KeyLoadError(f"cannot read {path}: {exc.strerror or exc}") from None
    if b"-----BEGIN" not in data or keyfiles.is_armoured_pkcs12(data):
        return keyfiles.load_pkcs12(path, password)
    key = keyfiles.load_private_key(path, password)
    certs = keyfiles.load_certificates(path)
    (identity,) = keyfiles.pair_keys_with_certificates([key], certs)
    return identity


def _declare_identity_import(sub: Subcommands) -> None:
    """Declare ``import`` and its flags (run by :func:`run_identity_import` below)."""
    id_import = add_command(
        sub,
        "import",
        run_identity_import,
        help="import a PKCS#12 file, or a PEM file with key and certificate",
        description="Import FILE: PKCS#12 (.p12/.pfx; the password from --password-env, else "
        "asked on a terminal) or PEM holding the private key and its certificate (and chain).",
    )
    id_import.add_argument("file", type=Path, metavar="FILE")
    id_import.add_argument("--password-env", metavar="VAR", help="the file's password is in $VAR")


def run_identity_import(args: argparse.Namespace) -> int:
    """``identity import FILE``: keep the key pair (encrypted) and make it current."""
    config = config_from_args(args)
    identity = load_identity_file(args.file, _password(args))
    now = _now()
    with _open(config) as store:
        stored = store.import_identity(identity, now)
        warnings = expiry_warnings([stored], now)
    print(
        for_terminal(
            f"imported {stored.fingerprint[:16]} for {', '.join(stored.addresses) or 'no address'}"
            f" (valid until {identity.certificate.not_valid_after_utc.date().isoformat()}); current"
        )
    )
    for warning in warnings:
        print(for_terminal(f"warning: {warning}"), file=sys.stderr)
    return EXIT_OK


def _declare_identity_list(sub: Subcommands) -> None:
    """Declare ``list`` and its flags (run by :func:`run_identity_list` below)."""
    add_command(
        sub,
        "list",
        run_identity_list,
        help="your identities, current first",
        json=True,
    )


def run_identity_list(args: argparse.Namespace) -> int:
    """``identity list``: own identities, current first, with expiry warnings: those the config
    names (``[identity]``: the current one, then ``old_p12``) and those imported into the
    store, each once."""
    now = _now()
    config = config_from_args(args)
    with _open(config) as store:
        imported = store.identities_listed()
    configured = runtime.load_identities(config.identity)
    rows: list[StoredIdentity] = []
    seen: set[str] = set()
    for n, identity in enumerate(configured):
        fp = fingerprint_sha256(identity.certificate)
        seen.add(fp)
        rows.append(StoredIdentity(fp, identity, imported=None, current=n == 0))
    for item in imported:
        if item.fingerprint not in seen:
            rows.append(replace(item, current=item.current and not configured))
    warnings = expiry_warnings(rows, now)
    if args.json:
        _print_json(
            [
                {
                    "fingerprint": i.fingerprint,
                    "addresses": list(i.addresses),
                    "subject": describe_subject(i.identity.certificate, ""),
                    "not_before": i.identity.certificate.not_valid_before_utc.isoformat(),
                    "not_after": i.identity.certificate.not_valid_after_utc.isoformat(),
                    "imported": i.imported.isoformat() if i.imported else None,
                    "source": "store" if i.imported else "config",
                    "current": i.current,
                }
                for i in rows
            ]
        )
    else:
        if not rows:
            print("no identity: name your PKCS#12 in [identity] p12, or 'identity import FILE'")
        for i in rows:
            state = "current" if i.current else "retired"
            print(
                for_terminal(
                    f"{', '.join(i.addresses) or '-':32} {i.fingerprint[:16]}  {state:8} until "
                    f"{i.identity.certificate.not_valid_after_utc.date().isoformat()}  "
                    f"({'imported' if i.imported else 'config'})"
                )
            )
    for warning in warnings:
        print(for_terminal(f"warning: {warning}"), file=sys.stderr)
    return EXIT_OK

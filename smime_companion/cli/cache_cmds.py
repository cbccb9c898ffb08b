"""``search``, ``show``, ``export`` and ``cache stats|rekey|rebuild|scan``: reading the private
message cache from the command line.

Every subcommand takes ``--config FILE``. The cache key comes from where the config says
(keyring, command, environment); when it is unavailable and standard input is a terminal, the
passphrase is asked for.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from smime_companion import credentials, runtime
from smime_companion.cli.common import cache_key, write_output
from smime_companion.cli.flags import (
    Subcommands,
    add_command,
    add_group,
    add_output_flag,
    config_from_args,
)
from smime_companion.cli.unlock import forget_all, unlocked
from smime_companion.config import Config
from smime_companion.core.printable import for_terminal, for_terminal_lines
from smime_companion.errors import MalformedInput, UsageError
from smime_companion.store import Cache, MessageSummary, db

if TYPE_CHECKING:
    import mailbox

DEFAULT_LIMIT = 100


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the cache subcommands to the main parser."""
    _declare_search(sub)
    _declare_show(sub)
    _declare_export(sub)
    cache_sub = add_group(
        sub,
        "cache",
        help="look after the cache: stats, rekey, lock, rebuild, scan",
        description="Maintain the encrypted message cache.",
        dest="cache_command",
    )
    _declare_stats(cache_sub)
    _declare_rekey(cache_sub)
    _declare_lock(cache_sub)
    _declare_rebuild(cache_sub)
    _declare_scan(cache_sub)


# -- helpers -------------------------------------------------------------------------------------


def _open(config: Config) -> Cache:
    """The cache, with a remembered page key or else the passphrase (asked for on a terminal
    when no configured source has it), see :mod:`smime_companion.cli.unlock`."""
    return unlocked(config, db.DB_FILENAME, lambda key: runtime.open_cache(config, key))


def _query(words: list[str]) -> str:
    return " ".join(words)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _verdict_fields(summary: MessageSummary) -> tuple[tuple[str, str], ...]:
    fields = [
        ("X-SMIME-Companion-Decryption", summary.decryption),
        ("X-SMIME-Companion-Signature", summary.signature),
    ]
    if summary.signer:
        fields.append(("X-SMIME-Companion-Signer", summary.signer))
    if summary.error:
        fields.append(("X-SMIME-Companion-Error", summary.error))
    fields.append(("X-SMIME-Companion-Scan", summary.scan or "not-scanned"))
    fields.append(
        (
            "X-SMIME-Companion-Source",
            f"{summary.account}/{summary.folder}; uidvalidity={summary.uidvalidity}; "
            f"uid={summary.uid}",
        )
    )
    return tuple(fields)


def _exported(cache: Cache, message_id: int) -> bytes:
    from smime_companion.core import export as exporting

    summary = cache.summary(message_id)
    report = cache.report(message_id)
    raw = cache.raw(message_id)
    content = cache.content(message_id)
    effective = tuple((k, v) for k, v in (report.get("headers") or {}).items())
    # The report keeps only the summary headers (lower-cased names); give them their usual case.
    effective = tuple((_CANONICAL.get(k, k), v) for k, v in effective)
    verdict = list(_verdict_fields(summary))
    warnings = tuple(str(w) for w in report.get("warnings") or ())
    if warnings:
        verdict.append(("X-SMIME-Companion-Warnings", ", ".join(warnings)))
    if report.get("content_cipher"):
        verdict.append(("X-SMIME-Companion-Cipher", str(report["content_cipher"])))
    cipher = report.get("content_cipher")
    protected = exporting.is_integrity_protected(
        summary.decryption, summary.signature, str(cipher) if cipher else None, warnings
    )
    return exporting.export_message(
        raw, content, effective, tuple(verdict), integrity_protected=protected
    )


_CANONICAL = {
    "from": "From",
    "to": "To",
    "cc": "Cc",
    "subject": "Subject",
    "date": "Date",
    "message-id": "Message-ID",
}


@contextlib.contextmanager
def _private_files() -> Iterator[None]:
    # Exported mail is plaintext: whatever we create is readable by the user only.
    old = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(old)


def _badge(m: MessageSummary) -> str:
    marks = []
    if m.encrypted:
        marks.append("encrypted" if m.decryption == "ok" else f"encrypted:{m.decryption}")
    if m.signature != "none":
        marks.append(f"sig:{m.signature}")
    if m.attachments:
        marks.append(f"att:{m.attachments}")
    if m.scan and m.scan != "clean":
        marks.append(f"scan:{m.scan}")
    return " ".join(marks)


# -- commands ------------------------------------------------------------------------------------


def _declare_search(sub: Subcommands) -> None:
    """Declare ``search`` and its flags (run by :func:`run_search` below)."""
    search = add_command(
        sub,
        "search",
        run_search,
        help="search the cache (newest first)",
        description='Search cached mail with a notmuch-like query: words, "phrases", from:, '
        "to:, subject:, folder:, date:2026-01-01..2026-03-31 or date:7d.., is:encrypted, "
        "is:signed, sig:valid|invalid|untrusted|..., has:attachment, scan:infected, "
        "AND/OR/NOT and parentheses. An empty query lists everything.",
        json=True,
    )
    search.add_argument("query", nargs="*", help="the query (several words are ANDed)")
    search.add_argument(
        "--limit",
        type=int,
        default=DEFAULT_LIMIT,
        metavar="N",
        help=f"at most N results (default {DEFAULT_LIMIT}; 0 for all)",
    )


def run_search(args: argparse.Namespace) -> int:
    """Print the messages matching the query, newest first."""
    if args.limit < 0:
        raise UsageError("--limit must be 0 (no limit) or more")
    with _open(config_from_args(args)) as cache:
        hits = cache.search(_query(args.query), now=_now(), limit=args.limit or None)
    if args.json:
        print(json.dumps([h.to_json() for h in hits], indent=2, ensure_ascii=False))
        return 0
    for h in hits:
        sender = for_terminal(_header_text(h.sender))
        print(
            f"{h.id:>7}  {h.date:%Y-%m-%d %H:%M}  {sender[:32]:<32}  {for_terminal(h.subject)}"
            + (f"  [{for_terminal(_badge(h))}]" if _badge(h) else "")
        )
    return 0


def _mime_text() -> ModuleType:
    """``core.text``, imported when used: it loads the MIME parser and the HTML converter (about
    10 ms of each ``search`` from a shell), which a list of plain headers does not need."""
    from smime_companion.core import text

    return text


def _shown_text(content: bytes) -> str:
    """The message's text as a person reads it: each body once (a text and HTML pair, as most
    mail is sent, printed as its text), under its heading when it is a message inside."""
    text = _mime_text()
    try:
        parts = list(text.iter_parts(content))
    except MalformedInput:
        return ""  # the top header section is over the limit: nothing was read
    return str(text.shown_text(parts))


def _header_text(value: str) -> str:
    """``value`` with RFC 2047 encoded words decoded (core.text.decode_header_text); a value
    without one (most) is returned as it is without loading core.text."""
    return _mime_text().decode_header_text(value) if "=?" in value else value


def _declare_show(sub: Subcommands) -> None:
    """Declare ``show`` and its flags (run by :func:`run_show` below)."""
    show = add_command(
        sub,
        "show",
        run_show,
        help="show one cached message",
        description="Show a cached message: its headers, verdict and text (default), the raw "
        "original (--raw), the headers only (--headers), the text only (--text), or save "
        "one decoded MIME part (--part N -o FILE).",
        json=True,
    )
    show.add_argument("id", type=int, help="the message id (from search)")
    what = show.add_mutually_exclusive_group()
    what.add_argument("--raw", action="store_true", help="the raw original, exactly as fetched")
    what.add_argument("--headers", action="store_true", help="the effective headers and verdict")
    what.add_argument("--text", action="store_true", help="the text of the message only")
    what.add_argument("--part", type=int, metavar="N", help="decoded MIME part N (1-based)")
    add_output_flag(show)


def run_show(args: argparse.Namespace) -> int:
    """Print (or save) one message or part of it."""
    with _open(config_from_args(args)) as cache:
        summary = cache.summary(args.id)
        if args.raw:
            write_output(args.output, cache.raw(args.id))
            return 0
        content = cache.content(args.id)
        if args.part is not None:
            if content is None:
                raise UsageError(f"message {args.id} could not be opened: it has no parts to show")
            part = _mime_text().get_part(content, args.part)
            if part is None:
                raise UsageError(f"message {args.id} has no part {args.part}")
            write_output(args.output, part.data)
            return 0
        exported = _exported(cache, args.id)
        attachments = cache.attachments(args.id)
        report = cache.report(args.id)
    head, _, _ = exported.partition(b"\n\n")
    body = _shown_text(content) if content is not None else ""
    if args.json:
        out: dict[str, Any] = summary.to_json()
        out["report"] = report
        out["attachments"] = [a.__dict__ for a in attachments]
        out["text"] = body
        write_output(args.output, (json.dumps(out, indent=2, ensure_ascii=False) + "\n").encode())
        return 0
    if args.headers:
        # The exported head holds no line that is not a field, but its bytes are still the
        # sender's: escape what a terminal would act on, keeping the fields' own line breaks.
        shown = for_terminal_lines(head.decode("utf-8", "replace"))
        write_output(args.output, shown.encode("utf-8") + b"\n")
        return 0
    if args.text:
        write_output(args.output, for_terminal_lines(body).encode("utf-8") + b"\n")
        return 0
    lines = [
        f"{name}: {for_terminal(_header_text(value))}"
        for name, value in (
            ("From", summary.sender),
            ("To", summary.to),
            ("Cc", summary.cc),
            ("Subject", summary.subject),
            ("Date", summary.date.isoformat()),
        )
        if value
    ]
    lines += [f"{name}: {for_terminal(value)}" for name, value in _verdict_fields(summary)]
    for a in attachments:
        lines.append(
            f"Attachment: part {a.part}: {for_terminal(a.filename) or '(no name)'} "
            f"({for_terminal(a.mime_type)}, "
            f"{a.size} bytes, sha256 {a.sha256[:16]}..., scan {a.scan or 'not-scanned'})"
        )
    shown = for_terminal_lines(body) if content is not None else "(not opened)"
    text = "\n".join(lines) + "\n\n" + shown + "\n"
    write_output(args.output, text.encode("utf-8"))
    return 0


def _declare_export(sub: Subcommands) -> None:
    """Declare ``export`` and its flags (run by :func:`run_export` below)."""
    export = add_command(
        sub,
        "export",
        run_export,
        help="export decrypted messages to a Maildir or mbox",
        description="Write the decrypted messages matching QUERY (all when empty) to a Maildir "
        "or an mbox file that any mail client opens, each with X-SMIME-Companion-* headers "
        "stating the verdict. The files are private (0600).",
    )
    target = export.add_mutually_exclusive_group(required=True)
    target.add_argument("--maildir", type=Path, metavar="DIR", help="write a Maildir")
    target.add_argument("--mbox", type=Path, metavar="FILE", help="append to an mbox file")
    export.add_argument("query", nargs="*", help="which messages (default: all)")


def run_export(args: argparse.Namespace) -> int:
    """Write the matching messages to a Maildir or an mbox file."""
    import mailbox

    count = 0
    with _open(config_from_args(args)) as cache, _private_files():
        ids = list(cache.search_ids(_query(args.query), now=_now()))
        ids.reverse()  # oldest first, the order mail clients expect in an mbox
        try:
            where = args.maildir or args.mbox
            # A missing parent directory is made (private, like everything exported).
            Path(where).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            box: mailbox.Mailbox[Any]
            if args.maildir is not None:
                box = mailbox.Maildir(str(args.maildir), create=True)
            else:
                box = mailbox.mbox(str(args.mbox), create=True)
                box.lock()
            try:
                for message_id in ids:
                    box.add(_exported(cache, message_id))
                    count += 1
                box.flush()
            finally:
                if isinstance(box, mailbox.mbox):
                    box.unlock()
                box.close()
        except OSError as exc:
            raise UsageError(f"cannot write {where}: {exc.strerror or exc}") from None
    print(f"exported {count} message{'s' if count != 1 else ''}", file=sys.stderr)
    return 0


def _declare_stats(sub: Subcommands) -> None:
    """Declare ``stats`` and its flags (run by :func:`run_stats` below)."""
    add_command(
        sub,
        "stats",
        run_stats,
        help="counts and size of the cache",
        json=True,
    )


def run_stats(args: argparse.Namespace) -> int:
    """Print counts and the size of the cache."""
    with _open(config_from_args(args)) as cache:
        stats = cache.stats()
    if args.json:
        print(json.dumps(stats, indent=2))
        return 0
    print(f"cache: {stats['path']} ({'encrypted' if stats['encrypted'] else 'NOT encrypted'})")
    print(f"messages: {stats['messages']} ({stats['encrypted_messages']} encrypted, "
          f"{stats['signed_messages']} signed, {stats['valid_signatures']} valid signatures, "
          f"{stats['unopened']} not opened)")  # fmt: skip
    print(f"attachments: {stats['attachments']}")
    print("scan: " + (", ".join(f"{k} {v}" for k, v in sorted(stats["scan"].items())) or "-"))
    print(f"size on disk: {stats['bytes_on_disk']} bytes")
    for f in stats["folders"]:
        where = for_terminal(f"{f['account']}/{f['folder']}")  # folder names are the server's
        print(f"  {where} (uidvalidity {f['uidvalidity']}): {f['messages']}")
    return 0


def _declare_rekey(sub: Subcommands) -> None:
    """Declare ``rekey`` and its flags (run by :func:`run_rekey` below)."""
    rekey = add_command(
        sub,
        "rekey",
        run_rekey,
        help="re-encrypt the cache under a new key",
        description="Re-encrypt the cache (and the certificate store and outbox journal, which "
        "share its key) under a new passphrase, read from --new-key-env or asked for. "
        "Stop the daemon first. A keyring-held key is updated in the keyring; for a key from "
        "an environment variable or command, update that source yourself.",
    )
    rekey.add_argument("--new-key-env", metavar="VAR", help="take the new key from $VAR")


def run_rekey(args: argparse.Namespace) -> int:
    """Re-encrypt the cache under a new key (and update a keyring-held key)."""
    import getpass

    config = config_from_args(args)
    if not config.cache.encrypt:
        raise UsageError("the cache is not encrypted (encrypt_cache = false): nothing to rekey")
    if args.new_key_env:
        new_key = os.environ.get(args.new_key_env)
        if not new_key:
            raise UsageError(f"environment variable {args.new_key_env} is not set or empty")
    elif sys.stdin.isatty():
        new_key = getpass.getpass("new cache passphrase: ")
        if new_key != getpass.getpass("again: "):
            raise UsageError("the two passphrases differ; nothing was changed")
    else:
        raise UsageError("give the new key with --new-key-env VAR (or run on a terminal)")
    key = cache_key(config)
    assert key is not None  # encrypt is on
    # Open the cache once the normal way (checks the key, brings the schema up to date), then
    # re-encrypt it together with the other databases that share its key.
    runtime.open_cache(config, key).close()
    changed = db.rekey_directory(config.cache.path, key, new_key)
    forget_all(config)  # the old page keys open nothing now
    print(f"re-encrypted {', '.join(p.name for p in changed)}", file=sys.stderr)
    if config.cache.key.keyring:
        credentials.store_in_keyring(config.cache.key, new_key)
        print("cache key changed and saved in the keyring", file=sys.stderr)
    else:
        print(
            f"cache key changed: update {config.cache.key.describe()} to the new key",
            file=sys.stderr,
        )
    return 0


def _declare_lock(sub: Subcommands) -> None:
    """Declare ``lock`` (run by :func:`run_lock` below)."""
    add_command(
        sub,
        "lock",
        run_lock,
        help="forget the remembered unlock now",
        description="A command that unlocked the cache keeps the derived key (never the "
        "passphrase) in the kernel's user keyring for [cache] remember_unlock_minutes, so "
        "that the next command starts faster. This forgets it now: the next command needs the "
        "passphrase (or its configured source) again.",
    )


def run_lock(args: argparse.Namespace) -> int:
    """Forget the page keys that earlier commands remembered."""
    forgotten = forget_all(config_from_args(args))
    print(f"forgot {forgotten} remembered key(s)" if forgotten else "nothing was remembered",
          file=sys.stderr)  # fmt: skip
    return 0


def _declare_rebuild(sub: Subcommands) -> None:
    """Declare ``rebuild`` and its flags (run by :func:`run_rebuild` below)."""
    rebuild = add_command(
        sub,
        "rebuild",
        run_rebuild,
        help="re-open messages from their raw originals",
        description="Re-open cached messages from their raw originals with the identities of "
        "the config and those imported with 'identity import' (e.g. after importing an old "
        "key) and re-index them. By default only "
        "the messages that could not be opened; --all for every message, or a QUERY.",
    )
    rebuild.add_argument("query", nargs="*", help="which messages (default: the unopened)")
    rebuild.add_argument("--all", action="store_true", help="every cached message")


def run_rebuild(args: argparse.Namespace) -> int:
    """Re-open messages from their raw originals with the configured identities."""
    from smime_companion.core.entry_derivation import entry_maker
    from smime_companion.harvest import CertHarvester
    from smime_companion.sync.opening import OpeningPool

    config = config_from_args(args)
    key = cache_key(config)
    # Every key that may open the user's mail: the config's and those imported with
    # ``identity import`` (kept in the certificate store under the same key).
    with runtime.open_certstore(config, key) as certstore, runtime.open_cache(config, key) as cache:
        identities = runtime.identities_with_store(config, certstore)
        anchors = runtime.load_anchors(config.identity)
        # In this process (no workers for a rebuild), and never raising: a message that cannot
        # be opened is re-derived with its error, as the sync would store it. rebuild() passes
        # each message's arrival time, so a signature valid then stays explained as it was, and
        # a signer the store holds as revoked stays revoked.
        opener = OpeningPool(
            identities,
            anchors,
            allow_sha1=config.identity.allow_sha1,
            allow_weak=config.identity.allow_weak_algorithms,
            extra_certificates=certstore.certificates(),
            workers=0,
            time_limit=config.cache.open_time_limit,
        )
        derive = entry_maker(opener.open, CertHarvester(certstore).known_revoked)
        if args.all:
            ids = None
        elif args.query:
            ids = list(cache.search_ids(_query(args.query), now=_now()))
        else:
            ids = cache.messages_to_reopen()
        count = cache.rebuild(derive, ids)
        left = len(cache.messages_to_reopen())
    print(
        f"rebuilt {count} message{'s' if count != 1 else ''}; {left} still cannot be opened",
        file=sys.stderr,
    )
    return 0


def _declare_scan(sub: Subcommands) -> None:
    """Declare ``scan`` and its flags (run by :func:`run_scan` below)."""
    scan = add_command(
        sub,
        "scan",
        run_scan,
        help="scan messages not scanned yet",
        description="Send cached messages without a scan verdict (or whose scan failed) to the "
        "configured scanner (clamd_socket or scan_command).",
    )
    scan.add_argument("--limit", type=int, default=1000, metavar="N", help="at most N messages")


def run_scan(args: argparse.Namespace) -> int:
    """Scan messages without a verdict with the configured scanner."""
    from smime_companion.scan import scan_pending

    config = config_from_args(args)
    scanner = runtime.open_scanner(config)
    if scanner is None:
        raise UsageError("no scanner configured (set clamd_socket or scan_command in [cache])")
    with _open(config) as cache:
        count = scan_pending(cache, scanner, limit=args.limit)
        infected = len(cache.search("scan:infected", now=_now()))
    print(f"scanned {count} messages; {infected} infected in the cache", file=sys.stderr)
    return 0

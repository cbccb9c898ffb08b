"""The ``smime-companion`` command: one entry point, a module per subcommand.

Exit codes (documented in the README): 0 success; 1 the command ran but the result is not good
(a signature not valid, a message not decryptable, a recipient without certificate); 2 usage
error (bad option, unreadable file, wrong password); 3 an internal error (a bug: please report).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import traceback
from collections.abc import Sequence

from smime_companion import __version__, systemd
from smime_companion.core.printable import for_terminal
from smime_companion.errors import SmimeCompanionError, UsageError
from smime_companion.logs import route_library_warnings

EXIT_OK = 0
EXIT_NOT_GOOD = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 3

# Each subcommand module has ``register(subparsers)`` that adds its commands and their handlers.
# Which module declares which command, so that a command line imports only the module of the
# command it runs (``search`` does not load the reader, the sync or the sealing engine): the
# modules import what their handlers need, and a search run from a shell pays each import.
COMMANDS = {
    "init": "init_cmd",
    "open": "open_cmd",
    "seal": "seal_cmd",
    "search": "cache_cmds",
    "show": "cache_cmds",
    "export": "cache_cmds",
    "cache": "cache_cmds",
    "run": "daemon_cmds",
    "sync": "daemon_cmds",
    "status": "daemon_cmds",
    "doctor": "doctor_cmd",
    "certs": "certs_cmds",
    "identity": "certs_cmds",
    "outbox": "outbox_cmds",
    "reader": "reader_cmds",
    "compose": "reader_cmds",
}


class TerminalSafeFormatter(logging.Formatter):
    """Log records with the message on one line and every control character escaped: a log
    line names folders, Message-IDs and server replies, which the server or the sender chose.
    A traceback (``-v``) keeps its own lines."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        record.message = for_terminal(record.message)
        return super().formatMessage(record)


class JournalSafeFormatter(TerminalSafeFormatter, systemd.JournalFormatter):
    """journald's priority prefix on each line, and the message escaped as on a terminal (a
    line break in a folder name would otherwise forge a journal line of its own)."""


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The command line's parser: with every subcommand, or, when ``argv`` names one, with the
    commands of that one's module only (the rest are never imported)."""
    parser = argparse.ArgumentParser(
        prog="smime-companion",
        description="S/MIME for mail clients that lack it: open, verify and seal messages.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what happens to stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    named = _command_named(argv)
    modules = [COMMANDS[named]] if named is not None else list(dict.fromkeys(COMMANDS.values()))
    for name in modules:
        importlib.import_module(f"smime_companion.cli.{name}").register(sub)
    return parser


def _command_named(argv: Sequence[str] | None) -> str | None:
    """The subcommand ``argv`` runs when it is one we know, else None (help, a typo, none)."""
    words = [a for a in (argv or ()) if not a.startswith("-")]
    return words[0] if words and words[0] in COMMANDS else None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on usage errors and 0 for --help
        return int(exc.code) if isinstance(exc.code, int) else EXIT_USAGE
    handler = logging.StreamHandler(sys.stderr)
    if systemd.journal_stream():  # journald records the level from a <N> prefix
        handler.setFormatter(JournalSafeFormatter("%(name)s: %(message)s"))
    else:
        handler.setFormatter(TerminalSafeFormatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, handlers=[handler])
    route_library_warnings(args.verbose)
    try:
        return int(args.func(args))
    except UsageError as exc:
        print(f"smime-companion {args.command}: {for_terminal(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    except SmimeCompanionError as exc:
        print(f"smime-companion {args.command}: {for_terminal(str(exc))}", file=sys.stderr)
        return EXIT_NOT_GOOD
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (``search ... | head``): what it wanted it has. Point stdout at
        # nothing so the interpreter's own flush at exit does not complain about the pipe.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return EXIT_OK
    except Exception as exc:  # a bug of ours: one line, the traceback only with --verbose
        if args.verbose:
            traceback.print_exc()
        print(
            f"smime-companion {args.command}: internal error "
            f"({type(exc).__name__}: {for_terminal(str(exc))}); "
            "please report it (run with -v for the traceback)",
            file=sys.stderr,
        )
        return EXIT_INTERNAL

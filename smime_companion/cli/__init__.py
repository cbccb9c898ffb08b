"""The ``smime-companion`` command: one entry point, a module per subcommand.

Exit codes (documented in the README): 0 success; 1 the command ran but the result is not good
(a signature not valid, a message not decryptable, a recipient without certificate); 2 usage
error (bad option, unreadable file, wrong password); 3 an internal error (a bug: please report).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from collections.abc import Sequence

from smime_companion import __version__, systemd
from smime_companion.cli import (
    cache_cmds,
    certs_cmds,
    daemon_cmds,
    init_cmd,
    open_cmd,
    outbox_cmds,
    reader_cmds,
    seal_cmd,
)
from smime_companion.errors import SmimeCompanionError, UsageError
from smime_companion.logs import route_library_warnings

EXIT_OK = 0
EXIT_NOT_GOOD = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 3

# Each subcommand module has ``register(subparsers)`` that adds its parser and sets ``func``.
SUBCOMMANDS = (
    init_cmd, open_cmd, seal_cmd, cache_cmds, daemon_cmds, certs_cmds, outbox_cmds, reader_cmds,
)  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="smime-companion",
        description="S/MIME for mail clients that lack it: open, verify and seal messages.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what happens to stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module in SUBCOMMANDS:
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on usage errors and 0 for --help
        return int(exc.code) if isinstance(exc.code, int) else EXIT_USAGE
    handler = logging.StreamHandler(sys.stderr)
    if systemd.journal_stream():  # journald records the level from a <N> prefix
        handler.setFormatter(systemd.JournalFormatter("%(name)s: %(message)s"))
    else:
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, handlers=[handler])
    route_library_warnings(args.verbose)
    try:
        return int(args.func(args))
    except UsageError as exc:
        print(f"smime-companion {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except SmimeCompanionError as exc:
        print(f"smime-companion {args.command}: {exc}", file=sys.stderr)
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
            f"smime-companion {args.command}: internal error ({type(exc).__name__}: {exc}); "
            "please report it (run with -v for the traceback)",
            file=sys.stderr,
        )
        return EXIT_INTERNAL

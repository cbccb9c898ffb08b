"""Declaring subcommands: the flags several of them share (``--json``, ``--config``,
``-o/--output``, ``--account``) and :func:`add_command`, which adds a subcommand with
its handler and the shared flags it takes. Cheap to import (argparse and the config reader
only): every command line loads it before it knows which command runs.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from smime_companion.config import Config

Subcommands = argparse._SubParsersAction  # type: ignore[type-arg]
Handler = Callable[[argparse.Namespace], int]


def add_command(
    sub: Subcommands,
    name: str,
    handler: Handler,
    *,
    help: str,  # noqa: A002 (argparse's own name for it)
    description: str | None = None,
    json: bool = False,
    config: bool = True,
) -> argparse.ArgumentParser:
    """Add subcommand ``name`` to ``sub``, run by ``handler(args)``; with ``--json`` when
    ``json``, and ``--config FILE`` when ``config`` (the default: most commands read it).
    Returns the new parser for the command's own arguments."""
    parser: argparse.ArgumentParser = sub.add_parser(name, help=help, description=description)
    if json:
        add_json_flag(parser)
    if config:
        add_config_flag(parser)
    parser.set_defaults(func=handler)
    return parser


def add_group(
    sub: Subcommands,
    name: str,
    *,
    help: str,
    description: str,
    dest: str,  # noqa: A002
) -> Subcommands:
    """Add a command ``name`` whose actions are subcommands of their own (``cache stats``);
    ``dest`` names the chosen action in the parsed arguments. Returns the actions' parser."""
    group = sub.add_parser(name, help=help, description=description)
    actions = group.add_subparsers(dest=dest, metavar="ACTION")
    actions.required = True
    return actions


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    """``--json``: print what a script reads."""
    parser.add_argument("--json", action="store_true", help="print a JSON object for scripts")


def add_config_flag(parser: argparse.ArgumentParser) -> None:
    """The ``--config FILE`` option every config-reading subcommand takes."""
    parser.add_argument(
        "--config",
        metavar="FILE",
        type=Path,
        help="config file (default: $SMIME_COMPANION_CONFIG, else "
        "~/.config/smime-companion/config.toml)",
    )


def add_output_flag(parser: argparse.ArgumentParser, **kwargs: Any) -> None:
    """``-o/--output FILE`` (``kwargs`` override the default ``-``, standard output)."""
    options: dict[str, Any] = {"default": "-", "metavar": "FILE", "help": "write to FILE"}
    parser.add_argument("-o", "--output", **{**options, **kwargs})


def add_paths_flag(parser: argparse.ArgumentParser, flag: str, metavar: str, help: str) -> None:  # noqa: A002
    """A repeatable file option (``--anchor A --anchor B``): a list of paths, empty by default."""
    parser.add_argument(flag, metavar=metavar, action="append", default=[], type=Path, help=help)


def add_account_flag(parser: argparse.ArgumentParser) -> None:
    """``--account A``: only this account."""
    parser.add_argument("--account", metavar="A", help="only this account")


def config_from_args(args: argparse.Namespace) -> Config:
    """Load the config named by ``--config`` (or the default location)."""
    from smime_companion.config import load_config

    return load_config(args.config)

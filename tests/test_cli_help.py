"""Every subcommand explains itself (``--help``) and is documented in the README."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from smime_companion.cli import build_parser

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


@pytest.mark.parametrize("name", sorted(_subcommands()))
def test_subcommand_has_help_text(name: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "smime_companion", name, "--help"], capture_output=True, timeout=30
    )
    assert proc.returncode == 0
    assert _subcommands()[name].description, f"{name} has no description"
    assert len(proc.stdout.decode().splitlines()) > 3


@pytest.mark.parametrize("name", sorted(_subcommands()))
def test_subcommand_is_documented_in_the_readme(name: str) -> None:
    assert f"smime-companion {name}" in README


def test_readme_documents_the_exit_codes() -> None:
    for code in ("| 0 |", "| 1 |", "| 2 |", "| 3 |"):
        assert code in README

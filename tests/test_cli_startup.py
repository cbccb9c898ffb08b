"""A command line that starts fast: ``search``, ``show`` and ``status`` import only what they use
(issue 19). Each run from a shell pays for every module it imports, so the heavy ones (the
S/MIME engines, the reader's web framework, the IMAP sync, the outbox) must stay out of them.
The check is on the modules loaded, not on a time: timings live in bench/scale.py."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from smime_companion.testing.pki import TestPki
from tests.test_cache import KEY
from tests.test_cli_cache import setup  # noqa: F401 (the module-wide cache of test_cli_cache)

# Imported by none of search, show or status: what they are kept from paying for.
HEAVY = (
    "smime_companion.core.open",  # and with it decrypt, verify, chain, cms
    "smime_companion.core.seal",
    "smime_companion.imap",
    "smime_companion.outbox",
    "smime_companion.reader",
    "smime_companion.daemon",
    "smime_companion.sync",  # the sync pipeline and its opening pool
    "smime_companion.revocation_fetch",
    "smime_companion.harvest",
    "smime_companion.store.certstore",
    "smime_companion.store.journal",
    "cryptography.x509",
    "asn1crypto",
    "flask",
    "waitress",
    "selenium",
    "imapclient",
    "multiprocessing",
)

_RUN = """
import json, sys
from smime_companion.cli import main
code = main(sys.argv[1:])
sys.stdout.flush()
print("\\n@@" + json.dumps([code, sorted(sys.modules)]))
"""


def _loaded(config: Path, *args: str) -> tuple[int, list[str]]:
    env = {k: v for k, v in os.environ.items() if k != "TEST_CACHE_KEY"}
    env |= {"TEST_CACHE_KEY": KEY, "TEST_P12_PASSWORD": "test"}
    proc = subprocess.run(
        [sys.executable, "-c", _RUN, *args, "--config", str(config)],
        capture_output=True, timeout=60, env=env, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr.decode()
    code, modules = json.loads(proc.stdout.decode().rsplit("\n@@", 1)[1])
    return int(code), list(modules)


def _heavy(modules: list[str]) -> list[str]:
    return [m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY)]


@pytest.mark.parametrize("command", [["search", "tapir"], ["search", "--json", "from:alice"]])
def test_search_imports_none_of_the_engines_the_reader_or_the_sync(
    setup: tuple[Path, dict[str, int], dict[str, bytes]],  # noqa: F811
    command: list[str],
) -> None:
    config, _, _ = setup
    code, modules = _loaded(config, *command)
    assert code == 0
    assert "smime_companion.store.cache" in modules  # it did search the cache
    assert _heavy(modules) == []
    # Headers without encoded words (these) are listed without the MIME parser and HTML converter.
    assert "smime_companion.core.text" not in modules
    assert "html.parser" not in modules


@pytest.mark.parametrize("command", [["search", "tapir"], ["search", "--json", "from:alice"]])
def test_a_listing_loads_neither_the_mime_parser_nor_the_codec_nor_the_result_values(
    setup: tuple[Path, dict[str, int], dict[str, bytes]],  # noqa: F811
    command: list[str],
) -> None:
    """A listing reads stored summaries: the verdict words come from core.verdicts, nothing is
    decompressed, no header is parsed again; each of these cost milliseconds at every call."""
    config, _, _ = setup
    _, modules = _loaded(config, *command)
    assert "smime_companion.core.verdicts" in modules
    for unneeded in ("email", "zstandard", "smime_companion.core.model", "socket", "subprocess"):
        assert unneeded not in modules, unneeded


def test_show_of_a_decrypted_message_imports_none_of_the_engines(
    setup: tuple[Path, dict[str, int], dict[str, bytes]],  # noqa: F811
) -> None:
    config, ids, _ = setup
    code, modules = _loaded(config, "show", str(ids["sealed"]))
    assert code == 0
    assert _heavy(modules) == []


def test_status_does_not_import_the_daemon_or_the_sync(
    setup: tuple[Path, dict[str, int], dict[str, bytes]],  # noqa: F811
) -> None:
    config, _, _ = setup
    code, modules = _loaded(config, "status")
    assert code == 0
    assert _heavy(modules) == []


def test_every_subcommand_still_parses_when_only_its_own_module_is_loaded(
    pki: TestPki, now: dt.datetime
) -> None:
    from smime_companion.cli import COMMANDS, build_parser

    for name in COMMANDS:
        parser = build_parser([name])
        sub = next(a for a in parser._actions if a.dest == "command")
        assert name in sub.choices  # type: ignore[attr-defined]

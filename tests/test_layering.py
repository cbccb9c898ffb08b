"""The import rules of docs/architecture.md, read from the source with ``ast``.

- ``core`` imports only the standard library, cryptography, asn1crypto, ``errors`` and itself;
  of the standard library's randomness only ``secrets``, and only in ``core.key_transport`` and
  ``core.seal``.
- ``core.revocation`` and ``core.selection`` share words with ``core.seal`` through
  ``core.cert_vocabulary``: checking revocation or choosing a certificate never loads the sealing
  engine.
- nothing outside ``store`` imports sqlite3.
- only ``cli``, ``daemon`` and ``runtime`` (which builds live objects from a Config for both)
  import ``config``; nothing imports ``cli`` or ``daemon``.
- only the IMAP adapters (``imap.session``, ``imap.mailbox``, ``imap.outbox_source``) and the
  test server's client (``testing.dovecot``) import imapclient or imaplib; only ``smtp`` imports
  smtplib.
- the ``sync`` package talks to the world through its protocols: it imports no IMAP or SMTP
  library, nothing of ``imap``, ``store``, ``outbox``, ``reader``, ``harvest`` or the edges (so
  its worker processes load no database binding); ``imap`` imports
  of ``sync`` only its protocols; the pure IMAP helpers (``imap.responses``, ``imap.structure``)
  and ``session`` import no protocol library.
- nothing in ``store`` writes user-facing prose: no notice texts, no commands for the user
  (those are ``outbox.notices``' and the CLI's).
- only the reader's ``app``, ``web_state`` and ``routes_*`` modules import the web framework
  (flask, werkzeug, jinja2), only ``reader.server`` imports waitress, only
  ``reader.html_mail`` imports nh3; the reader reads no config (``runtime`` builds its context).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "smime_companion"
CORE_ALLOWED_THIRD_PARTY = {"cryptography", "asn1crypto"}
CORE_ALLOWED_OWN = {"smime_companion.core", "smime_companion.errors"}
# I/O modules of the standard library that the pure core must not use.
CORE_FORBIDDEN_STDLIB = {
    "os", "io", "socket", "ssl", "sqlite3", "subprocess", "shutil", "tempfile", "pathlib",
    "time", "logging", "urllib", "http", "smtplib", "imaplib", "threading", "asyncio", "select",
}  # fmt: skip
# Core modules that may draw randomness themselves (``secrets``): ``key_transport`` for the
# substitute key that hides an RSA PKCS#1 v1.5 padding failure (it must be unpredictable, so no
# caller may supply it), and ``seal`` for its default when the caller passes no random source.
CORE_RANDOMNESS = {"smime_companion.core.key_transport", "smime_companion.core.seal"}


def _modules() -> list[tuple[str, Path]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        found.append((".".join(parts), path))
    return found


def _imports(path: Path, module: str) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            # The project uses absolute imports only, so every rule can be read off the name.
            assert node.level == 0, f"{module} uses a relative import"
            if node.module:
                names.add(node.module)
                names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


MODULES = _modules()


def _top(name: str) -> str:
    return name.split(".")[0]


@pytest.mark.parametrize(
    "module,path",
    [m for m in MODULES if m[0].startswith("smime_companion.core")],
    ids=lambda v: str(v),
)
def test_core_imports_only_stdlib_crypto_and_itself(module: str, path: Path) -> None:
    for name in _imports(path, module):
        top = _top(name)
        if top == "smime_companion":
            assert any(name == own or name.startswith(own + ".") for own in CORE_ALLOWED_OWN), (
                f"{module} imports {name}: the core may import only core and errors"
            )
        elif top in CORE_ALLOWED_THIRD_PARTY or top == "__future__":
            continue
        else:
            assert top in sys.stdlib_module_names, f"{module} imports third-party {name}"
            assert top not in CORE_FORBIDDEN_STDLIB, f"{module} (pure core) imports {name}"
            assert top != "random", f"{module} (pure core) imports random: use secrets"
            if top == "secrets":
                assert module in CORE_RANDOMNESS, (
                    f"{module} draws its own randomness; take it from the caller"
                )


def _own_imports_closure(start: str) -> set[str]:
    """Every module of ours that importing ``start`` loads (its packages' ``__init__`` too)."""
    paths = dict(MODULES)
    seen: set[str] = set()
    todo = [start]
    while todo:
        module = todo.pop()
        if module in seen or module not in paths:
            continue
        seen.add(module)
        for name in _imports(paths[module], module):
            parts = name.split(".")
            # ``from a.b import c`` names both a.b and a.b.c; loading either loads its parents.
            todo.extend(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return seen


@pytest.mark.parametrize(
    "engine", ["smime_companion.core.revocation", "smime_companion.core.selection"]
)
def test_checking_revocation_and_choosing_a_certificate_do_not_load_the_sealing_engine(
    engine: str,
) -> None:
    loaded = _own_imports_closure(engine)
    assert "smime_companion.core.cert_vocabulary" in loaded
    assert not loaded & {"smime_companion.core.seal", "smime_companion.core.mime_build"}, (
        f"{engine} loads the sealing engine; take the word from core.cert_vocabulary"
    )


# Modules allowed to import config: the two edges, the builder they share, and config's own
# secret resolver.
CONFIG_READERS = (
    "smime_companion.cli",
    "smime_companion.daemon",
    "smime_companion.runtime",
    "smime_companion.config",
    "smime_companion.credentials",
)
EDGES = ("smime_companion.cli", "smime_companion.daemon")


@pytest.mark.parametrize("module,path", MODULES, ids=lambda v: str(v))
def test_layer_rules_hold(module: str, path: Path) -> None:
    names = _imports(path, module)
    tops = {_top(n) for n in names}
    if not module.startswith("smime_companion.store"):
        assert not tops & {"sqlite3", "apsw"}, f"{module} touches SQLite outside store"
    if not module.startswith(CONFIG_READERS):
        assert not any(n.startswith("smime_companion.config") for n in names), (
            f"{module} reads config; only cli, daemon and runtime may"
        )
    if not module.startswith(EDGES) and module != "smime_companion.__main__":
        assert not any(n.startswith(EDGES) for n in names), f"{module} imports cli or daemon"


IMAP_LIBRARY_USERS = (
    "smime_companion.imap.session",
    "smime_companion.imap.mailbox",
    "smime_companion.imap.outbox_source",
    "smime_companion.testing.dovecot",
)


@pytest.mark.parametrize("module,path", MODULES, ids=lambda v: str(v))
def test_only_the_adapters_import_the_imap_and_smtp_libraries(module: str, path: Path) -> None:
    tops = {_top(n) for n in _imports(path, module)}
    if module not in IMAP_LIBRARY_USERS:
        assert not tops & {"imapclient", "imaplib"}, f"{module} imports an IMAP library"
    if module != "smime_companion.smtp":
        assert "smtplib" not in tops, f"{module} imports smtplib; only smtp may"


SYNC_MAY_NOT_IMPORT = (
    "smime_companion.imap",
    "smime_companion.outbox",
    "smime_companion.reader",
    "smime_companion.harvest",
    "smime_companion.store",  # the cache is a SyncCache; the worker processes load no database
    "smime_companion.runtime",
    "smime_companion.cli",
    "smime_companion.daemon",
)


@pytest.mark.parametrize("module,path", MODULES, ids=lambda v: str(v))
def test_the_sync_sits_between_core_and_the_adapters(module: str, path: Path) -> None:
    names = _imports(path, module)
    own = {n for n in names if _top(n) == "smime_companion"}
    if module.startswith("smime_companion.sync"):
        assert not {_top(n) for n in names} & {"imapclient", "imaplib", "smtplib"}, module
        bad = [n for n in own if n.startswith(SYNC_MAY_NOT_IMPORT)]
        assert not bad, f"{module} imports {bad}: the sync uses its protocols"
    if module.startswith("smime_companion.imap"):
        bad = [
            n
            for n in own
            if n.startswith("smime_companion.sync")
            and not n.startswith("smime_companion.sync.protocols")
        ]
        assert not bad, f"{module} imports {bad}: an adapter knows only the sync's protocols"
    if module in ("smime_companion.imap.responses", "smime_companion.imap.structure",
                  "smime_companion.session"):  # fmt: skip
        assert not {_top(n) for n in names} & {"imapclient", "imaplib", "smtplib", "socket"}, (
            f"{module} is pure: no connection, no protocol library"
        )


WEB_FRAMEWORK = {"flask", "werkzeug", "jinja2", "markupsafe"}
WEB_MODULES = ("smime_companion.reader.app", "smime_companion.reader.web_state",
               "smime_companion.reader.routes_")  # fmt: skip


@pytest.mark.parametrize("module,path", MODULES, ids=lambda v: str(v))
def test_only_the_reader_web_modules_import_the_web_framework_server_and_sanitiser(
    module: str, path: Path
) -> None:
    tops = {_top(n) for n in _imports(path, module)}
    if not module.startswith(WEB_MODULES):
        assert not tops & WEB_FRAMEWORK, f"{module} imports the web framework"
    if module != "smime_companion.reader.server":
        assert "waitress" not in tops, f"{module} imports waitress"
    if module != "smime_companion.reader.html_mail":
        assert "nh3" not in tops, f"{module} imports nh3"


def test_the_rules_see_every_module() -> None:
    # A guard against the checker silently checking nothing.
    names = {m for m, _ in MODULES}
    assert "smime_companion.core.open" in names
    assert "smime_companion.cli" in names
    assert "smime_companion.reader.routes_mail" in names
    assert "smime_companion.sync.folder" in names
    assert "smime_companion.imap.mailbox" in names


# What only the outbox (``outbox.notices``) and the CLI write: a notice's subject, a command for
# the user to type. Storage stores; it does not write to the user.
USER_PROSE = ("smime-companion ", "S/MIME outbox", "NOT sent", "'outbox ", "'certs ", "'cache ")


def _string_constants(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
        and id(node) not in docstrings
    ]  # fmt: skip


@pytest.mark.parametrize(
    "module,path", [m for m in MODULES if m[0].startswith("smime_companion.store")],
    ids=lambda v: str(v),
)  # fmt: skip
def test_the_store_writes_no_notices_and_names_no_commands(module: str, path: Path) -> None:
    for text in _string_constants(path):
        for prose in USER_PROSE:
            assert prose not in text, f"{module} writes user-facing prose: {text!r}"


@pytest.mark.parametrize("module,path", MODULES, ids=lambda v: str(v))
def test_only_the_cache_codec_imports_zstandard(module: str, path: Path) -> None:
    if module != "smime_companion.store.compression":
        tops = {_top(n) for n in _imports(path, module)}
        assert "zstandard" not in tops, f"{module} imports zstandard (store.compression only)"

"""Benchmark at archive scale (issue 19): search, the command line and disk at N messages, beside
notmuch in the same run; optionally the first sync and IDLE latency (bench/sync.py's driver).

Run: ``.venv/bin/python bench/scale.py [--messages 1000000] [--work DIR] [--sync-messages N]``

1. An archive of ``--messages`` generated messages (bench/search.py's realistic mix: names,
   Zipf vocabulary, HTML alternatives, attachments, foreign scripts, two years of dates) is
   written as a Maildir under ``--work`` and kept there: a second run with the same ``--work``
   reuses it, and the caches built from it, instead of paying for them again.
2. Our encrypted cache is built from it directly (``core.open`` + ``Cache.store_message`` in
   transactions of 500, commits included, then the text index merged), not through IMAP; notmuch
   indexes the same Maildir (``notmuch new``).
3. Search p95 per query type (limit 50, newest first): ours in-process; notmuch in-process
   (the ``notmuch2`` binding, Debian ``python3-notmuch2``, run by the system Python) and one
   ``notmuch search`` process per query.
4. The command line per call from a shell: ``smime-companion search WORD`` (config read, cache
   key from the environment, cache unlocked, query, output) against ``notmuch search WORD``,
   median of ``--cli-samples``, from compiled bytecode as an installed program runs; and what
   unlocking the cache costs alone.
5. Disk: the cache against the raw mail and against notmuch's database plus the Maildir; and
   the cache against the raw mail on the sync bench's mix (bench/sync.py's generator, 10% S/MIME,
   every message stored as with ``cache_all = true``), built directly from generated mail.
6. With ``--sync-messages N``: bench/sync.py's first sync (ours and mbsync, ``cache_all = true``)
   and IDLE arrival-to-searchable latency against a Dovecot with N messages in the folder.

Prints one table with ratios. Targets: every query type p95 < 20 ms at 1,000,000 messages; the
command line < 100 ms per call at 100,000; the cache <= 1.0x the raw mail on the sync mix.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from smime_companion.core.entry_derivation import derive_entry  # noqa: E402
from smime_companion.core.open import open_message  # noqa: E402
from smime_companion.store import Cache  # noqa: E402

KEY = "bench passphrase"
NOW = dt.datetime(2026, 11, 25, tzinfo=dt.UTC)
BATCH = 500


def bench_module(name: str) -> ModuleType:
    """bench/NAME.py as a module (bench/ is a folder of scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / "bench" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


search_bench = bench_module("search")


# -- the archive and the indexes -------------------------------------------------------------------


def archive(base: Path, count: int) -> dict[str, object]:
    """The Maildir of ``count`` generated messages under ``base`` (made once); its facts."""
    meta_path = base / "archive.json"
    if meta_path.exists():
        return dict(json.loads(meta_path.read_text()))
    cur = base / "maildir" / "cur"
    for sub in ("cur", "new", "tmp"):
        (base / "maildir" / sub).mkdir(parents=True, exist_ok=True)
    gen = search_bench.Generator(seed=1, start=dt.datetime(2024, 11, 1, tzinfo=dt.UTC))
    addresses, raw_bytes, started = [], 0, time.perf_counter()
    for number in range(count):
        raw, _, from_addr = gen.message(number)
        (cur / f"{number:07d}.bench:2,S").write_bytes(raw)
        raw_bytes += len(raw)
        if number % 97 == 0:
            addresses.append(from_addr)
        if number % 50_000 == 0:
            print(f"  archive: {number} written", file=sys.stderr)
    meta = {"count": count, "raw_bytes": raw_bytes, "addresses": addresses,
            "seconds": time.perf_counter() - started}  # fmt: skip
    meta_path.write_text(json.dumps(meta))
    return meta


def build_cache(base: Path, count: int) -> dict[str, float]:
    """Our cache of the archive (made once): indexing and merging times."""
    done = base / "cache.json"
    if done.exists():
        return dict(json.loads(done.read_text()))
    shutil.rmtree(base / "cache", ignore_errors=True)
    cur = base / "maildir" / "cur"
    started = time.perf_counter()
    with Cache.open(base / "cache", KEY) as cache:
        for first in range(0, count, BATCH):
            with cache.transaction():
                for number in range(first, min(first + BATCH, count)):
                    raw = (cur / f"{number:07d}.bench:2,S").read_bytes()
                    result = open_message(raw, at=NOW)
                    cache.store_message(
                        account="bench", folder="INBOX", uidvalidity=1, uid=number + 1,
                        raw=raw, entry=derive_entry(raw, result, NOW), arrived=NOW,
                    )  # fmt: skip
            if first % 50_000 == 0:
                print(f"  cache: {first + BATCH} stored", file=sys.stderr)
        indexed = time.perf_counter() - started
        cache.merge_index()
        merged = time.perf_counter() - started - indexed
    facts = {"index_seconds": indexed, "merge_seconds": merged}
    done.write_text(json.dumps(facts))
    return facts


def notmuch_env(base: Path) -> dict[str, str]:
    config = base / "notmuch-config"
    config.write_text(
        f"[database]\npath={base / 'maildir'}\n[user]\nname=Bench\nprimary_email=b@example.org\n"
        "[new]\ntags=inbox;\n[search]\nexclude_tags=\n[maildir]\nsynchronize_flags=false\n"
    )
    return dict(os.environ, NOTMUCH_CONFIG=str(config))


def build_notmuch(base: Path) -> float | None:
    """``notmuch new`` over the archive (once); its seconds, None without notmuch."""
    if shutil.which("notmuch") is None:
        return None
    done = base / "notmuch.json"
    if done.exists():
        return float(json.loads(done.read_text())["seconds"])
    started = time.perf_counter()
    subprocess.run(["notmuch", "new", "--quiet"], env=notmuch_env(base), check=True)
    seconds = time.perf_counter() - started
    done.write_text(json.dumps({"seconds": seconds}))
    return seconds


# -- search ----------------------------------------------------------------------------------------


def queries(addresses: list[str]) -> list[tuple[str, str]]:
    """(kind, query) pairs: bench/search.py's kinds and more of the query language."""
    gen = search_bench.Generator(seed=1, start=dt.datetime(2024, 11, 1, tzinfo=dt.UTC))
    out = list(search_bench._queries(gen, addresses, NOW))
    rng = random.Random(11)
    common = gen.words[:400]
    for _ in range(50):
        a, b = rng.sample(common, 2)
        out += [
            ("subject: word", f"subject:{a}"),
            ("to: + word", f"to:{rng.choice(addresses)} {b}"),
            ("word OR word", f"{a} OR {b}"),
            ("word NOT word", f"{a} NOT {b}"),
            ("prefix*", f"{a[:3]}*"),
            ("attachment + word", f"attachment:data.bin {a}"),
        ]
    return out


def notmuch_form(query: str) -> str:
    """Our query in notmuch's words (same meaning)."""
    if query.startswith("date:"):
        return search_bench._notmuch_query(query)
    return query.replace(" NOT ", " and not ").replace(" OR ", " or ") or "*"


def ours_search(base: Path, pairs: list[tuple[str, str]]) -> dict[str, list[float]]:
    by_kind: dict[str, list[float]] = {}
    with Cache.open(base / "cache", KEY) as cache:
        # The whole mix once first, untimed: at 1,000,000 messages the cache is 8 GB, and a
        # query that reads pages not yet in the page cache measured the disk (phrase p95 126 ms
        # on such a first pass, 12 ms warm).
        for _, query in pairs:
            cache.search(query, now=NOW, limit=50)
        for kind, query in pairs:
            start = time.perf_counter()
            cache.search(query, now=NOW, limit=50)
            by_kind.setdefault(kind, []).append((time.perf_counter() - start) * 1000)
    return by_kind


_NOTMUCH_IN_PROCESS = r"""
import json, sys, time, notmuch2
pairs = json.loads(sys.stdin.read())
db = notmuch2.Database(sys.argv[1], mode=notmuch2.Database.MODE.READ_ONLY)
newest = notmuch2.Database.SORT.NEWEST_FIRST
def first50(query):
    return [m.messageid for m, _ in zip(db.messages(query, sort=newest), range(50))]
for kind, query in pairs:  # the whole mix once, untimed: the page cache warm, as for ours
    first50(query)
out = {}
for kind, query in pairs:
    start = time.perf_counter()
    first50(query)
    out.setdefault(kind, []).append((time.perf_counter() - start) * 1000)
print(json.dumps(out))
"""


def notmuch_in_process(base: Path, pairs: list[tuple[str, str]]) -> dict[str, list[float]] | None:
    """Per query type, ms of notmuch2 in the system Python; None without the binding."""
    probe = subprocess.run(["/usr/bin/python3", "-c", "import notmuch2"], capture_output=True)
    if probe.returncode != 0:
        return None
    proc = subprocess.run(
        ["/usr/bin/python3", "-c", _NOTMUCH_IN_PROCESS, str(base / "maildir")],
        input=json.dumps([(k, notmuch_form(q)) for k, q in pairs]).encode(),
        capture_output=True, check=True, env=notmuch_env(base),
    )  # fmt: skip
    return dict(json.loads(proc.stdout))


def notmuch_per_process(base: Path, pairs: list[tuple[str, str]]) -> dict[str, list[float]]:
    env = notmuch_env(base)
    by_kind: dict[str, list[float]] = {}
    for kind, query in pairs:
        argv = ["notmuch", "search", "--output=messages", "--sort=newest-first", "--limit=50",
                "--", notmuch_form(query)]  # fmt: skip
        start = time.perf_counter()
        subprocess.run(argv, env=env, check=True, capture_output=True)
        by_kind.setdefault(kind, []).append((time.perf_counter() - start) * 1000)
    return by_kind


# -- the command line ------------------------------------------------------------------------------


def cli_per_call(
    base: Path, words: list[str], samples: int, notmuch: bool, remember: bool = True
) -> tuple[float, float | None]:
    """Median ms of ``smime-companion search WORD`` and of ``notmuch search WORD`` from a shell.

    ``remember``: as configured by default, each call finds the page key an earlier call left
    in the kernel keyring (cli/unlock.py) and skips the key derivation; False measures a call
    that derives it (``remember_unlock_minutes = 0``, or the first call after ten minutes).

    Ours runs from compiled bytecode, as an installed program does: a first call, not counted,
    writes it into a folder of the bench's own (``PYTHONPYCACHEPREFIX``). Environments that set
    ``PYTHONDONTWRITEBYTECODE`` (this one does) would otherwise have every call compile each
    module it imports from source again (about 30 ms of each call here)."""
    config = base / ("config.toml" if remember else "config-no-remember.toml")
    config.write_text(
        f'[cache]\npath = "{base / "cache"}"\nkey_env = "BENCH_CACHE_KEY"\n'
        f"remember_unlock_minutes = {10 if remember else 0}\n"
        "[identity]\nsystem_anchors = false\n"
    )
    env = dict(os.environ, BENCH_CACHE_KEY=KEY, SMIME_COMPANION_CONFIG=str(config))
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(base / "pycache")
    exe = Path(sys.executable).parent / "smime-companion"
    subprocess.run(["/bin/sh", "-c", f"{exe} search {words[0]} >/dev/null"], env=env, check=True)
    ours, theirs = [], []
    for n in range(samples):
        word = words[n % len(words)]
        start = time.perf_counter()
        subprocess.run(["/bin/sh", "-c", f"{exe} search {word} >/dev/null"], env=env, check=True)
        ours.append((time.perf_counter() - start) * 1000)
        if notmuch:
            start = time.perf_counter()
            # --limit=100: what our search prints by default (notmuch prints every thread).
            subprocess.run(["/bin/sh", "-c", f"notmuch search --limit=100 {word} >/dev/null"],
                           env=notmuch_env(base), check=True)  # fmt: skip
            theirs.append((time.perf_counter() - start) * 1000)
    return statistics.median(ours), statistics.median(theirs) if theirs else None


def unlock_ms(base: Path, samples: int = 10) -> float:
    """Median ms of opening (unlocking) the encrypted cache alone."""
    times = []
    for _ in range(samples):
        start = time.perf_counter()
        Cache.open(base / "cache", KEY).close()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


# -- disk ------------------------------------------------------------------------------------------


def tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def sync_mix_ratio(work: Path, count: int) -> tuple[int, int]:
    """(cache bytes, raw bytes) of ``count`` messages of bench/sync.py's mix, each stored as a
    ``cache_all = true`` sync stores it (S/MIME opened with Bob's key)."""
    sync_bench = bench_module("sync")
    from smime_companion.keyfiles import load_pkcs12
    from smime_companion.testing.pki import PKCS12_PASSWORD, make_test_pki

    directory = work / f"sync-mix-{count}"
    shutil.rmtree(directory, ignore_errors=True)
    pki = make_test_pki(directory / "pki")
    bob = load_pkcs12(pki.p12("bob"), PKCS12_PASSWORD.encode())
    templates = {
        size: [sync_bench.smime_template(pki, size, size + i, encrypt=i % 2 == 1)
               for i in range(sync_bench.TEMPLATES_PER_SIZE)]
        for size in sync_bench.SMIME_SIZES
    }  # fmt: skip
    rng = random.Random(1)
    raw_total = 0
    with Cache.open(directory / "cache", KEY) as cache:
        for first in range(0, count, BATCH):
            with cache.transaction():
                for index in range(first, min(first + BATCH, count)):
                    size = sync_bench.message_size(rng)
                    if rng.random() < 0.10:
                        bucket = min(sync_bench.SMIME_SIZES, key=lambda s: abs(s - size))
                        raw = sync_bench.headers(index, f"smime {index}") + rng.choice(
                            templates[bucket]
                        )
                    else:
                        raw = sync_bench.plain_message(index, size)
                    raw_total += len(raw)
                    result = open_message(raw, identities=[bob], at=NOW)
                    cache.store_message(
                        account="bench", folder="INBOX", uidvalidity=1, uid=index + 1,
                        raw=raw, entry=derive_entry(raw, result, NOW), arrived=NOW,
                    )  # fmt: skip
        cache.merge_index()
    size = sum(
        p.stat().st_size for p in (directory / "cache").iterdir() if p.name.startswith("cache.db")
    )
    shutil.rmtree(directory, ignore_errors=True)
    return size, raw_total


# -- the first sync and IDLE (bench/sync.py) -------------------------------------------------------


def sync_figures(work: Path, count: int) -> dict[str, float | None]:
    """bench/sync.py's first sync (cache_all = true, ours and mbsync, one round) and IDLE
    latency (median of 10) with ``count`` messages in the folder."""
    sync_bench = bench_module("sync")
    os.environ.update(sync_bench.env())
    server = sync_bench.Dovecot()
    try:
        pki = sync_bench.make_test_pki(work / "sync-pki")
        sync_bench.fill(server, pki, count, 0.10, 1)
        server.start()
        sync_bench.warm_up(server)
        wall, rss = sync_bench.ours(sync_bench.write_config(work / "sync-ours", server, pki, True))
        reference = sync_bench.mbsync(work / "sync-mbsync", server)
        config = sync_bench.write_config(work / "sync-latency", server, pki, cache_all=False)
        samples = sync_bench.latency(config, server, pki, 10)
    finally:
        server.stop()
        shutil.rmtree(server.dir, ignore_errors=True)
        for name in ("sync-ours", "sync-mbsync", "sync-latency", "sync-pki"):
            shutil.rmtree(work / name, ignore_errors=True)
    return {"ours_s": wall, "mbsync_s": reference, "peak_mb": rss / 1024,
            "idle_ms": statistics.median(samples) * 1000}  # fmt: skip


# -- the table -------------------------------------------------------------------------------------


def p95(samples: list[float]) -> float:
    return float(search_bench._percentiles(samples)[1])


def row(label: str, ours: float | None, theirs: float | None, unit: str, target: str) -> str:
    fmt = lambda v: "n/a" if v is None else f"{v:,.1f}"  # noqa: E731
    ratio = f"{ours / theirs:.2f}" if ours is not None and theirs else "n/a"
    return f"{label:<46}{fmt(ours):>10}{fmt(theirs):>11}{ratio:>8}  {unit:<4}{target}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1_000_000, help="archive size")
    parser.add_argument("--work", type=Path, help="keep (and reuse) the archive and indexes here")
    parser.add_argument("--cli-samples", type=int, default=20)
    parser.add_argument("--sync-mix", type=int, default=10_000, help="messages of the disk mix")
    parser.add_argument("--sync-messages", type=int, default=0, help="also bench/sync.py's part")
    parser.add_argument("--no-notmuch", action="store_true", help="ours alone (notmuch is slow)")
    args = parser.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-scale-"))
    base = work / f"archive-{args.messages}"
    base.mkdir(parents=True, exist_ok=True)
    print(f"bench/scale.py: {args.messages:,} messages in {base}")

    meta = archive(base, args.messages)
    built = build_cache(base, args.messages)
    notmuch_seconds = None if args.no_notmuch else build_notmuch(base)
    pairs = queries(list(meta["addresses"]))  # type: ignore[call-overload]
    ours = ours_search(base, pairs)
    in_process = notmuch_in_process(base, pairs) if notmuch_seconds is not None else None
    per_process = notmuch_per_process(base, pairs) if notmuch_seconds is not None else {}
    words = [q for k, q in pairs if k == "word"][:10]
    cli_ours, cli_notmuch = cli_per_call(
        base, words, args.cli_samples, notmuch=notmuch_seconds is not None
    )
    cli_deriving, _ = cli_per_call(base, words, args.cli_samples, notmuch=False, remember=False)
    unlock = unlock_ms(base)
    cache_bytes = sum(
        p.stat().st_size for p in (base / "cache").iterdir() if p.name.startswith("cache.db")
    )
    raw_bytes = int(meta["raw_bytes"])  # type: ignore[call-overload]
    notmuch_bytes = tree_bytes(base / "maildir") if notmuch_seconds is not None else None
    mix_cache, mix_raw = sync_mix_ratio(work, args.sync_mix)
    synced = sync_figures(work, args.sync_messages) if args.sync_messages else None

    n = args.messages
    print(f"\n{'measure':<46}{'ours':>10}{'notmuch':>11}{'ratio':>8}  unit target")
    rate = n / (built["index_seconds"] + built["merge_seconds"])
    print(row("indexing (commits, merge incl.)", rate,
              n / notmuch_seconds if notmuch_seconds else None, "/s", ""))  # fmt: skip
    for kind, samples in ours.items():
        theirs = p95(in_process[kind]) if in_process and kind in in_process else None
        print(row(f"p95 {kind} (in-process)", p95(samples), theirs, "ms", "< 20 ms"))
    for kind, samples in per_process.items():
        print(row(f"p95 {kind} (notmuch, a process each)", None, p95(samples), "ms", ""))
    print(row("CLI search per call (median)", cli_ours, cli_notmuch, "ms", "< 100 ms at 100k"))
    print(row("  the same, key derived each call", cli_deriving, None, "ms", ""))
    print(row("  unlocking with the passphrase alone", unlock, None, "ms", ""))
    print(row("disk: cache / raw mail (MB)", cache_bytes / 1e6, raw_bytes / 1e6, "MB", ""))
    print(row("disk: cache / notmuch + Maildir", cache_bytes / 1e6,
              notmuch_bytes / 1e6 if notmuch_bytes else None, "MB", ""))  # fmt: skip
    print(row(f"disk, sync mix ({args.sync_mix:,}): cache/raw", mix_cache / 1e6, mix_raw / 1e6,
              "MB", "<= 1.0x"))  # fmt: skip
    if synced is not None:
        print(row(f"first sync ({args.sync_messages:,}), cache_all", synced["ours_s"],
                  synced["mbsync_s"], "s", "<= 1.5x mbsync"))  # fmt: skip
        print(row("IDLE arrival -> searchable (median)", synced["idle_ms"], None, "ms", "< 1000"))
        print(row("peak memory of run --once", synced["peak_mb"], None, "MB", "< 200"))
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

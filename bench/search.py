"""Benchmark of the message cache: indexing throughput, database size, and search latency.

Run: ``.venv/bin/python bench/search.py [--count 100000] [--batch 500] [--plain] [--no-notmuch]``

Builds an encrypted cache (``apsw-sqlite3mc``, as the daemon uses it) from ``--count`` generated
messages (realistic shape: names and addresses from pools, subjects and bodies drawn from a
Zipf-distributed vocabulary, a fifth with an HTML alternative, a tenth with an attachment, dates
spread over two years), each run through ``core.open`` and ``Cache.store_message`` in
transactions of ``--batch`` messages (as the sync stores a fetched batch). Then prints:

- indexing throughput (messages/s, open + store, and store alone, each batch's commit included)
  and the database size;
- median and p95 latency of 50 runs each of: a word, a phrase, ``from:`` + word, a date range +
  word, the newest 50, and a word in Japanese, Chinese or Korean text (a phrase of character
  pairs in the index); every query returns at most 50 results, newest first, like the CLI.
  One message in ten has a line in such a language or with letters the index folds (ß, ø, ł).

Targets (issue 5): p95 <= 20 ms for every query at 100,000 messages; indexing >= 2x notmuch.
When ``notmuch`` is installed (and not ``--no-notmuch``), the same messages are written to a
Maildir, indexed with ``notmuch new`` and queried with ``notmuch search --limit=50`` the same way
in the same run, and the ratios are printed. notmuch queries run as a process each (that is how
it is used from scripts); its process start is measured separately and reported.

Measured on this machine (2 cores), 100,000 messages, 422 MB of raw mail, encrypted cache:
indexing 1,590 messages/s (open + store), notmuch 610/s: 2.6x; database 823 MB with its WAL;
p95 latency word 1.3 ms, phrase 6.4 ms, from: + word 9.1 ms, date range + word 2.0 ms,
newest 50 1.1 ms (notmuch, per process: 28, 33, 11, 12 and 46 ms).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from smime_companion.core.entry_derivation import derive_entry
from smime_companion.core.open import open_message
from smime_companion.store import Cache

FIRST = "anna ben carla david emma felix greta hugo ida jonas karin lars mia nils olga paul".split()
LAST = "berger fischer hansen jansen keller lange meyer novak olsen peters richter schulz".split()
DOMAINS = ["example.org", "example.com", "mail.example.net", "corp.example", "uni.example.edu"]
SYLLABLES = "ka lo mi ne ra su te vo bi da fe gu ho ji ku la mo ni po qu re si tu wa ze".split()
# One message in ten carries a line of text that needs the search normalisation (CJK pairs,
# folded letters), so its cost and the "CJK word" query are measured too.
FOREIGN_LINES = [
    "日本語のテキストを東京の会議で確認しました",
    "我们明天在北京的办公室见面讨论预算",
    "한국어 텍스트를 서울에서 검색합니다",
    "Wir treffen uns in der Schloßstraße bei Müller",
    "Møde i Ærøskøbing og Łódź, Καλημέρα από την Αθήνα",
]
CJK_WORDS = ["テキスト", "東京", "会議", "北京", "预算", "텍스트", "서울"]


def _vocabulary(rng: random.Random, size: int = 8000) -> list[str]:
    words: set[str] = set()
    while len(words) < size:
        words.add("".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4))))
    return sorted(words)


class Generator:
    """Deterministic realistic-looking mail (same seed, same corpus)."""

    def __init__(self, seed: int, start: dt.datetime) -> None:
        self.rng = random.Random(seed)
        self.words = _vocabulary(self.rng)
        # Zipf-like weights: a few words are very common, most are rare.
        weights = [1.0 / (rank + 1) for rank in range(len(self.words))]
        self.cum_weights = [sum(weights[: i + 1]) for i in range(len(weights))]
        self.people = [
            (f"{f.title()} {la.title()}", f"{f}.{la}@{self.rng.choice(DOMAINS)}")
            for f in FIRST
            for la in LAST
        ]
        self.start = start

    def text(self, n: int) -> str:
        return " ".join(self.rng.choices(self.words, cum_weights=self.cum_weights, k=n))

    def message(self, number: int) -> tuple[bytes, dt.datetime, str]:
        rng = self.rng
        (from_name, from_addr), (to_name, to_addr) = rng.sample(self.people, 2)
        date = self.start + dt.timedelta(seconds=rng.randint(0, 2 * 365 * 86400))
        subject = self.text(rng.randint(3, 8)).capitalize()
        body_lines = [self.text(rng.randint(8, 14)) for _ in range(rng.randint(4, 30))]
        if rng.random() < 0.1:
            body_lines.insert(rng.randrange(len(body_lines)), rng.choice(FOREIGN_LINES))
        body = "\r\n".join(body_lines)
        head = (
            f"From: {from_name} <{from_addr}>\r\nTo: {to_name} <{to_addr}>\r\n"
            f"Subject: {subject}\r\nDate: {date.strftime('%a, %d %b %Y %H:%M:%S +0000')}\r\n"
            f"Message-ID: <bench.{number}@{from_addr.split('@')[1]}>\r\nMIME-Version: 1.0\r\n"
        )
        kind = rng.random()
        if kind < 0.2:
            html = "".join(f"<p>{line}</p>" for line in body_lines)
            mime = (
                'Content-Type: multipart/alternative; boundary="alt"\r\n\r\n'
                f"--alt\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n"
                f"--alt\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
                f"<html><body>{html}</body></html>\r\n--alt--\r\n"
            )
        elif kind < 0.3:
            blob = os.urandom(rng.randint(1000, 20000)).hex()
            lines = "\r\n".join(blob[i : i + 76] for i in range(0, len(blob), 76))
            mime = (
                'Content-Type: multipart/mixed; boundary="mix"\r\n\r\n'
                f"--mix\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n"
                '--mix\r\nContent-Type: application/octet-stream; name="data.bin"\r\n'
                'Content-Disposition: attachment; filename="data.bin"\r\n\r\n'
                f"{lines}\r\n--mix--\r\n"
            )
        else:
            mime = f"Content-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n"
        return (head + mime).encode(), date, from_addr

    def phrase(self) -> str:
        line = self.text(12).split()
        i = self.rng.randrange(len(line) - 1)
        return f'"{line[i]} {line[i + 1]}"'


def _percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]
    return statistics.median(ordered), p95


def _time(run: Callable[[], object], repeat: int) -> list[float]:
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        samples.append((time.perf_counter() - start) * 1000)
    return samples


def _queries(gen: Generator, addresses: list[str], now: dt.datetime) -> Iterator[tuple[str, str]]:
    rng = random.Random(7)
    common = gen.words[:400]  # words that occur often enough to have hits
    for _ in range(50):
        word = rng.choice(common)
        addr = rng.choice(addresses)
        month = rng.randint(1, 12)
        yield "word", word
        yield "phrase", gen.phrase()
        yield "from: + word", f"from:{addr} {rng.choice(common[:100])}"
        yield "date range + word", f"date:2025-{month:02d}-01..2025-{month:02d}-28 {word}"
        yield "newest 50", ""
        yield "CJK word", rng.choice(CJK_WORDS)


def _latencies(
    cache: Cache, queries: list[tuple[str, str]], now: dt.datetime
) -> dict[str, tuple[float, float]]:
    """Run every query once (after warming the page cache); print and return (median, p95) ms
    per kind."""
    by_kind: dict[str, list[float]] = {}
    for query in [q for _, q in queries[:10]]:  # warm the page cache once
        cache.search(query, now=now, limit=50)
    for kind, query in queries:
        by_kind.setdefault(kind, []).extend(
            _time(lambda q=query: cache.search(q, now=now, limit=50), 1)
        )
    print("query latency (ms, 50 runs each, limit 50, newest first):")
    ours: dict[str, tuple[float, float]] = {}
    for kind, samples in by_kind.items():
        ours[kind] = _percentiles(samples)
        flag = "ok" if ours[kind][1] <= 20 else "OVER TARGET"
        print(f"  {kind:<18} median {ours[kind][0]:7.2f}  p95 {ours[kind][1]:7.2f}  [{flag}]")
    return ours


def _notmuch_query(query: str) -> str:
    # Translate our date form to notmuch's (same meaning) and quote nothing else: same words.
    if query.startswith("date:"):
        span, _, word = query.partition(" ")
        low, _, high = span[5:].partition("..")
        return f"date:{low}..{high} {word}"
    return query or "*"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100_000, help="messages (default 100000)")
    parser.add_argument("--batch", type=int, default=500, help="messages per transaction")
    parser.add_argument("--plain", action="store_true", help="an unencrypted database")
    parser.add_argument("--no-notmuch", action="store_true", help="skip the notmuch comparison")
    parser.add_argument("--keep", type=Path, help="build in this directory and keep it")
    args = parser.parse_args(argv)

    use_notmuch = not args.no_notmuch and shutil.which("notmuch") is not None
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench-search-"))
    work.mkdir(parents=True, exist_ok=True)
    now = dt.datetime(2026, 11, 25, tzinfo=dt.UTC)
    gen = Generator(seed=1, start=dt.datetime(2024, 11, 1, tzinfo=dt.UTC))
    maildir = work / "maildir"
    if use_notmuch:
        for sub in ("cur", "new", "tmp"):
            (maildir / sub).mkdir(parents=True, exist_ok=True)

    print(f"bench/search.py: {args.count} messages, batches of {args.batch}, "
          f"{'plain' if args.plain else 'encrypted (ChaCha20)'} cache in {work}")  # fmt: skip
    addresses: list[str] = []
    store_seconds = open_seconds = 0.0
    raw_bytes = 0
    with Cache.open(work / "cache", None if args.plain else "bench passphrase") as cache:
        total_start = time.perf_counter()
        for first in range(0, args.count, args.batch):
            batch_start = time.perf_counter()
            elsewhere = 0.0  # generating and writing the Maildir copy: not indexing
            with cache.transaction():
                for number in range(first, min(first + args.batch, args.count)):
                    t_gen = time.perf_counter()
                    raw, date, from_addr = gen.message(number)
                    raw_bytes += len(raw)
                    if number % 97 == 0:
                        addresses.append(from_addr)
                    if use_notmuch:
                        (maildir / "cur" / f"{number}.bench:2,S").write_bytes(raw)
                    t0 = time.perf_counter()
                    elsewhere += t0 - t_gen
                    result = open_message(raw, at=date)
                    t1 = time.perf_counter()
                    cache.store_message(
                        account="bench", folder="INBOX", uidvalidity=1, uid=number + 1,
                        raw=raw, entry=derive_entry(raw, result, date), arrived=date,
                    )  # fmt: skip
                    open_seconds += t1 - t0
            # Storing includes the commit at the end of the batch (the transaction's exit): an
            # earlier version timed each store_message alone and left the commits out.
            store_seconds += time.perf_counter() - batch_start - elsewhere
            if (first // args.batch) % 20 == 0:
                print(f"  ... {min(first + args.batch, args.count)} stored", file=sys.stderr)
        store_seconds -= open_seconds
        total = time.perf_counter() - total_start
        merge_start = time.perf_counter()
        cache.merge_index()  # one segment, as after a first sync (Cache.merge_index)
        print(f"index merge: {time.perf_counter() - merge_start:.1f} s")
        size = cache.stats()["bytes_on_disk"]
        ours_rate = args.count / (open_seconds + store_seconds)
        store_rate = args.count / store_seconds
        print(f"indexing: {ours_rate:,.0f} messages/s (open + store; store alone "
              f"{store_rate:,.0f}/s; wall with generation {total:.1f} s)")  # fmt: skip
        print(f"raw mail: {raw_bytes / 1e6:,.1f} MB; database: {size / 1e6:,.1f} MB "
              f"({size / args.count / 1024:.1f} KB per message)")  # fmt: skip

        queries = list(_queries(gen, addresses, now))
        ours = _latencies(cache, queries, now)

    if use_notmuch:
        _compare_notmuch(work, maildir, queries, ours, ours_rate, args.count)
    elif not args.no_notmuch:
        print("notmuch not installed: no comparison (apt-get install notmuch)")
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def _compare_notmuch(
    work: Path,
    maildir: Path,
    queries: list[tuple[str, str]],
    ours: dict[str, tuple[float, float]],
    ours_rate: float,
    count: int,
) -> None:
    config = work / "notmuch-config"
    config.write_text(
        f"[database]\npath={maildir}\n[user]\nname=Bench\nprimary_email=bench@example.org\n"
        "[new]\ntags=inbox;\n[search]\nexclude_tags=\n[maildir]\nsynchronize_flags=false\n"
    )
    env = dict(os.environ, NOTMUCH_CONFIG=str(config))
    start = time.perf_counter()
    subprocess.run(["notmuch", "new", "--quiet"], env=env, check=True)
    seconds = time.perf_counter() - start
    rate = count / seconds
    print(f"notmuch new: {rate:,.0f} messages/s ({seconds:.1f} s); "
          f"our indexing is {ours_rate / rate:.2f}x notmuch's rate (target >= 2)")  # fmt: skip

    def run(query: str) -> None:
        subprocess.run(
            ["notmuch", "search", "--output=messages", "--sort=newest-first", "--limit=50",
             "--", query],
            env=env, check=True, capture_output=True,
        )  # fmt: skip

    startup = _percentiles(
        _time(lambda: subprocess.run(["notmuch", "--version"], capture_output=True), 20)
    )[0]
    samples: dict[str, list[float]] = {}
    for kind, query in queries:
        translated = _notmuch_query(query)
        samples.setdefault(kind, []).extend(_time(lambda q=translated: run(q), 1))
    print(f"notmuch query latency (ms; one process per query, process start ~{startup:.1f} ms):")
    for kind, values in samples.items():
        median, p95 = _percentiles(values)
        print(f"  {kind:<18} median {median:7.2f}  p95 {p95:7.2f}  "
              f"(notmuch/ours median ratio {median / max(ours[kind][0], 1e-6):.1f}x)")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())

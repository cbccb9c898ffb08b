"""Benchmark of the reader's server time at 100,000 messages: the message list, a search, and
opening a 1 MB message (its page and its HTML frame).

Run: ``.venv/bin/python bench/reader.py [--count 100000] [--keep DIR]``

Fills an encrypted cache the way ``bench/search.py`` does (the same generated mail, opened with
``core.open`` and stored in batches), adds one 1 MB HTML message, then asks the reader's Flask
application for each page through its WSGI interface (a signed-in session, no network, no
browser) and prints the median and p95 of 50 requests each. Each row also gives a reference
measured in the same run: the bare cache call the page is built on (``Cache.search`` with the
same query and limit, or reading the message's decrypted content), and the ratio page/reference,
which is what the reader adds (summaries, read state, badges, templates, sanitising).

Target (issue 15): p95 under 100 ms for each page.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from smime_companion.core.entry_derivation import derive_entry
from smime_companion.core.open import open_message
from smime_companion.reader.app import create_app
from smime_companion.reader.context import AccountInfo, ReaderContext, StoreOpeners
from smime_companion.reader.security import COOKIE
from smime_companion.store import Cache
from smime_companion.store.certstore import CertStore
from smime_companion.store.journal import Journal

KEY = "bench passphrase"
PORT = 8765
RUNS = 50


def _search_bench() -> object:
    """bench/search.py, for its mail generator."""
    path = Path(__file__).resolve().parent / "search.py"
    spec = importlib.util.spec_from_file_location("bench_search", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _big_message(gen: object, when: dt.datetime) -> bytes:
    """A 1 MB HTML message (paragraphs of generated words, an alternative text part)."""
    paragraphs = []
    size = 0
    while size < 500_000:
        line = gen.text(40)  # type: ignore[attr-defined]
        paragraphs.append(line)
        size += len(line) + 8
    html = "".join(f"<p>{p}</p>" for p in paragraphs)
    text = "\r\n".join(paragraphs)
    return (
        "From: Big Sender <big@example.org>\r\nTo: bench@example.org\r\n"
        "Subject: The one megabyte report\r\n"
        f"Date: {when.strftime('%a, %d %b %Y %H:%M:%S +0000')}\r\n"
        "Message-ID: <big@example.org>\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/alternative; boundary="alt"\r\n\r\n'
        f"--alt\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{text}\r\n"
        f"--alt\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<html><body>{html}"
        "</body></html>\r\n--alt--\r\n"
    ).encode()


def _fill(directory: Path, count: int, batch: int) -> tuple[int, list[str]]:
    """Fill the cache; returns the 1 MB message's id and words to search for."""
    bench = _search_bench()
    gen = bench.Generator(seed=1, start=dt.datetime(2024, 11, 1, tzinfo=dt.UTC))  # type: ignore[attr-defined]
    words: list[str] = []
    with Cache.open(directory, KEY) as cache:
        start = time.perf_counter()
        for first in range(0, count, batch):
            with cache.transaction():
                for number in range(first, min(first + batch, count)):
                    raw, date, _ = gen.message(number)
                    if number % 997 == 0:
                        words.append(gen.text(1))
                    cache.store_message(
                        account="bench", folder="INBOX", uidvalidity=1, uid=number + 1,
                        raw=raw, entry=derive_entry(raw, open_message(raw, at=date), date),
                        arrived=date,
                    )  # fmt: skip
            if (first // batch) % 40 == 0:
                print(f"  ... {min(first + batch, count)} stored", file=sys.stderr)
        when = dt.datetime(2026, 11, 20, tzinfo=dt.UTC)
        big = _big_message(gen, when)
        big_id = cache.store_message(
            account="bench", folder="INBOX", uidvalidity=1, uid=count + 1, raw=big,
            entry=derive_entry(big, open_message(big, at=when), when), arrived=when,
        )  # fmt: skip
        print(f"filled {count + 1} messages in {time.perf_counter() - start:.0f} s "
              f"(the big one: {len(big) / 1e6:.2f} MB)", file=sys.stderr)  # fmt: skip
    return big_id, words


def _times(run: Callable[[], object], runs: int = RUNS) -> tuple[float, float]:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        run()
        samples.append((time.perf_counter() - start) * 1000)
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[
        min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100_000, help="messages (default 100000)")
    parser.add_argument("--batch", type=int, default=500, help="messages per transaction")
    parser.add_argument("--keep", type=Path, help="build in this directory and keep it")
    args = parser.parse_args(argv)
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench-reader-"))
    directory = work / "cache"
    print(f"bench/reader.py: {args.count} messages + one of 1 MB, encrypted cache in {work}")
    if (directory / "cache.db").exists():
        with Cache.open(directory, KEY) as cache:
            big_id = cache.search_ids("id:big@example.org", now=dt.datetime.now(dt.UTC))[0]
        gen = _search_bench().Generator(  # type: ignore[attr-defined]
            seed=1, start=dt.datetime(2024, 11, 1, tzinfo=dt.UTC)
        )
        words = [gen.text(1) for _ in range(100)]  # words of the same vocabulary
    else:
        big_id, words = _fill(directory, args.count, args.batch)

    now = dt.datetime(2026, 11, 25, tzinfo=dt.UTC)
    context = ReaderContext(
        state_dir=directory,
        stores=StoreOpeners(
            cache=lambda: Cache.open(directory, KEY),
            certs=lambda: CertStore.open(directory, KEY),
            journal=lambda: Journal.open(directory, KEY),
        ),
        accounts=(AccountInfo("bench", "bench@example.org", True),),
        identities=lambda: [],
        anchors=lambda: [],
        lookup=lambda store: store,  # type: ignore[arg-type,return-value]
        clock=lambda: now,
    )
    app = create_app(context, PORT)
    cookie, _ = app.extensions["reader"].sessions.create()
    client = app.test_client()
    client.set_cookie(COOKIE, cookie, domain="127.0.0.1")
    host = {"Host": f"127.0.0.1:{PORT}"}

    def get(path: str) -> Callable[[], object]:
        def run() -> object:
            response = client.get(path, headers=host, base_url=f"http://127.0.0.1:{PORT}")
            assert response.status_code == 200, (path, response.status_code)
            return response.data

        return run

    rng = random.Random(3)
    reference = Cache.open(directory, KEY)
    queries = [rng.choice(words) for _ in range(RUNS)]
    query_iter = iter(queries * 3)
    folder = 'account:"bench" folder:"INBOX"'
    rows = [
        ("list (newest 50)", get("/mail?account=bench&folder=INBOX"),
         lambda: reference.search(folder, now=now, limit=51)),
        ("list, page 200", get("/mail?account=bench&folder=INBOX&page=200"),
         lambda: reference.search(folder, now=now, limit=51, offset=199 * 50)),
        ("search (a word)", lambda: get(f"/mail?q={next(query_iter)}")(),
         lambda: reference.search(rng.choice(words), now=now, limit=51)),
        ("open 1 MB message", get(f"/message/{big_id}?keep_unread"),
         lambda: reference.content(big_id)),
        ("its HTML frame", get(f"/message/{big_id}/html/2"),
         lambda: reference.content(big_id)),
    ]  # fmt: skip
    for _, page, ref in rows:  # warm the page cache once
        page()
        ref()
    print(f"server time, ms ({RUNS} requests each; reference: the bare cache call)")
    print(f"  {'page':<20} {'median':>8} {'p95':>8}   {'ref p95':>8} {'ratio':>6}   target")
    failed = False
    for name, page, ref in rows:
        median, p95 = _times(page)
        _, ref95 = _times(ref)
        ok = p95 < 100
        failed |= not ok
        print(f"  {name:<20} {median:8.1f} {p95:8.1f}   {ref95:8.2f} {p95 / max(ref95, 1e-3):6.1f}"
              f"   {'ok' if ok else 'OVER 100 ms'}")  # fmt: skip
    reference.close()
    app.extensions["reader"].stores.close()
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

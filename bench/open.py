"""Benchmark of ``core.open``: throughput against the bare RSA private-key rate, and peak memory.

Run: ``.venv/bin/python bench/open.py [--count 1000] [--big-mb 25]``, or with ``--breakdown`` for
the CPU cost of each step of one open (the table in ``docs/performance.md``).

1. Throughput: opening N signed-then-encrypted 10 KB messages (RSA-2048 signer and recipient,
   AES-256-CBC, made by ``openssl cms``) against the rate of bare RSA-2048 private-key decryptions
   measured in the same run (before and after, averaged). Both rates are in CPU time of this
   process (``time.process_time``), so other work on a shared machine does not count against
   either side. Each open costs one such private-key operation plus parsing, a
   signature check and a chain check, so the ratio says how much our own work costs on top of the
   unavoidable cryptography (target >= 0.6).
2. Memory: the peak resident memory of opening one big signed-then-encrypted message in a fresh
   process, above what the process held just before the call, against the message's size
   (target <= 4x).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from smime_companion.core.cms import parse_cms, parse_content_info
from smime_companion.core.decrypt import decrypt
from smime_companion.core.mime import multipart_parts, parse_entity
from smime_companion.core.model import Identity
from smime_companion.core.open import DEFAULT_LIMITS, open_message
from smime_companion.core.verify import verify_signed_data
from smime_companion.testing.pki import make_test_pki


def _openssl(*args: str | Path, data: bytes) -> bytes:
    return subprocess.run(
        ["openssl", "cms", *map(str, args)], input=data, capture_output=True, check=True
    ).stdout


def make_message(pki_dir: Path, body: bytes, index: int) -> bytes:
    """A note from Alice to herself (RSA-2048), signed (detached), then AES-256-CBC encrypted."""
    text = (
        b"From: alice@example.org\r\nTo: alice@example.org\r\n"
        + f"Subject: bench {index}\r\n".encode()
        + b"Content-Type: text/plain; charset=us-ascii\r\n\r\n"
        + body
    )
    signed = _openssl(
        "-sign", "-signer", pki_dir / "alice.cert.pem", "-inkey", pki_dir / "alice.key.pem",
        "-certfile", pki_dir / "intermediate.pem", data=text,
    )  # fmt: skip
    return _openssl("-encrypt", "-aes256", "-recip", pki_dir / "alice.cert.pem", data=signed)


def filler(size: int, seed: int) -> bytes:
    """``size`` bytes of printable lines (76 characters and CRLF), different for each seed."""
    line = (f"{seed:08d} " * 10)[:76].encode() + b"\r\n"
    return (line * (size // len(line) + 1))[:size]


def bare_rsa_rate(key: rsa.RSAPrivateKey, seconds: float) -> float:
    """RSA-2048 PKCS#1 v1.5 decryptions per second (the private-key operation open must do)."""
    ciphertext = key.public_key().encrypt(os.urandom(32), padding.PKCS1v15())
    count, start = 0, time.process_time()
    while time.process_time() - start < seconds:
        key.decrypt(ciphertext, padding.PKCS1v15())
        count += 1
    return count / (time.process_time() - start)


def _cpu_microseconds(step: Callable[[], object], runs: int) -> float:
    step()  # warm the caches a steady stream of mail keeps warm
    start = time.process_time()
    for _ in range(runs):
        step()
    return (time.process_time() - start) / runs * 1e6


def breakdown(pki_dir: Path, runs: int) -> list[tuple[str, float]]:
    """CPU microseconds of each step of opening one bench message, each timed on its own."""
    alice = Identity(
        key=serialization.load_pem_private_key((pki_dir / "alice.key.pem").read_bytes(), None),
        certificate=x509.load_pem_x509_certificate((pki_dir / "alice.cert.pem").read_bytes()),
    )
    anchors = [x509.load_pem_x509_certificate((pki_dir / "root.pem").read_bytes())]
    now = dt.datetime.now(dt.UTC)
    raw = make_message(pki_dir, filler(10 * 1024, 1), 1)
    limit = DEFAULT_LIMITS.max_header_bytes
    envelope = parse_entity(raw, limit).decoded_body()
    parsed = parse_cms(envelope)
    plaintext = decrypt(parsed.info, [alice], ciphertext=parsed.content).plaintext
    assert plaintext is not None
    signed, signature = multipart_parts(parse_entity(plaintext, limit), 2)
    signature_der = parse_entity(signature, limit).decoded_body()
    key = alice.key
    assert isinstance(key, rsa.RSAPrivateKey)
    pkcs1 = padding.PKCS1v15()
    ciphertext = key.public_key().encrypt(os.urandom(32), pkcs1)

    def outer() -> object:
        return parse_entity(raw, limit).decoded_body()

    def enveloped() -> object:
        fresh = parse_cms(envelope)  # a fresh parse: asn1crypto caches what was read
        return decrypt(fresh.info, [alice], ciphertext=fresh.content)

    def multipart() -> object:
        parts = multipart_parts(parse_entity(plaintext, limit), 2)
        return parse_entity(parts[1], limit).decoded_body()

    def signed_data() -> object:
        info = parse_content_info(signature_der)
        sender = ("alice@example.org",)
        return verify_signed_data(info, signed, anchors=anchors, at=now, from_addresses=sender)

    def whole() -> object:
        return open_message(raw, identities=[alice], anchors=anchors, at=now)

    steps: list[tuple[str, Callable[[], object]]] = [
        ("bare RSA-2048 private-key decryption", lambda: key.decrypt(ciphertext, pkcs1)),
        ("outer entity: header fields + base64 decode", outer),
        ("EnvelopedData: parse_cms + decrypt() (RSA included)", enveloped),
        ("  of which parse_cms", lambda: parse_cms(envelope)),
        ("multipart/signed: parse, split, decode signature", multipart),
        ("SignedData: parse_content_info + verify_signed_data", signed_data),
        ("  of which parse_content_info", lambda: parse_content_info(signature_der)),
        ("open_message, whole", whole),
    ]
    return [(label, _cpu_microseconds(step, runs)) for label, step in steps]


def throughput(pki_dir: Path, count: int) -> float:
    alice = Identity(
        key=serialization.load_pem_private_key((pki_dir / "alice.key.pem").read_bytes(), None),
        certificate=x509.load_pem_x509_certificate((pki_dir / "alice.cert.pem").read_bytes()),
    )
    anchors = [x509.load_pem_x509_certificate((pki_dir / "root.pem").read_bytes())]
    print(f"making {count} messages with openssl ...", file=sys.stderr)
    messages = [make_message(pki_dir, filler(10 * 1024, i), i) for i in range(count)]
    now = dt.datetime.now(dt.UTC)
    start = time.process_time()
    for raw in messages:
        result = open_message(raw, identities=[alice], anchors=anchors, at=now)
        assert result.ok and result.signature == "valid", result.to_json()
    return count / (time.process_time() - start)


MEMORY_CHILD = r"""
import datetime as dt, sys
from pathlib import Path
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from smime_companion.core.model import Identity
from smime_companion.core.open import open_message
pki, msg = Path(sys.argv[1]), Path(sys.argv[2])
alice = Identity(
    key=serialization.load_pem_private_key((pki / "alice.key.pem").read_bytes(), None),
    certificate=x509.load_pem_x509_certificate((pki / "alice.cert.pem").read_bytes()),
)
anchors = [x509.load_pem_x509_certificate((pki / "root.pem").read_bytes())]
raw = msg.read_bytes()
def status_kb(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
before = status_kb("VmRSS")
# VmHWM, not getrusage's ru_maxrss: ru_maxrss survives exec and so counts the parent process
# image this child was forked from (the parent holds the throughput run's 1,000 messages).
# Writing 5 to clear_refs resets VmHWM to the current RSS, so the peak is the open's own.
try:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
except OSError:
    pass
result = open_message(raw, identities=[alice], anchors=anchors, at=dt.datetime.now(dt.UTC))
peak = status_kb("VmHWM")
assert result.ok, result.to_json()
print(before, peak, len(result.content))
"""


def memory(pki_dir: Path, size_mb: int, workdir: Path) -> tuple[int, int, int]:
    """(message bytes, peak extra bytes during open, bytes of the opened content)."""
    big = make_message(pki_dir, filler(size_mb * 1024 * 1024, 7), 0)
    path = workdir / "big.eml"
    path.write_bytes(big)
    out = subprocess.run(
        [sys.executable, "-c", MEMORY_CHILD, str(pki_dir), str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    before_kb, peak_kb, content = int(out[0]), int(out[1]), int(out[2])
    return len(big), (peak_kb - before_kb) * 1024, content


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000, help="messages in the throughput run")
    parser.add_argument("--big-mb", type=int, default=25, help="size of the memory-test body")
    parser.add_argument("--seconds", type=float, default=3.0, help="time for the bare RSA rate")
    parser.add_argument(
        "--breakdown",
        action="store_true",
        help="only print the CPU cost of each step of one open (docs/performance.md)",
    )
    args = parser.parse_args()

    if args.breakdown:
        with tempfile.TemporaryDirectory() as tmp:
            pki = make_test_pki(Path(tmp) / "pki")
            for label, micros in breakdown(pki.directory, 2000):
                print(f"{label:<56} {micros:>8.1f} us")
        return 0

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        pki = make_test_pki(workdir / "pki")
        key = serialization.load_pem_private_key(
            (pki.directory / "alice.key.pem").read_bytes(), None
        )
        assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 2048

        # The RSA rate before and after the open run, averaged: a machine whose speed drifts
        # (turbo, a neighbour's load on a shared core) then skews the ratio less.
        rsa_before = bare_rsa_rate(key, args.seconds / 2)
        open_rate = throughput(pki.directory, args.count)
        rsa_rate = (rsa_before + bare_rsa_rate(key, args.seconds / 2)) / 2
        size, extra, content = memory(pki.directory, args.big_mb, workdir)

    ratio = open_rate / rsa_rate
    mem_ratio = extra / size
    print()
    print(f"{'measure':<52} {'value':>14} {'target':>10}")
    print("-" * 78)
    print(f"{'open(): signed+encrypted 10 KB messages/s':<52} {open_rate:>14.1f}")
    print(f"{'bare RSA-2048 private-key operations/s':<52} {rsa_rate:>14.1f}")
    print(f"{'ratio open / bare RSA':<52} {ratio:>14.2f} {'>= 0.6':>10}")
    print(f"{'big message size (MB)':<52} {size / 1e6:>14.1f}")
    print(f"{'peak memory above baseline while opening (MB)':<52} {extra / 1e6:>14.1f}")
    print(f"{'ratio peak memory / message size':<52} {mem_ratio:>14.2f} {'<= 4':>10}")
    print(f"(opened content {content / 1e6:.1f} MB; {args.count} messages in the throughput run)")
    return 0 if ratio >= 0.6 and mem_ratio <= 4 else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""What each hostile message costs in ``smime-companion open``: every message the issue 14 tests
build (``tests/chaos/costly.py``, ``tests/chaos/forged.py``) and the earlier hostile set
(``tests/chaos/hostile.py``), each opened by a fresh ``smime-companion open`` process as bob.

Run: ``.venv/bin/python bench/hostile_open.py [--only SUBSTRING] [--json FILE]``.

For each message the table gives its size, the process's wall time, its CPU time (user+system),
its maximum resident set (interpreter and imports included, measured by ``/usr/bin/time``, whose
small process forks the child), the verdict or error, and whether it met the target: under 2 s
and under 4 times its size plus 64 MB. The first row is the reference measured in the same run:
a small good message (alice's signature), whose cost is the interpreter's and the imports'.
Wall time includes starting Python (about half a second here); a loaded machine inflates it,
CPU time less so.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import serialization  # noqa: E402

from smime_companion.testing.pki import TestPki, make_test_pki  # noqa: E402
from tests.chaos import costly, forged, hostile  # noqa: E402
from tests.dovecot import signed_mail  # noqa: E402

MB = 1 << 20
TARGET_SECONDS = 2.0


@dataclass
class Row:
    name: str
    size: int
    wall: float
    cpu: float
    max_rss: int  # bytes
    outcome: str
    met: bool


YESTERDAY = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)


def messages(pki: TestPki, workdir: Path) -> list[tuple[str, bytes, Path]]:
    """(name, message, trust anchor file) of every hostile message, the reference first."""
    root = pki.root
    out: list[tuple[str, Callable[[], bytes]]] = [
        ("reference: alice's signed message", lambda: signed_mail(pki, "reference")),
        ("path maze: 16 self-issued CAs, 16 signers", lambda: costly.self_issued_maze(16, 16)),
        ("path maze: 7 cross-certified CAs, 8 signers", lambda: costly.cross_certified_mesh(7, 8)),
        ("path maze beside alice's real signature", lambda: costly.maze_beside_a_real_signer(pki)),
        ("nested compression: 64 MiB in 3 layers", lambda: costly.nested_compression(64 * MB)),
        ("compression bomb: 1 GiB in 1 layer", lambda: hostile.compression_bomb(1024 * MB)),
        ("CompressedData flood: 11.7 MB of 1-byte chunks",
         lambda: costly.compressed_chunk_flood(3_900_000)),
        ("CompressedData in 128-byte chunks (opens)",
         lambda: costly.compressed_chunk_flood(3_900_000, chunk=128)),
        ("flood inside a compressed layer", lambda: costly.flood_wrapped_in_compression(800_000)),
        ("signature value flood: 11.7 MB of 1-byte chunks",
         lambda: costly.signature_value_flood(pki, 3_900_000)),
        ("SignedData eContent flood: 1-byte chunks",
         lambda: costly.signed_data_chunk_flood(pki, 1, body=3_900_000)),
        ("EnvelopedData content flood: 1-byte chunks",
         lambda: costly.enveloped_chunk_flood(pki, 3_900_000)),
        ("two From fields", lambda: forged.two_from_fields(pki)),
        ("one From field, two addresses", lambda: forged.two_addresses_in_from(pki)),
        ("two From fields in protected headers", lambda: forged.two_from_fields_protected(pki)),
        ("poison From: 5,000 nested comments", lambda: forged.poison_from_signed(pki)),
        ("hp Subject outside the signature",
         lambda: forged.protected_subject_outside_the_signature(pki)),
        ("v1 Subject outside the signature",
         lambda: forged.protected_subject_outside_the_signature(pki, 'protected-headers="v1"')),
        ("rfc822 Subject outside the signature",
         lambda: forged.rfc822_subject_outside_the_signature(pki)),
        ("CBC gadget (IV changed)", lambda: forged.cbc_gadget(pki)[1]),
        ("impostor with alice's issuer and serial", lambda: forged.duplicate_signer_id(pki)),
        ("impostor with alice's key identifier", lambda: forged.duplicate_signer_id(pki, True)),
        ("envelope in an attached message", lambda: forged.encrypted_message_attached(pki)),
        ("envelope as an octet-stream .p7m", lambda: forged.p7m_octet_stream_attached(pki)),
        ("envelope inside decrypted content",
         lambda: forged.envelope_inside_decrypted_content(pki)),
        ("BER nested 100,000 deep", lambda: hostile.deep_ber(100_000)),
        ("5,000 RecipientInfos", lambda: hostile.many_recipients(pki, 5000)),
        ("500 look-alike issuers", lambda: hostile.huge_chain(pki, 500, keep_real=True)),
        ("20,000 header fields", lambda: hostile.many_header_fields(20_000)),
        ("stapled OCSP: 8 responses of 20,000 answers",
         lambda: costly.ocsp_answer_flood(pki, 20_000, 8)),
        ("stapled OCSP: 150 look-alike responders (under the size cap)",
         lambda: costly.ocsp_look_alike_responders(pki, YESTERDAY, 150)),
    ]  # fmt: skip
    built = [(name, make(), root) for name, make in out]
    for name, domain in (
        ("name constraints: excluded domain with a trailing dot", "ceo@evil.example."),
        ("name constraints: excluded domain in capitals", "ceo@EVIL.EXAMPLE"),
    ):
        world = forged.constrained_message(
            signer_email=domain,
            signer_subject=x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "CEO")]),
            excluded=[x509.RFC822Name("evil.example")],
        )
        anchor = workdir / f"anchor-{len(built)}.pem"
        anchor.write_bytes(world.anchor.public_bytes(serialization.Encoding.PEM))
        built.append((name, world.message, anchor))
    return built


def measure(name: str, raw: bytes, anchor: Path, pki: TestPki, workdir: Path) -> Row:
    path = workdir / "message.eml"
    path.write_bytes(raw)
    timing = workdir / "time.txt"
    command = [
        "/usr/bin/time", "-o", str(timing), "-f", "%e %U %S %M",
        sys.executable, "-m", "smime_companion", "open", str(path), "--key", str(pki.key("bob")),
        "--cert", str(pki.cert("bob")), "--anchor", str(anchor), "--json",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(command, capture_output=True, env=env, timeout=600)
    wall, user, system, rss_kb = timing.read_text().split()[-4:]
    if proc.returncode in (0, 1):
        report = json.loads(proc.stdout)
        outcome = f"dec {report['decryption']}, sig {report['signature']}"
        if report["warnings"]:
            outcome += f", {'/'.join(report['warnings'])}"
        if report["error"]:
            outcome += f"; {report['error'][:60]}"
        outcome += f" (exit {proc.returncode})"
    else:
        outcome = f"EXIT {proc.returncode}: {proc.stderr.decode(errors='replace')[:80]}"
    max_rss = int(rss_kb) * 1024
    met = float(wall) < TARGET_SECONDS and max_rss < 4 * len(raw) + 64 * MB
    return Row(name, len(raw), float(wall), float(user) + float(system), max_rss, outcome, met)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="measure only the messages whose name contains this")
    parser.add_argument("--json", type=Path, help="also write the rows to this file")
    args = parser.parse_args()
    if not shutil.which("/usr/bin/time"):
        print("bench/hostile_open.py needs /usr/bin/time (Debian package 'time')", file=sys.stderr)
        return 2
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        pki = make_test_pki(workdir / "pki")
        started = time.monotonic()
        built = messages(pki, workdir)
        print(f"built {len(built)} messages in {time.monotonic() - started:.0f} s", file=sys.stderr)
        for name, raw, anchor in built:
            if args.only and args.only not in name and not name.startswith("reference"):
                continue
            rows.append(measure(name, raw, anchor, pki, workdir))
            print(f"measured {name}", file=sys.stderr, flush=True)
    print(f"{'message':<52} {'size':>9} {'wall':>6} {'cpu':>6} {'max RSS':>8}  met  outcome")
    for r in rows:
        print(
            f"{r.name[:52]:<52} {r.size / MB:>7.2f}MB {r.wall:>5.2f}s {r.cpu:>5.2f}s "
            f"{r.max_rss / MB:>6.0f}MB  {'yes' if r.met else 'NO ':<4} {r.outcome}"
        )
    reference = rows[0]
    worst_wall = max(r.wall for r in rows)
    worst_rss = max(r.max_rss - 4 * r.size for r in rows)
    print(
        f"\nreference (a small good message): {reference.wall:.2f} s, "
        f"{reference.max_rss / MB:.0f} MB; slowest {worst_wall:.2f} s "
        f"({worst_wall / reference.wall:.1f}x the reference); largest RSS beyond 4x the "
        f"message {worst_rss / MB:.0f} MB (target under 64); "
        f"{sum(r.met for r in rows)} of {len(rows)} within the target"
    )
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=2))
    return 0 if all(r.met for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark of ``core.seal``: sign+encrypt throughput against the bare RSA-2048 signing rate.

Run: ``.venv/bin/python bench/seal.py [--count 1000] [--seconds 3]``

Seals N different 10 KB drafts from Alice (RSA-2048) to three RSA-2048 recipients (olga,
wrongaddr and rogue of the test PKI; the sender's own certificate makes a fourth RecipientInfo):
detached SHA-256 signature, header protection, AES-256-CBC, RSA PKCS#1 v1.5 key transport. Each
seal costs one RSA-2048 private-key signature, which cannot be avoided; the ratio of the two rates,
measured in the same run, says how much everything else (MIME, ASN.1, AES, four public-key
operations) costs on top of it (target >= 0.6). For context the bench also measures the
cryptography alone that a seal needs (the signature, four RSA encryptions, SHA-256 and AES):
its ratio is the ceiling no implementation can pass on this stack.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from smime_companion import keyfiles
from smime_companion.core.cert_vocabulary import Recipient
from smime_companion.core.seal import seal
from smime_companion.testing.pki import PKCS12_PASSWORD, TestPki, make_test_pki

RECIPIENTS = ("olga", "wrongaddr", "rogue")


def filler(size: int, seed: int) -> str:
    """``size`` characters of printable lines (76 characters and CRLF), different per seed."""
    line = (f"{seed:08d} " * 10)[:76] + "\r\n"
    return (line * (size // len(line) + 1))[:size]


def draft(pki: TestPki, index: int) -> bytes:
    to = ", ".join(pki.email(u) for u in RECIPIENTS)
    return (
        f"From: Alice <alice@example.org>\r\nTo: {to}\r\nSubject: bench {index}\r\n"
        "Date: Wed, 25 Nov 2026 09:00:00 +0000\r\n"
        f"Message-ID: <bench-{index}@example.org>\r\nMIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=us-ascii\r\n\r\n" + filler(10 * 1024, index)
    ).encode()


def seal_rate(pki: TestPki, count: int) -> float:
    """Sign+encrypt seals per second over ``count`` different drafts."""
    alice = keyfiles.load_pkcs12(pki.p12("alice"), PKCS12_PASSWORD.encode())
    recipients = [
        Recipient(pki.email(u), keyfiles.load_certificates(pki.cert(u))[0]) for u in RECIPIENTS
    ]
    drafts = [draft(pki, i) for i in range(count)]
    now = dt.datetime.now(dt.UTC)
    start = time.perf_counter()
    for raw in drafts:
        result = seal(raw, signer=alice, recipients=recipients, at=now)
        assert len(result.main.deliveries) == 4 and result.content_cipher == "aes-256-cbc"
    return count / (time.perf_counter() - start)


def bare_sign_rate(key: rsa.RSAPrivateKey, seconds: float) -> float:
    """RSA-2048 PKCS#1 v1.5 SHA-256 signatures per second (the operation each seal must do)."""
    data = b"x" * 200  # about the size of the signed attributes
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        key.sign(data, padding.PKCS1v15(), hashes.SHA256())
        count += 1
    return count / (time.perf_counter() - start)


def crypto_only_rate(pki: TestPki, seconds: float) -> float:
    """Rate of the cryptography alone that one seal needs: SHA-256 of the payload, one RSA-2048
    signature, AES-256-CBC of the signed entity and four RSA public-key encryptions of the key.
    No implementation on this library stack can seal faster; it puts the ratio in context."""
    key = keyfiles.load_private_key(pki.key("alice"))
    assert isinstance(key, rsa.RSAPrivateKey)
    publics = [
        keyfiles.load_certificates(pki.cert(u))[0].public_key() for u in (*RECIPIENTS, "alice")
    ]
    body = filler(15 * 1024, 1).encode()  # about the size of the signed entity
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        hashlib.sha256(body).digest()
        key.sign(b"x" * 200, padding.PKCS1v15(), hashes.SHA256())
        cek, iv = os.urandom(32), os.urandom(16)
        encryptor = Cipher(algorithms.AES(cek), modes.CBC(iv)).encryptor()
        encryptor.update(body + b"\x10" * 16)
        encryptor.finalize()
        for public in publics:
            assert isinstance(public, rsa.RSAPublicKey)
            public.encrypt(cek, padding.PKCS1v15())
        count += 1
    return count / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--count", type=int, default=1000, help="drafts in the throughput run")
    parser.add_argument("--seconds", type=float, default=3.0, help="time for the bare RSA rate")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        pki = make_test_pki(Path(tmp) / "pki")
        key = keyfiles.load_private_key(pki.key("alice"))
        assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 2048
        print(f"sealing {args.count} drafts ...", file=sys.stderr)
        rate = seal_rate(pki, args.count)
        rsa_rate = bare_sign_rate(key, args.seconds)
        floor_rate = crypto_only_rate(pki, args.seconds)

    ratio = rate / rsa_rate
    print()
    print(f"{'measure':<58} {'value':>10} {'target':>8}")
    print("-" * 78)
    print(f"{'seal(): sign+encrypt 10 KB draft, 3 RSA-2048 recipients/s':<58} {rate:>10.1f}")
    print(f"{'bare RSA-2048 PKCS#1 v1.5 SHA-256 signatures/s':<58} {rsa_rate:>10.1f}")
    print(f"{'ratio seal / bare RSA signing':<58} {ratio:>10.2f} {'>= 0.6':>8}")
    print(f"{'for context: the cryptography alone of one seal/s':<58} {floor_rate:>10.1f}")
    print(
        f"{'  its ratio to bare RSA signing (the best any seal can do)':<58} "
        f"{floor_rate / rsa_rate:>10.2f}"
    )
    return 0 if ratio >= 0.6 else 1


if __name__ == "__main__":
    raise SystemExit(main())

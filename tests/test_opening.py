"""Opening for the cache in a worker process (``smime_companion.sync.opening``): the same
results as in this process, nothing lost when a worker dies, and a bad message is a result,
never an error."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

import pytest
from cryptography import x509

from smime_companion.core.entry_derivation import derive_entry
from smime_companion.core.verdicts import Decryption, SignatureStatus
from smime_companion.sync.opening import MAX_WORKER_DEATHS
from smime_companion.sync.opening import OpeningPool as Opener
from smime_companion.testing.pki import TestPki
from tests.conftest import load_identity
from tests.dovecot import encrypted_mail, plain_mail, signed_mail


@pytest.fixture
def mail(pki: TestPki, now: dt.datetime) -> list[tuple[bytes, dt.datetime]]:
    at = now  # the PKI is valid then
    return [
        (signed_mail(pki, "o-signed"), at),
        (encrypted_mail(pki, "o-encrypted"), at),
        (plain_mail("o-plain"), at),
        (b"Content-Type: application/pkcs7-mime; smime-type=enveloped-data\r\n\r\n%%%%", at),
    ]


@pytest.fixture
def worker(pki: TestPki, anchors: tuple[x509.Certificate, ...]) -> Iterator[Opener]:
    with Opener([load_identity(pki, "bob")], anchors, workers=1) as opener:
        yield opener


def running_pool(opener: Opener, mail: list[tuple[bytes, dt.datetime]]) -> ProcessPoolExecutor:
    """The opener's pool, once its worker has opened something (so it is up)."""
    opener.submit(mail[:1]).result()
    assert opener._pool is not None
    return opener._pool


def test_a_worker_opens_and_derives_exactly_what_this_process_does(
    pki: TestPki,
    anchors: tuple[x509.Certificate, ...],
    worker: Opener,
    mail: list[tuple[bytes, dt.datetime]],
) -> None:
    here = Opener([load_identity(pki, "bob")], anchors, workers=0)
    there = worker.submit(mail).result()
    assert there == here.submit(mail).result()
    signed, encrypted, plain, broken = there
    assert signed.result.signature == SignatureStatus.VALID
    assert signed.result.signers[0].certificate == x509.load_pem_x509_certificate(
        pki.cert("alice").read_bytes()
    )  # certificates cross the process boundary intact
    assert encrypted.result.decryption == Decryption.OK and encrypted.entry.content
    # Plain mail comes back whole, though the worker does not send its content twice.
    assert plain.entry.content_is_raw and plain.result.content == mail[2][0]
    assert broken.result.error and broken.entry.error == broken.result.error


def test_the_entry_is_the_one_derived_from_the_result(
    worker: Opener, mail: list[tuple[bytes, dt.datetime]]
) -> None:
    for (raw, at), opened in zip(mail, worker.submit(mail).result(), strict=True):
        assert opened.entry == derive_entry(raw, opened.result, at)


def test_a_killed_worker_loses_no_message_and_is_replaced(
    worker: Opener, mail: list[tuple[bytes, dt.datetime]]
) -> None:
    pool = running_pool(worker, mail)
    for pid in list(pool._processes):  # failure injection: the kernel's OOM killer, say
        os.kill(pid, signal.SIGKILL)
    opened = worker.submit(mail).result()  # opened here instead
    assert [o.result.signature for o in opened][:1] == [SignatureStatus.VALID]
    assert len(opened) == len(mail)
    again = worker.submit(mail).result()  # and by a new worker next time
    assert again == opened
    assert worker._pool is not None and worker._pool is not pool


def test_a_closed_opener_still_opens_in_this_process(
    worker: Opener, mail: list[tuple[bytes, dt.datetime]]
) -> None:
    worker.close()
    assert [o.result.signature for o in worker.submit(mail[:1]).result()] == ["valid"]


HOLDER = """
import sys, time
from cryptography import x509
from smime_companion.keyfiles import load_pkcs12
from smime_companion.sync.opening import MAX_WORKER_DEATHS, OpeningPool as Opener
identity = load_pkcs12(__import__("pathlib").Path(sys.argv[1]), b"test")
opener = Opener([identity], [], workers=1)
opener.submit([]).result()  # the worker is up
print(*opener._pool._processes, flush=True)
time.sleep(60)
"""


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as status:
            return any(line.split()[1] == "Z" for line in status if line.startswith("State:"))
    except FileNotFoundError:
        return True


def test_a_worker_ends_when_the_daemon_is_killed_outright(pki: TestPki) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(pki.p12("bob"))], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None
        (worker,) = (int(pid) for pid in holder.stdout.readline().split())
        holder.kill()  # SIGKILL: no clean-up code of the daemon runs
        holder.wait()
        deadline = time.monotonic() + 10
        while not _gone(worker) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _gone(worker), "the worker outlived its daemon (and kept its keys)"
    finally:
        holder.kill()


def test_ctrl_c_and_a_stop_signal_leave_the_worker_to_its_daemon(
    worker: Opener, mail: list[tuple[bytes, dt.datetime]]
) -> None:
    pool = running_pool(worker, mail)
    (pid,) = pool._processes
    for sig in (signal.SIGINT, signal.SIGTERM):  # as a terminal or systemd sends to the group
        os.kill(pid, sig)
    time.sleep(0.3)
    assert [o.result.signature for o in worker.submit(mail[:1]).result()] == ["valid"]
    assert worker._pool is pool and not _gone(pid)  # the same worker did it


def test_batches_in_flight_when_the_worker_dies_all_open_and_later_work_is_not_cancelled(
    worker: Opener, mail: list[tuple[bytes, dt.datetime]]
) -> None:
    pool = running_pool(worker, mail)
    in_flight = [worker.submit(mail) for _ in range(3)]
    for pid in list(pool._processes):
        os.kill(pid, signal.SIGKILL)
    first = in_flight[0].result()  # opened here; a new worker is started
    later = [worker.submit(mail) for _ in range(4)]  # queued for the new worker
    rest = [batch.result() for batch in in_flight[1:]]  # must not replace the new worker again
    assert rest == [first, first]
    assert [batch.result() for batch in later] == [first] * 4  # none of them cancelled
    assert [o.result.signature for o in first][:1] == ["valid"]


def _refuse_to_start(*args: object) -> None:
    raise RuntimeError("injected: this worker cannot start")


class UnstartableOpener(Opener):
    """Failure injection: every worker it starts dies in its initializer."""

    def _start(self) -> None:
        self._pool = ProcessPoolExecutor(
            max_workers=1, mp_context=get_context("spawn"), initializer=_refuse_to_start
        )


def test_workers_that_cannot_live_leave_every_message_opened_here_in_the_end(
    pki: TestPki, anchors: tuple[x509.Certificate, ...], mail: list[tuple[bytes, dt.datetime]]
) -> None:
    with UnstartableOpener([load_identity(pki, "bob")], anchors, workers=1) as opener:
        batches = [opener.submit(mail).result() for _ in range(MAX_WORKER_DEATHS + 2)]
    assert all(batch == batches[0] for batch in batches)
    assert [o.result.signature for o in batches[0]][:1] == ["valid"]
    assert opener.workers == 0  # it gave up starting workers

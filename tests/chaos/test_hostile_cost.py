"""Messages built to cost work (issue 14) end in a verdict or one clean line, with the work
bounded: certificate mazes for the path search, compression nested in compression, and BER chunk
floods on every CMS path (CompressedData, SignedData, a detached signature, the content of a
compressed layer).

Each case runs under a hang guard (pytest-timeout: before the fixes the maze took 21 minutes and
the floods minutes each) and, where memory was the problem, the tracemalloc peak while it is
opened. What each costs in ``smime-companion open`` (time and resident memory against the
message's size) is measured by ``bench/hostile_open.py``; tests assert no times.
"""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509

from smime_companion.core.model import OpenResult
from smime_companion.core.open import open_message
from smime_companion.core.verdicts import Decryption, SignatureStatus
from smime_companion.testing.pki import TestPki
from tests.chaos import costly, hostile
from tests.conftest import load_identity

pytestmark = pytest.mark.timeout(60)

MB = 1 << 20


def _open(
    raw: bytes, pki: TestPki, anchors: tuple[x509.Certificate, ...], now: dt.datetime
) -> OpenResult:
    return open_message(raw, identities=[load_identity(pki, "bob")], anchors=anchors, at=now)


def _one_line(error: str | None) -> bool:
    return error is not None and "\n" not in error and len(error) < 300


# -- the path search --------------------------------------------------------------------------


def test_sixteen_self_issued_cas_sharing_a_key_with_sixteen_signers_are_untrusted_at_once(
    pki, anchors, now
) -> None:
    result = _open(costly.self_issued_maze(16, 16), pki, anchors, now)
    assert result.signature == SignatureStatus.UNTRUSTED
    reasons = {s.reason for s in result.signers}
    assert len(result.signers) == 16
    assert reasons == {
        "no path to a trust anchor: CN=Maze CA is self-signed and not a trust anchor"
    }


def test_a_cross_certified_mesh_is_untrusted_and_the_reason_says_the_search_gave_up(
    pki, anchors, now
) -> None:
    result = _open(costly.cross_certified_mesh(7, 8), pki, anchors, now)
    assert result.signature == SignatureStatus.UNTRUSTED
    assert any("gave up the search" in (s.reason or "") for s in result.signers)


def test_a_maze_beside_a_real_signer_costs_the_maze_signers_their_verdict_never_hers(
    pki, anchors, now
) -> None:
    result = _open(costly.maze_beside_a_real_signer(pki), pki, anchors, now)
    assert result.signature == SignatureStatus.VALID
    assert result.signer == "alice@example.org"
    statuses = [s.status for s in result.signers]
    assert statuses.count(SignatureStatus.VALID) == 1
    assert statuses.count(SignatureStatus.UNTRUSTED) == 15


# -- decompression ----------------------------------------------------------------------------


def test_compression_nested_in_compression_shares_one_budget_for_the_whole_message(
    pki, anchors, now
) -> None:
    raw = costly.nested_compression(64 * MB, layers=3)  # about 220 KB, 73 MiB in all
    result, peak = hostile.measured(lambda: _open(raw, pki, anchors, now))
    assert _one_line(result.error) and "expands past" in (result.error or "")
    assert "all compressed layers of this message" in (result.error or "")
    assert not result.ok
    # The budget is 4 MiB plus the message's size, over every layer: the old limit (100 times
    # each layer) let this one expand to 73 MiB.
    assert peak < 4 * len(raw) + 16 * MB


def test_a_small_compressed_message_within_its_budget_still_opens(pki, anchors, now) -> None:
    raw = costly.nested_compression(2 * MB, layers=2)
    result = _open(raw, pki, anchors, now)
    assert result.error is None
    assert [layer.type for layer in result.layers] == ["compressed", "compressed"]
    assert len(result.content) > 2 * MB


# -- BER chunk floods -------------------------------------------------------------------------


def test_a_compressed_data_chunk_flood_is_refused_in_linear_time(pki, anchors, now) -> None:
    # 9 MB of one-byte chunks (12 MB of mail): asn1crypto's joins took 172 s for 11.7 MB.
    result = _open(costly.compressed_chunk_flood(3_000_000), pki, anchors, now)
    assert _one_line(result.error) and "a flood of tiny chunks" in (result.error or "")
    assert [layer.type for layer in result.layers] == ["compressed"]


def test_compressed_data_in_streamed_chunks_opens(pki, anchors, now) -> None:
    # 128-byte chunks: the smallest the chunk budget allows at this size, far smaller than
    # any streaming encoder writes (openssl: 4 KB).
    result = _open(costly.compressed_chunk_flood(3_000_000, chunk=128), pki, anchors, now)
    assert result.error is None
    assert result.content.endswith(b"B" * 1000)


def test_a_chunk_flood_inside_a_compressed_layer_is_refused(pki, anchors, now) -> None:
    raw = costly.flood_wrapped_in_compression(800_000)  # 1.2 MB of mail, 2.4 MB of chunks
    result = _open(raw, pki, anchors, now)
    assert _one_line(result.error) and "a flood of tiny chunks" in (result.error or "")
    assert [layer.type for layer in result.layers] == ["compressed", "compressed"]


def test_a_flood_in_a_detached_signature_value_is_malformed_without_joining_it(
    pki, anchors, now
) -> None:
    result = _open(costly.signature_value_flood(pki, 3_000_000), pki, anchors, now)
    assert result.signature == SignatureStatus.MALFORMED
    assert "a flood of tiny chunks" in (result.layers[0].error or "")


@pytest.mark.parametrize("chunk", [1, 7, 64])
def test_signed_content_in_chunks_keeps_its_signature_valid(pki, anchors, now, chunk) -> None:
    # A small object: parsed whole, as before; its chunks still join to the signed bytes.
    result = _open(costly.signed_data_chunk_flood(pki, chunk), pki, anchors, now)
    assert result.signature == SignatureStatus.VALID
    assert result.decryption == Decryption.NONE

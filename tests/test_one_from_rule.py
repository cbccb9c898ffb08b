"""One From rule everywhere (issue 14): a signature is ``valid`` only for a message whose shown
header section has exactly one From field holding exactly one address, the signer's; and every
view (``open --json``, the cache entry, the exported copy) shows that one field, the one that was
checked. Before, the JSON showed the last From, open checked the first and verify accepted any
address of the field: alice's signature came back ``valid`` with ``from = CEO``."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509

from smime_companion.core.cms import parse_content_info
from smime_companion.core.entry_derivation import derive_entry
from smime_companion.core.export import export_message
from smime_companion.core.model import OpenResult
from smime_companion.core.open import open_message
from smime_companion.core.verdicts import SignatureStatus
from smime_companion.core.verify import verify_signed_data
from smime_companion.testing.pki import TestPki
from tests.chaos import forged
from tests.conftest import load_identity
from tests.tools import mime_message, minimal_env, openssl_cms

S = SignatureStatus


def _open(raw: bytes, pki: TestPki, anchors: tuple[x509.Certificate, ...], now: dt.datetime):
    return open_message(raw, identities=[load_identity(pki, "bob")], anchors=anchors, at=now)


def _from_lines(exported: bytes) -> list[bytes]:
    head = exported.split(b"\n\n", 1)[0]
    return [line for line in head.split(b"\n") if line.lower().startswith(b"from:")]


def _shown_everywhere(raw: bytes, result: OpenResult, now: dt.datetime) -> set[str]:
    """The From shown by open --json, by the cache entry and by the exported copy."""
    exported = export_message(raw, result.content, result.headers, ())
    [line] = _from_lines(exported)
    return {
        result.to_json()["headers"]["from"],
        derive_entry(raw, result, now).sender,
        line.split(b":", 1)[1].strip().decode(),
    }


@pytest.mark.parametrize("second", [forged.CEO, forged.ALICE], ids=["ceo", "alice-again"])
def test_a_second_from_field_makes_a_valid_signature_an_email_mismatch(
    pki, anchors, now, second
) -> None:
    raw = forged.two_from_fields(pki, second)
    result = _open(raw, pki, anchors, now)
    assert result.signature == S.EMAIL_MISMATCH
    [signer] = result.signers
    assert "2 From fields" in (signer.reason or "")
    assert "valid only for exactly one From address" in (signer.reason or "")
    # Every view shows the first From field, the one the signature was checked against.
    assert _shown_everywhere(raw, result, now) == {forged.ALICE}


def test_a_from_field_holding_two_addresses_is_an_email_mismatch(pki, anchors, now) -> None:
    raw = forged.two_addresses_in_from(pki)
    result = _open(raw, pki, anchors, now)
    assert result.signature == S.EMAIL_MISMATCH
    assert "holds 2 addresses" in (result.signers[0].reason or "")
    assert _shown_everywhere(raw, result, now) == {f"{forged.ALICE}, {forged.CEO}"}


def test_protected_headers_with_two_from_fields_are_an_email_mismatch(pki, anchors, now) -> None:
    result = _open(forged.two_from_fields_protected(pki), pki, anchors, now)
    assert result.header_protection == "hp"
    assert result.signature == S.EMAIL_MISMATCH
    assert result.to_json()["headers"]["from"] == forged.ALICE


def test_verify_alone_accepts_no_list_of_from_addresses(pki, anchors, now) -> None:
    der = openssl_cms(
        ["-sign", "-nodetach", "-outform", "DER", "-signer", pki.cert("alice"), "-inkey",
         pki.key("alice"), "-certfile", pki.intermediate],
        mime_message(),
    )  # fmt: skip
    info = parse_content_info(der)
    one = verify_signed_data(info, None, anchors=anchors, at=now, from_addresses=[forged.ALICE])
    both = verify_signed_data(
        info, None, anchors=anchors, at=now, from_addresses=[forged.ALICE, "ceo@bank.example"]
    )
    assert one.status == S.VALID
    assert both.status == S.EMAIL_MISMATCH


def test_one_from_field_with_one_address_stays_valid_in_every_view(pki, anchors, now) -> None:
    raw = b"From: Alice <alice@example.org>\r\nTo: bob@example.org\r\n" + openssl_cms(
        ["-sign", "-signer", pki.cert("alice"), "-inkey", pki.key("alice"), "-certfile",
         pki.intermediate],
        mime_message(),
    )  # fmt: skip
    result = _open(raw, pki, anchors, now)
    assert result.signature == S.VALID
    assert _shown_everywhere(raw, result, now) == {"Alice <alice@example.org>"}


def test_a_poison_from_is_a_verdict_not_a_recursion_crash(pki, anchors, now) -> None:
    # 5,000 nested comments: the email package's parser recursed into RecursionError.
    result = _open(forged.poison_from_signed(pki), pki, anchors, now)
    assert result.signature == S.EMAIL_MISMATCH
    assert "cannot be read" in (result.signers[0].reason or "")


def test_open_on_a_poison_from_exits_1_with_one_line_not_3(pki: TestPki, tmp_path: Path) -> None:
    message = tmp_path / "poison.eml"
    message.write_bytes(forged.poison_from_signed(pki))
    proc = subprocess.run(
        [sys.executable, "-m", "smime_companion", "open", str(message), "--anchor",
         str(pki.root), "--json"],
        capture_output=True, timeout=60, env=minimal_env(),
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr == b""
    assert json.loads(proc.stdout)["signature"] == "email-mismatch"

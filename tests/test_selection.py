"""Choosing the certificate to encrypt to (``core.selection``): pure rules over store records."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from typing import TYPE_CHECKING

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from smime_companion.core.cert_vocabulary import CertRecord, Revocation, Trust
from smime_companion.core.certs import fingerprint_sha256
from smime_companion.core.selection import (
    NoCertificate,
    Selected,
    chain_to_anchor,
    effective_trust,
    select_certificate,
    tofu_applies,
)
from tests.conftest import load_cert
from tests.test_certstore import issue_certificate

if TYPE_CHECKING:
    from smime_companion.testing.pki import TestPki

ADDRESS = "sam@example.org"


def _record(
    cert: x509.Certificate,
    now: dt.datetime,
    *,
    trust: Trust = Trust.ANCHOR,
    seen: int = 0,
    capabilities: tuple[str, ...] = (),
    preferred: str | None = None,
    revocation: Revocation = Revocation.GOOD,
) -> CertRecord:
    when = now + dt.timedelta(minutes=seen)
    return CertRecord(
        address=ADDRESS,
        fingerprint=fingerprint_sha256(cert),
        certificate=cert,
        trust=trust,
        first_seen=when,
        last_seen=when,
        source="<m@example.org>",
        capabilities=capabilities,
        preferred=preferred,
        revocation=revocation,
    )


def _chosen(selection: object) -> str:
    assert isinstance(selection, Selected), selection
    return selection.record.fingerprint


def _reason(selection: object) -> str:
    assert isinstance(selection, NoCertificate), selection
    return selection.reason


def test_an_address_without_certificates_gets_a_reason_not_an_exception(now: dt.datetime) -> None:
    assert _reason(select_certificate([], ADDRESS, now)) == f"no certificate known for {ADDRESS}"


def test_an_expired_certificate_is_not_selected_and_shows_as_expired(
    pki: TestPki, now: dt.datetime
) -> None:
    cert, _ = issue_certificate(pki, ADDRESS, now, days=(-400, -1))
    record = _record(cert, now)
    assert "expired on" in _reason(select_certificate([record], ADDRESS, now))
    assert effective_trust(record, now) == Trust.EXPIRED


def test_an_expired_untrusted_certificate_is_called_expired_not_advised_to_be_trusted(
    pki: TestPki, now: dt.datetime
) -> None:
    cert, _ = issue_certificate(pki, ADDRESS, now, days=(-400, -1))
    record = replace(_record(cert, now), trust=Trust.UNTRUSTED)
    reason = _reason(select_certificate([record], ADDRESS, now))
    assert "expired on" in reason and "new certificate" in reason
    assert "certs trust" not in reason


def test_a_revoked_certificate_is_never_selected_whatever_the_policy(
    pki: TestPki, now: dt.datetime
) -> None:
    cert, _ = issue_certificate(pki, ADDRESS, now)
    record = _record(cert, now, revocation=Revocation.REVOKED)
    for policy in ("off", "soft", "hard"):
        assert _reason(select_certificate([record], ADDRESS, now, policy)).endswith("revoked")
    assert effective_trust(record, now) == Trust.REVOKED


@pytest.mark.parametrize("ec_key", [False, True], ids=["rsa", "ec"])
def test_a_signing_only_certificate_is_not_selected(
    pki: TestPki, now: dt.datetime, ec_key: bool
) -> None:
    key = ec.generate_private_key(ec.SECP256R1()) if ec_key else None
    cert, _ = issue_certificate(pki, ADDRESS, now, usage="sign", key=key)
    assert "signing only" in _reason(select_certificate([_record(cert, now)], ADDRESS, now))


def test_the_newest_of_several_valid_certificates_is_selected(
    pki: TestPki, now: dt.datetime
) -> None:
    older, _ = issue_certificate(pki, ADDRESS, now, days=(-30, 300))
    newer, _ = issue_certificate(pki, ADDRESS, now, days=(-2, 300))
    records = [_record(newer, now, seen=0), _record(older, now, seen=10)]
    assert _chosen(select_certificate(records, ADDRESS, now)) == fingerprint_sha256(newer)


def test_the_encryption_key_preference_of_the_latest_signature_wins_over_newest(
    pki: TestPki, now: dt.datetime
) -> None:
    signing, _ = issue_certificate(pki, ADDRESS, now, usage="sign", days=(-1, 300))
    encryption, _ = issue_certificate(pki, ADDRESS, now, usage="encrypt", days=(-40, 300))
    newer, _ = issue_certificate(pki, ADDRESS, now, days=(-1, 300))
    records = [
        _record(newer, now, seen=1, capabilities=("aes-128-cbc",)),
        _record(encryption, now, seen=2),
        _record(
            signing, now, seen=3, capabilities=("aes-256-gcm",),
            preferred=fingerprint_sha256(encryption),
        ),
    ]  # fmt: skip
    selection = select_certificate(records, ADDRESS, now)
    assert _chosen(selection) == fingerprint_sha256(encryption)
    # The capabilities come with the signature that named the encryption certificate.
    assert isinstance(selection, Selected) and selection.capabilities == ("aes-256-gcm",)
    assert selection.recipient.certificate == encryption


def test_a_preference_for_an_unusable_certificate_falls_back_to_the_newest_usable(
    pki: TestPki, now: dt.datetime
) -> None:
    expired, _ = issue_certificate(pki, ADDRESS, now, days=(-400, -1))
    good, _ = issue_certificate(pki, ADDRESS, now)
    records = [_record(good, now, preferred=fingerprint_sha256(expired)), _record(expired, now)]
    assert _chosen(select_certificate(records, ADDRESS, now)) == fingerprint_sha256(good)


@pytest.mark.parametrize(
    "trust, reason",
    [(Trust.UNTRUSTED, "not trusted"), (Trust.KEY_CHANGED, "key changed: confirm it")],
)
def test_untrusted_and_key_changed_certificates_are_not_selected(
    pki: TestPki, now: dt.datetime, trust: Trust, reason: str
) -> None:
    cert, _ = issue_certificate(pki, ADDRESS, now)
    assert reason in _reason(select_certificate([_record(cert, now, trust=trust)], ADDRESS, now))


@pytest.mark.parametrize("status", [Revocation.UNAVAILABLE, Revocation.UNKNOWN])
def test_an_unestablished_revocation_status_passes_soft_with_a_warning_and_blocks_hard(
    pki: TestPki, now: dt.datetime, status: Revocation
) -> None:
    cert, _ = issue_certificate(pki, ADDRESS, now)
    records = [_record(cert, now, revocation=status)]
    soft = select_certificate(records, ADDRESS, now, "soft")
    assert isinstance(soft, Selected) and "revocation = soft" in soft.warnings[0]
    assert f"revocation status {status}" in _reason(
        select_certificate(records, ADDRESS, now, "hard")
    )
    assert select_certificate(records, ADDRESS, now, "off") == Selected(records[0], ())


def test_a_certificate_seen_without_capabilities_is_selected_with_none(
    pki: TestPki, now: dt.datetime
) -> None:
    alice = load_cert(pki.cert("alice"))
    selection = select_certificate([_record(alice, now)], ADDRESS, now)
    assert isinstance(selection, Selected) and selection.capabilities == ()


@pytest.mark.parametrize(
    "address, patterns, covered",
    [
        ("Bob@Example.net", ["example.net"], True),
        ("bob@mail.example.net", ["example.net"], True),
        ("bob@badexample.net", ["example.net"], False),
        ("bob@example.net", ["bob@example.net"], True),
        ("eve@example.net", ["bob@example.net"], False),
        ("anyone@anywhere.test", ["*"], True),
        ("anyone@anywhere.test", [], False),
    ],
)
def test_tofu_patterns_cover_addresses_domains_subdomains_or_everything(
    address: str, patterns: list[str], covered: bool
) -> None:
    assert tofu_applies(address, patterns) is covered


def test_chain_to_anchor_finds_the_path_through_an_intermediate_and_refuses_a_rogue(
    pki: TestPki,
) -> None:
    root, intermediate = load_cert(pki.root), load_cert(pki.intermediate)
    alice, rogue = load_cert(pki.cert("alice")), load_cert(pki.cert("rogue"))
    assert chain_to_anchor(alice, [intermediate], [root]) == (alice, intermediate, root)
    assert chain_to_anchor(alice, [], [root]) is None
    assert chain_to_anchor(rogue, [intermediate, load_cert(pki.rogue_root)], [root]) is None

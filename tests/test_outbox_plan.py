"""The outbox plan (pure): only the user's own drafts are sealed, recipients are matched to
certificates, and the ``missing_cert`` policy decides what happens to those without one."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from smime_companion import keyfiles
from smime_companion.core.model import Identity
from smime_companion.core.seal import seal
from smime_companion.outbox import notices
from smime_companion.outbox.plan import (
    CertificateList,
    Held,
    MissingCertPolicy,
    Rejected,
    SealPlan,
    keep_recipients,
    plan_draft,
)
from smime_companion.store.certstore import CertStore, Sighting
from smime_companion.testing.pki import TestPki
from tests.outbox_world import draft, open_as


def _identity(pki: TestPki, user: str) -> Identity:
    return keyfiles.load_pkcs12(pki.p12(user), b"test")


def _certs(pki: TestPki, *users: str) -> CertificateList:
    return CertificateList([keyfiles.load_certificates(pki.cert(u))[0] for u in users])


def _plan(
    pki: TestPki,
    raw: bytes,
    now: dt.datetime,
    *,
    certs: tuple[str, ...] = ("bob", "carol"),
    policy: MissingCertPolicy = MissingCertPolicy.HOLD,
    max_bytes: int = 1024 * 1024,
) -> SealPlan | Held | Rejected:
    return plan_draft(
        raw,
        identities=[_identity(pki, "alice")],
        lookup=_certs(pki, *certs),
        at=now,
        policy=policy,
        max_bytes=max_bytes,
    )


def test_a_draft_from_the_users_identity_is_planned_for_every_recipient(
    pki: TestPki, now: dt.datetime
) -> None:
    plan = _plan(pki, draft(pki, "p", to=("bob",), cc=("carol",)), now)
    assert isinstance(plan, SealPlan)
    assert plan.signer.certificate == _identity(pki, "alice").certificate
    assert sorted(r.address for r in plan.recipients) == ["bob@example.org", "carol@example.org"]
    assert plan.options.sign and plan.options.encrypt and plan.missing == ()


def test_the_planned_seal_opens_for_each_recipient(pki: TestPki, now: dt.datetime) -> None:
    plan = _plan(pki, draft(pki, "opens", to=("bob",)), now)
    assert isinstance(plan, SealPlan)
    result = seal(plan.draft, signer=plan.signer, recipients=plan.recipients, at=now)
    assert b"Secret body opens" in open_as(pki, result.main.message, "bob")


def test_the_senders_own_address_among_recipients_needs_no_lookup(
    pki: TestPki, now: dt.datetime
) -> None:
    plan = _plan(pki, draft(pki, "self", to=("alice", "bob")), now)
    assert isinstance(plan, SealPlan)
    assert [r.address for r in plan.recipients] == ["bob@example.org"]


@pytest.mark.parametrize(
    ("sender", "reason"),
    [
        ("mallory@example.net", "mallory@example.net is not one of your S/MIME identities"),
        ("bob", "bob@example.org is not one of your S/MIME identities"),
    ],
)
def test_a_draft_from_any_other_address_is_refused(
    pki: TestPki, now: dt.datetime, sender: str, reason: str
) -> None:
    plan = _plan(pki, draft(pki, "x", sender=sender), now)
    assert isinstance(plan, Rejected)
    assert reason in plan.reason


def test_a_draft_from_an_expired_identity_is_refused(pki: TestPki, now: dt.datetime) -> None:
    plan = plan_draft(
        draft(pki, "old", sender="expired"),
        identities=[_identity(pki, "expired")],
        lookup=_certs(pki, "bob"),
        at=now,
    )
    assert isinstance(plan, Rejected) and "not one of your S/MIME identities" in plan.reason


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"To: bob@example.org\r\nSubject: x\r\n\r\nbody\r\n", "no From address"),
        (
            b"From: alice@example.org, carol@example.org\r\nTo: bob@example.org\r\n\r\nx\r\n",
            "holds 2 addresses",
        ),
        (b"From: alice@example.org\r\nSubject: nobody\r\n\r\nx\r\n", "no To, Cc or Bcc"),
        (b"From: alice@example.org\r\nnot a header line\r\n\r\nx\r\n", "cannot be read"),
    ],
)
def test_drafts_that_cannot_be_processed_are_refused_with_the_reason(
    pki: TestPki, now: dt.datetime, raw: bytes, reason: str
) -> None:
    plan = _plan(pki, raw, now)
    assert isinstance(plan, Rejected) and reason in plan.reason


def test_a_draft_over_the_size_limit_is_refused(pki: TestPki, now: dt.datetime) -> None:
    plan = _plan(pki, draft(pki, "big") + b"x" * 2048, now, max_bytes=1024)
    assert isinstance(plan, Rejected) and "larger than the limit of 1024" in plan.reason


def test_hold_blocks_and_names_each_recipient_without_a_usable_certificate(
    pki: TestPki, now: dt.datetime
) -> None:
    raw = draft(pki, "h", to=("bob", "expired", "noeku"), to_addresses=("nobody@example.com",))
    plan = _plan(pki, raw, now, certs=("bob", "expired", "noeku"))
    assert isinstance(plan, Held)
    reasons = {m.address: m.reason for m in plan.missing}
    assert sorted(reasons) == ["expired@example.org", "nobody@example.com", "noeku@example.org"]
    assert "expired" in reasons["expired@example.org"]
    assert "not for email protection" in reasons["noeku@example.org"]
    assert "no certificate known" in reasons["nobody@example.com"]


def test_sign_only_signs_without_encrypting_and_says_why(pki: TestPki, now: dt.datetime) -> None:
    raw = draft(pki, "s", to=("bob",), to_addresses=("nobody@example.com",))
    plan = _plan(pki, raw, now, policy=MissingCertPolicy.SIGN_ONLY)
    assert isinstance(plan, SealPlan)
    assert plan.options.sign and not plan.options.encrypt
    notice = notices.sealed_without_some(1, plan)
    assert notice is not None and "nobody@example.com" in notice[1]
    assert "signed but NOT encrypted" in notice[1]
    assert plan.draft == raw


def test_split_addresses_the_sealed_draft_to_those_with_certificates_and_holds_the_rest(
    pki: TestPki, now: dt.datetime
) -> None:
    raw = draft(pki, "sp", to=("bob",), cc=("carol",), to_addresses=("nobody@example.com",))
    plan = _plan(pki, raw, now, policy=MissingCertPolicy.SPLIT)
    assert isinstance(plan, SealPlan) and plan.held_draft is not None
    sent_header = plan.draft.split(b"\r\n\r\n", 1)[0]
    held_header = plan.held_draft.split(b"\r\n\r\n", 1)[0]
    assert b"To: bob@example.org\r\n" in sent_header and b"nobody" not in sent_header
    assert b"Cc: carol@example.org" in sent_header
    assert b"To: nobody@example.com\r\n" in held_header and b"Cc:" not in held_header
    # Everything else is kept byte for byte.
    assert plan.draft.split(b"\r\n\r\n", 1)[1] == raw.split(b"\r\n\r\n", 1)[1]
    assert b"Subject: Outbox test sp" in held_header


def test_split_with_nobody_to_encrypt_to_blocks(pki: TestPki, now: dt.datetime) -> None:
    raw = draft(pki, "none", to=(), to_addresses=("nobody@example.com",))
    plan = _plan(pki, raw, now, policy=MissingCertPolicy.SPLIT)
    assert isinstance(plan, Held)


def test_keeping_recipients_unfolds_fields_and_keeps_display_names() -> None:
    raw = (
        b"From: alice@example.org\r\n"
        b"To: =?utf-8?q?J=C3=BCrgen?= <juergen@example.org>,\r\n"
        b" Bob <bob@example.org>, carol@example.org\r\n"
        b"Subject: s\r\n\r\nbody\r\n"
    )
    kept = keep_recipients(raw, {"juergen@example.org", "carol@example.org"})
    header = kept.split(b"\r\n\r\n", 1)[0].decode()
    assert "bob@example.org" not in header
    assert "=?utf-8?q?J=C3=BCrgen?= <juergen@example.org>" in header
    assert "carol@example.org" in header
    assert kept.endswith(b"\r\n\r\nbody\r\n")


def test_the_certificate_store_is_a_lookup_and_its_refusals_reach_the_plan(
    pki: TestPki, now: dt.datetime, tmp_path: Path
) -> None:
    with CertStore.open(tmp_path, None) as store:
        bob = keyfiles.load_certificates(pki.cert("bob"))[0]
        rogue = keyfiles.load_certificates(pki.cert("rogue"))[0]
        store.record(Sighting(bob, "import", now, anchored=True))
        store.record(Sighting(rogue, "<m@x>", now, anchored=False))
        raw = draft(pki, "cs", to=("bob", "rogue"))
        plan = plan_draft(raw, identities=[_identity(pki, "alice")], lookup=store, at=now)
    assert isinstance(plan, Held)
    [missing] = plan.missing
    assert missing.address == pki.email("rogue") and "not trusted" in missing.reason

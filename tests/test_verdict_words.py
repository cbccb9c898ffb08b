"""The reader's words for the core's verdicts: every status and every warning the core can give
has plain words (reader/verdict_words.py); an unknown one would be shown only by its name."""

from __future__ import annotations

import time

import pytest

from smime_companion.core import verdicts
from smime_companion.core.verdicts import Decryption, SignatureStatus
from smime_companion.reader import verdict_words
from smime_companion.reader.verdict_words import list_badges

CORE_WARNINGS = sorted(value for name, value in vars(verdicts).items() if name.startswith("WARN_"))


@pytest.mark.parametrize("warning", CORE_WARNINGS)
def test_every_warning_the_core_gives_has_words(warning: str) -> None:
    (badge,) = list_badges("none", "none", [warning])
    assert badge.text != warning and badge.title != warning


@pytest.mark.parametrize("status", [s for s in SignatureStatus if s != SignatureStatus.NONE])
def test_every_signature_status_has_words(status: SignatureStatus) -> None:
    assert status.value in verdict_words._SIGNATURE


@pytest.mark.parametrize("outcome", [d for d in Decryption if d != Decryption.NONE])
def test_every_decryption_outcome_has_words(outcome: Decryption) -> None:
    assert outcome.value in verdict_words._DECRYPTION


def test_a_weak_signature_is_one_badge_and_an_archive_one_still_warns() -> None:
    weak = list_badges("none", "weak-algorithm", ["weak-algorithm"])
    assert [b.text for b in weak] == ["weak signature"]
    accepted = list_badges("none", "valid", ["weak-algorithm"])
    assert [b.level for b in accepted] == ["good", "warn"]


def test_the_signing_time_is_shown_in_the_time_zone_of_the_machine(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TZ", "CET-1CEST,M3.5.0,M10.5.0/3")
    time.tzset()
    try:
        report = {
            "decryption": "none",
            "signature": "valid",
            "signers": [{"status": "valid", "address": "alice@example.org",
                         "signing_time": "2026-12-07T01:20:45+00:00"}],
        }  # fmt: skip
        [line] = [v for v in verdict_words.verdict_lines(report) if "alice" in v.title]
        assert "Signed at 7 Dec 2026, 02:20 CET (as the signer's clock said)." in line.detail
        report["signers"][0]["signing_time"] = "not a time"
        [line] = [v for v in verdict_words.verdict_lines(report) if "alice" in v.title]
        assert "Signed at not a time " in line.detail  # shown as it came
    finally:
        monkeypatch.undo()
        time.tzset()

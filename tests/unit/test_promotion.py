"""Champion/challenger decision rules."""

from __future__ import annotations

from hybridops.tasks.behaviour.promotion import decide

CHAMPION = {"json_format": 0.1, "sources_valid": 0.2, "max_length": 1.0, "banned_phrases": 1.0}


def test_promotes_when_drifted_checks_improve_and_others_hold() -> None:
    challenger = {"json_format": 0.95, "sources_valid": 0.9, "max_length": 0.98, "banned_phrases": 1.0}
    decision = decide(challenger, CHAMPION, ["json_format", "sources_valid"], tolerance=0.05)
    assert decision.promote
    assert "json_format 0.10->0.95" in decision.reason
    verdicts = {c.check: c.verdict for c in decision.checks}
    assert verdicts == {"json_format": "improved", "sources_valid": "improved",
                        "max_length": "within_tolerance", "banned_phrases": "same"}


def test_rejects_when_another_check_drops_beyond_tolerance() -> None:
    challenger = {"json_format": 0.95, "sources_valid": 0.9, "max_length": 0.8, "banned_phrases": 1.0}
    decision = decide(challenger, CHAMPION, ["json_format"], tolerance=0.05)
    assert not decision.promote
    assert "max_length 1.00->0.80" in decision.reason


def test_rejects_when_a_drifted_check_gets_worse_even_if_another_improves() -> None:
    challenger = {"json_format": 0.95, "sources_valid": 0.18, "max_length": 1.0, "banned_phrases": 1.0}
    decision = decide(challenger, CHAMPION, ["json_format", "sources_valid"], tolerance=0.05)
    assert not decision.promote
    assert "sources_valid" in decision.reason


def test_rejects_a_challenger_that_is_merely_equal() -> None:
    decision = decide(dict(CHAMPION), CHAMPION, ["json_format"], tolerance=0.05)
    assert not decision.promote
    assert "not better" in decision.reason


def test_without_drift_any_real_improvement_counts_and_tolerance_applies_everywhere() -> None:
    challenger = {"json_format": 0.08, "sources_valid": 0.5, "max_length": 1.0, "banned_phrases": 1.0}
    decision = decide(challenger, CHAMPION, [], tolerance=0.05)
    assert decision.promote
    assert decision.targets == sorted(CHAMPION)


def test_unmeasured_drifted_check_or_empty_scores_reject() -> None:
    assert not decide({"json_format": 1.0}, CHAMPION, ["grounded"], tolerance=0.05).promote
    assert not decide({}, CHAMPION, ["json_format"], tolerance=0.05).promote


def test_new_checks_do_not_block() -> None:
    challenger = dict(CHAMPION, json_format=0.9, grounded=0.0)
    decision = decide(challenger, CHAMPION, ["json_format"], tolerance=0.05)
    assert decision.promote
    assert {c.check: c.verdict for c in decision.checks}["grounded"] == "new"

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


# --- the transfer gate: out-of-domain rates (a suite never trained on) may not drop beyond the tolerance -----

GOOD = {"json_format": 0.95, "sources_valid": 0.9, "max_length": 1.0, "banned_phrases": 1.0}
TRANSFER_CHAMPION = {"json_format": 0.2, "cites_gold": 0.6, "refuses_without_context": 1.0}


def test_a_challenger_that_transfers_worse_is_not_promoted() -> None:
    transfer = dict(TRANSFER_CHAMPION, json_format=0.9, cites_gold=0.3)
    decision = decide(GOOD, CHAMPION, ["json_format"], tolerance=0.05,
                      transfer_challenger=transfer, transfer_champion=TRANSFER_CHAMPION)
    assert not decision.promote
    assert decision.reason == "challenger transfers worse on cites_gold 0.60->0.30 (out-of-domain)"
    assert {c.check: c.verdict for c in decision.transfer_checks} == {
        "cites_gold": "worse", "json_format": "improved", "refuses_without_context": "same"}
    assert not any(c.target for c in decision.transfer_checks)  # transfer checks guard, they are never targets
    assert [c.check for c in decision.checks] == sorted(GOOD)  # the in-domain evidence is unchanged


def test_a_transfer_drop_within_tolerance_passes_even_on_a_drifted_check() -> None:
    transfer = dict(TRANSFER_CHAMPION, json_format=0.16, cites_gold=0.56)
    decision = decide(GOOD, CHAMPION, ["json_format"], tolerance=0.05,
                      transfer_challenger=transfer, transfer_champion=TRANSFER_CHAMPION)
    assert decision.promote, decision.reason
    assert "transfer suite" in decision.reason
    assert {c.check: c.verdict for c in decision.transfer_checks}["cites_gold"] == "within_tolerance"


def test_without_transfer_rates_the_decision_is_todays() -> None:
    today = decide(GOOD, CHAMPION, ["json_format"], tolerance=0.05)
    for empty in (None, {}):
        same = decide(GOOD, CHAMPION, ["json_format"], tolerance=0.05,
                      transfer_challenger=empty, transfer_champion=empty)
        assert same == today and same.transfer_checks == []


def test_transfer_checks_missing_on_either_side_are_new_and_do_not_block() -> None:
    decision = decide(GOOD, CHAMPION, ["json_format"], tolerance=0.05,
                      transfer_challenger={"grounded": 0.0}, transfer_champion={"cites_gold": 1.0})
    assert decision.promote, decision.reason
    assert [(c.check, c.verdict, c.champion) for c in decision.transfer_checks] == [("grounded", "new", None)]


def test_in_domain_and_transfer_failures_are_both_named() -> None:
    decision = decide(dict(CHAMPION), CHAMPION, ["json_format"], tolerance=0.05,
                      transfer_challenger={"json_format": 0.0}, transfer_champion={"json_format": 0.2})
    assert not decision.promote
    assert decision.reason.startswith("challenger is not better")
    assert decision.reason.endswith("; challenger transfers worse on json_format 0.20->0.00 (out-of-domain)")


def test_out_of_domain_facts_are_shown_but_only_gated_checks_block() -> None:
    challenger = {"json_format": 1.0, "sources_valid": 1.0}
    champion = {"json_format": 0.0, "sources_valid": 0.0}
    transfer_new = {"json_format": 1.0, "answers_when_supported": 1.0, "expected_keywords": 0.33}
    transfer_old = {"json_format": 0.0, "answers_when_supported": 1.0, "expected_keywords": 0.67}
    gate = ["json_format", "answers_when_supported"]
    decision = decide(challenger, champion, ["json_format"], 0.05, transfer_new, transfer_old, transfer_gate=gate)
    assert decision.promote, decision.reason
    facts = next(c for c in decision.transfer_checks if c.check == "expected_keywords")
    assert facts.verdict == "worse" and not facts.gated  # visible evidence, not a blocker
    refusing = {**transfer_new, "answers_when_supported": 0.0}  # refuses what the context answers
    blocked = decide(challenger, champion, ["json_format"], 0.05, refusing, transfer_old, transfer_gate=gate)
    assert not blocked.promote and "answers_when_supported 1.00->0.00 (out-of-domain)" in blocked.reason


def test_one_flipped_out_of_domain_case_is_noise_two_are_a_worse_adapter() -> None:
    challenger, champion = {"json_format": 1.0}, {"json_format": 0.0}
    old = {"cites_gold": 1.0}
    one = decide(challenger, champion, ["json_format"], 0.05, {"cites_gold": 15 / 16}, old, transfer_n={"cites_gold": 16})
    assert one.promote, one.reason
    two = decide(challenger, champion, ["json_format"], 0.05, {"cites_gold": 14 / 16}, old, transfer_n={"cites_gold": 16})
    assert not two.promote and "cites_gold" in two.reason

"""Champion/challenger decision rules on paired per-case results."""

from __future__ import annotations

from collections.abc import Collection

import pytest

from hybridops.tasks.behaviour.promotion import RegressionCase, decide
from hybridops.tasks.behaviour.significance import mcnemar_better
from hybridops.tasks.behaviour.suite import CaseResult
from tests.unit.test_behaviour_stats import result

N = 20


def model(n: int = N, prefix: str = "c", **passing: int | Collection[int]) -> list[CaseResult]:
    """n cases c0..c{n-1}; check=k: the first k cases pass it, check={i, ...}: exactly those pass."""
    def passes(spec: int | Collection[int], i: int) -> bool:
        return i < spec if isinstance(spec, int) else i in spec

    return [result(f"{prefix}{i}", {check: passes(spec, i) for check, spec in passing.items()}) for i in range(n)]


CHAMPION = dict(json_format=2, sources_valid=4, max_length=20, banned_phrases=20)  # 0.10, 0.20, 1.00, 1.00
GOOD = dict(json_format=19, sources_valid=18, max_length=20, banned_phrases=20)


def test_promotes_when_drifted_checks_improve_significantly_and_others_hold() -> None:
    challenger = dict(GOOD, max_length=19)
    decision = decide(model(**challenger), model(**CHAMPION), ["json_format", "sources_valid"], tolerance=0.05)
    assert decision.promote, decision.reason
    assert "json_format 0.10->0.95 (17 fixed, 0 broken, p_holm=1.5e-05" in decision.reason
    verdicts = {c.check: c.verdict for c in decision.checks}
    assert verdicts == {"banned_phrases": "same", "json_format": "improved", "max_length": "within_tolerance",
                        "sources_valid": "improved"}
    row = next(c for c in decision.checks if c.check == "json_format")
    assert (row.b, row.c, row.n, row.broken) == (0, 17, 20, [])
    assert row.fixed == [f"c{i}" for i in range(2, 19)]
    assert row.p_better == mcnemar_better(0, 17) and row.p_better_holm == pytest.approx(2 * 0.5 ** 17)
    assert next(c for c in decision.checks if c.check == "max_length").p_better_holm is None  # not a target
    assert decision.mdd.k == 6 and decision.mdd.n == 20  # two targets: 0.5**6 < 0.05/2


def test_rejects_when_another_check_drops_beyond_tolerance() -> None:
    challenger = dict(GOOD, max_length=16)  # 4 broken: not significant (p=1/16), but beyond the tolerance
    decision = decide(model(**challenger), model(**CHAMPION), ["json_format"], tolerance=0.05)
    assert not decision.promote
    assert "challenger is worse on max_length 1.00->0.80 (0 fixed, 4 broken" in decision.reason
    assert "broken: c16, c17, c18, c19" in decision.reason


def test_rejects_when_a_drifted_check_gets_worse_even_if_another_improves() -> None:
    challenger = dict(GOOD, sources_valid=3)
    decision = decide(model(**challenger), model(**CHAMPION), ["json_format", "sources_valid"], tolerance=0.05)
    assert not decision.promote
    assert "sources_valid 0.20->0.15" in decision.reason


def test_a_significant_drop_on_one_check_blocks_despite_gains_elsewhere() -> None:
    challenger = dict(CHAMPION, json_format=20, sources_valid=20, max_length=10)
    decision = decide(model(**challenger), model(**CHAMPION), [], tolerance=1.0)  # the point guard allows anything
    assert not decision.promote
    assert decision.reason.startswith("challenger is significantly worse on max_length 1.00->0.50 (0 fixed, "
                                      "10 broken, p_holm=0.0039")
    assert {c.check: c.verdict for c in decision.checks}["max_length"] == "worse"
    assert {c.check: c.verdict for c in decision.checks}["json_format"] == "improved"


def test_a_three_case_gain_on_21_cases_is_not_significant_and_not_promoted() -> None:
    champion = model(21, json_format=10, max_length=21)
    challenger = model(21, json_format=13, max_length=21)  # 0.48 -> 0.62: a rate rule would have promoted it
    decision = decide(challenger, champion, ["json_format"], tolerance=0.05)
    assert not decision.promote
    assert decision.reason.startswith("challenger is not significantly better than the champion on the drifted "
                                      "checks (json_format 0.48->0.62 (3 fixed, 0 broken, p_holm=0.12")
    assert "MDD: 5 cases = 0.24 of the suite" in decision.reason
    assert {c.check: c.verdict for c in decision.checks}["json_format"] == "higher"


def test_a_huge_gain_on_21_cases_is_promoted_with_its_evidence() -> None:
    checks = ["json_format", "sources_valid", "cites_gold", "grounded", "answers_when_supported",
              "expected_keywords", "max_length", "banned_phrases"]
    champion = model(21, **{name: (0 if name == "json_format" else 21) for name in checks})
    challenger = model(21, **{name: 21 for name in checks})
    decision = decide(challenger, champion, [], tolerance=0.05)
    assert decision.promote, decision.reason
    assert decision.reason.startswith("challenger improves json_format 0.00->1.00 (21 fixed, 0 broken, "
                                      "p_holm=3.8e-06; fixed: c0, c1, c2, c3 +17 more)")
    assert (decision.mdd.k, decision.mdd.tests) == (8, 8)


def test_rejects_a_challenger_that_is_merely_equal() -> None:
    decision = decide(model(**CHAMPION), model(**CHAMPION), ["json_format"], tolerance=0.05)
    assert not decision.promote
    assert "not significantly better" in decision.reason


def test_swapped_cases_are_no_gain() -> None:
    champion = model(json_format=range(0, 10))
    challenger = model(json_format=range(5, 18))  # 0.50 -> 0.65, but 5 broken and 8 fixed
    decision = decide(challenger, champion, ["json_format"], tolerance=0.5)
    [row] = decision.checks
    assert (row.b, row.c, row.broken) == (5, 8, ["c0", "c1", "c2", "c3", "c4"])
    assert not decision.promote and row.p_better == pytest.approx(mcnemar_better(5, 8))


def test_without_drift_a_significant_improvement_counts_and_tolerance_applies_everywhere() -> None:
    challenger = dict(CHAMPION, json_format=1, sources_valid=12)  # json_format -0.05: within the tolerance
    decision = decide(model(**challenger), model(**CHAMPION), [], tolerance=0.05)
    assert decision.promote, decision.reason
    assert decision.targets == sorted(CHAMPION)
    weaker = dict(CHAMPION, json_format=1, sources_valid=10)  # 6 fixed: 4 x 1/64 under Holm is not enough
    assert not decide(model(**weaker), model(**CHAMPION), [], tolerance=0.05).promote


def test_unmeasured_drifted_check_or_empty_results_reject() -> None:
    assert not decide(model(json_format=20), model(**CHAMPION), ["grounded"], tolerance=0.05).promote
    assert not decide([], model(**CHAMPION), ["json_format"], tolerance=0.05).promote
    unpaired = decide(model(json_format=20), [], ["json_format"], tolerance=0.05)
    assert not unpaired.promote and unpaired.checks[0].verdict == "new"


def test_new_checks_do_not_block() -> None:
    challenger = [r.model_copy(update={"checks": {**r.checks, **model(1, grounded=0)[0].checks}})
                  for r in model(**GOOD)]
    decision = decide(challenger, model(**CHAMPION), ["json_format"], tolerance=0.05)
    assert decision.promote, decision.reason
    grounded = next(c for c in decision.checks if c.check == "grounded")
    assert grounded.verdict == "new" and grounded.n is None and grounded.p_worse_holm is None


# --- the regression set: what earlier promotions and humans fixed stays fixed ---------------------------------

def test_a_challenger_breaking_a_fixed_case_is_not_promoted() -> None:
    champion = model(json_format=20, sources_valid=4)
    challenger = model(json_format=set(range(20)) - {3}, sources_valid=20)  # one json_format case lost: tolerated
    fixed = [RegressionCase(case_id="c3", checks=["json_format"], origin="fixed")]
    assert decide(challenger, champion, ["sources_valid"], 0.05).promote
    decision = decide(challenger, champion, ["sources_valid"], 0.05, regression=fixed)
    assert not decision.promote
    assert decision.reason == ("regression set: challenger fails 1 of 1 regression cases, champion 0; broken: c3 "
                               "(json_format)")
    assert decision.regression.broken == ["c3"] and decision.regression.origins == {"fixed": 1}


def test_human_corrections_are_judged_from_their_own_run() -> None:
    champion, challenger = model(json_format=2), model(json_format=20)
    corrections = [RegressionCase(case_id="correction:1", checks=["json_format", "grounded"], origin="correction"),
                   RegressionCase(case_id="correction:gone", checks=["json_format"], origin="correction")]
    kept = [result("correction:1", {"json_format": True, "grounded": True})]
    lost = [result("correction:1", {"json_format": True, "grounded": False})]
    broken = decide(challenger, champion, ["json_format"], 0.05, regression=corrections,
                    regression_challenger=lost, regression_champion=kept)
    assert not broken.promote and broken.regression.challenger_failed == {"correction:1": ["grounded"]}
    assert broken.regression.not_judged == ["correction:gone"]  # no result: not judged
    both = decide(challenger, champion, ["json_format"], 0.05, regression=corrections,
                  regression_challenger=lost, regression_champion=lost)  # the champion fails it too: no regression
    assert both.promote, both.reason
    assert "regression set: challenger fails 1 of 1 regression cases, champion 1" in both.reason


# --- the transfer gate: out-of-domain results (a suite never trained on) may not drop beyond the tolerance -----

TRANSFER_CHAMPION = dict(json_format=4, cites_gold=12, refuses_without_context=20)  # 0.20, 0.60, 1.00


def test_a_challenger_that_transfers_worse_is_not_promoted() -> None:
    transfer = dict(TRANSFER_CHAMPION, json_format=18, cites_gold=6)
    decision = decide(model(**GOOD), model(**CHAMPION), ["json_format"], tolerance=0.05,
                      transfer_challenger=model(prefix="t", **transfer),
                      transfer_champion=model(prefix="t", **TRANSFER_CHAMPION))
    assert not decision.promote
    assert decision.reason == ("challenger transfers worse on cites_gold 0.60->0.30 (0 fixed, 6 broken, p=0.016; "
                               "broken: t6, t7, t8, t9 +2 more) (out-of-domain)")
    assert {c.check: c.verdict for c in decision.transfer_checks} == {
        "cites_gold": "worse", "json_format": "higher", "refuses_without_context": "same"}
    assert not any(c.target for c in decision.transfer_checks)  # transfer checks guard, they are never targets
    cites = next(c for c in decision.transfer_checks if c.check == "cites_gold")
    assert (cites.b, cites.c, cites.n) == (6, 0, 20) and cites.p_worse_holm is not None  # shown with their p
    assert [c.check for c in decision.checks] == sorted(GOOD)  # the in-domain evidence is unchanged


def test_a_transfer_drop_within_tolerance_passes_even_on_a_drifted_check() -> None:
    transfer = dict(TRANSFER_CHAMPION, json_format=3, cites_gold=11)
    decision = decide(model(**GOOD), model(**CHAMPION), ["json_format"], tolerance=0.05,
                      transfer_challenger=model(prefix="t", **transfer),
                      transfer_champion=model(prefix="t", **TRANSFER_CHAMPION))
    assert decision.promote, decision.reason
    assert "transfer suite" in decision.reason
    assert {c.check: c.verdict for c in decision.transfer_checks}["cites_gold"] == "within_tolerance"


def test_without_transfer_results_the_decision_is_the_in_domain_one() -> None:
    alone = decide(model(**GOOD), model(**CHAMPION), ["json_format"], tolerance=0.05)
    for empty in (None, []):
        same = decide(model(**GOOD), model(**CHAMPION), ["json_format"], tolerance=0.05,
                      transfer_challenger=empty, transfer_champion=empty)
        assert same == alone and same.transfer_checks == []


def test_transfer_checks_missing_on_either_side_are_new_and_do_not_block() -> None:
    decision = decide(model(**GOOD), model(**CHAMPION), ["json_format"], tolerance=0.05,
                      transfer_challenger=model(prefix="t", grounded=0),
                      transfer_champion=model(prefix="t", cites_gold=20))
    assert decision.promote, decision.reason
    assert [(c.check, c.verdict, c.champion) for c in decision.transfer_checks] == [("grounded", "new", None)]


def test_in_domain_and_transfer_failures_are_both_named() -> None:
    decision = decide(model(**CHAMPION), model(**CHAMPION), ["json_format"], tolerance=0.05,
                      transfer_challenger=model(prefix="t", json_format=0),
                      transfer_champion=model(prefix="t", json_format=4))
    assert not decision.promote
    assert decision.reason.startswith("challenger is not significantly better")
    assert decision.reason.endswith("; challenger transfers worse on json_format 0.20->0.00 (0 fixed, 4 broken, "
                                    "p=0.062; broken: t0, t1, t2, t3) (out-of-domain)")


def test_out_of_domain_facts_are_shown_but_only_gated_checks_block() -> None:
    challenger, champion = model(json_format=20, sources_valid=20), model(json_format=0, sources_valid=0)
    transfer_new = dict(json_format=6, answers_when_supported=6, expected_keywords=2)
    transfer_old = dict(json_format=0, answers_when_supported=6, expected_keywords=4)
    gate = ["json_format", "answers_when_supported"]
    decision = decide(challenger, champion, ["json_format"], 0.05, model(6, "t", **transfer_new),
                      model(6, "t", **transfer_old), transfer_gate=gate)
    assert decision.promote, decision.reason
    facts = next(c for c in decision.transfer_checks if c.check == "expected_keywords")
    assert facts.verdict == "worse" and not facts.gated  # visible evidence, not a blocker
    refusing = {**transfer_new, "answers_when_supported": 0}  # refuses what the context answers
    blocked = decide(challenger, champion, ["json_format"], 0.05, model(6, "t", **refusing),
                     model(6, "t", **transfer_old), transfer_gate=gate)
    assert not blocked.promote and "answers_when_supported 1.00->0.00 (0 fixed, 6 broken" in blocked.reason


def test_one_flipped_out_of_domain_case_is_noise_two_are_a_worse_adapter() -> None:
    challenger, champion = model(json_format=20), model(json_format=0)
    old = model(16, "t", cites_gold=16)
    one = decide(challenger, champion, ["json_format"], 0.05, model(16, "t", cites_gold=15), old)
    assert one.promote, one.reason
    two = decide(challenger, champion, ["json_format"], 0.05, model(16, "t", cites_gold=14), old)
    assert not two.promote and "cites_gold" in two.reason

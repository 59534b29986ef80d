"""Wilson intervals, the suite file, drift detection and gap attribution on plain data."""

from __future__ import annotations

import pytest

from hybridops.tasks.behaviour.suite import CaseResult, CheckOutcome, EvalReport, Suite, SuiteError, check_stats, load_suite, wilson_interval
from hybridops.tasks.behaviour.drift import Baseline, behaviour_cases, cohens_h, detect_drift, one_sided_drop_test
from hybridops.tasks.behaviour.eval_history import load_baseline, record_baseline, summarize
from hybridops.tasks.behaviour.significance import case_outcomes
from hybridops.tasks.behaviour.gap_attribution import GapAttribution, classify, gap_counts, needs_oracle, oracle_passages
from hybridops.tasks.core.settings import Settings

SETTINGS = Settings(drift_min_n=8, drift_alpha=0.05, pass_rate_floor=0.5)


@pytest.mark.parametrize(
    "passed, n, low, high",
    [(0, 10, 0.0, 0.2775), (5, 10, 0.2366, 0.7634), (10, 10, 0.7225, 1.0), (18, 20, 0.6990, 0.9721)],
)
def test_wilson_interval_matches_reference_values(passed, n, low, high):
    got = wilson_interval(passed, n)
    assert got == pytest.approx((low, high), abs=1e-4)


def test_wilson_interval_edge_cases():
    assert wilson_interval(0, 0) == (0.0, 1.0)
    assert wilson_interval(0, 3)[0] == 0.0 and wilson_interval(3, 3)[1] == 1.0
    with pytest.raises(ValueError):
        wilson_interval(3, 2)
    narrow, wide = wilson_interval(50, 100), wilson_interval(5, 10)
    assert narrow[1] - narrow[0] < wide[1] - wide[0]


def result(case_id: str, checks: dict[str, bool], gold=(), retrieved=()) -> CaseResult:
    return CaseResult(
        case_id=case_id, question="q", origin="golden", gold_docs=list(gold), retrieved=list(retrieved),
        answer=None, sources=[], format_ok=checks.get("json_format", True), raw="",
        checks={k: CheckOutcome(passed=v) for k, v in checks.items()}, latency_ms=1.0,
    )


def report(results: list[CaseResult]) -> EvalReport:
    return EvalReport(suite="s", adapter_version="v1", started_at="t", seconds=60.0, checks=check_stats(results), cases=results)


def run(passed: int, n: int, check: str = "json_format") -> list[CaseResult]:
    """n cases c0.. of which the first `passed` pass `check`."""
    return [result(f"c{i}", {check: i < passed}) for i in range(n)]


def stats(passed: int, n: int):
    return check_stats(run(passed, n))


def counts_only(passed: int, n: int) -> Baseline:
    """A baseline without per-case outcomes (recorded before they were kept, or rebuilt from the registry)."""
    return Baseline(adapter_version="v1", recorded_at="t", suite="s", checks=stats(passed, n))


def paired(results: list[CaseResult]) -> Baseline:
    return Baseline(adapter_version="v1", recorded_at="t", suite="s", checks=check_stats(results),
                    cases=case_outcomes(results))


def test_check_stats_counts_only_applicable_checks():
    rows = [result("a", {"json_format": True, "cites_gold": False}), result("b", {"json_format": False})]
    got = check_stats(rows)
    assert (got["json_format"].passed, got["json_format"].n) == (1, 2)
    assert (got["cites_gold"].passed, got["cites_gold"].n, got["cites_gold"].pass_rate) == (0, 1, 0.0)


def test_two_proportion_test_one_sided():
    z, p = one_sided_drop_test(18, 20, 6, 20)
    assert z < 0 and p < 0.001
    _, p_up = one_sided_drop_test(6, 20, 18, 20)
    assert p_up > 0.99  # an improvement is never a drop
    assert one_sided_drop_test(10, 10, 10, 10) == (0.0, 1.0)
    assert one_sided_drop_test(10, 10, 0, 10)[1] < 0.001
    assert cohens_h(0.9, 0.3) == pytest.approx(1.3388, abs=1e-3)  # 2·asin√0.9 − 2·asin√0.3


def test_significant_drop_is_drift_with_effect_size():
    got = detect_drift(SETTINGS, run(9, 20), counts_only(18, 20), "v1")
    assert got.drift and got.drifted == ["json_format"]
    row = got.checks[0]
    assert row.reason == "significant_drop" and row.effect == pytest.approx(0.45) and row.p_value < 0.01
    assert row.method == "z" and row.p_holm is None  # counts only: the unpaired test
    payload = got.event_payload()
    assert payload["checks"] == ["json_format"] and payload["n"] == 20
    assert payload["effect_size"]["json_format"] == pytest.approx(0.45)


def test_small_drop_or_small_sample_is_not_drift():
    assert not detect_drift(SETTINGS, run(16, 20), counts_only(18, 20), "v1").drift  # noise
    tiny = detect_drift(SETTINGS, run(3, 5), counts_only(5, 5), "v1")  # 100% -> 60% but n < drift_min_n
    assert not tiny.drift and tiny.checks[0].p_value is not None
    paired_tiny = detect_drift(SETTINGS, run(3, 5), paired(run(5, 5)), "v1")  # the same, paired
    assert not paired_tiny.drift and paired_tiny.checks[0].method == "mcnemar"
    assert paired_tiny.checks[0].p_value == pytest.approx(0.25)  # 2 broken, 0 fixed: 0.5**2, but n=5 < 8


def test_floor_without_baseline_needs_minimum_sample():
    got = detect_drift(SETTINGS, run(0, 10), None, None)
    assert got.drift and got.checks[0].reason == "below_floor" and got.checks[0].effect == pytest.approx(0.5)
    assert not got.has_baseline and got.checks[0].method is None
    assert not detect_drift(SETTINGS, run(0, 4), None, None).drift
    assert not detect_drift(SETTINGS, run(6, 10), None, None).drift


# --- the paired drift test: the same cases as the baseline, exact McNemar, Holm across checks --------------

def test_paired_test_detects_six_of_twenty_regressed_cases_like_the_z_test():
    baseline = paired(run(20, 20))
    got = detect_drift(SETTINGS, run(14, 20), baseline, "v1")  # c14..c19 passed before, fail now
    row = got.checks[0]
    assert got.drifted == ["json_format"] and row.reason == "significant_drop"
    assert (row.method, row.b, row.c, row.baseline_n) == ("mcnemar", 6, 0, 20)
    assert row.p_value == pytest.approx(1 / 64) and row.p_holm == pytest.approx(1 / 64)
    assert row.effect == pytest.approx(0.3) and row.z is None
    assert one_sided_drop_test(20, 20, 14, 20)[1] < SETTINGS.drift_alpha  # the old test sees it too
    assert detect_drift(SETTINGS, run(14, 20), counts_only(20, 20), "v1").drifted == ["json_format"]


def test_paired_test_ignores_a_one_case_change_and_swaps():
    baseline = paired(run(18, 20))
    one = detect_drift(SETTINGS, run(17, 20), baseline, "v1").checks[0]
    assert (one.b, one.c, one.p_value, one.reason) == (1, 0, 0.5, None)
    swapped = [result(f"c{i}", {"json_format": i not in (0, 1, 2)}) for i in range(18)]
    swapped += [result("c18", {"json_format": True}), result("c19", {"json_format": True})]
    row = detect_drift(SETTINGS, swapped, baseline, "v1").checks[0]  # 3 broken, 2 fixed: same rate, no drift
    assert (row.b, row.c, row.reason) == (3, 2, None) and row.effect == pytest.approx(0.05)


def test_paired_test_is_holm_corrected_across_checks():
    def both(broken_a: int, broken_b: int) -> list[CaseResult]:
        return [result(f"c{i}", {"json_format": i >= broken_a, "sources_valid": i >= broken_b}) for i in range(20)]

    assert detect_drift(SETTINGS, run(15, 20), paired(run(20, 20)), "v1").drifted == ["json_format"]  # p = 1/32
    baseline = paired(both(0, 0))  # two checks: Holm's first threshold is alpha/2
    five = detect_drift(SETTINGS, both(5, 0), baseline, "v1")
    assert not five.drift
    assert {c.check: c.p_holm for c in five.checks} == pytest.approx({"json_format": 2 / 32, "sources_valid": 1.0})
    six = detect_drift(SETTINGS, both(6, 0), baseline, "v1")
    assert six.drifted == ["json_format"] and six.checks[0].p_holm == pytest.approx(2 / 64)
    pair = detect_drift(SETTINGS, both(6, 6), baseline, "v1")  # both 1/64: step-down, 2/64 and 1/64 -> 2/64
    assert pair.drifted == ["json_format", "sources_valid"]


def test_paired_test_counts_only_shared_behaviour_cases_and_falls_back_without_them():
    baseline = paired(run(20, 20))
    rows = run(14, 20) + [result("interaction:x", {"json_format": False})]  # a sampled interaction: not shared
    gaps = [GapAttribution(case_id=f"c{i}", kind="missing_document", failed_checks=["json_format"])
            for i in range(14, 20)]
    kept, excluded = behaviour_cases(report(rows), gaps)
    got = detect_drift(SETTINGS, kept, baseline, "v1", excluded=excluded)
    row = got.checks[0]
    assert (excluded, got.n, row.current_n, row.baseline_n, row.b) == (6, 15, 15, 14, 0) and not got.drift
    other_suite = [result(f"other{i}", {"json_format": i < 14}) for i in range(20)]
    fallback = detect_drift(SETTINGS, other_suite, baseline, "v1").checks[0]  # no shared case ids
    assert fallback.method == "z" and fallback.reason == "significant_drop"


def test_baseline_keeps_per_case_outcomes(cfg, store):
    rows = run(3, 4) + [result("r", {"json_format": True, "refuses_without_context": False})]
    recorded = record_baseline(cfg, report(rows), store)
    loaded = load_baseline(cfg, "v1", store)
    assert loaded == recorded and loaded.cases["c0"] == {"json_format": True}
    assert loaded.cases["r"] == {"json_format": True, "refuses_without_context": False}
    assert Baseline.model_validate({"adapter_version": "v0", "recorded_at": "t", "suite": "s",
                                    "checks": {}}).cases == {}  # an older baseline still loads


def test_classify_knowledge_behaviour_noise():
    failing = {"json_format": True, "cites_gold": False}
    missed = result("k", failing, gold=["a.md"], retrieved=["b.md", "c.md"])
    gap = classify(missed, refusal=False)  # no document status given: the gold doc counts as indexed
    assert gap.kind == "retrieval_miss" and gap.missing_gold == ["a.md"] and not needs_oracle(missed)

    found = result("f", failing, gold=["a.md"], retrieved=["b.md", "a.md"])
    assert needs_oracle(found)
    with pytest.raises(ValueError, match="oracle"):
        classify(found, refusal=False)
    still = result("f", {"json_format": False}, gold=["a.md"], retrieved=["a.md"])
    assert classify(found, False, oracle=still).kind == "behaviour"
    assert classify(found, False, oracle=still).oracle_failed_checks == ["json_format"]
    fixed = result("f", {"json_format": True, "cites_gold": True}, gold=["a.md"], retrieved=["a.md"])
    assert classify(found, False, oracle=fixed).kind == "retrieval_noise"
    empty_oracle = result("f", {"json_format": False}, gold=["a.md"], retrieved=[])
    assert classify(found, False, oracle=empty_oracle).kind == "missing_document"


def test_classify_partial_gold_refusals_and_unattributed():
    partial = result("p", {"cites_gold": False}, gold=["a.md", "b.md"], retrieved=["b.md"])
    assert needs_oracle(partial)
    assert classify(result("ok", {"json_format": True}, gold=["a.md"]), refusal=False) is None
    assert classify(result("r", {"refuses_without_context": False}), refusal=True).kind == "behaviour"
    assert classify(result("i", {"json_format": False}), refusal=False) is None


def test_knowledge_and_noise_cases_do_not_count_toward_drift():
    rows = [result(f"b{i}", {"json_format": True}) for i in range(8)]
    rows += [result(f"k{i}", {"json_format": False}, gold=["x"]) for i in range(8)]
    gaps = [GapAttribution(case_id=f"k{i}", kind="missing_document" if i % 2 else "retrieval_noise", failed_checks=["json_format"]) for i in range(8)]
    counted, excluded = behaviour_cases(report(rows), gaps)
    assert excluded == 8 and [c.case_id for c in counted] == [f"b{i}" for i in range(8)]
    kept = detect_drift(SETTINGS, counted, None, "v1", excluded=excluded)
    assert not kept.drift and (kept.n, kept.excluded, kept.checks[0].current_rate) == (8, 8, 1.0)
    all_counted, _ = behaviour_cases(report(rows), [])
    assert detect_drift(SETTINGS, all_counted, None, "v1").drift is False  # 50% is not under the floor
    assert gap_counts(gaps) == {"missing_document": 4, "retrieval_miss": 0, "retrieval_noise": 4, "behaviour": 0}


def test_summary_shows_gap_per_case():
    rows = [result("a", {"json_format": True}), result("b", {"json_format": False}, gold=["x"], retrieved=["y"])]
    gap = classify(rows[1], refusal=False)
    drift = detect_drift(SETTINGS, rows, None, "v1")
    record = summarize(report(rows), [gap], drift)
    assert [c.gap for c in record.cases] == [None, "retrieval_miss"]
    assert record.gaps == {"missing_document": 0, "retrieval_miss": 1, "retrieval_noise": 0, "behaviour": 0}
    assert [r.cases for r in record.routes if r.count] == [["b"]]
    assert record.cases_per_min == 2.0


def test_oracle_passages_keeps_the_chunks_sharing_most_words_in_order():
    from dataclasses import dataclass

    @dataclass
    class Hit:
        doc_id: str
        text: str

    chunks = [Hit("a", "intro text"), Hit("a", "refund within 30 days"), Hit("a", "shipping costs"), Hit("a", "refund policy days")]
    got = oracle_passages("How many days for a refund?", chunks, limit=2)
    assert [c.text for c in got] == ["refund within 30 days", "refund policy days"]
    assert oracle_passages("q", chunks[:2], limit=5) == chunks[:2]


def test_suite_file_validation(tmp_path):
    path = tmp_path / "suite.yaml"
    path.write_text("name: s\ncases:\n  - {id: a, question: 'Q?', gold_docs: [x.md]}\n  - {id: r, question: 'Z?', refusal: true}\n")
    suite = load_suite(path)
    assert suite.checks_for(suite.cases[0])[0] == "json_format"
    assert "refuses_without_context" in suite.checks_for(suite.cases[1])
    path.write_text("name: s\ncases:\n  - {id: a, question: 'Q?', checks: [nope]}\n")
    with pytest.raises(SuiteError, match="unknown checks"):
        load_suite(path)
    path.write_text("name: s\ncases:\n  - {id: a, question: 'Q?'}\n  - {id: a, question: 'R?'}\n")
    with pytest.raises(SuiteError, match="duplicate case ids"):
        load_suite(path)
    with pytest.raises(SuiteError, match="not found"):
        load_suite(tmp_path / "missing.yaml")
    assert isinstance(Suite(name="x"), Suite)


def test_shipped_suite_matches_the_example_corpus():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "examples"
    suite = load_suite(root / "behaviour_suite.yaml")
    assert 16 <= len(suite.cases) <= 24
    refusals = [c for c in suite.cases if c.refusal]
    assert 2 <= len(refusals) <= 3 and all(not c.gold_docs for c in refusals)
    for case in suite.cases:
        for doc in case.gold_docs:
            assert (root / "corpus" / doc).is_file(), f"{case.id}: gold doc {doc} is not in examples/corpus"
        if not case.refusal:
            assert case.gold_docs and case.expected_keywords, case.id


def test_trend_chart_and_case_table():
    from hybridops.tasks.behaviour.report import case_rows, sparkline, trend_markdown

    assert sparkline([0.0, 0.5, 1.0]) == "▁▅█"
    assert trend_markdown([]) == "No behaviour eval runs recorded yet."
    base = [result(f"c{i}", {"json_format": False}, gold=["x"], retrieved=["x"]) for i in range(8)]
    tuned = [result(f"c{i}", {"json_format": i > 0}, gold=["x"], retrieved=["x"]) for i in range(8)]
    runs = []
    for rows, adapter in ((base, None), (tuned, "v2")):
        rep = report(rows).model_copy(update={"adapter_version": adapter})
        gaps = [classify(r, False, oracle=r) for r in rows if not r.passed]
        runs.append(summarize(rep, gaps, detect_drift(SETTINGS, rep.cases, None, adapter)))
    text = trend_markdown(runs)
    assert "| json_format | `▁▇` | 0% | 88% (7/8) |" in text
    assert "base → v2" in text and "drift: **no**" in text
    first = trend_markdown(runs[:1])
    assert "drift: **yes** (json_format)" in first
    rows = case_rows(runs[0])
    assert len(rows) == 8 and rows[0]["route"] == "behaviour" and rows[0]["passed"] == "no"

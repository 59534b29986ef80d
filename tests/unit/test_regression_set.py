"""The regression set: human corrections as cases, fixed suite cases recorded at promotion, and retrain gating
on both (no services, the models stubbed)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pytest

from hybridops.tasks.behaviour import adapters, retrain
from hybridops.tasks.behaviour.interactions import new_id, new_interaction, record_feedback
from hybridops.tasks.behaviour.promotion import RegressionCase, decide
from hybridops.tasks.behaviour.prompting import format_reply, parse_reply
from hybridops.tasks.behaviour.regression_set import (
    CORRECTION_CHECKS,
    FIXED_KEY,
    correction_cases,
    fixed_cases,
    load_regression_set,
    record_fixed,
)
from hybridops.tasks.behaviour.suite import EvalReport, Suite, check_stats
from hybridops.tasks.core.object_store import FolderStore
from hybridops.tasks.core.settings import Settings
from tests.unit.test_adapters_registry import adapter_folder, register
from tests.unit.test_behaviour_stats import result


def logged(store: FolderStore, cfg: Settings, question: str, verdict: str, correction: str | None = None,
           sources: list[str] | None = None) -> str:
    """One interaction in the store (written directly: the GX contract is not under test) with its feedback."""
    item = new_interaction(question=question, reply=parse_reply("a month"), retrieved=["policies/refunds.md"],
                           adapter=None, latency_ms=1.0, model="m")
    item = item.model_copy(update={"id": new_id(datetime(2026, 1, 1, tzinfo=timezone.utc) + timedelta(
        seconds=len(list(store.list("interactions/")))))})  # ids sort by time: one second apart, logged order
    store.put(item.key, item.model_dump_json().encode())
    record_feedback(cfg, item.id, verdict, correction, store=store, sources=sources)
    return item.id


def test_corrections_become_golden_cases_citing_the_corrected_sources(cfg: Settings, store: FolderStore) -> None:
    plain = logged(store, cfg, "How many days to return?", "correct", "45 days.", ["policies/refunds.md"])
    logged(store, cfg, "Is it good?", "approve")  # an approval is not a correction
    full = logged(store, cfg, "Backpack guarantee?", "correct", format_reply("Lifetime.", ["policies/warranty.html"]))
    cases = correction_cases(cfg, limit=10, store=store)
    assert [(c.id, c.gold_docs, c.origin) for c in cases] == [
        (f"correction:{plain}", ["policies/refunds.md"], "golden"),
        (f"correction:{full}", ["policies/warranty.html"], "golden")]
    assert all(c.checks == CORRECTION_CHECKS for c in cases)
    assert [c.id for c in correction_cases(cfg, limit=1, store=store)] == [f"correction:{full}"]  # the latest
    assert correction_cases(cfg, limit=0, store=store) == []

    regression = load_regression_set(cfg, Suite(name="held-out", max_chars=123), store)
    assert regression.corrections.name == "held-out-corrections" and regression.corrections.max_chars == 123
    assert [(c.case_id, c.origin) for c in regression.cases] == [(f"correction:{plain}", "correction"),
                                                                 (f"correction:{full}", "correction")]


def test_fixed_cases_are_recorded_per_suite_case_and_check_once(cfg: Settings, store: FolderStore) -> None:
    champion = [result(f"c{i}", {"json_format": i < 2, "sources_valid": i != 3}) for i in range(8)]
    challenger = [result(f"c{i}", {"json_format": True, "sources_valid": True}) for i in range(8)]
    decision = decide(challenger, champion, ["json_format"], 0.05)
    assert decision.promote, decision.reason
    added = record_fixed(cfg, "held-out", "v2", decision, store)
    assert [(e.case_id, e.check) for e in added] == [(f"c{i}", "json_format") for i in range(2, 8)] + \
        [("c3", "sources_valid")]
    assert record_fixed(cfg, "held-out", "v3", decision, store) == []  # idempotent: the first record stays
    got = fixed_cases(cfg, "held-out", store)
    assert got[1] == RegressionCase(case_id="c3", checks=["json_format", "sources_valid"], origin="fixed")
    assert len(got) == 6 and fixed_cases(cfg, "another-suite", store) == []


def test_an_unreadable_fixed_set_is_ignored_loudly(cfg: Settings, store: FolderStore, caplog) -> None:
    store.put(FIXED_KEY, b'{"entries": "garbage"}')
    with caplog.at_level("WARNING"):
        assert fixed_cases(cfg, "held-out", store) == []
    assert "unreadable regression set" in caplog.text


def _report(version: str | None, rows: list) -> EvalReport:
    return EvalReport(suite="held-out", adapter_version=version, started_at="now", seconds=1.0,
                      checks=check_stats(rows), cases=rows)


@pytest.mark.parametrize("champion_fails_it_too", [False, True])
def test_retrain_answers_the_corrections_with_both_models_and_gates_on_them(
    cfg: Settings, store: FolderStore, tmp_path, monkeypatch: pytest.MonkeyPatch, champion_fails_it_too: bool
) -> None:
    cfg = cfg.model_copy(update={"transfer_suite": None})
    pending = register(cfg, store, adapter_folder(tmp_path, b"pending"))
    correction = logged(store, cfg, "How many days to return?", "correct", "45 days.", ["policies/refunds.md"])
    evals: list[tuple[str, str | None, str, object]] = []

    def evaluate(settings, suite, version, retrieve, reporter, purpose="eval"):
        evals.append((suite.name, version, purpose, retrieve))
        if purpose == "regression eval":  # the challenger breaks the correction
            [case] = suite.cases
            passed = version is None and not champion_fails_it_too
            return _report(version, [result(case.id, {"json_format": True, "grounded": passed})])
        return _report(version, [result(f"c{i}", {"json_format": bool(version) or i < 2}) for i in range(10)])

    data = SimpleNamespace(train=[1, 2, 3], validation=[1], fingerprint="f" * 64, origins={}, augmented={},
                           counts={"train": 3, "validation": 1, "rejected": 0})
    stubs = {"build_data": lambda settings, include: data, "make_retriever": lambda settings: "search",
             "load_held_out_suite": lambda settings, path: Suite(name="held-out"), "evaluate": evaluate,
             "train_challenger": lambda *a: pytest.fail("trained again"),
             "save_replay_snapshot": lambda settings, data: None}
    for name, stub in stubs.items():
        monkeypatch.setattr(retrain, name, stub)
    reporter = SimpleNamespace(stage=lambda *a: None, progress=lambda *a, **k: None)

    outcome = retrain._retrain(cfg, retrain.RetrainRequest(drifted=["json_format"]), retrain.direct, reporter)
    assert evals[2:] == [("held-out-corrections", pending.version, "regression eval", "search"),
                         ("held-out-corrections", None, "regression eval", "search")]  # the same retrieval
    regression = outcome.decision.regression
    assert regression.challenger_failed == {f"correction:{correction}": ["grounded"]}
    if champion_fails_it_too:
        assert outcome.promoted, outcome.reason
        assert adapters.champion_version(cfg, store) == pending.version
        assert [c.case_id for c in fixed_cases(cfg, "held-out", store)] == [f"c{i}" for i in range(2, 10)]
    else:
        assert not outcome.promoted
        assert outcome.reason.startswith("regression set: challenger fails 1 of 1 regression cases, champion 0")
        assert adapters.champion_version(cfg, store) is None and fixed_cases(cfg, "held-out", store) == []

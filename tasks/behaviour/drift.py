"""Behaviour drift: the current run vs the champion's baseline recorded at promotion, plus an absolute floor.

A check drifts when (a) it is significantly worse than the baseline at level `drift_alpha` on at least
`drift_min_n` cases, or (b) at least `drift_min_n` cases were checked and the pass rate is under
`pass_rate_floor`. For (a), when the baseline kept per-case outcomes and the current run shares case ids with
it, the test is paired: the exact one-sided McNemar test (significance.py) on the shared cases, Holm-corrected
across the checks, as the same case answered worse is the evidence and different cases are not. Baselines
without per-case outcomes (older ones, those rebuilt from the registry) fall back to the unpaired one-sided
two-proportion z-test of the counts. Cases routed anywhere but behaviour (gap_attribution.NOT_BEHAVIOUR:
a missing document, a retrieval miss or noise) are left out of the current run: only behaviour counts.
Only the statistics live here; baselines and eval runs are stored by eval_history.py.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel

from hybridops.tasks.behaviour.gap_attribution import NOT_BEHAVIOUR, GapAttribution
from hybridops.tasks.behaviour.significance import PairedTable, case_outcomes, holm_by_name, paired_outcomes
from hybridops.tasks.behaviour.suite import CaseResult, CheckStats, EvalReport, check_stats
from hybridops.tasks.core.settings import Settings


class Baseline(BaseModel):
    """Per-check pass counts of a champion, recorded when it was promoted, and its per-case outcomes
    ({case_id: {check: passed}}; empty in baselines recorded before they were kept and in registry rebuilds)."""

    adapter_version: str | None
    recorded_at: str
    suite: str
    checks: dict[str, CheckStats]
    cases: dict[str, dict[str, bool]] = {}


class CheckDrift(BaseModel):
    """One check's evidence. `effect` = drop in pass rate vs the reference (the baseline, or the floor).

    method "mcnemar": baseline_rate/baseline_n, effect and cohens_h are over the cases shared with the
    baseline where the check applied in both runs; b = the baseline passed and now fails, c = the reverse;
    p_value is the exact one-sided p, p_holm its Holm adjustment across the checks. method "z": the unpaired
    test of the counts (z, p_value). current_rate/current_n are always the whole current run."""

    check: str
    current_rate: float
    current_n: int
    method: Literal["mcnemar", "z"] | None = None
    baseline_rate: float | None = None
    baseline_n: int | None = None
    b: int | None = None
    c: int | None = None
    z: float | None = None
    p_value: float | None = None
    p_holm: float | None = None
    cohens_h: float | None = None
    effect: float | None = None
    reason: Literal["significant_drop", "below_floor"] | None = None

    @property
    def drifted(self) -> bool:
        return self.reason is not None


class DriftReport(BaseModel):
    drift: bool
    drifted: list[str]
    checks: list[CheckDrift]
    n: int
    excluded: int
    adapter_version: str | None
    baseline_version: str | None
    has_baseline: bool

    def event_payload(self) -> dict:
        """Payload of hybridops.behaviour.drift: drifted checks, effect size per check, sample size."""
        by_name = {c.check: c for c in self.checks}
        return {
            "checks": self.drifted,
            "effect_size": {name: by_name[name].effect for name in self.drifted},
            "cohens_h": {name: by_name[name].cohens_h for name in self.drifted},
            "reasons": {name: by_name[name].reason for name in self.drifted},
            "n": self.n,
            "adapter": self.adapter_version,
            "baseline": self.baseline_version,
        }


def one_sided_drop_test(passed_base: int, n_base: int, passed_cur: int, n_cur: int) -> tuple[float, float]:
    """Pooled two-proportion z-test of H1: p_current < p_baseline; returns (z, p-value)."""
    if n_base <= 0 or n_cur <= 0:
        raise ValueError("both samples need at least one case")
    pooled = (passed_base + passed_cur) / (n_base + n_cur)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n_base + 1 / n_cur))
    diff = passed_cur / n_cur - passed_base / n_base
    if se == 0:  # all pass or all fail in both samples: no evidence of any difference
        return 0.0, 1.0 if diff >= 0 else 0.0
    z = diff / se
    return z, 0.5 * math.erfc(-z / math.sqrt(2))  # the standard normal CDF at z


def cohens_h(p_base: float, p_cur: float) -> float:
    """Effect size for two proportions (0.2 small, 0.5 medium, 0.8 large)."""
    return 2 * math.asin(math.sqrt(p_base)) - 2 * math.asin(math.sqrt(p_cur))


def behaviour_cases(report: EvalReport, gaps: Sequence[GapAttribution]) -> tuple[list[CaseResult], int]:
    """The cases that count toward drift (those on a NOT_BEHAVIOUR route left out) and how many were left out."""
    excluded = {gap.case_id for gap in gaps if gap.kind in NOT_BEHAVIOUR}
    kept = [case for case in report.cases if case.case_id not in excluded]
    return kept, len(report.cases) - len(kept)


def detect_drift(
    settings: Settings,
    current: Sequence[CaseResult],
    baseline: Baseline | None,
    adapter_version: str | None,
    excluded: int = 0,
) -> DriftReport:
    """Compare each check of the current cases with the baseline (paired when they share cases, see the
    module docstring) and with the absolute floor."""
    stats = check_stats(current)
    outcomes = case_outcomes(current)
    paired = baseline is not None and bool(set(baseline.cases) & set(outcomes))
    rows = {name: CheckDrift(check=name, current_rate=s.pass_rate, current_n=s.n) for name, s in stats.items()}
    if paired:
        tables = {name: paired_outcomes(name, baseline.cases, outcomes) for name in stats}
        tables = {name: table for name, table in tables.items() if table.n > 0}
        adjusted = holm_by_name({name: table.p_worse for name, table in tables.items()})
        for name, table in tables.items():
            rows[name] = _paired_row(settings, rows[name], table, adjusted[name])
    elif baseline is not None:
        for name, s in stats.items():
            base = baseline.checks.get(name)
            if base is not None and base.n > 0:
                rows[name] = _unpaired_row(settings, rows[name], base, s)
    checked = [_floor(settings, row) for row in rows.values()]
    drifted = [row.check for row in checked if row.drifted]
    return DriftReport(
        drift=bool(drifted), drifted=drifted, checks=checked, n=len(current), excluded=excluded,
        adapter_version=adapter_version, baseline_version=baseline.adapter_version if baseline else None,
        has_baseline=baseline is not None,
    )


def _paired_row(settings: Settings, row: CheckDrift, table: PairedTable, p_holm: float) -> CheckDrift:
    """The exact McNemar evidence ("now worse") on the cases shared with the baseline."""
    before, now = table.reference_rate, table.candidate_rate
    update = dict(method="mcnemar", baseline_rate=before, baseline_n=table.n, b=table.b, c=table.c,
                  p_value=table.p_worse, p_holm=p_holm, effect=(table.b - table.c) / table.n,
                  cohens_h=cohens_h(before, now))
    if table.n >= settings.drift_min_n and p_holm < settings.drift_alpha:
        update["reason"] = "significant_drop"
    return row.model_copy(update=update)


def _unpaired_row(settings: Settings, row: CheckDrift, base: CheckStats, current: CheckStats) -> CheckDrift:
    """The two-proportion z-test of the counts (a baseline without per-case outcomes)."""
    z, p = one_sided_drop_test(base.passed, base.n, current.passed, current.n)
    update = dict(method="z", baseline_rate=base.pass_rate, baseline_n=base.n, z=z, p_value=p,
                  cohens_h=cohens_h(base.pass_rate, current.pass_rate), effect=base.pass_rate - current.pass_rate)
    if min(base.n, current.n) >= settings.drift_min_n and p < settings.drift_alpha:
        update["reason"] = "significant_drop"
    return row.model_copy(update=update)


def _floor(settings: Settings, row: CheckDrift) -> CheckDrift:
    """Under the absolute pass-rate floor on enough cases (only when the baseline test did not already fire)."""
    if row.reason is not None or row.current_n < settings.drift_min_n or row.current_rate >= settings.pass_rate_floor:
        return row
    update = {"reason": "below_floor"}
    if row.effect is None:
        update |= {"effect": settings.pass_rate_floor - row.current_rate,
                   "cohens_h": cohens_h(settings.pass_rate_floor, row.current_rate)}
    return row.model_copy(update=update)


def assess(settings: Settings, report: EvalReport, gaps: Sequence[GapAttribution]) -> DriftReport:
    """Drift of the evaluated model vs its own baseline, counting only behaviour (not knowledge) failures."""
    # eval_history imports this module (an EvalRecord holds a DriftReport): imported here to break the cycle
    from hybridops.tasks.behaviour.eval_history import load_baseline

    kept, excluded = behaviour_cases(report, gaps)
    baseline = load_baseline(settings, report.adapter_version)
    return detect_drift(settings, kept, baseline, report.adapter_version, excluded)

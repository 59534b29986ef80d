"""Behaviour drift: current pass rates vs the champion's baseline recorded at promotion, plus an absolute floor.

A check drifts when (a) both samples have at least `drift_min_n` cases and a one-sided two-proportion z-test
says the current pass rate is lower than the baseline's at level `drift_alpha`, or (b) at least
`drift_min_n` cases were checked and the pass rate is under `pass_rate_floor`. Cases attributed to a
knowledge gap or retrieval noise are left out of the current counts: only behaviour counts toward drift.
Only the statistics live here; baselines and eval runs are stored by eval_history.py.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel

from hybridops.tasks.behaviour.gap_attribution import NOT_BEHAVIOUR, GapAttribution
from hybridops.tasks.behaviour.suite import CaseResult, CheckStats, EvalReport, check_stats
from hybridops.tasks.core.settings import Settings


class Baseline(BaseModel):
    """Per-check pass counts of a champion, recorded when it was promoted."""

    adapter_version: str | None
    recorded_at: str
    suite: str
    checks: dict[str, CheckStats]


class CheckDrift(BaseModel):
    """One check's evidence. `effect` = drop in pass rate vs the reference (baseline rate, or the floor)."""

    check: str
    current_rate: float
    current_n: int
    baseline_rate: float | None = None
    baseline_n: int | None = None
    z: float | None = None
    p_value: float | None = None
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


def drift_counts(report: EvalReport, gaps: Sequence[GapAttribution]) -> tuple[dict[str, CheckStats], int]:
    """Per-check counts over the cases that count toward drift (knowledge/retrieval-noise cases left out)."""
    excluded = {gap.case_id for gap in gaps if gap.kind in NOT_BEHAVIOUR}
    kept: list[CaseResult] = [case for case in report.cases if case.case_id not in excluded]
    return check_stats(kept), len(excluded)


def detect_drift(
    settings: Settings,
    current: dict[str, CheckStats],
    baseline: Baseline | None,
    adapter_version: str | None,
    n: int,
    excluded: int = 0,
) -> DriftReport:
    """Compare each check with the baseline (significance test) and the absolute floor."""
    rows = []
    for name, stats in sorted(current.items()):
        row = CheckDrift(check=name, current_rate=stats.pass_rate, current_n=stats.n)
        base = baseline.checks.get(name) if baseline else None
        if base is not None and base.n > 0:
            z, p = one_sided_drop_test(base.passed, base.n, stats.passed, stats.n)
            row = row.model_copy(update=dict(
                baseline_rate=base.pass_rate, baseline_n=base.n, z=z, p_value=p,
                cohens_h=cohens_h(base.pass_rate, stats.pass_rate), effect=base.pass_rate - stats.pass_rate,
            ))
            if min(base.n, stats.n) >= settings.drift_min_n and p < settings.drift_alpha:
                row = row.model_copy(update={"reason": "significant_drop"})
        if row.reason is None and stats.n >= settings.drift_min_n and stats.pass_rate < settings.pass_rate_floor:
            update = {"reason": "below_floor"}
            if row.effect is None:
                update |= {"effect": settings.pass_rate_floor - stats.pass_rate,
                           "cohens_h": cohens_h(settings.pass_rate_floor, stats.pass_rate)}
            row = row.model_copy(update=update)
        rows.append(row)
    drifted = [row.check for row in rows if row.drifted]
    return DriftReport(
        drift=bool(drifted), drifted=drifted, checks=rows, n=n, excluded=excluded,
        adapter_version=adapter_version, baseline_version=baseline.adapter_version if baseline else None,
        has_baseline=baseline is not None,
    )


def assess(settings: Settings, report: EvalReport, gaps: Sequence[GapAttribution]) -> DriftReport:
    """Drift of the evaluated model vs its own baseline, counting only behaviour (not knowledge) failures."""
    # eval_history imports this module (an EvalRecord holds a DriftReport): imported here to break the cycle
    from hybridops.tasks.behaviour.eval_history import load_baseline

    counts, excluded = drift_counts(report, gaps)
    baseline = load_baseline(settings, report.adapter_version)
    return detect_drift(settings, counts, baseline, report.adapter_version, report.n - excluded, excluded)

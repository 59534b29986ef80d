"""Champion/challenger decision on paired per-case evidence: promote only a challenger that significantly fixes
what drifted, is significantly worse on nothing, transfers, and keeps what earlier promotions and humans fixed.

Both models answer the same cases with the same retrieval, so every check is a paired table (significance.py):
pass rates alone cannot tell a 3-case wobble on 21 cases from a real improvement, nor see that a gain on one
check was paid for with a loss on another. Pure: the caller runs the suites and loads the regression set."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection, Sequence
from typing import Literal

from pydantic import BaseModel

from hybridops.tasks.behaviour.significance import (
    MinimumDetectable,
    case_outcomes,
    holm_by_name,
    minimum_detectable,
    paired_outcomes,
)
from hybridops.tasks.behaviour.suite import CaseResult, check_stats

# Pass rates closer than this count as equal (float noise, not a real difference).
_EPS = 1e-9
_SHOWN_IDS = 4  # case ids named per check in a reason (all of them are in the rows)

Verdict = Literal["improved", "higher", "same", "within_tolerance", "worse", "new"]
"""improved: a target check significantly better (Holm); higher: a gain that is not (or not a target's, or
out-of-domain); worse: significantly worse, or a drop beyond what the check is allowed; new: no champion data."""


class CheckComparison(BaseModel):
    """One check's evidence: both pass rates and their delta (each model over the cases where the check applied
    to it), the paired table over the cases where it applied to both (b = champion passed and challenger failed,
    c = the reverse, n), the one-sided exact McNemar p-values raw and Holm-adjusted, and the verdict."""

    check: str
    challenger: float
    champion: float | None
    delta: float | None
    target: bool
    verdict: Verdict
    gated: bool = True  # False: shown as evidence, never blocks (out-of-domain facts, see decide)
    b: int | None = None
    c: int | None = None
    n: int | None = None
    p_better: float | None = None
    p_worse: float | None = None
    p_better_holm: float | None = None  # in-domain: Holm over the target checks (None for the others)
    p_worse_holm: float | None = None  # Holm over every check of the suite with a paired table
    fixed: list[str] = []  # case ids the challenger passes and the champion failed
    broken: list[str] = []  # case ids the challenger fails and the champion passed


class RegressionCase(BaseModel):
    """A case the champion line must keep passing: one an earlier promotion fixed (suite case, the checks it
    fixed) or a human correction (its own case, the checks the correction implies)."""

    case_id: str
    checks: list[str]
    origin: Literal["fixed", "correction"]


class RegressionVerdict(BaseModel):
    """The regression set judged: per model, the cases failing any of their checks that applied (case id ->
    failed checks). A case without a result from both models, or where none of its checks applied, is not
    judged (a suite that dropped the case, or a check that no longer applies)."""

    n: int
    origins: dict[str, int] = {}  # judged cases per origin ("fixed", "correction")
    challenger_failed: dict[str, list[str]]
    champion_failed: dict[str, list[str]]
    not_judged: list[str] = []

    @property
    def ok(self) -> bool:
        return len(self.challenger_failed) <= len(self.champion_failed)

    @property
    def broken(self) -> list[str]:
        """Failed by the challenger, passed by the champion."""
        return [case for case in self.challenger_failed if case not in self.champion_failed]

    def describe(self) -> str:
        broken = ", ".join(f"{case} ({', '.join(self.challenger_failed[case])})" for case in self.broken)
        return (f"challenger fails {len(self.challenger_failed)} of {self.n} regression cases, champion "
                f"{len(self.champion_failed)}" + (f"; broken: {broken}" if broken else ""))


class PromotionDecision(BaseModel):
    """The decision with its reason and the per-check evidence behind it (in-domain, and out-of-domain when a
    transfer suite ran), the suite's minimum detectable difference and the regression-set verdict."""

    promote: bool
    reason: str
    targets: list[str]
    tolerance: float
    checks: list[CheckComparison]
    transfer_checks: list[CheckComparison] = []
    alpha: float = 0.05
    mdd: MinimumDetectable | None = None
    regression: RegressionVerdict | None = None


def compare_check(
    check: str, new: float, old: float | None, allowed: float, target: bool, gated: bool = True
) -> CheckComparison:
    """One check's point estimates judged: higher, same, within `allowed` of the champion, worse, or new (no
    champion rate). decide() turns a significant target gain into "improved", a significant loss into "worse"."""
    if old is None:
        return CheckComparison(check=check, challenger=new, champion=None, delta=None, target=target,
                               verdict="new", gated=gated)
    delta = new - old
    if delta > _EPS:
        verdict = "higher"
    elif delta >= -_EPS:
        verdict = "same"
    elif delta >= -allowed - _EPS:
        verdict = "within_tolerance"
    else:
        verdict = "worse"
    return CheckComparison(check=check, challenger=new, champion=old, delta=round(delta, 6), target=target,
                           verdict=verdict, gated=gated)


def compare_runs(
    challenger: Sequence[CaseResult],
    champion: Sequence[CaseResult],
    allowed: Callable[[str, int], float],
    targets: Collection[str] = (),
    gated: Callable[[str], bool] = lambda _check: True,
) -> list[CheckComparison]:
    """Every check the challenger was judged on: point estimates (`allowed(check, n)` = the drop it may take,
    n = its applicable cases) plus the paired table and raw McNemar p-values where the champion has the check."""
    new_stats, old_stats = check_stats(challenger), check_stats(champion)
    new_outcomes, old_outcomes = case_outcomes(challenger), case_outcomes(champion)
    rows = []
    for check, stats in new_stats.items():
        old = old_stats.get(check)
        row = compare_check(check, stats.pass_rate, old.pass_rate if old else None, allowed(check, stats.n),
                            check in targets, gated(check))
        if old is not None:
            table = paired_outcomes(check, old_outcomes, new_outcomes)
            row = row.model_copy(update=dict(b=table.b, c=table.c, n=table.n, p_better=table.p_better,
                                             p_worse=table.p_worse, fixed=table.fixed, broken=table.broken))
        rows.append(row)
    return rows


def with_holm(rows: list[CheckComparison], better_family: Callable[[CheckComparison], bool]) -> list[CheckComparison]:
    """Holm-adjusted p-values: "worse" over every row with a paired table, "better" over those in `better_family`."""
    tested = [r for r in rows if r.n is not None]
    better = holm_by_name({r.check: r.p_better for r in tested if better_family(r)})
    worse = holm_by_name({r.check: r.p_worse for r in tested})
    return [r.model_copy(update={"p_better_holm": better.get(r.check), "p_worse_holm": worse.get(r.check)})
            for r in rows]


def judge_regression(
    cases: Sequence[RegressionCase], challenger: Sequence[CaseResult], champion: Sequence[CaseResult]
) -> RegressionVerdict:
    """Which regression cases each model fails (results looked up by case id: suite results and the
    corrections' own run together)."""
    new = {r.case_id: r for r in challenger}
    old = {r.case_id: r for r in champion}
    failed: tuple[dict[str, list[str]], dict[str, list[str]]] = ({}, {})
    not_judged, origins = [], Counter()
    for case in cases:
        results = (new.get(case.case_id), old.get(case.case_id))
        outcomes = [None if r is None else _failed_checks(case, r) for r in results]
        if any(o is None for o in outcomes):
            not_judged.append(case.case_id)
            continue
        origins[case.origin] += 1
        for side, failing in zip(failed, outcomes):
            if failing:
                side[case.case_id] = failing
    return RegressionVerdict(n=sum(origins.values()), origins=dict(origins), challenger_failed=failed[0],
                             champion_failed=failed[1], not_judged=not_judged)


def _failed_checks(case: RegressionCase, result: CaseResult) -> list[str] | None:
    """The case's checks that failed; None when none of them applied to this result."""
    applied = [name for name in case.checks if name in result.checks]
    if not applied:
        return None
    return [name for name in applied if not result.checks[name].passed]


def decide(
    challenger: Sequence[CaseResult],
    champion: Sequence[CaseResult],
    drifted: list[str] | None,
    tolerance: float,
    transfer_challenger: Sequence[CaseResult] | None = None,
    transfer_champion: Sequence[CaseResult] | None = None,
    transfer_gate: Collection[str] | None = None,
    *,
    alpha: float = 0.05,
    regression: Sequence[RegressionCase] = (),
    regression_challenger: Sequence[CaseResult] = (),
    regression_champion: Sequence[CaseResult] = (),
) -> PromotionDecision:
    """Promote iff all of these hold (per-case results of both models on the same held-out suite):

    (a) a target check improves significantly: its Holm-adjusted one-sided exact McNemar p ("challenger
        better") is below `alpha`, the Holm family being the target checks. Targets are the drifted checks, or
        every check when nothing drifted (a scheduled retrain on new data must still be better at something);
    (b) no check is significantly worse: Holm-adjusted McNemar p ("challenger worse") below `alpha`, the family
        being every in-domain check. A per-check gate: a loss on one check is never offset by gains elsewhere;
    (c) the point estimates hold: a drifted check may not drop at all, any other by at most `tolerance` (a
        check the champion has no result for is new and does not block);
    (d) out-of-domain (the transfer suite, never trained on; when given): no `transfer_gate` check (default:
        all) drops by more than `tolerance`, or one case (1/n of its applicable cases) when that is more: on a
        20-case suite one flipped greedy reply is noise. Only behaviour (format, citations, grounding, refusing
        and not refusing) is gated, not facts: whether a 135M model recalls a number from a logistics handbook
        is its base capability, which no adapter is trained for. Transfer rows show their McNemar b/c/p too;
    (e) the regression set: the challenger fails no more `regression` cases than the champion. Suite cases
        are judged from `challenger`/`champion`, the others (human corrections) from `regression_challenger`/
        `regression_champion`.

    Drifted checks the challenger was not measured on reject. The decision carries the minimum detectable
    difference of the suite (shared case ids, Holm's first threshold over the tested targets)."""
    if not challenger:
        return PromotionDecision(promote=False, reason="the challenger has no eval results", targets=[],
                                 tolerance=tolerance, checks=[], alpha=alpha)
    measured = {name for result in challenger for name in result.checks}
    unknown = sorted(set(drifted or []) - measured)
    if unknown:
        return PromotionDecision(
            promote=False, reason=f"drifted checks not measured on the challenger: {', '.join(unknown)}",
            targets=sorted(drifted or []), tolerance=tolerance, checks=[], alpha=alpha,
        )
    targets = sorted(set(drifted)) if drifted else sorted(measured)
    strict = bool(drifted)  # drifted checks may not drop at all; without drift every check gets the tolerance

    rows = compare_runs(challenger, champion, lambda check, _n: 0.0 if (check in targets and strict) else tolerance,
                        targets)
    rows = [_significance_verdict(r, alpha) for r in with_holm(rows, lambda r: r.target)]
    transfer_rows = []
    if transfer_challenger:
        transfer_rows = compare_runs(transfer_challenger, transfer_champion or [],
                                     lambda _check, n: max(tolerance, 1 / n) if n else tolerance,
                                     gated=lambda check: transfer_gate is None or check in transfer_gate)
        transfer_rows = with_holm(transfer_rows, lambda _r: True)  # shown, never gated: (d) stays point estimates
    tested_targets = [r for r in rows if r.target and r.n is not None]
    shared = {r.case_id for r in challenger} & {r.case_id for r in champion}
    mdd = minimum_detectable(len(shared), alpha, max(1, len(tested_targets)))
    verdict = judge_regression(regression, [*challenger, *regression_challenger],
                               [*champion, *regression_champion]) if regression else None

    improved = [r for r in rows if r.verdict == "improved"]
    significant = [r for r in rows if r.p_worse_holm is not None and r.p_worse_holm < alpha]
    dropped = [r for r in rows if r.verdict == "worse" and r.check not in {s.check for s in significant}]
    reasons = []
    if significant:
        reasons.append("challenger is significantly worse on "
                       + ", ".join(_evidence(r, r.p_worse_holm, "broken") for r in significant))
    if dropped:
        reasons.append("challenger is worse on " + ", ".join(_evidence(r, r.p_worse_holm, "broken") for r in dropped))
    if not (significant or dropped) and not improved:
        scope = "the drifted checks" if strict else "any check"
        evidence = ", ".join(_evidence(r, r.p_better_holm, "fixed") for r in rows if r.target)
        reasons.append(f"challenger is not significantly better than the champion on {scope} ({evidence}); "
                       f"{mdd.describe()}")
    transfer_drops = [r for r in transfer_rows if r.gated and r.verdict == "worse"]
    if transfer_drops:
        reasons.append("challenger transfers worse on "
                       + ", ".join(_evidence(r, r.p_worse, "broken", "p") for r in transfer_drops)
                       + " (out-of-domain)")
    if verdict is not None and not verdict.ok:
        reasons.append(f"regression set: {verdict.describe()}")
    promote = not reasons
    if promote:
        gains = ", ".join(_evidence(r, r.p_better_holm, "fixed") for r in improved)
        held = f"the drifted checks do not drop and no other check drops beyond {tolerance:.2f}" if strict \
            else f"no check drops beyond {tolerance:.2f}"
        also = "; the transfer suite holds" if transfer_rows else ""
        kept = f"; regression set: {verdict.describe()}" if verdict is not None else ""
        reasons.append(f"challenger improves {gains}; no check is significantly worse (Holm, alpha {alpha:g}) and "
                       f"{held}{also}{kept}")
    return PromotionDecision(promote=promote, reason="; ".join(reasons), targets=targets, tolerance=tolerance,
                             checks=rows, transfer_checks=transfer_rows, alpha=alpha, mdd=mdd, regression=verdict)


def _significance_verdict(row: CheckComparison, alpha: float) -> CheckComparison:
    """A significant loss is "worse" whatever the point estimate; a target's significant gain is "improved"."""
    if row.p_worse_holm is not None and row.p_worse_holm < alpha:
        return row.model_copy(update={"verdict": "worse"})
    if row.verdict == "higher" and row.p_better_holm is not None and row.p_better_holm < alpha:
        return row.model_copy(update={"verdict": "improved"})
    return row


def _evidence(row: CheckComparison, p: float | None, side: Literal["fixed", "broken"], label: str = "p_holm") -> str:
    """'check old->new (c fixed, b broken, p_holm=...; <side>: ids)' for a reason."""
    if row.champion is None:
        return f"{row.check} new ({row.challenger:.2f})"
    text = f"{row.check} {row.champion:.2f}->{row.challenger:.2f} ({row.c} fixed, {row.b} broken"
    text += f", {label}={p:.2g}" if p is not None else ""
    cases = row.fixed if side == "fixed" else row.broken
    if cases:
        more = f" +{len(cases) - _SHOWN_IDS} more" if len(cases) > _SHOWN_IDS else ""
        text += f"; {side}: {', '.join(cases[:_SHOWN_IDS])}{more}"
    return text + ")"

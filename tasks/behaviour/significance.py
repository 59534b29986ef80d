"""Paired significance for promotion and drift: exact McNemar, Holm's step-down correction and the minimum
detectable difference of a suite.

Champion and challenger (or a baseline and today's run) answer the SAME cases, so the evidence is paired: only
the discordant cases say anything (b = the reference passed and the candidate failed, c = the reverse). Under
"no difference" each discordant case goes either way with probability 1/2, so the exact test is a binomial
tail; no normal approximation, which is wrong at the 20-case suites this project runs. Several checks are
tested at once, hence Holm. Pure: stdlib math only, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

from pydantic import BaseModel, computed_field

from hybridops.tasks.behaviour.suite import CaseResult

Outcomes = Mapping[str, Mapping[str, bool]]
"""Per-case check outcomes: {case_id: {check: passed}} (what a drift baseline keeps)."""


def binomial_tail(k: int, n: int) -> float:
    """P[X >= k] for X ~ Bin(n, 1/2), exact (integer sums; 1.0 for k <= 0)."""
    if n < 0:
        raise ValueError(f"n={n} must be >= 0")
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    return sum(math.comb(n, i) for i in range(k, n + 1)) / 2 ** n


def mcnemar_better(b: int, c: int) -> float:
    """One-sided exact McNemar p-value for "the candidate is better": P[X >= c], X ~ Bin(b + c, 1/2)."""
    return binomial_tail(c, b + c)


def mcnemar_worse(b: int, c: int) -> float:
    """One-sided exact McNemar p-value for "the candidate is worse": P[X >= b], X ~ Bin(b + c, 1/2)."""
    return binomial_tail(b, b + c)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in input order: the i-th smallest times (m - i), made monotone (an
    adjusted p never falls below a smaller raw p's) and capped at 1. Reject where adjusted p < alpha: this
    controls the family-wise error rate without assuming independence between checks."""
    m = len(pvalues)
    adjusted = [1.0] * m
    running = 0.0
    for rank, index in enumerate(sorted(range(m), key=lambda i: pvalues[i])):
        running = max(running, min(1.0, (m - rank) * pvalues[index]))
        adjusted[index] = running
    return adjusted


def holm_by_name(pvalues: Mapping[str, float]) -> dict[str, float]:
    """holm() over a named family (check -> p)."""
    names = list(pvalues)
    return dict(zip(names, holm([pvalues[name] for name in names])))


class MinimumDetectable(BaseModel):
    """The smallest effect a suite can call significant: `k` discordant cases all in one direction (exact
    p = 0.5**k) below Holm's first threshold alpha/m, i.e. a pass-rate change of k/n. A suite smaller than
    k cannot show any significant difference (`detectable` False)."""

    n: int
    tests: int
    alpha: float
    k: int

    @computed_field
    @property
    def detectable(self) -> bool:
        return self.k <= self.n

    @computed_field
    @property
    def share(self) -> float | None:
        return self.k / self.n if self.n else None

    def describe(self) -> str:
        scope = f"{self.n} paired cases, {self.tests} test{'s' if self.tests != 1 else ''}, alpha {self.alpha:g}"
        if not self.detectable:
            return f"MDD: {self.k} one-way discordant cases needed, more than the suite has ({scope}): " \
                   "no difference can be significant"
        return f"MDD: {self.k} cases = {self.share:.2f} of the suite, all in one direction ({scope})"


def minimum_detectable(n: int, alpha: float, tests: int = 1) -> MinimumDetectable:
    """The minimum detectable difference of n paired cases at level alpha with `tests` checks under Holm."""
    if not 0 < alpha < 1 or tests < 1 or n < 0:
        raise ValueError(f"need 0 < alpha < 1, tests >= 1 and n >= 0 (alpha={alpha}, tests={tests}, n={n})")
    threshold = alpha / tests
    k = 0
    while 0.5 ** k >= threshold:  # exact powers of two: no rounding at the boundary
        k += 1
    return MinimumDetectable(n=n, tests=tests, alpha=alpha, k=k)


class PairedTable(BaseModel):
    """One check on the cases where it applied for both models: b = reference passed and candidate failed
    (`broken`), c = the reverse (`fixed`), n = the paired cases; the concordant ones carry no evidence."""

    check: str
    n: int
    broken: list[str]
    fixed: list[str]
    reference_passed: int  # of the n paired cases

    @property
    def reference_rate(self) -> float | None:
        return self.reference_passed / self.n if self.n else None

    @property
    def candidate_rate(self) -> float | None:
        return (self.reference_passed - self.b + self.c) / self.n if self.n else None

    @property
    def b(self) -> int:
        return len(self.broken)

    @property
    def c(self) -> int:
        return len(self.fixed)

    @property
    def p_better(self) -> float:
        return mcnemar_better(self.b, self.c)

    @property
    def p_worse(self) -> float:
        return mcnemar_worse(self.b, self.c)


def case_outcomes(results: Iterable[CaseResult]) -> dict[str, dict[str, bool]]:
    """{case_id: {check: passed}} of a run's results (the checks that applied to each case)."""
    return {r.case_id: {name: outcome.passed for name, outcome in r.checks.items()} for r in results}


def paired_outcomes(check: str, reference: Outcomes, candidate: Outcomes) -> PairedTable:
    """The paired table of one check over the case ids where it applied in both (candidate's order)."""
    broken, fixed, n, passed = [], [], 0, 0
    for case_id, checks in candidate.items():
        before = reference.get(case_id, {}).get(check)
        now = checks.get(check)
        if before is None or now is None:
            continue
        n += 1
        passed += before
        if before and not now:
            broken.append(case_id)
        elif now and not before:
            fixed.append(case_id)
    return PairedTable(check=check, n=n, broken=broken, fixed=fixed, reference_passed=passed)


def paired_table(check: str, reference: Sequence[CaseResult], candidate: Sequence[CaseResult]) -> PairedTable:
    """The paired table of one check from two runs' per-case results (e.g. champion, challenger)."""
    return paired_outcomes(check, case_outcomes(reference), case_outcomes(candidate))

"""Exact McNemar, Holm and the minimum detectable difference against values computed by hand."""

from __future__ import annotations

import math

import pytest

from hybridops.tasks.behaviour.significance import (
    binomial_tail,
    case_outcomes,
    holm,
    holm_by_name,
    mcnemar_better,
    mcnemar_worse,
    minimum_detectable,
    paired_outcomes,
    paired_table,
)
from tests.unit.test_behaviour_stats import result


def test_binomial_tail_is_exact() -> None:
    assert binomial_tail(0, 0) == 1.0 and binomial_tail(1, 0) == 0.0
    assert binomial_tail(3, 3) == 1 / 8
    assert binomial_tail(8, 10) == pytest.approx((45 + 10 + 1) / 1024)  # C(10,8)+C(10,9)+C(10,10)
    assert binomial_tail(5, 10) == pytest.approx(638 / 1024)
    assert binomial_tail(1000, 1000) == 0.5 ** 1000  # big suites: exact integers, no float overflow
    with pytest.raises(ValueError):
        binomial_tail(1, -1)


def test_mcnemar_one_sided_exact_values() -> None:
    assert mcnemar_better(0, 5) == 1 / 32  # five fixed, none broken
    assert mcnemar_worse(0, 5) == 1.0
    assert mcnemar_worse(5, 0) == 1 / 32
    assert mcnemar_better(0, 0) == mcnemar_worse(0, 0) == 1.0  # no discordant case: no evidence
    assert mcnemar_better(1, 4) == pytest.approx(6 / 32)  # P[X>=4], X~Bin(5, 1/2)
    assert mcnemar_worse(1, 4) == pytest.approx(31 / 32)
    assert mcnemar_better(2, 8) == pytest.approx(56 / 1024)  # (C(10,8)+C(10,9)+C(10,10)) / 2^10


def test_holm_textbook_example() -> None:
    # m = 4: sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> monotone 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == [1.0, 1.0]  # capped at 1
    assert holm([]) == [] and holm([0.2]) == [0.2]
    assert holm_by_name({"a": 0.01, "b": 0.04}) == pytest.approx({"a": 0.02, "b": 0.04})


def test_holm_rejects_less_than_uncorrected_but_more_than_bonferroni() -> None:
    p = [0.01, 0.015, 0.03, 0.2]
    adjusted = holm(p)
    assert adjusted == pytest.approx([0.04, 0.045, 0.06, 0.2])
    assert sum(x < 0.05 for x in p) == 3
    assert sum(x < 0.05 for x in adjusted) == 2
    assert sum(x * len(p) < 0.05 for x in p) == 1  # Bonferroni keeps only the smallest


@pytest.mark.parametrize("n, alpha, tests, k", [(21, 0.05, 8, 8), (21, 0.05, 1, 5), (8, 0.05, 2, 6), (4, 0.05, 1, 5)])
def test_minimum_detectable_difference(n: int, alpha: float, tests: int, k: int) -> None:
    mdd = minimum_detectable(n, alpha, tests)
    assert mdd.k == k
    assert 0.5 ** k < alpha / tests <= 0.5 ** (k - 1)
    assert mdd.detectable == (k <= n)
    assert mdd.share == pytest.approx(k / n)


def test_minimum_detectable_is_the_boundary_of_a_real_holm_rejection() -> None:
    mdd = minimum_detectable(21, 0.05, 8)
    family = [mcnemar_better(0, mdd.k)] + [1.0] * 7
    assert holm(family)[0] < 0.05  # k one-way cases on one of eight checks: significant
    family[0] = mcnemar_better(0, mdd.k - 1)
    assert holm(family)[0] >= 0.05
    assert not minimum_detectable(4, 0.05).detectable and "no difference can be significant" in \
        minimum_detectable(4, 0.05).describe()
    with pytest.raises(ValueError):
        minimum_detectable(10, 0.0)


def test_paired_table_counts_only_cases_where_the_check_applied_in_both() -> None:
    champion = [result("a", {"json_format": True, "cites_gold": True}), result("b", {"json_format": False}),
                result("c", {"json_format": False, "cites_gold": False}), result("gone", {"json_format": True})]
    challenger = [result("a", {"json_format": False, "cites_gold": True}), result("b", {"json_format": True}),
                  result("c", {"json_format": True, "cites_gold": True}), result("new", {"json_format": False})]
    fmt = paired_table("json_format", champion, challenger)
    assert (fmt.n, fmt.b, fmt.c, fmt.broken, fmt.fixed) == (3, 1, 2, ["a"], ["b", "c"])
    assert fmt.reference_rate == pytest.approx(1 / 3) and fmt.candidate_rate == pytest.approx(2 / 3)
    assert fmt.p_better == mcnemar_better(1, 2) and fmt.p_worse == mcnemar_worse(1, 2)
    gold = paired_table("cites_gold", champion, challenger)  # did not apply to b
    assert (gold.n, gold.broken, gold.fixed) == (2, [], ["c"])
    none = paired_table("grounded", champion, challenger)
    assert none.n == 0 and none.p_worse == 1.0 and none.reference_rate is None
    assert paired_outcomes("json_format", case_outcomes(champion), case_outcomes(challenger)) == fmt
    assert math.isclose(fmt.p_better, 0.5)  # P[X>=2], X~Bin(3, 1/2)

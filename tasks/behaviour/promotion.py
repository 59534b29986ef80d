"""Champion/challenger decision: promote only a challenger that fixes what drifted without breaking the rest."""

from __future__ import annotations

from pydantic import BaseModel

# Pass rates closer than this count as equal (float noise, not a real difference).
_EPS = 1e-9


class CheckComparison(BaseModel):
    """One check's evidence: both pass rates, the delta and how the rule judged it."""

    check: str
    challenger: float
    champion: float | None
    delta: float | None
    target: bool
    verdict: str  # "improved" | "same" | "within_tolerance" | "worse" | "new"


class PromotionDecision(BaseModel):
    """The decision with its reason and the per-check evidence behind it."""

    promote: bool
    reason: str
    targets: list[str]
    tolerance: float
    checks: list[CheckComparison]


def decide(
    challenger: dict[str, float],
    champion: dict[str, float],
    drifted: list[str] | None,
    tolerance: float,
) -> PromotionDecision:
    """Promote iff the challenger improves a target check, loses on no target, and loses at most
    `tolerance` on every other check. Targets are the drifted checks, or every check when nothing drifted
    (a scheduled retrain on new data must still be better at something)."""
    if not challenger:
        return PromotionDecision(
            promote=False, reason="the challenger has no eval scores", targets=[], tolerance=tolerance, checks=[]
        )
    unknown = sorted(set(drifted or []) - set(challenger))
    if unknown:
        return PromotionDecision(
            promote=False,
            reason=f"drifted checks not measured on the challenger: {', '.join(unknown)}",
            targets=sorted(drifted or []), tolerance=tolerance, checks=[],
        )
    targets = sorted(set(drifted)) if drifted else sorted(challenger)
    strict = bool(drifted)  # drifted checks may not drop at all; without drift every check gets the tolerance
    rows: list[CheckComparison] = []
    improved, blocking = [], []
    for check in sorted(challenger):
        new, old = challenger[check], champion.get(check)
        is_target = check in targets
        if old is None:
            rows.append(CheckComparison(check=check, challenger=new, champion=None, delta=None,
                                        target=is_target, verdict="new"))
            continue
        delta = new - old
        allowed = 0.0 if (is_target and strict) else tolerance
        if delta > _EPS:
            verdict = "improved"
            if is_target:
                improved.append(check)
        elif delta >= -_EPS:
            verdict = "same"
        elif delta >= -allowed - _EPS:
            verdict = "within_tolerance"
        else:
            verdict = "worse"
            blocking.append(f"{check} {old:.2f}->{new:.2f}")
        rows.append(CheckComparison(check=check, challenger=new, champion=old, delta=round(delta, 6),
                                    target=is_target, verdict=verdict))

    if blocking:
        promote, reason = False, "challenger is worse on " + ", ".join(blocking)
    elif not improved:
        scope = "the drifted checks" if strict else "any check"
        promote, reason = False, f"challenger is not better than the champion on {scope} ({', '.join(targets)})"
    else:
        gains = ", ".join(f"{c} {champion[c]:.2f}->{challenger[c]:.2f}" for c in improved)
        promote, reason = True, f"challenger improves {gains} and is not worse beyond {tolerance:.2f} elsewhere"
    return PromotionDecision(promote=promote, reason=reason, targets=targets, tolerance=tolerance, checks=rows)

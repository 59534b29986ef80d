"""Champion/challenger decision: promote only a challenger that fixes what drifted without breaking the rest."""

from __future__ import annotations

from collections.abc import Collection

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
    gated: bool = True  # False: shown as evidence, never blocks (out-of-domain facts, see decide)


class PromotionDecision(BaseModel):
    """The decision with its reason and the per-check evidence behind it (in-domain, and out-of-domain when a
    transfer suite ran)."""

    promote: bool
    reason: str
    targets: list[str]
    tolerance: float
    checks: list[CheckComparison]
    transfer_checks: list[CheckComparison] = []


def compare_check(
    check: str, new: float, old: float | None, allowed: float, target: bool, gated: bool = True
) -> CheckComparison:
    """One check judged: improved, same, within `allowed` of the champion, worse, or new (no champion rate)."""
    if old is None:
        return CheckComparison(check=check, challenger=new, champion=None, delta=None, target=target,
                               verdict="new", gated=gated)
    delta = new - old
    if delta > _EPS:
        verdict = "improved"
    elif delta >= -_EPS:
        verdict = "same"
    elif delta >= -allowed - _EPS:
        verdict = "within_tolerance"
    else:
        verdict = "worse"
    return CheckComparison(check=check, challenger=new, champion=old, delta=round(delta, 6), target=target,
                           verdict=verdict, gated=gated)


def _drops(rows: list[CheckComparison]) -> list[str]:
    """'check old->new' for every gated check judged worse."""
    return [f"{r.check} {r.champion:.2f}->{r.challenger:.2f}" for r in rows if r.gated and r.verdict == "worse"]


def decide(
    challenger: dict[str, float],
    champion: dict[str, float],
    drifted: list[str] | None,
    tolerance: float,
    transfer_challenger: dict[str, float] | None = None,
    transfer_champion: dict[str, float] | None = None,
    transfer_gate: Collection[str] | None = None,
    transfer_n: dict[str, int] | None = None,
) -> PromotionDecision:
    """Promote iff the challenger improves a target check, loses on no target, and loses at most
    `tolerance` on every other check. Targets are the drifted checks, or every check when nothing drifted
    (a scheduled retrain on new data must still be better at something).

    With out-of-domain rates (the transfer suite, never trained on), a challenger that transfers worse is not
    promoted either: it must lose at most `tolerance` on every transfer check, since an adapter that only
    learned the training domain has not learned the behaviour. A check without a rate on either side is new.
    Only the `transfer_gate` checks (default: all) can block there: behaviour (format, citations, grounding,
    refusing and not refusing), not facts. Whether a 135M model recalls the right number from a logistics
    handbook is its base capability, which no adapter is trained for; those rates are shown, not gated.
    A transfer check may also drop by one case (1/n of its `transfer_n` applicable cases) when that is more
    than the tolerance: on a 20-case suite a single flipped greedy reply is noise, not a worse adapter."""
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
    rows = [compare_check(check, challenger[check], champion.get(check),
                          0.0 if (check in targets and strict) else tolerance, check in targets)
            for check in sorted(challenger)]
    transfer_champion = transfer_champion or {}
    transfer_n = transfer_n or {}
    transfer_rows = [compare_check(check, rate, transfer_champion.get(check),
                                   max(tolerance, 1 / transfer_n[check]) if transfer_n.get(check) else tolerance,
                                   False, gated=transfer_gate is None or check in transfer_gate)
                     for check, rate in sorted((transfer_challenger or {}).items())]
    improved = [r.check for r in rows if r.target and r.verdict == "improved"]

    reasons = []
    if _drops(rows):
        reasons.append("challenger is worse on " + ", ".join(_drops(rows)))
    elif not improved:
        scope = "the drifted checks" if strict else "any check"
        reasons.append(f"challenger is not better than the champion on {scope} ({', '.join(targets)})")
    if _drops(transfer_rows):
        reasons.append("challenger transfers worse on " + ", ".join(_drops(transfer_rows)) + " (out-of-domain)")
    promote = not reasons
    if promote:
        gains = ", ".join(f"{c} {champion[c]:.2f}->{challenger[c]:.2f}" for c in improved)
        also = " and on the transfer suite" if transfer_rows else ""
        reasons.append(f"challenger improves {gains} and is not worse beyond {tolerance:.2f} elsewhere{also}")
    return PromotionDecision(promote=promote, reason="; ".join(reasons), targets=targets, tolerance=tolerance,
                             checks=rows, transfer_checks=transfer_rows)

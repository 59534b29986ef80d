"""Human-readable views of behaviour eval runs: a per-case table and a per-check trend chart (unicode sparklines)."""

from __future__ import annotations

from collections.abc import Sequence

from hybridops.tasks.behaviour.eval_history import EvalRecord

SPARKS = "▁▂▃▄▅▆▇█"


def case_rows(record: EvalRecord) -> list[dict[str, str]]:
    """One row per case for a table artifact: outcome, failed checks and the gap attribution."""
    return [
        {
            "case": case.case_id,
            "question": case.question[:80],
            "passed": "yes" if case.passed else "no",
            "failed checks": ", ".join(case.failed_checks),
            "route": case.gap or "",
            "why": case.gap_detail,
            "action": case.gap_action,
            "cited": ", ".join(case.sources),
            "gold": ", ".join(case.gold_docs),
            "answer": (case.answer or "null")[:120],
        }
        for case in record.cases
    ]


def routes_markdown(record: EvalRecord) -> str:
    """Markdown: every failing case's route with its count, cases, documents and the action that fixes it."""
    lines = [f"### Where the failures of run {record.run_id} belong", "",
             "| route | cases | which | documents | action | counts toward retraining |", "|---|---|---|---|---|---|"]
    for row in record.routes:
        lines.append(f"| {row.route} | {row.count} | {', '.join(row.cases) or '—'} | {', '.join(row.documents) or '—'} "
                     f"| {'; '.join(row.actions)} | {'yes' if row.counts_toward_retraining else 'no'} |")
    failing = sum(not case.passed for case in record.cases)
    unrouted = failing - sum(row.count for row in record.routes)
    if unrouted:
        lines += ["", f"{unrouted} failing case(s) without gold documents (sampled interactions) are not routed."]
    return "\n".join(lines)


def sparkline(values: Sequence[float]) -> str:
    """Pass rates in [0, 1] as one block character each (▁ = 0 %, █ = 100 %)."""
    return "".join(SPARKS[min(len(SPARKS) - 1, max(0, round(v * (len(SPARKS) - 1))))] for v in values)


def trend_markdown(history: Sequence[EvalRecord]) -> str:
    """Markdown: per check the pass-rate trend over the recorded runs, the latest rate with its 95% CI."""
    if not history:
        return "No behaviour eval runs recorded yet."
    latest = history[-1]
    names = sorted({name for record in history for name in record.checks})
    lines = [
        f"### Behaviour pass rates over the last {len(history)} run(s)",
        "",
        f"Latest run {latest.run_id}: adapter `{latest.adapter or 'base'}`, n={latest.n}, "
        f"drift: **{'yes' if latest.drift.drift else 'no'}**"
        + (f" ({', '.join(latest.drift.drifted)})" if latest.drift.drifted else ""),
        "",
        "| check | trend (oldest → newest) | first | latest | 95% CI |",
        "|---|---|---|---|---|",
    ]
    for name in names:
        rates = [record.checks[name].pass_rate for record in history if name in record.checks]
        stats = latest.checks.get(name)
        ci = f"{stats.ci_low:.0%}–{stats.ci_high:.0%}" if stats else "—"
        last = f"{stats.pass_rate:.0%} ({stats.passed}/{stats.n})" if stats else "—"
        lines.append(f"| {name} | `{sparkline(rates)}` | {rates[0]:.0%} | {last} | {ci} |")
    adapters = " → ".join(dict.fromkeys(record.adapter or "base" for record in history))
    lines += ["", f"Adapters over this window: {adapters}", "",
              "Gaps in the latest run: " + ", ".join(f"{k} {v}" for k, v in latest.gaps.items())]
    return "\n".join(lines)

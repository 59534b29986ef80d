"""The behaviour eval history in the artifact store: champions' drift baselines and every eval run.

Layout: `history/behaviour/baselines/<version|_base>.json` (recorded at promotion; drift is measured against
it) and `history/behaviour/runs/<run_id>.json` (one EvalRecord per eval, for trends and the CLI). Kept apart
from drift.py so the statistics stay pure and testable without a store.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timezone

from pydantic import BaseModel

from hybridops.tasks.behaviour.adapters import AdapterError, champion, show
from hybridops.tasks.behaviour.drift import Baseline, DriftReport
from hybridops.tasks.behaviour.gap_attribution import GapAttribution, RouteSummary, gap_counts, route_summary
from hybridops.tasks.behaviour.significance import case_outcomes
from hybridops.tasks.behaviour.suite import CheckStats, EvalReport, wilson_interval
from hybridops.tasks.core.object_store import ObjectStore, artifact_store
from hybridops.tasks.core.settings import Settings

log = logging.getLogger(__name__)

HISTORY_PREFIX = "history/behaviour/runs/"
BASELINE_PREFIX = "history/behaviour/baselines/"
BASE_MODEL_KEY = "_base"


# Baselines (recorded at promotion) ------------------------------------------------------------------------

def _baseline_key(version: str | None) -> str:
    return f"{BASELINE_PREFIX}{version or BASE_MODEL_KEY}.json"


def record_baseline(settings: Settings, report: EvalReport, store: ObjectStore | None = None) -> Baseline:
    """Keep a champion's per-check counts and per-case outcomes as its drift baseline (call at promotion with
    its eval report): a later run on the same cases is then tested case by case (drift.py)."""
    store = store or artifact_store(settings)
    baseline = Baseline(
        adapter_version=report.adapter_version,
        recorded_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        suite=report.suite,
        checks=report.checks,
        cases=case_outcomes(report.cases),
    )
    store.put(_baseline_key(report.adapter_version), baseline.model_dump_json(indent=2).encode())
    return baseline


def load_baseline(settings: Settings, version: str | None, store: ObjectStore | None = None) -> Baseline | None:
    """The baseline recorded for `version`; else one rebuilt from the registry's promotion scores (pass rates
    x the manifest's eval n, so per-check counts are approximate, and no per-case outcomes: drift falls back
    to the unpaired test); None when neither exists."""
    store = store or artifact_store(settings)
    try:
        return Baseline.model_validate_json(store.get(_baseline_key(version)))
    except KeyError:
        pass
    if version is None:
        return None
    pointer = champion(settings, store)
    entries = [pointer.current, *pointer.history] if pointer else []
    scores = next((e.scores for e in entries if e.version == version and e.scores), None)
    try:
        n = show(settings, version, store).eval_n
    except (AdapterError, KeyError):
        n = None
    if not scores or not n:
        return None
    checks = {}
    for name, rate in scores.items():
        passed = round(rate * n)
        low, high = wilson_interval(passed, n)
        checks[name] = CheckStats(passed=passed, n=n, pass_rate=passed / n, ci_low=low, ci_high=high)
    return Baseline(adapter_version=version, recorded_at="registry", suite="registry", checks=checks)


# Eval runs ---------------------------------------------------------------------------------------------------

class CaseSummary(BaseModel):
    case_id: str
    origin: str
    question: str
    passed: bool
    failed_checks: list[str]
    gap: str | None  # the route (gap_attribution.ROUTES)
    gap_detail: str
    gap_action: str = ""
    gap_documents: list[dict] = []  # where each missing gold document stands (document_status.DocumentStatus)
    format_ok: bool
    answer: str | None
    sources: list[str]
    retrieved: list[str]
    gold_docs: list[str]


class EvalRecord(BaseModel):
    """One eval run as kept in the history store (and printed by `hybridops eval --json`)."""

    run_id: str
    recorded_at: str
    suite: str
    adapter: str | None
    n: int
    seconds: float
    cases_per_min: float
    checks: dict[str, CheckStats]
    gaps: dict[str, int]  # cases per route
    drift: DriftReport
    cases: list[CaseSummary]
    routes: list[RouteSummary] = []


def summarize(report: EvalReport, gaps: Sequence[GapAttribution], drift: DriftReport) -> EvalRecord:
    """The run as one record: per-check stats, gap counts, the drift verdict and one summary per case."""
    by_case = {gap.case_id: gap for gap in gaps}
    now = datetime.now(timezone.utc)
    cases = []
    for case in report.cases:
        gap = by_case.get(case.case_id)
        cases.append(CaseSummary(
            case_id=case.case_id, origin=case.origin, question=case.question, passed=case.passed,
            failed_checks=case.failed_checks, gap=gap.kind if gap else None, gap_detail=gap.detail if gap else "",
            gap_action=gap.action if gap else "",
            gap_documents=[d.model_dump(mode="json") for d in gap.documents] if gap else [],
            format_ok=case.format_ok, answer=case.answer, sources=case.sources, retrieved=case.retrieved,
            gold_docs=case.gold_docs,
        ))
    return EvalRecord(
        run_id=f"{now:%Y%m%dT%H%M%S%fZ}", recorded_at=now.isoformat(timespec="seconds"), suite=report.suite,
        adapter=report.adapter_version, n=report.n, seconds=round(report.seconds, 2),
        cases_per_min=round(report.cases_per_min, 2), checks=report.checks, gaps=gap_counts(gaps), drift=drift,
        cases=cases, routes=route_summary(gaps),
    )


def record_history(settings: Settings, record: EvalRecord, store: ObjectStore | None = None) -> str:
    """Append one run to the history (its run id sorts by time); returns the key."""
    store = store or artifact_store(settings)
    key = f"{HISTORY_PREFIX}{record.run_id}.json"
    store.put(key, record.model_dump_json(indent=2).encode())
    return key


def load_history(settings: Settings, limit: int = 20, store: ObjectStore | None = None) -> list[EvalRecord]:
    """The latest `limit` eval runs, oldest first (run ids sort by time)."""
    store = store or artifact_store(settings)
    keys = sorted(info.key for info in store.list(HISTORY_PREFIX) if info.key.endswith(".json"))[-limit:]
    records = []
    for key in keys:
        try:
            records.append(EvalRecord.model_validate_json(store.get(key)))
        except (KeyError, ValueError) as exc:  # vanished, or a foreign object: not history, but say so
            log.warning("skipping history object %s: %s", key, exc)
            continue
    return records

"""The regression set in the artifact store: what the champion line must keep passing.

Two sources. Suite cases an earlier promotion fixed (the champion failed a check, the promoted challenger
passed it), recorded per check at each promotion in `history/behaviour/regression/fixed.json` and keyed by
suite name + case id + check; they are judged from the suite run retrain does anyway. And every human
correction of a logged interaction, as its own case (question, the corrected reply's sources as gold docs),
which retrain answers with both models in one extra small run. promotion.decide() gates on the set.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone

from pydantic import BaseModel, ValidationError

from hybridops.tasks.behaviour.interactions import LoggedInteraction, interactions_with_feedback
from hybridops.tasks.behaviour.promotion import PromotionDecision, RegressionCase
from hybridops.tasks.behaviour.prompting import parse_reply
from hybridops.tasks.behaviour.suite import Case, Suite
from hybridops.tasks.core.object_store import ObjectStore, artifact_store
from hybridops.tasks.core.settings import Settings

log = logging.getLogger(__name__)

FIXED_KEY = "history/behaviour/regression/fixed.json"
CORRECTION_CHECKS = ["json_format", "sources_valid", "cites_gold", "grounded"]
CORRECTION_PREFIX = "correction:"


class FixedCase(BaseModel):
    """One check of one suite case a promotion fixed."""

    suite: str
    case_id: str
    check: str
    version: str
    recorded_at: str

    @property
    def key(self) -> tuple[str, str, str]:
        return self.suite, self.case_id, self.check


class FixedCases(BaseModel):
    entries: list[FixedCase] = []


class RegressionSet(BaseModel):
    """The set for one retrain: fixed suite cases plus the corrections as a suite of their own (None: none)."""

    fixed: list[RegressionCase] = []
    corrections: Suite | None = None

    @property
    def cases(self) -> list[RegressionCase]:
        corrected = self.corrections.cases if self.corrections else []
        return [*self.fixed, *(RegressionCase(case_id=c.id, checks=list(c.checks or []), origin="correction")
                               for c in corrected)]


# Fixed suite cases ---------------------------------------------------------------------------------------

def _load_fixed(store: ObjectStore) -> FixedCases:
    try:
        return FixedCases.model_validate_json(store.get(FIXED_KEY))
    except KeyError:
        return FixedCases()
    except ValidationError as exc:  # a damaged record loses the set, never a retrain: say so
        log.warning("ignoring unreadable regression set %s: %s", FIXED_KEY, exc)
        return FixedCases()


def record_fixed(
    settings: Settings, suite: str, version: str, decision: PromotionDecision, store: ObjectStore | None = None
) -> list[FixedCase]:
    """Add what a promotion fixed (every in-domain check's fixed case ids) to the set; returns the new entries.
    Idempotent: a (suite, case, check) already in the set keeps its first record. Call under the adapters lock
    (retrain holds it), as this reads, extends and writes one object."""
    store = store or artifact_store(settings)
    current = _load_fixed(store)
    known = {entry.key for entry in current.entries}
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    added = [FixedCase(suite=suite, case_id=case_id, check=row.check, version=version, recorded_at=now)
             for row in decision.checks for case_id in row.fixed if (suite, case_id, row.check) not in known]
    if added:
        current.entries.extend(added)
        store.put(FIXED_KEY, current.model_dump_json(indent=2).encode())
    return added


def fixed_cases(settings: Settings, suite: str, store: ObjectStore | None = None) -> list[RegressionCase]:
    """The suite's fixed cases, one per case id with every check fixed on it (in recording order)."""
    checks: dict[str, list[str]] = {}
    for entry in _load_fixed(store or artifact_store(settings)).entries:
        if entry.suite == suite and entry.check not in checks.setdefault(entry.case_id, []):
            checks[entry.case_id].append(entry.check)
    return [RegressionCase(case_id=case_id, checks=names, origin="fixed") for case_id, names in checks.items()]


# Human corrections -----------------------------------------------------------------------------------------

def corrected_sources(logged: LoggedInteraction) -> list[str]:
    """What the corrected reply cites: a full house JSON correction its own sources, a plain-text one the
    feedback's sources or else the original reply's (as training_data cites it)."""
    feedback = logged.feedback
    if feedback is not None and not feedback.plain_correction:
        reply = parse_reply(feedback.correction)
        if reply.format_ok:
            return reply.sources
    return logged.cited


def correction_cases(settings: Settings, limit: int, store: ObjectStore | None = None) -> list[Case]:
    """The latest `limit` human corrections as golden cases `correction:<interaction id>` (oldest first)."""
    if limit <= 0:
        return []
    corrected = [logged for logged in interactions_with_feedback(settings, store)
                 if logged.feedback is not None and logged.feedback.verdict == "correct"]
    return [Case(id=f"{CORRECTION_PREFIX}{logged.interaction.id}", question=logged.interaction.question,
                 gold_docs=corrected_sources(logged), checks=CORRECTION_CHECKS, origin="golden")
            for logged in corrected[-limit:]]


def load_regression_set(settings: Settings, suite: Suite, store: ObjectStore | None = None) -> RegressionSet:
    """The regression set a retrain on `suite` is gated by; the corrections take the suite's limits (length,
    banned phrases) as a suite named `<suite>-corrections`."""
    store = store or artifact_store(settings)
    corrections = correction_cases(settings, settings.regression_corrections_max, store)
    return RegressionSet(
        fixed=fixed_cases(settings, suite.name, store),
        corrections=suite.model_copy(update={"name": f"{suite.name}-corrections", "cases": corrections})
        if corrections else None,
    )

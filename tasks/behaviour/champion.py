"""Moving the champion pointer by hand (rollback, manual promotion) as one story each, for the CLI and flows.

Each move takes the namespace's `adapters` lock, the same one a retrain holds, so a rollback never lands in
the middle of a retrain comparing against the champion it is about to replace.
"""

from __future__ import annotations

from hybridops.tasks.behaviour.adapters import (
    ChampionPointer,
    ChampionPointerError,
    champion_version,
    promote,
    record_evaluation,
    rollback,
    show,
)
from hybridops.tasks.behaviour.retrain import RetrainOutcome
from hybridops.tasks.core.locks import namespace_lock
from hybridops.tasks.core.settings import Settings
from hybridops.tasks.core.story import QuietReporter, Reporter


def _waiting(reporter: Reporter):
    return lambda holder: reporter.stage(f"waiting for the adapters lock, held by {holder}")


def rollback_champion(settings: Settings, reason: str = "manual rollback", *,
                      reporter: Reporter | None = None) -> ChampionPointer:
    """Restore the previous champion (verified; possibly the bare base model) under the adapters lock."""
    reporter = reporter or QuietReporter()
    with namespace_lock(settings, "adapters", "rollback", on_wait=_waiting(reporter)):
        pointer = rollback(settings, reason=reason)
    reporter.stage(f"champion is now {pointer.version or 'the base model'}: {pointer.current.reason}")
    return pointer


def promote_champion(settings: Settings, version: str, reason: str = "manual promotion", *,
                     reporter: Reporter | None = None) -> tuple[ChampionPointer, RetrainOutcome]:
    """Make `version` the champion (its files must verify) under the adapters lock.

    Also returns the move as a RetrainOutcome (promoted, with the version's recorded scores), so the CLI can
    announce it with the same `hybridops.adapter.promoted` event a retrain's promotion sends."""
    reporter = reporter or QuietReporter()
    with namespace_lock(settings, "adapters", "promote", on_wait=_waiting(reporter)):
        try:
            previous = champion_version(settings)
            pointer = promote(settings, version, reason=reason, expected_champion=previous)
        except ChampionPointerError as exc:  # treated as no history: promote writes a fresh, valid pointer
            reporter.stage(f"warning: {exc}")
            previous = None
            pointer = promote(settings, version, reason=reason)
        manifest = show(settings, version)
        if manifest.decision is None:  # a manual promotion is the decision: no retrain picks it up as pending
            record_evaluation(settings, version, manifest.eval_scores, manifest.eval_n or 0,
                              {"promote": True, "reason": reason, "manual": True})
    outcome = RetrainOutcome(version=version, promoted=True, reason=reason, champion_version=previous,
                             challenger=manifest.eval_scores)
    return pointer, outcome

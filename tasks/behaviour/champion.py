"""Moving the champion pointer by hand (rollback, manual promotion) as one story each, for the CLI and flows.

Each move takes the namespace's `adapters` lock, the same one a retrain holds, so a rollback never lands in
the middle of a retrain comparing against the champion it is about to replace.
"""

from __future__ import annotations

from hybridops.tasks.behaviour.adapters import ChampionPointer, champion_version, promote, rollback, show
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
        previous = champion_version(settings)
        pointer = promote(settings, version, reason=reason)
    outcome = RetrainOutcome(version=version, promoted=True, reason=reason, champion_version=previous,
                             challenger=show(settings, version).eval_scores)
    return pointer, outcome

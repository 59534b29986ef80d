"""Flow `watch_landing`: poll the landing zone (folder or S3) and announce changes as Prefect events.

Steps: take the namespace's watcher lock (one watcher at a time, held in Weaviate like every namespace lock;
a newcomer waits for the previous run to hand over, a killed watcher's lease expires) -> poll with a persisted cursor, emitting ONE `hybridops.landing.changed` event per poll that saw
changes (a burst of files becomes one event) -> table artifact of what was announced.
refresh-index is triggered by that event; the refresh itself re-checks the landing zone when it ends.
"""

from __future__ import annotations

from contextlib import ExitStack

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, Field

from hybridops.tasks.core.errors import ConflictError
from hybridops.tasks.core.locks import namespace_lock
from hybridops.tasks.core.object_store import artifact_store, landing_zone
from hybridops.tasks.core.settings import Settings, load_settings
from hybridops.flows.orchestration.events import landing_changed
from hybridops.tasks.knowledge.landing_changes import (
    LandingChanges,
    Snapshot,
    WatchStats,
    diff,
    snapshot,
    watch,
)


class WatchParams(BaseModel):
    """How long and how often to poll."""

    run_for_seconds: float | None = Field(
        None, ge=0, description="Keep polling this long (default: settings.watch_run_minutes); 0 polls once."
    )
    poll_seconds: float | None = Field(None, gt=0, description="Pause between polls (default: settings).")
    settle_seconds: float = Field(
        0.1, ge=0, description="After a change, wait until the listing is quiet this long, so a burst is one event."
    )
    wait_for_slot_seconds: float = Field(
        90, ge=0, description="How long to wait for this namespace's previous watcher to hand over before exiting."
    )


def announce(settings: Settings, changes: LandingChanges, reason: str = "landing zone changed") -> None:
    """Emit one hybridops.landing.changed event for a set of changes (refresh-index is triggered by it)."""
    landing_changed(settings, changes.payload() | {"reason": reason})


@task(retries=3, retry_delay_seconds=[1, 5, 15], cache_policy=NO_CACHE)
def announce_follow_up(settings: Settings, before: Snapshot) -> int:
    """If the landing zone moved while a refresh ran, announce it again so a follow-up refresh starts."""
    changes = diff(before, snapshot(landing_zone(settings)))
    if changes:
        announce(settings, changes, reason="changed while a refresh ran: follow-up")
    return changes.count


def _lateness_s() -> float:
    """Seconds since this run was scheduled to start (0 outside a deployment run)."""
    from datetime import datetime, timezone

    from prefect.runtime import flow_run

    scheduled = flow_run.scheduled_start_time
    return max(0.0, (datetime.now(timezone.utc) - scheduled).total_seconds()) if scheduled else 0.0


@flow(name="watch_landing", log_prints=True)
def watch_landing(params: WatchParams = WatchParams()) -> WatchStats:
    """Poll the landing zone and emit one hybridops.landing.changed event per poll that saw changes."""
    settings, logger = load_settings(), get_run_logger()
    run_for = params.run_for_seconds if params.run_for_seconds is not None else settings.watch_run_minutes * 60
    if (late := _lateness_s()) > max(run_for, 60):  # a run missed while nothing served: newer ones cover it
        logger.info("skipping: scheduled %.0f s ago, a newer watcher run took over", late)
        return WatchStats(skipped_reason=f"stale run (scheduled {late:.0f} s ago)")
    with ExitStack() as held:
        try:  # two watchers would announce every change twice
            held.enter_context(namespace_lock(settings, "watcher", "watch-landing", timeout=params.wait_for_slot_seconds))
        except ConflictError:
            stats = WatchStats(skipped_reason="another watcher holds this namespace's watcher lock")
            logger.info(stats.skipped_reason)
            return stats
        logger.info("watching %s for %.0f s", settings.landing_uri, run_for)
        stats = watch(settings, landing_zone(settings), artifact_store(settings),
                      lambda changes: announce(settings, changes), run_for_s=run_for,
                      poll_s=params.poll_seconds or settings.watch_poll_seconds,
                      settle_s=params.settle_seconds, log=logger.info)
    if stats.announced:
        create_table_artifact(stats.announced, key=f"{settings.namespace.replace('_', '-')}-landing-changes",
                              description=f"landing changes announced: {stats.events} events in {stats.polls} polls")
    return stats


if __name__ == "__main__":
    watch_landing()

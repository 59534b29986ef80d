"""Flow `watch_landing`: notice landing-zone changes (folder or S3) and announce them as Prefect events.

Steps: take the namespace's watcher lock (one watcher at a time, held in Weaviate like every namespace lock;
a newcomer waits for the previous run to hand over, a killed watcher's lease expires) -> watch (watch_mode
"notify": filesystem notifications for a folder, each change set ONE event, plus a fallback listing at the
start and every watch_fallback_seconds; an S3 zone gets only that listing, its notifications reach the
webhook; "poll": list every watch_poll_seconds) -> artifacts: what was announced, and the run's counters
(events, keys, listings, LIST requests). Every announcement records its keys in the change feed before
`hybridops.landing.changed` is emitted; refresh-index is triggered by that event.
"""

from __future__ import annotations

from contextlib import ExitStack
from functools import partial
from typing import Literal

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
    publish,
    snapshot,
    watch,
)
from hybridops.tasks.knowledge.landing_notifications import BURST_MAX_S, watch_notified


class WatchParams(BaseModel):
    """How long to watch, and how."""

    run_for_seconds: float | None = Field(
        None, ge=0, description="Keep watching this long (default: settings.watch_run_minutes); 0 lists once."
    )
    mode: Literal["notify", "poll"] | None = Field(
        None, description="notify (notifications + fallback listing) or poll (default: settings.watch_mode)."
    )
    poll_seconds: float | None = Field(None, gt=0, description="poll mode: pause between polls (default: settings).")
    fallback_seconds: float | None = Field(
        None, gt=0, description="notify mode: list this often to catch missed notifications (default: the "
        "settings' rule, watch_fallback_seconds / watch_s3_lists_per_minute)."
    )
    settle_seconds: float = Field(
        0.2, ge=0, description="After a change, wait until the zone is quiet this long, so a burst is one event."
    )
    burst_max_seconds: float = Field(
        BURST_MAX_S, gt=0, description="notify mode: a burst still going on after this long is announced in parts."
    )
    wait_for_slot_seconds: float = Field(
        90, ge=0, description="How long to wait for this namespace's previous watcher to hand over before exiting."
    )


def announce(settings: Settings, changes: LandingChanges, reason: str = "landing zone changed") -> None:
    """Emit one hybridops.landing.changed event for a set of changes (refresh-index is triggered by it); the
    caller has recorded its keys in the change feed (landing_changes.publish)."""
    landing_changed(settings, changes.payload() | {"reason": reason})


@task(retries=3, retry_delay_seconds=[1, 5, 15], cache_policy=NO_CACHE)
def announce_follow_up(settings: Settings, before: Snapshot) -> int:
    """If the landing zone moved while a refresh ran, announce it again so a follow-up refresh starts."""
    changes = diff(before, snapshot(landing_zone(settings))).model_copy(update={"source": "follow-up"})
    if changes:
        publish(artifact_store(settings), changes,
                lambda c: announce(settings, c, reason="changed while a refresh ran: follow-up"))
    return changes.count


def _lateness_s() -> float:
    """Seconds since this run was scheduled to start (0 outside a deployment run)."""
    from datetime import datetime, timezone

    from prefect.runtime import flow_run

    scheduled = flow_run.scheduled_start_time
    return max(0.0, (datetime.now(timezone.utc) - scheduled).total_seconds()) if scheduled else 0.0


@flow(name="watch_landing", log_prints=True)
def watch_landing(params: WatchParams = WatchParams()) -> WatchStats:
    """Watch the landing zone and emit one hybridops.landing.changed event per change set."""
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
        mode = params.mode or settings.watch_mode
        logger.info("watching %s for %.0f s (%s mode)", settings.landing_uri, run_for, mode)
        landing, store = landing_zone(settings), artifact_store(settings)
        emit = partial(announce, settings)
        if mode == "poll":
            stats = watch(settings, landing, store, emit, run_for_s=run_for,
                          poll_s=params.poll_seconds or settings.watch_poll_seconds,
                          settle_s=params.settle_seconds, log=logger.info)
        else:
            stats = watch_notified(settings, landing, store, emit, run_for_s=run_for,
                                   settle_s=params.settle_seconds, burst_max_s=params.burst_max_seconds,
                                   fallback_s=params.fallback_seconds, log=logger.info)
    _report(settings, stats)
    return stats


def _report(settings: Settings, stats: WatchStats) -> None:
    """Two artifacts: the announcements (when there were any) and the run's counters, whose LIST requests per
    second say what watching costs while idle."""
    prefix = settings.namespace.replace("_", "-")
    summary = (f"{stats.events} events ({stats.keys_announced} keys), {stats.polls} listings, "
               f"{stats.list_requests} LIST requests in {stats.seconds:.0f} s ({stats.mode} mode)")
    if stats.announced:
        create_table_artifact(stats.announced, key=f"{prefix}-landing-changes",
                              description=f"landing changes announced: {summary}")
    counters = stats.model_dump(exclude={"announced", "skipped_reason", "sources"})
    counters["list_requests_per_s"] = round(stats.list_requests / stats.seconds, 6) if stats.seconds else 0.0
    counters["sources"] = ", ".join(f"{k}: {v}" for k, v in sorted(stats.sources.items()))
    create_table_artifact([counters], key=f"{prefix}-watch-stats", description=f"watch-landing run: {summary}")


if __name__ == "__main__":
    watch_landing()

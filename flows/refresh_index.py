"""Flow `refresh_index`: the refresh story (tasks/knowledge/refresh.py) as a Prefect run.

The story takes the namespace's index lock (the same one `hybridops refresh` takes), so two refreshes never
overlap whoever starts them. Here each step is a Prefect task with transient-only retries, each batch of
documents is its own task (on Dask when the settings ask for it, see submit_batches), progress goes to
progress artifacts, and a landing that arrived during a full run is announced again. Then: a markdown
artifact and the hybridops.index.refreshed event.

A landing event starts a targeted run (params.targeted: only the change feed's keys); the schedule the full
reconcile. A targeted run never re-announces: that lists the whole landing zone, and a change arriving
meanwhile has its own feed entry and event.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.task_runners import ThreadPoolTaskRunner

from hybridops.flows.orchestration.dask import refresh_task_runner
from hybridops.flows.orchestration.events import index_refreshed, mass_delete_blocked
from hybridops.flows.orchestration.reporting import TRANSIENT_RETRIES, PrefectReporter, prefect_step
from hybridops.flows.watch_landing import announce_follow_up
from hybridops.tasks.core.settings import Settings, load_settings
from hybridops.tasks.knowledge.rebuild import Target
from hybridops.tasks.knowledge.refresh import MassDeletionBlocked, RefreshError, RefreshRequest, refresh
from hybridops.tasks.knowledge.refresh_apply import run_batch
from hybridops.tasks.knowledge.refresh_plan import BatchResult, WorkItem
from hybridops.tasks.knowledge.refresh_report import RefreshReport, report_markdown


class RefreshParams(RefreshRequest):
    """Parameters of a refresh run."""


@task(name="index-batch", **TRANSIENT_RETRIES)
def index_batch(settings: Settings, target: Target, items: list[WorkItem], deep: bool) -> BatchResult:
    """Validate, chunk, embed changed chunks, upsert and delete stale chunks for one batch of documents."""
    return run_batch(settings, target, items, deep)


def submit_batches(settings: Settings, target: Target, batches: list[list[WorkItem]], deep: bool) -> Iterator[BatchResult]:
    """Every batch as a task, results in order: on Dask when the settings ask for it (HYBRIDOPS_DASK_WORKERS or
    _ADDRESS, flows/orchestration/dask.py) and there is more than one batch, else on the flow's own runner.

    Decided here, at run time, from the run's settings, so runs of `serve` and of the production topology's
    workers (which import the flow by its module path) scale out alike; a lone batch (a landing's targeted
    refresh) never waits for a cluster to start."""
    dask = refresh_task_runner(settings) if len(batches) > 1 else None
    with dask or contextlib.nullcontext():
        calls = [{"settings": settings, "target": target, "items": batch, "deep": deep} for batch in batches]
        futures = [dask.submit(index_batch, call) if dask else index_batch.submit(**call) for call in calls]
        for future in futures:
            yield future.result()


@flow(name="refresh_index", log_prints=True, task_runner=ThreadPoolTaskRunner(max_workers=1))
def refresh_index(params: RefreshParams = RefreshParams()) -> RefreshReport:
    """Reconcile the index with the landing zone; never two at once per namespace (the index lock)."""
    settings = load_settings()
    try:  # the story calls follow_up for a full run only
        report = refresh(settings, params, step=prefect_step, reporter=PrefectReporter(),
                         batch_runner=submit_batches, follow_up=lambda before: announce_follow_up(settings, before))
    except MassDeletionBlocked as blocked:  # nothing was written: say so in the UI, then fail the run (red)
        mass_delete_blocked(settings, blocked)
        create_markdown_artifact(blocked_markdown(blocked), key=f"{settings.namespace.replace('_', '-')}-index-refresh",
                                 description="Index refresh blocked: mass deletion")
        raise
    create_markdown_artifact(report_markdown(report, settings.namespace),
                             key=f"{settings.namespace.replace('_', '-')}-index-refresh", description="Index refresh")
    if report.gate is not None and report.gate.status == "failed":
        raise RefreshError(f"rebuilt generation {report.collection} not promoted: {report.gate.reason}")
    index_refreshed(settings, report)
    return report


def blocked_markdown(blocked: MassDeletionBlocked) -> str:
    """The artifact of a blocked run: what would have gone and how to confirm."""
    d = blocked.details
    examples = "".join(f"- `{doc_id}`\n" for doc_id in d.get("examples", []))
    targeted = d.get("mode") == "targeted"  # it counts the live index in chunk objects, not documents
    live = f"{d.get('live_objects')} chunk objects" if targeted else d.get("live_documents")
    params = "params.allow_mass_delete=true" + (", params.targeted=true" if targeted else "")
    return (f"# {d.get('mode', 'refresh')} blocked: mass deletion\n\nNothing was changed. {d.get('reason', '')}.\n\n"
            f"| live index | would be removed | landed | allowed share |\n|---|---|---|---|\n"
            f"| {live} | {d.get('would_remove')} | {d.get('landed')} | "
            f"{d.get('max_share', 0):.0%} (when more than {d.get('min_docs')} documents) |\n\n"
            f"Landing zone: `{d.get('landing')}`. If it is right, confirm: run this flow again with "
            f"`{params}`, or `{d.get('command', 'hybridops refresh --allow-mass-delete')}`.\n\n"
            + (f"Some of the documents that would go:\n\n{examples}" if examples else ""))


if __name__ == "__main__":
    refresh_index()

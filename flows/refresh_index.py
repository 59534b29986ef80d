"""Flow `refresh_index`: reconcile the Weaviate index with the landing zone, embedding only what changed.

Steps: take the namespace's global concurrency slot (strict) -> choose the target generation and plan from
the landing listing + the index's own state -> index batches of documents (validate, chunk, embed changed
chunks, upsert, delete stale) -> delete vanished documents -> for a rebuild, gate on the golden set and flip
the alias -> markdown + progress artifacts -> emit hybridops.index.refreshed.
"""

from __future__ import annotations

import time

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE
from prefect.concurrency.sync import concurrency
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import BaseModel, Field

from hybridops.flows.orchestration.events import index_refreshed
from hybridops.flows.watch_landing import announce_follow_up, landing_snapshot
from hybridops.tasks.knowledge.rebuild import Target
from hybridops.tasks.knowledge.refresh import BatchResult, RefreshError, RefreshPlan, WorkItem, is_transient
from hybridops.tasks.knowledge.refresh_report import RefreshReport, report_markdown
from hybridops.tasks.core.settings import Settings, load_settings


class RefreshParams(BaseModel):
    """Parameters of a refresh run."""

    full: bool = Field(False, description="Build a new index generation and flip the alias only if it passes the gate.")
    verify: bool = Field(False, description="Deep-check every indexed object against the landing zone and repair.")
    batch_size: int | None = Field(None, ge=1, description="Documents per batch task (default: settings).")


def _retry_transient(task, task_run, state) -> bool:
    """Retry only when the landing zone, store or Weaviate was unreachable."""
    try:
        state.result()
    except Exception as exc:  # noqa: BLE001 - inspecting the failure
        return is_transient(exc)
    return False


IO_TASK = dict(retries=3, retry_delay_seconds=[2, 10, 30], retry_condition_fn=_retry_transient, cache_policy=NO_CACHE)


def concurrency_limit_name(settings: Settings) -> str:
    return f"{settings.namespace}-refresh"


@task(**IO_TASK)
def ensure_concurrency_limit(settings: Settings) -> str:
    """Create the namespace's refresh limit (1 slot) if missing: a strict limit must exist."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    name = concurrency_limit_name(settings)
    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            try:
                client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
            except ObjectAlreadyExists:  # created by a concurrent run
                pass
    return name


@task(**IO_TASK)
def plan_refresh(settings: Settings, full: bool, verify: bool) -> RefreshPlan:
    """Choose the target generation and diff the landing listing against the index's own state."""
    from hybridops.tasks.knowledge.embeddings import load_embedder
    from hybridops.tasks.core.object_store import landing_zone
    from hybridops.tasks.knowledge.rebuild import choose_target
    from hybridops.tasks.knowledge.refresh import make_plan
    from hybridops.tasks.core.weaviate_connection import weaviate_session

    with weaviate_session(settings) as client:
        target = choose_target(client, settings, load_embedder(settings), full)
        return make_plan(client, landing_zone(settings), target, deep=verify)


@task(**IO_TASK)
def index_batch(settings: Settings, target: Target, items: list[WorkItem], deep: bool) -> BatchResult:
    """Validate, chunk, embed changed chunks, upsert and delete stale chunks for one batch of documents."""
    from hybridops.tasks.knowledge.embedding_cache import open_cache
    from hybridops.tasks.knowledge.embeddings import load_embedder
    from hybridops.tasks.core.object_store import artifact_store, landing_zone
    from hybridops.tasks.knowledge.refresh import apply_batch
    from hybridops.tasks.core.weaviate_connection import weaviate_session

    with weaviate_session(settings) as client, open_cache(settings) as cache:
        return apply_batch(settings, client, landing_zone(settings), artifact_store(settings),
                           load_embedder(settings), cache, target, items, deep)


@task(**IO_TASK)
def finish_refresh(settings: Settings, plan: RefreshPlan, results: list[BatchResult], started: float) -> RefreshReport:
    """Delete vanished documents, gate + flip a rebuild, sync the quarantine area, count."""
    from hybridops.tasks.knowledge.embeddings import load_embedder
    from hybridops.tasks.core.object_store import artifact_store, landing_zone
    from hybridops.tasks.knowledge.refresh import apply_deletions, finish_run
    from hybridops.tasks.core.weaviate_connection import weaviate_session

    with weaviate_session(settings) as client:
        deleted = apply_deletions(client, plan.target, plan.deletions)
        return finish_run(settings, client, load_embedder(settings), landing_zone(settings),
                          artifact_store(settings), plan, results, deleted, started)


@flow(name="refresh_index", log_prints=True, task_runner=ThreadPoolTaskRunner(max_workers=1))
def refresh_index(params: RefreshParams = RefreshParams()) -> RefreshReport:
    """Reconcile the index with the landing zone; never two at once per namespace."""
    settings = load_settings()
    started = time.perf_counter()
    with concurrency(ensure_concurrency_limit(settings), occupy=1, strict=True):
        landed_before = landing_snapshot(settings)
        plan = plan_refresh(settings, params.full, params.verify)
        progress = create_progress_artifact(0.0, description=f"refresh: {len(plan.work)} documents to look at")
        results: list[BatchResult] = []
        done = 0
        batches = list(plan.batches(params.batch_size or settings.refresh_batch_docs))
        futures = [index_batch.submit(settings, plan.target, batch, plan.deep) for batch in batches]  # Dask-able
        for batch, future in zip(batches, futures):
            results.append(future.result())
            done += len(batch)
            update_progress_artifact(progress, 100.0 * done / max(1, len(plan.work)))
        report = finish_refresh(settings, plan, results, started)
        update_progress_artifact(progress, 100.0)
        announce_follow_up(settings, landed_before)  # landings during the run: a threshold trigger may drop them
    create_markdown_artifact(report_markdown(report, settings.namespace),
                             key=f"{settings.namespace.replace('_', '-')}-index-refresh", description="Index refresh")
    if report.gate is not None and report.gate.status == "failed":
        raise RefreshError(f"rebuilt generation {report.collection} not promoted: {report.gate.reason}")
    index_refreshed(settings, report)
    return report


if __name__ == "__main__":
    refresh_index()

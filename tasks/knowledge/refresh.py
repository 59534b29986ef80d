"""The refresh story, told once: the CLI (`hybridops refresh`) and the flows (refresh-index, rebuild-index) run it.

Take the namespace's index lock -> choose the target generation -> plan from the landing listing and the
index's own state -> index the batches (in this process batch i is written while batch i+1 is prepared; a
flow may hand them to Prefect tasks, e.g. on Dask) -> delete vanished documents -> for a rebuild, carry
quarantined documents over, gate on the golden set and flip the alias -> sync quarantine, count, report.
Steps go through `step` (direct calls, or Prefect tasks with retries) and progress through a Reporter.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from pydantic import BaseModel, Field

from hybridops.tasks.core.errors import ConflictError, HybridopsError
from hybridops.tasks.core.locks import namespace_lock
from hybridops.tasks.core.object_store import ObjectStore, artifact_store, landing_zone
from hybridops.tasks.core.settings import Settings
from hybridops.tasks.core.story import QuietReporter, Reporter, Step, direct
from hybridops.tasks.core.weaviate_connection import weaviate_session
from hybridops.tasks.knowledge.embedding_cache import EmbeddingCache, open_cache
from hybridops.tasks.knowledge.embeddings import load_embedder
from hybridops.tasks.knowledge.index import iter_records, read_index_state
from hybridops.tasks.knowledge.landing import landed_documents, require_landing_root
from hybridops.tasks.knowledge.landing_changes import Snapshot, snapshot
from hybridops.tasks.knowledge.rebuild import Target, choose_target, finish_rebuild, gate_rebuild, mass_deletion
from hybridops.tasks.knowledge.refresh_apply import (
    apply_deletions,
    carry_over_last_good,
    commit_batch,
    finish_refresh,
    prepare_batch,
)
from hybridops.tasks.knowledge.refresh_plan import BatchResult, RefreshPlan, WorkItem, plan_refresh
from hybridops.tasks.knowledge.refresh_report import RefreshReport

BatchRunner = Callable[[Settings, Target, list[list[WorkItem]], bool], Iterable[BatchResult]]
"""Runs the batches of a plan and yields one BatchResult per batch, in order (a flow: one task each)."""


class RefreshError(HybridopsError):
    """The refresh could not complete; nothing it did is reported as done (the next run repairs)."""


class MassDeletionBlocked(ConflictError):
    """The run would remove a large share of the live index's documents: nothing was written (exit 5).

    A conflict, not bad input: the request is fine, but the landing zone and the live index disagree by
    more than is safe to reconcile unattended (an unmounted disk, a wrong prefix); a human confirms it.
    Never retried (not transient)."""

    def __init__(self, message: str, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.details = details or {}

    def __reduce__(self):  # picklable (Prefect may carry it between processes)
        return type(self), (str(self), self.details)

    @classmethod
    def of(cls, settings: Settings, plan: RefreshPlan, reason: str) -> MassDeletionBlocked:
        rebuild = plan.target.rebuild
        command = "hybridops refresh --full --allow-mass-delete" if rebuild else "hybridops refresh --allow-mass-delete"
        flow = "rebuild-index" if rebuild else "refresh-index"
        confirm = (f"if the landing zone ({settings.landing_uri}) is right, confirm with `{command}` "
                   f"(flow {flow}: params.allow_mass_delete=true)")
        mode = "rebuild" if rebuild else "refresh"
        details = {"mode": mode, "collection": plan.target.generation.name, "landing": settings.landing_uri,
                   "live_documents": plan.live_documents, "would_remove": len(plan.live_losses),
                   "landed": plan.landed, "examples": plan.live_losses[:20],
                   "max_share": settings.refresh_max_delete_share,
                   "min_docs": settings.refresh_mass_delete_min_docs, "reason": reason, "confirm": confirm,
                   "command": command}
        return cls(f"{mode} blocked, nothing was changed: {reason}; {confirm}", details)


class RefreshRequest(BaseModel):
    """What to refresh: what the CLI flags and the flow's parameter form offer."""

    full: bool = Field(False, description="Build a new index generation and flip the alias only if it passes the gate.")
    verify: bool = Field(False, description="Deep-check every indexed object against the landing zone and repair.")
    batch_size: int | None = Field(None, ge=1, description="Documents per batch (default: settings.refresh_batch_docs).")
    allow_mass_delete: bool = Field(False, description="Confirm a run that removes more than "
                                    "settings.refresh_max_delete_share of the live index's documents.")


def refresh(
    settings: Settings,
    request: RefreshRequest | None = None,
    *,
    step: Step = direct,
    reporter: Reporter | None = None,
    embedder=None,
    batch_runner: BatchRunner | None = None,
    follow_up: Callable[[Snapshot], Any] | None = None,
) -> RefreshReport:
    """Reconcile the index with the landing zone under the namespace's index lock; a rebuild when request.full.

    batch_runner: how the batches run (default: in this process, pipelined). follow_up: called with the
    landing snapshot taken when the lock was acquired, before it is released (the flow announces what
    landed meanwhile)."""
    request = request or RefreshRequest()
    reporter = reporter or QuietReporter()
    embedder = embedder or load_embedder(settings)  # before the lock: loading a model holds nobody up
    operation = "rebuild" if request.full else "refresh"
    with namespace_lock(settings, "index", operation, on_wait=lambda holder: reporter.stage(f"waiting for {holder}")):
        started = time.perf_counter()
        before = step(landing_snapshot, settings) if follow_up else None
        landing, store = landing_zone(settings), artifact_store(settings)
        with weaviate_session(settings) as client, open_cache(settings) as cache:
            target = step(choose_target, client, settings, embedder, request.full)
            plan = step(make_plan, client, landing, target, request.verify)
            guard_deletions(settings, plan, request.allow_mass_delete)  # before anything is written
            reporter.stage(f"{operation} of {target.generation.name} ({target.reason}): {len(plan.work)} of "
                           f"{plan.landed} landed documents to look at, {len(plan.deletions)} to delete")
            batches = list(plan.batches(request.batch_size or settings.refresh_batch_docs))
            runner = batch_runner or pipelined(client, landing, store, embedder, cache)
            results: list[BatchResult] = []
            done = len(plan.unchanged)
            reporter.progress("documents", done, plan.landed)
            for batch, result in zip(batches, runner(settings, target, batches, plan.deep)):
                results.append(result)
                done += len(batch)
                reporter.progress("documents", done, plan.landed, info=f"{sum(r.embedded for r in results)} embedded")
            deleted = step(apply_deletions, client, store, target, plan.deletions)
            gate, flipped, pruned = None, False, []
            if target.rebuild:
                results.append(step(carry_over_last_good, client, embedder, cache, target, results))
                reporter.stage(f"gating {target.generation.name} on the golden retrieval set")
                gate = step(gate_rebuild, settings, client, embedder, target, landing, request.allow_mass_delete)
                flipped, pruned = step(finish_rebuild, settings, client, target, gate)
            report = step(finish_refresh, settings, client, store, plan, results, deleted,
                          time.perf_counter() - started, gate, flipped, pruned)
        if follow_up:
            follow_up(before)
    return report


def run_refresh(settings: Settings, full: bool = False, verify: bool = False, batch_size: int | None = None,
                embedder=None, allow_mass_delete: bool = False) -> RefreshReport:
    """The refresh story in this process, quietly (tests, benchmarks, library use)."""
    return refresh(settings, RefreshRequest(full=full, verify=verify, batch_size=batch_size,
                                            allow_mass_delete=allow_mass_delete), embedder=embedder)


def guard_deletions(settings: Settings, plan: RefreshPlan, allowed: bool) -> None:
    """Raise MassDeletionBlocked when the plan would remove too much of the live index, unless confirmed."""
    reason = mass_deletion(len(plan.live_losses), plan.live_documents, settings.refresh_max_delete_share,
                           settings.refresh_mass_delete_min_docs, rebuild=plan.target.rebuild)
    if reason and not allowed:
        raise MassDeletionBlocked.of(settings, plan, reason)


def landing_snapshot(settings: Settings) -> Snapshot:
    """Key -> version of every landed document (compared with the landing zone when the run ends)."""
    return snapshot(landing_zone(settings))


def make_plan(client, landing: ObjectStore, target: Target, deep: bool) -> RefreshPlan:
    """Landing listing + index state of the target generation (+ the live one's ids for a rebuild) -> plan.

    A landing root that is missing or cannot be listed raises: it is never read as 'everything was deleted'."""
    require_landing_root(landing)
    landed = landed_documents(landing)
    state = read_index_state(client.collections.use(target.generation.name))
    live_ids = None
    if target.rebuild and target.live is not None:
        live_ids = {r.doc_id for r in iter_records(client.collections.use(target.live.name))}
    return plan_refresh(landed, state, target, deep, live_ids)


def pipelined(client, landing: ObjectStore, store: ObjectStore, embedder, cache: EmbeddingCache) -> BatchRunner:
    """The in-process batch runner: batch i is written by a writer thread while batch i+1 is read, validated,
    chunked and embedded (embedding is the bottleneck; the index writes hide behind it)."""

    def run(settings: Settings, target: Target, batches: list[list[WorkItem]], deep: bool) -> Iterator[BatchResult]:
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="index-writer") as writer:
            pending: Future[BatchResult] | None = None
            for batch in batches:
                prepared = prepare_batch(settings, client, landing, store, embedder, cache, target, batch, deep)
                if pending is not None:
                    yield pending.result()
                pending = writer.submit(commit_batch, client, target, prepared)
            if pending is not None:
                yield pending.result()

    return run

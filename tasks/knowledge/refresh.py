"""The refresh story, told once: the CLI (`hybridops refresh`) and the flows (refresh-index, rebuild-index) run it.

Take the namespace's index lock -> read the landing change feed -> choose the target generation -> plan from
the landing listing and the index's own state -> index the batches (in this process batch i is written while
batch i+1 is prepared; a flow may hand them to Prefect tasks, e.g. on Dask) -> delete vanished documents ->
for a rebuild, carry quarantined documents over, gate on the golden set and flip the alias -> sync
quarantine, count, report -> consume the feed entries the run covered.
Steps go through `step` (direct calls, or Prefect tasks with retries) and progress through a Reporter.

Two ways to plan (tasks/knowledge/change_feed.py says who writes the feed):
- full reconcile (the default, the schedule): the whole listing and index state; it covers, and so consumes,
  every feed entry there when it started (unreadable ones too) and repairs whatever a targeted run missed.
- targeted (a landing event): only the keys of the pending entries (+ request.extra_keys), each looked up with
  `info(key)` and its index records, so the cost follows the change, not the corpus. Nothing pending: a
  quick no-op report, which is how N events during one refresh coalesce into one run's work. Entries are
  consumed only after the run finished: a run that dies leaves them for the next (applying is idempotent).
  With nothing live yet or a new embedding model, the target is a rebuild, which plans everything. A
  targeted run blocked by the mass-deletion guard leaves its entries pending (so later targeted runs stay
  blocked) until a confirmed run (`--targeted --allow-mass-delete`, or a confirmed full one) applies them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from pydantic import BaseModel, Field, model_validator

from hybridops.tasks.core.errors import ConflictError, HybridopsError
from hybridops.tasks.core.locks import namespace_lock
from hybridops.tasks.core.object_store import ObjectStore, artifact_store, landing_zone
from hybridops.tasks.core.settings import Settings
from hybridops.tasks.core.story import QuietReporter, Reporter, Step, direct
from hybridops.tasks.core.weaviate_connection import weaviate_session
from hybridops.tasks.knowledge.change_feed import PendingChanges, consume, pending_changes
from hybridops.tasks.knowledge.embedding_cache import EmbeddingCache, open_cache
from hybridops.tasks.knowledge.embeddings import load_embedder
from hybridops.tasks.knowledge.index import count_objects, iter_records, records_of_docs
from hybridops.tasks.knowledge.landing import iter_landed_documents, require_landing_root
from hybridops.tasks.knowledge.landing_changes import Snapshot, snapshot
from hybridops.tasks.knowledge.rebuild import Target, choose_target, finish_rebuild, gate_rebuild, mass_deletion
from hybridops.tasks.knowledge.refresh_apply import (
    apply_deletions,
    carry_over_last_good,
    commit_batch,
    finish_refresh,
    nothing_pending,
    prepare_batch,
)
from hybridops.tasks.knowledge.refresh_plan import (
    BatchResult,
    RefreshPlan,
    WorkItem,
    attach_records,
    digest_records,
    plan_from_digests,
    plan_targeted,
    targeted_mass_deletion,
    targeted_scope,
)
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
        rebuild, targeted = plan.target.rebuild, plan.scope is not None
        mode = "rebuild" if rebuild else "targeted" if targeted else "refresh"
        command = {"rebuild": "hybridops refresh --full --allow-mass-delete",
                   "targeted": "hybridops refresh --targeted --allow-mass-delete",
                   "refresh": "hybridops refresh --allow-mass-delete"}[mode]
        flow = "rebuild-index" if rebuild else "refresh-index"
        params = "params.allow_mass_delete=true" + (", params.targeted=true" if targeted else "")
        confirm = (f"if the landing zone ({settings.landing_uri}) is right, confirm with `{command}` "
                   f"(flow {flow}: {params})")
        details = {"mode": mode, "collection": plan.target.generation.name, "landing": settings.landing_uri,
                   "live_documents": plan.live_documents, "would_remove": len(plan.live_losses),
                   "landed": plan.landed, "examples": plan.live_losses[:20],
                   "max_share": settings.refresh_max_delete_share,
                   "min_docs": settings.refresh_mass_delete_min_docs, "reason": reason, "confirm": confirm,
                   "command": command}
        if targeted:
            details |= {"live_objects": plan.live_objects,
                        "would_remove_objects": sum(plan.deletions.get(d, 0) for d in plan.live_losses)}
        return cls(f"{mode} blocked, nothing was changed: {reason}; {confirm}", details)


class RefreshRequest(BaseModel):
    """What to refresh: what the CLI flags and the flow's parameter form offer."""

    full: bool = Field(False, description="Build a new index generation and flip the alias only if it passes the gate.")
    targeted: bool = Field(False, description="Plan only the landing keys the change feed holds (plus `extra_keys`), "
                           "not the whole landing zone: what a landing event starts. Nothing pending: a quick no-op.")
    extra_keys: list[str] = Field(default_factory=list, description="Landing keys a targeted run plans besides "
                                  "the change feed's (document keys; the training area is ignored).")
    verify: bool = Field(False, description="Deep-check every indexed object against the landing zone and repair.")
    batch_size: int | None = Field(None, ge=1, description="Documents per batch (default: settings.refresh_batch_docs).")
    allow_mass_delete: bool = Field(False, description="Confirm a run that removes more than "
                                    "settings.refresh_max_delete_share of the live index's documents.")

    @model_validator(mode="after")
    def _targeted_or_full(self) -> RefreshRequest:
        if self.full and self.targeted:
            raise ValueError("a rebuild (full) plans the whole landing zone: it is never targeted")
        if self.extra_keys and not self.targeted:
            raise ValueError("extra_keys are planned by a targeted refresh: set targeted as well")
        return self


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
    """Reconcile the index with the landing zone under the namespace's index lock; a rebuild when request.full,
    only the change feed's keys when request.targeted.

    batch_runner: how the batches run (default: in this process, pipelined). follow_up: called with the
    landing snapshot taken when the lock was acquired, before it is released (the flow announces what
    landed meanwhile); never for a targeted run, whose snapshot would list the whole landing zone."""
    request = request or RefreshRequest()
    reporter = reporter or QuietReporter()
    if not request.targeted:  # before the lock: loading a model holds nobody up
        embedder = embedder or load_embedder(settings)
    operation = "rebuild" if request.full else "targeted refresh" if request.targeted else "refresh"
    with namespace_lock(settings, "index", operation, on_wait=lambda holder: reporter.stage(f"waiting for {holder}")):
        started = time.perf_counter()
        store = artifact_store(settings)
        feed = step(pending_changes, store)  # before the landing zone is read: the plan covers what it names
        scope = targeted_scope(feed.changed_keys, request.extra_keys) if request.targeted else None
        before = step(landing_snapshot, settings) if follow_up and scope is None else None
        with weaviate_session(settings) as client:
            if scope == []:
                reporter.stage(f"targeted refresh: nothing pending ({len(feed.entries)} feed entries)")
                report = step(nothing_pending, settings, client, time.perf_counter() - started)
            else:  # a targeted run loads the model only now, when there is something to embed
                report = _reconcile(settings, client, store, request, scope, embedder or load_embedder(settings),
                                    step, reporter, batch_runner, started)
        covered = covered_entries(feed, report)
        if covered:
            step(consume, store, covered)  # only now: a run that died before this point leaves them pending
        report = report.model_copy(update={"feed_consumed": covered})
        if before is not None:
            follow_up(before)
    return report


def _reconcile(settings: Settings, client, store: ObjectStore, request: RefreshRequest, scope: list[str] | None,
               embedder, step: Step, reporter: Reporter, batch_runner: BatchRunner | None,
               started: float) -> RefreshReport:
    """Plan (all of the landing zone, or just `scope`), guard, run the batches, delete, gate a rebuild, report."""
    landing = landing_zone(settings)
    operation = "rebuild" if request.full else "targeted refresh" if scope is not None else "refresh"
    with open_cache(settings) as cache:
        target = step(choose_target, client, settings, embedder, request.full)
        if scope is not None and target.rebuild:
            reporter.stage(f"targeted refresh needs a rebuild ({target.reason}): planning the whole landing zone")
            scope = None
        if scope is None:
            plan = step(make_plan, client, landing, target, request.verify)
        else:
            plan = step(make_targeted_plan, client, landing, target, scope, request.verify)
        guard_deletions(settings, plan, request.allow_mass_delete)  # before anything is written
        scoped = f" of the {len(plan.scope)} targeted keys" if plan.scope is not None else ""
        reporter.stage(f"{operation} of {target.generation.name} ({target.reason}): {len(plan.work)} of "
                       f"{plan.landed} landed documents{scoped} to look at, {len(plan.deletions)} to delete")
        batches = list(plan.batches(request.batch_size or settings.refresh_batch_docs))
        runner = batch_runner or pipelined(client, landing, store, embedder, cache)
        results: list[BatchResult] = []
        done = plan.unchanged
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
        return step(finish_refresh, settings, client, store, plan, results, deleted,
                    time.perf_counter() - started, gate, flipped, pruned)


def covered_entries(feed: PendingChanges, report: RefreshReport) -> list[str]:
    """The feed entries a finished run applied: a targeted run the readable ones it planned; a full reconcile
    every one there when it started, unreadable ones too (it planned everything); a rebuild only once it went
    live (a rejected generation applied nothing to the live one)."""
    if report.mode == "targeted":
        return list(feed.entries)
    if report.mode == "rebuild" and not report.alias_flipped:
        return []
    return [*feed.entries, *feed.unreadable]


def run_refresh(settings: Settings, full: bool = False, verify: bool = False, batch_size: int | None = None,
                embedder=None, allow_mass_delete: bool = False, targeted: bool = False) -> RefreshReport:
    """The refresh story in this process, quietly (tests, benchmarks, library use)."""
    return refresh(settings, RefreshRequest(full=full, targeted=targeted, verify=verify, batch_size=batch_size,
                                            allow_mass_delete=allow_mass_delete), embedder=embedder)


def guard_deletions(settings: Settings, plan: RefreshPlan, allowed: bool) -> None:
    """Raise MassDeletionBlocked when the plan would remove too much of the live index, unless confirmed."""
    share, floor = settings.refresh_max_delete_share, settings.refresh_mass_delete_min_docs
    if plan.scope is None:
        reason = mass_deletion(len(plan.live_losses), plan.live_documents or 0, share, floor,
                               rebuild=plan.target.rebuild)
    else:
        reason = targeted_mass_deletion(plan, share, floor)
    if reason and not allowed:
        raise MassDeletionBlocked.of(settings, plan, reason)


def landing_snapshot(settings: Settings) -> Snapshot:
    """Key -> version of every landed document (compared with the landing zone when the run ends)."""
    return snapshot(landing_zone(settings))


def make_plan(client, landing: ObjectStore, target: Target, deep: bool) -> RefreshPlan:
    """Index state of the target generation folded into digests (+ the live one's ids for a rebuild), the
    landing listing walked once against them, then the records of just the documents that need work.

    A landing root that is missing or cannot be listed raises: it is never read as 'everything was deleted'."""
    require_landing_root(landing)
    collection = client.collections.use(target.generation.name)
    digests = digest_records(iter_records(collection))
    live_ids = None
    if target.rebuild and target.live is not None:
        live_ids = {r.doc_id for r in iter_records(client.collections.use(target.live.name))}
    plan = plan_from_digests(iter_landed_documents(landing), digests, target, deep, live_ids)
    return attach_records(plan, records_of_docs(collection, [w.doc_id for w in plan.work if w.indexed_chunks]))


def make_targeted_plan(client, landing: ObjectStore, target: Target, keys: list[str], deep: bool) -> RefreshPlan:
    """Each key's listing entry (`info`: present, or absent) + the index records of just those documents +
    the live generation's object count (for the guard) -> plan. Reads per key, never the whole landing zone
    or index. The landing root is checked first: a missing one would make every key look deleted."""
    require_landing_root(landing)
    present = [info for key in keys if (info := landing.info(key)) is not None]
    collection = client.collections.use(target.generation.name)
    return plan_targeted(keys, present, records_of_docs(collection, keys), target, deep, count_objects(collection))


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

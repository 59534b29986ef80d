"""Reconcile the Weaviate index with the landing zone: plan, apply in document batches, verify, gate, flip.

Truth about what is indexed is read from Weaviate itself: every chunk object carries its document id,
chunk position/count and the hashes of its source bytes, text and metadata. Writes are ordered so a crash
anywhere converges on the next run: a document's new chunks are upserted under deterministic ids first,
then its stale chunks are deleted; a half-written document is visibly inconsistent and is redone.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from collections.abc import Callable, Iterator
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field

from hybridops.tasks.core.contracts import Candidate, make_candidate, validate_documents
from hybridops.tasks.knowledge.chunking import chunk_document
from hybridops.tasks.knowledge.documents import Document
from hybridops.tasks.knowledge.embedding_cache import EmbeddingCache, embed_cached, open_cache, text_hash
from hybridops.tasks.knowledge.index import (
    ChunkObject,
    ChunkRecord,
    chunk_uuid,
    count_objects,
    delete_docs,
    delete_objects,
    fetch_vectors,
    list_generations,
    meta_pairs,
    read_index_state,
    update_properties,
    upsert_chunks,
)
from hybridops.tasks.knowledge.landing import landed_documents
from hybridops.tasks.core.object_store import ObjectInfo, ObjectStore, ObjectStoreError, artifact_store, landing_zone
from hybridops.tasks.core.quarantine import prune as prune_quarantine
from hybridops.tasks.core.quarantine import quarantine
from hybridops.tasks.knowledge.rebuild import Target, choose_target, finish_rebuild, gate_rebuild
from hybridops.tasks.knowledge.refresh_report import (
    ChunkCounts,
    DocumentCounts,
    GateResult,
    Quarantined,
    RefreshReport,
    VerifyFindings,
)
from hybridops.tasks.core.settings import Settings
from hybridops.tasks.core.weaviate_connection import weaviate_session
from hybridops.tasks.core.errors import HybridopsError

Outcome = Literal["added", "updated", "metadata_only", "unchanged", "deleted", "quarantined"]
OUTCOMES: tuple[Outcome, ...] = ("added", "updated", "metadata_only", "unchanged", "deleted", "quarantined")
_COMPARED = ("chunk_index", "chunk_count", "text_hash", "doc_text_hash", "meta_hash", "source_hash",
             "chunking", "embedding_model")


class RefreshError(HybridopsError):
    """The refresh could not complete; nothing it did is reported as done (the next run repairs)."""


# Typed hand-offs --------------------------------------------------------------------------------


class WorkItem(BaseModel):
    """A landed document that needs a look (bytes read, maybe parsed) plus what the index holds for it."""

    doc_id: str
    size: int
    version: str
    indexed: list[ChunkRecord] = Field(default_factory=list)


class RefreshPlan(BaseModel):
    target: Target
    work: list[WorkItem]
    unchanged: list[str] = Field(description="Landed documents whose index copy is complete and current.")
    deletions: dict[str, int] = Field(description="Indexed doc id -> chunk objects, for ids no longer landed.")
    deep: bool
    landed: int

    def batches(self, size: int) -> Iterator[list[WorkItem]]:
        for start in range(0, len(self.work), size):
            yield self.work[start : start + size]


class BatchResult(BaseModel):
    outcomes: dict[str, Outcome] = Field(default_factory=dict)
    quarantined: list[Quarantined] = Field(default_factory=list)
    embedded: int = 0
    reused: int = 0
    written: int = 0
    deleted: int = 0
    findings: VerifyFindings = Field(default_factory=VerifyFindings)


# Small pure helpers -----------------------------------------------------------------------------


def source_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def is_complete(doc_id: str, records: list[ChunkRecord], chunking: str, model_id: str) -> bool:
    """The index holds exactly one consistent version of this document (no gaps, mixes or strays)."""
    if not records:
        return False
    first = records[0]
    if first.chunk_count != len(records) or first.chunking != chunking or first.embedding_model != model_id:
        return False
    for i, r in enumerate(records):
        if r.chunk_index != i or r.uuid != chunk_uuid(doc_id, i):
            return False
        if (r.chunk_count, r.source_hash, r.source_version, r.doc_text_hash, r.meta_hash) != (
            first.chunk_count, first.source_hash, first.source_version, first.doc_text_hash, first.meta_hash
        ):
            return False
    return True


def plan_refresh(
    landed: list[ObjectInfo], state: dict[str, list[ChunkRecord]], target: Target, deep: bool
) -> RefreshPlan:
    """Split landed documents into certainly-unchanged ones and work items; indexed ids not landed are deleted."""
    model_id = target.generation.embedding_model
    work: list[WorkItem] = []
    unchanged: list[str] = []
    landed_ids = set()
    for info in landed:
        landed_ids.add(info.key)
        records = state.get(info.key, [])
        if (not deep and is_complete(info.key, records, target.chunking, model_id)
                and records[0].source_version == info.version):
            unchanged.append(info.key)
        else:
            work.append(WorkItem(doc_id=info.key, size=info.size, version=info.version, indexed=records))
    deletions = {doc_id: len(records) for doc_id, records in state.items() if doc_id not in landed_ids}
    return RefreshPlan(target=target, work=work, unchanged=unchanged, deletions=deletions, deep=deep,
                       landed=len(landed))


def expected_records(doc: Document, chunks, data_hash: str, target: Target) -> list[tuple[ChunkRecord, str]]:
    """(record, text) of every chunk the index should hold for this document version."""
    model_id = target.generation.embedding_model
    return [
        (
            ChunkRecord(
                uuid=chunk_uuid(doc.doc_id, i), doc_id=doc.doc_id, chunk_index=i, chunk_count=len(chunks),
                text_hash=text_hash(chunk.text), meta_hash=doc.meta_hash, doc_text_hash=doc.text_hash,
                source_hash=data_hash, source_version=doc.source_version, chunking=target.chunking,
                embedding_model=model_id,
            ),
            chunk.text,
        )
        for i, chunk in enumerate(chunks)
    ]


def classify(expected: list[ChunkRecord], indexed: list[ChunkRecord]) -> Outcome:
    """added / updated / metadata_only / unchanged from expected vs indexed chunk records."""
    if not indexed:
        return "added"
    same_text = [(e.uuid, e.text_hash, e.doc_text_hash) for e in expected] == [
        (r.uuid, r.text_hash, r.doc_text_hash) for r in indexed
    ]
    if not same_text:
        return "updated"
    same_meta = all(e.meta_hash == r.meta_hash for e, r in zip(expected, indexed))
    return "unchanged" if same_meta else "metadata_only"


def needs_write(expected: list[ChunkRecord], indexed: list[ChunkRecord], texts_ok: bool = True) -> bool:
    """Any property on any chunk differs (including the source version bookkeeping)."""
    if len(expected) != len(indexed) or not texts_ok:
        return True
    return any(
        e.uuid != r.uuid or e.source_version != r.source_version
        or any(getattr(e, f) != getattr(r, f) for f in _COMPARED)
        for e, r in zip(expected, indexed)
    )


def chunk_properties(record: ChunkRecord, text: str, doc: Document) -> dict[str, Any]:
    metadata = dict(doc.metadata)
    return {
        **record.model_dump(exclude={"uuid", "text"}),
        "text": text,
        "title": doc.title,
        "metadata": json.dumps(metadata, ensure_ascii=False, sort_keys=True, default=str),
        "meta_kv": meta_pairs(metadata),
    }


def make_plan(client, store: ObjectStore, target: Target, deep: bool) -> RefreshPlan:
    """Landing listing + index state of the target generation -> plan."""
    landed = landed_documents(store)
    state = read_index_state(client.collections.use(target.generation.name))
    return plan_refresh(landed, state, target, deep)


# Applying one batch -----------------------------------------------------------------------------


class PreparedBatch(BaseModel):
    """A batch after reading, validation, chunking and embedding: what `commit_batch` must write and delete."""

    model_config = {"arbitrary_types_allowed": True}

    result: BatchResult
    objects: list[ChunkObject] = Field(default_factory=list)
    stale_ids: list[str] = Field(default_factory=list, description="Chunks to delete after the upsert.")
    gone_docs: list[str] = Field(default_factory=list, description="Indexed documents removed since the plan.")
    version_updates: dict[str, str] = Field(default_factory=dict, description="uuid -> new source_version.")


def apply_batch(
    settings: Settings, client, landing: ObjectStore, store: ObjectStore, embedder, cache: EmbeddingCache,
    target: Target, items: list[WorkItem], deep: bool,
) -> BatchResult:
    """Read, validate, chunk, embed what changed, upsert, then delete stale chunks, for a batch of documents."""
    prepared = prepare_batch(settings, client, landing, store, embedder, cache, target, items, deep)
    return commit_batch(client, target, prepared)


def prepare_batch(
    settings: Settings, client, landing: ObjectStore, store: ObjectStore, embedder, cache: EmbeddingCache,
    target: Target, items: list[WorkItem], deep: bool,
) -> PreparedBatch:
    """Everything up to the index writes: outcomes, quarantine, and the chunk objects with their vectors."""
    collection = client.collections.use(target.generation.name)
    prepared = PreparedBatch(result=BatchResult())
    result = prepared.result
    model_id = target.generation.embedding_model
    raw: dict[str, bytes] = {}
    candidates: list[Candidate] = []
    indexed = {item.doc_id: item.indexed for item in items}
    stored_texts = _stored_text_hashes(collection, items) if deep else {}

    for item in items:
        try:
            data = landing.get(item.doc_id)
        except KeyError:  # removed since the plan: a deletion
            if item.indexed:
                prepared.gone_docs.append(item.doc_id)
                result.outcomes[item.doc_id] = "deleted"
            continue
        raw[item.doc_id] = data
        if (not deep and is_complete(item.doc_id, item.indexed, target.chunking, model_id)
                and item.indexed[0].source_hash == source_hash(data)):
            if item.indexed[0].source_version != item.version:  # same bytes re-landed: bookkeeping only
                prepared.version_updates.update({r.uuid: item.version for r in item.indexed})
            result.outcomes[item.doc_id] = "unchanged"
            continue
        candidates.append(make_candidate(item.doc_id, data, item.version, settings))

    contract = validate_documents(candidates, settings) if candidates else None
    to_write: list[tuple[ChunkRecord, str, Document]] = []
    for rejection in contract.rejected if contract else []:
        _hold(store, raw, result, rejection.doc_id, rejection.reasons, rejection.source_version, indexed)

    for doc in contract.passed if contract else []:
        chunks = chunk_document(doc, embedder.count_tokens, target.max_tokens, settings.chunk_overlap)
        if not chunks:
            _hold(store, raw, result, doc.doc_id, ["no_chunks: the document produced no indexable text"],
                  doc.source_version, indexed)
            continue
        expected = expected_records(doc, chunks, source_hash(raw[doc.doc_id]), target)
        records = [e for e, _ in expected]
        old = indexed.get(doc.doc_id, [])
        texts_ok = all(stored_texts.get(r.uuid, r.text_hash) == r.text_hash for r in old)
        outcome = classify(records, old)
        if deep:
            result.findings += _findings(records, old, stored_texts)
        if outcome == "unchanged" and not needs_write(records, old, texts_ok):
            result.outcomes[doc.doc_id] = "unchanged"
            continue
        result.outcomes[doc.doc_id] = outcome
        to_write += [(r, text, doc) for r, text in expected]
        wanted = {r.uuid for r in records}
        prepared.stale_ids += [r.uuid for r in old if r.uuid not in wanted]

    if to_write:
        vectors = _vectors_for(embedder, cache, collection, to_write, indexed, model_id, result)
        prepared.objects = [
            ChunkObject(uuid=r.uuid, properties=chunk_properties(r, text, doc), vector=vectors[r.text_hash])
            for r, text, doc in to_write
        ]
    if target.rebuild and target.live is not None:
        prepared.objects += _carry_over_last_good(client, embedder, cache, target, result)
    return prepared


def commit_batch(client, target: Target, prepared: PreparedBatch) -> BatchResult:
    """Write a prepared batch: upsert new chunks first, only then delete stale ones (crash-safe order)."""
    collection = client.collections.use(target.generation.name)
    result = prepared.result
    if prepared.objects:
        result.written += upsert_chunks(collection, prepared.objects)
    if prepared.version_updates:  # same bytes under a new store version: bookkeeping only, vectors kept
        result.written += update_properties(
            collection, {u: {"source_version": v} for u, v in prepared.version_updates.items()}
        )
    if prepared.stale_ids:
        result.deleted += delete_objects(collection, prepared.stale_ids)
    if prepared.gone_docs:
        result.deleted += delete_docs(collection, prepared.gone_docs)
    return result


def _hold(store, raw, result: BatchResult, doc_id: str, reasons: list[str], version: str, indexed) -> None:
    """Quarantine a document (copy + reasons); an earlier good version, if any, stays indexed."""
    quarantine(store, "documents", doc_id, raw[doc_id], reasons, version)
    result.quarantined.append(Quarantined(doc_id=doc_id, reasons=reasons, kept_previous=bool(indexed.get(doc_id))))
    result.outcomes[doc_id] = "quarantined"


def _vectors_for(embedder, cache, collection, to_write, indexed, model_id, result: BatchResult) -> dict[str, np.ndarray]:
    """Cache first, then vectors already stored for the same text (same model), then the model."""
    by_hash_uuid = {
        r.text_hash: r.uuid for records in indexed.values() for r in records if r.embedding_model == model_id
    }

    def recover(missing: list[str]) -> dict[str, np.ndarray]:
        uuids = {by_hash_uuid[h]: h for h in missing if h in by_hash_uuid}
        found = fetch_vectors(collection, list(uuids)) if uuids else {}
        return {uuids[u]: v for u, v in found.items()}

    vectors, stats = embed_cached(embedder, cache, [text for _, text, _ in to_write], recover=recover)
    result.embedded += stats.embedded
    result.reused += len(to_write) - stats.embedded
    return vectors


def _stored_text_hashes(collection, items: list[WorkItem]) -> dict[str, str]:
    """Hash of the text actually stored in each indexed chunk (deep verify catches edited objects)."""
    from weaviate.classes.query import Filter

    uuids = [r.uuid for item in items for r in item.indexed]
    found: dict[str, str] = {}
    for start in range(0, len(uuids), 500):
        part = uuids[start : start + 500]
        res = collection.query.fetch_objects(filters=Filter.by_id().contains_any(part), limit=len(part),
                                             return_properties=["text"])
        found.update({str(o.uuid): text_hash(o.properties.get("text") or "") for o in res.objects})
    return found


def _findings(expected: list[ChunkRecord], indexed: list[ChunkRecord], stored_texts: dict[str, str]) -> VerifyFindings:
    """Per chunk object: missing (expected, absent), extra (present, unexpected), stale (differs)."""
    have = {r.uuid: r for r in indexed}
    want = {e.uuid: e for e in expected}
    stale = sum(
        1 for u, e in want.items()
        if u in have and (any(getattr(e, f) != getattr(have[u], f) for f in _COMPARED)
                          or stored_texts.get(u, e.text_hash) != e.text_hash)
    )
    return VerifyFindings(
        missing=sum(1 for u in want if u not in have), extra=sum(1 for u in have if u not in want), stale=stale
    )


def _carry_over_last_good(client, embedder, cache, target: Target, result: BatchResult) -> list[ChunkObject]:
    """In a rebuild, a document whose new version is quarantined keeps its last good version (from live)."""
    from weaviate.classes.query import Filter

    held = [q.doc_id for q in result.quarantined]
    if not held:
        return []
    live = client.collections.use(target.live.name)
    found: list[dict[str, Any]] = []
    for start in range(0, len(held), 100):
        res = live.query.fetch_objects(filters=Filter.by_property("doc_id").contains_any(held[start:start + 100]),
                                       limit=10_000)
        found += [dict(o.properties, _uuid=str(o.uuid)) for o in res.objects]
    if not found:
        return []
    vectors, stats = embed_cached(embedder, cache, [p["text"] for p in found])
    result.embedded += stats.embedded
    result.reused += len(found) - stats.embedded
    kept = {p["doc_id"] for p in found}
    for q in result.quarantined:
        q.kept_previous = q.kept_previous or q.doc_id in kept
    return [
        ChunkObject(uuid=p.pop("_uuid"), vector=vectors[text_hash(p["text"])],
                    properties={**p, "embedding_model": target.generation.embedding_model, "chunking": target.chunking})
        for p in found
    ]


# Finishing --------------------------------------------------------------------------------------


def apply_deletions(client, target: Target, deletions: dict[str, int]) -> int:
    """Remove every chunk of documents that left the landing zone."""
    if not deletions:
        return 0
    return delete_docs(client.collections.use(target.generation.name), list(deletions))


def summarize(
    plan: RefreshPlan, results: list[BatchResult], deleted_docs: int, deleted_chunks: int, total: int,
    started: float, flipped: bool, gate: GateResult | None, pruned: list[str], live_collection: str | None,
) -> RefreshReport:
    counts = Counter(o for r in results for o in r.outcomes.values())
    counts["unchanged"] += len(plan.unchanged)
    counts["deleted"] += deleted_docs
    findings = sum((r.findings for r in results), VerifyFindings())
    if plan.deep:
        findings.extra += sum(plan.deletions.values())
    return RefreshReport(
        documents=DocumentCounts(**{o: counts.get(o, 0) for o in OUTCOMES}),
        chunks=ChunkCounts(
            embedded=sum(r.embedded for r in results), reused=sum(r.reused for r in results),
            deleted=deleted_chunks + sum(r.deleted for r in results), total=total,
        ),
        collection=plan.target.generation.name, duration_s=round(time.perf_counter() - started, 3),
        generation=plan.target.generation.number, mode="rebuild" if plan.target.rebuild else "incremental",
        reason=plan.target.reason, alias_flipped=flipped, live_collection=live_collection, gate=gate,
        quarantined=[q for r in results for q in r.quarantined],
        verify=findings if plan.deep else None, pruned_generations=pruned,
    )


# The whole run, in-process (the CLI; the flow composes the same steps as Prefect tasks) -------------


def run_refresh(
    settings: Settings,
    full: bool = False,
    verify: bool = False,
    batch_size: int | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    embedder=None,
) -> RefreshReport:
    """Plan, apply every batch, delete vanished documents, and (for a rebuild) gate and flip the alias."""
    from hybridops.tasks.knowledge.embeddings import load_embedder

    started = time.perf_counter()
    embedder = embedder or load_embedder(settings)
    landing, store = landing_zone(settings), artifact_store(settings)
    with weaviate_session(settings) as client, open_cache(settings) as cache:
        target = choose_target(client, settings, embedder, full)
        plan = make_plan(client, landing, target, deep=verify)
        results: list[BatchResult] = []
        done = len(plan.unchanged)
        total_docs = plan.landed
        if on_progress:
            on_progress(done, total_docs)
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="index-writer") as writer:
            pending = None  # batch i is written while batch i+1 is read, validated, chunked and embedded
            for batch in plan.batches(batch_size or settings.refresh_batch_docs):
                prepared = prepare_batch(settings, client, landing, store, embedder, cache, target, batch, verify)
                if pending is not None:
                    results.append(pending.result())
                pending = writer.submit(commit_batch, client, target, prepared)
                done += len(batch)
                if on_progress:
                    on_progress(done, total_docs)
            if pending is not None:
                results.append(pending.result())
        deleted_chunks = apply_deletions(client, target, plan.deletions)
        return finish_run(settings, client, embedder, landing, store, plan, results, deleted_chunks, started)


def finish_run(
    settings: Settings, client, embedder, landing: ObjectStore, store: ObjectStore, plan: RefreshPlan,
    results: list[BatchResult], deleted_chunks: int, started: float,
) -> RefreshReport:
    """After all batches: gate + flip a rebuild, sync the quarantine area, count, report."""
    target = plan.target
    gate, flipped, pruned = None, False, []
    if target.rebuild:
        gate = gate_rebuild(settings, client, embedder, target, landing)
        flipped, pruned = finish_rebuild(settings, client, target, gate)
    held = {q.doc_id for r in results for q in r.quarantined}
    prune_quarantine(store, "documents", keep=held)  # passed or vanished documents are no longer held
    total = count_objects(client.collections.use(target.generation.name))
    live = next((g.name for g in list_generations(client, settings) if g.live), None)
    return summarize(plan, results, len(plan.deletions), deleted_chunks, total, started, flipped, gate, pruned, live)


@contextmanager
def refresh_lock(settings: Settings) -> Iterator[None]:
    """One in-process refresh per home at a time (flows use the Prefect global concurrency limit)."""
    import fcntl

    path = settings.run_dir / "refresh.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RefreshError(f"another refresh is running for {settings.home} (lock {path})") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def is_transient(exc: BaseException) -> bool:
    """Worth a retry: the landing zone / store or Weaviate was unreachable or timed out."""
    from weaviate.exceptions import (
        WeaviateConnectionError,
        WeaviateGRPCUnavailableError,
        WeaviateStartUpError,
        WeaviateTimeoutError,
    )

    if isinstance(exc, (ObjectStoreError, ConnectionError, TimeoutError, WeaviateConnectionError,
                        WeaviateGRPCUnavailableError, WeaviateStartUpError, WeaviateTimeoutError)):
        return True
    cause = exc.__cause__ or exc.__context__
    return cause is not None and cause is not exc and is_transient(cause)

"""Applying a refresh plan: read, validate, chunk and embed a batch of documents, then write it crash-safely.

Writes are ordered so a crash anywhere converges on the next run: a document's new chunks are upserted under
deterministic ids first, then its stale chunks are deleted; a half-written document is visibly inconsistent
and is redone. One document that cannot be read, parsed, validated or chunked is quarantined with a reason
and the batch goes on; only an unreachable service fails the batch (so the step is retried).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from hybridops.tasks.core.contracts import ContractError
from hybridops.tasks.core.errors import is_transient
from hybridops.tasks.core.object_store import ObjectStore, artifact_store, landing_zone
from hybridops.tasks.core.quarantine import prune as prune_quarantine
from hybridops.tasks.core.quarantine import held_entry, hold_by_reference, quarantine, release
from hybridops.tasks.core.settings import Settings
from hybridops.tasks.core.weaviate_connection import weaviate_session
from hybridops.tasks.knowledge.chunking import chunk_document
from hybridops.tasks.knowledge.document_contract import (
    TOO_LARGE,
    Candidate,
    ContractResult,
    make_candidate,
    validate_documents,
)
from hybridops.tasks.knowledge.document_status import record_deletions
from hybridops.tasks.knowledge.documents import Document, DocumentError
from hybridops.tasks.knowledge.embedding_cache import EmbeddingCache, embed_cached, open_cache, text_hash
from hybridops.tasks.knowledge.embeddings import load_embedder
from hybridops.tasks.knowledge.index import (
    ChunkObject,
    ChunkRecord,
    count_objects,
    delete_docs,
    delete_objects,
    fetch_vectors,
    list_generations,
    meta_pairs,
    objects_of_docs,
    stored_texts,
    update_properties,
    upsert_chunks,
)
from hybridops.tasks.knowledge.rebuild import Target
from hybridops.tasks.knowledge.refresh_plan import (
    BatchResult,
    RefreshPlan,
    WorkItem,
    classify,
    expected_records,
    findings,
    is_complete,
    needs_write,
    source_hash,
    summarize,
)
from hybridops.tasks.knowledge.refresh_report import (
    ChunkCounts,
    DocumentCounts,
    GateResult,
    Quarantined,
    RefreshReport,
)

# Reason codes of documents held because handling them raised (the contract's own codes are in its suite).
UNREADABLE = "unreadable"
PARSE_FAILED = "parse_failed"
VALIDATION_FAILED = "validation_failed"
CHUNKING_FAILED = "chunking_failed"


class PreparedBatch(BaseModel):
    """A batch after reading, validation, chunking and embedding: what `commit_batch` must write and delete."""

    model_config = {"arbitrary_types_allowed": True}

    result: BatchResult
    objects: list[ChunkObject] = Field(default_factory=list)
    stale_ids: list[str] = Field(default_factory=list, description="Chunks to delete after the upsert.")
    gone_docs: list[str] = Field(default_factory=list, description="Indexed documents removed since the plan.")
    version_updates: dict[str, str] = Field(default_factory=dict, description="uuid -> new source_version.")


def run_batch(settings: Settings, target: Target, items: list[WorkItem], deep: bool) -> BatchResult:
    """One batch with its own connections, cache and model: what a flow runs per task (maybe on a Dask worker)."""
    with weaviate_session(settings) as client, open_cache(settings) as cache:
        return apply_batch(settings, client, landing_zone(settings), artifact_store(settings),
                           load_embedder(settings), cache, target, items, deep)


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
    stored = _stored_text_hashes(collection, items) if deep else {}

    def hold(doc_id: str, reasons: list[str], version: str) -> None:
        _hold(store, result, doc_id, raw.get(doc_id, b""), reasons, version, bool(indexed.get(doc_id)))

    for item in items:
        if item.size > settings.max_document_bytes:  # from the listing: never read into memory, never copied
            try:
                _hold_oversized(landing, store, result, item, settings.max_document_bytes)
            except KeyError:
                pass  # removed since the plan: the next run deletes it
            continue
        try:
            data = landing.get(item.doc_id)
        except KeyError:  # removed since the plan: a deletion
            if item.indexed:
                prepared.gone_docs.append(item.doc_id)
                result.outcomes[item.doc_id] = "deleted"
            continue
        except Exception as exc:  # noqa: BLE001 - per document: hold it, unless the store itself is away
            if is_transient(exc):
                raise
            hold(item.doc_id, [_reason(UNREADABLE, exc)], item.version)
            continue
        raw[item.doc_id] = data
        try:
            if (not deep and is_complete(item.doc_id, item.indexed, target.chunking, model_id)
                    and item.indexed[0].source_hash == source_hash(data)):
                if item.indexed[0].source_version != item.version:  # same bytes re-landed: bookkeeping only
                    prepared.version_updates.update({r.uuid: item.version for r in item.indexed})
                result.outcomes[item.doc_id] = "unchanged"
                continue
            candidates.append(make_candidate(item.doc_id, data, item.version, settings))
        except Exception as exc:  # noqa: BLE001 - one document's failure never stops the batch
            hold(item.doc_id, [_reason(PARSE_FAILED, exc)], item.version)

    contract, failed = _validate(candidates, settings)
    for candidate, exc in failed:
        hold(candidate.doc_id, [_reason(VALIDATION_FAILED, exc)], candidate.source_version)
    for rejection in contract.rejected:
        hold(rejection.doc_id, rejection.reasons, rejection.source_version)

    to_write: list[tuple[ChunkRecord, str, Document]] = []
    for doc in contract.passed:
        try:
            chunks = chunk_document(doc, embedder.count_tokens, target.max_tokens, settings.chunk_overlap)
            if not chunks:
                hold(doc.doc_id, ["no_chunks: the document produced no indexable text"], doc.source_version)
                continue
            expected = expected_records(doc, chunks, source_hash(raw[doc.doc_id]), target)
            records = [e for e, _ in expected]
            old = indexed.get(doc.doc_id, [])
            texts_ok = all(stored.get(r.uuid, r.text_hash) == r.text_hash for r in old)
            outcome = classify(records, old)
            found = findings(records, old, stored) if deep else None
        except Exception as exc:  # noqa: BLE001 - one document's failure never stops the batch
            hold(doc.doc_id, [_reason(CHUNKING_FAILED, exc)], doc.source_version)
            continue
        if found is not None:
            result.findings += found
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


def chunk_properties(record: ChunkRecord, text: str, doc: Document) -> dict[str, Any]:
    """The Weaviate properties of one chunk object: its self-description plus text, title and metadata."""
    metadata = dict(doc.metadata)
    return {
        **record.model_dump(exclude={"uuid", "text"}),
        "text": text,
        "title": doc.title,
        "metadata": json.dumps(metadata, ensure_ascii=False, sort_keys=True, default=str),
        "meta_kv": meta_pairs(metadata),
    }


def _reason(code: str, exc: BaseException) -> str:
    """A DocumentError already names its problem (`symlink_outside_root: ...`); anything else gets `code`."""
    if isinstance(exc, DocumentError):
        return str(exc)
    return f"{code}: {type(exc).__name__}: {exc}"


def _validate(candidates: list[Candidate], settings: Settings) -> tuple[ContractResult, list[tuple[Candidate, Exception]]]:
    """The contract on the whole batch; if that raises, each candidate alone so only the culprit is held.

    A ContractError (the suite itself is broken) and an unreachable service still fail the batch."""
    if not candidates:
        return ContractResult(), []
    try:
        return validate_documents(candidates, settings), []
    except ContractError:
        raise
    except Exception as exc:  # noqa: BLE001 - find the document(s) that broke the batch
        if is_transient(exc):
            raise
    passed, rejected, failed = [], [], []
    for candidate in candidates:
        try:
            alone = validate_documents([candidate], settings)
        except ContractError:
            raise
        except Exception as exc:  # noqa: BLE001 - this document cannot be validated: it is held
            if is_transient(exc):
                raise
            failed.append((candidate, exc))
            continue
        passed += alone.passed
        rejected += alone.rejected
    return ContractResult(passed=passed, rejected=rejected), failed


def _hold(store: ObjectStore, result: BatchResult, doc_id: str, data: bytes, reasons: list[str], version: str,
          was_indexed: bool) -> None:
    """Quarantine a document (copy + reasons); an earlier good version, if any, stays indexed."""
    quarantine(store, "documents", doc_id, data, reasons, version)
    result.quarantined.append(Quarantined(doc_id=doc_id, reasons=reasons, kept_previous=was_indexed))
    result.outcomes[doc_id] = "quarantined"


def _hold_oversized(landing: ObjectStore, store: ObjectStore, result: BatchResult, item: WorkItem, limit: int) -> None:
    """Quarantine a too-large document by reference (key, size, streamed sha256); a version already held
    this way is not read again."""
    reasons = [f"{TOO_LARGE}: {item.size} bytes > {limit} (held by reference, not copied)"]
    held = held_entry(store, "documents", item.doc_id)
    if not (held and held.by_reference and held.source_version == item.version and held.size == item.size):
        hold_by_reference(store, "documents", item.doc_id, item.size, landing.sha256(item.doc_id), reasons,
                          item.version)
    result.quarantined.append(Quarantined(doc_id=item.doc_id, reasons=reasons, kept_previous=bool(item.indexed)))
    result.outcomes[item.doc_id] = "quarantined"


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
    """uuid -> hash of the text actually stored in each indexed chunk of these items (deep verify)."""
    texts = stored_texts(collection, [r.uuid for item in items for r in item.indexed])
    return {uuid: text_hash(text) for uuid, text in texts.items()}


# After all batches ------------------------------------------------------------------------------


def apply_deletions(client, store: ObjectStore, target: Target, deletions: dict[str, int]) -> int:
    """Remove every chunk of documents that left the landing zone (noted first, so an eval can tell a
    deleted gold document from one that never landed)."""
    if not deletions:
        return 0
    record_deletions(store, deletions)
    return delete_docs(client.collections.use(target.generation.name), list(deletions))


def carry_over_last_good(client, embedder, cache: EmbeddingCache, target: Target,
                         results: list[BatchResult]) -> BatchResult:
    """In a rebuild, a document whose new version is quarantined keeps its last good version (from live).

    The result counts the copy's embeddings and writes and names the documents carried over."""
    done = BatchResult()
    held = {q.doc_id for r in results for q in r.quarantined}
    if not target.rebuild or target.live is None or not held:
        return done
    found = objects_of_docs(client.collections.use(target.live.name), held)
    if not found:
        return done
    vectors, stats = embed_cached(embedder, cache, [p["text"] for _, p in found])
    done.embedded, done.reused = stats.embedded, len(found) - stats.embedded
    objects = [
        ChunkObject(uuid=uuid, vector=vectors[text_hash(p["text"])],
                    properties={**p, "embedding_model": target.generation.embedding_model,
                                "chunking": target.chunking})
        for uuid, p in found
    ]
    done.written = upsert_chunks(client.collections.use(target.generation.name), objects)
    done.carried_over = sorted({p["doc_id"] for _, p in found})
    return done


def finish_refresh(
    settings: Settings, client, store: ObjectStore, plan: RefreshPlan, results: list[BatchResult],
    deleted_chunks: int, duration_s: float, gate: GateResult | None = None, flipped: bool = False,
    pruned: list[str] | None = None,
) -> RefreshReport:
    """Sync the quarantine area with what this run held, count the target generation, report.

    A targeted run saw only its keys: it releases those of them it did not hold, and leaves the rest alone."""
    held = {q.doc_id for r in results for q in r.quarantined}
    if plan.scope is None:
        prune_quarantine(store, "documents", keep=held)  # passed or vanished documents are no longer held
    else:
        for doc_id in set(plan.scope) - held:
            release(store, "documents", doc_id)
    total = count_objects(client.collections.use(plan.target.generation.name))
    live = next((g.name for g in list_generations(client, settings) if g.live), None)
    return summarize(plan, results, deleted_chunks, total, duration_s, flipped, gate, pruned or [], live)


def nothing_pending(settings: Settings, client, duration_s: float) -> RefreshReport:
    """The report of a targeted run that found no document key pending: an earlier run applied it (N events
    during one refresh start N runs; the first applies everything, the rest end here, quickly)."""
    live = next((g for g in list_generations(client, settings) if g.live), None)
    total = count_objects(client.collections.use(live.name)) if live else 0
    return RefreshReport(
        documents=DocumentCounts(), chunks=ChunkCounts(total=total), collection=live.name if live else "",
        duration_s=round(duration_s, 3), generation=live.number if live else 0, mode="targeted",
        reason="nothing pending", live_collection=live.name if live else None,
    )

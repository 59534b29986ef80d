"""The refresh's pure decisions: what is certainly unchanged, what needs work, how a document changed, totals.

No I/O here: the plan is computed from the landing listing and the index's own state (every chunk object
carries its document id, position and the hashes of its source bytes, text and metadata), so it can be
unit-tested and re-derived after a crash. refresh_apply.py does the reads and writes.

A full reconcile plans from the whole listing and the whole index state; a targeted one (the change feed's
keys) from just those keys' listing entries and index records. Both go through the same `_reconcile`, so a
targeted plan is the full plan restricted to its keys (tests/unit/test_refresh_plan.py holds them to it).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from typing import Literal

from pydantic import BaseModel, Field

from hybridops.tasks.core.object_store import ObjectInfo
from hybridops.tasks.knowledge.documents import Document
from hybridops.tasks.knowledge.embedding_cache import text_hash
from hybridops.tasks.knowledge.index import ChunkRecord, chunk_uuid
from hybridops.tasks.knowledge.landing import is_document_key
from hybridops.tasks.knowledge.rebuild import Target
from hybridops.tasks.knowledge.refresh_report import (
    ChunkCounts,
    DocumentCounts,
    GateResult,
    Mode,
    Quarantined,
    RefreshReport,
    VerifyFindings,
)

Outcome = Literal["added", "updated", "metadata_only", "unchanged", "deleted", "quarantined"]
OUTCOMES: tuple[Outcome, ...] = ("added", "updated", "metadata_only", "unchanged", "deleted", "quarantined")
COMPARED = ("chunk_index", "chunk_count", "text_hash", "doc_text_hash", "meta_hash", "source_hash",
            "chunking", "embedding_model")
"""Chunk properties that must match for an indexed chunk to count as current."""


class WorkItem(BaseModel):
    """A landed document that needs a look (bytes read, maybe parsed) plus what the index holds for it."""

    doc_id: str
    size: int
    version: str
    indexed: list[ChunkRecord] = Field(default_factory=list)


class RefreshPlan(BaseModel):
    """What one run will do, decided before any document is read."""

    target: Target
    work: list[WorkItem]
    unchanged: list[str] = Field(description="Landed documents whose index copy is complete and current.")
    deletions: dict[str, int] = Field(description="Indexed doc id -> chunk objects, for ids no longer landed.")
    deep: bool
    landed: int
    live_documents: int | None = Field(0, description="Documents the live generation holds (0: nothing is live "
                                       "yet; None: not counted, a targeted plan measures live_objects instead).")
    live_losses: list[str] = Field(default_factory=list, description="Documents of the live generation this run "
                                   "would remove: deleted in place, or missing from the rebuilt generation.")
    live_objects: int = Field(0, description="Chunk objects of the live generation (a targeted plan's guard: one "
                              "aggregate, where counting its documents would read every object).")
    scope: list[str] | None = Field(None, description="The landing keys a targeted plan covers (None: all of them).")

    def batches(self, size: int) -> Iterator[list[WorkItem]]:
        for start in range(0, len(self.work), size):
            yield self.work[start : start + size]


class BatchResult(BaseModel):
    """What one batch did (the hand-off from a batch, possibly on another worker, back to the run)."""

    outcomes: dict[str, Outcome] = Field(default_factory=dict)
    quarantined: list[Quarantined] = Field(default_factory=list)
    embedded: int = 0
    reused: int = 0
    written: int = 0
    deleted: int = 0
    findings: VerifyFindings = Field(default_factory=VerifyFindings)
    carried_over: list[str] = Field(default_factory=list, description="Held documents whose last good version "
                                    "was copied from the live generation into a rebuild.")


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


def _reconcile(
    landed: Iterable[ObjectInfo], state: dict[str, list[ChunkRecord]], target: Target, deep: bool,
) -> tuple[list[WorkItem], list[str], dict[str, int], set[str]]:
    """(work, unchanged, deletions, landed ids): the decisions every plan makes from listing + index state."""
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
    return work, unchanged, deletions, landed_ids


def plan_refresh(
    landed: list[ObjectInfo], state: dict[str, list[ChunkRecord]], target: Target, deep: bool,
    live_ids: set[str] | None = None,
) -> RefreshPlan:
    """Split landed documents into certainly-unchanged ones and work items; indexed ids not landed are deleted.

    live_ids: the live generation's document ids when the target is a rebuild (an incremental run's target
    is the live generation, so its state is used)."""
    work, unchanged, deletions, landed_ids = _reconcile(landed, state, target, deep)
    if not target.rebuild:
        live_ids = set(state)
    live_ids = live_ids if target.live is not None and live_ids else set()
    return RefreshPlan(target=target, work=work, unchanged=unchanged, deletions=deletions, deep=deep,
                       landed=len(landed), live_documents=len(live_ids),
                       live_losses=sorted(live_ids - landed_ids))


def targeted_scope(*key_sets: Iterable[str]) -> list[str]:
    """The document keys among these (sorted, once each): the training area is never planned."""
    return sorted({key for keys in key_sets for key in keys if is_document_key(key)})


def plan_targeted(
    keys: Iterable[str], landed: Iterable[ObjectInfo], state: dict[str, list[ChunkRecord]], target: Target,
    deep: bool, live_objects: int = 0,
) -> RefreshPlan:
    """The plan of just these landing keys: `landed` holds the listing entries of those present, `state` the
    index records of those indexed (anything outside the keys is ignored, so the full listing and state give
    the same plan). A key present is compared with its records; one absent but indexed is a deletion; one
    neither landed nor indexed is nothing to do. Only the live generation is ever targeted."""
    if target.rebuild:
        raise ValueError("a rebuild plans the whole landing zone; it is never targeted")
    scope = targeted_scope(keys)
    wanted = set(scope)
    work, unchanged, deletions, _ = _reconcile([i for i in landed if i.key in wanted],
                                               {d: r for d, r in state.items() if d in wanted}, target, deep)
    return RefreshPlan(target=target, work=work, unchanged=unchanged, deletions=deletions, deep=deep,
                       landed=len(work) + len(unchanged), live_documents=None, live_objects=live_objects,
                       live_losses=sorted(deletions), scope=scope)


def targeted_mass_deletion(plan: RefreshPlan, max_share: float, min_docs: int) -> str | None:
    """Why a targeted plan's deletions need a confirmation, or None: like rebuild.mass_deletion, more than
    `min_docs` documents AND more than `max_share` of the live index, the share measured in chunk objects
    (the doomed documents' chunks over the live generation's object count: one aggregate, where counting
    the live documents would read every object, the corpus-sized cost a targeted run exists to avoid)."""
    losing = len(plan.live_losses)
    objects = sum(plan.deletions.get(doc_id, 0) for doc_id in plan.live_losses)
    if losing <= min_docs or plan.live_objects <= 0:
        return None
    share = objects / plan.live_objects
    if share <= max_share:
        return None
    return (f"{losing} documents would be removed, {objects} of the live index's {plan.live_objects} chunk objects "
            f"({share:.0%}), more than the {max_share:.0%} allowed")


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
        or any(getattr(e, f) != getattr(r, f) for f in COMPARED)
        for e, r in zip(expected, indexed)
    )


def findings(expected: list[ChunkRecord], indexed: list[ChunkRecord], stored_texts: dict[str, str]) -> VerifyFindings:
    """Per chunk object: missing (expected, absent), extra (present, unexpected), stale (differs).

    stored_texts: uuid -> hash of the text actually stored (a deep verify reads it)."""
    have = {r.uuid: r for r in indexed}
    want = {e.uuid: e for e in expected}
    stale = sum(
        1 for u, e in want.items()
        if u in have and (any(getattr(e, f) != getattr(have[u], f) for f in COMPARED)
                          or stored_texts.get(u, e.text_hash) != e.text_hash)
    )
    return VerifyFindings(
        missing=sum(1 for u in want if u not in have), extra=sum(1 for u in have if u not in want), stale=stale
    )


def summarize(
    plan: RefreshPlan, results: Sequence[BatchResult], deleted_chunks: int, total: int, duration_s: float,
    flipped: bool, gate: GateResult | None, pruned: list[str], live_collection: str | None,
) -> RefreshReport:
    """The run's report from the plan and every batch's result."""
    counts = Counter(o for r in results for o in r.outcomes.values())
    counts["unchanged"] += len(plan.unchanged)
    counts["deleted"] += len(plan.deletions)
    verify = sum((r.findings for r in results), VerifyFindings())
    if plan.deep:
        verify.extra += sum(plan.deletions.values())
    carried = {doc_id for r in results for doc_id in r.carried_over}
    quarantined = [q.model_copy(update={"kept_previous": q.kept_previous or q.doc_id in carried})
                   for r in results for q in r.quarantined]
    return RefreshReport(
        documents=DocumentCounts(**{o: counts.get(o, 0) for o in OUTCOMES}),
        chunks=ChunkCounts(
            embedded=sum(r.embedded for r in results), reused=sum(r.reused for r in results),
            deleted=deleted_chunks + sum(r.deleted for r in results), total=total,
        ),
        collection=plan.target.generation.name, duration_s=round(duration_s, 3),
        generation=plan.target.generation.number, mode=_mode(plan), reason=plan.target.reason,
        alias_flipped=flipped, live_collection=live_collection, gate=gate, quarantined=quarantined,
        verify=verify if plan.deep else None, pruned_generations=pruned, planned_keys=plan.scope or [],
    )


def _mode(plan: RefreshPlan) -> Mode:
    if plan.scope is not None:
        return "targeted"
    return "rebuild" if plan.target.rebuild else "incremental"

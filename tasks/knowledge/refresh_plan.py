"""The refresh's pure decisions: what is certainly unchanged, what needs work, how a document changed, totals.

No I/O here: the plan is computed from the landing listing and the index's own state (every chunk object
carries its document id, position and the hashes of its source bytes, text and metadata), so it can be
unit-tested and re-derived after a crash. refresh_apply.py does the reads and writes.

A full reconcile plans from the whole listing and the whole index state; a targeted one (the change feed's
keys) from just those keys' listing entries and index records. Both go through the same `_reconcile`, so a
targeted plan is the full plan restricted to its keys (tests/unit/test_refresh_plan.py holds them to it).

A full reconcile streams: the index state is folded, record by record, into one small `DocumentDigest` per
document (enough to tell "complete and current", no hashes kept), the listing is walked once without being
held, each landed key takes its digest out of the map (what is left are the deletions), and only the
documents that need work get their chunk records read back (`attach_records`). Memory follows the number of
documents, once, plus the change; not the chunks, and no whole-corpus list twice.
"""

from __future__ import annotations

import hashlib
import sys
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
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
    indexed_chunks: int = Field(0, description="Chunk objects the target holds for it (its records are read "
                                "only for the documents that need work: attach_records).")


class RefreshPlan(BaseModel):
    """What one run will do, decided before any document is read."""

    target: Target
    work: list[WorkItem]
    unchanged: int = Field(description="Landed documents whose index copy is complete and current (a count: "
                           "a full plan never holds the corpus' ids).")
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
    digest = digest_records(records).get(doc_id)
    return digest is not None and len(records) == digest.seen and digest.is_current(chunking, model_id)


@dataclass(slots=True)
class DocumentDigest:
    """One indexed document folded from its chunk records, in a few dozen bytes: complete and consistent or
    not, which version, how many chunk objects. Records may arrive in any order (a cursor goes by uuid)."""

    version: str
    chunking: str
    embedding_model: str
    chunk_count: int
    fingerprint: bytes
    seen: int = 0
    positions: int = 0  # bit i set: chunk i was seen
    consistent: bool = True

    def add(self, record: ChunkRecord) -> None:
        self.seen += 1
        bit = 1 << record.chunk_index if 0 <= record.chunk_index < self.chunk_count else 0
        if (not bit or self.positions & bit or _fingerprint(record) != self.fingerprint
                or record.uuid != chunk_uuid(record.doc_id, record.chunk_index)):
            self.consistent = False
        self.positions |= bit

    def is_current(self, chunking: str, model_id: str) -> bool:
        """Exactly chunks 0..n-1 of one version, chunked and embedded the way the target wants."""
        return (self.consistent and self.seen == self.chunk_count and self.positions == (1 << self.chunk_count) - 1
                and self.chunking == chunking and self.embedding_model == model_id)


def _fingerprint(record: ChunkRecord) -> bytes:
    """What every chunk of one document version shares."""
    shared = (str(record.chunk_count), record.source_hash, record.source_version, record.doc_text_hash,
              record.meta_hash, record.chunking, record.embedding_model)
    return hashlib.blake2b("\0".join(shared).encode("utf-8", "surrogatepass"), digest_size=16).digest()


def digest_records(records: Iterable[ChunkRecord]) -> dict[str, DocumentDigest]:
    """Doc id -> digest, folding a stream of chunk records (the whole index state, never held at once)."""
    digests: dict[str, DocumentDigest] = {}
    for record in records:
        digest = digests.get(record.doc_id)
        if digest is None:
            digest = digests[record.doc_id] = DocumentDigest(
                version=record.source_version, chunking=sys.intern(record.chunking),
                embedding_model=sys.intern(record.embedding_model), chunk_count=record.chunk_count,
                fingerprint=_fingerprint(record))
        digest.add(record)
    return digests


def _reconcile(
    landed: Iterable[ObjectInfo], digests: dict[str, DocumentDigest], target: Target, deep: bool,
    live_ids: set[str] | None = None,
) -> tuple[list[WorkItem], int, dict[str, int]]:
    """(work, unchanged, deletions): the decisions every plan makes from listing + index state, streaming.

    Takes each landed key's digest (and live id) out of the maps it is given: what stays in `digests` is
    deleted, what stays in `live_ids` is lost from the live generation."""
    model_id = target.generation.embedding_model
    work: list[WorkItem] = []
    unchanged = 0
    for info in landed:
        digest = digests.pop(info.key, None)
        if live_ids is not None:
            live_ids.discard(info.key)
        if (not deep and digest is not None and digest.is_current(target.chunking, model_id)
                and digest.version == info.version):
            unchanged += 1
        else:
            work.append(WorkItem(doc_id=info.key, size=info.size, version=info.version,
                                 indexed_chunks=digest.seen if digest else 0))
    work.sort(key=lambda w: w.doc_id)
    return work, unchanged, {doc_id: digest.seen for doc_id, digest in sorted(digests.items())}


def plan_from_digests(
    landed: Iterable[ObjectInfo], digests: dict[str, DocumentDigest], target: Target, deep: bool,
    live_ids: set[str] | None = None,
) -> RefreshPlan:
    """The full plan from a listing stream and the target's digests (both consumed). Work items carry no
    records yet: attach_records gives them theirs.

    live_ids: the live generation's document ids when the target is a rebuild (an incremental run's target
    is the live generation, so its digests are used)."""
    if target.rebuild:
        live_ids = set(live_ids or ()) if target.live is not None else set()
        live_documents = len(live_ids)
        work, unchanged, deletions = _reconcile(landed, digests, target, deep, live_ids)
        losses = sorted(live_ids)
    else:
        live_documents = len(digests) if target.live is not None else 0
        work, unchanged, deletions = _reconcile(landed, digests, target, deep)
        losses = sorted(deletions) if target.live is not None else []
    return RefreshPlan(target=target, work=work, unchanged=unchanged, deletions=deletions, deep=deep,
                       landed=len(work) + unchanged, live_documents=live_documents, live_losses=losses)


def attach_records(plan: RefreshPlan, records: dict[str, list[ChunkRecord]]) -> RefreshPlan:
    """The plan with each work item's indexed chunk records (read for just the documents that need work)."""
    for item in plan.work:
        item.indexed = records.get(item.doc_id, [])
    return plan


def plan_refresh(
    landed: list[ObjectInfo], state: dict[str, list[ChunkRecord]], target: Target, deep: bool,
    live_ids: set[str] | None = None,
) -> RefreshPlan:
    """plan_from_digests + attach_records from an index state already in memory (tests, small states)."""
    plan = plan_from_digests(landed, digest_records(r for recs in state.values() for r in recs), target, deep,
                             live_ids)
    return attach_records(plan, state)


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
    own = {d: r for d, r in state.items() if d in wanted}
    work, unchanged, deletions = _reconcile([i for i in landed if i.key in wanted],
                                            digest_records(r for recs in own.values() for r in recs), target, deep)
    plan = RefreshPlan(target=target, work=work, unchanged=unchanged, deletions=deletions, deep=deep,
                       landed=len(work) + unchanged, live_documents=None, live_objects=live_objects,
                       live_losses=sorted(deletions), scope=scope)
    return attach_records(plan, own)


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
    counts["unchanged"] += plan.unchanged
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

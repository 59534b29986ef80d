"""Which generation a refresh writes to, and the gate a rebuilt generation must pass before the alias flips.

An incremental run writes to the live generation. A first build, `--full`, or a change of embedding model
writes to a new generation (or resumes a crashed build of the same model); readers keep using the alias
until the golden-set retrieval eval says the new generation is at least as good, then the alias flips
and the previous generation is kept for rollback. A tuned retrieval profile carries over to a rebuild with
the same embedding model (alpha and k were tuned for that model's vectors); a new model starts from the settings.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel

from hybridops.tasks.knowledge.index import (
    Generation,
    IndexOperationError,
    create_generation,
    drop_generation,
    iter_records,
    list_generations,
    point_alias,
    prune_generations,
    save_generation,
)
from hybridops.tasks.knowledge.landing import landed_doc_ids
from hybridops.tasks.core.model_runtime import ModelError
from hybridops.tasks.core.object_store import ObjectStore
from hybridops.tasks.knowledge.refresh_report import GateResult
from hybridops.tasks.knowledge.retrieval_eval import DEFAULT_GOLDEN, evaluate, load_golden
from hybridops.tasks.knowledge.search import Searcher
from hybridops.tasks.core.settings import Settings


class Target(BaseModel):
    """The generation this run writes to, and whether it is a rebuild that must pass the gate to go live."""

    generation: Generation
    live: Generation | None
    rebuild: bool
    reason: Literal["incremental", "initial", "full", "model_changed"]
    chunking: str
    max_tokens: int


def mass_deletion(losing: int, live: int, max_share: float, min_docs: int, rebuild: bool = False) -> str | None:
    """Why removing `losing` of the `live` index's documents needs an explicit confirmation, or None.

    Guarded: more than `min_docs` documents AND more than `max_share` of the live ones would go; and a
    rebuild that would keep none of a non-empty live index (an empty landing zone never goes live)."""
    if live <= 0 or losing <= 0:
        return None
    if rebuild and losing >= live:
        return f"the rebuilt generation would hold none of the {live} live documents"
    if losing > min_docs and losing / live > max_share:
        return (f"{losing} of {live} live documents ({losing / live:.0%}) would be removed, more than the "
                f"{max_share:.0%} allowed")
    return None


def chunking_fingerprint(settings: Settings, max_tokens: int, model_id: str) -> str:
    """Identifies how chunks were cut; a change re-chunks every document."""
    return f"v1;tok={model_id.split('@')[0]};max={max_tokens};overlap={settings.chunk_overlap}"


def effective_max_tokens(settings: Settings, embedder) -> int:
    """Chunk bound: the setting, but never more than the embedding model's window."""
    window = getattr(embedder, "max_tokens", None)
    return min(settings.chunk_tokens, window) if window else settings.chunk_tokens


def embedding_setting(settings: Settings) -> dict[str, Any]:
    """What to load to embed queries for a generation later (recorded on it)."""
    return {"embedding_model": settings.embedding_model, "embedding_bf16": settings.embedding_bf16}


def carried_profile(live: Generation | None, model_id: str) -> dict[str, Any]:
    """The tuned retrieval profile a rebuilt generation starts with: the live one's, if it embeds alike."""
    return dict(live.retrieval) if live is not None and live.embedding_model == model_id else {}


def choose_target(client, settings: Settings, embedder, full: bool) -> Target:
    """The live generation for an incremental run, else a (resumed or new) generation to build."""
    gens = list_generations(client, settings)
    live = next((g for g in gens if g.live), None)
    max_tokens = effective_max_tokens(settings, embedder)
    chunking = chunking_fingerprint(settings, max_tokens, embedder.model_id)
    if live is None:
        reason = "initial"
    elif full:
        reason = "full"
    elif live.embedding_model != embedder.model_id:
        reason = "model_changed"
    else:
        return Target(generation=live, live=live, rebuild=False, reason="incremental", chunking=chunking,
                      max_tokens=max_tokens)
    newest = max((g.number for g in gens), default=0)
    resumable = [
        g for g in gens
        if g.state == "building" and g.embedding_model == embedder.model_id and g.chunking == chunking
        and g.number == newest and (live is None or g.number > live.number)
    ]
    retrieval = carried_profile(live, embedder.model_id)
    if resumable:  # a crashed build: its objects are correct so far, reconcile continues it
        gen = resumable[-1]
        if gen.retrieval != retrieval:  # the live profile was tuned since that build started
            gen.retrieval = retrieval
            save_generation(client, gen)
    else:
        for leftover in gens:
            if not leftover.live and leftover.state != "ready" and (live is None or leftover.number > live.number):
                drop_generation(client, settings, leftover)
        gen = create_generation(client, settings, embedder.model_id, embedder.dim, chunking,
                                embedding_setting(settings), retrieval=retrieval)
    return Target(generation=gen, live=live, rebuild=True, reason=reason, chunking=chunking, max_tokens=max_tokens)


def document_loss(client, target: Target) -> tuple[int, int]:
    """(live documents missing from the rebuilt generation, live documents)."""
    if target.live is None:
        return 0, 0
    live = {r.doc_id for r in iter_records(client.collections.use(target.live.name))}
    built = {r.doc_id for r in iter_records(client.collections.use(target.generation.name))}
    return len(live - built), len(live)


def gate_rebuild(settings: Settings, client, embedder, target: Target, landing: ObjectStore,
                 allow_mass_delete: bool = False) -> GateResult:
    """Document count, then retrieval eval of the new generation (and the live one) on the golden set -> may
    it go live? A generation that lost too many of the live documents fails unless that was confirmed."""
    floor, tolerance = settings.recall_floor, settings.recall_tolerance
    losing, live_docs = document_loss(client, target)
    lost = mass_deletion(losing, live_docs, settings.refresh_max_delete_share,
                         settings.refresh_mass_delete_min_docs, rebuild=True)
    if lost and not allow_mass_delete:
        return GateResult(status="failed", floor=floor, tolerance=tolerance,
                          reason=f"document count: {lost}; confirm with `hybridops refresh --full "
                                 f"--allow-mass-delete` (flow: params.allow_mass_delete=true)")
    golden = settings.golden_retrieval or DEFAULT_GOLDEN
    if not golden.exists():
        return GateResult(status="not_applicable", floor=floor, tolerance=tolerance,
                          reason=f"golden set {golden} not found")
    questions = load_golden(golden)
    landed = landed_doc_ids(landing)
    # each generation as it would serve: its own retrieval profile (carried or none), else the settings
    new = evaluate(Searcher(settings, client, collection=target.generation.name, embedder=embedder), questions,
                   settings.recall_k, None, None, landed, str(golden))
    if new.applicable == 0:
        return GateResult(status="not_applicable", floor=floor, tolerance=tolerance,
                          reason="no golden question has its gold documents in the landing zone")
    live_recall = None
    if target.live is not None:
        try:
            live = evaluate(Searcher(settings, client, collection=target.live.name, embedder=embedder), questions,
                            settings.recall_k, None, None, landed, str(golden))
            live_recall = live.recall_at_k
        except (IndexOperationError, ModelError):  # its model cannot be loaded here: use its recorded figure
            live_recall = target.live.eval.get("recall_at_k")
    target.generation.eval = {"recall_at_k": new.recall_at_k, "mrr": new.mrr, "applicable": new.applicable}
    ok = new.recall_at_k >= floor and (live_recall is None or new.recall_at_k >= live_recall - tolerance)
    reason = (f"recall@{settings.recall_k} {new.recall_at_k:.3f} (floor {floor}"
              + (f", live {live_recall:.3f} - tolerance {tolerance}" if live_recall is not None else "") + ")")
    return GateResult(status="passed" if ok else "failed", recall_at_k=new.recall_at_k, mrr=new.mrr,
                      live_recall_at_k=live_recall, floor=floor, tolerance=tolerance, applicable=new.applicable,
                      reason=reason)


def finish_rebuild(settings: Settings, client, target: Target, gate: GateResult) -> tuple[bool, list[str]]:
    """Flip the alias to a rebuilt generation that passed the gate; keep one previous for rollback."""
    gen = target.generation
    if gate.status == "failed":
        gen.state = "rejected"
        save_generation(client, gen)
        return False, []
    gen.state = "ready"
    save_generation(client, gen)
    point_alias(client, settings, gen.name)
    keep = {target.live.name} if target.live is not None else set()
    return True, prune_generations(client, settings, keep=keep)

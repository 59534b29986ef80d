"""Retrieval quality on a golden set (question -> gold doc ids): recall@k and MRR over documents.

k counts documents (the first k distinct documents of the best chunks; the rebuild gate's recall_k) or
chunks (the distinct documents of the top k chunks: what the answer path puts in the prompt).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, model_validator

from hybridops.tasks.core.errors import BadInputError
from hybridops.tasks.knowledge.landing import landed_doc_ids
from hybridops.tasks.core.object_store import landing_zone
from hybridops.tasks.knowledge.search import Searcher, SearchHit
from hybridops.tasks.core.settings import Settings, PROJECT_ROOT
from hybridops.tasks.core.weaviate_connection import weaviate_session

DEFAULT_GOLDEN = PROJECT_ROOT / "examples" / "golden_retrieval.jsonl"
_GOLD_KEYS = ("gold_doc_ids", "gold_docs", "doc_ids", "gold")
KCounts = Literal["documents", "chunks"]


class GoldenQuestion(BaseModel):
    """One golden-set line: a question and the documents that answer it."""

    question: str
    gold_doc_ids: list[str]

    @model_validator(mode="before")
    @classmethod
    def _accept_aliases(cls, data):
        if isinstance(data, dict) and "gold_doc_ids" not in data:
            for key in _GOLD_KEYS:
                if key in data:
                    value = data[key]
                    data = {**data, "gold_doc_ids": [value] if isinstance(value, str) else value}
                    break
        return data


class QuestionResult(BaseModel):
    question: str
    gold_doc_ids: list[str]
    retrieved_doc_ids: list[str]
    recall: float
    reciprocal_rank: float
    hit: bool


class Figures(BaseModel):
    """Means over scored questions (None when there were none)."""

    questions: int
    recall_at_k: float | None
    mrr: float | None
    hit_rate: float | None


class RetrievalReport(BaseModel):
    """Aggregate figures plus per-question results (for knowledge-gap attribution)."""

    collection: str
    embedding_model: str
    k: int
    k_counts: KCounts = "documents"
    mode: str
    alpha: float | None
    golden_set: str
    questions: int
    applicable: int
    skipped: list[str] = Field(default_factory=list, description="Questions whose gold docs are not landed.")
    recall_at_k: float | None
    mrr: float | None
    hit_rate: float | None
    results: list[QuestionResult] = Field(default_factory=list)


def load_golden(path: Path | str) -> list[GoldenQuestion]:
    """Read a JSONL golden set; a bad line is an error naming the line, never silently skipped."""
    questions = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            questions.append(GoldenQuestion.model_validate(json.loads(line)))
        except ValueError as exc:
            raise BadInputError(f"{path}:{number}: not a golden question ({exc})") from exc
    return questions


def golden_path(settings: Settings, golden: Path | str | None = None) -> Path:
    """The golden set to use: the one given, else settings.golden_retrieval, else the shipped one."""
    return Path(golden) if golden else settings.golden_retrieval or DEFAULT_GOLDEN


def split_landed(
    questions: Iterable[GoldenQuestion], landed: set[str] | None,
) -> tuple[list[GoldenQuestion], list[str]]:
    """(questions whose gold docs are at least partly landed, the other questions' text); landed=None: all."""
    applicable, skipped = [], []
    for q in questions:
        (applicable if landed is None or set(q.gold_doc_ids) & landed else skipped).append(q)
    return applicable, [q.question for q in skipped]


def distinct_docs(hits: Iterable[SearchHit]) -> list[str]:
    """Document ids in the order of their best chunk."""
    return list(dict.fromkeys(hit.doc_id for hit in hits))


def rank_documents(
    searcher: Searcher, question: str, k: int, mode: str | None = None, alpha: float | None = None,
    k_counts: KCounts = "documents",
) -> list[str]:
    """Distinct document ids, best first: of the top k chunks (k_counts="chunks"), or the first k documents
    of the best 4k chunks ("documents")."""
    if k_counts == "chunks":
        return distinct_docs(searcher.search(question, k=k, mode=mode, alpha=alpha))
    return distinct_docs(searcher.search(question, k=k * 4, mode=mode, alpha=alpha))[:k]


def score_question(q: GoldenQuestion, ranked: list[str]) -> QuestionResult:
    gold = set(q.gold_doc_ids)
    first = next((i for i, d in enumerate(ranked, start=1) if d in gold), None)
    return QuestionResult(
        question=q.question, gold_doc_ids=q.gold_doc_ids, retrieved_doc_ids=ranked,
        recall=len(gold & set(ranked)) / len(gold) if gold else 0.0,
        reciprocal_rank=1.0 / first if first else 0.0, hit=first is not None,
    )


def figures(results: Sequence[QuestionResult]) -> Figures:
    n = len(results)
    return Figures(
        questions=n,
        recall_at_k=sum(r.recall for r in results) / n if n else None,
        mrr=sum(r.reciprocal_rank for r in results) / n if n else None,
        hit_rate=sum(r.hit for r in results) / n if n else None,
    )


def evaluate(
    searcher: Searcher,
    questions: list[GoldenQuestion],
    k: int | None = None,
    mode: str | None = None,
    alpha: float | None = None,
    landed: set[str] | None = None,
    golden_set: str = "",
    k_counts: KCounts = "documents",
) -> RetrievalReport:
    """Score every question whose gold docs are (at least partly) landed; the rest are reported as skipped.

    mode and alpha default to the generation's effective retrieval profile; k to settings.recall_k when it
    counts documents, to the profile's chunks per question when it counts chunks."""
    if k is None and k_counts == "documents":
        k = searcher.settings.recall_k
    profile = searcher.profile(k=k, mode=mode, alpha=alpha)
    applicable, skipped = split_landed(questions, landed)
    results = [score_question(q, rank_documents(searcher, q.question, profile.k, profile.mode, profile.alpha,
                                                k_counts)) for q in applicable]
    return RetrievalReport(
        collection=searcher.generation.name, embedding_model=searcher.generation.embedding_model, k=profile.k,
        k_counts=k_counts, mode=profile.mode, alpha=profile.alpha, golden_set=golden_set, questions=len(questions),
        applicable=len(results), skipped=skipped, results=results,
        **figures(results).model_dump(exclude={"questions"}),
    )


def run_retrieval_eval(
    settings: Settings,
    golden: Path | str | None = None,
    k: int | None = None,
    mode: str | None = None,
    alpha: float | None = None,
    collection: str | None = None,
    client=None,
    embedder=None,
    k_counts: KCounts = "documents",
) -> RetrievalReport:
    """Evaluate the live generation (or `collection`) on the golden set against the landed documents."""
    path = Path(golden) if golden else DEFAULT_GOLDEN
    questions = load_golden(path)
    landed = landed_doc_ids(landing_zone(settings))
    if client is None:
        with weaviate_session(settings) as own:
            searcher = Searcher(settings, own, collection=collection, embedder=embedder)
            return evaluate(searcher, questions, k, mode, alpha, landed, str(path), k_counts)
    searcher = Searcher(settings, client, collection=collection, embedder=embedder)
    return evaluate(searcher, questions, k, mode, alpha, landed, str(path), k_counts)

"""Retrieval quality on a golden set (question -> gold doc ids): recall@k and MRR over documents."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, Field, model_validator

from hybridops.tasks.core.errors import BadInputError
from hybridops.tasks.knowledge.landing import landed_doc_ids
from hybridops.tasks.core.object_store import landing_zone
from hybridops.tasks.knowledge.search import Mode, Searcher
from hybridops.tasks.core.settings import Settings, PROJECT_ROOT
from hybridops.tasks.core.weaviate_connection import weaviate_session

DEFAULT_GOLDEN = PROJECT_ROOT / "examples" / "golden_retrieval.jsonl"
_GOLD_KEYS = ("gold_doc_ids", "gold_docs", "doc_ids", "gold")


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


class RetrievalReport(BaseModel):
    """Aggregate figures plus per-question results (for knowledge-gap attribution)."""

    collection: str
    embedding_model: str
    k: int
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


def rank_documents(searcher: Searcher, question: str, k: int, mode: Mode, alpha: float | None) -> list[str]:
    """Distinct document ids of the best chunks, best first, at most k."""
    docs: list[str] = []
    for hit in searcher.search(question, k=k * 4, mode=mode, alpha=alpha):
        if hit.doc_id not in docs:
            docs.append(hit.doc_id)
    return docs[:k]


def score_question(q: GoldenQuestion, ranked: list[str]) -> QuestionResult:
    gold = set(q.gold_doc_ids)
    first = next((i for i, d in enumerate(ranked, start=1) if d in gold), None)
    return QuestionResult(
        question=q.question, gold_doc_ids=q.gold_doc_ids, retrieved_doc_ids=ranked,
        recall=len(gold & set(ranked)) / len(gold) if gold else 0.0,
        reciprocal_rank=1.0 / first if first else 0.0, hit=first is not None,
    )


def evaluate(
    searcher: Searcher,
    questions: list[GoldenQuestion],
    k: int,
    mode: Mode = "hybrid",
    alpha: float | None = None,
    landed: set[str] | None = None,
    golden_set: str = "",
) -> RetrievalReport:
    """Score every question whose gold docs are (at least partly) landed; the rest are reported as skipped."""
    applicable = [q for q in questions if landed is None or set(q.gold_doc_ids) & landed]
    skipped = [q.question for q in questions if q not in applicable]
    results = [score_question(q, rank_documents(searcher, q.question, k, mode, alpha)) for q in applicable]
    n = len(results)
    return RetrievalReport(
        collection=searcher.generation.name, embedding_model=searcher.generation.embedding_model, k=k,
        mode=mode, alpha=(searcher.settings.hybrid_alpha if alpha is None else alpha) if mode == "hybrid" else None,
        golden_set=golden_set, questions=len(questions), applicable=n, skipped=skipped,
        recall_at_k=sum(r.recall for r in results) / n if n else None,
        mrr=sum(r.reciprocal_rank for r in results) / n if n else None,
        hit_rate=sum(r.hit for r in results) / n if n else None,
        results=results,
    )


def run_retrieval_eval(
    settings: Settings,
    golden: Path | str | None = None,
    k: int | None = None,
    mode: Mode = "hybrid",
    alpha: float | None = None,
    collection: str | None = None,
    client=None,
    embedder=None,
) -> RetrievalReport:
    """Evaluate the live generation (or `collection`) on the golden set against the landed documents."""
    path = Path(golden) if golden else DEFAULT_GOLDEN
    questions = load_golden(path)
    landed = landed_doc_ids(landing_zone(settings))
    if client is None:
        with weaviate_session(settings) as own:
            searcher = Searcher(settings, own, collection=collection, embedder=embedder)
            return evaluate(searcher, questions, k or settings.recall_k, mode, alpha, landed, str(path))
    searcher = Searcher(settings, client, collection=collection, embedder=embedder)
    return evaluate(searcher, questions, k or settings.recall_k, mode, alpha, landed, str(path))

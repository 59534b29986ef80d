"""Gap attribution: tell 'the index lacked the answer' (knowledge) from 'the model misbehaved with the right context'.

Per failing case:
- has gold docs and retrieval found none of them          -> knowledge (never counts toward drift/retraining)
- has gold docs, retrieval found one, re-asked with ONLY the gold passages (oracle context):
    still failing -> behaviour (counts toward drift);   passing -> retrieval_noise (ranking/context problem)
- a refusal case (its answer is not in the corpus by design) -> behaviour: the model had the right
  (irrelevant) context and still answered
- no gold docs and not a refusal case (e.g. a sampled interaction) -> not attributed
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from typing import Literal

from pydantic import BaseModel

from hybridops.tasks.behaviour.checks import content_words
from hybridops.tasks.behaviour.prompting import Passage
from hybridops.tasks.behaviour.suite import Case, CaseResult, EvalReport, Suite, evaluate_cases
from hybridops.tasks.core.settings import Settings
from hybridops.tasks.knowledge.search import chunks_for_docs

GapKind = Literal["knowledge", "behaviour", "retrieval_noise"]
GAP_KINDS: tuple[GapKind, ...] = ("knowledge", "behaviour", "retrieval_noise")
NOT_BEHAVIOUR: frozenset[str] = frozenset({"knowledge", "retrieval_noise"})
OracleFetch = Callable[[Sequence[str]], Sequence[Passage]]


class GapAttribution(BaseModel):
    """Why one case failed, with the evidence: missing gold docs and the oracle re-ask's failed checks."""

    case_id: str
    kind: GapKind
    failed_checks: list[str]
    missing_gold: list[str] = []
    oracle_failed_checks: list[str] | None = None
    detail: str = ""


def missed_gold(result: CaseResult) -> list[str]:
    """Gold docs that retrieval did not return."""
    return [doc for doc in result.gold_docs if doc not in set(result.retrieved)]


def needs_oracle(result: CaseResult) -> bool:
    """A failing case whose gold docs were (at least partly) retrieved: only an oracle re-ask can tell."""
    return not result.passed and bool(result.gold_docs) and len(missed_gold(result)) < len(result.gold_docs)


def classify(result: CaseResult, refusal: bool, oracle: CaseResult | None = None) -> GapAttribution | None:
    """The gap of one case from plain data (oracle = the re-ask with gold passages only, when one was run)."""
    if result.passed:
        return None
    failed = result.failed_checks
    if refusal:
        return GapAttribution(case_id=result.case_id, kind="behaviour", failed_checks=failed,
                              detail="answered although the corpus has no answer")
    if not result.gold_docs:
        return None
    missing = missed_gold(result)
    if len(missing) == len(result.gold_docs):
        return GapAttribution(case_id=result.case_id, kind="knowledge", failed_checks=failed, missing_gold=missing,
                              detail="retrieval returned none of the gold docs")
    if oracle is None:
        raise ValueError(f"case {result.case_id}: gold docs were retrieved, the oracle re-ask result is required")
    if not oracle.retrieved:
        return GapAttribution(case_id=result.case_id, kind="knowledge", failed_checks=failed, missing_gold=missing,
                              oracle_failed_checks=[], detail="the gold docs have no chunks in the index")
    kind: GapKind = "retrieval_noise" if oracle.passed else "behaviour"
    detail = "passes with gold passages only" if oracle.passed else "fails even with gold passages only"
    return GapAttribution(case_id=result.case_id, kind=kind, failed_checks=failed, missing_gold=missing,
                          oracle_failed_checks=oracle.failed_checks, detail=detail)


def attribute_gaps(
    settings: Settings,
    suite: Suite,
    report: EvalReport,
    model,
    tokenizer,
    oracle_fetch: OracleFetch | None = None,
) -> list[GapAttribution]:
    """Attribute every failing case; re-asks the model with oracle context where retrieval found the gold docs
    (the re-asks are generated in batches of settings.eval_batch_tokens, like the suite run)."""
    if oracle_fetch is None:
        def oracle_fetch(doc_ids: Sequence[str]) -> Sequence[Passage]:
            return chunks_for_docs(settings, list(doc_ids))

    cases: dict[str, Case] = {case.id: case for case in suite.cases}
    judged = [(result, cases[result.case_id]) for result in report.cases if result.case_id in cases]
    # the oracle contexts are fetched per case, then every re-ask is answered in generation batches
    reasks = [(case, oracle_passages(case.question, oracle_fetch(case.gold_docs), settings.search_k))
              for result, case in judged if needs_oracle(result) and not case.refusal]
    oracles = {result.case_id: result
               for result in evaluate_cases(settings, suite, reasks, model, tokenizer)} if reasks else {}
    gaps = []
    for result, case in judged:
        gap = classify(result, case.refusal, oracles.get(case.id))
        if gap is not None:
            gaps.append(gap)
    return gaps


def oracle_passages(question: str, chunks: Sequence[Passage], limit: int) -> list[Passage]:
    """The gold docs' chunks; a long gold doc is cut to the `limit` chunks sharing most words with the question
    (kept in document order) so the oracle prompt is no longer than a retrieval prompt."""
    chunks = list(chunks)
    if len(chunks) <= limit:
        return chunks
    wanted = set(content_words(question))
    ranked = sorted(range(len(chunks)), key=lambda i: -len(wanted & set(content_words(chunks[i].text))))
    return [chunks[i] for i in sorted(ranked[:limit])]


def gap_counts(gaps: Sequence[GapAttribution]) -> dict[str, int]:
    counts = Counter(gap.kind for gap in gaps)
    return {kind: counts.get(kind, 0) for kind in GAP_KINDS}

"""Gap attribution: route every failing case to the action that fixes it, with the evidence.

Per failing case (the first rule that applies wins; knowledge before behaviour, since fixing the index is
cheap and a retrain on a knowledge gap teaches nothing):
- a refusal case (its answer is not in the corpus by design)        -> behaviour: it answered anyway
- no gold docs (e.g. a sampled interaction)                          -> not attributed
- none of its gold docs is in the live index at its landed version  -> missing_document, with why per doc
  (never landed, quarantined + the entry's reasons, deleted, landed after the last refresh)
- gold docs indexed but retrieval returned none of them             -> retrieval_miss (tune retrieval)
- a gold doc retrieved: re-asked with ONLY the gold passages (oracle context):
    still failing -> behaviour (counts toward drift and retraining)
    passing       -> retrieval_noise (the other passages misled it: a retrieval/context problem)
Only `behaviour` ever counts toward drift; the knowledge-side routes emit hybridops.knowledge.gap.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Literal

from pydantic import BaseModel

from hybridops.tasks.behaviour.checks import content_words
from hybridops.tasks.behaviour.prompting import Passage
from hybridops.tasks.behaviour.suite import Case, CaseResult, EvalReport, Suite, evaluate_cases
from hybridops.tasks.core.settings import Settings
from hybridops.tasks.knowledge.document_status import DocumentStatus, document_status
from hybridops.tasks.knowledge.search import chunks_for_docs

Route = Literal["missing_document", "retrieval_miss", "retrieval_noise", "behaviour"]
ROUTES: tuple[Route, ...] = ("missing_document", "retrieval_miss", "retrieval_noise", "behaviour")
KNOWLEDGE_ROUTES: frozenset[str] = frozenset({"missing_document", "retrieval_miss"})
NOT_BEHAVIOUR: frozenset[str] = frozenset({"missing_document", "retrieval_miss", "retrieval_noise"})
SWEEP = "`hybridops eval retrieval --sweep`"
ACTIONS: dict[str, str] = {
    "missing_document": "land or fix the document, or refresh (never a retrain)",
    "retrieval_miss": f"tune retrieval: {SWEEP} (the document is indexed; never a retrain)",
    "retrieval_noise": f"tune retrieval: {SWEEP} (right with the gold passages alone: the others misled it)",
    "behaviour": "retrain the adapter (counts toward drift): `hybridops retrain`",
}
OracleFetch = Callable[[Sequence[str]], Sequence[Passage]]
StatusLookup = Callable[[Sequence[str]], Mapping[str, DocumentStatus]]


class GapAttribution(BaseModel):
    """Why one case failed and what fixes it: the route, the gold docs retrieval missed, where each missing
    document stands, and the oracle re-ask's failed checks."""

    case_id: str
    kind: Route
    failed_checks: list[str]
    missing_gold: list[str] = []
    documents: list[DocumentStatus] = []  # gold docs not in the live index at their landed version
    oracle_failed_checks: list[str] | None = None
    detail: str = ""
    action: str = ""

    @property
    def knowledge_side(self) -> bool:
        return self.kind in KNOWLEDGE_ROUTES


def missed_gold(result: CaseResult) -> list[str]:
    """Gold docs that retrieval did not return."""
    return [doc for doc in result.gold_docs if doc not in set(result.retrieved)]


def needs_oracle(result: CaseResult, statuses: Mapping[str, DocumentStatus] | None = None) -> bool:
    """A failing case whose gold docs were (at least partly) retrieved and are not all missing from the index:
    only an oracle re-ask can tell behaviour from retrieval noise."""
    statuses = statuses or {}
    all_missing = all(d in statuses and statuses[d].missing for d in result.gold_docs)
    return (not result.passed and bool(result.gold_docs) and not all_missing
            and len(missed_gold(result)) < len(result.gold_docs))


def classify(
    result: CaseResult, refusal: bool, oracle: CaseResult | None = None,
    statuses: Mapping[str, DocumentStatus] | None = None,
) -> GapAttribution | None:
    """The route of one case from plain data: `oracle` = the re-ask with gold passages only (when one was
    run), `statuses` = where each gold doc stands (absent: indexed)."""
    if result.passed:
        return None
    failed = result.failed_checks
    if refusal:
        return _gap(result, "behaviour", "answered although the corpus has no answer")
    if not result.gold_docs:
        return None
    statuses = statuses or {}
    missing = missed_gold(result)
    unavailable = [statuses[d] for d in result.gold_docs if d in statuses and statuses[d].missing]
    if len(unavailable) == len(result.gold_docs):
        return _gap(result, "missing_document", "; ".join(f"{s.doc_id}: {s.detail}" for s in unavailable),
                    missing, documents=unavailable,
                    action="; ".join(dict.fromkeys(s.action for s in unavailable)) + " (never a retrain)")
    if len(missing) == len(result.gold_docs):
        return _gap(result, "retrieval_miss", "the gold docs are indexed but retrieval returned none of them",
                    missing, documents=unavailable)
    if oracle is None:
        raise ValueError(f"case {result.case_id}: gold docs were retrieved, the oracle re-ask result is required")
    if not oracle.retrieved:  # the gold docs vanished from the index between the run and the re-ask
        return _gap(result, "missing_document", "the gold docs have no chunks in the index", missing,
                    oracle_failed_checks=[], action="run `hybridops refresh --verify` (never a retrain)")
    if oracle.passed:
        return _gap(result, "retrieval_noise", "passes with gold passages only", missing, documents=unavailable,
                    oracle_failed_checks=oracle.failed_checks)
    return _gap(result, "behaviour", "fails even with gold passages only", missing, documents=unavailable,
                oracle_failed_checks=oracle.failed_checks)


def _gap(result: CaseResult, route: Route, detail: str, missing: list[str] | None = None, **extra) -> GapAttribution:
    extra.setdefault("action", ACTIONS[route])
    return GapAttribution(case_id=result.case_id, kind=route, failed_checks=result.failed_checks,
                          missing_gold=missing or [], detail=detail, **extra)


def attribute_gaps(
    settings: Settings,
    suite: Suite,
    report: EvalReport,
    model,
    tokenizer,
    oracle_fetch: OracleFetch | None = None,
    status_lookup: StatusLookup | None = None,
) -> list[GapAttribution]:
    """Route every failing case: where its gold docs stand (one look-up for all of them), then an oracle re-ask
    where retrieval found them (re-asks generated in batches of settings.eval_batch_tokens, like the suite)."""
    if oracle_fetch is None:
        def oracle_fetch(doc_ids: Sequence[str]) -> Sequence[Passage]:
            return chunks_for_docs(settings, list(doc_ids))
    if status_lookup is None:
        def status_lookup(doc_ids: Sequence[str]) -> Mapping[str, DocumentStatus]:
            return document_status(settings, doc_ids)

    cases: dict[str, Case] = {case.id: case for case in suite.cases}
    judged = [(result, cases[result.case_id]) for result in report.cases if result.case_id in cases]
    asked = [doc for result, case in judged if not result.passed and not case.refusal for doc in result.gold_docs]
    statuses = status_lookup(list(dict.fromkeys(asked))) if asked else {}
    # the oracle contexts are fetched per case, then every re-ask is answered in generation batches
    reasks = [(case, oracle_passages(case.question, oracle_fetch(case.gold_docs), settings.search_k))
              for result, case in judged if needs_oracle(result, statuses) and not case.refusal]
    oracles = {result.case_id: result
               for result in evaluate_cases(settings, suite, reasks, model, tokenizer)} if reasks else {}
    gaps = []
    for result, case in judged:
        gap = classify(result, case.refusal, oracles.get(case.id), statuses)
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
    """Cases per route (every route present, zeros included)."""
    counts = Counter(gap.kind for gap in gaps)
    return {route: counts.get(route, 0) for route in ROUTES}


class RouteSummary(BaseModel):
    """One route of an eval run: how many cases, which, the documents involved and what to do."""

    route: Route
    count: int
    cases: list[str]
    documents: list[str]
    actions: list[str]
    counts_toward_retraining: bool


def route_summary(gaps: Sequence[GapAttribution]) -> list[RouteSummary]:
    """Per route (in ROUTES order) its cases, affected documents and the distinct suggested actions."""
    rows = []
    for route in ROUTES:
        mine = [gap for gap in gaps if gap.kind == route]
        documents = [d for gap in mine for d in (gap.missing_gold if route == "retrieval_miss"
                                                  else [s.doc_id for s in gap.documents])]
        rows.append(RouteSummary(
            route=route, count=len(mine), cases=[gap.case_id for gap in mine],
            documents=list(dict.fromkeys(documents)),
            actions=list(dict.fromkeys(gap.action for gap in mine)) or [ACTIONS[route]],
            counts_toward_retraining=route not in NOT_BEHAVIOUR,
        ))
    return rows

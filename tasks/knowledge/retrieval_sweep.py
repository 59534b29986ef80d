"""Retrieval tuning for `retrieval_miss` gaps: score a small grid of (mode, alpha, k) and store the best as
the live generation's retrieval profile with one explicit command.

A behaviour case whose gold document is indexed but was not retrieved calls for retrieval tuning, not a
retrain. The sweep scores every grid point the way the answer path retrieves (k chunks per question, recall
over the distinct documents of those chunks) on the golden set plus the caller's missed questions, next to
today's effective setting; `apply_profile` (`hybridops index tune`) stores a profile on the live generation
so every `ask`, eval and gap attribution of the namespace uses it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel

from hybridops.tasks.core.errors import BadInputError, ConflictError
from hybridops.tasks.core.locks import namespace_lock
from hybridops.tasks.core.object_store import landing_zone
from hybridops.tasks.core.settings import Settings
from hybridops.tasks.core.weaviate_connection import weaviate_session
from hybridops.tasks.knowledge.index import alias_name, get_generation, live_name, save_generation
from hybridops.tasks.knowledge.landing import landed_doc_ids
from hybridops.tasks.knowledge.retrieval_eval import (
    Figures,
    GoldenQuestion,
    QuestionResult,
    distinct_docs,
    figures,
    golden_path,
    load_golden,
    score_question,
    split_landed,
)
from hybridops.tasks.knowledge.search import (
    MODES,
    NoIndexError,
    RetrievalProfile,
    Searcher,
    check_profile,
    resolve_profile,
)

GRID_SETTINGS: tuple[tuple[str, float | None], ...] = (
    ("hybrid", 0.0), ("hybrid", 0.25), ("hybrid", 0.5), ("hybrid", 0.75), ("hybrid", 1.0),
    ("vector", None), ("bm25", None),
)
GRID_K: tuple[int, ...] = (3, 5, 8)
TIE_DIGITS = 9
"""Means are compared rounded: the same hits summed in another order may differ in the last bit."""


class SweepPoint(BaseModel):
    """One (mode, alpha, k): figures on every question, and on the caller's extra questions alone."""

    mode: str
    alpha: float | None
    k: int
    overall: Figures
    extra: Figures | None = None
    in_grid: bool = True
    current: bool = False
    best: bool = False

    @property
    def profile(self) -> RetrievalProfile:
        return RetrievalProfile(mode=self.mode, alpha=self.alpha, k=self.k)


class Improvement(BaseModel):
    """Best minus today's (None where either has no figure)."""

    recall_at_k: float | None
    mrr: float | None
    hit_rate: float | None


class SweepReport(BaseModel):
    """Every grid point, today's effective setting, and the best one with the command that applies it."""

    collection: str
    embedding_model: str
    golden_set: str
    golden_questions: int
    extra_questions: int
    skipped: list[str]
    points: list[SweepPoint]
    current: SweepPoint
    best: SweepPoint
    improvement: Improvement
    changed: bool
    apply_command: str | None


class TuneResult(BaseModel):
    """A profile change of the live generation: effective retrieval before and after, and what is stored."""

    generation: str
    before: RetrievalProfile
    after: RetrievalProfile
    stored_before: dict
    stored_after: dict
    changed: bool


# Sweep ------------------------------------------------------------------------------------------


def _key(q: GoldenQuestion) -> tuple[str, tuple[str, ...]]:
    return q.question, tuple(sorted(set(q.gold_doc_ids)))


def _same_setting(mode: str, alpha: float | None, profile: RetrievalProfile) -> bool:
    if mode != profile.mode:
        return False
    return alpha is None and profile.alpha is None or (
        alpha is not None and profile.alpha is not None and abs(alpha - profile.alpha) < 1e-9)


def _vector_weight(mode: str, alpha: float | None) -> float:
    """Where a setting sits between keyword (0) and vector (1) retrieval, to say which is closer to today's."""
    return {"vector": 1.0, "bm25": 0.0}.get(mode, alpha if alpha is not None else 0.5)


def rank_key(point: SweepPoint, current: RetrievalProfile) -> tuple:
    """Best first: highest recall, then MRR, then smaller k, then the setting closest to today's."""
    recall = round(point.overall.recall_at_k, TIE_DIGITS) if point.overall.recall_at_k is not None else -1.0
    mrr = round(point.overall.mrr, TIE_DIGITS) if point.overall.mrr is not None else -1.0
    distance = abs(_vector_weight(point.mode, point.alpha) - _vector_weight(current.mode, current.alpha))
    return -recall, -mrr, point.k, point.mode != current.mode, round(distance, TIE_DIGITS)


def choose_best(points: Sequence[SweepPoint], current: RetrievalProfile) -> SweepPoint:
    """The best point (ties keep grid order); with no scored question, today's setting stays."""
    if not any(p.overall.questions for p in points):
        return next(p for p in points if p.current)
    return min(points, key=lambda p: rank_key(p, current))


def _delta(best: float | None, current: float | None) -> float | None:
    return None if best is None or current is None else best - current


def tune_command(profile: RetrievalProfile) -> str:
    """The exact command that stores `profile` on the live generation."""
    alpha = f" --alpha {profile.alpha:g}" if profile.alpha is not None else ""
    return f"hybridops index tune --mode {profile.mode}{alpha} --k {profile.k}"


def sweep(
    searcher,
    golden: Sequence[GoldenQuestion],
    extra: Sequence[GoldenQuestion] = (),
    landed: set[str] | None = None,
    golden_set: str = "",
    grid: Sequence[tuple[str, float | None]] = GRID_SETTINGS,
    ks: Sequence[int] = GRID_K,
) -> SweepReport:
    """Score every (mode, alpha) x k of the grid, and today's effective setting, on the golden questions whose
    gold docs are landed plus the extra (missed) ones.

    `searcher` is a `Searcher` (or anything with its settings, generation, profile(), embed_query() and
    search(..., vector=)). Each question is embedded once and each (mode, alpha) searched once at the largest
    k; a smaller k is that list's first k chunks. That equals a search at the smaller k because the ranking
    does not depend on k: every mode fetches the same CANDIDATES (>= any k here) candidates whatever the
    limit and cuts the ranked list (search.CANDIDATES), so the top 3 of a k=8 query are the k=3 query."""
    current = searcher.profile()
    for mode, alpha in grid:
        check_profile(mode, alpha, 1)
    ks = sorted({check_profile("bm25", None, k).k for k in ks})  # validates each k
    applicable, skipped = split_landed(golden, landed)
    extra_applicable, extra_skipped = split_landed(list({_key(q): q for q in extra}.values()), landed)
    seen, extra_keys = {_key(q) for q in applicable}, {_key(q) for q in extra_applicable}
    questions = applicable + [q for q in extra_applicable if _key(q) not in seen]  # a golden one counts once
    is_extra = [_key(q) in extra_keys for q in questions]

    settings_tried = list(grid)
    if not any(_same_setting(m, a, current) for m, a in grid):
        settings_tried.append((current.mode, current.alpha))
    depths = sorted(set(ks) | {current.k})
    vectors = ({q.question: searcher.embed_query(q.question) for q in questions}
               if any(mode != "bm25" for mode, _ in settings_tried) else {})

    scored: dict[tuple[str, float | None, int], list[QuestionResult]] = {}
    for mode, alpha in settings_tried:
        per_k: dict[int, list[QuestionResult]] = {k: [] for k in depths}
        for q in questions:
            hits = searcher.search(q.question, k=depths[-1], mode=mode, alpha=alpha,
                                   vector=vectors.get(q.question) if mode != "bm25" else None)
            for k in depths:
                per_k[k].append(score_question(q, distinct_docs(hits[:k])))
        for k, results in per_k.items():
            scored[(mode, alpha, k)] = results

    def point(mode: str, alpha: float | None, k: int, in_grid: bool) -> SweepPoint:
        results = scored[(mode, alpha, k)]
        extra_results = [r for r, flag in zip(results, is_extra) if flag]
        return SweepPoint(
            mode=mode, alpha=alpha, k=k, overall=figures(results),
            extra=figures(extra_results) if extra_applicable else None, in_grid=in_grid,
            current=_same_setting(mode, alpha, current) and k == current.k,
        )

    points = [point(mode, alpha, k, True) for mode, alpha in grid for k in ks]
    if not any(p.current for p in points):
        mode, alpha = next((m, a) for m, a in settings_tried if _same_setting(m, a, current))
        points.append(point(mode, alpha, current.k, False))
    best = choose_best(points, current)
    best.best = True
    today = next(p for p in points if p.current)
    changed = best is not today
    return SweepReport(
        collection=searcher.generation.name, embedding_model=searcher.generation.embedding_model,
        golden_set=golden_set, golden_questions=len(applicable), extra_questions=len(extra_applicable),
        skipped=skipped + extra_skipped, points=points, current=today, best=best,
        improvement=Improvement(
            recall_at_k=_delta(best.overall.recall_at_k, today.overall.recall_at_k),
            mrr=_delta(best.overall.mrr, today.overall.mrr),
            hit_rate=_delta(best.overall.hit_rate, today.overall.hit_rate),
        ),
        changed=changed, apply_command=tune_command(best.profile) if changed else None,
    )


def run_sweep(
    settings: Settings, extra: Sequence[GoldenQuestion] = (), golden: Path | str | None = None, *, client=None,
    embedder=None,
) -> SweepReport:
    """Sweep the live generation on the golden set (default settings.golden_retrieval) plus `extra`."""
    path = golden_path(settings, golden)
    questions = load_golden(path)
    landed = landed_doc_ids(landing_zone(settings))
    if client is None:
        with weaviate_session(settings) as own:
            return sweep(Searcher(settings, own, embedder=embedder), questions, extra, landed, str(path))
    return sweep(Searcher(settings, client, embedder=embedder), questions, extra, landed, str(path))


# Apply ------------------------------------------------------------------------------------------


def requested_profile(
    before: RetrievalProfile, mode: str | None, alpha: float | None, k: int | None, default_alpha: float = 0.5,
) -> RetrievalProfile:
    """Today's effective profile with the given fields changed; alpha only makes sense for hybrid (switching
    to hybrid without one takes `default_alpha`, the settings' hybrid_alpha)."""
    new_mode = mode or before.mode
    if alpha is not None and new_mode != "hybrid":
        raise BadInputError(f"--alpha applies to mode hybrid only (the mode would be {new_mode})")
    if new_mode == "hybrid" and alpha is None:
        alpha = before.alpha if before.alpha is not None else default_alpha
    return check_profile(new_mode, alpha, before.k if k is None else k)


def apply_profile(
    settings: Settings, mode: str | None = None, alpha: float | None = None, k: int | None = None,
    reset: bool = False, expected_generation: str | None = None,
) -> TuneResult:
    """Store a retrieval profile on the live generation (fields not given keep today's effective value), or
    remove it (`reset`: the settings apply again), under the namespace's index lock.

    `expected_generation`: refuse (ConflictError) if the alias moved since a sweep measured that one."""
    if reset and (mode, alpha, k) != (None, None, None):
        raise BadInputError("--reset removes the profile; it takes no --mode/--alpha/--k")
    if not reset and (mode, alpha, k) == (None, None, None):
        raise BadInputError("give --mode, --alpha and/or --k to tune, or --reset")
    if mode is not None and mode not in MODES:  # bad input fails before waiting for the lock
        raise BadInputError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    if mode not in (None, "hybrid") and alpha is not None:
        raise BadInputError(f"--alpha applies to mode hybrid only, not {mode}")
    check_profile("hybrid", alpha, 1 if k is None else k)
    with namespace_lock(settings, "index", "index tune"), weaviate_session(settings) as client:
        name = live_name(client, settings)
        if name is None:
            raise NoIndexError(f"no index yet: alias {alias_name(settings)} does not exist (run `hybridops refresh`)")
        if expected_generation is not None and name != expected_generation:
            raise ConflictError(f"the live generation is now {name}, not the swept {expected_generation}; "
                                "sweep again")
        gen = get_generation(client, settings, name)
        before = resolve_profile(settings, gen.retrieval)
        stored_before = dict(gen.retrieval)
        stored_after = {} if reset else requested_profile(before, mode, alpha, k, settings.hybrid_alpha).model_dump()
        if stored_after != stored_before:
            gen.retrieval = stored_after
            save_generation(client, gen)
    return TuneResult(generation=name, before=before, after=resolve_profile(settings, stored_after),
                      stored_before=stored_before, stored_after=stored_after,
                      changed=stored_after != stored_before)

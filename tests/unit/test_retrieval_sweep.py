"""Retrieval sweep and tuned profiles on plain data: a fake searcher whose rankings do not depend on k."""

from __future__ import annotations

from collections import Counter

import pytest

from hybridops.tasks.core.errors import BadInputError
from hybridops.tasks.core.settings import Settings
from hybridops.tasks.knowledge.index import Generation, _describe, _parse
from hybridops.tasks.knowledge.rebuild import carried_profile
from hybridops.tasks.knowledge.retrieval_eval import Figures, GoldenQuestion, evaluate
from hybridops.tasks.knowledge.retrieval_sweep import (
    GRID_K,
    GRID_SETTINGS,
    SweepPoint,
    apply_profile,
    choose_best,
    requested_profile,
    sweep,
    tune_command,
)
from hybridops.tasks.knowledge.search import RetrievalProfile, SearchHit, check_profile, resolve_profile

NOISE = ["x", "y", "z", "w", "v", "u", "t", "s"]
Q1 = GoldenQuestion(question="rent a tent?", gold_doc_ids=["a"])
Q2 = GoldenQuestion(question="refund window?", gold_doc_ids=["b"])
Q3 = GoldenQuestion(question="about the moon?", gold_doc_ids=["moon"])  # gold doc not landed
LANDED = {"a", "b", "c", *NOISE}


class FakeSearcher:
    """Chunks' doc ids per (mode, alpha) and question, best first; the same list whatever k (cut to k)."""

    def __init__(self, settings: Settings, rankings: dict, stored: dict | None = None):
        self.settings = settings
        self.generation = Generation(name="T_Docs_1", number=1, embedding_model="m", dim=4, state="ready",
                                     created_at="", retrieval=stored or {})
        self.rankings = rankings
        self.embedded: Counter = Counter()
        self.searches: list[tuple] = []

    def profile(self, k=None, mode=None, alpha=None) -> RetrievalProfile:
        return resolve_profile(self.settings, self.generation.retrieval, k=k, mode=mode, alpha=alpha)

    def embed_query(self, query: str) -> list[float]:
        self.embedded[query] += 1
        return [float(len(query))]

    def search(self, query, k=None, mode=None, alpha=None, where=None, *, vector=None) -> list[SearchHit]:
        p = self.profile(k=k, mode=mode, alpha=alpha)
        self.searches.append((query, p.k, p.mode, p.alpha, vector is not None))
        docs = self.rankings.get((p.mode, p.alpha), {}).get(query, NOISE)
        return [SearchHit(doc_id=d, chunk_id=f"{d}#{i}", score=1.0 / (i + 1), title=d, text="t")
                for i, d in enumerate(docs[: p.k])]


RANKINGS = {
    ("hybrid", 0.75): {Q1.question: ["x", "a", "y", "z"], Q2.question: ["x", "y", "z", "w", "b", "v"]},
    ("vector", None): {Q1.question: ["a", "x", "y"], Q2.question: ["y", "y", "b", "x"]},  # y twice: one doc
}


@pytest.fixture
def fake(cfg: Settings) -> FakeSearcher:
    return FakeSearcher(cfg, RANKINGS)


def point(mode, alpha, k, recall, mrr, current=False) -> SweepPoint:
    return SweepPoint(mode=mode, alpha=alpha, k=k, current=current,
                      overall=Figures(questions=2, recall_at_k=recall, mrr=mrr, hit_rate=recall))


def test_the_grid_is_every_setting_times_every_k_with_todays_marked(fake):
    report = sweep(fake, [Q1, Q2], landed=LANDED)
    assert [(p.mode, p.alpha, p.k) for p in report.points] == [(m, a, k) for m, a in GRID_SETTINGS for k in GRID_K]
    assert [(p.mode, p.alpha, p.k) for p in report.points if p.current] == [("hybrid", 0.5, 5)]
    assert (report.current.mode, report.current.alpha, report.current.k) == ("hybrid", 0.5, 5)
    assert report.current.overall.recall_at_k == 0.0 and report.extra_questions == 0
    assert all(p.extra is None for p in report.points)


def test_each_question_is_embedded_once_and_each_setting_searched_once_at_the_largest_k(fake):
    sweep(fake, [Q1, Q2], landed=LANDED)
    assert fake.embedded == Counter({Q1.question: 1, Q2.question: 1})
    assert len(fake.searches) == len(GRID_SETTINGS) * 2
    assert {s[1] for s in fake.searches} == {max(GRID_K)}
    assert all(s[4] == (s[2] != "bm25") for s in fake.searches)  # the vector is passed, bm25 needs none


def test_truncated_figures_equal_a_search_at_each_k(fake, cfg):
    report = sweep(fake, [Q1, Q2, Q3], landed=LANDED)
    for p in report.points:
        direct = evaluate(FakeSearcher(cfg, RANKINGS), [Q1, Q2, Q3], k=p.k, mode=p.mode, alpha=p.alpha,
                          landed=LANDED, k_counts="chunks")
        assert (p.overall.recall_at_k, p.overall.mrr, p.overall.hit_rate) == (
            direct.recall_at_k, direct.mrr, direct.hit_rate), (p.mode, p.alpha, p.k)
    today = evaluate(FakeSearcher(cfg, RANKINGS), [Q1, Q2, Q3], landed=LANDED, k_counts="chunks")
    assert (today.k, today.mode, today.alpha) == (report.current.k, report.current.mode, report.current.alpha)
    assert today.recall_at_k == report.current.overall.recall_at_k and today.mrr == report.current.overall.mrr


def test_recall_counts_distinct_documents_of_the_top_k_chunks(fake):
    report = sweep(fake, [Q1, Q2], landed=LANDED)
    figures = {(p.mode, p.alpha, p.k): p.overall for p in report.points}
    # hybrid 0.75: Q1's gold is chunk 2; Q2's is chunk 5, so it is missed at k=3
    assert (figures[("hybrid", 0.75, 3)].recall_at_k, figures[("hybrid", 0.75, 3)].mrr) == (0.5, 0.25)
    assert (figures[("hybrid", 0.75, 5)].recall_at_k, figures[("hybrid", 0.75, 5)].mrr) == (1.0, 0.35)
    # vector: Q2's top chunks are y, y, b -> documents y, b: the gold document ranks 2nd, within k=3
    assert (figures[("vector", None, 3)].recall_at_k, figures[("vector", None, 3)].mrr) == (1.0, 0.75)


def test_the_best_has_the_highest_recall_then_mrr_and_says_how_to_apply_it(fake):
    report = sweep(fake, [Q1, Q2], landed=LANDED)
    assert (report.best.mode, report.best.alpha, report.best.k, report.best.best) == ("vector", None, 3, True)
    assert [p for p in report.points if p.best] == [report.best]
    assert report.changed and report.apply_command == "hybridops index tune --mode vector --k 3"
    assert (report.improvement.recall_at_k, report.improvement.mrr) == (1.0, 0.75)


def test_when_todays_setting_is_best_nothing_is_to_apply(cfg):
    rankings = {("hybrid", 0.5): {Q1.question: ["a"], Q2.question: ["b"]}}
    report = sweep(FakeSearcher(cfg, rankings), [Q1, Q2], landed=LANDED, ks=[5])
    assert report.best == report.current
    assert report.best.current and not report.changed and report.apply_command is None
    assert report.improvement.recall_at_k == 0.0


def test_ties_go_to_the_smaller_k_then_the_setting_closest_to_todays():
    today = RetrievalProfile(mode="hybrid", alpha=0.5, k=5)
    far, near = point("hybrid", 1.0, 5, 0.8, 0.5), point("hybrid", 0.75, 5, 0.8, 0.5)
    other_mode = point("vector", None, 5, 0.8, 0.5)
    assert choose_best([far, other_mode, near], today) is near
    small = point("hybrid", 0.0, 3, 0.8, 0.5)
    assert choose_best([far, near, small], today) is small
    better_mrr = point("bm25", None, 8, 0.8, 0.6)
    assert choose_best([small, better_mrr], today) is better_mrr
    assert choose_best([better_mrr, point("bm25", None, 8, 0.9, 0.1)], today).overall.recall_at_k == 0.9
    # the same share summed in another order must still tie (then smaller k decides)
    assert choose_best([point("hybrid", 0.5, 8, 0.1 + 0.2, 0.5), point("hybrid", 0.5, 5, 0.3, 0.5)], today).k == 5


def test_without_any_scored_question_todays_setting_stays(cfg):
    report = sweep(FakeSearcher(cfg, RANKINGS), [Q3], landed=LANDED)
    assert report.golden_questions == 0 and report.skipped == [Q3.question]
    assert report.best.current and not report.changed


def test_extra_questions_are_scored_with_the_golden_set_and_on_their_own(cfg):
    missed = GoldenQuestion(question="tent deposit?", gold_doc_ids=["c"])
    rankings = {("bm25", None): {missed.question: ["c"]}, ("hybrid", 0.5): {Q1.question: ["a"]}}
    extra = [missed, missed, Q1, Q3]  # duplicates once; one also golden (counted once overall); one not landed
    report = sweep(FakeSearcher(cfg, rankings), [Q1], extra, landed=LANDED)
    assert (report.golden_questions, report.extra_questions) == (1, 2)
    assert report.skipped == [Q3.question]
    current = report.current
    assert (current.overall.questions, current.overall.recall_at_k) == (2, 0.5)
    assert (current.extra.questions, current.extra.recall_at_k) == (2, 0.5)  # the missed one and Q1
    bm25 = next(p for p in report.points if p.mode == "bm25" and p.k == 3)
    assert (bm25.overall.recall_at_k, bm25.extra.recall_at_k) == (0.5, 0.5)


def test_todays_setting_off_the_grid_is_scored_as_an_extra_row(cfg):
    off = Settings(home=cfg.home, hybrid_alpha=0.3, search_k=4, _env_file=None)
    fake = FakeSearcher(off, {("hybrid", 0.3): {Q1.question: ["x", "x", "x", "a"]}})
    report = sweep(fake, [Q1], landed=LANDED)
    extra_rows = [p for p in report.points if not p.in_grid]
    assert [(p.mode, p.alpha, p.k, p.current) for p in extra_rows] == [("hybrid", 0.3, 4, True)]
    assert report.current.overall.recall_at_k == 1.0 and report.current.overall.mrr == 0.5
    assert {s[1] for s in fake.searches} == {8} and len(fake.searches) == len(GRID_SETTINGS) + 1


def test_a_tuned_profile_on_the_generation_is_todays_setting(cfg):
    fake = FakeSearcher(cfg, RANKINGS, stored={"mode": "vector", "alpha": None, "k": 3})
    report = sweep(fake, [Q1, Q2], landed=LANDED)
    assert (report.current.mode, report.current.k) == ("vector", 3) and not report.changed


# Profiles ---------------------------------------------------------------------------------------


def test_profile_resolution_is_explicit_then_the_generation_then_settings(cfg):
    assert resolve_profile(cfg) == RetrievalProfile(mode="hybrid", alpha=0.5, k=5)
    stored = {"mode": "hybrid", "alpha": 0.75, "k": 8}
    assert resolve_profile(cfg, stored) == RetrievalProfile(mode="hybrid", alpha=0.75, k=8)
    assert resolve_profile(cfg, stored, k=3) == RetrievalProfile(mode="hybrid", alpha=0.75, k=3)
    assert resolve_profile(cfg, stored, alpha=0.0) == RetrievalProfile(mode="hybrid", alpha=0.0, k=8)
    assert resolve_profile(cfg, stored, mode="bm25") == RetrievalProfile(mode="bm25", alpha=None, k=8)
    assert resolve_profile(cfg, {"k": 2}) == RetrievalProfile(mode="hybrid", alpha=0.5, k=2)  # field by field
    vector = {"mode": "vector", "alpha": None, "k": 8}
    assert resolve_profile(cfg, vector, mode="hybrid") == RetrievalProfile(mode="hybrid", alpha=0.5, k=8)
    tuned = Settings(home=cfg.home, search_mode="bm25", search_k=7, _env_file=None)
    assert resolve_profile(tuned) == RetrievalProfile(mode="bm25", alpha=None, k=7)


@pytest.mark.parametrize("mode, alpha, k", [("fuzzy", None, 5), ("hybrid", 1.5, 5), ("hybrid", -0.1, 5),
                                            ("hybrid", "high", 5), ("hybrid", 0.5, 0), ("hybrid", 0.5, 2.5)])
def test_bad_profile_values_are_bad_input(mode, alpha, k):
    with pytest.raises(BadInputError):
        check_profile(mode, alpha, k)


def test_search_mode_setting_is_one_of_the_modes(cfg):
    with pytest.raises(ValueError):
        Settings(home=cfg.home, search_mode="fuzzy", _env_file=None)


def test_tuning_changes_only_the_given_fields_and_alpha_only_for_hybrid():
    today = RetrievalProfile(mode="hybrid", alpha=0.5, k=5)
    assert requested_profile(today, None, None, 8) == RetrievalProfile(mode="hybrid", alpha=0.5, k=8)
    assert requested_profile(today, "vector", None, None) == RetrievalProfile(mode="vector", alpha=None, k=5)
    vector = RetrievalProfile(mode="vector", alpha=None, k=5)
    with pytest.raises(BadInputError, match="alpha"):
        requested_profile(vector, None, 0.3, None)
    assert requested_profile(vector, "hybrid", 0.3, None) == RetrievalProfile(mode="hybrid", alpha=0.3, k=5)
    assert requested_profile(vector, "hybrid", None, None, 0.6) == RetrievalProfile(mode="hybrid", alpha=0.6, k=5)
    assert tune_command(RetrievalProfile(mode="hybrid", alpha=0.75, k=8)) == \
        "hybridops index tune --mode hybrid --alpha 0.75 --k 8"


@pytest.mark.parametrize("kwargs", [{}, {"reset": True, "k": 3}, {"alpha": 2.0}, {"k": 0}, {"mode": "fuzzy"},
                                    {"mode": "bm25", "alpha": 0.5}])
def test_bad_tune_requests_fail_before_any_lock_or_service(cfg, kwargs):
    unreachable = Settings(home=cfg.home, weaviate_url="http://127.0.0.1:9", _env_file=None)
    with pytest.raises(BadInputError):
        apply_profile(unreachable, **kwargs)


def test_the_profile_is_stored_in_the_generation_record_and_carried_to_a_rebuild_with_the_same_model():
    gen = Generation(name="T_Docs_2", number=2, embedding_model="m@1", dim=4, state="ready", created_at="",
                     retrieval={"mode": "hybrid", "alpha": 0.75, "k": 8})
    assert _parse(gen.name, 2, _describe(gen)).retrieval == gen.retrieval
    assert _parse(gen.name, 2, _describe(gen.model_copy(update={"retrieval": {}}))).retrieval == {}
    assert carried_profile(gen, "m@1") == gen.retrieval
    assert carried_profile(gen, "other@1") == {} and carried_profile(None, "m@1") == {}

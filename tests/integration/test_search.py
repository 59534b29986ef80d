"""Retrieval over the live generation: modes, explicit alpha, filters, gold chunks, the retrieval eval, the
retrieval sweep and a tuned retrieval profile."""

from __future__ import annotations

import json
import uuid

import pytest

from hybridops.tasks.knowledge.landing import land
from hybridops.tasks.core.object_store import landing_zone
from hybridops.tasks.knowledge.refresh import run_refresh
from hybridops.tasks.knowledge.retrieval_eval import run_retrieval_eval
from hybridops.tasks.knowledge.retrieval_sweep import GRID_K, GRID_SETTINGS, run_sweep
from hybridops.tasks.knowledge.search import NoIndexError, chunks_for_docs, search
from hybridops.tasks.core.settings import Settings
from tests.integration.knowledge_support import CORPUS, cli_json, drop_namespace, index_state


@pytest.fixture(scope="module")
def indexed(stack: Settings, tmp_path_factory) -> Settings:
    """The example corpus indexed once for every read-only test in this module."""
    cfg = Settings(**(stack.model_dump() | {"home": tmp_path_factory.mktemp("search") / "home",
                                            "namespace": "t" + uuid.uuid4().hex[:10]}))
    land(landing_zone(cfg), [CORPUS])
    run_refresh(cfg)
    yield cfg
    drop_namespace(cfg)


@pytest.mark.parametrize("mode", ["hybrid", "vector", "bm25"])
def test_each_mode_finds_the_answering_document_best_first(indexed, mode):
    hits = search(indexed, "Can I rent camping gear for a weekend?", k=5, mode=mode)
    assert len(hits) == 5 and hits[0].doc_id == "programs/rentals.md"
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert all(h.text and h.title and h.chunk_id for h in hits)


def test_alpha_is_passed_explicitly_and_moves_the_ranking_between_bm25_and_vector(indexed):
    query = "my headlamp stopped working after two months"
    keyword = [h.chunk_id for h in search(indexed, query, k=5, mode="bm25")]
    semantic = [h.chunk_id for h in search(indexed, query, k=5, mode="vector")]
    assert keyword != semantic  # otherwise this test could not tell the two ends apart
    assert [h.chunk_id for h in search(indexed, query, k=5, mode="hybrid", alpha=0.0)] == keyword
    assert [h.chunk_id for h in search(indexed, query, k=5, mode="hybrid", alpha=1.0)] == semantic


def test_where_filters_on_doc_id_and_metadata(indexed):
    only = search(indexed, "refund", k=10, where={"doc_id": "policies/refunds.md"})
    assert only and {h.doc_id for h in only} == {"policies/refunds.md"}
    tagged = search(indexed, "how long does delivery take", k=10, where={"tags": "shipping"})
    assert tagged and {h.doc_id for h in tagged} == {"policies/shipping-rates.md"}
    owners = search(indexed, "policy", k=20, mode="bm25", where={"audience": "customers", "tags": "refunds"})
    assert {h.doc_id for h in owners} == {"policies/refunds.md"}
    assert search(indexed, "refund", where={"tags": "no-such-tag"}) == []


def test_chunks_for_docs_returns_every_chunk_in_document_order(indexed):
    docs = ["programs/rentals.md", "policies/refunds.md"]
    chunks = chunks_for_docs(indexed, docs)
    state = index_state(indexed)
    assert [(h.doc_id, h.chunk_index) for h in chunks] == [(d, r.chunk_index) for d in docs for r in state[d]]
    assert chunks_for_docs(indexed, ["not/landed.md"]) == []


def test_retrieval_eval_scores_the_golden_set_and_skips_questions_about_unlanded_docs(indexed, tmp_path):
    report = run_retrieval_eval(indexed)
    assert report.applicable == report.questions > 0 and report.skipped == []
    assert report.recall_at_k >= indexed.recall_floor and 0 < report.mrr <= 1
    assert all(len(r.retrieved_doc_ids) <= report.k for r in report.results)

    golden = tmp_path / "golden.jsonl"
    golden.write_text("\n".join(json.dumps(q) for q in [
        {"question": "Can I rent a tent?", "gold_doc_ids": ["programs/rentals.md"]},
        {"question": "What is the moon made of?", "gold_doc_ids": ["astronomy/moon.md"]},
    ]))
    small = run_retrieval_eval(indexed, golden, k=3)
    assert (small.applicable, small.skipped) == (1, ["What is the moon made of?"])
    assert small.recall_at_k == 1.0 and small.mrr == 1.0

    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"question": "no gold ids"}\n')
    with pytest.raises(ValueError, match="broken.jsonl:1"):
        run_retrieval_eval(indexed, broken)


def test_searching_before_anything_is_indexed_says_so(settings):
    with pytest.raises(NoIndexError, match="refresh"):
        search(settings, "anything")


def test_sweep_agrees_with_the_retrieval_eval_and_index_tune_changes_what_search_returns_by_default(
    indexed, child_env
):
    """Last in the module: it tunes the shared namespace's live generation (and resets it afterwards)."""
    report = run_sweep(indexed)
    assert report.golden_questions > 0 and report.extra_questions == 0 and report.skipped == []
    assert len([p for p in report.points if p.in_grid]) == len(GRID_SETTINGS) * len(GRID_K)
    today = report.current
    assert (today.mode, today.alpha, today.k) == ("hybrid", indexed.hybrid_alpha, indexed.search_k)
    direct = run_retrieval_eval(indexed, k=today.k, k_counts="chunks")  # the same k: chunks per question
    assert (direct.mode, direct.alpha, direct.k, direct.applicable) == (today.mode, today.alpha, today.k,
                                                                        today.overall.questions)
    assert (today.overall.recall_at_k, today.overall.mrr, today.overall.hit_rate) == (
        direct.recall_at_k, direct.mrr, direct.hit_rate)
    assert report.best.overall.recall_at_k >= today.overall.recall_at_k
    assert report.changed == (report.apply_command is not None)

    query = "my headlamp stopped working after two months"
    default = [h.chunk_id for h in search(indexed, query)]
    assert default == [h.chunk_id for h in search(indexed, query, k=indexed.search_k, mode="hybrid",
                                                   alpha=indexed.hybrid_alpha)]
    keyword = [h.chunk_id for h in search(indexed, query, k=3, mode="bm25")]
    env = child_env(indexed)
    try:
        tuned = cli_json(env, "index", "tune", "--mode", "bm25", "--k", "3")
        assert tuned["before"] == {"mode": "hybrid", "alpha": indexed.hybrid_alpha, "k": indexed.search_k}
        assert tuned["after"] == tuned["stored_after"] == {"mode": "bm25", "alpha": None, "k": 3}
        assert tuned["changed"] and tuned["stored_before"] == {}
        assert [h.chunk_id for h in search(indexed, query)] == keyword  # no argument: the tuned profile
        listed = cli_json(env, "index", "list")
        assert [g["retrieval"] for g in listed["generations"] if g["live"]] == [tuned["after"]]
        evaluated = run_retrieval_eval(indexed, k_counts="chunks")  # evals follow the profile too
        assert (evaluated.mode, evaluated.alpha, evaluated.k) == ("bm25", None, 3)
    finally:
        reset = cli_json(env, "index", "tune", "--reset")
    assert reset["stored_after"] == {} and reset["after"] == tuned["before"]
    assert [h.chunk_id for h in search(indexed, query)] == default

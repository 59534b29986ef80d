"""Incremental refresh against the real Weaviate + MinIO/folder landing zones and the real embedding model."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from hybridops.tasks.knowledge.embeddings import load_embedder
from hybridops.tasks.knowledge.index import chunk_uuid, live_name
from hybridops.tasks.core.object_store import artifact_store, landing_zone
from hybridops.tasks.core.quarantine import list_quarantined
from hybridops.tasks.knowledge.refresh import run_refresh
from hybridops.tasks.knowledge.search import chunks_for_docs, search
from hybridops.tasks.core.weaviate_connection import weaviate_session
from tests.integration.knowledge_support import (
    BAD,
    CORPUS,
    assert_index_matches_landing,
    cli,
    cli_json,
    drop_namespace,
    generations,
    index_state,
    put,
    section_doc,
    wait_events,
)

HIKING = {
    "Choosing a trail": "Pick a trail that matches the slowest hiker in your group. Check the elevation gain, "
    "the total distance and whether water sources are reliable in late summer before you commit to a route.",
    "Packing list": "Carry the ten essentials: navigation, a headlamp, sun protection, first aid, a knife, fire "
    "starter, an emergency shelter, extra food, extra water and an insulating layer for cold evenings.",
    "Weather": "Mountain weather changes quickly. Start early to avoid afternoon thunderstorms, and turn back "
    "when lightning is closer than ten seconds between the flash and the thunder.",
    "Leave no trace": "Pack out everything you pack in, camp on durable surfaces at least two hundred feet from "
    "lakes and streams, and never feed wildlife, not even the friendly camp jays.",
}


def hiking(title: str = "Day Hiking Basics", sections: dict[str, str] = HIKING) -> str:
    """The front-matter title can change without touching the text (the body heading stays)."""
    return section_doc("Day Hiking Basics", sections, title=title, tags="[hiking, safety]", audience="customers")


def test_every_document_outcome_on_both_backends(cfg):
    refunds = (CORPUS / "policies" / "refunds.md").read_bytes()
    put(cfg, {
        "policies/refunds.md": refunds,
        "guides/day hiking ü.md": hiking(),  # spaces and unicode in the id are fine
        "faq.txt": "Opening hours\n\nOur Reno store opens at nine in the morning, seven days a week.",
        "_training/examples.jsonl": '{"question": "not a document"}\n',
    })
    first = run_refresh(cfg)
    assert first.documents.added == 3 and first.documents.quarantined == 0
    assert first.chunks.embedded == first.chunks.total > 0 and first.chunks.reused == 0
    assert first.alias_flipped and first.collection.startswith(cfg.collection_prefix + "_Docs_")
    assert_index_matches_landing(cfg)
    assert "_training/examples.jsonl" not in index_state(cfg)

    noop = run_refresh(cfg)
    assert noop.documents.model_dump() == dict(added=0, updated=0, metadata_only=0, unchanged=3, deleted=0,
                                               quarantined=0)
    assert (noop.chunks.embedded, noop.chunks.reused, noop.chunks.deleted) == (0, 0, 0)
    assert noop.chunks.total == first.chunks.total
    put(cfg, {"policies/refunds.md": refunds})  # the same bytes landed again (a new store version)
    relanded = run_refresh(cfg)
    assert relanded.documents.unchanged == 3 and relanded.chunks.embedded == relanded.chunks.reused == 0
    assert run_refresh(cfg, verify=True).verify.model_dump() == {"missing": 0, "extra": 0, "stale": 0}

    put(cfg, {"guides/day hiking ü.md": hiking(title="Day Hiking for Beginners")})  # front matter only
    meta = run_refresh(cfg)
    assert meta.documents.metadata_only == 1 and meta.documents.unchanged == 2
    assert meta.chunks.embedded == 0
    titles = {h.title for h in chunks_for_docs(cfg, ["guides/day hiking ü.md"])}
    assert titles == {"Day Hiking for Beginners"}

    before = {r.text for r in index_state(cfg)["guides/day hiking ü.md"]}
    changed = dict(HIKING, Weather="Check the forecast the evening before and again at the trailhead. Carry a "
                   "rain shell even under blue skies, because alpine storms build within an hour.")
    put(cfg, {"guides/day hiking ü.md": hiking(title="Day Hiking for Beginners", sections=changed)})
    upd = run_refresh(cfg)
    after = {r.text for r in index_state(cfg)["guides/day hiking ü.md"]}
    assert upd.documents.updated == 1
    assert upd.chunks.embedded == len(after - before) >= 1  # only the changed section is embedded
    assert upd.chunks.reused == len(after) - upd.chunks.embedded >= 1
    assert search(cfg, "alpine storms rain shell", k=1, mode="bm25")[0].doc_id == "guides/day hiking ü.md"

    landing_zone(cfg).delete("faq.txt")
    gone = run_refresh(cfg)
    assert gone.documents.deleted == 1 and gone.chunks.deleted >= 1
    assert chunks_for_docs(cfg, ["faq.txt"]) == []

    # A bad update of an indexed document + bad new documents + a good new one, all in one run.
    bad_inputs = {f"bad/{p.name}": p.read_bytes() for p in sorted(BAD.iterdir())}
    put(cfg, {"policies/refunds.md": b"---\ntitle: Refunds\n---\n\xff\xfe broken \x00 bytes", **bad_inputs,
              "huge.txt": "word " * (cfg.max_document_bytes // 5 + 10),
              "stores/new-store.md": "# Boise store\n\nOur new Boise store opens in May on Main Street."})
    mixed = run_refresh(cfg)
    held = {q.doc_id: q for q in mixed.quarantined}
    assert set(held) == {"policies/refunds.md", "huge.txt", *bad_inputs}
    assert mixed.documents.quarantined == len(held) and mixed.documents.added == 1
    assert held["policies/refunds.md"].kept_previous and all(q.reasons for q in held.values())
    hits = search(cfg, "how long is the return window for refunds", k=3)
    assert hits[0].doc_id == "policies/refunds.md" and "45 days" in " ".join(h.text for h in hits)
    entries = {e.item_id: e for e in list_quarantined(artifact_store(cfg), "documents")}
    assert set(entries) == set(held) and entries["policies/refunds.md"].reasons
    assert landing_zone(cfg).exists("policies/refunds.md")  # the original is never deleted
    assert_index_matches_landing(cfg, allow_extra_docs={"policies/refunds.md"})

    put(cfg, {"policies/refunds.md": refunds})  # fixed: indexed again, released from quarantine
    fixed = run_refresh(cfg)
    assert fixed.documents.quarantined == len(held) - 1
    assert "policies/refunds.md" not in {e.item_id for e in list_quarantined(artifact_store(cfg), "documents")}
    assert_index_matches_landing(cfg)


def test_verify_reports_and_repairs_missing_extra_and_stale_objects(folder_cfg):
    cfg = folder_cfg
    put(cfg, {"guides/hiking.md": hiking(), "faq.txt": "Opening hours\n\nWe open at nine."})
    run_refresh(cfg)
    clean = run_refresh(cfg, verify=True)
    assert clean.verify is not None and clean.verify.model_dump() == {"missing": 0, "extra": 0, "stale": 0}

    with weaviate_session(cfg) as client:
        col = client.collections.use(live_name(client, cfg))
        col.data.delete_by_id(chunk_uuid("guides/hiking.md", 1))  # missing
        col.data.update(uuid=chunk_uuid("guides/hiking.md", 2), properties={"text": "tampered"})  # stale
        orphan = {k: v for k, v in col.query.fetch_object_by_id(chunk_uuid("faq.txt", 0)).properties.items()}
        col.data.insert(properties={**orphan, "chunk_index": 7}, uuid=chunk_uuid("faq.txt", 7),
                        vector=[0.1] * load_embedder(cfg).dim)  # extra
        col.data.insert(properties={**orphan, "doc_id": "never-landed.md"}, uuid=chunk_uuid("never-landed.md", 0),
                        vector=[0.1] * load_embedder(cfg).dim)  # extra (a document that is not landed)

    repaired = run_refresh(cfg, verify=True)
    assert repaired.verify.model_dump() == {"missing": 1, "extra": 2, "stale": 1}
    assert repaired.chunks.embedded == 0  # the vectors come from the cache
    assert_index_matches_landing(cfg)
    again = run_refresh(cfg, verify=True)
    assert again.verify.model_dump() == {"missing": 0, "extra": 0, "stale": 0}


def test_full_rebuild_reuses_embeddings_flips_the_alias_and_rollback_restores(folder_cfg, tmp_path):
    cfg = folder_cfg
    put(cfg, {f"policies/{p.name}": p.read_bytes() for p in (CORPUS / "policies").iterdir()})
    first = run_refresh(cfg)
    assert first.gate is not None and first.gate.status == "passed"  # golden questions on these docs apply
    gen1 = first.collection

    rebuilt = run_refresh(cfg, full=True)
    assert rebuilt.mode == "rebuild" and rebuilt.reason == "full" and rebuilt.alias_flipped
    assert rebuilt.collection != gen1 and rebuilt.live_collection == rebuilt.collection
    assert rebuilt.chunks.embedded == 0 and rebuilt.chunks.reused == rebuilt.chunks.total == first.chunks.total
    assert rebuilt.gate.status == "passed" and rebuilt.gate.recall_at_k >= cfg.recall_floor
    gens = {g.name: g for g in generations(cfg)}
    assert set(gens) == {gen1, rebuilt.collection} and gens[rebuilt.collection].live
    assert gens[rebuilt.collection].eval["recall_at_k"] == rebuilt.gate.recall_at_k

    env = {**_env(cfg)}
    out = cli_json(env, "index", "rollback")
    assert out == {"from": rebuilt.collection, "to": gen1, "embedding_model": load_embedder(cfg).model_id}
    listed = cli_json(env, "index", "list")
    assert [g["name"] for g in listed["generations"] if g["live"]] == [gen1]
    assert search(cfg, "free shipping threshold", k=1)[0].doc_id == "policies/shipping-rates.md"

    # A generation that fails the gate never goes live; readers keep the current one.
    strict = cfg.model_copy(update={"recall_floor": 1.01})
    blocked = run_refresh(strict, full=True)
    assert blocked.gate.status == "failed" and not blocked.alias_flipped
    assert blocked.live_collection == gen1
    assert {g.name: g.state for g in generations(cfg)}[blocked.collection] == "rejected"
    done = cli(env | {"HYBRIDOPS_RECALL_FLOOR": "1.01"}, "refresh", "--full", "--json")
    assert done.returncode == 3 and json.loads(done.stdout)["gate"]["status"] == "failed"


def test_an_embedding_model_change_rebuilds_automatically(folder_cfg):
    cfg = folder_cfg
    put(cfg, {"guides/hiking.md": hiking(), "faq.txt": "Opening hours\n\nWe open at nine."})
    first = run_refresh(cfg)
    other = cfg.model_copy(update={"embedding_bf16": not cfg.embedding_bf16})
    if load_embedder(other).model_id == load_embedder(cfg).model_id:
        pytest.skip("this CPU runs the embedder in one precision only; no second model id to switch to")
    switched = run_refresh(other)
    assert switched.mode == "rebuild" and switched.reason == "model_changed" and switched.alias_flipped
    assert switched.chunks.embedded == switched.chunks.total  # new model: nothing reusable
    gens = {g.name: g for g in generations(cfg)}
    assert gens[switched.collection].embedding_model == load_embedder(other).model_id
    assert gens[first.collection].embedding_model == load_embedder(cfg).model_id
    # Readers embed queries with the live generation's model, whatever this process prefers.
    assert search(cfg, "lightning thunderstorms", k=1, mode="vector")[0].doc_id == "guides/hiking.md"
    assert run_refresh(other).mode == "incremental"


def _env(cfg):
    import os

    clean = {k: v for k, v in os.environ.items() if not k.startswith("HYBRIDOPS_")}
    return clean | cfg.as_env()


def test_cli_knowledge_commands_print_one_json_object(s3_settings, tmp_path):
    cfg = s3_settings
    env = _env(cfg)
    try:
        landed = cli_json(env, "land", str(CORPUS))
        assert "policies/refunds.md" in landed["landed"] and landed["count"] == len(list(CORPUS.rglob("*.*")))
        since = datetime.now(timezone.utc)
        report = cli_json(env, "refresh")
        assert set(report) >= {"documents", "chunks", "collection", "duration_s"}
        assert report["event"] == "hybridops.index.refreshed"  # as the flow does: automations see CLI refreshes
        [event] = wait_events(cfg, "hybridops.index.refreshed", f"hybridops.{cfg.namespace}.index", since, 1)
        assert event.payload["documents"]["added"] == landed["count"]
        assert set(report["documents"]) == {"added", "updated", "metadata_only", "unchanged", "deleted", "quarantined"}
        assert set(report["chunks"]) == {"embedded", "reused", "deleted", "total"}
        assert report["documents"]["added"] == landed["count"] and isinstance(report["duration_s"], float)
        assert isinstance(report["collection"], str)

        hits = cli_json(env, "search", "Can I rent a tent?", "--k", "3", "--mode", "hybrid", "--alpha", "0.5")
        assert len(hits["results"]) == 3 and hits["results"][0]["doc_id"] == "programs/rentals.md"
        assert set(hits["results"][0]) >= {"doc_id", "chunk_id", "score", "title", "text"}
        scoped = cli_json(env, "search", "delivery times", "--where", "tags=shipping", "--mode", "bm25")
        assert scoped["results"] and {h["doc_id"] for h in scoped["results"]} == {"policies/shipping-rates.md"}

        evaluation = cli_json(env, "eval", "retrieval")
        assert evaluation["recall_at_k"] >= cfg.recall_floor and evaluation["mrr"] > 0
        assert evaluation["applicable"] == evaluation["questions"] > 0

        bad = cli_json(env, "land", str(BAD / "malformed.json"), "--prefix", "support")
        assert bad["landed"] == ["support/malformed.json"]
        again = cli_json(env, "refresh")
        assert again["documents"]["quarantined"] == 1 and again["chunks"]["embedded"] == 0
        held = cli_json(env, "quarantine", "list")
        assert [e["item_id"] for e in held["quarantined"]] == ["support/malformed.json"]
        assert held["quarantined"][0]["reasons"]

        removed = cli_json(env, "land", "--remove", "programs/rentals.md")
        assert removed["removed"] == "programs/rentals.md"
        after = cli_json(env, "refresh")
        assert after["documents"]["deleted"] == 1
        assert "programs/rentals.md" not in {h["doc_id"] for h in cli_json(env, "search", "rent a tent")["results"]}
    finally:
        drop_namespace(cfg)


def test_unreachable_services_fail_clearly_and_the_next_run_heals(s3_settings, free_port):
    cfg = s3_settings
    env = _env(cfg)
    try:
        put(cfg, {"faq.txt": "Opening hours\n\nWe open at nine."})
        no_weaviate = cli(env | {"HYBRIDOPS_WEAVIATE_URL": f"http://127.0.0.1:{free_port}"}, "refresh", "--json")
        assert no_weaviate.returncode != 0 and "Weaviate" in no_weaviate.stderr
        assert json.loads(no_weaviate.stdout)["error"]
        no_s3 = cli(env | {"HYBRIDOPS_S3_ENDPOINT": f"http://127.0.0.1:{free_port}"}, "refresh", "--json")
        assert no_s3.returncode != 0 and "S3" in no_s3.stderr
        assert generations(cfg) == [] or all(g.objects == 0 for g in generations(cfg))  # nothing recorded as done
        healed = cli_json(env, "refresh")
        assert healed["documents"]["added"] == 1
        assert_index_matches_landing(cfg)
    finally:
        drop_namespace(cfg)


@pytest.fixture
def free_port():
    from hybridops.infra.services import free_port as pick

    return pick()


def test_refresh_flow_waits_for_the_index_lock_then_leaves_artifacts_and_event(folder_cfg, prefect_api, monkeypatch):
    import contextvars
    import threading

    from prefect.client.orchestration import get_client

    from hybridops.flows.refresh_index import RefreshParams, refresh_index
    from hybridops.tasks.core.locks import current_holder, namespace_lock

    cfg = folder_cfg
    for key, value in cfg.as_env().items():
        monkeypatch.setenv(key, value)
    put(cfg, {"guides/hiking.md": hiking(), "bad/empty.md": b"", "faq.txt": "Opening hours\n\nWe open at nine."})
    outcome = {}
    with namespace_lock(cfg, "index", "a manual refresh"):  # e.g. `hybridops refresh` in another shell
        context = contextvars.copy_context()  # the thread must see this test's Prefect API setting
        run = threading.Thread(target=context.run, args=(lambda: outcome.update(
            state=refresh_index(RefreshParams(batch_size=1), return_state=True)),))
        run.start()
        run.join(timeout=8)
        assert run.is_alive() and "state" not in outcome  # the flow waits: one index writer per namespace
    run.join(timeout=600)
    state = outcome["state"]
    report = state.result()
    assert report.documents.added == 2 and report.documents.quarantined == 1
    assert current_holder(cfg, "index") is None  # released when the story ended
    with get_client(sync_client=True) as client:
        run_id = state.state_details.flow_run_id
        from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id])))
    kinds = {a.type for a in artifacts}
    assert {"markdown", "progress"} <= kinds
    markdown = next(a.data for a in artifacts if a.type == "markdown")
    assert "bad/empty.md" in markdown and "embeddings computed" in markdown
    assert_index_matches_landing(cfg)
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=5)  # send this run's logs while the server is still up

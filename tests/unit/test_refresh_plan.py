"""The refresh's pure decisions: what is certainly unchanged, what needs work, what is deleted, how a doc changed."""

from __future__ import annotations

import numpy as np
import pytest

from hybridops.tasks.knowledge.documents import Document
from hybridops.tasks.knowledge.embedding_cache import EmbeddingCache, embed_cached, text_hash
from hybridops.tasks.knowledge.index import ChunkRecord, Generation, chunk_uuid, meta_pairs
from hybridops.tasks.core.object_store import ObjectInfo
from hybridops.tasks.knowledge.rebuild import Target
from hybridops.tasks.knowledge.refresh_plan import classify, expected_records, is_complete, needs_write, plan_refresh
from hybridops.tasks.knowledge.landing import plan_landing

MODEL = "mini@bf16"
CHUNKING = "v1;tok=mini;max=254;overlap=32"


def target() -> Target:
    gen = Generation(name="T_Docs_1", number=1, embedding_model=MODEL, dim=4, state="ready", created_at="")
    return Target(generation=gen, live=gen, rebuild=False, reason="incremental", chunking=CHUNKING, max_tokens=254)


def records(doc_id: str, texts: list[str], version: str = "v1", meta: str = "m1", source: str = "s1",
            model: str = MODEL) -> list[ChunkRecord]:
    return [
        ChunkRecord(uuid=chunk_uuid(doc_id, i), doc_id=doc_id, chunk_index=i, chunk_count=len(texts),
                    text_hash=text_hash(t), meta_hash=meta, doc_text_hash="d:" + "".join(texts), source_hash=source,
                    source_version=version, chunking=CHUNKING, embedding_model=model)
        for i, t in enumerate(texts)
    ]


def test_complete_current_documents_are_skipped_without_reading_them():
    state = {"a.md": records("a.md", ["x", "y"]), "b.md": records("b.md", ["z"])}
    landed = [ObjectInfo("a.md", 10, "v1"), ObjectInfo("b.md", 5, "v2")]
    plan = plan_refresh(landed, state, target(), deep=False)
    assert plan.unchanged == 1
    assert [w.doc_id for w in plan.work] == ["b.md"]  # new store version: must be read
    assert plan.work[0].indexed == state["b.md"]
    assert plan.deletions == {}


def test_new_documents_are_work_and_vanished_ones_are_deleted_with_their_chunk_count():
    state = {"gone.md": records("gone.md", ["1", "2", "3"])}
    plan = plan_refresh([ObjectInfo("new.md", 3, "v1")], state, target(), deep=False)
    assert [w.doc_id for w in plan.work] == ["new.md"] and plan.work[0].indexed == []
    assert plan.deletions == {"gone.md": 3}


def test_deep_mode_reads_everything():
    state = {"a.md": records("a.md", ["x"])}
    plan = plan_refresh([ObjectInfo("a.md", 1, "v1")], state, target(), deep=True)
    assert plan.unchanged == 0 and [w.doc_id for w in plan.work] == ["a.md"]


@pytest.mark.parametrize(
    "damage",
    ["missing_chunk", "mixed_versions", "other_model", "stray_index", "foreign_uuid"],
)
def test_half_written_or_foreign_index_state_is_never_trusted(damage):
    recs = records("a.md", ["x", "y", "z"])
    if damage == "missing_chunk":
        recs = recs[:2]
    elif damage == "mixed_versions":  # a crash between upserting chunk 0 and chunk 1 of a new version
        recs[0] = recs[0].model_copy(update={"source_version": "v2", "source_hash": "s2"})
    elif damage == "other_model":
        recs = records("a.md", ["x", "y", "z"], model="other@fp32")
    elif damage == "stray_index":
        recs.append(recs[2].model_copy(update={"chunk_index": 3, "uuid": chunk_uuid("a.md", 3)}))
    elif damage == "foreign_uuid":
        recs[1] = recs[1].model_copy(update={"uuid": "00000000-0000-0000-0000-000000000001"})
    assert not is_complete("a.md", recs, CHUNKING, MODEL)
    plan = plan_refresh([ObjectInfo("a.md", 1, "v1")], {"a.md": recs}, target(), deep=False)
    assert [w.doc_id for w in plan.work] == ["a.md"]


def test_a_chunking_change_rechunks_everything():
    recs = records("a.md", ["x"])
    assert is_complete("a.md", recs, CHUNKING, MODEL)
    assert not is_complete("a.md", recs, "tok=mini;max=128;overlap=16", MODEL)


def test_training_area_is_never_a_document():
    from hybridops.tasks.knowledge.landing import is_document_key

    assert not is_document_key("_training/batch.jsonl") and is_document_key("policies/_training.md")


def _expected(texts: list[str], meta: str = "m1", source: str = "s1") -> list[ChunkRecord]:
    return records("a.md", texts, meta=meta, source=source)


def test_classify_tells_the_four_kinds_of_change_apart():
    old = _expected(["x", "y"])
    assert classify(_expected(["x", "y"]), []) == "added"
    assert classify(_expected(["x", "y"]), old) == "unchanged"
    assert classify(_expected(["x", "y"], meta="m2"), old) == "metadata_only"
    assert classify(_expected(["x", "y2"]), old) == "updated"
    assert classify(_expected(["x"]), old) == "updated"
    assert classify(_expected(["x", "y", "z"]), old) == "updated"


def test_same_text_new_bytes_is_unchanged_but_bookkeeping_is_rewritten():
    old = _expected(["x"])
    new = _expected(["x"], source="s2")
    assert classify(new, old) == "unchanged"
    assert needs_write(new, old)
    assert not needs_write(old, old)
    assert needs_write(old, old, texts_ok=False)  # deep verify found an edited text property


def test_expected_records_are_deterministic_and_positional():
    doc = Document(doc_id="p/q.md", title="Q", text="t", metadata={}, text_hash="th", meta_hash="mh",
                   source_version="v9")

    class C:
        def __init__(self, text):
            self.text = text

    one = expected_records(doc, [C("alpha"), C("beta")], "sh", target())
    two = expected_records(doc, [C("alpha"), C("beta")], "sh", target())
    assert one == two
    (first, text), (second, _) = one
    assert text == "alpha" and first.uuid == chunk_uuid("p/q.md", 0) and second.uuid == chunk_uuid("p/q.md", 1)
    assert first.chunk_count == 2 and first.source_version == "v9" and first.embedding_model == MODEL
    assert first.text_hash == text_hash("alpha")


def test_meta_pairs_flatten_tags_and_spell_scalars_like_the_where_filter():
    pairs = meta_pairs({"tags": ["refunds", "policy"], "public": True, "version": 3, "team": "care, ops"})
    assert pairs == ["public=true", "tags=refunds", "tags=policy", "team=care, ops", "version=3"]
    joined = meta_pairs({"tags": "shipping, delivery"})  # the parser joins front-matter lists
    assert joined == ["tags=shipping, delivery", "tags=shipping", "tags=delivery"]


def test_landing_keeps_relative_paths_and_refuses_collisions(tmp_path):
    (tmp_path / "docs" / "sub").mkdir(parents=True)
    (tmp_path / "docs" / "a.md").write_text("a")
    (tmp_path / "docs" / "sub" / "b.txt").write_text("b")
    (tmp_path / "c.md").write_text("c")
    pairs = plan_landing([tmp_path / "docs", tmp_path / "c.md"], prefix="kb")
    assert [d for _, d in pairs] == ["kb/a.md", "kb/sub/b.txt", "kb/c.md"]
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "a.md").write_text("clash")
    with pytest.raises(ValueError, match="a.md"):
        plan_landing([tmp_path / "docs", tmp_path / "other"])


class CountingEmbedder:
    model_id = "counting@fp32"
    dim = 3

    def __init__(self):
        self.calls: list[list[str]] = []

    def embed(self, texts, progress=False):
        self.calls.append(list(texts))
        return np.array([[len(t), 1.0, 0.0] for t in texts], dtype=np.float32)


def test_embedding_cache_never_embeds_the_same_text_twice(tmp_path):
    embedder = CountingEmbedder()
    with EmbeddingCache(tmp_path / "e.sqlite3") as cache:
        vectors, stats = embed_cached(embedder, cache, ["a", "bb", "a"])
        assert (stats.embedded, stats.reused) == (2, 0)
        vectors2, stats2 = embed_cached(embedder, cache, ["bb", "ccc"])
        assert (stats2.embedded, stats2.reused) == (1, 1)
        assert embedder.calls == [["a", "bb"], ["ccc"]]
        assert np.array_equal(vectors2[text_hash("bb")], vectors[text_hash("bb")])
        assert cache.count("counting@fp32") == 3 and cache.count("other@fp32") == 0
    with EmbeddingCache(tmp_path / "e.sqlite3") as reopened:  # persistent across processes/runs
        _, stats3 = embed_cached(embedder, reopened, ["a", "bb", "ccc"])
        assert stats3.embedded == 0 and len(embedder.calls) == 2


def test_vectors_recovered_from_the_index_are_not_recomputed_and_rewarm_the_cache(tmp_path):
    embedder = CountingEmbedder()
    stored = np.array([9.0, 9.0, 9.0], dtype=np.float32)
    with EmbeddingCache(tmp_path / "e.sqlite3") as cache:
        vectors, stats = embed_cached(embedder, cache, ["kept", "new"],
                                      recover=lambda missing: {h: stored for h in missing if h == text_hash("kept")})
        assert stats.embedded == 1 and embedder.calls == [["new"]]
        assert np.array_equal(vectors[text_hash("kept")], stored)
        assert text_hash("kept") in cache.get_many(embedder.model_id, [text_hash("kept")])


def test_cache_lookups_are_batched_beyond_sqlite_parameter_limits(tmp_path):
    with EmbeddingCache(tmp_path / "e.sqlite3") as cache:
        many = {f"h{i}": np.full(2, i, dtype=np.float32) for i in range(2_345)}
        cache.put_many("m", many)
        found = cache.get_many("m", list(many) + ["absent"])
        assert len(found) == 2_345 and found["h2000"][0] == 2000


def test_the_flow_artifact_lists_counts_reasons_and_embedding_work():
    from hybridops.tasks.knowledge.refresh_report import (ChunkCounts, DocumentCounts, Quarantined, RefreshReport, report_markdown)

    report = RefreshReport(
        documents=DocumentCounts(added=2, quarantined=1), chunks=ChunkCounts(embedded=7, reused=3, total=10),
        collection="Ns_Docs_1", duration_s=1.5, generation=1, mode="incremental", reason="incremental",
        quarantined=[Quarantined(doc_id="bad|name.json", reasons=["invalid_json: line 1"], kept_previous=True)],
    )
    md = report_markdown(report, "ns")
    assert "| added | 2 |" in md and "| embeddings computed | 7 |" in md and "| embeddings reused (cache or index) | 3 |" in md
    assert "`bad\\|name.json` | invalid_json: line 1 | yes |" in md and "1.5 s" in md


class _Collections:
    def use(self, name):  # prepare_batch only touches the index for deep checks and stored vectors
        return None


class _Client:
    collections = _Collections()


class FlakyLanding:
    """A folder landing zone where one document cannot be read and another one's read hits a dead store."""

    def __init__(self, inner, unreadable: str = "", unreachable: str = ""):
        self.inner, self.unreadable, self.unreachable = inner, unreadable, unreachable

    def get(self, key: str) -> bytes:
        if key == self.unreadable:
            raise PermissionError(f"permission denied: {key}")
        if key == self.unreachable:
            from hybridops.tasks.core.object_store import ObjectStoreError

            raise ObjectStoreError(f"S3 get {key!r} failed: connection refused")
        return self.inner.get(key)


class WordEmbedder(CountingEmbedder):
    def count_tokens(self, text: str) -> int:
        return len(text.split())


def test_one_document_that_cannot_be_read_or_parsed_is_held_and_the_batch_goes_on(tmp_path, monkeypatch):
    from hybridops.tasks.core.object_store import FolderStore, ObjectStoreError
    from hybridops.tasks.core.quarantine import list_quarantined
    from hybridops.tasks.core.settings import Settings
    from hybridops.tasks.knowledge import document_contract
    from hybridops.tasks.knowledge.refresh_apply import prepare_batch
    from hybridops.tasks.knowledge.refresh_plan import WorkItem

    settings = Settings(home=tmp_path / "home")
    landing, store = FolderStore(tmp_path / "landing"), FolderStore(tmp_path / "store")
    for doc_id in ("good.md", "locked.md", "crashes.md"):
        landing.put(doc_id, f"# {doc_id}\n\nSome real text about {doc_id} that is long enough.".encode())
    real_parse = document_contract.parse_document

    def parse(doc_id, data, version):
        if doc_id == "crashes.md":
            raise RecursionError("maximum recursion depth exceeded")  # a parser bug, not a DocumentError
        return real_parse(doc_id, data, version)

    monkeypatch.setattr(document_contract, "parse_document", parse)
    items = [WorkItem(doc_id=d, size=1, version="v1") for d in ("good.md", "locked.md", "crashes.md")]
    with EmbeddingCache(tmp_path / "e.sqlite3") as cache:
        prepared = prepare_batch(settings, _Client(), FlakyLanding(landing, unreadable="locked.md"), store,
                                 WordEmbedder(), cache, target(), items, deep=False)
        assert prepared.result.outcomes == {"good.md": "added", "locked.md": "quarantined",
                                            "crashes.md": "quarantined"}
        assert {o.properties["doc_id"] for o in prepared.objects} == {"good.md"}
        reasons = {q.doc_id: q.reasons for q in prepared.result.quarantined}
        assert reasons["locked.md"] == ["unreadable: PermissionError: permission denied: locked.md"]
        assert reasons["crashes.md"] == ["parse_failed: RecursionError: maximum recursion depth exceeded"]
        assert {e.item_id for e in list_quarantined(store, "documents")} == {"locked.md", "crashes.md"}

        with pytest.raises(ObjectStoreError):  # an unreachable store is not the document's fault: retry the step
            prepare_batch(settings, _Client(), FlakyLanding(landing, unreachable="good.md"), store, WordEmbedder(),
                          cache, target(), items, deep=False)


def test_a_document_that_breaks_the_batch_validation_is_held_alone(tmp_path, monkeypatch):
    from hybridops.tasks.core.object_store import FolderStore
    from hybridops.tasks.core.settings import Settings
    from hybridops.tasks.knowledge import document_contract
    from hybridops.tasks.knowledge.refresh_apply import prepare_batch
    from hybridops.tasks.knowledge.refresh_plan import WorkItem

    settings = Settings(home=tmp_path / "home")
    landing, store = FolderStore(tmp_path / "landing"), FolderStore(tmp_path / "store")
    landing.put("good.md", b"# Good\n\nSome real text that is long enough to index.")
    landing.put("odd.md", b"# Odd\n\nText the frame builder trips over.")
    real = document_contract._control_chars
    monkeypatch.setattr(document_contract, "_control_chars",
                        lambda text: 1 // 0 if "trips" in text else real(text))
    items = [WorkItem(doc_id=d, size=1, version="v1") for d in ("good.md", "odd.md")]
    with EmbeddingCache(tmp_path / "e.sqlite3") as cache:
        prepared = prepare_batch(settings, _Client(), landing, store, WordEmbedder(), cache, target(), items,
                                 deep=False)
    assert prepared.result.outcomes == {"good.md": "added", "odd.md": "quarantined"}
    (held,) = prepared.result.quarantined
    assert held.reasons == ["validation_failed: ZeroDivisionError: integer division or modulo by zero"]


# the mass-deletion guard ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("losing", "live", "rebuild", "blocked"),
    [
        (0, 100, False, False),
        (10, 11, False, False),   # most of the index, but not more than 10 documents: allowed
        (11, 100, False, False),  # more than 10, but 11% <= 20%
        (20, 100, False, False),  # exactly the share is not more than it
        (21, 100, False, True),
        (11, 50, False, True),    # 22%
        (11, 55, False, False),   # 20% exactly
        (5, 0, False, False),     # nothing live: nothing to protect
        (5, 5, False, False),     # a small index may be emptied by a refresh...
        (5, 5, True, True),       # ...but a rebuild that keeps none of it never goes live
        (4, 5, True, False),
        (30, 30, True, True),
    ],
)
def test_mass_deletion_guard_arithmetic(losing, live, rebuild, blocked):
    from hybridops.tasks.knowledge.rebuild import mass_deletion

    reason = mass_deletion(losing, live, max_share=0.2, min_docs=10, rebuild=rebuild)
    assert (reason is not None) == blocked
    if reason and not (rebuild and losing >= live):
        assert f"{losing} of {live}" in reason


def test_the_guard_settings_are_configurable():
    from hybridops.tasks.core.settings import Settings
    from hybridops.tasks.knowledge.rebuild import mass_deletion

    cfg = Settings()
    assert (cfg.refresh_max_delete_share, cfg.refresh_mass_delete_min_docs) == (0.2, 10)
    assert mass_deletion(3, 4, 0.5, 2) is not None and mass_deletion(3, 4, 0.8, 2) is None
    with pytest.raises(ValueError):
        Settings(refresh_max_delete_share=1.5)


def test_the_plan_counts_what_the_live_index_would_lose():
    state = {f"d{i}.md": records(f"d{i}.md", ["x"]) for i in range(5)}
    plan = plan_refresh([ObjectInfo("d0.md", 1, "v1"), ObjectInfo("new.md", 1, "v1")], state, target(), False)
    assert plan.live_documents == 5 and plan.live_losses == ["d1.md", "d2.md", "d3.md", "d4.md"]
    assert sorted(plan.deletions) == plan.live_losses


def test_a_rebuild_plan_measures_losses_against_the_live_generation():
    live = target().generation
    new = live.model_copy(update={"name": "T_Docs_2", "number": 2, "state": "building"})
    rebuild = Target(generation=new, live=live, rebuild=True, reason="full", chunking=CHUNKING, max_tokens=254)
    plan = plan_refresh([], {}, rebuild, False, live_ids={"a.md", "b.md"})
    assert plan.deletions == {} and plan.live_documents == 2 and plan.live_losses == ["a.md", "b.md"]
    first = rebuild.model_copy(update={"live": None, "reason": "initial"})  # nothing live: nothing to lose
    assert plan_refresh([], {"x.md": records("x.md", ["x"])}, first, False).live_losses == []


def test_a_missing_or_unlistable_landing_root_is_an_error_never_an_empty_landing_zone(tmp_path):
    from hybridops.tasks.core.errors import ServiceUnavailableError
    from hybridops.tasks.core.object_store import FolderStore
    from hybridops.tasks.knowledge.landing_changes import snapshot

    missing = FolderStore(tmp_path / "unmounted")
    with pytest.raises(ServiceUnavailableError, match="does not exist"):
        snapshot(missing)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ServiceUnavailableError, match="not a folder"):
        FolderStore(tmp_path / "file").check_root()
    FolderStore(tmp_path).check_root()  # an existing (even empty) folder is fine
    assert not (tmp_path / "unmounted").exists()  # nothing was created


# the targeted plan (the change feed's keys only) -----------------------------------------------------------


def _corpus() -> tuple[list[ObjectInfo], dict[str, list[ChunkRecord]]]:
    """A landing listing and an index state with every case: current, re-landed, damaged, new, vanished."""
    state = {
        "same.md": records("same.md", ["a", "b"]),
        "edited.md": records("edited.md", ["c"]),
        "damaged.md": records("damaged.md", ["d", "e"])[:1],  # half written
        "gone.md": records("gone.md", ["f", "g", "h"]),
        "also-gone.md": records("also-gone.md", ["i"]),
        "untouched.md": records("untouched.md", ["j"]),
    }
    landed = [ObjectInfo("same.md", 2, "v1"), ObjectInfo("edited.md", 3, "v2"), ObjectInfo("damaged.md", 2, "v1"),
              ObjectInfo("new.md", 4, "v1"), ObjectInfo("untouched.md", 1, "v1"),
              ObjectInfo("_training/x.jsonl", 9, "v1")]
    return landed, state


def _restricted(plan, keys: set[str], landed: list[ObjectInfo]) -> tuple:
    """(work, unchanged, deletions) of a full plan within `keys`: the landed keys that are not work are unchanged."""
    work = [w for w in plan.work if w.doc_id in keys]
    unchanged = len({i.key for i in landed if i.key in keys} - {w.doc_id for w in work})
    return work, unchanged, {d: n for d, n in plan.deletions.items() if d in keys}


@pytest.mark.parametrize("keys", [
    {"same.md", "edited.md", "damaged.md", "new.md", "gone.md"},
    {"edited.md"},
    {"gone.md", "also-gone.md", "never-there.md"},
    {"same.md", "untouched.md", "new.md", "gone.md", "edited.md", "damaged.md", "also-gone.md"},
])
def test_a_targeted_plan_is_the_full_plan_restricted_to_its_keys(keys):
    from hybridops.tasks.knowledge.refresh_plan import plan_targeted

    landed, state = _corpus()
    documents = [i for i in landed if not i.key.startswith("_training/")]
    full = plan_refresh(documents, state, target(), deep=False)
    # what the targeted path reads: info() of each key (None when absent) and the records of just those docs
    present = [i for i in landed if i.key in keys]
    own = {d: r for d, r in state.items() if d in keys}
    targeted = plan_targeted(keys, present, own, target(), deep=False, live_objects=10)
    assert (targeted.work, targeted.unchanged, targeted.deletions) == _restricted(full, keys, documents)
    assert targeted.scope == sorted(keys) and targeted.landed == len(present)
    assert targeted.live_losses == sorted(targeted.deletions) and targeted.live_documents is None
    # handed the whole listing and state instead, it still plans only its keys
    whole = plan_targeted(keys, landed, state, target(), deep=False, live_objects=10)
    assert whole == targeted


def test_a_targeted_plan_deletes_absent_indexed_keys_and_ignores_the_rest():
    from hybridops.tasks.knowledge.refresh_plan import plan_targeted

    landed, state = _corpus()
    plan = plan_targeted(["gone.md", "never-there.md", "new.md"], [i for i in landed if i.key == "new.md"],
                         {"gone.md": state["gone.md"]}, target(), deep=False)
    assert plan.deletions == {"gone.md": 3} and plan.live_losses == ["gone.md"]
    assert [w.doc_id for w in plan.work] == ["new.md"] and plan.unchanged == 0
    assert plan.scope == ["gone.md", "never-there.md", "new.md"]  # never there: planned, nothing to do


def test_a_targeted_plan_never_plans_the_training_area_and_a_rebuild_is_never_targeted():
    from hybridops.tasks.knowledge.refresh_plan import plan_targeted, targeted_scope

    assert targeted_scope(["b.md", "_training/x.jsonl"], ["a.md", "b.md"]) == ["a.md", "b.md"]
    training = ObjectInfo("_training/x.jsonl", 9, "v1")
    plan = plan_targeted(["_training/x.jsonl"], [training], {}, target(), deep=False)
    assert plan.scope == [] and plan.work == [] and plan.deletions == {}
    live = target().generation
    rebuild = Target(generation=live.model_copy(update={"name": "T_Docs_2", "number": 2}), live=live, rebuild=True,
                     reason="full", chunking=CHUNKING, max_tokens=254)
    with pytest.raises(ValueError, match="never targeted"):
        plan_targeted(["a.md"], [], {}, rebuild, deep=False)


@pytest.mark.parametrize(
    ("deleted", "chunks_each", "live_objects", "blocked"),
    [
        (10, 10, 100, False),   # all of the index, but not more than 10 documents
        (11, 1, 100, False),    # 11 documents, 11% of the objects
        (11, 2, 110, False),    # exactly 20% is not more than it
        (11, 3, 100, True),     # 33%
        (30, 1, 100, True),
        (11, 3, 0, False),      # nothing live
    ],
)
def test_the_targeted_mass_deletion_guard_measures_the_share_in_chunk_objects(deleted, chunks_each, live_objects,
                                                                             blocked):
    from hybridops.tasks.core.settings import Settings
    from hybridops.tasks.knowledge.refresh import MassDeletionBlocked, guard_deletions
    from hybridops.tasks.knowledge.refresh_plan import plan_targeted, targeted_mass_deletion

    state = {f"d{i}.md": records(f"d{i}.md", [f"t{i}-{j}" for j in range(chunks_each)]) for i in range(deleted)}
    plan = plan_targeted(list(state), [], state, target(), deep=False, live_objects=live_objects)
    reason = targeted_mass_deletion(plan, max_share=0.2, min_docs=10)
    assert (reason is not None) == blocked
    settings = Settings(refresh_max_delete_share=0.2, refresh_mass_delete_min_docs=10)
    if not blocked:
        guard_deletions(settings, plan, allowed=False)
        return
    assert f"{deleted * chunks_each} of the live index's {live_objects} chunk objects" in reason
    with pytest.raises(MassDeletionBlocked) as raised:
        guard_deletions(settings, plan, allowed=False)
    details = raised.value.details
    assert details["mode"] == "targeted" and details["would_remove"] == deleted
    assert details["live_objects"] == live_objects and details["would_remove_objects"] == deleted * chunks_each
    assert "--targeted --allow-mass-delete" in details["command"]
    guard_deletions(settings, plan, allowed=True)  # confirmed


def test_a_targeted_report_names_its_keys_and_the_feed_entries_it_consumed():
    from hybridops.tasks.knowledge.refresh_plan import BatchResult, plan_targeted, summarize
    from hybridops.tasks.knowledge.refresh_report import report_markdown

    landed, state = _corpus()
    keys = ["new.md", "gone.md", *[f"k{i}.md" for i in range(25)]]
    plan = plan_targeted(keys, landed, state, target(), deep=False, live_objects=12)
    report = summarize(plan, [BatchResult(outcomes={"new.md": "added"})], 3, 12, 0.5, False, None, [], "T_Docs_1")
    assert report.mode == "targeted" and report.planned_keys == sorted(keys)
    assert (report.documents.added, report.documents.deleted) == (1, 1)
    report = report.model_copy(update={"feed_consumed": ["feed/landing/1.json", "feed/landing/2.json"]})
    md = report_markdown(report, "ns")
    assert "**Targeted:** 27 keys planned (`gone.md`, `k0.md`" in md and "and 7 more" in md
    assert "2 feed entries consumed" in md
    idle = report.model_copy(update={"planned_keys": [], "feed_consumed": []})
    assert "nothing pending" in report_markdown(idle, "ns")
    full = summarize(plan_refresh(landed[:1], {}, target(), False), [], 0, 0, 0.1, False, None, [], "T_Docs_1")
    assert full.mode == "incremental" and full.planned_keys == []


def test_which_feed_entries_a_finished_run_consumes():
    from hybridops.tasks.knowledge.change_feed import PendingChanges
    from hybridops.tasks.knowledge.refresh import covered_entries
    from hybridops.tasks.knowledge.refresh_report import ChunkCounts, DocumentCounts, RefreshReport

    feed = PendingChanges(entries=["feed/landing/a.json"], changed_keys=["x.md"], unreadable=["feed/landing/bad.json"])

    def report(mode: str, flipped: bool = False) -> RefreshReport:
        return RefreshReport(documents=DocumentCounts(), chunks=ChunkCounts(), collection="T_Docs_1", duration_s=0,
                             generation=1, mode=mode, reason="r", alias_flipped=flipped)

    assert covered_entries(feed, report("targeted")) == ["feed/landing/a.json"]  # unreadable: the reconcile's
    assert covered_entries(feed, report("incremental")) == ["feed/landing/a.json", "feed/landing/bad.json"]
    assert covered_entries(feed, report("rebuild", flipped=True)) == ["feed/landing/a.json", "feed/landing/bad.json"]
    assert covered_entries(feed, report("rebuild", flipped=False)) == []  # not live: nothing applied to live


def test_a_refresh_request_is_targeted_or_full_never_both():
    from hybridops.tasks.knowledge.refresh import RefreshRequest

    assert RefreshRequest(targeted=True, extra_keys=["a.md"]).extra_keys == ["a.md"]
    with pytest.raises(ValueError, match="never targeted"):
        RefreshRequest(full=True, targeted=True)
    with pytest.raises(ValueError, match="targeted"):
        RefreshRequest(extra_keys=["a.md"])


def test_a_landing_event_starts_a_targeted_run_and_the_schedule_a_full_reconcile():
    from hybridops.flows.orchestration.deployments import spec_for
    from hybridops.flows.refresh_index import RefreshParams
    from hybridops.tasks.core.settings import Settings

    cfg = Settings()
    spec = spec_for(cfg, "refresh-index")
    (trigger,) = spec.triggers(cfg)
    assert RefreshParams(**trigger.parameters["params"]).targeted  # what the event-started run gets
    assert spec.schedules(cfg) and not spec.parameters  # a scheduled run takes the defaults: the full reconcile
    assert not RefreshParams().targeted


def test_flow_parameter_models_survive_prefects_input_resolution():
    """Prefect resolves a task's pydantic inputs with dict(model): a field named like a mapping method (`keys`)
    breaks every refresh flow run (TypeError: 'list' object is not callable)."""
    from prefect.utilities.collections import visit_collection

    from hybridops.tasks.knowledge.change_feed import FeedEntry, PendingChanges
    from hybridops.tasks.knowledge.refresh import RefreshRequest

    for model in (RefreshRequest(targeted=True, extra_keys=["a.md"]),
                  PendingChanges(entries=["e"], changed_keys=["a.md"]),
                  FeedEntry(id="1", changed_keys=["a.md"], source="t", at="now")):
        assert visit_collection(model, lambda x: x, return_data=True) == model


# the streaming full plan ----------------------------------------------------------------------------------


def _in_order_complete(doc_id: str, records: list[ChunkRecord]) -> bool:
    """The definition, on records sorted by position: chunks 0..n-1 of one version, each with its own id."""
    ordered = sorted(records, key=lambda r: (r.chunk_index, r.uuid))
    shared = {(r.chunk_count, r.source_hash, r.source_version, r.doc_text_hash, r.meta_hash, r.chunking,
               r.embedding_model) for r in ordered}
    return (bool(ordered) and len(shared) == 1 and ordered[0].chunk_count == len(ordered)
            and all(r.chunk_index == i and r.uuid == chunk_uuid(doc_id, i) for i, r in enumerate(ordered)))


def test_a_digest_folded_from_records_in_any_order_tells_complete_exactly_like_the_sorted_records():
    import random

    rng = random.Random(7)
    damages = [
        lambda recs: recs,
        lambda recs: recs[1:],  # a gap
        lambda recs: recs + [recs[0]],  # the same chunk twice (never in Weaviate, still not complete)
        lambda recs: [recs[0].model_copy(update={"meta_hash": "m2"})] + recs[1:],  # mixed versions
        lambda recs: recs + [recs[-1].model_copy(update={"chunk_index": len(recs), "uuid": chunk_uuid("a.md", len(recs))})],
        lambda recs: [recs[0].model_copy(update={"uuid": "00000000-0000-0000-0000-000000000002"})] + recs[1:],
        lambda recs: [r.model_copy(update={"chunk_index": -1}) for r in recs[:1]] + recs[1:],
    ]
    for trial in range(200):
        recs = damages[trial % len(damages)](records("a.md", [f"t{i}" for i in range(rng.randint(1, 6))]))
        rng.shuffle(recs)
        expected = _in_order_complete("a.md", recs) and recs[0].chunking == CHUNKING and recs[0].embedding_model == MODEL
        assert is_complete("a.md", recs, CHUNKING, MODEL) == expected, (trial, recs)


def test_the_full_plan_walks_a_listing_stream_once_and_reads_records_only_for_the_work():
    from hybridops.tasks.knowledge.refresh_plan import digest_records, plan_from_digests

    landed, state = _corpus()
    documents = [i for i in landed if not i.key.startswith("_training/")]
    walked = []

    def listing():  # a listing that can be walked once, in the store's order (not sorted)
        for info in reversed(documents):
            walked.append(info.key)
            yield info

    digests = digest_records(r for recs in state.values() for r in recs)
    plan = plan_from_digests(listing(), digests, target(), deep=False)
    assert sorted(walked) == sorted(i.key for i in documents) and len(walked) == len(documents)
    assert plan.landed == len(documents) and plan.unchanged == 2  # same.md, untouched.md
    assert [w.doc_id for w in plan.work] == ["damaged.md", "edited.md", "new.md"]  # sorted, whatever the listing order
    assert [w.indexed_chunks for w in plan.work] == [1, 1, 0] and all(not w.indexed for w in plan.work)
    assert plan.deletions == {"also-gone.md": 1, "gone.md": 3} and plan.live_losses == ["also-gone.md", "gone.md"]
    assert sorted(digests) == sorted(plan.deletions)  # each landed key took its digest out: what is left goes
    assert plan == plan_refresh(documents, state, target(), deep=False).model_copy(
        update={"work": plan.work})  # the in-memory path decides the same

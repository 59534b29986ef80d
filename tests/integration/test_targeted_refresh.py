"""The targeted refresh (issue 12) against the real Weaviate, a folder landing zone and MinIO, with the real model.

A targeted run plans, reads and embeds only the keys the landing change feed holds and consumes those entries
after it finished; the full reconcile covers (and consumes) everything and repairs what no notifier recorded;
runs queued behind the index lock coalesce: the first applies everything pending, the next finds nothing.
"""

from __future__ import annotations

import contextvars
import threading
import time

import pytest

import hybridops.tasks.knowledge.refresh as refresh_story
from hybridops.tasks.core.locks import namespace_lock
from hybridops.tasks.core.object_store import artifact_store, landing_zone
from hybridops.tasks.core.quarantine import list_quarantined
from hybridops.tasks.knowledge.change_feed import pending_changes, record_changes
from hybridops.tasks.knowledge.refresh import run_refresh
from tests.integration.knowledge_support import (
    CORPUS,
    assert_index_matches_landing,
    drop_namespace,
    expected_state,
    index_state,
    put,
)

DOCS = ["policies/refunds.md", "policies/shipping-rates.md", "programs/rentals.md", "care/down-jackets.md",
        "company/about.md", "stores/locations-and-hours.txt"]
EDITED, ADDED, REMOVED = "policies/refunds.md", "stores/boise.md", "company/about.md"
BOISE = "# Boise store\n\nOur new Boise store opens in May on Main Street, with a rental desk and a repair bench."


def land_corpus(cfg, extra: dict[str, bytes | str] | None = None):
    """The corpus (and `extra`) landed and fully refreshed: the index a targeted run starts from."""
    put(cfg, {doc_id: (CORPUS / doc_id).read_bytes() for doc_id in DOCS} | (extra or {}))
    return run_refresh(cfg)


def edited(doc_id: str, section: str) -> bytes:
    return (CORPUS / doc_id).read_bytes() + f"\n\n## {section}\n\nA section added by the test: {section}.\n".encode()


def change_three(cfg) -> list[str]:
    """Edit one document, add one, remove one; the keys a notifier would record."""
    put(cfg, {EDITED: edited(EDITED, "Store credit within one business day"), ADDED: BOISE})
    landing_zone(cfg).delete(REMOVED)
    return [EDITED, ADDED, REMOVED]


class Spy:
    """The landing zone, noting every call (name, key) the refresh makes on it."""

    def __init__(self, inner):
        self.inner, self.calls = inner, []

    def __getattr__(self, name):
        attr = getattr(self.inner, name)
        if not callable(attr):
            return attr

        def call(*args, **kwargs):
            self.calls.append((name, args[0] if args else kwargs.get("prefix", "")))
            return attr(*args, **kwargs)

        return call


def never(*_args, **_kwargs):
    raise AssertionError("a targeted refresh read the whole index")


class Crash(Exception):
    """The process dies between writing the index and consuming the feed."""


def crash(*_args, **_kwargs):
    raise Crash


def test_a_targeted_refresh_applies_reads_and_embeds_only_the_recorded_keys(cfg, monkeypatch):
    first = land_corpus(cfg, {"bad/empty.md": b""})
    assert first.documents.added == len(DOCS) and first.documents.quarantined == 1
    before = index_state(cfg)
    keys = change_three(cfg)
    put(cfg, {"_training/examples.jsonl": '{"question": "not a document"}\n'})
    store = artifact_store(cfg)
    entry = record_changes(store, [*keys, "_training/examples.jsonl"], "test")

    spy = Spy(landing_zone(cfg))
    with monkeypatch.context() as patched:
        patched.setattr(refresh_story, "landing_zone", lambda _settings: spy)
        patched.setattr(refresh_story, "iter_records", never)
        report = run_refresh(cfg, targeted=True)

    assert report.mode == "targeted" and report.planned_keys == sorted(keys)  # the training area is ignored
    assert report.documents.model_dump() == dict(added=1, updated=1, metadata_only=0, unchanged=0, deleted=1,
                                                 quarantined=0)
    assert report.feed_consumed == [f"feed/landing/{entry.id}.json"] and not pending_changes(store)
    # the landing zone was never listed: each key looked up once, only the present ones read
    assert "list" not in {name for name, _ in spy.calls}
    assert sorted(key for name, key in spy.calls if name == "info") == sorted(keys)
    assert sorted(key for name, key in spy.calls if name == "get") == sorted([EDITED, ADDED])
    # embedded: exactly the changed documents' new chunk texts
    expected = expected_state(cfg)
    old_texts = {r.text for records in before.values() for r in records}
    new_texts = {text for doc_id in (EDITED, ADDED) for _, text in expected[doc_id]}
    assert report.chunks.embedded == len(new_texts - old_texts) >= 2
    assert report.chunks.deleted == len(before[REMOVED])
    assert_index_matches_landing(cfg)
    # documents outside the targeted keys keep their quarantine entries (a full run would re-check them)
    assert [e.item_id for e in list_quarantined(store, "documents")] == ["bad/empty.md"]

    again = run_refresh(cfg, targeted=True)  # the feed is empty now
    assert again.mode == "targeted" and again.planned_keys == [] and again.feed_consumed == []
    assert again.reason == "nothing pending" and again.chunks.total == report.chunks.total


def twin_of(cfg, tmp_path):
    """Another namespace with its own landing zone and store on the same servers and backend."""
    namespace = cfg.namespace + "x"
    landing = cfg.landing.replace(f"/{cfg.namespace}/", f"/{namespace}/") if cfg.landing else None
    return cfg.model_copy(update={"namespace": namespace, "home": tmp_path / "twin", "landing": landing})


def test_targeted_then_full_reconcile_equals_a_full_reconcile_alone(cfg, tmp_path):
    twin = twin_of(cfg, tmp_path)
    try:
        for each in (cfg, twin):
            land_corpus(each)
            change_three(each)
        record_changes(artifact_store(cfg), [EDITED, ADDED, REMOVED], "test")
        targeted = run_refresh(cfg, targeted=True)
        after_targeted = index_state(cfg)
        reconcile = run_refresh(cfg)
        assert (reconcile.documents.unchanged, reconcile.documents.deleted) == (len(DOCS), 0)  # nothing left
        assert (reconcile.chunks.embedded, reconcile.chunks.deleted) == (0, 0)

        alone = run_refresh(twin)
        assert (alone.documents.added, alone.documents.updated, alone.documents.deleted) == (1, 1, 1)
        assert (targeted.documents.added, targeted.documents.updated, targeted.documents.deleted) == (1, 1, 1)
        assert index_state(cfg) == after_targeted == index_state(twin)  # the same records, texts and hashes
    finally:
        drop_namespace(twin)


def test_a_change_missing_from_the_feed_waits_for_the_full_reconcile(cfg):
    land_corpus(cfg)
    before = index_state(cfg)
    unrecorded, recorded = "programs/rentals.md", "care/down-jackets.md"
    put(cfg, {unrecorded: edited(unrecorded, "Unannounced change"), recorded: edited(recorded, "Announced change")})
    record_changes(artifact_store(cfg), [recorded], "test")

    targeted = run_refresh(cfg, targeted=True)
    assert targeted.planned_keys == [recorded] and targeted.documents.updated == 1
    after = index_state(cfg)
    assert after[unrecorded] == before[unrecorded]  # not seen: no notifier recorded it
    assert after[recorded] != before[recorded]

    straggler = record_changes(artifact_store(cfg), [recorded], "a late duplicate")
    full = run_refresh(cfg)
    assert full.mode == "incremental" and full.documents.updated == 1 and full.documents.unchanged == len(DOCS) - 1
    assert index_state(cfg)[unrecorded] != before[unrecorded]
    assert full.feed_consumed == [f"feed/landing/{straggler.id}.json"]  # it covered every entry it found
    assert not pending_changes(artifact_store(cfg))
    assert_index_matches_landing(cfg)


def test_entries_recorded_while_the_index_lock_is_held_are_applied_by_one_queued_run(cfg):
    land_corpus(cfg)
    store = artifact_store(cfg)
    new_docs = {f"stores/branch-{i}.md": f"# Branch {i}\n\nBranch number {i} opens at nine, closes at six, and "
                f"rents tents and stoves." for i in range(5)}
    reports, errors = [], []

    def targeted_run():
        try:
            reports.append(run_refresh(cfg, targeted=True))
        except Exception as exc:  # noqa: BLE001 - surfaced by the assertion below
            errors.append(exc)

    with namespace_lock(cfg, "index", "another holder"):
        runs = [threading.Thread(target=contextvars.copy_context().run, args=(targeted_run,)) for _ in range(2)]
        for run in runs:
            run.start()
        for doc_id, text in new_docs.items():  # five notifications, each recorded before its event
            put(cfg, {doc_id: text})
            record_changes(store, [doc_id], "test")
        time.sleep(1)
        assert not reports and not errors and len(pending_changes(store).entries) == 5  # both runs wait
    for run in runs:
        run.join(timeout=600)
    assert not errors, errors
    idle, busy = sorted(reports, key=lambda r: len(r.feed_consumed))
    assert busy.planned_keys == sorted(new_docs) and len(busy.feed_consumed) == 5
    assert busy.documents.added == 5 and busy.documents.unchanged == 0
    assert idle.planned_keys == [] and idle.feed_consumed == [] and idle.reason == "nothing pending"
    assert idle.documents.added == idle.chunks.embedded == 0
    assert not pending_changes(store)
    assert_index_matches_landing(cfg)


def test_a_targeted_run_keeps_the_guards(cfg, monkeypatch):
    land_corpus(cfg)
    store = artifact_store(cfg)
    # the mass-deletion guard: most of the index vanishing in one targeted run waits for a confirmation
    strict = cfg.model_copy(update={"refresh_mass_delete_min_docs": 2})
    for doc_id in DOCS[:4]:
        landing_zone(cfg).delete(doc_id)
    record_changes(store, DOCS[:4], "test")
    with pytest.raises(refresh_story.MassDeletionBlocked) as blocked:
        run_refresh(strict, targeted=True)
    assert blocked.value.details["mode"] == "targeted" and blocked.value.details["would_remove"] == 4
    assert set(index_state(cfg)) == set(DOCS)  # nothing was written, and the entry is still pending
    assert len(pending_changes(store).entries) == 1

    # a run that dies after writing leaves the entries in place; the next applies them again
    monkeypatch.setattr(refresh_story, "consume", crash)
    with pytest.raises(Crash):
        run_refresh(strict, targeted=True, allow_mass_delete=True)
    monkeypatch.undo()
    assert set(index_state(cfg)) == set(DOCS[4:]) and len(pending_changes(store).entries) == 1
    replay = run_refresh(strict, targeted=True)
    assert replay.documents.deleted == 0 and replay.documents.model_dump()["unchanged"] == 0
    assert replay.planned_keys == sorted(DOCS[:4]) and len(replay.feed_consumed) == 1

    # a missing landing root is never read as 'every targeted key was deleted'
    record_changes(store, [DOCS[4]], "test")
    gone = cfg.model_copy(update={"landing": str(cfg.home / "unmounted") if not cfg.landing else
                                  cfg.landing.replace("s3://" + cfg.s3_bucket, "s3://no-such-bucket-hybridops")})
    with pytest.raises(Exception, match="does not exist"):
        run_refresh(gone, targeted=True)
    assert set(index_state(cfg)) == set(DOCS[4:]) and len(pending_changes(store).entries) == 1

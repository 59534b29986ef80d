"""State files: corrupt means repairable (hardening §4): durable folder puts, a disposable embedding cache,
compare-and-swap promotion in the retrain story and resuming an undecided challenger. No services needed."""

from __future__ import annotations

import os
import sqlite3
from types import SimpleNamespace

import numpy as np
import pytest

from hybridops.tasks.behaviour import adapters, retrain
from hybridops.tasks.behaviour.promotion import decide
from hybridops.tasks.behaviour.suite import CaseResult, CheckOutcome, EvalReport, Suite, check_stats
from hybridops.tasks.core.object_store import TEMP_MARK, FolderStore
from hybridops.tasks.knowledge.embedding_cache import EmbeddingCache
from tests.unit.test_adapters_registry import adapter_folder, register


# Durable folder put ---------------------------------------------------------------------------------------

def test_put_fsyncs_file_and_folder_then_renames(tmp_path, monkeypatch) -> None:
    store = FolderStore(tmp_path / "root")
    synced: list[str] = []
    real_fsync = os.fsync

    def spy(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    store.put("a/b/key.json", b"data")
    assert (tmp_path / "root" / "a" / "b" / "key.json").read_bytes() == b"data"
    assert any(TEMP_MARK in p for p in synced)  # the temp file, before the rename
    assert str(tmp_path / "root" / "a" / "b") in synced  # the folder, after it
    assert str(tmp_path / "root") in synced and str(tmp_path / "root" / "a") in synced  # new folders are kept


@pytest.mark.parametrize("fail_at", ["write", "fsync", "replace"])
def test_failed_put_leaves_no_temp_file_and_keeps_the_old_bytes(tmp_path, monkeypatch, fail_at) -> None:
    store = FolderStore(tmp_path / "root")
    store.put("k/obj", b"old")

    def boom(*args, **kwargs):
        raise OSError(28, "No space left on device")

    if fail_at == "write":  # half the bytes reach the temp file, then the disk is full
        monkeypatch.setattr("hybridops.tasks.core.object_store.os.fdopen",
                            lambda fd, mode: _FailingHandle(fd))
    elif fail_at == "fsync":
        monkeypatch.setattr(os, "fsync", boom)
    else:
        monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="No space"):
        store.put("k/obj", b"new")
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path / "root" / "k")) == ["obj"]
    assert store.get("k/obj") == b"old"


class _FailingHandle:
    """A file handle whose write fails halfway (after some bytes reached the temp file)."""

    def __init__(self, fd: int):
        self.fd = fd

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        os.close(self.fd)

    def write(self, data: bytes):
        os.write(self.fd, data[:1])
        raise OSError(28, "No space left on device")


# Embedding cache ------------------------------------------------------------------------------------------

def test_garbage_cache_file_is_moved_aside_and_rebuilt(tmp_path, caplog) -> None:
    path = tmp_path / "cache" / "embeddings.sqlite3"
    path.parent.mkdir()
    path.write_bytes(b"this is not a database, it is garbage" * 100)
    with caplog.at_level("WARNING"), EmbeddingCache(path) as cache:
        assert cache.count() == 0
        cache.put_many("m", {"h": np.ones(3, dtype=np.float32)})
        assert list(cache.get_many("m", ["h"])) == ["h"]
        aside = cache.moved_aside
    assert len(aside) == 1 and aside[0].name.startswith("embeddings.sqlite3.corrupt-")
    assert aside[0].read_bytes().startswith(b"this is not a database")
    assert "corrupt" in caplog.text


def test_cache_corrupted_while_in_use_is_replaced_on_read_and_write(tmp_path) -> None:
    path = tmp_path / "embeddings.sqlite3"
    with EmbeddingCache(path) as cache:
        cache.put_many("m", {f"h{i}": np.full(256, i, dtype=np.float32) for i in range(400)})
        cache._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    size = path.stat().st_size
    with path.open("r+b") as handle:  # trash every page but the header one
        handle.seek(4096)
        handle.write(b"\xff" * (size - 4096))
    with EmbeddingCache(path) as cache:
        assert cache.get_many("m", ["h1", "h2"]) == {}  # recomputed, not a dead refresh
        assert len(cache.moved_aside) == 1
        cache.put_many("m", {"h1": np.ones(2, dtype=np.float32)})
        assert list(cache.get_many("m", ["h1"])) == ["h1"]


def test_a_locked_cache_is_not_mistaken_for_a_corrupt_one(tmp_path) -> None:
    path = tmp_path / "embeddings.sqlite3"
    EmbeddingCache(path).close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        cache = EmbeddingCache.__new__(EmbeddingCache)
        cache.path, cache.moved_aside = path, []
        cache._db = sqlite3.connect(path, timeout=0.1, isolation_level=None)
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            cache.put_many("m", {"h": np.ones(2, dtype=np.float32)})
        assert cache.moved_aside == [] and path.exists()
    finally:
        holder.execute("ROLLBACK")
        holder.close()


# Retrain: compare-and-swap and resuming an undecided challenger -------------------------------------------

def report(version: str | None, rate: float) -> EvalReport:
    """Ten cases c0..c9 of which the first rate*10 pass json_format (the same ids for every model: paired)."""
    cases = [CaseResult(case_id=f"c{i}", question="q", origin="golden", gold_docs=[], retrieved=[], answer=None,
                        sources=[], format_ok=True, raw="",
                        checks={"json_format": CheckOutcome(passed=i < round(rate * 10))}, latency_ms=1.0)
             for i in range(10)]
    return EvalReport(suite="s", adapter_version=version, started_at="now", seconds=1.0,
                      checks=check_stats(cases), cases=cases)


def test_retrain_promotion_loses_cas_when_the_champion_moved(cfg, store, tmp_path) -> None:
    first = register(cfg, store, adapter_folder(tmp_path, b"one"))
    challenger = register(cfg, store, adapter_folder(tmp_path, b"two"))
    adapters.promote(cfg, first.version, "champion", store=store)
    decision = decide(report("two", 1.0).cases, report("one", 0.5).cases, [], 0.05)  # 5 fixed: p = 1/32
    assert decision.promote
    adapters.rollback(cfg, store=store)  # a manual rollback lands while the retrain evaluated
    final = retrain.apply_decision(cfg, challenger, report(challenger.version, 1.0), decision, first.version)
    assert not final.promote and final.reason.startswith("champion changed during the run")
    assert adapters.champion_version(cfg, store) is None
    recorded = adapters.show(cfg, challenger.version, store).decision
    assert recorded["promote"] is False and "champion changed" in recorded["reason"]


def test_retrain_decides_an_undecided_challenger_instead_of_training(cfg, store, tmp_path, monkeypatch) -> None:
    cfg = cfg.model_copy(update={"transfer_suite": None})  # the transfer gate's resume path: test_transfer_gate.py
    pending = register(cfg, store, adapter_folder(tmp_path, b"pending"))  # its run died right after this
    data = SimpleNamespace(train=[1, 2, 3], validation=[1], fingerprint="f" * 64, origins={}, augmented={},
                           counts={"train": 3, "validation": 1, "rejected": 0})
    monkeypatch.setattr(retrain, "build_data", lambda settings, include: data)
    monkeypatch.setattr(retrain, "load_held_out_suite", lambda settings, path: Suite(name="s"))
    monkeypatch.setattr(retrain, "make_retriever", lambda settings: None)
    monkeypatch.setattr(retrain, "train_challenger", lambda *a: pytest.fail("trained again"))
    monkeypatch.setattr(retrain, "evaluate", lambda settings, suite, version, retrieve, reporter:
                        report(version, 1.0 if version else 0.5))
    snapshots: list[object] = []
    monkeypatch.setattr(retrain, "save_replay_snapshot", lambda settings, data: snapshots.append(data))
    stages: list[str] = []
    reporter = SimpleNamespace(stage=stages.append, progress=lambda *a, **k: None)
    outcome = retrain._retrain(cfg, retrain.RetrainRequest(), retrain.direct, reporter)
    assert outcome.version == pending.version and outcome.promoted and not outcome.skipped
    assert any("resuming undecided challenger" in s for s in stages)
    assert snapshots == [data]  # a resumed challenger's training data is kept for replay too
    assert adapters.champion_version(cfg, store) == pending.version
    assert adapters.show(cfg, pending.version, store).decision["promote"] is True
    # decided now: the next run on the same data skips (nothing new), it does not pick it up again
    again = retrain._retrain(cfg, retrain.RetrainRequest(), retrain.direct, reporter)
    assert again.skipped and again.version is None

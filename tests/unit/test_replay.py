"""Replay: earlier adapters' examples come back up to the cap, newest first, never next to their current
version, never citing a document that is gone, in the split they had, validated like new ones.

Real FolderStores in tmp_path and plain data; the word-level tokenizer of test_training_data stands in for the
model's (no model files).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from hybridops.tasks.behaviour.prompting import format_reply
from hybridops.tasks.behaviour.replay import (
    INDEX_KEY,
    PREFIX,
    read_index,
    replay_cap,
    save_replay_snapshot,
    save_snapshot,
)
from hybridops.tasks.behaviour.training_data import (
    ContextPassage,
    TrainingData,
    TrainingExample,
    build_training_data,
    in_validation,
)
from hybridops.tasks.core.object_store import FolderStore
from hybridops.tasks.core.quarantine import list_quarantined, read_copy
from hybridops.tasks.core.settings import Settings
from tests.unit.test_training_data import land_lines, tokenizer  # noqa: F401  (tokenizer is a fixture)

DOCS = {
    "policies/refunds.md": "Most items can be returned within 45 days.",
    "care/tent-care.html": "Dry your tent within 24 hours.",
}
ANSWERS = {"policies/refunds.md": "45 days", "care/tent-care.html": "within 24 hours"}


def settings(tmp_path: Path, **overrides) -> Settings:
    return Settings(home=tmp_path / "home", _env_file=None, train_validation_fraction=0.2, **overrides)


def stores(cfg: Settings) -> tuple[FolderStore, FolderStore]:
    """The landing zone (with DOCS landed) and the artifact store."""
    landing = FolderStore(cfg.landing_uri)
    for doc_id, text in DOCS.items():
        landing.put(doc_id, text.encode())
    return landing, FolderStore(cfg.store_uri)


def row(eid: str, cite: str = "policies/refunds.md") -> dict:
    """A landing JSONL record citing one document, with every DOCS passage as context."""
    return {"id": eid, "question": f"What does {eid} ask?",
            "context": [{"doc_id": d, "text": t} for d, t in DOCS.items()],
            "response": {"answer": ANSWERS[cite], "sources": [cite]}}


def example(eid: str, response: str | None = None) -> TrainingExample:
    record = row(eid)
    return TrainingExample(id=eid, origin=f"landing:_training/old.jsonl#{eid}", question=record["question"],
                           passages=[ContextPassage(**p) for p in record["context"]],
                           response=response or format_reply(ANSWERS["policies/refunds.md"], ["policies/refunds.md"]))


def build(cfg: Settings, tok, **kwargs) -> TrainingData:
    return build_training_data(cfg, include_interactions=False, tokenizer=tok, **kwargs)


def train_on(cfg: Settings, tok, landing: FolderStore, rows: list[dict]) -> TrainingData:
    """Replace the training file with `rows`, build, and keep the snapshot as a registered challenger would."""
    land_lines(landing, "examples.jsonl", rows)
    data = build(cfg, tok)
    save_replay_snapshot(cfg, data)
    return data


def replayed(data: TrainingData) -> set[str]:
    return {e.id for e in data.accepted if e.origin.startswith("replay:")}


def ids(split) -> list[str]:
    return list(split["id"]) if len(split) else []  # an empty Dataset has no columns


def mix(data: TrainingData) -> dict[str, int]:
    return {k: v for k, v in data.counts.items() if k.startswith("replay")}


def test_replay_adds_earlier_examples_up_to_the_cap_newest_first(tmp_path, tokenizer) -> None:
    cfg = settings(tmp_path)
    landing, _ = stores(cfg)
    train_on(cfg, tokenizer, landing, [row(f"old{i}") for i in range(4)])
    second = train_on(cfg, tokenizer, landing, [row("newer0"), row("newer1")])
    assert replayed(second) == set() and second.counts["replay_skipped_over_cap"] == 4  # cap int(0.25 * 2) = 0

    current = [row(f"now{i}") for i in range(8)] + [row("newer1")]
    land_lines(landing, "examples.jsonl", current)
    data = build(cfg, tokenizer)
    # cap int(0.25 * 9) = 2: the newest snapshot's newer0 first (newer1 is current), then one of the oldest
    assert mix(data) == {"replayed": 2, "replay_cap": 2, "replay_snapshots": 2, "replay_skipped_present": 1,
                         "replay_skipped_documents_gone": 0, "replay_skipped_over_cap": 3, "replay_rejected": 0}
    assert "newer0" in replayed(data) and len(replayed(data) & {f"old{i}" for i in range(4)}) == 1
    assert data.origins == {"landing": 9, "replay": 2}
    assert next(e for e in data.accepted if e.id == "newer1").origin.startswith("landing:")  # the current one wins
    rows = ids(data.train) + ids(data.validation)
    assert len(rows) == len(set(rows)) == 11 + data.counts["augmented"]  # replayed ones get their twins again

    again = build(cfg, tokenizer)
    assert replayed(again) == replayed(data) and again.fingerprint == data.fingerprint
    without = build(cfg, tokenizer, include_replay=False)
    assert replayed(without) == set() and without.fingerprint != data.fingerprint  # the skip rule sees the mix
    off = build(cfg.model_copy(update={"train_replay_share": 0.0}), tokenizer)
    assert off.fingerprint == without.fingerprint and off.counts["replay_snapshots"] == 0


def test_replay_skips_examples_citing_documents_no_longer_landed(tmp_path, tokenizer) -> None:
    cfg = settings(tmp_path)
    landing, _ = stores(cfg)
    train_on(cfg, tokenizer, landing, [row("refunds"), row("tents", cite="care/tent-care.html")])
    landing.delete("care/tent-care.html")
    land_lines(landing, "examples.jsonl", [row(f"now{i}") for i in range(8)])
    data = build(cfg, tokenizer)
    assert replayed(data) == {"refunds"}
    assert data.counts["replay_skipped_documents_gone"] == 1 and data.counts["replay_skipped_over_cap"] == 0


def test_replayed_examples_keep_their_split_by_id(tmp_path, tokenizer) -> None:
    cfg = settings(tmp_path, train_replay_share=1.0)
    landing, _ = stores(cfg)
    first = train_on(cfg, tokenizer, landing, [row(f"old{i}") for i in range(20)])
    land_lines(landing, "examples.jsonl", [row(f"now{i}") for i in range(20)])
    data = build(cfg, tokenizer)
    assert replayed(data) == {f"old{i}" for i in range(20)}
    before, after = set(ids(first.validation)), set(ids(data.validation))
    held_out = {f"old{i}" for i in range(20) if in_validation(f"old{i}", cfg.train_seed, cfg.train_validation_fraction)}
    assert held_out and held_out < replayed(data)  # both splits occur among the replayed ones
    for eid in replayed(data):
        assert (eid in after) == (eid in before) == (eid in held_out)
        assert (f"{eid}~shuffled" in after) == (eid in held_out)  # its twin too


def test_an_invalid_replayed_example_is_quarantined_with_its_reason(tmp_path, tokenizer) -> None:
    cfg = settings(tmp_path)
    landing, store = stores(cfg)
    # written when the contract still allowed prose replies
    snapshot = save_snapshot(store, "f" * 64, [example("prose", response="The answer is 45 days.")])
    land_lines(landing, "examples.jsonl", [row(f"now{i}") for i in range(4)])
    data = build(cfg, tokenizer)
    assert data.counts["replayed"] == 0 and data.counts["replay_rejected"] == 1
    [held] = list_quarantined(store, "training")
    assert held.item_id == f"{snapshot.key}#L1" and held.reasons[0].startswith("response_format")
    assert json.loads(read_copy(store, held))["response"] == "The answer is 45 days."  # the snapshot line

    fixed = row("prose") | {"question": example("prose").question}  # the same example, current again
    land_lines(landing, "examples.jsonl", [row(f"now{i}") for i in range(4)] + [fixed])
    again = build(cfg, tokenizer)
    assert again.counts["replay_skipped_present"] == 1 and list_quarantined(store, "training") == []


def test_a_damaged_snapshot_or_index_is_skipped_with_a_warning(tmp_path, tokenizer, caplog) -> None:
    cfg = settings(tmp_path)
    landing, store = stores(cfg)
    save_snapshot(store, "a" * 64, [example("older")])
    damaged = save_snapshot(store, "b" * 64, [example("newer")])
    store.put(damaged.key, b'{"id": "newer", "question": ')
    land_lines(landing, "examples.jsonl", [row(f"now{i}") for i in range(8)])
    with caplog.at_level(logging.WARNING, logger="hybridops.tasks.behaviour.replay"):
        data = build(cfg, tokenizer)
    assert replayed(data) == {"older"} and data.counts["replay_snapshots"] == 1
    assert any(damaged.key in r.getMessage() and "sha256" in r.getMessage() for r in caplog.records)

    caplog.clear()
    store.put(INDEX_KEY, b"not json")
    with caplog.at_level(logging.WARNING, logger="hybridops.tasks.behaviour.replay"):
        data = build(cfg, tokenizer)
    assert replayed(data) == {"older"}  # the index is rebuilt from the objects; the damaged one still skipped
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "rebuilt" in messages and f"{damaged.key} does not parse" in messages


def test_a_snapshot_keeps_the_originals_once(tmp_path, tokenizer) -> None:
    cfg = settings(tmp_path)
    landing, store = stores(cfg)
    land_lines(landing, "examples.jsonl", [row(f"now{i}") for i in range(6)])
    data = build(cfg, tokenizer)
    entry = save_replay_snapshot(cfg, data)
    assert entry.key == f"{PREFIX}{data.fingerprint}.jsonl"
    lines = [json.loads(line) for line in store.get(entry.key).splitlines()]
    assert [line["id"] for line in lines] == sorted(e.id for e in data.accepted)  # no augmented twins
    index = store.get(INDEX_KEY)
    assert save_replay_snapshot(cfg, data) == entry and store.get(INDEX_KEY) == index  # idempotent

    store.put(entry.key, b"damaged")
    repaired = save_replay_snapshot(cfg, data)
    assert store.sha256(entry.key) == repaired.sha256 == entry.sha256
    assert [s.fingerprint for s in read_index(store).snapshots] == [data.fingerprint]


@pytest.mark.parametrize("share, current, cap", [(0.25, 9, 2), (0.25, 3, 0), (0.3, 10, 3), (1.0, 7, 7), (0.0, 50, 0)])
def test_the_cap_is_a_share_of_the_current_examples(share, current, cap) -> None:
    assert replay_cap(share, current) == cap

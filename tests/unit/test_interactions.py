"""The interaction log on a local folder store: contract-checked records, feedback, sampling."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from hybridops.tasks.behaviour.interactions import (
    InteractionRejected,
    get_interaction,
    interaction_key,
    interactions_with_feedback,
    log_interaction,
    new_id,
    new_interaction,
    recent_interactions,
    record_feedback,
    sample_recent,
)
from hybridops.tasks.core.object_store import artifact_store
from hybridops.tasks.behaviour.prompting import parse_reply
from hybridops.tasks.core.quarantine import list_quarantined
from hybridops.tasks.core.settings import Settings


@pytest.fixture
def cfg(tmp_path) -> Settings:
    return Settings(home=tmp_path, namespace="unit")


def make(question="How long can I return items?", raw='{"answer": "30 days", "sources": ["policies/refunds.md"]}', **kw):
    values = dict(question=question, reply=parse_reply(raw), retrieved=["policies/refunds.md"], adapter=None,
                  latency_ms=1234.5, model="packaged:SmolLM2-135M-Instruct")
    return new_interaction(**(values | kw))


def test_logged_interaction_round_trips_under_its_date(cfg):
    item = make()
    key = log_interaction(cfg, item)
    assert key == f"interactions/{datetime.now(timezone.utc).date().isoformat()}/{item.id}.json"
    assert get_interaction(cfg, item.id) == item
    stored = json.loads(artifact_store(cfg).get(key))
    assert stored["raw"] == item.raw and stored["format_ok"] is True


def test_record_failing_the_contract_is_quarantined_not_lost(cfg):
    item = make().model_copy(update={"sources": [""], "latency_ms": -1.0})
    with pytest.raises(InteractionRejected) as info:
        log_interaction(cfg, item)
    assert any("latency_ms" in r for r in info.value.reasons)
    assert any("sources" in r for r in info.value.reasons)
    store = artifact_store(cfg)
    assert json.loads(store.get(info.value.key))["id"] == item.id  # the record itself is kept, not lost
    [held] = list_quarantined(store, "interactions")  # ... and listed with its reasons
    assert held.item_id == f"{item.id}.json" and held.reasons == info.value.reasons
    assert not store.exists(item.key)


def test_unparseable_reply_is_logged_with_raw_text(cfg):
    item = make(raw="The CEO is Elena.")
    log_interaction(cfg, item)
    got = get_interaction(cfg, item.id)
    assert got.format_ok is False and got.answer == "The CEO is Elena." and got.sources == []


def test_feedback_requires_existing_interaction_and_keeps_earlier_verdicts(cfg):
    item = make()
    log_interaction(cfg, item)
    with pytest.raises(KeyError, match="no interaction"):
        record_feedback(cfg, new_id(), "approve")
    with pytest.raises(ValueError, match="not an interaction id"):
        record_feedback(cfg, "../../etc/passwd", "approve")
    with pytest.raises(ValueError, match="correction needs"):
        record_feedback(cfg, item.id, "correct", "   ")
    first = record_feedback(cfg, item.id, "approve").feedback
    assert first.verdict == "approve" and first.previous == []
    second = record_feedback(cfg, item.id, "correct", "Unopened items: 30 days.").feedback
    assert second.correction == "Unopened items: 30 days." and second.previous[0].verdict == "approve"
    [logged] = interactions_with_feedback(cfg)
    assert logged.interaction.id == item.id and logged.feedback.verdict == "correct"


def test_plain_correction_of_a_reply_that_cited_nothing_must_name_its_sources(cfg):
    item = make(raw="Thirty days, I believe.")  # unformatted: no citations to reuse
    log_interaction(cfg, item)
    with pytest.raises(ValueError, match="--source DOC_ID"):
        record_feedback(cfg, item.id, "correct", "You have 45 days.")
    assert interactions_with_feedback(cfg) == []  # nothing half-recorded
    fixed = record_feedback(cfg, item.id, "correct", "You have 45 days.", sources=["policies/refunds.md"]).feedback
    assert fixed.sources == ["policies/refunds.md"]
    house = record_feedback(cfg, item.id, "correct", '{"answer": null, "sources": []}').feedback  # cites itself
    assert house.sources == [] and house.previous[0].sources == ["policies/refunds.md"]


def test_recent_and_sample(cfg):
    store = artifact_store(cfg)
    old_day = datetime.now(timezone.utc) - timedelta(days=30)
    old = make(question="old question").model_copy(update={"id": new_id(old_day)})
    log_interaction(cfg, old)
    items = [make(question=f"question {i}") for i in range(5)] + [make(question="QUESTION 0 ")]
    for item in items:
        log_interaction(cfg, item)
    recent = recent_interactions(cfg, days=7)
    assert len(recent) == 6 and old.id not in {r.interaction.id for r in recent}
    assert store.exists(interaction_key(old.id))
    first = sample_recent(cfg, k=3, seed="s")
    assert len(first) == 3 and [x.interaction.id for x in first] == [x.interaction.id for x in sample_recent(cfg, k=3, seed="s")]
    everything = sample_recent(cfg, k=50, seed="s")
    assert len(everything) == 5  # duplicate question (case/space-insensitive) sampled once
    assert sample_recent(cfg, k=0) == []

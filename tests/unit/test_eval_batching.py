"""Batched eval generation without a model: the batching plan, and the suite/oracle paths around a stub model."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hybridops.tasks.behaviour import suite as suite_module
from hybridops.tasks.behaviour.gap_attribution import attribute_gaps
from hybridops.tasks.knowledge.document_status import DocumentStatus
from hybridops.tasks.behaviour.llm import _until_eos, plan_batches
from hybridops.tasks.behaviour.suite import Case, Suite, run_suite
from hybridops.tasks.core.settings import Settings


def flat(batches: list[list[int]]) -> list[int]:
    return sorted(i for batch in batches for i in batch)


def cost(batch: list[int], lengths: list[int], new: int) -> int:
    return len(batch) * (max(lengths[i] for i in batch) + new)


def test_zero_budget_is_one_prompt_per_batch_in_input_order() -> None:
    assert plan_batches([500, 10, 300], 0, 96) == [[0], [1], [2]]
    assert plan_batches([], 0, 96) == [] and plan_batches([], 8192, 96) == []


def test_batches_group_similar_lengths_under_the_token_budget() -> None:
    lengths = [600, 100, 580, 120, 610, 90, 400, 620]
    plan = plan_batches(lengths, 2000, 96)
    assert flat(plan) == list(range(len(lengths)))
    assert all(cost(batch, lengths, 96) <= 2000 for batch in plan)
    assert plan[0] == [5, 1, 3, 6]  # shortest first, so short prompts never wait behind long padding
    order = [lengths[i] for batch in plan for i in batch]
    assert order == sorted(order)


def test_a_prompt_over_the_budget_still_gets_its_own_batch() -> None:
    plan = plan_batches([100, 5000, 100], 1000, 96)
    assert plan == [[0, 2], [1]]


def test_equal_lengths_keep_input_order_and_fill_batches() -> None:
    plan = plan_batches([404] * 7, 1500, 96)  # 3 rows x 500 = 1500 fits, 4 rows do not
    assert plan == [[0, 1, 2], [3, 4, 5], [6]]


@pytest.mark.parametrize("budget", [1, 700, 2500, 10**6])
def test_every_plan_covers_each_prompt_once(budget: int) -> None:
    lengths = [(i * 37) % 700 + 1 for i in range(40)]
    plan = plan_batches(lengths, budget, 32)
    assert flat(plan) == list(range(40))
    assert all(len(batch) == 1 or cost(batch, lengths, 32) <= budget for batch in plan)


def test_replies_are_cut_at_the_first_eos() -> None:
    assert _until_eos([5, 6, 2, 2, 2], {2}) == [5, 6]
    assert _until_eos([5, 6, 7], {2}) == [5, 6, 7]
    assert _until_eos([2, 9], {2, 9}) == []


# -- the eval paths around a stub batch generator ---------------------------------------------------------------


@dataclass(frozen=True)
class Hit:
    doc_id: str
    text: str


REFUNDS = Hit("policies/refunds.md", "You can return items within 45 days.")
OTHER = Hit("programs/rentals.md", "Rent gear for a weekend.")
GOOD = '{"answer": "45 days", "sources": ["policies/refunds.md"]}'
BAD = '{"answer": "I am not sure", "sources": []}'


@pytest.fixture
def stub_batches(monkeypatch: pytest.MonkeyPatch):
    """Answers GOOD when the refunds passage is the only context (the oracle), BAD otherwise; records batches."""
    calls: list[list[int]] = []

    def fake(model, tokenizer, conversations, max_new_tokens, batch_tokens=0, on_batch=None):
        replies = [GOOD if "45 days" in c[-1]["content"] and "Rent gear" not in c[-1]["content"] else BAD
                   for c in conversations]
        order = list(range(len(conversations)))[::-1]  # batches may finish out of input order
        for start in range(0, len(order), 2):
            batch = order[start:start + 2]
            calls.append(batch)
            if on_batch:
                on_batch(batch, [replies[i] for i in batch])
        return replies

    monkeypatch.setattr(suite_module, "generate_chat_batch", fake)
    return calls


def test_run_suite_batches_generation_reports_progress_per_case_and_keeps_suite_order(stub_batches) -> None:
    cases = [Case(id=f"c{i}", question=f"How many days to return item {i}?", gold_docs=["policies/refunds.md"],
                  expected_keywords=["45"]) for i in range(5)]
    suite = Suite(name="s", cases=cases)
    seen = []
    report = run_suite(Settings(), suite, object(), object(), None, retrieve=lambda q: (REFUNDS, OTHER),
                       progress=lambda done, total, result: seen.append((done, total, result.case_id)))
    assert [c.case_id for c in report.cases] == [c.id for c in cases]
    assert [(done, total) for done, total, _ in seen] == [(i, 5) for i in range(1, 6)]
    assert [case_id for *_, case_id in seen] == ["c4", "c3", "c2", "c1", "c0"]
    assert len(stub_batches) == 3
    assert all(not r.passed for r in report.cases)


def test_oracle_reasks_are_batched_and_classified(stub_batches) -> None:
    cases = [
        Case(id="noise", question="How many days to return?", gold_docs=["policies/refunds.md"], expected_keywords=["45"]),
        Case(id="noise2", question="Return window?", gold_docs=["policies/refunds.md"], expected_keywords=["45"]),
        Case(id="missing", question="Rental deposit?", gold_docs=["programs/rentals.md"], expected_keywords=["200"]),
    ]
    suite = Suite(name="s", cases=cases)
    retrieved = {"How many days to return?": (REFUNDS, OTHER), "Return window?": (REFUNDS, OTHER),
                 "Rental deposit?": (REFUNDS,)}
    report = run_suite(Settings(), suite, object(), object(), None, retrieve=lambda q: retrieved[q])
    stub_batches.clear()
    fetched = []

    def fetch(doc_ids):
        fetched.append(list(doc_ids))
        return [REFUNDS] if doc_ids == ["policies/refunds.md"] else []

    indexed = {doc: DocumentStatus(doc_id=doc, status="indexed") for doc in ("policies/refunds.md", "programs/rentals.md")}
    gaps = {g.case_id: g for g in attribute_gaps(Settings(), suite, report, object(), object(), oracle_fetch=fetch,
                                                 status_lookup=lambda docs: {d: indexed[d] for d in docs})}
    assert fetched == [["policies/refunds.md"], ["policies/refunds.md"]]  # no re-ask where gold was missed
    assert stub_batches == [[1, 0]]  # both re-asks in one generation call
    assert gaps["noise"].kind == gaps["noise2"].kind == "retrieval_noise"
    assert gaps["missing"].kind == "retrieval_miss"  # indexed, not retrieved


def test_a_cached_reply_is_reused_only_for_the_same_model_and_the_same_prompt(stub_batches, tmp_path) -> None:
    from hybridops.tasks.behaviour.reply_cache import ReplyCache
    from hybridops.tasks.core.object_store import FolderStore

    store = FolderStore(str(tmp_path / "store"))
    champion = {"base": {"id": "m", "sha256": "b"}, "adapter": {"version": "v1", "files": {"a": "1"}}}
    cases = [Case(id=f"c{i}", question=f"How many days to return item {i}?", gold_docs=["policies/refunds.md"],
                  expected_keywords=["45"]) for i in range(3)]
    suite = Suite(name="s", cases=cases)

    first = run_suite(Settings(), suite, object(), object(), "v1", retrieve=lambda q: (REFUNDS,),
                      cache=ReplyCache(store, champion))
    assert first.reused == 0 and len(stub_batches) == 2
    stub_batches.clear()
    again = run_suite(Settings(), suite, object(), object(), "v1", retrieve=lambda q: (REFUNDS,),
                      cache=ReplyCache(store, champion))  # a later run: read back from the store
    assert again.reused == 3 and stub_batches == []
    assert [c.model_dump(exclude={"latency_ms"}) for c in again.cases] == \
           [c.model_dump(exclude={"latency_ms"}) for c in first.cases]

    changed = run_suite(Settings(), suite, object(), object(), "v1", retrieve=lambda q: (REFUNDS, OTHER),
                        cache=ReplyCache(store, champion))  # other passages: another prompt
    assert changed.reused == 0 and stub_batches
    stub_batches.clear()
    retrained = {**champion, "adapter": {"version": "v2", "files": {"a": "2"}}}
    other = run_suite(Settings(), suite, object(), object(), "v2", retrieve=lambda q: (REFUNDS,),
                      cache=ReplyCache(store, retrained))  # other weights: nothing reused
    assert other.reused == 0 and stub_batches


def test_an_unreadable_reply_cache_is_ignored_and_replaced(stub_batches, tmp_path) -> None:
    from hybridops.tasks.behaviour.reply_cache import ReplyCache
    from hybridops.tasks.core.object_store import FolderStore

    store = FolderStore(str(tmp_path / "store"))
    identity = {"base": {"id": "m", "sha256": "b"}, "adapter": None}
    store.put(ReplyCache(store, identity).key, b"{not json")
    suite = Suite(name="s", cases=[Case(id="c", question="Return window?", gold_docs=["policies/refunds.md"])])
    report = run_suite(Settings(), suite, object(), object(), None, retrieve=lambda q: (REFUNDS,),
                       cache=ReplyCache(store, identity))
    assert report.reused == 0 and ReplyCache(store, identity).replies  # rewritten, readable again

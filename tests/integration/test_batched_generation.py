"""Batched greedy generation gives the same replies as one prompt at a time, on the real SmolLM2.

No servers needed: the prompts are the house prompts of the example suite's cases, with passages chunked
straight from examples/corpus (the gold docs' chunks, cut like an oracle re-ask, plus a fixed distractor).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hybridops.tasks.behaviour.gap_attribution import oracle_passages
from hybridops.tasks.behaviour.llm import (
    chat_prompt_ids,
    generate_chat,
    generate_chat_batch,
    load_base_model,
    plan_batches,
)
from hybridops.tasks.behaviour.prompting import build_messages
from hybridops.tasks.behaviour.suite import load_suite
from hybridops.tasks.core.settings import Settings
from hybridops.tasks.knowledge.chunking import chunk_document
from hybridops.tasks.knowledge.documents import parse_document

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "examples" / "corpus"
SUITE = ROOT / "examples" / "behaviour_suite.yaml"
DISTRACTOR = "company/about.md"
CASES = 6  # + the 3 refusal cases: 9 prompts, batched several to a batch by the default budget


def corpus_chunks(doc_id: str, tokenizer) -> list:
    doc = parse_document(doc_id, (CORPUS / doc_id).read_bytes(), "test")
    return chunk_document(doc, lambda text: len(tokenizer.encode(text, add_special_tokens=False)))


def suite_conversations(tokenizer, settings: Settings, n: int = CASES) -> list[list[dict]]:
    """House prompts of the first n suite cases plus its refusal cases (no gold: distractor passages only)."""
    suite = load_suite(SUITE)
    cases = suite.cases[:n] + [c for c in suite.cases[n:] if c.refusal]
    distractor = corpus_chunks(DISTRACTOR, tokenizer)
    conversations = []
    for case in cases:
        gold = [chunk for doc_id in case.gold_docs for chunk in corpus_chunks(doc_id, tokenizer)]
        passages = oracle_passages(case.question, gold, settings.search_k - 1) + distractor[:1]
        if case.refusal:
            passages = distractor[:3]
        conversations.append(build_messages(case.question, passages))
    return conversations


@pytest.fixture(scope="module")
def llm():
    return load_base_model(Settings())


def test_batched_replies_equal_one_at_a_time_on_the_suite_prompts(llm) -> None:
    model, tokenizer = llm
    settings = Settings()
    conversations = suite_conversations(tokenizer, settings)
    sequential = [generate_chat(model, tokenizer, c, max_new_tokens=settings.max_new_tokens) for c in conversations]
    seen: list[int] = []
    batched = generate_chat_batch(model, tokenizer, conversations, settings.max_new_tokens,
                                  batch_tokens=settings.eval_batch_tokens,
                                  on_batch=lambda indices, replies: seen.extend(indices))
    lengths = [len(chat_prompt_ids(tokenizer, c)) for c in conversations]
    plan = plan_batches(lengths, settings.eval_batch_tokens, settings.max_new_tokens)
    assert max(len(b) for b in plan) > 1, "the default budget should batch these prompts"
    assert sorted(seen) == list(range(len(conversations)))
    differing = {i: (sequential[i], batched[i]) for i in range(len(conversations)) if sequential[i] != batched[i]}
    assert not differing, differing
    assert all(reply == reply.strip() for reply in batched)


def test_prompts_prefilled_in_groups_and_decoded_together_reply_as_one_at_a_time(llm, monkeypatch) -> None:
    """A batch whose prompts are prefilled in several length groups (their caches merged, left-padded, into one
    decode batch) gives exactly the one-at-a-time replies."""
    from hybridops.tasks.behaviour import llm as llm_module

    model, tokenizer = llm
    settings = Settings()
    conversations = suite_conversations(tokenizer, settings)
    sequential = [generate_chat(model, tokenizer, c, max_new_tokens=settings.max_new_tokens) for c in conversations]
    lengths = [len(chat_prompt_ids(tokenizer, c)) for c in conversations]
    monkeypatch.setattr(llm_module, "PREFILL_TOKENS", 2 * max(lengths))  # groups of at most two prompts
    groups = plan_batches(lengths, llm_module.PREFILL_TOKENS, 0)
    assert len(groups) >= 4 and len({max(lengths[i] for i in g) for g in groups}) > 1  # groups of several widths
    prefilled, batches = [], []
    real_prefill = llm_module.prefilled_cache
    monkeypatch.setattr(llm_module, "prefilled_cache", lambda *a: prefilled.append(real_prefill(*a)) or prefilled[-1])
    batched = generate_chat_batch(model, tokenizer, conversations, settings.max_new_tokens, batch_tokens=100_000,
                                  on_batch=lambda indices, replies: batches.append(indices))
    assert [sorted(b) for b in batches] == [list(range(len(conversations)))]  # one decode batch
    assert len(prefilled) == 1 and prefilled[0] is not None  # ... that went on from the merged group caches
    differing = {i: (sequential[i], batched[i]) for i in range(len(conversations)) if sequential[i] != batched[i]}
    assert not differing, differing


def test_finished_rows_are_cut_at_their_own_eos(llm) -> None:
    """A short reply batched with a long one: no padding or text after its EOS leaks into it."""
    model, tokenizer = llm
    short = [{"role": "user", "content": "Reply with the single word: yes"}]
    long = [{"role": "user", "content": "Write a long story about a mountain trail, a tent and a river."}]
    alone = [generate_chat(model, tokenizer, c, max_new_tokens=40) for c in (short, long)]
    together = generate_chat_batch(model, tokenizer, [short, long], 40, batch_tokens=10_000)
    assert together == alone
    assert "<|im_end|>" not in together[0] and "<|endoftext|>" not in together[0]

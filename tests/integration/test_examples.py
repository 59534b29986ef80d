"""The shipped example data stays true to the example corpus it is about (real tokenizer, real chunker).

The curated training examples (examples/training/*.jsonl) were written by hand: questions and ideal replies
over passages copied from the chunked corpus. If the corpus or the chunker changes, these tests say which
examples no longer show the model what production retrieval would show it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from hybridops.tasks.knowledge.chunking import chunk_document
from hybridops.tasks.knowledge.documents import parse_document
from hybridops.tasks.knowledge.embeddings import load_embedder
from hybridops.tasks.knowledge.rebuild import effective_max_tokens
from hybridops.tasks.core.settings import Settings

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def corpus_chunks(settings: Settings) -> dict[str, set[str]]:
    embedder = load_embedder(settings)
    max_tokens = effective_max_tokens(settings, embedder)
    chunks: dict[str, set[str]] = {}
    for path in sorted(p for p in (EXAMPLES / "corpus").rglob("*") if p.is_file()):
        doc_id = path.relative_to(EXAMPLES / "corpus").as_posix()
        doc = parse_document(doc_id, path.read_bytes(), "example")
        chunks[doc_id] = {c.text for c in chunk_document(doc, embedder.count_tokens, max_tokens, settings.chunk_overlap)}
    return chunks


def training_examples() -> list[dict]:
    return [json.loads(line) for path in sorted((EXAMPLES / "training").glob("*.jsonl"))
            for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def normalised(question: str) -> str:
    return re.sub(r"\W+", " ", question.lower()).strip()


def test_every_training_passage_is_a_chunk_production_retrieval_can_return() -> None:
    chunks = corpus_chunks(Settings())
    examples = training_examples()
    assert len(examples) >= 100
    stale = [(e["id"], p["doc_id"]) for e in examples for p in e["context"]
             if p["text"] not in chunks.get(p["doc_id"], set())]
    assert not stale, f"passages that are no longer chunks of the corpus: {stale[:10]}"


def test_the_held_out_behaviour_suite_is_never_trained_on() -> None:
    suite = yaml.safe_load((EXAMPLES / "behaviour_suite.yaml").read_text(encoding="utf-8"))
    held_out = {normalised(case["question"]) for case in suite["cases"]}
    trained = {normalised(e["question"]) for e in training_examples()}
    assert held_out and not held_out & trained
    refusals = [e for e in training_examples() if e["response"]["answer"] is None]
    assert refusals and all(e["response"]["sources"] == [] for e in refusals)

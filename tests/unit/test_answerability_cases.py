"""The answerability case sets (examples/answerability_cases.yaml, examples/transfer/answerability_cases.yaml):
the larger unseen sets bench/answerability.py judges a refusal rule on. A case that its corpus does not answer
as labelled, or a question the adapter trained on, would make every figure measured on them meaningless."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hybridops.tasks.behaviour.suite import load_suite
from hybridops.tasks.knowledge.documents import parse_document
from hybridops.tasks.knowledge.retrieval_eval import load_golden

from tests.example_support import gold_text_keywords, normalise

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
CASE_SETS = {  # case set -> (its corpus, the suite and golden set of that corpus)
    EXAMPLES / "answerability_cases.yaml": (EXAMPLES / "corpus", EXAMPLES / "behaviour_suite.yaml",
                                            EXAMPLES / "golden_retrieval.jsonl"),
    EXAMPLES / "transfer" / "answerability_cases.yaml": (EXAMPLES / "transfer" / "corpus",
                                                         EXAMPLES / "transfer" / "behaviour_suite.yaml",
                                                         EXAMPLES / "transfer" / "golden_retrieval.jsonl"),
}


@pytest.mark.parametrize("case_file", CASE_SETS, ids=lambda p: p.parent.name)
def test_answerable_cases_are_answered_by_their_gold_documents(case_file: Path) -> None:
    corpus = CASE_SETS[case_file][0]
    suite = load_suite(case_file)
    answerable = [c for c in suite.cases if not c.refusal]
    assert len(answerable) >= 20 and sum(c.refusal for c in suite.cases) >= 15
    for case in answerable:
        assert case.gold_docs and case.expected_keywords, case.id
        gold_text = " ".join(parse_document(d, (corpus / d).read_bytes(), "v1").text for d in case.gold_docs)
        result = gold_text_keywords(case, gold_text)
        assert result is not None and result.passed, f"{case.id}: {result}"


@pytest.mark.parametrize("case_file", CASE_SETS, ids=lambda p: p.parent.name)
def test_questions_are_new_to_training_the_suites_and_the_golden_sets(case_file: Path) -> None:
    ours = [normalise(c.question) for c in load_suite(case_file).cases]
    assert len(set(ours)) == len(ours)
    seen = set()
    for path in sorted((EXAMPLES / "training").glob("*.jsonl")):
        seen |= {normalise(json.loads(line)["question"]) for line in path.read_text().splitlines() if line.strip()}
    for _corpus, suite_file, golden_file in CASE_SETS.values():
        seen |= {normalise(c.question) for c in load_suite(suite_file).cases}
        seen |= {normalise(q.question) for q in load_golden(golden_file)}
    assert not set(ours) & seen

"""The out-of-domain example set (examples/transfer): a corpus, suite and golden file that hold together, parse,
pass the documents contract and share nothing with the in-domain corpus or the training examples."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest
import yaml
from hybridops.tasks.behaviour.suite import Suite, load_suite
from hybridops.tasks.core.settings import Settings
from hybridops.tasks.knowledge.document_contract import (
    make_candidate,
    validate_documents,
)
from hybridops.tasks.knowledge.documents import Document, parse_document
from hybridops.tasks.knowledge.retrieval_eval import load_golden

from tests.example_support import gold_text_keywords, normalise

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TRANSFER = EXAMPLES / "transfer"
CORPUS = TRANSFER / "corpus"
IN_DOMAIN = EXAMPLES / "corpus"
SHINGLE = 8  # words: a shared run this long means a shared sentence, i.e. a shared fact


def files(root: Path) -> dict[str, Path]:
    """doc id (path relative to the corpus root, as `hybridops land` keys it) -> file."""
    return {p.relative_to(root).as_posix(): p for p in sorted(root.rglob("*")) if p.is_file()}


def shingles(text: str) -> set[tuple[str, ...]]:
    words = re.findall(r"[a-z0-9]+", text.lower())
    return {tuple(words[i:i + SHINGLE]) for i in range(len(words) - SHINGLE + 1)}


@pytest.fixture(scope="module")
def suite() -> Suite:
    return load_suite(TRANSFER / "behaviour_suite.yaml")


@pytest.fixture(scope="module")
def documents() -> dict[str, Document]:
    return {doc_id: parse_document(doc_id, path.read_bytes(), "v1") for doc_id, path in files(CORPUS).items()}


@pytest.fixture(scope="module")
def in_domain() -> dict[str, Document]:
    return {doc_id: parse_document(doc_id, path.read_bytes(), "v1") for doc_id, path in files(IN_DOMAIN).items()}


def test_corpus_is_a_small_mixed_multi_folder_knowledge_base(documents: dict[str, Document]) -> None:
    assert 10 <= len(documents) <= 14
    assert {doc_id.split("/")[0] for doc_id in documents} == {"fleet", "hr", "it", "finance", "safety"}
    extensions = Counter(Path(doc_id).suffix for doc_id in documents)
    assert extensions[".md"] >= 5 and extensions[".txt"] >= 2 and extensions[".html"] == 1
    for doc_id, doc in documents.items():
        words = len(doc.text.split())
        assert 80 <= words <= 300, f"{doc_id}: {words} words"
        assert doc.title, doc_id
        if doc_id.endswith(".md"):
            front = yaml.safe_load((CORPUS / doc_id).read_text(encoding="utf-8").split("---\n")[1])
            assert front.get("title") == doc.title and front.get("tags"), f"{doc_id}: front matter title and tags"


def test_twin_file_names_in_different_folders(documents: dict[str, Document]) -> None:
    by_name: dict[str, list[str]] = {}
    for doc_id in documents:
        by_name.setdefault(Path(doc_id).name, []).append(doc_id)
    twins = {name: ids for name, ids in by_name.items() if len(ids) > 1}
    assert len(twins) >= 2, twins
    assert {"leave.md", "laptops.md"} <= set(twins)


def test_every_document_passes_the_documents_contract() -> None:
    settings = Settings(_env_file=None)  # default limits
    result = validate_documents(
        [make_candidate(doc_id, path.read_bytes(), "v1", settings) for doc_id, path in files(CORPUS).items()], settings
    )
    assert result.rejected == []
    assert sorted(d.doc_id for d in result.passed) == sorted(files(CORPUS))


def test_suite_has_every_kind_of_case(suite: Suite) -> None:
    assert suite.name != load_suite(EXAMPLES / "behaviour_suite.yaml").name
    assert 16 <= len(suite.cases) <= 20
    refusals = [c for c in suite.cases if c.refusal]
    answerable = [c for c in suite.cases if not c.refusal]
    assert len(refusals) >= 3
    assert all(not c.gold_docs and not c.expected_keywords for c in refusals)
    assert all(c.gold_docs for c in answerable)
    assert sum(bool(c.expected_keywords) for c in answerable) >= 10
    named = {name for c in suite.cases for name in suite.checks_for(c)}
    assert {"json_format", "sources_valid", "cites_gold", "grounded", "refuses_without_context"} <= named


def test_gold_docs_exist_and_hold_the_expected_keywords(suite: Suite, documents: dict[str, Document]) -> None:
    for case in suite.cases:
        missing = [d for d in case.gold_docs if d not in documents]
        assert not missing, f"{case.id}: gold docs not in the corpus: {missing}"
        if case.expected_keywords:
            result = gold_text_keywords(case, " ".join(documents[d].text for d in case.gold_docs))
            assert result is not None and result.passed, f"{case.id}: {result}"


def test_some_answers_live_in_a_document_with_a_twin_file_name(suite: Suite, documents: dict[str, Document]) -> None:
    names = Counter(Path(doc_id).name for doc_id in documents)
    twin_cases = [c for c in suite.cases if any(names[Path(d).name] > 1 for d in c.gold_docs)]
    assert len(twin_cases) >= 4
    assert len({d for c in twin_cases for d in c.gold_docs}) >= 4  # both sides of at least two pairs


def test_golden_retrieval_has_one_line_per_answerable_case(suite: Suite, documents: dict[str, Document]) -> None:
    golden = load_golden(TRANSFER / "golden_retrieval.jsonl")
    expected = [(c.question, list(c.gold_docs)) for c in suite.cases if not c.refusal]
    assert [(q.question, q.gold_doc_ids) for q in golden] == expected
    assert all(d in documents for q in golden for d in q.gold_doc_ids)


def test_nothing_is_shared_with_the_in_domain_corpus(
    documents: dict[str, Document], in_domain: dict[str, Document]
) -> None:
    assert not set(documents) & set(in_domain)
    ours = {doc_id: shingles(doc.text) for doc_id, doc in documents.items()}
    theirs = set().union(*(shingles(doc.text) for doc in in_domain.values()))
    shared = {doc_id: sorted(s & theirs)[:3] for doc_id, s in ours.items() if s & theirs}
    assert not shared, f"sentences shared with examples/corpus: {shared}"
    in_domain_text = " ".join(doc.text for doc in in_domain.values()).lower()
    assert "northwind" not in " ".join(doc.text for doc in documents.values()).lower()
    for name in ("brightwater", "peoplehub", "techdesk", "ledgerly", "roadpay", "tunnelgate", "keybox", "safetrack"):
        assert name not in in_domain_text


def test_transfer_questions_were_never_trained_on_or_asked_in_domain(suite: Suite) -> None:
    ours = {normalise(c.question) for c in suite.cases}
    ours |= {normalise(q.question) for q in load_golden(TRANSFER / "golden_retrieval.jsonl")}
    trained = set()
    training_files = sorted((EXAMPLES / "training").glob("*.jsonl")) + sorted(EXAMPLES.glob("training*.jsonl"))
    assert training_files
    for path in training_files:
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                trained.add(normalise(json.loads(line)["question"]))
    assert not ours & trained
    in_domain = {normalise(c.question) for c in load_suite(EXAMPLES / "behaviour_suite.yaml").cases}
    in_domain |= {normalise(q.question) for q in load_golden(EXAMPLES / "golden_retrieval.jsonl")}
    assert not ours & in_domain
    training_text = " ".join(p.read_text(encoding="utf-8").lower() for p in training_files)
    assert "brightwater" not in training_text  # not even a passage of the transfer corpus


def test_refusal_cases_are_not_answered_anywhere_in_the_corpus(suite: Suite, documents: dict[str, Document]) -> None:
    # The one topic word each refusal question hinges on: it must not occur in any document.
    absent = {"refuse-ceo-salary": "chief executive", "refuse-dental-plan": "dental",
              "refuse-depot-wifi": "wi-fi", "refuse-dog-in-cab": "dog"}
    assert {c.id for c in suite.cases if c.refusal} == set(absent)
    text = " ".join(doc.text.lower() for doc in documents.values())
    for case_id, word in absent.items():
        assert not re.search(rf"\b{re.escape(word)}\b", text), f"{case_id}: {word!r} occurs in the corpus"

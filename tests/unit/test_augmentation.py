"""Derived training examples teach copying from the context: the cited passage is found by reading the prompt."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hybridops.tasks.behaviour.augmentation import augment, refusal_twin, rename_ids, shuffled_twin
from hybridops.tasks.behaviour.checks import content_words
from hybridops.tasks.behaviour.prompting import model_reply, parse_reply
from hybridops.tasks.behaviour.training_data import ContextPassage, TrainingExample, TrainingRecord

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "training"


@pytest.fixture(scope="module")
def shipped() -> list[TrainingExample]:
    """The shipped training examples as the build resolves them (they bring their own context)."""
    examples = []
    for path in sorted(EXAMPLES.glob("*.jsonl")):
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            record = TrainingRecord.model_validate_json(line)
            examples.append(TrainingExample(id=record.id, origin=f"landing:{path.name}#L{number}",
                                            question=record.question, passages=record.context,
                                            response=json.dumps(record.response)))
    return examples


def cited_texts(example: TrainingExample) -> list[str]:
    """The texts of the passages the reply cites, found the way the model must: through the taught numbers."""
    reply = json.loads(example.response)
    taught = model_reply(reply["answer"], reply["sources"], example.passages)
    sources = parse_reply(taught, example.passages).sources
    return sorted(p.text for p in example.passages if p.doc_id in sources)


def test_a_shuffled_twin_teaches_the_same_answer_from_other_ids_and_order(shipped) -> None:
    moved = 0
    for example in shipped:
        twin = shuffled_twin(example, seed=0)
        assert twin.question == example.question and twin.parent == example.id
        assert json.loads(twin.response)["answer"] == json.loads(example.response)["answer"]
        assert cited_texts(twin) == cited_texts(example)  # the taught number points at the same text
        assert not {p.doc_id for p in twin.passages} & {p.doc_id for p in example.passages}
        moved += [p.text for p in twin.passages] != [p.text for p in example.passages]
    assert moved >= 0.6 * len(shipped)  # the answer's position varies


def test_renamed_ids_are_unique_and_sometimes_share_a_file_name() -> None:
    import random

    ids = ["hr/leave.md", "it/laptops.md", "fleet/fuel-cards.md", "policies/refunds.md"]
    shared = 0
    for seed in range(200):
        renamed = rename_ids(ids, random.Random(seed))
        assert len(set(renamed.values())) == len(ids) and all(renamed[i] != i for i in ids)
        names = [Path(n).name for n in renamed.values()]
        shared += len(set(names)) < len(names)
    assert 10 < shared < 190  # twin file names in other folders occur, but not always


def test_a_refusal_twin_lacks_the_answering_passages_and_is_taught_as_a_refusal(shipped) -> None:
    answerable = [e for e in shipped if json.loads(e.response)["answer"] is not None]
    twins = [(e, refusal_twin(e, seed=0)) for e in answerable]
    made = [(e, t) for e, t in twins if t is not None]
    assert len(made) >= len(answerable) // 3
    for example, twin in made:
        cited = set(json.loads(example.response)["sources"])
        assert json.loads(twin.response) == {"answer": None, "sources": []}
        assert twin.passages and not cited & {p.doc_id for p in twin.passages}


def test_no_refusal_twin_when_the_rest_still_holds_the_answer() -> None:
    passages = [ContextPassage(doc_id="a.md", text="Returns are accepted within 45 days."),
                ContextPassage(doc_id="b.md", text="Members: returns accepted within 45 days of delivery.")]
    example = TrainingExample(id="x", origin="landing:x#L1", question="How long can I return items?",
                              passages=passages, response=model_reply("Within 45 days.", ["a.md"], passages))
    example = example.model_copy(update={"response": json.dumps({"answer": "Within 45 days", "sources": ["a.md"]})})
    assert set(content_words("Within 45 days")) <= set(content_words(passages[1].text))
    assert refusal_twin(example, seed=0) is None


def test_refusal_twins_keep_refusals_a_minority_and_the_augmentation_is_deterministic(shipped) -> None:
    def refusals(examples) -> int:
        return sum(json.loads(e.response)["answer"] is None for e in examples)

    derived = augment(shipped, seed=0, refusal_share=0.4)
    kinds = [e.origin.split(":")[1] for e in derived]
    assert kinds.count("shuffled") == len(shipped) and kinds.count("without_answer") > 0
    assert refusals(shipped + derived) / len(shipped + derived) <= 0.4
    assert [e.id for e in augment(shipped, seed=0, refusal_share=0.4)] == [e.id for e in derived]
    assert augment(shipped, seed=1)[0].passages != derived[0].passages
    # the people's own refusals already exceed a 20% share: no twins, and none of theirs is dropped
    strict = augment(shipped, seed=0, refusal_share=0.2)
    assert len(strict) == len(shipped) and refusals(strict) == refusals(shipped)

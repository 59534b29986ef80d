"""Training examples that teach copying, not memorising.

An adapter trained only on the examples people wrote learns their corpus: its doc ids, its folders, where the
answer usually sits. Then it shortens `hr/leave.md` to `leave.md` or refuses when the answer is the first
passage of a corpus it never saw. Two derived kinds of example, made from every accepted one, teach the
behaviour instead:
- `shuffled`: the same lesson with the passages in another order and every doc id moved to other folders
  (sometimes two documents share a file name), so the only way to cite right is to read the prompt;
- `without_answer`: an answerable question with the passages it cites taken out, taught as a refusal, so
  the model learns that refusing depends on the context, not on the question. Their number is capped so
  refusals stay a minority of the data (`refusal_share`): too many and the model refuses what it could answer.

Derived examples carry their parent's id (`parent`): they land in the parent's split, so validation never sees
a twin of a training example. Pure functions, seeded by the example id: the same input gives the same data.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Sequence
from pathlib import PurePosixPath
from typing import Protocol, TypeVar

from hybridops.tasks.behaviour.checks import content_words
from hybridops.tasks.behaviour.prompting import format_reply

# Folders a knowledge base might have; ids are re-homed among them (and at the root).
FOLDERS = ("", "hr", "it", "ops", "fleet", "finance", "legal", "support", "policies", "kb", "wiki", "team",
           "docs/2024", "handbook", "customers", "internal", "archive", "sales")
# A refusal twin is made only when the remaining passages miss most of the answer's content words.
MAX_ANSWER_OVERLAP = 0.5
DEFAULT_REFUSAL_SHARE = 0.3


class Example(Protocol):
    """What augmentation needs of a training example (training_data.TrainingExample satisfies it)."""

    id: str
    origin: str
    passages: Sequence
    response: str

    def model_copy(self, *, update: dict) -> Example: ...


E = TypeVar("E", bound=Example)


def augment(examples: Sequence[E], seed: int, refusal_share: float = DEFAULT_REFUSAL_SHARE) -> list[E]:
    """The derived examples of `examples` (not including them): a shuffled twin of each, plus refusal twins of
    answerable ones up to `refusal_share` of all examples."""
    shuffled = [shuffled_twin(e, seed) for e in examples]
    answerable = [e for e in examples if _reply(e)["answer"] is not None]
    refusals = len(examples) - len(answerable)
    total = 2 * len(examples)
    # refusals (2 per refusal example, 1 per twin) stay <= refusal_share of the data: solve for the twins
    room = int((refusal_share * total - 2 * refusals) / (1 - refusal_share)) if refusal_share < 1 else len(answerable)
    candidates = sorted(answerable, key=lambda e: _digest(seed, "without_answer", e.id))
    twins = [t for t in (refusal_twin(e, seed) for e in candidates) if t is not None][: max(0, room)]
    return shuffled + twins


def shuffled_twin(example: E, seed: int) -> E:
    """The same question and reply with the passages in another order and every doc id in other folders."""
    rng = random.Random(_digest(seed, "shuffled", example.id))
    renamed = rename_ids([p.doc_id for p in example.passages], rng)
    passages = [p.model_copy(update={"doc_id": renamed[p.doc_id]}) for p in example.passages]
    rng.shuffle(passages)
    reply = _reply(example)
    response = format_reply(reply["answer"], [renamed[s] for s in reply["sources"]])
    return _derived(example, "shuffled", passages, response)


def refusal_twin(example: E, seed: int) -> E | None:
    """The question without the passages its answer cites, taught as a refusal; None when what remains could
    still answer it (or nothing remains)."""
    reply = _reply(example)
    cited = set(reply["sources"])
    rest = [p for p in example.passages if p.doc_id not in cited]
    words = set(content_words(reply["answer"] or ""))
    if not rest or not words:
        return None
    remaining = set(content_words(" ".join(p.text for p in rest)))
    if len(words & remaining) / len(words) >= MAX_ANSWER_OVERLAP:
        return None
    rng = random.Random(_digest(seed, "without_answer", example.id))
    rng.shuffle(rest)
    return _derived(example, "without_answer", rest, format_reply(None, []))


def rename_ids(doc_ids: Sequence[str], rng: random.Random) -> dict[str, str]:
    """Each distinct doc id -> a new one, unique within the example and none of its old ids. The file name is
    kept, or (one time in four) borrowed from another doc of the example, so same-name files in two folders occur."""
    distinct = list(dict.fromkeys(doc_ids))
    names = [PurePosixPath(d).name for d in distinct]
    renamed: dict[str, str] = {}
    for doc_id, name in zip(distinct, names):
        if len(names) > 1 and rng.random() < 0.25:
            name = rng.choice(names)
        for _attempt in range(50):
            folder = rng.choice(FOLDERS)
            candidate = f"{folder}/{name}" if folder else name
            if candidate not in renamed.values() and candidate not in distinct:
                break
        else:  # every folder taken: a numbered one is always free
            candidate = f"f{len(renamed)}/{name}"
        renamed[doc_id] = candidate
    return renamed


def _derived(parent: E, kind: str, passages: list, response: str) -> E:
    return parent.model_copy(update={
        "id": f"{parent.id}~{kind}", "origin": f"augmented:{kind}:{parent.origin}", "passages": passages,
        "response": response, "parent": parent.id,
    })


def _reply(example: Example) -> dict:
    return json.loads(example.response)


def _digest(seed: int, kind: str, example_id: str) -> int:
    return int(hashlib.sha256(f"{seed}:{kind}:{example_id}".encode()).hexdigest()[:16], 16)

"""Is the behaviour learnt yet? A few held-out examples answered by the adapter in training, judged cheaply.

Promotion judges format and citations first; so does this probe, on examples of the validation split (never
trained on), every few steps: does the reply parse as house JSON, and does an answerable example get an
answer citing the target's passage (so a model that refuses everything never passes)? Training stops once
both agree with the targets often enough (TrainConfig.min_steps, probe_every, stop_agreement), instead of
always running the maximum number of steps. Refusal agreement is measured and recorded with the adapter but
does not stop training. Off by default (settings.train_min_steps): measured on the shipped data, the 135M
adapter cites passage 1 of a held-out example whatever the passage order (citation agreement 0.40, format
0.83 at 45 steps), so the probe would never stop it; it stays as the measurement, and as the switch for a
model that does learn to locate the answer.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from hybridops.tasks.behaviour.llm import generate_batch
from hybridops.tasks.behaviour.prompting import parse_reply, passage_number

if TYPE_CHECKING:
    from datasets import Dataset


@dataclass(frozen=True)
class ProbeCase:
    """One held-out example: its prompt tokens and the reply it teaches (answer, cited passage numbers)."""

    prompt: list[int]
    answer: str | None
    sources: tuple[int, ...]


class ProbeScore(BaseModel):
    """Agreement of the adapter's replies with the targets at one step."""

    step: int
    n: int
    format_ok: float
    refusals_agree: float  # answered when the target answers, refused when it refuses
    citations_agree: float  # answers citing a passage the target cites (over answerable targets)

    def met(self, threshold: float) -> bool:
        """The cheap checks promotion starts from: house format, and answers citing the right passage."""
        return self.n > 0 and min(self.format_ok, self.citations_agree) >= threshold


def probe_cases(dataset: Dataset, tokenizer: Any, n: int, seed: int) -> list[ProbeCase]:
    """Up to `n` examples of the split, refusals and answers mixed as in the split, chosen by `seed`."""
    cases = []
    for row in dataset:
        start = next((i for i, label in enumerate(row["labels"]) if label != -100), None)
        if start is None:
            continue
        try:
            target = json.loads(tokenizer.decode(row["input_ids"][start:], skip_special_tokens=True).strip())
            answer, numbers = target["answer"], [passage_number(s) for s in target["sources"]]
        except (ValueError, TypeError, KeyError, AttributeError):  # a template that adds text to the reply
            continue
        cases.append(ProbeCase(prompt=list(row["input_ids"][:start]), answer=answer,
                               sources=tuple(x for x in numbers if x is not None)))
    random.Random(seed).shuffle(cases)
    return cases[:n]


def score(step: int, cases: Sequence[ProbeCase], replies: Sequence[str]) -> ProbeScore:
    """The three agreements of `replies` with their cases' targets (pure)."""
    parsed = [parse_reply(raw) for raw in replies]
    formatted = [r.format_ok for r in parsed]
    refusals = [ok and (r.answer is None) == (c.answer is None) for c, r, ok in zip(cases, parsed, formatted)]
    answerable = [(c, r) for c, r in zip(cases, parsed) if c.answer is not None]
    cited = [r.format_ok and r.answer is not None
             and bool({passage_number(s) for s in r.sources} & set(c.sources)) for c, r in answerable]

    def share(values: list[bool]) -> float:  # nothing to judge is not agreement: no early stop on it
        return round(sum(values) / len(values), 3) if values else 0.0

    return ProbeScore(step=step, n=len(cases), format_ok=share(formatted), refusals_agree=share(refusals),
                      citations_agree=share(cited))


def probe(model: Any, tokenizer: Any, cases: Sequence[ProbeCase], step: int, max_new_tokens: int,
          batch_tokens: int = 8192) -> ProbeScore:
    """Greedy replies of the model (as it is now) to the cases' prompts, as long as an eval allows them
    (a shorter limit would cut valid but wordier answers and read them as format failures), scored; training
    mode is restored."""
    was_training = model.training
    model.eval()
    try:
        replies = generate_batch(model, tokenizer, [c.prompt for c in cases], max_new_tokens, batch_tokens)
    finally:
        model.train(was_training)
    return score(step, cases, replies)

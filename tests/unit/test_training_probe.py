"""The early-stopping probe judges held-out replies the way promotion will: format, refusals, citations."""

from __future__ import annotations

import json

from hybridops.tasks.behaviour.training_probe import ProbeCase, probe_cases, score

ANSWER = ProbeCase(prompt=[1, 2], answer="45 days", sources=(2,))
REFUSAL = ProbeCase(prompt=[1, 3], answer=None, sources=())


def test_agreement_counts_format_refusals_and_cited_passages() -> None:
    perfect = score(16, [ANSWER, REFUSAL], ['{"answer": "45", "sources": [2]}', '{"answer": null, "sources": []}'])
    assert (perfect.format_ok, perfect.refusals_agree, perfect.citations_agree) == (1.0, 1.0, 1.0)
    assert perfect.met(0.9)

    wrong = score(16, [ANSWER, REFUSAL], ['{"answer": "45", "sources": ["[1]"]}', '{"answer": "x", "sources": [1]}'])
    assert wrong.format_ok == 1.0 and wrong.refusals_agree == 0.5 and wrong.citations_agree == 0.0
    assert not wrong.met(0.9)
    answers_all = score(16, [ANSWER, REFUSAL], ['{"answer": "45", "sources": [2]}', '{"answer": "x", "sources": [1]}'])
    assert answers_all.refusals_agree == 0.5 and answers_all.met(0.9)  # refusals are recorded, not waited for

    refusing = score(16, [ANSWER], ['{"answer": null, "sources": []}'])  # a false refusal cites nothing
    assert refusing.refusals_agree == 0.0 and refusing.citations_agree == 0.0
    prose = score(16, [ANSWER], ["45 days [2]"])
    assert prose.format_ok == 0.0 and not prose.met(0.0 + 1e-9)


def test_no_probe_cases_never_stop_training() -> None:
    assert not score(16, [], []).met(0.0)
    only_refusals = score(16, [REFUSAL], ['{"answer": null, "sources": []}'])  # a model that refuses everything
    assert only_refusals.citations_agree == 0.0 and not only_refusals.met(0.9)


class Words:
    """A tokenizer stand-in: one token per character."""

    def decode(self, ids, skip_special_tokens=True) -> str:
        return "".join(chr(i) for i in ids if i)


def test_cases_are_the_labelled_replies_of_the_split() -> None:
    reply = json.dumps({"answer": "45 days", "sources": [3]})
    row = {"input_ids": [7, 8, 9, *map(ord, reply)], "labels": [-100, -100, -100, *map(ord, reply)]}
    unlabelled = {"input_ids": [1, 2], "labels": [-100, -100]}
    prose = {"input_ids": [7, *map(ord, "Sure: 45")], "labels": [-100, *map(ord, "Sure: 45")]}  # skipped
    [case] = probe_cases([row, unlabelled, prose], Words(), n=5, seed=0)
    assert case == ProbeCase(prompt=[7, 8, 9], answer="45 days", sources=(3,))

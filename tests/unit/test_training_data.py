"""Training data: contract, quarantine, prompt/label masking, deterministic split and fingerprint.

A tiny in-memory word-level tokenizer with a ChatML template stands in for the model's tokenizer here (plain
data, no model files); tests/integration/test_training.py repeats the masking check with the real one.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hybridops.tasks.core.object_store import FolderStore
from hybridops.tasks.behaviour.prompting import SYSTEM_PROMPT, build_messages, cite_by_number, format_reply
from hybridops.tasks.core.quarantine import list_quarantined, read_copy
from hybridops.tasks.core.settings import Settings
from hybridops.tasks.behaviour.training_data import (
    IGNORE_INDEX,
    ContextPassage,
    TrainingExample,
    build_training_data,
    contract_violations,
    encode,
    in_validation,
)

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(scope="module")
def tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    texts = [SYSTEM_PROMPT, CHATML, "system user assistant Context: Question: (doc: ) (no passages)"]
    for path in sorted((EXAMPLES / "training").glob("*.jsonl")) + [EXAMPLES / "training_corrupted.jsonl"]:
        texts.append(path.read_text())
    texts += [format_reply("45 days", ["policies/refunds.md"]), format_reply(None, [])]
    splitter = pre_tokenizers.Whitespace()
    words = {piece for text in texts for piece, _ in splitter.pre_tokenize_str(text)}
    words -= {"<|", "|>"}
    vocab = {w: i for i, w in enumerate(["[UNK]", "[PAD]", "<|im_start|>", "<|im_end|>", *sorted(words)])}
    core = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="[UNK]", pad_token="[PAD]",
                                  eos_token="<|im_end|>", additional_special_tokens=["<|im_start|>"])
    tok.chat_template = CHATML
    return tok


@pytest.fixture
def cfg(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home", _env_file=None, train_validation_fraction=0.2)


def example(eid="e1", question="What is the return window?", response=None, passages=None) -> TrainingExample:
    passages = passages if passages is not None else [
        ContextPassage(doc_id="policies/refunds.md", text="Most items can be returned within 45 days."),
        ContextPassage(doc_id="care/tent-care.html", text="Dry your tent within 24 hours."),
    ]
    response = response if response is not None else format_reply("45 days", ["policies/refunds.md"])
    return TrainingExample(id=eid, origin=f"landing:_training/x.jsonl#L{eid}", question=question,
                           passages=passages, response=response)


def test_contract_accepts_house_replies_and_names_each_violation() -> None:
    good = example("ok")
    refusal = example("refusal", response=format_reply(None, []))
    cases = [
        good,
        refusal,
        example("empty-question", question="   "),
        example("prose", response="The answer is 45 days."),
        example("extra-key", response=json.dumps({"answer": "45", "sources": [], "confidence": 1})),
        example("wrong-source", response=format_reply("45 days", ["legal/privacy-policy.html"])),
        example("uncited", response=format_reply("45 days", [])),
        example("refusal-citing", response=format_reply(None, ["policies/refunds.md"])),
        example("long", response=format_reply("x" * 401, ["policies/refunds.md"])),
    ]
    failures = contract_violations(cases)
    codes = {cases[row].id: sorted(r.split(":")[0] for r in reasons) for row, reasons in failures.items()}
    assert codes == {
        "empty-question": ["question_length"],
        "prose": ["response_format"],
        "extra-key": ["response_format"],
        "wrong-source": ["sources_not_in_context"],
        "uncited": ["citation_mismatch"],
        "refusal-citing": ["citation_mismatch"],
        "long": ["answer_length"],
    }


def test_labels_mask_the_whole_production_prompt(tokenizer) -> None:
    item = example()
    encoded = encode(tokenizer, item)
    prompt = tokenizer.apply_chat_template(build_messages(item.question, item.passages), tokenize=False,
                                           add_generation_prompt=True)
    n_prompt = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    assert len(encoded["labels"]) == len(encoded["input_ids"])
    assert encoded["labels"][:n_prompt] == [IGNORE_INDEX] * n_prompt
    assert encoded["input_ids"][:n_prompt] == tokenizer(prompt, add_special_tokens=False)["input_ids"]
    target = [t for t in encoded["labels"] if t != IGNORE_INDEX]
    assert target == encoded["input_ids"][n_prompt:]
    reply = tokenizer.decode(target).replace(" ", "")
    assert reply.startswith('{"answer":"45days","sources":')
    [number] = cite_by_number(["policies/refunds.md"], item.passages)  # taught the passage number, not the path
    assert str(number) in reply.split('"sources":')[1] and "refunds" not in reply
    assert "<|im_end|>" in reply  # the model learns to stop


def test_split_is_seeded_by_id_and_independent_of_order() -> None:
    ids = [f"ex-{i}" for i in range(400)]
    first = {i for i in ids if in_validation(i, seed=0, fraction=0.2)}
    assert first == {i for i in reversed(ids) if in_validation(i, seed=0, fraction=0.2)}
    assert 50 < len(first) < 110  # ~20 %
    assert first != {i for i in ids if in_validation(i, seed=1, fraction=0.2)}


def land_lines(landing: FolderStore, name: str, rows: list) -> None:
    lines = [r if isinstance(r, str) else json.dumps(r) for r in rows]
    landing.put(f"_training/{name}", ("\n".join(lines) + "\n").encode())


def test_build_quarantines_bad_examples_and_fingerprints_what_trains(cfg, tokenizer) -> None:
    landing, store = FolderStore(cfg.landing_uri), FolderStore(cfg.store_uri)
    landing.put("_training/grounded_answers.jsonl", (EXAMPLES / "training" / "grounded_answers.jsonl").read_bytes())
    bad = [
        "{not json",
        {"question": "q?", "context": [{"doc_id": "a", "text": "t"}], "response": "Sure! 5."},
        {"question": "q?", "context": [{"doc_id": "a", "text": "t"}], "response": {"answer": "5", "sources": ["b"]}},
        {"question": "q?", "response": {"answer": None, "sources": []}, "unknown_field": 1},
    ]
    land_lines(landing, "bad.jsonl", bad)
    landing.put("_training/notes.txt", b"not a training file")

    data = build_training_data(cfg, include_interactions=False, tokenizer=tokenizer)
    good_count = len((EXAMPLES / "training" / "grounded_answers.jsonl").read_text().splitlines())
    assert len(data.accepted) == good_count and data.origins == {"landing": good_count}
    assert len(data.train) + len(data.validation) == good_count + data.counts["augmented"]
    assert data.augmented["shuffled"] == good_count and data.augmented["without_answer"] > 0
    assert 0 < len(data.validation) < len(data.train)
    parents = {i.split("~")[0] for i in data.validation["id"]}  # a derived example shares its parent's split
    assert not parents & {i.split("~")[0] for i in data.train["id"]}
    held = {e.item_id: e for e in list_quarantined(store, "training")}
    assert set(held) == {"_training/bad.jsonl#L1", "_training/bad.jsonl#L2", "_training/bad.jsonl#L3",
                         "_training/bad.jsonl#L4", "_training/notes.txt"}
    assert held["_training/bad.jsonl#L2"].reasons[0].startswith("response_format")
    assert held["_training/bad.jsonl#L3"].reasons[0].startswith("sources_not_in_context")
    assert "unknown_field" in held["_training/bad.jsonl#L4"].reasons[0]
    assert read_copy(store, held["_training/bad.jsonl#L1"]) == b"{not json"  # exactly what the user gave

    again = build_training_data(cfg, include_interactions=False, tokenizer=tokenizer)
    assert again.fingerprint == data.fingerprint
    assert list(again.validation["id"]) == list(data.validation["id"])

    # Fixing the bad file releases its holds; a changed example changes the fingerprint.
    land_lines(landing, "bad.jsonl", [{"id": "fixed", "question": "What is the return window?",
                                       "context": [{"doc_id": "policies/refunds.md", "text": "45 days"}],
                                       "response": {"answer": "45 days", "sources": ["policies/refunds.md"]}}])
    landing.delete("_training/notes.txt")
    fixed = build_training_data(cfg, include_interactions=False, tokenizer=tokenizer)
    assert list_quarantined(store, "training") == []
    assert fixed.fingerprint != data.fingerprint
    assert len(fixed.accepted) == good_count + 1


def test_duplicate_ids_are_held_not_merged(cfg, tokenizer) -> None:
    landing, store = FolderStore(cfg.landing_uri), FolderStore(cfg.store_uri)
    row = {"id": "same", "question": "What is the return window?",
           "context": [{"doc_id": "policies/refunds.md", "text": "45 days"}],
           "response": {"answer": "45 days", "sources": ["policies/refunds.md"]}}
    land_lines(landing, "a.jsonl", [row, row])
    data = build_training_data(cfg, include_interactions=False, tokenizer=tokenizer)
    assert [e.id for e in data.accepted] == ["same"]
    [held] = list_quarantined(store, "training")
    assert held.item_id == "_training/a.jsonl#L2" and held.reasons[0].startswith("duplicate_id")


def test_training_examples_are_held_out_from_the_behaviour_suite() -> None:
    from hybridops.tasks.behaviour.suite import load_suite

    suite = {c.question.strip().lower() for c in load_suite(EXAMPLES / "behaviour_suite.yaml").cases}
    questions = [json.loads(line)["question"].strip().lower()
                 for path in (EXAMPLES / "training").glob("*.jsonl") for line in path.read_text().splitlines()]
    assert len(questions) >= 64
    assert not suite & set(questions)

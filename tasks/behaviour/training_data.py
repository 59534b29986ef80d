"""Training examples -> contract -> tokenised SFT dataset with the exact production prompt (tasks/prompting.py).

Sources: JSONL files in the landing zone's `_training/` area, human-approved/corrected interactions, and
examples earlier adapters were trained on (tasks/behaviour/replay.py), so nothing is forgotten.
Bad examples are quarantined (kind "training") with their reasons, never dropped silently.

JSONL record: {"id": str?, "question": str, "context": [{"doc_id", "text"}] | "context_doc_ids": [doc_id],
"response": {"answer": str|null, "sources": [doc_id]} or that JSON as a string}. Doc ids without passages
are placed into the production retrieval context (hybrid top-k, the listed docs guaranteed).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, ValidationError

from hybridops.tasks.behaviour.augmentation import augment
from hybridops.tasks.behaviour.interactions import LoggedInteraction, interactions_with_feedback
from hybridops.tasks.behaviour.llm import load_base_model
from hybridops.tasks.behaviour.prompting import build_messages, format_reply, model_reply
from hybridops.tasks.behaviour.replay import ReplayMix, replay_candidates
from hybridops.tasks.core.contracts import load_suite, validate_frame
from hybridops.tasks.core.object_store import ObjectStore, artifact_store, landing_zone
from hybridops.tasks.core.quarantine import prune, quarantine
from hybridops.tasks.core.settings import PROJECT_ROOT, Settings
from hybridops.tasks.knowledge.search import chunks_for_docs, search

if TYPE_CHECKING:
    from datasets import Dataset

# datasets (pulls in pyarrow, ~1 s) and pandas are imported where a data set or a contract frame is built

log = logging.getLogger(__name__)

TRAINING_PREFIX = "_training/"
CONTRACT_PATH = PROJECT_ROOT / "data_contracts" / "training_examples.yaml"
IGNORE_INDEX = -100


class ContextPassage(BaseModel):
    """A context passage as the prompt shows it: the doc id it cites and its text."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    doc_id: str
    text: str


class TrainingRecord(BaseModel):
    """One JSONL line as written by a person (structure only; the contract judges the content)."""

    model_config = ConfigDict(extra="forbid")

    id: str | None = None
    question: str
    context: list[ContextPassage] = []
    context_doc_ids: list[str] = []
    response: str | dict[str, Any]


class TrainingExample(BaseModel):
    """A resolved example: question, the passages the prompt shows, the ideal response text, and its origin."""

    model_config = ConfigDict(frozen=True)

    id: str
    origin: str  # "landing:<key>#L<line>", "interaction:<id>" or "replay:<snapshot key>#L<line>"
    question: str
    passages: list[ContextPassage]
    response: str
    raw: bytes = b""  # what the user gave, for quarantine
    source_version: str = ""
    parent: str | None = None  # a derived example's source (tasks/behaviour/augmentation.py): it shares the split


@dataclass(frozen=True)
class RejectedExample:
    """An example held back with its reasons ('code: message') and exactly what the user gave."""

    item_id: str
    origin: str
    reasons: list[str]
    raw: bytes = b""
    source_version: str = ""


@dataclass
class TrainingData:
    """The SFT splits plus the identity of the data (fingerprint) and what was held back."""

    train: Dataset
    validation: Dataset
    fingerprint: str
    tokenizer: Any
    accepted: list[TrainingExample] = field(default_factory=list)
    rejected: list[RejectedExample] = field(default_factory=list)
    origins: dict[str, int] = field(default_factory=dict)
    augmented: dict[str, int] = field(default_factory=dict)  # derived examples by kind (part of train/validation)
    replay: ReplayMix = field(default_factory=ReplayMix)  # earlier examples added back, and why others were not

    @property
    def counts(self) -> dict[str, int]:
        return {"train": len(self.train), "validation": len(self.validation), "rejected": len(self.rejected),
                "augmented": sum(self.augmented.values()), **self.replay.counts()}


# Reading ---------------------------------------------------------------------------------------------------

def example_id(question: str, doc_ids: list[str]) -> str:
    """Stable id for a record that brings none: hash of the question and its context doc ids."""
    return "ex-" + hashlib.sha256(json.dumps([question.strip(), doc_ids]).encode()).hexdigest()[:12]


def response_text(response: str | dict[str, Any]) -> str:
    """The ideal response as a string; objects are serialised as-is so the contract sees what was written."""
    return response if isinstance(response, str) else json.dumps(response, ensure_ascii=False)


Record = tuple[TrainingRecord, str, bytes]  # (record, origin, raw line)


def parse_jsonl(key: str, data: bytes, source_version: str) -> tuple[list[Record], list[RejectedExample]]:
    """Lines -> records (with origin and raw bytes); unreadable lines become rejections with the line number."""
    records, rejected = [], []
    for number, line in enumerate(data.splitlines(), start=1):
        if not line.strip():
            continue
        origin = f"landing:{key}#L{number}"
        try:
            records.append((TrainingRecord.model_validate_json(line), origin, line))
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'line'}: {e['msg']}" for e in exc.errors()[:5]
            )
            rejected.append(RejectedExample(item_id=origin.removeprefix("landing:"), origin=origin,
                                            reasons=[f"schema: {problems}"], raw=line,
                                            source_version=source_version))
    return records, rejected


def landing_records(settings: Settings, store: ObjectStore | None = None):
    """Every JSONL record of the training area, with its origin, raw line and source version."""
    store = store or landing_zone(settings)
    records, rejected, versions = [], [], {}
    for info in store.list(TRAINING_PREFIX):
        if not info.key.endswith(".jsonl"):
            rejected.append(RejectedExample(item_id=info.key, origin=f"landing:{info.key}",
                                            reasons=["not_jsonl: training files must end in .jsonl"],
                                            raw=store.get(info.key), source_version=info.version))
            continue
        found, bad = parse_jsonl(info.key, store.get(info.key), info.version)
        records.extend(found)
        rejected.extend(bad)
        versions.update({origin: info.version for _, origin, _ in found})
    return records, rejected, versions


def production_passages(settings: Settings, question: str, include: list[str]) -> list[ContextPassage]:
    """The passages the answer path would show for this question now (its retrieval profile's top-k), with
    every doc in `include` that retrieval missed put back (its first chunk, replacing the lowest-ranked hits)."""
    hits = search(settings, question)
    present = {h.doc_id for h in hits}
    missing = [d for d in dict.fromkeys(include) if d not in present]
    if missing:
        first: dict[str, Any] = {}
        for hit in chunks_for_docs(settings, missing):
            first.setdefault(hit.doc_id, hit)
        hits = hits[: max(0, max(len(hits), settings.search_k) - len(first))] + list(first.values())
    return [ContextPassage(doc_id=h.doc_id, text=h.text) for h in hits]


def examples_from_records(settings: Settings, records, versions: dict[str, str]):
    """Records -> examples; doc-id-only contexts are looked up in the index (missing docs -> rejection)."""
    examples, rejected = [], []
    for record, origin, raw in records:
        passages = list(record.context)
        if record.context_doc_ids and not passages:
            passages = production_passages(settings, record.question, record.context_doc_ids)
            missing = sorted(set(record.context_doc_ids) - {p.doc_id for p in passages})
            if missing:
                rejected.append(RejectedExample(item_id=origin.removeprefix("landing:"), origin=origin,
                                                reasons=[f"context_not_indexed: docs not in the index: {missing}"],
                                                raw=raw, source_version=versions.get(origin, "")))
                continue
        doc_ids = [p.doc_id for p in passages]
        examples.append(TrainingExample(
            id=record.id or example_id(record.question, doc_ids), origin=origin, question=record.question,
            passages=passages, response=response_text(record.response), raw=raw,
            source_version=versions.get(origin, ""),
        ))
    return examples, rejected


def feedback_example(settings: Settings, logged: LoggedInteraction) -> TrainingExample:
    """An approved interaction teaches its own reply; a corrected one teaches the correction (plain text, cited
    with the feedback's sources or else the original reply's, or a full house JSON reply). The prompt is rebuilt
    from today's retrieval, with the cited docs put back if retrieval misses them."""
    item, feedback = logged.interaction, logged.feedback
    passages = production_passages(settings, item.question, logged.cited)
    if feedback.verdict == "approve":
        response = format_reply(item.answer, item.sources) if item.format_ok else item.raw
    else:
        response = format_reply(feedback.correction, logged.cited) if feedback.plain_correction else feedback.correction
    raw = json.dumps({"interaction": item.model_dump(mode="json"), "feedback": feedback.model_dump(mode="json")})
    return TrainingExample(
        id=f"interaction-{item.id}", origin=f"interaction:{item.id}", question=item.question,
        passages=passages, response=response, raw=raw.encode(), source_version=feedback.created_at,
    )


def interaction_examples(settings: Settings) -> list[TrainingExample]:
    return [feedback_example(settings, logged) for logged in interactions_with_feedback(settings)]


# Contract --------------------------------------------------------------------------------------------------

def _strict_house(text: str) -> dict | None:
    """The response decoded when it is exactly one house JSON object (no surrounding prose), else None."""
    try:
        obj = json.loads(text)
    except (TypeError, ValueError):
        return None
    if not isinstance(obj, dict) or set(obj) != {"answer", "sources"}:
        return None
    if obj["answer"] is not None and not isinstance(obj["answer"], str):
        return None
    if not isinstance(obj["sources"], list) or not all(isinstance(s, str) for s in obj["sources"]):
        return None
    return obj


def contract_row(example: TrainingExample) -> dict[str, Any]:
    """The columns the GX contract checks, derived from one example."""
    reply = _strict_house(example.response)
    context_ids = {p.doc_id for p in example.passages}
    sources = reply["sources"] if reply else []
    answer = reply["answer"] if reply else None
    return {
        "question": example.question.strip() if example.question is not None else None,
        "question_chars": len(example.question.strip()),
        "context_passages": len(example.passages),
        "context_chars": sum(len(p.text) for p in example.passages),
        "response_chars": len(example.response),
        "response_format_ok": reply is not None,
        "sources_in_context": set(sources) <= context_ids,
        "cites_when_answering": (bool(sources) if answer is not None and answer.strip() else not sources)
        if reply else True,
        "answer_chars": len(answer or ""),
    }


@lru_cache(maxsize=1)
def _contract():
    return load_suite(CONTRACT_PATH)


def contract_violations(examples: list[TrainingExample]) -> dict[int, list[str]]:
    """Validate a batch with the GX contract; row index -> 'code: reason' for every failing example."""
    import pandas as pd

    if not examples:
        return {}
    frame = pd.DataFrame([{"row": i, **contract_row(e)} for i, e in enumerate(examples)])
    return {row: [f.reason() for f in found] for row, found in validate_frame(frame, _contract()).items()}


# Tokenisation ----------------------------------------------------------------------------------------------

def encode(tokenizer, example: TrainingExample) -> dict[str, list[int]]:
    """Chat-template the production prompt + canonical reply; labels are -100 on every prompt token."""
    messages = build_messages(example.question, example.passages)
    reply = json.loads(example.response)
    target = model_reply(reply["answer"], reply["sources"], example.passages)  # cited by passage number
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(
        [*messages, {"role": "assistant", "content": target}], tokenize=False, add_generation_prompt=False
    )
    if not full.startswith(prompt):
        raise ValueError("the chat template does not extend the generation prompt with the reply")
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    full_ids = tokenizer(full, add_special_tokens=False)["input_ids"]
    if full_ids[: len(prompt_ids)] != prompt_ids:  # a token straddles the boundary: tokenise the parts
        full_ids = prompt_ids + tokenizer(full[len(prompt):], add_special_tokens=False)["input_ids"]
    labels = [IGNORE_INDEX] * len(prompt_ids) + full_ids[len(prompt_ids):]
    return {"input_ids": full_ids, "labels": labels}


def in_validation(example_id: str, seed: int, fraction: float) -> bool:
    """Deterministic split: a seeded hash of the example id, independent of order and of other examples."""
    bucket = int(hashlib.sha256(f"{seed}:{example_id}".encode()).hexdigest()[:8], 16) / 0x1_0000_0000
    return bucket < fraction


def fingerprint(rows: list[dict], tokenizer, settings: Settings) -> str:
    """sha256 of exactly what training sees: ids, token ids, labels, split and the tokenizer/template."""
    digest = hashlib.sha256()
    digest.update(json.dumps({
        "template": getattr(tokenizer, "chat_template", None), "vocab": len(tokenizer),
        "seed": settings.train_seed, "validation_fraction": settings.train_validation_fraction,
    }, sort_keys=True).encode())
    for row in sorted(rows, key=lambda r: r["id"]):
        digest.update(json.dumps([row["id"], row["split"], row["input_ids"], row["labels"]]).encode())
    return digest.hexdigest()


def load_tokenizer(settings: Settings):
    """The very tokenizer (and chat template) the answer path generates with."""
    return load_base_model(settings)[1]


# The whole build --------------------------------------------------------------------------------------------

def validate_examples(
    examples: list[TrainingExample], tokenizer, max_seq_len: int
) -> tuple[list[tuple[TrainingExample, dict]], list[RejectedExample]]:
    """Contract, duplicate ids and token length; returns (example, encoded) pairs and rejections."""
    failures = contract_violations(examples)
    accepted, rejected, seen = [], [], set()
    for row, example in enumerate(examples):
        reasons = list(failures.get(row, []))
        if example.id in seen:
            reasons.append(f"duplicate_id: another example already uses id {example.id!r}")
        encoded = None
        if not reasons:
            encoded = encode(tokenizer, example)
            if len(encoded["input_ids"]) > max_seq_len:
                reasons.append(f"too_long: {len(encoded['input_ids'])} tokens > max_seq_len {max_seq_len}")
        if reasons:
            rejected.append(RejectedExample(item_id=example.origin.split(":", 1)[1], origin=example.origin,
                                            reasons=reasons, raw=example.raw,
                                            source_version=example.source_version))
            continue
        seen.add(example.id)
        accepted.append((example, encoded))
    return accepted, rejected


def quarantine_rejected(settings: Settings, rejected: list[RejectedExample], store: ObjectStore | None = None) -> None:
    """Hold every rejected example (raw line + reasons); release earlier holds that now pass or vanished."""
    store = store or artifact_store(settings)
    for item in rejected:
        quarantine(store, "training", item.item_id, item.raw, item.reasons, item.source_version)
    prune(store, "training", keep=[item.item_id for item in rejected])


def derived_examples(
    accepted: list[tuple[TrainingExample, dict]], tokenizer, settings: Settings
) -> list[tuple[TrainingExample, dict]]:
    """The augmentation's examples, encoded; one that no longer fits max_seq_len is left out (it is ours,
    not the user's: nothing to quarantine)."""
    derived = []
    for example in augment([e for e, _ in accepted], settings.train_seed, settings.train_refusal_share):
        encoded = encode(tokenizer, example)
        if len(encoded["input_ids"]) <= settings.max_seq_len:
            derived.append((example, encoded))
    return derived


def replayed_examples(
    settings: Settings, current: list[TrainingExample], accepted: int, tokenizer,
    landing: ObjectStore | None, store: ObjectStore | None,
) -> tuple[list[tuple[TrainingExample, dict]], list[RejectedExample], ReplayMix]:
    """Examples earlier adapters were trained on, chosen by tasks/behaviour/replay.py and validated like new ones."""
    candidates, mix = replay_candidates(settings, current, accepted, TrainingExample, landing=landing, store=store)
    replayed, rejected = validate_examples(candidates, tokenizer, settings.max_seq_len)
    return replayed, rejected, replace(mix, replayed=len(replayed), rejected=len(rejected))


def build_training_data(
    settings: Settings, *, include_interactions: bool = True, include_replay: bool = True, tokenizer=None,
    landing: ObjectStore | None = None, store: ObjectStore | None = None,
) -> TrainingData:
    """Read, validate (quarantining failures), add replayed examples, augment, tokenise and split."""
    from datasets import Dataset

    tokenizer = tokenizer or load_tokenizer(settings)
    landing = landing or landing_zone(settings)
    records, rejected, versions = landing_records(settings, landing)
    examples, unresolved = examples_from_records(settings, records, versions)
    rejected += unresolved
    if include_interactions:
        examples += interaction_examples(settings)
    accepted, bad = validate_examples(examples, tokenizer, settings.max_seq_len)
    rejected += bad
    mix = ReplayMix()
    if include_replay:
        replayed, bad, mix = replayed_examples(settings, examples, len(accepted), tokenizer, landing, store)
        accepted += replayed
        rejected += bad
    quarantine_rejected(settings, rejected, store)
    derived = derived_examples(accepted, tokenizer, settings) if settings.train_augment else []

    rows = [
        {"id": e.id, "origin": e.origin, **enc,
         "split": "validation" if in_validation(e.parent or e.id, settings.train_seed,
                                                settings.train_validation_fraction) else "train"}
        for e, enc in accepted + derived
    ]
    if rows and all(r["split"] == "validation" for r in rows):
        for r in rows:  # a tiny data set must still train
            r["split"] = "train"
    columns = ["id", "origin", "input_ids", "labels"]
    split = {name: Dataset.from_list([{k: r[k] for k in columns} for r in rows if r["split"] == name])
             for name in ("train", "validation")}
    origins, augmented = Counter(e.origin.split(":", 1)[0] for e, _ in accepted), Counter(
        e.origin.split(":", 2)[1] for e, _ in derived)
    data = TrainingData(
        train=split["train"], validation=split["validation"], fingerprint=fingerprint(rows, tokenizer, settings),
        tokenizer=tokenizer, accepted=[e for e, _ in accepted], rejected=rejected, origins=dict(origins),
        augmented=dict(augmented), replay=mix,
    )
    log.info("training data: %s from %s, fingerprint %s", data.counts, origins, data.fingerprint[:12])
    return data


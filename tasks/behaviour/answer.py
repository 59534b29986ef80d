"""Answering: retrieve hybrid context -> house prompt -> generate with the champion -> parse -> log the interaction."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pydantic import BaseModel

from hybridops.tasks.behaviour.adapter_loading import load_champion_model
from hybridops.tasks.behaviour.interactions import InteractionRejected, log_interaction, new_interaction
from hybridops.tasks.behaviour.llm import generate_chat
from hybridops.tasks.behaviour.prompting import ParsedReply, Passage, build_messages, parse_reply
from hybridops.tasks.core.settings import Settings
from hybridops.tasks.knowledge.search import search

logger = logging.getLogger(__name__)
MAX_QUESTION_CHARS = 4000  # the interaction contract's limit, checked before any generation


class Answer(BaseModel):
    """What `ask` returns (and `hybridops ask --json` prints)."""

    answer: str | None
    sources: list[str]
    format_ok: bool
    adapter: str | None
    retrieved: list[str]
    interaction_id: str | None
    latency_ms: float


@dataclass(frozen=True)
class Generated:
    """One model reply to one prompt, parsed, with the generation time."""

    reply: ParsedReply
    latency_ms: float


@dataclass(frozen=True)
class LoadedModel:
    """The model that answers: weights, tokenizer and the adapter version (None = base model)."""

    model: object
    tokenizer: object
    adapter: str | None


def respond(model, tokenizer, question: str, passages: Sequence[Passage], settings: Settings) -> Generated:
    """Prompt the model with the question + numbered passages and parse its reply (never raises on bad output)."""
    messages = build_messages(question, passages)
    clock = time.perf_counter()
    raw = generate_chat(model, tokenizer, messages, max_new_tokens=settings.max_new_tokens)
    return Generated(reply=parse_reply(raw), latency_ms=(time.perf_counter() - clock) * 1000)


def load_answering_model(settings: Settings) -> LoadedModel:
    """The champion adapter on the base model (the registry verifies it and decides about base fallback)."""
    model, tokenizer, version = load_champion_model(settings)
    return LoadedModel(model=model, tokenizer=tokenizer, adapter=version)


def ask(
    settings: Settings,
    question: str,
    *,
    loaded: LoadedModel | None = None,
    retrieve: Callable[[str], Sequence[Passage]] | None = None,
    log: bool = True,
) -> Answer:
    """Answer one question from retrieved context; every interaction is logged unless log=False."""
    question = question.strip()
    if not question:
        raise ValueError("the question is empty")
    if len(question) > MAX_QUESTION_CHARS:
        raise ValueError(f"the question has {len(question)} characters; at most {MAX_QUESTION_CHARS} are accepted")
    loaded = loaded or load_answering_model(settings)
    clock = time.perf_counter()
    if retrieve is None:
        passages = search(settings, question, k=settings.search_k, mode="hybrid")
    else:
        passages = retrieve(question)
    generated = respond(loaded.model, loaded.tokenizer, question, passages, settings)
    latency_ms = (time.perf_counter() - clock) * 1000
    retrieved = list(dict.fromkeys(p.doc_id for p in passages))
    interaction_id = None
    if log:
        interaction = new_interaction(
            question=question,
            reply=generated.reply,
            retrieved=retrieved,
            adapter=loaded.adapter,
            latency_ms=latency_ms,
            model=settings.llm_model,
        )
        try:
            log_interaction(settings, interaction)
            interaction_id = interaction.id
        except InteractionRejected as exc:  # quarantined with its reasons; the answer itself still stands
            logger.warning("%s", exc)
    return Answer(
        answer=generated.reply.answer,
        sources=generated.reply.sources,
        format_ok=generated.reply.format_ok,
        adapter=loaded.adapter,
        retrieved=retrieved,
        interaction_id=interaction_id,
        latency_ms=round(latency_ms, 1),
    )

"""Answering: retrieve hybrid context -> house prompt -> generate with the champion -> parse -> log the interaction."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pydantic import BaseModel, PrivateAttr

from hybridops.tasks.behaviour.adapter_loading import load_champion
from hybridops.tasks.behaviour.interactions import InteractionRejected, log_interaction, new_interaction
from hybridops.tasks.behaviour.llm import generate_chat
from hybridops.tasks.behaviour.prompting import ParsedReply, Passage, build_messages, parse_reply
from hybridops.tasks.behaviour.question import checked_question
from hybridops.tasks.core.errors import HybridopsError, describe, exit_code
from hybridops.tasks.core.object_store import ObjectStoreError
from hybridops.tasks.core.settings import Settings
from hybridops.tasks.knowledge.search import search

logger = logging.getLogger(__name__)


class Answer(BaseModel):
    """What `ask` returns (and `hybridops ask --json` prints)."""

    answer: str | None
    sources: list[str]
    format_ok: bool
    adapter: str | None
    retrieved: list[str]
    interaction_id: str | None
    latency_ms: float
    fallback: bool = False  # the champion could not be used: the base model answered (see warning)
    warning: str | None = None
    invalid_sources: list[str] = []  # cited by the model but not retrieved for this question: never shown as sources
    logged: bool = False  # the interaction is in the interaction log (False with log=False or when logging failed)
    log_error: str | None = None  # why it is not logged, when logging was attempted and failed
    answered_by: str = "in_process"  # or "service": the answering service `hybridops serve` hosts answered
    _log_failure: BaseException | None = PrivateAttr(None)

    @property
    def log_failure(self) -> BaseException | None:
        """The exception that kept the interaction out of the log (its kind gives the CLI's exit code)."""
        return self._log_failure

    @property
    def log_exit_code(self) -> int | None:
        """None when nothing failed; 0 when the contract rejected the record (quarantined: a warning); else the
        exit code of the failure's kind (the answer stands, the command fails)."""
        if self._log_failure is None:
            return None
        return 0 if isinstance(self._log_failure, InteractionRejected) else exit_code(self._log_failure)


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
    warning: str | None = None  # set when the base model stands in for a champion that cannot be used


def respond(model, tokenizer, question: str, passages: Sequence[Passage], settings: Settings) -> Generated:
    """Prompt the model with the question + numbered passages and parse its reply (never raises on bad output)."""
    messages = build_messages(question, passages)
    clock = time.perf_counter()
    raw = generate_chat(model, tokenizer, messages, max_new_tokens=settings.max_new_tokens)
    return Generated(reply=parse_reply(raw, passages), latency_ms=(time.perf_counter() - clock) * 1000)


def split_sources(cited: Sequence[str], retrieved: Sequence[str]) -> tuple[list[str], list[str]]:
    """The model's cited doc ids as (valid, invalid), each de-duplicated in citation order.

    Only a doc id among the retrieved passages' ids is a citation; anything else (a hallucinated id, one
    copied from a passage's text) is invalid. The user-facing answer shows only the valid ones; the parsed
    reply keeps the raw list, so the checks (sources_valid) still judge what the model really cited.
    """
    known = set(retrieved)
    unique = list(dict.fromkeys(cited))
    return [s for s in unique if s in known], [s for s in unique if s not in known]


def load_answering_model(settings: Settings) -> LoadedModel:
    """The champion adapter on the base model (the registry verifies it and decides about base fallback)."""
    champion = load_champion(settings)
    return LoadedModel(model=champion.model, tokenizer=champion.tokenizer, adapter=champion.version,
                       warning=champion.warning)


def ask(
    settings: Settings,
    question: str,
    *,
    loaded: LoadedModel | None = None,
    retrieve: Callable[[str], Sequence[Passage]] | None = None,
    log: bool = True,
) -> Answer:
    """Answer one question from retrieved context; every interaction is logged unless log=False."""
    question = checked_question(question)  # BadInputError (a ValueError) when empty or too long
    loaded = loaded or load_answering_model(settings)
    clock = time.perf_counter()
    if retrieve is None:
        passages = search(settings, question)  # k, mode, alpha: the live retrieval profile, else settings
    else:
        passages = retrieve(question)
    generated = respond(loaded.model, loaded.tokenizer, question, passages, settings)
    latency_ms = (time.perf_counter() - clock) * 1000
    retrieved = list(dict.fromkeys(p.doc_id for p in passages))
    interaction_id = None
    log_failure: BaseException | None = None
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
            log_failure = exc
        except Exception as exc:  # noqa: BLE001 - a store that cannot be written never costs the generated answer
            log_failure = _log_write_failure(settings, exc)
    sources, invalid_sources = split_sources(generated.reply.sources, retrieved)
    answer = Answer(
        answer=generated.reply.answer,
        sources=sources,
        invalid_sources=invalid_sources,
        logged=interaction_id is not None,
        log_error=describe(log_failure) if log_failure is not None else None,
        format_ok=generated.reply.format_ok,
        adapter=loaded.adapter,
        retrieved=retrieved,
        interaction_id=interaction_id,
        latency_ms=round(latency_ms, 1),
        fallback=loaded.warning is not None,
        warning=loaded.warning,
    )
    answer._log_failure = log_failure
    return answer


def _log_write_failure(settings: Settings, exc: Exception) -> BaseException:
    """A failed interaction-log write as an error of its kind: an OS error (read-only folder, a file where
    the store folder should be, disk full) means the store is unavailable (ServiceUnavailableError, exit 3)."""
    if isinstance(exc, HybridopsError):
        return exc
    if isinstance(exc, OSError):
        error = ObjectStoreError(f"the interaction could not be logged to {settings.store_uri}: {describe(exc)}")
        error.__cause__ = exc
        return error
    return exc

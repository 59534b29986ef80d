"""Behaviour evals: a declarative YAML suite of cases, run against one model, with per-check pass rates + Wilson CIs."""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from hybridops.tasks.behaviour.answer import Generated, respond
from hybridops.tasks.behaviour.checks import CHECKS, DEFAULT_BANNED_PHRASES, DEFAULT_MAX_CHARS, CheckInput, run_checks
from hybridops.tasks.behaviour.interactions import sample_recent
from hybridops.tasks.behaviour.llm import generate_chat_batch
from hybridops.tasks.behaviour.prompting import Passage, build_messages, parse_reply
from hybridops.tasks.behaviour.reply_cache import ReplyCache
from hybridops.tasks.core.errors import BadInputError
from hybridops.tasks.core.model_runtime import batch_threads
from hybridops.tasks.core.settings import PROJECT_ROOT, Settings
from hybridops.tasks.knowledge.search import search

Retrieve = Callable[[str], Sequence[Passage]]
Progress = Callable[[int, int, "CaseResult"], None]

ANSWER_CHECKS = ["json_format", "sources_valid", "cites_gold", "grounded", "answers_when_supported", "expected_keywords",
                 "max_length", "banned_phrases"]
REFUSAL_CHECKS = ["json_format", "sources_valid", "refuses_without_context", "max_length", "banned_phrases"]
INTERACTION_CHECKS = ["json_format", "sources_valid", "grounded", "max_length", "banned_phrases"]
Z_95 = 1.959963984540054


class Case(BaseModel):
    """One question with its expectations; `checks` overrides the suite's defaults for its kind."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    question: str = Field(min_length=1)
    gold_docs: list[str] = []
    expected_keywords: list[str | list[str]] = []  # a list = alternatives, any one suffices
    refusal: bool = False
    checks: list[str] | None = None
    max_chars: int | None = None
    origin: Literal["golden", "interaction"] = "golden"

    @property
    def keyword_groups(self) -> tuple[str | tuple[str, ...], ...]:
        """expected_keywords as the checks take them (hashable: alternatives as tuples)."""
        return tuple(k if isinstance(k, str) else tuple(k) for k in self.expected_keywords)


class Suite(BaseModel):
    """A named set of cases plus the default checks for answerable, refusal and sampled-interaction cases."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    checks: list[str] = ANSWER_CHECKS
    refusal_checks: list[str] = REFUSAL_CHECKS
    interaction_checks: list[str] = INTERACTION_CHECKS
    max_chars: int = DEFAULT_MAX_CHARS
    banned_phrases: list[str] = list(DEFAULT_BANNED_PHRASES)
    cases: list[Case] = []

    @model_validator(mode="after")
    def _known_checks_unique_ids(self) -> Suite:
        named = set(self.checks) | set(self.refusal_checks) | set(self.interaction_checks)
        for case in self.cases:
            named |= set(case.checks or [])
        unknown = sorted(named - set(CHECKS))
        if unknown:
            raise ValueError(f"unknown checks {unknown}; known: {sorted(CHECKS)}")
        ids = [c.id for c in self.cases]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"duplicate case ids: {duplicates}")
        return self

    def checks_for(self, case: Case) -> list[str]:
        if case.checks is not None:
            return case.checks
        if case.origin == "interaction":
            return self.interaction_checks
        return self.refusal_checks if case.refusal else self.checks

    def with_cases(self, extra: Sequence[Case]) -> Suite:
        """The same suite plus extra cases (e.g. sampled interactions); ids stay unique."""
        taken = {c.id for c in self.cases}
        return self.model_copy(update={"cases": [*self.cases, *(c for c in extra if c.id not in taken)]})


class SuiteError(BadInputError):
    """The suite file is missing or invalid."""


def load_suite(path: Path | str) -> Suite:
    """Read and validate a suite YAML file (clear error naming the file on any problem)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        return Suite.model_validate(data)
    except FileNotFoundError:
        raise SuiteError(f"behaviour suite not found: {path}") from None
    except (yaml.YAMLError, ValueError) as exc:
        raise SuiteError(f"invalid behaviour suite {path}: {exc}") from exc


class CheckOutcome(BaseModel):
    passed: bool
    detail: str = ""


class CaseResult(BaseModel):
    """One case as answered: what was retrieved, what the model said and how each applicable check judged it."""

    case_id: str
    question: str
    origin: str
    gold_docs: list[str]
    retrieved: list[str]
    answer: str | None
    sources: list[str]
    format_ok: bool
    raw: str
    checks: dict[str, CheckOutcome]
    latency_ms: float

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks.values())

    @property
    def failed_checks(self) -> list[str]:
        return [name for name, c in self.checks.items() if not c.passed]


class CheckStats(BaseModel):
    passed: int
    n: int
    pass_rate: float
    ci_low: float
    ci_high: float


class EvalReport(BaseModel):
    """A suite run: per-check pass counts/rates with 95% Wilson intervals, and every case's result."""

    suite: str
    adapter_version: str | None
    started_at: str
    seconds: float
    checks: dict[str, CheckStats]
    cases: list[CaseResult]
    reused: int = 0  # replies taken from the reply cache (same weights, same prompt) instead of generated

    @property
    def n(self) -> int:
        return len(self.cases)

    @property
    def cases_per_min(self) -> float:
        return 60.0 * self.n / self.seconds if self.seconds > 0 else 0.0

    def pass_rates(self) -> dict[str, float]:
        return {name: stats.pass_rate for name, stats in self.checks.items()}


def wilson_interval(passed: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (sane at 0/n and n/n, unlike the normal approximation)."""
    if n <= 0:
        return 0.0, 1.0
    if not 0 <= passed <= n:
        raise ValueError(f"passed={passed} must lie in [0, n={n}]")
    p = passed / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    low = 0.0 if passed == 0 else max(0.0, centre - half)  # exact ends: no 1e-17 float residue
    high = 1.0 if passed == n else min(1.0, centre + half)
    return low, high


def check_stats(cases: Sequence[CaseResult]) -> dict[str, CheckStats]:
    """Aggregate per-check pass counts over the cases where each check applied."""
    counts: dict[str, list[int]] = {}
    for case in cases:
        for name, outcome in case.checks.items():
            tally = counts.setdefault(name, [0, 0])
            tally[0] += outcome.passed
            tally[1] += 1
    stats = {}
    for name, (passed, n) in sorted(counts.items()):
        low, high = wilson_interval(passed, n)
        stats[name] = CheckStats(passed=passed, n=n, pass_rate=passed / n, ci_low=low, ci_high=high)
    return stats


def make_retriever(settings: Settings, k: int | None = None) -> Retrieve:
    """Search with the live retrieval profile (k overrides its chunks per question), memoised per question so
    champion and challenger see the same context."""
    @functools.lru_cache(maxsize=1024)
    def retrieve(question: str) -> tuple:
        return tuple(search(settings, question, k=k))

    return retrieve


def evaluate_case(
    settings: Settings, suite: Suite, case: Case, passages: Sequence[Passage], model, tokenizer
) -> CaseResult:
    """Answer one case from the given passages and run its checks."""
    return checked_result(settings, suite, case, passages, respond(model, tokenizer, case.question, passages, settings))


def evaluate_cases(
    settings: Settings,
    suite: Suite,
    items: Sequence[tuple[Case, Sequence[Passage]]],
    model,
    tokenizer,
    on_result: Callable[[int, CaseResult], None] | None = None,
    cache: ReplyCache | None = None,
) -> list[CaseResult]:
    """Answer many (case, passages) pairs in generation batches and run their checks; results in input order.

    Each reply equals the one `evaluate_case` gets (batched greedy decoding, see llm.generate_chat_batch);
    settings.eval_batch_tokens sizes the batches (0 = one at a time). With a `cache` (the model's own, see
    reply_cache.py) a prompt it answered before is not generated again; new replies are added to it.
    `on_result(index, result)` fires for every case as soon as its reply is there (cached ones first). A
    case's latency_ms is its batch's generation time divided by the batch's size (0 for a cached reply)."""
    conversations = [build_messages(case.question, passages) for case, passages in items]
    results: list[CaseResult | None] = [None] * len(items)

    def finish(index: int, raw: str, latency_ms: float) -> None:
        case, passages = items[index]
        generated = Generated(reply=parse_reply(raw, passages), latency_ms=latency_ms)
        results[index] = checked_result(settings, suite, case, passages, generated)
        if on_result:
            on_result(index, results[index])

    todo = []
    for index, messages in enumerate(conversations):
        raw = cache.get(messages) if cache else None
        if raw is None:
            todo.append(index)
        else:
            finish(index, raw, 0.0)
    clock = time.perf_counter()

    def batch_done(positions: list[int], raws: list[str]) -> None:
        nonlocal clock
        per_case_ms = (time.perf_counter() - clock) * 1000 / len(positions)
        for position, raw in zip(positions, raws):
            if cache:
                cache.put(conversations[todo[position]], raw)
            finish(todo[position], raw, per_case_ms)
        if cache:
            cache.save()  # after every batch: a run that dies keeps what it generated
        clock = time.perf_counter()

    if todo:
        with batch_threads(settings.batch_threads):
            generate_chat_batch(model, tokenizer, [conversations[i] for i in todo], settings.max_new_tokens,
                                batch_tokens=settings.eval_batch_tokens, on_batch=batch_done)
    return [result for result in results if result is not None]


def checked_result(
    settings: Settings, suite: Suite, case: Case, passages: Sequence[Passage], generated: Generated
) -> CaseResult:
    """One case's reply judged by its checks."""
    data = CheckInput(
        question=case.question,
        reply=generated.reply,
        passages=tuple(passages),
        gold_docs=tuple(case.gold_docs),
        expected_keywords=case.keyword_groups,
        refusal=case.refusal,
        max_chars=case.max_chars or suite.max_chars,
        banned_phrases=tuple(suite.banned_phrases),
    )
    results = run_checks(suite.checks_for(case), data)
    return CaseResult(
        case_id=case.id,
        question=case.question,
        origin=case.origin,
        gold_docs=list(case.gold_docs),
        retrieved=data.retrieved,
        answer=generated.reply.answer,
        sources=generated.reply.sources,
        format_ok=generated.reply.format_ok,
        raw=generated.reply.raw,
        checks={name: CheckOutcome(passed=r.passed, detail=r.detail) for name, r in results.items()},
        latency_ms=generated.latency_ms,
    )


def run_suite(
    settings: Settings,
    suite: Suite,
    model,
    tokenizer,
    adapter_version: str | None,
    retrieve: Retrieve | None = None,
    progress: Progress | None = None,
    cache: ReplyCache | None = None,
) -> EvalReport:
    """Answer every case with retrieved context, check the replies and aggregate pass rates.

    Retrieval runs per case first, then generation in batches (settings.eval_batch_tokens); `progress(done,
    total, result)` fires per case as each batch completes (cases finish in batch order, not suite order;
    the report lists them in suite order). `cache`: the replies this very model gave before (reply_cache.py)."""
    retrieve = retrieve or make_retriever(settings)
    started = datetime.now(timezone.utc)
    clock = time.perf_counter()
    items = [(case, retrieve(case.question)) for case in suite.cases]
    done = 0

    def case_done(_index: int, result: CaseResult) -> None:
        nonlocal done
        done += 1
        if progress:
            progress(done, len(items), result)

    hits_before = cache.hits if cache else 0
    results = evaluate_cases(settings, suite, items, model, tokenizer, on_result=case_done, cache=cache)
    return EvalReport(
        suite=suite.name,
        adapter_version=adapter_version,
        started_at=started.isoformat(),
        seconds=time.perf_counter() - clock,
        checks=check_stats(results),
        cases=results,
        reused=cache.hits - hits_before if cache else 0,
    )


def suite_path(settings: Settings, path: Path | str | None = None) -> Path:
    """The suite file: explicit path, else settings.behaviour_suite (relative paths also tried from the repo root)."""
    return in_checkout(Path(path or settings.behaviour_suite))


def in_checkout(path: Path) -> Path:
    """A relative path as given when it exists from the working directory, else from the checkout, so the
    shipped defaults (suites, corpora) work from anywhere."""
    if not path.is_absolute() and not path.exists() and (PROJECT_ROOT / path).exists():
        return PROJECT_ROOT / path
    return path


def eval_suite(settings: Settings, path: Path | str | None = None, sample: int | None = None) -> Suite:
    """The golden suite plus a sample of recent logged interactions (settings.eval_sample_interactions)."""
    suite = load_suite(suite_path(settings, path))
    k = settings.eval_sample_interactions if sample is None else sample
    return suite.with_cases(interaction_cases(settings, k=k, days=settings.eval_sample_days))


def interaction_cases(settings: Settings, k: int, days: int, seed: str | None = None) -> list[Case]:
    """A deterministic sample of k recent logged questions, as cases checked with the interaction checks."""
    return [
        Case(id=f"interaction:{logged.interaction.id}", question=logged.interaction.question, origin="interaction")
        for logged in sample_recent(settings, k=k, days=days, seed=seed)
    ]

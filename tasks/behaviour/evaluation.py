"""The behaviour-eval story: suite -> champion -> answer every case -> attribute gaps -> drift -> history.

`evaluate()` composes the steps once. `hybridops eval` runs it with direct calls and rich progress; the
evaluate-behaviour flow passes `prefect_step` (each step a Prefect task) and a reporter writing progress
artifacts. Both then announce the result with the same events (flows/orchestration/events.py).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict

from hybridops.tasks.behaviour.answer import LoadedModel, load_answering_model
from hybridops.tasks.behaviour.drift import assess
from hybridops.tasks.behaviour.eval_history import EvalRecord, record_history, summarize
from hybridops.tasks.behaviour.gap_attribution import GapAttribution, attribute_gaps
from hybridops.tasks.behaviour.reply_cache import ReplyCache
from hybridops.tasks.behaviour.suite import EvalReport, Suite, eval_suite, run_suite
from hybridops.tasks.core.settings import Settings
from hybridops.tasks.core.story import QuietReporter, Reporter, Step, direct


class EvalRequest(BaseModel):
    """Which cases: a suite file (default settings.behaviour_suite) plus `sample` recent interactions."""

    suite: Path | str | None = None
    sample: int | None = None


class EvalOutcome(BaseModel):
    """The recorded run, plus the gap attributions the events need (missing gold docs per knowledge gap)."""

    model_config = ConfigDict(frozen=True)

    record: EvalRecord
    gaps: list[GapAttribution]


# Steps -------------------------------------------------------------------------------------------------------

def load_cases(settings: Settings, request: EvalRequest) -> Suite:
    """The golden suite plus a sample of recent logged interactions."""
    return eval_suite(settings, request.suite, request.sample)


def load_champion(settings: Settings) -> LoadedModel:
    """The verified champion adapter (or the base model when none was promoted)."""
    return load_answering_model(settings)


def answer_suite(settings: Settings, suite: Suite, loaded: LoadedModel, reporter: Reporter) -> EvalReport:
    """Answer every case with retrieved context and run its checks."""
    label = f"eval {loaded.adapter or 'base model'}"
    cache = ReplyCache.open(settings, loaded.adapter) if settings.eval_reuse_replies else None
    return run_suite(settings, suite, loaded.model, loaded.tokenizer, loaded.adapter, cache=cache,
                     progress=lambda done, total, _case: reporter.progress(label, done, total))


def attribute(settings: Settings, suite: Suite, report: EvalReport, loaded: LoadedModel) -> list[GapAttribution]:
    """Knowledge vs behaviour vs retrieval noise for each failing case (oracle re-ask where gold was found)."""
    return attribute_gaps(settings, suite, report, loaded.model, loaded.tokenizer)


def record(settings: Settings, report: EvalReport, gaps: list[GapAttribution]) -> EvalRecord:
    """Test drift against the champion's baseline and append the run to the history store."""
    entry = summarize(report, gaps, assess(settings, report, gaps))
    record_history(settings, entry)
    return entry


# The composition ---------------------------------------------------------------------------------------------

def evaluate(
    settings: Settings, request: EvalRequest | None = None, *, step: Step = direct, reporter: Reporter | None = None
) -> EvalOutcome:
    """Evaluate the champion's behaviour once, tell knowledge gaps from behaviour gaps, test drift, record it."""
    request = request or EvalRequest()
    reporter = reporter or QuietReporter()
    suite = step(load_cases, settings, request)
    reporter.stage(f"loading the champion model ({len(suite.cases)} cases to answer)")
    loaded = step(load_champion, settings)
    reporter.stage(f"answering with {loaded.adapter or 'the base model'}")
    report = step(answer_suite, settings, suite, loaded, reporter)
    reporter.stage(f"attributing {sum(not c.passed for c in report.cases)} failing case(s) (oracle re-asks)")
    gaps = step(attribute, settings, suite, report, loaded)
    entry = step(record, settings, report, gaps)
    reporter.stage(f"n={entry.n} drift={entry.drift.drift} {entry.drift.drifted} gaps={entry.gaps}")
    return EvalOutcome(record=entry, gaps=gaps)

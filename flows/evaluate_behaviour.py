"""Flow evaluate_behaviour: how well does the champion behave, and is a failure knowledge or behaviour?

Steps: load the champion -> run the golden suite + sampled recent interactions -> attribute every failing
case (knowledge / behaviour / retrieval noise, oracle re-ask) -> drift vs the champion's baseline -> record
history -> table + trend artifacts -> emit hybridops.behaviour.drift / hybridops.knowledge.gap.
"""

from __future__ import annotations

from pydantic import BaseModel, Field
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, create_table_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event

from hybridops.tasks.behaviour.answer import LoadedModel, load_answering_model
from hybridops.tasks.behaviour.suite import EvalReport, Suite, eval_suite, run_suite
from hybridops.tasks.behaviour.report import case_rows, trend_markdown
from hybridops.tasks.behaviour.drift import EvalRecord, assess, load_history, record_history, summarize
from hybridops.tasks.behaviour.gap_attribution import GapAttribution, attribute_gaps
from hybridops.tasks.core.settings import Settings, load_settings


@task(retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
def load_champion(settings: Settings) -> LoadedModel:
    """Load the verified champion adapter (or the base model when none was promoted)."""
    return load_answering_model(settings)


@task(cache_policy=NO_CACHE)
def answer_suite(settings: Settings, suite: Suite, loaded: LoadedModel) -> EvalReport:
    """Answer every case with retrieved context and run its checks (progress shown as an artifact)."""
    progress = create_progress_artifact(0.0, description=f"behaviour eval: {len(suite.cases)} cases")
    report = run_suite(settings, suite, loaded.model, loaded.tokenizer, loaded.adapter,
                       progress=lambda i, n, _: update_progress_artifact(progress, 100.0 * i / n))
    return report


@task(cache_policy=NO_CACHE)
def attribute(settings: Settings, suite: Suite, report: EvalReport, loaded: LoadedModel) -> list[GapAttribution]:
    """Knowledge vs behaviour vs retrieval noise for each failing case (oracle re-ask where gold was found)."""
    return attribute_gaps(settings, suite, report, loaded.model, loaded.tokenizer)


@task(retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
def record(settings: Settings, report: EvalReport, gaps: list[GapAttribution]) -> EvalRecord:
    """Test drift against the champion's baseline and append the run to the history store."""
    entry = summarize(report, gaps, assess(settings, report, gaps))
    record_history(settings, entry)
    return entry


@task(cache_policy=NO_CACHE)
def publish(settings: Settings, entry: EvalRecord) -> None:
    """Leave the per-case table (with gap attribution) and the pass-rate trend chart as artifacts."""
    key = settings.namespace.replace("_", "-")
    create_table_artifact(case_rows(entry), key=f"{key}-behaviour-cases", description="Behaviour eval cases")
    create_markdown_artifact(trend_markdown(load_history(settings)), key=f"{key}-behaviour-trend",
                             description="Behaviour pass-rate trend")


@task(cache_policy=NO_CACHE)
def emit_events(settings: Settings, entry: EvalRecord, gaps: list[GapAttribution]) -> None:
    """hybridops.behaviour.drift on drift; one hybridops.knowledge.gap per knowledge-gap case."""
    ns = settings.namespace
    if entry.drift.drift:
        emit_event(event="hybridops.behaviour.drift", resource={"prefect.resource.id": f"hybridops.{ns}.behaviour"},
                   payload=entry.drift.event_payload() | {"run_id": entry.run_id})
    questions = {case.case_id: case.question for case in entry.cases}
    for gap in (g for g in gaps if g.kind == "knowledge"):
        emit_event(event="hybridops.knowledge.gap", resource={"prefect.resource.id": f"hybridops.{ns}.knowledge"},
                   payload={"case_id": gap.case_id, "question": questions.get(gap.case_id),
                            "missing_gold": gap.missing_gold, "run_id": entry.run_id})


class EvalParams(BaseModel):
    """What the UI's run form shows for evaluate-behaviour."""

    suite_path: str | None = Field(None, description="Behaviour suite YAML to run (default: settings.behaviour_suite).")
    sample: int | None = Field(None, ge=0, description="Recent logged interactions added to the golden cases "
                               "(default: settings.eval_sample_interactions).")


@flow(name="evaluate_behaviour")
def evaluate_behaviour(params: EvalParams = EvalParams()) -> EvalRecord:
    """Run the behaviour suite on the champion, attribute gaps, test drift, record history, emit events."""
    settings = load_settings()
    suite = eval_suite(settings, params.suite_path, params.sample)
    loaded = load_champion(settings)
    report = answer_suite(settings, suite, loaded)
    gaps = attribute(settings, suite, report, loaded)
    entry = record(settings, report, gaps)
    publish(settings, entry)
    emit_events(settings, entry, gaps)
    get_run_logger().info("n=%d drift=%s %s gaps=%s", entry.n, entry.drift.drift, entry.drift.drifted, entry.gaps)
    return entry


if __name__ == "__main__":
    evaluate_behaviour()

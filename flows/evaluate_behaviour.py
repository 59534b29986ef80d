"""Flow evaluate_behaviour: how well does the champion behave, and is a failure knowledge or behaviour?

The story is tasks/behaviour/evaluation.py (the same one `hybridops eval` runs), each step a Prefect task
with transient-only retries and progress artifacts; then the per-case table and the pass-rate trend as
artifacts, and hybridops.behaviour.drift / hybridops.knowledge.gap events for the automations.
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from pydantic import BaseModel, Field

from hybridops.flows.orchestration.events import behaviour_evaluated
from hybridops.flows.orchestration.reporting import PrefectReporter, prefect_step
from hybridops.tasks.behaviour.eval_history import EvalRecord, load_history
from hybridops.tasks.behaviour.evaluation import EvalRequest, evaluate
from hybridops.tasks.behaviour.report import case_rows, routes_markdown, trend_markdown
from hybridops.tasks.core.settings import Settings, load_settings


def publish(settings: Settings, entry: EvalRecord) -> None:
    """Leave the per-case table, the pass-rate trend chart and the routes with their actions as artifacts."""
    key = settings.namespace.replace("_", "-")
    create_table_artifact(case_rows(entry), key=f"{key}-behaviour-cases", description="Behaviour eval cases")
    create_markdown_artifact(trend_markdown(load_history(settings)), key=f"{key}-behaviour-trend",
                             description="Behaviour pass-rate trend")
    create_markdown_artifact(routes_markdown(entry), key=f"{key}-behaviour-routes",
                             description="Failing cases routed to the action that fixes them")


class EvalParams(BaseModel):
    """What the UI's run form shows for evaluate-behaviour."""

    suite_path: str | None = Field(None, description="Behaviour suite YAML to run (default: settings.behaviour_suite).")
    sample: int | None = Field(None, ge=0, description="Recent logged interactions added to the golden cases "
                               "(default: settings.eval_sample_interactions).")


@flow(name="evaluate_behaviour")
def evaluate_behaviour(params: EvalParams = EvalParams()) -> EvalRecord:
    """Run the behaviour suite on the champion, attribute gaps, test drift, record history, emit events."""
    settings = load_settings()
    outcome = evaluate(settings, EvalRequest(suite=params.suite_path, sample=params.sample),
                       step=prefect_step, reporter=PrefectReporter())
    entry = outcome.record
    prefect_step(publish, settings, entry)
    prefect_step(behaviour_evaluated, settings, entry, outcome.gaps)
    get_run_logger().info("n=%d drift=%s %s gaps=%s", entry.n, entry.drift.drift, entry.drift.drifted, entry.gaps)
    return entry


if __name__ == "__main__":
    evaluate_behaviour()

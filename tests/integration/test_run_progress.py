"""Following a flow run's progress from outside, against the real Prefect server: the bars a story reports
through PrefectReporter are read back by run id (what the demo and `hybridops run --wait` show)."""

from __future__ import annotations

from prefect import flow
from prefect.runtime import flow_run

from hybridops.flows.orchestration.reporting import PrefectReporter, Progress
from hybridops.flows.orchestration.run_progress import follow_run, read_progress
from hybridops.tasks.core.settings import Settings


@flow(name="hybridops-progress-test")
def reporting_flow() -> str:
    reporter = PrefectReporter()
    for step in range(1, 4):
        reporter.progress("train", step, 3, f"loss {2.0 / step:.3f}")
    reporter.stage("not a bar")
    reporter.progress("eval base model", 21, 21)
    return flow_run.get_id()


def test_a_runs_bars_are_read_back_by_its_id(settings: Settings, prefect_api: str) -> None:
    run_id = reporting_flow()
    bars = read_progress(settings, run_id)
    assert [bar.label for bar in bars] == ["train", "eval base model"]  # oldest first, one per label
    assert bars[0] == Progress("train", 3, 3, "loss 0.667") and bars[1] == Progress("eval base model", 21, 21, "")

    shown = []
    info = follow_run(settings, run_id, lambda *bar: shown.append(bar), timeout=30)
    assert info.state == "COMPLETED" and shown == [tuple(bar) for bar in bars]

"""Following a flow run from outside (demo, `hybridops run --wait`): its state, and the progress artifacts its
story writes (reporting.PrefectReporter: step/loss/ETA, eval cases done), read by run id through the Prefect client."""

from __future__ import annotations

from collections.abc import Callable
from uuid import UUID

from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterType
from prefect.client.schemas.sorting import ArtifactSort

from hybridops.flows.orchestration.reporting import Progress, parse_progress_description
from hybridops.flows.orchestration.run_control import RunInfo, prefect_client, wait_for_run
from hybridops.tasks.core.settings import Settings


def read_progress(settings: Settings, run_id: UUID) -> list[Progress]:
    """The run's progress bars, oldest first (artifacts of other kinds or text are skipped)."""
    with prefect_client(settings) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]),
                                           type=ArtifactFilterType(any_=["progress"])),
            sort=ArtifactSort.CREATED_DESC, limit=50,
        )
    parsed = (parse_progress_description(artifact.description or "") for artifact in reversed(artifacts))
    return [progress for progress in parsed if progress is not None]


def follow_run(settings: Settings, run_id: UUID, show: Callable[[str, int, int | None, str], None],
               timeout: float = 3600, poll: float = 1.0) -> RunInfo:
    """Wait for the run's final state, calling `show(label, done, total, info)` for each progress bar whenever
    it changed (RichReporter.show draws it)."""
    shown: dict[str, Progress] = {}

    def show_changes(_: RunInfo) -> None:
        for progress in read_progress(settings, run_id):
            if shown.get(progress.label) != progress:
                shown[progress.label] = progress
                show(*progress)

    return wait_for_run(settings, run_id, timeout, poll, on_poll=show_changes)

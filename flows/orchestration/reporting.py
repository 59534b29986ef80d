"""Running a story (tasks/core/story.py) inside a flow: each step a coarse Prefect task, progress as artifacts."""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NONE

from hybridops.tasks.core.errors import is_transient


def _retry_transient(task_, task_run, state) -> bool:
    """Retry a step only when a service was unreachable; bad input or a bug fails at once."""
    try:
        state.result()
    except Exception as exc:  # noqa: BLE001 - inspecting the failure
        return is_transient(exc)
    return False


TRANSIENT_RETRIES: dict[str, Any] = dict(retries=3, retry_delay_seconds=[2, 10, 30],
                                         retry_condition_fn=_retry_transient, cache_policy=NONE)
"""Task options for a coarse step: retried with backoff only when a service was unreachable, never cached."""


def prefect_step(fn, *args: Any, **kwargs: Any) -> Any:
    """Run one story step as a Prefect task named after it (live objects as inputs: no caching)."""
    step = task(fn, name=fn.__name__.strip("_").replace("_", "-"), **TRANSIENT_RETRIES)
    return step(*args, **kwargs)


class PrefectReporter:
    """Stages go to the run log; progress (documents, training steps, eval cases) to progress artifacts."""

    def __init__(self, logger=None):
        self.logger = logger or get_run_logger()
        self.artifacts: dict[str, Any] = {}
        self.logged: dict[str, int] = {}

    def stage(self, message: str) -> None:
        self.logger.info(message)

    def progress(self, label: str, done: int, total: int | None, info: str = "") -> None:
        description = f"{label}: {done}/{total or '?'}" + (f", {info}" if info else "")
        fraction = done / total if total else 0.0
        if label not in self.artifacts:
            self.artifacts[label] = create_progress_artifact(0.0, description=description)
        update_progress_artifact(self.artifacts[label], round(100 * min(fraction, 1.0), 1), description=description)
        tenth = int(10 * fraction)  # the run log gets every 10%, the artifact every update
        if tenth > self.logged.get(label, -1) or done == total:
            self.logged[label] = tenth
            self.logger.info(description)

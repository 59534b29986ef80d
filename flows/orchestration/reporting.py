"""Running a story (tasks/core/story.py) inside a flow: each step a coarse Prefect task, progress as artifacts."""

from __future__ import annotations

import re
from typing import Any, NamedTuple

from prefect import get_run_logger, task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NONE

from hybridops.tasks.core.errors import is_transient
from hybridops.tasks.core.story import Eta


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


_DESCRIPTION = re.compile(r"^(?P<label>.+?): (?P<done>\d+)/(?P<total>\d+|\?)(?:, (?P<info>.*))?$", re.DOTALL)


def progress_description(label: str, done: int, total: int | None, info: str = "") -> str:
    """A progress artifact's description: `label: done/total, info` (what the UI shows and a follower reads)."""
    return f"{label}: {done}/{total or '?'}" + (f", {info}" if info else "")


class Progress(NamedTuple):
    """One progress bar of a run, as its artifact describes it."""

    label: str
    done: int
    total: int | None
    info: str


def parse_progress_description(description: str) -> Progress | None:
    """The progress a description `progress_description` wrote; None for any other text."""
    match = _DESCRIPTION.match(description or "")
    if match is None:
        return None
    total = match["total"]
    return Progress(match["label"], int(match["done"]), None if total == "?" else int(total), match["info"] or "")


class PrefectReporter:
    """Stages go to the run log; progress (documents, training steps, eval cases; with an ETA) to progress artifacts."""

    def __init__(self, logger=None):
        self.logger = logger or get_run_logger()
        self.artifacts: dict[str, Any] = {}
        self.logged: dict[str, int] = {}
        self.eta = Eta()

    def stage(self, message: str) -> None:
        self.logger.info(message)

    def progress(self, label: str, done: int, total: int | None, info: str = "") -> None:
        description = progress_description(label, done, total, self.eta.annotate(label, done, total, info))
        fraction = done / total if total else 0.0
        if label not in self.artifacts:
            self.artifacts[label] = create_progress_artifact(0.0, description=description)
        update_progress_artifact(self.artifacts[label], round(100 * min(fraction, 1.0), 1), description=description)
        tenth = int(10 * fraction)  # the run log gets every 10%, the artifact every update
        if tenth > self.logged.get(label, -1) or done == total:
            self.logged[label] = tenth
            self.logger.info(description)

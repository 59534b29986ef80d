"""How a loop's story is told once and run from anywhere: plain steps, a step runner and a reporter.

Every story (refresh, rebuild, behaviour eval, retrain, rollback) is one function in tasks/ that calls its
steps through `step(fn, *args)` and reports through a `Reporter`. The CLI runs it with the defaults (direct
calls, rich progress); a Prefect flow passes a runner that wraps each step in a task and a reporter that
writes progress artifacts. So both paths do exactly the same work.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

log = logging.getLogger("hybridops")
T = TypeVar("T")

Step = Callable[..., Any]


def direct(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """The default step runner: just call the function."""
    return fn(*args, **kwargs)


class Reporter(Protocol):
    """Where progress goes: rich on the console, Prefect artifacts in a flow run, the log otherwise."""

    def stage(self, message: str) -> None: ...
    def progress(self, label: str, done: int, total: int | None, info: str = "") -> None: ...


class QuietReporter:
    """Stages to the log, progress nowhere (library use, tests)."""

    def stage(self, message: str) -> None:
        log.info(message)

    def progress(self, label: str, done: int, total: int | None, info: str = "") -> None:
        pass


class Eta:
    """Remaining time of each progress label at the rate seen since its first report (what reporters show)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._first: dict[str, tuple[float, int]] = {}

    def annotate(self, label: str, done: int, total: int | None, info: str = "") -> str:
        """`info` with 'ETA 3m05s' after it, once a rate is known (and until done)."""
        now = self._clock()
        first = self._first.get(label)
        if first is None or done < first[1]:  # a label seen for the first time, or started over
            self._first[label] = first = (now, done)
        if not total or done >= total or done <= first[1] or now <= first[0]:
            return info
        rate = (done - first[1]) / (now - first[0])
        return ", ".join(part for part in (info, f"ETA {duration_text((total - done) / rate)}") if part)


def duration_text(seconds: float) -> str:
    """42s, 3m05s, 1h02m."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"

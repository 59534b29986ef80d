"""How a loop's story is told once and run from anywhere: plain steps, a step runner and a reporter.

Every story (refresh, rebuild, behaviour eval, retrain, rollback) is one function in tasks/ that calls its
steps through `step(fn, *args)` and reports through a `Reporter`. The CLI runs it with the defaults (direct
calls, rich progress); a Prefect flow passes a runner that wraps each step in a task and a reporter that
writes progress artifacts. So both paths do exactly the same work.
"""

from __future__ import annotations

import logging
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

"""Story progress on the console: one rich bar per label (documents, training steps, eval cases), with an ETA."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from hybridops.flows.cli.common import console as stderr_console
from hybridops.tasks.core.story import Eta


class RichReporter:
    """Stages as log lines, progress as bars on stderr (stdout stays for --json)."""

    def __init__(self, progress: Progress):
        self.bars = progress
        self.ids: dict[str, int] = {}
        self.eta = Eta()

    def stage(self, message: str) -> None:
        self.bars.console.log(message)

    def progress(self, label: str, done: int, total: int | None, info: str = "") -> None:
        self.show(label, done, total, self.eta.annotate(label, done, total, info))

    def show(self, label: str, done: int, total: int | None, info: str = "") -> None:
        """One bar as given (a followed flow run's progress already carries its own ETA)."""
        if label not in self.ids:  # created at `done`: a bar joined mid-way starts there
            self.ids[label] = self.bars.add_task(label, total=total, completed=done, info=info)
        self.bars.update(self.ids[label], completed=done, total=total, info=info)


@contextmanager
def rich_reporter(transient: bool = False, console: Console | None = None) -> Iterator[RichReporter]:
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
               TimeElapsedColumn())
    with Progress(*columns, console=console or stderr_console, transient=transient) as progress:
        yield RichReporter(progress)

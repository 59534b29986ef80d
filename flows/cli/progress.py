"""Story progress on the console: one rich bar per label (documents, training steps, eval cases)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from hybridops.flows.cli.common import console


class RichReporter:
    """Stages as log lines, progress as bars on stderr (stdout stays for --json)."""

    def __init__(self, progress: Progress):
        self.bars = progress
        self.ids: dict[str, int] = {}

    def stage(self, message: str) -> None:
        self.bars.console.log(message)

    def progress(self, label: str, done: int, total: int | None, info: str = "") -> None:
        if label not in self.ids:
            self.ids[label] = self.bars.add_task(label, total=total, info="")
        self.bars.update(self.ids[label], completed=done, total=total, info=info)


@contextmanager
def rich_reporter(transient: bool = False) -> Iterator[RichReporter]:
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
               TimeElapsedColumn())
    with Progress(*columns, console=console, transient=transient) as progress:
        yield RichReporter(progress)

"""Rich progress bars with a throughput column (pairs/s, docs/s) on stderr."""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

from rich.console import Console
from rich.markup import escape
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task,
                           TextColumn, TimeElapsedColumn, TimeRemainingColumn)
from rich.text import Text


class RateColumn(ProgressColumn):
    """``123.4 pairs/s`` from Rich's smoothed task speed."""

    def __init__(self, unit: str = "pairs"):
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        if speed is None:
            return Text(f"- {self.unit}/s", style="progress.data.speed")
        return Text(f"{speed:,.1f} {self.unit}/s", style="progress.data.speed")


class Reporter:
    """Creates progress bars (or nothing, when disabled)."""

    def __init__(self, enabled: bool = True, console: Console | None = None):
        self.enabled = enabled
        self.console = console or Console(stderr=True)

    @contextlib.contextmanager
    def task(self, description: str, total: int, unit: str = "pairs"
             ) -> Iterator[Callable[[int], None]]:
        """Yield ``advance(n)``; the bar shows ``done/total`` and ``<rate> <unit>/s``."""
        if not self.enabled or total <= 0:
            yield lambda n: None
            return
        prog = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                        MofNCompleteColumn(), RateColumn(unit), TimeElapsedColumn(),
                        TimeRemainingColumn(), console=self.console, transient=False)
        with prog:
            # the column renders the description as markup: a variant's [options] stay text
            tid = prog.add_task(escape(description), total=total)
            yield lambda n: prog.advance(tid, n)

    def log(self, message: str) -> None:
        if self.enabled:
            self.console.print(message, highlight=False, markup=False)

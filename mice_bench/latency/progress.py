"""The progress bar of ``mice-bench latency``: a Rich bar on stderr with the rows (variant x
sweep point) done out of all rows, the variant being measured and its timed runs so far.

Disabled with ``--no-progress`` and whenever stderr is not a terminal (pipes, CI logs, tests):
the run's log lines (model, matmul peak, busy machine, each row prepared) are printed either
way. :func:`~mice_bench.latency.runner.run_latency` drives any object with the methods of
:class:`NoProgress`.
"""

from __future__ import annotations

from rich.console import Console


class NoProgress:
    """The callbacks :func:`~mice_bench.latency.runner.run_latency` calls (all no-ops)."""

    def start(self, total_rows: int) -> None:
        """``total_rows``: every (variant, sweep point) of the run."""

    def stage(self, variant: str, what: str) -> None:
        """``variant`` enters a stage (``warm-up``, ``timing``)."""

    def run_done(self, variant: str, runs: int, fraction: float | None = None) -> None:
        """One timed run of ``variant`` finished; it has ``runs`` timed runs now and has
        done ``fraction`` (0..1) of what its row needs (``--runs`` and ``--min-seconds``)."""

    def row_done(self, variant: str) -> None:
        """The row of ``variant`` at the current sweep point is measured."""

    def stop(self) -> None:
        """The run is over (also on errors)."""


class LatencyProgress(NoProgress):
    """A Rich progress bar: ``latency ━━━━ rows 3/6 · mice-l4+3 timing, 4 runs · 0:00:12``."""

    def __init__(self, enabled: bool = True, console: Console | None = None):
        if console is None:
            from ..console import err_console

            console = err_console
        self.console = console
        self.enabled = bool(enabled) and console.is_terminal
        self._prog = None
        self._task = None

    def start(self, total_rows: int) -> None:
        if not self.enabled or self._prog is not None:
            return
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self._prog = Progress(TextColumn("[bold]latency[/]"), BarColumn(),
                              TextColumn("rows {task.fields[rows]}/{task.total:.0f}"),
                              TextColumn("· {task.fields[variant]} {task.fields[what]}"),
                              TimeElapsedColumn(), console=self.console, transient=False)
        self._prog.start()
        self._rows = 0
        self._partial: dict[str, float] = {}
        self._task = self._prog.add_task("latency", total=total_rows, rows=0, variant="",
                                         what="")

    def _update(self, **kw) -> None:
        if self._prog is not None:
            # the bar moves with every timed run: rows done + the parts of rows being timed
            done = self._rows + sum(self._partial.values())
            self._prog.update(self._task, completed=done, rows=self._rows, **kw)

    def stage(self, variant: str, what: str) -> None:
        from rich.markup import escape

        # the columns render fields as markup: a variant's [options] stay text
        self._update(variant=escape(variant), what=escape(what))

    def run_done(self, variant: str, runs: int, fraction: float | None = None) -> None:
        if self._prog is None:
            return
        if fraction is not None:
            self._partial[variant] = max(0.0, min(1.0, float(fraction)))
        from rich.markup import escape

        self._update(variant=escape(variant),
                     what=f"timing, {runs} run{'s' if runs != 1 else ''}")

    def row_done(self, variant: str) -> None:
        if self._prog is None:
            return
        self._partial.pop(variant, None)
        self._rows += 1
        self._update()

    def stop(self) -> None:
        if self._prog is not None:
            self._prog.stop()
            self._prog = None

"""``mice-bench report``: tables and figures of ``report/`` from ``results/``."""

from __future__ import annotations

from pathlib import Path

import typer

HELP = """Regenerate `report/` (`README.md`, `tables/*.md|tex`, `figures/*.png|pdf`) from the results
files under --results. Reads results only: never runs a model. Deterministic: regenerating
from the same results gives the same files. See docs/report.md."""


def register(app: typer.Typer) -> None:
    from ..console import console, user_errors

    @app.command("report", help=HELP)
    @user_errors
    def report(
        results: Path = typer.Option(Path("results"), "--results",
                                     help="folder with latency/ and effectiveness/ results"),
        out: Path = typer.Option(Path("report"), "--out", help="output folder"),
        ablations: Path = typer.Option(Path("ablations"), "--ablations",
                                       help="study files (one effectiveness table per study)"),
    ) -> None:
        from ..errors import UsageError
        from ..results import ResultFileError
        from .build import build_report

        if not results.is_dir():
            raise UsageError(f"results folder {results} does not exist")
        try:
            res = build_report(results, out, ablations)
        except ResultFileError as e:
            raise UsageError(str(e)) from None
        console.print(f"report written to {out}/: {len(res.files)} files from "
                      f"{res.latency_files} latency file(s) and {res.effectiveness_records} "
                      "effectiveness result(s)", highlight=False)
        for s in res.skipped:
            console.print(f"  skipped: {s}", highlight=False, markup=False)

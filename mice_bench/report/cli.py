"""``mice-bench report``: tables and figures of ``report/`` from ``results/``."""

from __future__ import annotations

from pathlib import Path

import typer

HELP = """Regenerate `report/` (`README.md`, `tables/*.md|tex`, `figures/*.png|pdf`) from the results
files under --results. Reads results only: never runs a model. Deterministic: regenerating
from the same results gives the same files. See docs/report.md."""


def check_out(out: Path) -> None:
    """Prove the report can be written before anything is read: ``out`` and its
    ``tables/`` and ``figures/`` folders are (or can be made) writable folders."""
    from ..results import check_output

    for probe in (out / "README.md", out / "tables" / "x.md", out / "figures" / "x.png"):
        check_output(probe, "--out")


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
            raise UsageError(f"--results {results}: no such folder (expected the folder "
                             "with latency/ and effectiveness/ results)")
        if ablations.exists() and not ablations.is_dir():
            raise UsageError(f"--ablations {ablations}: not a folder (expected the folder of "
                             "study files *.toml)")
        check_out(out)
        try:
            res = build_report(results, out, ablations)
        except ResultFileError as e:
            raise UsageError(str(e)) from None
        console.print(f"report written to {out}/: {len(res.files)} files from "
                      f"{res.latency_files} latency file(s) and {res.effectiveness_records} "
                      "effectiveness result(s)", highlight=False, markup=False)
        for s in res.skipped:
            console.print(f"  skipped: {s}", highlight=False, markup=False)

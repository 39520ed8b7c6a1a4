"""``mice-bench run STUDY``: run an ablation study, skipping results that exist."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

HELP = """Run an ablation study file (ablations/NAME.toml, or just NAME): its latency
workloads and effectiveness evaluations, skipping work whose results already exist under
--results (--overwrite to redo). See docs/report.md for the study-file schema."""


def resolve_study_path(name: str) -> Path:
    p = Path(name)
    if p.is_file() or p.suffix == ".toml" or "/" in name:
        return p
    return Path("ablations") / f"{name}.toml"


def register(app: typer.Typer) -> None:
    from rich.markup import escape

    from ..console import console, err_console, user_errors

    @app.command("run", help=HELP)
    @user_errors
    def run(
        study: str = typer.Argument(..., help="study file, e.g. ablations/mice.toml or mice"),
        results: Path = typer.Option(Path("results"), "--results", help="results folder"),
        overwrite: bool = typer.Option(False, "--overwrite", help="redo existing results"),
        dry_run: bool = typer.Option(False, "--dry-run", help="print the plan, run nothing"),
        only: Optional[str] = typer.Option(None, "--only",
                                           help="latency | effectiveness: one part only"),
        model: Optional[list[str]] = typer.Option(
            None, "--model", help="effectiveness model(s) instead of the study's"),
        workload: Optional[list[str]] = typer.Option(
            None, "--workload", help="only these latency workloads (by name)"),
        size: Optional[str] = typer.Option(
            None, "--size", help="a [sizes.NAME] of the study (e.g. smoke | gpu; default: "
                                 "its default_size)"),
        base_model: Optional[str] = typer.Option(
            None, "--base-model", help="training studies: the base encoder instead of the "
                                       "study's training.base (HF id or path)"),
    ) -> None:
        from ..errors import UsageError
        from .runner import plan_study, run_study
        from ..study import load_study

        st = load_study(resolve_study_path(study), size=size)
        if st.sizes and st.size is None:
            raise UsageError(f"study {st.name} has sizes ({', '.join(st.sizes)}): pass --size")
        if st.training is not None:
            from .training_study import plan_training_study, study_root

            if model or workload:
                raise UsageError("--model and --workload do not apply to a training study "
                                 "(it evaluates the models it trains; --base-model sets the "
                                 "base encoder)")
            tasks = plan_training_study(
                st, results, overwrite=overwrite, only=only, base_model=base_model,
                log=lambda s: console.print(s, highlight=False, markup=False))
            where = f" (size {st.size}, results in {study_root(st, results)})" if st.size \
                else ""
        else:
            if base_model:
                raise UsageError("--base-model is for training studies ([training])")
            tasks = plan_study(st, results, overwrite=overwrite, only=only,
                               models=model or None, workloads=workload or None)
            where = f" (size {st.size})" if st.size else ""
        todo = [t for t in tasks if not t.done]
        console.print(f"study {st.name}{where}: {len(tasks)} task(s), {len(todo)} to run, "
                      f"{len(tasks) - len(todo)} with existing results", highlight=False,
                      markup=False)
        if dry_run:
            from .offline import offline_warnings

            for w in offline_warnings(st, tasks, base_model=base_model):
                err_console.print(f"[yellow]warning:[/] {escape(w)}", highlight=False,
                                  soft_wrap=True)
            for t in tasks:
                state = "exists" if t.done else "to run"
                cmd = "" if t.done or not t.args else f": mice-bench {' '.join(t.args)}"
                console.print(f"  [{state}] {t.label}{cmd}", highlight=False, markup=False)
            return
        run_study(st, tasks, log=lambda s: console.print(s, highlight=False, markup=False))
        console.print(f"study {st.name} done", highlight=False, markup=False)

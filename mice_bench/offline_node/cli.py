"""``mice-bench offline-node stage | run | collect``: the suite on a GPU node without internet."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

HELP = """Run the GPU suite on a node without internet (docs/gpu.md): `stage` a folder on a
connected machine (model, collections, BM25 candidates, training data, wheels, this
mice-bench), copy it to the node and `run` it there (`bash FOLDER/run.sh`), then `collect` the
archive it writes into results/ and the report."""

STAGE_HELP = """Build FOLDER on a connected machine: all-MiniLM-L6-v2 in fp16 (packed), the
queries, BM25 top-100 candidates and candidate texts of DL19, DL20 and NFCorpus test, NFCorpus
training groups, wheels you name, this mice-bench and its GPU checks, and FOLDER/run.sh."""

RUN_HELP = """Run the suite from a staged FOLDER (on the node; `bash FOLDER/run.sh` does the
same without an installed mice-bench): GPU checks, latency (paper and rerank protocols, fp32 /
bf16, eager / --compile, with / without the K/V cache) and a training mini-replication, each
step inside one time budget. Writes OUT/mice-gpu-results.tar.gz, summary.txt and run.log."""

COLLECT_HELP = """Turn what a node run wrote (mice-gpu-results.tar.gz, or its folder) into
results/gpu/TAG/ (summary, TREC runs evaluated with ir_measures against BM25) and, with
--report, its GPU latency into results/latency/gpu-TAG/ and report/."""


def register(app: typer.Typer) -> None:
    from rich.markup import escape

    from ..console import console, err_console, user_errors
    from .stage import DEFAULT_MAX_MIB

    group = typer.Typer(help=HELP, no_args_is_help=True)
    app.add_typer(group, name="offline-node")

    @group.command("stage", help=STAGE_HELP)
    @user_errors
    def stage(
        folder: Path = typer.Argument(
            ..., help="the folder to build: new, empty, or staged before (then replaced)"),
        datasets: str = typer.Option("dl19,dl20,nfcorpus", "--datasets",
                                     help="comma list of dl19, dl20, nfcorpus"),
        depth: int = typer.Option(100, "--depth", help="BM25 candidates per query"),
        limit_queries: Optional[int] = typer.Option(
            None, "--limit-queries", help="first N queries of every set (a small folder)"),
        training: bool = typer.Option(True, "--training/--no-training",
                                      help="stage the NFCorpus training groups"),
        negatives_depth: int = typer.Option(
            30, "--negatives-depth", help="training negatives: BM25 top N minus the judged"),
        max_positives: int = typer.Option(4, "--max-positives",
                                          help="judged positives kept per training query"),
        wheel: Optional[list[str]] = typer.Option(
            None, "--wheel", metavar="NAME==VERSION",
            help="a package the node lacks: its manylinux x86-64 wheel goes into wheels/ "
                 "(repeatable; no dependencies are fetched)"),
        python_version: Optional[str] = typer.Option(
            None, "--python-version", help="the node's Python for --wheel (default: this one)"),
        check: bool = typer.Option(False, "--check",
                                   help="check the fp16 model's scores against fp32"),
        source: bool = typer.Option(
            True, "--source/--no-source",
            help="copy this mice-bench into FOLDER/src (--no-source: the node has it)"),
        max_mib: float = typer.Option(
            DEFAULT_MAX_MIB, "--max-mib",
            help="largest transfer in MiB (exit 1 when within 2 MiB of it); 0: no limit"),
        count_checkout: bool = typer.Option(
            False, "--count-checkout",
            help="count this checkout's files in the transfer (when it travels beside FOLDER)"),
        cache: Optional[Path] = typer.Option(
            None, "--cache", help="keep the first-stage and collection caches here for the "
                                  "next staging (default: a temporary folder)"),
    ) -> None:
        from .stage import StageOptions
        from .stage import stage as build

        opts = StageOptions(datasets=[d.strip() for d in datasets.split(",") if d.strip()],
                            depth=depth, limit_queries=limit_queries, training=training,
                            negatives_depth=negatives_depth, max_positives=max_positives,
                            wheels=list(wheel or []), check=check, source=source,
                            max_mib=max_mib, count_checkout=count_checkout, cache=cache)
        if python_version:
            opts.python_version = python_version
        _, verdict = build(folder, opts)
        if verdict:
            err_console.print(f"[bold yellow]warning:[/] {escape(verdict)}", highlight=False,
                              soft_wrap=True)
            raise typer.Exit(code=1)

    @group.command("run", help=RUN_HELP)
    @user_errors
    def run(
        folder: Path = typer.Argument(..., help="the staged folder"),
        out: Path = typer.Option(Path("offline-node-out"), "--out", envvar="OUT",
                                 help="where the archive, summary.txt and run.log go: a new "
                                      "or empty folder, or an earlier run's"),
        budget_s: Optional[int] = typer.Option(
            None, "--budget-s", envvar="MICE_GPU_BUDGET_S",
            help="seconds for the whole run; steps that no longer fit are skipped, the "
                 "training study fills what is left (default 450; 3600 with --rehearse)"),
        steps: str = typer.Option("env,tests,latency,train", "--steps",
                                  envvar="MICE_GPU_STEPS",
                                  help="a subset of env, tests, latency, train"),
        latency: Optional[str] = typer.Option(
            None, "--latency", envvar="MICE_GPU_LATENCY",
            help="latency sub-steps (default all but rerank-fp32-eager): paper-bf16, "
                 "rerank-bf16-eager, rerank-bf16-eager-kv, paper-fp32, rerank-bf16-compile, "
                 "rerank-bf16-compile-kv, rerank-fp32-eager"),
        train_variants: Optional[str] = typer.Option(
            None, "--train-variants", envvar="MICE_GPU_TRAIN_VARIANTS",
            help="variants of the training study (default ce,mice-l2+2)"),
        pytest_k: Optional[str] = typer.Option(
            None, "--pytest-k", envvar="MICE_GPU_PYTEST_K",
            help="a pytest -k expression for the GPU checks (default "
                 "'not latency_compile_flag'; '' runs all)"),
        rehearse: bool = typer.Option(
            False, "--rehearse", envvar="MICE_GPU_REHEARSAL",
            help="tiny sizes on the CPU: check a staged folder before it travels"),
        python: Optional[str] = typer.Option(None, "--python", envvar="PYTHON",
                                             help="the Python that runs the steps"),
    ) -> None:
        import sys

        from .node import RunOptions, run_node, split_list

        opts = RunOptions(out=out, budget_s=budget_s, steps=split_list(steps),
                          latency=None if latency is None else split_list(latency),
                          train_variants=train_variants, pytest_k=pytest_k,
                          rehearse=rehearse, python=python or sys.executable)
        rc = run_node(folder, opts)
        if rc:
            raise typer.Exit(code=rc)

    @group.command("collect", help=COLLECT_HELP)
    @user_errors
    def collect(
        source: Path = typer.Argument(..., help="mice-gpu-results.tar.gz or its folder"),
        staged: Path = typer.Option(Path("gpu-carry"), "--staged",
                                    help="the staged folder the run used (its BM25 runs)"),
        tag: Optional[str] = typer.Option(None, "--tag",
                                          help="results/gpu/TAG, a new folder (default: "
                                               "GPU-UTC time of the run)"),
        dest: Path = typer.Option(Path("results/gpu"), "--dest",
                                  help="where the run's folder goes"),
        report: bool = typer.Option(
            True, "--report/--no-report",
            help="put a GPU run's latency into results/latency/ and regenerate report/"),
        results: Path = typer.Option(Path("results"), "--results", help="results folder"),
        report_out: Path = typer.Option(Path("report"), "--report-out",
                                        help="report folder"),
        ablations: Path = typer.Option(Path("ablations"), "--ablations",
                                       help="study files (for the report)"),
    ) -> None:
        from .collect import collect as gather

        res = gather(source, dest, staged, tag,
                     latency_results=results / "latency" if report else None)
        if res.effectiveness_md:
            console.print(res.effectiveness_md, highlight=False, markup=False, soft_wrap=True)
        summary = res.folder / "summary.txt"
        console.print(summary.read_text(), highlight=False, markup=False, soft_wrap=True)
        for note in res.notes:
            console.print(note, highlight=False, markup=False)
        console.print(f"wrote {res.folder}", highlight=False, markup=False)
        if res.latency_dir is not None:
            from ..report.build import build_report

            built = build_report(results, report_out, ablations)
            console.print(f"latency copied to {res.latency_dir}; report written to "
                          f"{report_out}/ ({len(built.files)} files)", highlight=False,
                          markup=False)

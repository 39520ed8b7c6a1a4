"""``mice-bench train``: parse, validate everything before any expensive work, train, print."""

from __future__ import annotations

import typer

HELP = """Train (fine-tune or distil) a re-ranker in any interaction variant and write a
checkpoint that `effectiveness --model DIR` and `latency --model DIR` read as it is.
INIT (--model) is a Hugging Face id or path (a base encoder, a trained cross-encoder) or a
mice-bench checkpoint; DATA (--data) an ir_datasets id with training qrels (hard negatives
from --first-stage) or a JSONL of (query, positive, negatives[, scores]). `--recipe paper`
sets the MICE paper's hyper-parameters (each stays overridable). A loss, gradient or weight
that becomes non-finite stops the run (exit 1) and nothing of that step is saved. Under `torchrun
--nproc-per-node N -m mice_bench.cli train ...` it runs data-parallel with the same global
batch. See docs/training.md.
"""


class RichReporter:
    """A Rich progress bar: step, loss, pairs/s, ETA; validation lines above it."""

    def __init__(self, enabled: bool = True):
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeElapsedColumn, TimeRemainingColumn)

        from ..console import err_console

        self.console = err_console
        self.enabled = enabled
        self.progress = Progress(
            TextColumn("[bold]train[/]"), BarColumn(), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[pps]} pairs/s"),
            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            console=err_console, disable=not enabled, transient=False)
        self.task = None
        self._pps = None

    def start(self, total: int, done: int, info: dict) -> None:
        if not self.enabled:
            return
        d = info["data"]
        self.console.print(
            f"training {info['variant']} ({info['trainable_params']:,} trainable parameters) "
            f"on {info['device']} x{info['world_size']}, {info['precision']}; "
            f"{d['train_queries']} training queries, {d['val_queries']} validation queries"
            + (f" (resuming at step {done})" if done else ""), highlight=False, markup=False)
        for n in d.get("notes", []):
            self.console.print(f"note: {n}", highlight=False, markup=False)
        self.progress.start()
        self.task = self.progress.add_task("train", total=total, completed=done, loss="-",
                                           pps="-")

    def step(self, step: int, loss: float, pairs_per_s: float, lr: float) -> None:
        if self.task is None:
            return
        self._pps = pairs_per_s if self._pps is None else 0.9 * self._pps + 0.1 * pairs_per_s
        self.progress.update(self.task, completed=step, loss=f"{loss:.4f}",
                             pps=f"{self._pps:.1f}")

    def validation(self, step: int, metrics: dict, best: bool) -> None:
        if not self.enabled:
            return
        vals = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())
        self.progress.console.print(f"step {step}: validation {vals}" + (" (best)" if best else ""),
                                    highlight=False)

    def message(self, text: str) -> None:
        if self.enabled:
            (self.progress.console if self.task is not None else self.console).print(
                text, highlight=False, markup=False)

    def close(self) -> None:
        if self.task is not None:
            self.progress.stop()
            self.task = None


def register(app: typer.Typer) -> None:
    from ..console import console, user_errors
    from ..options import typer_command
    from .config import PANELS, TrainConfig

    def train_cmd(opts: dict) -> None:
        import os

        from .config import make_config
        from .loop import load_model, load_teacher, preflight, prepare_data, train
        from .trainer import TrainingDiverged

        recipe = opts.pop("recipe", None)
        progress = opts["progress"]
        base = make_config(recipe, **opts)
        main = int(os.environ.get("RANK", "0")) == 0
        if base.loss == "marginmse" and base.teacher is None:
            from .data import is_jsonl

            if not is_jsonl(base.data):
                from ..errors import UsageError

                raise UsageError("--loss marginmse needs teacher scores: give --teacher MODEL "
                                 "or a JSONL whose lines have 'scores'")
        seeds = [base.seed + i for i in range(base.repeats)]
        configs = []
        for s in seeds:
            o = base.output if base.repeats == 1 else f"{base.output}-seed{s}"
            configs.append(make_config(recipe, **{**opts, "seed": s, "output": o}))
        # validate what can fail before any expensive work: outputs (and a resumed run's
        # configuration), the model and its variant, the teacher
        for c in configs:
            preflight(c)
        first = load_model(configs[0])
        tch = load_teacher(configs[0])
        reporter = RichReporter(enabled=progress and main)
        data_ = prepare_data(configs[0], tch, reporter)
        del tch
        results = []
        for i, c in enumerate(configs):
            rep = RichReporter(enabled=progress and main) if i else reporter
            try:
                mdl = first if i == 0 else load_model(c)
                results.append(train(c, rep, model=mdl, data=data_))
            except TrainingDiverged as e:   # a loud stop: one line, exit 1, nothing saved
                rep.close()
                from rich.markup import escape

                from ..console import err_console

                err_console.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False,
                                  soft_wrap=True)
                raise typer.Exit(code=1) from None
            finally:
                rep.close()
        if not main:
            return
        for r in results:
            best = (f"; best {r.best_metrics and ', '.join(f'{k} {v:.4f}' for k, v in r.best_metrics.items())}"
                    f" at step {r.best_step}" if r.best_step else "")
            pps = f"{r.pairs_per_s:.1f}" if r.pairs_per_s else "-"
            console.print(f"wrote {r.output} ({r.selected}{best}); {pps} pairs/s; log "
                          f"{r.log_path}", highlight=False, markup=False)
        models = " ".join(f"--model {r.output}" for r in results)
        console.print(f"evaluate: mice-bench effectiveness {models} --variants "
                      f"{first.spec} ...", highlight=False, markup=False)

    typer_command(app, "train", (TrainConfig,), train_cmd, help=HELP, wrap=user_errors,
                  given_only=True, panels=PANELS)

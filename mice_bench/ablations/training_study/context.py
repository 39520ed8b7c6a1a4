"""What the tasks of one training-study run share (:class:`Context`): the study, its folders,
the training data (loaded once), the resolved steps, the record behind ``study.json``."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ...naming import slug
from ...study import Study, TrainRole, expand_shared_data
from .paths import checkpoints_dir, run_prefix, study_root


@dataclass
class Context:
    """What the tasks of one run share: the study, its folders, the data, derived steps."""

    study: Study
    results: Path
    base: str
    log: Callable[[str], None] = print
    progress: bool = False
    started: float = field(default_factory=time.perf_counter)
    data: Any = None                      # TrainingData, loaded once
    steps: dict[str, int] = field(default_factory=dict)      # label -> resolved steps
    calibration: dict = field(default_factory=dict)
    record: dict = field(default_factory=dict)               # -> study.json
    load_start: tuple | None = None

    @property
    def root(self) -> Path:
        return study_root(self.study, self.results)

    @property
    def prefix(self) -> str:
        return run_prefix(self.study)

    def output(self, r: TrainRole) -> Path:
        return checkpoints_dir(self.study) / f"{self.prefix}-{slug(r.label)}"

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    # ------------------------------------------------------------------ configs
    def steps_of(self, r: TrainRole) -> int | None:
        if r.steps != "auto":
            return int(r.steps)
        return self.steps.get(r.label)

    def train_config(self, r: TrainRole, steps: int | None = None, output: Path | None = None,
                     log_dir: str | None = None):
        """The typed :class:`~mice_bench.training.TrainConfig` of one system."""
        from ...training import make_config

        tr = self.study.training
        o = {k: v for k, v in tr.options.items() if k not in ("lr", "warmup")}  # the role's
        for k in ("first_stage", "docs"):
            if k in o:
                o[k] = expand_shared_data(o[k])
        init = self.base if r.init == "base" else str(self.output(tr.teacher))
        steps = steps if steps is not None else self.steps_of(r)
        return make_config(
            model=init, variant=r.variant, data=expand_shared_data(tr.data),
            output=str(output or self.output(r)), loss=r.loss, group_size=r.group_size,
            steps=steps or 1, batch_size=r.batch_size, lr=r.lr, warmup=r.warmup,
            log_dir=log_dir or str(self.results / "training"), overwrite=True,
            progress=self.progress, save_checkpoints=False, **o)

    def load_data(self):
        if self.data is None:
            from ...training.loop import prepare_data

            t = time.perf_counter()
            cfg = self.train_config(self.study.training.teacher, steps=1)
            self.data = prepare_data(cfg, None, LogReporter(self.log))
            self.record.setdefault("timings_s", {})["data"] = round(time.perf_counter() - t, 1)
            s = self.data.summary()
            self.log(f"training data: {s['train_queries']} queries, {s['positives']} "
                     f"positives, {s['negatives']} negatives ({s['source']})")
        return self.data


class LogReporter:
    """A TrainReporter that logs messages only (no progress bar)."""

    def __init__(self, log):
        self._log = log

    def start(self, total, done, info):
        self._log(f"  training {info['variant']} on {info['device']} ({info['precision']}), "
                  f"{total} steps")

    def step(self, *a): ...

    def validation(self, *a): ...

    def message(self, text):
        self._log(f"  {text}")

    def close(self): ...


def autocast_context(ctx: Context):
    import contextlib

    import torch

    from ...training.trainer import autocast_dtype

    tr = ctx.study.training
    dev = training_device(tr.options.get("device", "auto"))
    dt = autocast_dtype(tr.options.get("precision", "auto"), torch.device(dev))
    return torch.autocast(torch.device(dev).type, dtype=dt) if dt is not None \
        else contextlib.nullcontext()


def training_device(pref: str) -> str:
    import torch

    if pref == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return pref

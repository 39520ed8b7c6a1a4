"""The typed configuration of a training run (:class:`TrainConfig`) and the recipes.

Every option of ``mice-bench train`` is a field here; :func:`make_config` merges, in order of
precedence, the options given explicitly, the recipe's values (``--recipe paper``) and the
defaults, then validates everything that can be checked without loading a model or data.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from ..errors import UsageError
from ..options import option
from ..results import default_results_dir

LOSSES = ("marginmse", "lce", "bce")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
SCHEDULES = ("linear", "constant")
VAL_METRICS = ("nDCG@10", "RR@10")
#: the largest --lr accepted: AdamW moves every weight by about lr per step, so a fine-tuning
#: rate above this one destroys the model in a step
MAX_LR = 1.0

#: the mice_v1 hyper-parameters of the MICE paper (xpmir/mice ``experiments/mice_v1``):
#: MarginMSE distillation, batch 32, lr 7e-6, 5,000 warm-up steps, no weight decay, adam eps
#: 1e-8, gradient-norm clipping 1.0, 2,000 "epochs" of 100 steps, validation every 50 epochs,
#: a checkpoint every 100 epochs, validation on the top 100, seed 12, 3 repetitions; the
#: reference trains Hugging Face modules in train mode, so with their dropout (0.1 on BERT).
RECIPES: dict[str, dict[str, Any]] = {
    "paper": {
        "model": "microsoft/MiniLM-L12-H384-uncased",
        "loss": "marginmse", "batch_size": 32, "group_size": 2, "lr": 7e-6, "warmup": 5000,
        "weight_decay": 0.0, "adam_eps": 1e-8, "grad_clip": 1.0, "steps": 200_000,
        "val_every": 5_000, "checkpoint_every": 10_000, "val_depth": 100, "seed": 12,
        "repeats": 3, "schedule": "linear", "dropout": True,
    },
}

#: fields that may change between a run and its ``--resume`` (they do not change the weights)
RESUME_FREE = ("output", "resume", "overwrite", "progress", "log_dir", "checkpoint_every",
               "keep_checkpoints", "save_checkpoints", "cache_dir", "device", "repeats", "log_every", "eval_batch_size")


#: the groups of ``mice-bench train --help``, in order
PANELS = MODEL, DATA, LOSS, OPTIMISATION, RUNTIME, OUTPUT = (
    "Model", "Data and validation", "Loss", "Optimisation", "Runtime", "Output")


@dataclass
class TrainConfig:
    """Everything that defines a training run (see ``docs/training.md``); each option of
    ``mice-bench train`` declared once (:mod:`mice_bench.options`)."""

    model: str = option(
        "minilm-l6", study=False, panel=MODEL,
        help="INIT: HF id or path, mice-bench checkpoint, minilm-l6|minilm-l12 (random "
             "weights); --recipe paper: microsoft/MiniLM-L12-H384-uncased")
    # None: the checkpoint's stored variant, else ``ce``
    variant: str | None = option(
        None, study=False, panel=MODEL,
        help="interaction variant (default: the checkpoint's, else ce)")
    data: str = option("", required=True, panel=DATA,
                       help="ir_datasets id with qrels, or JSONL")
    output: str = option("", required=True, study=False, panel=OUTPUT,
                         help="checkpoint directory to write")
    recipe: str | None = option(
        None, choices=tuple(RECIPES), study=False, panel=OPTIMISATION,
        help="preset hyper-parameters, each still overridable: paper (the MICE paper's)")
    # data
    first_stage: str = option("bm25", panel=DATA, help="bm25 | run:PATH (hard negatives)")
    docs: str | None = option(None, panel=DATA,
                              help="JSONL (doc_id, text) of the document texts")
    negatives_depth: int = option(100, panel=DATA, help="negatives from the top N (100)")
    limit_queries: int | None = option(None, panel=DATA, help="first N training queries only")
    val_queries: int = option(50, panel=DATA, help="held-out queries (50; 0: none)")
    val_depth: int = option(100, panel=DATA, help="first-stage candidates re-ranked for "
                                                  "validation (100)")
    val_every: int = option(0, panel=DATA, help="steps between validations (0: end)")
    val_metric: str = option("nDCG@10", choices=VAL_METRICS, panel=DATA,
                             help="nDCG@10 | RR@10")
    # loss
    loss: str = option("lce", choices=LOSSES, study=False, panel=LOSS,
                       help="marginmse | lce | bce (default lce)")
    teacher: str | None = option(None, study=False, panel=LOSS,
                                 help="teacher model for marginmse (scored once, cached)")
    teacher_variant: str | None = option(None, study=False, panel=LOSS)
    # documents per query: 1 positive + negatives
    group_size: int | None = option(
        None, study=False, panel=LOSS,
        help="documents per query: 1 positive + negatives (lce 8, bce 2, marginmse 2)")
    # optimisation
    steps: int = option(1000, panel=OPTIMISATION, help="optimizer steps (1000)")
    batch_size: int = option(32, panel=OPTIMISATION, help="queries per step, all ranks (32)")
    grad_accum: int = option(1, panel=OPTIMISATION)
    lr: float = option(2e-5, panel=OPTIMISATION, help="2e-5")
    warmup: int | None = option(None, panel=OPTIMISATION,
                                help="warm-up steps (10 % of --steps)")
    # linear: warm-up then linear decay to 0
    schedule: str = option("linear", choices=SCHEDULES, panel=OPTIMISATION,
                           help="linear | constant")
    weight_decay: float = option(0.01, panel=OPTIMISATION, help="0.01")
    adam_eps: float = option(1e-8, panel=OPTIMISATION)
    grad_clip: float = option(1.0, panel=OPTIMISATION, help="max grad norm (1.0; 0: none)")
    # the checkpoint's hidden/attention dropout in training
    dropout: bool = option(
        False, spelling="switch", panel=OPTIMISATION,
        help="the checkpoint's dropout while training (off; --recipe paper: on)")
    seed: int = option(0, panel=OPTIMISATION)
    # seeds seed, seed+1, ... (CLI: one output per seed)
    repeats: int = option(1, study=False, panel=OPTIMISATION,
                          help="seeds seed..seed+N-1, outputs OUTPUT-seed<S> (paper: 3)")
    precision: str = option("auto", choices=PRECISIONS, panel=RUNTIME,
                            help="auto | fp32 | bf16 | fp16")
    device: str = option("auto", panel=RUNTIME, help="auto | cpu | cuda[:N]")
    executor: str = option("auto", panel=RUNTIME, help="auto | fast | reference")
    query_max_tokens: int | None = option(32, panel=RUNTIME)
    doc_max_tokens: int | None = option(None, panel=RUNTIME)
    eval_batch_size: int = option(64, panel=RUNTIME)
    # bookkeeping
    # 0: only at validations and at the end
    checkpoint_every: int = option(0, study=False, panel=OUTPUT)
    keep_checkpoints: int = option(2, study=False, panel=OUTPUT)
    save_checkpoints: bool = True       # False: no checkpoint-*.pt (no --resume); studies
    log_every: int = 10
    resume: bool = option(False, spelling="flag", study=False, panel=OUTPUT,
                          help="continue a killed run")
    overwrite: bool = option(False, spelling="flag", study=False, panel=OUTPUT,
                             help="start again over OUTPUT")
    #: training logs; default: the ad-hoc results folder ($MICE_BENCH_RESULTS/training or
    #: ./mice-bench-results/training), never the committed results/ unless asked
    log_dir: str = option(
        default_factory=lambda: str(default_results_dir("training")), study=False,
        panel=OUTPUT, help="training logs (default ./mice-bench-results/training or "
        "$MICE_BENCH_RESULTS/training; committed logs: --log-dir results/training)")
    cache_dir: str | None = option(None, study=False, panel=OUTPUT)
    progress: bool = option(True, spelling="switch", cli_default=True, study=False,
                            panel=OUTPUT, help="progress bar on stderr (only on a terminal)")

    # ------------------------------------------------------------------ derived values
    @property
    def effective_group_size(self) -> int:
        if self.group_size is not None:
            return self.group_size
        return {"marginmse": 2, "bce": 2, "lce": 8}[self.loss]

    @property
    def effective_warmup(self) -> int:
        return self.warmup if self.warmup is not None else self.steps // 10

    @property
    def work_dir(self) -> Path:
        """Checkpoints and the best validation model live beside the output."""
        out = Path(self.output)
        return out.with_name(out.name + ".train")

    def cache_path(self) -> Path:
        if self.cache_dir:
            return Path(self.cache_dir)
        from ..results import cache_dir

        return cache_dir("training")

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["effective_group_size"] = self.effective_group_size
        d["effective_warmup"] = self.effective_warmup
        return d

    def trajectory(self) -> dict[str, Any]:
        """The fields that determine the weights (compared on ``--resume``)."""
        return {k: v for k, v in asdict(self).items() if k not in RESUME_FREE}

    def fingerprint(self) -> str:
        blob = json.dumps(self.trajectory(), sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    # ------------------------------------------------------------------ validation
    def validate(self) -> "TrainConfig":
        """Check every option that needs neither a model nor data; UsageError otherwise."""
        def bad(msg: str):
            raise UsageError(msg)

        if not self.data:
            bad("--data is required: an ir_datasets id with training qrels "
                "(beir/nfcorpus/train, beir/scifact/train, msmarco-passage/train/judged) or "
                "a JSONL file of (query, positive, negatives[, scores])")
        if not self.output:
            bad("--output DIR is required (the trained checkpoint is written there)")
        if self.loss not in LOSSES:
            bad(f"unknown --loss {self.loss!r}; valid: {', '.join(LOSSES)}")
        if self.recipe is not None and self.recipe not in RECIPES:
            bad(f"unknown --recipe {self.recipe!r}; valid: {', '.join(RECIPES)}")
        if self.precision not in PRECISIONS:
            bad(f"unknown --precision {self.precision!r}; valid: {', '.join(PRECISIONS)}")
        if self.schedule not in SCHEDULES:
            bad(f"unknown --schedule {self.schedule!r}; valid: {', '.join(SCHEDULES)}")
        if self.val_metric not in VAL_METRICS:
            bad(f"unknown --val-metric {self.val_metric!r}; valid: {', '.join(VAL_METRICS)}")
        from ..executors import EXECUTOR_CHOICES

        if self.executor not in EXECUTOR_CHOICES:
            bad(f"unknown --executor {self.executor!r}; valid: {', '.join(EXECUTOR_CHOICES)}")
        g = self.effective_group_size
        if self.loss == "marginmse" and g != 2:
            bad(f"--loss marginmse scores (query, positive, negative) triples: --group-size "
                f"must be 2, got {g}")
        if g < 2:
            bad(f"--group-size must be >= 2 (one positive and at least one negative), got {g}")
        for name in ("steps", "batch_size", "grad_accum", "repeats", "eval_batch_size",
                     "negatives_depth", "val_depth", "keep_checkpoints", "log_every"):
            if getattr(self, name) < 1:
                bad(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        for name in ("val_queries", "val_every", "checkpoint_every", "weight_decay",
                     "grad_clip"):
            if getattr(self, name) < 0:
                bad(f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        if self.warmup is not None and self.warmup < 0:
            bad(f"--warmup must be >= 0, got {self.warmup}")
        for name in ("lr", "adam_eps", "weight_decay", "grad_clip"):
            if not math.isfinite(getattr(self, name)):
                bad(f"--{name.replace('_', '-')} must be a finite number, got "
                    f"{getattr(self, name)}")
        if not 0 < self.lr <= MAX_LR:
            bad(f"--lr must be > 0 and <= {MAX_LR:g} (fine-tuning rates are about 1e-6 to "
                f"1e-3), got {self.lr:g}")
        if not self.adam_eps > 0:
            bad(f"--adam-eps must be > 0, got {self.adam_eps}")
        if self.batch_size % self.grad_accum:
            bad(f"--batch-size {self.batch_size} is not a multiple of --grad-accum "
                f"{self.grad_accum}")
        if self.limit_queries is not None and self.limit_queries < 1:
            bad(f"--limit-queries must be >= 1, got {self.limit_queries}")
        if self.teacher is None and self.teacher_variant is not None:
            bad("--teacher-variant needs --teacher MODEL")
        if not (self.first_stage == "bm25" or (self.first_stage.startswith("run:")
                                                and len(self.first_stage) > 4)):
            bad(f"unknown --first-stage {self.first_stage!r}; valid: bm25, run:PATH")
        if self.resume and self.overwrite:
            bad("--resume and --overwrite exclude each other")
        return self


def make_config(recipe: str | None = None, **options: Any) -> TrainConfig:
    """A validated :class:`TrainConfig`: ``options`` (None = not given) over the recipe's
    values over the defaults."""
    names = {f.name for f in fields(TrainConfig)}
    unknown = set(options) - names
    if unknown:
        raise TypeError(f"unknown TrainConfig fields: {sorted(unknown)}")
    values: dict[str, Any] = {}
    if recipe is not None:
        if recipe not in RECIPES:
            raise UsageError(f"unknown --recipe {recipe!r}; valid: {', '.join(RECIPES)}")
        values.update(RECIPES[recipe])
    values.update({k: v for k, v in options.items() if v is not None})
    values["recipe"] = recipe
    return TrainConfig(**values).validate()


__all__ = ["TrainConfig", "make_config", "RECIPES", "LOSSES", "PRECISIONS", "SCHEDULES",
           "VAL_METRICS"]

"""A training-study task's typed configuration and its equivalent command line (what
``--dry-run`` prints)."""

from __future__ import annotations

from ...naming import slug
from ...study import TrainRole, expand_shared_data
from .context import Context


def train_args(ctx: Context, r: TrainRole) -> list[str]:
    """The ``mice-bench train`` command equivalent to a training task (for --dry-run)."""
    tr = ctx.study.training
    steps = ctx.steps_of(r)
    init = ctx.base if r.init == "base" else str(ctx.output(tr.teacher))
    a = ["train", "--model", init, "--variant", r.variant,
         "--data", expand_shared_data(tr.data),
         "--output", str(ctx.output(r)), "--loss", r.loss,
         "--steps", str(steps) if steps else "<auto>", "--batch-size", str(r.batch_size)]
    if r.group_size:
        a += ["--group-size", str(r.group_size)]
    if r.lr:
        a += ["--lr", str(r.lr)]
    if r.warmup is not None:
        a += ["--warmup", str(r.warmup)]
    if r.loss == "marginmse":
        a += ["--teacher", str(ctx.output(tr.teacher))]
    from ...options import table_args
    from ...training.config import TrainConfig

    shared = {k: expand_shared_data(v) if isinstance(v, str) else v
              for k, v in sorted(tr.options.items())
              if k not in ("lr", "warmup")}    # the role's own values (above) win
    return a + table_args(TrainConfig, shared) + ["--log-dir", str(ctx.results / "training"),
                                                  "--overwrite"]


def eval_config(ctx: Context, r: TrainRole):
    from ...effectiveness.plan import ModelRef
    from ..runner import study_config

    return study_config(
        ctx.study.effectiveness.options, datasets=list(ctx.study.effectiveness.datasets),
        models=[ModelRef(str(ctx.output(r)), slug(r.label))], variants=[r.variant],
        baseline="bm25", output_dir=str(ctx.root / "effectiveness"),
        summary_name=f"summary-{slug(r.label)}")


def eval_args(ctx: Context, r: TrainRole) -> list[str]:
    from ...effectiveness.cli import config_to_args

    return config_to_args(eval_config(ctx, r))

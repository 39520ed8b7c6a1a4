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
    for k, v in sorted(tr.options.items()):
        if k not in ("lr", "warmup"):      # the role's own values (above) win
            a += [f"--{k.replace('_', '-')}", expand_shared_data(str(v))]
    return a + ["--log-dir", str(ctx.results / "training"), "--overwrite"]


def eval_config(ctx: Context, r: TrainRole):
    from ...effectiveness.plan import EffectivenessConfig, ModelRef
    from ..runner import per_dataset

    o = ctx.study.effectiveness.options
    listed = lambda k: [expand_shared_data(str(x)) for x in (o[k] if isinstance(o[k], list)  # noqa: E731
                                                 else [o[k]])]
    kw = {k: o[k] for k in ("depth", "test", "correction", "batch_size", "dtype",
                            "limit_queries", "query_max_tokens", "doc_max_tokens") if k in o}
    if "measures" in o:
        kw["measures"] = listed("measures")
    datasets = list(ctx.study.effectiveness.datasets)
    return EffectivenessConfig(
        datasets=datasets, models=[ModelRef(str(ctx.output(r)), slug(r.label))],
        variants=[r.variant], baseline="bm25",
        **per_dataset(listed("first_stage") if "first_stage" in o else [], datasets,
                       "first_stage"),
        **per_dataset(listed("docs") if "docs" in o else [], datasets, "docs"),
        device=o.get("device", "auto"), output_dir=str(ctx.root / "effectiveness"),
        summary_name=f"summary-{slug(r.label)}", **kw)


def eval_args(ctx: Context, r: TrainRole) -> list[str]:
    from ...effectiveness.cli import config_to_args

    return config_to_args(eval_config(ctx, r))

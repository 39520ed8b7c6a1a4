"""The work of a training study's tasks: train a system, score the training pairs with the
teacher, evaluate a system."""

from __future__ import annotations

import shutil
import time
from dataclasses import replace

from ...errors import UsageError
from ...study import TrainRole
from .configs import eval_config
from .context import Context, LogReporter, autocast_context, training_device
from .sizing import save_calibration


def train_role(ctx: Context, r: TrainRole) -> None:
    from ...training import train
    from ...training.loop import load_model

    steps = ctx.steps_of(r)
    if steps is None:
        raise UsageError(f"{r.label}: steps = \"auto\" but no calibration ran")
    data = ctx.load_data()
    if r.loss == "marginmse" and data.teacher is None:
        teacher_scores(ctx)
    cfg = ctx.train_config(r, steps)
    t = time.perf_counter()
    model = load_model(cfg)
    res = train(cfg, LogReporter(ctx.log), model=model, data=data)
    shutil.rmtree(cfg.work_dir, ignore_errors=True)   # no checkpoints were kept anyway
    wall = time.perf_counter() - t
    ctx.record.setdefault("trained", {})[r.label] = {
        "wall_s": round(wall, 1), "steps": steps, "pairs_per_s": res.pairs_per_s,
        "final_loss": res.final_loss}
    pps = f"{res.pairs_per_s:.1f}" if res.pairs_per_s else "-"
    ctx.log(f"  {r.label}: {steps} steps in {wall:.0f} s, {pps} pairs/s, final loss "
            f"{res.final_loss:.4f}" if res.final_loss is not None else f"  {r.label}: done")


def teacher_scores(ctx: Context) -> None:
    from ...training.data import teacher_scores as score
    from ...training.loop import load_teacher

    data = ctx.load_data()
    if data.teacher is not None:
        return
    tr = ctx.study.training
    cfg = replace(ctx.train_config(tr.students[0], steps=1),
                  teacher=str(ctx.output(tr.teacher)))
    t = time.perf_counter()
    model = load_teacher(cfg, training_device(cfg.device))
    model.eval()
    n = sum(len(data.positives[q]) + len(data.negatives[q]) for q in data.queries)
    import torch

    with torch.inference_mode(), autocast_context(ctx):
        data.teacher = score(data, model, cfg.teacher, cfg.cache_path(),
                             batch_size=cfg.eval_batch_size)
    data.check()
    dt = time.perf_counter() - t
    ctx.record.setdefault("timings_s", {})["teacher_scores"] = round(dt, 1)
    ctx.log(f"  teacher scores of {n} training pairs: {dt:.0f} s (cached)")


def evaluate(ctx: Context, r: TrainRole) -> None:
    from ...devices import placement
    from ...effectiveness.runner import run_effectiveness

    cfg = eval_config(ctx, r)
    cfg.device = placement(cfg.device, cfg.dtype).device
    t = time.perf_counter()
    run_effectiveness(cfg)
    dt = time.perf_counter() - t
    ctx.record.setdefault("evaluated", {})[r.label] = {"wall_s": round(dt, 1)}
    ctx.log(f"  evaluated {r.label} in {dt:.0f} s")
    if r.role == "teacher" and ctx.study.training.auto_steps:
        ctx.calibration["teacher_eval_s"] = round(dt, 1)   # the students' derivation uses it
        save_calibration(ctx)

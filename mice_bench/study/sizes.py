"""``[sizes.NAME]`` tables: validated, and applied over the study's own tables.

A size overrides keys of ``[training]`` (its ``teacher`` / ``students`` tables apply to the
teacher / every student group), ``[effectiveness]``, every ``[[latency]]`` workload and
``[auto]`` (``mice-bench run STUDY --size NAME``; ``default_size`` otherwise).
"""

from __future__ import annotations

from pathlib import Path

from .checks import check_keys, plain_name
from .schema import (AUTO_KEYS, EFFECTIVENESS_KEYS, LATENCY_KEYS, ROLE_KEYS, SIZE_KEYS,
                     STUDENT_KEYS, TEACHER_KEYS, TRAINING_KEYS, StudyError)

__all__ = ["apply_size", "check_sizes"]


def check_sizes(path: Path, data: dict) -> dict[str, dict]:
    """Validate every ``[sizes.NAME]`` table (keys named ``sizes.NAME....``)."""
    sizes = data.get("sizes", {})
    for name, tab in sizes.items():
        w = f"sizes.{name}"
        plain_name(path, w, name)
        if not isinstance(tab, dict):
            raise StudyError(f"{path}: key {w!r} must be a table ([sizes.{name}])")
        check_keys(path, w, tab, SIZE_KEYS)
        if "training" in tab:
            tr = tab["training"]
            check_keys(path, f"{w}.training", tr, TRAINING_KEYS)
            if "teacher" in tr:
                check_keys(path, f"{w}.training.teacher", tr["teacher"],
                            {k: ROLE_KEYS[k] for k in TEACHER_KEYS})
            if "students" in tr:
                if not isinstance(tr["students"], dict):
                    raise StudyError(f"{path}: key '{w}.training.students' must be a table "
                                     "(applied to every [[training.students]] group)")
                check_keys(path, f"{w}.training.students", tr["students"],
                            {k: ROLE_KEYS[k] for k in STUDENT_KEYS})
        if "effectiveness" in tab:
            check_keys(path, f"{w}.effectiveness", tab["effectiveness"], EFFECTIVENESS_KEYS)
        if "latency" in tab:
            check_keys(path, f"{w}.latency", tab["latency"],
                        {k: t for k, t in LATENCY_KEYS.items() if k != "name"})
        if "auto" in tab:
            check_keys(path, f"{w}.auto", tab["auto"], AUTO_KEYS)
    d = data.get("default_size")
    if d is not None and d not in sizes:
        raise StudyError(f"{path}: key 'default_size' = {d!r} is not a [sizes] table; "
                         f"valid: {', '.join(sizes) or 'none'}")
    return sizes


def apply_size(data: dict, over: dict) -> dict:
    """``data`` with the size's overrides (validated by :func:`check_sizes`)."""
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

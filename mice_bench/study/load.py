"""Reading study files: :func:`load_study` (one file, a size applied) and
:func:`study_files` (every study of a folder), plus the ``{shared_data}`` placeholder
their paths may use."""

from __future__ import annotations

import sys
from pathlib import Path

from ..data.registry import shared_data_path
from ..naming import slug
from .checks import check_value, plain_name, variant_names
from .schema import TOP_KEYS, Study, StudyError
from .sections import auto_steps, effectiveness_plan, latency_workload, training_plan
from .sizes import apply_size, check_sizes

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["SHARED_DATA_PLACEHOLDER", "expand_shared_data", "load_study", "study_files"]

#: the placeholder a study file may use in its paths
SHARED_DATA_PLACEHOLDER = "{shared_data}"


def expand_shared_data(value: str) -> str:
    """``value`` with every ``{shared_data}`` replaced by :func:`shared_data_path`."""
    return value.replace(SHARED_DATA_PLACEHOLDER, shared_data_path())


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
        if k not in TOP_KEYS:
            raise StudyError(f"{path}: unknown key {k!r}; valid: {', '.join(TOP_KEYS)}")
        check_value(path, k, v, (TOP_KEYS[k],))
    sizes = check_sizes(path, data)
    size = size if size is not None else data.get("default_size")
    size_desc = ""
    if size is not None:
        if size not in sizes:
            raise StudyError(f"{path}: unknown size {size!r}; "
                             + (f"valid: {', '.join(sizes)}" if sizes else
                                "the study has no [sizes] tables"))
        size_desc = str(sizes[size].get("description", ""))
        data = apply_size(data, sizes[size])
    if "variants" not in data:
        raise StudyError(f"{path}: missing required key 'variants'")
    variants = variant_names(path, "variants", data["variants"])
    if "effectiveness" not in data and "latency" not in data:
        raise StudyError(f"{path}: a study needs an [effectiveness] table or [[latency]] "
                         "workloads (key 'effectiveness' or 'latency')")
    training = training_plan(path, data["training"], variants) if "training" in data else None
    eff = None
    if "effectiveness" in data:
        eff = effectiveness_plan(path, data["effectiveness"], variants, training is not None)
    elif training is not None:
        raise StudyError(f"{path}: a [training] study needs an [effectiveness] table "
                         "(key 'effectiveness')")
    lat = []
    seen = set()
    for i, w in enumerate(data.get("latency", [])):
        if not isinstance(w, dict):
            raise StudyError(f"{path}: key 'latency[{i}]' must be a table ([[latency]])")
        wl = latency_workload(path, i, w, variants)
        if wl.name in seen:
            raise StudyError(f"{path}: key 'latency[{i}].name' = {wl.name!r} is used twice")
        seen.add(wl.name)
        lat.append(wl)
    auto = auto_steps(path, data["auto"] if "auto" in data else {}) \
        if training is not None or "auto" in data else None
    name = plain_name(path, "name", data["name"]) if "name" in data else slug(path.stem)
    return Study(path=path, name=name,
                 description=str(data.get("description", "")), variants=variants,
                 effectiveness=eff, latency=lat, training=training, size=size,
                 size_description=size_desc, sizes=list(sizes), auto=auto)

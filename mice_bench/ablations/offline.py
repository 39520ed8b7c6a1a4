"""What a planned study would need from the network: ``mice-bench run --dry-run`` warns (one
line each, exit 0) about

* a model that is a Hugging Face hub id not in the local Hugging Face cache (an architecture
  name such as ``minilm-l12``, built with random weights, a ``pkg:`` model and a local
  directory need nothing);
* ``datasets = "all"`` (every dataset of the registry, most of which are not staged on an
  offline machine), and every planned dataset whose ir_datasets files (queries, qrels and,
  unless the study gives ``docs``, the documents) are not in ``IR_DATASETS_HOME``.

Nothing is downloaded or built: the checks look for files only
(:func:`huggingface_hub.try_to_load_from_cache`; the ir_datasets download objects of the
dataset and the caches wrapping them).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any, Iterable

__all__ = ["offline_warnings", "model_offline_problem", "dataset_offline_problem"]


# --------------------------------------------------------------------------- models
def model_offline_problem(name: str) -> str | None:
    """Why ``name`` cannot be loaded offline, or None when it can (as far as files tell)."""
    from ..backbone import ARCH_ONLY

    if name in ARCH_ONLY or name.startswith("pkg:"):
        return None                      # built from a packaged config / a packaged model
    p = Path(name).expanduser()
    if p.exists():
        return None                      # a local directory (`mice-bench run` checks it)
    if name.startswith(("/", "./", "../", "~")) or name.count("/") > 1:
        return f"model {name!r}: no such local directory"
    try:
        from huggingface_hub import try_to_load_from_cache
        from huggingface_hub.constants import HF_HUB_CACHE
    except ImportError:                  # pragma: no cover - a dependency of transformers
        return (f"model {name!r} is a Hugging Face hub id and huggingface_hub is not "
                "installed to check its cache")
    try:
        got = try_to_load_from_cache(name, "config.json")
    except Exception:  # noqa: BLE001 - HFValidationError: not a valid repo id
        return f"model {name!r} is neither an architecture name, a local directory nor a " \
               "valid Hugging Face hub id"
    if isinstance(got, str) and os.path.exists(got):
        return None
    return (f"model {name!r} is a Hugging Face hub id that is not in the local cache "
            f"({HF_HUB_CACHE}): it cannot run offline; download it first "
            "(`huggingface-cli download` on a connected machine) or give a local directory")


# --------------------------------------------------------------------------- datasets
def _missing_downloads(obj: Any, seen: set[int], depth: int = 0) -> list[str]:
    """The ir_datasets downloads reachable from ``obj`` that are neither cached nor
    mirrored locally; a cache wrapper whose file or folder exists stops the walk."""
    from ir_datasets.util import download as dlmod

    if id(obj) in seen or depth > 16:
        return []
    seen.add(id(obj))
    if isinstance(obj, dlmod.Download):
        cp = obj._cache_path
        if cp and cp != os.devnull and os.path.exists(cp):
            return []
        if any(isinstance(m, dlmod.LocalDownload) and m._path.exists() for m in obj.mirrors):
            return []
        return [str(cp) if cp else "a streamed download"]
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [x for o in obj for x in _missing_downloads(o, seen, depth + 1)]
    if isinstance(obj, dict):
        return [x for o in obj.values() for x in _missing_downloads(o, seen, depth + 1)]
    if isinstance(obj, functools.partial):
        return _missing_downloads([*obj.args, *obj.keywords.values()], seen, depth + 1)
    if not (type(obj).__module__ or "").startswith("ir_datasets"):
        return []
    for attr in ("_path", "extract_path", "_extract_path"):
        p = getattr(obj, attr, None)
        if isinstance(p, (str, Path)) and type(obj).__name__ != "RelativePath" \
                and os.path.exists(p):
            return []                    # Cache / ZipExtractCache / ...: already there
    try:
        attrs = vars(obj)
    except TypeError:
        return []
    return [x for o in attrs.values() for x in _missing_downloads(o, seen, depth + 1)]


def dataset_offline_problem(name: str, irds_id: str, docs: bool = True) -> str | None:
    """Why dataset ``name`` (ir_datasets id ``irds_id``) cannot be read offline, or None.
    ``docs``: the documents come from ir_datasets too (False when the study gives a
    ``docs`` file for it)."""
    try:
        import ir_datasets

        ds = ir_datasets.load(irds_id)
    except Exception as e:  # noqa: BLE001 - an id this ir_datasets does not know
        return f"dataset {name!r} ({irds_id}): ir_datasets cannot load it ({e})"
    parts = ["queries", "qrels"] + (["docs"] if docs else [])
    missing: dict[str, list[str]] = {}
    for part in parts:
        handler = getattr(ds, f"{part}_handler", None)
        if handler is None:
            continue
        try:
            h = handler()
        except Exception:  # noqa: BLE001 - a dataset without that part
            continue
        got = _missing_downloads(h, set())
        if got:
            missing[part] = got
    if not missing:
        return None
    home = os.environ.get("IR_DATASETS_HOME", str(Path.home() / ".ir_datasets"))
    files = sorted({f for fs in missing.values() for f in fs})
    return (f"dataset {name!r} ({irds_id}): its {', '.join(missing)} are not available "
            f"offline (missing {files[0]}" + (f" and {len(files) - 1} more" if len(files) > 1
                                                else "")
            + f"; IR_DATASETS_HOME={home}); stage it (../shared/data/stage-ir-datasets.sh) "
            "or set MICE_BENCH_ALLOW_DOWNLOAD=1 on a connected machine")


def _docs_given(docs: Any, dataset: str) -> bool:
    """Whether the study's ``docs`` option covers ``dataset`` (a plain path covers all)."""
    if not docs:
        return False
    for d in docs if isinstance(docs, list) else [docs]:
        if not isinstance(d, str):
            continue
        head = d.split("=", 1)[0]
        if "=" not in d or "/" in head or ":" in head:
            return True                  # no DATASET= prefix: every dataset
        if head == dataset:
            return True
    return False


# --------------------------------------------------------------------------- the plan
def offline_warnings(study, tasks: Iterable, base_model: str | None = None) -> list[str]:
    """One line per problem of the tasks still to run (none when everything exists);
    ``base_model``: a training study's ``--base-model``."""
    todo = [t for t in tasks if not t.done]
    if not todo:
        return []
    out: list[str] = []
    planned: list[str] = []
    for t in todo:
        m = getattr(t.config, "model", None)            # LatencyConfig
        if isinstance(m, str) and t.kind == "latency":
            planned.append(m)
        for ref in getattr(t.config, "models", None) or []:   # EffectivenessConfig
            name = ref if isinstance(ref, str) else getattr(ref, "name", None)
            if isinstance(name, str):
                planned.append(name)
    if study.training is not None and any(t.kind != "latency" for t in todo):
        base = base_model or study.training.base
        planned.append(base)
    for m in dict.fromkeys(planned):
        problem = model_offline_problem(m)
        if problem:
            out.append(problem)
    eff = study.effectiveness
    if eff is not None and any(t.kind != "latency" for t in todo):
        from ..data.collections import resolve_datasets

        written = [d.lower() for d in eff.datasets_as_written]
        if "all" in written:
            out.append(f'datasets = "all" plans every dataset of the registry '
                       f"({len(eff.datasets)}: {', '.join(eff.datasets)}); most of them are "
                       "not staged on an offline machine (those that are not follow)")
        docs = eff.options.get("docs")
        infos = {}
        for d in eff.datasets_as_written or eff.datasets:
            for info in resolve_datasets(d):
                infos.setdefault(info.name, info)
        for d, info in infos.items():
            problem = dataset_offline_problem(d, info.irds_id, docs=not _docs_given(docs, d))
            if problem:
                out.append(problem)
    if study.training is not None and isinstance(study.training.data, str) \
            and "/" in study.training.data and any(t.kind != "latency" for t in todo):
        problem = dataset_offline_problem(study.training.data, study.training.data)
        if problem:
            out.append("training data: " + problem)
    return out

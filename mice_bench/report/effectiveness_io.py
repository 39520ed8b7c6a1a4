"""Adapter: effectiveness results files -> flat :class:`EffRecord` records.

The only module of the report that knows the effectiveness results layout (one JSON per
(model, variant, dataset) written by ``mice-bench effectiveness`` under
``results/effectiveness/``; summary files beside them are skipped). Files go through
:func:`mice_bench.results.load_result`, which upgrades older schema versions.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..results import ResultFileError, load_result, parse_fields

KIND = "effectiveness"

# dataset name -> (group, display order); filled from mice_bench.effectiveness.datasets
_FALLBACK_ORDER = ("msmarco-dev", "dl19", "dl20", "arguana", "climate-fever", "dbpedia-entity",
                   "fever", "fiqa", "hotpotqa", "nfcorpus", "nq", "quora", "scidocs", "scifact",
                   "trec-covid", "webis-touche2020")


def dataset_group(name: str) -> str:
    """``id`` (in-domain), ``ood`` (BEIR) or ``other``."""
    try:
        from ..effectiveness.datasets import DATASETS

        if name in DATASETS:
            return DATASETS[name].group
    except Exception:  # noqa: BLE001 - effectiveness package absent or changed
        pass
    if name in ("msmarco-dev", "dl19", "dl20"):
        return "id"
    return "ood" if name in _FALLBACK_ORDER else "other"


@dataclass(frozen=True)
class EffRecord:
    file: str
    created: str
    model: str
    variant: str
    dataset: str
    group: str
    measures: dict = field(hash=False, compare=False)     # name -> mean value
    per_query: dict = field(hash=False, compare=False)    # name -> {qid: value}
    pairs_per_s: float | None = None
    num_layers: int | None = None
    hidden_size: int | None = None
    first_stage: str | None = None
    environment: dict = field(hash=False, compare=False, default_factory=dict)
    config: dict = field(hash=False, compare=False, default_factory=dict)
    git_commit: str | None = None

    @property
    def full_ranking(self) -> bool:
        """Scored the whole corpus (``--first-stage full``) instead of re-ranking."""
        return self.first_stage == "full" and self.variant != "bm25"

    @property
    def system(self) -> str:
        """The table row name: the variant, marked when it ranked the full corpus."""
        return f"{self.variant} (full ranking)" if self.full_ranking else self.variant

    def value(self, measure: str) -> float | None:
        v = self.measures.get(measure)
        return float(v) if v is not None and math.isfinite(float(v)) else None


def _name(x: Any, *keys: str) -> str | None:
    if isinstance(x, str):
        return x
    if isinstance(x, dict):
        for k in keys:
            if isinstance(x.get(k), str):
                return x[k]
    return None


def _first(d: dict, *keys: str) -> Any:
    for k in keys:
        if isinstance(d, dict) and d.get(k) is not None:
            return d[k]
    return None


def _is_summary(path: Path, data: Any) -> bool:
    if path.name.startswith(("summary", "_summary")):
        return True
    if isinstance(data, dict):
        schema = str(data.get("schema", ""))
        if schema.startswith("mice-bench/") and schema != f"mice-bench/{KIND}":
            return True
    return False


def load_effectiveness_file(path: Path, root: Path | None = None) -> EffRecord | None:
    """One (model, variant, dataset) record; None for a summary file. Errors name the file."""
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ResultFileError(f"{path}: cannot read results file: {e}") from None
    if _is_summary(path, raw):
        return None
    data = load_result(path, KIND)
    return parse_fields(path, "effectiveness", lambda: _record(data, path, root))


def _record(data: dict, path: Path, root: Path | None) -> EffRecord | None:
    cfg = data.get("config") or {}
    model = _name(_first(data, "model", "model_label"), "label", "name", "id") \
        or _name(cfg.get("model"), "label", "name")
    if isinstance(cfg.get("model"), list) and model is None:
        model = ",".join(map(str, cfg["model"]))
    variant = _name(_first(data, "variant", "system"), "name") or _name(cfg.get("variant"), "name")
    dataset = _name(data.get("dataset"), "name") or _name(cfg.get("dataset"), "name")
    if model is None and variant == "bm25":
        model = ""   # the first stage does not depend on a model
    missing = [k for k, v in (("model", model), ("variant", variant), ("dataset", dataset))
               if v is None]
    if missing:
        raise ResultFileError(f"{path}: effectiveness results file lacks "
                              + ", ".join(repr(m) for m in missing))
    agg = _first(data, "aggregates", "aggregate", "measures", "metrics")
    if not isinstance(agg, dict) or not agg:
        raise ResultFileError(f"{path}: effectiveness results file lacks 'aggregates' "
                              "(measure -> value)")
    measures = {}
    for k, v in agg.items():
        if isinstance(v, dict):  # {"mean": x, "std": y} over seeds
            v = v.get("mean")
        if v is None or isinstance(v, bool):
            continue
        measures[str(k)] = float(v)
    pq = _first(data, "per_query", "per_query_values", "queries") or {}
    per_query: dict[str, dict[str, float]] = {}
    if isinstance(pq, dict) and pq:
        if all(k in measures for k in pq):          # measure -> {qid: v}
            for m, vals in pq.items():
                per_query[m] = {str(q): _mean_seed(v) for q, v in vals.items()}
        else:                                        # qid -> {measure: v}
            for q, vals in pq.items():
                for m, v in (vals or {}).items():
                    per_query.setdefault(m, {})[str(q)] = _mean_seed(v)
    timing = data.get("timing") or {}
    pps = timing.get("pairs_per_s") if isinstance(timing, dict) else None
    group = dataset_group(dataset)
    ds = data.get("dataset")
    if group == "other" and isinstance(ds, dict) and ds.get("group") in ("id", "ood"):
        group = ds["group"]
    m = data.get("model") if isinstance(data.get("model"), dict) else {}
    fs = _first(cfg, "first_stage") or _first(data, "first_stage")
    if m.get("num_layers") is None and isinstance(cfg.get("num_layers"), int):
        m = {"num_layers": cfg["num_layers"]}
    return EffRecord(
        file=path.relative_to(root).as_posix() if root is not None else path.name,
        created=str(data.get("created", "")),
        model=model, variant=variant, dataset=dataset, group=group, measures=measures,
        per_query=per_query, pairs_per_s=float(pps) if pps else None,
        num_layers=m.get("num_layers"), hidden_size=m.get("hidden_size"), first_stage=_name(fs, "name", "kind"),
        environment=data.get("environment") or {}, config=cfg,
        git_commit=data.get("git_commit"),
    )


def _mean_seed(v: Any) -> float:
    if isinstance(v, (list, tuple)):
        return float(sum(v) / len(v))
    if isinstance(v, dict):
        return float(v.get("mean"))
    return float(v)


def load_effectiveness(results_dir: Path, dedupe: bool = True) -> list[EffRecord]:
    """Every record under ``results_dir/effectiveness`` (sorted by path). With ``dedupe``
    the latest file wins for a repeated (model, variant, dataset)."""
    root = Path(results_dir)
    folder = root / "effectiveness"
    if not folder.is_dir():
        return []
    by_key: dict[tuple, EffRecord] = {}
    every: list[EffRecord] = []
    for f in sorted(folder.rglob("*.json")):
        rec = load_effectiveness_file(f, root)
        if rec is None:
            continue
        every.append(rec)
        key = (rec.model, rec.variant, rec.dataset, rec.full_ranking)
        old = by_key.get(key)
        if old is None or (rec.created, rec.file) >= (old.created, old.file):
            by_key[key] = rec
    if not dedupe:
        return every
    return sorted(by_key.values(), key=lambda r: (r.model, r.variant, r.full_ranking, r.dataset))

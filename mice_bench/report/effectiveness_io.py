"""Adapter: effectiveness results files -> flat :class:`EffRecord` records and the
:class:`~mice_bench.evaluation.summary.EffectivenessSummary` objects of the runs.

Files are read with the classes that wrote them
(:class:`~mice_bench.effectiveness.result.EffectivenessResult`,
:class:`~mice_bench.evaluation.summary.EffectivenessSummary`), which upgrade older schema
versions through :func:`mice_bench.results.load_result`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..data.registry import dataset_group
from ..effectiveness.result import EffectivenessResult
from ..evaluation.summary import KIND as SUMMARY_KIND
from ..evaluation.summary import EffectivenessSummary
from ..results import result_kind

KIND = "effectiveness"


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


def load_effectiveness_file(path: Path, root: Path | None = None) -> EffRecord | None:
    """One (model, variant, dataset) record; None for a summary file. Errors name the file."""
    if result_kind(path) == SUMMARY_KIND:
        return None
    res = EffectivenessResult.load(path)
    cfg = res.config
    model = res.model_label or ""          # bm25: the first stage does not depend on a model
    pps = res.timing.get("pairs_per_s")
    m = res.model or {}
    return EffRecord(
        file=path.relative_to(root).as_posix() if root is not None else path.name,
        created=res.created, model=model, variant=res.variant, dataset=res.dataset_name,
        group=res.dataset.get("group") or dataset_group(res.dataset_name),
        measures=dict(res.aggregates), per_query=res.per_query,
        pairs_per_s=float(pps) if pps else None, num_layers=m.get("num_layers"),
        hidden_size=m.get("hidden_size"), first_stage=res.first_stage,
        environment=res.environment, config=cfg, git_commit=res.git_commit)


@dataclass(frozen=True)
class SummaryFile:
    """One stored summary (one ``mice-bench effectiveness`` run)."""

    file: str                    # relative to the results folder
    created: str
    summary: EffectivenessSummary = field(compare=False)


def load_summaries(results_dir: Path) -> list[SummaryFile]:
    """Every ``effectiveness-summary`` file under ``results_dir/effectiveness``, oldest first."""
    root = Path(results_dir)
    folder = root / "effectiveness"
    if not folder.is_dir():
        return []
    out = []
    for f in sorted(folder.rglob("*.json")):
        if result_kind(f) == SUMMARY_KIND:
            s, doc = EffectivenessSummary.load(f)
            out.append(SummaryFile(f.relative_to(root).as_posix(), str(doc.get("created", "")),
                                   s))
    return sorted(out, key=lambda x: (x.created, x.file))


def load_effectiveness(results_dir: Path, dedupe: bool = True,
                       keep: Callable[[str], bool] | None = None) -> list[EffRecord]:
    """Every record under ``results_dir/effectiveness`` (sorted by path) whose file (relative
    to ``results_dir``) ``keep`` accepts. With ``dedupe`` the latest file wins for a repeated
    (model, variant, dataset)."""
    root = Path(results_dir)
    folder = root / "effectiveness"
    if not folder.is_dir():
        return []
    by_key: dict[tuple, EffRecord] = {}
    every: list[EffRecord] = []
    for f in sorted(folder.rglob("*.json")):
        rec = load_effectiveness_file(f, root)
        if rec is None or (keep is not None and not keep(rec.file)):
            continue
        every.append(rec)
        key = (rec.model, rec.variant, rec.dataset, rec.full_ranking)
        old = by_key.get(key)
        if old is None or (rec.created, rec.file) >= (old.created, old.file):
            by_key[key] = rec
    if not dedupe:
        return every
    return sorted(by_key.values(), key=lambda r: (r.model, r.variant, r.full_ranking, r.dataset))

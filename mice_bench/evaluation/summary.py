"""The effectiveness summary: one typed object, computed once, used everywhere.

``mice-bench effectiveness`` computes it (:func:`summarize`) and writes it
(:func:`mice_bench.evaluation.table.write_summary`: the JSON and its Markdown view);
``mice-bench report`` reads it back
(:meth:`EffectivenessSummary.load`, the same class) and renders its cells, marks and row order
as they are. The report only calls :func:`summarize` itself for result files that no summary
file covers, with the same defaults as the command (:class:`SummarySettings`).

Statistics: several models of one variant are seeds of one system; a cell holds the mean
over seeds (and the sample std with two or more). The test runs per dataset on the per-query
mean over seeds against the baseline row's; the p-values of every (variant x dataset)
comparison of a measure are corrected together; ``↑`` / ``↓`` mark a corrected p < alpha
with a higher / lower mean than the baseline.

Pure Python + numpy/scipy: no ir_datasets, no torch.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Protocol, Sequence

import numpy as np

from .metrics import mean_over_seeds
from .stats import CORRECTIONS, TESTS, correct, paired_test

BM25 = "bm25"
KIND = "effectiveness-summary"
GROUPS = ("id", "ood")
GROUP_LABEL = {"id": "ID avg", "ood": "OOD avg"}
UP, DOWN = "↑", "↓"


def default_baseline(variants: Iterable[str]) -> str:
    """The baseline when none is given: ``ce`` if it is among the variants, else ``bm25``."""
    return "ce" if "ce" in list(variants) else BM25


def mark_for(diff: float, p_corrected: float, alpha: float) -> str:
    """``↑`` (better) / ``↓`` (worse) when the corrected p is below alpha, else ``""``."""
    if p_corrected is None or math.isnan(p_corrected) or not p_corrected < alpha or diff == 0:
        return ""
    return UP if diff > 0 else DOWN


@dataclass(frozen=True)
class SummarySettings:
    """How rows are compared: baseline variant, test, correction, alpha, test seed."""

    baseline: str = BM25
    test: str = "ttest"
    correction: str = "holm"
    alpha: float = 0.05
    seed: int = 0

    def __post_init__(self) -> None:
        if self.test not in TESTS:
            raise ValueError(f"unknown test {self.test!r}; valid: {', '.join(TESTS)}")
        if self.correction not in CORRECTIONS:
            raise ValueError(f"unknown correction {self.correction!r}; valid: "
                             f"{', '.join(CORRECTIONS)}")
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha}")


@dataclass(frozen=True)
class SummaryDataset:
    name: str
    irds_id: str | None
    group: str                 # id | ood | other
    first_stage: str           # bm25 | full | run:<path>

    @property
    def full_ranking(self) -> bool:
        return self.first_stage == "full"


@dataclass
class Cell:
    """One (variant, dataset, measure): mean over seeds, and the test against the baseline."""

    mean: float
    std: float | None
    seeds: list[float]
    num_queries: int
    p: float | None = None             # None: not tested (the baseline, or no baseline cell)
    p_corrected: float | None = None
    diff: float | None = None          # mean over queries of (row - baseline)
    mark: str = ""


@dataclass
class Row:
    variant: str
    models: list[str]                                   # model labels (seeds); [] for bm25
    cells: dict[str, dict[str, Cell]]                   # dataset -> measure -> cell
    files: dict[str, list[str]] = field(default_factory=dict)        # dataset -> result files
    averages: dict[str, dict[str, float]] = field(default_factory=dict)   # group -> measure


class SummaryInput(Protocol):
    """What :func:`summarize` needs of one evaluated (model, variant, dataset)."""

    variant: str
    model: str | None
    dataset_name: str
    per_query: Mapping[str, Mapping[str, float]]
    aggregates: Mapping[str, float]
    file: str


@dataclass
class EffectivenessSummary:
    measures: list[str]
    baseline: str
    test: str
    correction: str
    alpha: float
    datasets: list[SummaryDataset]
    rows: list[Row]
    comparisons: dict[str, int] = field(default_factory=dict)   # measure -> tests corrected

    @property
    def primary(self) -> str:
        return self.measures[0]

    @property
    def settings(self) -> SummarySettings:
        return SummarySettings(self.baseline, self.test, self.correction, self.alpha)

    def row(self, variant: str) -> Row:
        for r in self.rows:
            if r.variant == variant:
                return r
        raise KeyError(variant)

    def cell(self, variant: str, dataset: str, measure: str) -> Cell | None:
        return self.row(variant).cells.get(dataset, {}).get(measure)

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        d = {"measures": list(self.measures), "primary": self.primary,
             "baseline": self.baseline, "test": self.test, "correction": self.correction,
             "alpha": self.alpha, "comparisons": dict(self.comparisons),
             "datasets": [asdict(x) for x in self.datasets], "rows": []}
        for r in self.rows:
            d["rows"].append({
                "variant": r.variant, "models": list(r.models),
                "cells": {ds: {m: asdict(c) for m, c in cells.items()}
                          for ds, cells in r.cells.items()},
                "files": {ds: list(f) for ds, f in r.files.items()},
                "averages": {g: dict(v) for g, v in r.averages.items()}})
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "EffectivenessSummary":
        """The inverse of :meth:`to_dict` (current schema version only: older files go
        through :func:`mice_bench.results.load_result`'s upgraders first)."""
        rows = []
        for r in d["rows"]:
            cells = {ds: {m: Cell(**c) for m, c in per_m.items()}
                     for ds, per_m in r["cells"].items()}
            rows.append(Row(variant=r["variant"], models=list(r["models"]), cells=cells,
                            files={ds: list(f) for ds, f in r["files"].items()},
                            averages={g: dict(v) for g, v in r["averages"].items()}))
        return cls(measures=list(d["measures"]), baseline=d["baseline"], test=d["test"],
                   correction=d["correction"], alpha=float(d["alpha"]),
                   datasets=[SummaryDataset(**x) for x in d["datasets"]], rows=rows,
                   comparisons={str(k): int(v) for k, v in d["comparisons"].items()})

    def write_json(self, path: str | Path, config: dict, env: dict) -> Path:
        """The summary file (envelope kind ``effectiveness-summary``); its Markdown twin is
        written beside it by :func:`mice_bench.evaluation.table.write_summary`."""
        from ..results import atomic_write_json, envelope

        bad = self.problem()
        if bad is not None:       # what load would refuse is never written
            raise ValueError(f"effectiveness summary for {path} breaks the schema: {bad}")
        return atomic_write_json(Path(path), envelope(KIND, config, env,
                                                      summary=self.to_dict()))

    def problem(self) -> str | None:
        """The first way this summary breaks what :func:`summarize` writes (None: valid), as
        ``field: problem``: a cell's ``mean`` is the mean of its ``seeds`` (finite, >= 0) and
        ``std`` their sample deviation (None for one seed), ``num_queries`` >= 1, ``p`` and
        ``p_corrected`` within [0, 1] (NaN: a test without a difference), ``diff`` finite, the
        mark the one :func:`mark_for` gives; a group average is the mean of its datasets'
        means. :meth:`load` refuses an edited file that breaks it."""
        def close(a: float, b: float) -> bool:
            return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)

        for row in self.rows:
            for ds, per in row.cells.items():
                for m, c in per.items():
                    at = f"summary.rows[{row.variant}].cells.{ds}.{m}"
                    seeds = [float(x) for x in c.seeds]
                    if not seeds or not all(math.isfinite(x) and x >= 0 for x in seeds):
                        return f"{at}.seeds: {c.seeds!r} are not finite numbers >= 0"
                    mean = math.fsum(seeds) / len(seeds)
                    if not (math.isfinite(c.mean) and close(c.mean, mean)):
                        return f"{at}.mean: {c.mean!r} is not the mean of its seeds ({mean!r})"
                    std = float(np.std(seeds, ddof=1)) if len(seeds) > 1 else None
                    if (std is None) != (c.std is None) or \
                            (std is not None and not close(c.std, std)):
                        return (f"{at}.std: {c.std!r} is not the sample deviation of its "
                                f"seeds ({std!r})")
                    if c.num_queries < 1:
                        return f"{at}.num_queries: {c.num_queries!r} is not >= 1"
                    for k in ("p", "p_corrected"):
                        v = getattr(c, k)
                        if v is not None and not (math.isnan(v) or 0 <= v <= 1):
                            return f"{at}.{k}: {v!r} is not within [0, 1]"
                    if c.diff is not None and not math.isfinite(c.diff):
                        return f"{at}.diff: {c.diff!r} is not a finite number"
                    want = mark_for(c.diff if c.diff is not None else 0.0, c.p_corrected,
                                    self.alpha)
                    if c.mark != want:
                        return (f"{at}.mark: {c.mark!r}, but the difference {c.diff!r} with "
                                f"corrected p {c.p_corrected!r} at alpha {self.alpha} gives "
                                f"{want!r}")
            for g, per in row.averages.items():
                members = [d.name for d in self.datasets if d.group == g]
                for m, v in per.items():
                    means = [row.cells[n][m].mean for n in members
                             if m in row.cells.get(n, {})]
                    if len(means) != len(members) or not close(v, sum(means) / len(means)):
                        return (f"summary.rows[{row.variant}].averages.{g}.{m}: {v!r} is not "
                                f"the mean of its {g} datasets")
        return None

    @classmethod
    def load(cls, path: str | Path) -> tuple["EffectivenessSummary", dict[str, Any]]:
        """``(summary, envelope)``; old schema versions are upgraded, errors name the file
        and the field (:meth:`problem`)."""
        from ..results import ResultFileError, load_result, parse_fields

        data = load_result(path, KIND)
        s = parse_fields(path, KIND, lambda: cls.from_dict(data["summary"]))
        bad = s.problem()
        if bad is not None:
            raise ResultFileError(f"{path}: {bad}")
        return s, data


# --------------------------------------------------------------------------- computation
def summarize(records: Sequence[SummaryInput], datasets: Sequence[SummaryDataset],
              variants: Sequence[str], settings: SummarySettings,
              measures: Sequence[str] | None = None) -> EffectivenessSummary:
    """Aggregate evaluated (model, variant, dataset) records into the summary.

    ``variants`` gives the row order (rows without any record are dropped); ``datasets`` the
    column order; ``measures`` defaults to the measures of the first record.
    """
    if measures is None:
        measures = list(records[0].aggregates) if records else []
    measures = list(measures)
    names = [d.name for d in datasets]
    by_key: dict[tuple[str, str], list[SummaryInput]] = {}
    for r in records:
        if r.dataset_name in names:
            by_key.setdefault((r.variant, r.dataset_name), []).append(r)
    pq_mean: dict[tuple[str, str, str], dict[str, float]] = {}
    for (v, d), recs in by_key.items():
        for m in measures:
            pq_mean[(v, d, m)] = mean_over_seeds([r.per_query[m] for r in recs])

    base = settings.baseline
    tests: dict[tuple[str, str, str], dict[str, Any]] = {}
    comparisons: dict[str, int] = {}
    for m in measures:
        keys, pvals = [], []
        for v in dict.fromkeys(variants):   # a variant listed twice is one row, one test
            if v == base:
                continue
            for d in names:
                a, b = pq_mean.get((v, d, m)), pq_mean.get((base, d, m))
                if a is None or b is None:
                    continue
                if set(a) != set(b):
                    raise ValueError(f"{v} and the baseline {base} were evaluated on "
                                     f"different queries of {d}")
                qids = sorted(b)
                x, y = [a[q] for q in qids], [b[q] for q in qids]
                keys.append((v, d, m))
                pvals.append(paired_test(settings.test, x, y, seed=settings.seed))
                tests[(v, d, m)] = {"diff": float(np.mean(np.subtract(x, y)))}
        comparisons[m] = len(keys)
        for k, p, pc in zip(keys, pvals, correct(settings.correction, pvals)):
            t = tests[k]
            t.update(p=float(p), p_corrected=float(pc),
                     mark=mark_for(t["diff"], pc, settings.alpha))

    rows: list[Row] = []
    for v in dict.fromkeys(variants):
        row = Row(variant=v, models=[], cells={})
        for d in names:
            recs = by_key.get((v, d))
            if not recs:
                continue
            row.models = [r.model for r in recs if r.model] or row.models
            row.cells[d] = {}
            for m in measures:
                vals = [float(r.aggregates[m]) for r in recs]
                row.cells[d][m] = Cell(
                    mean=float(np.mean(vals)),
                    std=float(np.std(vals, ddof=1)) if len(vals) > 1 else None,
                    seeds=vals, num_queries=len(pq_mean[(v, d, m)]),
                    **tests.get((v, d, m), {}))
            row.files[d] = [r.file for r in recs]
        if not row.cells:
            continue
        for g in GROUPS:
            members = [d.name for d in datasets if d.group == g]
            if members and all(n in row.cells for n in members):
                row.averages[g] = {m: float(np.mean([row.cells[n][m].mean for n in members]))
                                   for m in measures}
        rows.append(row)
    return EffectivenessSummary(measures=measures, baseline=base, test=settings.test,
                                correction=settings.correction, alpha=settings.alpha,
                                datasets=list(datasets), rows=rows, comparisons=comparisons)

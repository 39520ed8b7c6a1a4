"""The summary table: systems x datasets (+ ID/OOD averages), like Table 1 of the MICE paper.

Several models of one variant are seeds of one system: a cell shows the mean over seeds (and
``± std`` with more than one seed). Significance is tested per dataset on the per-query mean
over seeds against the baseline row, corrected across all (variant x dataset) comparisons
(per measure); ``↑``/``↓`` mark corrected p < alpha.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..results import atomic_write_json, atomic_write_text, envelope
from .metrics import mean_over_seeds, measure_names
from .stats import correct, paired_test

if TYPE_CHECKING:  # pragma: no cover
    from .runner import EffectivenessConfig, Plan, Record

GROUP_LABEL = {"id": "ID avg", "ood": "OOD avg"}


def build_summary(records: list["Record"], plan: "Plan", cfg: "EffectivenessConfig") -> dict:
    """Aggregate records into ``{"columns", "rows", ...}`` (JSON-able, see docs)."""
    measures = measure_names(plan.measures)
    datasets = [d for d in plan.datasets]
    rows: list[dict] = []
    seeds: dict[tuple[str, str], list["Record"]] = {}
    for r in records:
        seeds.setdefault((r.variant, r.dataset.name), []).append(r)
    pq_mean: dict[tuple[str, str, str], dict[str, float]] = {}
    for (v, d), recs in seeds.items():
        for m in measures:
            pq_mean[(v, d, m)] = mean_over_seeds([r.per_query[m] for r in recs])

    # significance vs baseline, corrected per measure across (variant x dataset)
    tests: dict[tuple[str, str, str], dict] = {}
    for m in measures:
        keys, pvals = [], []
        for v in plan.variants:
            if v == plan.baseline:
                continue
            for d in datasets:
                a, b = pq_mean.get((v, d.name, m)), pq_mean.get((plan.baseline, d.name, m))
                if a is None or b is None:
                    continue
                qids = list(b)
                p = paired_test(cfg.test, [a[q] for q in qids], [b[q] for q in qids],
                                seed=cfg.seed)
                diff = float(np.mean([a[q] - b[q] for q in qids]))
                keys.append((v, d.name, m))
                pvals.append(p)
                tests[(v, d.name, m)] = {"p": p, "diff": diff}
        for k, pc in zip(keys, correct(cfg.correction, pvals)):
            t = tests[k]
            t["p_corrected"] = pc
            t["mark"] = ("↑" if t["diff"] > 0 else "↓") if pc < cfg.alpha else ""

    for v in plan.variants:
        cells: dict[str, dict] = {}
        models: list[str] = []
        for d in datasets:
            recs = seeds.get((v, d.name))
            if not recs:
                continue
            models = [r.model for r in recs if r.model] or models
            cell = {}
            for m in measures:
                vals = [r.aggregates[m] for r in recs]
                c = {"mean": float(np.mean(vals)),
                     "std": float(np.std(vals, ddof=1)) if len(vals) > 1 else None,
                     "seeds": vals, "num_queries": len(recs[0].per_query[m])}
                c.update(tests.get((v, d.name, m), {}))
                cell[m] = c
            cell["files"] = [str(r.path) for r in recs]
            cells[d.name] = cell
        averages: dict[str, dict[str, float]] = {}
        for g in ("id", "ood"):
            members = [d.name for d in datasets if d.group == g]
            if members and all(n in cells for n in members):
                averages[g] = {m: float(np.mean([cells[n][m]["mean"] for n in members]))
                               for m in measures}
        rows.append({"variant": v, "models": models, "cells": cells, "averages": averages})

    return {
        "measures": measures, "primary": measures[0], "baseline": plan.baseline,
        "test": cfg.test, "correction": cfg.correction, "alpha": cfg.alpha,
        "datasets": [{"name": d.name, "irds_id": d.irds_id, "group": d.group,
                      "first_stage": plan.first_stage[d.name].describe(d.name)}
                     for d in datasets],
        "rows": rows,
    }


def columns(summary: dict) -> list[tuple[str, str]]:
    """``[(kind, key)]``: ID datasets, ``ID avg``, OOD datasets, ``OOD avg``, others."""
    ds = summary["datasets"]
    cols: list[tuple[str, str]] = []
    for g in ("id", "ood"):
        members = [d["name"] for d in ds if d["group"] == g]
        cols += [("dataset", n) for n in members]
        if members:
            cols.append(("avg", g))
    cols += [("dataset", d["name"]) for d in ds if d["group"] not in ("id", "ood")]
    return cols


def cell_text(row: dict, kind: str, key: str, measure: str, digits: int = 3) -> str:
    if kind == "avg":
        v = row["averages"].get(key, {}).get(measure)
        return "–" if v is None else f"{v:.{digits}f}"
    c = row["cells"].get(key, {}).get(measure)
    if c is None:
        return "–"
    s = f"{c['mean']:.{digits}f}"
    if c.get("std") is not None:
        s += f"±{c['std']:.{digits}f}"
    return s + c.get("mark", "")


def _header(kind: str, key: str) -> str:
    return GROUP_LABEL[key] if kind == "avg" else key


def markdown(summary: dict) -> str:
    """One Markdown table per measure, plus a legend."""
    cols = columns(summary)
    out = []
    for m in summary["measures"]:
        out.append(f"### {m}\n")
        out.append("| system | " + " | ".join(_header(*c) for c in cols) + " |")
        out.append("|---|" + "---:|" * len(cols))
        for row in summary["rows"]:
            name = row["variant"] + (f" ({', '.join(row['models'])})" if row["models"] else "")
            out.append(f"| {name} | " + " | ".join(cell_text(row, k, key, m) for k, key in cols)
                       + " |")
        out.append("")
    out.append(_legend(summary))
    return "\n".join(out) + "\n"


def _legend(summary: dict) -> str:
    fs = ", ".join(f"{d['name']}: {d['first_stage']}" for d in summary["datasets"])
    return (f"↑/↓: significantly better/worse than `{summary['baseline']}` "
            f"({summary['test']} test, {summary['correction']} correction across all "
            f"variant × dataset comparisons, corrected p < {summary['alpha']}). "
            f"Several models of one variant are seeds: mean ± std. First stage: {fs}.")


def legend(summary: dict) -> str:
    return _legend(summary)


def rich_table(summary: dict, measure: str | None = None):
    from rich.table import Table

    m = measure or summary["primary"]
    t = Table(title=f"{m} (baseline {summary['baseline']})")
    t.add_column("system")
    cols = columns(summary)
    for kind, key in cols:
        t.add_column(_header(kind, key), justify="right",
                     style="bold" if kind == "avg" else None)
    for row in summary["rows"]:
        name = row["variant"] + (f" ({', '.join(row['models'])})" if row["models"] else "")
        t.add_row(name, *(cell_text(row, k, key, m) for k, key in cols))
    return t


def write_summary(summary: dict, stem: Path, cfg: "EffectivenessConfig", env: dict) -> None:
    """``<stem>.json`` (envelope kind ``effectiveness-summary``) and ``<stem>.md``."""
    atomic_write_json(Path(f"{stem}.json"),
                      envelope("effectiveness-summary", cfg.as_dict(), env, summary=summary))
    atomic_write_text(Path(f"{stem}.md"), markdown(summary))

"""Effectiveness tables (datasets as columns, ID / OOD averages, ↑ / ↓ marks) and the
figures that need effectiveness results (Pareto front, nDCG@10 vs merge layer)."""

from __future__ import annotations

import math
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..data.registry import ABBREV, dataset_group, dataset_order
from ..evaluation.metrics import DEFAULT_MEASURES
from ..evaluation.summary import (BM25, EffectivenessSummary, SummaryDataset,
                                     SummarySettings, default_baseline, summarize)
from ..evaluation.table import TEST_NAMES, percent_cell
from ..naming import group_label, group_slug, short_commit
from ..spec import variant_key
from .common import Palette
from .effectiveness_io import EffRecord, SummaryFile
from .figures import new_figure, plain_log_ticks, save
from .latency_io import LatencyRow
from .merge_layer import Curve, Level, Panel, merge_layer_figure
from ..tables import Table

MEASURE_ORDER = DEFAULT_MEASURES     # the report's measure order: the command's defaults


def measure_order(m: str) -> tuple:
    return (MEASURE_ORDER.index(m), m) if m in MEASURE_ORDER else (len(MEASURE_ORDER), m)


def measure_slug(m: str) -> str:
    return re.sub(r"[^a-z0-9]+", "", m.lower())


# ---------------------------------------------------------------------------- summaries
class _Input:
    """An :class:`EffRecord` as :func:`~mice_bench.evaluation.summary.summarize` reads it."""

    def __init__(self, r: EffRecord):
        self.variant, self.model, self.dataset_name = r.variant, r.model or None, r.dataset
        self.per_query, self.aggregates, self.file = r.per_query, r.measures, r.file


def _covers(s: EffectivenessSummary, r: EffRecord) -> bool:
    fs = {d.name: d.first_stage for d in s.datasets}
    if fs.get(r.dataset) != r.first_stage:
        return False
    return any(row.variant == r.variant and r.dataset in row.cells
               and (r.variant == BM25 or r.model in row.models) for row in s.rows)


def report_summaries(records: list[EffRecord], stored: list[SummaryFile]) -> list[SummaryFile]:
    """The summaries the report shows: every stored one (as ``mice-bench effectiveness``
    wrote it), oldest first, then one computed with the command's defaults
    (:func:`~mice_bench.evaluation.summary.summarize`) per model for the result files
    that no stored summary covers (e.g. files copied without their summary)."""
    out = list(stored)
    loose = [r for r in records if not any(_covers(s.summary, r) for s in stored)]
    models = sorted({r.model for r in loose if r.model})
    for m in models:
        for full in (False, True):
            mine = [r for r in loose if r.model == m and r.full_ranking == full]
            if not mine:
                continue
            names = {r.dataset for r in mine}
            bm25 = [r for r in records if r.variant == BM25 and r.dataset in names
                    and (r.first_stage == "full") == full]
            recs = mine + bm25
            first = {r.dataset: r.first_stage or "" for r in recs}
            datasets = [SummaryDataset(d, None, dataset_group(d), first[d])
                        for d in sorted(names, key=dataset_order)]
            variants = [BM25] + sorted({r.variant for r in mine}, key=variant_key)
            measures = sorted({k for r in recs for k in r.measures}, key=measure_order)
            s = summarize([_Input(r) for r in recs], datasets, variants,
                          SummarySettings(baseline=default_baseline(variants)), measures)
            out.append(SummaryFile(f"the result files of {m}{' (full ranking)' if full else ''}"
                                   " that no summary file covers", "", s))
    if not models:   # bm25 rows alone, without a summary
        rest = [r for r in loose if r.variant == BM25]
        if rest:
            datasets = [SummaryDataset(d, None, dataset_group(d), rest_fs)
                        for d, rest_fs in sorted({(r.dataset, r.first_stage or "")
                                                  for r in rest})]
            measures = sorted({k for r in rest for k in r.measures}, key=measure_order)
            out.append(SummaryFile("the bm25 result files", "", summarize(
                [_Input(r) for r in rest], datasets, [BM25], SummarySettings(), measures)))
    return out


@dataclass
class _Line:
    section: str                 # model label(s); "" for BM25
    system: str
    cells: dict = field(default_factory=dict)     # dataset -> (Cell, SummaryFile)


def effectiveness_table(summaries: list[SummaryFile], measure: str, name: str | None = None,
                        title: str | None = None, variants: list[str] | None = None
                        ) -> Table | None:
    """One table of ``measure`` from the runs' summaries: cells, marks and row order as
    the summaries hold them; for a (row, dataset) in several summaries the latest wins."""
    lines: dict[tuple[str, str], _Line] = {}
    # row order: the newest run's order, then rows only older runs have
    for sf in reversed(summaries):
        if measure in sf.summary.measures:
            for key in _row_keys(sf.summary, variants):
                lines.setdefault(key, _Line(*key))
    groups: dict[str, str] = {}
    first_stages: dict[str, set[str]] = defaultdict(set)
    for sf in summaries:
        s = sf.summary
        if measure not in s.measures:
            continue
        fs = {d.name: d for d in s.datasets}
        for row in s.rows:
            if variants is not None and row.variant not in variants:
                continue
            for ds, per in row.cells.items():
                c = per.get(measure)
                if c is None or not math.isfinite(c.mean):
                    continue
                full = fs[ds].full_ranking and row.variant != BM25
                key = ("", "BM25") if row.variant == BM25 else (
                    ", ".join(row.models), row.variant + (" (full ranking)" if full else ""))
                lines[key].cells[ds] = (c, sf)
                groups.setdefault(ds, fs[ds].group)
    lines = {k: ln for k, ln in lines.items() if ln.cells}
    if not lines:
        return None
    used = {id(sf): sf for ln in lines.values() for c, sf in ln.cells.values()
            if c.p is not None}
    for ln in lines.values():
        for ds, (_, sf) in ln.cells.items():
            f = next(d for d in sf.summary.datasets if d.name == ds)
            if not (f.full_ranking and ln.system != "BM25"):
                first_stages[f"run file {Path(f.first_stage[4:]).name}"
                             if f.first_stage.startswith("run:") else f.first_stage].add(ds)
    datasets = sorted(groups, key=dataset_order)
    ids = [d for d in datasets if groups[d] == "id"]
    oods = [d for d in datasets if groups[d] == "ood"]
    others = [d for d in datasets if d not in ids and d not in oods]
    cols = ids + oods + others
    tgroups = [("", 1)]
    if ids:
        tgroups.append(("In-domain", len(ids)))
    if oods:
        tgroups.append(("BEIR (OOD)", len(oods)))
    if others:
        tgroups.append(("Other", len(others)))
    avg_cols = (["ID"] if ids else []) + (["OOD"] if oods else [])
    if avg_cols:
        tgroups.append(("Average", len(avg_cols)))
    t = Table(name=name or f"effectiveness-{measure_slug(measure)}",
              title=title or f"Re-ranking effectiveness ({measure} × 100)",
              columns=["Re-Ranker"] + [ABBREV.get(d, d) for d in cols] + avg_cols,
              align="l" + "r" * (len(cols) + len(avg_cols)), groups=tgroups)

    def render(ln: _Line) -> list[str]:
        cells = [ln.system]
        for d in cols:
            c = ln.cells.get(d)
            cells.append(percent_cell(None if c is None else c[0]))
        for grp in ([ids] if ids else []) + ([oods] if oods else []):
            vals = [ln.cells[d][0].mean for d in grp if d in ln.cells]
            cells.append(f"{100 * float(np.mean(vals)):.1f}" if len(vals) == len(grp)
                         else "–")
        return cells

    if ("", "BM25") in lines:
        t.add_section(None, [render(lines[("", "BM25")])])
    sections = list(dict.fromkeys(k[0] for k in lines if k[0]))
    for m in sections:
        t.add_section(m if len(sections) > 1 or ("", "BM25") in lines else None,
                      [render(ln) for k, ln in lines.items() if k[0] == m])
    cap = [f"{measure} × 100 of re-ranking"]
    if first_stages:
        cap[0] += " (first stage: " + "; ".join(
            f"{f} on {', '.join(sorted(ds, key=dataset_order))}"
            for f, ds in sorted(first_stages.items())) + ")"
    cap[0] += "."
    if len(sections) == 1:
        cap.append(f"Model: {sections[0]}.")
    cap.append("ID / OOD: mean over the in-domain / BEIR columns, shown only for rows "
               "that have all of them.")
    sig = sorted(used.values(), key=lambda x: (x.created, x.file))
    if sig:
        cap.append("↑ / ↓: significantly better / worse than the baseline of the run the "
                   "cell comes from (paired " + "; ".join(
                       f"{TEST_NAMES[sf.summary.test]}, {sf.summary.correction} correction over "
                       f"the {_n(sf.summary.comparisons.get(measure, 0), 'comparison')} of "
                       f"{sf.file}, baseline {sf.summary.baseline}, corrected p < "
                       f"{sf.summary.alpha}" for sf in sig) + ").")
    legend = ", ".join(f"{ABBREV[d]} = {d}" for d in cols if d in ABBREV)
    if legend:
        cap.append(f"Columns: {legend}.")
    t.caption = " ".join(cap)
    return t


def _n(k: int, word: str) -> str:
    return f"{k} {word}{'' if k == 1 else 's'}"


def _row_keys(s: EffectivenessSummary, variants: list[str] | None) -> list[tuple[str, str]]:
    full = {d.name for d in s.datasets if d.full_ranking}
    keys = []
    for row in s.rows:
        if variants is not None and row.variant not in variants:
            continue
        if row.variant == BM25:
            keys.append(("", "BM25"))
            continue
        kinds = sorted({d in full for d in row.cells})
        keys += [(", ".join(row.models), row.variant + (" (full ranking)" if f else ""))
                 for f in kinds]
    return keys


def _mean_over(recs: dict[str, EffRecord], datasets: list[str], measure: str) -> float | None:
    vals = [recs[d].value(measure) for d in datasets if d in recs]
    if len(vals) != len(datasets) or not vals or any(v is None for v in vals):
        return None
    return float(np.mean(vals))


# ---------------------------------------------------------------------------- figures
def pareto_figure(group: tuple, lat_rows: list[LatencyRow], records: list[EffRecord],
                  out: Path, palette: Palette, measure: str = "nDCG@10"
                  ) -> tuple[str, str] | str:
    records = [r for r in records if not r.full_ranking]   # throughput is re-ranking
    where = f"effectiveness vs latency on {group_label(group)}"
    pts = []  # (model, variant, throughput, score, datasets, latency row)
    models_eff = sorted({r.model for r in records if r.model and r.value(measure) is not None})
    for m in models_eff:
        recs = [r for r in records if r.model == m and r.value(measure) is not None]
        arch = {(r.num_layers, r.hidden_size) for r in recs}
        # the latency of the same architecture (random weights cost the same as trained ones)
        cand = [r for r in lat_rows if r.run.protocol == "rerank" and not r.compiled
                and not r.kv_cache_applied and r.variant in {x.variant for x in recs}
                and (r.run.num_layers, r.run.hidden_size) in arch]
        if not cand:
            continue
        count: dict[tuple, set] = defaultdict(set)
        for r in cand:
            count[(r.doc_tokens, r.depth or 0, r.batch_size_requested, r.query_tokens)].add(
                r.variant)
        point = max(count, key=lambda k: (len(count[k]), k))
        thr: dict[str, LatencyRow] = {}
        for r in cand:
            k = (r.doc_tokens, r.depth or 0, r.batch_size_requested, r.query_tokens)
            if k == point and (r.variant not in thr or r.precompute_applied):
                thr[r.variant] = r
        vs: dict[str, dict[str, EffRecord]] = defaultdict(dict)
        for r in recs:
            if r.variant in thr:
                vs[r.variant][r.dataset] = r
        if len(vs) < 2:
            continue
        common = sorted(set.intersection(*(set(d) for d in vs.values())), key=dataset_order)
        if not common:
            continue
        for v in sorted(vs, key=variant_key):
            s = _mean_over(vs[v], common, measure)
            if s is not None:
                pts.append((m, v, thr[v].throughput, 100 * s, common, thr[v]))
    if len(pts) < 2:
        return (f"{where}: fewer than two variants of one model with both {measure} and "
                "rerank-protocol latency of the same architecture (layers, hidden size)")
    fig, axes = new_figure(7.2, 4.6)
    ax = axes[0][0]
    models = sorted({p[0] for p in pts})
    mk = ("o", "s", "^", "D", "v")
    for m, v, x, y, _, _ in pts:
        ax.scatter([x], [y], color=palette.color(v), marker=mk[models.index(m) % len(mk)],
                   s=55, zorder=3, edgecolors="black", linewidths=0.5,
                   label=v if len(models) == 1 else f"{v} ({m})")
        ax.annotate(v, (x, y), textcoords="offset points", xytext=(6, 4), fontsize=8)
    for m in models:   # Pareto front: no other point is both faster and better
        mp = sorted([(x, y) for mm, _, x, y, _, _ in pts if mm == m], key=lambda t: -t[0])
        front, best = [], -math.inf
        for x, y in mp:
            if y > best:
                front.append((x, y))
                best = y
        if len(front) >= 2:
            ax.plot([x for x, _ in front], [y for _, y in front], color="#777777",
                    linestyle="--", linewidth=1, zorder=2,
                    label="Pareto front" if m == models[0] else None)
    xs = [p[2] for p in pts]
    if max(xs) / min(xs) > 5:
        ax.set_xscale("log")
        plain_log_ticks(ax, "x")
    ax.set_xlabel("throughput (pairs/s, rerank protocol; log scale)"
                  if ax.get_xscale() == "log" else "throughput (pairs/s, rerank protocol)")
    dsets = pts[0][4]
    ax.set_ylabel(f"mean {measure} × 100 ({len(dsets)} dataset{'s' if len(dsets) > 1 else ''})")
    ax.legend(loc="best", frameon=True)
    ax.set_title(f"Effectiveness vs throughput — {group_label(group)}", fontsize=10)
    fig.tight_layout()
    stem = f"pareto-{group_slug(group)}"
    save(fig, out, stem)
    lat = [p[5] for p in pts]
    r0 = lat[0]
    arch = sorted({r.run.model_description for r in lat})
    cap = (f"One point per variant: mean {measure} over "
           f"{', '.join(sorted({d for p in pts for d in p[4]}, key=dataset_order))} "
           f"(model{'s' if len(models) > 1 else ''} {', '.join(models)}) against throughput "
           f"measured ({group_label(group)}) with the rerank protocol (batch "
           f"{r0.batch_size_requested}, depth {r0.depth}, documents of {r0.doc_tokens} "
           f"tokens, query {r0.query_tokens} tokens, documents precomputed where possible) "
           f"on the same architecture: {'; '.join(arch)}. Dashed: Pareto front (up and right "
           "is better).")
    return stem, cap


_MICE = re.compile(r"^mice-l(\d+)\+(\d+)(\[[^\]]*\])?$")


def merge_layer_panel(records: list[EffRecord], measure: str = "nDCG@10"
                      ) -> tuple[Panel, list[int], list[str], list[str]] | None:
    """The points of the merge-layer figure of effectiveness runs: mice-l{m}+{n} against the
    merge layer m, one curve per (model, n, options) and dataset group (the mean of the
    measure × 100 over the group's datasets that every m of the series has), each followed
    by ce's level on the same datasets. Returns (panel, merge layers, models, what each curve
    averages), or None without a series of two merge layers."""
    # one series per (model, n, options): mice-l{m}+3 and mice-l{m}+3[attn=joint] never mix
    series: dict[tuple[str, int, str], dict[int, dict[str, EffRecord]]] = defaultdict(
        lambda: defaultdict(dict))
    records = [r for r in records if not r.full_ranking]
    for r in records:
        m = _MICE.match(r.variant)
        if m and r.value(measure) is not None:
            series[(r.model, int(m.group(2)), m.group(3) or "")][int(m.group(1))][r.dataset] = r
    series = {k: v for k, v in series.items() if len(v) >= 2}
    if not series:
        return None
    ce = {(r.model, r.dataset): r for r in records if r.variant == "ce"}
    styles = {"id": ("-", "In-domain mean"), "ood": ("--", "BEIR (OOD) mean"),
              "all": (":", "mean")}
    panel, used = Panel(), []
    for i, (model, n, opts) in enumerate(sorted(series)):
        per_m = series[(model, n, opts)]
        common = sorted(set.intersection(*(set(d) for d in per_m.values())), key=dataset_order)
        grp = {"id": [d for d in common if per_m[min(per_m)][d].group == "id"],
               "ood": [d for d in common if per_m[min(per_m)][d].group == "ood"]}
        if not grp["id"] and not grp["ood"]:
            grp = {"all": common}
        color = ("#0072B2", "#D55E00", "#009E73", "#CC79A7")[i % 4]
        for g, ds in grp.items():
            if not ds:
                continue
            xs = sorted(per_m)
            ys = [_mean_over(per_m[x], ds, measure) for x in xs]
            ls, glabel = styles[g]
            label = f"mice-l{{m}}+{n}{opts}, {glabel}" + (f" ({model})" if len(series) > 1
                                                          else "")
            panel.items.append(Curve(label, tuple((x, 100 * y) for x, y in zip(xs, ys)
                                                  if y is not None), color, ls))
            cev = _mean_over({d: ce[(model, d)] for d in ds if (model, d) in ce}, ds, measure)
            if cev is not None:
                panel.items.append(Level(f"ce, {glabel}", 100 * cev, color, ls,
                                         linewidth=0.9, alpha=0.6))
            used.append(f"{glabel} over {', '.join(ds)}")
    layers = sorted({x for v in series.values() for x in v})
    return panel, layers, sorted({k[0] for k in series}), used


def effectiveness_merge_layer_figure(records: list[EffRecord], out: Path,
                                     measure: str = "nDCG@10") -> tuple[str, str] | str:
    """The merge-layer figure of effectiveness runs (:func:`merge_layer_panel`, drawn by
    :func:`.merge_layer.merge_layer_figure`)."""
    got = merge_layer_panel(records, measure)
    if got is None:
        return (f"{measure} vs merge layer: needs {measure} of mice-l{{m}}+{{n}} for at least "
                "two merge layers m (study ablations/merge-layer.toml)")
    panel, layers, models, used = got
    stem = "ndcg-vs-merge-layer" if measure == "nDCG@10" else f"{measure_slug(measure)}-vs-merge-layer"
    merge_layer_figure([panel], layers, out, stem, size=(7.0, 4.4),
                       title=f"{measure} vs merge layer (MICE, n interaction layers)",
                       xlabel="merge layer m (layers before query and document interact)",
                       ylabel=f"{measure} × 100")
    cap = (f"{measure} of mice-l{{m}}+{{n}} against the merge layer m, for "
           f"{', '.join(models)}; " + "; ".join(dict.fromkeys(used)) +
           ". Thin horizontal lines: the full cross-encoder (ce) on the same datasets. "
           "Effectiveness does not depend on the device.")
    return stem, cap


def runs_table(records: list[EffRecord]) -> Table:
    envs: dict[tuple, list[EffRecord]] = defaultdict(list)
    for r in records:
        e, c = r.environment, r.config
        key = (str(e.get("device_name") or e.get("cpu_model") or e.get("device") or "–"),
               str(e.get("device") or c.get("device") or "–"),
               str(e.get("dtype") or c.get("dtype") or "–"), str(e.get("torch", "–")),
               str(e.get("transformers", "–")), str(e.get("cuda") or "–"),
               short_commit(r.git_commit))
        envs[key].append(r)
    t = Table(name="runs-effectiveness", title="Effectiveness runs and their environment",
              columns=["device", "dtype", "torch", "transformers", "CUDA", "git commit",
                       "files", "created", "models", "datasets"],
              align="lllllllrll")
    body = []
    for key in sorted(envs):
        rs = envs[key]
        created = sorted(r.created for r in rs)
        body.append([f"{key[0]} ({key[1]})", key[2], key[3], key[4], key[5], key[6],
                     str(len(rs)), created[0] if created[0] == created[-1]
                     else f"{created[0]} … {created[-1]}",
                     ", ".join(sorted({r.model or "(no model: bm25)" for r in rs})),
                     ", ".join(sorted({r.dataset for r in rs}, key=dataset_order))])
    t.add_section(None, body)
    return t

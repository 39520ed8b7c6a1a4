"""Effectiveness tables (datasets as columns, ID / OOD averages, ↑ / ↓ marks) and the
figures that need effectiveness results (Pareto front, nDCG@10 vs merge layer)."""

from __future__ import annotations

import math
import re
from collections import defaultdict
from pathlib import Path

import numpy as np

from .common import Palette, group_label, group_slug, short_commit, variant_key
from .effectiveness_io import EffRecord
from .figures import new_figure, plain_log_ticks, save
from .latency_io import LatencyRow
from .tables import Table

#: the seed paper's column abbreviations (Table 1), in its column order
ABBREV = {
    "msmarco-dev": "MSM", "dl19": "DL19", "dl20": "DL20",
    "arguana": "Ar", "climate-fever": "CF", "dbpedia-entity": "DB", "fever": "FE",
    "fiqa": "Fi", "hotpotqa": "HPQ", "nfcorpus": "NFC", "nq": "NQ", "quora": "Q",
    "scidocs": "SD", "scifact": "SF", "webis-touche2020": "T-v2", "trec-covid": "T-C",
}
_ORDER = list(ABBREV)
MEASURE_ORDER = ("nDCG@10", "RR@10", "R@100")
BASELINE = "ce"
ALPHA = 0.05


def dataset_order(name: str) -> tuple:
    return (_ORDER.index(name), name) if name in _ORDER else (len(_ORDER), name)


def measure_order(m: str) -> tuple:
    return (MEASURE_ORDER.index(m), m) if m in MEASURE_ORDER else (len(MEASURE_ORDER), m)


def measure_slug(m: str) -> str:
    return re.sub(r"[^a-z0-9]+", "", m.lower())


def _significance(records: list[EffRecord], measure: str) -> tuple[dict, str]:
    """(model, variant, dataset) -> '↑' / '↓' against ``ce`` of the same model: paired
    t-test per dataset on per-query values, Holm-corrected over every comparison of the
    table. Returns the marks and a sentence for the caption."""
    try:
        from ..effectiveness.stats import holm, paired_ttest
    except Exception:  # noqa: BLE001 - effectiveness package unavailable
        return {}, "No significance test (effectiveness statistics unavailable)."
    base = {(r.model, r.dataset, r.full_ranking): r for r in records if r.variant == BASELINE}
    tests = []
    for r in records:
        if r.variant in (BASELINE, "bm25"):
            continue
        b = base.get((r.model, r.dataset, r.full_ranking))
        if b is None:
            continue
        a_pq, b_pq = r.per_query.get(measure), b.per_query.get(measure)
        if not a_pq or not b_pq or set(a_pq) != set(b_pq) or len(a_pq) < 2:
            continue
        qids = sorted(a_pq)
        a = [a_pq[q] for q in qids]
        c = [b_pq[q] for q in qids]
        tests.append(((r.model, r.system, r.dataset), paired_ttest(a, c),
                      float(np.mean(a)) - float(np.mean(c))))
    if not tests:
        return {}, ""
    adj = holm([p for _, p, _ in tests])
    marks = {}
    for (key, _, diff), p in zip(tests, adj):
        if p is not None and not math.isnan(p) and p < ALPHA and diff != 0:
            marks[key] = "↑" if diff > 0 else "↓"
    return marks, (f"↑ / ↓: significantly better / worse than {BASELINE} of the same model "
                   f"(paired t-test on per-query {measure}, Holm-corrected over the "
                   f"{len(tests)} comparisons of this table, p < {ALPHA}).")


def effectiveness_table(records: list[EffRecord], measure: str, name: str | None = None,
                        title: str | None = None, variants: list[str] | None = None
                        ) -> Table | None:
    recs = [r for r in records if r.value(measure) is not None
            and (variants is None or r.variant in variants)]
    if not recs:
        return None
    datasets = sorted({r.dataset for r in recs}, key=dataset_order)
    ids = [d for d in datasets if _group(recs, d) == "id"]
    oods = [d for d in datasets if _group(recs, d) == "ood"]
    others = [d for d in datasets if d not in ids and d not in oods]
    cols = ids + oods + others
    marks, sig = _significance(recs, measure)
    rows: dict[tuple, dict[str, EffRecord]] = defaultdict(dict)
    for r in recs:
        key = ("", "bm25") if r.variant == "bm25" else (r.model, r.system)
        rows[key].setdefault(r.dataset, r)
    groups = [("", 1)]
    if ids:
        groups.append(("In-domain", len(ids)))
    if oods:
        groups.append(("BEIR (OOD)", len(oods)))
    if others:
        groups.append(("Other", len(others)))
    avg_cols = (["ID"] if ids else []) + (["OOD"] if oods else [])
    if avg_cols:
        groups.append(("Average", len(avg_cols)))
    t = Table(name=name or f"effectiveness-{measure_slug(measure)}",
              title=title or f"Re-ranking effectiveness ({measure} × 100)",
              columns=["Re-Ranker"] + [ABBREV.get(d, d) for d in cols] + avg_cols,
              align="l" + "r" * (len(cols) + len(avg_cols)), groups=groups)

    def line(key, per_ds):
        cells = [key[1]]
        for d in cols:
            r = per_ds.get(d)
            v = r.value(measure) if r else None
            cell = f"{100 * v:.1f}" if v is not None else "–"
            m = marks.get((r.model, r.system, d)) if r else None
            cells.append(cell + (f" {m}" if m else ""))
        for grp in ([ids] if ids else []) + ([oods] if oods else []):
            vals = [per_ds[d].value(measure) for d in grp if d in per_ds]
            cells.append(f"{100 * float(np.mean(vals)):.1f}" if len(vals) == len(grp)
                         else "–")
        return cells

    if ("", "bm25") in rows:
        t.add_section(None, [line(("", "BM25"), rows[("", "bm25")])])
    models = sorted({k[0] for k in rows if k[0]})
    for m in models:
        keys = sorted((k for k in rows if k[0] == m), key=lambda k: variant_key(k[1]))
        t.add_section(m if len(models) > 1 or ("", "bm25") in rows else None,
                      [line(k, rows[k]) for k in keys])
    legend = ", ".join(f"{ABBREV[d]} = {d}" for d in cols if d in ABBREV)
    cap = [f"{measure} × 100 of re-ranking"]
    by_fs: dict[str, set] = defaultdict(set)
    for r in recs:
        if r.first_stage and not r.full_ranking:
            f = r.first_stage
            by_fs[f"run file {Path(f[4:]).name}" if f.startswith("run:") else f].add(r.dataset)
    if by_fs:
        cap[0] += " (first stage: " + "; ".join(
            f"{f} on {', '.join(sorted(ds, key=dataset_order))}"
            for f, ds in sorted(by_fs.items())) + ")"
    cap[0] += "."
    if len(models) == 1:
        cap.append(f"Model: {models[0]}.")
    cap.append("ID / OOD: mean over the in-domain / BEIR columns, shown only for rows "
               "that have all of them.")
    if sig:
        cap.append(sig)
    if legend:
        cap.append(f"Columns: {legend}.")
    t.caption = " ".join(cap)
    return t


def _group(recs: list[EffRecord], d: str) -> str:
    for r in recs:
        if r.dataset == d:
            return r.group
    return "other"


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


_MICE = re.compile(r"^mice-l(\d+)\+(\d+)$")


def merge_layer_figure(records: list[EffRecord], out: Path, palette: Palette,
                       measure: str = "nDCG@10") -> tuple[str, str] | str:
    series: dict[tuple[str, int], dict[int, dict[str, EffRecord]]] = defaultdict(
        lambda: defaultdict(dict))
    records = [r for r in records if not r.full_ranking]
    for r in records:
        m = _MICE.match(r.variant)
        if m and r.value(measure) is not None:
            series[(r.model, int(m.group(2)))][int(m.group(1))][r.dataset] = r
    series = {k: v for k, v in series.items() if len(v) >= 2}
    if not series:
        return (f"{measure} vs merge layer: needs {measure} of mice-l{{m}}+{{n}} for at least "
                "two merge layers m (study ablations/merge-layer.toml)")
    fig, axes = new_figure(7.0, 4.4)
    ax = axes[0][0]
    ce = {(r.model, r.dataset): r for r in records if r.variant == BASELINE}
    styles = {"id": ("-", "In-domain mean"), "ood": ("--", "BEIR (OOD) mean"),
              "all": (":", "mean")}
    lines, used = [], []
    for i, (model, n) in enumerate(sorted(series)):
        per_m = series[(model, n)]
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
            pts = [(x, 100 * y) for x, y in zip(xs, ys) if y is not None]
            ls, glabel = styles[g]
            label = f"mice-l{{m}}+{n}, {glabel}" + (f" ({model})" if len(series) > 1 else "")
            ax.plot([p[0] for p in pts], [p[1] for p in pts], color=color, linestyle=ls,
                    marker="o", label=label)
            cev = _mean_over({d: ce[(model, d)] for d in ds if (model, d) in ce}, ds, measure)
            if cev is not None:
                ax.axhline(100 * cev, color=color, linestyle=ls, linewidth=0.9, alpha=0.6,
                           label=f"ce, {glabel}")
            used.append(f"{glabel} over {', '.join(ds)}")
            lines.append(label)
    allx = sorted({x for v in series.values() for x in v})
    ax.set_xticks(allx, [str(x) for x in allx])
    ax.set_xlabel("merge layer m (layers before query and document interact)")
    ax.set_ylabel(f"{measure} × 100")
    ax.set_title(f"{measure} vs merge layer (MICE, n interaction layers)", fontsize=10)
    ax.legend(loc="best", frameon=True)
    fig.tight_layout()
    stem = "ndcg-vs-merge-layer" if measure == "nDCG@10" else f"{measure_slug(measure)}-vs-merge-layer"
    save(fig, out, stem)
    models = sorted({k[0] for k in series})
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

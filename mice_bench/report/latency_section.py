"""Latency tables and figures, one set per (device type, device name, dtype) group.

Numbers of different devices or dtypes never share a table, a curve or a speedup: every
speedup shown is the ``speedup_vs_ce`` that the latency runner computed inside one run.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Callable, Iterable

from .common import Palette, group_label, group_slug, short_commit, variant_key
from .figures import new_figure, plain_log_ticks, save
from .latency_io import LatencyRow, RunInfo
from .tables import Table, fmt_ms, fmt_ms_pm, fmt_params, fmt_rate, fmt_ratio


def dedupe(rows: Iterable[LatencyRow]) -> list[LatencyRow]:
    """One row per measurement point; a repeated point keeps the latest run."""
    best: dict[tuple, LatencyRow] = {}
    for r in rows:
        k = (r.run.protocol, r.variant, r.batch_size_requested, r.doc_tokens, r.depth,
             r.query_tokens, r.precompute_applied, r.kv_cache_applied, r.compiled,
             bool(r.run.config.get("kv_cache")))  # a --kv-cache run is its own point
        old = best.get(k)
        if old is None or (r.run.created, r.run.file) >= (old.run.created, old.run.file):
            best[k] = r
    return sorted(best.values(), key=_row_order)


def _row_order(r: LatencyRow) -> tuple:
    return (r.run.protocol, r.compiled, r.kv_cache_applied, r.batch_size_requested,
            r.doc_tokens, r.depth or 0, r.query_tokens, not r.precompute_applied,
            variant_key(r.variant))


def by_group(rows: Iterable[LatencyRow]) -> dict[tuple, list[LatencyRow]]:
    out: dict[tuple, list[LatencyRow]] = defaultdict(list)
    for r in rows:
        out[r.run.group].append(r)
    return {g: dedupe(out[g]) for g in sorted(out)}


def _mem(r: LatencyRow) -> str:
    if r.run.device.startswith("cuda"):
        return f"{r.mem_peak_mb:.0f} MB" if r.mem_peak_mb is not None else "–"
    return f"+{r.mem_growth_mb:.0f} MB" if r.mem_growth_mb is not None else "–"


def _mem_header(group: tuple) -> str:
    return "Peak Mem" if group[0] == "cuda" else "Peak RSS growth"


def _best_point(rows: list[LatencyRow], key: Callable[[LatencyRow], tuple]):
    """The point (``key``) covering most rows; ties: larger values of the key win."""
    count: dict[tuple, int] = defaultdict(int)
    for r in rows:
        count[key(r)] += 1
    if not count:
        return None
    return max(count, key=lambda k: (count[k], k))


def _one_run(rows: list[LatencyRow]) -> list[LatencyRow]:
    """Rows of a single results file (the one with most rows; ties: the newest), so that one
    table never silently mixes measurements of different runs."""
    if not rows:
        return rows
    count: dict[tuple, int] = defaultdict(int)
    for r in rows:
        count[(r.run.file, r.run.created)] += 1
    best = max(count, key=lambda k: (count[k], k[1], k[0]))
    return [r for r in rows if (r.run.file, r.run.created) == best]


def _rerank_key(r: LatencyRow) -> tuple:
    return (r.doc_tokens, r.depth or 0, r.batch_size_requested, r.query_tokens)


def _paper_key(r: LatencyRow) -> tuple:
    return (r.doc_tokens, r.batch_size_requested)


def _sp(r: LatencyRow | None) -> str:
    if r is None:
        return "–"
    s = fmt_ratio(r.speedup_vs_ce)
    if r.flop_ratio_vs_ce is not None and r.speedup_vs_ce is not None:
        s += f" ({fmt_ratio(r.flop_ratio_vs_ce)})"
    return s


def side_by_side_table(group: tuple, rows: list[LatencyRow]) -> Table | None:
    """The seed's efficiency table (paper protocol) beside the rerank protocol."""
    paper = [r for r in rows if r.run.protocol == "paper" and not r.compiled
             and not r.kv_cache_applied and not r.run.config.get("kv_cache")]
    rerank = [r for r in rows if r.run.protocol == "rerank" and not r.compiled
              and not r.kv_cache_applied and not r.run.config.get("kv_cache")]
    pp = _best_point(paper, _paper_key)
    rp = _best_point(rerank, _rerank_key)
    paper = _one_run([r for r in paper if _paper_key(r) == pp])
    rerank = _one_run([r for r in rerank if _rerank_key(r) == rp])
    if not paper and not rerank:
        return None
    P = {(r.variant, r.precompute_applied): r for r in paper}
    R = {(r.variant, r.precompute_applied): r for r in rerank}
    cols, align, groups = ["Model", "#param"], "lr", [("", 2)]
    if paper:
        cols += ["Latency (ms)", "Docs/s", _mem_header(group), "speedup vs ce"]
        align += "rrrr"
        groups.append(("Paper protocol", 4))
    if rerank:
        cols += ["ms / query", "pairs/s", "speedup vs ce (FLOP bound)", _mem_header(group)]
        align += "rrrr"
        groups.append(("Rerank protocol", 4))
    title = ("Latency, paper protocol beside rerank protocol" if paper and rerank
             else "Latency, paper protocol" if paper else "Latency, rerank protocol")
    t = Table(name=f"latency-{group_slug(group)}", title=f"{title} — {group_label(group)}",
              columns=cols, align=align, groups=groups)
    for pre, label in ((True, "With docs precompute"), (False, "Without docs precompute")):
        keys = sorted({k for k in (*P, *R) if k[1] == pre}, key=lambda k: variant_key(k[0]))
        body = []
        for k in keys:
            p, r = P.get(k), R.get(k)
            any_r = p or r
            cells = [k[0], fmt_params(any_r.params)]
            if paper:
                cells += [fmt_ms_pm(p.lat_mean, p.lat_std) if p else "–",
                          fmt_rate(p.throughput) if p else "–", _mem(p) if p else "–",
                          fmt_ratio(p.speedup_vs_ce) if p else "–"]
            if rerank:
                cells += [fmt_ms_pm(r.lat_mean, r.lat_std) if r else "–",
                          fmt_rate(r.throughput) if r else "–", _sp(r),
                          _mem(r) if r else "–"]
            body.append(cells)
        t.add_section(label, body)
    cap = [f"Measured: {group_label(group)}."]
    if paper:
        p0 = paper[0]
        q = p0.run.config.get("query_text")
        cap.append(f"Paper protocol: one call on {p0.batch_size_requested} (query, document) "
                   f"pairs, documents of {p0.doc_tokens} tokens, the query"
                   + (f" {q!r}" if q else "") + " re-encoded for every pair, timing the whole "
                   "call including tokenization; latency per call (mean ± std over "
                   f"{p0.count} runs).")
    if rerank:
        r0 = rerank[0]
        cap.append(f"Rerank protocol: one query of {r0.query_tokens} tokens and {r0.depth} "
                   f"candidates of {r0.doc_tokens} tokens in batches of "
                   f"{r0.batch_size_requested}, the query encoded once, document states "
                   "precomputed where the variant allows; latency per query (mean ± std).")
    cap.append("Speedups are against ce measured in the same run; joint variants have nothing "
               "to precompute. Memory: " + ("peak allocated GPU memory."
                                            if group[0].startswith("cuda")
                                            else "peak resident-set growth during the run."))
    files = sorted({r.run.file for r in paper + rerank})
    cap.append("Sources: " + ", ".join(files) + ".")
    t.caption = " ".join(cap)
    return t


def all_rows_table(group: tuple, rows: list[LatencyRow]) -> Table:
    t = Table(
        name=f"latency-all-{group_slug(group)}",
        title=f"Every latency measurement — {group_label(group)}",
        columns=["protocol", "variant", "batch", "doc tok", "depth", "pre", "kv", "compiled",
                 "ms / run", "p50", "p99", "pairs/s", "speedup vs ce (FLOP bound)",
                 _mem_header(group)],
        align="llrrrcccrrrrrr",
    )
    body = []
    for r in rows:
        body.append([r.run.protocol, r.variant,
                     str(r.batch_size) + ("" if r.batch_size == r.batch_size_requested
                                          else f" (of {r.batch_size_requested})"),
                     str(r.doc_tokens_effective), str(r.depth) if r.depth else "–",
                     "yes" if r.precompute_applied else "no",
                     "yes" if r.kv_cache_applied else "no", "yes" if r.compiled else "no",
                     fmt_ms_pm(r.lat_mean, r.lat_std), fmt_ms(r.lat_p50), fmt_ms(r.lat_p99),
                     fmt_rate(r.throughput), _sp(r), _mem(r)])
    t.add_section(None, body)
    t.caption = (f"Measured: {group_label(group)}. One row per measurement point (a repeated "
                 "point shows its latest run). ms / run: paper protocol one call, rerank "
                 "protocol one query with all its candidates. Speedups against ce of the same "
                 "run. Sources: " + ", ".join(sorted({r.run.file for r in rows})) + ".")
    return t


# ---------------------------------------------------------------------------- figures
def _series_label(r: LatencyRow) -> str:
    s = r.variant
    if r.layout == "split":
        s += " (precomputed docs)" if r.precompute_applied else " (docs encoded online)"
    if r.kv_cache_applied:
        s += " +K/V"
    return s


def _log_if_wide(ax, values: list[float], axis: str = "y") -> None:
    vals = [v for v in values if v is not None and v > 0 and math.isfinite(v)]
    if vals and max(vals) / min(vals) > 20:
        (ax.set_yscale if axis == "y" else ax.set_xscale)("log")
        plain_log_ticks(ax, axis)


def _env_line(rows: list[LatencyRow], group: tuple) -> str:
    models = sorted({r.run.model_description for r in rows})
    return f"Measured: {group_label(group)}; model {'; '.join(models)}."


def sweep_figure(group: tuple, rows: list[LatencyRow], x: str, out: Path,
                 palette: Palette) -> tuple[str, str] | str:
    """Latency and speedup over ce against ``x`` (``doc_tokens`` or ``depth``), rerank
    protocol. Returns (stem, caption) or the reason it was skipped."""
    fixed = {"doc_tokens": lambda r: (r.batch_size_requested, r.depth or 0, r.query_tokens,
                                      r.kv_cache_applied),
             "depth": lambda r: (r.batch_size_requested, r.doc_tokens, r.query_tokens,
                                 r.kv_cache_applied)}[x]
    xval = (lambda r: r.doc_tokens) if x == "doc_tokens" else (lambda r: r.depth or 0)
    cand = [r for r in rows if r.run.protocol == "rerank" and not r.compiled]
    xs_by: dict[tuple, set] = defaultdict(set)
    for r in cand:
        xs_by[fixed(r)].add(xval(r))
    good = {k: v for k, v in xs_by.items() if len(v) >= 2}
    what = "document length" if x == "doc_tokens" else "re-ranking depth"
    if not good:
        return (f"latency vs {what} on {group_label(group)}: no rerank-protocol sweep over "
                f"{'--doc-tokens' if x == 'doc_tokens' else '--depth'} (needs >= 2 values)")
    best = max(good, key=lambda k: (len(good[k]), sum(fixed(r) == k for r in cand), k))
    sel = [r for r in cand if fixed(r) == best]
    series: dict[str, list[LatencyRow]] = defaultdict(list)
    for r in sel:
        series[_series_label(r)].append(r)
    fig, axes = new_figure(11.0, 4.2, ncols=2)
    ax1, ax2 = axes[0]
    lat_vals, sp_vals = [], []
    for label in sorted(series, key=lambda s: (variant_key(series[s][0].variant), s)):
        pts = sorted(series[label], key=xval)
        v = pts[0].variant
        kw = dict(color=palette.color(v), marker=palette.marker(v), label=label,
                  linestyle="-" if pts[0].precompute_applied or pts[0].layout == "joint"
                  else "--")
        lat = [p.lat_mean * 1e3 for p in pts]
        ax1.plot([xval(p) for p in pts], lat, **kw)
        lat_vals += lat
        sp = [(xval(p), p.speedup_vs_ce) for p in pts if p.speedup_vs_ce is not None]
        if sp:
            ax2.plot([a for a, _ in sp], [b for _, b in sp], **kw)
            sp_vals += [b for _, b in sp]
    xs = sorted({xval(r) for r in sel})
    for ax in (ax1, ax2):
        ax.set_xscale("log", base=2)
        ax.set_xticks(xs, [str(v) for v in xs])
        ax.minorticks_off()
        ax.set_xlabel("document length (tokens)" if x == "doc_tokens"
                      else "candidates per query (depth)")
    b, other = best[0], best[1]
    ax1.set_ylabel("latency per query (ms, mean)")
    _log_if_wide(ax1, lat_vals)
    ax1.set_title("Re-ranking latency (rerank protocol)")
    ax2.set_ylabel("speedup over ce (×, same run)")
    _log_if_wide(ax2, sp_vals)
    if sp_vals:
        ax2.axhline(1.0, color="#777777", linewidth=0.8, linestyle=":")
    ax2.set_title("Speedup over the full cross-encoder")
    handles, labels = ax1.get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0),
               ncol=min(3, len(labels)), frameon=False)
    q = sel[0].query_tokens
    setting = (f"batch {b}, depth {other}, query {q} tokens" if x == "doc_tokens"
               else f"batch {b}, documents of {other} tokens, query {q} tokens")
    fig.suptitle(f"Latency vs {what} — {group_label(group)}", fontsize=11)
    cap = (f"{_env_line(sel, group)} Rerank protocol, {setting}"
           + (", per-layer K/V precomputed" if best[3] else "") + ". Speedups against ce of the "
           "same run; solid: documents precomputed (or joint), dashed: documents encoded online.")
    fig.tight_layout()
    stem = f"latency-vs-{'doclen' if x == 'doc_tokens' else 'depth'}-{group_slug(group)}"
    save(fig, out, stem)
    return stem, cap


def throughput_figure(group: tuple, rows: list[LatencyRow], out: Path,
                      palette: Palette) -> tuple[str, str] | str:
    panels = []
    for proto in ("rerank", "paper"):
        cand = [r for r in rows if r.run.protocol == proto and not r.compiled]
        key = lambda r: (r.doc_tokens, r.depth or 0, r.query_tokens, r.kv_cache_applied)  # noqa
        bs: dict[tuple, set] = defaultdict(set)
        for r in cand:
            bs[key(r)].add(r.batch_size_requested)
        good = {k: v for k, v in bs.items() if len(v) >= 2}
        if good:
            best = max(good, key=lambda k: (len(good[k]), k))
            panels.append((proto, best, [r for r in cand if key(r) == best]))
    if not panels:
        return (f"throughput vs batch size on {group_label(group)}: no sweep over --batch-size "
                "(needs >= 2 values)")
    fig, axes = new_figure(5.6 * len(panels), 4.2, ncols=len(panels))
    labels_all = {}
    for ax, (proto, best, sel) in zip(axes[0], panels):
        series: dict[str, list[LatencyRow]] = defaultdict(list)
        for r in sel:
            series[_series_label(r)].append(r)
        vals = []
        for label in sorted(series, key=lambda s: (variant_key(series[s][0].variant), s)):
            pts = sorted(series[label], key=lambda r: r.batch_size_requested)
            v = pts[0].variant
            h, = ax.plot([p.batch_size_requested for p in pts], [p.throughput for p in pts],
                         color=palette.color(v), marker=palette.marker(v), label=label,
                         linestyle="-" if pts[0].precompute_applied or pts[0].layout == "joint"
                         else "--")
            labels_all.setdefault(label, h)
            vals += [p.throughput for p in pts]
        xs = sorted({r.batch_size_requested for r in sel})
        ax.set_xscale("log", base=2)
        ax.set_xticks(xs, [str(v) for v in xs])
        ax.minorticks_off()
        ax.set_yscale("log")
        plain_log_ticks(ax)
        ax.set_xlabel("batch size (pairs per forward pass)")
        ax.set_ylabel("throughput (pairs/s)" if proto == "rerank" else "throughput (docs/s)")
        d = f"documents of {best[0]} tokens" + (f", depth {best[1]}" if proto == "rerank" else "")
        ax.set_title(f"{proto} protocol, {d}")
    fig.legend(list(labels_all.values()), list(labels_all), loc="upper center",
               bbox_to_anchor=(0.5, 0.0), ncol=min(3, len(labels_all)), frameon=False)
    fig.suptitle(f"Throughput vs batch size — {group_label(group)}", fontsize=11)
    fig.tight_layout()
    stem = f"throughput-vs-batch-{group_slug(group)}"
    save(fig, out, stem)
    cap = (f"{_env_line([r for _, _, s in panels for r in s], group)} Throughput (log scale) "
           "against batch size; solid: documents precomputed (or joint), dashed: encoded "
           "online.")
    return stem, cap


def runs_table(runs: list[RunInfo]) -> Table:
    t = Table(name="runs-latency", title="Latency runs and their environment",
              columns=["file", "created", "protocol", "model", "device", "dtype", "threads",
                       "compiled", "torch", "transformers", "CUDA", "mice-bench", "git commit"],
              align="lllllllclllll")
    body = []
    for r in sorted(runs, key=lambda r: r.file):
        env = r.environment
        body.append([r.file, r.created, r.protocol, r.model_description,
                     f"{r.device_name} ({r.device})", r.dtype, str(r.threads),
                     "yes" if r.compiled else "no", str(env.get("torch", "–")),
                     str(env.get("transformers", "–")), str(env.get("cuda") or "–"),
                     str(r.mice_bench_version or "–"), short_commit(r.git_commit)])
    t.add_section(None, body)
    return t

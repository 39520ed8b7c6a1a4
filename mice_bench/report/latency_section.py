"""Latency figures and the runs table, one set per (device type, device name, dtype) group
(the latency tables themselves are :mod:`mice_bench.latency.table`, shared with
``mice-bench latency``).

Numbers of different devices or dtypes never share a table, a curve or a speedup: every
speedup shown is the ``speedup_vs_ce`` that the latency runner computed inside one run.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

from ..naming import group_label, group_slug, short_commit
from ..spec import variant_key
from ..tables import Table
from .common import Palette
from .figures import new_figure, plain_log_ticks, save
from .latency_io import LatencyRow, RunInfo


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
    """Every latency results file with its environment and busy-machine flag (the 1-minute
    load average before the run against the core count; a busy run never replaces an
    idle-machine measurement of the same point, :func:`mice_bench.latency.table.dedupe`)."""
    t = Table(name="runs-latency", title="Latency runs and their environment",
              columns=["file", "created", "protocol", "model", "device", "dtype", "threads",
                       "compiled", "busy machine", "torch", "transformers", "CUDA",
                       "mice-bench", "git commit"],
              align="lllllllcllllll")
    body = []
    for r in sorted(runs, key=lambda r: r.file):
        env = r.environment
        body.append([r.file, r.created, r.protocol, r.model_description,
                     f"{r.device_name} ({r.device})", r.dtype, str(r.threads),
                     "yes" if r.compiled else "no", r.load_text, str(env.get("torch", "–")),
                     str(env.get("transformers", "–")), str(env.get("cuda") or "–"),
                     str(r.mice_bench_version or "–"), short_commit(r.git_commit)])
    t.add_section(None, body)
    return t

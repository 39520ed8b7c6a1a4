"""The latency tables: one renderer for what ``mice-bench latency`` prints and what
``mice-bench report`` writes (format-neutral :class:`~mice_bench.tables.Table`, shown with
Rich or written as Markdown / LaTeX).

* :func:`side_by_side_table`: the seed's efficiency table (paper protocol: ``#param``,
  latency mean ± std, docs/s, peak memory) beside the rerank protocol (ms per query, pairs/s,
  speedup vs ``ce`` with the FLOP bound), in *With* / *Without docs precompute* sections;
* :func:`all_rows_table`: every measurement point;
* :func:`render`: both, for the rows of one run (the command's output).

Rows measured with an earlier definition of their variant (:mod:`mice_bench.legacy`) carry ``†``
and the caption says so. Numbers of different device groups never share a table.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Callable, Iterable

from ..legacy import MARK
from ..naming import group_label, group_slug
from ..spec import variant_key
from ..tables import Table, fmt_ms, fmt_ms_pm, fmt_params, fmt_rate, fmt_ratio
from .records import OTHER_CPU_BUSY, LatencyRow, idle_rank, records
from .result import LatencyResult


def _preference(run) -> tuple:
    """Which run of a repeated point is shown: an idle machine's over a busy one's
    (:attr:`RunInfo.busy <mice_bench.latency.records.RunInfo.busy>`; unknown in between),
    then the latest (``created``, then file name)."""
    return (idle_rank(run.busy), run.created, run.file)


def dedupe(rows: Iterable[LatencyRow]) -> list[LatencyRow]:
    """One row per measurement point; a repeated point keeps the run of an idle machine if
    there is one, else the latest run (:func:`_preference`): a newer run on a busy machine
    never replaces an idle-machine measurement."""
    best: dict[tuple, LatencyRow] = {}
    for r in rows:
        k = (r.run.protocol, r.variant, r.batch_size_requested, r.doc_tokens, r.depth,
             r.query_tokens, r.precompute_applied, r.kv_cache_applied, r.compiled,
             bool(r.run.config.get("kv_cache")),  # a --kv-cache run is its own point
             r.doc_vectors,                       # so is a colbert index (head vectors)
             bool(r.run.config.get("prepack")))   # and a --prepack run
        old = best.get(k)
        if old is None or _preference(r.run) >= _preference(old.run):
            best[k] = r
    return sorted(best.values(), key=_row_order)


def _row_order(r: LatencyRow) -> tuple:
    return (r.run.protocol, r.compiled, r.kv_cache_applied, r.batch_size_requested,
            r.doc_tokens, r.depth or 0, r.query_tokens, not r.precompute_applied,
            variant_key(r.variant))


def by_group(rows: Iterable[LatencyRow], deduped: bool = True
             ) -> dict[tuple, list[LatencyRow]]:
    """Rows per device group: one per measurement point (:func:`dedupe`), or every row
    (``deduped=False``: what :func:`side_by_side_table` needs, which shows one file)."""
    out: dict[tuple, list[LatencyRow]] = defaultdict(list)
    for r in rows:
        out[r.run.group].append(r)
    return {g: dedupe(out[g]) if deduped else sorted(out[g], key=_row_order)
            for g in sorted(out)}


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
    """Rows of a single results file (the one with most rows; ties: an idle machine's, then
    the newest), so that one table never silently mixes measurements of different runs."""
    if not rows:
        return rows
    count: dict[tuple, int] = defaultdict(int)
    idle: dict[tuple, int] = {}
    for r in rows:
        count[(r.run.file, r.run.created)] += 1
        idle[(r.run.file, r.run.created)] = idle_rank(r.run.busy)
    best = max(count, key=lambda k: (count[k], idle[k], k[1], k[0]))
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


def _plain(r: LatencyRow) -> bool:
    """Eager, no K/V cache, no prepacked weights: the runs the seed's table compares."""
    return not (r.compiled or r.kv_cache_applied or r.run.config.get("kv_cache")
                or r.run.config.get("prepack"))


def side_by_side_table(group: tuple, rows: list[LatencyRow]) -> Table | None:
    """The seed's efficiency table (paper protocol) beside the rerank protocol."""
    paper = [r for r in rows if r.run.protocol == "paper" and _plain(r)]
    rerank = [r for r in rows if r.run.protocol == "rerank" and _plain(r)]
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
            cells = [k[0] + (f" {MARK}" if (p and p.legacy) or (r and r.legacy) else ""),
                     fmt_params(any_r.params)]
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
    cap += _legacy_caption(paper + rerank)
    cap.append(_sources(paper + rerank))
    t.caption = " ".join(cap)
    return t


def _sources(rows: list[LatencyRow]) -> str:
    """``Sources: a.json, b.json (busy machine).``: every results file behind ``rows`` with
    its busy-machine flag (the load average before the run above the core count - 0.5)."""
    runs = {r.run.file: r.run for r in rows}
    names = [f + (" (busy machine)" if runs[f].busy else "") for f in sorted(runs)]
    return "Sources: " + ", ".join(names) + "."


def all_rows_table(group: tuple, rows: list[LatencyRow]) -> Table:
    t = Table(
        name=f"latency-all-{group_slug(group)}",
        title=f"Every latency measurement — {group_label(group)}",
        columns=["protocol", "variant", "batch", "doc tok", "depth", "pre", "kv", "compiled",
                 "ms / run", "p50", "p99", "pairs/s", "speedup vs ce (FLOP bound)",
                 _mem_header(group), "busy"],
        align="llrrrcccrrrrrrc",
    )
    body = []
    for r in rows:
        body.append([r.run.protocol, r.variant + (f" {MARK}" if r.legacy else ""),
                     str(r.batch_size) + ("" if r.batch_size == r.batch_size_requested
                                          else f" (of {r.batch_size_requested})"),
                     str(r.doc_tokens_effective), str(r.depth) if r.depth else "–",
                     (r.doc_content if r.doc_vectors else "yes") if r.precompute_applied
                     else "no",
                     "yes" if r.kv_cache_applied else "no", "yes" if r.compiled else "no",
                     fmt_ms_pm(r.lat_mean, r.lat_std), fmt_ms(r.lat_p50), fmt_ms(r.lat_p99),
                     fmt_rate(r.throughput), _sp(r), _mem(r), _busy(r)])
    t.add_section(None, body)
    t.caption = (f"Measured: {group_label(group)}. One row per measurement point (a repeated "
                 "point shows its run on an idle machine if there is one, else its latest "
                 "run). ms / run: paper protocol one call, rerank protocol one query with all "
                 "its candidates. Speedups against ce of the same run. busy: other processes "
                 f"used more than {OTHER_CPU_BUSY:g} CPU cores while the run measured (from "
                 "/proc; files without that record: the load average when the run started "
                 "above the core count − 0.5); they inflate CPU timings; – unknown. "
                 + "".join(f"{s} " for s in _legacy_caption(rows)) + _sources(rows))
    return t


def _busy(r: LatencyRow) -> str:
    b = r.run.busy
    return "–" if b is None else "yes" if b else "no"


def _legacy_caption(rows: list[LatencyRow]) -> list[str]:
    legacy = [r for r in rows if r.legacy]
    if not legacy:
        return []
    renamed = sorted({r.variant for r in legacy if any("written as" in n for n in r.notes)},
                     key=variant_key)
    kept = sorted({r.variant for r in legacy} - set(renamed), key=variant_key)
    parts = []
    if renamed:
        parts.append(f"renamed to what they measured: {', '.join(renamed)}")
    if kept:
        parts.append(f"no current equivalent: {', '.join(kept)}")
    return [f"{MARK} Measured with the earlier definitions ({'; '.join(parts)}; "
            "see the row notes of the results files)."]


def render(res: LatencyResult, file: str = "") -> list[Table]:
    """What ``mice-bench latency`` prints: the tables of the report, for this run's rows."""
    _, rows = records(res, file or str(res.config.get("output") or "this run"))
    out: list[Table] = []
    every = by_group(rows, deduped=False)
    for g, grp in by_group(rows).items():
        sbs = side_by_side_table(g, every[g])
        if sbs is not None:
            out.append(sbs)
        out.append(all_rows_table(g, grp))
    from .peers_table import runtimes_table

    peers = runtimes_table(res, file or str(res.config.get("output") or ""))
    if peers is not None:             # peer runtimes of the same run (latency --peers)
        out.append(peers)
    return out

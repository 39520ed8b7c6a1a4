"""From raw timings to result rows: statistics, throughput, FLOPs, speedups against ``ce``.

* latency statistics of the per-run totals (:func:`~mice_bench.latency.stats.summarize`);
* ``throughput_pairs_per_s`` = pairs per run / mean seconds per run;
* ``speedup_vs_ce`` = (ce seconds per pair) / (variant seconds per pair), ``ce`` from the
  same run at the same requested batch size and document length (per pair, because OOM
  halving may change the pairs per run of the paper protocol);
* ``flop_ratio_vs_ce`` = ce FLOPs per pair / variant FLOPs per pair (the bound);
* ``achieved_flops_per_s`` = FLOPs per pair x pairs per run / mean seconds, and its fraction
  of the run's dense matmul peak.
"""

from __future__ import annotations

import math
from typing import Any, Callable

from . import flops as flopsmod
from .config import LatencyConfig
from .peers import own_tokenization
from .result import LatencyRowResult, RowPoint
from .scheduler import Slot
from .stats import speedup, summarize, throughput
from .timing import PHASES
from .workloads import SweepPoint, effective_doc_tokens


def make_row(c: LatencyConfig, slot: Slot, bb, dims: flopsmod.ModelDims,
             peak: dict[str, Any], pt: SweepPoint, qlen: int,
             log: Callable[[str], None] = lambda s: None) -> LatencyRowResult:
    """The row of one measured slot (``speedup_vs_ce`` is filled in by :func:`add_speedups`)."""
    spec, ex, wl = slot.spec, slot.ex, slot.wl
    notes = list(slot.notes)
    dlen = effective_doc_tokens(spec, c.protocol, pt.doc_tokens, qlen, bb.max_positions)
    if dlen != pt.doc_tokens:
        notes.append(f"documents truncated to {dlen} tokens to fit {bb.max_positions} positions "
                     "(as in the seed)")
    ppq = wl.pairs_per_run if c.protocol == "rerank" else 1
    fl = flopsmod.pair_flops(spec, dims, qlen, dlen, precompute=wl.precompute,
                             kv_cache=wl.kv_cache, pairs_per_query=ppq,
                             doc_vectors=wl.doc_vectors)
    lat = summarize(slot.total)
    pairs = wl.pairs_per_run
    mean = lat["mean"]
    achieved = fl["per_pair"] * pairs / mean if mean > 0 else float("nan")
    st = ex.compiled
    if c.compile and st and st["failed"]:
        notes.append(f"torch.compile failed for {', '.join(st['failed'])}: ran eager")
    if wl.doc_vectors and wl.doc_content == "pooled":
        notes.append("documents precomputed as their pooled, normalised vectors (what a "
                     "bi-encoder's store keeps): the document pooling is offline, the run "
                     "scores a dot product")
    elif wl.doc_vectors:
        notes.append("documents precomputed as the head's projected unit vectors (a ColBERT "
                     "index): the document projection is offline")
    if wl.packed is not None:
        notes.append(f"documents read from a {wl.doc_store} store: decoding each batch is timed "
                     "in the document-encode phase")
        if wl.pool_factor > 1:
            notes.append(f"pool factor {wl.pool_factor}: {wl.offline['doc_tokens_stored']} of "
                         f"{wl.offline['doc_tokens_original']} document tokens stored (cluster "
                         "means); FLOPs are counted for the unpooled length")
    prepacked = None
    if c.prepack:
        n = wl.linear_calls
        prepacked = wl.packed_linear_calls / n if n else None
        notes.append(f"linear layers on MKL-prepacked weights: {wl.packed_linear_calls} of "
                     f"{n} calls" if n else "--prepack: no linear call was counted")
    if pt.precompute and not wl.split:
        notes.append("no document precompute for this executor (joint/reference): "
                     "documents are encoded inside every run")
    row = LatencyRowResult(
        variant=str(spec), description=spec.description(), layout=spec.layout,
        executor=ex.kind,
        compiled=bool(c.compile and not (st or {}).get("failed")),
        point=RowPoint(batch_size=slot.batch, batch_size_requested=pt.batch_size,
                       doc_tokens=pt.doc_tokens, doc_tokens_effective=dlen, query_tokens=qlen,
                       depth=c.depth if c.protocol == "rerank" else None,
                       precompute=pt.precompute, kv_cache=bool(c.kv_cache)),
        precompute_applied=wl.precompute, kv_cache_applied=wl.kv_cache,
        oom_halvings=slot.halvings, pairs_per_run=pairs, params=int(bb.param_count(spec)),
        latency_s=lat, phases_s={p: summarize(slot.phases[p]) for p in PHASES},
        throughput_pairs_per_s=throughput(pairs, mean), memory=slot.memory, flops=fl,
        achieved_flops_per_s=achieved,
        peak_fraction=achieved / peak["flops_per_s"] if peak["flops_per_s"] else None,
        offline=wl.offline, notes=notes,
        raw_s={"total": slot.total, "wall": slot.wall, **slot.phases},
        runtime=c.runtime, tokenization=own_tokenization(wl, c.protocol),
        prepacked=prepacked)
    log(f"{row.variant:>14}  batch {slot.batch:>4}  doc {pt.doc_tokens:>4}  "
        f"{'pre' if wl.precompute else '   '}  {mean * 1e3:9.2f} ms/run  "
        f"{row.throughput_pairs_per_s:9.1f} pairs/s  ({lat['count']} runs)")
    return row


def add_speedups(rows: list[LatencyRowResult], runtime: str = "torch") -> None:
    """Speedup and FLOP ratio against ``ce`` at the same batch size and document length (the
    ``ce`` row of the run's own ``runtime``, not a peer's, in the row's precision; a peer
    precision the run's own rows lack: against the run's first precision)."""
    base: dict[tuple, LatencyRowResult] = {}
    first = rows[0].dtype if rows else None        # the run's own precision comes first
    for r in rows:
        if r.variant == "ce" and r.runtime == runtime:
            base.setdefault((r.point.batch_size_requested, r.point.doc_tokens, r.dtype), r)
    for r in rows:
        pt = (r.point.batch_size_requested, r.point.doc_tokens)
        b = base.get((*pt, r.dtype)) or base.get((*pt, first))
        if b is None:
            continue
        ce_pp = b.latency_s["mean"] / b.pairs_per_run
        me_pp = r.latency_s["mean"] / r.pairs_per_run
        sp = speedup(ce_pp, me_pp)
        r.speedup_vs_ce = sp if sp is not None and math.isfinite(sp) else None
        f = r.flops.get("per_pair", 0)
        r.flop_ratio_vs_ce = (b.flops["per_pair"] / f) if f > 0 else None

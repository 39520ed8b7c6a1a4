"""The runtimes table: every row of a run with peers (``latency --peers``), mice-bench's and
the peers', with where each tokenizes and its speedup against ``ce`` and against the fastest
cross-encoder row of the same point."""

from __future__ import annotations

from ..spec import variant_key
from ..tables import Table, fmt_ms_pm, fmt_rate, fmt_ratio
from .result import LatencyResult, LatencyRowResult

RUNTIME_LABELS = {"torch": "mice-bench (PyTorch)", "ort": "mice-bench ONNX (onnxruntime)",
                  "hf": "transformers eager", "st": "CrossEncoder (torch)",
                  "st-onnx": "CrossEncoder (ONNX)"}


def has_peers(res: LatencyResult) -> bool:
    own = str(res.config.get("runtime", "torch"))
    return any(r.runtime != own for r in res.rows)


def _order(r: LatencyRowResult) -> tuple:
    return (r.point.doc_tokens, r.point.batch_size_requested, not r.precompute_applied,
            variant_key(r.variant), list(RUNTIME_LABELS).index(r.runtime)
            if r.runtime in RUNTIME_LABELS else 99)


def runtimes_table(res: LatencyResult, file: str = "") -> Table | None:
    """One row per (variant, runtime, point) of ``res``; None without peer rows."""
    if not has_peers(res):
        return None
    own = str(res.config.get("runtime", "torch"))
    t = Table(name="latency-runtimes", title="Runtimes in the same run",
              columns=["variant", "runtime", "batch", "doc tok", "pre", "tokenization",
                       "ms / run", "pairs/s", "GFLOP / pair", f"speedup vs ce ({own})",
                       "speedup vs fastest cross-encoder"],
              align="llrrcl" + "rrrrr")
    body = []
    for r in sorted(res.rows, key=_order):
        fast = fmt_ratio(r.speedup_vs_fastest_ce)
        if r.fastest_ce:
            fast += f" (vs {r.fastest_ce})"
        body.append([r.variant, RUNTIME_LABELS.get(r.runtime, r.runtime),
                     str(r.point.batch_size), str(r.point.doc_tokens_effective),
                     "yes" if r.precompute_applied else "no", r.tokenization or "–",
                     fmt_ms_pm(r.latency_s["mean"], r.latency_s.get("std")),
                     fmt_rate(r.throughput_pairs_per_s),
                     f"{r.flops.get('per_pair', 0) / 1e9:.3g}", fmt_ratio(r.speedup_vs_ce), fast])
    t.add_section(None, body)
    skipped = res.config.get("peers_skipped") or []
    cap = ["Every row timed in the same interleaved run, same texts, weights, batches, "
           "threads and statistics (mean ± std over the timed runs); FLOPs are the variant's. "
           "Tokenization is inside the timed run for every row. The fastest cross-encoder is "
           "the fastest ce row of the same point, whatever its runtime."]
    for s in skipped:
        cap.append(f"Skipped: {s['peer']} ({s['variant']}): {s['reason']}.")
    if file:
        cap.append(f"Source: {file}.")
    t.caption = " ".join(cap)
    return t

"""The runtimes table: every row of a run with peers (``latency --peers``), mice-bench's and
the peers', with where each tokenizes and its speedup against ``ce`` and against the fastest
cross-encoder row of the same point."""

from __future__ import annotations

from ..spec import variant_key
from ..tables import Table, fmt_ms_pm, fmt_rate, fmt_ratio
from .result import LatencyResult, LatencyRowResult

RUNTIME_LABELS = {"torch": "mice-bench (PyTorch)", "ort": "mice-bench ONNX (onnxruntime)",
                  "ort-int8": "mice-bench ONNX int8 (onnxruntime)",
                  "hf": "transformers eager", "hf-bf16": "transformers eager, bf16 weights",
                  "st": "CrossEncoder (torch)", "st-onnx": "CrossEncoder (ONNX)",
                  "st-onnx-int8": "CrossEncoder (ONNX int8)",
                  "st-openvino": "CrossEncoder (OpenVINO)",
                  "st-openvino-int8": "CrossEncoder (OpenVINO int8)"}


def has_peers(res: LatencyResult) -> bool:
    """Rows of another runtime than the run's own, or of further ``--dtype`` precisions."""
    own = str(res.config.get("runtime", "torch"))
    first = res.environment.get("dtype")
    return any(r.runtime != own or (r.dtype is not None and r.dtype != first)
               for r in res.rows)


def _order(r: LatencyRowResult) -> tuple:
    return (r.point.doc_tokens, r.point.batch_size_requested, not r.precompute_applied,
            variant_key(r.variant), list(RUNTIME_LABELS).index(r.runtime)
            if r.runtime in RUNTIME_LABELS else 99, str(r.dtype))


def runtimes_table(res: LatencyResult, file: str = "") -> Table | None:
    """One row per (variant, runtime, dtype, point) of ``res``; None without peer rows or
    further precisions."""
    if not has_peers(res):
        return None
    own = str(res.config.get("runtime", "torch"))
    first = str(res.environment.get("dtype") or "fp32")
    t = Table(name="latency-runtimes", title="Runtimes in the same run",
              columns=["variant", "runtime", "dtype", "batch", "doc tok", "pre", "tokenization",
                       "ms / run", "pairs/s", "GFLOP / pair", "% peak",
                       f"speedup vs ce ({own}, same dtype)",
                       "speedup vs fastest cross-encoder", "best against best"],
              align="lllrrcl" + "rrrrrrr")
    body = []
    for r in sorted(res.rows, key=_order):
        fast = fmt_ratio(r.speedup_vs_fastest_ce)
        if r.fastest_ce:
            fast += f" (vs {r.fastest_ce})"
        best = fmt_ratio(r.best_vs_best) + (" ◀" if r.variant_best else "") \
            if r.best_vs_best is not None else "–"
        body.append([r.variant, RUNTIME_LABELS.get(r.runtime, r.runtime), r.dtype or first,
                     str(r.point.batch_size), str(r.point.doc_tokens_effective),
                     "yes" if r.precompute_applied else "no", r.tokenization or "–",
                     fmt_ms_pm(r.latency_s["mean"], r.latency_s.get("std")),
                     fmt_rate(r.throughput_pairs_per_s),
                     f"{r.flops.get('per_pair', 0) / 1e9:.3g}",
                     f"{100 * r.peak_fraction:.0f} %" if r.peak_fraction else "–",
                     fmt_ratio(r.speedup_vs_ce), fast, best])
    t.add_section(None, body)
    skipped = res.config.get("peers_skipped") or []
    cap = ["Every row timed in the same interleaved run, same texts, weights, batches, "
           "threads and statistics (mean ± std over the timed runs); FLOPs are the variant's. "
           "Tokenization is inside the timed run for every row. The fastest cross-encoder is "
           "the fastest ce row of the same point, whatever its runtime and dtype. Best against "
           "best: that fastest cross-encoder against the variant's own fastest row (marked ◀), "
           "any runtime, any dtype, per pair. % peak: the row's FLOP rate against the square "
           "matmul peak measured in its own dtype at the start of the run."]
    isa = (res.environment.get("cpu_features") or {}).get("isa")
    if isa:
        cap.append(f"CPU matrix features: {isa} (compare only with runs of the same).")
    for s in skipped:
        cap.append(f"Skipped: {s['peer']} ({s['variant']}): {s['reason']}.")
    if file:
        cap.append(f"Source: {file}.")
    t.caption = " ".join(cap)
    return t

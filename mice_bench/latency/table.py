"""Rich tables for latency results (rerank layout and the paper's layout)."""

from __future__ import annotations

import math
from typing import Any

from rich.table import Table

from .timing import PHASES


def _ms(x: float | None) -> str:
    if x is None or not math.isfinite(x):
        return "-"
    return f"{x * 1e3:.2f}" if x < 10 else f"{x * 1e3:.0f}"


def _num(x: float | None, fmt: str = "{:.1f}") -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    return fmt.format(x)


def _params(n: int) -> str:
    return f"{n / 1e6:.1f}M"


def _notes(doc: dict[str, Any]) -> list[str]:
    out: dict[str, None] = {}
    for r in doc["rows"]:
        for n in r["notes"]:
            out[n if n.startswith(r["variant"] + ":") else f"{r['variant']}: {n}"] = None
    env = doc["environment"]
    if env.get("cpu_busy_warning"):
        out[f"warning: machine busy during the run (load average {env.get('loadavg_before')} "
            f"on {env.get('cpu_count')} cores): CPU timings of small kernels are inflated"] = None
    return list(out)


def _mem(m: dict[str, Any], cuda: bool) -> str:
    # GPU: max allocated (absolute, as the seed reports); CPU: peak RSS growth
    return f"{m['peak_mb']:.0f} MB" if cuda else f"+{m['growth_mb']:.0f} MB"


def render(doc: dict[str, Any]) -> list[Table]:
    cfg = doc["config"]
    if cfg["protocol"] == "paper":
        return [paper_table(doc)]
    return [rerank_table(doc)]


def _title(doc: dict[str, Any]) -> str:
    cfg, env, m = doc["config"], doc["environment"], doc["model"]
    peak = doc["matmul_peak"]["flops_per_s"] / 1e9
    w = " random weights" if m.get("random_weights") else ""
    return (f"mice-bench latency · {cfg['protocol']} · {m['name']}{w} · "
            f"{env.get('device_name', env.get('device'))} · {cfg['dtype']} · "
            f"{env.get('threads')} threads · matmul peak {peak:.0f} GFLOP/s"
            + (" · compiled" if cfg.get("compile") else ""))


def rerank_table(doc: dict[str, Any]) -> Table:
    cuda = str(doc["environment"].get("device", "")).startswith("cuda")
    cfg = doc["config"]
    t = Table(title=_title(doc), title_justify="left", header_style="bold")
    sweep = len(cfg["batch_sizes"]) > 1 or len(cfg["doc_tokens"]) > 1
    t.add_column("variant")
    if sweep:
        t.add_column("batch", justify="right")
        t.add_column("doc tok", justify="right")
    t.add_column("params", justify="right")
    t.add_column("ms/run mean ± std", justify="right")
    t.add_column("p50 / p99", justify="right")
    t.add_column("pairs/s", justify="right")
    t.add_column("vs ce (FLOP bound)", justify="right")
    t.add_column("ms: tok/doc/qry/int", justify="right")
    t.add_column("peak mem" if cuda else "RSS growth", justify="right")
    t.add_column("GFLOP/pair", justify="right")
    t.add_column("% peak", justify="right")
    for r in doc["rows"]:
        lat, p = r["latency_s"], r["point"]
        sp = r.get("speedup_vs_ce")
        fr = r.get("flop_ratio_vs_ce")
        cells = [r["variant"] + (" (pre)" if r["precompute_applied"] else "")
                 + (" +kv" if r["kv_cache_applied"] else "")]
        if sweep:
            cells += [str(p["batch_size"]), str(p["doc_tokens"])]
        cells += [
            _params(r["params"]),
            f"{_ms(lat['mean'])} ± {_ms(lat['std'])}",
            f"{_ms(lat['p50'])} / {_ms(lat['p99'])}",
            _num(r["throughput_pairs_per_s"]),
            (f"{sp:.1f}×" if sp is not None else "-")
            + (f" ({fr:.1f}×)" if fr is not None else ""),
            " / ".join(_ms(r["phases_s"][ph]["mean"]) for ph in PHASES),
            _mem(r["memory"], cuda),
            _num(r["flops"]["per_pair"] / 1e9, "{:.3f}"),
            _num(100 * r["peak_fraction"] if r["peak_fraction"] is not None else None,
                 "{:.0f}%"),
        ]
        t.add_row(*cells)
    cap = [f"rerank: 1 query, depth {cfg['depth']}, query {cfg['query_tokens_effective']} tok; "
           f"{cfg['warmup']} warm-up, ≥{cfg['runs']} runs and ≥{cfg['min_seconds']} s"]
    cap += _notes(doc)
    t.caption = "\n".join(cap)
    t.caption_justify = "left"
    return t


def paper_table(doc: dict[str, Any]) -> Table:
    """The seed's table_eff.tex columns: #param, latency mean ± std, docs/s, peak memory."""
    cuda = str(doc["environment"].get("device", "")).startswith("cuda")
    cfg = doc["config"]
    t = Table(title=_title(doc), title_justify="left", header_style="bold")
    t.add_column("Model")
    sweep = len(cfg["batch_sizes"]) > 1 or len(cfg["doc_tokens"]) > 1
    if sweep:
        t.add_column("batch", justify="right")
        t.add_column("doc tok", justify="right")
    t.add_column("#param", justify="right")
    t.add_column("Latency (ms)", justify="right")
    t.add_column("Docs/s", justify="right")
    t.add_column("Peak Mem" if cuda else "Peak RSS growth", justify="right")
    t.add_column("speedup vs ce", justify="right")
    for pre, label in ((True, "With docs precompute"), (False, "Without docs precompute")):
        rows = [r for r in doc["rows"] if r["point"]["precompute"] == pre]
        if not rows:
            continue
        t.add_section()
        t.add_row(f"[italic]{label}[/]", *[""] * (len(t.columns) - 1))
        for r in rows:
            lat, p = r["latency_s"], r["point"]
            sp = r.get("speedup_vs_ce")
            cells = [r["variant"]]
            if sweep:
                cells += [str(p["batch_size"]), str(p["doc_tokens"])]
            cells += [_params(r["params"]), f"{_ms(lat['mean'])} ± {_ms(lat['std'])}",
                      _num(r["throughput_pairs_per_s"], "{:.0f}"), _mem(r["memory"], cuda),
                      f"{sp:.1f}×" if sp is not None else "-"]
            t.add_row(*cells)
    cap = [f"paper protocol: batch of {cfg['batch_sizes']} pairs, query "
           f"{cfg.get('query_text')!r} ({cfg['query_tokens_effective']} tok) re-encoded per "
           f"pair, documents {cfg['doc_tokens']} tok, {cfg['warmup']} warm-up + "
           f"{cfg['runs']} timed runs, whole call incl. tokenization"]
    t.caption = "\n".join(cap + _notes(doc))
    t.caption_justify = "left"
    return t

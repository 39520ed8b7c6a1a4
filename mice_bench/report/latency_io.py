"""Adapter: latency results files (``mice-bench/latency``) -> flat :class:`LatencyRow` records.

The only module of the report that knows the latency results layout (written by
:mod:`mice_bench.latency.runner`, schema in :mod:`mice_bench.latency.schema`). Files go
through :func:`mice_bench.results.load_result`, which upgrades older schema versions; fields
added after the first release are read with defaults so older files keep loading.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..results import ResultFileError, load_result, parse_fields

KIND = "latency"


@dataclass(frozen=True)
class RunInfo:
    """One latency results file: where and how it was measured."""

    file: str                 # path relative to the results folder (posix)
    created: str
    protocol: str
    model: str
    model_description: str
    num_layers: int
    random_weights: bool
    hidden_size: int | None
    device: str               # cpu | cuda | cuda:0 ...
    device_name: str
    dtype: str
    threads: Any
    compiled: bool
    environment: dict = field(hash=False, compare=False, default_factory=dict)
    config: dict = field(hash=False, compare=False, default_factory=dict)
    git_commit: str | None = None
    mice_bench_version: str | None = None
    matmul_peak_flops: float | None = None

    @property
    def group(self) -> tuple[str, str, str, str, str]:
        """Measurements are only compared inside one (device type, device name, dtype, CPU
        threads, model) group; threads only count on the CPU."""
        dev = self.device.split(":")[0]
        threads = str(self.threads) if dev == "cpu" and self.threads is not None else ""
        model = Path(self.model.rstrip("/")).name if "/" in self.model else self.model
        return (dev, self.device_name, self.dtype, threads, model)


@dataclass(frozen=True)
class LatencyRow:
    run: RunInfo
    variant: str
    layout: str
    batch_size: int
    batch_size_requested: int
    doc_tokens: int
    doc_tokens_effective: int
    query_tokens: int
    depth: int | None
    precompute: bool          # requested
    precompute_applied: bool
    kv_cache_applied: bool
    pairs_per_run: int
    params: int
    lat_mean: float           # seconds per run
    lat_std: float
    lat_p50: float
    lat_p99: float
    count: int
    throughput: float         # pairs/s
    mem_peak_mb: float | None
    mem_growth_mb: float | None
    speedup_vs_ce: float | None
    flop_ratio_vs_ce: float | None
    flops_per_pair: float | None
    notes: tuple[str, ...] = ()

    @property
    def compiled(self) -> bool:
        return self.run.compiled

    @property
    def per_pair_s(self) -> float:
        return self.lat_mean / self.pairs_per_run if self.pairs_per_run else float("nan")


def _req(d: dict, key: str, where: str, path: Path) -> Any:
    if not isinstance(d, dict) or key not in d:
        raise ResultFileError(f"{path}: latency results file lacks {where}{key!r}")
    return d[key]


def _num(x: Any) -> float | None:
    if x is None:
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def load_latency_file(path: Path, root: Path | None = None
                      ) -> tuple[RunInfo, list[LatencyRow]]:
    """The run and rows of one latency results file (ResultFileError names the file)."""
    data = load_result(path, KIND)
    return parse_fields(path, "latency", lambda: _rows(data, path, root))


def _rows(data: dict, path: Path, root: Path | None) -> tuple[RunInfo, list[LatencyRow]]:
    env = _req(data, "environment", "", path)
    cfg = _req(data, "config", "", path)
    model = data.get("model") or {}
    rows = _req(data, "rows", "", path)
    if not isinstance(rows, list):
        raise ResultFileError(f"{path}: 'rows' must be a list")
    rel = path.relative_to(root).as_posix() if root is not None else path.name
    device = str(env.get("device") or cfg.get("device") or "cpu")
    info = RunInfo(
        file=rel,
        created=str(data.get("created", "")),
        protocol=str(_req(cfg, "protocol", "config.", path)),
        model=str(model.get("name", cfg.get("model", "?"))),
        model_description=str(model.get("description", model.get("name", cfg.get("model", "?")))),
        num_layers=int(model.get("num_layers", 12)),
        random_weights=bool(model.get("random_weights", False)),
        hidden_size=model.get("hidden_size"),
        device=device,
        device_name=str(env.get("device_name") or env.get("cpu_model") or device),
        dtype=str(env.get("dtype") or cfg.get("dtype") or "fp32"),
        threads=env.get("threads", env.get("torch_threads")),
        compiled=bool(cfg.get("compile", False)),
        environment=env,
        config=cfg,
        git_commit=data.get("git_commit"),
        mice_bench_version=data.get("mice_bench_version"),
        matmul_peak_flops=_num((data.get("matmul_peak") or {}).get("flops_per_s")),
    )
    out = []
    for i, r in enumerate(rows):
        where = f"rows[{i}]."
        p = _req(r, "point", where, path)
        lat = _req(r, "latency_s", where, path)
        mem = r.get("memory") or {}
        pre = bool(p.get("precompute", r.get("precompute_applied", False)))
        bs = int(_req(p, "batch_size", where + "point.", path))
        out.append(LatencyRow(
            run=info,
            variant=str(_req(r, "variant", where, path)),
            layout=str(r.get("layout", "?")),
            batch_size=bs,
            batch_size_requested=int(p.get("batch_size_requested", bs)),
            doc_tokens=int(_req(p, "doc_tokens", where + "point.", path)),
            doc_tokens_effective=int(p.get("doc_tokens_effective", p["doc_tokens"])),
            query_tokens=int(p.get("query_tokens", 0)),
            depth=p.get("depth"),
            precompute=pre,
            precompute_applied=bool(r.get("precompute_applied", pre)),
            kv_cache_applied=bool(r.get("kv_cache_applied", False)),
            pairs_per_run=int(r.get("pairs_per_run", bs)),
            params=int(r.get("params", 0)),
            lat_mean=float(_req(lat, "mean", where + "latency_s.", path)),
            lat_std=float(lat.get("std", 0.0)),
            lat_p50=float(lat.get("p50", lat["mean"])),
            lat_p99=float(lat.get("p99", lat["mean"])),
            count=int(lat.get("count", 0)),
            throughput=float(r.get("throughput_pairs_per_s",
                                   r.get("pairs_per_run", bs) / lat["mean"])),
            mem_peak_mb=_num(mem.get("peak_mb")),
            mem_growth_mb=_num(mem.get("growth_mb")),
            speedup_vs_ce=_num(r.get("speedup_vs_ce")),
            flop_ratio_vs_ce=_num(r.get("flop_ratio_vs_ce")),
            flops_per_pair=_num((r.get("flops") or {}).get("per_pair")),
            notes=tuple(str(n) for n in r.get("notes", ())),
        ))
    return info, out


def load_latency(results_dir: Path) -> tuple[list[RunInfo], list[LatencyRow]]:
    """Every ``results_dir/latency/**/*.json`` (sorted by path), as runs and rows."""
    root = Path(results_dir)
    folder = root / "latency"
    runs: list[RunInfo] = []
    rows: list[LatencyRow] = []
    if not folder.is_dir():
        return runs, rows
    for f in sorted(folder.rglob("*.json")):
        info, rs = load_latency_file(f, root)
        runs.append(info)
        rows += rs
    return runs, rows

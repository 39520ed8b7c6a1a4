"""Flat views of latency results for tables and figures: one :class:`RunInfo` per results
file, one :class:`LatencyRow` per row, made from the typed
:class:`~mice_bench.latency.result.LatencyResult` (:func:`records`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..legacy import is_legacy
from .result import LatencyResult


def busy_machine(load1: float, cores: int) -> bool:
    """The busy-machine rule of ``mice-bench latency`` (CPU runs): the 1-minute load average
    before the run is above the core count minus one half, i.e. other processes compete for
    the cores the measurement needs."""
    return load1 > max(int(cores), 1) - 0.5


#: other processes' CPU use during a run (cores' worth) above which it counts as busy
OTHER_CPU_BUSY = 0.25


def busy_from_environment(env: dict) -> bool | None:
    """The busy verdict of a run's ``environment``: the CPU time other processes used while
    it ran (``other_cpu_cores``, measured from ``/proc`` since 2026-11-27) when recorded --
    the load average also counts the benchmark's own earlier runs, so back-to-back runs on an
    idle machine looked busy --, else the run's own ``cpu_busy_warning``, else the load
    average rule on ``loadavg_before``; None when the file cannot tell.

    >>> busy_from_environment({"other_cpu_cores": 0.03, "cpu_busy_warning": True})
    False
    >>> busy_from_environment({"loadavg_before": [1.9, 2, 2], "cpu_count": 2})
    True
    """
    other = env.get("other_cpu_cores")
    if isinstance(other, (int, float)):
        return other > OTHER_CPU_BUSY
    if isinstance(env.get("cpu_busy_warning"), bool):
        return env["cpu_busy_warning"]
    load = env.get("loadavg_before")
    if isinstance(load, (list, tuple)) and load and isinstance(load[0], (int, float)):
        return busy_machine(float(load[0]), int(env.get("cpu_count") or 1))
    return None


def idle_rank(busy: bool | None) -> int:
    """Preference among repeated measurements of one point: idle (2) > unknown (1) > busy (0)."""
    return 1 if busy is None else 0 if busy else 2


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
    def busy(self) -> bool | None:
        """Whether other processes competed for the CPU during the run
        (:func:`busy_from_environment`); GPU runs without CPU evidence are never busy."""
        env = self.environment
        if self.device.split(":")[0] != "cpu" and "other_cpu_cores" not in env \
                and not isinstance(env.get("cpu_busy_warning"), bool):
            return False        # the flag is about CPU contention
        try:
            return busy_from_environment(env)
        except (TypeError, ValueError):
            return None

    @property
    def load_text(self) -> str:
        """``yes (load 1.82 / 2 cores)``, ``no (...)`` or ``–`` (unknown): the busy flag and
        its evidence, as tables show it."""
        b = self.busy
        if b is None:
            return "–"
        load = self.environment.get("loadavg_before")
        cores = self.environment.get("cpu_count")
        other = self.environment.get("other_cpu_cores")
        ev = ""
        if isinstance(other, (int, float)):
            ev = f" (others used {other:.2f} cores)"
        elif isinstance(load, (list, tuple)) and load and cores:
            try:
                ev = f" (load {float(load[0]):.2f} / {int(cores)} cores)"
            except (TypeError, ValueError):
                ev = ""
        return ("yes" if b else "no") + ev

    @property
    def group(self) -> tuple[str, str, str, str, str, str]:
        """Measurements are only compared inside one (device type, device name, dtype, CPU
        threads, model, CPU matrix features) group; threads only count on the CPU."""
        dev = self.device.split(":")[0]
        threads = str(self.threads) if dev == "cpu" and self.threads is not None else ""
        model = Path(self.model.rstrip("/")).name if "/" in self.model else self.model
        return (dev, self.device_name, self.dtype, threads, model, self.cpu_isa)

    @property
    def cpu_isa(self) -> str:
        """The CPU's matrix features (``amx``, ``avx512-bf16``, ``avx512``, ``avx2``;
        ``environment.cpu_features.isa``): runs on CPUs that differ in them are never
        compared as one; empty for GPU runs and files made before it was recorded."""
        if self.device.split(":")[0] != "cpu":
            return ""
        return str((self.environment.get("cpu_features") or {}).get("isa") or "")


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
    doc_vectors: bool = False  # precomputed documents held as head vectors (colbert index)
    # what the precomputed documents were held as: states | vectors | pooled (a bi-encoder)
    doc_content: str = "states"

    @property
    def compiled(self) -> bool:
        return self.run.compiled

    @property
    def per_pair_s(self) -> float:
        return self.lat_mean / self.pairs_per_run if self.pairs_per_run else float("nan")

    @property
    def legacy(self) -> bool:
        """Measured with an earlier definition of its variant (see :mod:`mice_bench.legacy`)."""
        return is_legacy(self.notes)


def _num(x: Any) -> float | None:
    if x is None:
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def records(res: LatencyResult, file: str) -> tuple[RunInfo, list[LatencyRow]]:
    """The run and its rows; ``file`` is how tables name the results file."""
    env, cfg, model = res.environment, res.config, res.model
    device = str(env.get("device") or cfg.get("device") or "cpu")
    info = RunInfo(
        file=file, created=res.created, protocol=str(cfg["protocol"]),
        model=str(model.get("name", cfg.get("model", "?"))),
        model_description=str(model.get("description", model.get("name", cfg.get("model", "?")))),
        num_layers=int(model.get("num_layers", 12)),
        random_weights=bool(model.get("random_weights", False)),
        hidden_size=model.get("hidden_size"), device=device,
        device_name=str(env.get("device_name") or env.get("cpu_model") or device),
        dtype=str(env.get("dtype") or cfg.get("dtype") or "fp32"),
        threads=env.get("threads", env.get("torch_threads")),
        compiled=bool(cfg.get("compile", False)), environment=env, config=cfg,
        git_commit=res.git_commit, mice_bench_version=res.mice_bench_version or None,
        matmul_peak_flops=_num(res.matmul_peak.get("flops_per_s")))
    rows = []
    own = str(cfg.get("runtime", "torch"))
    for r in res.rows:
        if r.runtime != own:        # peer rows have their own table (latency/peers_table.py)
            continue
        if r.dtype is not None and r.dtype != info.dtype:   # further --dtype precisions too
            continue
        p, lat, mem = r.point, r.latency_s, r.memory
        rows.append(LatencyRow(
            run=info, variant=r.variant, layout=r.layout, batch_size=p.batch_size,
            batch_size_requested=p.batch_size_requested, doc_tokens=p.doc_tokens,
            doc_tokens_effective=p.doc_tokens_effective, query_tokens=p.query_tokens,
            depth=p.depth, precompute=p.precompute, precompute_applied=r.precompute_applied,
            kv_cache_applied=r.kv_cache_applied, pairs_per_run=r.pairs_per_run,
            params=r.params, lat_mean=float(lat["mean"]), lat_std=float(lat.get("std", 0.0)),
            lat_p50=float(lat.get("p50", lat["mean"])), lat_p99=float(lat.get("p99", lat["mean"])),
            count=int(lat.get("count", 0)), throughput=float(r.throughput_pairs_per_s),
            mem_peak_mb=_num(mem.get("peak_mb")), mem_growth_mb=_num(mem.get("growth_mb")),
            speedup_vs_ce=_num(r.speedup_vs_ce), flop_ratio_vs_ce=_num(r.flop_ratio_vs_ce),
            flops_per_pair=_num(r.flops.get("per_pair")), notes=tuple(r.notes),
            doc_vectors=bool(r.flops.get("doc_vectors", False)),
            doc_content=str(r.flops.get("doc_content") or (
                "vectors" if r.flops.get("doc_vectors") else "states"))))
    return info, rows

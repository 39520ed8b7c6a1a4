"""Summary statistics of raw timings (seconds)."""

from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np

STAT_KEYS: tuple[str, ...] = ("mean", "std", "p50", "p90", "p99", "min", "max", "count")


def summarize(values: Iterable[float]) -> dict[str, float | int]:
    """Mean, sample std (ddof=1; 0 for one value), p50/p90/p99 (linear interpolation),
    min, max and count of ``values``. An empty input gives NaN statistics and count 0."""
    x = np.asarray(list(values), dtype=np.float64)
    n = int(x.size)
    if n == 0:
        nan = float("nan")
        return {"mean": nan, "std": nan, "p50": nan, "p90": nan, "p99": nan,
                "min": nan, "max": nan, "count": 0}
    p50, p90, p99 = (float(v) for v in np.percentile(x, [50, 90, 99]))
    return {
        "mean": float(x.mean()),
        "std": float(x.std(ddof=1)) if n > 1 else 0.0,
        "p50": p50,
        "p90": p90,
        "p99": p99,
        "min": float(x.min()),
        "max": float(x.max()),
        "count": n,
    }


def throughput(items_per_run: int, mean_seconds: float) -> float:
    """Items per second given the mean seconds per run (NaN when undefined)."""
    if not mean_seconds or not math.isfinite(mean_seconds) or mean_seconds <= 0:
        return float("nan")
    return items_per_run / mean_seconds


def speedup(baseline_mean: float | None, mean: float | None) -> float | None:
    """``baseline / mean`` (how many times faster than the baseline), None if undefined."""
    if baseline_mean is None or mean is None or not (mean > 0) or not math.isfinite(mean):
        return None
    return baseline_mean / mean


def enough(durations: Sequence[float], runs: int, min_seconds: float) -> bool:
    """True once both ``runs`` runs and ``min_seconds`` seconds of timed runs are done."""
    return len(durations) >= runs and sum(durations) >= min_seconds

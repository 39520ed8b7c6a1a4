"""Adapter: the latency results files under ``results/latency`` -> flat records.

Files are read with the class that writes them
(:class:`~mice_bench.latency.result.LatencyResult`, which upgrades older schema versions
through :func:`mice_bench.results.load_result`) and flattened by
:func:`mice_bench.latency.records.records`.
"""

from __future__ import annotations

from pathlib import Path

from ..latency.records import LatencyRow, RunInfo, records
from ..latency.result import LatencyResult

__all__ = ["LatencyRow", "RunInfo", "load_latency", "load_latency_file"]


def load_latency_file(path: Path, root: Path | None = None
                      ) -> tuple[RunInfo, list[LatencyRow]]:
    """The run and rows of one latency results file (ResultFileError names the file)."""
    rel = path.relative_to(root).as_posix() if root is not None else path.name
    return records(LatencyResult.load(path), rel)


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

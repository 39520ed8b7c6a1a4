"""pytest-benchmark JSON -> a Markdown table of pairs/s (``extra_info.pairs_per_step`` over
the median, mean and min step time), with the machine it ran on.

    python scripts/benchmark_table.py results/benchmarks/training-cpu.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def table(path: Path) -> str:
    doc = json.loads(path.read_text())
    mi = doc.get("machine_info", {})
    cpu = mi.get("cpu", {}).get("brand_raw") or mi.get("processor") or "?"
    lines = [f"Source: `{path.name}` ({doc.get('datetime', '?')}; {cpu}; "
             f"Python {mi.get('python_version', '?')}; commit "
             f"{doc.get('commit_info', {}).get('id', '?')[:10]}"
             f"{' dirty' if doc.get('commit_info', {}).get('dirty') else ''}).", "",
             "| benchmark | pairs/step | rounds | median step s | pairs/s (median) | "
             "pairs/s (best) |", "|---|---:|---:|---:|---:|---:|"]
    for b in doc["benchmarks"]:
        n = b.get("extra_info", {}).get("pairs_per_step")
        st = b["stats"]
        med, best = st["median"], st["min"]
        rate = f"{n / med:.1f}" if n else "–"
        rate_best = f"{n / best:.1f}" if n else "–"
        lines.append(f"| {b['name']} | {n or '–'} | {st['rounds']} | {med:.3f} | {rate} | "
                     f"{rate_best} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    for a in sys.argv[1:]:
        print(table(Path(a)))

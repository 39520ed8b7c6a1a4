"""The effectiveness summary and its one view (``mice_bench.effectiveness.table``): the
committed summary files render back to their committed Markdown, cell by cell."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mice_bench.effectiveness.summary import Cell, EffectivenessSummary
from mice_bench.effectiveness.table import markdown, percent_cell, percent_markdown
from mice_bench.results import schema_version

RESULTS = Path(__file__).resolve().parents[1] / "results"


def _current_summaries() -> list[Path]:
    """Committed summary files written at the current schema version (older ones were
    renamed by the upgraders after their Markdown was written)."""
    out = []
    for f in sorted(RESULTS.rglob("*.json")):
        head = json.loads(f.read_text())
        if head.get("schema") == "mice-bench/effectiveness-summary" and \
                head.get("schema_version") == schema_version("effectiveness-summary") and \
                f.with_suffix(".md").is_file():
            out.append(f)
    return out


@pytest.mark.parametrize("path", _current_summaries(),
                         ids=lambda p: p.relative_to(RESULTS).as_posix())
def test_a_committed_summary_renders_to_its_committed_markdown(path):
    summary, _ = EffectivenessSummary.load(path)
    assert markdown(summary) == path.with_suffix(".md").read_text()


def test_there_are_committed_summaries_to_check():
    assert len(_current_summaries()) >= 10


def test_the_study_readme_table_is_the_percent_view_of_its_summary():
    root = RESULTS / "mini-replication" / "smoke"
    summary, _ = EffectivenessSummary.load(root / "summary.json")
    table = percent_markdown(summary, "nDCG@10")
    assert table in (root / "README.md").read_text()
    # hand-read from the committed summary: the first dataset column of the first row
    row = summary.rows[0]
    first = row.cells[summary.datasets[0].name]["nDCG@10"]
    assert f"| {row.variant} | {percent_cell(first)} |" in table


def test_percent_cell_is_mean_times_100_with_one_decimal_and_the_mark():
    assert percent_cell(Cell(0.41249, None, [0.41249], 43, p=0.01, mark="↑")) == "41.2 ↑"
    assert percent_cell(Cell(0.5, 0.1, [0.4, 0.6], 43)) == "50.0"
    assert percent_cell(None) == "–"

"""The one view of an :class:`~.summary.EffectivenessSummary`: systems x datasets (+ ID/OOD
averages), like Table 1 of the MICE paper, as Markdown (``<summary-name>.md``, the study
README's table), as Rich tables (the terminal), and the cell text the report's tables use.
It renders what the summary holds (means, std over seeds, marks) and computes nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .summary import GROUP_LABEL

if TYPE_CHECKING:  # pragma: no cover
    from .summary import Cell, EffectivenessSummary, Row

#: how the report and study READMEs name the tests
TEST_NAMES = {"ttest": "t-test", "randomization": "randomization test"}


def write_summary(summary: "EffectivenessSummary", stem: str | Path, config: dict,
                  env: dict) -> None:
    """``<stem>.json`` (the summary file) and ``<stem>.md`` (its :func:`markdown`)."""
    from ..results import atomic_write_text

    summary.write_json(Path(f"{stem}.json"), config, env)
    atomic_write_text(Path(f"{stem}.md"), markdown(summary))


def percent_cell(cell: "Cell | None") -> str:
    """A cell as the report prints it: mean x 100 with one decimal, then the mark
    (``41.2 ↑``); ``–`` for a missing cell."""
    if cell is None:
        return "–"
    return f"{100 * cell.mean:.1f}" + (f" {cell.mark}" if cell.mark else "")


def columns(summary: "EffectivenessSummary") -> list[tuple[str, str]]:
    """``[(kind, key)]``: ID datasets, ``ID avg``, OOD datasets, ``OOD avg``, others."""
    ds = summary.datasets
    cols: list[tuple[str, str]] = []
    for g in ("id", "ood"):
        members = [d.name for d in ds if d.group == g]
        cols += [("dataset", n) for n in members]
        if members:
            cols.append(("avg", g))
    cols += [("dataset", d.name) for d in ds if d.group not in ("id", "ood")]
    return cols


def cell_text(row: "Row", kind: str, key: str, measure: str, digits: int = 3) -> str:
    if kind == "avg":
        v = row.averages.get(key, {}).get(measure)
        return "–" if v is None else f"{v:.{digits}f}"
    c = row.cells.get(key, {}).get(measure)
    if c is None:
        return "–"
    s = f"{c.mean:.{digits}f}"
    if c.std is not None:
        s += f"±{c.std:.{digits}f}"
    return s + c.mark


def row_name(row: "Row") -> str:
    return row.variant + (f" ({', '.join(row.models)})" if row.models else "")


def _header(kind: str, key: str) -> str:
    return GROUP_LABEL[key] if kind == "avg" else key


def markdown(summary: "EffectivenessSummary") -> str:
    """One Markdown table per measure, plus a legend."""
    cols = columns(summary)
    out = []
    for m in summary.measures:
        out.append(f"### {m}\n")
        out.append("| system | " + " | ".join(_header(*c) for c in cols) + " |")
        out.append("|---|" + "---:|" * len(cols))
        for row in summary.rows:
            out.append(f"| {row_name(row)} | "
                       + " | ".join(cell_text(row, k, key, m) for k, key in cols) + " |")
        out.append("")
    out.append(legend(summary))
    return "\n".join(out) + "\n"


def legend(summary: "EffectivenessSummary") -> str:
    fs = ", ".join(f"{d.name}: {d.first_stage}" for d in summary.datasets)
    return (f"↑/↓: significantly better/worse than `{summary.baseline}` "
            f"({summary.test} test, {summary.correction} correction across all "
            f"variant × dataset comparisons, corrected p < {summary.alpha}). "
            f"Several models of one variant are seeds: mean ± std. First stage: {fs}.")


def percent_markdown(summary: "EffectivenessSummary", measure: str) -> str:
    """One measure x 100 as a Markdown table (a row per system, a column per dataset, ID
    datasets marked) and its legend: the table of a training study's README."""
    ds = summary.datasets
    head = "| system | " + " | ".join(d.name + (" (ID)" if d.group == "id" else "")
                                       for d in ds) + " |"
    lines = [head, "|---|" + "---:|" * len(ds)]
    for row in summary.rows:
        cells = [percent_cell(row.cells.get(d.name, {}).get(measure)) for d in ds]
        lines.append(f"| {row.variant} | " + " | ".join(cells) + " |")
    n = summary.comparisons.get(measure, 0)
    test = TEST_NAMES.get(summary.test, summary.test)
    marked = any(c.mark for r in summary.rows for d in r.cells.values() for c in d.values())
    lines += ["", f"{measure} × 100; ↑ / ↓: significantly better / worse than "
              f"`{summary.baseline}` (paired {test}, {summary.correction} correction over {n} "
              f"comparisons, corrected p < {summary.alpha})"
              + ("." if marked else "; none marked: no difference is significant.")]
    return "\n".join(lines)


def rich_table(summary: "EffectivenessSummary", measure: str | None = None):
    from rich.table import Table

    from rich.markup import escape

    m = measure or summary.primary
    # variant names hold [options] (colbert[proj=0,qaug=0]): literal text, not Rich markup
    t = Table(title=escape(f"{m} (baseline {summary.baseline})"))
    t.add_column("system")
    cols = columns(summary)
    for kind, key in cols:
        t.add_column(escape(_header(kind, key)), justify="right",
                     style="bold" if kind == "avg" else None)
    for row in summary.rows:
        t.add_row(escape(row_name(row)), *(cell_text(row, k, key, m) for k, key in cols))
    return t

"""Renderers of the :class:`~.summary.EffectivenessSummary` of one ``mice-bench
effectiveness`` run: systems x datasets (+ ID/OOD averages), like Table 1 of the MICE paper,
as Markdown (``<summary-name>.md``) and as Rich tables (the terminal). They render what the
summary holds (means, std over seeds, marks) and compute nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .summary import GROUP_LABEL

if TYPE_CHECKING:  # pragma: no cover
    from .summary import EffectivenessSummary, Row


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
    out.append(_legend(summary))
    return "\n".join(out) + "\n"


def _legend(summary: "EffectivenessSummary") -> str:
    fs = ", ".join(f"{d.name}: {d.first_stage}" for d in summary.datasets)
    return (f"↑/↓: significantly better/worse than `{summary.baseline}` "
            f"({summary.test} test, {summary.correction} correction across all "
            f"variant × dataset comparisons, corrected p < {summary.alpha}). "
            f"Several models of one variant are seeds: mean ± std. First stage: {fs}.")


def legend(summary: "EffectivenessSummary") -> str:
    return _legend(summary)


def rich_table(summary: "EffectivenessSummary", measure: str | None = None):
    from rich.table import Table

    m = measure or summary.primary
    t = Table(title=f"{m} (baseline {summary.baseline})")
    t.add_column("system")
    cols = columns(summary)
    for kind, key in cols:
        t.add_column(_header(kind, key), justify="right",
                     style="bold" if kind == "avg" else None)
    for row in summary.rows:
        t.add_row(row_name(row), *(cell_text(row, k, key, m) for k, key in cols))
    return t

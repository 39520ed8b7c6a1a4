"""The MICE paper's published numbers (``published/mice-paper.json``) and the report tables
that show them beside the suite's measurements.

The file holds one entry per published number: its table, row (and the suite's variant name
when the row is one), column (and dataset), value (``null`` for the paper's ``-``), the
paper's significance mark, and ``source``: ``repository@commit:file:line`` of the LaTeX table
it was read from (``scripts/published_from_tex.py`` regenerates it). :func:`load_published`
refuses an entry without a source.

In the tables, published numbers sit only in columns or rows labelled *published*; measured
numbers (from the results files) only in those labelled *measured*; a cell never holds both.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..tables import Table, fmt_ms_pm, fmt_rate

PUBLISHED_FILE = Path(__file__).parent / "published" / "mice-paper.json"
REQUIRED = ("table", "row", "column", "value", "source")
MARKS = {"up": "↑", "down": "↓"}


class PublishedError(ValueError):
    """A published-numbers file that cannot be used (names the file and the entry)."""


@dataclass(frozen=True)
class PublishedValue:
    table: str
    group: str
    row: str
    variant: str | None
    column: str
    value: float | str | None
    source: str
    dataset: str | None = None
    std: float | None = None
    mark: str | None = None
    unit: str | None = None


@dataclass
class Published:
    title: str
    repository: str
    commit: str
    note: str
    tables: dict[str, str]
    entries: list[PublishedValue]

    def table(self, name: str) -> list[PublishedValue]:
        return [e for e in self.entries if e.table == name]


def load_published(path: str | Path | None = None) -> Published:
    """Read and check a published-numbers file (default: the MICE paper's)."""
    path = Path(path) if path is not None else PUBLISHED_FILE
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise PublishedError(f"{path}: cannot read published numbers ({type(e).__name__}: "
                             f"{e})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("entries"), list):
        raise PublishedError(f"{path}: no 'entries' list")
    tables = dict(doc.get("tables") or {})
    out = []
    for i, e in enumerate(doc["entries"]):
        where = f"{path}: entry {i}"
        if not isinstance(e, dict):
            raise PublishedError(f"{where} is not an object")
        missing = [k for k in REQUIRED if k not in e]
        if missing:
            raise PublishedError(f"{where} ({e.get('row', '?')} / {e.get('column', '?')}) "
                                 f"lacks {', '.join(missing)}: every published number needs "
                                 "its source")
        src = e["source"]
        if not isinstance(src, str) or ":" not in src or not src.split(":", 1)[1].strip():
            raise PublishedError(f"{where}: source {src!r} names no file "
                                 "(repository@commit:file:line)")
        if e["table"] not in tables:
            raise PublishedError(f"{where}: table {e['table']!r} is not described in "
                                 f"'tables' ({', '.join(tables) or 'none'})")
        v = e["value"]
        if not (v is None or isinstance(v, str) or
                (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v))):
            raise PublishedError(f"{where}: value {v!r} is not a finite number, text or null")
        if e.get("mark") not in (None, *MARKS):
            raise PublishedError(f"{where}: mark {e['mark']!r}; valid: {', '.join(MARKS)}")
        out.append(PublishedValue(
            table=str(e["table"]), group=str(e.get("group") or ""), row=str(e["row"]),
            variant=e.get("variant"), column=str(e["column"]), value=v, source=src,
            dataset=e.get("dataset"), std=e.get("std"), mark=e.get("mark"),
            unit=e.get("unit")))
    return Published(title=str(doc.get("title", path.stem)), repository=str(doc.get(
        "repository", "")), commit=str(doc.get("commit", "")), note=str(doc.get("note", "")),
        tables=tables, entries=out)


def _source_files(entries: list[PublishedValue]) -> str:
    return ", ".join(sorted({e.source.rsplit(":", 1)[0] for e in entries}))


# ---------------------------------------------------------------------------- efficiency
def _measured_paper_rows(lat_rows) -> tuple[dict[tuple[str, bool], Any], str]:
    """The paper-protocol rows of one run and point (the one with most rows), by (variant,
    documents precomputed), and a sentence saying where they were measured."""
    cand = [r for r in lat_rows if r.run.protocol == "paper" and not r.compiled
            and not r.kv_cache_applied]
    by: dict[tuple, list] = defaultdict(list)
    for r in cand:
        by[(r.run.file, r.run.created, r.batch_size_requested, r.doc_tokens)].append(r)
    if not by:
        return {}, ""
    key = max(by, key=lambda k: (len(by[k]), not any(r.run.busy for r in by[k]), k[1], k[0]))
    rows = by[key]
    r0 = rows[0]
    where = (f"{r0.run.file}, paper protocol, {r0.batch_size_requested} pairs of "
             f"{r0.doc_tokens}-token documents, {r0.run.model_description} on "
             f"{r0.run.device_name} ({r0.run.device}, {r0.run.dtype}"
             + (", busy machine" if r0.run.busy else "") + ")")
    return {(r.variant, r.precompute_applied): r for r in rows}, where


def efficiency_table(pub: Published, lat_rows) -> Table | None:
    """The paper's efficiency table (published columns) beside the suite's paper-protocol
    measurement of the same variants (measured columns)."""
    ents = pub.table("efficiency")
    if not ents:
        return None
    measured, where = _measured_paper_rows(lat_rows)
    rows: dict[tuple[str, str], dict[str, PublishedValue]] = {}
    for e in ents:
        rows.setdefault((e.group, e.row), {})[e.column] = e
    t = Table(name="published-efficiency",
              title="Efficiency: the MICE paper's published numbers beside measured ones",
              columns=["Model", "variant", "#param", "Latency (ms)", "Docs/s", "Peak Mem",
                       "Latency (ms)", "Docs/s", "Peak Mem"],
              align="llrrrrrrr",
              groups=[("", 2), ("Published (MICE paper)", 4), ("Measured (this suite)", 3)])
    for section in ("with docs precompute", "without docs precompute"):
        body = []
        for (g, label), cols in rows.items():
            if g != section:
                continue
            v = next(iter(cols.values())).variant
            lat, dps, mem = cols.get("latency_ms"), cols.get("docs_per_s"), \
                cols.get("peak_mem_mb")
            m = measured.get((v, section == "with docs precompute")) if v else None
            mem_m = "–"
            if m is not None:
                mb = m.mem_peak_mb if m.run.device.startswith("cuda") else m.mem_growth_mb
                mem_m = f"{mb:.0f} MB" + ("" if m.run.device.startswith("cuda")
                                          else " (RSS growth)") if mb is not None else "–"
            body.append([
                label, v or "–", str(cols["params"].value) if "params" in cols else "–",
                fmt_ms_pm(lat.value / 1e3, (lat.std or 0) / 1e3) if lat else "–",
                fmt_rate(dps.value) if dps else "–",
                f"{mem.value:.0f} MB" if mem else "–",
                fmt_ms_pm(m.lat_mean, m.lat_std) if m else "–",
                fmt_rate(m.throughput) if m else "–", mem_m])
        t.add_section(section.capitalize(), body)
    t.caption = (f"Published columns: {pub.title}, {_source_files(ents)} (the paper's "
                 "protocol and hardware). Measured columns: "
                 + (where if where else "no paper-protocol latency result in the results "
                    "folder") + ". Different machines: compare ratios within one side, not "
                 "cells across sides.")
    return t


# ---------------------------------------------------------------------------- effectiveness
def _measured_rows(summaries, variant: str, group: str, measure: str = "nDCG@10"):
    """Measured rows (latest summary first) of ``variant`` whose model names the published
    row's model group (BM25: no model)."""
    out = []
    for sf in reversed(summaries):
        s = sf.summary
        if measure not in s.measures:
            continue
        for row in s.rows:
            if row.variant != variant:
                continue
            models = ", ".join(row.models)
            if variant != "bm25" and (not group or group.lower() not in models.lower()):
                continue
            cells = {ds: per[measure].mean for ds, per in row.cells.items()
                     if measure in per and math.isfinite(per[measure].mean)}
            if cells:
                out.append((sf.file, models, cells))
    return out


def effectiveness_table(pub: Published, name: str, summaries) -> Table | None:
    """A published effectiveness table (nDCG@10 x 100): each published row, and under it
    the suite's measured row of the same variant and model where the results have one."""
    ents = [e for e in pub.table(name) if e.dataset or e.column.startswith("avg")]
    if not ents:
        return None
    cols: list[str] = []
    for e in ents:
        if e.column not in cols:
            cols.append(e.column)
    rows: dict[tuple[str, str], dict[str, PublishedValue]] = {}
    for e in ents:
        rows.setdefault((e.group, e.row), {})[e.column] = e
    t = Table(name=f"published-{name}",
              title=f"Effectiveness (nDCG@10 × 100): the MICE paper's {name} (published) "
                    "beside measured rows",
              columns=["Model", "Re-ranker", "source"] + cols, align="lll" + "r" * len(cols))
    body = []
    used: set[str] = set()
    for (g, label), cells in rows.items():
        def show(e: PublishedValue | None) -> str:
            if e is None or e.value is None:
                return "–"
            return f"{e.value:.1f}" + (MARKS.get(e.mark, "") if e.mark else "")

        body.append([g, label, "published"] + [show(cells.get(c)) for c in cols])
        v = next(iter(cells.values())).variant
        if v:
            by_col = {c: e.dataset for c, e in cells.items()}
            want = {d for d in by_col.values() if d}
            found = sorted(_measured_rows(summaries, v, g), key=lambda m: -len(want & set(m[2])))
            for file, models, got in found[:1]:      # the one covering most datasets
                used.add(file)
                body.append([g, f"{v} ({models})" if models else v, f"measured: {file}"]
                            + [f"{got[by_col[c]] * 100:.1f}" if by_col.get(c) in got else "–"
                               for c in cols])
    t.add_section(None, body)
    t.caption = (f"Published rows: {pub.title}, {_source_files(ents)}; {pub.note} Measured "
                 "rows: the suite's results of the same variant and model, where there are "
                 "any (" + (", ".join(sorted(used)) if used else "none") + "); averages of "
                 "measured rows are not recomputed here (–).")
    return t


def report_tables(lat_rows, summaries, path: str | Path | None = None) -> list[Table]:
    """Every published table for ``mice-bench report``."""
    pub = load_published(path)
    out = [efficiency_table(pub, lat_rows)]
    out += [effectiveness_table(pub, n, summaries) for n in pub.tables if n != "efficiency"]
    return [t for t in out if t is not None]

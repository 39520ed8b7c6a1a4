"""The MICE paper's published numbers: the reference file, its loader and the report tables
that show them beside measured numbers (labelled, never in the same cell or column)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from mice_bench.report.published_io import (PUBLISHED_FILE, PublishedError, efficiency_table,
                                            effectiveness_table, load_published)

ROOT = Path(__file__).resolve().parents[1]
PAPER_RUN = ROOT / "results" / "latency" / "cpu-paper-minilm-l12-b16-d256.json"


@pytest.fixture(scope="module")
def pub():
    return load_published()


def _one(pub, table, row, column, group=None):
    got = [e for e in pub.table(table) if e.row == row and e.column == column
           and (group is None or e.group == group)]
    assert len(got) == 1, got
    return got[0]


def test_numbers_as_the_paper_prints_them(pub):
    """Spot values typed from the paper's LaTeX tables (figures/*.tex of xpmir/mice)."""
    ce = _one(pub, "efficiency", "Cross-Encoder", "latency_ms")
    assert (ce.value, ce.std, ce.variant) == (470.22, 4.87, "ce")
    assert _one(pub, "efficiency", "Cross-Encoder", "docs_per_s").value == 267
    assert _one(pub, "efficiency", "Cross-Encoder", "peak_mem_mb").value == 1193.52
    pre = _one(pub, "efficiency", "MICE ℓ4+3", "latency_ms", "with docs precompute")
    assert (pre.value, pre.std, pre.variant) == (113.28, 12.05, "mice-l4+3")
    assert _one(pub, "efficiency", "MICE ℓ4+3", "latency_ms",
                "without docs precompute").value == 241.05
    assert _one(pub, "efficiency", "ColBERT", "latency_ms", "with docs precompute").value == 130.36
    assert _one(pub, "efficiency", "ColBERT", "latency_ms",
                "without docs precompute").value == 498.48
    ar = _one(pub, "table2", "MICE-ℓ4+3", "Ar", "MiniLM")
    assert (ar.value, ar.mark, ar.dataset, ar.variant) == (41.0, "up", "arguana", "mice-l4+3")
    assert _one(pub, "table3", "baseline", "avg-id", "Ettin-68M").value == 64.5
    fe = _one(pub, "table1", "Mask1 (fine-tuned)", "FE", "MiniLM")
    assert (fe.value, fe.mark, fe.variant) == (82.7, "up", "mask1")
    # the paper's "-" (a run it does not report) is no number
    assert {e.value for e in pub.table("table2") if e.row == "MICE-ℓ4"} == {None}


def test_every_number_names_its_latex_table_and_line(pub):
    assert len(pub.entries) > 800
    for e in pub.entries:
        repo_commit, file, line = e.source.split(":")
        assert repo_commit == f"xpmir/mice@{pub.commit[:7]}"
        assert pub.tables[e.table].startswith(file + ":") and int(line) > 0


def _write(tmp_path, mutate) -> Path:
    doc = json.loads(PUBLISHED_FILE.read_text())
    mutate(doc["entries"])
    p = tmp_path / "pub.json"
    p.write_text(json.dumps(doc))
    return p


@pytest.mark.parametrize("mutate,needle", [
    (lambda es: es[3].pop("source"), "lacks source"),
    (lambda es: es[3].update(source=""), "names no file"),
    (lambda es: es[3].update(source="xpmir/mice"), "names no file"),
    (lambda es: es[3].update(value=float("nan")), "not a finite number"),
    (lambda es: es[3].update(table="table9"), "not described"),
    (lambda es: es[3].update(mark="sideways"), "mark"),
])
def test_loader_refuses_entries_it_cannot_vouch_for(tmp_path, mutate, needle):
    with pytest.raises(PublishedError, match=needle):
        load_published(_write(tmp_path, mutate))


def test_measured_columns_hold_only_measured_numbers(pub):
    """The efficiency table's measured columns are the results file's numbers; its
    published columns the paper's; neither side shows the other's."""
    from mice_bench.report.latency_io import load_latency_file
    from mice_bench.tables import fmt_ms_pm

    _, rows = load_latency_file(PAPER_RUN)
    doc = json.loads(PAPER_RUN.read_text())
    t = efficiency_table(pub, rows)
    pub_cols, meas_cols = slice(3, 6), slice(6, 9)
    published_text = {fmt_ms_pm(e.value / 1e3, e.std / 1e3)
                      for e in pub.table("efficiency") if e.column == "latency_ms"}
    measured = {(r["variant"], r["precompute_applied"]): r for r in doc["rows"]}
    seen = 0
    for label, body in t.sections:
        pre = label == "With docs precompute"
        for cells in body:
            m = measured.get((cells[1], pre))
            lat = m["latency_s"] if m else None
            assert cells[6] == (fmt_ms_pm(lat["mean"], lat["std"]) if m else "–")
            # docs/s: the row's pairs/s; memory: a CPU run's resident-set growth
            assert cells[7] == (f"{m['throughput_pairs_per_s']:.0f}"
                                if m and m["throughput_pairs_per_s"] >= 100 else
                                f"{m['throughput_pairs_per_s']:.1f}" if m else "–")
            assert cells[8] == (f"{m['memory']['growth_mb']:.0f} MB (RSS growth)" if m
                                else "–")
            assert not set(cells[meas_cols]) & published_text
            assert cells[3] in published_text
            seen += m is not None
            assert "Published" in t.groups[1][0] and "Measured" in t.groups[2][0]
    assert seen >= 3                       # ce, mice-l4+3 and colbert were measured
    assert pub_cols.stop == meas_cols.start


def test_without_measurements_the_measured_side_is_empty(pub):
    t = efficiency_table(pub, [])
    for _, body in t.sections:
        for cells in body:
            assert cells[6:] == ["–", "–", "–"]
            assert cells[3] != "–"
    assert "no paper-protocol latency result" in t.caption


def test_effectiveness_rows_are_labelled_and_never_mixed(pub):
    from mice_bench.evaluation.summary import Cell, EffectivenessSummary, Row
    from mice_bench.report.effectiveness_io import SummaryFile

    cell = Cell(mean=0.3333, std=None, seeds=[0.3333], num_queries=323)
    s = EffectivenessSummary(measures=["nDCG@10"], baseline="bm25", test="t", correction="none",
                             alpha=0.05, datasets=[],
                             rows=[Row("bm25", [], {"nfcorpus": {"nDCG@10": cell}})])
    t = effectiveness_table(pub, "table3", [])
    assert all(r[2] == "published" for _, body in t.sections for r in body)
    t = effectiveness_table(pub, "table2", [SummaryFile("effectiveness/x.json", "", s)])
    body = t.sections[0][1]
    i = next(k for k, r in enumerate(body) if r[1] == "BM25")
    assert body[i][2] == "published" and body[i + 1][2] == "measured: effectiveness/x.json"
    nfc = t.columns.index("NFC")
    assert body[i][nfc] == "32.2" and body[i + 1][nfc] == "33.3"
    assert {c for c in body[i + 1][3:]} == {"–", "33.3"}


def test_report_shows_the_published_tables(tmp_path):
    from mice_bench.report import build_report

    res = tmp_path / "results"
    (res / "latency").mkdir(parents=True)
    shutil.copy(PAPER_RUN, res / "latency" / PAPER_RUN.name)
    build_report(res, tmp_path / "out", figures=False)
    readme = (tmp_path / "out" / "README.md").read_text()
    assert "## The MICE paper's published numbers" in readme
    assert "Published (MICE paper)" in readme and "Measured (this suite)" in readme
    for name in ("published-efficiency", "published-table1", "published-table2",
                 "published-table3"):
        assert (tmp_path / "out" / "tables" / f"{name}.md").is_file()

"""Result files edited by hand are checked by the same rules their writers obey before
``mice-bench report`` renders a number of them: a NaN or negative byte count, an unknown store
format, an aggregate that is not the mean of its per-query values, an infinite per-query value,
a non-finite or negative latency, a summary cell that is not the mean of its seeds. Each is
refused with exit 2 and one line naming the file and the field, and no report file is written.
The writers refuse the same documents before writing them."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mice_bench.cli import app

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "tests" / "fixtures" / "report" / "results"
COLBERT = "effectiveness/dl19/bm25/tiny-ce/colbert.json"
LATENCY = "latency/paper.json"
SUMMARY = REPO / "results" / "effectiveness" / "minilm-rerank.json"
STORE = {"store": "fp16", "content": "vectors", "docs": 10, "bytes": 25600.0,
         "bytes_per_doc": 2560.0, "tokens_per_doc": 40.0, "bytes_per_token": 64.0}


def _edit(path: Path, change) -> None:
    d = json.loads(path.read_text())
    change(d)
    path.write_text(json.dumps(d))      # writes NaN / Infinity as Python's json does


def _store(**kw):
    def change(d):
        d["timing"] = dict(d["timing"], doc_store=dict(STORE, **kw))
    return change


def _aggregate(d):
    d["aggregates"]["nDCG@10"] = 0.999


def _per_query_inf(d):
    d["per_query"]["nDCG@10"]["q1"] = math.inf


def _per_query_and_aggregate_nan(d):
    d["per_query"]["RR@10"]["q0"] = math.nan


def _latency(field, value):
    def change(d):
        d["rows"][0][field]["mean"] = value
    return change


def _throughput(d):
    d["rows"][1]["throughput_pairs_per_s"] = -5.0


CASES = {
    "nan-bytes-per-token": (COLBERT, _store(bytes_per_token=math.nan),
                            ["timing.doc_store.bytes_per_token", "nan"]),
    "negative-bytes-per-token": (COLBERT, _store(bytes_per_token=-3.0),
                                 ["timing.doc_store.bytes_per_token", "-3.0", "> 0"]),
    "negative-bytes-per-doc": (COLBERT, _store(bytes_per_doc=-1.0),
                               ["timing.doc_store.bytes_per_doc"]),
    "unknown-store": (COLBERT, _store(store="fp8"),
                      ["timing.doc_store.store", "'fp8'", "valid: fp32, fp16, int8"]),
    "unknown-content": (COLBERT, _store(content="words"), ["timing.doc_store.content"]),
    "aggregate-off-its-queries": (COLBERT, _aggregate,
                                  ["aggregates.nDCG@10", "0.999", "not the mean"]),
    "infinite-per-query": (COLBERT, _per_query_inf, ["per_query.nDCG@10.q1", "inf"]),
    "nan-per-query": (COLBERT, _per_query_and_aggregate_nan, ["per_query.RR@10.q0", "nan"]),
    "nan-latency": (LATENCY, _latency("latency_s", math.nan),
                    ["$.rows[0].latency_s.mean", "nan", "not a finite number"]),
    "negative-latency": (LATENCY, _latency("latency_s", -0.5),
                         ["$.rows[0].latency_s.mean", "-0.5"]),
    "negative-throughput": (LATENCY, _throughput, ["$.rows[1].throughput_pairs_per_s"]),
}


def _report(tmp_path: Path, results: Path):
    return CliRunner().invoke(app, ["report", "--results", str(results), "--out",
                                    str(tmp_path / "out"), "--ablations",
                                    str(tmp_path / "none")])


def _assert_refused(r, tmp_path: Path, path: Path, needles) -> None:
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1, r.output                 # one line, whatever the width
    assert lines[0].startswith(f"error: {path}: "), lines[0]
    for n in needles:
        assert n in lines[0], (n, lines[0])
    assert [p for p in (tmp_path / "out").rglob("*") if p.is_file()] == []


def test_the_untouched_fixture_renders(tmp_path):
    r = _report(tmp_path, RESULTS)
    assert r.exit_code == 0, r.output


@pytest.mark.parametrize("case", list(CASES))
def test_an_edited_result_file_is_refused_naming_file_and_field(tmp_path, case):
    rel, change, needles = CASES[case]
    res = tmp_path / "results"
    shutil.copytree(RESULTS, res)
    _edit(res / rel, change)
    _assert_refused(_report(tmp_path, res), tmp_path, res / rel, needles)


def test_a_valid_store_record_is_rendered(tmp_path):
    """The same block with sound values is accepted (the refusals are about the values)."""
    res = tmp_path / "results"
    shutil.copytree(RESULTS, res)
    _edit(res / COLBERT, _store())
    r = _report(tmp_path, res)
    assert r.exit_code == 0, r.output
    table = (tmp_path / "out" / "tables" / "storage-ndcg10.md").read_text()
    assert "| 2.5 |" in table              # 2560 bytes per document = 2.5 KiB


@pytest.mark.parametrize("field,value,needle", [
    ("mean", 0.9, "mean: 0.9 is not the mean of its seeds"),
    ("mean", math.nan, "mean: nan"),
    ("p_corrected", 1.5, "p_corrected: 1.5 is not within [0, 1]"),
    ("mark", "↑", "mark: '↑'"),
])
def test_an_edited_summary_cell_is_refused(tmp_path, field, value, needle):
    res = tmp_path / "results"
    (res / "effectiveness").mkdir(parents=True)
    path = res / "effectiveness" / SUMMARY.name
    shutil.copy(SUMMARY, path)

    def change(d):
        row = next(r for r in d["summary"]["rows"] if r["variant"] != "bm25"
                   and any(c.get("mark") == "" for per in r["cells"].values()
                           for c in per.values()))
        ds, per = next(iter(row["cells"].items()))
        m = next(m for m, c in per.items() if c.get("mark") == "")
        per[m][field] = value

    _edit(path, change)
    _assert_refused(_report(tmp_path, res), tmp_path, path, ["summary.rows[", needle])


def test_the_untouched_summary_renders(tmp_path):
    res = tmp_path / "results"
    (res / "effectiveness").mkdir(parents=True)
    shutil.copy(SUMMARY, res / "effectiveness" / SUMMARY.name)
    assert _report(tmp_path, res).exit_code == 0


# --------------------------------------------------------------------------- the writers
def test_the_effectiveness_writer_refuses_what_the_reader_refuses(tmp_path):
    from mice_bench.effectiveness.result import EffectivenessResult

    res = EffectivenessResult.load(RESULTS / COLBERT)
    res.aggregates["nDCG@10"] = 0.999
    with pytest.raises(ValueError, match="aggregates.nDCG@10"):
        res.save(tmp_path / "x.json")
    res = EffectivenessResult.load(RESULTS / COLBERT)
    res.timing["doc_store"] = dict(STORE, store="fp8")
    with pytest.raises(ValueError, match="timing.doc_store.store"):
        res.save(tmp_path / "x.json")
    assert list(tmp_path.iterdir()) == []


def test_the_latency_writer_refuses_a_non_finite_latency(tmp_path):
    from mice_bench.latency.result import LatencyResult
    from mice_bench.latency.schema import SchemaError

    res = LatencyResult.load(RESULTS / LATENCY)
    res.rows[0].latency_s["mean"] = math.inf
    with pytest.raises(SchemaError, match=r"latency_s.mean: inf is not a finite number"):
        res.save(tmp_path / "x.json")
    assert list(tmp_path.iterdir()) == []


def test_the_summary_writer_refuses_a_cell_off_its_seeds(tmp_path):
    from mice_bench.evaluation.summary import EffectivenessSummary

    s, _ = EffectivenessSummary.load(SUMMARY)
    cell = next(iter(next(iter(s.rows[0].cells.values())).values()))
    cell.mean += 0.25
    with pytest.raises(ValueError, match="is not the mean of its seeds"):
        s.write_json(tmp_path / "x.json", {}, {})
    assert list(tmp_path.iterdir()) == []

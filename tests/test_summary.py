"""The effectiveness summary and its one view (``mice_bench.evaluation.table``): the
committed summary files render back to their committed Markdown, cell by cell."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps
from test_statistics import D5, NAN, Rec, exact_sign_flip_p  # the tests' shared stand-ins

from mice_bench.evaluation import stats as S
from mice_bench.evaluation.summary import (
    Cell,
    EffectivenessSummary,
    Row,
    SummaryDataset,
    SummarySettings,
    default_baseline,
    mark_for,
    summarize,
)
from mice_bench.evaluation.table import markdown, percent_cell, percent_markdown
from mice_bench.results import ResultFileError, schema_version

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


# ----------------------------------------------------------------------
# the summary model, its file and summarize, value by value
# ============================================================================= summary.py
def test_the_default_baseline_is_ce_when_it_runs_else_bm25():
    assert default_baseline(["bm25", "ce", "mice-l4+3"]) == "ce"
    assert default_baseline(iter(["bm25", "ce"])) == "ce"        # any iterable
    assert default_baseline(["bm25", "mask1", "cE"]) == "bm25"
    assert default_baseline([]) == "bm25"


@pytest.mark.parametrize("diff, p, alpha, want", [
    (0.1, 0.01, 0.05, "↑"), (-0.1, 0.01, 0.05, "↓"), (1.0, 0.01, 0.05, "↑"),
    (2.5, 0.0, 0.05, "↑"), (-1.0, 0.0, 0.05, "↓"),
    (0.0, 0.01, 0.05, ""),                  # no difference: no direction
    (0.1, 0.05, 0.05, ""),                  # p == alpha is not below alpha
    (0.1, 0.0499, 0.05, "↑"), (0.1, 0.2, 0.3, "↑"), (0.1, 0.2, 0.1, ""),
    (0.1, None, 0.05, ""), (-0.1, NAN, 0.05, ""),
])
def test_a_mark_needs_a_difference_and_a_corrected_p_below_alpha(diff, p, alpha, want):
    assert mark_for(diff, p, alpha) == want


def test_summary_settings_defaults_and_validation():
    s = SummarySettings()
    assert (s.baseline, s.test, s.correction, s.alpha, s.seed) == ("bm25", "ttest", "holm",
                                                                   0.05, 0)
    with pytest.raises(ValueError) as e:
        SummarySettings(test="wilcoxon")
    assert str(e.value) == "unknown test 'wilcoxon'; valid: ttest, randomization"
    with pytest.raises(ValueError) as e:
        SummarySettings(correction="bh")
    assert str(e.value) == "unknown correction 'bh'; valid: holm, bonferroni, none"
    for bad in (0, 0.0, 1, 1.0, 1.5, -0.1):
        with pytest.raises(ValueError) as e:
            SummarySettings(alpha=bad)
        assert str(e.value) == f"alpha must be in (0, 1), got {bad}"
    for ok in (1e-9, 0.5, 0.999):
        assert SummarySettings(alpha=ok).alpha == ok


# ---------------------------------------------------------------- a hand-built summary
def _tiny() -> EffectivenessSummary:
    ds = [SummaryDataset("A", "irds/a", "id", "bm25"), SummaryDataset("C", None, "ood", "full")]
    rows = [Row("bm25", [], {"A": {"m1": Cell(0.5, None, [0.5], 3)}}, {"A": ["b.json"]},
                {"id": {"m1": 0.5}}),
            Row("v", ["s1", "s2"], {"A": {"m1": Cell(0.6, 0.1, [0.5, 0.6, 0.7], 3, 0.02, 0.04,
                                                     0.1, "↑")},
                                    "C": {"m1": Cell(0.3, 0.0, [0.3, 0.3], 2)}},
                {"A": ["v1.json", "v2.json"], "C": ["c1.json", "c2.json"]},
                {"id": {"m1": 0.6}, "ood": {"m1": 0.3}})]
    return EffectivenessSummary(["m1", "m2"], "bm25", "ttest", "bonferroni", 0.1, ds, rows,
                                {"m1": 1, "m2": 0})


TINY_DICT = {
    "measures": ["m1", "m2"], "primary": "m1", "baseline": "bm25", "test": "ttest",
    "correction": "bonferroni", "alpha": 0.1, "comparisons": {"m1": 1, "m2": 0},
    "datasets": [{"name": "A", "irds_id": "irds/a", "group": "id", "first_stage": "bm25"},
                 {"name": "C", "irds_id": None, "group": "ood", "first_stage": "full"}],
    "rows": [
        {"variant": "bm25", "models": [],
         "cells": {"A": {"m1": {"mean": 0.5, "std": None, "seeds": [0.5], "num_queries": 3,
                                "p": None, "p_corrected": None, "diff": None, "mark": ""}}},
         "files": {"A": ["b.json"]}, "averages": {"id": {"m1": 0.5}}},
        {"variant": "v", "models": ["s1", "s2"],
         "cells": {"A": {"m1": {"mean": 0.6, "std": 0.1, "seeds": [0.5, 0.6, 0.7], "num_queries": 3,
                                "p": 0.02, "p_corrected": 0.04, "diff": 0.1, "mark": "↑"}},
                   "C": {"m1": {"mean": 0.3, "std": 0.0, "seeds": [0.3, 0.3], "num_queries": 2,
                                "p": None, "p_corrected": None, "diff": None, "mark": ""}}},
         "files": {"A": ["v1.json", "v2.json"], "C": ["c1.json", "c2.json"]},
         "averages": {"id": {"m1": 0.6}, "ood": {"m1": 0.3}}}],
}


def test_to_dict_and_from_dict_against_a_hand_written_dict():
    s = _tiny()
    assert s.to_dict() == TINY_DICT
    assert EffectivenessSummary.from_dict(TINY_DICT) == s
    # JSON turns nothing into something else (the file holds exactly this)
    assert json.loads(json.dumps(s.to_dict())) == TINY_DICT
    # from_dict normalises the types a hand-edited file may hold
    d = json.loads(json.dumps(TINY_DICT))
    d["alpha"], d["comparisons"] = "0.1", {"m1": "1", "m2": 0.0}
    back = EffectivenessSummary.from_dict(d)
    assert back.alpha == 0.1 and back.comparisons == {"m1": 1, "m2": 0}
    assert type(back.alpha) is float and all(type(v) is int for v in back.comparisons.values())


def test_rows_and_cells_are_found_by_variant_dataset_and_measure():
    s = _tiny()
    assert s.primary == "m1"
    assert s.settings == SummarySettings("bm25", "ttest", "bonferroni", 0.1)
    assert s.row("v").models == ["s1", "s2"]
    with pytest.raises(KeyError) as e:
        s.row("nope")
    assert e.value.args == ("nope",)                     # names the missing variant
    assert s.cell("v", "A", "m1").mark == "↑"
    assert s.cell("v", "C", "m1").mean == 0.3
    assert s.cell("bm25", "C", "m1") is None             # no cell on that dataset
    assert s.cell("v", "A", "m2") is None                # no such measure


def test_save_and_load_the_envelope(tmp_path):
    from mice_bench.evaluation.table import write_summary

    s = _tiny()
    write_summary(s, tmp_path / "sum", {"variants": "bm25,v"}, {"python": "3.x"})
    doc = json.loads((tmp_path / "sum.json").read_text())
    assert doc["schema"] == "mice-bench/effectiveness-summary"
    assert doc["config"] == {"variants": "bm25,v"} and doc["environment"] == {"python": "3.x"}
    assert doc["summary"] == TINY_DICT
    md = (tmp_path / "sum.md").read_text()
    assert md.startswith("### m1\n") and "| v (s1, s2) | 0.600±0.100↑ |" in md
    back, env = EffectivenessSummary.load(tmp_path / "sum.json")
    assert back == s and env == doc


def test_load_refuses_another_kind_and_names_a_malformed_file(tmp_path):
    from mice_bench.results import atomic_write_json, envelope

    other = atomic_write_json(tmp_path / "eff.json", envelope("effectiveness", {}, {},
                                                              summary=TINY_DICT))
    with pytest.raises(ResultFileError) as e:
        EffectivenessSummary.load(other)
    assert str(e.value) == (f"{other}: expected a effectiveness-summary results file, "
                            "found effectiveness")
    bad = dict(TINY_DICT)
    del bad["rows"]
    broken = atomic_write_json(tmp_path / "broken.json",
                               envelope("effectiveness-summary", {}, {}, summary=bad))
    with pytest.raises(ResultFileError) as e:
        EffectivenessSummary.load(broken)
    assert str(e.value) == (f"{broken}: malformed effectiveness-summary results file "
                            "(KeyError: 'rows')")


# ------------------------------------------------------- summarize on a per-query fixture


Q = ("q1", "q2", "q3", "q4")
N, R = "nDCG@10", "RR@10"
BASE = {N: {"A": [0.2, 0.4, 0.6, 0.8], "B": [0.5, 0.3, 0.7, 0.6], "C": [0.1, 0.2, 0.3, 0.4],
            "D": [0.3, 0.3, 0.5, 0.5], "E": [0.0, 0.0, 0.0, 0.0]},
        R: {"A": [1.0, 0.5, 0.5, 1.0], "B": [0.5, 0.5, 1.0, 1.0], "C": [1.0, 1.0, 0.5, 0.25],
            "D": [0.2, 0.5, 1.0, 1.0], "E": [0.0, 0.0, 0.0, 0.0]}}
# per-query differences (row - bm25) of the mean over seeds; the aggregates are chosen
# independently of the per-query values on purpose (cells: aggregates; tests: per query)
D1 = {N: {"A": [0.1] * 4, "B": [-0.1, -0.11, -0.09, -0.1], "C": [0.1, -0.1, 0.05, -0.04]},
      R: {"A": [0.1, 0.2, 0.2, 0.3], "B": [0.0] * 4, "C": [0.0] * 4}}
SEED_SPLIT = {"A": [0.05] * 4, "B": [0.0] * 4, "C": [0.02, -0.02, 0.0, 0.0]}   # s1 +, s2 -
D2 = {N: {"A": [0.3, -0.1, 0.2, 0.0], "C": [-0.2] * 4, "D": [0.02, 0.01, 0.03, 0.02]},
      R: {"A": [0.0] * 4, "C": [0.0] * 4, "D": [0.1] * 4}}
AGG = {("bm25", None): {"A": (0.5, 0.75), "B": (0.52, 0.75), "C": (0.25, 0.69),
                        "D": (0.4, 0.68), "E": (0.1, 0.1)},
       ("v1", "s1"): {"A": (0.31, 0.6), "B": (0.35, 0.7), "C": (0.2, 0.8), "E": (0.9, 0.9)},
       ("v1", "s2"): {"A": (0.35, 0.62), "B": (0.37, 0.7), "C": (0.24, 0.84)},
       ("v2", "m2"): {"A": (0.45, 0.7), "C": (0.3, 0.6), "D": (0.41, 0.75)},
       ("v3", "m3"): {"A": (0.99, 0.99)}}


def _pq(values):
    return {q: float(v) for q, v in zip(Q, values)}


def _records():
    recs = []
    for (v, model), per_ds in AGG.items():
        for d, (an, ar) in per_ds.items():
            pq = {}
            for m in (N, R):
                vals = np.array(BASE[m][d])
                if v == "v1" and d in D1[m]:
                    sign = 1.0 if model == "s1" else -1.0
                    split = np.array(SEED_SPLIT[d]) if m == N else 0.0
                    vals = vals + np.array(D1[m][d]) + sign * split
                elif v == "v2" and d in D2[m]:
                    vals = vals + np.array(D2[m][d])
                elif v == "v3":
                    vals = vals + 0.5
                pq[m] = _pq(vals)
            recs.append(Rec(v, model, d, pq, {N: an, R: ar}, f"{v}-{model}-{d}.json"))
    return recs


DATASETS = [SummaryDataset("A", "irds/a", "id", "bm25"), SummaryDataset("B", None, "id", "bm25"),
            SummaryDataset("C", "irds/c", "ood", "run:c.trec"),
            SummaryDataset("D", None, "other", "full")]
VARIANTS = ["v2", "bm25", "v4", "v1"]   # the baseline not first; v4 has no records


def _tp(m, v, d):
    """scipy's paired t-test p on the per-query means (0 / 1 for the constant cases)."""
    diffs = (D1 if v == "v1" else D2)[m][d]
    if np.allclose(diffs, 0):
        return 1.0
    if np.allclose(diffs, diffs[0]):
        return 0.0
    base = np.array(BASE[m][d])
    return float(sps.ttest_rel(base + np.array(diffs), base).pvalue)


def test_fixture_p_values_by_hand():
    """The fixture's non-trivial p-values, as the hand Holm below assumes their order."""
    from scipy.stats import t as student

    # v2 on D and v1 on A (RR): d = (.02,.01,.03,.02) and (.1,.2,.2,.3): t = 4.89898, df 3
    t = 2 / (math.sqrt(2 / 3) / 2)
    assert _tp(N, "v2", "D") == pytest.approx(2 * student.sf(t, 3), rel=1e-6)
    assert _tp(R, "v1", "A") == pytest.approx(2 * student.sf(t, 3), rel=1e-6)
    assert 0.0162 < _tp(N, "v2", "D") < 0.0164
    # v1 on B: d = -(.1,.11,.09,.1): t = -.1 / (sqrt(2e-4/3) / 2) = -24.49
    t_b = 0.1 / (math.sqrt(2e-4 / 3) / 2)
    assert _tp(N, "v1", "B") == pytest.approx(2 * student.sf(t_b, 3), rel=1e-6)
    assert _tp(N, "v1", "B") < _tp(N, "v2", "D") < _tp(N, "v2", "A") < _tp(N, "v1", "C")


def _expected():
    """The summary written out by hand: cells, tests, Holm over the 6 comparisons of each
    measure, marks, averages, row order."""
    pB, pD, pA2, pC = (_tp(N, "v1", "B"), _tp(N, "v2", "D"), _tp(N, "v2", "A"),
                       _tp(N, "v1", "C"))
    # nDCG@10: sorted p 0 (v1 A), 0 (v2 C), pB, pD, pA2, pC -> Holm factors 6, 5, 4, 3, 2, 1
    hB = 4 * pB
    hD = max(hB, 3 * pD)                     # 0.0488 < 0.05: significant only with Holm
    hA2 = max(hD, 2 * pA2)
    hC = min(1.0, max(hA2, pC))
    pRA = _tp(R, "v1", "A")
    # RR@10: sorted 0 (v2 D), pRA, 1, 1, 1, 1 -> 0, 5 pRA, then capped at 1
    h = {N: {("v1", "A"): (0.0, 0.0, 0.1, "↑"), ("v1", "B"): (pB, hB, -0.1, "↓"),
             ("v1", "C"): (pC, hC, 0.0025, ""), ("v2", "A"): (pA2, hA2, 0.1, ""),
             ("v2", "C"): (0.0, 0.0, -0.2, "↓"), ("v2", "D"): (pD, hD, 0.02, "↑")},
         R: {("v1", "A"): (pRA, 5 * pRA, 0.2, ""), ("v1", "B"): (1.0, 1.0, 0.0, ""),
             ("v1", "C"): (1.0, 1.0, 0.0, ""), ("v2", "A"): (1.0, 1.0, 0.0, ""),
             ("v2", "C"): (1.0, 1.0, 0.0, ""), ("v2", "D"): (0.0, 0.0, 0.1, "↑")}}
    sd2 = lambda x, y: abs(x - y) / math.sqrt(2)   # noqa: E731  sample std of two seeds

    def cell(v, d, mi, seeds):
        m = (N, R)[mi]
        vals = [s[mi] for s in seeds]
        c = Cell(mean=sum(vals) / len(vals), std=sd2(*vals) if len(vals) == 2 else None,
                 seeds=vals, num_queries=4)
        if (v, d) in h[m]:
            c.p, c.p_corrected, c.diff, c.mark = h[m][(v, d)]
        return c

    def cells(v, per_ds):
        return {d: {N: cell(v, d, 0, s), R: cell(v, d, 1, s)} for d, s in per_ds.items()}

    rows = [
        Row("v2", ["m2"], cells("v2", {"A": [(0.45, 0.7)], "C": [(0.3, 0.6)],
                                             "D": [(0.41, 0.75)]}),
            {"A": ["v2-m2-A.json"], "C": ["v2-m2-C.json"], "D": ["v2-m2-D.json"]},
            {"ood": {N: 0.3, R: 0.6}}),                  # B missing: no ID average
        Row("bm25", [], cells("bm25", {"A": [(0.5, 0.75)], "B": [(0.52, 0.75)],
                                         "C": [(0.25, 0.69)], "D": [(0.4, 0.68)]}),
            {d: [f"bm25-None-{d}.json"] for d in "ABCD"},
            {"id": {N: 0.51, R: 0.75}, "ood": {N: 0.25, R: 0.69}}),
        Row("v1", ["s1", "s2"], cells("v1", {"A": [(0.31, 0.6), (0.35, 0.62)],
                                               "B": [(0.35, 0.7), (0.37, 0.7)],
                                               "C": [(0.2, 0.8), (0.24, 0.84)]}),
            {d: [f"v1-s1-{d}.json", f"v1-s2-{d}.json"] for d in "ABC"},
            {"id": {N: (0.33 + 0.36) / 2, R: (0.61 + 0.7) / 2}, "ood": {N: 0.22, R: 0.82}}),
    ]
    return EffectivenessSummary([N, R], "bm25", "ttest", "holm", 0.05, list(DATASETS), rows,
                                {N: 6, R: 6})


def _assert_same(got: EffectivenessSummary, want: EffectivenessSummary):
    g, w = got.to_dict(), want.to_dict()
    assert [r["variant"] for r in g["rows"]] == [r["variant"] for r in w["rows"]]
    for key in ("measures", "primary", "baseline", "test", "correction", "alpha",
                "comparisons", "datasets"):
        assert g[key] == w[key], key
    for gr, wr in zip(g["rows"], w["rows"]):
        v = wr["variant"]
        assert gr["models"] == wr["models"], v
        assert gr["files"] == wr["files"], v
        assert gr["averages"].keys() == wr["averages"].keys(), v
        for grp, vals in wr["averages"].items():
            assert gr["averages"][grp] == pytest.approx(vals), (v, grp)
        assert {d: list(c) for d, c in gr["cells"].items()} == \
               {d: list(c) for d, c in wr["cells"].items()}, v
        for d, per_m in wr["cells"].items():
            for m, wc in per_m.items():
                gc = gr["cells"][d][m]
                where = (v, d, m)
                assert gc["mark"] == wc["mark"], where
                assert gc["num_queries"] == wc["num_queries"], where
                assert gc["seeds"] == pytest.approx(wc["seeds"]), where
                for k in ("mean", "std", "p", "p_corrected", "diff"):
                    if wc[k] is None:
                        assert gc[k] is None, (where, k)
                    else:
                        assert gc[k] == pytest.approx(wc[k], rel=1e-9, abs=1e-12), (where, k)


def test_summarize_matches_the_hand_written_summary():
    s = summarize(_records(), DATASETS, VARIANTS, SummarySettings())
    _assert_same(s, _expected())
    # the borderline nDCG cell: significant after Holm (3 p = 0.0488), not after Bonferroni
    assert s.cell("v2", "D", N).p_corrected == pytest.approx(3 * _tp(N, "v2", "D"))


def test_summarize_holm_family_against_statsmodels():
    sm = pytest.importorskip("statsmodels.stats.multitest")
    s = summarize(_records(), DATASETS, VARIANTS, SummarySettings())
    for m in (N, R):
        keys = [("v1", d) for d in "ABC"] + [("v2", d) for d in "ACD"]
        raw = [_tp(m, *k) for k in keys]
        want = sm.multipletests(raw, method="holm")[1]
        for k, w in zip(keys, want):
            assert s.cell(k[0], k[1], m).p_corrected == pytest.approx(w, abs=1e-12)


@pytest.mark.parametrize("correction, factor", [("bonferroni", 6), ("none", 1)])
def test_summarize_other_corrections_by_hand(correction, factor):
    s = summarize(_records(), DATASETS, VARIANTS, SummarySettings(correction=correction))
    assert s.correction == correction and s.comparisons == {N: 6, R: 6}
    for v, ds in (("v1", "ABC"), ("v2", "ACD")):
        for d in ds:
            for m in (N, R):
                c = s.cell(v, d, m)
                assert c.p == pytest.approx(_tp(m, v, d), rel=1e-9)
                assert c.p_corrected == pytest.approx(min(1.0, factor * c.p), rel=1e-9)
    # the borderline cell: 6 p = 0.098 -> no mark with Bonferroni; 0.016 < 0.05 without
    assert s.cell("v2", "D", N).mark == ("" if correction == "bonferroni" else "↑")
    assert s.cell("v1", "A", R).mark == ("" if correction == "bonferroni" else "↑")


def test_summarize_measures_default_and_subset():
    recs = _records()
    s = summarize(recs, DATASETS, VARIANTS, SummarySettings())
    assert s.measures == [N, R]                       # the first record's measures, in order
    first = Rec("bm25", None, "A", recs[0].per_query, {R: 0.75, N: 0.5}, "x.json")
    s2 = summarize([first] + recs[1:], DATASETS, VARIANTS, SummarySettings())
    assert s2.measures == [R, N]                      # the first record's order, not later ones
    s3 = summarize(recs, DATASETS, VARIANTS, SummarySettings(), measures=(R,))
    assert s3.measures == [R] and s3.comparisons == {R: 6}
    assert list(s3.row("v1").cells["A"]) == [R]


def test_summarize_without_records_or_without_other_variants():
    s = summarize([], DATASETS, ["bm25", "v1"], SummarySettings())
    assert (s.measures, s.rows, s.comparisons) == ([], [], {})
    only_bm25 = [r for r in _records() if r.variant == "bm25"]
    s = summarize(only_bm25, DATASETS, ["bm25"], SummarySettings())
    assert s.comparisons == {N: 0, R: 0} and [r.variant for r in s.rows] == ["bm25"]
    assert s.cell("bm25", "A", N).p is None and s.cell("bm25", "A", N).mark == ""


def test_summarize_keeps_the_settings_and_datasets():
    st = SummarySettings(baseline="v1", test="ttest", correction="bonferroni", alpha=0.2)
    s = summarize(_records(), DATASETS, VARIANTS, st)
    assert (s.baseline, s.test, s.correction, s.alpha) == ("v1", "ttest", "bonferroni", 0.2)
    assert s.datasets == DATASETS
    # baseline v1: bm25 and v2 are compared with it where v1 has a cell (A, B, C)
    assert s.comparisons == {N: 5, R: 5}              # bm25 A,B,C; v2 A,C
    assert s.cell("v1", "A", N).p is None
    assert s.cell("v2", "D", N).p is None             # no baseline cell on D: not tested
    assert s.cell("bm25", "B", N).diff == pytest.approx(0.1)   # bm25 - v1 on B


def test_summarize_baseline_missing_on_an_early_dataset():
    """No baseline on A (the first dataset): A is not tested, B and C still are."""
    recs = [r for r in _records() if not (r.variant == "bm25" and r.dataset_name == "A")]
    s = summarize(recs, DATASETS, VARIANTS, SummarySettings(correction="none"))
    assert s.comparisons == {N: 4, R: 4}              # v1 B, C; v2 C, D
    assert s.cell("v1", "A", N).p is None and s.cell("v2", "A", N).p is None
    assert s.cell("v1", "B", N).p == pytest.approx(_tp(N, "v1", "B"))
    assert s.cell("v2", "D", N).p == pytest.approx(_tp(N, "v2", "D"))


def test_summarize_refuses_different_queries():
    recs = _records()
    v1c = next(r for r in recs if r.variant == "v1" and r.dataset_name == "C")
    v1c.per_query[N] = {**v1c.per_query[N], "q5": 0.5}
    v1c.per_query[N].pop("q1")
    other = next(r for r in recs if r.variant == "v1" and r.dataset_name == "C" and r is not v1c)
    other.per_query[N] = dict(v1c.per_query[N])
    with pytest.raises(ValueError) as e:
        summarize(recs, DATASETS, VARIANTS, SummarySettings())
    assert str(e.value) == "v1 and the baseline bm25 were evaluated on different queries of C"


def test_summarize_randomization_uses_the_settings_seed():
    """The sign-flip test on D5 (exact p 6 / 32) with the settings' seed."""
    base = [0.5] * 5
    ds = [SummaryDataset("A", None, "id", "bm25")]
    recs = [Rec("bm25", None, "A", {N: dict(zip("abcde", base))}, {N: 0.5}, "b"),
            Rec("v", "m", "A", {N: dict(zip("abcde", (0.5 + x for x in D5)))}, {N: 0.6}, "v")]
    ps = {}
    for seed in (7, 8):
        s = summarize(recs, ds, ["bm25", "v"], SummarySettings(test="randomization", seed=seed,
                                                               correction="none"))
        assert s.test == "randomization"
        ps[seed] = s.cell("v", "A", N).p
        assert ps[seed] == pytest.approx(exact_sign_flip_p(D5), abs=0.015)
        assert ps[seed] * 10_001 == pytest.approx(round(ps[seed] * 10_001), abs=1e-6)
    assert ps[7] != ps[8]                              # the seed reaches the test
    assert ps[7] != S.paired_randomization([0.5 + x for x in D5], base, seed=0)   # not seed 0
    assert ps[7] == S.paired_randomization([0.5 + x for x in D5], base, seed=7)


def test_summarize_duplicate_variants_count_once():
    """A variant listed twice is one row and one comparison (not a doubled family)."""
    recs = _records()
    once = summarize(recs, DATASETS, VARIANTS, SummarySettings(correction="bonferroni"))
    twice = summarize(recs, DATASETS, VARIANTS + ["v1", "v2"],
                      SummarySettings(correction="bonferroni"))
    assert twice.comparisons == once.comparisons == {N: 6, R: 6}
    assert [r.variant for r in twice.rows] == ["v2", "bm25", "v1"]
    assert twice.cell("v2", "D", N).p_corrected == pytest.approx(6 * _tp(N, "v2", "D"))

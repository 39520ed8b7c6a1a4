"""Significance tests, corrections and the ↑/↓ marks of the effectiveness summary, checked
against values computed by hand, scipy's t distribution and statsmodels (when installed) -
never against the code under test."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest

from mice_bench.effectiveness.stats import bonferroni, correct, holm, paired_ttest
from mice_bench.effectiveness.summary import (EffectivenessSummary, SummaryDataset,
                                              SummarySettings, summarize)

P = [0.01, 0.04, 0.03, 0.005]
# by hand: sorted 0.005, 0.01, 0.03, 0.04 -> 4*0.005=0.02, 3*0.01=0.03, 2*0.03=0.06,
# 1*0.04=0.04 -> running max 0.02, 0.03, 0.06, 0.06; back in input order:
HOLM = [0.03, 0.06, 0.06, 0.02]
BONF = [0.04, 0.16, 0.12, 0.02]


def test_holm_and_bonferroni_by_hand():
    assert holm(P) == pytest.approx(HOLM)
    assert bonferroni(P) == pytest.approx(BONF)
    assert correct("holm", P) == pytest.approx(HOLM)
    assert correct("bonferroni", P) == pytest.approx(BONF)
    assert correct("none", P) == pytest.approx(P)
    assert holm([0.6, 0.5]) == pytest.approx([1.0, 1.0])        # capped at 1
    got = holm([0.02, float("nan"), 0.01])                       # NaN: kept, not counted
    assert math.isnan(got[1]) and got[0] == pytest.approx(0.02) and got[2] == pytest.approx(0.02)


@pytest.mark.parametrize("method", ["holm", "bonferroni"])
def test_corrections_match_statsmodels(method):
    sm = pytest.importorskip("statsmodels.stats.multitest")
    rng = np.random.default_rng(1)
    for m in (2, 3, 7, 20):
        p = rng.uniform(0, 0.2, size=m)
        want = sm.multipletests(p, method=method)[1]
        assert correct(method, p.tolist()) == pytest.approx(want.tolist(), abs=1e-12)


def test_paired_ttest_by_hand():
    # d = [1, 2, 2, 3]: mean 2, sample sd sqrt(2/3), t = 2 / (sqrt(2/3) / 2) = 4.89898, df 3
    a, b = [1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 1.0, 1.0]
    from scipy.stats import t as student

    t = 2 / (math.sqrt(2 / 3) / 2)
    assert paired_ttest(a, b) == pytest.approx(2 * student.sf(t, 3), rel=1e-9)
    assert paired_ttest(a, a) == 1.0                                # no difference
    assert paired_ttest([1.0, 2.0], [0.0, 1.0]) == 0.0              # constant difference


@dataclass
class Rec:
    variant: str
    model: str | None
    dataset_name: str
    per_query: dict
    aggregates: dict
    file: str = ""


def _rec(variant, ds, values, model="m"):
    pq = {"nDCG@10": {f"q{i}": float(v) for i, v in enumerate(values)}}
    return Rec(variant, None if variant == "bm25" else model, ds, pq,
               {"nDCG@10": float(np.mean(values))})


def _family():
    """bm25 is the baseline; 'up' is clearly better on both datasets, 'down' clearly worse
    on d1 and a little better (not significantly) on d2."""
    rng = np.random.default_rng(0)
    base = {d: rng.uniform(0.3, 0.6, 30) for d in ("d1", "d2")}
    noise = lambda: rng.normal(0, 0.02, 30)   # noqa: E731
    recs = []
    for d in ("d1", "d2"):
        recs.append(_rec("bm25", d, base[d]))
        recs.append(_rec("up", d, base[d] + 0.1 + noise()))
        recs.append(_rec("down", d, base[d] - (0.1 if d == "d1" else -0.002) + noise()))
    datasets = [SummaryDataset("d1", None, "id", "bm25"), SummaryDataset("d2", None, "ood",
                                                                         "bm25")]
    return recs, datasets, base


@pytest.mark.parametrize("correction", ["holm", "bonferroni", "none"])
def test_marks_direction_and_correction_across_the_family(correction):
    from scipy import stats

    recs, datasets, _ = _family()
    s = summarize(recs, datasets, ["bm25", "up", "down"],
                  SummarySettings(baseline="bm25", correction=correction))
    assert s.comparisons == {"nDCG@10": 4}                 # 2 variants x 2 datasets
    raw = {}
    for v in ("up", "down"):
        for d in ("d1", "d2"):
            a = next(r for r in recs if r.variant == v and r.dataset_name == d)
            b = next(r for r in recs if r.variant == "bm25" and r.dataset_name == d)
            qs = sorted(b.per_query["nDCG@10"])
            x = [a.per_query["nDCG@10"][q] for q in qs]
            y = [b.per_query["nDCG@10"][q] for q in qs]
            raw[(v, d)] = stats.ttest_rel(x, y).pvalue
            c = s.cell(v, d, "nDCG@10")
            assert c.p == pytest.approx(raw[(v, d)], rel=1e-9)
            assert c.diff == pytest.approx(np.mean(np.subtract(x, y)))
    keys = list(raw)
    ps = [raw[k] for k in keys]
    if correction == "none":
        want = ps
    elif correction == "bonferroni":
        want = [min(1.0, 4 * p) for p in ps]
    else:   # Holm by hand over the 4 comparisons
        order = sorted(range(4), key=lambda i: ps[i])
        want, run = [0.0] * 4, 0.0
        for rank, i in enumerate(order):
            run = max(run, min(1.0, (4 - rank) * ps[i]))
            want[i] = run
    for k, w in zip(keys, want):
        assert s.cell(*k, "nDCG@10").p_corrected == pytest.approx(w, rel=1e-9)
    # direction: better -> ↑, worse -> ↓, not significant or the baseline -> no mark
    assert s.cell("up", "d1", "nDCG@10").mark == "↑"
    assert s.cell("up", "d2", "nDCG@10").mark == "↑"
    assert s.cell("down", "d1", "nDCG@10").mark == "↓"
    assert s.cell("bm25", "d1", "nDCG@10").mark == "" and s.cell("bm25", "d1", "nDCG@10").p is None
    for k, w in zip(keys, want):
        assert (s.cell(*k, "nDCG@10").mark != "") == (w < 0.05)


def test_a_borderline_p_is_marked_only_without_correction():
    """One comparison with 0.0125 < p < 0.05 among four: significant uncorrected, not after
    Bonferroni (p * 4 > 0.05) - a correction replaced by none would be caught here."""
    rng = np.random.default_rng(3)
    base = rng.uniform(0.3, 0.6, 40)
    for shift in np.linspace(0.003, 0.03, 200):
        x = base + shift + rng.normal(0, 0.05, 40)
        from scipy import stats

        p = stats.ttest_rel(x, base).pvalue
        if 0.0125 < p < 0.05:
            break
    else:  # pragma: no cover
        pytest.fail("no borderline sample found")
    recs = [_rec("bm25", "d1", base), _rec("v", "d1", x)]
    recs += [_rec("bm25", d, base) for d in ("d2", "d3", "d4")]
    recs += [_rec("v", d, base + rng.normal(0, 0.05, 40)) for d in ("d2", "d3", "d4")]
    ds = [SummaryDataset(d, None, "ood", "bm25") for d in ("d1", "d2", "d3", "d4")]
    mark = {c: summarize(recs, ds, ["bm25", "v"], SummarySettings(correction=c))
            .cell("v", "d1", "nDCG@10").mark for c in ("none", "bonferroni", "holm")}
    assert mark["none"] == "↑" and mark["bonferroni"] == ""


def test_seeds_mean_and_sample_std():
    recs = [_rec("bm25", "d1", [0.1, 0.2, 0.3]),
            _rec("v", "d1", [0.2, 0.4, 0.6], model="s1"),
            _rec("v", "d1", [0.4, 0.4, 0.4], model="s2")]
    s = summarize(recs, [SummaryDataset("d1", None, "ood", "bm25")], ["bm25", "v"],
                  SummarySettings())
    c = s.cell("v", "d1", "nDCG@10")
    assert s.row("v").models == ["s1", "s2"]
    assert c.mean == pytest.approx(0.4) and c.std == pytest.approx(0.0)
    # tested on the per-query mean over seeds: [0.3, 0.4, 0.5] vs [0.1, 0.2, 0.3] = +0.2 each
    assert c.diff == pytest.approx(0.2) and c.p == 0.0 and c.mark == "↑"


def test_summary_round_trip_and_averages():
    recs, datasets, base = _family()
    s = summarize(recs, datasets, ["bm25", "up", "down"], SummarySettings())
    assert EffectivenessSummary.from_dict(s.to_dict()) == s
    assert s.row("bm25").averages["id"]["nDCG@10"] == pytest.approx(base["d1"].mean())
    assert s.row("bm25").averages["ood"]["nDCG@10"] == pytest.approx(base["d2"].mean())
    assert [r.variant for r in s.rows] == ["bm25", "up", "down"]     # the given order


def test_paired_ttest_does_not_depend_on_query_order():
    """The degenerate-case checks look at all differences, not the first query's: the same
    per-query differences in any order give the same p (found by mutation testing)."""
    import itertools

    from mice_bench.effectiveness.stats import paired_ttest

    for d in ([1.9e-8, 1e-8, 1e-8], [0.3, 0.1, -0.2, 0.05], [0.0, 0.0, 2e-9]):
        ps = {paired_ttest(list(perm), [0.0] * len(perm)) for perm in
              itertools.permutations(d)}
        assert len({round(p, 12) for p in ps}) == 1, (d, ps)
    assert paired_ttest([0.0, 0.0, 2e-9], [0, 0, 0]) == 1.0      # float noise: no effect
    assert paired_ttest([0.2, 0.2, 0.2], [0.1, 0.1, 0.1]) == 0.0  # constant: certain effect

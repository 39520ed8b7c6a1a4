"""Significance tests, corrections and the ↑/↓ marks of the effectiveness summary, checked
against values computed by hand, scipy's t distribution and statsmodels (when installed) -
never against the code under test."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import pytest
from scipy import stats as sps

from mice_bench.evaluation import stats as E
from mice_bench.evaluation import stats as S
from mice_bench.evaluation.stats import bonferroni, correct, holm, paired_ttest
from mice_bench.evaluation.summary import (
    EffectivenessSummary,
    SummaryDataset,
    SummarySettings,
    summarize,
)

def holm_by_hand(ps: list[float]) -> list[float]:
    """Holm's step-down adjustment written out once for every test: sort, multiply the
    k-th smallest by (m - k), keep the running maximum, cap at 1, back in input order."""
    m = len(ps)
    order = sorted(range(m), key=lambda i: ps[i])
    out, run = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        run = max(run, min(1.0, (m - rank) * ps[i]))
        out[i] = run
    return out


P = [0.01, 0.04, 0.03, 0.005]
# by hand: sorted 0.005, 0.01, 0.03, 0.04 -> 4*0.005=0.02, 3*0.01=0.03, 2*0.03=0.06,
# 1*0.04=0.04 -> running max 0.02, 0.03, 0.06, 0.06; back in input order:
HOLM = [0.03, 0.06, 0.06, 0.02]
BONF = [0.04, 0.16, 0.12, 0.02]


def test_holm_and_bonferroni_by_hand():
    assert holm(P) == pytest.approx(HOLM) and holm_by_hand(P) == pytest.approx(HOLM)
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
    else:
        want = holm_by_hand(ps)
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

    from mice_bench.evaluation.stats import paired_ttest

    for d in ([1.9e-8, 1e-8, 1e-8], [0.3, 0.1, -0.2, 0.05], [0.0, 0.0, 2e-9]):
        ps = {paired_ttest(list(perm), [0.0] * len(perm)) for perm in
              itertools.permutations(d)}
        assert len({round(p, 12) for p in ps}) == 1, (d, ps)
    assert paired_ttest([0.0, 0.0, 2e-9], [0, 0, 0]) == 1.0      # float noise: no effect
    assert paired_ttest([0.2, 0.2, 0.2], [0.1, 0.1, 0.1]) == 0.0  # constant: certain effect


# ----------------------------------------------------------------------
# paired tests and corrections, value by value
NAN = float("nan")


def exact_sign_flip_p(d) -> float:
    """The exact two-sided sign-flip p over all 2^n sign vectors (ties count)."""
    d = [float(x) for x in d]
    obs = abs(sum(d))
    hits = sum(abs(sum(s * x for s, x in zip(signs, d))) >= obs - 1e-9
               for signs in itertools.product((-1, 1), repeat=len(d)))
    return hits / 2 ** len(d)


# =============================================================================== stats.py
def test_paired_samples_refused_with_both_shapes_in_the_message():
    with pytest.raises(ValueError) as e:
        S.paired_ttest([1.0, 2.0], [1.0, 2.0, 3.0])
    assert str(e.value) == "paired samples need equal 1-D shapes, got (2,) and (3,)"
    # equal shapes, but 2-D: refused as well (not silently flattened)
    with pytest.raises(ValueError, match=r"equal 1-D shapes, got \(1, 2\) and \(1, 2\)"):
        S.paired_randomization([[1.0, 2.0]], [[0.0, 1.0]])


def test_paired_ttest_two_queries_by_the_cauchy_closed_form():
    # d = (1, 3): mean 2, sd sqrt(2), se 1, t = 2 with 1 df (Cauchy): p = 1 - 2 atan(2) / pi
    assert S.paired_ttest([1.0, 3.0], [0.0, 0.0]) == pytest.approx(
        1 - 2 * math.atan(2.0) / math.pi, rel=1e-9)
    # integer input gives the same p as floats
    assert S.paired_ttest([1, 3], [0, 0]) == pytest.approx(1 - 2 * math.atan(2.0) / math.pi)


def test_paired_ttest_degenerate_cases():
    assert S.paired_ttest([], []) == 1.0                           # no query
    assert S.paired_ttest([0.5], [0.1]) == 1.0                     # one query: no test
    assert S.paired_ttest([0.3, 0.5, 0.7], [0.3, 0.5, 0.7]) == 1.0  # no difference
    assert S.paired_ttest([0.3, 0.5], [0.3 + 1e-9, 0.5 - 1e-9]) == 1.0   # float noise only
    assert S.paired_ttest([0.4, 0.6, 0.8], [0.3, 0.5, 0.7]) == 0.0  # constant, non-zero
    assert S.paired_ttest([0.3, 0.5, 0.7], [0.4, 0.6, 0.8]) == 0.0  # constant, negative


D5 = (0.3, 0.1, 0.2, -0.1, 0.25)          # exact sign-flip p: 6 / 32 (below)


def test_exact_enumeration_helper_by_hand():
    # D5 sums to 0.75; flipping a subset F gives 0.75 - 2 sum(F), which reaches |0.75| iff
    # sum(F) <= 0 or sum(F) >= 0.75: F = {}, {-0.1}, {0.1, -0.1} and their 3 complements
    assert exact_sign_flip_p(D5) == pytest.approx(6 / 32)
    assert exact_sign_flip_p((1, 1, 1, 1)) == pytest.approx(2 / 16)   # all + or all -


def test_paired_randomization_matches_exact_enumeration_both_directions():
    b = [0.5] * 5
    a = [0.5 + x for x in D5]
    exact = exact_sign_flip_p(D5)
    # 20 000 seeded flips: binomial sd sqrt(.1875 * .8125 / 20000) = 0.0028
    p_ab = S.paired_randomization(a, b, n_resamples=20_000, seed=11)
    p_ba = S.paired_randomization(b, a, n_resamples=20_000, seed=11)
    assert p_ab == pytest.approx(exact, abs=0.012)
    assert p_ba == pytest.approx(exact, abs=0.012)               # a worse system: same p
    # a constant difference of 1 on 4 queries: 2 of 16 sign vectors reach it (ties count)
    ones = S.paired_randomization([2.0, 3.0, 4.0, 5.0], [1.0, 2.0, 3.0, 4.0], seed=4)
    assert ones == pytest.approx(0.125, abs=0.012)
    # 2500 flips, not a multiple of any chunk size: still about the exact p
    p2500 = S.paired_randomization(a, b, n_resamples=2500, seed=2)
    assert p2500 == pytest.approx(exact, abs=0.025)
    assert p2500 * 2501 == pytest.approx(round(p2500 * 2501), abs=1e-6)   # (hits + 1) / 2501


def test_paired_randomization_p_formula_with_few_resamples():
    # d = (1, -1): mean 0, every sign vector reaches |mean| >= 0 -> hits = R, p = (R+1)/(R+1)
    assert S.paired_randomization([1.0, 0.0], [0.0, 1.0], n_resamples=7, seed=0) == 1.0
    assert S.paired_randomization([1.0, 0.0], [0.0, 1.0], n_resamples=1, seed=0) == 1.0
    # one flip of d = (1, 1, 1): p = (hits + 1) / 2 with hits 0 or 1 (never 0, never > 1)
    for seed in range(6):
        assert S.paired_randomization([1.0, 1.0, 1.0], [0.0, 0.0, 0.0], n_resamples=1,
                                      seed=seed) in (0.5, 1.0)
    # R = 7: p is k / 8 with k >= 1
    p7 = S.paired_randomization([0.5 + x for x in D5], [0.5] * 5, n_resamples=7, seed=3)
    assert p7 in {k / 8 for k in range(1, 9)}


def test_paired_randomization_no_difference_is_one():
    assert S.paired_randomization([], []) == 1.0
    assert S.paired_randomization([0.2, 0.4], [0.2, 0.4]) == 1.0
    assert S.paired_randomization([0.7], [0.2]) == 1.0            # one query: every flip ties


def test_paired_randomization_default_10000_resamples_and_seed_0():
    """docs/effectiveness.md: 10,000 resamples, seeded; p = (hits + 1) / 10 001."""
    a, b = [0.5 + x for x in D5], [0.5] * 5
    p = S.paired_randomization(a, b)
    assert p * 10_001 == pytest.approx(round(p * 10_001), abs=1e-6)
    assert p == pytest.approx(exact_sign_flip_p(D5), abs=0.015)
    assert p == S.paired_randomization(a, b, seed=0)
    assert p == S.paired_randomization(a, b, n_resamples=10_000, seed=0)
    # the seed matters (so the default seed is observable)
    assert p != S.paired_randomization(a, b, seed=1)
    assert S.paired_randomization(a, b, seed=1) == S.paired_randomization(a, b, seed=1)


def test_paired_test_dispatches_and_passes_the_seed():
    a, b = [0.5 + x for x in D5], [0.5] * 5
    assert S.paired_test("ttest", [1.0, 3.0], [0.0, 0.0]) == pytest.approx(
        1 - 2 * math.atan(2.0) / math.pi)
    assert S.paired_test("ttest", a, b) == pytest.approx(sps.ttest_rel(a, b).pvalue, rel=1e-12)
    p5 = S.paired_test("randomization", a, b, seed=5)
    assert p5 == S.paired_randomization(a, b, seed=5)
    assert p5 != S.paired_randomization(a, b, seed=0)           # seed 5, not the default
    assert p5 == pytest.approx(exact_sign_flip_p(D5), abs=0.015)
    assert S.paired_test("randomization", a, b) == S.paired_randomization(a, b, seed=0)


def test_unknown_test_and_correction_messages():
    with pytest.raises(ValueError) as e:
        S.paired_test("wilcoxon", [1.0, 2.0], [0.0, 1.0])
    assert str(e.value) == "unknown test 'wilcoxon'; valid: ttest, randomization"
    with pytest.raises(ValueError) as e:
        S.correct("bh", [0.1])
    assert str(e.value) == "unknown correction 'bh'; valid: holm, bonferroni, none"


def test_holm_by_hand_with_cap_ties_and_nan():
    # sorted 0.01, 0.02, 0.02, 0.3 (m = 4): 0.04, 0.06, max(0.06, 0.04), max(0.06, 0.3)
    assert S.holm([0.3, 0.02, 0.01, 0.02]) == pytest.approx([0.3, 0.06, 0.04, 0.06])
    # cap at 1: 2 * 0.6 = 1.2 -> 1, then max(1, 0.7) = 1
    assert S.holm([0.7, 0.6]) == pytest.approx([1.0, 1.0])
    h = S.correct("holm", [0.04, NAN, 0.01, 0.03])              # m = 3, NaN kept
    assert h[0] == pytest.approx(0.06) and math.isnan(h[1])
    assert h[2] == pytest.approx(0.03) and h[3] == pytest.approx(0.06)
    assert all(math.isnan(x) for x in S.holm([NAN, NAN])) and S.holm([]) == []


def test_a_missing_p_given_as_none_counts_as_nan():
    """None (a comparison without a p) is kept as NaN and not counted in m."""
    h = S.holm([0.01, None, 0.03])                               # m = 2: 0.02, max(.02, .03)
    assert h[0] == pytest.approx(0.02) and math.isnan(h[1]) and h[2] == pytest.approx(0.03)
    bo = S.bonferroni([0.01, None, 0.03])
    assert bo[0] == pytest.approx(0.02) and math.isnan(bo[1]) and bo[2] == pytest.approx(0.06)


def test_bonferroni_by_hand_nan_stays_a_float_nan():
    bo = S.correct("bonferroni", [0.04, NAN, 0.5, 0.001])        # m = 3
    assert bo[0] == pytest.approx(0.12) and bo[2] == 1.0 and bo[3] == pytest.approx(0.003)
    assert isinstance(bo[1], float) and math.isnan(bo[1])
    assert S.bonferroni([]) == []


@pytest.mark.parametrize("method", ["holm", "bonferroni"])
def test_corrections_match_statsmodels_with_ties(method):
    sm = pytest.importorskip("statsmodels.stats.multitest")
    p = [0.01, 0.04, 0.01, 0.2, 0.03, 0.04, 0.5]
    assert S.correct(method, p) == pytest.approx(sm.multipletests(p, method=method)[1].tolist())


def test_correct_none_returns_plain_floats():
    out = S.correct("none", np.array([0.2, 0.5]))
    assert out == [0.2, 0.5] and all(type(x) is float for x in out)


# ----------------------------------------------------------------------
# paired tests and corrections: shapes, scipy and exact enumeration
# ------------------------------------------------------------------- effectiveness/stats.py


def test_paired_samples_must_be_equal_1d():
    with pytest.raises(ValueError, match="equal 1-D shapes"):
        E.paired_ttest([1.0, 2.0], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="equal 1-D shapes"):
        E.paired_randomization([[1.0, 2.0]], [[0.0, 1.0]])


def test_paired_ttest_degenerate_and_scipy():
    from scipy.stats import ttest_rel

    assert E.paired_ttest([0.5], [0.1]) == 1.0                        # one query: no test
    assert E.paired_ttest([0.3, 0.5, 0.7], [0.3, 0.5, 0.7]) == 1.0    # no difference
    assert E.paired_ttest([0.4, 0.6, 0.8], [0.3, 0.5, 0.7]) == 0.0    # constant, non-zero
    a, b = [0.1, 0.9, 0.4, 0.7, 0.3], [0.2, 0.5, 0.45, 0.3, 0.1]
    assert E.paired_test("ttest", a, b) == pytest.approx(ttest_rel(a, b).pvalue, rel=1e-12)


def test_paired_randomization_against_exact_enumeration():
    """d = (1, 1, 1, 1): |mean(s d)| >= 1 only for the 2 constant sign vectors of 16, so the
    exact p is 1/8; 10 000 seeded flips land within 0.01 of it (binomial sd 0.0033)."""
    a, b = [1.0, 2.0, 3.0, 4.0], [0.0, 1.0, 2.0, 3.0]
    p = E.paired_randomization(a, b, seed=3)
    assert p == pytest.approx(0.125, abs=0.01)
    assert E.paired_test("randomization", a, b, seed=3) == p          # seed passed through
    assert E.paired_randomization(a, a) == 1.0 and E.paired_randomization([], []) == 1.0
    # d = (1, -1, 2, -2): mean 0, every sign vector reaches it: p = 1
    assert E.paired_randomization([1.0, 0.0, 2.0, 0.0], [0.0, 1.0, 0.0, 2.0]) == 1.0
    # few resamples: p = (hits + 1) / (R + 1) is never 0 and at most 1
    p7 = E.paired_randomization(a, b, n_resamples=7, seed=0)
    assert p7 in {k / 8 for k in range(1, 9)}


def test_unknown_test_and_correction_name_the_choices():
    with pytest.raises(ValueError, match="unknown test 'wilcoxon'; valid: ttest, randomization"):
        E.paired_test("wilcoxon", [1.0, 2.0], [0.0, 1.0])
    with pytest.raises(ValueError, match="unknown correction 'bh'; valid: holm, bonferroni, none"):
        E.correct("bh", [0.1])


def test_corrections_skip_nans_by_hand():
    nan = float("nan")
    h = E.correct("holm", [0.04, nan, 0.01, 0.03])
    # m = 3: sorted 0.01, 0.03, 0.04 -> 3*0.01, max(0.03, 2*0.03), max(0.06, 1*0.04)
    assert h[0] == pytest.approx(0.06) and math.isnan(h[1])
    assert h[2] == pytest.approx(0.03) and h[3] == pytest.approx(0.06)
    bo = E.correct("bonferroni", [0.04, nan, 0.5])                   # m = 2
    assert bo[0] == pytest.approx(0.08) and math.isnan(bo[1]) and bo[2] == 1.0
    assert all(math.isnan(x) for x in E.holm([nan, nan]))
    assert E.correct("none", [0.2, 0.5]) == [0.2, 0.5]
    assert E.holm([0.9, 0.6]) == [pytest.approx(1.0), pytest.approx(1.0)]   # capped at 1


def test_paired_randomization_partial_last_chunk_and_default_seed():
    """R = 2500 is not a multiple of the 2000-flip chunk: still 2500 flips in all (p near the
    exact 1/8, never the ~0.2 of 4000 hits counted over 2501); the default seed is 0."""
    a, b = [1.0, 2.0, 3.0, 4.0], [0.0, 1.0, 2.0, 3.0]
    assert E.paired_randomization(a, b, n_resamples=2500, seed=1) == pytest.approx(0.125,
                                                                                   abs=0.03)
    assert E.paired_randomization(a, b) == E.paired_randomization(a, b, seed=0)
    assert E.paired_test("randomization", a, b) == E.paired_randomization(a, b, seed=0)

"""Storage report: fidelity figures against hand-computed values and independent libraries."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest

from mice_bench.evaluation.fidelity import (MS_MARCO_PASSAGES, ms_marco_bytes,
                                               paired_difference, score_fidelity)
from mice_bench.effectiveness.storage import StorageRow, tradeoff_series


def naive_tau(a, b):
    """Kendall's tau-a by counting pairs (no ties in these inputs: equals tau-b)."""
    c = d = 0
    for i, j in itertools.combinations(range(len(a)), 2):
        s = (a[i] - a[j]) * (b[i] - b[j])
        c += s > 0
        d += s < 0
    return (c - d) / (len(a) * (len(a) - 1) / 2)


def test_score_fidelity_by_hand():
    ref = {"q1": {"a": 3.0, "b": 2.0, "c": 1.0}, "q2": {"a": 1.0, "b": 2.0, "c": 3.0, "d": 0.0}}
    other = {"q1": {"a": 3.0, "b": 1.0, "c": 2.0}, "q2": {"a": 1.1, "b": 2.0, "c": 3.0, "d": 0.0},
             "q3": {"x": 1.0, "y": 2.0}}
    f = score_fidelity(ref, other, k=2)
    # q1: pairs ab +, ac +, bc -  -> 1/3; q2: order kept -> 1
    assert f["queries"] == 2
    assert f["tau_mean"] == pytest.approx((1 / 3 + 1) / 2)
    assert f["tau_min"] == pytest.approx(1 / 3)
    assert f["tau_min"] == pytest.approx(naive_tau([3, 2, 1], [3, 1, 2]))
    # top-2: q1 {a, b} vs {a, c} -> 1/2; q2 {c, b} vs {c, b} -> 1
    assert f["top2_overlap"] == pytest.approx(0.75)
    # q1: |2 - 1| / (3 - 1) = 0.5; q2: 0.1 / 3
    assert f["max_err_over_spread"] == pytest.approx(0.5)
    assert f["median_err_over_spread"] == pytest.approx((0.5 + 0.1 / 3) / 2)


def test_score_fidelity_tau_matches_pair_counting_on_random_scores():
    g = np.random.default_rng(0)
    a = g.normal(size=30)
    b = a + g.normal(scale=0.5, size=30)
    ref = {"q": {f"d{i}": float(x) for i, x in enumerate(a)}}
    oth = {"q": {f"d{i}": float(x) for i, x in enumerate(b)}}
    assert score_fidelity(ref, oth)["tau_mean"] == pytest.approx(naive_tau(a, b))


def test_paired_difference_against_statsmodels_and_scipy():
    from scipy.stats import ttest_rel
    from statsmodels.stats.weightstats import DescrStatsW

    g = np.random.default_rng(1)
    ref = {f"q{i}": float(x) for i, x in enumerate(g.random(40))}
    oth = {q: v + float(g.normal(scale=0.05)) - 0.01 for q, v in ref.items()}
    oth["extra"] = 1.0                                      # only in one: ignored
    d = paired_difference(ref, oth)
    qs = sorted(ref)
    diffs = np.array([oth[q] - ref[q] for q in qs])
    assert d["queries"] == 40 and d["mean"] == pytest.approx(diffs.mean())
    lo, hi = DescrStatsW(diffs).tconfint_mean(alpha=0.05)
    assert d["ci95"] == pytest.approx([lo, hi])
    assert d["p"] == pytest.approx(ttest_rel([oth[q] for q in qs], [ref[q] for q in qs]).pvalue)


def test_paired_difference_of_identical_runs():
    d = paired_difference({"a": 0.5, "b": 0.2}, {"a": 0.5, "b": 0.2})
    assert d["mean"] == 0 and d["ci95"] == [0, 0] and d["p"] == 1.0


def test_ms_marco_bytes_by_hand():
    assert MS_MARCO_PASSAGES == 8_841_823
    assert ms_marco_bytes(100.0, 70.0, codec_bytes=5.0) == 100 * 70 * 8_841_823 + 5


def row(store, bpt, ndcg, dataset="dl19", variant="colbert"):
    return StorageRow(model="m", variant=variant, store=store, dataset=dataset, first_stage="bm25",
                      ndcg10=ndcg, bytes_per_doc=(bpt or 1) * 50, tokens_per_doc=50, created="",
                      file="", content="vectors", bytes_per_token=bpt)


def test_tradeoff_series_one_sorted_line_per_variant_and_dataset():
    rows = [row("fp32", 1537.0, 0.70), row("residual2", 99.0, 0.69), row("fp16", 769.0, 0.70),
            row("fp32", 1537.0, 0.30, dataset="nfcorpus"), row("int8", None, 0.5),
            dataclasses.replace(row("fp32", 1537.0, 0.1, variant="mice-l4+2"), random_head=True)]
    s = tradeoff_series(rows)
    assert list(s) == ["m colbert (vectors) dl19", "m colbert (vectors) nfcorpus"]
    assert s["m colbert (vectors) dl19"] == [(99.0, 0.69, "residual2"), (769.0, 0.70, "fp16"),
                                            (1537.0, 0.70, "fp32")]


def test_fidelity_rows_compare_pooled_stores_with_the_unpooled_fp32_and_size_ms_marco():
    from mice_bench.effectiveness.storage import fidelity_rows

    fp32 = dataclasses.replace(row("fp32", 1537.0, 0.70), per_query={"a": 0.7, "b": 0.7},
                               depth=100, tokens_per_doc=90, bytes_per_doc=1537.0 * 90)
    pooled = dataclasses.replace(
        row("residual2", None, 0.69), per_query={"a": 0.69, "b": 0.69}, depth=100,
        pool_factor=2, bytes_per_doc=100.0 * 46, tokens_per_doc=46, orig_tokens_per_doc=90,
        codec_bytes=4096 * 768.0 + 10, centroids=4096)
    other_depth = dataclasses.replace(fp32, depth=20, ndcg10=0.1, per_query={"a": 0, "b": 0})
    fp32_pooled = dataclasses.replace(fp32, pool_factor=2, per_query={"a": 0.5, "b": 0.5})
    out = {(f["row"].setting, f["row"].depth): f
           for f in fidelity_rows([fp32, fp32_pooled, pooled, other_depth])}
    assert out["fp32 pool 2", 100]["diff"]["mean"] == pytest.approx(-0.2)
    assert out["residual2 pool 2", 100]["diff"]["mean"] == pytest.approx(-0.01)
    # by hand: 4600 shard bytes / 90 original tokens per passage, x 90 x 8,841,823 passages,
    # + the codec grown to ColBERTv2's centroids for 90 / 2 x 8,841,823 stored tokens:
    # 16 x sqrt(397,882,035) = 319,150 -> 2^18 = 262,144 centroids of (4096 x 768 + 10) / 4096
    # bytes each
    want = 4600 / 90 * 90 * 8_841_823 + (4096 * 768 + 10) / 4096 * 262_144
    assert out["residual2 pool 2", 100]["ms_marco_gib"] == pytest.approx(want / 2**30)


def test_top_k_overlap_of_fewer_candidates_than_k_by_hand():
    from mice_bench.evaluation.fidelity import score_fidelity

    ref = {"q": {"a": 4.0, "b": 3.0, "c": 2.0, "d": 1.0}}
    rev = {"q": {"a": 1.0, "b": 2.0, "c": 3.0, "d": 4.0}}
    # 4 candidates: the top 10 of each is all 4, the same set, whatever the order
    assert score_fidelity(ref, rev)["top10_overlap"] == 1.0
    # top 2: {a, b} against {d, c}; top 3: {a, b, c} against {d, c, b}
    assert score_fidelity(ref, rev, k=2)["top2_overlap"] == 0.0
    assert score_fidelity(ref, rev, k=3)["top3_overlap"] == pytest.approx(2 / 3)
    assert score_fidelity(ref, rev)["tau_mean"] == pytest.approx(-1.0)


def test_error_is_relative_to_the_reference_spread_by_hand():
    from mice_bench.evaluation.fidelity import score_fidelity

    ref = {"q1": {"a": 0.0, "b": 10.0, "c": 5.0}, "q2": {"a": 0.0, "b": 2.0}}
    other = {"q1": {"a": 1.0, "b": 10.0, "c": 5.0}, "q2": {"a": 0.0, "b": 1.5}}
    f = score_fidelity(ref, other)
    # q1: largest |diff| 1 over the fp32 spread 10 (not the other's 9); q2: 0.5 / 2
    assert f["max_err_over_spread"] == pytest.approx(0.25)
    assert f["median_err_over_spread"] == pytest.approx((0.1 + 0.25) / 2)


def test_ms_marco_size_uses_the_mean_passage_length_of_dl19_and_dl20_only():
    from mice_bench.effectiveness.storage import fidelity_rows

    def r(dataset, store, tokens, bpt):
        return StorageRow(model="m", variant="colbert", store=store, dataset=dataset,
                          first_stage="bm25", ndcg10=0.5, bytes_per_doc=bpt * tokens,
                          tokens_per_doc=tokens, created="", file="", content="vectors",
                          bytes_per_token=bpt, codec_bytes=1024.0 if store != "fp32" else 0.0)

    rows = [r("dl19", "fp32", 70.0, 512.0), r("dl20", "fp32", 80.0, 512.0),
            r("scifact", "fp32", 300.0, 512.0), r("dl19", "residual2", 75.0, 40.0)]
    gib = {(f["row"].dataset, f["row"].store): f["ms_marco_gib"] for f in fidelity_rows(rows)}
    # mean passage length over the DL19 and DL20 rows: (70 + 80 + 75) / 3 = 75 tokens
    # (SciFact's 300 left out)
    assert gib[("dl19", "fp32")] == pytest.approx(512 * 75 * 8_841_823 / 2**30)
    assert gib[("scifact", "fp32")] == pytest.approx(512 * 75 * 8_841_823 / 2**30)
    assert gib[("dl19", "residual2")] == pytest.approx((40 * 75 * 8_841_823 + 1024) / 2**30)

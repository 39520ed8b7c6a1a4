"""Tests written to kill mutants that survived ``scripts/mutation.sh`` (docs/testing.md,
*Mutation testing*). Every expected value is computed by hand here (or by scipy), never by
the code under test: the latency row math (``latency/stats.py``, ``latency/rows.py``) driven
with fakes, so each field of a row is checked against its definition."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

from mice_bench.latency import flops as flopsmod
from mice_bench.latency.config import LatencyConfig
from mice_bench.latency.result import LatencyRowResult, RowPoint
from mice_bench.latency.rows import add_speedups, make_row
from mice_bench.latency.scheduler import Slot
from mice_bench.latency.stats import STAT_KEYS, speedup, summarize, throughput
from mice_bench.latency.workloads import SweepPoint


# ----------------------------------------------------------------------- latency/stats.py
def test_summarize_empty_has_every_key_nan_and_count_zero():
    s = summarize([])
    assert sorted(s) == sorted(STAT_KEYS) == sorted(
        ["mean", "std", "p50", "p90", "p99", "min", "max", "count"])
    assert s["count"] == 0
    assert all(math.isnan(s[k]) for k in STAT_KEYS if k != "count")


def test_summarize_two_values_uses_the_sample_std():
    # [1, 3]: mean 2, sample std sqrt(((1-2)^2 + (3-2)^2) / 1) = sqrt(2); p90 = 1 + 0.9 * 2
    s = summarize([1.0, 3.0])
    assert s["std"] == pytest.approx(math.sqrt(2.0), rel=1e-12)
    assert s["p90"] == pytest.approx(2.8, rel=1e-12)
    assert s["count"] == 2 and s["min"] == 1.0 and s["max"] == 3.0


@pytest.mark.parametrize("mean_s", [float("inf"), -1.0, 0.0, float("nan")])
def test_throughput_is_nan_when_undefined(mean_s):
    assert math.isnan(throughput(8, mean_s))


def test_throughput_and_speedup_known_answers():
    assert throughput(8, 0.4) == pytest.approx(20.0, rel=1e-12)
    assert speedup(0.4, 0.1) == pytest.approx(4.0, rel=1e-12)
    assert speedup(0.4, 0.0) is None and speedup(None, 0.1) is None
    assert speedup(0.4, float("inf")) is None


# ------------------------------------------------------------------ latency/rows.py make_row
class _Spec:
    layout = "joint"

    def __str__(self):
        return "mice-l4+3"

    def description(self):
        return "a description"


class _BB:
    max_positions = 64

    def param_count(self, spec):
        return 1234


def _wl(**kw):
    base = dict(pairs_per_run=8, precompute=False, kv_cache=False, split=True,
                doc_vectors=False, offline={"doc_states": "none"})
    base.update(kw)
    return SimpleNamespace(**base)


def _slot(ex, wl, total, notes=()):
    s = Slot(spec=_Spec(), ex=ex, wl=wl, batch=4, halvings=1, notes=list(notes),
             memory={"peak_mb": 12.0})
    for t in total:
        s.record(t, {"tokenize": 0.0, "doc_encode": 0.0, "query_encode": 0.0,
                     "interaction": t}, t + 0.01)
    return s


@pytest.fixture
def fake_flops(monkeypatch):
    calls = []

    def pair_flops(spec, dims, qlen, dlen, **kw):
        calls.append(((qlen, dlen), kw))
        return {"per_pair": 1500.0}

    monkeypatch.setattr(flopsmod, "pair_flops", pair_flops)
    return calls


def test_make_row_rerank_every_field(fake_flops):
    """Rerank protocol: FLOPs per pair amortised over the run's 8 pairs of one query, the
    depth recorded, compile failure noted, joint executor's missing precompute noted."""
    c = LatencyConfig(protocol="rerank", depth=100, compile=True, kv_cache=True)
    ex = SimpleNamespace(kind="fast", _mb_compile={"failed": ["layers", "heads"]})
    wl = _wl(precompute=False, kv_cache=True, split=False)
    slot = _slot(ex, wl, [0.2, 0.4], notes=["from the scheduler"])
    logs = []
    row = make_row(c, slot, _BB(), "DIMS", {"flops_per_s": 80_000.0},
                   SweepPoint(batch_size=8, doc_tokens=100, precompute=True), 5,
                   log=logs.append)
    assert fake_flops == [((5, 100), {"precompute": False, "kv_cache": True,
                                       "pairs_per_query": 8, "doc_vectors": False})]
    assert row.variant == "mice-l4+3" and row.description == "a description"
    assert row.layout == "joint" and row.executor == "fast"
    assert row.compiled is False
    assert row.point == RowPoint(batch_size=4, batch_size_requested=8, doc_tokens=100,
                                 doc_tokens_effective=100, query_tokens=5, depth=100,
                                 precompute=True, kv_cache=True)
    assert row.precompute_applied is False and row.kv_cache_applied is True
    assert row.oom_halvings == 1 and row.pairs_per_run == 8 and row.params == 1234
    assert row.latency_s["mean"] == pytest.approx(0.3) and row.latency_s["count"] == 2
    assert row.phases_s["interaction"]["mean"] == pytest.approx(0.3)
    assert row.throughput_pairs_per_s == pytest.approx(8 / 0.3)
    assert row.flops == {"per_pair": 1500.0}
    assert row.achieved_flops_per_s == pytest.approx(1500.0 * 8 / 0.3)       # 40 000
    assert row.peak_fraction == pytest.approx(0.5)
    assert row.memory == {"peak_mb": 12.0} and row.offline == {"doc_states": "none"}
    assert row.raw_s["total"] == [0.2, 0.4] and row.raw_s["wall"] == pytest.approx([0.21, 0.41])
    assert row.raw_s["interaction"] == [0.2, 0.4]
    assert row.notes == [
        "from the scheduler",
        "torch.compile failed for layers, heads: ran eager",
        "no document precompute for this executor (joint/reference): "
        "documents are encoded inside every run"]
    assert row.speedup_vs_ce is None                      # filled in by add_speedups only
    assert len(logs) == 1 and "300.00 ms/run" in logs[0] and "(2 runs)" in logs[0]


def test_make_row_paper_protocol_truncation_and_compiled(fake_flops):
    """Paper protocol: one pair per query, no depth, documents truncated to the positions
    left after ``[CLS] q [SEP] ... [SEP]`` (64 - 3 - 5 = 56), a successful compile."""
    c = LatencyConfig(protocol="paper", depth=100, compile=True, kv_cache=False)
    ex = SimpleNamespace(kind="fast", _mb_compile={"failed": []})
    wl = _wl(precompute=True, kv_cache=False, split=True, pairs_per_run=4, doc_vectors=True)
    row = make_row(c, _slot(ex, wl, [0.1, 0.1, 0.1]), _BB(), None, {"flops_per_s": 0.0},
                   SweepPoint(batch_size=4, doc_tokens=100, precompute=True), 5)
    assert fake_flops == [((5, 56), {"precompute": True, "kv_cache": False,
                                      "pairs_per_query": 1, "doc_vectors": True})]
    assert row.point.depth is None and row.point.doc_tokens_effective == 56
    assert row.point.doc_tokens == 100 and row.point.kv_cache is False
    assert row.compiled is True
    assert row.peak_fraction is None                                  # no peak known
    assert row.achieved_flops_per_s == pytest.approx(1500.0 * 4 / 0.1)
    assert row.notes == ["documents truncated to 56 tokens to fit 64 positions "
                         "(as in the seed)",
                         "documents precomputed as the head's projected unit vectors (a "
                         "ColBERT index): the document projection is offline"]


def test_make_row_no_compile_no_kind_zero_time(fake_flops):
    """Not compiled (a stale compile state is ignored), an executor without ``kind``, and a
    zero mean time: achieved FLOP/s is NaN, not a division error."""
    c = LatencyConfig(protocol="rerank", depth=10, compile=False)
    ex = SimpleNamespace(_mb_compile={"failed": ["layers"]})
    row = make_row(c, _slot(ex, _wl(), [0.0]), _BB(), None, {"flops_per_s": 1e9},
                   SweepPoint(batch_size=8, doc_tokens=16, precompute=False), 4)
    assert row.compiled is False and row.executor == "?"
    assert row.notes == []
    assert math.isnan(row.achieved_flops_per_s)
    assert math.isnan(row.throughput_pairs_per_s)


def test_make_row_compile_without_state_counts_as_compiled(fake_flops):
    c = LatencyConfig(protocol="rerank", depth=10, compile=True)
    row = make_row(c, _slot(SimpleNamespace(kind="reference"), _wl(), [0.5]), _BB(), None,
                   {"flops_per_s": 1e9}, SweepPoint(8, 16, False), 4)
    assert row.compiled is True and row.notes == []


# ---------------------------------------------------------------- latency/rows.py add_speedups
def _row(v, bs, doc, pairs, mean, flops):
    return LatencyRowResult(variant=v, point=RowPoint(bs, bs, doc, doc, 5, None, False, False),
                            latency_s={"mean": mean}, pairs_per_run=pairs,
                            throughput_pairs_per_s=float("nan"), flops=flops)


def test_add_speedups_groups_without_ce_and_undefined_values():
    """A row whose point has no ``ce`` is skipped (later rows still get theirs); a ``ce``
    whose mean is NaN gives no speedup; missing FLOPs give no FLOP ratio; sub-1 FLOPs per
    pair still divide."""
    rows = [_row("colbert", 16, 64, 16, 0.1, {"per_pair": 10.0}),       # no ce at (16, 64)
            _row("ce", 8, 64, 8, 0.8, {"per_pair": 1.0}),
            _row("mice", 8, 64, 8, 0.2, {"per_pair": 0.5}),
            _row("bi", 8, 64, 8, 0.1, {}),
            _row("ce", 8, 128, 8, float("nan"), {"per_pair": 4.0}),
            _row("mice", 8, 128, 8, 0.2, {"per_pair": 2.0})]
    add_speedups(rows)
    assert rows[0].speedup_vs_ce is None and rows[0].flop_ratio_vs_ce is None
    assert rows[2].speedup_vs_ce == pytest.approx(4.0)       # (0.8 / 8) / (0.2 / 8)
    assert rows[2].flop_ratio_vs_ce == pytest.approx(2.0)    # 1.0 / 0.5
    assert rows[3].speedup_vs_ce == pytest.approx(8.0) and rows[3].flop_ratio_vs_ce is None
    assert rows[5].speedup_vs_ce is None                     # ce time undefined
    assert rows[5].flop_ratio_vs_ce == pytest.approx(2.0)


# ------------------------------------------------------------------- effectiveness/stats.py
from mice_bench.effectiveness import stats as E  # noqa: E402


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

"""Latency with documents read from a compressed store: decoding is inside the timed run."""

from __future__ import annotations

import time

import pytest
import torch

from mice_bench.errors import UsageError
from mice_bench.latency.config import LatencyConfig
from mice_bench.latency.timing import PhaseTimer
from mice_bench.latency.workloads import Workload

pytest.importorskip("faiss", reason="residual stores need faiss-cpu (the storage extra)")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from mice_bench.latency.testing import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "model", num_layers=4)


@pytest.fixture(scope="module")
def executors(tiny_model):
    from mice_bench.backbone import load_backbone
    from mice_bench.executors import make_executor

    bb = load_backbone(tiny_model, device="cpu", dtype="fp32", seed=0)
    return {v: make_executor(v, bb) for v in ("colbert", "mice-l2+2")}


DOCS = [" ".join(f"w{(i * 7 + j) % 50}" for j in range(12 + i % 5)) for i in range(8)]


def one_run(wl: Workload) -> tuple[float, dict]:
    t = PhaseTimer("cpu")
    t.start()
    wl.run(t)
    total, phases, _ = t.stop()
    return total, phases


@pytest.mark.parametrize("variant", ["colbert", "mice-l2+2"])
def test_decoding_a_slow_store_is_counted_by_the_timer(executors, monkeypatch, variant):
    """A decoder made slow on purpose (50 ms a call) adds 50 ms per batch to the run."""
    from mice_bench.store import codecs

    ex = executors[variant]
    wl = Workload(ex, "rerank", 4, "w1 w2 w3", DOCS, precompute=True, kv_cache=False,
                  doc_store="residual2")
    wl.prepare(torch.device("cpu"))
    assert wl.ds is None and wl.packed is not None
    assert wl.offline["doc_store"] == "residual2" and wl.offline["doc_store_mb"] > 0
    fast_total, fast = one_run(wl)
    real = codecs.ResidualCodec.decode

    def slow(self, *a, **kw):
        time.sleep(0.05)
        return real(self, *a, **kw)

    monkeypatch.setattr(codecs.ResidualCodec, "decode", slow)
    total, phases = one_run(wl)
    batches = 2                                          # 8 documents in batches of 4
    assert phases["doc_encode"] >= 0.05 * batches
    assert total >= fast_total + 0.05 * batches - 0.02
    # documents held as encoded (no store): nothing decoded, nothing in doc_encode
    plain = Workload(ex, "rerank", 4, "w1 w2 w3", DOCS, precompute=True, kv_cache=False)
    plain.prepare(torch.device("cpu"))
    assert one_run(plain)[1]["doc_encode"] < 0.05


def test_store_documents_score_like_the_states_they_compress(executors):
    ex = executors["mice-l2+2"]
    qs = ex.encode_queries(["w1 w2 w3"])
    scores = {}
    for store in (None, "fp32", "fp16"):
        wl = Workload(ex, "rerank", 8, "w1 w2 w3", DOCS, precompute=True, kv_cache=False,
                      doc_store=store)
        wl.prepare(torch.device("cpu"))
        ds = wl.ds if store is None else wl.packed.decode(0, len(DOCS))
        idx = torch.arange(len(DOCS))
        scores[store] = ex.score_states(qs, torch.zeros(len(DOCS), dtype=torch.long), ds, idx)
    assert torch.allclose(scores["fp32"], scores[None], atol=1e-5)
    assert torch.allclose(scores["fp16"], scores[None], atol=1e-2)


def test_run_latency_records_the_store(tiny_model):
    from mice_bench.latency import runner as R

    cfg = LatencyConfig(model=tiny_model, variants=["colbert"], batch_sizes=[2],
                        doc_tokens=[16], query_tokens=4, depth=4, warmup=0, runs=2,
                        min_seconds=0, threads=1, doc_store="residual1")
    doc = R.run_latency(cfg).to_doc()
    (row,) = doc["rows"]
    assert row["offline"]["doc_store"] == "residual1"
    assert any("residual1 store" in n for n in row["notes"])


def test_pool_factors_are_rows_of_one_interleaved_run(tiny_model):
    """--pool-factor 1,2: each store-reading split-first variant once per factor, in the
    same round; the pooled row keeps fewer document tokens (each document's words halved,
    rounded up, its special tokens kept) and says so; ce has no store: one row."""
    from mice_bench.latency import runner as R
    from mice_bench.store.pooling import pooled_count

    cfg = LatencyConfig(model=tiny_model, variants=["ce", "mice-l2+2"], batch_sizes=[2],
                        doc_tokens=[16], query_tokens=4, depth=4, warmup=0, runs=2,
                        min_seconds=0, threads=1, doc_store="fp32", pool_factors=[1, 2])
    doc = R.run_latency(cfg).to_doc()
    rows = [r for r in doc["rows"] if r["variant"] == "mice-l2+2"]
    assert [r["variant"] for r in doc["rows"]].count("ce") == 1
    assert [r["offline"]["pool_factor"] for r in rows] == [1, 2]
    one, two = rows
    n = one["offline"]["doc_tokens_original"]
    assert one["offline"]["doc_tokens_stored"] == n == two["offline"]["doc_tokens_original"]
    docs = one["offline"]["docs"]
    per = n // docs                          # the workload's documents are of one length
    assert two["offline"]["doc_tokens_stored"] == docs * pooled_count(per - 1, 2, special=1)
    assert any("pool factor 2" in x for x in two["notes"])


@pytest.mark.parametrize("kw,needle", [
    (dict(doc_store="int4"), "--doc-store"),
    (dict(doc_store="residual2", precompute=False), "--precompute"),
    (dict(doc_store="residual2", kv_cache=True), "--kv-cache"),
    (dict(pool_factors=[1, 2]), "--doc-store"),
    (dict(doc_store="fp16", pool_factors=[0]), "--pool-factor"),
])
def test_bad_store_options_are_refused(kw, needle):
    with pytest.raises(UsageError, match=needle):
        LatencyConfig(**kw).resolved()

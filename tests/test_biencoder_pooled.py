"""A bi-encoder's documents stored as one pooled, normalised vector each: the executor scores
them by a dot product with the query's pooled vector, equal to the cosine of the full-state
path; the latency tool's rerank protocol pools documents once, offline, and its timed runs
never pool a document; ``--doc-store`` formats apply to the pooled vectors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from conftest import DOCS, QUERIES

from mice_bench.executors import DocStates, make_executor
from mice_bench.latency.timing import PhaseTimer
from mice_bench.latency.workloads import Workload


def _by_hand(ds: DocStates) -> torch.Tensor:
    """Mean over each document's valid tokens, then unit length (sentence-transformers'
    mean pooling and ``Normalize``), written here from the definition."""
    out = []
    for i in range(ds.hidden.shape[0]):
        n = int(ds.mask[i].sum())
        v = ds.hidden[i, :n].double().mean(0)
        out.append((v / v.norm()).float())
    return torch.stack(out)


def _pooled_matches_full_states(ex):
    ds = ex.encode_documents(DOCS, vectors=False)
    dv = ex.encode_documents(DOCS, vectors=True, batch_size=3)
    assert dv.vectors and not ds.vectors
    assert dv.hidden.shape == (len(DOCS), 1, ds.hidden.shape[-1])
    assert torch.allclose(dv.hidden[:, 0], _by_hand(ds), atol=1e-6)
    for q in QUERIES:
        qs = ex.encode_queries([q])
        full = ex.score_query(qs, ds)
        pooled = ex.score_query(qs, dv, batch_size=2)
        assert torch.allclose(pooled, full, atol=1e-5), q
        # and the cosine of the two mean-pooled parts, by hand
        qv = _by_hand(DocStates(qs.hidden, qs.mask, qs.seg))[0]
        want = torch.stack([F.cosine_similarity(qv, v, dim=0) for v in _by_hand(ds)])
        assert torch.allclose(pooled, want, atol=1e-5), q
    # aligned pairs of several queries read the same vectors
    qs = ex.encode_queries(QUERIES)
    qi = torch.tensor([0, 1, 2, 3, 1])
    di = torch.tensor([3, 2, 1, 0, 0])
    assert torch.allclose(ex.score_states(qs, qi, dv, di), ex.score_states(qs, qi, ds, di),
                          atol=1e-5)


def test_pooled_vectors_score_as_the_full_states_random_weights(tiny_bb):
    _pooled_matches_full_states(make_executor("biencoder", tiny_bb, "fast"))


@pytest.mark.slow
def test_pooled_vectors_score_as_the_full_states_minilm(minilm_path):
    from mice_bench.backbone import load_backbone

    bb = load_backbone(minilm_path, device="cpu", dtype="fp32")
    _pooled_matches_full_states(make_executor("biencoder", bb, "fast"))


def test_a_mean_cos_head_refuses_token_vectors(tiny_bb):
    ex = make_executor("biencoder", tiny_bb, "fast")
    qs = ex.encode_queries(QUERIES[:1])
    ds = ex.encode_documents(DOCS[:2], vectors=False)
    with pytest.raises(ValueError, match="one pooled vector per document"):
        ex.head(qs.hidden, qs.mask, ds.hidden, ds.mask, d_vectors=True)


# --------------------------------------------------------------------------- latency
@pytest.fixture(scope="module")
def bienc(tiny_bb):
    return make_executor("biencoder", tiny_bb, "fast")


LAT_DOCS = [" ".join(f"w{(i * 7 + j) % 50}" for j in range(12 + i % 5)) for i in range(10)]


def _pool_calls(monkeypatch):
    """Every call of the pooling function (wherever the executors bound it): input shapes."""
    from mice_bench.executors import base, fast, heads

    calls: list[tuple[int, ...]] = []
    real = heads.pool

    def counting(x, mask, *a, **kw):
        calls.append(tuple(x.shape))
        return real(x, mask, *a, **kw)

    for mod in (heads, base, fast):
        monkeypatch.setattr(mod, "pool", counting)
    return calls


def _run(wl: Workload) -> dict:
    t = PhaseTimer("cpu")
    t.start()
    wl.run(t)
    return t.stop()[1]


def test_latency_pools_documents_offline_only(bienc, monkeypatch):
    """The timed run pools the query (one row per batch) and never a document: the documents'
    pooling happened once, in ``prepare``. With ``--no-doc-vectors`` every batch pools its
    documents again (what the counter must see)."""
    qlen = bienc.encode_queries(["w1 w2 w3"]).hidden.shape[1]
    calls = _pool_calls(monkeypatch)
    wl = Workload(bienc, "rerank", 4, "w1 w2 w3", LAT_DOCS, precompute=True, kv_cache=False)
    wl.prepare(torch.device("cpu"))
    assert wl.doc_vectors and wl.doc_content == "pooled"
    assert wl.offline["doc_content"] == "pooled"
    assert wl.ds.vectors and wl.ds.hidden.shape[:2] == (len(LAT_DOCS), 1)
    assert [c[0] for c in calls] == [4, 4, 2]           # offline: every document, once
    calls.clear()
    _run(wl)
    assert len(calls) == 3 and all(c[:2] == (1, qlen) for c in calls), calls   # the query

    states = Workload(bienc, "rerank", 4, "w1 w2 w3", LAT_DOCS, precompute=True,
                      kv_cache=False, doc_vectors=False)
    states.prepare(torch.device("cpu"))
    assert not states.doc_vectors and states.offline["doc_content"] == "states"
    calls.clear()
    _run(states)
    assert sum(c[1] != qlen for c in calls) == 3, calls  # each batch's documents pooled


@pytest.mark.parametrize("fmt,tol", [("fp32", 1e-6), ("fp16", 2e-3), ("int8", 2e-2)])
def test_latency_doc_store_holds_pooled_vectors(bienc, fmt, tol):
    """``--doc-store`` compresses the pooled vectors (one row per document); the decoded
    batches are head vectors, scored as the in-memory ones within the format's precision."""
    wl = Workload(bienc, "rerank", 4, "w1 w2 w3", LAT_DOCS, precompute=True, kv_cache=False,
                  doc_store=fmt)
    wl.prepare(torch.device("cpu"))
    assert wl.packed is not None and wl.packed.content == "pooled"
    assert wl.packed.lengths.tolist() == [1] * len(LAT_DOCS)
    H = bienc.backbone.hidden_size
    assert wl.packed.nbytes <= len(LAT_DOCS) * (H * 4 + 8)
    dec = wl.packed.decode(0, len(LAT_DOCS))
    assert dec.vectors and dec.hidden.shape == (len(LAT_DOCS), 1, H)
    qs = bienc.encode_queries(["w1 w2 w3"])
    ref = bienc.score_query(qs, bienc.encode_documents(LAT_DOCS))
    got = bienc.score_query(qs, dec)
    assert torch.allclose(got, ref, atol=tol), (got - ref).abs().max()
    phases = _run(wl)
    assert phases["doc_encode"] > 0                     # decoding is inside the timed run


def test_latency_residual_store_of_pooled_vectors(bienc):
    pytest.importorskip("faiss", reason="residual stores need faiss-cpu (the storage extra)")
    wl = Workload(bienc, "rerank", 4, "w1 w2 w3", LAT_DOCS, precompute=True, kv_cache=False,
                  doc_store="residual4")
    wl.prepare(torch.device("cpu"))
    dec = wl.packed.decode(0, len(LAT_DOCS))
    assert dec.vectors and dec.hidden.shape[:2] == (len(LAT_DOCS), 1)
    norms = dec.hidden.float().norm(dim=-1)               # decoded vectors normalised again
    assert torch.allclose(norms, torch.ones_like(norms), atol=2e-3)
    _run(wl)


def test_latency_row_says_pooled(tiny_bb, tmp_path):
    from mice_bench.latency import runner as R
    from mice_bench.latency.config import LatencyConfig
    from mice_bench.latency.records import records
    from mice_bench.latency.testing import make_tiny_model

    model = make_tiny_model(tmp_path / "m", num_layers=2)
    cfg = LatencyConfig(model=str(model), variants=["biencoder", "colbert"], batch_sizes=[2],
                        doc_tokens=[8], query_tokens=4, depth=4, warmup=0, runs=2,
                        min_seconds=0, threads=1, schedule="sequential")
    res = R.run_latency(cfg)
    doc = res.to_doc()
    bi, col = doc["rows"]
    assert bi["offline"]["doc_content"] == "pooled" and bi["flops"]["doc_vectors"]
    assert bi["flops"]["doc_content"] == "pooled" and col["flops"]["doc_content"] == "vectors"
    assert any("pooled, normalised vectors" in n for n in bi["notes"])
    _, rows = records(res, "lat.json")
    assert [r.doc_content for r in rows] == ["pooled", "vectors"]
    from mice_bench.latency.table import all_rows_table, by_group

    (group, grows), = by_group(rows).items()
    md = all_rows_table(group, grows).markdown()
    line = next(x for x in md.splitlines() if "| biencoder " in x)
    assert "| pooled |" in line and "| vectors |" in next(
        x for x in md.splitlines() if "| colbert " in x)


def test_flops_of_pooled_documents():
    """Stored pooled vectors: the row says so; the online count is the head's (the mean-cos
    head's count already leaves the document pooling out), whatever the documents hold."""
    from mice_bench.latency import flops as FL
    from mice_bench.spec import parse

    dims = FL.ModelDims(num_layers=12, hidden_size=384, intermediate_size=1536)
    a = FL.pair_flops(parse("biencoder"), dims, 32, 256, pairs_per_query=32)
    b = FL.pair_flops(parse("biencoder"), dims, 32, 256, pairs_per_query=32, doc_vectors=True)
    assert (a["doc_vectors"], a["doc_content"]) == (False, "states")
    assert (b["doc_vectors"], b["doc_content"]) == (True, "pooled")
    assert a["per_pair"] == b["per_pair"] and b["interaction_per_pair"] == 0
    c = FL.pair_flops(parse("biencoder"), dims, 32, 256, precompute=False, doc_vectors=True)
    assert c["doc_content"] == "states"

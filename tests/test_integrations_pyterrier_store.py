"""The PyTerrier document store keeps what the variant's scoring reads: one pooled, normalised
vector per document for ``biencoder`` (one vector's bytes), head vectors for ``colbert``."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

pytest.importorskip("pyterrier", reason='pip install "mice-bench[pyterrier]"')

from conftest import DOCS, QUERIES  # noqa: E402

from mice_bench.integrations.pyterrier import (MiceDocStates, MiceReranker,  # noqa: E402
                                               MiceStoreReranker)

MANY = [f"{d} number {i}" for i in range(16) for d in DOCS]


def _docs(texts) -> pd.DataFrame:
    return pd.DataFrame({"docno": [f"d{i}" for i in range(len(texts))], "text": texts})


def _pairs(texts) -> pd.DataFrame:
    rows = [{"qid": f"q{qi}", "query": q, "docno": f"d{di}", "text": d}
            for qi, q in enumerate(QUERIES) for di, d in enumerate(texts)]
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def bienc():
    from mice_bench import Reranker

    return Reranker.from_pretrained("minilm-l6", variant="biencoder")


@pytest.mark.parametrize("fmt,width", [("fp16", 2), ("fp32", 4)])
def test_biencoder_store_holds_one_vector_per_document(bienc, tmp_path, fmt, width):
    states = MiceDocStates(bienc, tmp_path / fmt, store=fmt, doc_batch_size=16)
    states.index(_docs(MANY))
    use = states.store.usage()
    H = bienc.model.backbone.hidden_size
    assert use["content"] == "pooled" and use["docs"] == len(MANY)
    assert use["tokens_per_doc"] == 1
    # one H-dim vector a document, plus its segment id, length and the shard's framing
    assert H * width <= use["bytes_per_doc"] <= H * width + 128, use
    loaded = states.store.load(["d0", "d5"])
    assert loaded.vectors and loaded.hidden.shape == (2, 1, H)
    norms = loaded.hidden.float().norm(dim=-1)
    assert torch.allclose(norms, torch.ones_like(norms), atol=1e-3)


def test_biencoder_store_scores_as_the_full_states(bienc, tmp_path):
    """Re-ranking from the stored pooled vectors gives the scores of the texts' own forward
    (mean pooling of the full states, cosine) within 1e-5 (fp32 store)."""
    texts = DOCS + MANY[:8]
    states = MiceDocStates(bienc, tmp_path / "s", store="fp32")
    states.index(_docs(texts))
    inp = _pairs(texts)
    stored = MiceStoreReranker(states, batch_size=5).transform(inp.drop(columns=["text"]))
    direct = MiceReranker(bienc).transform(inp)
    merged = stored.merge(direct, on=["qid", "docno"])
    assert len(merged) == len(inp)
    np.testing.assert_allclose(merged["score_x"], merged["score_y"], atol=1e-5)


def test_colbert_store_still_holds_head_vectors(tmp_path):
    from mice_bench import Reranker

    rr = Reranker.from_pretrained("minilm-l6", variant="colbert")
    states = MiceDocStates(rr, tmp_path / "c", store="fp16")
    states.index(_docs(DOCS))
    use = states.store.usage()
    assert use["content"] == "vectors" and use["tokens_per_doc"] > 1


def test_a_query_or_text_that_is_not_a_string_is_refused_naming_its_row(bienc, tmp_path):
    from mice_bench.errors import UsageError

    states = MiceDocStates(bienc, tmp_path / "st")
    states.index(_docs(DOCS[:3]))
    frame = _pairs(DOCS[:3])
    frame["query"] = frame["query"].astype(object)
    frame.loc[frame["qid"] == "q1", "query"] = float("nan")
    with pytest.raises(UsageError, match=r"qid q1: column 'query' holds float nan"):
        MiceStoreReranker(states).transform(frame)
    with pytest.raises(UsageError, match=r"qid q1: column 'query' holds float nan"):
        MiceReranker(bienc).transform(frame)
    docs = _docs(DOCS[:3])
    docs.loc[1, "text"] = None
    with pytest.raises(UsageError, match=r"docno d1: column 'text' holds float nan"):
        states.index(docs)
    # the same frame with strings only is scored in full: every row its own score
    ok = MiceStoreReranker(states).transform(_pairs(DOCS[:3]))
    assert len(ok) == len(QUERIES) * 3 and ok["score"].notna().all()


def test_a_store_of_another_model_is_refused(bienc, tmp_path):
    from mice_bench import Reranker
    from mice_bench.errors import UsageError

    MiceDocStates(bienc, tmp_path / "st").index(_docs(DOCS[:2]))
    other = Reranker.from_pretrained("minilm-l6", variant="biencoder", seed=3)
    with pytest.raises(UsageError, match="another model"):
        MiceDocStates(other, tmp_path / "st")


def test_pooled_colbert_store_keeps_fewer_vectors_and_scores_from_them(tmp_path):
    """pool_factor=2 through PyTerrier and the facade: the same pooled store (a folder of
    another factor refused), about half the text tokens stored, every pair scored."""
    from mice_bench import Reranker

    rr = Reranker.from_pretrained("minilm-l6", variant="colbert")
    full = MiceDocStates(rr, tmp_path / "p1", store="fp32")
    full.index(_docs(MANY))
    pooled = MiceDocStates(rr, tmp_path / "p2", store="fp32", pool_factor=2)
    pooled.index(_docs(MANY))
    a, b = full.store.usage(), pooled.store.usage()
    assert b["pool_factor"] == 2 and b["orig_tokens_per_doc"] == a["tokens_per_doc"]
    assert a["tokens_per_doc"] / 2 <= b["tokens_per_doc"] < a["tokens_per_doc"]
    facade = rr.document_store(tmp_path / "api", dict(zip(_docs(MANY)["docno"], MANY)),
                               store="fp32", pool_factor=2)
    assert facade.usage()["tokens_per_doc"] == b["tokens_per_doc"]
    from mice_bench.errors import UsageError
    with pytest.raises(UsageError):
        MiceDocStates(rr, tmp_path / "p2", store="fp32", pool_factor=3)
    out = MiceStoreReranker(pooled).transform(_pairs(MANY).drop(columns="text"))
    assert len(out) == len(QUERIES) * len(MANY) and np.isfinite(out["score"]).all()

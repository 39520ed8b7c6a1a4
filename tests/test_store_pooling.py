"""Token pooling of stored documents: the clustering against hand-worked examples and against
scipy's own linkage / fcluster, the store's bytes per original token, and late interaction
and MICE's interaction layers reading the pooled tokens with the document mask adjusted."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.cluster.hierarchy import fcluster, linkage

from mice_bench.executors import DocStates
from mice_bench.store.docstore import DocStateStore
from mice_bench.store.pooling import cluster_tokens, pool_tokens, pooled_count


def test_pooled_count_rounds_up_and_keeps_special_tokens():
    # n text tokens -> ceil(n / f) clusters; special tokens (other segments) kept
    assert [pooled_count(n, 2) for n in (1, 2, 3, 5, 10, 243)] == [1, 1, 2, 3, 5, 122]
    assert [pooled_count(n, 3, special=1) for n in (2, 4, 88)] == [2, 3, 31]
    assert pooled_count(90, 1, special=2) == 92


def test_clusters_of_well_separated_points_by_hand():
    x = np.array([[0, 0], [10, 10], [0.1, 0], [10, 10.2], [5, -9], [0, 0.1]], dtype=float)
    # three obvious groups: {0, 2, 5}, {1, 3}, {4}; numbered by their first row
    assert cluster_tokens(x, 3).tolist() == [0, 1, 0, 1, 2, 0]
    assert cluster_tokens(x, 6).tolist() == [0, 1, 2, 3, 4, 5]
    assert cluster_tokens(x, 1).tolist() == [0] * 6


def test_pool_tokens_by_hand():
    # one document: [CLS] (segment 0), 4 words (segment 3), [SEP] (segment 4); the words
    # -> 2 clusters {1, 3} and {2, 4}, each at its first member's place
    x = torch.tensor([[9.0, 9.0], [0.0, 0.0], [4.0, 4.0], [0.0, 2.0], [4.0, 6.0], [7.0, 7.0],
                      # a second document of 2 words: one cluster at factor 2
                      [1.0, 1.0], [2.0, 2.0]])
    seg = torch.tensor([0, 3, 3, 3, 3, 4, 3, 3], dtype=torch.int8)
    lengths = torch.tensor([6, 2], dtype=torch.int32)
    px, pseg, plen = pool_tokens(x, seg, lengths, 2)
    assert plen.tolist() == [4, 1] and plen.dtype == torch.int32
    assert px.tolist() == [[9.0, 9.0], [0.0, 1.0], [4.0, 5.0], [7.0, 7.0], [1.5, 1.5]]
    assert pseg.tolist() == [0, 3, 3, 4, 3]
    same = pool_tokens(x, seg, lengths, 1)
    assert same[0] is x and same[2] is lengths


def scipy_pooled(doc: np.ndarray, seg: np.ndarray, factor: int, segments: bool = False):
    """Pooled rows written straight from scipy: the tokens of the most frequent segment
    clustered (Ward, cut into ceil(n / factor) clusters), each cluster's mean at its first
    member's place; the other tokens where they are."""
    vals, counts = np.unique(seg, return_counts=True)
    text = seg == vals[np.argmax(counts)]
    idx = np.flatnonzero(text)
    k = max(1, math.ceil(len(idx) / factor))
    if k >= len(idx):
        return (doc, seg) if segments else doc
    labels = fcluster(linkage(doc[idx].astype(np.float64), method="ward"), t=k,
                      criterion="maxclust")
    rows, segs = [], []
    done = set()
    for i in range(len(doc)):
        if not text[i]:
            rows.append(doc[i])
            segs.append(seg[i])
            continue
        lab = labels[list(idx).index(i)]
        if lab not in done:
            done.add(lab)
            rows.append(doc[idx][labels == lab].mean(0))
            segs.append(seg[i])
    return (np.stack(rows), np.array(segs)) if segments else np.stack(rows)


@pytest.mark.parametrize("factor", [2, 3, 4])
def test_pool_tokens_equals_scipy_on_random_documents(factor):
    g = np.random.default_rng(factor)
    lengths = [1, 2, 3, 7, 20, 41]
    docs = [g.normal(size=(n, 8)).astype(np.float32) for n in lengths]
    # [CLS] first and [SEP] last where there is room, words between
    segs = [np.array([0] * (n > 2) + [3] * (n - 2 * (n > 2)) + [4] * (n > 2), dtype=np.int8)
            for n in lengths]
    x = torch.from_numpy(np.concatenate(docs))
    seg = torch.from_numpy(np.concatenate(segs))
    px, pseg, plen = pool_tokens(x, seg, torch.tensor(lengths, dtype=torch.int32), factor)
    assert plen.tolist() == [pooled_count(n - 2, factor, special=2) if n > 2 else
                             pooled_count(n, factor) for n in lengths]
    for doc, sg, mine in zip(docs, segs, torch.split(px, plen.tolist())):
        np.testing.assert_allclose(mine.numpy(), scipy_pooled(doc, sg, factor), rtol=1e-5,
                                   atol=1e-6)


# --------------------------------------------------------------------------- the store
def unit_docs(n=12, T=20, H=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(3, T + 1, (n,), generator=g)
    lengths[0] = T
    mask = torch.arange(T)[None, :] < lengths[:, None]
    hid = torch.nn.functional.normalize(torch.randn(n, T, H, generator=g), dim=-1)
    seg = torch.full((n, T), 3, dtype=torch.long)
    seg[:, 0] = 0                                                   # [CLS]
    return DocStates(hid * mask[..., None], mask, seg, None, vectors=True)


def store_of(tmp_path, ds, fmt="fp32", pool_factor=2, content="vectors"):
    ids = [f"d{i}" for i in range(ds.hidden.shape[0])]
    texts = {d: str(i) for i, d in enumerate(ids)}

    def encode(tx):
        idx = [int(t) for t in tx]
        return DocStates(ds.hidden[idx], ds.mask[idx], ds.seg[idx], None,
                         vectors=content != "states")

    st = DocStateStore(tmp_path / f"{fmt}-{pool_factor}", fmt=fmt, content=content,
                       pool_factor=pool_factor)
    st.ensure(ids, lambda x: {i: texts[i] for i in x}, encode, batch_size=5)
    return st, ids


def test_pooled_store_keeps_fewer_tokens_and_counts_bytes_per_original_token(tmp_path):
    ds = unit_docs()
    lengths = ds.mask.sum(1).tolist()
    st, ids = store_of(tmp_path, ds, pool_factor=2)
    back = st.load(ids)
    assert back.mask.sum(1).tolist() == [pooled_count(n - 1, 2, special=1) for n in lengths]
    for i, n in enumerate(lengths):            # the pooled vectors, normalised again
        want = torch.nn.functional.normalize(torch.from_numpy(
            scipy_pooled(ds.hidden[i, :n].numpy(), ds.seg[i, :n].numpy(), 2)), dim=-1)
        torch.testing.assert_close(back.hidden[i, :want.shape[0]], want, rtol=1e-5,
                                   atol=1e-6)
        assert not back.mask[i, want.shape[0]:].any()
    u = st.usage()
    stored = sum(pooled_count(n - 1, 2, special=1) for n in lengths)
    assert u["tokens_per_doc"] == stored / len(ids)
    assert u["orig_tokens_per_doc"] == sum(lengths) / len(ids)
    assert u["bytes_per_orig_token"] == u["bytes"] / sum(lengths)
    # another pool factor in the same folder is refused, never mixed
    with pytest.raises(Exception, match="pool_factor"):
        DocStateStore(st.dir, fmt="fp32", content="vectors", pool_factor=3)


def test_residual_store_counts_its_codec_in_the_bytes_per_original_token(tmp_path):
    pytest.importorskip("faiss")
    ds = unit_docs(n=40, T=30)
    st, ids = store_of(tmp_path, ds, fmt="residual2", pool_factor=3)
    u = st.usage()
    orig = int(ds.mask.sum())
    assert u["codec_bytes"] > 0
    assert u["bytes_per_orig_token"] == pytest.approx((u["bytes"] + u["codec_bytes"]) / orig)
    # half of the documents: their shards' bytes and their share of the codec
    half = st.usage(ids[:20])
    assert half["bytes_per_orig_token"] > half["bytes"] / (half["orig_tokens_per_doc"]
                                                            * half["docs"])


@pytest.fixture(scope="module")
def tiny_executors(tmp_path_factory):
    from mice_bench.backbone import load_backbone
    from mice_bench.executors import make_executor
    from mice_bench.latency.testing import make_tiny_model

    bb = load_backbone(make_tiny_model(tmp_path_factory.mktemp("tiny") / "m", num_layers=4),
                       device="cpu", dtype="fp32", seed=0)
    return {v: make_executor(v, bb) for v in ("colbert", "mice-l2+2")}


@pytest.mark.parametrize("variant", ["colbert", "mice-l2+2"])
def test_scoring_reads_the_pooled_tokens_with_the_mask_adjusted(tmp_path, tiny_executors,
                                                               variant):
    """Scores of a padded batch read from a pooled store = scores of each document alone
    (no padding), its pooled tokens written here from scipy's clusters: colbert's MaxSim
    over the pooled head vectors (normalised again), MICE's interaction layers over the
    pooled split-layer states."""
    ex = tiny_executors[variant]
    vectors = variant == "colbert"
    content = "vectors" if vectors else "states"
    docs = [" ".join(f"w{(i * 5 + j) % 40}" for j in range(6 + 4 * i)) for i in range(5)]
    ids = [f"d{i}" for i in range(len(docs))]
    enc = ex.encode_documents(docs, vectors=vectors)
    st = DocStateStore(tmp_path / "s", fmt="fp32", content=content, pool_factor=2)
    st.ensure(ids, lambda x: {i: docs[int(i[1:])] for i in x},
              lambda tx: ex.encode_documents(tx, vectors=vectors), batch_size=2)
    pooled = st.load(ids)
    qs = ex.encode_queries(["w1 w2 w3"])
    got = ex.score_query(qs, pooled, list(range(len(docs))))
    for i in range(len(docs)):
        n = int(enc.mask[i].sum())
        sg = enc.seg[i, :n].numpy()
        rows, psg = scipy_pooled(enc.hidden[i, :n].float().numpy(), sg, 2, segments=True)
        h = torch.from_numpy(rows)
        if vectors:
            h = torch.nn.functional.normalize(h, dim=-1)
        m = h.shape[0]
        assert int(pooled.mask[i].sum()) == m
        seg = torch.from_numpy(psg.astype(np.int64))[None]
        alone = DocStates(h[None], torch.ones(1, m, dtype=torch.bool), seg, None,
                          vectors=vectors)
        want = ex.score_states(qs, torch.zeros(1, dtype=torch.long), alone,
                               torch.zeros(1, dtype=torch.long))
        assert got[i].item() == pytest.approx(want.item(), rel=1e-4, abs=1e-4), i

"""Store codecs: fp32/fp16/int8 and ColBERTv2-style residual compression.

The residual codec is checked against a re-implementation in numpy written here from the
ColBERTv2 description (nearest centroid, residual, per-dimension quantile cut-offs at j/2^b and
weights at (j + 1/2)/2^b, bucket = number of cut-offs below the residual), and on small
arrays whose codes and reconstructions are worked out by hand.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mice_bench.store.codecs import (CODEC_NAMES, KMEANS_NITER, colbert_centroids,
                                     get_codec, pack_codes, residual_centroids, unpack_codes)

faiss = pytest.importorskip("faiss", reason="residual codecs need faiss-cpu (the storage extra)")


def states(n=600, H=16, seed=0):
    g = np.random.default_rng(seed)
    centres = g.normal(size=(8, H)) * 3
    x = centres[g.integers(0, 8, n)] + g.normal(size=(n, H)) * (0.2 + g.random(H))
    return torch.from_numpy(x.astype(np.float32))


# --------------------------------------------------------------------------- numpy reference
def np_nearest(x, c):
    d = ((x[:, None, :].astype(np.float64) - c[None].astype(np.float64)) ** 2).sum(-1)
    return d.argmin(1)


def np_fit_stats(held, c, bits):
    res = held - c[np_nearest(held, c)]
    m = 2 ** bits
    cut = np.quantile(res.astype(np.float64), np.arange(1, m) / m, axis=0).T      # [H, m-1]
    wts = np.quantile(res.astype(np.float64), (np.arange(m) + 0.5) / m, axis=0).T  # [H, m]
    return cut, wts


def np_encode(x, c, cut):
    cid = np_nearest(x, c)
    res = x - c[cid]
    codes = np.stack([np.searchsorted(cut[d], res[:, d], side="left")
                      for d in range(x.shape[1])], 1)
    return cid, codes


def np_pack(codes, bits):
    per = 8 // bits
    n, H = codes.shape
    out = np.zeros((n, H // per), dtype=np.uint8)
    for i in range(H // per):
        for j in range(per):
            out[:, i] |= (codes[:, i * per + j] << (j * bits)).astype(np.uint8)
    return out


def np_decode(cid, codes, c, wts):
    H = c.shape[1]
    return c[cid] + wts[np.arange(H)[None, :], codes]


# --------------------------------------------------------------------------- tests
@pytest.mark.parametrize("bits", [1, 2, 4])
def test_residual_codes_and_reconstruction_match_numpy_reference(bits):
    x = states()
    codec = get_codec(f"residual{bits}")
    params = codec.fit(x[:500], x[500:], seed=3, centroids=8)
    c = params["centroids"].numpy()
    cut, wts = np_fit_stats(x[500:].numpy(), c, bits)
    np.testing.assert_allclose(params["cutoffs"].numpy(), cut, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(params["weights"].numpy(), wts, rtol=1e-5, atol=1e-6)
    enc = codec.encode(x, params)
    cid, codes = np_encode(x.numpy(), c, params["cutoffs"].numpy())
    assert np.array_equal(enc["centroid"].numpy().astype(np.int64), cid)
    assert np.array_equal(enc["codes"].numpy(), np_pack(codes, bits))
    assert enc["codes"].shape == (600, 16 * bits // 8)
    back = codec.decode(enc, params).float().numpy()
    ref = np_decode(cid, codes, c, params["weights"].numpy())
    np.testing.assert_allclose(back, ref, rtol=1e-3, atol=1e-3)      # fp16 output


def test_more_bits_reconstruct_better_and_every_codec_round_trips():
    x = states(seed=1)
    errs = {}
    for name in CODEC_NAMES:
        codec = get_codec(name)
        params = codec.fit(x[:550], x[550:], seed=0, centroids=8) if codec.trained else {}
        y = codec.decode(codec.encode(x, params), params).float()
        assert y.shape == x.shape
        errs[name] = float((y - x).norm() / x.norm())
    assert errs["fp32"] == 0.0
    assert errs["fp16"] < 1e-3 and errs["int8"] < 1e-2
    assert errs["residual4"] < errs["residual2"] < errs["residual1"] < 0.5


def test_residual_round_trip_by_hand():
    """Two centroids, 8 dims, a residual of +-0.1: cut-offs and weights are computed by hand
    and every token decodes to its centroid plus the weight of its bucket."""
    codec = get_codec("residual1")
    c = torch.tensor([[0.0] * 8, [10.0] * 8])
    # residuals: -0.1 for half the held-out tokens, +0.1 for the other half, every dimension
    held = torch.cat([c[0] - 0.1, c[0] + 0.1, c[1] - 0.1, c[1] + 0.1]).reshape(4, 8)
    res = torch.tensor([-0.1, 0.1, -0.1, 0.1])
    # one cut-off at the median (0.0 by linear interpolation), weights at the 1/4 and 3/4
    # quantiles of [-0.1, -0.1, 0.1, 0.1]: position 0.75 -> -0.1, position 2.25 -> 0.1
    fitted = codec.fit(held.repeat(25, 1), held, seed=0, centroids=2)
    order = fitted["centroids"][:, 0].argsort()          # k-means may number them either way
    assert torch.allclose(fitted["centroids"][order].float(), c, atol=1e-5)
    assert torch.allclose(held - c[[0, 0, 1, 1]], res[:, None].expand(4, 8))
    assert torch.allclose(fitted["cutoffs"], torch.zeros(8, 1), atol=1e-6)
    assert torch.allclose(fitted["weights"], torch.tensor([[-0.1, 0.1]] * 8), atol=1e-6)
    params = {"centroids": c, "cutoffs": fitted["cutoffs"], "weights": fitted["weights"]}
    x = torch.tensor([[0.3] * 8, [-0.2] * 8, [9.7] * 4 + [10.4] * 4, [0.0] * 8])
    enc = codec.encode(x, params)
    assert enc["centroid"].tolist() == [0, 0, 1, 0]
    # bits of byte 0 are dims 0..7 (1 bit each): token 0 all +, token 1 all -, token 2 half;
    # token 3 sits on the cut-off: the bucket is the number of cut-offs *below* (bucketize)
    assert enc["codes"].tolist() == [[0xFF], [0x00], [0xF0], [0x00]]
    back = codec.decode(enc, params).float()
    want = torch.tensor([[0.1] * 8, [-0.1] * 8, [9.9] * 4 + [10.1] * 4, [-0.1] * 8])
    assert torch.allclose(back, want, atol=1e-2)
    # the decoded error is at most |x - c| away from the bucket's weight: here 0.2 / 0.3
    assert (back - x).abs().max() <= 0.31


def test_int8_by_hand():
    codec = get_codec("int8")
    x = torch.tensor([[1.27, -0.635, 0.0], [0.0, 0.0, 0.0]])
    enc = codec.encode(x, {})
    assert enc["hidden"].tolist() == [[127, -64, 0], [0, 0, 0]]     # -63.5 rounds to even
    assert torch.allclose(enc["scale"], torch.tensor([0.01, 1e-12 / 127]))
    assert torch.allclose(codec.decode(enc, {}).float(), torch.tensor(
        [[1.27, -0.64, 0.0], [0.0, 0.0, 0.0]]), atol=1e-3)


@pytest.mark.parametrize("bits", [1, 2, 4])
def test_pack_unpack_layout(bits):
    g = torch.Generator().manual_seed(bits)
    codes = torch.randint(0, 2 ** bits, (5, 16), generator=g)
    packed = pack_codes(codes, bits)
    assert packed.dtype == torch.uint8 and packed.shape == (5, 16 * bits // 8)
    assert np.array_equal(packed.numpy(), np_pack(codes.numpy(), bits))
    assert torch.equal(unpack_codes(packed, bits), codes)


def test_width_that_cannot_be_packed_is_refused():
    with pytest.raises(ValueError, match="multiple of 8"):
        get_codec("residual1").fit(torch.randn(64, 12), seed=0, centroids=2)


def test_seeded_fit_is_identical_twice_and_the_seed_matters():
    x = states(seed=2)
    codec = get_codec("residual2")
    a = codec.fit(x[:550], x[550:], seed=5, centroids=8)
    b = codec.fit(x[:550], x[550:], seed=5, centroids=8)
    assert all(torch.equal(a[k], b[k]) for k in a)
    c = codec.fit(x[:550], x[550:], seed=6, centroids=8)
    assert not torch.equal(a["centroids"], c["centroids"])


def test_centroid_rule():
    assert residual_centroids(2 ** 20, cap=1 << 20) == 2 ** 14       # 16 * 1024 = 2^14
    assert residual_centroids(10_000, cap=1 << 20) == 256            # 1600 -> 1024 > n/39
    assert residual_centroids(10_000, cap=128) == 128
    assert residual_centroids(1) == 1


def test_colbertv2_centroid_rule_by_hand():
    # K = 2 ** floor(log2(16 * sqrt(N))), N the collection's embeddings
    assert colbert_centroids(10_000) == 1024          # 16 * 100 = 1600
    assert colbert_centroids(1_000_000) == 8192       # 16,000
    assert colbert_centroids(890_000) == 8192         # 16 * 943.4 = 15,094
    assert colbert_centroids(387_000) == 8192         # 16 * 622.1 = 9,953
    assert colbert_centroids(65_536) == 4096          # 16 * 256 = 4,096 exactly
    assert colbert_centroids(65_535) == 2048
    assert colbert_centroids(600_000_000) == 262_144  # 16 * 24,495 = 391,918
    # the collection decides, the sample (39 points per centroid) and the cap bound it
    assert residual_centroids(890_000, sample=890_000) == 8192
    assert residual_centroids(890_000, sample=262_144, cap=4096) == 4096
    assert residual_centroids(890_000, sample=100_000) == 2048       # 100,000 / 39 = 2,564
    assert residual_centroids(133_000, sample=133_000) == 2048       # 16 * 364.7 = 5,835 ->
    #                                                                  4096 > 133,000 / 39


def test_residual_codec_is_faiss_kmeans_and_nearest_centroid():
    """The codec's centroids are those faiss.Kmeans trains itself on the same sample and
    seed (ColBERTv2's 4 iterations), kept in fp16; each token's id is faiss's exact nearest
    centroid (IndexFlatL2) of those."""
    x = states(n=3000, H=16, seed=4)
    train, held = x[:2800], x[2800:]
    codec = get_codec("residual2")
    p = codec.fit(train, held, seed=7, centroids=32)
    km = faiss.Kmeans(16, 32, niter=4, seed=7, verbose=False)
    km.train(np.ascontiguousarray(train.numpy()))
    assert KMEANS_NITER == 4
    want = torch.from_numpy(np.array(km.centroids, dtype=np.float32)).half()
    assert p["centroids"].dtype == torch.float16
    assert torch.equal(p["centroids"], want)
    index = faiss.IndexFlatL2(16)
    index.add(np.ascontiguousarray(p["centroids"].float().numpy()))
    _, nearest = index.search(np.ascontiguousarray(x.numpy()), 1)
    ids = codec.encode(x, p)["centroid"].long().numpy()
    assert (ids == nearest[:, 0]).mean() > 0.999       # ties in fp32 distance aside


def test_decode_runs_on_the_requested_device_type():
    x = states(n=64, H=8)
    codec = get_codec("residual2")
    p = codec.fit(x, seed=0, centroids=2)
    out = codec.decode(codec.encode(x, p), p, device="cpu")
    assert out.device.type == "cpu" and out.dtype == torch.float16


def test_unknown_format_names_the_valid_ones():
    with pytest.raises(ValueError, match="residual2"):
        get_codec("int4")




def test_more_centroids_than_int16_holds_decode_to_their_own_centroid():
    # 40,000 centroids: ids above 32,767 do not fit an int16 and must be stored wider
    k, H = 40_000, 32
    cents = torch.from_numpy(np.random.default_rng(0).normal(size=(k, H)).astype(np.float32))
    params = {"centroids": cents, "cutoffs": torch.zeros(H, 1),
              "weights": torch.zeros(H, 2)}
    codec = get_codec("residual1")
    x = cents[[5, 32_767, 32_768, 39_999]]
    parts = codec.encode(x, params)
    assert parts["centroid"].long().tolist() == [5, 32_767, 32_768, 39_999]
    assert torch.equal(codec.decode(parts, params), x.half())      # decoded rows are fp16


def test_heldout_split_is_a_partition_with_five_percent_held_out():
    from mice_bench.store.packing import split_heldout

    x = torch.arange(200, dtype=torch.float32)[:, None]
    train, held = split_heldout(x, seed=3)
    assert held.shape[0] == 10 and train.shape[0] == 190          # 5 % of 200 held out
    got = sorted(train[:, 0].tolist() + held[:, 0].tolist())
    assert got == list(range(200))                               # disjoint, nothing lost


@pytest.mark.parametrize("content", ["vectors", "pooled"])
def test_decoded_unit_vectors_of_a_residual_store_have_unit_norm(content):
    from mice_bench.store.packing import compress, padded

    x = torch.nn.functional.normalize(states(n=400, H=16), dim=-1)
    lengths = torch.ones(400, dtype=torch.int32)                  # one vector per document
    docs = padded(x, torch.zeros(400, dtype=torch.int8), lengths, content)
    out = compress(docs, "residual2", content=content).decode()
    norms = out.hidden[out.mask].float().norm(dim=-1)
    assert torch.allclose(norms, torch.ones_like(norms), atol=2e-3)

"""Codecs of the document-state store: token vectors ``[n, H]`` <-> the tensors kept on disk.

One interface for every format (:func:`get_codec` by name, :data:`CODEC_NAMES`):

* ``fit(train, heldout, seed)`` -> ``params`` (a dict of tensors shared by every token of a
  store; empty for the formats that need none);
* ``encode(x, params)`` -> per-token tensors (the rows of a shard), ``x [n, H]`` fp32;
* ``decode(parts, params, device)`` -> ``[n, H]`` (fp32 for ``fp32``, else fp16), batched and
  vectorised in torch on ``device`` (the scoring device).

Formats:

* ``fp32`` / ``fp16``: the vectors as they are / in half precision.
* ``int8``: per-token symmetric scaling, ``x ~ q * scale``, ``scale = max|x| / 127``.
* ``residual1`` | ``residual2`` | ``residual4``: residual compression as ColBERTv2 and PLAID
  store an index (Santhanam et al., 2022). ``fit`` trains ``K`` centroids with ``faiss.Kmeans``
  (seeded) on the ``train`` sample, assigns the ``heldout`` tokens (the whole sample when
  fewer than :data:`MIN_HELDOUT` are held out) to their nearest centroid
  and, for every dimension ``d``, takes the residuals' quantiles: bucket cut-offs at
  ``j / 2**b`` (``j = 1 .. 2**b - 1``) and reconstruction weights at ``(j + 0.5) / 2**b``
  (``j = 0 .. 2**b - 1``); the centroids are kept in fp16 (as ColBERTv2 saves them). The
  number of centroids follows ColBERTv2's rule for the collection (:func:`residual_centroids`).
  ColBERTv2 pools all dimensions into one set of cut-offs and
  weights (its vectors are unit-length head outputs); here each dimension has its own, since
  a transformer's hidden states differ in scale from one dimension to the next. A token is
  stored as its nearest centroid's id (``int16`` when ``K <= 32767``, else ``int32``) and, per
  dimension, the ``b``-bit bucket ``code = #{cut-offs < residual}`` (``torch.bucketize``);
  codes are packed ``8 / b`` to a byte, code ``j`` of a byte in bits ``j*b .. j*b + b - 1``
  (dimension ``8/b * i + j`` in byte ``i``). Decoding is ``centroid[id] + weight[d, code]``.
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["Codec", "CODEC_NAMES", "get_codec", "unavailable", "residual_centroids",
           "pack_codes", "unpack_codes", "colbert_centroids"]

CODEC_NAMES = ("fp32", "fp16", "int8", "residual1", "residual2", "residual4")
#: the most tokens the per-dimension quantiles are taken over (torch.quantile's input limit)
MAX_HELDOUT = 32_768
#: fewer held-out tokens than this: the quantiles are taken over the whole sample
MIN_HELDOUT = 64
#: faiss.Kmeans iterations (ColBERTv2's ``kmeans_niters`` default, 4)
KMEANS_NITER = 4


class Codec:
    """One store format (see the module docstring); stateless: parameters are passed in."""

    name = ""
    trained = False          # whether ``fit`` learns parameters from a sample

    def fit(self, train: torch.Tensor, heldout: torch.Tensor | None = None, seed: int = 0,
            centroids: int | None = None) -> dict[str, torch.Tensor]:
        return {}

    def encode(self, x: torch.Tensor, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def decode(self, parts: dict[str, torch.Tensor], params: dict[str, torch.Tensor],
               device: str | torch.device = "cpu") -> torch.Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class FloatCodec(Codec):
    def __init__(self, name: str, dtype: torch.dtype):
        self.name, self.dtype = name, dtype

    def encode(self, x, params):
        return {"hidden": x.detach().float().cpu().to(self.dtype)}

    def decode(self, parts, params, device="cpu"):
        return parts["hidden"].to(device)


class Int8Codec(Codec):
    name = "int8"

    def encode(self, x, params):
        x = x.detach().float().cpu()
        scale = x.abs().amax(1).clamp_min(1e-12) / 127.0                  # [n]
        q = torch.round(x / scale[:, None]).clamp(-127, 127).to(torch.int8)
        return {"hidden": q, "scale": scale.to(torch.float32)}

    def decode(self, parts, params, device="cpu"):
        q, scale = parts["hidden"].to(device), parts["scale"].to(device)
        return (q.float() * scale[:, None]).to(torch.float16)


def colbert_centroids(embeddings: int) -> int:
    """ColBERTv2's number of centroids for a collection of ``embeddings`` token vectors:
    ``2 ** floor(log2(16 * sqrt(embeddings)))`` (at least 1).

    >>> colbert_centroids(10_000), colbert_centroids(1_000_000)
    (1024, 8192)
    """
    return 2 ** int(math.floor(math.log2(max(16 * math.sqrt(max(embeddings, 1)), 1))))


def residual_centroids(embeddings: int, sample: int | None = None, cap: int | None = None
                       ) -> int:
    """:func:`colbert_centroids` of a collection of ``embeddings`` vectors, halved while
    above ``cap`` or above ``sample / 39`` (faiss's fewest training points per centroid; the
    k-means sample has ``sample`` vectors, default ``embeddings``); at least 1."""
    sample = embeddings if sample is None else sample
    k = colbert_centroids(embeddings)
    while k > 1 and (k > sample / 39 or (cap is not None and k > cap)):
        k //= 2
    return max(k, 1)


def pack_codes(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """``codes [n, H]`` (values < 2**bits) -> ``uint8 [n, H * bits / 8]`` (layout: module
    docstring)."""
    n, H = codes.shape
    per = 8 // bits
    if H % per:
        raise ValueError(f"{H} dimensions cannot be packed {per} to a byte ({bits}-bit codes); "
                         f"the width must be a multiple of {per}")
    c = codes.to(torch.int32).reshape(n, H // per, per)
    shifts = torch.arange(per, device=codes.device, dtype=torch.int32) * bits
    return (c << shifts).sum(-1).to(torch.uint8)


def unpack_codes(packed: torch.Tensor, bits: int) -> torch.Tensor:
    """Inverse of :func:`pack_codes`: ``uint8 [n, B]`` -> ``long [n, B * 8 / bits]``."""
    per = 8 // bits
    shifts = torch.arange(per, device=packed.device, dtype=torch.int32) * bits
    c = (packed.to(torch.int32)[..., None] >> shifts) & ((1 << bits) - 1)
    return c.reshape(packed.shape[0], -1).long()


def _nearest(x: torch.Tensor, centroids: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """Index of the nearest centroid (L2, as k-means assigns) of every row of ``x``."""
    c2 = (centroids * centroids).sum(1)
    out = []
    for i in range(0, x.shape[0], chunk):
        xi = x[i:i + chunk]
        out.append((c2[None, :] - 2.0 * (xi @ centroids.T)).argmin(1))
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)


class ResidualCodec(Codec):
    trained = True

    def __init__(self, bits: int):
        if bits not in (1, 2, 4):
            raise ValueError(f"residual codes have 1, 2 or 4 bits, got {bits}")
        self.bits = bits
        self.name = f"residual{bits}"

    def fit(self, train, heldout=None, seed=0, centroids=None):
        import faiss

        train = train.detach().float().cpu().contiguous()
        if train.ndim != 2 or train.shape[0] < 1:
            raise ValueError(f"{self.name}: training needs token vectors [n, H], got "
                             f"{tuple(train.shape)}")
        H = train.shape[1]
        pack_codes(torch.zeros(1, H, dtype=torch.long), self.bits)   # the width check first
        k = centroids or residual_centroids(train.shape[0])
        km = faiss.Kmeans(H, k, niter=KMEANS_NITER, seed=int(seed), verbose=False)
        km.train(np.ascontiguousarray(train.numpy(), dtype=np.float32))
        cents = torch.from_numpy(np.array(km.centroids, dtype=np.float32).reshape(k, H))
        held = heldout.detach().float().cpu() if heldout is not None else train[:0]
        if held.shape[0] < MIN_HELDOUT:       # too few to estimate quantiles: the whole sample
            held = torch.cat([train, held])
        held = held[:MAX_HELDOUT]
        # kept in half precision, as ColBERTv2 saves its centroids: half the codec's bytes
        cents = cents.half().float()
        res = held - cents[_nearest(held, cents)]                        # [m, H]
        m = 1 << self.bits
        q = torch.arange(m, dtype=torch.float64) / m
        cut = torch.quantile(res.double(), q[1:], dim=0).T.float()      # [H, m - 1]
        wts = torch.quantile(res.double(), q + 0.5 / m, dim=0).T.float()  # [H, m]
        return {"centroids": cents.half().contiguous(), "cutoffs": cut.contiguous(),
                "weights": wts.contiguous()}

    def encode(self, x, params):
        x = x.detach().float()
        cents = params["centroids"].to(x.device).float()
        cid = _nearest(x, cents)
        res = x - cents[cid]
        cut = params["cutoffs"].to(x.device)                             # [H, m - 1]
        codes = (res[:, :, None] > cut[None]).sum(-1)                    # [n, H]
        id_dtype = torch.int16 if cents.shape[0] <= 32767 else torch.int32
        return {"centroid": cid.to(id_dtype).cpu(),
                "codes": pack_codes(codes, self.bits).cpu()}

    def decode(self, parts, params, device="cpu"):
        cents = params["centroids"].to(device).float()
        wts = params["weights"].to(device)                               # [H, m]
        cid = parts["centroid"].to(device).long()
        codes = unpack_codes(parts["codes"].to(device), self.bits)        # [n, H]
        H, m = wts.shape
        flat = wts.reshape(-1)
        offs = torch.arange(H, device=device) * m
        out = cents[cid] + flat[codes + offs[None, :]]
        return out.to(torch.float16)


_CODECS: dict[str, Codec] = {
    "fp32": FloatCodec("fp32", torch.float32),
    "fp16": FloatCodec("fp16", torch.float16),
    "int8": Int8Codec(),
    "residual1": ResidualCodec(1),
    "residual2": ResidualCodec(2),
    "residual4": ResidualCodec(4),
}


def unavailable(name: str) -> str | None:
    """Why the ``name`` format cannot be used here (one line), or None when it can."""
    if get_codec(name).trained:
        try:
            import faiss  # noqa: F401
        except ImportError:
            return (f"document store {name!r} trains its centroids with faiss, which is not "
                    "installed: pip install 'mice-bench[storage]' (faiss-cpu)")
    return None


def get_codec(name: str) -> Codec:
    """The codec of a store format (ValueError naming the valid ones)."""
    try:
        return _CODECS[name]
    except KeyError:
        raise ValueError(f"unknown document store {name!r}; valid: "
                         f"{', '.join(CODEC_NAMES)}") from None

"""Analytic FLOP model per (query, document) pair, and the measured dense matmul peak.

Only matrix multiplications are counted, at ``2*m*n*k`` FLOPs for an ``[m,k] x [k,n]``
product (softmax, LayerNorm, GELU, biases and embeddings are ignored). For a kept layer
with hidden size ``H`` and FFN size ``I``, with ``U`` the tokens the layer *updates* (the
rows of segments that are not frozen), ``K`` the tokens whose key/value projections must be
computed, and ``a_u`` the number of tokens token ``u`` may attend to (from the layer's 5x5
segment mask)::

    FLOPs(layer) = 2*|U|*H*H   (Q projection)
                 + 2*|U|*H*H   (attention output projection)
                 + 4*|U|*H*I   (FFN up + down)
                 + 4*|K|*H*H   (K and V projections)
                 + 4*H*sum_u a_u   (Q K^T and A V, all heads together)

* dropped layers cost nothing; frozen segments are not rows (their states are not updated);
* split layout: layers below ``spec.split_layer(L)`` run on the query part and the document
  part separately; the document side is *document encoding* (offline when precomputed), the
  query side is *query encoding* (once per query in the rerank protocol, once per pair in the
  paper protocol);
* with the K/V cache (``kv_cache``), the K/V projections of frozen document tokens in the
  interaction layers move to the offline document encoding;
* a layer with a cross-attention sub-layer (MICE) counts two attention blocks: the
  self-attention over the non-cross keys as above, and the cross sub-layer with its own
  ``4*|X|*H*H`` (Q and output projections of the rows ``X`` that read the cross keys, or
  average them uniformly), ``4*|C|*H*H`` (K and V of the cross keys ``C``, which move to the
  offline document encoding with the K/V cache) and ``4*H*|X|*|C|``; the feed-forward block is
  counted once;
* family dimensions (:class:`ModelDims`, from the backbone's family adapter): a gated
  feed-forward block (ModernBERT's GeGLU) costs ``6*|U|*H*I``; in ModernBERT's local layers a
  row reads at most ``2*w + 1`` self-attention keys (``w`` the half window), an upper bound
  of the true count;
* head: ``cls`` = pooler + classifier (``2*H*H + 2*H``), ``maxsim`` = ``2*n_q*n_d*H`` (after
  the projection to ``D`` dims: ``2*n_q*n_d*D`` plus ``2*(n_q+n_d)*H*D``), ``mean-cos`` =
  ``6*H``.

Segment sizes: joint ``[CLS] q [SEP] d [SEP]`` -> cls 1, query q, sep_q 1, doc d, sep_d 1;
split: query part ``[CLS] q [SEP]`` and document part ``[CLS] d [SEP]`` (the document's own
``[CLS]`` counts in the doc segment: doc d+1, sep_d 1).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch

from ..layerspec import DOC_SIDE, QUERY_SIDE, SEGMENTS, LayerSpec
from ..spec import InteractionSpec


@dataclass(frozen=True)
class ModelDims:
    """What the FLOP model needs of a backbone. ``glu``: gated feed-forward (ModernBERT's
    GeGLU: ``W_i`` is ``[2I, H]``, so the block costs ``6*H*I`` per row instead of ``4*H*I``);
    ``local_layers`` / ``local_window``: layers whose self-attention reads at most
    ``2*local_window + 1`` keys per row (ModernBERT's sliding window)."""

    num_layers: int
    hidden_size: int
    intermediate_size: int
    glu: bool = False
    local_window: int | None = None
    local_layers: tuple[int, ...] = ()

    @classmethod
    def of(cls, backbone: Any) -> "ModelDims":
        fam = getattr(backbone, "family", None)
        if fam is not None:
            return cls(**fam.flop_dims(backbone))
        return cls(int(backbone.num_layers), int(backbone.hidden_size),
                   int(backbone.intermediate_size))


def segment_sizes(layout: str, query_tokens: int, doc_tokens: int,
                  doc_cls: bool | None = None) -> dict[str, int]:
    """Token count of every segment for a pair (``query_tokens``/``doc_tokens`` = text tokens).

    The split layout's document part has its own ``[CLS]`` (counted in ``doc``) unless
    ``doc_cls`` is False (PreTTR: ``d [SEP]``)."""
    if doc_cls is None:
        doc_cls = layout == "split"
    doc = doc_tokens + (1 if doc_cls else 0)
    return {"cls": 1, "query": query_tokens, "sep_q": 1, "doc": doc, "sep_d": 1}


def layer_cost(ls: LayerSpec, sizes: dict[str, int], H: int, ffn: int,
               rows: frozenset[str] | set[str], kv_segments: frozenset[str] | set[str],
               glu: bool = False, window: int | None = None) -> int:
    """FLOPs of one layer for the given updated row segments and K/V segments (keys read
    through a cross sub-layer included: their K/V are counted when in ``kv_segments``).
    ``glu``: gated FFN (``6*H*ffn`` per row); ``window``: a local layer, each row reads at
    most ``2*window + 1`` self-attention keys."""
    if ls.dropped:
        return 0
    cross = set(ls.cross_keys)
    n_rows = sum(sizes[s] for s in rows)
    n_kv = sum(sizes[s] for s in kv_segments)
    cap = 2 * window + 1 if window is not None else None
    attended = 0
    for s in rows:
        a = sum(sizes[t] for t in SEGMENTS if ls.allowed(s, t) and t not in cross)
        attended += sizes[s] * (min(a, cap) if cap is not None else a)
    total = (4 * n_rows * H * H          # Q and output projections (self-attention)
             + (6 if glu else 4) * n_rows * H * ffn  # FFN (gated: W_i is [2*ffn, H])
             + 4 * n_kv * H * H          # K and V projections (self and cross keys)
             + 4 * H * attended)         # QK^T and AV
    if cross:
        n_cross = sum(sizes[t] for t in cross)
        x_rows = [s for s in rows if s in ls.cross_uniform or
                  any(ls.allowed(s, t) for t in cross)]
        total += 4 * sum(sizes[s] for s in x_rows) * H * H  # Q and output (cross)
        total += 4 * H * sum(sizes[s] * (n_cross if s in ls.cross_uniform else
                                         sum(sizes[t] for t in cross if ls.allowed(s, t)))
                             for s in x_rows)
    return total


def _keys_needed(ls: LayerSpec, rows: set[str]) -> set[str]:
    keys = {t for s in rows for t in SEGMENTS if ls.allowed(s, t)}
    if ls.cross_uniform & rows:
        keys |= set(ls.cross_keys)
    return keys


def head_cost(spec: InteractionSpec, sizes: dict[str, int], H: int) -> int:
    if spec.head == "cls":
        return 2 * H * H + 2 * H
    if spec.head == "maxsim":
        n_q = sizes["cls"] + sizes["query"] + sizes["sep_q"]
        n_d = sizes["doc"] + sizes["sep_d"]
        if spec.projection:  # ColBERT: project both sides to 128 dims, then MaxSim
            return 2 * (n_q + n_d) * H * 128 + 2 * n_q * n_d * 128
        return 2 * n_q * n_d * H
    return 6 * H  # mean-cos


def pair_flops(spec: InteractionSpec, dims: ModelDims, query_tokens: int, doc_tokens: int, *,
               precompute: bool = True, kv_cache: bool = False,
               pairs_per_query: int = 1, doc_vectors: bool = False) -> dict[str, Any]:
    """FLOPs per pair, split into components; ``per_pair`` is what is timed online.

    ``precompute``/``kv_cache`` only apply to split-layout specs (documents encoded offline up
    to the split layer; K/V of frozen document tokens stored per layer). ``pairs_per_query``
    amortises query encoding (rerank: depth; paper protocol: 1, the query is re-encoded).
    ``doc_vectors`` (late interaction with precomputed documents): the documents are stored
    as the head's projected vectors, so the document side of the head's projection
    (``2*n_d*H*D``) is offline work, counted in ``doc_encode_per_doc``; a bi-encoder's
    documents are stored as their pooled vectors (``doc_content: pooled``; the head's count
    already leaves the pooling out).
    """
    L, H, ffn = dims.num_layers, dims.hidden_size, dims.intermediate_size
    layers = spec.layers(L)
    sizes = segment_sizes(spec.layout, query_tokens, doc_tokens,
                          doc_cls=spec.doc_style == "cls" if spec.layout == "split" else False)
    if spec.qaug:  # ColBERT queries: cut or padded with [MASK] to a fixed length, all attended
        sizes["query"] = spec.default_lengths()["query_max_tokens"] or sizes["query"]
    split = spec.split_layer(L)
    split_layout = split is not None
    use_pre = precompute and split_layout and spec.precomputable
    use_kv = kv_cache and use_pre
    doc_enc = query_enc = inter = kv_pre = 0
    for i, ls in enumerate(layers):
        if ls.dropped:
            continue
        rows = {s for s in SEGMENTS if s not in ls.frozen}
        keys = _keys_needed(ls, rows)
        fam_kw = {"glu": dims.glu,
                  "window": dims.local_window if i in dims.local_layers else None}
        if split_layout and i < split:
            # separate encoding: no segment crosses parts in these layers
            for side, acc in ((DOC_SIDE, "doc"), (QUERY_SIDE, "query")):
                c = layer_cost(ls, sizes, H, ffn, rows & side, keys & side, **fam_kw)
                if acc == "doc":
                    doc_enc += c
                else:
                    query_enc += c
            continue
        kv_online = set(keys)
        if use_kv:
            cached = {t for t in keys if t in DOC_SIDE and t in ls.frozen}
            kv_online -= cached
            kv_pre += 4 * sum(sizes[t] for t in cached) * H * H
        inter += layer_cost(ls, sizes, H, ffn, rows, kv_online, **fam_kw)
    head = head_cost(spec, sizes, H)
    use_vec = bool(doc_vectors and use_pre and spec.head in ("maxsim", "mean-cos")
                   and inter == 0)
    if use_vec and spec.projection:        # the document side of the projection: offline
        doc_proj = 2 * (sizes["doc"] + sizes["sep_d"]) * H * 128
        head -= doc_proj
        doc_enc += doc_proj
    ppq = max(1, int(pairs_per_query))
    online = inter + head + query_enc / ppq + (0 if use_pre else doc_enc)
    return {
        "per_pair": float(online),
        "interaction_per_pair": int(inter),
        "head_per_pair": int(head),
        "query_encode_per_query": int(query_enc),
        "query_encode_per_pair": float(query_enc / ppq),
        "doc_encode_per_doc": int(doc_enc + kv_pre),
        "doc_encode_online_per_pair": int(0 if use_pre else doc_enc),
        "kv_precompute_per_doc": int(kv_pre),
        "precompute": bool(use_pre),
        "kv_cache": bool(use_kv),
        "doc_vectors": use_vec,
        "doc_content": ("pooled" if spec.head == "mean-cos" else "vectors") if use_vec
        else "states",
        "pairs_per_query": ppq,
        "segment_tokens": sizes,
        "split_layer": split,
    }


# ----------------------------------------------------------------------------- peak
def product_runner(dtype: torch.dtype | str, device: torch.device, rows: int, k: int, n: int):
    """``(call, flops)``: one ``[rows, k] x [k, n]`` linear product run as the precision
    ``dtype`` runs the backbone's linear layers (fp32 / bf16 / fp16: ``F.linear`` in that dtype;
    ``bf16-autocast``: fp32 inputs under ``torch.autocast``; ``int8``: PyTorch's dynamically
    quantized ``nn.Linear``, :mod:`mice_bench.backbones.precision`)."""
    from ..backbones.precision import quantize_linear

    name = dtype if isinstance(dtype, str) else str(dtype).replace("torch.", "")
    x = torch.randn(rows, k, device=device)
    w = torch.randn(n, k, device=device)
    if name == "int8":
        mod = quantize_linear(w, None)
        return (lambda: mod(x)), 2.0 * rows * k * n
    if name == "bf16-autocast":
        def call():
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
                return torch.nn.functional.linear(x, w)
        return call, 2.0 * rows * k * n
    from ..backbone import dtype_from_name

    t = dtype_from_name(name)
    xt, wt = x.to(t), w.to(t)
    return (lambda: torch.nn.functional.linear(xt, wt)), 2.0 * rows * k * n


def _best_rate(call, flops: float, sync, min_seconds: float, max_reps: int) -> tuple:
    with torch.inference_mode():
        for _ in range(3):
            call()
        sync()
        best = float("inf")
        reps = 0
        t_start = time.perf_counter()
        while reps < max_reps and (reps < 3 or time.perf_counter() - t_start < min_seconds):
            t = time.perf_counter()
            call()
            sync()
            best = min(best, time.perf_counter() - t)
            reps += 1
        total = time.perf_counter() - t_start
    return flops / best, flops * reps / total, reps


def matmul_peak(device: torch.device | str, dtype: torch.dtype | str, n: int | None = None,
                min_seconds: float = 0.5, max_reps: int = 200,
                shapes: list[tuple[int, int, int]] | None = None) -> dict[str, Any]:
    """The dense matmul throughput (FLOP/s) of square ``n x n`` products in the run's
    precision (:func:`product_runner`: ``int8`` and ``bf16-autocast`` too), and, per
    ``(rows, k, n)`` of ``shapes`` (the products a run makes), that product's own rate."""
    device = torch.device(device)
    cuda = device.type == "cuda"
    if n is None:
        n = 8192 if cuda else 1024

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(device)

    call, flops = product_runner(dtype, device, n, n, n)
    best, mean, reps = _best_rate(call, flops, sync, min_seconds, max_reps)
    name = dtype if isinstance(dtype, str) else str(dtype).replace("torch.", "")
    out = {
        "n": n,
        "dtype": name,
        "reps": reps,
        "flops_per_s": best,
        "mean_flops_per_s": mean,
        "method": "a square linear product in the run's precision; best repetition",
    }
    if shapes:
        out["shapes"] = []
        for rows, k, m in shapes:
            call, fl = product_runner(dtype, device, rows, k, m)
            b, _, r = _best_rate(call, fl, sync, min_seconds / 4, max_reps)
            out["shapes"].append({"rows": rows, "k": k, "n": m, "flops_per_s": b, "reps": r})
    return out

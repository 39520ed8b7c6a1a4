"""Linear layers on prepacked weights (CPU, fp32): ``mice-bench latency --prepack``.

Every ``F.linear`` of a backbone's layers asks MKL's sgemm to pack the weight matrix into
its blocked layout before multiplying, on every call. For a large input (a cross-encoder
batch: thousands of rows) that is a small share of the product; for a short query encoded
alone (34 rows) it is not. :class:`LinearPacks` packs each weight once per input row count
(``torch.ops.mkl._mkl_reorder_linear_weight``) and multiplies with the packed copy
(``torch.ops.mkl._mkl_linear``), the same arithmetic in the same order: the results equal
``F.linear``'s. The family adapters route their products through
:func:`mice_bench.backbones.base.linear`, which uses the packs of ``bb.linear_packs`` when a
backbone has them (:func:`prepack`) and ``F.linear`` otherwise.

A call runs on the packed weight only for the weights packed by :func:`prepack` (the same
tensor objects: a backbone moved to another dtype or device afterwards falls back), fp32 on
the CPU, without autograd, and for at most :data:`MAX_SHAPES` row counts per weight (the
others run ``F.linear``); :attr:`LinearPacks.calls` / :attr:`LinearPacks.packed_calls`
count both kinds so that a run can report which of its products were packed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: the most input row counts one weight is packed for (each pack is a copy of the weight)
MAX_SHAPES = 8


def available() -> str | None:
    """``None`` when this PyTorch can pack linear weights, else why not (one line)."""
    ops = getattr(torch.ops, "mkl", None)
    if not torch.backends.mkl.is_available() or ops is None or \
            not hasattr(ops, "_mkl_linear") or not hasattr(ops, "_mkl_reorder_linear_weight"):
        return ("--prepack needs a PyTorch build with MKL (torch.backends.mkl.is_available() "
                "is False here)")
    return None


class LinearPacks:
    """Packed copies of some fp32 CPU weight matrices, made on first use per row count."""

    def __init__(self, weights: list[torch.Tensor]):
        self._weights = {id(w): w for w in weights}
        self._packed: dict[tuple[int, int], torch.Tensor] = {}
        self._shapes: dict[int, int] = {}
        self.calls = 0            # linear calls routed through these packs
        self.packed_calls = 0     # of which ran on a packed weight

    def __len__(self) -> int:
        return len(self._weights)

    def linear(self, x: torch.Tensor, w: torch.Tensor,
               b: torch.Tensor | None = None) -> torch.Tensor:
        """``F.linear(x, w, b)``, on the packed copy of ``w`` where one applies."""
        self.calls += 1
        packed = self._pack_for(x, w, b)
        if packed is None:
            return F.linear(x, w, b)
        self.packed_calls += 1
        return torch.ops.mkl._mkl_linear(x, packed, w, b, x.numel() // x.shape[-1])

    def _pack_for(self, x, w, b) -> torch.Tensor | None:
        if self._weights.get(id(w)) is not w or x.dtype != torch.float32 or \
                x.device.type != "cpu" or x.dim() < 2 or x.numel() == 0 or \
                (b is not None and (b.dtype != torch.float32 or b.device.type != "cpu")):
            return None
        if torch.is_grad_enabled() and (x.requires_grad or w.requires_grad or
                                        (b is not None and b.requires_grad)):
            return None
        rows = x.numel() // x.shape[-1]
        key = (id(w), rows)
        packed = self._packed.get(key)
        if packed is None:
            if self._shapes.get(id(w), 0) >= MAX_SHAPES:
                return None
            packed = torch.ops.mkl._mkl_reorder_linear_weight(w.detach(), rows)
            self._packed[key] = packed
            self._shapes[id(w)] = self._shapes.get(id(w), 0) + 1
        return packed


def linear_weights(bb) -> list[torch.Tensor]:
    """The backbone's fp32 CPU weight matrices of its linear layers (2-d, contiguous): the
    attention projections, the cross-attention ones, the feed-forward, the embedding
    projection and the head's dense layers."""
    out = []
    for lw in bb.layers:
        for aw in (lw.attn, lw.cross):
            if aw is not None:
                out += [aw.wq, aw.wk, aw.wv, aw.wo]
        out += [lw.w_in, lw.w_out]
    out += [getattr(bb, n, None) for n in ("emb_proj_w", "pooler_w", "cls_w")]
    return [w for w in out if w is not None and w.dim() == 2 and w.dtype == torch.float32
            and w.device.type == "cpu" and w.is_contiguous()]


def prepack(bb) -> LinearPacks:
    """Give ``bb`` packed linear weights (``bb.linear_packs``; packed lazily, per row count)
    and return them. Raises ``RuntimeError`` where packing is unavailable."""
    why = available()
    if why is not None:
        raise RuntimeError(why)
    bb.linear_packs = LinearPacks(linear_weights(bb))
    return bb.linear_packs


def unpack(bb) -> None:
    """Back to ``F.linear`` on the plain weights (the packed copies are released)."""
    bb.linear_packs = None

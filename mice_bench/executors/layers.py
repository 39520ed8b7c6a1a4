"""The shared layer driver, written with ``scaled_dot_product_attention`` over borrowed weights.

Shapes: ``B`` batch, ``T`` query-side (updated) tokens, ``S`` key tokens, ``H`` hidden,
``h`` heads, ``d = H / h``.

One function, :func:`layer_forward`, runs a layer for every executor and every family: it
updates the rows of ``x`` (whose segments are ``seg`` and positions ``pos``), attending to the
keys ``cat(x, extra)`` as the layer's 5x5 segment matrix allows (ANDed with the family's local
window, if the layer has one). The reference executor passes the whole sequence as ``x``; the
fast split executor passes the query part as ``x`` and frozen document states (or their cached
K/V) as ``extra``. A row with no allowed key gets a zero attention output (never NaN).

The sub-layer math (embeddings, projections, rotary positions, pre-/post-norm residuals,
feed-forward, head) belongs to the backbone's family adapter (``bb.family``,
:mod:`mice_bench.backbones`); this module only builds masks, picks keys and orders sub-layers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..backbone import Backbone, LayerWeights
from ..backbones.base import dropout_p, memo_get as _memo
from ..layerspec import SEG_INDEX, LayerSpec
from .inputs import key_segments, row_segments


def embed(bb: Backbone, input_ids, token_type_ids, position_ids) -> torch.Tensor:
    """Embeddings of the backbone's family: ``[B, T] -> [B, T, H]``."""
    return bb.family.embed(bb, input_ids, token_type_ids, position_ids)


def doc_kv(bb: Backbone, lw: LayerWeights, ls: LayerSpec, states: torch.Tensor,
           pos: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """K/V that layer ``lw`` reads from frozen states (cross sub-layer keys when the layer has
    one, else self-attention keys), exactly as :func:`layer_forward` computes them."""
    fam = bb.family
    if ls.cross_keys:
        return fam.cross_kv(bb, lw, lw.cross if lw.cross is not None else lw.attn, states)
    return fam.self_kv(bb, lw, states, _positions(pos, states), None)


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
           mask: torch.Tensor | None) -> torch.Tensor:
    """SDPA with a boolean mask (True = may attend) ``[B, 1, T, S]`` (or ``[B, 1, 1, S]``).

    Rows without any allowed key return zeros. Output ``[B, T, H]``. Attention dropout only
    inside :func:`~mice_bench.backbones.base.train_dropout` (training with ``dropout``).
    """
    p = dropout_p("attention")
    if p > 0:
        return _attend_dropout(q, k, v, mask, p)
    if mask is not None and mask.shape[-2] != 1:
        has = mask.any(-1, keepdim=True)  # [B, 1, T, 1]
        if not bool(has.all()):
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask | ~has)
            out = out * has.to(out.dtype)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    else:
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    B, n, T, d = out.shape
    return out.transpose(1, 2).reshape(B, T, n * d)


def _attend_dropout(q, k, v, mask, p: float) -> torch.Tensor:
    if mask is not None and mask.shape[-2] != 1:
        has = mask.any(-1, keepdim=True)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask | ~has, dropout_p=p)
        out = out * has.to(out.dtype)
    else:
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
    B, n, T, d = out.shape
    return out.transpose(1, 2).reshape(B, T, n * d)


def segment_mask(ls: LayerSpec, seg_q: torch.Tensor, seg_k: torch.Tensor,
                 cols: torch.Tensor | None = None) -> torch.Tensor | None:
    """Boolean attention mask ``[B, 1, T, S]`` from the layer's 5x5 matrix.

    ``seg_q [B, T]`` / ``seg_k [B, S]`` hold segment ids (-1 = padding, never attended).
    ``cols`` optionally restricts the key columns (bool ``[B, S]``). Returns a key-padding mask
    ``[B, 1, 1, S]`` when every present (row, column) segment pair is allowed.
    """
    valid_k = seg_k >= 0
    if cols is not None:
        valid_k = valid_k & cols
    allow = torch.tensor(ls.allow, dtype=torch.bool, device=seg_q.device)
    rows_present = torch.unique(seg_q[seg_q >= 0])
    cols_present = torch.unique(seg_k[valid_k])
    if cols_present.numel() and rows_present.numel() and \
            bool(allow[rows_present][:, cols_present].all()):
        return valid_k[:, None, None, :]
    sq, sk = seg_q.clamp(min=0), seg_k.clamp(min=0)
    m = allow[sq[:, :, None], sk[:, None, :]] & valid_k[:, None, :]
    m = m & (seg_q >= 0)[:, :, None]
    return m[:, None]


def window_mask(mask: torch.Tensor, pos_q: torch.Tensor, pos_k: torch.Tensor,
                window: int) -> torch.Tensor:
    """``mask`` ANDed with the local window ``|pos_q - pos_k| <= window`` (``[B, 1, T, S]``);
    unchanged when no pair of positions is farther apart than the window."""
    span = torch.cat([pos_q, pos_k], 1)
    if int(span.max() - span.min()) <= window:
        return mask
    near = (pos_q[:, :, None] - pos_k[:, None, :]).abs() <= window
    return mask & near[:, None]


def _positions(pos: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    if pos is not None:
        return pos
    B, T = x.shape[:2]
    return torch.arange(T, device=x.device).expand(B, T)


@dataclass
class Extra:
    """Keys from outside ``x``: frozen states ``[B, S, H]`` or cached ``(K, V)`` per weight set,
    their segments and (for rotary families and local windows) their positions."""

    seg: torch.Tensor  # [B, S]
    states: torch.Tensor | None = None
    kv_self: tuple[torch.Tensor, torch.Tensor] | None = None
    kv_cross: tuple[torch.Tensor, torch.Tensor] | None = None
    pos: torch.Tensor | None = None  # [B, S]


def layer_forward(bb: Backbone, lw: LayerWeights, ls: LayerSpec, x: torch.Tensor,
                  seg: torch.Tensor, extra: Extra | None = None,
                  memo: dict | None = None, pos: torch.Tensor | None = None) -> torch.Tensor:
    """Run one layer; returns the new states of ``x`` (frozen segments of ``x`` unchanged).

    Sub-layers: self-attention over ``x`` (plus the extra keys that are not read through
    cross-attention), the cross-attention sub-layer when ``ls.cross_keys`` (before the
    self-attention when ``ls.cross_first``), then the feed-forward block; their math is the
    family's (``bb.family``). Cross-attention uses the layer's own cross weights, or its
    self-attention weights when the backbone has none (the reference initialises them that
    way; the backbone is not modified).

    ``pos [B, T]``: position ids of ``x`` (rotary families, local windows; default 0..T-1).
    ``memo``: a dict shared by the layers of ONE forward call (same ``seg`` / ``extra.seg`` /
    positions) so that masks and rotary tables are built once, not once per layer (each build
    syncs a GPU).
    """
    fam = bb.family
    window = fam.window(bb, lw)
    positional = window is not None or fam.rotary
    if positional:
        pos = _positions(pos, x)
    cross_idx = [SEG_INDEX[s] for s in ls.cross_keys]
    mkey = (ls.allow, ls.cross_keys, ls.cross_uniform, ls.frozen, tuple(seg.shape),
            tuple(extra.seg.shape) if extra is not None else None, window)
    # rows and keys by the segment they behave as (skip-list and expansion tokens, see
    # :mod:`.inputs`): ``seg`` for rows, ``seg_key`` / ``extra_key`` for keys
    seg, seg_key, extra_key = _memo(memo, ("canon", *mkey), lambda: (
        row_segments(seg), key_segments(seg),
        key_segments(extra.seg) if extra is not None else None))

    def is_cross(segs: torch.Tensor) -> torch.Tensor:
        if not cross_idx:
            return torch.zeros_like(segs, dtype=torch.bool)
        return torch.isin(segs, torch.tensor(cross_idx, device=segs.device))

    # self-attention keys: x, plus the extra keys that are not read through cross-attention
    extra_self = extra is not None and _memo(
        memo, ("extra_self", *mkey),
        lambda: not bool(is_cross(extra_key[extra_key >= 0]).all()))
    extra_pos = _positions(extra.pos, extra.seg) if extra is not None and positional else None

    def self_sub(h: torch.Tensor) -> torch.Tensor:
        q, k, v = fam.self_qkv(bb, lw, h, pos, memo)
        if extra_self:
            if extra.kv_self is not None:
                ke, ve = extra.kv_self
            else:
                ke, ve = fam.self_kv(bb, lw, extra.states, extra_pos, memo)
            k, v = torch.cat([k, ke], 2), torch.cat([v, ve], 2)

        def self_mask():
            seg_k = torch.cat([seg_key, extra_key], 1) if extra_self else seg_key
            m = segment_mask(ls, seg, seg_k, cols=~is_cross(seg_k) if cross_idx else None)
            if window is not None:
                pos_k = torch.cat([pos, extra_pos], 1) if extra_self else pos
                m = window_mask(m, pos, pos_k, window)
            return m

        return fam.self_out(bb, lw, attend(q, k, v, _memo(memo, ("self", *mkey), self_mask)), h)

    def cross_sub(h: torch.Tensor) -> torch.Tensor:
        cw = lw.cross if lw.cross is not None else lw.attn
        qc = fam.cross_q(bb, lw, cw, h)
        # reference executor: the cross keys are inside x (and maybe in extra too)
        x_cross = _memo(memo, ("x_cross", *mkey), lambda: bool(is_cross(seg_key).any()))
        if extra is not None:
            if extra.kv_cross is not None:
                kc, vc = extra.kv_cross
            else:
                kc, vc = fam.cross_kv(bb, lw, cw, extra.states)
            seg_c = extra_key
            if x_cross:
                kx, vx = fam.cross_kv(bb, lw, cw, x)
                kc, vc = torch.cat([kx, kc], 2), torch.cat([vx, vc], 2)
                seg_c = torch.cat([seg_key, extra_key], 1)
        else:  # keys read through cross-attention are the layer's input states (frozen)
            kc, vc = fam.cross_kv(bb, lw, cw, x)
            seg_c = seg_key

        def cross_mask():
            cols = is_cross(seg_c) & (seg_c >= 0)
            m = segment_mask(ls, seg, seg_c, cols=cols)
            uni = None
            if ls.cross_uniform:
                uni = torch.isin(seg, torch.tensor([SEG_INDEX[s] for s in ls.cross_uniform],
                                                   device=seg.device))  # [B, T]
                m = m.expand(-1, -1, seg.shape[1], -1) | \
                    (uni[:, None, :, None] & cols[:, None, None, :])
            reads = m.any(-1)  # [B, 1, T] (or [B, 1, 1]): rows the sub-layer updates
            all_read = bool(reads[:, 0][seg >= 0].all()) if reads.shape[-1] == seg.shape[1] \
                else bool(reads.all())
            return m, uni, None if all_read else reads[:, 0, :, None]

        cmask, uni, reads = _memo(memo, ("cross", *mkey), cross_mask)
        if uni is not None:  # zero queries: uniform weights over the valid cross keys
            qc = qc * (~uni)[:, None, :, None].to(qc.dtype)
        out = fam.cross_out(bb, lw, cw, attend(qc, kc, vc, cmask), h)
        if reads is not None:  # rows that read no cross key skip the sub-layer
            out = torch.where(reads, out, h)
        return out

    if cross_idx and ls.cross_first:
        h1 = self_sub(cross_sub(x))
    elif cross_idx:
        h1 = cross_sub(self_sub(x))
    else:
        h1 = self_sub(x)
    out = fam.ffn(bb, lw, h1)
    if ls.frozen:
        fro = _memo(memo, ("frozen", *mkey), lambda: torch.isin(
            seg, torch.tensor([SEG_INDEX[s] for s in ls.frozen], device=seg.device)))
        out = torch.where(fro[..., None], x, out)
    return out

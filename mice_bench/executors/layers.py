"""The BERT layer math, written with ``scaled_dot_product_attention`` over borrowed weights.

Shapes: ``B`` batch, ``T`` query-side (updated) tokens, ``S`` key tokens, ``H`` hidden,
``h`` heads, ``d = H / h``.

One function, :func:`layer_forward`, runs a layer for every executor: it updates the rows of
``x`` (whose segments are ``seg``), attending to the keys ``cat(x, extra)`` as the layer's
5x5 segment matrix allows. The reference executor passes the whole sequence as ``x``; the fast
split executor passes the query part as ``x`` and frozen document states (or their cached K/V)
as ``extra``. A row with no allowed key gets a zero attention output (never NaN).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..backbone import AttentionWeights, Backbone, LayerWeights
from ..spec import SEG_INDEX, LayerSpec


def activation(name: str):
    if name == "gelu":
        return F.gelu
    if name in ("gelu_new", "gelu_pytorch_tanh", "gelu_fast"):
        return lambda x: F.gelu(x, approximate="tanh")
    if name == "relu":
        return F.relu
    raise ValueError(f"unsupported activation {name!r}")


def embed(bb: Backbone, input_ids, token_type_ids, position_ids) -> torch.Tensor:
    """Embeddings + LayerNorm: ``[B, T] -> [B, T, H]``."""
    x = bb.word_emb[input_ids] + bb.pos_emb[position_ids] + bb.type_emb[token_type_ids]
    return F.layer_norm(x, (bb.hidden_size,), bb.emb_ln_w, bb.emb_ln_b, bb.layer_norm_eps)


def heads(x: torch.Tensor, n: int) -> torch.Tensor:
    """``[B, T, H] -> [B, h, T, d]``."""
    B, T, H = x.shape
    return x.view(B, T, n, H // n).transpose(1, 2)


def project_kv(aw: AttentionWeights, x: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys and values of ``x [B, S, H]`` as ``[B, h, S, d]`` each."""
    return heads(F.linear(x, aw.wk, aw.bk), n), heads(F.linear(x, aw.wv, aw.bv), n)


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
           mask: torch.Tensor | None) -> torch.Tensor:
    """SDPA with a boolean mask (True = may attend) ``[B, 1, T, S]`` (or ``[B, 1, 1, S]``).

    Rows without any allowed key return zeros. Output ``[B, T, H]``.
    """
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


def _out(aw: AttentionWeights, ctx: torch.Tensor, resid: torch.Tensor, eps: float) -> torch.Tensor:
    return F.layer_norm(F.linear(ctx, aw.wo, aw.bo) + resid, (resid.shape[-1],), aw.ln_w,
                        aw.ln_b, eps)


def ffn(lw: LayerWeights, x: torch.Tensor, act, eps: float) -> torch.Tensor:
    y = F.linear(act(F.linear(x, lw.w_in, lw.b_in)), lw.w_out, lw.b_out)
    return F.layer_norm(y + x, (x.shape[-1],), lw.ln_w, lw.ln_b, eps)


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


@dataclass
class Extra:
    """Keys from outside ``x``: frozen states ``[B, S, H]`` or cached ``(K, V)`` per weight set."""

    seg: torch.Tensor  # [B, S]
    states: torch.Tensor | None = None
    kv_self: tuple[torch.Tensor, torch.Tensor] | None = None
    kv_cross: tuple[torch.Tensor, torch.Tensor] | None = None


def _memo(memo: dict | None, key: tuple, make):
    if memo is None:
        return make()
    if key not in memo:
        memo[key] = make()
    return memo[key]


def layer_forward(bb: Backbone, lw: LayerWeights, ls: LayerSpec, x: torch.Tensor,
                  seg: torch.Tensor, extra: Extra | None = None,
                  memo: dict | None = None) -> torch.Tensor:
    """Run one layer; returns the new states of ``x`` (frozen segments of ``x`` unchanged).

    Sub-layers: self-attention over ``x`` (plus the extra keys that are not read through
    cross-attention), the cross-attention sub-layer when ``ls.cross_keys`` (before the
    self-attention when ``ls.cross_first``), then the feed-forward block. Cross-attention uses
    the layer's own cross weights, or its self-attention weights when the backbone has none
    (the reference initialises them that way; the backbone is not modified).

    ``memo``: a dict shared by the layers of ONE forward call (same ``seg`` / ``extra.seg``)
    so that masks depending only on the segments and the layer pattern are built once, not
    once per layer (each build syncs a GPU).
    """
    n, eps = bb.num_heads, bb.layer_norm_eps
    act = activation(bb.hidden_act)
    cross_idx = [SEG_INDEX[s] for s in ls.cross_keys]
    mkey = (ls.allow, ls.cross_keys, ls.cross_uniform, ls.frozen, tuple(seg.shape),
            tuple(extra.seg.shape) if extra is not None else None)

    def is_cross(segs: torch.Tensor) -> torch.Tensor:
        if not cross_idx:
            return torch.zeros_like(segs, dtype=torch.bool)
        return torch.isin(segs, torch.tensor(cross_idx, device=segs.device))

    # self-attention keys: x, plus the extra keys that are not read through cross-attention
    extra_self = extra is not None and _memo(
        memo, ("extra_self", *mkey),
        lambda: not bool(is_cross(extra.seg[extra.seg >= 0]).all()))

    def self_sub(h: torch.Tensor) -> torch.Tensor:
        aw = lw.attn
        q = heads(F.linear(h, aw.wq, aw.bq), n)
        k, v = project_kv(aw, h, n)
        if extra_self:
            if extra.kv_self is not None:
                ke, ve = extra.kv_self
            else:
                ke, ve = project_kv(aw, extra.states, n)
            k, v = torch.cat([k, ke], 2), torch.cat([v, ve], 2)

        def self_mask():
            seg_k = torch.cat([seg, extra.seg], 1) if extra_self else seg
            return segment_mask(ls, seg, seg_k, cols=~is_cross(seg_k) if cross_idx else None)

        return _out(aw, attend(q, k, v, _memo(memo, ("self", *mkey), self_mask)), h, eps)

    def cross_sub(h: torch.Tensor) -> torch.Tensor:
        cw = lw.cross if lw.cross is not None else lw.attn
        qc = heads(F.linear(h, cw.wq, cw.bq), n)
        # reference executor: the cross keys are inside x (and maybe in extra too)
        x_cross = _memo(memo, ("x_cross", *mkey), lambda: bool(is_cross(seg).any()))
        if extra is not None:
            if extra.kv_cross is not None:
                kc, vc = extra.kv_cross
            else:
                kc, vc = project_kv(cw, extra.states, n)
            seg_c = extra.seg
            if x_cross:
                kx, vx = project_kv(cw, x, n)
                kc, vc = torch.cat([kx, kc], 2), torch.cat([vx, vc], 2)
                seg_c = torch.cat([seg, extra.seg], 1)
        else:  # keys read through cross-attention are the layer's input states (frozen)
            kc, vc = project_kv(cw, x, n)
            seg_c = seg

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
        out = _out(cw, attend(qc, kc, vc, cmask), h, eps)
        if reads is not None:  # rows that read no cross key skip the sub-layer
            out = torch.where(reads, out, h)
        return out

    if cross_idx and ls.cross_first:
        h1 = self_sub(cross_sub(x))
    elif cross_idx:
        h1 = cross_sub(self_sub(x))
    else:
        h1 = self_sub(x)
    out = ffn(lw, h1, act, eps)
    if ls.frozen:
        fro = _memo(memo, ("frozen", *mkey), lambda: torch.isin(
            seg, torch.tensor([SEG_INDEX[s] for s in ls.frozen], device=seg.device)))
        out = torch.where(fro[..., None], x, out)
    return out

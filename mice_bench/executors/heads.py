"""Scoring heads. All return fp32 scores ``[B]`` whatever the compute dtype.

* ``cls``: the checkpoint's classification head as its family defines it (BERT: pooler +
  classifier on ``[CLS]``; ELECTRA / RoBERTa: their dense + out_proj heads; ModernBERT: ``cls``
  or ``mean`` pooling, dense + act + norm, classifier), on the query side. With two labels
  the score is ``logit[1] - logit[0]``.
* ``maxsim`` (ColBERT): ``sum_i max_j cos(P q_i, P d_j)`` over the valid tokens of the query
  part and of the document part, with ``P`` the optional linear projection (ColBERT's 128-d
  ``linear``; the identity without one).
* ``mean-cos`` (bi-encoder): cosine of the pooled query part and document part (over
  valid tokens, special tokens included, as sentence-transformers pools; mean pooling unless
  the checkpoint's ``Pooling`` module says ``cls`` / ``max`` / ...).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..backbone import Backbone


def cls_score(bb: Backbone, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """The family's classification head on final states ``x [B, T, H]`` (``[CLS]`` first;
    ``mask [B, T]``: the tokens a mean-pooling head averages) -> ``[B]`` fp32. A ``[B, H]``
    input is read as the ``[CLS]`` states."""
    if x.dim() == 2:
        x = x[:, None]
    if mask is None:
        mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
    return bb.family.cls_score(bb, x, mask)


def maxsim(q: torch.Tensor, q_mask: torch.Tensor, d: torch.Tensor, d_mask: torch.Tensor,
           projection: torch.Tensor | None = None, d_vectors: bool = False) -> torch.Tensor:
    """``q [B, Tq, H]``, ``q_mask [B, Tq]``, ``d [B, Td, H]``, ``d_mask [B, Td]`` -> ``[B]``.

    ``projection [D, H]`` (optional) maps token vectors to ``D`` dims before normalising.
    ``d_vectors``: ``d [B, Td, D]`` is already projected and normalised (a stored index);
    only the query side is. One query row (``q [1, Tq, H]``, ``q_mask [1, Tq]``) is scored
    against every document row: projected and normalised once, then one matrix product
    with all the documents' tokens (no per-pair copy of the query).

    >>> q = torch.tensor([[[1.0, 0.0], [0.0, 2.0]]])          # two query tokens
    >>> d = torch.tensor([[[3.0, 0.0], [1.0, 1.0], [0.0, 0.0]]])
    >>> m = torch.tensor([[True, True, False]])               # the last token is padding
    >>> maxsim(q, torch.tensor([[True, True]]), d, m)          # 1 + cos(45 deg)
    tensor([1.7071])
    """
    q, d = q.float(), d.float()
    if projection is not None:
        p = projection.float()
        q = q @ p.T
        if not d_vectors:
            d = d @ p.T
    qn = F.normalize(q, dim=-1)
    dn = d if d_vectors else F.normalize(d, dim=-1)
    if qn.shape[0] == 1 and dn.shape[0] != 1:     # one query, many documents: one GEMM
        B, Td, D = dn.shape
        # padding enters the product as a -inf bias, and the max runs along contiguous
        # document tokens (query tokens as rows): no masked copy, no strided reduction
        pad = torch.zeros(1, B * Td, dtype=dn.dtype, device=dn.device).masked_fill_(
            ~d_mask.reshape(1, B * Td), float("-inf"))
        sim = torch.addmm(pad, qn[0], dn.reshape(B * Td, D).T).view(-1, B, Td)  # [Tq, B, Td]
        best = sim.amax(-1).T                                                   # [B, Tq]
    else:
        sim = torch.einsum("bqh,bdh->bqd", qn, dn)
        best = sim.masked_fill(~d_mask[:, None, :], float("-inf")).max(-1).values
    return best.masked_fill(~q_mask, 0.0).sum(-1)


def mean_pool(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``x [B, T, H]``, ``mask [B, T] -> [B, H]`` (fp32)."""
    m = mask.to(torch.float32)[..., None]
    return (x.float() * m).sum(1) / m.sum(1).clamp(min=1e-9)


def pool(x: torch.Tensor, mask: torch.Tensor, modes=("mean",)) -> torch.Tensor:
    """sentence-transformers ``Pooling``: ``x [B, T, H]``, ``mask [B, T]`` -> ``[B, H * k]``
    (fp32), the modes concatenated in the order given: ``cls`` (first token), ``mean``,
    ``max`` (padding at -1e9), ``mean_sqrt_len`` (sum / sqrt(tokens)), ``lasttoken``."""
    out = []
    m = mask.to(torch.float32)[..., None]
    for mode in modes:
        if mode == "cls":  # the part's first token (a part may start inside x: reference)
            first = mask.long().argmax(1)
            out.append(x.float()[torch.arange(x.shape[0], device=x.device), first])
        elif mode == "mean":
            out.append(mean_pool(x, mask))
        elif mode == "max":
            out.append(x.float().masked_fill(~mask.bool()[..., None], -1e9).max(1).values)
        elif mode == "mean_sqrt_len":
            out.append((x.float() * m).sum(1) / m.sum(1).clamp(min=1e-9).sqrt())
        elif mode == "lasttoken":
            T = mask.shape[1]
            last = T - 1 - mask.long().flip(1).argmax(1)
            out.append(x.float()[torch.arange(x.shape[0], device=x.device), last])
        else:
            raise ValueError(f"unknown pooling mode {mode!r}")
    return out[0] if len(out) == 1 else torch.cat(out, -1)


def mean_cos(q: torch.Tensor, q_mask: torch.Tensor, d: torch.Tensor,
             d_mask: torch.Tensor, pooling=("mean",)) -> torch.Tensor:
    """Cosine of pooled parts (mean pooling unless the checkpoint pools otherwise):
    ``[B, Tq, H], [B, Td, H] -> [B]``."""
    return F.cosine_similarity(pool(q, q_mask, pooling), pool(d, d_mask, pooling), dim=-1)

"""Token pooling of stored documents: fewer vectors (or states) per document, each the mean
of a cluster of the document's own tokens (Clavié et al., 2024, "Reducing the footprint of
multi-vector retrieval with minimal performance impact via token pooling"; PyLate's
``pool_factor``).

Per document, with pool factor ``f`` (``f = 1``: nothing changes):

* only the tokens of the document's **text** are pooled: those of its most frequent segment
  (``doc``); every token of another segment (``[CLS]``, ``[SEP]``, markers) is kept as it
  is, so a special token is never averaged with words (PyLate keeps the first token apart,
  ``protected_tokens=1``, for the same reason);
* the ``n`` text tokens are clustered hierarchically with
  ``scipy.cluster.hierarchy.linkage(method="ward")`` on the vectors themselves (Euclidean;
  for unit vectors a monotone function of their cosine), the tree cut into
  ``max(1, ceil(n / f))`` clusters (``fcluster(criterion="maxclust")``); PyLate takes
  ``max(1, n // f)`` and clusters the rows of the ``1 - cosine`` matrix: rounding up keeps a
  document at least ``1 / f`` of its words;
* each cluster is stored as the **mean** of its members, at the place of its first member
  (pooled tokens keep the document's reading order), with its segment id.

Padding never reaches the pooling: the store keeps only the real tokens of each document
(:func:`.packing.flatten`), and the pooled lengths become the new document mask. Pooled
``vectors`` are means of unit vectors: they are normalised again after decoding, as the
store's residual formats do (:func:`.packing.finish`); pooled ``states`` are kept as means.
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["pooled_count", "cluster_tokens", "pool_tokens"]


def pooled_count(n: int, factor: int, special: int = 0) -> int:
    """Stored tokens of a document of ``n`` text tokens and ``special`` others at pool
    factor ``factor``.

    >>> [pooled_count(n, 2) for n in (1, 2, 3, 4, 9)], pooled_count(9, 2, special=2)
    ([1, 1, 2, 2, 5], 7)
    """
    if factor <= 1 or n <= 1:
        return n + special
    return special + max(1, math.ceil(n / factor))


def cluster_tokens(x: np.ndarray, clusters: int) -> np.ndarray:
    """Cluster labels ``0 .. c - 1`` of the rows of ``x`` (Ward linkage, the tree cut into
    at most ``clusters``: ``c < clusters`` only where merges tie), numbered in the order of
    each cluster's first row."""
    from scipy.cluster.hierarchy import fcluster, linkage

    n = x.shape[0]
    if clusters >= n:
        return np.arange(n)
    if clusters <= 1:
        return np.zeros(n, dtype=np.int64)
    labels = fcluster(linkage(x.astype(np.float64), method="ward"), t=clusters,
                      criterion="maxclust")
    _, first = np.unique(labels, return_index=True)
    order = np.argsort(first)                  # clusters by their first row
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return rank[np.searchsorted(np.unique(labels), labels)]


def pool_tokens(x: torch.Tensor, seg: torch.Tensor, lengths: torch.Tensor, factor: int
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Flattened documents (``x [tokens, H]``, ``seg [tokens]``, ``lengths [n]``, as
    :func:`.packing.flatten` returns them) pooled at ``factor`` (module docstring): the
    same three, with fewer tokens. ``factor = 1`` returns them unchanged."""
    if factor < 1:
        raise ValueError(f"pool factor must be >= 1, got {factor}")
    if factor == 1:
        return x, seg, lengths
    xs, segs, out_len = [], [], []
    start = 0
    xf = x.detach().float().cpu()
    for n in lengths.tolist():
        doc, dseg = xf[start:start + n], seg[start:start + n]
        start += n
        if n == 0:
            out_len.append(0)
            continue
        text = dseg == torch.mode(dseg.long()).values.to(dseg.dtype)
        where = torch.nonzero(text).flatten()
        m = pooled_count(len(where), factor)
        if m == len(where):
            xs.append(doc)
            segs.append(dseg)
            out_len.append(n)
            continue
        lab = torch.from_numpy(cluster_tokens(doc[where].numpy(), m)).long()
        k = int(lab.max()) + 1         # maxclust may cut fewer clusters (tied merges)
        means = torch.zeros(k, doc.shape[1]).index_add_(0, lab, doc[where]) \
            / torch.bincount(lab, minlength=k).clamp_min(1)[:, None]
        first = torch.full((k,), n, dtype=torch.long).scatter_reduce_(0, lab, where,
                                                                      reduce="amin")
        keep = torch.nonzero(~text).flatten()
        # special tokens at their places, each cluster at its first member's
        place = torch.cat([keep, first])
        order = torch.argsort(place)
        xs.append(torch.cat([doc[keep], means])[order])
        segs.append(torch.cat([dseg[keep], dseg[first]])[order])
        out_len.append(len(keep) + k)
    H = x.shape[1] if x.ndim == 2 else 1
    return (torch.cat(xs) if xs else torch.zeros(0, H),
            torch.cat(segs) if segs else seg[:0],
            torch.tensor(out_len, dtype=lengths.dtype))

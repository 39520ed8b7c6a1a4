"""Document states <-> flat token rows, and compressed documents held in memory.

* :func:`flatten`: right-padded ``DocStates [n, T, H]`` -> the real tokens ``[tokens, H]``
  (fp32), their segment ids (int8) and the documents' lengths (int32);
* :func:`padded`: the inverse, vectorised (one masked assignment, on the tensors' device);
* :class:`PackedDocs`: documents compressed with a codec (:mod:`.codecs`) in memory, decoded a
  batch at a time on the scoring device (:meth:`PackedDocs.decode`), as a re-ranker reading a
  compressed store does; :func:`compress` builds one (fitting the codec on the documents'
  own tokens when it needs parameters).

``content``: ``states`` (split-layer hidden states), ``vectors`` (a late-interaction head's
unit vectors: decoded vectors of a lossy residual code are normalised again, as ColBERTv2
does) or ``pooled`` (a bi-encoder's one normalised vector per document, a 1-token row).
Decoded ``vectors`` and ``pooled`` rows are marked as the head's vectors (``DocStates.vectors``),
so the executor scores them without touching the document side again (MaxSim; a dot product).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..executors.base import DOC_NONE
from .codecs import Codec, get_codec

__all__ = ["flatten", "padded", "finish", "PackedDocs", "compress", "split_heldout", "CONTENTS",
           "store_content", "store_encoder"]

CONTENTS = ("states", "vectors", "pooled")


def flatten(states) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(x [tokens, H] fp32, seg [tokens] int8, lengths [n] int32)`` of the real tokens."""
    mask = states.mask.bool().cpu()
    lengths = mask.sum(1)
    T = mask.shape[1]
    prefix = torch.arange(T)[None, :] < lengths[:, None]
    if not bool((prefix == mask).all()):
        raise ValueError("document states are not right-padded; the store keeps real tokens "
                         "as a prefix of each row")
    x = states.hidden.detach().cpu().float()[mask]
    return x, states.seg.cpu()[mask].to(torch.int8), lengths.to(torch.int32)


def padded(x: torch.Tensor, seg: torch.Tensor, lengths: torch.Tensor, content: str = "states"):
    """DocStates ``[n, max(lengths), H]`` from flat token rows (on ``x``'s device)."""
    from ..executors import DocStates

    dev = x.device
    lengths = lengths.to(dev).long()
    n = lengths.numel()
    T = max(int(lengths.max()) if n else 1, 1)
    H = x.shape[1] if x.ndim == 2 else 1
    mask = torch.arange(T, device=dev)[None, :] < lengths[:, None]
    hidden = torch.zeros(n, T, H, dtype=x.dtype, device=dev)
    hidden[mask] = x
    sg = torch.full((n, T), -1, dtype=torch.long, device=dev)
    sg[mask] = seg.to(dev).long()
    return DocStates(hidden, mask, sg, None, vectors=content != "states")


def finish(x: torch.Tensor, codec: Codec, content: str, pooled: bool = False) -> torch.Tensor:
    """Decoded rows of a lossy residual code of unit vectors, or of pooled unit vectors (a
    cluster's mean), normalised again."""
    if (codec.trained or pooled) and content in ("vectors", "pooled"):
        return torch.nn.functional.normalize(x.float(), dim=-1).to(x.dtype)
    return x


def store_content(ex) -> str:
    """What a store keeps for executor ``ex``: ``vectors`` for late interaction (maxsim head, no
    interaction layer), ``pooled`` for a bi-encoder (mean-cos head, no interaction layer),
    else ``states`` (the split-layer states its interaction layers read)."""
    return "states" if ex.doc_repr == DOC_NONE else ex.doc_repr


def store_encoder(ex, batch_size: int = 64):
    """texts -> what :func:`store_content` says ``ex``'s store keeps (DocStates: the head's
    vectors, :meth:`~mice_bench.executors.fast.SplitExecutor.doc_vectors`, for ``vectors`` and
    ``pooled``)."""
    return lambda tx: ex.encode_documents(tx, batch_size=batch_size)


@dataclass
class PackedDocs:
    """Documents compressed in memory: ``parts`` (per-token codec tensors), ``params``."""

    codec: Codec
    params: dict
    parts: dict
    seg: torch.Tensor
    lengths: torch.Tensor
    content: str = "states"
    pool_factor: int = 1

    def __len__(self) -> int:
        return self.lengths.numel()

    @property
    def nbytes(self) -> int:
        n = sum(t.numel() * t.element_size() for t in self.parts.values())
        return n + self.seg.numel() + 4 * self.lengths.numel()

    @property
    def params_nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.params.values())

    def to(self, device) -> "PackedDocs":
        return PackedDocs(self.codec, {k: v.to(device) for k, v in self.params.items()},
                          {k: v.to(device) for k, v in self.parts.items()},
                          self.seg.to(device), self.lengths.to(device), self.content,
                          self.pool_factor)

    def decode(self, start: int = 0, stop: int | None = None, device="cpu"):
        """DocStates of documents ``start:stop``, decoded on ``device`` in one batch."""
        stop = len(self) if stop is None else stop
        off = torch.zeros(len(self) + 1, dtype=torch.long, device=self.lengths.device)
        off[1:] = torch.cumsum(self.lengths.long(), 0)
        a, b = int(off[start]), int(off[stop])
        parts = {k: v[a:b] for k, v in self.parts.items()}
        x = finish(self.codec.decode(parts, self.params, device), self.codec, self.content,
                   self.pool_factor > 1)
        return padded(x, self.seg[a:b], self.lengths[start:stop], self.content)


def compress(states, fmt: str, seed: int = 0, content: str = "states",
             centroids: int | None = None, pool_factor: int = 1) -> PackedDocs:
    """``states`` compressed with the ``fmt`` codec (fitted on their own tokens, 5 % held out
    for the residual statistics, when it needs parameters), each document's tokens pooled
    first at ``pool_factor`` (:mod:`.pooling`; 1: none)."""
    from .pooling import pool_tokens

    codec = get_codec(fmt)
    x, seg, lengths = pool_tokens(*flatten(states), pool_factor)
    params = {}
    if codec.trained:
        train, held = split_heldout(x, seed)
        params = codec.fit(train, held, seed=seed, centroids=centroids)
    return PackedDocs(codec, params, codec.encode(x, params), seg, lengths, content,
                      pool_factor)


def split_heldout(x: torch.Tensor, seed: int, fraction: float = 0.05
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded split of token rows into (k-means sample, held-out rows for the residual
    statistics), as ColBERTv2 holds out 5 % of its sample."""
    n = x.shape[0]
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))
    m = max(1, int(n * fraction)) if n > 1 else 0
    return x[perm[m:]], x[perm[:m]]

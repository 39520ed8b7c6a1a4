"""The reference executor: runs ANY spec with per-layer 4-D attention masks.

Each (query, document) pair is one sequence: ``[CLS] q [SEP] d [SEP]`` for the joint layout,
or the query part followed by the document part (each numbering its positions as the spec's
tokenization says) for the split layout. Every kept layer builds its ``[B, 1, T, T]`` mask
from the spec's segment matrix; frozen segments keep their states; dropped layers are
skipped; ``cross`` keys go through a second masked attention call with the cross-attention
weights, before or after the self-attention as the layer says. Slow and simple: it *defines*
the semantics that the fast paths are tested against.
"""

from __future__ import annotations

import torch

from .base import Executor
from .inputs import TokenBatch, doc_side, query_side
from .layers import embed, layer_forward


class ReferenceExecutor(Executor):
    kind = "reference"

    def tokenize_pairs(self, queries: list[str], docs: list[str]) -> TokenBatch:
        if self.spec.layout == "joint":
            return self.tokenizer.pairs(queries, docs)
        return self.tokenizer.split_pairs(queries, docs)

    def forward_pairs(self, tb: TokenBatch) -> torch.Tensor:
        bb = self.backbone
        tb = tb.to(bb.device)
        x = embed(bb, tb.input_ids, tb.token_type_ids, tb.position_ids)
        seg, pos = tb.segment_ids, tb.position_ids
        memo: dict = {}
        for lw, ls in zip(bb.layers, self.layer_specs):
            if ls.dropped:
                continue
            x = layer_forward(bb, lw, ls, x, seg, memo=memo, pos=pos)
        q_mask = query_side(seg)
        d_mask = doc_side(seg)
        return self.head(x, q_mask, x, d_mask, d_seg=seg).float()

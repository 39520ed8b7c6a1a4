"""The reference executor: runs ANY spec with per-layer 4-D attention masks.

Each (query, document) pair is one sequence: ``[CLS] q [SEP] d [SEP]`` for the joint layout,
or the query part followed by the document part (positions restarting) for the split layout.
Every kept layer builds its ``[B, 1, T, T]`` mask from the spec's segment matrix; frozen
segments keep their states; dropped layers are skipped; ``cross`` keys go through a second
masked attention call with the cross-attention weights. Slow and simple: it *defines* the
semantics that the fast paths are tested against.
"""

from __future__ import annotations

import torch

from ..backbone import Backbone
from ..spec import InteractionSpec
from .base import Executor
from .heads import cls_score, maxsim, mean_cos
from .inputs import TokenBatch
from .layers import embed, layer_forward


class ReferenceExecutor(Executor):
    kind = "reference"
    has_doc_precompute = False

    def tokenize_pairs(self, queries: list[str], docs: list[str]) -> TokenBatch:
        if self.spec.layout == "joint":
            return self.tokenizer.pairs(queries, docs)
        return self.tokenizer.split_pairs(queries, docs)

    @torch.inference_mode()
    def forward_pairs(self, tb: TokenBatch) -> torch.Tensor:
        bb: Backbone = self.backbone
        tb = tb.to(bb.device)
        x = embed(bb, tb.input_ids, tb.token_type_ids, tb.position_ids)
        seg = tb.segment_ids
        memo: dict = {}
        for lw, ls in zip(bb.layers, self.layer_specs):
            if ls.dropped:
                continue
            x = layer_forward(bb, lw, ls, x, seg, memo=memo)
        return self._head(x, seg).float().cpu()

    def _head(self, x: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        spec: InteractionSpec = self.spec
        if spec.head == "cls":
            return cls_score(self.backbone, x[:, 0])
        q_mask = (seg >= 0) & (seg <= 2)
        d_mask = seg >= 3
        if spec.head == "maxsim":
            return maxsim(self.backbone, x, q_mask, x, d_mask, spec.projection)
        return mean_cos(x, q_mask, x, d_mask)

    def score_pairs(self, queries: list[str], docs: list[str],
                    batch_size: int = 32) -> torch.Tensor:
        out = []
        for i in range(0, len(queries), batch_size):
            tb = self.tokenize_pairs(queries[i:i + batch_size], docs[i:i + batch_size])
            out.append(self.forward_pairs(tb))
        return torch.cat(out) if out else torch.zeros(0)

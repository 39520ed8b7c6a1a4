"""Common executor plumbing: spec materialisation, tokenizer, pair scoring entry points."""

from __future__ import annotations

import torch

from ..backbone import Backbone
from ..spec import InteractionSpec
from .inputs import Tokenizer


class Executor:
    """Scores (query, document) pairs under an interaction spec on a backbone."""

    kind = "base"
    has_doc_precompute = False

    def __init__(self, spec: InteractionSpec, backbone: Backbone, query_max_tokens: int = 32,
                 doc_max_tokens: int | None = None):
        self.spec = spec
        self.backbone = backbone
        self.layer_specs = spec.layers(backbone.num_layers)
        if any(ls.cross_keys for ls in self.layer_specs if not ls.dropped):
            backbone.ensure_cross_weights()
        self.tokenizer = Tokenizer(backbone.tokenizer, backbone.max_positions,
                                   query_max_tokens=query_max_tokens,
                                   doc_max_tokens=doc_max_tokens,
                                   doc_token_type=spec.doc_token_type)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec}, {self.backbone.describe()})"

    def score_pairs(self, queries: list[str], docs: list[str],
                    batch_size: int = 32) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def rerank(self, query: str, docs: list[str], batch_size: int = 32) -> torch.Tensor:
        """Scores ``[N]`` (fp32, cpu) of one query's candidates."""
        return self.score_pairs([query] * len(docs), list(docs), batch_size=batch_size)

"""Encoder families behind one adapter interface (:class:`~.base.Family`).

A family adapter turns a Hugging Face checkpoint into a :class:`~mice_bench.backbone.Backbone`
and supplies its math to the shared layer driver (:func:`mice_bench.executors.layers.
layer_forward`): embeddings, the self-attention / cross-attention / feed-forward sub-layers
(post-norm or pre-norm, absolute or rotary positions, local windows), the final norm, the
classification head, the FLOP dimensions and the Hugging Face state-dict names for saving and
loading. Executors call the adapter, never family-specific code; adding a family is one module
and one :func:`register_family` call.

=============  ===========================================  ===================================
family         ``model_type``                               notes
=============  ===========================================  ===================================
``bert``       ``bert``                                     post-norm; pooler (tanh) + classifier
``electra``    ``electra``                                  post-norm; embedding projection;
                                                            dense + GELU + out_proj head
``roberta``    ``roberta``, ``xlm-roberta``                 post-norm; positions from
                                                            ``padding_idx + 1``; one token type;
                                                            ``<s> q </s></s> d </s>`` pairs;
                                                            dense + tanh + out_proj head
``modernbert`` ``modernbert`` (ModernBERT, Ettin, gte-       pre-norm; rotary positions; GeGLU;
               reranker-modernbert)                         alternating local / global layers;
                                                            final norm; cls or mean pooling
=============  ===========================================  ===================================
"""

from __future__ import annotations

from .base import Family
from .bert import BertFamily, ElectraFamily, RobertaFamily
from .modernbert import ModernBertFamily
from .registry import FAMILIES, family_for, get_family, register_family
from .weights import AttentionWeights, Backbone, LayerWeights

for _fam in (BertFamily(), ElectraFamily(), RobertaFamily(), ModernBertFamily()):
    register_family(_fam)

__all__ = ["Family", "FAMILIES", "register_family", "family_for", "get_family",
           "AttentionWeights", "Backbone", "LayerWeights"]

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

from ..errors import UsageError
from .base import Family

#: ``config.model_type`` -> family adapter
FAMILIES: dict[str, Family] = {}
_BY_NAME: dict[str, Family] = {}


def register_family(family: Family) -> Family:
    """Register an adapter under its name and every ``model_type`` it reads."""
    _BY_NAME[family.name] = family
    for mt in family.model_types:
        FAMILIES[mt] = family
    return family


def family_for(model_type: str) -> Family:
    """The adapter of a Hugging Face ``model_type`` (UsageError listing the valid ones)."""
    try:
        return FAMILIES[model_type]
    except KeyError:
        raise UsageError(f"model_type {model_type!r} is not supported; mice-bench runs "
                         f"{', '.join(sorted(FAMILIES))}") from None


def get_family(name: str | Family) -> Family:
    """The adapter by family name (``bert``, ``electra``, ``roberta``, ``modernbert``)."""
    if isinstance(name, Family):
        return name
    if name in _BY_NAME:
        return _BY_NAME[name]
    return family_for(name)


from .bert import BertFamily, ElectraFamily, RobertaFamily  # noqa: E402
from .modernbert import ModernBertFamily  # noqa: E402

for _fam in (BertFamily(), ElectraFamily(), RobertaFamily(), ModernBertFamily()):
    register_family(_fam)

__all__ = ["Family", "FAMILIES", "register_family", "family_for", "get_family"]

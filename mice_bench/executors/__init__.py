"""Executors run an :class:`~mice_bench.spec.InteractionSpec` on a :class:`Backbone`.

* :class:`ReferenceExecutor` runs any spec with per-layer attention masks (defines semantics).
* :class:`JointExecutor` is the plain concatenated forward (``ce``).
* :class:`SplitExecutor` runs split-first specs with precomputable documents (``prettr``,
  ``mice``, ``colbert``, ``biencoder``): documents encoded once to what its ``doc_repr``
  declares (``encode_documents``), queries once (``encode_queries``), then the interaction
  layers and the head (``score_states``).
* :class:`PairSplitExecutor` runs PreTTR as the reference scores it (document positions after
  the query): the same split-first layers, on pairs, nothing precomputed.

Every executor declares what a document becomes (``doc_repr``: none | states | vectors |
pooled, :data:`DOC_REPRS`) and what it can do, as attributes of :class:`Executor`.

Use :func:`make_executor`; the API is summarised in ``docs/executor-api.md``.

How ``mice-l4+3`` runs on a 12-layer backbone, from name to score:

1. **Spec** (:mod:`mice_bench.spec`): ``parse("mice-l4+3")`` matches the ``mice`` family's
   declaration (``m=4, n=3``, its option defaults); ``spec.layers(12)`` applies the family's
   rule: layers 0-3 ``SEPARATE`` (query part and document part attend within themselves),
   layers 4-6 freeze the document side and read it through a cross-attention sub-layer
   (``cross_keys``, cross first), layers 7-11 dropped. ``spec.fast_path(12)`` is ``split``.
2. **Executor**: :func:`make_executor` builds a :class:`SplitExecutor`. Its tokenizer
   (:mod:`.inputs`) writes the query part ``[CLS] q [SEP]`` and the document part
   ``[CLS] d [SEP]`` with their segment ids; ``encode_documents`` runs the document part
   through layers 0-3 once (states storable, see ``DocStates``), ``encode_queries`` the
   query part; ``score_states`` / ``interact`` pairs them and runs layers 4-6 on the query
   side only, the frozen document states as extra keys, then the head (:mod:`.heads`).
3. **Layer math** (:mod:`.layers`): ``layer_forward`` turns the layer spec into masks from
   segment ids (``allow`` rows, cross keys, uniform rows), runs the cross-attention
   sub-layer, the self-attention and the feed-forward in the spec's order, and leaves
   frozen segments unchanged.
4. **Family hooks** (``bb.family``, :mod:`mice_bench.backbones`): the arithmetic of each
   sub-layer belongs to the architecture (BERT post-norm, ModernBERT pre-norm with rotary
   positions and local windows): ``embed``, ``self_qkv`` / ``self_kv`` / ``self_out``,
   ``cross_q`` / ``cross_kv`` / ``cross_out``, ``ffn``, ``final``, ``cls_score``.

The :class:`ReferenceExecutor` runs the same spec in one joint sequence with the per-layer
masks instead; the tests hold the two equal.
"""

from __future__ import annotations

from ..backbone import Backbone
from ..errors import UsageError
from ..spec import InteractionSpec, parse
from .base import (DOC_NONE, DOC_POOLED, DOC_REPRS, DOC_STATES, DOC_VECTORS, Executor,
                   ExecutorTraits, TextStates)
from .fast import DocStates, JointExecutor, PairSplitExecutor, QueryStates, SplitExecutor
from .inputs import TokenBatch, Tokenizer
from .reference import ReferenceExecutor

EXECUTOR_CHOICES = ("auto", "reference", "fast")

__all__ = ["Executor", "ExecutorTraits", "ReferenceExecutor", "JointExecutor", "SplitExecutor",
           "PairSplitExecutor", "DOC_REPRS", "DOC_NONE", "DOC_STATES", "DOC_VECTORS",
           "DOC_POOLED", "DocStates",
           "QueryStates", "TextStates", "TokenBatch", "Tokenizer", "make_executor", "EXECUTOR_CHOICES"]


def make_executor(spec: InteractionSpec | str, backbone: Backbone, executor: str = "auto",
                  query_max_tokens: int | None = None,
                  doc_max_tokens: int | None = None) -> Executor:
    """Build the executor for ``spec``: ``auto`` takes the fast path when the spec has one.

    Lengths are word pieces (special tokens excluded); ``None`` takes the reference default of
    the spec (:meth:`~mice_bench.spec.InteractionSpec.default_lengths`). The backbone is never
    modified."""
    spec = parse(spec) if isinstance(spec, str) else spec
    spec.validate(backbone.num_layers)
    if executor not in EXECUTOR_CHOICES:
        raise UsageError(f"unknown executor {executor!r}; valid: {', '.join(EXECUTOR_CHOICES)}")
    path = spec.fast_path(backbone.num_layers)
    kw = dict(query_max_tokens=query_max_tokens, doc_max_tokens=doc_max_tokens)
    if executor == "reference" or (executor == "auto" and path is None):
        return ReferenceExecutor(spec, backbone, **kw)
    if path is None:
        raise UsageError(f"{spec} has no fast path (only ce and split-first variants: prettr, "
                         "mice, colbert, biencoder); use --executor reference or auto")
    if path == "joint":
        return JointExecutor(spec, backbone, **kw)
    if not spec.precomputable:
        return PairSplitExecutor(spec, backbone, **kw)
    return SplitExecutor(spec, backbone, **kw)

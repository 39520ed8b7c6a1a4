"""Executors run an :class:`~mice_bench.spec.InteractionSpec` on a :class:`Backbone`.

* :class:`ReferenceExecutor` runs any spec with per-layer attention masks (defines semantics).
* :class:`JointExecutor` is the plain concatenated forward (``ce``).
* :class:`SplitExecutor` runs split-first specs (``prettr``, ``mice``, ``colbert``,
  ``biencoder``): documents encoded once up to the split layer (``encode_documents``), queries
  once (``encode_queries``), then the interaction layers and the head (``score_states``).

Use :func:`make_executor`; the API is summarised in ``docs/executor-api.md``.
"""

from __future__ import annotations

from ..backbone import Backbone
from ..errors import UsageError
from ..spec import InteractionSpec, parse
from .base import Executor, TextStates
from .fast import DocStates, JointExecutor, QueryStates, SplitExecutor
from .inputs import TokenBatch, Tokenizer
from .reference import ReferenceExecutor

EXECUTOR_CHOICES = ("auto", "reference", "fast")

__all__ = ["Executor", "ReferenceExecutor", "JointExecutor", "SplitExecutor", "DocStates",
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
    return SplitExecutor(spec, backbone, **kw)

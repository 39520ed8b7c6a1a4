"""The exportable graphs of an executor: ``torch.nn.Module`` wrappers over its own code.

Each wrapper calls the executor's forward pieces (:meth:`JointExecutor.forward_pairs`,
:meth:`SplitExecutor.encode_part`, :meth:`SplitExecutor.interact`, ``doc_vectors``,
``pooled``) on tensors only, so that a trace of it is the PyTorch path itself:

* :class:`PairsGraph` (``ce``): ``input_ids``, ``attention_mask``, ``token_type_ids``
  ``[B, T]`` -> ``scores [B]``;
* :class:`DocumentsGraph` (variants with document precomputation): ``input_ids``,
  ``segment_ids`` ``[N, Td]`` -> what a store keeps: ``doc_states [N, Td, H]`` (split-layer
  states), ``doc_vectors [N, Td, D]`` (late interaction: the head's unit vectors, a ColBERT
  index) or ``doc_embeddings [N, H]`` (bi-encoder: pooled, normalised);
* :class:`QueryGraph`: ``query_input_ids``, ``query_segment_ids`` ``[Q, Tq]`` -> the query
  part at the split layer, ``query_states [Q, Tq, H]`` (bi-encoder: ``query_embeddings
  [Q, H]``, pooled, normalised), run once per query;
* :class:`ScoresGraph`: the query graph's output and (except embeddings)
  ``query_segment_ids [Q, Tq]`` (``Q`` = 1: one query against every document, or ``Q`` =
  ``N``: aligned pairs), the stored documents and (except embeddings) ``doc_segment_ids
  [N, Td]`` -> ``scores [N]``: the interaction layers and the head, run per batch of
  candidates. One query row is broadcast to the ``N`` candidates as the PyTorch path
  gathers it (one copy of the query per candidate: the interaction layers update it per
  candidate).

Split parts take the *segment ids* of mice-bench's tokenizer
(:class:`~mice_bench.executors.Tokenizer`: -1 padding, 0 ``[CLS]``, 1 query, 2 query
``[SEP]``, 3 document, 4 document ``[SEP]``, 5 skip-list, 6 query expansion); the attention
mask is ``segment_ids >= 0``, positions count from 0 and token types are the part's.

:func:`check_exportable` refuses, before any work, what these graphs cannot express.
"""

from __future__ import annotations

import torch

from ..errors import UsageError
from ..executors import JointExecutor, SplitExecutor, TokenBatch
from ..executors.fast import DocStates, PartStates


def check_exportable(ex, dtype: str = "fp32") -> str:
    """The kind of export of executor ``ex`` (``pairs`` or ``split``); raises
    :class:`UsageError` (one line) for what cannot be exported."""
    spec, bb = ex.spec, ex.backbone
    fam = bb.family
    if fam.rotary or any(fam.window(bb, lw) is not None for lw in bb.layers):
        raise UsageError(f"cannot export {spec} on {bb.name}: the {fam.name} family (rotary "
                         "positions, local windows) is not exportable; exportable families: "
                         "bert, electra, roberta")
    if dtype != "fp32":
        raise UsageError(f"cannot export in {dtype}: the ONNX export is fp32")
    if isinstance(ex, JointExecutor):
        return "pairs"
    if isinstance(ex, SplitExecutor) and ex.has_doc_precompute and \
            ex.tokenizer.doc_style == "cls":
        return "split"
    raise UsageError(f"cannot export {spec}: only ce and variants with document "
                     "precomputation (mice, colbert, biencoder) are exportable")


def query_output(ex) -> str:
    """What the query graph of split executor ``ex`` returns: ``query_embeddings``
    (bi-encoder) or ``query_states``."""
    return "query_embeddings" if document_output(ex) == "doc_embeddings" else "query_states"


def document_output(ex) -> str:
    """What the documents graph of split executor ``ex`` returns: ``doc_vectors`` (late
    interaction), ``doc_embeddings`` (bi-encoder) or ``doc_states``."""
    if ex.late_interaction:
        return "doc_vectors"
    if ex.bi_encoder:
        return "doc_embeddings"
    return "doc_states"


def _positions(ids: torch.Tensor) -> torch.Tensor:
    return torch.arange(ids.shape[1], device=ids.device).unsqueeze(0).expand_as(ids)


def part_batch(ids: torch.Tensor, seg: torch.Tensor, token_type: int) -> TokenBatch:
    """A split part's :class:`TokenBatch` from its ids and segment ids (as the tokenizer
    builds it: mask = valid segment, positions from 0, the part's token type)."""
    mask = seg >= 0
    types = torch.full_like(ids, token_type) * mask.long()
    return TokenBatch(ids, types, _positions(ids), seg, mask)


class PairsGraph(torch.nn.Module):
    """``ce`` on tokenized pairs -> scores."""

    input_names = ("input_ids", "attention_mask", "token_type_ids")
    output_names = ("scores",)

    def __init__(self, ex: JointExecutor):
        super().__init__()
        self.ex = ex

    def forward(self, input_ids, attention_mask, token_type_ids):
        mask = attention_mask.bool()
        # the full-attention layers read only which tokens are valid (segment >= 0)
        seg = torch.where(mask, torch.zeros_like(input_ids), torch.full_like(input_ids, -1))
        pos = _positions(input_ids) * mask.long()
        return self.ex.forward_pairs(TokenBatch(input_ids, token_type_ids, pos, seg, mask))


class DocumentsGraph(torch.nn.Module):
    """Tokenized document parts -> what a store keeps (see :func:`document_output`)."""

    input_names = ("input_ids", "segment_ids")

    def __init__(self, ex: SplitExecutor):
        super().__init__()
        self.ex = ex
        self.output = document_output(ex)
        self.output_names = (self.output,)
        tz = ex.tokenizer
        self.token_type = tz.doc_token_type if tz.token_types else 0

    def forward(self, input_ids, segment_ids):
        part = self.ex.encode_part(part_batch(input_ids, segment_ids, self.token_type))
        if self.output == "doc_vectors":
            return self.ex.doc_vectors(part).hidden
        if self.output == "doc_embeddings":
            return self.ex.pooled(part)
        return part.hidden


class QueryGraph(torch.nn.Module):
    """Tokenized query parts -> the query part at the split layer (see :func:`query_output`)."""

    input_names = ("query_input_ids", "query_segment_ids")

    def __init__(self, ex: SplitExecutor):
        super().__init__()
        self.ex = ex
        self.output = query_output(ex)
        self.output_names = (self.output,)

    def forward(self, query_input_ids, query_segment_ids):
        q = self.ex.encode_part(part_batch(query_input_ids, query_segment_ids, 0))
        return self.ex.pooled(q) if self.output == "query_embeddings" else q.hidden


class ScoresGraph(torch.nn.Module):
    """Query part (the query graph's output) + stored documents -> scores."""

    def __init__(self, ex: SplitExecutor):
        super().__init__()
        self.ex = ex
        self.doc = document_output(ex)
        self.query = query_output(ex)
        self.input_names = (self.query, self.doc) if self.doc == "doc_embeddings" else \
            (self.query, "query_segment_ids", self.doc, "doc_segment_ids")
        self.output_names = ("scores",)

    def forward(self, query, *rest):
        ex = self.ex
        if self.doc == "doc_embeddings":
            (docs,) = rest
            return (query.expand(docs.shape[0], -1) * docs).sum(-1)     # unit vectors
        query_segment_ids, docs, doc_segment_ids = rest
        n = docs.shape[0]
        qseg = query_segment_ids.expand(n, -1)
        q = PartStates(query.expand(n, -1, -1), qseg >= 0, qseg, pos=_positions(qseg))
        d = DocStates(docs, doc_segment_ids >= 0, doc_segment_ids, pos=_positions(doc_segment_ids),
                      vectors=self.doc == "doc_vectors")
        return ex.interact(q, d)

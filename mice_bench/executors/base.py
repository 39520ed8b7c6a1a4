"""The executor protocol, shared by every executor.

An executor runs one :class:`~mice_bench.spec.InteractionSpec` on one
:class:`~mice_bench.backbone.Backbone` (it never modifies the backbone). Every executor offers
the same methods:

* ``tokenize_pairs(queries, docs)`` -> a batch that ``forward_pairs`` takes;
* ``forward_pairs(batch)`` -> scores ``[B]`` (fp32) **with autograd** (training);
* ``score_pairs(queries, docs, batch_size)`` / ``rerank(query, docs, batch_size)`` ->
  scores ``[N]`` (fp32, cpu) under ``torch.inference_mode``;
* ``encode_queries(queries)`` / ``encode_documents(docs)`` -> states, then
  ``score_states(qs, q_index, ds, d_index)`` and ``score_query(qs, ds, d_index)``.

What a document becomes is declared, not probed: :attr:`Executor.doc_repr` is one of
:data:`DOC_REPRS`:

* ``none``: nothing is precomputed; ``encode_documents`` keeps the texts and the pair is
  scored when asked (``ce``, the masks, PreTTR scored on pairs, the reference executor);
* ``states``: token states at the split layer, encoded once per document and storable
  (``prettr``, ``mice``), read by the interaction layers;
* ``vectors``: the head's token vectors (late interaction, ``colbert``: a ColBERT index);
* ``pooled``: one pooled, normalised vector per document (``biencoder``).

The capabilities follow from it (:attr:`Executor.has_doc_precompute`,
:attr:`Executor.late_interaction`, :attr:`Executor.bi_encoder`), with :attr:`Executor.kv_layers`
(interaction layers whose document keys and values can be cached) and :attr:`Executor.compiled`
(what a wrapper compiled). Wrappers (``torch.compile``, ONNX) are executors too and say so.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..backbone import Backbone
from ..spec import InteractionSpec
from .heads import cls_score, maxsim, mean_cos, pool
from .inputs import SKIP_DOC, Tokenizer, check_texts

#: what ``encode_documents`` makes of a document (see the module docstring)
DOC_NONE, DOC_STATES, DOC_VECTORS, DOC_POOLED = "none", "states", "vectors", "pooled"
DOC_REPRS = (DOC_NONE, DOC_STATES, DOC_VECTORS, DOC_POOLED)


@dataclass
class TextStates:
    """"States" of an executor without document precomputation: the texts themselves."""

    texts: list[str]

    def __len__(self) -> int:
        return len(self.texts)

    def select(self, idx) -> "TextStates":
        return TextStates([self.texts[int(i)] for i in idx])

    @property
    def nbytes(self) -> int:
        return sum(len(t.encode()) for t in self.texts)


class ExecutorTraits:
    """What every executor, and every wrapper of one (compiled, ONNX), declares about itself:
    its kind, what a document becomes, and what follows from that."""

    #: ``reference`` | ``fast`` | ``ort`` ...
    kind = "base"
    #: what a document becomes (:data:`DOC_REPRS`); the capabilities below follow from it
    doc_repr = DOC_NONE
    #: interaction layers whose document keys / values come from stored states (cacheable)
    kv_layers: list[int] = []
    #: compute entry points (method names) that a ``torch.compile`` wrapper compiles
    compile_targets: tuple[str, ...] = ()
    #: what a wrapper compiled: ``{"compiled": [...], "failed": [...]}``; None: runs eager
    compiled: dict | None = None

    @property
    def has_doc_precompute(self) -> bool:
        """Documents are encoded once, apart from any query, and can be stored."""
        return self.doc_repr != DOC_NONE

    @property
    def late_interaction(self) -> bool:
        """Documents meet the query only in a ``maxsim`` head: a document is its head vectors."""
        return self.doc_repr == DOC_VECTORS

    @property
    def bi_encoder(self) -> bool:
        """Documents meet the query only in a ``mean-cos`` head: one pooled vector each."""
        return self.doc_repr == DOC_POOLED


class Executor(ExecutorTraits):
    """Scores (query, document) pairs under an interaction spec on a backbone."""

    compile_targets = ("forward_pairs", "score_states")

    def __init__(self, spec: InteractionSpec, backbone: Backbone,
                 query_max_tokens: int | None = None, doc_max_tokens: int | None = None):
        self.spec = spec
        self.backbone = backbone
        self.layer_specs = backbone.layer_specs(spec)
        if spec.doc_token_type and not backbone.has_token_types:
            from ..errors import UsageError

            raise UsageError(f"{spec}: doc_tt={spec.doc_token_type} needs token types; "
                             f"{backbone.name} ({backbone.family.name}) has none")
        cs = backbone.checkpoint
        self.tokenizer = Tokenizer(backbone.tokenizer, backbone.max_positions, spec,
                                   query_max_tokens=query_max_tokens,
                                   doc_max_tokens=doc_max_tokens,
                                   pair_separators=backbone.family.pair_separators,
                                   token_types=backbone.has_token_types, checkpoint=cs)
        #: pooling of the ``mean-cos`` head: the checkpoint's (sentence-transformers
        #: ``Pooling``), else mean
        self.pooling: tuple[str, ...] = ("mean",)
        self.pooling_source = "preset"
        if spec.head == "mean-cos" and cs is not None and cs.pooling:
            self.pooling, self.pooling_source = tuple(cs.pooling), cs.source("pooling")
        #: the 'cls' head pools over the whole pair (joint input: ce, masks, PreTTR) or over
        #: the query part only (two-part input: MICE, as the reference pools x_q)
        self.pool_pair = spec.layout == "joint" or spec.doc_style in ("pair", "offset")
        #: cross-attention read with the self-attention weights (checkpoint has none)
        self.cross_from_self = any(ls.cross_keys and lw.cross is None
                                   for ls, lw in zip(self.layer_specs, backbone.layers)
                                   if not ls.dropped)
        self.projection: torch.Tensor | None = None
        self.projection_random = False
        if spec.head == "maxsim" and spec.projection:
            if backbone.projection is not None:
                self.projection = backbone.projection
                self.projection_random = backbone.projection_random
            else:  # seeded random, flagged; kept here, the backbone is not modified
                g = torch.Generator().manual_seed(0)
                w = torch.randn(128, backbone.hidden_size, generator=g)
                self.projection = (w / backbone.hidden_size ** 0.5).to(backbone.device,
                                                                       backbone.dtype)
                self.projection_random = True

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec}, {self.backbone.describe()})"

    @property
    def flags(self) -> dict:
        """What in this executor is not the checkpoint's own (for results)."""
        return {"cross_from_self": self.cross_from_self,
                "projection_random": self.projection_random,
                "classifier_random": bool(self.backbone.classifier_random)
                if self.spec.head == "cls" else False}

    def settings(self) -> dict:
        """The effective scoring settings and where each came from (for results): lengths,
        markers, prompts, query expansion, skip-list (:meth:`Tokenizer.settings`), the head,
        its pooling / normalisation / projection / score rule, and what the checkpoint said
        (``checkpoint``). ``sources``: ``flag`` | ``checkpoint:<file>`` | ``preset``."""
        bb, spec = self.backbone, self.spec
        cs = bb.checkpoint
        out = self.tokenizer.settings()
        src = out.pop("sources")
        out["head"] = spec.head
        if spec.head == "mean-cos":
            out["pooling"] = list(self.pooling)
            src["pooling"] = self.pooling_source
            norm = cs.normalize if cs is not None and cs.normalize is not None else True
            out["normalize"] = norm
            src["normalize"] = cs.source("normalize") if cs is not None and \
                cs.normalize is not None else "preset"
            out["score"] = "cosine"
        elif spec.head == "maxsim":
            out["projection"] = None if self.projection is None else \
                int(self.projection.shape[0])
            src["projection"] = "none" if self.projection is None else \
                ("random" if self.projection_random else "checkpoint")
            out["score"] = "sum of max cosine"
        else:
            n = int(bb.cls_w.shape[0]) if bb.cls_w is not None else 1
            out["num_labels"] = n
            out["score"] = "logit" if n == 1 else f"logit[{n - 1}] - logit[0]"
            if cs is not None and cs.activation:
                out["checkpoint_activation"] = cs.activation
                src["checkpoint_activation"] = cs.source("activation")
        out["checkpoint"] = cs.kind if cs is not None else "none"
        out["sources"] = src
        return out

    # ------------------------------------------------------------------ heads
    def head(self, xq, q_mask, xd=None, d_mask=None, d_seg=None,
             d_vectors: bool = False) -> torch.Tensor:
        """Scores ``[B]`` (fp32) from the last states of the query side ``xq [B, Tq, H]`` (its
        ``[CLS]`` first) and of the document side ``xd [B, Td, H]`` (``xd is xq`` when one
        sequence holds both parts, the masks then select each part). The family's final norm
        is applied first (ModernBERT), then the head. ``d_vectors``: ``xd`` already holds the
        head's document vectors: ``maxsim``'s (normed, projected, unit length) or
        ``mean-cos``'s one pooled, normalised vector per document ``[B, 1, H]``, which the
        query's pooled, normalised vector meets in a dot product."""
        spec, bb = self.spec, self.backbone
        fam = bb.family
        same = xd is xq
        if d_vectors and spec.head not in ("maxsim", "mean-cos"):
            raise ValueError(f"{spec}: document vectors are scored by a maxsim or mean-cos "
                             "head only")
        if d_vectors and spec.head == "mean-cos" and xd.shape[1] != 1:
            raise ValueError(f"{spec}: a mean-cos head reads one pooled vector per document, "
                             f"got {xd.shape[1]} per document")
        xq = fam.final(bb, xq)
        if xd is not None and not d_vectors:
            xd = xq if same else fam.final(bb, xd)
        if spec.head == "cls":
            if bb.pooling == "mean" and self.pool_pair and xd is not None:
                if same:
                    return cls_score(bb, xq, q_mask | d_mask)
                return cls_score(bb, torch.cat([xq, xd], 1), torch.cat([q_mask, d_mask], 1))
            return cls_score(bb, xq, q_mask)
        if spec.head == "maxsim":
            if d_seg is not None:  # the checkpoint's skip-list: attended, not scored
                d_mask = d_mask & (d_seg != SKIP_DOC)
            return maxsim(xq, q_mask, xd, d_mask, self.projection, d_vectors=d_vectors)
        if d_vectors:            # stored pooled vectors: a dot product with the query's
            qv = torch.nn.functional.normalize(pool(xq, q_mask, self.pooling), dim=-1)
            d = xd[:, 0].float()
            return d @ qv[0] if qv.shape[0] == 1 else (d * qv).sum(-1)
        return mean_cos(xq, q_mask, xd, d_mask, self.pooling)

    # ------------------------------------------------------------------ protocol
    def tokenize_pairs(self, queries: list[str], docs: list[str]):  # pragma: no cover
        raise NotImplementedError

    def forward_pairs(self, batch) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def score_pairs(self, queries: list[str], docs: list[str],
                    batch_size: int = 32) -> torch.Tensor:
        """Scores ``[N]`` (fp32, cpu) of aligned (query, document) pairs."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        check_texts(queries, "query")
        check_texts(docs, "document")
        out = []
        with torch.inference_mode():
            for i in range(0, len(queries), batch_size):
                tb = self.tokenize_pairs(list(queries[i:i + batch_size]),
                                         list(docs[i:i + batch_size]))
                out.append(self.forward_pairs(tb).float().cpu())
        return torch.cat(out) if out else torch.zeros(0)

    def rerank(self, query: str, docs: list[str], batch_size: int = 32) -> torch.Tensor:
        """Scores ``[N]`` (fp32, cpu) of one query's candidates."""
        return self.score_pairs([query] * len(docs), list(docs), batch_size=batch_size)

    def encode_queries(self, queries: list[str]):
        check_texts(queries, "query", "query")
        return TextStates(list(queries))

    def encode_documents(self, docs: list[str], **_kw):
        check_texts(docs, "document", "document")
        return TextStates(list(docs))

    def score_states(self, qs, q_index, ds, d_index) -> torch.Tensor:
        """Scores of pairs ``(qs[q_index[i]], ds[d_index[i]])`` -> ``[P]`` (fp32, cpu)."""
        q = [qs.texts[int(i)] for i in q_index]
        d = [ds.texts[int(i)] for i in d_index]
        return self.score_pairs(q, d, batch_size=max(len(q), 1))

    def score_query(self, qs, ds, d_index=None, batch_size: int = 32,
                    query: int = 0) -> torch.Tensor:
        """Scores ``[len(d_index)]`` of query ``qs[query]`` against ``ds[d_index]`` (default:
        every document), in batches of ``batch_size`` candidates."""
        if d_index is None:
            d_index = torch.arange(len(ds))
        d_index = torch.as_tensor(d_index, dtype=torch.long)
        out = [self.score_states(qs, torch.full((len(chunk),), query, dtype=torch.long), ds,
                                 chunk)
               for chunk in d_index.split(batch_size)]
        return torch.cat(out) if out else torch.zeros(0)

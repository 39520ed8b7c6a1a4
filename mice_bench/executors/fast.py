"""Fast structural executors (SDPA kernels, no per-layer segment masks where avoidable).

* :class:`JointExecutor` (``ce``): the plain concatenated forward, key-padding mask only.
* :class:`SplitExecutor` (split-first specs): the query part and the document part are encoded
  separately up to the split layer ``s = spec.split_layer(L)``:

  - ``encode_documents`` -> :class:`DocStates` (``hidden [N, Td, H]`` at layer ``s``, optional
    per-interaction-layer K/V ``[N, h, Td, d]``), computed once per document, storable on disk;
  - ``encode_queries`` -> :class:`QueryStates`, once per query (not once per pair);
  - ``score_states`` runs the layers ``>= s`` on (query x candidate) pairs: layers that freeze the
    document part update only the query part (``Q`` from ``[P, Tq, H]``, keys/values from the
    query part and the frozen document states or their cached K/V); layers that update both
    parts run on the concatenation. Then the head.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import torch

from ..layerspec import DOC_SIDE, FULL, LayerSpec
from ..naming import key_hash
from .base import DOC_POOLED, DOC_STATES, DOC_VECTORS, Executor
from .heads import cls_score, pool
from .identity import check_same
from .inputs import TokenBatch, check_texts
from .layers import Extra, doc_kv, embed, layer_forward


def _pad_cat(ts: list[torch.Tensor], value) -> torch.Tensor:
    """Concatenate ``[Ni, Ti, ...]`` tensors along dim 0, right-padding dim 1 to the max."""
    T = max(t.shape[1] for t in ts)
    out = []
    for t in ts:
        if t.shape[1] < T:
            pad = t.new_full((t.shape[0], T - t.shape[1], *t.shape[2:]), value)
            t = torch.cat([t, pad], 1)
        out.append(t)
    return torch.cat(out, 0)


@dataclass
class PartStates:
    """Hidden states of one part (queries or documents) at the split layer.

    ``hidden [N, T, H]``, ``mask [N, T]`` (bool, True = token), ``seg [N, T]`` (segment ids,
    -1 = padding), ``kv``: ``{layer: (K, V)}`` with ``K, V [N, h, T, d]`` (documents only),
    ``pos [N, T]``: position ids (rotary families and local windows read them; None = the
    part's own numbering, which the executor rebuilds from the spec). ``vectors``: ``hidden``
    holds the head's document vectors, not layer states: ``[N, T, D]`` for late interaction
    (final norm, projection, L2 normalisation already applied, as a ColBERT index stores them),
    ``[N, 1, H]`` for a bi-encoder (its one pooled, normalised vector per document).
    ``identity``: what made document states (:mod:`.identity`: the weights' fingerprint,
    variant, split layer, content, length limit); an executor refuses states of another.
    """

    hidden: torch.Tensor
    mask: torch.Tensor
    seg: torch.Tensor
    kv: dict[int, tuple[torch.Tensor, torch.Tensor]] | None = None
    pos: torch.Tensor | None = None
    vectors: bool = False
    identity: dict | None = None

    def __len__(self) -> int:
        return self.hidden.shape[0]

    @property
    def nbytes(self) -> int:
        n = self.hidden.numel() * self.hidden.element_size()
        for k, v in (self.kv or {}).values():
            n += k.numel() * k.element_size() + v.numel() * v.element_size()
        return n

    def select(self, idx) -> "PartStates":
        """Rows ``idx`` (LongTensor or list), trimmed to their longest valid length."""
        idx = torch.as_tensor(idx, dtype=torch.long, device=self.hidden.device)
        if len(idx) and bool((idx.diff() == 1).all()):  # contiguous range: views, no gather
            idx = slice(int(idx[0]), int(idx[-1]) + 1)
        mask = self.mask[idx]
        T = max(int(mask.sum(1).max()), 1) if mask.shape[0] else 1
        kv = None
        if self.kv is not None:
            kv = {l: (k[idx][:, :, :T], v[idx][:, :, :T]) for l, (k, v) in self.kv.items()}
        pos = self.pos[idx][:, :T] if self.pos is not None else None
        return type(self)(self.hidden[idx][:, :T], mask[:, :T], self.seg[idx][:, :T], kv, pos,
                          self.vectors, self.identity)

    def to(self, device=None, dtype=None) -> "PartStates":
        def mv(t):
            return t.to(device=device, dtype=dtype if t.is_floating_point() else None)

        kv = {l: (mv(k), mv(v)) for l, (k, v) in self.kv.items()} if self.kv else self.kv
        pos = self.pos.to(device) if self.pos is not None else None
        return type(self)(mv(self.hidden), self.mask.to(device), self.seg.to(device), kv, pos,
                          self.vectors, self.identity)

    @classmethod
    def cat(cls, parts: list["PartStates"]) -> "PartStates":
        kv = None
        if parts[0].kv is not None:
            kv = {}
            for l in parts[0].kv:
                kv[l] = (_pad_cat([p.kv[l][0].transpose(1, 2) for p in parts], 0).transpose(1, 2),
                         _pad_cat([p.kv[l][1].transpose(1, 2) for p in parts], 0).transpose(1, 2))
        pos = None
        if all(p.pos is not None for p in parts):
            pos = _pad_cat([p.pos for p in parts], 0)
        if len({p.vectors for p in parts}) > 1:
            raise ValueError("cannot concatenate head vectors with layer states")
        for p in parts[1:]:
            if p.identity != parts[0].identity:
                check_same(p.identity, parts[0].identity, "document states concatenated "
                           "with others")
        return cls(_pad_cat([p.hidden for p in parts], 0), _pad_cat([p.mask for p in parts], False),
                   _pad_cat([p.seg for p in parts], -1), kv, pos, parts[0].vectors,
                   parts[0].identity)

    def save(self, path: str | Path) -> None:
        """Write atomically: a unique temporary file in the same folder, fsync'd, renamed."""
        import os
        import tempfile

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                torch.save({f_.name: getattr(self, f_.name) for f_ in fields(self)}, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        try:  # make the rename durable
            dfd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError:
            pass

    @classmethod
    def load(cls, path: str | Path, device="cpu") -> "PartStates":
        return cls(**torch.load(path, map_location=device, weights_only=True))


class DocStates(PartStates):
    """Document-part states (see :class:`PartStates`)."""


class QueryStates(PartStates):
    """Query-part states (see :class:`PartStates`)."""


class JointExecutor(Executor):
    """``ce``: one concatenated forward per pair with SDPA and a key-padding mask."""

    kind = "fast"
    _full = LayerSpec(FULL)

    def tokenize_pairs(self, queries: list[str], docs: list[str]) -> TokenBatch:
        return self.tokenizer.pairs(queries, docs)

    def forward_pairs(self, tb: TokenBatch) -> torch.Tensor:
        bb = self.backbone
        tb = tb.to(bb.device)
        x = embed(bb, tb.input_ids, tb.token_type_ids, tb.position_ids)
        seg, pos = tb.segment_ids, tb.position_ids
        memo: dict = {}
        for lw in bb.layers:
            x = layer_forward(bb, lw, self._full, x, seg, memo=memo, pos=pos)
        return cls_score(bb, bb.family.final(bb, x), tb.attention_mask).float()


class SplitLayers(Executor):
    """What every split-first executor shares: the query part and the document part run apart
    up to the split layer (:meth:`encode_part`), then the interaction layers and the head
    (:meth:`interact`). :class:`SplitExecutor` stores documents at the split layer;
    :class:`PairSplitExecutor` scores PreTTR as the reference does, on pairs."""

    kind = "fast"
    compile_targets = ("forward_pairs", "_encode_part", "score_states")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        L = self.backbone.num_layers
        self.split = self.spec.split_layer(L)
        self.sep_layers = [(i, ls) for i, ls in enumerate(self.layer_specs[: self.split])
                           if not ls.dropped]
        self.inter_layers = [(i, ls) for i, ls in enumerate(self.layer_specs)
                             if i >= self.split and not ls.dropped]

    # ---------------------------------------------------------------- tokenisation
    def tokenize_queries(self, queries: list[str]) -> TokenBatch:
        return self.tokenizer.query_parts(list(queries))

    def tokenize_docs(self, docs: list[str]) -> TokenBatch:
        return self.tokenizer.doc_parts(list(docs))

    def tokenize_pairs(self, queries: list[str], docs: list[str]) -> tuple[TokenBatch, TokenBatch]:
        """Aligned (query parts, document parts)."""
        return self.tokenizer.split_parts(list(queries), list(docs))

    # ---------------------------------------------------------------- separate encoding
    def encode_part(self, tb: TokenBatch) -> PartStates:
        """Split-layer states of one tokenized part (queries or documents) as one batch, not
        trimmed nor chunked, with autograd when enabled (what an exported graph traces)."""
        return self._encode_part(tb)

    def _encode_part(self, tb: TokenBatch) -> PartStates:
        bb = self.backbone
        tb = tb.to(bb.device)
        x = embed(bb, tb.input_ids, tb.token_type_ids, tb.position_ids)
        seg, pos = tb.segment_ids, tb.position_ids
        memo: dict = {}
        for i, ls in self.sep_layers:
            x = layer_forward(bb, bb.layers[i], ls, x, seg, memo=memo, pos=pos)
        return PartStates(x, tb.attention_mask, seg, pos=pos)

    def forward_pairs(self, batch: tuple[TokenBatch, TokenBatch]) -> torch.Tensor:
        """Scores ``[B]`` of aligned pairs, with autograd (both parts encoded here)."""
        qtb, dtb = batch
        q, d = self._encode_part(qtb), self._encode_part(dtb)
        idx = torch.arange(len(qtb))
        return self._score_states(q, idx, d, idx)

    def _part_pos(self, part: PartStates, doc: bool) -> torch.Tensor:
        """Position ids of a part (stored, or rebuilt: queries and ``cls`` documents count
        from 0, ``offset`` documents from ``qlen``)."""
        if part.pos is not None:
            return part.pos
        N, T = part.seg.shape
        start = self.spec.qlen if doc and self.spec.doc_style == "offset" else 0
        return (torch.arange(T, device=part.seg.device) + start).expand(N, T)

    def _score_states(self, qs: PartStates, q_index, ds: PartStates, d_index) -> torch.Tensor:
        bb = self.backbone
        q_index = torch.as_tensor(q_index, dtype=torch.long)
        if ds.vectors and len(q_index) > 1 and bool((q_index == q_index[0]).all()):
            q_index = q_index[:1]       # one query against stored vectors: the head broadcasts
        q = qs.select(q_index).to(bb.device, bb.dtype)
        d = ds.select(d_index)
        return self.interact(q, d.to(bb.device) if d.vectors else d.to(bb.device, bb.dtype))

    def interact(self, q: PartStates, d: PartStates) -> torch.Tensor:
        """Interaction layers + head of aligned query / document part states ``[P, ...]``
        already on the backbone's device -> scores ``[P]`` (fp32, with autograd when enabled).
        Stored head vectors (``d.vectors``, late interaction) go to the head directly."""
        bb = self.backbone
        if d.vectors:            # late interaction on stored head vectors: the head only
            return self.head(q.hidden, q.mask, d.hidden, d.mask, d_seg=d.seg,
                             d_vectors=True).float()
        xq, segq = q.hidden, q.seg
        xd, segd = d.hidden, d.seg
        posq, posd = self._part_pos(q, doc=False), self._part_pos(d, doc=True)
        cached = d.kv or {}
        doc_fixed = True  # document states still those of the split layer
        Tq = xq.shape[1]
        memo: dict = {}
        for i, ls in self.inter_layers:
            lw = bb.layers[i]
            if ls.frozen == DOC_SIDE:
                kv = cached.get(i) if doc_fixed else None
                extra = Extra(seg=segd, states=xd,
                              kv_self=kv if (kv is not None and not ls.cross_keys) else None,
                              kv_cross=kv if (kv is not None and ls.cross_keys) else None,
                              pos=posd)
                xq = layer_forward(bb, lw, ls, xq, segq, extra, memo=memo, pos=posq)
            else:
                x = layer_forward(bb, lw, ls, torch.cat([xq, xd], 1),
                                  torch.cat([segq, segd], 1), memo=memo,
                                  pos=torch.cat([posq, posd], 1))
                xq, xd = x[:, :Tq], x[:, Tq:]
                doc_fixed = False
        return self.head(xq, q.mask, xd, d.mask, d_seg=d.seg).float()


class PairSplitExecutor(SplitLayers):
    """PreTTR as the reference scores it (``doc_style == "pair"``: document positions continue
    after the query): split-first layers on pairs, nothing precomputed (``doc_repr`` none)."""


class SplitExecutor(SplitLayers):
    """Split-first specs with precomputable documents: documents encoded once to what
    :attr:`doc_repr` declares, queries once per query, the interaction on pairs."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if not self.spec.precomputable:
            raise ValueError(f"{self.spec}: documents are not precomputable; "
                             "make_executor runs it with PairSplitExecutor")
        # interaction layers whose document keys come from the split-layer states (cacheable)
        self.kv_layers = []
        for i, ls in self.inter_layers:
            if ls.frozen != DOC_SIDE:
                break
            self.kv_layers.append(i)
        if self.inter_layers:
            self.doc_repr = DOC_STATES
        else:
            self.doc_repr = {"maxsim": DOC_VECTORS, "mean-cos": DOC_POOLED}.get(self.spec.head,
                                                                               DOC_STATES)

    def encode_documents(self, docs: list[str] | TokenBatch, kv_cache: bool = False,
                         store_dtype: torch.dtype | None = None,
                         batch_size: int = 64, vectors: bool | None = None):
        """What :attr:`doc_repr` declares: document-part states at the split layer,
        ``hidden [N, Td, H]`` (+ K/V per layer), or for late interaction and a bi-encoder the
        head's document vectors (:meth:`doc_vectors`: ``[N, Td, D]``, or ``[N, 1, H]``
        pooled). ``vectors=False`` asks for the split-layer states of a late-interaction or
        bi-encoder variant instead (its head then runs at scoring)."""
        if vectors is None:
            vectors = self.doc_repr in (DOC_VECTORS, DOC_POOLED)
        if vectors:
            self._require_doc_vectors()          # before any encoding work
        if not isinstance(docs, TokenBatch):
            check_texts(docs, "document", "document")
        tb = docs if isinstance(docs, TokenBatch) else self.tokenize_docs(docs)
        chunks = []
        with torch.inference_mode():
            for i in range(0, len(tb), batch_size):
                part = self._encode_part(tb.select(slice(i, i + batch_size)))
                if kv_cache:
                    part.kv = self._doc_kv(part)
                chunks.append(self.doc_vectors(part) if vectors else part)
        ds = DocStates.cat(chunks) if chunks else DocStates(
            torch.zeros(0, 1, self.backbone.hidden_size), torch.zeros(0, 1, dtype=torch.bool),
            torch.zeros(0, 1, dtype=torch.long))
        if store_dtype is not None:
            ds = ds.to(dtype=store_dtype)
        ds.identity = self.doc_identity(self.doc_content(vectors))
        return ds

    def doc_content(self, vectors: bool = False) -> str:
        """What ``encode_documents(..., vectors=vectors)`` returns: ``states``, ``vectors``
        (late interaction) or ``pooled`` (a bi-encoder)."""
        if not vectors:
            return "states"
        return "vectors" if self.late_interaction else "pooled"

    def doc_identity(self, content: str = "states") -> dict:
        """The identity of this executor's document states of ``content``
        (:mod:`.identity`)."""
        bb, spec, tok = self.backbone, self.spec, self.tokenizer
        encoding = {"layers": [ls.describe() for ls in self.layer_specs[: self.split]],
                    "doc_token_type": spec.doc_token_type, "doc_style": spec.doc_style,
                    "qlen": spec.qlen if spec.doc_style == "offset" else None,
                    "doc_marker": tok.doc_marker, "doc_prompt": tok.doc_prompt,
                    "max_positions": tok.max_positions}
        if content == "vectors":
            # the checkpoint's projection is in the weights' fingerprint, a random one seeded
            encoding["projection"] = None if self.projection is None else \
                [int(self.projection.shape[0]), bool(self.projection_random)]
        elif content == "pooled":
            encoding["pooling"] = list(self.pooling)
        return {"model": bb.fingerprint()[:16], "name": bb.source or bb.name,
                "variant": str(spec), "split_layer": self.split, "content": content,
                "doc_max_tokens": tok.doc_max_tokens, "doc_encoding": key_hash(encoding)}

    def check_doc_states(self, ds, what: str = "document states") -> None:
        """Refuse document states that carry another identity than this executor's
        (:func:`.identity.check_same`); states without one (made inside a run) pass."""
        if ds.identity is not None:
            heads = self.late_interaction or self.bi_encoder
            check_same(ds.identity, self.doc_identity(self.doc_content(ds.vectors and heads)),
                       what)

    def _require_doc_vectors(self) -> None:
        if not (self.late_interaction or self.bi_encoder):
            raise ValueError(f"{self.spec}: only a late-interaction variant (maxsim head, no "
                             "interaction layer) or a bi-encoder (mean-cos head, no interaction "
                             "layer) has document vectors")

    def doc_vectors(self, states: PartStates) -> DocStates:
        """The head's vectors of split-layer document states, in fp32 with ``vectors=True``.
        Late interaction: the family's final norm, the projection ``P`` when there is one,
        then L2 normalisation, ``hidden [N, Td, D]`` (a store of them is a ColBERT index:
        ``D = 128`` with the projection, instead of the ``H``-dim states). A bi-encoder: its
        pooled, normalised vector (:meth:`pooled`) as a one-token row, ``hidden [N, 1, H]``.
        :meth:`score_states` scores them without touching the document side again."""
        self._require_doc_vectors()
        if states.vectors:
            return states
        bb = self.backbone
        if self.bi_encoder:
            with torch.inference_mode():
                v = self.pooled(states).float()
            n = v.shape[0]
            return DocStates(v[:, None, :], torch.ones(n, 1, dtype=torch.bool, device=v.device),
                             torch.zeros(n, 1, dtype=torch.long, device=v.device), None, None,
                             True)
        with torch.inference_mode():
            x = bb.family.final(bb, states.hidden.to(bb.device, bb.dtype)).float()
            if self.projection is not None:
                x = x @ self.projection.float().T
            x = torch.nn.functional.normalize(x, dim=-1)
        return DocStates(x, states.mask, states.seg, None, states.pos, True)

    def _doc_kv(self, part: PartStates) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
        bb = self.backbone
        kv = {}
        pos = self._part_pos(part, doc=True)
        for i in self.kv_layers:
            k, v = doc_kv(bb, bb.layers[i], self.layer_specs[i], part.hidden, pos)
            kv[i] = (k.contiguous(), v.contiguous())
        return kv

    def encode_queries(self, queries: list[str] | TokenBatch):
        """Query-part states at the split layer, ``hidden [Nq, Tq, H]``."""
        if not isinstance(queries, TokenBatch):
            check_texts(queries, "query", "query")
        tb = queries if isinstance(queries, TokenBatch) else self.tokenize_queries(queries)
        with torch.inference_mode():
            p = self._encode_part(tb)
        return QueryStates(p.hidden, p.mask, p.seg, pos=p.pos)

    # ---------------------------------------------------------------- interaction + head
    def score_states(self, qs, q_index, ds, d_index) -> torch.Tensor:
        """Interaction layers + head for pairs ``(qs[q_index[i]], ds[d_index[i]])`` -> ``[P]``
        (fp32, cpu)."""
        self.check_doc_states(ds)
        with torch.inference_mode():
            return self._score_states(qs, q_index, ds, d_index).float().cpu()

    def pooled(self, states: PartStates) -> torch.Tensor:
        """Normalised pooled embeddings ``[N, H]`` (bi-encoder retrieval over a corpus) of
        split-layer states, or the stored vectors of ``encode_documents`` as they are."""
        if not self.bi_encoder:
            raise ValueError(f"{self.spec}: pooled embeddings need a mean-cos head and no "
                             "interaction layers")
        if states.vectors:
            return states.hidden[:, 0]
        bb = self.backbone
        hidden = states.hidden
        if bb.final_ln_w is not None:  # the family's final norm (ModernBERT)
            hidden = bb.family.final(bb, hidden.to(bb.device, bb.dtype))
        return torch.nn.functional.normalize(pool(hidden, states.mask, self.pooling), dim=-1)

    # ---------------------------------------------------------------- convenience
    def score_pairs(self, queries: list[str], docs: list[str],
                    batch_size: int = 32) -> torch.Tensor:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        check_texts(queries, "query")
        check_texts(docs, "document")
        uq = list(dict.fromkeys(queries))
        ud = list(dict.fromkeys(docs))
        qpos = {q: i for i, q in enumerate(uq)}
        dpos = {d: i for i, d in enumerate(ud)}
        qs = self.encode_queries(uq)
        ds = self.encode_documents(ud, batch_size=max(batch_size, 1))
        qi = torch.tensor([qpos[q] for q in queries], dtype=torch.long)
        di = torch.tensor([dpos[d] for d in docs], dtype=torch.long)
        out = [self.score_states(qs, qi[i:i + batch_size], ds, di[i:i + batch_size])
               for i in range(0, len(queries), batch_size)]
        return torch.cat(out) if out else torch.zeros(0)

    def rerank(self, query: str, docs: list[str], batch_size: int = 32,
               kv_cache: bool = False) -> torch.Tensor:
        qs = self.encode_queries([query])
        ds = self.encode_documents(list(docs), kv_cache=kv_cache, batch_size=max(batch_size, 1))
        return self.score_query(qs, ds, batch_size=batch_size)

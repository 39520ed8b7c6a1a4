"""Tokenisation into the segment layouts of :mod:`mice_bench.spec`.

Segment ids: 0 ``cls``, 1 ``query``, 2 ``sep_q``, 3 ``doc``, 4 ``sep_d``, -1 padding.

* joint pair: ``[CLS] q [SEP] d [SEP]``, positions 0..n-1, token types 0 0 0 1 1 (RoBERTa:
  ``<s> q </s></s> d </s>``, both middle separators in segment ``sep_q``; families without
  token types get type 0 everywhere).
* split query part: ``[CLS] q [SEP]``, positions from 0, token type 0, segments 0 1 2.
* split document part: ``[CLS] d [SEP]``, positions from 0, token type ``doc_token_type``,
  segments 3 3 4 (the document part's own ``[CLS]`` belongs to segment ``doc``).

Queries are truncated to ``query_max_tokens`` word pieces; documents to ``doc_max_tokens``
(default: whatever fits the model's maximum positions).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

PAD_SEGMENT = -1


@dataclass
class TokenBatch:
    """A padded batch. All tensors are ``[B, T]``; ``attention_mask`` is bool (True = token)."""

    input_ids: torch.Tensor
    token_type_ids: torch.Tensor
    position_ids: torch.Tensor
    segment_ids: torch.Tensor
    attention_mask: torch.Tensor

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    @property
    def num_tokens(self) -> int:
        return int(self.attention_mask.sum())

    def to(self, device) -> "TokenBatch":
        return TokenBatch(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    def select(self, idx) -> "TokenBatch":
        sub = {f.name: getattr(self, f.name)[idx] for f in fields(self)}
        T = max(int(sub["attention_mask"].sum(1).max()), 1) if len(sub["input_ids"]) else 1
        return TokenBatch(**{k: v[:, :T] for k, v in sub.items()})


def _pad(seqs: list[list[int]], value: int) -> torch.Tensor:
    T = max((len(s) for s in seqs), default=1) or 1
    out = torch.full((len(seqs), T), value, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.tensor(s, dtype=torch.long)
    return out


def _batch(ids, types, segs, positions=None, pad_id: int = 0) -> TokenBatch:
    return TokenBatch(
        input_ids=_pad(ids, pad_id),
        token_type_ids=_pad(types, 0),
        position_ids=_pad(positions if positions is not None
                          else [list(range(len(s))) for s in ids], 0),
        segment_ids=_pad(segs, PAD_SEGMENT),
        attention_mask=_pad([[1] * len(s) for s in ids], 0).bool(),
    )


def longest_first(n_a: int, n_b: int, budget: int) -> tuple[int, int]:
    """Lengths of a pair after Hugging Face's ``longest_first`` truncation to ``budget``
    tokens (the rule of the Rust ``tokenizers`` library: the shorter sequence keeps its length
    when it fits in half the budget, the longer one gets the rest; otherwise both get half,
    the longer one the odd token)."""
    if n_a + n_b <= budget:
        return n_a, n_b
    swap = n_a > n_b
    short, long_ = (n_b, n_a) if swap else (n_a, n_b)
    long_ = short if short > budget else max(short, budget - short)
    if short + long_ > budget:
        short = budget // 2
        long_ = short + budget % 2
    return (long_, short) if swap else (short, long_)


class Tokenizer:
    """Turns texts into :class:`TokenBatch` objects for one backbone, spec and length budget.

    Lengths are in word pieces, special tokens excluded; ``None`` takes the spec's reference
    default (:meth:`~mice_bench.spec.InteractionSpec.default_lengths`).

    * joint pairs: the query is cut to ``query_max_tokens`` and the document to
      ``doc_max_tokens`` (when set), then the pair to ``max_length`` tokens in all with
      ``longest_first`` truncation, as Hugging Face pair tokenization does;
    * split query part ``[CLS] q [SEP]`` (cut to ``query_max_tokens``); with ColBERT's query
      augmentation (``spec.qaug``) padded with ``[MASK]`` tokens, attended and scored, to
      ``query_max_tokens + 2`` tokens;
    * split document part, by ``spec.doc_style``: ``cls`` ``[CLS] d [SEP]`` positions from 0,
      token type ``doc_token_type``; ``pair`` cut from the joint pair (PreTTR); ``offset``
      ``d [SEP]`` with positions from ``spec.qlen`` and token type 1.
    """

    def __init__(self, tokenizer, max_positions: int, spec=None,
                 query_max_tokens: int | None = None, doc_max_tokens: int | None = None,
                 doc_token_type: int | None = None, pair_separators: int = 1,
                 token_types: bool = True):
        self.tok = tokenizer
        self.pair_separators = int(pair_separators)
        self.token_types = bool(token_types)
        self.max_positions = max_positions
        self.spec = spec
        d = spec.default_lengths() if spec is not None else \
            {"query_max_tokens": 32, "doc_max_tokens": None, "max_length": 512}
        self.query_max_tokens = query_max_tokens if query_max_tokens is not None \
            else d["query_max_tokens"]
        self.doc_max_tokens = doc_max_tokens if doc_max_tokens is not None \
            else d["doc_max_tokens"]
        self.max_length = min(d["max_length"], max_positions)
        self.truncation = d.get("truncation", "longest_first")
        self.doc_token_type = doc_token_type if doc_token_type is not None else \
            (spec.doc_token_type if spec is not None else 0)
        self.doc_style = (spec.doc_style if spec is not None else None) or "cls"
        self.qaug = bool(spec is not None and spec.qaug)
        self.cls_id = tokenizer.cls_token_id
        self.sep_id = tokenizer.sep_token_id
        self.mask_id = tokenizer.mask_token_id
        pad = getattr(tokenizer, "pad_token_id", None)
        self.pad_id = int(pad) if pad is not None else 0

    def _types(self, types: list[list[int]]) -> list[list[int]]:
        return types if self.token_types else [[0] * len(t) for t in types]

    def word_pieces(self, texts: list[str], max_len: int | None) -> list[list[int]]:
        if not texts:
            return []
        max_len = self.max_positions if max_len is None else max_len
        enc = self.tok(list(texts), add_special_tokens=False, truncation=True,
                       max_length=max(max_len, 1))
        return [list(x)[:max_len] for x in enc["input_ids"]]

    def settings(self) -> dict:
        """The effective limits (for results)."""
        return {"query_max_tokens": self.query_max_tokens, "doc_max_tokens": self.doc_max_tokens,
                "max_length": self.max_length, "truncation": self.truncation,
                "doc_style": self.doc_style, "qaug": self.qaug}

    # --------------------------------------------------------------- joint
    def _pair_pieces(self, queries, docs) -> list[tuple[list[int], list[int]]]:
        budget = self.max_length - 2 - self.pair_separators
        qcap = budget if self.query_max_tokens is None else min(self.query_max_tokens, budget)
        dcap = budget if self.doc_max_tokens is None else min(self.doc_max_tokens, budget)
        out = []
        for qi, di in zip(self.word_pieces(queries, qcap), self.word_pieces(docs, dcap)):
            if self.truncation == "doc_first":
                nq = min(len(qi), budget)
                nd = min(len(di), budget - nq)
            else:
                nq, nd = longest_first(len(qi), len(di), budget)
            out.append((qi[:nq], di[:nd]))
        return out

    def pairs(self, queries: list[str], docs: list[str]) -> TokenBatch:
        """``[CLS] q [SEP] d [SEP]``, positions counted through, token types 0 0 0 1 1."""
        ids, types, segs = [], [], []
        k = self.pair_separators
        for qi, di in self._pair_pieces(queries, docs):
            ids.append([self.cls_id, *qi, *[self.sep_id] * k, *di, self.sep_id])
            types.append([0] * (len(qi) + 1 + k) + [1] * (len(di) + 1))
            segs.append([0] + [1] * len(qi) + [2] * k + [3] * len(di) + [4])
        return _batch(ids, self._types(types), segs, pad_id=self.pad_id)

    # --------------------------------------------------------------- split
    def doc_budget(self) -> int:
        if self.doc_style == "offset":
            b = min(self.max_length, self.max_positions) - self.spec.qlen - 1
        else:
            b = self.max_positions - 2
        return min(b, self.doc_max_tokens) if self.doc_max_tokens is not None else b

    def query_parts(self, queries: list[str]) -> TokenBatch:
        qmax = self.max_positions - 2
        if self.query_max_tokens is not None:
            qmax = min(qmax, self.query_max_tokens)
        if self.doc_style == "offset":
            qmax = min(qmax, self.spec.qlen - 2)
        q = self.word_pieces(queries, qmax)
        ids = [[self.cls_id, *x, self.sep_id] for x in q]
        if self.qaug:
            total = (self.query_max_tokens or 30) + 2
            ids = [x + [self.mask_id] * (total - len(x)) for x in ids]
        segs = [[0] + [1] * (len(x) - 2) + [2] if not self.qaug else
                [0] + [1] * (len(q[i])) + [2] + [1] * (len(x) - len(q[i]) - 2)
                for i, x in enumerate(ids)]
        return _batch(ids, [[0] * len(x) for x in ids], segs, pad_id=self.pad_id)

    def doc_parts(self, docs: list[str]) -> TokenBatch:
        if self.doc_style == "pair":
            raise ValueError("PreTTR documents are cut from the joint pair; use split_pairs")
        d = self.word_pieces(docs, self.doc_budget())
        if self.doc_style == "offset":
            ids = [[*x, self.sep_id] for x in d]
            off = self.spec.qlen
            return _batch(ids, self._types([[1] * len(x) for x in ids]),
                          [[3] * (len(x) - 1) + [4] for x in ids],
                          positions=[list(range(off, off + len(x))) for x in ids],
                          pad_id=self.pad_id)
        ids = [[self.cls_id, *x, self.sep_id] for x in d]
        tt = self.doc_token_type
        return _batch(ids, self._types([[tt] * len(x) for x in ids]),
                      [[3] * (len(x) - 1) + [4] for x in ids], pad_id=self.pad_id)

    def split_pairs(self, queries: list[str], docs: list[str]) -> TokenBatch:
        """Query part followed by document part in one sequence (positions as each part
        numbers them); for ``pair`` documents exactly the joint pair."""
        if self.doc_style == "pair":
            return self.pairs(queries, docs)
        qb, db = self.query_parts(queries), self.doc_parts(docs)
        return concat_parts(qb, db)

    def split_parts(self, queries: list[str], docs: list[str]) -> tuple[TokenBatch, TokenBatch]:
        """(query parts, document parts) of aligned pairs, for the split fast path."""
        if self.doc_style == "pair":
            return split_joint(self.pairs(queries, docs))
        return self.query_parts(queries), self.doc_parts(docs)


def split_joint(tb: TokenBatch) -> tuple[TokenBatch, TokenBatch]:
    """Cut joint pairs into their query parts (segments 0-2) and document parts (3-4), each
    left-aligned and keeping its token types and position ids."""
    qrows, drows = [], []
    for i in range(len(tb)):
        seg = tb.segment_ids[i]
        qsel = (seg >= 0) & (seg <= 2)
        dsel = seg >= 3
        qrows.append({f.name: getattr(tb, f.name)[i][qsel].tolist() for f in fields(tb)})
        drows.append({f.name: getattr(tb, f.name)[i][dsel].tolist() for f in fields(tb)})

    def build(rows):
        return TokenBatch(
            input_ids=_pad([r["input_ids"] for r in rows], 0),
            token_type_ids=_pad([r["token_type_ids"] for r in rows], 0),
            position_ids=_pad([r["position_ids"] for r in rows], 0),
            segment_ids=_pad([r["segment_ids"] for r in rows], PAD_SEGMENT),
            attention_mask=_pad([[1] * len(r["input_ids"]) for r in rows], 0).bool())

    return build(qrows), build(drows)

def concat_parts(qb: TokenBatch, db: TokenBatch) -> TokenBatch:
    """Per row: the valid tokens of ``qb`` then those of ``db`` (then padding)."""
    rows = {f.name: [] for f in fields(TokenBatch)}
    for i in range(len(qb)):
        nq, nd = int(qb.attention_mask[i].sum()), int(db.attention_mask[i].sum())
        for f in rows:
            a, b = getattr(qb, f)[i, :nq], getattr(db, f)[i, :nd]
            rows[f].append(torch.cat([a, b]).tolist())
    return TokenBatch(
        input_ids=_pad(rows["input_ids"], 0),
        token_type_ids=_pad(rows["token_type_ids"], 0),
        position_ids=_pad(rows["position_ids"], 0),
        segment_ids=_pad(rows["segment_ids"], PAD_SEGMENT),
        attention_mask=_pad([[int(x) for x in r] for r in rows["attention_mask"]], 0).bool(),
    )

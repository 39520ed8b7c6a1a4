"""Tokenisation into the segment layouts of :mod:`mice_bench.spec`.

Segment ids: 0 ``cls``, 1 ``query``, 2 ``sep_q``, 3 ``doc``, 4 ``sep_d``, -1 padding.

* joint pair: ``[CLS] q [SEP] d [SEP]``, positions 0..n-1, token types 0 0 0 1 1.
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


def _batch(ids, types, segs) -> TokenBatch:
    return TokenBatch(
        input_ids=_pad(ids, 0),
        token_type_ids=_pad(types, 0),
        position_ids=_pad([list(range(len(s))) for s in ids], 0),
        segment_ids=_pad(segs, PAD_SEGMENT),
        attention_mask=_pad([[1] * len(s) for s in ids], 0).bool(),
    )


class Tokenizer:
    """Turns texts into :class:`TokenBatch` objects for one backbone and length budget."""

    def __init__(self, tokenizer, max_positions: int, query_max_tokens: int = 32,
                 doc_max_tokens: int | None = None, doc_token_type: int = 0):
        self.tok = tokenizer
        self.max_positions = max_positions
        self.query_max_tokens = query_max_tokens
        self.doc_max_tokens = doc_max_tokens
        self.doc_token_type = doc_token_type
        self.cls_id = tokenizer.cls_token_id
        self.sep_id = tokenizer.sep_token_id

    def word_pieces(self, texts: list[str], max_len: int) -> list[list[int]]:
        if not texts:
            return []
        enc = self.tok(list(texts), add_special_tokens=False, truncation=True,
                       max_length=max(max_len, 1))
        return [list(x)[:max_len] for x in enc["input_ids"]]

    # --------------------------------------------------------------- joint
    def pairs(self, queries: list[str], docs: list[str]) -> TokenBatch:
        q = self.word_pieces(queries, self.query_max_tokens)
        d = self.word_pieces(docs, self.max_positions)
        ids, types, segs = [], [], []
        for qi, di in zip(q, d):
            budget = self.max_positions - 3 - len(qi)
            if self.doc_max_tokens is not None:
                budget = min(budget, self.doc_max_tokens)
            di = di[:budget]
            ids.append([self.cls_id, *qi, self.sep_id, *di, self.sep_id])
            types.append([0] * (len(qi) + 2) + [1] * (len(di) + 1))
            segs.append([0] + [1] * len(qi) + [2] + [3] * len(di) + [4])
        return _batch(ids, types, segs)

    # --------------------------------------------------------------- split
    def doc_budget(self) -> int:
        b = self.max_positions - 2
        return min(b, self.doc_max_tokens) if self.doc_max_tokens is not None else b

    def query_parts(self, queries: list[str]) -> TokenBatch:
        q = self.word_pieces(queries, self.query_max_tokens)
        ids = [[self.cls_id, *x, self.sep_id] for x in q]
        return _batch(ids, [[0] * len(x) for x in ids],
                      [[0] + [1] * (len(x) - 2) + [2] for x in ids])

    def doc_parts(self, docs: list[str]) -> TokenBatch:
        d = self.word_pieces(docs, self.doc_budget())
        ids = [[self.cls_id, *x, self.sep_id] for x in d]
        tt = self.doc_token_type
        return _batch(ids, [[tt] * len(x) for x in ids], [[3] * (len(x) - 1) + [4] for x in ids])

    def split_pairs(self, queries: list[str], docs: list[str]) -> TokenBatch:
        """Query part followed by document part in one sequence, positions restarting."""
        qb, db = self.query_parts(queries), self.doc_parts(docs)
        return concat_parts(qb, db)


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

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
#: a document token that is attended and frozen as ``doc`` but not scored by MaxSim (the
#: punctuation skip-list of ColBERT / PyLate checkpoints)
SKIP_DOC = 5
#: a query expansion token (``[MASK]`` padding) whose row is a ``query`` row but which is no
#: key for anyone (ColBERT ``attend_to_mask_tokens=False``, PyLate's default); scored
EXPANSION = 6
_ROWS = (-1, 0, 1, 2, 3, 4, 3, 1)   # segment id + 1 -> the segment its row behaves as
_KEYS = (-1, 0, 1, 2, 3, 4, 3, -1)  # segment id + 1 -> the segment it is as a key (-1: none)


def check_texts(texts, column: str, unit: str = "pair") -> None:
    """Every text of ``texts`` a string; else a :class:`~mice_bench.errors.UsageError`
    naming the first other one by its ``unit`` number and ``column`` (``pair 3: the
    document is float nan, not a string``)."""
    from ..errors import UsageError

    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise UsageError(f"{unit} {i}: the {column} is {type(t).__name__} {t!r:.40}, "
                             "not a string")


def row_segments(seg: torch.Tensor) -> torch.Tensor:
    """Segment ids as rows read them (``SKIP_DOC`` -> ``doc``, ``EXPANSION`` -> ``query``)."""
    return torch.tensor(_ROWS, device=seg.device)[seg + 1]


def key_segments(seg: torch.Tensor) -> torch.Tensor:
    """Segment ids as keys (``SKIP_DOC`` -> ``doc``; ``EXPANSION`` -> padding: not a key)."""
    return torch.tensor(_KEYS, device=seg.device)[seg + 1]


def query_side(seg: torch.Tensor) -> torch.Tensor:
    """Tokens of the query side (``cls``, ``query``, ``sep_q``, expansion)."""
    return ((seg >= 0) & (seg <= 2)) | (seg == EXPANSION)


def doc_side(seg: torch.Tensor) -> torch.Tensor:
    """Tokens of the document side (``doc``, ``sep_d``, skip-list tokens)."""
    return (seg >= 3) & (seg <= SKIP_DOC)


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

    Lengths are in word pieces, special tokens excluded. Each setting is resolved as: an
    explicit argument (a flag) > the checkpoint's own configuration (``checkpoint``, a
    :class:`~mice_bench.checkpoints.CheckpointSettings`) > the spec's reference default
    (:meth:`~mice_bench.spec.InteractionSpec.default_lengths`); :meth:`settings` reports the
    effective values and their sources.

    * joint pairs: the query is cut to ``query_max_tokens`` and the document to
      ``doc_max_tokens`` (when set), then the pair to ``max_length`` tokens in all with
      ``longest_first`` truncation, as Hugging Face pair tokenization does (a
      sentence-transformers ``max_seq_length`` sets ``max_length``);
    * split query part ``[CLS] (marker) q [SEP]`` (cut to ``query_max_tokens``; the marker of a
      ColBERT / PyLate checkpoint, e.g. ``[unused0]`` / ``[Q] ``, right after ``[CLS]``); with
      ColBERT's query augmentation (``spec.qaug``) padded with ``[MASK]`` tokens, scored, to
      ``query_max_tokens`` + the special tokens; the padding is attended (xpmir) unless the
      checkpoint says otherwise (ColBERT ``attend_to_mask_tokens``, PyLate
      ``attend_to_expansion_tokens``: segment :data:`EXPANSION`, not a key);
    * split document part, by ``spec.doc_style``: ``cls`` ``[CLS] (marker) d [SEP]`` positions
      from 0, token type ``doc_token_type`` (skip-list tokens of a ColBERT checkpoint get
      segment :data:`SKIP_DOC`: attended, not scored); ``pair`` cut from the joint pair
      (PreTTR); ``offset`` ``d [SEP]`` with positions from ``spec.qlen`` and token type 1;
    * sentence-transformers prompts (``query`` / ``document``) are prepended to the texts of
      the split parts.
    """

    def __init__(self, tokenizer, max_positions: int, spec=None,
                 query_max_tokens: int | None = None, doc_max_tokens: int | None = None,
                 doc_token_type: int | None = None, pair_separators: int = 1,
                 token_types: bool = True, checkpoint=None):
        from ..checkpoints import CheckpointSettings

        cs = checkpoint if checkpoint is not None else CheckpointSettings()
        self.checkpoint = cs
        self.tok = tokenizer
        self.pair_separators = int(pair_separators)
        self.token_types = bool(token_types)
        self.spec = spec
        src: dict[str, str] = {}
        self.sources = src
        if cs.model_max_length is not None and cs.model_max_length < max_positions:
            max_positions = cs.model_max_length
            src["max_positions"] = cs.source("model_max_length")
        self.max_positions = max_positions
        d = spec.default_lengths() if spec is not None else \
            {"query_max_tokens": 32, "doc_max_tokens": None, "max_length": 512}
        self.doc_style = (spec.doc_style if spec is not None else None) or "cls"
        parts = spec is not None and spec.layout == "split" and self.doc_style == "cls"
        self.parts = parts

        def tok_id(t):
            i = tokenizer.convert_tokens_to_ids(t)
            unk = getattr(tokenizer, "unk_token_id", None)
            if i is None or (unk is not None and i == unk and t != tokenizer.unk_token):
                from ..errors import UsageError

                raise UsageError(f"the checkpoint's marker {t!r} is not in its tokenizer")
            return int(i)

        self.q_marker_id = self.d_marker_id = None
        self.query_marker = self.doc_marker = None
        if parts and cs.query_marker:
            self.query_marker, self.q_marker_id = cs.query_marker, tok_id(cs.query_marker)
            src["query_marker"] = cs.source("query_marker")
        if parts and cs.doc_marker:
            self.doc_marker, self.d_marker_id = cs.doc_marker, tok_id(cs.doc_marker)
            src["doc_marker"] = cs.source("doc_marker")
        q_special = 2 + (self.q_marker_id is not None)
        d_special = 2 + (self.d_marker_id is not None)
        self.qaug = bool(spec is not None and spec.qaug)
        if self.qaug and parts and cs.query_expansion is not None:
            self.qaug = bool(cs.query_expansion)
            src["qaug"] = cs.source("query_expansion")

        def resolve(name, flag, total_key, special):
            if flag is not None:
                src[name] = "flag"
                return flag
            total = getattr(cs, total_key)
            if parts and total:
                src[name] = cs.source(total_key)
                return max(total - special, 1)
            if parts and cs.max_seq_length:
                v = max(cs.max_seq_length - special, 1)
                if self.qaug and d[name] is not None:
                    v = min(v, d[name])  # ColBERT's own lengths: the limit only caps them
                src[name] = cs.source("max_seq_length")
                return v
            src[name] = "preset"
            return d[name]

        self.query_max_tokens = resolve("query_max_tokens", query_max_tokens, "query_length",
                                        q_special)
        self.doc_max_tokens = resolve("doc_max_tokens", doc_max_tokens, "doc_length", d_special)
        ml = d["max_length"]
        src["max_length"] = "preset"
        if not parts and cs.max_seq_length:
            ml = cs.max_seq_length
            src["max_length"] = cs.source("max_seq_length")
        self.max_length = min(ml, max_positions)
        self.truncation = d.get("truncation", "longest_first")
        self.doc_token_type = doc_token_type if doc_token_type is not None else \
            (spec.doc_token_type if spec is not None else 0)
        self.attend_expansion = True
        if self.qaug and parts and cs.attend_expansion is not None:
            self.attend_expansion = bool(cs.attend_expansion)
            src["attend_expansion"] = cs.source("attend_expansion")
        self.skip_ids: list[int] = []
        if parts and spec.head == "maxsim" and cs.skiplist:
            self.skip_ids = cs.skip_ids(tokenizer)
            src["skiplist"] = cs.source("skiplist")
        self.query_prompt = cs.query_prompt if parts else None
        self.doc_prompt = cs.doc_prompt if parts else None
        if self.query_prompt:
            src["query_prompt"] = cs.source("query_prompt")
        if self.doc_prompt:
            src["doc_prompt"] = cs.source("doc_prompt")
        self.cls_id = tokenizer.cls_token_id
        self.sep_id = tokenizer.sep_token_id
        self.mask_id = tokenizer.mask_token_id
        pad = getattr(tokenizer, "pad_token_id", None)
        self.pad_id = int(pad) if pad is not None else 0

    def _types(self, types: list[list[int]]) -> list[list[int]]:
        return types if self.token_types else [[0] * len(t) for t in types]

    def word_pieces(self, texts: list[str], max_len: int | None,
                    prompt: str | None = None) -> list[list[int]]:
        if not texts:
            return []
        max_len = self.max_positions if max_len is None else max_len
        if prompt:
            texts = [prompt + t for t in texts]
        enc = self.tok(list(texts), add_special_tokens=False, truncation=True,
                       max_length=max(max_len, 1))
        return [list(x)[:max_len] for x in enc["input_ids"]]

    def settings(self) -> dict:
        """The effective limits and input conventions (for results); ``sources`` says where
        each came from (``flag``, ``checkpoint:<file>``, ``preset``)."""
        out = {"query_max_tokens": self.query_max_tokens, "doc_max_tokens": self.doc_max_tokens,
               "max_length": self.max_length, "truncation": self.truncation,
               "doc_style": self.doc_style, "qaug": self.qaug}
        if self.qaug:
            out["attend_expansion"] = self.attend_expansion
        for k in ("query_marker", "doc_marker", "query_prompt", "doc_prompt"):
            if getattr(self, k):
                out[k] = getattr(self, k)
        if self.skip_ids:
            out["skiplist_ids"] = len(self.skip_ids)
        if "max_positions" in self.sources:
            out["max_positions"] = self.max_positions
        out["sources"] = dict(self.sources)
        return out

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
    def doc_budget(self, special: int = 2) -> int:
        if self.doc_style == "offset":
            b = min(self.max_length, self.max_positions) - self.spec.qlen - 1
        else:
            b = self.max_positions - special
        return min(b, self.doc_max_tokens) if self.doc_max_tokens is not None else b

    def query_parts(self, queries: list[str]) -> TokenBatch:
        pre = [self.cls_id] + ([self.q_marker_id] if self.q_marker_id is not None else [])
        qmax = self.max_positions - len(pre) - 1
        if self.query_max_tokens is not None:
            qmax = min(qmax, self.query_max_tokens)
        if self.doc_style == "offset":
            qmax = min(qmax, self.spec.qlen - 2)
        q = self.word_pieces(queries, qmax, self.query_prompt)
        ids = [[*pre, *x, self.sep_id] for x in q]
        segs = [[0] + [1] * (len(pre) - 1 + len(x)) + [2] for x in q]
        if self.qaug:
            total = min((self.query_max_tokens or 30) + len(pre) + 1, self.max_positions)
            pad_seg = 1 if self.attend_expansion else EXPANSION
            for x, sg in zip(ids, segs):
                n = max(total - len(x), 0)
                x += [self.mask_id] * n
                sg += [pad_seg] * n
        return _batch(ids, [[0] * len(x) for x in ids], segs, pad_id=self.pad_id)

    def doc_parts(self, docs: list[str]) -> TokenBatch:
        if self.doc_style == "pair":
            raise ValueError("PreTTR documents are cut from the joint pair; use split_pairs")
        if self.doc_style == "offset":
            d = self.word_pieces(docs, self.doc_budget())
            ids = [[*x, self.sep_id] for x in d]
            off = self.spec.qlen
            return _batch(ids, self._types([[1] * len(x) for x in ids]),
                          [[3] * (len(x) - 1) + [4] for x in ids],
                          positions=[list(range(off, off + len(x))) for x in ids],
                          pad_id=self.pad_id)
        pre = [self.cls_id] + ([self.d_marker_id] if self.d_marker_id is not None else [])
        d = self.word_pieces(docs, self.doc_budget(len(pre) + 1), self.doc_prompt)
        ids = [[*pre, *x, self.sep_id] for x in d]
        skip = set(self.skip_ids)
        segs = [[3] * len(pre) + [SKIP_DOC if t in skip else 3 for t in x] + [4] for x in d]
        tt = self.doc_token_type
        return _batch(ids, self._types([[tt] * len(x) for x in ids]), segs, pad_id=self.pad_id)

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
        qsel = query_side(seg)
        dsel = doc_side(seg)
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

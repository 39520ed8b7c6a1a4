"""Test-only oracle of the MICE paper's reference models (arXiv 2602.16299), rebuilt on Hugging
Face's own BERT modules; it never imports ``mice_bench``.  Every class cites the reference
(``xpmir/mice`` @b4dc361, masking study @b8deef5; ``experimaestro/experimaestro-ir``)."""
from __future__ import annotations

import copy
import re
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast
from transformers.models.bert.modeling_bert import BertLayer

VOCAB = Path(__file__).resolve().parents[2] / "mice_bench" / "configs" / "vocab.txt"


def perturbed_bert_cls(num_layers=8, hidden=64, heads=4, intermediate=128, seed=0):
    """A tiny eager ``BertForSequenceClassification`` whose every parameter is seeded noise:
    LayerNorm weights in 1 +- 0.2, biases and all other weights N(0, 0.15)."""
    cfg = BertConfig(vocab_size=30522, hidden_size=hidden, num_hidden_layers=num_layers,
                     num_attention_heads=heads, intermediate_size=intermediate,
                     max_position_embeddings=512, num_labels=1, attn_implementation="eager")
    model = BertForSequenceClassification(cfg)
    assert model.config._attn_implementation == "eager"
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if "LayerNorm.weight" in name:
                p.copy_(1.0 + 0.2 * (2 * torch.rand(p.shape, generator=g) - 1))
            else:
                p.copy_(0.15 * torch.randn(p.shape, generator=g))
    return model.eval()


def bert_tokenizer():
    """BertTokenizerFast with the full 30,522-token uncased vocab (read as a data file)."""
    tok = BertTokenizerFast(vocab=str(VOCAB), do_lower_case=True, model_max_length=512)
    assert len(tok) == 30522, len(tok)
    return tok


def _ext_mask(mask, dtype):
    """[B, L] 0/1 -> additive [B, 1, 1, L] (MiceCrossEncoder.get_extended_attention_mask)."""
    inv = 1.0 - mask[:, None, None, :].to(dtype)
    return inv.masked_fill(inv.to(torch.bool), torch.finfo(dtype).min)


def ref_cross_encoder_scores(hf_cls_model, tokenizer, queries, docs, max_length=512):
    """Plain HF cross-encoder: ``tokenizer(queries, docs, truncation=True, padding=True)``."""
    enc = tokenizer(list(queries), list(docs), truncation=True, max_length=max_length,
                    padding=True, return_tensors="pt")
    with torch.no_grad():
        return hf_cls_model(**enc).logits.squeeze(-1).float()


class RefMiceBert(nn.Module):
    """Reproduces ``BertMiceCrossEncoder`` (src/MICE/modeling/mice.py @b4dc361): ``forward``,
    ``encode_queries``/``encode_documents``, ``get_self_attention_mask``,
    ``get_cross_attention_mask``, ``forward_inverted_transformer`` (cross_attn_first=True)
    and ``forward_vanilla_transformer`` (False); weights as ``InitMICEBERTFromHFID``
    (bottom = layers 0..m-1, top = layers m..m+n-1 with cross-attention seeded from
    self-attention by ``_copy_bert_weights``; pooler kept).  The reference classifier is a
    fresh ``nn.Linear(H, 1)``; here it is copied from the HF model so scores are comparable.
    Tokenization as ``MICEQueryDocTokenizer.tokenize``: each side alone, special tokens,
    truncation, ``padding=True``; token type 0 and positions from 0 on both sides."""

    def __init__(self, hf_cls_model, m, n, cross_attn_first=True, mask_cls_to_doc=False,
                 mask_query_to_cls=True, perturb_cross_seed=None, max_query_length=512,
                 max_doc_length=512):
        super().__init__()
        bert = hf_cls_model.bert
        cfg = copy.deepcopy(hf_cls_model.config)
        cfg._attn_implementation = "eager"
        head_cfg = copy.deepcopy(cfg)
        head_cfg.is_decoder, head_cfg.add_cross_attention = True, True
        assert m + n <= cfg.num_hidden_layers
        self.cross_attn_first, self.mask_cls_to_doc = cross_attn_first, mask_cls_to_doc
        self.mask_query_to_cls = mask_query_to_cls
        self.max_query_length, self.max_doc_length = max_query_length, max_doc_length
        self.embeddings = copy.deepcopy(bert.embeddings)
        self.bottom_layers = nn.ModuleList()
        for i in range(m):
            layer = BertLayer(cfg)
            layer.load_state_dict(bert.encoder.layer[i].state_dict())
            self.bottom_layers.append(layer)
        self.top_layers = nn.ModuleList()
        for src in bert.encoder.layer[m:m + n]:
            tgt = BertLayer(head_cfg)  # _copy_bert_weights
            tgt.attention.self.load_state_dict(src.attention.self.state_dict())
            tgt.attention.output.load_state_dict(src.attention.output.state_dict())
            tgt.intermediate.load_state_dict(src.intermediate.state_dict())
            tgt.output.load_state_dict(src.output.state_dict())
            tgt.crossattention.self.load_state_dict(src.attention.self.state_dict())
            tgt.crossattention.output.load_state_dict(src.attention.output.state_dict())
            self.top_layers.append(tgt)
        if perturb_cross_seed is not None:
            g = torch.Generator().manual_seed(perturb_cross_seed)
            with torch.no_grad():
                for layer in self.top_layers:
                    for _, p in sorted(layer.crossattention.named_parameters()):
                        p.add_(0.1 * torch.randn(p.shape, generator=g))
        self.pooler = copy.deepcopy(bert.pooler)
        self.classifier = nn.Linear(cfg.hidden_size, 1)
        self.classifier.load_state_dict(hf_cls_model.classifier.state_dict())
        self.eval()

    def _encode(self, ids, mask):  # encode_queries / encode_documents (bound bottom layers)
        x = self.embeddings(ids)
        ext = _ext_mask(mask, x.dtype)
        for layer in self.bottom_layers:
            x = layer(x, ext)
        return x

    def self_attention_mask(self, mask, dtype):  # get_self_attention_mask
        valid = mask.bool()[:, None, :, None] & mask.bool()[:, None, None, :]
        if self.mask_query_to_cls:
            valid[:, :, 1:, 0] = False
        return torch.zeros(valid.shape, dtype=dtype).masked_fill_(~valid, torch.finfo(dtype).min)

    def cross_attention_mask(self, q_mask, d_mask, dtype):  # get_cross_attention_mask
        valid = q_mask.bool()[:, :, None] & d_mask.bool()[:, None, :]
        if self.mask_cls_to_doc:
            valid[:, 0, :] = False  # CLS row fully masked -> uniform over ALL doc positions
        out = torch.zeros((valid.size(0), 1, valid.size(1), valid.size(2)), dtype=dtype)
        return out.masked_fill_(~valid[:, None], torch.finfo(dtype).min)

    def forward_tokenized(self, q_ids, q_mask, d_ids, d_mask):
        q = self._encode(q_ids, q_mask)
        d = self._encode(d_ids, d_mask)
        q_ext = self.self_attention_mask(q_mask, q.dtype)
        d_ext = self.cross_attention_mask(q_mask, d_mask, q.dtype)
        last = len(self.top_layers) - 1
        for i, layer in enumerate(self.top_layers):
            if self.cross_attn_first:  # forward_inverted_transformer
                q = layer.crossattention(hidden_states=q, encoder_hidden_states=d,
                                         encoder_attention_mask=d_ext)[0]
                q = layer.attention(q, q_ext)[0]
                if i == last:
                    q = q[:, 0:1, :]
                q = layer.output(layer.intermediate(q), q)
            elif i == last:  # forward_vanilla_transformer, last layer
                q = layer.attention(q, q_ext)[0][:, 0:1, :]
                if not self.mask_cls_to_doc:  # cross-attention skipped entirely for CLS
                    q = layer.crossattention(hidden_states=q, encoder_hidden_states=d,
                                             encoder_attention_mask=d_ext[:, :, 0:1, :])[0]
                q = layer.output(layer.intermediate(q), q)
            else:
                q = layer(hidden_states=q, attention_mask=q_ext, encoder_hidden_states=d,
                          encoder_attention_mask=d_ext)
        return self.classifier(self.pooler(q)).squeeze(-1)

    def tokenize(self, tokenizer, texts, max_length):
        return tokenizer(list(texts), add_special_tokens=True, truncation=True,
                         max_length=max_length, padding=True, return_tensors="pt")

    def score(self, tokenizer, queries, docs):
        q = self.tokenize(tokenizer, queries, self.max_query_length)
        d = self.tokenize(tokenizer, docs, self.max_doc_length)
        with torch.no_grad():
            return self.forward_tokenized(q["input_ids"], q["attention_mask"],
                                          d["input_ids"], d["attention_mask"]).float()


def xpmir_pair_tokenize(tokenizer, queries, docs, max_length=512, max_query_length=None,
                        max_doc_length=None):
    """xpmir ``HFQueryDocTokenizer.tokenize``: each side encoded without special tokens,
    query capped at max_doc_length // 2 (256), doc at max_length - 3; on overflow the
    DOCUMENT is cut first (query only if the doc is consumed); ``[CLS] q [SEP] d [SEP]``
    right-padded; token type 0 up to the first [SEP], 1 after (padding included)."""
    max_doc_length = max_doc_length or max_length
    max_query_length = max_query_length or max_doc_length // 2
    content = max_length - 3
    enc = lambda t, k: tokenizer(list(t), add_special_tokens=False, truncation=True,  # noqa
                                 max_length=k)["input_ids"]
    seqs, q_lens = [], []
    for q, d in zip(enc(queries, min(max_query_length, content)),
                    enc(docs, min(max_doc_length, content))):
        over = len(q) + len(d) - content
        if over > 0:
            cut = min(len(d), over)
            d, over = d[:len(d) - cut], over - cut
        if over > 0:
            q = q[:len(q) - min(len(q), over)]
        seqs.append([tokenizer.cls_token_id, *q, tokenizer.sep_token_id, *d,
                     tokenizer.sep_token_id])
        q_lens.append(len(q) + 2)
    L = max(map(len, seqs))
    ids = torch.tensor([s + [tokenizer.pad_token_id] * (L - len(s)) for s in seqs])
    lens = torch.tensor([len(s) for s in seqs])
    mask = (torch.arange(L)[None] < lens[:, None]).long()
    types = (torch.arange(L)[None] >= torch.tensor(q_lens)[:, None]).long()
    return ids, mask, types


class RefPreTTR(nn.Module):
    """Reproduces ``PreTTRCrossEncoder.forward`` (src/MICE/modeling/prettr_mice.py @b4dc361)
    with ``doc_hidden_states=None``: joint ``[CLS] q [SEP] d [SEP]`` (xpmir
    ``HFQueryDocTokenizer``, see :func:`xpmir_pair_tokenize`), embeddings with token types
    and default continuous positions (``_garage_shifted_position_ids`` is unused), ``join_mask``
    (attend only to valid keys of the same token type; padding rows fully masked) below
    ``join_layer``, key-padding mask from ``join_layer`` on; pooler + dropout + classifier."""

    def __init__(self, hf_cls_model, join_layer, max_length=512):
        super().__init__()
        self.model = copy.deepcopy(hf_cls_model).eval()
        self.model.config._attn_implementation = "eager"
        self.join_layer, self.max_length = join_layer, max_length

    def score(self, tokenizer, queries, docs):
        ids, mask, types = xpmir_pair_tokenize(tokenizer, queries, docs, self.max_length)
        bert, (B, L) = self.model.bert, ids.shape
        with torch.no_grad():
            h = bert.embeddings(input_ids=ids, token_type_ids=types)
            m = mask.bool()
            join = ~(m.view(B, 1, L, 1) & m.view(B, 1, 1, L)) | (
                types.view(B, 1, L, 1) != types.view(B, 1, 1, L))
            join = join.to(h.dtype).masked_fill_(join, torch.finfo(h.dtype).min)
            ext = _ext_mask(mask, h.dtype)
            for i, layer in enumerate(bert.encoder.layer):
                h = layer(h, attention_mask=join if i < self.join_layer else ext)
            pooled = self.model.dropout(bert.pooler(h))
            return self.model.classifier(pooled).squeeze(-1).float()


class RefColBERT(nn.Module):
    """Reproduces xpmir ``ColBERTEncoder`` (experimaestro-ir src/xpmir/neural/colbert.py) as
    configured by ``Colbert_scorer`` (experiments/mice_v1/baselines/colbert/colbert_training.py):
    ``HFTokensEncoder`` = BertModel last_hidden_state; ``nn.Linear(H, dim, bias=False)`` then
    L2 normalisation; queries tokenized with max_length=query_maxlen (specials included),
    padded to query_maxlen, padding -> [MASK] with attention 1 (``_mask_pad_query``); docs
    tokenized with max_length=doc_maxlen; ``_max_sim`` paired: sum over query positions of
    the max over valid doc tokens (incl. [CLS]/[SEP]) of the dot product."""

    def __init__(self, hf_bert_model_or_cls_model, projection_weight=None, dim=128,
                 query_maxlen=32, doc_maxlen=180, query_augmentation=True):
        super().__init__()
        src = hf_bert_model_or_cls_model
        self.bert = copy.deepcopy(src.bert if hasattr(src, "bert") else src).eval()
        self.bert.config._attn_implementation = "eager"
        H = self.bert.config.hidden_size
        if projection_weight is None:
            g = torch.Generator().manual_seed(0)
            projection_weight = torch.randn(dim, H, generator=g) / H ** 0.5
        self.projection = nn.Linear(H, dim, bias=False)
        with torch.no_grad():
            self.projection.weight.copy_(projection_weight)
        self.query_maxlen, self.doc_maxlen = query_maxlen, doc_maxlen
        self.query_augmentation = query_augmentation

    @property
    def projection_weight(self):
        return self.projection.weight

    def _encode(self, ids, mask, types):
        y = self.bert(ids, attention_mask=mask, token_type_ids=types).last_hidden_state
        return F.normalize(self.projection(y), p=2, dim=-1)

    def score(self, tokenizer, queries, docs):
        q = tokenizer(list(queries), max_length=self.query_maxlen, truncation=True,
                      padding=True, return_tensors="pt")
        q_ids, q_mask, q_types = q["input_ids"], q["attention_mask"], q["token_type_ids"]
        if self.query_augmentation:
            pad = self.query_maxlen - q_ids.shape[1]
            if pad > 0:
                q_ids, q_mask, q_types = (F.pad(t, (0, pad)) for t in (q_ids, q_mask, q_types))
            q_ids = q_ids.masked_fill(q_mask == 0, tokenizer.mask_token_id)
            q_mask = torch.ones_like(q_mask)
        d = tokenizer(list(docs), max_length=self.doc_maxlen, truncation=True, padding=True,
                      return_tensors="pt")
        with torch.no_grad():
            qv = self._encode(q_ids, q_mask, q_types)
            dv = self._encode(d["input_ids"], d["attention_mask"], d["token_type_ids"])
            s = torch.einsum("nmd,nkd->nmk", qv, dv)
            s = s.masked_fill(~d["attention_mask"].bool()[:, None, :], torch.finfo(s.dtype).min)
            return (s.max(dim=-1).values * q_mask.to(s.dtype)).sum(-1).float()


# franken.py: INPUT_PART_TO_POSITION; patches copied from masking_steps/bm25_minilm_step*.yaml
PARTS = {"cls": 0, "query": 1, "sep_1": 2, "document": 3, "sep_2": 4}
N = len(PARTS)
_ALL = None  # end_layer=-1: up to the last layer
_MASK0 = [
    (["query", "sep_1", "document", "sep_2"], ["cls"], 0, _ALL),
    (["document"], ["sep_1"], 0, _ALL),
    (["query"], ["sep_2"], 0, _ALL),
    (["sep_1"], ["cls", "query", "document", "sep_2"], 0, _ALL),
    (["sep_2"], ["cls", "query", "sep_1", "document"], 0, _ALL),
]
_STEP1 = [(["cls"], ["document", "sep_2"], 0, _ALL)]
_STEP2 = [(["document"], ["query"], 0, _ALL)]


def mask_patches(step):
    """Patch list (from, to, start_layer, end_layer) of ``none``, ``mask0`` (step0),
    ``mask1`` (step1), ``mask2`` (step2) and ``mask3-l{k}`` (step3_l{k}: mask2 + query ->
    document blocked in layers [0, k))."""
    if step == "none":
        return []
    if step in ("mask0", "mask1", "mask2"):
        return _MASK0 + (_STEP1 if step != "mask0" else []) + (_STEP2 if step == "mask2" else [])
    k = re.fullmatch(r"mask3-l(\d+)", step)
    if not k:
        raise ValueError(step)
    return _MASK0 + _STEP1 + _STEP2 + [(["query"], ["document"], 0, int(k.group(1)))]


def segment_codes(ids, sep_id, cls_id, pad_id):
    """franken.build_lookup_matrix_core: [B, L, L] code from*N + to (N*N for padding)."""
    a = ((ids == sep_id) | (ids == cls_id)).float()
    a = torch.where(ids == pad_id, -torch.inf, a)
    a = torch.hstack([a.new_zeros(a.shape[0], 1), a])
    a = (a[:, 1:] + a[:, :-1]).cumsum(dim=1) - 1
    a = a.unsqueeze(1) + (a * N).unsqueeze(2)
    return torch.where(a == -torch.inf, float(N ** 2), a).long()


class RefMasked(nn.Module):
    """Reproduces ``FrankenCrossScorer.forward`` (src/models/franken.py @b8deef5) over
    ``HFMaskedMiniLMCrossScorer`` / ``CustomMaskBertModel`` (src/models/mask_scorer.py,
    mask_modeling.py): per-layer 0/1 masks from the segment lookup (padding rows/cols always
    0), turned into ``(1 - m) * finfo.min`` 4-D masks (``get_extended_attention_mask`` of a
    3-D mask), fed to each HF BertLayer; pooler + dropout + classifier.  Tokenization: HF pair
    tokenization ``tokenizer([(q, d), ...], max_length=min(max_position_embeddings, 1024)=512,
    truncation=True`` (= longest_first) ``, padding=True)``, token types 0/1 passed through."""

    def __init__(self, hf_cls_model, step: str):
        super().__init__()
        self.model = copy.deepcopy(hf_cls_model).eval()
        self.model.config._attn_implementation = "eager"
        cfg = self.model.config
        self.n_layers = cfg.num_hidden_layers
        self.max_length = min(cfg.max_position_embeddings, 1024)
        lookup = torch.ones((self.n_layers, N * N + 1), dtype=torch.bool)
        lookup[:, N * N] = False
        for frm, to, start, end in mask_patches(step):
            for f in frm:
                for t in to:
                    lookup[start:self.n_layers if end is None else end, PARTS[f] * N + PARTS[t]] = False
        self.lookup = lookup

    def layer_masks(self, ids, tokenizer):
        codes = segment_codes(ids, tokenizer.sep_token_id, tokenizer.cls_token_id,
                              tokenizer.pad_token_id)
        return [self.lookup[i][codes].long() for i in range(self.n_layers)]

    def score(self, tokenizer, queries, docs):
        enc = tokenizer(list(zip(queries, docs)), max_length=self.max_length, truncation=True,
                        padding=True, return_tensors="pt")
        bert = self.model.bert
        with torch.no_grad():
            h = bert.embeddings(input_ids=enc["input_ids"], token_type_ids=enc["token_type_ids"])
            dt, mn = h.dtype, torch.finfo(h.dtype).min
            for layer, m in zip(bert.encoder.layer, self.layer_masks(enc["input_ids"], tokenizer)):
                h = layer(h, attention_mask=(1.0 - m[:, None].to(dt)) * mn)
            pooled = self.model.dropout(bert.pooler(h))
            return self.model.classifier(pooled).squeeze(-1).float()


# ----------------------------------------------------------------------------- ModernBERT
def perturbed_modernbert_cls(num_layers=8, hidden=64, heads=4, intermediate=96, local_attention=8,
                             pooling="cls", seed=0, attention_bias=False):
    """A tiny eager ``ModernBertForSequenceClassification`` (BERT WordPiece ids; local window
    ``local_attention`` tokens, every other layer global) whose every parameter is seeded
    noise: norm weights in 1 +- 0.2, everything else N(0, 0.15)."""
    from transformers import ModernBertConfig, ModernBertForSequenceClassification

    cfg = ModernBertConfig(vocab_size=30522, hidden_size=hidden, num_hidden_layers=num_layers,
                           num_attention_heads=heads, intermediate_size=intermediate,
                           max_position_embeddings=512, local_attention=local_attention,
                           global_attn_every_n_layers=2, num_labels=1,
                           classifier_pooling=pooling, attention_bias=attention_bias,
                           pad_token_id=0, cls_token_id=101, sep_token_id=102, bos_token_id=101,
                           eos_token_id=102, attn_implementation="eager")
    model = ModernBertForSequenceClassification(cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.2 * (2 * torch.rand(p.shape, generator=g) - 1))
            else:
                p.copy_(0.15 * torch.randn(p.shape, generator=g))
    return model.eval()


class RefModernBertCrossAttention(nn.Module):
    """``ModernBertCrossAttention`` (src/MICE/modeling/mice.py @b4dc361): separate
    ``q_proj``/``k_proj``/``v_proj`` (bias = ``attention_bias``), no rotary positions, eager
    attention ``softmax(q k^T / sqrt(d) + mask) v``, then ``Wo``."""

    def __init__(self, cfg):
        super().__init__()
        H, b = cfg.hidden_size, cfg.attention_bias
        self.heads, self.head_dim = cfg.num_attention_heads, H // cfg.num_attention_heads
        self.q_proj, self.k_proj, self.v_proj = (nn.Linear(H, H, bias=b) for _ in range(3))
        self.Wo = nn.Linear(H, H, bias=b)

    def forward(self, query, key, value, attention_mask):
        def split(x):
            return x.view(*x.shape[:-1], self.heads, self.head_dim).transpose(1, 2)

        q, k, v = split(self.q_proj(query)), split(self.k_proj(key)), split(self.v_proj(value))
        w = torch.matmul(q, k.transpose(2, 3)) * self.head_dim ** -0.5 + attention_mask
        w = F.softmax(w, dim=-1, dtype=torch.float32).to(q.dtype)
        out = torch.matmul(w, v).transpose(1, 2).reshape(*query.shape[:-1], -1)
        return self.Wo(out)


class RefModernBertCrossLayer(nn.Module):
    """``ModernBertCrossAttentionLayer``: ``attn_norm`` (identity in layer 0), HF
    ``ModernBertAttention``, the cross-attention above, ``mlp_norm``, HF ``ModernBertMLP``.
    ``forward`` = self-attention residual, then cross-attention residual with ``attn_norm``
    applied to the query rows AND to the document states, then the MLP residual."""

    def __init__(self, cfg, layer_id):
        super().__init__()
        from transformers.models.modernbert.modeling_modernbert import (ModernBertAttention,
                                                                         ModernBertMLP)

        eps, bias = cfg.norm_eps, cfg.norm_bias
        self.attn_norm = nn.Identity() if layer_id == 0 else nn.LayerNorm(
            cfg.hidden_size, eps=eps, bias=bias)
        self.attn = ModernBertAttention(cfg, layer_idx=layer_id)
        self.crossattention = RefModernBertCrossAttention(cfg)
        self.mlp_norm = nn.LayerNorm(cfg.hidden_size, eps=eps, bias=bias)
        self.mlp = ModernBertMLP(cfg)
        self.attention_type = cfg.layer_types[layer_id]

    def self_res(self, x, mask, pos_emb):
        return x + self.attn(self.attn_norm(x), attention_mask=mask,
                             position_embeddings=pos_emb)[0]

    def cross_res(self, x, d, mask):
        dn = self.attn_norm(d)
        return x + self.crossattention(self.attn_norm(x), dn, dn, mask)

    def mlp_res(self, x):
        return x + self.mlp(self.mlp_norm(x))

    def forward(self, x, mask, d, d_mask, pos_emb):
        return self.mlp_res(self.cross_res(self.self_res(x, mask, pos_emb), d, d_mask))


class RefMiceModernBert(nn.Module):
    """Reproduces ``ModernBertMiceCrossEncoder`` (src/MICE/modeling/mice.py @b4dc361):
    ``encode_queries``/``encode_documents`` (embeddings, rotary positions from 0 per part, the
    HF ``ModernBertEncoderLayer`` bottom layers, each given the same key-padding mask, so with
    eager attention the local layers attend globally), ``forward_inverted_transformer``
    (cross_attn_first=True: cross residual, self residual, last layer cut to [CLS] with cls
    pooling, MLP) and ``forward_vanilla_transformer`` (False: the full layer; with cls pooling
    the last layer runs self-attention on every row, cuts to [CLS], skips cross-attention when
    ``mask_cls_to_doc``, then the MLP), then ``final_norm``, pooling (``cls``: first token;
    ``mean``: ``x.mean(1)`` over every position, padding included), ``head``, dropout,
    ``classifier``.  Masks as ``get_self_attention_mask`` / ``get_cross_attention_mask``.
    Weights as ``InitMICEModernBERTFromHFID``: bottom and top layers from the HF layers,
    cross q/k/v from the ``Wqkv`` slices and ``Wo`` copied; final_norm and head from the HF
    model; the classifier (fresh in the reference) is copied so scores are comparable."""

    def __init__(self, hf_cls_model, m, n, cross_attn_first=True, mask_cls_to_doc=False,
                 mask_query_to_cls=True, pooling_method=None, perturb_cross_seed=None,
                 max_query_length=512, max_doc_length=512, local_window=False):
        super().__init__()
        #: True: the local layers' self-attention sees only keys within
        #: ``local_attention // 2`` positions (what flash attention applies to the same code);
        #: False: the reference's eager attention, every key
        self.local_window = local_window
        from transformers.models.modernbert.modeling_modernbert import (
            ModernBertEncoderLayer, ModernBertRotaryEmbedding)

        src = hf_cls_model.model
        cfg = copy.deepcopy(hf_cls_model.config)
        cfg._attn_implementation = "eager"
        assert m + n <= cfg.num_hidden_layers
        self.cfg = cfg
        self.cross_attn_first, self.mask_cls_to_doc = cross_attn_first, mask_cls_to_doc
        self.mask_query_to_cls = mask_query_to_cls
        self.pm = pooling_method or getattr(cfg, "classifier_pooling", "cls")
        self.max_query_length, self.max_doc_length = max_query_length, max_doc_length
        self.rotary_emb = ModernBertRotaryEmbedding(cfg)
        self.embeddings = copy.deepcopy(src.embeddings)
        self.bottom_layers = nn.ModuleList()
        for i in range(m):
            layer = ModernBertEncoderLayer(cfg, i)
            layer.load_state_dict(src.layers[i].state_dict())
            self.bottom_layers.append(layer)
        self.top_layers = nn.ModuleList()
        H = cfg.hidden_size
        for j in range(n):
            s, t = src.layers[m + j], RefModernBertCrossLayer(cfg, m + j)
            t.attn_norm.load_state_dict(s.attn_norm.state_dict())
            t.attn.load_state_dict(s.attn.state_dict())
            t.mlp_norm.load_state_dict(s.mlp_norm.state_dict())
            t.mlp.load_state_dict(s.mlp.state_dict())
            with torch.no_grad():
                for k, proj in enumerate((t.crossattention.q_proj, t.crossattention.k_proj,
                                          t.crossattention.v_proj)):
                    proj.weight.copy_(s.attn.Wqkv.weight[k * H:(k + 1) * H])
                    if s.attn.Wqkv.bias is not None:
                        proj.bias.copy_(s.attn.Wqkv.bias[k * H:(k + 1) * H])
                t.crossattention.Wo.load_state_dict(s.attn.Wo.state_dict())
            self.top_layers.append(t)
        if perturb_cross_seed is not None:
            g = torch.Generator().manual_seed(perturb_cross_seed)
            with torch.no_grad():
                for layer in self.top_layers:
                    for _, p in sorted(layer.crossattention.named_parameters()):
                        p.add_(0.1 * torch.randn(p.shape, generator=g))
        self.final_norm = copy.deepcopy(src.final_norm)
        self.head = copy.deepcopy(hf_cls_model.head)
        self.classifier = nn.Linear(H, 1)
        self.classifier.load_state_dict(hf_cls_model.classifier.state_dict())
        self.eval()

    def _pos_embeds(self, x, mask):
        b, s = mask.shape
        pos = torch.arange(s).unsqueeze(0).expand(b, s)
        return {lt: self.rotary_emb(x, pos, layer_type=lt) for lt in set(self.cfg.layer_types)}

    def _windowed(self, additive, attention_type):
        """``additive [B, 1, T, S]`` with keys farther than the window masked out in a local
        layer (positions from 0 in each part, as the reference counts them)."""
        if not self.local_window or attention_type != "sliding_attention":
            return additive
        k = additive.shape[-1]
        t = k if additive.shape[-2] == 1 else additive.shape[-2]   # a key-padding mask
        far = (torch.arange(t)[:, None] - torch.arange(k)[None, :]).abs() > \
            self.cfg.local_attention // 2
        return additive.masked_fill(far, torch.finfo(additive.dtype).min)

    def _encode(self, ids, mask):  # encode_queries / encode_documents
        x = self.embeddings(ids)
        ext = _ext_mask(mask, torch.float32)
        pe = self._pos_embeds(x, mask)
        for layer in self.bottom_layers:
            x = layer(x, self._windowed(ext, layer.attention_type),
                      position_embeddings=pe[layer.attention_type])
        return x

    def self_attention_mask(self, mask, dtype):  # get_self_attention_mask
        valid = mask.bool()[:, None, :, None] & mask.bool()[:, None, None, :]
        if self.mask_query_to_cls:
            valid[:, :, 1:, 0] = False
        return torch.zeros(valid.shape, dtype=dtype).masked_fill_(~valid, torch.finfo(dtype).min)

    def cross_attention_mask(self, q_mask, d_mask, dtype):  # get_cross_attention_mask
        valid = q_mask.bool()[:, :, None] & d_mask.bool()[:, None, :]
        if self.mask_cls_to_doc:
            valid[:, 0, :] = False
        out = torch.zeros((valid.size(0), 1, valid.size(1), valid.size(2)), dtype=dtype)
        return out.masked_fill_(~valid[:, None], torch.finfo(dtype).min)

    def forward_tokenized(self, q_ids, q_mask, d_ids, d_mask):
        q = self._encode(q_ids, q_mask)
        d = self._encode(d_ids, d_mask)
        pe = self._pos_embeds(q, q_mask)
        q_self = self.self_attention_mask(q_mask, q.dtype)
        cross = self.cross_attention_mask(q_mask, d_mask, q.dtype)
        last = len(self.top_layers) - 1
        for i, layer in enumerate(self.top_layers):
            p = pe[layer.attention_type]
            q_self_l = self._windowed(q_self, layer.attention_type)
            if self.cross_attn_first:  # forward_inverted_transformer
                q = layer.self_res(layer.cross_res(q, d, cross), q_self_l, p)
                if i == last and self.pm == "cls":
                    q = q[:, 0:1]
                q = layer.mlp_res(q)
            elif i == last and self.pm == "cls":  # forward_vanilla_transformer, last layer
                q = layer.self_res(q, q_self_l, p)[:, 0:1]
                if not self.mask_cls_to_doc:
                    q = layer.cross_res(q, d, cross[:, :, 0:1])
                q = layer.mlp_res(q)
            else:
                q = layer(q, q_self_l, d, cross, p)
        q = self.final_norm(q)
        pooled = q[:, 0] if self.pm == "cls" else q.mean(dim=1)
        return self.classifier(self.head(pooled)).squeeze(-1)

    def tokenize(self, tokenizer, texts, max_length):
        return tokenizer(list(texts), add_special_tokens=True, truncation=True,
                         max_length=max_length, padding=True, return_tensors="pt")

    def score(self, tokenizer, queries, docs):
        q = self.tokenize(tokenizer, queries, self.max_query_length)
        d = self.tokenize(tokenizer, docs, self.max_doc_length)
        with torch.no_grad():
            return self.forward_tokenized(q["input_ids"], q["attention_mask"],
                                          d["input_ids"], d["attention_mask"]).float()

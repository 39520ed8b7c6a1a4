"""Post-norm families: BERT (and MiniLM), ELECTRA, RoBERTa / XLM-RoBERTa.

Their layers are Hugging Face's ``BertLayer`` (self-attention + output LayerNorm, feed-forward
+ output LayerNorm, absolute positions added in the embeddings); a MICE cross-attention
sub-layer is a full ``BertAttention`` with its own LayerNorm (``crossattention.*``). They
differ in the embeddings and the head:

* BERT: token types, pooler ``tanh(W_p h_cls)`` (when the checkpoint has one) + classifier;
* ELECTRA: an embedding projection when ``embedding_size != hidden_size``; the discriminator
  head ``out_proj(gelu(dense(h_cls)))`` (``ElectraClassificationHead``);
* RoBERTa / XLM-R: positions start at ``padding_idx + 1``, one token type (every token type 0),
  pairs ``<s> q </s></s> d </s>``, head ``out_proj(tanh(dense(h_cls)))``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ..errors import UsageError
from .base import Family, activation, d, dropout, linear, split_heads
from .weights import AttentionWeights, Backbone, LayerWeights

#: Hugging Face attention sub-module names -> AttentionWeights fields
ATT_NAMES = {"self.query.weight": "wq", "self.query.bias": "bq", "self.key.weight": "wk",
             "self.key.bias": "bk", "self.value.weight": "wv", "self.value.bias": "bv",
             "output.dense.weight": "wo", "output.dense.bias": "bo",
             "output.LayerNorm.weight": "ln_w", "output.LayerNorm.bias": "ln_b"}


class PostNormFamily(Family):
    """``BertLayer`` math (post-norm); subclasses set the prefix, embeddings and head."""

    prefix = "bert"
    head_act = "tanh"

    # ------------------------------------------------------------------ math
    def embed(self, bb, input_ids, token_type_ids, position_ids) -> torch.Tensor:
        if bb.position_offset:
            position_ids = position_ids + bb.position_offset
        x = bb.word_emb[input_ids] + bb.pos_emb[position_ids]
        if bb.type_emb is not None:
            x = x + (bb.type_emb[token_type_ids] if bb.type_vocab_size > 1 else bb.type_emb[0])
        x = dropout(F.layer_norm(x, (x.shape[-1],), bb.emb_ln_w, bb.emb_ln_b, bb.layer_norm_eps),
                    "embedding")
        if bb.emb_proj_w is not None:
            x = linear(bb, x, bb.emb_proj_w, bb.emb_proj_b)
        return x

    def self_qkv(self, bb, lw, h, pos, memo):
        aw, n = lw.attn, bb.num_heads
        return (split_heads(linear(bb, h, aw.wq, aw.bq), n),
                split_heads(linear(bb, h, aw.wk, aw.bk), n),
                split_heads(linear(bb, h, aw.wv, aw.bv), n))

    def self_kv(self, bb, lw, states, pos, memo):
        aw, n = lw.attn, bb.num_heads
        return split_heads(linear(bb, states, aw.wk, aw.bk), n), \
            split_heads(linear(bb, states, aw.wv, aw.bv), n)

    def self_out(self, bb, lw, ctx, h):
        aw = lw.attn
        return F.layer_norm(dropout(linear(bb, ctx, aw.wo, aw.bo)) + h, (h.shape[-1],),
                            aw.ln_w, aw.ln_b, bb.layer_norm_eps)

    def cross_q(self, bb, lw, cw, h):
        return split_heads(linear(bb, h, cw.wq, cw.bq), bb.num_heads)

    def cross_kv(self, bb, lw, cw, states):
        n = bb.num_heads
        return split_heads(linear(bb, states, cw.wk, cw.bk), n), \
            split_heads(linear(bb, states, cw.wv, cw.bv), n)

    def cross_out(self, bb, lw, cw, ctx, h):
        return F.layer_norm(dropout(linear(bb, ctx, cw.wo, cw.bo)) + h, (h.shape[-1],),
                            cw.ln_w, cw.ln_b, bb.layer_norm_eps)

    def ffn(self, bb, lw, h):
        y = dropout(linear(bb, activation(bb.hidden_act)(linear(bb, h, lw.w_in, lw.b_in)),
                           lw.w_out, lw.b_out))
        return F.layer_norm(y + h, (h.shape[-1],), lw.ln_w, lw.ln_b, bb.layer_norm_eps)

    def cls_score(self, bb, x, mask) -> torch.Tensor:
        """Head on the first token (``[CLS]`` / ``<s>``) -> ``[B]`` fp32; with two labels
        ``logit[1] - logit[0]``."""
        h = x[:, 0]
        if bb.pooler_w is not None:
            if self.name != "bert":  # ELECTRA / RoBERTa heads: dropout before dense too
                h = dropout(h, "classifier")
            h = activation(bb.head_act)(linear(bb, h, bb.pooler_w, bb.pooler_b))
        return _logits_to_score(linear(bb, dropout(h, "classifier"), bb.cls_w, bb.cls_b))

    # ------------------------------------------------------------------ reading HF models
    def encoder_of(self, model):
        return getattr(model, self.prefix, model)

    def read_head(self, model, cfg) -> dict:
        """Head tensors (``pooler_w/b``, ``cls_w/b``) or ``{}`` when the model has none."""
        raise NotImplementedError  # pragma: no cover

    def extra_settings(self, cfg, enc) -> dict:
        return {}

    def from_hf(self, model: Any, tokenizer: Any, name: str = "hf"):
        enc = self.encoder_of(model)
        cfg = enc.config
        if getattr(cfg, "position_embedding_type", "absolute") not in (None, "absolute"):
            raise UsageError("only absolute position embeddings are supported")
        e = enc.embeddings

        def attn_weights(sa, so) -> AttentionWeights:
            return AttentionWeights(wq=d(sa.query.weight), bq=d(sa.query.bias),
                                    wk=d(sa.key.weight), bk=d(sa.key.bias),
                                    wv=d(sa.value.weight), bv=d(sa.value.bias),
                                    wo=d(so.dense.weight), bo=d(so.dense.bias),
                                    ln_w=d(so.LayerNorm.weight), ln_b=d(so.LayerNorm.bias))

        layers = []
        for lyr in enc.encoder.layer:
            attn = attn_weights(lyr.attention.self, lyr.attention.output)
            cross = None
            if getattr(lyr, "crossattention", None) is not None:
                cross = attn_weights(lyr.crossattention.self, lyr.crossattention.output)
            layers.append(LayerWeights(attn, d(lyr.intermediate.dense.weight),
                                       d(lyr.intermediate.dense.bias),
                                       d(lyr.output.dense.weight), d(lyr.output.dense.bias),
                                       d(lyr.output.LayerNorm.weight),
                                       d(lyr.output.LayerNorm.bias), cross))
        head = self.read_head(model, cfg)
        classifier_random = "cls_w" not in head
        if classifier_random:  # a bare encoder: seeded random linear head
            g = torch.Generator().manual_seed(0)
            head.update(cls_w=torch.randn(1, cfg.hidden_size, generator=g) * 0.02,
                        cls_b=torch.zeros(1))
        act = cfg.hidden_act if isinstance(cfg.hidden_act, str) else "gelu"
        proj = getattr(enc, "embeddings_project", None)
        settings = self.extra_settings(cfg, enc)
        bb = Backbone(
            name=name, tokenizer=tokenizer, family=self.name, num_layers=cfg.num_hidden_layers,
            hidden_size=cfg.hidden_size, num_heads=cfg.num_attention_heads,
            intermediate_size=cfg.intermediate_size, vocab_size=cfg.vocab_size,
            max_positions=cfg.max_position_embeddings - settings.get("position_offset", 0),
            type_vocab_size=cfg.type_vocab_size, layer_norm_eps=cfg.layer_norm_eps,
            hidden_act=act, layers=layers, head_act=self.head_act,
            word_emb=d(e.word_embeddings.weight), pos_emb=d(e.position_embeddings.weight),
            type_emb=d(e.token_type_embeddings.weight), emb_ln_w=d(e.LayerNorm.weight),
            emb_ln_b=d(e.LayerNorm.bias),
            emb_proj_w=d(proj.weight) if proj is not None else None,
            emb_proj_b=d(proj.bias) if proj is not None else None,
            classifier_random=classifier_random,
            has_cross_weights=any(lw.cross is not None for lw in layers), config=cfg,
            **settings, **head)
        # inference by default: no autograd graph unless a caller (training) asks for one
        bb.requires_grad_(False)
        return bb

    # ------------------------------------------------------------------ saving
    def config_class(self, model_type: str | None = None):
        import transformers

        return getattr(transformers, self.config_names[model_type or self.model_types[0]])

    def hf_classifier_class(self, cfg):
        import transformers

        name = self.config_names[getattr(cfg, "model_type", self.model_types[0])]
        return getattr(transformers, name.replace("Config", "ForSequenceClassification"))

    def hf_config(self, bb, num_layers: int | None = None):
        base = bb.config.to_dict() if bb.config is not None else {}
        model_type = base.get("model_type") or self.model_types[0]
        cls = self.config_class(model_type)
        base.update(num_hidden_layers=num_layers if num_layers is not None else bb.num_layers,
                    architectures=[cls.__name__.replace("Config", "ForSequenceClassification")],
                    num_labels=int(bb.cls_w.shape[0]) if bb.cls_w is not None else 1,
                    is_decoder=False, add_cross_attention=False)
        for k in ("id2label", "label2id", "_name_or_path", "transformers_version",
                  "_attn_implementation_autoset", "model_type"):
            base.pop(k, None)
        return cls(**base)

    def layer_prefix(self, i: int) -> str:
        return f"{self.prefix}.encoder.layer.{i}."

    def cross_names(self, bb, i: int) -> dict[str, str]:
        p = self.layer_prefix(i) + "crossattention."
        return {p + k: v for k, v in ATT_NAMES.items()}

    def head_state(self, bb) -> dict:
        raise NotImplementedError  # pragma: no cover

    def hf_state_dict(self, bb, num_layers: int | None = None,
                      with_cross: bool = True) -> dict[str, torch.Tensor]:
        L = bb.num_layers if num_layers is None else num_layers
        p0 = self.prefix
        sd = {f"{p0}.embeddings.word_embeddings.weight": bb.word_emb,
              f"{p0}.embeddings.position_embeddings.weight": bb.pos_emb,
              f"{p0}.embeddings.token_type_embeddings.weight": bb.type_emb,
              f"{p0}.embeddings.LayerNorm.weight": bb.emb_ln_w,
              f"{p0}.embeddings.LayerNorm.bias": bb.emb_ln_b}
        if bb.emb_proj_w is not None:
            sd[f"{p0}.embeddings_project.weight"] = bb.emb_proj_w
            sd[f"{p0}.embeddings_project.bias"] = bb.emb_proj_b
        for i, lw in enumerate(list(bb.layers)[:L]):
            p = self.layer_prefix(i)
            for hf_name, ours in ATT_NAMES.items():
                sd[p + "attention." + hf_name] = getattr(lw.attn, ours)
            if with_cross and lw.cross is not None:
                for key, ours in self.cross_names(bb, i).items():
                    sd[key] = getattr(lw.cross, ours)
            sd[p + "intermediate.dense.weight"] = lw.w_in
            sd[p + "intermediate.dense.bias"] = lw.b_in
            sd[p + "output.dense.weight"] = lw.w_out
            sd[p + "output.dense.bias"] = lw.b_out
            sd[p + "output.LayerNorm.weight"] = lw.ln_w
            sd[p + "output.LayerNorm.bias"] = lw.ln_b
        sd.update(self.head_state(bb))
        if bb.projection is not None:
            sd["linear.weight"] = bb.projection
        return {k: v.detach() for k, v in sd.items() if v is not None}


def _logits_to_score(logits: torch.Tensor) -> torch.Tensor:
    logits = logits.float()
    if logits.shape[-1] == 1:
        return logits[:, 0]
    return logits[:, -1] - logits[:, 0]


class BertFamily(PostNormFamily):
    name = "bert"
    model_types = ("bert",)
    prefix = "bert"
    config_names = {"bert": "BertConfig"}

    def read_head(self, model, cfg) -> dict:
        out = {}
        pooler = getattr(self.encoder_of(model), "pooler", None)
        if pooler is not None:
            out.update(pooler_w=d(pooler.dense.weight), pooler_b=d(pooler.dense.bias))
        clf = getattr(model, "classifier", None)
        if clf is not None and hasattr(clf, "weight"):
            out.update(cls_w=d(clf.weight), cls_b=d(clf.bias))
        return out

    def head_state(self, bb) -> dict:
        sd = {}
        if bb.pooler_w is not None:
            sd["bert.pooler.dense.weight"] = bb.pooler_w
            sd["bert.pooler.dense.bias"] = bb.pooler_b
        sd["classifier.weight"] = bb.cls_w
        sd["classifier.bias"] = bb.cls_b
        return sd


class _DenseHeadFamily(PostNormFamily):
    """ELECTRA / RoBERTa heads: ``classifier.dense`` + activation + ``classifier.out_proj``
    (read into ``pooler_w/b`` and ``cls_w/b``)."""

    def read_head(self, model, cfg) -> dict:
        clf = getattr(model, "classifier", None)
        if clf is None or not hasattr(clf, "out_proj"):
            return {}
        return {"pooler_w": d(clf.dense.weight), "pooler_b": d(clf.dense.bias),
                "cls_w": d(clf.out_proj.weight), "cls_b": d(clf.out_proj.bias)}

    def head_state(self, bb) -> dict:
        sd = {"classifier.out_proj.weight": bb.cls_w, "classifier.out_proj.bias": bb.cls_b}
        if bb.pooler_w is not None:
            sd["classifier.dense.weight"] = bb.pooler_w
            sd["classifier.dense.bias"] = bb.pooler_b
        return sd

    def from_hf(self, model: Any, tokenizer: Any, name: str = "hf"):
        bb = super().from_hf(model, tokenizer, name)
        if bb.pooler_w is None:  # a bare encoder: the head's dense layer is seeded random too
            g = torch.Generator().manual_seed(1)
            H = bb.hidden_size
            bb.pooler_w = torch.nn.Parameter(torch.randn(H, H, generator=g) * 0.02,
                                             requires_grad=False)
            bb.pooler_b = torch.nn.Parameter(torch.zeros(H), requires_grad=False)
        return bb


class ElectraFamily(_DenseHeadFamily):
    name = "electra"
    model_types = ("electra",)
    prefix = "electra"
    head_act = "gelu"  # ElectraClassificationHead: get_activation("gelu")
    config_names = {"electra": "ElectraConfig"}


class RobertaFamily(_DenseHeadFamily):
    name = "roberta"
    model_types = ("roberta", "xlm-roberta")
    prefix = "roberta"
    head_act = "tanh"
    pair_separators = 2  # <s> q </s></s> d </s>
    token_types = False  # RobertaTokenizer: every token type 0 (create_token_type_ids...)
    config_names = {"roberta": "RobertaConfig", "xlm-roberta": "XLMRobertaConfig"}

    def extra_settings(self, cfg, enc) -> dict:
        # RobertaEmbeddings: position ids count from padding_idx + 1
        return {"position_offset": int(cfg.pad_token_id) + 1}

"""ModernBERT (ModernBERT, Ettin encoders, gte-reranker-modernbert): pre-norm layers, rotary
positions, GeGLU feed-forward, alternating local (sliding-window) and global attention, final
norm, a head ``norm(act(dense(pooled)))`` + classifier with ``cls`` or ``mean`` pooling.

As Hugging Face's ``ModernBertForSequenceClassification`` (transformers 5):

* embeddings ``norm(tok_embeddings[ids])`` (no positions, no token types);
* layer ``i``: ``x = x + Wo(attn(attn_norm(x)))`` (``attn_norm`` is the identity in layer 0;
  Q and K rotated with the layer kind's rotary base: ``full_attention`` and
  ``sliding_attention`` have their own theta), then ``x = x + mlp(mlp_norm(x))`` with
  ``mlp(h) = Wo(act(a) * g)``, ``a, g = Wi(h).chunk(2)``;
* local layers attend to keys with ``|pos_q - pos_k| <= local_attention // 2``. mice-bench
  measures that distance on the tokens' position ids, which restart at 0 in each part of the
  split layout (as the rotary positions do), and ANDs the window with the layer's segment mask;
* ``final_norm`` on the last hidden states, then pooling (``cls``: first token; ``mean``: mean
  over the pooled tokens), ``head`` and ``classifier``.

The MICE cross-attention sub-layer follows the reference's ``ModernBertCrossAttentionLayer``
(xpmir/mice @b4dc361): separate ``q_proj``/``k_proj``/``v_proj``/``Wo`` without rotary
positions and without a norm of their own; the layer's ``attn_norm`` normalises both the query
rows and the document keys, and the result is added residually (``x + Wo(attn)``).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch

from ..errors import UsageError
from .base import Family, activation, apply_rope, d, layer_norm, linear, memo_get, \
    rope_cos_sin, split_heads
from .weights import AttentionWeights, Backbone, LayerWeights

CROSS_NAMES = {"q_proj": ("wq", "bq"), "k_proj": ("wk", "bk"), "v_proj": ("wv", "bv"),
               "Wo": ("wo", "bo")}


class ModernBertFamily(Family):
    name = "modernbert"
    model_types = ("modernbert",)
    prenorm = True
    rotary = True

    # ------------------------------------------------------------------ math
    def embed(self, bb, input_ids, token_type_ids, position_ids) -> torch.Tensor:
        return layer_norm(bb.word_emb[input_ids], bb.emb_ln_w, bb.emb_ln_b, bb.layer_norm_eps)

    def window(self, bb, lw) -> int | None:
        return bb.local_window if lw.local else None

    def _rope(self, bb, lw, pos, dtype, memo, tag):
        theta = bb.rope_theta["sliding_attention" if lw.local else "full_attention"]
        return memo_get(memo, ("rope", tag, theta, tuple(pos.shape), dtype),
                        lambda: rope_cos_sin(pos, theta, bb.head_dim, dtype))

    def _attn_in(self, bb, lw, h):
        return layer_norm(h, lw.attn.ln_w, lw.attn.ln_b, bb.layer_norm_eps)

    def self_qkv(self, bb, lw, h, pos, memo):
        aw, n = lw.attn, bb.num_heads
        hn = self._attn_in(bb, lw, h)
        q = split_heads(linear(bb, hn, aw.wq, aw.bq), n)
        k = split_heads(linear(bb, hn, aw.wk, aw.bk), n)
        v = split_heads(linear(bb, hn, aw.wv, aw.bv), n)
        cos, sin = self._rope(bb, lw, pos, h.dtype, memo, "x")
        return apply_rope(q, cos, sin), apply_rope(k, cos, sin), v

    def self_kv(self, bb, lw, states, pos, memo):
        aw, n = lw.attn, bb.num_heads
        hn = self._attn_in(bb, lw, states)
        k = split_heads(linear(bb, hn, aw.wk, aw.bk), n)
        v = split_heads(linear(bb, hn, aw.wv, aw.bv), n)
        cos, sin = self._rope(bb, lw, pos, states.dtype, memo, "extra")
        return apply_rope(k, cos, sin), v

    def self_out(self, bb, lw, ctx, h):
        return h + linear(bb, ctx, lw.attn.wo, lw.attn.bo)

    def cross_q(self, bb, lw, cw, h):
        return split_heads(linear(bb, self._attn_in(bb, lw, h), cw.wq, cw.bq), bb.num_heads)

    def cross_kv(self, bb, lw, cw, states):
        hn, n = self._attn_in(bb, lw, states), bb.num_heads
        return split_heads(linear(bb, hn, cw.wk, cw.bk), n), \
            split_heads(linear(bb, hn, cw.wv, cw.bv), n)

    def cross_out(self, bb, lw, cw, ctx, h):
        return h + linear(bb, ctx, cw.wo, cw.bo)

    def ffn(self, bb, lw, h):
        hn = layer_norm(h, lw.ln_w, lw.ln_b, bb.layer_norm_eps)
        a, g = linear(bb, hn, lw.w_in, lw.b_in).chunk(2, dim=-1)
        return h + linear(bb, activation(bb.hidden_act)(a) * g, lw.w_out, lw.b_out)

    def final(self, bb, x):
        return layer_norm(x, bb.final_ln_w, bb.final_ln_b, bb.layer_norm_eps)

    def cls_score(self, bb, x, mask) -> torch.Tensor:
        """``x`` after :meth:`final`; ``mask [B, T]`` the tokens mean pooling averages."""
        if bb.pooling == "mean":
            m = mask.to(x.dtype)[..., None]
            pooled = (x * m).sum(1) / m.sum(1)
        else:
            pooled = x[:, 0]
        h = layer_norm(activation(bb.head_act)(linear(bb, pooled, bb.pooler_w, bb.pooler_b)),
                       bb.head_ln_w, bb.head_ln_b, bb.layer_norm_eps)
        logits = linear(bb, h, bb.cls_w, bb.cls_b).float()
        return logits[:, 0] if logits.shape[-1] == 1 else logits[:, -1] - logits[:, 0]

    def cross_from_self(self, lw):

        a = lw.attn
        return AttentionWeights(wq=a.wq, bq=a.bq, wk=a.wk, bk=a.bk, wv=a.wv, bv=a.bv, wo=a.wo,
                                bo=a.bo)

    def adjust_layers(self, bb, spec, layers: tuple) -> tuple:
        """The reference's ModernBERT MICE cuts the last interaction layer to ``[CLS]`` only
        with ``cls`` pooling; with ``mean`` pooling every query row runs the full layer, so
        with ``[order=self,cls_doc=0]`` ``[CLS]`` averages the document in the last layer
        too (as in the other layers)."""
        if bb.pooling != "mean" or spec.family != "mice" or spec.attn != "cross" or \
                spec.cls_doc or spec.order != "self":
            return layers
        last = spec.m + spec.n - 1
        out = list(layers)
        out[last] = replace(out[last], cross_uniform=frozenset({"cls"}))
        return tuple(out)

    def flop_dims(self, bb) -> dict:
        dims = super().flop_dims(bb)
        dims.update(glu=True, local_window=bb.local_window,
                    local_layers=tuple(i for i, lw in enumerate(bb.layers) if lw.local))
        return dims

    # ------------------------------------------------------------------ reading HF models
    def from_hf(self, model: Any, tokenizer: Any, name: str = "hf"):
        enc = getattr(model, "model", model)
        cfg = enc.config
        H, n = cfg.hidden_size, cfg.num_attention_heads
        types = list(getattr(cfg, "layer_types", None) or [
            "sliding_attention" if i % getattr(cfg, "global_attn_every_n_layers", 3)
            else "full_attention" for i in range(cfg.num_hidden_layers)])
        thetas = {}
        for lt, rp in (getattr(cfg, "rope_parameters", None) or {}).items():
            if rp is None:
                continue
            if rp.get("rope_type", "default") != "default":
                raise UsageError(f"{name}: rope_type {rp.get('rope_type')!r} is not supported "
                                 "(default RoPE only)")
            thetas[lt] = float(rp["rope_theta"])
        thetas.setdefault("full_attention", float(getattr(cfg, "global_rope_theta", 160000.0)))
        thetas.setdefault("sliding_attention", float(getattr(cfg, "local_rope_theta", 10000.0)))
        layers = []
        for i, lyr in enumerate(enc.layers):
            W, b = lyr.attn.Wqkv.weight, lyr.attn.Wqkv.bias
            norm = lyr.attn_norm if isinstance(lyr.attn_norm, torch.nn.LayerNorm) else None
            attn = AttentionWeights(
                wq=d(W[:H]), wk=d(W[H:2 * H]), wv=d(W[2 * H:]),
                bq=d(b[:H]) if b is not None else None,
                bk=d(b[H:2 * H]) if b is not None else None,
                bv=d(b[2 * H:]) if b is not None else None,
                wo=d(lyr.attn.Wo.weight), bo=d(lyr.attn.Wo.bias),
                ln_w=d(norm.weight) if norm is not None else None,
                ln_b=d(norm.bias) if norm is not None else None)
            layers.append(LayerWeights(attn, d(lyr.mlp.Wi.weight), d(lyr.mlp.Wi.bias),
                                       d(lyr.mlp.Wo.weight), d(lyr.mlp.Wo.bias),
                                       d(lyr.mlp_norm.weight), d(lyr.mlp_norm.bias),
                                       local=types[i] == "sliding_attention"))
        head = getattr(model, "head", None)
        clf = getattr(model, "classifier", None)
        tensors = {}
        if head is not None:
            tensors.update(pooler_w=d(head.dense.weight), pooler_b=d(head.dense.bias),
                           head_ln_w=d(head.norm.weight), head_ln_b=d(head.norm.bias))
        else:  # a bare encoder: seeded random head
            g = torch.Generator().manual_seed(1)
            tensors.update(pooler_w=torch.randn(H, H, generator=g) * 0.02,
                           head_ln_w=torch.ones(H))
        classifier_random = clf is None
        if clf is not None:
            tensors.update(cls_w=d(clf.weight), cls_b=d(clf.bias))
        else:
            g = torch.Generator().manual_seed(0)
            tensors.update(cls_w=torch.randn(1, H, generator=g) * 0.02, cls_b=torch.zeros(1))
        half = getattr(cfg, "sliding_window", None)
        if half is None:
            half = cfg.local_attention // 2
        bb = Backbone(
            name=name, tokenizer=tokenizer, family=self.name, num_layers=cfg.num_hidden_layers,
            hidden_size=H, num_heads=n, intermediate_size=cfg.intermediate_size,
            vocab_size=cfg.vocab_size, max_positions=cfg.max_position_embeddings,
            type_vocab_size=0, layer_norm_eps=cfg.norm_eps, hidden_act=cfg.hidden_activation,
            layers=layers, local_window=int(half), rope_theta=thetas,
            pooling=getattr(cfg, "classifier_pooling", "cls"),
            head_act=getattr(cfg, "classifier_activation", "gelu"),
            word_emb=d(enc.embeddings.tok_embeddings.weight),
            emb_ln_w=d(enc.embeddings.norm.weight), emb_ln_b=d(enc.embeddings.norm.bias),
            final_ln_w=d(enc.final_norm.weight), final_ln_b=d(enc.final_norm.bias),
            classifier_random=classifier_random, config=cfg, **tensors)
        bb.requires_grad_(False)
        return bb

    # ------------------------------------------------------------------ saving
    def config_class(self, model_type: str | None = None):
        from transformers import ModernBertConfig

        return ModernBertConfig

    def hf_classifier_class(self, cfg):
        from transformers import ModernBertForSequenceClassification

        return ModernBertForSequenceClassification

    def hf_config(self, bb, num_layers: int | None = None):
        from transformers import ModernBertConfig

        L = bb.num_layers if num_layers is None else num_layers
        base = bb.config.to_dict() if bb.config is not None else {}
        for k in ("id2label", "label2id", "_name_or_path", "transformers_version",
                  "_attn_implementation_autoset", "model_type", "global_rope_theta",
                  "local_rope_theta", "global_attn_every_n_layers", "sliding_window"):
            base.pop(k, None)
        base.update(num_hidden_layers=L,
                    layer_types=["sliding_attention" if lw.local else "full_attention"
                                 for lw in list(bb.layers)[:L]],
                    architectures=["ModernBertForSequenceClassification"],
                    num_labels=int(bb.cls_w.shape[0]), classifier_pooling=bb.pooling)
        # local layers run globally (a MICE reference checkpoint): a window covering every
        # position keeps Hugging Face's computation identical
        base["local_attention"] = 2 * bb.local_window if bb.local_window is not None \
            else 2 * bb.max_positions
        return ModernBertConfig(**base)

    def cross_names(self, bb, i: int) -> dict[str, str]:
        out = {}
        for hf, (w, b) in CROSS_NAMES.items():
            out[f"model.layers.{i}.crossattention.{hf}.weight"] = w
            if bb.layers[i].attn.bo is not None:  # attention_bias: every projection has one
                out[f"model.layers.{i}.crossattention.{hf}.bias"] = b
        return out

    def hf_state_dict(self, bb, num_layers: int | None = None,
                      with_cross: bool = True) -> dict[str, torch.Tensor]:
        L = bb.num_layers if num_layers is None else num_layers
        sd = {"model.embeddings.tok_embeddings.weight": bb.word_emb,
              "model.embeddings.norm.weight": bb.emb_ln_w,
              "model.embeddings.norm.bias": bb.emb_ln_b,
              "model.final_norm.weight": bb.final_ln_w, "model.final_norm.bias": bb.final_ln_b,
              "head.dense.weight": bb.pooler_w, "head.dense.bias": bb.pooler_b,
              "head.norm.weight": bb.head_ln_w, "head.norm.bias": bb.head_ln_b,
              "classifier.weight": bb.cls_w, "classifier.bias": bb.cls_b}
        for i, lw in enumerate(list(bb.layers)[:L]):
            p = f"model.layers.{i}."
            a = lw.attn
            sd[p + "attn_norm.weight"] = a.ln_w
            sd[p + "attn_norm.bias"] = a.ln_b
            sd[p + "attn.Wqkv.weight"] = torch.cat([a.wq, a.wk, a.wv], 0)
            if a.bq is not None:
                sd[p + "attn.Wqkv.bias"] = torch.cat([a.bq, a.bk, a.bv], 0)
            sd[p + "attn.Wo.weight"] = a.wo
            sd[p + "attn.Wo.bias"] = a.bo
            sd[p + "mlp_norm.weight"] = lw.ln_w
            sd[p + "mlp_norm.bias"] = lw.ln_b
            sd[p + "mlp.Wi.weight"] = lw.w_in
            sd[p + "mlp.Wi.bias"] = lw.b_in
            sd[p + "mlp.Wo.weight"] = lw.w_out
            sd[p + "mlp.Wo.bias"] = lw.b_out
            if with_cross and lw.cross is not None:
                for key, ours in self.cross_names(bb, i).items():
                    sd[key] = getattr(lw.cross, ours)
        if bb.projection is not None:
            sd["linear.weight"] = bb.projection
        return {k: v.detach() for k, v in sd.items() if v is not None}

    # ------------------------------------------------------------------ MICE reference layout
    def reference_to_hf(self, sd: dict, m: int) -> tuple[dict, dict[int, dict]]:
        """The reference ``ModernBertMiceCrossEncoder`` state dict (``embeddings.*``,
        ``bottom_layers.{i}.*``, ``top_layers.{j}.*``, ``final_norm.*``, ``head.*``,
        ``classifier.*``) -> (``ModernBertForSequenceClassification`` state dict, cross
        weights per layer ``{layer: {field: tensor}}``)."""
        hf: dict = {}
        cross: dict[int, dict] = {}
        for k, v in sd.items():
            parts = k.split(".")
            if parts[0] in ("embeddings", "final_norm"):
                hf["model." + k] = v
            elif parts[0] == "bottom_layers":
                hf[f"model.layers.{parts[1]}." + ".".join(parts[2:])] = v
            elif parts[0] == "top_layers":
                i = m + int(parts[1])
                if parts[2] == "crossattention":
                    w, b = CROSS_NAMES[parts[3]]
                    cross.setdefault(i, {})[w if parts[4] == "weight" else b] = v
                else:
                    hf[f"model.layers.{i}." + ".".join(parts[2:])] = v
            elif parts[0] in ("head", "classifier"):
                hf[k] = v
        return hf, cross

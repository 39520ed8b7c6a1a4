"""The family adapter interface and small math helpers shared by the adapters.

Shapes: ``B`` batch, ``T`` updated tokens, ``S`` key tokens, ``H`` hidden, ``h`` heads,
``d = H / h``. Attention inputs/outputs of the sub-layer hooks are ``[B, h, T, d]``.

The shared driver (:func:`mice_bench.executors.layers.layer_forward`) builds the masks, picks
the keys (the layer's own rows, frozen extra states or their cached K/V, cross-attention keys),
orders the sub-layers and keeps frozen rows; it asks the adapter for the rest:

* ``embed(bb, input_ids, token_type_ids, position_ids)`` -> ``[B, T, H]``;
* ``self_qkv(bb, lw, h, pos, memo)`` -> ``q, k, v`` of the self-attention over ``h`` (pre-norm
  and rotary positions applied where the family has them);
* ``self_kv(bb, lw, states, pos, memo)`` -> ``k, v`` of extra (frozen) key states, exactly as
  ``self_qkv`` would compute them (so cached K/V equal recomputed ones);
* ``self_out(bb, lw, ctx, h)`` -> the sub-layer's output (post-norm: ``LN(W_o ctx + h)``;
  pre-norm: ``h + W_o ctx``);
* ``cross_q`` / ``cross_kv`` / ``cross_out``: the same for the MICE cross-attention sub-layer
  (weights ``cw``: the layer's own cross weights, or its self-attention weights when the
  checkpoint has none);
* ``ffn(bb, lw, h)``; ``window(bb, lw)`` (half-width of a local layer's window, or None);
* ``final(bb, x)`` (final norm), ``cls_score(bb, x, mask)`` (pooling + head -> ``[B]`` fp32);
* ``from_hf`` / ``hf_config`` / ``hf_state_dict`` / ``cross_names`` (checkpoints),
  ``flop_dims`` (FLOP model), ``adjust_layers`` (family-specific reference semantics).
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any

import torch
import torch.nn.functional as F

_DROPOUT = threading.local()


@contextlib.contextmanager
def train_dropout(rates: dict[str, float]):
    """Within this block the layer math applies dropout at ``rates`` (``hidden``,
    ``attention``, ``classifier``, ``embedding``), as Hugging Face modules do in train mode.
    Outside it (eval, inference, every executor by default) there is none."""
    prev = getattr(_DROPOUT, "rates", None)
    _DROPOUT.rates = {k: float(v) for k, v in rates.items() if v}
    try:
        yield
    finally:
        _DROPOUT.rates = prev


def dropout_p(kind: str) -> float:
    rates = getattr(_DROPOUT, "rates", None)
    return rates.get(kind, 0.0) if rates else 0.0


def dropout(x: torch.Tensor, kind: str = "hidden") -> torch.Tensor:
    """``F.dropout`` at the active rate of ``kind`` (identity outside :func:`train_dropout`)."""
    p = dropout_p(kind)
    return F.dropout(x, p, True) if p > 0 else x


def dropout_rates(bb) -> dict[str, float]:
    """The checkpoint's configured dropout rates (BERT-like: ``hidden_dropout_prob``,
    ``attention_probs_dropout_prob``, ``classifier_dropout`` (default: hidden); ModernBERT:
    ``attention_dropout``, ``mlp_dropout``, ``embedding_dropout``, ``classifier_dropout``)."""
    cfg = bb.config
    if cfg is None:
        return {}
    g = lambda k, d=0.0: float(getattr(cfg, k, None) or d)  # noqa: E731
    if getattr(cfg, "model_type", "") == "modernbert":
        return {"attention": g("attention_dropout"), "hidden": g("mlp_dropout"),
                "embedding": g("embedding_dropout"), "classifier": g("classifier_dropout")}
    hidden = g("hidden_dropout_prob")
    return {"hidden": hidden, "embedding": hidden,
            "attention": g("attention_probs_dropout_prob"),
            "classifier": g("classifier_dropout", hidden)}


def activation(name: str):
    """Hugging Face ``ACT2FN`` names used by the supported families."""
    if name == "gelu":
        return F.gelu
    if name in ("gelu_new", "gelu_pytorch_tanh", "gelu_fast"):
        return lambda x: F.gelu(x, approximate="tanh")
    if name == "relu":
        return F.relu
    if name in ("silu", "swish"):
        return F.silu
    if name == "tanh":
        return torch.tanh
    raise ValueError(f"unsupported activation {name!r}")


def linear(bb, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear(x, w, b)`` of a backbone's layer: on prepacked weights when the backbone has
    them (``bb.linear_packs``, :mod:`mice_bench.backbones.prepack`), the same results."""
    packs = bb.linear_packs
    return F.linear(x, w, b) if packs is None else packs.linear(x, w, b)


def split_heads(x: torch.Tensor, n: int) -> torch.Tensor:
    """``[B, T, H] -> [B, h, T, d]``."""
    B, T, H = x.shape
    return x.view(B, T, n, H // n).transpose(1, 2)


def layer_norm(x: torch.Tensor, w: torch.Tensor | None, b: torch.Tensor | None,
               eps: float) -> torch.Tensor:
    """LayerNorm over the last dim; identity when ``w`` is None (no norm)."""
    if w is None:
        return x
    return F.layer_norm(x, (x.shape[-1],), w, b, eps)


def memo_get(memo: dict | None, key: tuple, make):
    """``memo[key]``, built once per forward call (``memo`` None: no caching)."""
    if memo is None:
        return make()
    if key not in memo:
        memo[key] = make()
    return memo[key]


def d(t: torch.Tensor | None) -> torch.Tensor | None:
    """A detached copy of a HF parameter (or None)."""
    return None if t is None else t.detach().clone()


class Family:
    """One encoder family: see the module docstring for the hooks. Stateless singletons."""

    name = "base"
    model_types: tuple[str, ...] = ()
    #: pre-norm layers (ModernBERT) vs post-norm (BERT)
    prenorm = False
    #: rotary positions in the attention (ModernBERT): the driver passes position ids
    rotary = False
    #: separator tokens between query and document in a joint pair (RoBERTa: ``</s></s>``)
    pair_separators = 1
    #: whether the family's tokenizers give a pair's second segment its own token type
    #: (BERT, ELECTRA: type 1); RoBERTa's give every token type 0, whatever the checkpoint's
    #: ``type_vocab_size`` (some RoBERTa-family configs say 2 and never use type 1)
    token_types = True

    def __deepcopy__(self, memo):  # adapters are stateless singletons
        return self

    def __repr__(self) -> str:
        return f"<family {self.name}>"

    # ------------------------------------------------------------------ checkpoints
    def config_class(self, model_type: str | None = None):  # pragma: no cover - abstract
        raise NotImplementedError

    def hf_classifier_class(self, cfg):  # pragma: no cover - abstract
        raise NotImplementedError

    def from_hf(self, model: Any, tokenizer: Any, name: str = "hf"):  # pragma: no cover
        raise NotImplementedError

    def hf_config(self, bb, num_layers: int | None = None):  # pragma: no cover - abstract
        raise NotImplementedError

    def hf_state_dict(self, bb, num_layers: int | None = None,
                      with_cross: bool = True) -> dict[str, torch.Tensor]:  # pragma: no cover
        raise NotImplementedError

    def cross_names(self, bb, i: int) -> dict[str, str]:  # pragma: no cover - abstract
        """``{checkpoint key: AttentionWeights field}`` of layer ``i``'s cross sub-layer."""
        raise NotImplementedError

    def cross_from_self(self, lw):
        """Cross-attention weights seeded from the layer's self-attention (MICE init)."""
        return lw.attn.clone()

    # ------------------------------------------------------------------ semantics
    def adjust_layers(self, bb, spec, layers: tuple) -> tuple:
        """Per-layer specs as this family's reference runs them (default: unchanged)."""
        return layers

    def flop_dims(self, bb) -> dict:
        return {"num_layers": int(bb.num_layers), "hidden_size": int(bb.hidden_size),
                "intermediate_size": int(bb.intermediate_size)}

    # ------------------------------------------------------------------ math
    def window(self, bb, lw) -> int | None:
        return None

    def final(self, bb, x: torch.Tensor) -> torch.Tensor:
        return x


def rope_cos_sin(pos: torch.Tensor, theta: float, dim: int, dtype: torch.dtype):
    """Rotary tables for positions ``[B, T]`` (Hugging Face's default RoPE):
    ``cos, sin [B, 1, T, dim]`` in ``dtype``."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float) / dim))
    inv_freq = inv_freq.to(pos.device)
    freqs = pos[..., None].float() * inv_freq
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos().to(dtype)[:, None], emb.sin().to(dtype)[:, None]


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x [B, h, T, d]`` (computed in fp32, as Hugging Face does)."""
    xf = x.float()
    half = xf.shape[-1] // 2
    rot = torch.cat((-xf[..., half:], xf[..., :half]), dim=-1)
    return (xf * cos + rot * sin).to(x.dtype)


__all__ = ["Family", "activation", "split_heads", "layer_norm", "memo_get", "rope_cos_sin",
           "apply_rope", "train_dropout", "dropout", "dropout_p", "dropout_rates"]

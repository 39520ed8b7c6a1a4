"""A backbone's weights: plain parameter tensors read from a Hugging Face encoder, its
tokenizer, config and family adapter (:class:`Backbone`, :class:`LayerWeights`,
:class:`AttentionWeights`). Loading by name lives in :mod:`mice_bench.backbone`; the math in
the family adapters and :mod:`mice_bench.executors.layers`."""

from __future__ import annotations

import copy
import hashlib
from typing import Any

import torch

from ..checkpoints import CheckpointSettings
from .registry import get_family

__all__ = ["AttentionWeights", "LayerWeights", "Backbone", "weights_fingerprint"]


def weights_fingerprint(module: torch.nn.Module, skip: str | None = None) -> str:
    """sha256 of what a module computes with: every parameter and buffer's name, dtype,
    shape and bytes (read on the cpu: the same weights on another device share it), but those
    whose name contains ``skip``. Two models under one name (another seed of random weights,
    another dtype, retrained weights in place) never share it."""
    h = hashlib.sha256()
    for name, t in module.state_dict().items():
        if skip is not None and skip in name:
            continue
        t = t.detach()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).contiguous().cpu().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _param(t: torch.Tensor | None) -> torch.nn.Parameter | None:
    if t is None:
        return None
    return torch.nn.Parameter(t.detach().clone(), requires_grad=t.requires_grad)


class _Params(torch.nn.Module):
    """A module whose named tensors are parameters (``None`` allowed)."""

    _names: tuple[str, ...] = ()

    def __init__(self, **tensors: torch.Tensor | None):
        super().__init__()
        unknown = set(tensors) - set(self._names)
        if unknown:
            raise TypeError(f"unknown tensors {sorted(unknown)} for {type(self).__name__}")
        for name in self._names:
            self.register_parameter(name, _param(tensors.get(name)))

    def clone(self):
        return type(self)(**{n: getattr(self, n) for n in self._names})


class AttentionWeights(_Params):
    """One multi-head attention block: projections ``[out, in]`` and its LayerNorm (post-norm
    families: the output LayerNorm; pre-norm families: the layer's input norm, ``None`` where
    the family has none, e.g. ModernBERT's first layer and its cross-attention)."""

    _names = ("wq", "bq", "wk", "bk", "wv", "bv", "wo", "bo", "ln_w", "ln_b")


class LayerWeights(torch.nn.Module):
    """One encoder layer: self-attention, optional cross-attention (MICE), feed-forward
    (``w_in [I, H]`` or ``[2I, H]`` for a gated MLP, ``w_out [H, I]``, its LayerNorm).

    ``local``: the layer attends within a sliding window (ModernBERT's local layers)."""

    def __init__(self, attn: AttentionWeights, w_in, b_in, w_out, b_out, ln_w, ln_b,
                 cross: AttentionWeights | None = None, local: bool = False):
        super().__init__()
        self.attn = attn
        self.cross = cross
        self.local = bool(local)
        for name, t in (("w_in", w_in), ("b_in", b_in), ("w_out", w_out), ("b_out", b_out),
                        ("ln_w", ln_w), ("ln_b", ln_b)):
            self.register_parameter(name, _param(t))


class Backbone(torch.nn.Module):
    """An encoder's weights (parameters), its tokenizer, its config and its family adapter.

    The forward pass lives in :mod:`mice_bench.executors` (shared driver) and in the family
    adapter ``bb.family`` (embeddings, sub-layer math, head); this module only owns the
    weights, so one backbone can serve several executors. ``to`` converts in place (as every
    ``nn.Module`` does); :meth:`converted` returns a converted copy.

    Family-specific settings: ``position_offset`` (RoBERTa: positions start at
    ``padding_idx + 1``), ``local_window`` (ModernBERT: half-width of the local layers'
    window, ``None`` = every layer global), ``rope_theta`` (rotary base per layer kind),
    ``pooling`` (``cls`` | ``mean``: what the classification head reads), ``head_act``.
    """

    _tensor_names = ("word_emb", "pos_emb", "type_emb", "emb_ln_w", "emb_ln_b", "emb_proj_w",
                     "emb_proj_b", "final_ln_w", "final_ln_b", "pooler_w", "pooler_b",
                     "head_ln_w", "head_ln_b", "cls_w", "cls_b", "projection")
    _embedding_names = ("word_emb", "pos_emb", "type_emb", "emb_ln_w", "emb_ln_b", "emb_proj_w",
                        "emb_proj_b", "final_ln_w", "final_ln_b")
    _head_names = ("pooler_w", "pooler_b", "head_ln_w", "head_ln_b", "cls_w", "cls_b")
    #: prepacked linear weights (:mod:`~mice_bench.backbones.prepack`); None: plain ``F.linear``
    linear_packs = None
    #: compute precision beyond the weights' dtype (``int8``, ``bf16-autocast``:
    #: :mod:`~mice_bench.backbones.precision`); None: the weights' dtype
    precision = None

    def __init__(self, name: str, tokenizer: Any, num_layers: int, hidden_size: int,
                 num_heads: int, intermediate_size: int, vocab_size: int, max_positions: int,
                 type_vocab_size: int, layer_norm_eps: float, hidden_act: str,
                 layers: list[LayerWeights], family: str = "bert",
                 random_weights: bool = False, classifier_random: bool = False,
                 has_cross_weights: bool = False, source: str = "",
                 projection_random: bool = False, config: Any = None,
                 position_offset: int = 0, local_window: int | None = None,
                 rope_theta: dict[str, float] | None = None, pooling: str = "cls",
                 head_act: str = "tanh", **tensors: torch.Tensor | None):
        super().__init__()
        unknown = set(tensors) - set(self._tensor_names)
        if unknown:
            raise TypeError(f"unknown backbone tensors {sorted(unknown)}")
        self.family = get_family(family)
        self.name, self.tokenizer, self.source = name, tokenizer, source
        self.num_layers, self.hidden_size, self.num_heads = num_layers, hidden_size, num_heads
        self.intermediate_size, self.vocab_size = intermediate_size, vocab_size
        self.max_positions, self.type_vocab_size = max_positions, type_vocab_size
        self.layer_norm_eps, self.hidden_act = layer_norm_eps, hidden_act
        self.position_offset, self.local_window = int(position_offset), local_window
        self.rope_theta = dict(rope_theta or {})
        self.pooling, self.head_act = pooling, head_act
        self.random_weights, self.classifier_random = random_weights, classifier_random
        self.has_cross_weights, self.projection_random = has_cross_weights, projection_random
        self.config = config  # the Hugging Face config it was read from (for saving)
        #: the checkpoint's own scoring settings (lengths, pooling, markers, ...), read by
        #: :func:`load_backbone`; executors read them, nothing modifies them
        self.checkpoint = CheckpointSettings()
        for n in self._tensor_names:
            self.register_parameter(n, _param(tensors.get(n)))
        self.layers = torch.nn.ModuleList(layers)

    @property
    def device(self) -> torch.device:
        return self.word_emb.device

    @property
    def dtype(self) -> torch.dtype:
        return self.word_emb.dtype

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def has_token_types(self) -> bool:
        """Whether token types mean anything: as the checkpoint's own tokenizer and model use
        them. BERT and ELECTRA: a pair's document is type 1. RoBERTa (whose tokenizers give
        every token type 0, even where the config has ``type_vocab_size`` 2), ModernBERT (no
        type embedding), a single-type embedding, or a tokenizer that emits no
        ``token_type_ids``: every token gets type 0."""
        if self.type_emb is None or self.type_vocab_size <= 1 or \
                not getattr(self.family, "token_types", True):
            return False
        names = getattr(self.tokenizer, "model_input_names", None)
        return names is None or "token_type_ids" in names

    @property
    def local_attention(self) -> str | None:
        """How the local layers (ModernBERT) attend: ``window`` (the checkpoint's sliding
        window, as Hugging Face and flash attention run them), ``global`` (every position, as
        the MICE reference's eager attention runs them), None without local layers."""
        if not any(lw.local for lw in self.layers):
            return None
        if self.local_window is None or self.local_window >= self.max_positions - 1:
            return "global"
        return "window"

    def fingerprint(self) -> str:
        """:func:`weights_fingerprint` of the weights that encode a document: all but the
        cross-attention sub-layers (they read stored states, never make them; a variant that
        adds them encodes the same states). Computed once, and again only after a tensor
        changed (an optimizer step, ``to``)."""
        state = tuple((id(p), p.data_ptr(), p._version, p.dtype) for p in self.parameters())
        cached = self.__dict__.get("_fingerprint")
        if cached is None or cached[0] != state:
            cached = (state, weights_fingerprint(self, skip=".cross."))
            self.__dict__["_fingerprint"] = cached
        return cached[1]

    def describe(self) -> str:
        s = f"{self.name} ({self.family.name}, {self.num_layers} layers, hidden " \
            f"{self.hidden_size})"
        if self.random_weights:
            s += " [random weights]"
        elif self.classifier_random:
            s += " [seeded random classifier head]"
        if self.local_attention == "global":
            s += " [local layers attend globally, as the MICE reference runs]"
        return s

    def layer_specs(self, spec) -> tuple:
        """``spec.layers(L)`` as this family runs them (see the family's
        ``adjust_layers``: e.g. ModernBERT's mean pooling keeps every query row in the last
        MICE layer)."""
        return self.family.adjust_layers(self, spec, spec.layers(self.num_layers))

    def ensure_cross_weights(self, layers=None) -> bool:
        """Give every layer its own cross-attention sub-layer, initialised from its
        self-attention weights where the checkpoint has none (the MICE reference's
        ``InitMICEBERTFromHFID`` / ``InitMICEModernBERTFromHFID``). Returns True when any was
        created. Mutates this backbone: only the owner of the weights (a
        :class:`~mice_bench.model.InteractionModel`) calls it."""
        created = False
        for i, lw in enumerate(self.layers):
            if lw.cross is None and (layers is None or i in layers):
                lw.cross = self.family.cross_from_self(lw)
                created = True
        return created

    def ensure_projection(self, dim: int = 128, seed: int = 0) -> bool:
        """Create a seeded random ColBERT projection ``[dim, H]`` when there is none."""
        if self.projection is not None:
            return False
        g = torch.Generator().manual_seed(seed)
        w = torch.randn(dim, self.hidden_size, generator=g) / self.hidden_size ** 0.5
        self.projection = torch.nn.Parameter(w.to(self.device, self.dtype))
        self.projection_random = True
        return True

    def converted(self, device: str | torch.device | None = None,
                  dtype: torch.dtype | None = None) -> "Backbone":
        """A copy on ``device`` in ``dtype`` (this backbone is left unchanged)."""
        tok, self.tokenizer = self.tokenizer, None
        try:
            new = copy.deepcopy(self)
        finally:
            self.tokenizer = tok
        new.tokenizer = tok
        return new.to(device=device, dtype=dtype)

    def param_count(self, spec=None) -> int:
        """Parameters that ``spec`` uses (dropped layers excluded, a cross-attention sub-layer
        counted where the spec has one); all of them when None. Counted from the tensors."""
        def n(*ts):
            return sum(t.numel() for t in ts if t is not None)

        def own(lw):  # the layer without its cross-attention sub-layer
            return n(lw.w_in, lw.b_in, lw.w_out, lw.b_out, lw.ln_w, lw.ln_b) + \
                sum(p.numel() for p in lw.attn.parameters())

        total = n(*(getattr(self, k) for k in self._embedding_names))
        layer_specs = spec.layers(self.num_layers) if spec is not None else None
        for i, lw in enumerate(self.layers):
            ls = layer_specs[i] if layer_specs is not None else None
            if ls is not None and ls.dropped:
                continue
            total += own(lw)
            if ls is not None and ls.cross_keys:
                total += sum(p.numel() for p in (lw.cross or
                                                  self.family.cross_from_self(lw)).parameters())
            elif ls is None and lw.cross is not None:
                total += sum(p.numel() for p in lw.cross.parameters())
        head = spec.head if spec is not None else "cls"
        if head == "cls":
            total += n(*(getattr(self, k) for k in self._head_names))
        elif head == "maxsim" and spec is not None and spec.projection:
            total += self.projection.numel() if self.projection is not None \
                else 128 * self.hidden_size
        return int(total)

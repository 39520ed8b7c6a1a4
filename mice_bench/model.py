"""The trainable model: a backbone's weights + an interaction spec, as one ``nn.Module``.

:class:`MiceModel` owns its :class:`~mice_bench.backbone.Backbone` (parameters), creates what
the variant needs and the checkpoint lacks (MICE cross-attention sub-layers copied from the
self-attention weights, as the reference's ``InitMICEBERTFromHFID`` does; a seeded random
ColBERT projection), and records which parts were initialised that way.

Checkpoints use the Hugging Face layout, so other tools read them:

* ``config.json`` (a ``BertForSequenceClassification`` config; layers the variant drops are
  not saved), ``model.safetensors`` with Hugging Face parameter names, the tokenizer files;
* extra tensors in the same file: ``bert.encoder.layer.{i}.crossattention.*`` (MICE) and
  ``linear.weight`` (ColBERT's projection, as the original ColBERT checkpoints name it);
* ``mice_bench.json``: the variant, the base model, the randomly initialised parts, the
  tokenization limits and the mice-bench version.

A saved ``ce`` loads unchanged in ``AutoModelForSequenceClassification``.
:meth:`MiceModel.from_pretrained` also reads the MICE reference code's own state-dict layout
(``embeddings.*``, ``bottom_layers.{i}.*``, ``top_layers.{j}.{attention,crossattention,
intermediate,output}.*``, ``pooler.*``, ``classifier.*``).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from .backbone import AttentionWeights, Backbone, from_hf, load_backbone
from .errors import UsageError
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


class MiceModel(torch.nn.Module):
    """A backbone and an interaction variant; ``forward(queries, docs)`` trains.

    >>> # model = MiceModel.from_pretrained("minilm-l6", variant="mice-l2+2")
    >>> # scores = model(["a query"], ["a document"])        # [1], with autograd
    """

    def __init__(self, backbone: Backbone, variant: str | InteractionSpec = "ce",
                 query_max_tokens: int | None = None, doc_max_tokens: int | None = None,
                 random_init: list[str] | None = None):
        super().__init__()
        spec = parse(variant)
        spec.validate(backbone.num_layers)
        self.backbone = backbone
        self.spec = spec
        self.query_max_tokens = query_max_tokens
        self.doc_max_tokens = doc_max_tokens
        self.random_init: list[str] = list(random_init or [])
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

    # ------------------------------------------------------------------ compute
    def executor(self, kind: str = "auto") -> Executor:
        """An executor over this model's weights (``auto``: the fast path when there is one)."""
        if kind not in self._executors:
            self._executors[kind] = make_executor(self.spec, self.backbone, kind,
                                                  query_max_tokens=self.query_max_tokens,
                                                  doc_max_tokens=self.doc_max_tokens)
        return self._executors[kind]

    def forward(self, queries: list[str], docs: list[str], executor: str = "auto"
                ) -> torch.Tensor:
        """Scores ``[B]`` (fp32) of aligned pairs, with autograd when enabled."""
        ex = self.executor(executor)
        return ex.forward_pairs(ex.tokenize_pairs(list(queries), list(docs)))

    @property
    def info(self) -> dict:
        bb = self.backbone
        return {"variant": str(self.spec), "base_model": bb.source or bb.name,
                "random_init": list(self.random_init),
                "random_head": "classifier" in self.random_init or "all" in self.random_init,
                "num_layers": bb.num_layers, "params": bb.param_count(self.spec)}

    # ------------------------------------------------------------------ saving
    def save_pretrained(self, path: str | Path) -> Path:
        """Write the checkpoint (Hugging Face layout + ``mice_bench.json``) atomically."""
        from safetensors.torch import save_file

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
        bb = self.backbone
        layers = self.spec.layers(bb.num_layers)
        keep = max((i for i, ls in enumerate(layers) if not ls.dropped), default=-1) + 1
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
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            os.replace(path, old) if not old.exists() else None
            os.replace(tmp, path)
            import shutil

            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
        return path

    @classmethod
    def from_pretrained(cls, model: str | Path, variant: str | InteractionSpec | None = None,
                        device: str | torch.device = "cpu", dtype: Any = torch.float32,
                        query_max_tokens: int | None = None,
                        doc_max_tokens: int | None = None, seed: int = 0) -> "MiceModel":
        """Load a checkpoint: a mice-bench one (its stored variant is the default), a Hugging
        Face one (``variant`` defaults to ``ce``), a MICE reference one, or an architecture
        name with random weights (``minilm-l12``)."""
        path = Path(str(model)).expanduser()
        meta: dict = {}
        if path.is_dir():
            main = path / "model.safetensors"
            if main.exists() and _is_reference_mice(main):
                return cls.from_reference_mice(path, variant=variant, device=device,
                                               dtype=dtype)
            if (path / META_FILE).exists():
                try:
                    meta = json.loads((path / META_FILE).read_text())
                except (OSError, ValueError) as e:
                    raise UsageError(f"{path / META_FILE} is not readable JSON: {e}") from None
        bb = load_backbone(str(model), device=device, dtype=dtype, seed=seed)
        variant = variant if variant is not None else meta.get("variant", "ce")
        out = cls(bb, variant,
                  query_max_tokens=query_max_tokens if query_max_tokens is not None
                  else meta.get("query_max_tokens"),
                  doc_max_tokens=doc_max_tokens if doc_max_tokens is not None
                  else meta.get("doc_max_tokens"),
                  random_init=meta.get("random_init"))
        return out

    @classmethod
    def from_reference_mice(cls, source: str | Path | dict, config: Any = None,
                            tokenizer: Any = None, variant: str | None = None,
                            device: str | torch.device = "cpu",
                            dtype: Any = torch.float32) -> "MiceModel":
        """Build from the MICE reference code's state-dict layout (a directory with its
        ``model.safetensors`` and config, or an in-memory state dict with ``config`` and
        ``tokenizer``). ``variant`` defaults to ``mice-l{m}+{n}`` read from the layout."""
        from transformers import AutoConfig, AutoTokenizer, BertForSequenceClassification

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
        m, n = len(bottom), len(top)
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
        cfg.num_labels = hf_sd["classifier.weight"].shape[0] if "classifier.weight" in hf_sd \
            else 1
        hf = BertForSequenceClassification(cfg).eval()
        missing, unexpected = hf.load_state_dict(hf_sd, strict=False)
        missing = [k for k in missing if not k.endswith("position_ids")]
        if unexpected or [k for k in missing if not k.startswith("classifier")]:
            raise UsageError(f"{name}: reference state dict does not fit a {m + n}-layer BERT: "
                             f"missing {missing[:4]}, unexpected {unexpected[:4]}")
        bb = from_hf(hf, tokenizer, name=name)
        bb.classifier_random = any(k.startswith("classifier") for k in missing)
        for i, w in cross.items():
            if len(w) != len(_ATT):
                raise UsageError(f"{name}: incomplete cross-attention weights in layer {i}")
            bb.layers[i].cross = AttentionWeights(**w)
        bb.has_cross_weights = bool(cross)
        bb.source = name
        bb.to(device=device, dtype=_dtype(dtype))
        return cls(bb, variant or f"mice-l{m}+{n}")


def checkpoint_variant(model: str | Path) -> str | None:
    """The variant stored in a mice-bench checkpoint directory (``mice_bench.json``), or None
    for anything else (hub ids, plain Hugging Face checkpoints, architecture names)."""
    meta_path = Path(str(model)).expanduser() / META_FILE
    if not meta_path.is_file():
        return None
    try:
        return json.loads(meta_path.read_text()).get("variant")
    except (OSError, ValueError) as e:
        raise UsageError(f"{meta_path} is not readable JSON: {e}") from None


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
    """A ``BertConfig`` for ``bb`` as a sequence classifier with ``num_layers`` layers."""
    from transformers import BertConfig

    base = bb.config.to_dict() if bb.config is not None else {}
    base.update(vocab_size=bb.vocab_size, hidden_size=bb.hidden_size,
                num_hidden_layers=num_layers if num_layers is not None else bb.num_layers,
                num_attention_heads=bb.num_heads, intermediate_size=bb.intermediate_size,
                hidden_act=bb.hidden_act, max_position_embeddings=bb.max_positions,
                type_vocab_size=bb.type_vocab_size, layer_norm_eps=bb.layer_norm_eps,
                architectures=["BertForSequenceClassification"],
                num_labels=int(bb.cls_w.shape[0]) if bb.cls_w is not None else 1,
                is_decoder=False, add_cross_attention=False, model_type="bert")
    for k in ("id2label", "label2id", "_name_or_path", "transformers_version",
              "_attn_implementation_autoset"):
        base.pop(k, None)
    return BertConfig(**{k: v for k, v in base.items() if k != "model_type"})


def hf_state_dict(bb: Backbone, num_layers: int | None = None,
                  with_cross: bool = True) -> dict[str, torch.Tensor]:
    """``bb``'s parameters under Hugging Face ``BertForSequenceClassification`` names (plus
    ``crossattention`` sub-layers and ColBERT's ``linear.weight`` where present)."""
    L = bb.num_layers if num_layers is None else num_layers
    sd = {"bert.embeddings.word_embeddings.weight": bb.word_emb,
          "bert.embeddings.position_embeddings.weight": bb.pos_emb,
          "bert.embeddings.token_type_embeddings.weight": bb.type_emb,
          "bert.embeddings.LayerNorm.weight": bb.emb_ln_w,
          "bert.embeddings.LayerNorm.bias": bb.emb_ln_b}
    for i, lw in enumerate(list(bb.layers)[:L]):
        p = f"bert.encoder.layer.{i}."
        for hf_name, ours in _ATT.items():
            sd[p + "attention." + hf_name] = getattr(lw.attn, ours)
            if with_cross and lw.cross is not None:
                sd[p + "crossattention." + hf_name] = getattr(lw.cross, ours)
        sd[p + "intermediate.dense.weight"] = lw.w_in
        sd[p + "intermediate.dense.bias"] = lw.b_in
        sd[p + "output.dense.weight"] = lw.w_out
        sd[p + "output.dense.bias"] = lw.b_out
        sd[p + "output.LayerNorm.weight"] = lw.ln_w
        sd[p + "output.LayerNorm.bias"] = lw.ln_b
    if bb.pooler_w is not None:
        sd["bert.pooler.dense.weight"] = bb.pooler_w
        sd["bert.pooler.dense.bias"] = bb.pooler_b
    sd["classifier.weight"] = bb.cls_w
    sd["classifier.bias"] = bb.cls_b
    if bb.projection is not None:
        sd["linear.weight"] = bb.projection
    return {k: v.detach() for k, v in sd.items()}

"""Checkpoint files that other libraries read: sentence-transformers and PyLate.

:func:`write_layouts` adds, to a checkpoint directory that
:meth:`~mice_bench.model.InteractionModel.save_pretrained` is writing, the files with which another
library loads the checkpoint as its own and scores as mice-bench does:

* a plain cross-encoder (``ce``, or any joint-layout spec with full attention in every layer
  and a ``cls`` head): sentence-transformers' ``CrossEncoder`` layout
  (``config_sentence_transformers.json`` with ``model_type: CrossEncoder`` and the
  ``activation_fn``, as sentence-transformers >= 5 writes it; ``sentence_transformers``
  in ``config.json`` for older readers; the maximum length as the tokenizer's
  ``model_max_length``). ``CrossEncoder(path).predict`` is the activation of mice-bench's score
  (sigmoid of the logit with one label);
* ``biencoder`` (``mean-cos`` head, no interaction): the ``SentenceTransformer`` layout
  (``modules.json``: Transformer, ``1_Pooling``, ``2_Normalize`` when the embeddings are
  normalised; ``sentence_bert_config.json`` with ``max_seq_length``; prompts in
  ``config_sentence_transformers.json``). ``SentenceTransformer(path).encode`` gives
  mice-bench's pooled embeddings;
* ``colbert`` (``maxsim`` head, no interaction): PyLate's layout (``modules.json``:
  Transformer and ``pylate.models.Dense`` in ``1_Dense``, the projection or the identity
  for ``proj=0``; ``config_sentence_transformers.json`` with ``query_prefix`` /
  ``document_prefix`` / ``query_length`` / ``document_length`` / ``do_query_expansion`` /
  ``attend_to_expansion_tokens`` / ``skiplist_words``, the fields PyLate 1.x reads).
  ``pylate.models.ColBERT(path)`` encodes to mice-bench's token vectors.

The values written are the executor's effective settings (flags, the base checkpoint's own
configuration, the preset's defaults), so mice-bench reads the checkpoint back with the same
settings. Other variants (the masks, PreTTR, MICE) get no such files: no other library runs
them. :func:`other_library` says which library reads a checkpoint of a variant, or why none.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

__all__ = ["write_layouts", "other_library", "is_plain_cross_encoder", "LAYOUT_FILES"]

#: files each layout adds (for documentation and the model card)
LAYOUT_FILES = {
    "sentence-transformers CrossEncoder": ["config_sentence_transformers.json",
                                           "config.json (sentence_transformers)",
                                           "tokenizer_config.json (model_max_length)"],
    "sentence-transformers SentenceTransformer": [
        "modules.json", "1_Pooling/config.json", "2_Normalize/ (when normalised)",
        "sentence_bert_config.json", "config_sentence_transformers.json",
        "tokenizer_config.json (model_max_length)"],
    "PyLate ColBERT": ["modules.json", "1_Dense/config.json", "1_Dense/model.safetensors",
                       "sentence_bert_config.json", "config_sentence_transformers.json"],
}

_ST_TRANSFORMER = "sentence_transformers.models.Transformer"
_ST_POOLING = "sentence_transformers.models.Pooling"
_ST_NORMALIZE = "sentence_transformers.models.Normalize"
_PYLATE_DENSE = "pylate.models.Dense"
_POOLING_KEY = {"cls": "pooling_mode_cls_token", "max": "pooling_mode_max_tokens",
                "mean": "pooling_mode_mean_tokens",
                "mean_sqrt_len": "pooling_mode_mean_sqrt_len_tokens",
                "weightedmean": "pooling_mode_weightedmean_tokens",
                "lasttoken": "pooling_mode_lasttoken"}


def is_plain_cross_encoder(spec, num_layers: int) -> bool:
    """True when ``spec`` scores as an unmodified cross-encoder: joint layout, ``cls`` head,
    every layer kept with full attention, nothing frozen, no cross-attention sub-layer."""
    from ..layerspec import LayerSpec

    return spec.layout == "joint" and spec.head == "cls" and \
        all(ls == LayerSpec() for ls in spec.layers(num_layers))


def _separate(spec, num_layers: int) -> bool:
    """Query and document never interact (bi-encoder / late interaction)."""
    from ..layerspec import SEPARATE, LayerSpec

    return spec.layout == "split" and spec.doc_style in (None, "cls") and \
        all(ls == LayerSpec(SEPARATE) for ls in spec.layers(num_layers))


def other_library(model) -> tuple[str | None, str]:
    """``(layout name, reason)``: the layout another library reads for this model's variant,
    or ``(None, why none does)``."""
    spec, bb = model.spec, model.backbone
    L = bb.num_layers
    if is_plain_cross_encoder(spec, L):
        return "sentence-transformers CrossEncoder", ""
    if _separate(spec, L) and spec.head in ("mean-cos", "maxsim"):
        ex = model.executor()
        if bb.has_token_types and ex.tokenizer.doc_token_type != 0:
            return None, (f"documents use token type {ex.tokenizer.doc_token_type}; "
                          "sentence-transformers and PyLate encode every text with type 0")
        if spec.head == "mean-cos":
            return "sentence-transformers SentenceTransformer", ""
        return "PyLate ColBERT", ""
    return None, (f"{spec} changes the attention inside the encoder (masks, frozen or "
                  "dropped layers, cross-attention sub-layers); no other library runs it, "
                  "load it with mice-bench")


def _read_json(p: Path) -> dict:
    return json.loads(p.read_text()) if p.is_file() else {}


def _write_json(p: Path, obj: Any) -> None:
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(obj, indent=2) + "\n")


def _versions() -> dict:
    out = {"pytorch": torch.__version__}
    try:
        import transformers

        out["transformers"] = transformers.__version__
    except ImportError:  # pragma: no cover - transformers is a dependency
        pass
    try:
        from importlib.metadata import version

        out["sentence_transformers"] = version("sentence-transformers")
    except Exception:  # noqa: BLE001 - not installed: the files do not need it
        out["sentence_transformers"] = "5.0.0"
    return out


def _set_model_max_length(d: Path, n: int) -> None:
    p = d / "tokenizer_config.json"
    if p.is_file():
        cfg = _read_json(p)
        cfg["model_max_length"] = int(n)
        _write_json(p, cfg)


def _activation(bb) -> str:
    """The sentence-transformers activation: the checkpoint's own, else its default (sigmoid
    with one label, identity with several)."""
    cs = bb.checkpoint
    if cs is not None and cs.activation:
        return cs.activation
    n = int(bb.cls_w.shape[0]) if bb.cls_w is not None else 1
    return "torch.nn.modules.activation.Sigmoid" if n == 1 else \
        "torch.nn.modules.linear.Identity"


def _write_cross_encoder(model, d: Path) -> dict:
    ex = model.executor()
    act = _activation(model.backbone)
    cfg_p = d / "config.json"
    cfg = _read_json(cfg_p)
    cfg["sentence_transformers"] = {"activation_fn": act,
                                    "version": _versions()["sentence_transformers"]}
    _write_json(cfg_p, cfg)
    _write_json(d / "config_sentence_transformers.json",
                {"__version__": _versions(), "model_type": "CrossEncoder",
                 "activation_fn": act, "prompts": {}, "default_prompt_name": None,
                 "max_length": int(ex.tokenizer.max_length)})
    _set_model_max_length(d, ex.tokenizer.max_length)
    return {"activation_fn": act, "max_length": int(ex.tokenizer.max_length)}


def _st_common(d: Path, ex, modules: list[dict], max_seq_length: int, extra: dict) -> None:
    _write_json(d / "modules.json", modules)
    _write_json(d / "sentence_bert_config.json",
                {"max_seq_length": int(max_seq_length), "do_lower_case": False})
    t = ex.tokenizer
    prompts = {}
    if t.query_prompt:
        prompts["query"] = t.query_prompt
    if t.doc_prompt:
        prompts["document"] = t.doc_prompt
    _write_json(d / "config_sentence_transformers.json",
                {"__version__": _versions(), "prompts": prompts, "default_prompt_name": None,
                 **extra})


def _write_biencoder(model, d: Path) -> dict:
    ex = model.executor()
    t = ex.tokenizer
    H = model.backbone.hidden_size
    normalize = bool(ex.settings()["normalize"])
    total = min(t.doc_budget() + 2, t.max_positions)
    modules = [{"idx": 0, "name": "0", "path": "", "type": _ST_TRANSFORMER},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": _ST_POOLING}]
    pc = {"word_embedding_dimension": H, **{k: False for k in _POOLING_KEY.values()},
          "include_prompt": True}
    for mode in ex.pooling:
        pc[_POOLING_KEY[mode]] = True
    _write_json(d / "1_Pooling" / "config.json", pc)
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": _ST_NORMALIZE})
        (d / "2_Normalize").mkdir(exist_ok=True)
    _st_common(d, ex, modules, total, {"model_type": "SentenceTransformer",
                                       "similarity_fn_name": "cosine"})
    _set_model_max_length(d, total)
    q_total = min((t.query_max_tokens if t.query_max_tokens is not None else total) + 2,
                  t.max_positions)
    out = {"max_seq_length": total, "pooling": list(ex.pooling), "normalize": normalize}
    if q_total < total:
        out["note"] = (f"mice-bench cuts queries at {q_total} tokens, sentence-transformers "
                       f"at {total}: embeddings of longer queries differ")
    return out


def _write_pylate(model, d: Path) -> dict:
    from safetensors.torch import save_file

    ex = model.executor()
    t = ex.tokenizer
    cs = model.backbone.checkpoint
    H = model.backbone.hidden_size
    proj = ex.projection
    w = proj.detach().float().cpu() if proj is not None else torch.eye(H)
    q_special = 2 + (t.q_marker_id is not None)
    d_special = 2 + (t.d_marker_id is not None)
    # totals, markers and specials included (PyLate's lengths); as Tokenizer.query_parts
    q_words = t.query_max_tokens if t.query_max_tokens is not None else \
        (30 if t.qaug else t.max_positions)
    q_len = int(min(q_words + q_special, t.max_positions))
    doc_len = int(min(t.doc_budget(d_special) + d_special, t.max_positions))
    _write_json(d / "1_Dense" / "config.json",
                {"in_features": H, "out_features": int(w.shape[0]), "bias": False,
                 "activation_function": "torch.nn.modules.linear.Identity",
                 "use_residual": False})
    save_file({"linear.weight": w.contiguous()}, str(d / "1_Dense" / "model.safetensors"),
              metadata={"format": "pt"})
    modules = [{"idx": 0, "name": "0", "path": "", "type": _ST_TRANSFORMER},
               {"idx": 1, "name": "1", "path": "1_Dense", "type": _PYLATE_DENSE}]
    skip = list(cs.skiplist) if t.skip_ids and cs.skiplist else []
    fields = {"model_type": "ColBERT", "similarity_fn_name": "MaxSim",
              "query_prefix": t.query_marker or "", "document_prefix": t.doc_marker or "",
              "query_length": q_len, "document_length": doc_len,
              "attend_to_expansion_tokens": bool(t.qaug and t.attend_expansion),
              "skiplist_words": skip, "do_query_expansion": bool(t.qaug)}
    _st_common(d, ex, modules, doc_len, fields)
    return {k: fields[k] for k in ("query_prefix", "document_prefix", "query_length",
                                   "document_length", "do_query_expansion",
                                   "attend_to_expansion_tokens")} | \
        {"projection": None if proj is None else int(w.shape[0]), "skiplist_words": len(skip)}


_WRITERS = {"sentence-transformers CrossEncoder": _write_cross_encoder,
            "sentence-transformers SentenceTransformer": _write_biencoder,
            "PyLate ColBERT": _write_pylate}


def write_layouts(model, directory: str | Path) -> dict:
    """Write the other library's files for ``model`` into ``directory`` (a checkpoint being
    saved: ``config.json`` and the tokenizer files are already there). Returns what to record
    in ``mice_bench.json`` under ``layouts``: ``{"library": name | None, "settings": {...}}``
    or ``{"library": None, "reason": ...}``."""
    d = Path(directory)
    name, reason = other_library(model)
    if name is None:
        return {"library": None, "reason": reason}
    return {"library": name, "settings": _WRITERS[name](model, d)}

"""The cache keys of ``effectiveness`` and ``store build``: one function each.

* :func:`score_key`: what a cached score of one (model, variant, dataset) depends on;
* :func:`store_key`: what the stored documents depend on, and nothing else: the model, the
  layers before the split, the document side's effective settings (length, markers, prompts,
  pooling, projection), the store's format, content, token pooling and codec sample. Query-side settings are not in it, so
  ``--query-max-tokens`` reads the store that ``store build`` made.

Every field is always present (no field is left out to keep an older key alive): a change of
meaning bumps :data:`KEY_VERSION`, and caches of an older version are rebuilt, never read.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..naming import key_hash, slug

#: the version of both keys; bump it when a field changes meaning
KEY_VERSION = 2

#: the effective settings (``Executor.settings()``) that change a stored document
DOC_SETTINGS = ("doc_max_tokens", "doc_style", "doc_marker", "doc_prompt", "max_positions",
                "head", "pooling", "normalize", "projection")


def model_identity(name: str) -> dict:
    """What identifies a checkpoint for caching: a hub id, or a local path + its weight files."""
    p = Path(name).expanduser()
    if p.exists():
        files = sorted(x for x in p.rglob("*") if x.suffix in (".safetensors", ".bin", ".pt"))
        return {"path": str(p.resolve()),
                "files": [(str(f.relative_to(p)), f.stat().st_size, int(f.stat().st_mtime))
                          for f in files]}
    return {"name": name}


def pinned_identity(ex, model_name: str) -> dict:
    """:func:`model_identity`, with a hub id's commit (which pins its weights) when known."""
    ident = model_identity(model_name)
    commit = getattr(ex.backbone.config, "_commit_hash", None)    # a transformers config
    if commit and "name" in ident:
        ident = {**ident, "revision": str(commit)}
    return ident


def effective_settings(ex) -> dict:
    """The executor's effective scoring settings, without where each came from."""
    return {k: v for k, v in ex.settings().items() if k != "sources"}


def score_key(ex, model_name: str, coll, settings, store: str | None) -> dict:
    """The key of the score cache of executor ``ex`` (``model_name``'s weights) on collection
    ``coll`` under :class:`~.rerank.ScoringSettings` ``settings``; ``store``: the document-state
    store format the scores are read through (None: documents are scored from their texts)."""
    return {"version": KEY_VERSION, "model": pinned_identity(ex, model_name),
            "variant": str(ex.spec), "dataset": coll.info.irds_id,
            "corpus": coll.corpus_fingerprint(), "executor_kind": ex.kind,
            "settings": effective_settings(ex), "dtype": settings.dtype,
            "device": torch.device(settings.device).type, "executor": settings.executor,
            "seed": settings.seed, "local_attention": ex.backbone.local_attention,
            "doc_content": ex.doc_repr, "doc_store": store,
            "pool_factor": settings.pool_factor if store else None,
            "codec_sample_tokens": settings.codec_sample_tokens if store else None}


def store_key(ex, model_name: str, coll, settings) -> dict:
    """The key of the document-state store of ``ex`` on ``coll``: what the stored documents
    depend on (see the module docstring)."""
    L = ex.backbone.num_layers
    split = ex.spec.split_layer(L)
    eff = effective_settings(ex)
    return {"version": KEY_VERSION, "model": pinned_identity(ex, model_name),
            "split_layer": split,
            "pre_split_layers": [ls.describe() for ls in ex.spec.layers(L)[:split]],
            "doc_token_type": ex.spec.doc_token_type, "corpus": coll.corpus_fingerprint(),
            "doc_settings": {k: eff.get(k) for k in DOC_SETTINGS},
            "content": ex.doc_repr, "dtype": settings.dtype,
            "device": torch.device(settings.device).type, "seed": settings.seed,
            "local_attention": ex.backbone.local_attention, "store": settings.doc_store,
            "pool_factor": settings.pool_factor,
            "codec_sample_tokens": settings.codec_sample_tokens}


def score_path(cache_dir: Path, coll, variant: str, key: dict) -> Path:
    """Where the score cache of ``key`` lives."""
    return Path(cache_dir) / "scores" / slug(coll.name) / f"{slug(variant)}-{key_hash(key)}.sqlite"


def store_dir(cache_dir: Path, key: dict, fmt: str | None = None) -> Path:
    """Where the store of ``key`` lives, or that of the same documents in format ``fmt``."""
    key = key if fmt is None else dict(key, store=fmt)
    return (Path(cache_dir) / "docstates"
            / f"s{key['split_layer']}-{key['dtype']}-{key['store']}-{key_hash(key)}")

"""The files a checkpoint holds besides its weights, for other libraries and for readers.

* :mod:`~mice_bench.checkpoint_files.layouts`: files that sentence-transformers
  (``CrossEncoder``, ``SentenceTransformer``) and PyLate (``ColBERT``) read as their own;
* :mod:`~mice_bench.checkpoint_files.card`: the model card (``README.md``).

:func:`checkpoint_extras` is what :meth:`~mice_bench.model.InteractionModel.save_pretrained` calls.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["checkpoint_extras"]


def checkpoint_extras(model, directory: str | Path, meta: dict, name: str | None = None) -> dict:
    """Add the other libraries' files and the model card to a checkpoint being written in
    ``directory`` (``name``: the checkpoint's name in the card); returns ``meta`` (the ``mice_bench.json`` content) with ``layouts``
    recorded. A bi-encoder records its effective lengths (``query_max_tokens`` /
    ``doc_max_tokens``): its ``sentence_bert_config.json`` holds one limit for both, so
    mice-bench reads them back from ``mice_bench.json``."""
    from ..checkpoint_files.card import write_card
    from ..checkpoint_files.layouts import write_layouts

    meta = dict(meta)
    meta["layouts"] = write_layouts(model, directory)
    if meta["layouts"].get("library") == "sentence-transformers SentenceTransformer":
        t = model.executor().tokenizer
        if meta.get("query_max_tokens") is None:
            meta["query_max_tokens"] = t.query_max_tokens
        if meta.get("doc_max_tokens") is None:
            meta["doc_max_tokens"] = t.doc_budget()
    write_card(directory, dict(meta, num_layers=model.backbone.num_layers), name=name)
    return meta

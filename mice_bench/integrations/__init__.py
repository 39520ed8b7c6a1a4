"""mice-bench inside other tools.

* :mod:`~mice_bench.integrations.pyterrier`: PyTerrier transformers (re-ranker, document-state
  precomputation, BM25 first stage); needs the ``pyterrier`` extra.

The files that sentence-transformers and PyLate read from a checkpoint, and its model card, are
written by the core (:mod:`mice_bench.checkpoint_files`) whenever a model is saved.
"""

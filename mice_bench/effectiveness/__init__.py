"""Re-ranking effectiveness evaluation (``mice-bench effectiveness``).

Modules: :mod:`.datasets` (names -> ir_datasets ids, offline guard), :mod:`.firststage`
(BM25, run files), :mod:`.rerank` (model scoring through :mod:`.cache`), :mod:`.metrics`
(ir_measures), :mod:`.stats` (paired tests, Holm), :mod:`.table` (summary), :mod:`.runner`
(orchestration), :mod:`.cli`.
"""

from .runner import EffectivenessConfig, run_effectiveness

__all__ = ["EffectivenessConfig", "run_effectiveness"]

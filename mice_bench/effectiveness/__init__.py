"""Re-ranking effectiveness evaluation (``mice-bench effectiveness``).

Modules: :mod:`.datasets` (names -> ir_datasets ids, offline guard), :mod:`.firststage`
(BM25, run files), :mod:`.rerank` (model scoring through :mod:`.cache`), :mod:`.metrics`
(ir_measures), :mod:`.stats` (paired tests, Holm), :mod:`.table` (summary), :mod:`.plan`
(options, checked), :mod:`.scoring` (every model's variants), :mod:`.resultfiles` (result
files), :mod:`.runner` (orchestration), :mod:`.cli`.
"""

from .plan import EffectivenessConfig, ModelRef
from .runner import run_effectiveness

__all__ = ["EffectivenessConfig", "ModelRef", "run_effectiveness"]

"""mice-bench: how much attention interaction does a transformer re-ranker need?

The public Python API is :class:`mice_bench.Reranker` (``mice_bench.api``) and the trainable
:class:`mice_bench.MiceModel` (``mice_bench.model``); both are imported lazily so that
``import mice_bench.latency`` stays light.
"""

__version__ = "0.1.0"

__all__ = ["Reranker", "MiceModel", "__version__"]


def __getattr__(name):
    if name == "Reranker":
        from .api import Reranker

        return Reranker
    if name == "MiceModel":
        from .model import MiceModel

        return MiceModel
    raise AttributeError(f"module 'mice_bench' has no attribute {name!r}")

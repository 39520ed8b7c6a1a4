"""mice-bench: how much attention interaction does a transformer re-ranker need?

The public Python API is :class:`mice_bench.Reranker` (``mice_bench.api``) and the trainable
:class:`mice_bench.InteractionModel` (``mice_bench.model``); both are imported lazily so that
``import mice_bench.latency`` stays light. ``MiceModel`` is the former name of
``InteractionModel`` (deprecated, removed in the next release).
"""

__version__ = "0.1.0"

__all__ = ["Reranker", "InteractionModel", "__version__"]


def __getattr__(name):
    if name == "Reranker":
        from .api import Reranker

        return Reranker
    if name == "InteractionModel":
        from .model import InteractionModel

        return InteractionModel
    if name == "MiceModel":
        from . import model

        return model.__getattr__("MiceModel")
    raise AttributeError(f"module 'mice_bench' has no attribute {name!r}")

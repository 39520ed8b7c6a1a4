"""mice-bench: how much attention interaction does a transformer re-ranker need?"""

__version__ = "0.1.0"

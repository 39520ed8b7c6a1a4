"""``mice-bench latency``: a latency / throughput / memory benchmark of interaction variants.

* :mod:`.stats` summary statistics of raw timings;
* :mod:`.timing` per-phase timers (perf_counter on CPU, CUDA events on GPU) and peak memory;
* :mod:`.flops` the analytic FLOP model per pair and the measured dense matmul peak;
* :mod:`.inputs` synthetic texts of exact token counts;
* :mod:`.runner` protocols (rerank, paper), the timing loop, OOM handling;
* :mod:`.schema` the results schema and its validator; :mod:`.table` Rich tables;
* :mod:`.cli` the ``latency`` sub-command.
"""

from .runner import LatencyConfig, run_latency  # noqa: F401
from .stats import summarize  # noqa: F401

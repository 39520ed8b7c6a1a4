"""``mice-bench latency``: a latency / throughput / memory benchmark of interaction variants.

* :mod:`.config` the typed configuration, protocol defaults and size checks;
* :mod:`.inputs` synthetic texts of exact token counts;
* :mod:`.workloads` what one timed run does under each protocol (rerank, paper);
* :mod:`.timing` per-phase timers (perf_counter on CPU, CUDA events on GPU) and peak memory;
* :mod:`.scheduler` warm-up under the memory probe, OOM halving, interleaved timed runs;
* :mod:`.compile` ``--compile`` with per-entry-point eager fallback;
* :mod:`.stats` summary statistics of raw timings; :mod:`.flops` the analytic FLOP model
  and the measured dense matmul peak; :mod:`.rows` rows, throughput and speedups vs ``ce``;
* :mod:`.runner` :func:`run_latency` (config -> :class:`~.result.LatencyResult`);
* :mod:`.result` the typed results file (writer = reader) and its upgraders;
  :mod:`.schema` its JSON schema; :mod:`.records` flat views; :mod:`.table` the tables
  that the command prints and the report writes;
* :mod:`.cli` the ``latency`` sub-command (device / dtype policy: :mod:`mice_bench.devices`).
"""

from .config import LatencyConfig  # noqa: F401
from .result import LatencyResult  # noqa: F401
from .runner import run_latency  # noqa: F401
from .stats import summarize  # noqa: F401

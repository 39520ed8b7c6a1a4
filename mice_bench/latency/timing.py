"""Per-phase timers and peak-memory probes.

* CPU: ``time.perf_counter`` around every phase; the run total is the wall time of the run.
* CUDA: a CUDA event is recorded at every phase boundary on the current stream and the run
  ends with ``torch.cuda.synchronize()``; a phase's time is the elapsed time between its two
  events, so the phases partition the run exactly (the wall time is kept as well).

Peak memory:

* CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` (absolute peak,
  includes weights and stored document states) and its growth over the allocation at start.
* CPU: peak resident set size. The kernel's high-water mark (``VmHWM``) is reset by writing
  ``5`` to ``/proc/self/clear_refs`` where allowed; otherwise a sampling thread reads
  ``/proc/self/statm`` every few milliseconds. Growth = peak - RSS at start (after
  ``malloc_trim``), i.e. what the measured calls added on top of what was already resident.
"""

from __future__ import annotations

import ctypes
import gc
import os
import threading
import time
from contextlib import contextmanager
from typing import Iterator

import torch

PHASES: tuple[str, ...] = ("tokenize", "doc_encode", "query_encode", "interaction")

_MB = 1024.0 * 1024.0


class PhaseTimer:
    """Time one run split into named phases. Usage::

        t = PhaseTimer(device)
        t.start()
        with t.phase("tokenize"): ...
        with t.phase("interaction"): ...
        total, phases, wall = t.stop()
    """

    def __init__(self, device: torch.device | str):
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self._acc: dict[str, float] = {}
        self._events: list[tuple[str, object, object]] = []
        self._t0 = 0.0
        self._ev0 = None
        self._running = False

    def start(self) -> None:
        self._acc = {p: 0.0 for p in PHASES}
        self._events = []
        if self.cuda:
            torch.cuda.synchronize(self.device)
            self._ev0 = torch.cuda.Event(enable_timing=True)
            self._ev0.record()
        self._running = True
        self._t0 = time.perf_counter()

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        if name not in PHASES:
            raise ValueError(f"unknown phase {name!r}; phases: {', '.join(PHASES)}")
        if not self._running:
            raise RuntimeError("PhaseTimer.phase() outside start()/stop()")
        if self.cuda:
            a = torch.cuda.Event(enable_timing=True)
            b = torch.cuda.Event(enable_timing=True)
            a.record()
            try:
                yield
            finally:
                b.record()
                self._events.append((name, a, b))
        else:
            t = time.perf_counter()
            try:
                yield
            finally:
                self._acc[name] += time.perf_counter() - t

    def stop(self) -> tuple[float, dict[str, float], float]:
        """End the run: (total seconds, per-phase seconds, wall seconds)."""
        if self.cuda:
            ev1 = torch.cuda.Event(enable_timing=True)
            ev1.record()
            torch.cuda.synchronize(self.device)
            wall = time.perf_counter() - self._t0
            for name, a, b in self._events:
                self._acc[name] += a.elapsed_time(b) / 1000.0
            total = self._ev0.elapsed_time(ev1) / 1000.0
        else:
            wall = time.perf_counter() - self._t0
            total = wall
        self._running = False
        return total, dict(self._acc), wall


# ----------------------------------------------------------------------------- memory
def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _hwm_bytes() -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return None


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    hwm = _hwm_bytes()
    return hwm is not None and hwm <= _rss_bytes() + 4 * 1024 * 1024


def _malloc_trim() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class PeakMemory:
    """Measure peak memory between :meth:`start` and :meth:`stop`."""

    def __init__(self, device: torch.device | str, sample_interval_s: float = 0.002):
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self.interval = sample_interval_s
        self.method = ""
        self._base = 0
        self._peak = 0
        self._stop_evt: threading.Event | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        gc.collect()
        if self.cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
            self.method = "cuda.max_memory_allocated"
            return
        _malloc_trim()
        self._base = _rss_bytes()
        if _reset_hwm():
            self.method = "rss.VmHWM(clear_refs)"
            return
        self.method = "rss.sampled(/proc/self/statm)"
        self._peak = self._base
        self._stop_evt = threading.Event()

        def sample() -> None:
            while not self._stop_evt.is_set():
                self._peak = max(self._peak, _rss_bytes())
                self._stop_evt.wait(self.interval)

        self._thread = threading.Thread(target=sample, name="mice-bench-rss", daemon=True)
        self._thread.start()

    def stop(self) -> dict[str, float | str]:
        if self.cuda:
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        elif self._thread is not None:
            self._stop_evt.set()
            self._thread.join()
            self._thread = None
            peak = max(self._peak, _rss_bytes())
        else:
            peak = max(_hwm_bytes() or 0, _rss_bytes())
        return {
            "method": self.method,
            "baseline_mb": self._base / _MB,
            "peak_mb": peak / _MB,
            "growth_mb": max(0, peak - self._base) / _MB,
        }

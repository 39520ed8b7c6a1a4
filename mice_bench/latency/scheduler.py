"""The timing loop: prepare each row (warm-up under the memory probe, halving the batch on
out-of-memory), then time the runs of a sweep point's rows.

``interleaved`` (default): the timed runs of the variants of one sweep point go round-robin,
one run of each in turn, a row leaving the rotation once it has ``runs`` runs and
``min_seconds`` seconds, so a change in machine load hits every variant alike and the
speedups stay fair. ``sequential`` times each row to completion before the next (the seed's
script). :class:`PhaseTimer` is looked up at call time, so tests can substitute a clock.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import torch

from .compile import is_oom
from .config import MAX_RUNS
from .stats import enough
from .timing import PHASES, PeakMemory, PhaseTimer


class Runnable(Protocol):
    def run(self, t: PhaseTimer) -> None: ...


@dataclass
class Slot:
    """One row in the making: its workload, memory probe result and raw timings."""

    spec: Any
    ex: Any
    wl: Any                              # a Workload (anything with ``run(timer)``)
    batch: int
    halvings: int = 0
    notes: list[str] = field(default_factory=list)
    memory: dict[str, Any] = field(default_factory=dict)
    total: list[float] = field(default_factory=list)
    wall: list[float] = field(default_factory=list)
    phases: dict[str, list[float]] = field(default_factory=lambda: {p: [] for p in PHASES})
    label: str = ""                      # the row's name in progress reports ("" = the spec)

    def record(self, total: float, ph: dict[str, float], wall: float) -> None:
        self.total.append(total)
        self.wall.append(wall)
        for p in PHASES:
            self.phases[p].append(ph[p])


def memory_pass(wl: Runnable, device: torch.device, warmup: int,
                record: Callable[[float, dict, float], None]) -> dict[str, Any]:
    """Warm-up runs under the peak-memory probe; with ``warmup`` 0 one timed run instead
    (given to ``record``)."""
    timer = PhaseTimer(device)
    mem = PeakMemory(device)
    mem.start()
    try:
        for _ in range(max(warmup, 1)):
            timer.start()
            wl.run(timer)
            res = timer.stop()
        if warmup == 0:
            record(*res)
    finally:
        memory = mem.stop()
    return memory


def prepare_slot(spec, ex, batch: int, make_workload: Callable[[int], Any],
                 device: torch.device, warmup: int, log: Callable[[str], None],
                 doc_tokens: int) -> Slot:
    """Build the workload (``make_workload(batch)``), precompute its documents and warm it
    up under the memory probe. Out of memory (GPU) -> halve the batch, say so, try again."""
    name = str(spec)
    notes: list[str] = []
    halvings = 0
    while True:
        wl = make_workload(batch)
        pending: list[tuple] = []
        try:
            wl.prepare(device)
            memory = memory_pass(wl, device, warmup, lambda *r: pending.append(r))
            break
        except Exception as e:  # noqa: BLE001 - only OOM is handled, the rest re-raised
            if not is_oom(e) or batch <= 1:
                raise
            del wl
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
            new = max(1, batch // 2)
            msg = f"{name}: out of memory at batch {batch}; halving to {new} and continuing"
            log(msg)
            notes.append(msg)
            batch, halvings = new, halvings + 1
    log(f"{name:>14}  batch {batch}  doc {doc_tokens}: prepared and warmed up")
    slot = Slot(spec, ex, wl, batch, halvings, notes, memory)
    for r in pending:
        slot.record(*r)
    return slot


def time_slots(slots: list[Slot], device: torch.device, runs: int, min_seconds: float,
               max_runs: int = MAX_RUNS,
               on_run: Callable[[Slot], None] | None = None) -> list[str]:
    """Timed runs, round-robin over ``slots`` until each meets ``runs`` and ``min_seconds``
    (or ``max_runs``); ``on_run(slot)`` after each (the progress bar). Returns the order in
    which rows ran (variant names; for tests)."""
    timer = PhaseTimer(device)
    order: list[str] = []
    active = [s for s in slots if not enough(s.total, runs, min_seconds)
              and len(s.total) < max_runs]
    while active:
        for s in list(active):
            timer.start()
            s.wl.run(timer)
            s.record(*timer.stop())
            order.append(str(s.spec))
            if on_run is not None:
                on_run(s)
            if enough(s.total, runs, min_seconds) or len(s.total) >= max_runs:
                active.remove(s)
    return order

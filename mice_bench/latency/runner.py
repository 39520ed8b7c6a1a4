"""Run latency measurements: configuration, workloads per protocol, the timing loop.

Two protocols (see ``docs/latency.md``):

* ``rerank`` (default): one query, ``depth`` candidates scored in batches of ``batch_size``;
  the query is tokenized and encoded once per run; document states are precomputed in
  memory before timing (``precompute``; optionally with per-layer K/V, ``kv_cache``) or
  tokenized and encoded inside the run (``--no-precompute``).
* ``paper``: the seed's measurement (xpmir/mice ``scripts/compare_latency_footprint.py``):
  one call on ``batch_size`` (query, document) pairs with one fixed short query repeated
  (re-encoded per pair), timing the whole call including tokenization, with and without
  precomputed documents.

One *run* is one timed unit (rerank: all ``depth`` candidates; paper: one batch). Each run is
split into the phases of :data:`~mice_bench.latency.timing.PHASES`.
"""

from __future__ import annotations

import gc
import math
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import torch

from ..errors import UsageError
from ..spec import InteractionSpec, SpecError, parse
from . import flops as flopsmod
from .inputs import PAPER_QUERY, make_texts, token_count
from .stats import enough, speedup, summarize, throughput
from .timing import PHASES, PeakMemory, PhaseTimer

PROTOCOLS = ("rerank", "paper")
DEFAULT_VARIANTS = ("ce", "mice-l4+3", "colbert")
PROTOCOL_DEFAULTS: dict[str, dict[str, Any]] = {
    # sized so that the default command finishes well under 2 minutes on 2 CPU cores
    "rerank": dict(batch_sizes=[16], query_tokens=32, doc_tokens=[128], depth=32, warmup=1,
                   runs=5, min_seconds=1.0),
    # the seed's protocol: 128 pairs x 512-token documents, 5 warm-up + 10 timed runs
    "paper": dict(batch_sizes=[128], query_tokens=None, doc_tokens=[512], depth=None, warmup=5,
                  runs=10, min_seconds=0.0),
}
MAX_RUNS = 10_000


@dataclass
class LatencyConfig:
    model: str = "minilm-l12"
    variants: list[str] = field(default_factory=lambda: list(DEFAULT_VARIANTS))
    protocol: str = "rerank"
    batch_sizes: list[int] | None = None
    query_tokens: int | None = None
    doc_tokens: list[int] | None = None
    depth: int | None = None
    precompute: bool | None = None  # None: protocol default (rerank: True; paper: both)
    kv_cache: bool = False
    dtype: str = "fp32"
    device: str = "auto"
    compile: bool = False
    warmup: int | None = None
    runs: int | None = None
    min_seconds: float | None = None
    threads: int | None = None
    executor: str = "auto"
    schedule: str = "interleaved"  # interleaved | sequential (timed runs of a sweep point)
    seed: int = 0
    output: str | None = None
    format: str = "table"

    def resolved(self) -> "LatencyConfig":
        """A copy with protocol defaults filled in and values checked (raises UsageError)."""
        if self.protocol not in PROTOCOLS:
            raise UsageError(f"unknown protocol {self.protocol!r}; valid: {', '.join(PROTOCOLS)}")
        d = PROTOCOL_DEFAULTS[self.protocol]
        c = LatencyConfig(**asdict(self))
        for k in ("batch_sizes", "query_tokens", "doc_tokens", "depth", "warmup", "runs",
                  "min_seconds"):
            if getattr(c, k) is None:
                setattr(c, k, d[k])
        if not c.variants:
            raise UsageError("no variants given")
        for name, vals in (("--batch-size", c.batch_sizes), ("--doc-tokens", c.doc_tokens)):
            if not vals or any(int(v) < 1 for v in vals):
                raise UsageError(f"{name} needs positive integers, got {vals!r}")
        if c.protocol == "rerank":
            if c.query_tokens is None or c.query_tokens < 1:
                raise UsageError("--query-tokens must be >= 1")
            if c.depth is None or c.depth < 1:
                raise UsageError("--depth must be >= 1")
        if c.warmup < 0 or c.runs < 1 or c.min_seconds < 0:
            raise UsageError("--warmup must be >= 0, --runs >= 1, --min-seconds >= 0")
        if c.threads is not None and c.threads < 1:
            raise UsageError("--threads must be >= 1")
        if c.kv_cache and c.precompute is False:
            raise UsageError("--kv-cache stores per-layer K/V of precomputed documents; it "
                             "needs --precompute")
        if c.dtype not in ("fp32", "fp16", "bf16"):
            raise UsageError(f"unknown dtype {c.dtype!r}; valid: fp32, fp16, bf16")
        if c.device not in ("auto", "cpu", "cuda") and not c.device.startswith("cuda:"):
            raise UsageError(f"unknown device {c.device!r}; valid: auto, cpu, cuda")
        if c.schedule not in ("interleaved", "sequential"):
            raise UsageError(f"unknown schedule {c.schedule!r}; valid: interleaved, sequential")
        if c.format not in ("table", "json"):
            raise UsageError(f"unknown format {c.format!r}; valid: table, json")
        return c


# ----------------------------------------------------------------------------- checks
def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UsageError("--device cuda was asked for but CUDA is not available here "
                             f"(torch {torch.__version__}, CUDA build {torch.version.cuda}); "
                             "use --device cpu or auto")
        dev = torch.device(name)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UsageError(f"{name}: only {torch.cuda.device_count()} CUDA device(s)")
        return dev
    return torch.device("cpu")


def check_dtype(dtype: str, device: torch.device) -> torch.dtype:
    from ..backbone import dtype_from_name

    dt = dtype_from_name(dtype)
    if device.type == "cpu" and dt == torch.float16:
        raise UsageError("fp16 is not supported on CPU (no fast fp16 matmul kernels); "
                         "use --dtype fp32 or bf16")
    if device.type == "cuda" and dt == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        raise UsageError(f"bf16 is not supported on {torch.cuda.get_device_name(device)}; "
                         "use --dtype fp16 or fp32")
    return dt


def parse_variants(names: list[str]) -> list[InteractionSpec]:
    out, seen = [], set()
    for n in names:
        spec = parse(n)
        if str(spec) not in seen:
            seen.add(str(spec))
            out.append(spec)
    return out


def check_sizes(specs: list[InteractionSpec], max_positions: int, query_tokens: int,
                doc_tokens: list[int], protocol: str) -> None:
    for d in doc_tokens:
        for spec in specs:
            if protocol == "paper":
                # the seed truncates every sequence to the model's max length (512)
                if d > max_positions:
                    raise UsageError(f"--doc-tokens {d} is above the model's {max_positions} "
                                     "positions")
                continue
            need = query_tokens + d + 3 if spec.layout == "joint" else max(query_tokens, d) + 2
            if need > max_positions:
                what = ("[CLS] query [SEP] doc [SEP]" if spec.layout == "joint"
                        else "[CLS] text [SEP]")
                raise UsageError(
                    f"{spec}: {what} needs {need} positions with --query-tokens {query_tokens} "
                    f"--doc-tokens {d}, above the model's {max_positions} maximum positions")


# ----------------------------------------------------------------------------- workloads
class Workload:
    """One (variant, point): ``prepare()`` outside timing, then ``run(timer)`` per run."""

    def __init__(self, ex, protocol: str, batch_size: int, query: str, docs: list[str],
                 precompute: bool, kv_cache: bool):
        self.ex = ex
        self.protocol = protocol
        self.batch_size = batch_size
        self.query = query
        self.docs = docs
        self.split = bool(getattr(ex, "has_doc_precompute", False))
        self.precompute = precompute and self.split
        # only executors with interaction layers over frozen documents have K/V to cache
        self.kv_cache = kv_cache and self.precompute and bool(getattr(ex, "kv_layers", None))
        self.pairs_per_run = len(docs)
        self.ds = None
        self.offline: dict[str, Any] = {}

    def prepare(self, device: torch.device) -> None:
        if not self.precompute:
            return
        t = time.perf_counter()
        self.ds = self.ex.encode_documents(self.docs, kv_cache=self.kv_cache,
                                           batch_size=max(self.batch_size, 1))
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        self.offline = {"doc_encode_s": time.perf_counter() - t,
                        "doc_states_mb": self.ds.nbytes / 2**20,
                        "docs": len(self.docs)}

    def run(self, t: PhaseTimer) -> None:
        with torch.inference_mode():
            if self.protocol == "paper":
                self._run_paper(t)
            else:
                self._run_rerank(t)

    # rerank: one query, its candidates in batches
    def _run_rerank(self, t: PhaseTimer) -> None:
        ex, B, docs = self.ex, self.batch_size, self.docs
        if not self.split:
            for i in range(0, len(docs), B):
                chunk = docs[i:i + B]
                with t.phase("tokenize"):
                    tb = ex.tokenize_pairs([self.query] * len(chunk), chunk)
                with t.phase("interaction"):
                    ex.forward_pairs(tb)
            return
        with t.phase("tokenize"):
            tq = ex.tokenize_queries([self.query])
        with t.phase("query_encode"):
            qs = ex.encode_queries(tq)
        for i in range(0, len(docs), B):
            n = min(B, len(docs) - i)
            if self.precompute:
                ds, idx = self.ds, torch.arange(i, i + n)
            else:
                with t.phase("tokenize"):
                    td = ex.tokenize_docs(docs[i:i + n])
                with t.phase("doc_encode"):
                    ds = ex.encode_documents(td, batch_size=n)
                idx = torch.arange(n)
            with t.phase("interaction"):
                ex.score_states(qs, torch.zeros(n, dtype=torch.long), ds, idx)

    # paper: one call on B pairs, the query repeated and re-encoded for every pair
    def _run_paper(self, t: PhaseTimer) -> None:
        ex, docs = self.ex, self.docs
        queries = [self.query] * len(docs)
        if not self.split:
            with t.phase("tokenize"):
                tb = ex.tokenize_pairs(queries, docs)
            with t.phase("interaction"):
                ex.forward_pairs(tb)
            return
        idx = torch.arange(len(docs))
        with t.phase("tokenize"):
            tq = ex.tokenize_queries(queries)
            # as the reference script does, documents are tokenized inside the timed call
            # even when their states are precomputed
            td = ex.tokenize_docs(docs)
        if self.precompute:
            ds = self.ds
        else:
            with t.phase("doc_encode"):
                ds = ex.encode_documents(td, batch_size=len(docs))
        with t.phase("query_encode"):
            qs = ex.encode_queries(tq)
        with t.phase("interaction"):
            ex.score_states(qs, idx, ds, idx)


def measure(run: Callable[[PhaseTimer], None], device: torch.device, warmup: int, runs: int,
            min_seconds: float, max_runs: int = MAX_RUNS) -> dict[str, Any]:
    """Warm up, then time runs until both ``runs`` and ``min_seconds`` are met.

    Returns raw per-run values (seconds): ``total``, ``wall`` and one list per phase, plus
    the peak memory over warm-up and timed runs.
    """
    timer = PhaseTimer(device)
    mem = PeakMemory(device)
    mem.start()
    try:
        for _ in range(warmup):
            timer.start()
            run(timer)
            timer.stop()
        totals: list[float] = []
        walls: list[float] = []
        phases: dict[str, list[float]] = {p: [] for p in PHASES}
        while not enough(totals, runs, min_seconds) and len(totals) < max_runs:
            timer.start()
            run(timer)
            total, ph, wall = timer.stop()
            totals.append(total)
            walls.append(wall)
            for p in PHASES:
                phases[p].append(ph[p])
    finally:
        memory = mem.stop()
    return {"total": totals, "wall": walls, "phases": phases, "memory": memory}


def _is_oom(e: BaseException) -> bool:
    oom = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError",
                                                              None)
    if oom is not None and isinstance(e, oom):
        return True
    return isinstance(e, RuntimeError) and "out of memory" in str(e).lower()


# ----------------------------------------------------------------------------- compile
def compile_executor(ex, log: Callable[[str], None]) -> dict[str, Any]:
    """Wrap the executor's compute entry points with ``torch.compile``.

    If compilation fails at the first call, that entry point falls back to eager (said once,
    recorded in the returned state: ``failed`` lists the entry points running eager).
    """
    state: dict[str, Any] = {"compiled": [], "failed": []}
    if not hasattr(torch, "compile"):
        log("torch.compile is not available; running eager")
        state["failed"].append("all")
        return state
    import logging

    # graph breaks (data-dependent mask checks in the layer code) are expected; keep quiet
    logging.getLogger("torch._dynamo").setLevel(logging.ERROR)
    logging.getLogger("torch._inductor").setLevel(logging.ERROR)
    for n in ("forward_pairs", "_encode_part", "score_states"):
        if not hasattr(ex, n):
            continue
        eager = getattr(ex, n)
        setattr(ex, n, _guarded(n, torch.compile(eager), eager, log, state))
        state["compiled"].append(n)
    return state


def _guarded(name: str, compiled: Callable, eager: Callable, log: Callable[[str], None],
             state: dict[str, Any]) -> Callable:
    def call(*args, **kwargs):
        if name in state["failed"]:
            return eager(*args, **kwargs)
        try:
            return compiled(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - backend failures are many
            if _is_oom(e):
                raise
            state["failed"].append(name)
            log(f"torch.compile failed for {name} ({type(e).__name__}: "
                f"{str(e).splitlines()[0] if str(e) else ''}); running it eager")
            return eager(*args, **kwargs)

    return call


# ----------------------------------------------------------------------------- main loop
@dataclass
class Point:
    batch_size: int
    doc_tokens: int
    precompute: bool


def _points(c: LatencyConfig) -> list[Point]:
    pres = [c.precompute] if c.precompute is not None else (
        [False, True] if c.protocol == "paper" else [True])
    return [Point(b, d, p) for d in c.doc_tokens for b in c.batch_sizes for p in pres]


def run_latency(cfg: LatencyConfig, log: Callable[[str], None] = lambda s: None,
                backbone=None) -> dict[str, Any]:
    """Run the benchmark described by ``cfg``; returns the results document (not written)."""
    from .. import results as resultsmod
    from ..backbone import dtype_name, load_backbone
    from ..executors import make_executor

    c = cfg.resolved()
    specs = parse_variants(c.variants)  # unknown names fail before any model is loaded
    device = resolve_device(c.device)
    dtype = check_dtype(c.dtype, device)
    if c.threads is not None:
        torch.set_num_threads(c.threads)
    t_load = time.perf_counter()
    bb = backbone if backbone is not None else load_backbone(c.model, device=device,
                                                              dtype=dtype, seed=c.seed)
    load_s = time.perf_counter() - t_load
    for s in specs:
        try:
            s.validate(bb.num_layers)
        except SpecError as e:
            raise UsageError(f"{e} (model {c.model!r} has {bb.num_layers} layers)") from None
    tok = bb.tokenizer
    if c.protocol == "paper":
        query = PAPER_QUERY
        qlen = token_count(tok, query)
    else:
        qlen = c.query_tokens
        query = make_texts(tok, 1, qlen, seed=c.seed + 7)[0]
    check_sizes(specs, bb.max_positions, qlen, c.doc_tokens, c.protocol)
    dims = flopsmod.ModelDims.of(bb)
    log(f"model {bb.describe()} on {device} ({c.dtype}); measuring the matmul peak")
    peak = flopsmod.matmul_peak(device, dtype)
    log(f"dense matmul peak: {peak['flops_per_s'] / 1e9:.1f} GFLOP/s "
        f"({peak['n']}x{peak['n']} {peak['dtype']})")

    load_before = _loadavg()
    busy = (device.type == "cpu" and load_before is not None
            and load_before[0] > (os.cpu_count() or 1) - 0.5)
    if busy:
        log(f"warning: the machine is busy (load average {load_before[0]:.1f} on "
            f"{os.cpu_count()} cores): other processes inflate CPU timings, small kernels "
            "(query encoding, MICE interaction) far more than large ones; for a fair "
            "comparison rerun on an idle machine or with --threads 1")
    rows: list[dict[str, Any]] = []
    executors: dict[str, Any] = {}
    texts_cache: dict[tuple[int, int], list[str]] = {}
    for pt in _points(c):
        slots: list[Slot] = []
        for spec in specs:
            name = str(spec)
            if c.protocol == "paper" and pt.precompute and spec.layout != "split":
                continue  # like the seed: joint models have nothing to precompute
            if name not in executors:
                ex = make_executor(spec, bb, executor=c.executor,
                                   query_max_tokens=max(qlen, 1))
                if c.compile:
                    ex._mb_compile = compile_executor(ex, log)
                executors[name] = ex
            slot = _setup_slot(c, spec, executors[name], bb, pt, query, texts_cache, device,
                               log)
            if c.schedule == "sequential":
                _time_slots([slot], device, c.runs, c.min_seconds)
                rows.append(_finish_row(c, slot, bb, dims, peak, pt, qlen, log))
                slot.wl.ds = None
            else:
                slots.append(slot)
        if slots:
            _time_slots(slots, device, c.runs, c.min_seconds)
            for slot in slots:
                rows.append(_finish_row(c, slot, bb, dims, peak, pt, qlen, log))
                slot.wl.ds = None
    _add_speedups(rows)
    env = resultsmod.environment(str(device), c.dtype)
    env["threads"] = torch.get_num_threads()
    # other processes competing for the CPU distort CPU timings: keep the evidence
    env["loadavg_before"] = load_before
    env["loadavg_after"] = _loadavg()
    env["cpu_busy_warning"] = bool(busy)
    if device.type == "cuda":
        env["matmul_allow_tf32"] = bool(torch.backends.cuda.matmul.allow_tf32)
        env["sdpa_backends"] = {
            "flash": torch.backends.cuda.flash_sdp_enabled(),
            "mem_efficient": torch.backends.cuda.mem_efficient_sdp_enabled(),
            "math": torch.backends.cuda.math_sdp_enabled(),
        }
    config = asdict(c)
    config["variants"] = [str(s) for s in specs]
    config["query_tokens_effective"] = qlen
    if c.protocol == "paper":
        config["query_text"] = query
    model = {
        "name": c.model,
        "description": bb.describe(),
        "random_weights": bool(bb.random_weights),
        "num_layers": bb.num_layers,
        "hidden_size": bb.hidden_size,
        "num_heads": bb.num_heads,
        "intermediate_size": bb.intermediate_size,
        "max_positions": bb.max_positions,
        "params_total": bb.param_count(None),
        "load_s": load_s,
        "dtype": dtype_name(bb.dtype),
    }
    return resultsmod.envelope("latency", config, env, model=model, matmul_peak=peak,
                               phases=list(PHASES), rows=rows)


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def _doc_len(spec: InteractionSpec, c: LatencyConfig, d: int, qlen: int, max_pos: int) -> int:
    if c.protocol != "paper":
        return d
    return min(d, max_pos - 3 - qlen) if spec.layout == "joint" else min(d, max_pos - 2)


@dataclass
class Slot:
    """One row in the making: its workload, memory probe result and raw timings."""

    spec: InteractionSpec
    ex: Any
    wl: Workload
    batch: int
    halvings: int
    notes: list[str]
    memory: dict[str, Any]
    total: list[float] = field(default_factory=list)
    wall: list[float] = field(default_factory=list)
    phases: dict[str, list[float]] = field(default_factory=lambda: {p: [] for p in PHASES})

    def record(self, total: float, ph: dict[str, float], wall: float) -> None:
        self.total.append(total)
        self.wall.append(wall)
        for p in PHASES:
            self.phases[p].append(ph[p])


def _memory_pass(wl: Workload, device: torch.device, warmup: int,
                 slot_record: Callable[[float, dict, float], None]) -> dict[str, Any]:
    """Warm-up runs under the peak-memory probe (one timed run instead when warmup is 0)."""
    timer = PhaseTimer(device)
    mem = PeakMemory(device)
    mem.start()
    try:
        for _ in range(max(warmup, 1)):
            timer.start()
            wl.run(timer)
            res = timer.stop()
        if warmup == 0:
            slot_record(*res)
    finally:
        memory = mem.stop()
    return memory


def _setup_slot(c: LatencyConfig, spec: InteractionSpec, ex, bb, pt: Point, query: str,
                texts_cache, device, log) -> Slot:
    """Build the workload, precompute documents, warm up under the memory probe.

    Out of memory (GPU) -> halve the batch, say so, and try again.
    """
    name = str(spec)
    batch = pt.batch_size
    notes: list[str] = []
    halvings = 0
    while True:
        n_docs = batch if c.protocol == "paper" else c.depth
        key = (n_docs, pt.doc_tokens)
        if key not in texts_cache:
            texts_cache[key] = make_texts(bb.tokenizer, n_docs, pt.doc_tokens, seed=c.seed)
        docs = texts_cache[key]
        wl = Workload(ex, c.protocol, batch, query, docs, pt.precompute, c.kv_cache)
        pending: list[tuple] = []
        try:
            wl.prepare(device)
            memory = _memory_pass(wl, device, c.warmup, lambda *r: pending.append(r))
            break
        except Exception as e:  # noqa: BLE001 - only OOM is handled, the rest re-raised
            if not _is_oom(e) or batch <= 1:
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
    log(f"{name:>14}  batch {batch}  doc {pt.doc_tokens}: prepared and warmed up")
    slot = Slot(spec, ex, wl, batch, halvings, notes, memory)
    for r in pending:
        slot.record(*r)
    return slot


def _time_slots(slots: list[Slot], device: torch.device, runs: int, min_seconds: float,
                max_runs: int = MAX_RUNS) -> None:
    """Timed runs, round-robin over ``slots`` until each meets ``runs`` and ``min_seconds``.

    Interleaving the variants of one sweep point spreads any change in machine load (other
    processes, thermal state) evenly over them, so their ratios stay fair.
    """
    timer = PhaseTimer(device)
    active = [s for s in slots if not enough(s.total, runs, min_seconds)]
    while active:
        for s in list(active):
            timer.start()
            s.wl.run(timer)
            s.record(*timer.stop())
            if enough(s.total, runs, min_seconds) or len(s.total) >= max_runs:
                active.remove(s)


def _finish_row(c: LatencyConfig, slot: Slot, bb, dims, peak, pt: Point, qlen: int,
                log) -> dict[str, Any]:
    spec, ex, wl, batch, halvings, notes = (slot.spec, slot.ex, slot.wl, slot.batch,
                                            slot.halvings, slot.notes)
    name = str(spec)
    raw = {"total": slot.total, "wall": slot.wall, "phases": slot.phases,
           "memory": slot.memory}
    dlen = _doc_len(spec, c, pt.doc_tokens, qlen, bb.max_positions)
    if dlen != pt.doc_tokens:
        notes.append(f"documents truncated to {dlen} tokens to fit {bb.max_positions} positions "
                     "(as in the seed)")
    ppq = wl.pairs_per_run if c.protocol == "rerank" else 1
    fl = flopsmod.pair_flops(spec, dims, qlen, dlen, precompute=wl.precompute,
                             kv_cache=wl.kv_cache, pairs_per_query=ppq)
    lat = summarize(raw["total"])
    pairs = wl.pairs_per_run
    mean = lat["mean"]
    achieved = fl["per_pair"] * pairs / mean if mean > 0 else float("nan")
    st = getattr(ex, "_mb_compile", None)
    if c.compile and st and st["failed"]:
        notes.append(f"torch.compile failed for {', '.join(st['failed'])}: ran eager")
    if pt.precompute and not wl.split:
        notes.append("no document precompute for this executor (joint/reference): "
                     "documents are encoded inside every run")
    row = {
        "variant": name,
        "description": spec.description(),
        "layout": spec.layout,
        "executor": getattr(ex, "kind", "?"),
        "compiled": bool(c.compile and not getattr(ex, "_mb_compile", {}).get("failed")),
        "point": {
            "batch_size": batch,
            "batch_size_requested": pt.batch_size,
            "doc_tokens": pt.doc_tokens,
            "doc_tokens_effective": dlen,
            "query_tokens": qlen,
            "depth": c.depth if c.protocol == "rerank" else None,
            "precompute": pt.precompute,
            "kv_cache": bool(c.kv_cache),
        },
        "precompute_applied": wl.precompute,
        "kv_cache_applied": wl.kv_cache,
        "oom_halvings": halvings,
        "pairs_per_run": pairs,
        "params": int(bb.param_count(spec)),
        "latency_s": lat,
        "phases_s": {p: summarize(raw["phases"][p]) for p in PHASES},
        "throughput_pairs_per_s": throughput(pairs, mean),
        "memory": raw["memory"],
        "flops": fl,
        "achieved_flops_per_s": achieved,
        "peak_fraction": achieved / peak["flops_per_s"] if peak["flops_per_s"] else None,
        "offline": wl.offline,
        "speedup_vs_ce": None,
        "flop_ratio_vs_ce": None,
        "notes": notes,
        "raw_s": {"total": raw["total"], "wall": raw["wall"], **raw["phases"]},
    }
    log(f"{name:>14}  batch {batch:>4}  doc {pt.doc_tokens:>4}  "
        f"{'pre' if wl.precompute else '   '}  {mean * 1e3:9.2f} ms/run  "
        f"{row['throughput_pairs_per_s']:9.1f} pairs/s  ({lat['count']} runs)")
    return row


def _add_speedups(rows: list[dict[str, Any]]) -> None:
    """Speedup and FLOP ratio against ``ce`` at the same batch size and document length."""
    base: dict[tuple, dict] = {}
    for r in rows:
        if r["variant"] == "ce":
            p = r["point"]
            base.setdefault((p["batch_size_requested"], p["doc_tokens"]), r)
    for r in rows:
        p = r["point"]
        b = base.get((p["batch_size_requested"], p["doc_tokens"]))
        if b is None:
            continue
        # compare time per pair (OOM halving may change pairs per run in the paper protocol)
        ce_pp = b["latency_s"]["mean"] / b["pairs_per_run"]
        me_pp = r["latency_s"]["mean"] / r["pairs_per_run"]
        r["speedup_vs_ce"] = speedup(ce_pp, me_pp)
        f = r["flops"]["per_pair"]
        r["flop_ratio_vs_ce"] = (b["flops"]["per_pair"] / f) if f > 0 else None
        if r["speedup_vs_ce"] is not None and not math.isfinite(r["speedup_vs_ce"]):
            r["speedup_vs_ce"] = None

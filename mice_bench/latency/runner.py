"""``run_latency``: a latency run from a typed :class:`~.config.LatencyConfig` to a typed
:class:`~.result.LatencyResult` (not written; :meth:`LatencyResult.save` writes it).

The parts, in the order of a run: :mod:`.config` (options, protocol defaults, size checks),
:mod:`mice_bench.devices` (device / dtype policy), :mod:`.workloads` (what one run does under
each protocol), :mod:`.scheduler` (warm-up, OOM halving, interleaved timed runs),
:mod:`.compile` (``--compile``), :mod:`.rows` (statistics, throughput, FLOPs, speedups).
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict
from typing import Any, Callable

import torch

from ..backbones.prepack import prepack, unpack
from ..devices import cpu_features, placement
from ..errors import UsageError
from ..spec import SpecError
from . import flops as flopsmod
from . import peers as peersmod
from . import scheduler
from .compile import compile_executor
from .config import LatencyConfig, check_sizes, parse_variants
from .inputs import PAPER_QUERY, make_texts, token_count
from .progress import NoProgress
from .records import OTHER_CPU_BUSY, busy_machine
from .result import LatencyResult, LatencyRowResult
from .rows import add_speedups, make_row
from .workloads import Workload, sweep_points


def run_latency(cfg: LatencyConfig, log: Callable[[str], None] = lambda s: None,
                backbone=None, progress: NoProgress | None = None) -> LatencyResult:
    """Run the benchmark described by ``cfg``; returns the typed result (not written).
    ``progress``: the bar's callbacks (:class:`~.progress.LatencyProgress`); stopped on
    return and on errors."""
    progress = progress if progress is not None else NoProgress()
    packed: list = []           # backbones given prepacked weights (--prepack), undone here
    try:
        return _run_latency(cfg, log, backbone, progress, packed)
    finally:
        for bb in packed:
            unpack(bb)
        progress.stop()


def _run_latency(cfg: LatencyConfig, log: Callable[[str], None], backbone,
                 progress: NoProgress, packed: list) -> LatencyResult:
    from .. import results as resultsmod
    from ..backbone import dtype_from_name, dtype_name, load_backbone
    from ..executors import make_executor

    from ..backbones.precision import compute, weights_dtype

    c = cfg.resolved()
    specs = parse_variants(c.variants)  # unknown names fail before any model is loaded
    places = [placement(c.device, d) for d in c.dtype_list()]
    place = places[0]
    precisions = list(dict.fromkeys(p.dtype for p in places))   # auto resolved, no repeats
    for asked, p in zip(c.dtype_list(), places):
        if asked == "auto":
            log(f"--dtype auto: {p.dtype} ({'the CPU has AMX' if p.dtype == 'bf16' else 'no AMX'}"
                f" on {p.device})")
    device = torch.device(place.device)
    dtype = dtype_from_name(weights_dtype(place.dtype))
    if c.threads is not None:
        torch.set_num_threads(c.threads)
    t_load = time.perf_counter()
    bb = backbone if backbone is not None else load_backbone(c.model, device=device,
                                                              dtype=place.dtype, seed=c.seed)
    load_s = time.perf_counter() - t_load
    # every further precision of --dtype on its own copy of the same weights
    bbs = {precisions[0]: bb}
    for p in precisions[1:]:
        bbs[p] = load_backbone(c.model, device=device, dtype=p, seed=c.seed)
    if c.prepack:               # every row's linear layers, packed once per row count
        packs = prepack(bb)
        packed.append(bb)
        log(f"--prepack: {len(packs)} linear weight matrices packed for MKL")
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
    log(f"model {bb.describe()} on {device} ({', '.join(precisions)}); measuring the matmul "
        "peak")
    shapes = run_shapes(c, dims, qlen)
    peaks = {p: flopsmod.matmul_peak(device, p, shapes=shapes) for p in precisions}
    peak = peaks[precisions[0]]
    for p, pk in peaks.items():
        log(f"dense matmul peak ({p}): {pk['flops_per_s'] / 1e9:.1f} GFLOP/s "
            f"({pk['n']}x{pk['n']}); the run's products: " + ", ".join(
                f"{s['rows']}x{s['k']}x{s['n']} {s['flops_per_s'] / 1e9:.1f}"
                for s in pk.get("shapes", [])))

    load_before = _loadavg()
    busy = (device.type == "cpu" and load_before is not None
            and busy_machine(load_before[0], os.cpu_count() or 1))
    if busy:
        log(f"warning: the machine is busy (load average {load_before[0]:.1f} on "
            f"{os.cpu_count()} cores): other processes inflate CPU timings, small kernels "
            "(query encoding, MICE interaction) far more than large ones; for a fair "
            "comparison rerun on an idle machine or with --threads 1")
    cpu_probe = OtherCpu.start()
    rows: list[LatencyRowResult] = []
    executors: dict[str, Any] = {}
    other_executors: dict[tuple[str, str], Any] = {}    # (variant, precision) past the first
    texts_cache: dict[tuple[int, int], list[str]] = {}

    def docs_for(n_docs: int, doc_tokens: int) -> list[str]:
        if (n_docs, doc_tokens) not in texts_cache:
            texts_cache[(n_docs, doc_tokens)] = make_texts(bb.tokenizer, n_docs, doc_tokens,
                                                           seed=c.seed)
        return texts_cache[(n_docs, doc_tokens)]

    def skipped(spec, pt) -> bool:      # like the seed: joint models have nothing to precompute
        return c.protocol == "paper" and pt.precompute and spec.layout != "split"

    def executor_for(spec, precision=None):
        name = str(spec)
        if precision not in (None, precisions[0]):
            if (name, precision) not in other_executors:
                other_executors[(name, precision)] = make_executor(
                    spec, bbs[precision], executor=c.executor, query_max_tokens=max(qlen, 1))
            return other_executors[(name, precision)]
        if name not in executors:
            ex = make_executor(spec, bb, executor=c.executor, query_max_tokens=max(qlen, 1))
            if c.compile:
                ex = compile_executor(ex, log)
            if c.runtime == "ort":       # the run's own rows: the ONNX export, onnxruntime
                from ..export.onnx import ort_executor

                ex = ort_executor(ex, log)
            executors[name] = ex
        return executors[name]

    peers, peers_skipped = [], []
    if c.peers:
        for spec in specs:
            executor_for(spec)
        peers, peers_skipped = peersmod.build_peers(c.peers, c, bb, dict(executors), device,
                                                    dtype, log)
    points = sweep_points(c)
    progress.start(sum(not skipped(s, pt) for pt in points
                       for s in [*specs, *(p.spec for p in peers)]))

    def on_run(slot: scheduler.Slot) -> None:
        # a row is done when it has both --runs runs and --min-seconds seconds
        n, secs = len(slot.total), sum(slot.total)
        frac = min(n / max(c.runs, 1), secs / c.min_seconds if c.min_seconds > 0 else 1.0)
        progress.run_done(slot.label or str(slot.spec), n, frac)

    peer_of: dict[int, peersmod.Peer] = {}

    precision_of: dict[int, str] = {}

    def finish(slot: scheduler.Slot, pt) -> None:
        prec = precision_of.get(id(slot), precisions[0])
        row = make_row(c, slot, bbs.get(prec, bb), dims, peaks.get(prec, peak), pt, qlen, log)
        row.dtype = prec
        if id(slot) in peer_of:
            peersmod.label_row(row, peer_of[id(slot)])
            row.dtype = peer_of[id(slot)].dtype
            pk = peaks.get(row.dtype)
            row.peak_fraction = (row.achieved_flops_per_s / pk["flops_per_s"]
                                 if pk and pk["flops_per_s"] and row.achieved_flops_per_s
                                 else None)
        rows.append(row)
        slot.wl.ds = None
        progress.row_done(slot.label or str(slot.spec))

    for pt in points:
        slots: list[scheduler.Slot] = []
        # a store read at several pool factors: one row per factor, timed in the same round
        pools = c.pool_factors if c.doc_store is not None else [1]
        entries = [(spec, prec, None, pf) for prec in precisions for spec in specs
                   for pf in (pools if spec.layout == "split" else [1])] + \
            [(p.spec, None, p, 1) for p in peers]
        for spec, prec, peer, pf in entries:
            if skipped(spec, pt):
                continue
            name = (str(spec) if prec == precisions[0] else f"{spec} [{prec}]") \
                if peer is None else peer.label
            if len(pools) > 1 and spec.layout == "split" and peer is None:
                name = f"{name} pool{pf}"
            ex = executor_for(spec, prec) if peer is None else peer.ex

            def make_workload(batch: int, ex=ex, pt=pt, peer=peer, prec=prec, pf=pf):
                docs = docs_for(batch if c.protocol == "paper" else c.depth, pt.doc_tokens)
                if peer is not None:
                    return peer.workload(batch, query, docs, pt)
                return Workload(ex, c.protocol, batch, query, docs, pt.precompute, c.kv_cache,
                                doc_vectors=c.doc_vectors, doc_store=c.doc_store,
                                seed=c.seed, compute=lambda: compute(bbs[prec]),
                                pool_factor=pf)

            progress.stage(name, "warm-up")
            slot = scheduler.prepare_slot(spec, ex, pt.batch_size, make_workload, device,
                                          c.warmup, log, pt.doc_tokens)
            slot.label = name
            if peer is not None:
                peer_of[id(slot)] = peer
            else:
                precision_of[id(slot)] = prec
            if c.schedule == "sequential":
                scheduler.time_slots([slot], device, c.runs, c.min_seconds, on_run=on_run)
                finish(slot, pt)
            else:
                slots.append(slot)
        if slots:
            scheduler.time_slots(slots, device, c.runs, c.min_seconds, on_run=on_run)
            for slot in slots:
                finish(slot, pt)
    add_speedups(rows, runtime=c.runtime)
    peersmod.add_fastest_ce(rows)
    env = resultsmod.environment(place.device, precisions[0])
    if len(precisions) > 1:
        env["dtypes"] = precisions
    if c.dtype_list() != precisions[:len(c.dtype_list())] or "auto" in c.dtype_list():
        env["dtype_requested"] = c.dtype
    env["precision_kinds"] = {p: precision_kind(p) for p in precisions}
    if device.type == "cpu":
        env["cpu_features"] = cpu_features()
    env["threads"] = torch.get_num_threads()
    # other processes competing for the CPU distort CPU timings: keep the evidence
    env["loadavg_before"] = load_before
    env["loadavg_after"] = _loadavg()
    other = cpu_probe.stop()
    if other is not None:      # measured: what other processes used while this one ran
        env["other_cpu_cores"] = round(other, 3)
        busy = device.type == "cpu" and other > OTHER_CPU_BUSY
        if busy:
            log(f"warning: other processes used {other:.2f} cores during the measurement; "
                "its CPU timings are pessimistic (recorded as a busy-machine run)")
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
    if c.peers:
        config["peers_skipped"] = peers_skipped
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
        "precision": precisions[0],
        # per variant: the effective lengths / pooling / markers and where each came from
        "settings": {name: ex.settings() for name, ex in executors.items()},
    }
    return LatencyResult.new(config, env, model, peak, rows)


def precision_kind(name: str) -> str:
    """How a precision runs (recorded per run: which bf16 was measured)."""
    return {"fp32": "fp32 weights and compute",
            "bf16": "weights cast to bf16: every operation in bf16",
            "bf16-autocast": "fp32 weights under torch.autocast(bfloat16): products in bf16, "
                             "norms and softmax in fp32",
            "int8": "torch.ao.quantization.quantize_dynamic of the linear layers (int8 "
                    "weights, activations quantized per call); attention and norms in fp32",
            "fp16": "weights cast to fp16"}.get(name, name)


def run_shapes(c, dims, qlen: int) -> list[tuple[int, int, int]]:
    """The linear products a run makes, as (rows, k, n): a cross-encoder batch's and a query's
    feed-forward up-projection (at most 8,192 rows), at the first sweep point, and a query's
    attention projection."""
    B, d = int(c.batch_sizes[0]), int(c.doc_tokens[0])
    H, inter = dims.hidden_size, dims.intermediate_size
    return [(min(B * (qlen + d + 3), 8192), H, inter), (qlen + 2, H, inter), (qlen + 2, H, H)]


class OtherCpu:
    """CPU time other processes use while this one runs, in cores' worth (Linux ``/proc``):
    the whole machine's busy jiffies minus this process's (all its threads), over the wall
    time. Unlike the load average it neither remembers the previous minute nor counts this
    process's own threads. ``stop()`` is None where ``/proc`` cannot be read."""

    def __init__(self, sample):
        self.t0, self.sample = time.perf_counter(), sample

    @classmethod
    def start(cls) -> "OtherCpu":
        return cls(_cpu_jiffies())

    def stop(self) -> float | None:
        end, wall = _cpu_jiffies(), time.perf_counter() - self.t0
        if self.sample is None or end is None or wall <= 0:
            return None
        hz = os.sysconf("SC_CLK_TCK")
        busy = (end[0] - self.sample[0]) - (end[1] - self.sample[1])
        return max(busy / hz / wall, 0.0)


def _cpu_jiffies() -> tuple[int, int] | None:
    """(busy jiffies of all CPUs, jiffies of this process) from /proc/stat and
    /proc/self/stat; None elsewhere."""
    try:
        with open("/proc/stat") as f:
            parts = [int(x) for x in f.readline().split()[1:]]
        idle = parts[3] + (parts[4] if len(parts) > 4 else 0)      # idle + iowait
        total = sum(parts[:8])                                      # without guest time
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        own = int(fields[11]) + int(fields[12])                     # utime + stime
        return total - idle, own
    except (OSError, ValueError, IndexError):
        return None


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (OSError, AttributeError):
        return None

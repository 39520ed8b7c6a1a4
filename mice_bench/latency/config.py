"""The typed configuration of a latency run, its protocol defaults and its checks."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from ..devices import DTYPES, resolve_device
from ..errors import UsageError
from ..options import option
from ..spec import InteractionSpec, parse, split_names

PROTOCOLS = ("rerank", "paper")
SCHEDULES = ("interleaved", "sequential")
DEFAULT_VARIANTS = ("ce", "mice-l4+3", "colbert")
PROTOCOL_DEFAULTS: dict[str, dict[str, Any]] = {
    # sized so that the default command finishes well under 2 minutes on 2 CPU cores
    "rerank": dict(batch_sizes=[16], query_tokens=32, doc_tokens=[128], depth=32, warmup=1,
                   runs=5, min_seconds=1.0),
    # the seed's protocol: 128 pairs x 512-token documents, 5 warm-up + 10 timed runs
    "paper": dict(batch_sizes=[128], query_tokens=None, doc_tokens=[512], depth=None, warmup=5,
                  runs=10, min_seconds=0.0),
}
#: the most timed runs of one row, whatever ``min_seconds`` asks
MAX_RUNS = 10_000
#: upper bounds of the size options: beyond them a run cannot finish in any useful time (and
#: its inputs would not fit any machine's memory); refused before any work
LIMITS = {"--batch-size": 65_536, "--doc-tokens": 1_000_000, "--query-tokens": 1_000_000,
          "--depth": 100_000, "--warmup": 1_000, "--runs": MAX_RUNS, "--threads": 4_096}
#: the most timed seconds a row may ask for (one hour)
MAX_MIN_SECONDS = 3600.0
#: --runtime: mice-bench's own executors, or their ONNX export under onnxruntime
TORCH = "torch"
RUNTIMES = (TORCH, "ort")
#: --peers: other implementations timed beside mice-bench's (see :mod:`.peers`)
PEERS = ("hf", "hf-bf16", "st", "st-onnx", "st-onnx-int8", "st-openvino", "st-openvino-int8",
         "ort", "ort-int8")
#: the peers that run mice-bench's own ONNX export
PEERS_ORT = {"ort", "ort-int8"}


def parse_peers(text: str | list[str] | None) -> list[str]:
    """Peer names in order, without repeats; raises :class:`UsageError` for unknown ones."""
    if not text:
        return []
    names = text if isinstance(text, list) else str(text).replace(" ", "").split(",")
    out = []
    for n in names:
        if not n:
            continue
        if n not in PEERS:
            raise UsageError(f"unknown peer {n!r}; valid: {', '.join(PEERS)}")
        if n not in out:
            out.append(n)
    return out


#: the groups of ``mice-bench latency --help``, in order
PANELS = WORKLOAD, MODEL, MEASURE, OUTPUT = "Workload", "Model and runtime", "Timing", "Output"


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a whole number (N or N,N,...)") from None


@dataclass
class LatencyConfig:
    """Every option of ``mice-bench latency``, declared once (:mod:`mice_bench.options`;
    lists are lists: the command line parses ``4,8``)."""

    model: str = option(
        "minilm-l12", panel=MODEL,
        help="an architecture with random weights: minilm-l12 | minilm-l6 (BERT), "
             "electra-base, roberta-base, modernbert-base, ettin-17m | ettin-32m | ettin-68m | "
             "ettin-150m (ModernBERT); a HF id or a local path")
    variants: list[str] = option(
        default_factory=lambda: list(DEFAULT_VARIANTS), spelling="list", split=split_names,
        cli_default=None, panel=WORKLOAD,
        help="comma-separated variant names (default: the variant stored in a mice-bench "
             "checkpoint, else ce,mice-l4+3,colbert fitted to the model's depth)")
    protocol: str = option("rerank", choices=PROTOCOLS, panel=WORKLOAD, help="rerank | paper")
    batch_sizes: list[int] | None = option(
        None, flag="--batch-size", spelling="list", parse=_int, panel=WORKLOAD,
        help="N or N,N,... (sweep); default rerank 16, paper 128")
    query_tokens: int | None = option(
        None, panel=WORKLOAD, help="query length in tokens (rerank; default 32)")
    doc_tokens: list[int] | None = option(
        None, spelling="list", parse=_int, panel=WORKLOAD,
        help="N or N,N,... (sweep); default rerank 128, paper 512")
    depth: int | None = option(None, panel=WORKLOAD,
                               help="candidates per query (rerank; default 32)")
    # None: protocol default (rerank: True; paper: both)
    precompute: bool | None = option(
        None, spelling="switch", panel=WORKLOAD,
        help="documents encoded before timing (rerank default: on; paper: both)")
    kv_cache: bool = option(False, spelling="switch", panel=WORKLOAD,
                            help="also precompute per-layer document K/V")
    # late interaction (colbert) / a bi-encoder with precomputed documents: store the head's
    # vectors (a ColBERT index; one pooled, normalised vector) instead of last-layer states;
    # the document projection / pooling is then offline work, as in effectiveness
    doc_vectors: bool = option(
        True, spelling="switch", panel=WORKLOAD,
        help="colbert / biencoder with precomputed documents: store the head's vectors "
             "(colbert: projected unit vectors, a ColBERT index; biencoder: one pooled, "
             "normalised vector; default) or the last-layer states (projected / pooled online)")
    # precomputed documents read from a compressed store (mice_bench/store/codecs.py): decoded
    # inside every timed run, a batch at a time; None: the states as encoded, in memory
    doc_store: str | None = option(
        None, panel=WORKLOAD,
        help="precomputed documents read from a compressed store, decoded inside every timed "
             "run: fp32 | fp16 | int8 | residual1 | residual2 | residual4 (default: in memory "
             "as encoded)")
    pool_factors: list[int] = option(
        default_factory=lambda: [1], flag="--pool-factor", spelling="list", parse=_int,
        panel=WORKLOAD,
        help="with --doc-store: each document's stored tokens pooled to about 1/N "
             "(comma-separated: one row per factor, timed in the same interleaved run), 1: none")
    dtype: str = option("fp32", panel=MODEL,
                        help="fp32 | bf16 | bf16-autocast | int8 | fp16 | auto, or a "
                             "comma-separated list timed in the same interleaved run")
    device: str = option("auto", panel=MODEL, help="auto | cpu | cuda")
    compile: bool = option(False, spelling="flag", panel=MODEL,
                           help="torch.compile the executors")
    # every row's linear layers on MKL-prepacked weights (fp32 CPU; backbones/prepack.py)
    prepack: bool = option(
        False, spelling="flag", panel=MODEL,
        help="every row's linear layers on weights packed once for MKL (fp32 CPU; same "
             "scores) instead of packed on every call")
    warmup: int | None = option(None, panel=MEASURE, help="warm-up runs (rerank 1, paper 5)")
    runs: int | None = option(None, panel=MEASURE,
                              help="minimum timed runs (rerank 5, paper 10)")
    min_seconds: float | None = option(None, panel=MEASURE,
                                       help="minimum timed seconds (rerank 1, paper 0)")
    threads: int | None = option(None, panel=MEASURE, help="torch CPU threads")
    executor: str = option("auto", panel=MODEL, help="auto | fast | reference: force the "
                           "executor (default: the fast path where the variant has one)")
    # interleaved | sequential (timed runs of a sweep point)
    schedule: str = option("interleaved", hidden=True, study=False)
    # torch: mice-bench's executors; ort: their ONNX export under onnxruntime (mice_bench.export)
    runtime: str = option(
        "torch", choices=RUNTIMES, panel=MODEL,
        help="torch (mice-bench's executors) | ort (their ONNX export under onnxruntime; pip "
             "install 'mice-bench[onnx]')")
    # peer runtimes timed in the same run (hf, st, st-onnx, ort: latency/peers.py)
    peers: list[str] = option(
        default_factory=list, spelling="list", panel=MODEL,
        help="peer runtimes timed in the same run, comma-separated: hf (transformers eager), "
             "st (sentence-transformers CrossEncoder), st-onnx (its ONNX backend), ort "
             "(mice-bench's ONNX export); pip install 'mice-bench[peers]'")
    seed: int = 0
    output: str | None = option(
        None, study=False, panel=OUTPUT,
        help="results JSON (default ./mice-bench-results/latency/latency-*.json, or under "
             "$MICE_BENCH_RESULTS)")
    format: str = option("table", choices=("table", "json"), study=False, panel=OUTPUT,
                         help="table | json")

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
            if not vals or any(_not_int(v) or int(v) < 1 for v in vals):
                raise UsageError(f"{name} needs positive integers, got {vals!r}")
            _at_most(name, max(int(v) for v in vals))
        if c.protocol == "rerank":
            if _not_int(c.query_tokens) or c.query_tokens < 1:
                raise UsageError(f"--query-tokens must be a whole number >= 1, got "
                                 f"{c.query_tokens!r}")
            if _not_int(c.depth) or c.depth < 1:
                raise UsageError(f"--depth must be a whole number >= 1, got {c.depth!r}")
            _at_most("--query-tokens", c.query_tokens)
            _at_most("--depth", c.depth)
        if _not_int(c.warmup) or c.warmup < 0:
            raise UsageError(f"--warmup must be a whole number >= 0, got {c.warmup!r}")
        if _not_int(c.runs) or c.runs < 1:
            raise UsageError(f"--runs must be a whole number >= 1, got {c.runs!r}")
        _at_most("--warmup", c.warmup)
        _at_most("--runs", c.runs)
        try:
            ms = float(c.min_seconds)
        except (TypeError, ValueError):
            ms = float("nan")
        if isinstance(c.min_seconds, bool) or not math.isfinite(ms) or ms < 0 or \
                ms > MAX_MIN_SECONDS:
            raise UsageError(f"--min-seconds must be a finite number of seconds from 0 to "
                             f"{MAX_MIN_SECONDS:g}, got {c.min_seconds!r}")
        if c.threads is not None:
            if _not_int(c.threads) or c.threads < 1:
                raise UsageError(f"--threads must be a whole number >= 1, got {c.threads!r}")
            _at_most("--threads", c.threads)
        if c.kv_cache and c.precompute is False:
            raise UsageError("--kv-cache stores per-layer K/V of precomputed documents; it "
                             "needs --precompute")
        if c.doc_store is not None:
            from ..store.codecs import CODEC_NAMES, unavailable

            if c.doc_store not in CODEC_NAMES:
                raise UsageError(f"unknown --doc-store {c.doc_store!r}; valid: "
                                 f"{', '.join(CODEC_NAMES)}")
            if unavailable(c.doc_store):
                raise UsageError(unavailable(c.doc_store))
            if c.precompute is False or c.kv_cache:
                raise UsageError("--doc-store reads precomputed document states (not per-layer "
                                 "K/V); it needs --precompute and no --kv-cache")
        for name in c.dtype_list():
            if name not in DTYPES:
                raise UsageError(f"unknown dtype {name!r} in --dtype {c.dtype}; valid: "
                                 f"{', '.join(DTYPES)} (a comma-separated list times each "
                                 "in the same interleaved run)")
        if not c.pool_factors or any(_not_int(p) or p < 1 for p in c.pool_factors):
            raise UsageError(f"--pool-factor must be whole numbers >= 1 (comma-separated), "
                             f"got {c.pool_factors!r}")
        if c.pool_factors != [1] and c.doc_store is None:
            raise UsageError("--pool-factor pools the tokens a document store keeps; it needs "
                             "--doc-store (fp32 | fp16 | int8 | residual1 | residual2 | "
                             "residual4)")
        if c.runtime not in RUNTIMES:
            raise UsageError(f"unknown runtime {c.runtime!r}; valid: {', '.join(RUNTIMES)}")
        c.peers = parse_peers(c.peers)
        if c.runtime == "ort":
            import importlib.util

            if importlib.util.find_spec("onnxruntime") is None:
                raise UsageError("--runtime ort needs onnxruntime: pip install "
                                 "'mice-bench[onnx]'")
        if (c.runtime == "ort" and c.dtype != "fp32") or \
                ((c.runtime == "ort" or PEERS_ORT & set(c.peers)) and c.compile):
            raise UsageError("the ONNX export runs eager (fp32, or int8 as the ort-int8 peer): "
                             "--runtime ort takes neither --compile nor another --dtype, "
                             "--peers ort / ort-int8 not --compile")
        if c.runtime == "ort" and (c.kv_cache or c.doc_store is not None):
            raise UsageError("--runtime ort stores what the exported documents graph returns: "
                             "it takes neither --kv-cache nor --doc-store")
        if c.prepack:
            check_prepack(c)
        if c.schedule not in SCHEDULES:
            raise UsageError(f"unknown schedule {c.schedule!r}; valid: {', '.join(SCHEDULES)}")
        if c.format not in ("table", "json"):
            raise UsageError(f"unknown format {c.format!r}; valid: table, json")
        return c

    def dtype_list(self) -> list[str]:
        """The precisions of ``--dtype`` in order (``fp32,bf16,int8``: each row measured in
        each, in the same interleaved run; the first is the run's own)."""
        out: list[str] = []
        for name in str(self.dtype).split(","):
            if name.strip() and name.strip() not in out:
                out.append(name.strip())
        return out or ["fp32"]

    def device_type(self) -> str:
        """``cpu`` / ``cuda`` of ``device`` (``auto`` resolved here; checks availability)."""
        return resolve_device(self.device).split(":")[0]


def check_prepack(c: "LatencyConfig") -> None:
    """``--prepack`` packs the fp32 CPU weights of mice-bench's own executors, for every row:
    refused where some row would run without it (or where this PyTorch cannot pack)."""
    from ..backbones.prepack import available

    clash = [o for o, on in (("--compile", c.compile), ("--runtime ort", c.runtime != TORCH),
                             ("--peers", bool(c.peers)), (f"--dtype {c.dtype}", c.dtype_list() != ["fp32"]),
                             ("a CUDA device", c.device_type() != "cpu")) if on]
    if clash:
        raise UsageError(f"--prepack packs the fp32 CPU weights of mice-bench's own executors "
                         f"for every row; it does not combine with {', '.join(clash)} (rows "
                         "that would run without it): drop one or the other")
    why = available()
    if why is not None:
        raise UsageError(why)


def _not_int(v) -> bool:
    return isinstance(v, bool) or not isinstance(v, int)


def _at_most(option: str, value: int) -> None:
    if value > LIMITS[option]:
        raise UsageError(f"{option} {value} is above the largest this benchmark runs "
                         f"({LIMITS[option]:,}); valid: at most {LIMITS[option]:,}")


def parse_variants(names: list[str]) -> list[InteractionSpec]:
    """Specs in the given order, duplicates (same canonical name) dropped."""
    out, seen = [], set()
    for n in names:
        spec = parse(n)
        if str(spec) not in seen:
            seen.add(str(spec))
            out.append(spec)
    return out


def check_sizes(specs: list[InteractionSpec], max_positions: int, query_tokens: int,
                doc_tokens: list[int], protocol: str) -> None:
    """Every (variant, document length) must fit the model's positions."""
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

"""The typed latency result: the writer and the reader, and the upgraders of old versions.

``mice-bench latency`` builds a :class:`LatencyResult` (:func:`mice_bench.latency.runner.
run_latency`) and :meth:`saves <LatencyResult.save>` it (checked against
:data:`mice_bench.latency.schema.LATENCY_SCHEMA` first); ``mice-bench report`` and
``mice-bench run`` :meth:`load <LatencyResult.load>` it with the same class. Older
``schema_version``\\ s go through :func:`mice_bench.results.load_result` and its upgrader
chain:

* ``latency`` 1 -> 2 (the step :mod:`mice_bench.legacy` registers): rows of variants whose
  meaning changed since are renamed to what they measured (``colbert`` ->
  ``colbert[proj=0,qaug=0]``, ``mice-l4+3`` -> ``mice-l4+3[attn=joint]``,
  ``mice-l4+3-cross`` -> ``mice-l4+3[order=self]``) and noted (also the old ``prettr``);
  ``config.variants`` is renamed alike. The report marks such rows with ``†``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..results import ResultFileError, atomic_write_json, envelope, load_result, parse_fields
from .timing import PHASES

KIND = "latency"


@dataclass
class RowPoint:
    """Where a row was measured (``batch_size`` after any OOM halving)."""

    batch_size: int
    batch_size_requested: int
    doc_tokens: int
    doc_tokens_effective: int
    query_tokens: int
    depth: int | None
    precompute: bool
    kv_cache: bool


@dataclass
class LatencyRowResult:
    """One variant at one sweep point (fields: ``docs/latency.md``, *Results file*)."""

    variant: str
    point: RowPoint
    latency_s: dict[str, float]                  # mean, std, p50, p90, p99, min, max, count
    pairs_per_run: int
    throughput_pairs_per_s: float
    description: str = ""
    layout: str = "?"
    executor: str = "?"
    compiled: bool = False
    precompute_applied: bool = False
    kv_cache_applied: bool = False
    oom_halvings: int = 0
    params: int = 0
    phases_s: dict[str, dict[str, float]] = field(default_factory=dict)
    memory: dict[str, Any] = field(default_factory=dict)
    flops: dict[str, Any] = field(default_factory=dict)
    achieved_flops_per_s: float | None = None
    peak_fraction: float | None = None
    offline: dict[str, Any] = field(default_factory=dict)
    speedup_vs_ce: float | None = None
    flop_ratio_vs_ce: float | None = None
    notes: list[str] = field(default_factory=list)
    raw_s: dict[str, list[float]] = field(default_factory=dict)
    #: what ran the row: ``torch`` (mice-bench's executors), ``ort`` (its ONNX export under
    #: onnxruntime) or a peer (``hf``, ``st``, ``st-onnx``: :mod:`.peers`)
    runtime: str = "torch"
    #: where tokenization happens (every row: inside the timed run)
    tokenization: str = ""
    #: against the fastest ``ce`` row of the same point, whatever its runtime (and which)
    speedup_vs_fastest_ce: float | None = None
    fastest_ce: str | None = None
    #: ``--prepack``: the share of the row's linear calls that ran on prepacked weights
    #: (None: not asked)
    prepacked: float | None = None
    #: the row's precision (``fp32``, ``bf16``, ``bf16-autocast``, ``int8``, ``fp16``; None:
    #: the run's ``environment.dtype``, as in files made before rows had their own)
    dtype: str | None = None
    #: ``best_vs_best``: the fastest cross-encoder row of the point (any runtime, any dtype)
    #: against this variant's fastest row (any runtime, any dtype), per pair, on every row of
    #: the variant; ``variant_best``: this row is that fastest row
    best_vs_best: float | None = None
    variant_best: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"variant": self.variant, "description": self.description,
                "layout": self.layout, "executor": self.executor, "compiled": self.compiled,
                "point": asdict(self.point), "precompute_applied": self.precompute_applied,
                "kv_cache_applied": self.kv_cache_applied, "oom_halvings": self.oom_halvings,
                "pairs_per_run": self.pairs_per_run, "params": self.params,
                "latency_s": dict(self.latency_s), "phases_s": dict(self.phases_s),
                "throughput_pairs_per_s": self.throughput_pairs_per_s,
                "memory": dict(self.memory), "flops": dict(self.flops),
                "achieved_flops_per_s": self.achieved_flops_per_s,
                "peak_fraction": self.peak_fraction, "offline": dict(self.offline),
                "speedup_vs_ce": self.speedup_vs_ce, "flop_ratio_vs_ce": self.flop_ratio_vs_ce,
                "notes": list(self.notes), "raw_s": dict(self.raw_s),
                "runtime": self.runtime, "tokenization": self.tokenization,
                "speedup_vs_fastest_ce": self.speedup_vs_fastest_ce,
                "fastest_ce": self.fastest_ce, "prepacked": self.prepacked,
                "dtype": self.dtype, "best_vs_best": self.best_vs_best,
                "variant_best": self.variant_best}

    @classmethod
    def from_dict(cls, r: dict[str, Any]) -> "LatencyRowResult":
        """Required: variant, point.batch_size, point.doc_tokens, latency_s.mean; the fields
        that later versions added are read with their defaults."""
        p = r["point"]
        lat = dict(r["latency_s"])
        float(lat["mean"])
        bs = int(p["batch_size"])
        pairs = int(r.get("pairs_per_run", bs))
        pre = bool(p.get("precompute", r.get("precompute_applied", False)))
        point = RowPoint(batch_size=bs, batch_size_requested=int(p.get("batch_size_requested", bs)),
                         doc_tokens=int(p["doc_tokens"]),
                         doc_tokens_effective=int(p.get("doc_tokens_effective", p["doc_tokens"])),
                         query_tokens=int(p.get("query_tokens") or 0), depth=p.get("depth"),
                         precompute=pre, kv_cache=bool(p.get("kv_cache", False)))
        thr = r.get("throughput_pairs_per_s")
        return cls(
            variant=str(r["variant"]), point=point, latency_s=lat, pairs_per_run=pairs,
            throughput_pairs_per_s=float(thr) if thr is not None else pairs / float(lat["mean"]),
            description=str(r.get("description", "")), layout=str(r.get("layout", "?")),
            executor=str(r.get("executor", "?")), compiled=bool(r.get("compiled", False)),
            precompute_applied=bool(r.get("precompute_applied", pre)),
            kv_cache_applied=bool(r.get("kv_cache_applied", False)),
            oom_halvings=int(r.get("oom_halvings", 0)), params=int(r.get("params", 0)),
            phases_s=dict(r.get("phases_s") or {}), memory=dict(r.get("memory") or {}),
            flops=dict(r.get("flops") or {}), achieved_flops_per_s=r.get("achieved_flops_per_s"),
            peak_fraction=r.get("peak_fraction"), offline=dict(r.get("offline") or {}),
            speedup_vs_ce=r.get("speedup_vs_ce"), flop_ratio_vs_ce=r.get("flop_ratio_vs_ce"),
            notes=[str(n) for n in r.get("notes", ())], raw_s=dict(r.get("raw_s") or {}),
            runtime=str(r.get("runtime", "torch")), tokenization=str(r.get("tokenization", "")),
            speedup_vs_fastest_ce=r.get("speedup_vs_fastest_ce"),
            fastest_ce=r.get("fastest_ce"), prepacked=r.get("prepacked"),
            dtype=r.get("dtype"), best_vs_best=r.get("best_vs_best"),
            variant_best=bool(r.get("variant_best", False)))


@dataclass
class LatencyResult:
    """One ``mice-bench latency`` run: configuration, environment, model and rows."""

    config: dict[str, Any]
    environment: dict[str, Any]
    model: dict[str, Any]
    matmul_peak: dict[str, Any]
    rows: list[LatencyRowResult]
    phases: list[str] = field(default_factory=lambda: list(PHASES))
    created: str = ""
    git_commit: str | None = None
    mice_bench_version: str = ""

    def to_doc(self) -> dict[str, Any]:
        """The results document (envelope + payload) of this result."""
        from ..results import schema_version

        return {"schema": f"mice-bench/{KIND}", "schema_version": schema_version(KIND),
                "mice_bench_version": self.mice_bench_version, "git_commit": self.git_commit,
                "created": self.created, "environment": dict(self.environment),
                "config": dict(self.config), "model": dict(self.model),
                "matmul_peak": dict(self.matmul_peak), "phases": list(self.phases),
                "rows": [r.to_dict() for r in self.rows]}

    @classmethod
    def new(cls, config: dict, environment: dict, model: dict, matmul_peak: dict,
            rows: list[LatencyRowResult]) -> "LatencyResult":
        """A fresh result stamped now (``created``, ``git_commit``, version)."""
        env = envelope(KIND, config, environment)
        return cls(config=config, environment=environment, model=model,
                   matmul_peak=matmul_peak, rows=rows, created=env["created"],
                   git_commit=env["git_commit"], mice_bench_version=env["mice_bench_version"])

    def save(self, path: str | Path) -> Path:
        """Check the document against the schema, then write it atomically."""
        from .schema import check

        doc = self.to_doc()
        check(doc)
        return atomic_write_json(path, doc)

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> "LatencyResult":
        for k in ("config", "environment", "rows"):
            if k not in doc:
                raise ResultFileError(f"latency results file lacks {k!r}")
        if not isinstance(doc["rows"], list):
            raise ResultFileError("latency results file: 'rows' must be a list")
        return cls(config=dict(doc["config"]), environment=dict(doc["environment"]),
                   model=dict(doc.get("model") or {}),
                   matmul_peak=dict(doc.get("matmul_peak") or {}),
                   rows=[LatencyRowResult.from_dict(r) for r in doc["rows"]],
                   phases=list(doc.get("phases") or PHASES),
                   created=str(doc.get("created", "")), git_commit=doc.get("git_commit"),
                   mice_bench_version=str(doc.get("mice_bench_version", "")))

    @classmethod
    def load(cls, path: str | Path) -> "LatencyResult":
        """Read (and upgrade) a latency results file and check it against the schema the
        writer checks (:mod:`.schema`); errors name the file and the field."""
        from .schema import first_problem

        data = load_result(path, KIND)
        bad = first_problem(data)
        if bad is not None:
            raise ResultFileError(f"{path}: {bad}")

        def parse() -> "LatencyResult":
            try:
                return cls.from_doc(data)
            except ResultFileError as e:
                raise ResultFileError(f"{path}: {e}") from None

        return parse_fields(path, KIND, parse)

"""``mice-bench effectiveness``: the whole evaluation, from options to result files.

Order of work: validate every option and load every dataset first (fail fast, exit 2), run
the first stages (and write the ``bm25`` rows), then for each model (seed): load it once and
score every (dataset, variant), writing one JSON + one TREC run per (model, variant, dataset).
Finally the summary (mean/std over seeds, significance vs the baseline, corrected).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from ..errors import UsageError
from ..results import cache_dir, default_results_dir, environment
from .cache import slug
from .datasets import Collection, DatasetInfo, load_collection, resolve_datasets
from .firststage import FirstStage, Run, run_first_stage, write_trec_run
from .result import EffectivenessResult
from .metrics import (DEFAULT_MEASURES, aggregate, check_depth, measure_names,
                      measures_beyond_depth, parse_measures, per_query)
from .progress import Reporter
from .safeio import warn
from .stats import CORRECTIONS, TESTS
from .table import write_summary
from .summary import (EffectivenessSummary, SummaryDataset, SummarySettings, default_baseline,
                      summarize)

BM25 = "bm25"


def default_cache_dir() -> Path:
    """The effectiveness command's caches (:func:`mice_bench.results.cache_dir`)."""
    return cache_dir("effectiveness")


@dataclass(frozen=True)
class ModelRef:
    """A model to evaluate: a Hugging Face id, a local directory or an architecture name
    (random weights), and the label that names it in result paths and tables (derived from
    the name when ``None``: :func:`model_labels`)."""

    name: str
    label: str | None = None

    @classmethod
    def parse(cls, text: str) -> "ModelRef":
        """The CLI's ``--model`` value: ``PATH`` or ``LABEL=PATH``.

        >>> ModelRef.parse("s1=minilm-l6"), ModelRef.parse("org/model")
        (ModelRef(name='minilm-l6', label='s1'), ModelRef(name='org/model', label=None))
        """
        if "=" in text and "/" not in text.split("=", 1)[0] and not Path(text).exists():
            label, name = text.split("=", 1)
            return cls(name, label)
        return cls(text)


_LISTS = ("datasets", "variants", "measures")


@dataclass
class EffectivenessConfig:
    """Every option of the command, typed (see ``docs/effectiveness.md``). Lists are lists:
    the comma-separated and ``DATASET=SPEC`` spellings of the command line are parsed by the
    CLI (:func:`mice_bench.effectiveness.cli.config_from_options`), not here."""

    datasets: list[str] = field(default_factory=lambda: ["scifact"])  # names, groups, irds:ID
    models: list[ModelRef] = field(default_factory=list)
    variants: list[str] = field(default_factory=lambda: [BM25])
    first_stage: str = BM25                  # bm25 | run:PATH | full, for every dataset
    first_stage_for: dict[str, str] = field(default_factory=dict)   # dataset -> override
    docs: str | None = None                  # JSONL of document texts ({dataset} expanded)
    docs_for: dict[str, str] = field(default_factory=dict)          # dataset -> override
    depth: int = 100
    measures: list[str] = field(default_factory=lambda: list(DEFAULT_MEASURES))
    baseline: str | None = None
    test: str = "ttest"
    correction: str = "holm"
    alpha: float = 0.05
    batch_size: int = 32
    doc_batch_size: int = 64
    dtype: str = "fp32"
    device: str = "cpu"
    executor: str = "auto"
    query_max_tokens: int | None = None
    doc_max_tokens: int | None = None
    limit_queries: int | None = None
    seed: int = 0
    output_dir: str = field(default_factory=lambda: str(default_results_dir("effectiveness")))
    cache_dir: str | None = None
    summary_name: str = "summary"
    doc_store: str = "fp16"          # fp16 | fp32 | int8 | residual1|2|4 (see store.py)
    gzip_runs: bool = True           # TREC runs as <variant>.trec.gz (about 5x smaller)
    # ModernBERT's local layers: window (the checkpoint's, as Hugging Face runs them) | global
    local_attention: str = "window"
    # torch: mice-bench's executors; ort: their ONNX export under onnxruntime (pairs scored
    # through the graphs, documents encoded with their pairs: no document store)
    runtime: str = "torch"

    def __post_init__(self) -> None:
        for name in _LISTS:
            if isinstance(getattr(self, name), str):
                raise TypeError(f"EffectivenessConfig.{name} is a list of names, not "
                                f"{getattr(self, name)!r} (comma-separated text is parsed "
                                "by the command line)")
        self.models = [m if isinstance(m, ModelRef) else ModelRef(str(m))
                       for m in self.models]

    def as_dict(self) -> dict:
        d = asdict(self)
        d["cache_dir"] = str(self.cache_path())
        return d

    def cache_path(self) -> Path:
        return Path(self.cache_dir) if self.cache_dir else default_cache_dir()


@dataclass
class Record:
    """One evaluated (model, variant, dataset)."""

    dataset: DatasetInfo
    variant: str
    model: str | None          # model label; None for bm25
    per_query: dict[str, dict[str, float]]
    aggregates: dict[str, float]
    path: Path

    @property
    def dataset_name(self) -> str:
        return self.dataset.name

    @property
    def file(self) -> str:
        return str(self.path)


# --------------------------------------------------------------------------- option parsing
def split_overrides(values: list[str], names: list[str], option: str
                    ) -> tuple[str | None, dict[str, str]]:
    """The front ends' spelling (command line, study files) of a per-dataset option:
    ``VALUE`` for every dataset, ``DATASET=VALUE`` for one -> ``(default, overrides)``.
    A value may hold ``=`` itself (``run:a=b.trec``): only a dataset name before it makes
    an override.

    >>> split_overrides(["bm25", "dl19=run:a=b.trec"], ["dl19", "dl20"], "--first-stage")
    ('bm25', {'dl19': 'run:a=b.trec'})
    """
    over = [v for v in values if "=" in v and v.split("=", 1)[0] in names]
    base = [v for v in values if v not in over]
    if len(base) > 1:
        raise UsageError(f"{option} given twice without a DATASET= prefix: {base}")
    return (base[0] if base else None), dict(v.split("=", 1) for v in over)


def per_dataset(default: str | None, overrides: dict[str, str],
                datasets: list[DatasetInfo], option: str) -> dict[str, str | None]:
    """``default`` for every dataset, ``overrides[name]`` where given; an override naming a
    dataset that is not run is an error (a typo would silently do nothing)."""
    names = [d.name for d in datasets]
    unknown = [k for k in overrides if k not in names]
    if unknown:
        raise UsageError(f"{option} {unknown[0]}=...: {unknown[0]!r} is not among the "
                         f"datasets run ({', '.join(names)})")
    return {n: overrides.get(n, default) for n in names}


def model_labels(models: list[ModelRef]) -> list[tuple[str, str]]:
    """``[(label, name or path)]``: the given label, else one derived from the name (the
    directory, or its parent for generic names such as ``model`` / ``final``); repeated
    labels get ``-2``, ``-3``."""
    out: list[tuple[str, str]] = []
    for ref in models:
        ref = ref if isinstance(ref, ModelRef) else ModelRef(str(ref))
        name = ref.name
        if ref.label:
            label = ref.label
        else:
            p = Path(name.rstrip("/"))
            label = p.name
            generic = ("model", "checkpoint", "final", "best", "hf", "")
            if label.lower() in generic and p.parent.name:
                label = p.parent.name
        label = slug(label) or "model"
        base, n = label, 1
        while label in [x[0] for x in out]:
            n += 1
            label = f"{base}-{n}"
        out.append((label, name))
    return out


def resolve_variants(names: list[str]) -> list[str]:
    """Canonical variant names, order kept, duplicates dropped; SpecError for unknown names."""
    from ..spec import parse

    out: list[str] = []
    for raw in (n.strip() for n in names):
        if not raw:
            continue
        name = BM25 if raw.lower() == BM25 else str(parse(raw))
        if name not in out:
            out.append(name)
    if not out:
        raise UsageError("no variant given (e.g. --variants bm25,ce,mice-l4+3)")
    return out


@dataclass
class Plan:
    """The validated work: datasets with their first stage and docs, variants, models."""

    datasets: list[DatasetInfo]
    first_stage: dict[str, FirstStage]
    docs: dict[str, str | None]
    variants: list[str]
    models: list[tuple[str, str]]
    measures: list
    baseline: str | None


def make_plan(cfg: EffectivenessConfig) -> Plan:
    datasets = resolve_datasets(cfg.datasets)
    variants = resolve_variants(cfg.variants)
    if BM25 not in variants:
        variants.insert(0, BM25)   # the first stage is a row of every table
    measures = parse_measures(cfg.measures)
    if cfg.test not in TESTS:
        raise UsageError(f"unknown --test {cfg.test!r}; valid: {', '.join(TESTS)}")
    if cfg.correction not in CORRECTIONS:
        raise UsageError(f"unknown --correction {cfg.correction!r}; valid: "
                         f"{', '.join(CORRECTIONS)}")
    if isinstance(cfg.depth, bool) or not isinstance(cfg.depth, int) or cfg.depth < 1:
        raise UsageError(f"--depth must be a whole number >= 1, got {cfg.depth!r}")
    beyond = check_depth(cfg.measures, measures, cfg.depth, "--measures")
    if beyond:                           # the default measures: flagged, in every result
        warn(f"{', '.join(beyond)} cut off above --depth {cfg.depth}: over {cfg.depth} "
             "candidates they measure the first stage's depth (recorded as "
             "'beyond_depth' in every result); pass --measures to choose others")
    fs_raw = per_dataset(cfg.first_stage or BM25, cfg.first_stage_for, datasets,
                         "--first-stage")
    first_stage = {n: FirstStage.parse(v or BM25) for n, v in fs_raw.items()}
    docs_raw = per_dataset(cfg.docs, cfg.docs_for, datasets, "--docs")
    docs = {n: (v.replace("{dataset}", n) if v else None) for n, v in docs_raw.items()}
    model_vars = [v for v in variants if v != BM25]
    models = model_labels(cfg.models)
    if model_vars and not models:
        raise UsageError(f"variants {', '.join(model_vars)} need at least one --model "
                         "(a Hugging Face id or a local checkpoint directory)")
    if any(fs.kind == "full" for fs in first_stage.values()):
        from ..spec import parse

        joint = [v for v in model_vars if parse(v).layout != "split"]
        if joint:
            raise UsageError(f"--first-stage full scores the whole corpus and needs variants "
                             f"whose documents can be precomputed (prettr, mice, colbert, "
                             f"biencoder); {', '.join(joint)} cannot: use --first-stage bm25")
    if cfg.runtime not in ("torch", "ort"):
        raise UsageError(f"unknown --runtime {cfg.runtime!r}; valid: torch, ort")
    if cfg.runtime == "ort":
        if any(fs.kind == "full" for fs in first_stage.values()):
            raise UsageError("--runtime ort scores (query, document) pairs through the ONNX "
                             "graphs; --first-stage full needs stored documents: use "
                             "--first-stage bm25 or run:FILE")
        if cfg.dtype != "fp32":
            raise UsageError(f"--runtime ort runs the fp32 ONNX export; got --dtype {cfg.dtype}")
        import importlib.util

        if importlib.util.find_spec("onnxruntime") is None:
            raise UsageError("--runtime ort needs onnxruntime: pip install 'mice-bench[onnx]'")
    baseline = cfg.baseline
    if baseline is None:
        baseline = default_baseline(variants)
    else:
        baseline = BM25 if baseline.lower() == BM25 else baseline
        if baseline != BM25:
            from ..spec import parse

            baseline = str(parse(baseline))
        if baseline not in variants:
            raise UsageError(f"--baseline {cfg.baseline} is not among --variants "
                             f"({', '.join(variants)})")
    return Plan(datasets, first_stage, docs, variants, models, measures, baseline)


# --------------------------------------------------------------------------- result files
def result_path(out: Path, ds: str, fs_tag: str, variant: str, model: str | None) -> Path:
    base = out / slug(ds) / fs_tag
    if model is None:
        return base / f"{slug(variant)}.json"
    return base / slug(model) / f"{slug(variant)}.json"


def write_result(path: Path, cfg_block: dict, env: dict, coll: Collection, run: Run,
                 measures: list, timing: dict, model_info: dict | None, tag: str,
                 gzip_run: bool = True) -> Record:
    """Evaluate ``run`` on ``coll`` and write ``path`` (JSON) and the TREC run beside it
    (``<stem>.trec.gz``, or ``<stem>.trec`` without ``gzip_run``)."""
    pq = per_query(coll.qrels, run, measures)
    agg = aggregate(pq)
    run_path = path.with_suffix(".trec.gz" if gzip_run else ".trec")
    write_trec_run(run_path, run, tag)
    EffectivenessResult(
        config=cfg_block, environment=env, model=model_info,
        dataset={"name": coll.name, "irds_id": coll.info.irds_id, "group": coll.info.group,
                 "num_queries": len(coll.queries),
                 "coverage": {"judged_queries": len(coll.queries),
                              "with_candidates": sum(1 for q in coll.queries if run.get(q))},
                 "docs": str(coll.docs_path) if coll.docs_path else None},
        aggregates=agg, per_query=pq, num_candidates=sum(len(v) for v in run.values()),
        timing=timing, run_file=run_path.name).save(path)
    return Record(coll.info, cfg_block["variant"], cfg_block.get("model_label"), pq, agg, path)


def _cfg_block(cfg: EffectivenessConfig, plan: Plan, coll: Collection, variant: str,
               model: tuple[str, str] | None) -> dict:
    fs = plan.first_stage[coll.name]
    return {
        "dataset": coll.name, "irds_id": coll.info.irds_id, "variant": variant,
        "model": model[1] if model else None, "model_label": model[0] if model else None,
        "first_stage": fs.describe(coll.name),
        "docs": plan.docs[coll.name], "depth": cfg.depth,
        "measures": measure_names(plan.measures), "dtype": cfg.dtype, "device": cfg.device,
        "executor": cfg.executor, "batch_size": cfg.batch_size,
        "query_max_tokens": cfg.query_max_tokens, "doc_max_tokens": cfg.doc_max_tokens,
        "limit_queries": cfg.limit_queries, "seed": cfg.seed,
        "doc_store": getattr(cfg, "doc_store", None),
        "beyond_depth": measures_beyond_depth(plan.measures, cfg.depth),
        "local_attention": cfg.local_attention,
        "runtime": cfg.runtime,
    }


# --------------------------------------------------------------------------- the run
def run_effectiveness(cfg: EffectivenessConfig, reporter: Reporter | None = None,
                      after_query: Callable[[str], None] | None = None
                      ) -> EffectivenessSummary:
    """Run everything ``cfg`` asks for; returns the summary (also written to disk)."""
    from dataclasses import replace

    from .checks import preflight
    from ..devices import resolve_device
    from ..distributed import session

    reporter = reporter or Reporter(enabled=False)
    if cfg.device == "auto":              # results record the device that ran
        cfg = replace(cfg, device=resolve_device("auto"))
    plan = make_plan(cfg)
    preflight(cfg, plan)                 # every option, path, model dir, output folder
    with session(cfg.device) as (denv, dev):   # torchrun: this rank's place and device
        return _run_planned(cfg, plan, denv, dev, reporter, after_query)


def _run_planned(cfg: EffectivenessConfig, plan: Plan, denv, dev, reporter: Reporter,
                 after_query: Callable[[str], None] | None) -> EffectivenessSummary:
    from dataclasses import replace

    from .checks import check_candidates

    if denv.active:
        cfg = replace(cfg, device=str(dev))
        if not denv.main:
            reporter = Reporter(enabled=False)   # rank 0 reports and writes
    out = Path(cfg.output_dir)
    cache_dir = cfg.cache_path()
    env = environment(device=cfg.device, dtype=cfg.dtype)
    if denv.active:
        env["world_size"] = denv.world

    colls: dict[str, Collection] = {}
    for info in plan.datasets:
        colls[info.name] = load_collection(info, plan.docs[info.name], cfg.limit_queries)
    check_candidates(plan, colls)        # run files: well formed, cover judged queries
    candidates: dict[str, Run] = {}
    fs_seconds: dict[str, float] = {}
    records: list[Record] = []
    if not denv.main:
        denv.barrier()                   # rank 0 builds (and caches) the first stages first
    for name, coll in colls.items():
        fs = plan.first_stage[name]
        t = time.perf_counter()
        candidates[name] = run_first_stage(fs, coll, cfg.depth, cache_dir)
        fs_seconds[name] = time.perf_counter() - t
        # every candidate needs a text: a bad or incomplete --docs file is refused here,
        # before the first result is written
        coll.check_docs(d for ranked in candidates[name].values() for d in ranked)
    if denv.main:
        denv.barrier()

    def write_first_stage_rows() -> None:
        """The bm25 (first-stage) rows; written once every input has been checked."""
        if not denv.main:
            return
        for name, coll in colls.items():
            fs = plan.first_stage[name]
            path = result_path(out, name, fs.tag(name), BM25, None)
            block = _cfg_block(cfg, plan, coll, BM25, None)
            block["first_stage_row"] = "bm25 retrieval" if fs.kind != "run" \
                else "run file scores"
            records.append(write_result(path, block, env, coll, candidates[name],
                                        plan.measures, {"first_stage_s": fs_seconds[name]},
                                        None, "mice-bench-bm25", cfg.gzip_runs))
            reporter.log(f"[dim]{name}[/] bm25 ({fs.describe(name)}): "
                         + _fmt(records[-1].aggregates))

    model_vars = [v for v in plan.variants if v != BM25]
    if model_vars:
        # the first model is loaded and its executors built before anything is written
        records_m = _run_models(cfg, plan, colls, candidates, out, cache_dir, env, reporter,
                                after_query, denv, before_first=write_first_stage_rows)
        records += records_m
    else:
        write_first_stage_rows()
    summary = None
    if denv.main:
        summary = summary_of(records, plan, cfg)
        write_summary(summary, out / cfg.summary_name, cfg.as_dict(), env)
    return denv.broadcast(summary)


def summary_of(records: list[Record], plan: Plan, cfg: EffectivenessConfig
               ) -> EffectivenessSummary:
    """The run's summary (:func:`.summary.summarize` with the run's settings)."""
    datasets = [SummaryDataset(d.name, d.irds_id, d.group, plan.first_stage[d.name].describe(
        d.name)) for d in plan.datasets]
    settings = SummarySettings(baseline=plan.baseline, test=cfg.test,
                               correction=cfg.correction, alpha=cfg.alpha, seed=cfg.seed)
    return summarize(records, datasets, plan.variants, settings,
                     measures=measure_names(plan.measures))


def model_revision(name: str, bb, seed: int) -> str:
    """What pins the weights: the hub commit when known, ``random-weights:seed<N>`` for an
    architecture without weights, else ``files:<hash>`` of the weight files' names and sizes."""
    from .cache import key_hash
    from .rerank import model_identity

    commit = getattr(getattr(bb, "config", None), "_commit_hash", None)
    if commit:
        return str(commit)
    if getattr(bb, "random_weights", False):
        return f"random-weights:seed{seed}"
    ident = model_identity(name)
    if "files" in ident:
        return "files:" + key_hash([(f, size) for f, size, _ in ident["files"]])
    return f"unknown:{name}"


def scoring_settings(cfg: EffectivenessConfig):
    """The :class:`~.rerank.ScoringSettings` of ``cfg`` (they key the score and store caches)."""
    from .rerank import ScoringSettings

    return ScoringSettings(batch_size=cfg.batch_size, doc_batch_size=cfg.doc_batch_size,
                           query_max_tokens=cfg.query_max_tokens,
                           doc_max_tokens=cfg.doc_max_tokens, dtype=cfg.dtype,
                           device=cfg.device, executor=cfg.executor, seed=cfg.seed,
                           doc_store=cfg.doc_store)


def load_model(load_backbone, name: str, cfg):
    """``load_backbone``, with a failure inside a local checkpoint directory reported as a
    usage error about that directory (exit 2) instead of a traceback."""
    from ..errors import USER_ERRORS

    try:
        return load_backbone(name, device=cfg.device, dtype=cfg.dtype, seed=cfg.seed,
                             local_attention=cfg.local_attention)
    except USER_ERRORS:
        raise
    except Exception as e:  # noqa: BLE001 - transformers/safetensors raise many kinds
        if not Path(name).expanduser().exists():
            raise
        first = str(e).splitlines()[0] if str(e) else ""
        raise UsageError(f"model directory {name}: cannot load it ({type(e).__name__}: "
                         f"{first[:200]})") from None


def _fmt(agg: dict[str, float]) -> str:
    return "  ".join(f"{k} {v:.4f}" for k, v in agg.items())


def _run_models(cfg, plan: Plan, colls, candidates, out: Path, cache_dir: Path, env: dict,
                reporter: Reporter, after_query, denv=None,
                before_first: Callable[[], None] | None = None) -> list[Record]:
    """Score every (model, dataset, variant) and write its result (rank 0). Under torchrun
    each rank scores every ``world``-th query and rank 0 merges the runs: the written files
    are those of one process (the scores of a pair do not depend on which rank scored it)."""
    import torch

    from ..distributed import DistEnv

    denv = denv or DistEnv()

    from ..backbone import load_backbone
    from ..executors import make_executor
    from .rerank import VariantScorer

    settings = scoring_settings(cfg)
    records: list[Record] = []
    onnx_cache: dict = {}                 # (model label, variant) -> its ONNX runner
    for label, name in plan.models:
        t = time.perf_counter()
        bb = load_model(load_backbone, name, cfg)
        load_s = time.perf_counter() - t
        model_info = {"label": label, "name": name, "describe": bb.describe(),
                      "revision": model_revision(name, bb, cfg.seed),
                      "random_weights": bb.random_weights, "num_layers": bb.num_layers,
                      "local_attention": bb.local_attention,
                      "hidden_size": bb.hidden_size}
        from ..model import checkpoint_provenance

        model_info.update(checkpoint_provenance(name))  # mice-bench checkpoints: trained?
        if before_first is not None:     # every variant builds on this model: inputs checked
            for variant in (v for v in plan.variants if v != BM25):
                built = make_executor(variant, bb, executor=cfg.executor,
                                      query_max_tokens=cfg.query_max_tokens,
                                      doc_max_tokens=cfg.doc_max_tokens)
                if cfg.runtime == "ort":     # what cannot be exported fails here, first
                    from ..export.graphs import check_exportable

                    check_exportable(built)
            before_first()
            before_first = None
        for dname, coll in colls.items():
            fs = plan.first_stage[dname]
            for variant in (v for v in plan.variants if v != BM25):
                ex = make_executor(variant, bb, executor=cfg.executor,
                                   query_max_tokens=cfg.query_max_tokens,
                                   doc_max_tokens=cfg.doc_max_tokens)
                if cfg.runtime == "ort":        # the ONNX export (checked), once per model
                    from ..export.onnx import pairs_runtime

                    ex = pairs_runtime(ex, onnx_cache, (label, variant))
                if ex.flags["classifier_random"] and denv.main:
                    warn(f"{label}: no sequence-classification head in the checkpoint; "
                         f"{variant}'s 'cls' head is seeded random (flagged in its result)")
                scorer = VariantScorer(ex, name, coll, cache_dir, settings, reporter,
                                       shard=(denv.rank, denv.world),
                                       rank_store=fs.kind != "full")
                t = time.perf_counter()
                if fs.kind == "full":
                    run = scorer.full(cfg.depth, after_query, queries=denv.shard(
                        list(coll.queries)) if denv.active else None, dist=denv)
                else:
                    cands = candidates[dname]
                    run = scorer.rerank({q: cands[q] for q in denv.shard(list(cands))},
                                        after_query)
                stats = scorer.stats.as_dict()
                parts = denv.gather((run, stats, time.perf_counter() - t))
                if not denv.main:
                    continue
                if denv.active:
                    run, stats, total_s = _merge_shards(parts, list(
                        coll.queries if fs.kind == "full" else candidates[dname]))
                else:
                    total_s = parts[0][2]
                timing = {"model_load_s": load_s, "total_s": total_s,
                          "executor": ex.kind, **stats}
                if cfg.device.startswith("cuda") and torch.cuda.is_available():
                    timing["max_memory_allocated"] = torch.cuda.max_memory_allocated()
                block = _cfg_block(cfg, plan, coll, variant, (label, name))
                # effective lengths / pooling / markers and where each came from
                # what this variant uses that is not the checkpoint's own (a random
                # classifier head matters only to variants that read the 'cls' head)
                info = dict(model_info, params=bb.param_count(ex.spec),
                            settings=ex.settings(),
                            classifier_random=ex.flags["classifier_random"])
                path = result_path(out, dname, fs.tag(dname), variant, label)
                rec = write_result(path, block, env, coll, run, plan.measures, timing, info,
                                   f"mice-bench-{slug(variant)}", cfg.gzip_runs)
                records.append(rec)
                reporter.log(f"[dim]{dname}[/] {label} {variant}: " + _fmt(rec.aggregates)
                             + f"  ({stats['pairs_scored']} pairs scored, "
                             f"{stats['pairs_cached']} cached)")
        del bb
    return records


_SUMMED = ("queries", "queries_scored", "pairs_total", "pairs_scored", "pairs_cached",
           "docs_encoded")


def _merge_shards(parts: list, qids: list[str]) -> tuple[Run, dict, float]:
    """Rank 0's view of a sharded scoring: the ranks' runs in the one-process query order,
    counts summed, seconds the slowest rank's (wall clock), throughput over the job."""
    run_all: dict = {}
    for run, _, _ in parts:
        run_all.update(run)
    run = {q: run_all[q] for q in qids if q in run_all}
    stats = dict(parts[0][1])
    for k in _SUMMED:
        stats[k] = sum(p[1].get(k) or 0 for p in parts)
    for k in ("doc_encode_s", "scoring_s"):
        stats[k] = max(p[1].get(k) or 0.0 for p in parts)
    stats["pairs_per_s"] = stats["pairs_scored"] / stats["scoring_s"] \
        if stats["scoring_s"] > 0 else None
    stats["docs_per_s"] = stats["docs_encoded"] / stats["doc_encode_s"] \
        if stats["doc_encode_s"] > 0 else None
    stats["world_size"] = len(parts)
    stats["per_rank"] = [{k: p[1].get(k) for k in ("queries", "pairs_scored", "scoring_s",
                                                      "docs_encoded")} for p in parts]
    return run, stats, max(p[2] for p in parts)

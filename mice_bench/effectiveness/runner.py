"""``mice-bench effectiveness``: the whole evaluation, from options to result files.

Order of work: validate every option and load every dataset first (fail fast, exit 2), run
the first stages (and write the ``bm25`` rows), then for each model (seed): load it once and
score every (dataset, variant), writing one JSON + one TREC run per (model, variant, dataset).
Finally the summary (mean/std over seeds, significance vs the baseline, corrected).
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from ..errors import UsageError
from ..results import environment
from .cache import slug
from .datasets import Collection, DatasetInfo, load_collection, resolve_datasets
from .firststage import FirstStage, Run, run_first_stage, write_trec_run
from .result import EffectivenessResult
from .metrics import aggregate, measure_names, parse_measures, per_query
from .progress import Reporter
from .stats import CORRECTIONS, TESTS
from .summary import (EffectivenessSummary, SummaryDataset, SummarySettings, default_baseline,
                      summarize)

BM25 = "bm25"


def default_cache_dir() -> Path:
    env = os.environ.get("MICE_BENCH_CACHE")
    if env:
        return Path(env) / "effectiveness"
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mice-bench" / \
        "effectiveness"


@dataclass
class EffectivenessConfig:
    """Every option of the command (see ``docs/effectiveness.md``)."""

    datasets: str = "scifact"
    models: list[str] = field(default_factory=list)
    variants: str = BM25
    first_stage: list[str] = field(default_factory=lambda: [BM25])
    docs: list[str] = field(default_factory=list)
    depth: int = 100
    measures: str = "nDCG@10,RR@10,R@100"
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
    output_dir: str = "results/effectiveness"
    cache_dir: str | None = None
    summary_name: str = "summary"
    doc_store: str = "fp16"          # fp16 | fp32 | int8 (document-state store, see store.py)

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
def per_dataset_option(values: list[str], datasets: list[DatasetInfo], option: str,
                       default: str | None) -> dict[str, str | None]:
    """``["X", "dl19=Y"]`` -> ``{dataset: X or Y}`` (``{dataset}`` expanded later)."""
    names = {d.name for d in datasets}
    out: dict[str, str | None] = {d.name: default for d in datasets}
    base = [v for v in values if not _is_override(v, names)]
    if len(base) > 1:
        raise UsageError(f"{option} given twice without a DATASET= prefix: {base}")
    if base:
        out = {d.name: base[0] for d in datasets}
    for v in values:
        if _is_override(v, names):
            k, val = v.split("=", 1)
            out[k] = val
    return out


def _is_override(v: str, names: set[str]) -> bool:
    return "=" in v and v.split("=", 1)[0] in names


def model_labels(models: list[str]) -> list[tuple[str, str]]:
    """``[(label, name or path)]``; ``label=PATH`` sets the label, else it is derived."""
    out: list[tuple[str, str]] = []
    for m in models:
        if "=" in m and "/" not in m.split("=", 1)[0] and not Path(m).exists():
            label, name = m.split("=", 1)
        else:
            name = m
            p = Path(m.rstrip("/"))
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


def resolve_variants(text: str) -> list[str]:
    """Canonical variant names (``bm25`` first if listed); SpecError for unknown names."""
    from ..spec import parse, split_names

    out: list[str] = []
    for raw in split_names(text):
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
    if cfg.depth < 1:
        raise UsageError("--depth must be >= 1")
    if cfg.limit_queries is not None and cfg.limit_queries < 1:
        raise UsageError("--limit-queries must be >= 1")
    fs_raw = per_dataset_option(cfg.first_stage, datasets, "--first-stage", BM25)
    first_stage = {n: FirstStage.parse(v or BM25) for n, v in fs_raw.items()}
    docs_raw = per_dataset_option(cfg.docs, datasets, "--docs", None)
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
                 measures: list, timing: dict, model_info: dict | None, tag: str) -> Record:
    """Evaluate ``run`` on ``coll`` and write ``path`` (JSON) and the TREC run beside it."""
    pq = per_query(coll.qrels, run, measures)
    agg = aggregate(pq)
    run_path = path.with_suffix(".trec")
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
    }


# --------------------------------------------------------------------------- the run
def run_effectiveness(cfg: EffectivenessConfig, reporter: Reporter | None = None,
                      after_query: Callable[[str], None] | None = None
                      ) -> EffectivenessSummary:
    """Run everything ``cfg`` asks for; returns the summary (also written to disk)."""
    from .checks import check_candidates, preflight

    reporter = reporter or Reporter(enabled=False)
    plan = make_plan(cfg)
    preflight(cfg, plan)                 # every option, path, model dir, output folder
    out = Path(cfg.output_dir)
    cache_dir = cfg.cache_path()
    env = environment(device=cfg.device, dtype=cfg.dtype)

    colls: dict[str, Collection] = {}
    for info in plan.datasets:
        colls[info.name] = load_collection(info, plan.docs[info.name], cfg.limit_queries)
    check_candidates(plan, colls)        # run files: well formed, cover judged queries
    candidates: dict[str, Run] = {}
    records: list[Record] = []
    for name, coll in colls.items():
        fs = plan.first_stage[name]
        t = time.perf_counter()
        candidates[name] = run_first_stage(fs, coll, cfg.depth, cache_dir)
        fs_s = time.perf_counter() - t
        tag = fs.tag(name)
        path = result_path(out, name, tag, BM25, None)
        block = _cfg_block(cfg, plan, coll, BM25, None)
        block["first_stage_row"] = "bm25 retrieval" if fs.kind != "run" else "run file scores"
        records.append(write_result(path, block, env, coll, candidates[name], plan.measures,
                                    {"first_stage_s": fs_s}, None, "mice-bench-bm25"))
        reporter.log(f"[dim]{name}[/] bm25 ({fs.describe(name)}): " + _fmt(records[-1].aggregates))

    model_vars = [v for v in plan.variants if v != BM25]
    if model_vars:
        records += _run_models(cfg, plan, colls, candidates, out, cache_dir, env, reporter,
                               after_query)
    summary = summary_of(records, plan, cfg)
    summary.save(out / cfg.summary_name, cfg.as_dict(), env)
    return summary


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


def _load_model(load_backbone, name: str, cfg):
    """``load_backbone``, with a failure inside a local checkpoint directory reported as a
    usage error about that directory (exit 2) instead of a traceback."""
    from ..errors import USER_ERRORS

    try:
        return load_backbone(name, device=cfg.device, dtype=cfg.dtype, seed=cfg.seed)
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
                reporter: Reporter, after_query) -> list[Record]:
    import torch

    from ..backbone import load_backbone
    from ..executors import make_executor
    from .rerank import ScoringSettings, VariantScorer

    settings = ScoringSettings(batch_size=cfg.batch_size, doc_batch_size=cfg.doc_batch_size,
                               query_max_tokens=cfg.query_max_tokens,
                               doc_max_tokens=cfg.doc_max_tokens, dtype=cfg.dtype,
                               device=cfg.device, executor=cfg.executor, seed=cfg.seed,
                               doc_store=cfg.doc_store)
    records: list[Record] = []
    for label, name in plan.models:
        t = time.perf_counter()
        bb = _load_model(load_backbone, name, cfg)
        load_s = time.perf_counter() - t
        model_info = {"label": label, "name": name, "describe": bb.describe(),
                      "revision": model_revision(name, bb, cfg.seed),
                      "random_weights": bb.random_weights,
                      "classifier_random": bb.classifier_random, "num_layers": bb.num_layers,
                      "hidden_size": bb.hidden_size}
        from ..model import checkpoint_provenance

        model_info.update(checkpoint_provenance(name))  # mice-bench checkpoints: trained?
        for dname, coll in colls.items():
            fs = plan.first_stage[dname]
            for variant in (v for v in plan.variants if v != BM25):
                ex = make_executor(variant, bb, executor=cfg.executor,
                                   query_max_tokens=cfg.query_max_tokens,
                                   doc_max_tokens=cfg.doc_max_tokens)
                scorer = VariantScorer(ex, name, coll, cache_dir, settings, reporter)
                t = time.perf_counter()
                if fs.kind == "full":
                    run = scorer.full(cfg.depth, after_query)
                else:
                    run = scorer.rerank(candidates[dname], after_query)
                timing = {"model_load_s": load_s, "total_s": time.perf_counter() - t,
                          "executor": ex.kind, **scorer.stats.as_dict()}
                if cfg.device.startswith("cuda") and torch.cuda.is_available():
                    timing["max_memory_allocated"] = torch.cuda.max_memory_allocated()
                block = _cfg_block(cfg, plan, coll, variant, (label, name))
                # effective lengths / pooling / markers and where each came from
                info = dict(model_info, params=bb.param_count(ex.spec),
                            settings=ex.settings())
                path = result_path(out, dname, fs.tag(dname), variant, label)
                rec = write_result(path, block, env, coll, run, plan.measures, timing, info,
                                   f"mice-bench-{slug(variant)}")
                records.append(rec)
                reporter.log(f"[dim]{dname}[/] {label} {variant}: " + _fmt(rec.aggregates)
                             + f"  ({scorer.stats.pairs_scored} pairs scored, "
                             f"{scorer.stats.pairs_cached} cached)")
        del bb
    return records

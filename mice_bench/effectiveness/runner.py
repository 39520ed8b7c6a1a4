"""``mice-bench effectiveness``: the whole evaluation, from options to result files.

Order of work: validate every option and load every dataset first (fail fast, exit 2:
:mod:`.plan`, :mod:`.checks`), run the first stages (and write the ``bm25`` rows), then for
each model (seed): load it once and score every (dataset, variant) (:mod:`.scoring`),
writing one JSON + one TREC run per (model, variant, dataset) (:mod:`.resultfiles`).
Finally the summary (mean/std over seeds, significance vs the baseline, corrected).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from ..results import environment
from ..data.collections import Collection, load_collection
from ..data.firststage import Run, run_first_stage
from ..evaluation.metrics import measure_names
from .plan import BM25, EffectivenessConfig, Plan, make_plan
from ..progress import Reporter
from .resultfiles import Record, config_block, format_aggregates, result_path, write_result
from .scoring import score_models
from ..evaluation.summary import EffectivenessSummary, SummaryDataset, SummarySettings, summarize
from ..evaluation.table import write_summary

__all__ = ["run_effectiveness", "summary_of"]


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
            block = config_block(cfg, plan, coll, BM25, None)
            block["first_stage_row"] = "bm25 retrieval" if fs.kind != "run" \
                else "run file scores"
            records.append(write_result(path, block, env, coll, candidates[name],
                                        plan.measures, {"first_stage_s": fs_seconds[name]},
                                        None, "mice-bench-bm25", cfg.gzip_runs))
            reporter.log(f"[dim]{name}[/] bm25 ({fs.describe(name)}): "
                         + format_aggregates(records[-1].aggregates))

    model_vars = [v for v in plan.variants if v != BM25]
    if model_vars:
        # the first model is loaded and its executors built before anything is written
        records_m = score_models(cfg, plan, colls, candidates, out, cache_dir, env, reporter,
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

"""The files of one evaluated (model, variant, dataset): where they go and what they hold.

:func:`write_result` evaluates a run on its collection and writes the JSON result
(:class:`~.result.EffectivenessResult`) and the TREC run beside it, at
:func:`result_path`; :func:`config_block` is the result's ``config`` (the options that made
it); :class:`Record` is what the summary reads back.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..naming import slug
from ..data.collections import Collection, DatasetInfo
from ..data.firststage import Run, write_trec_run
from ..evaluation.metrics import aggregate, measure_names, measures_beyond_depth, per_query
from .plan import EffectivenessConfig, Plan
from .result import EffectivenessResult

__all__ = ["Record", "config_block", "format_aggregates", "result_path", "write_result"]


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


def result_path(out: Path, ds: str, fs_tag: str, variant: str, model: str | None) -> Path:
    """``out/<dataset>/<first stage>/[<model>/]<variant>.json`` (no model folder for the
    first-stage rows)."""
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


def config_block(cfg: EffectivenessConfig, plan: Plan, coll: Collection, variant: str,
                 model: tuple[str, str] | None) -> dict:
    """The ``config`` block of one result: the options and resolved inputs that made it
    (``model``: ``(label, name)``, None for the first-stage rows)."""
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
        "pool_factor": getattr(cfg, "pool_factor", 1),
        "beyond_depth": measures_beyond_depth(plan.measures, cfg.depth),
        "local_attention": cfg.local_attention,
        "runtime": cfg.runtime,
    }


def format_aggregates(agg: dict[str, float]) -> str:
    """One progress line's measures: ``nDCG@10 0.6800  RR@10 0.7100``."""
    return "  ".join(f"{k} {v:.4f}" for k, v in agg.items())

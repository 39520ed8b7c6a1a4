"""Scoring a plan's models: each model loaded once, every (dataset, variant) scored with it.

:func:`score_models` loads each model (:func:`load_model`), builds every variant's executor
before the first result is written (a variant that cannot run on the model fails first),
scores the candidates (or the corpus) of every dataset through
:class:`~.rerank.VariantScorer` and writes one result per (model, variant, dataset)
(:func:`~.resultfiles.write_result`). Under torchrun the ranks build one document store
together (every query's candidates, or the corpus), each rank scores its share of the
queries from it and rank 0 merges them (:func:`merge_shards`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from ..errors import UsageError
from ..naming import slug
from ..data.firststage import Run
from .plan import BM25, EffectivenessConfig, Plan
from ..progress import Reporter
from .resultfiles import Record, config_block, format_aggregates, result_path, write_result
from ..safeio import warn

__all__ = ["load_model", "merge_shards", "model_revision", "score_models", "scoring_settings"]


def model_revision(name: str, bb, seed: int) -> str:
    """What pins the weights: the hub commit when known, ``random-weights:seed<N>`` for an
    architecture without weights, else ``files:<hash>`` of the weight files' names and sizes."""
    from ..naming import key_hash
    from .keys import model_identity

    commit = getattr(bb.config, "_commit_hash", None)
    if commit:
        return str(commit)
    if bb.random_weights:
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
                           doc_store=cfg.doc_store,
                           pool_factor=getattr(cfg, "pool_factor", 1),
                           codec_sample_tokens=getattr(cfg, "codec_sample_tokens", None))


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


def score_models(cfg: EffectivenessConfig, plan: Plan, colls, candidates, out: Path,
                 cache_dir: Path, env: dict, reporter: Reporter, after_query, denv=None,
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
                                       shard=(denv.rank, denv.world))
                t = time.perf_counter()
                if fs.kind == "full":
                    run = scorer.full(cfg.depth, after_query, queries=denv.shard(
                        list(coll.queries)) if denv.active else None, dist=denv)
                else:
                    cands = candidates[dname]
                    run = scorer.rerank(cands, after_query, queries=denv.shard(list(cands))
                                        if denv.active else None, dist=denv)
                stats = scorer.stats.as_dict()
                parts = denv.gather((run, stats, time.perf_counter() - t))
                if not denv.main:
                    continue
                if denv.active:
                    run, stats, total_s = merge_shards(parts, list(
                        coll.queries if fs.kind == "full" else candidates[dname]))
                else:
                    total_s = parts[0][2]
                timing = {"model_load_s": load_s, "total_s": total_s,
                          "executor": ex.kind, **stats}
                if cfg.device.startswith("cuda") and torch.cuda.is_available():
                    timing["max_memory_allocated"] = torch.cuda.max_memory_allocated()
                block = config_block(cfg, plan, coll, variant, (label, name))
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
                reporter.log(f"[dim]{dname}[/] {label} {variant}: "
                             + format_aggregates(rec.aggregates)
                             + f"  ({stats['pairs_scored']} pairs scored, "
                             f"{stats['pairs_cached']} cached)")
        del bb
    return records


_SUMMED = ("queries", "queries_scored", "pairs_total", "pairs_scored", "pairs_cached",
           "docs_encoded")


def merge_shards(parts: list, qids: list[str]) -> tuple[Run, dict, float]:
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

"""``mice-bench store build``: the document-state store that ``mice-bench effectiveness``
reads, built ahead of a run from the whole corpus, by every ``torchrun`` rank when launched
under torchrun (:mod:`.storebuild`)."""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
from pathlib import Path
from typing import Optional

import typer

from ..errors import disk_error

HELP = """Encode every document of a dataset's corpus into the document-state store that
`mice-bench effectiveness` reads for the same model, variant and settings (same cache key and
folder). Under torchrun every rank encodes its share of fixed chunks; a killed build, run
again, resumes; the files equal those of a one-process build. See docs/effectiveness.md."""


def build_stores(cfg, chunk_docs: int, reporter=None) -> list[dict]:
    """Build the store of ``cfg``'s one model and variant for every dataset of ``cfg`` (an
    :class:`~.plan.EffectivenessConfig`); returns one summary per dataset (rank 0's).
    Every option is checked first (exit 2, one line) as ``effectiveness`` checks it."""
    from dataclasses import replace

    from ..backbone import load_backbone
    from ..devices import resolve_device
    from ..distributed import session
    from ..errors import UsageError
    from ..executors import make_executor
    from ..spec import PRECOMPUTABLE, parse
    from .checks import preflight
    from ..data.collections import load_collection
    from ..progress import Reporter
    from .rerank import VariantScorer
    from .plan import BM25, make_plan
    from .scoring import load_model, scoring_settings

    if isinstance(chunk_docs, bool) or not isinstance(chunk_docs, int) or chunk_docs < 1:
        raise UsageError(f"--chunk-docs must be a whole number >= 1, got {chunk_docs!r}")
    if cfg.device == "auto":
        cfg = replace(cfg, device=resolve_device("auto"))
    plan = make_plan(cfg)
    variants = [v for v in plan.variants if v != BM25]
    if len(variants) > 1 or len(plan.models) != 1:
        raise UsageError("store build takes one --model and one --variant")
    variant, (_, name) = (variants or [BM25])[0], plan.models[0]
    why = "is the first stage" if variant == BM25 else None
    if why is None and parse(variant).layout != "split":
        why = "reads query and document together"
    elif why is None and not parse(variant).precomputable:
        why = "its documents are positioned after each query"
    if why:
        raise UsageError(f"--variant {variant} keeps no document store ({why}); valid: "
                         f"{PRECOMPUTABLE}")
    if cfg.executor == "reference":
        raise UsageError("--executor reference keeps no document store (it scores each pair "
                         "whole); valid: auto, fast")
    preflight(cfg, plan, output_option="--cache-dir")
    reporter = reporter or Reporter(enabled=False)
    out = []
    with session(cfg.device) as (denv, dev):
        if denv.active:
            cfg = replace(cfg, device=str(dev))
            if not denv.main:
                reporter = Reporter(enabled=False)
        settings = scoring_settings(cfg)
        bb = load_model(load_backbone, name, cfg)
        ex = make_executor(variant, bb, executor=cfg.executor,
                           query_max_tokens=cfg.query_max_tokens,
                           doc_max_tokens=cfg.doc_max_tokens)
        stores = Path(cfg.cache_path()) / "docstates"
        for info in plan.datasets:
            coll = load_collection(info, plan.docs[info.name])
            made = [p for p in (stores, stores.parent) if not p.exists()]
            before = set(os.listdir(stores)) if stores.is_dir() else set()
            scorer = VariantScorer(ex, name, coll, cfg.cache_path(), settings, reporter)
            texts = dict(coll.iter_corpus())
            try:
                st = scorer.build_docs(texts, denv, chunk_docs)
            except (OSError, sqlite3.OperationalError) as e:
                # a full disk or a read-only folder: a store this build created is removed
                # (a Ctrl-C or a kill keeps it: the same command resumes it)
                new = scorer.doc_cache.dir
                if denv.main and disk_error(e) is not None and new.name not in before:
                    shutil.rmtree(new, ignore_errors=True)
                    for p in made:
                        with contextlib.suppress(OSError):
                            p.rmdir()
                raise
            if denv.main:
                out.append({"dataset": info.name, "variant": variant,
                            "store": str(scorer.doc_cache.dir), "docs": st.docs,
                            "chunks": st.chunks, "chunks_reused": st.chunks_reused,
                            "encoded": sum(st.per_rank), "per_rank": st.per_rank,
                            "seconds": st.seconds,
                            **{k: v for k, v in scorer.doc_cache.usage(texts).items()
                               if k in ("bytes", "bytes_per_token", "codec_bytes",
                                        "bytes_per_orig_token", "centroids")},
                            "stored": len(texts) - len(scorer.doc_cache.missing(texts))})
    return out


def register(app: typer.Typer) -> None:
    from ..console import console, user_errors
    from ..store.build import DEFAULT_CHUNK_DOCS

    store_app = typer.Typer(help="Document-state stores of split-first variants.",
                            no_args_is_help=True)
    app.add_typer(store_app, name="store")

    @store_app.command("build", help=HELP)
    @user_errors
    def build(
        model: str = typer.Option(..., "--model", help="HF id, local path or architecture"),
        variant: str = typer.Option(..., "--variant",
                                    help="a split-first variant (mice-l4+3, colbert, ...)"),
        dataset: str = typer.Option("scifact", "--dataset",
                                    help="a dataset name, group or irds:<id>"),
        docs: Optional[str] = typer.Option(None, "--docs",
                                           help="JSONL (doc_id, text): the corpus to store"),
        doc_store: str = typer.Option("fp16", "--doc-store",
                                      help="fp16 | fp32 | int8 | residual1 | residual2 | "
                                           "residual4 (as effectiveness --doc-store)"),
        pool_factor: int = typer.Option(1, "--pool-factor",
                                        help="each document's stored tokens pooled to about "
                                             "1/N (as effectiveness --pool-factor), 1: none"),
        codec_sample_tokens: Optional[int] = typer.Option(
            None, "--codec-sample-tokens",
            help="residual formats: stored tokens of the corpus drawn (seeded, whole "
                 "documents) to train the codec (default 262144)"),
        doc_batch_size: int = typer.Option(64, "--doc-batch-size",
                                           help="documents per forward"),
        chunk_docs: int = typer.Option(DEFAULT_CHUNK_DOCS, "--chunk-docs",
                                       help="documents per shard (the unit of work and "
                                            "of resuming)"),
        dtype: str = typer.Option("fp32", "--dtype", help="fp32 | fp16 | bf16"),
        device: str = typer.Option("auto", "--device", help="auto | cpu | cuda[:N]"),
        executor: str = typer.Option("auto", "--executor", help="auto | fast"),
        doc_max_tokens: Optional[int] = typer.Option(
            None, "--doc-max-tokens",
            help="document word pieces (default: the variant's reference setting)"),
        seed: int = typer.Option(0, "--seed", help="seed (random heads, the codec sample)"),
        local_attention: str = typer.Option("window", "--local-attention",
                                            help="ModernBERT's local layers: window | global"),
        cache_dir: Optional[str] = typer.Option(
            None, "--cache-dir", help="as effectiveness --cache-dir (default "
                                      "~/.cache/mice-bench/effectiveness, $MICE_BENCH_CACHE)"),
        progress: bool = typer.Option(True, "--progress/--no-progress"),
    ) -> None:
        from ..progress import Reporter
        from .plan import EffectivenessConfig, ModelRef, default_cache_dir

        cfg = EffectivenessConfig(
            datasets=[x.strip() for x in dataset.split(",") if x.strip()],
            models=[ModelRef.parse(model)], variants=[variant], docs=docs,
            doc_batch_size=doc_batch_size, dtype=dtype, device=device, executor=executor,
            doc_max_tokens=doc_max_tokens, seed=seed, cache_dir=cache_dir,
            output_dir=cache_dir or str(default_cache_dir()), doc_store=doc_store,
            local_attention=local_attention, pool_factor=pool_factor,
            codec_sample_tokens=codec_sample_tokens)
        rows = build_stores(cfg, chunk_docs, Reporter(enabled=progress))
        if int(os.environ.get("RANK", "0")) != 0:      # torchrun: rank 0 prints
            return
        for r in rows:
            bpt = r.get("bytes_per_token")
            console.print(
                f"{r['dataset']} {r['variant']}: {r['stored']} documents stored, "
                f"{r['docs']} planned in {r['chunks']} shards "
                f"({r['encoded']} encoded now, {r['chunks_reused']} shards reused; "
                f"per rank {r['per_rank']}), {r['bytes'] / 2**10:,.1f} KiB"
                + (f", {bpt:.1f} bytes per stored token" if bpt else "")
                + (f", {r['bytes_per_orig_token']:.1f} per original token (codec included)"
                   if r.get("bytes_per_orig_token") else "")
                + (f", {r['centroids']} centroids" if r.get("centroids") else "")
                + f" in {r['seconds']:.1f} s\nstore: {r['store']}", highlight=False,
                markup=False)

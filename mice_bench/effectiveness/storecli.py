"""``mice-bench store build``: the document-state store that ``mice-bench effectiveness``
reads, built ahead of a run from the whole corpus, by every ``torchrun`` rank when launched
under torchrun (:mod:`.storebuild`)."""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import typer

from ..errors import disk_error
from ..options import option
from ..store.build import DEFAULT_CHUNK_DOCS

HELP = """Encode every document of a dataset's corpus into the document-state store that
`mice-bench effectiveness` reads for the same model, variant and settings (same cache key and
folder). Under torchrun every rank encodes its share of fixed chunks; a killed build, run
again, resumes; the files equal those of a one-process build. See docs/effectiveness.md."""


@dataclass
class StoreTarget:
    """The options of ``store build`` of its own; the others are those of ``effectiveness``
    (:data:`SHARED`, declared on :class:`~.plan.EffectivenessConfig`)."""

    model: str = option("", required=True, panel="Inputs",
                        help="HF id, local path or architecture")
    variant: str = option("", required=True, panel="Inputs",
                          help="a split-first variant (mice-l4+3, colbert, ...)")
    dataset: str = option("scifact", panel="Inputs", help="a dataset name, group or irds:<id>")
    chunk_docs: int = option(DEFAULT_CHUNK_DOCS, panel="Scoring",
                             help="documents per shard (the unit of work and of resuming)")


#: the ``effectiveness`` options that ``store build`` takes as they are
SHARED = ("docs", "doc_store", "doc_batch_size", "dtype", "device", "executor",
          "doc_max_tokens", "seed", "local_attention", "cache_dir", "pool_factor",
          "codec_sample_tokens")


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
    from ..options import Pick, ProgressBar, typer_command
    from .plan import EffectivenessConfig

    store_app = typer.Typer(help="Document-state stores of split-first variants.",
                            no_args_is_help=True)
    app.add_typer(store_app, name="store")

    def build(target: dict, picked: dict, shown: dict) -> None:
        import os

        from ..options import comma_split
        from ..progress import Reporter
        from .plan import ModelRef, default_cache_dir, make_config

        t = StoreTarget(**target)
        progress = ProgressBar(**shown).progress
        cfg = make_config({**picked, "datasets": comma_split(t.dataset),
                           "models": [ModelRef.parse(t.model)], "variants": [t.variant],
                           "output_dir": picked.get("cache_dir") or str(default_cache_dir())})
        chunk_docs = t.chunk_docs
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

    typer_command(store_app, "build", (StoreTarget, Pick(EffectivenessConfig, SHARED),
                                       ProgressBar), build, help=HELP, wrap=user_errors)

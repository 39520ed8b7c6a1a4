"""``mice-bench effectiveness``: in-domain and out-of-domain re-ranking evaluation."""

from __future__ import annotations

import json
from typing import List, Optional

import typer

from ..evaluation.metrics import DEFAULT_MEASURES

HELP = """Re-ranking effectiveness of interaction variants (nDCG@10, RR@10, R@100) with
significance tests against a baseline, on in-domain (MS MARCO dev, TREC DL 19/20) and
out-of-domain (13 BEIR) datasets. Writes one JSON + TREC run per (model, variant, dataset)
and a summary table (Markdown, JSON) under --output-dir. See docs/effectiveness.md.
"""


def config_from_options(datasets: str, models: list[str], variants: str | None,
                        first_stage: list[str], docs: list[str], measures: str, **kw):
    """The command line's spellings -> a typed :class:`EffectivenessConfig`.

    ``--datasets``, ``--variants`` and ``--measures`` are comma-separated; ``--model`` is
    ``PATH`` or ``LABEL=PATH``; ``--first-stage`` / ``--docs`` take one value for every
    dataset and ``DATASET=VALUE`` for one (a value may itself hold ``=``, as in
    ``run:a=b.trec``: only a known dataset name before ``=`` makes it an override).
    Without ``--variants``: ``bm25`` and the variant stored in each mice-bench checkpoint.
    """
    from ..spec import split_names
    from ..data.collections import resolve_datasets
    from ..evaluation.metrics import split_measures
    from .plan import BM25, EffectivenessConfig, ModelRef, split_overrides

    refs = [ModelRef.parse(m) for m in models]
    if variants is None:
        from ..model import checkpoint_variant

        stored = [v for v in (checkpoint_variant(r.name) for r in refs) if v]
        variant_list = [BM25, *dict.fromkeys(stored)]
    else:
        variant_list = split_names(variants)
    dataset_list = [x.strip() for x in datasets.split(",") if x.strip()]
    names = [d.name for d in resolve_datasets(dataset_list)]

    fs, fs_for = split_overrides(first_stage, names, "--first-stage")
    dc, dc_for = split_overrides(docs, names, "--docs")
    return EffectivenessConfig(
        datasets=dataset_list, models=refs, variants=variant_list,
        first_stage=fs or BM25, first_stage_for=fs_for, docs=dc, docs_for=dc_for,
        measures=split_measures(measures), **kw)


def config_to_args(cfg) -> list[str]:
    """The ``mice-bench effectiveness`` command line that gives ``cfg`` (the inverse of
    :func:`config_from_options`; studies print it as the equivalent command). Options at
    their default are left out."""
    from dataclasses import fields

    from .plan import EffectivenessConfig

    default = EffectivenessConfig(device="auto")    # the command line's defaults
    a = ["effectiveness", "--datasets", ",".join(cfg.datasets)]
    for m in cfg.models:
        a += ["--model", f"{m.label}={m.name}" if m.label else m.name]
    a += ["--variants", ",".join(cfg.variants)]
    for opt, value, per in (("--first-stage", cfg.first_stage, cfg.first_stage_for),
                            ("--docs", cfg.docs, cfg.docs_for)):
        if value is not None and not (opt == "--first-stage" and value == "bm25"):
            a += [opt, value]
        for ds, v in per.items():
            a += [opt, f"{ds}={v}"]
    if cfg.measures != default.measures:
        a += ["--measures", ",".join(cfg.measures)]
    skip = {"datasets", "models", "variants", "first_stage", "first_stage_for", "docs",
            "docs_for", "measures", "alpha"}
    for f in fields(cfg):
        v = getattr(cfg, f.name)
        if f.name not in skip and v is not None and v != getattr(default, f.name):
            opt = f.name.replace('_', '-')
            a += [f"--{opt}" if v else f"--no-{opt}"] if isinstance(v, bool) else \
                [f"--{opt}", str(v)]
    return a


def register(app: typer.Typer) -> None:
    from ..console import console, user_errors

    @app.command("effectiveness", help=HELP)
    @user_errors
    def effectiveness(
        datasets: str = typer.Option(
            "scifact", "--datasets",
            help="comma-separated names (dl19, scifact, ...), groups id | beir | all, or "
                 "irds:<ir_datasets id>"),
        model: List[str] = typer.Option(
            [], "--model",
            help="HF id or local path; repeat for seeds of one system; LABEL=PATH names it"),
        variants: Optional[str] = typer.Option(
            None, "--variants", help="comma-separated: bm25,ce,mask1,mice-l4+3,colbert,... "
            "(default: bm25 and the variant stored in each mice-bench checkpoint)"),
        first_stage: List[str] = typer.Option(
            ["bm25"], "--first-stage",
            help="bm25 | run:PATH | full; DATASET=SPEC overrides one dataset; {dataset} in "
                 "PATH is replaced by the dataset name"),
        docs: List[str] = typer.Option(
            [], "--docs", help="JSONL (doc_id, text) with the document texts; DATASET=PATH "
                               "for one dataset; {dataset} is replaced"),
        depth: int = typer.Option(100, "--depth", help="candidates per query"),
        measures: str = typer.Option(",".join(DEFAULT_MEASURES), "--measures",
                                     help="ir_measures names, comma-separated"),
        baseline: Optional[str] = typer.Option(
            None, "--baseline", help="variant tested against (default ce if run, else bm25)"),
        test: str = typer.Option("ttest", "--test", help="ttest | randomization"),
        correction: str = typer.Option("holm", "--correction", help="holm | bonferroni | none"),
        batch_size: int = typer.Option(32, "--batch-size", help="pairs per forward"),
        doc_batch_size: int = typer.Option(64, "--doc-batch-size",
                                           help="documents per forward when precomputing"),
        dtype: str = typer.Option("fp32", "--dtype",
                                  help="fp32 | bf16 | int8 (dynamic int8 linear layers, CPU) "
                                       "| fp16"),
        device: str = typer.Option("auto", "--device", help="auto | cpu | cuda[:N]"),
        executor: str = typer.Option("auto", "--executor", help="auto | fast | reference"),
        runtime: str = typer.Option(
            "torch", "--runtime", help="torch | ort (the variants' ONNX export under "
                                       "onnxruntime, pairs scored through the graphs; pip "
                                       "install 'mice-bench[onnx]')"),
        query_max_tokens: Optional[int] = typer.Option(
            None, "--query-max-tokens",
            help="query word pieces (default: the variant's reference setting, see docs/spec.md)"),
        doc_max_tokens: Optional[int] = typer.Option(
            None, "--doc-max-tokens",
            help="document word pieces (default: the variant's reference setting)"),
        limit_queries: Optional[int] = typer.Option(None, "--limit-queries",
                                                    help="first N judged queries only"),
        seed: int = typer.Option(0, "--seed", help="seed (random heads, randomization test)"),
        output_dir: Optional[str] = typer.Option(
            None, "--output-dir", help="where result files go (default ./mice-bench-results/"
            "effectiveness or $MICE_BENCH_RESULTS/effectiveness; never the committed results/ "
            "unless given)"),
        cache_dir: Optional[str] = typer.Option(
            None, "--cache-dir", help="score/state/index caches (default "
                                      "~/.cache/mice-bench/effectiveness, $MICE_BENCH_CACHE)"),
        summary_name: str = typer.Option("summary", "--summary-name",
                                         help="summary files OUTPUT-DIR/NAME.md and NAME.json"),
        doc_store: str = typer.Option(
            "fp16", "--doc-store", help="document-state store: fp16 | fp32 | int8 (per-token "
                                        "scaled; a quarter of fp32) | residual1 | residual2 | "
                                        "residual4 (ColBERTv2-style centroid id + b bits per "
                                        "dimension; needs the storage extra, faiss-cpu)"),
        pool_factor: int = typer.Option(
            1, "--pool-factor", help="split-first variants: each stored document's tokens "
                                     "pooled to about 1/N (hierarchical clustering, Ward; "
                                     "each cluster's mean), 1: none"),
        codec_sample_tokens: Optional[int] = typer.Option(
            None, "--codec-sample-tokens",
            help="residual stores: stored tokens the codec is trained on (default 262144; "
                 "as store build)"),
        gzip_runs: bool = typer.Option(
            True, "--gzip-runs/--no-gzip-runs",
            help="write each TREC run as <variant>.trec.gz (ir_measures reads it) or plain"),
        local_attention: str = typer.Option(
            "window", "--local-attention",
            help="ModernBERT's local layers: window (the checkpoint's sliding window, as "
                 "Hugging Face and flash attention run it) | global (every position, as the "
                 "MICE reference's eager attention runs it)"),
        format_: str = typer.Option("table", "--format", help="table | json"),
        progress: bool = typer.Option(True, "--progress/--no-progress"),
    ) -> None:
        from ..errors import UsageError
        from ..progress import Reporter
        from .runner import run_effectiveness
        from ..evaluation.table import legend, rich_table

        if format_ not in ("table", "json"):
            raise UsageError(f"unknown --format {format_!r}; valid: table, json")
        cfg = config_from_options(
            datasets=datasets, models=list(model), variants=variants,
            first_stage=list(first_stage), docs=list(docs), depth=depth,
            measures=measures, baseline=baseline, test=test, correction=correction,
            batch_size=batch_size, doc_batch_size=doc_batch_size, dtype=dtype, device=device,
            executor=executor, query_max_tokens=query_max_tokens, doc_max_tokens=doc_max_tokens,
            limit_queries=limit_queries, seed=seed, cache_dir=cache_dir,
            **({"output_dir": output_dir} if output_dir else {}),
            summary_name=summary_name, doc_store=doc_store, gzip_runs=gzip_runs,
            pool_factor=pool_factor, codec_sample_tokens=codec_sample_tokens,
            local_attention=local_attention, runtime=runtime)
        try:
            summary = run_effectiveness(cfg, Reporter(enabled=progress and format_ == "table"))
        except KeyboardInterrupt:
            from ..console import err_console

            from rich.markup import escape

            err_console.print("[bold yellow]interrupted[/]: every query scored so far is cached "
                              f"under {escape(str(cfg.cache_path()))}; run the same command "
                              "again to resume.", highlight=False)
            raise typer.Exit(code=130) from None
        import os

        if int(os.environ.get("RANK", "0")) != 0:      # torchrun: rank 0 prints
            return
        if format_ == "json":
            typer.echo(json.dumps(summary.to_dict(), indent=1, ensure_ascii=False))
        else:
            for m in summary.measures:
                console.print(rich_table(summary, m))
            console.print(legend(summary), highlight=False, markup=False)
            console.print(f"results in {cfg.output_dir}/ (summary: {summary_name}.md, "
                          f"{summary_name}.json)", highlight=False, markup=False)

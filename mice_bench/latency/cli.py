"""``mice-bench latency``: latency / throughput / memory of interaction variants."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Optional

import typer

HELP = """Measure latency, throughput, peak memory and FLOPs of interaction variants.

Default: MiniLM-L12-H384 architecture with random weights, variants ce,mice-l4+3,colbert, rerank protocol (1 query of 32 tokens, 32 candidates of 128 tokens in batches of 16, documents precomputed), device auto. Prints a table and writes ./mice-bench-results/latency/*.json ($MICE_BENCH_RESULTS/latency if set; committed results: pass --output results/latency/NAME.json). See docs/latency.md.
"""


def _int_list(text: str, name: str) -> list[int]:
    from ..errors import UsageError

    try:
        vals = [int(x) for x in str(text).replace(" ", "").split(",") if x]
    except ValueError:
        raise UsageError(f"{name} takes an integer or a comma-separated list, got {text!r}") \
            from None
    if not vals:
        raise UsageError(f"{name} is empty")
    return vals


def default_output(protocol: str, device: str) -> Path:
    """The results file of a run without ``--output``: in the ad-hoc results folder
    (:func:`mice_bench.results.default_results_dir`: ``$MICE_BENCH_RESULTS/latency`` or
    ``./mice-bench-results/latency``), never in the committed ``results/latency/``."""
    from ..results import default_results_dir

    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return default_results_dir("latency") / f"latency-{protocol}-{device}-{stamp}.json"


def _default_variants(model: str) -> list[str]:
    """The variant stored in a mice-bench checkpoint, else the default comparison."""
    from ..backbones.files import checkpoint_layers
    from ..model import checkpoint_variant
    from .config import DEFAULT_VARIANTS

    stored = checkpoint_variant(model)
    if stored:
        return [stored]
    layers = checkpoint_layers(model)
    if layers is None:
        return list(DEFAULT_VARIANTS)
    # the default comparison, its MICE fitted to the model's depth (mice-l4+3 needs 7 layers)
    from ..spec import SpecError, fitted, parse

    out = []
    for name in DEFAULT_VARIANTS:
        try:
            parse(name).validate(layers)
            out.append(name)
        except SpecError:
            if name.startswith("mice-"):
                out.append(str(fitted("mice", layers)))
    return out


def register(app: typer.Typer) -> None:
    from ..console import console, err_console, user_errors
    from ..results import json_default
    from ..spec import split_names

    @app.command("latency", help=HELP)
    @user_errors
    def latency(
        model: str = typer.Option("minilm-l12", "--model",
                                  help="an architecture with random weights: minilm-l12 | "
                                       "minilm-l6 (BERT), electra-base, roberta-base, "
                                       "modernbert-base, ettin-17m | ettin-32m | ettin-68m | "
                                       "ettin-150m (ModernBERT); a HF id or a local path"),
        variants: Optional[str] = typer.Option(None, "--variants",
                                     help="comma-separated variant names"),
        protocol: str = typer.Option("rerank", "--protocol", help="rerank | paper"),
        batch_size: Optional[str] = typer.Option(
            None, "--batch-size", help="N or N,N,... (sweep); default rerank 16, paper 128"),
        query_tokens: Optional[int] = typer.Option(
            None, "--query-tokens", help="query length in tokens (rerank; default 32)"),
        doc_tokens: Optional[str] = typer.Option(
            None, "--doc-tokens", help="N or N,N,... (sweep); default rerank 128, paper 512"),
        depth: Optional[int] = typer.Option(None, "--depth",
                                            help="candidates per query (rerank; default 32)"),
        precompute: Optional[bool] = typer.Option(
            None, "--precompute/--no-precompute",
            help="documents encoded before timing (rerank default: on; paper: both)"),
        kv_cache: bool = typer.Option(False, "--kv-cache/--no-kv-cache",
                                      help="also precompute per-layer document K/V"),
        doc_vectors: bool = typer.Option(
            True, "--doc-vectors/--no-doc-vectors",
            help="colbert / biencoder with precomputed documents: store the head's vectors "
                 "(colbert: projected unit vectors, a ColBERT index; biencoder: one pooled, "
                 "normalised vector; default) or the last-layer states (projected / pooled "
                 "online)"),
        doc_store: Optional[str] = typer.Option(
            None, "--doc-store", help="precomputed documents read from a compressed store, "
                                      "decoded inside every timed run: fp32 | fp16 | int8 | "
                                      "residual1 | residual2 | residual4 (default: in memory "
                                      "as encoded)"),
        pool_factor: str = typer.Option(
            "1", "--pool-factor", help="with --doc-store: each document's stored tokens pooled "
                                       "to about 1/N (comma-separated: one row per factor, "
                                       "timed in the same interleaved run), 1: none"),
        dtype: str = typer.Option("fp32", "--dtype", help="fp32 | bf16 | bf16-autocast | int8 | "
                                 "fp16 | auto, or a comma-separated list timed in the same "
                                 "interleaved run"),
        device: str = typer.Option("auto", "--device", help="auto | cpu | cuda"),
        compile_: bool = typer.Option(False, "--compile", help="torch.compile the executors"),
        prepack: bool = typer.Option(
            False, "--prepack", help="every row's linear layers on weights packed once for "
                                     "MKL (fp32 CPU; same scores) instead of packed on "
                                     "every call"),
        warmup: Optional[int] = typer.Option(None, "--warmup",
                                             help="warm-up runs (rerank 1, paper 5)"),
        runs: Optional[int] = typer.Option(None, "--runs",
                                           help="minimum timed runs (rerank 5, paper 10)"),
        min_seconds: Optional[float] = typer.Option(
            None, "--min-seconds", help="minimum timed seconds (rerank 1, paper 0)"),
        threads: Optional[int] = typer.Option(None, "--threads", help="torch CPU threads"),
        output: Optional[Path] = typer.Option(
            None, "--output", help="results JSON (default ./mice-bench-results/latency/"
                                   "latency-*.json, or under $MICE_BENCH_RESULTS)"),
        format_: str = typer.Option("table", "--format", help="table | json"),
        progress: bool = typer.Option(True, "--progress/--no-progress",
                                      help="progress bar on stderr (only on a terminal)"),
        runtime: str = typer.Option(
            "torch", "--runtime", help="torch (mice-bench's executors) | ort (their ONNX "
                                       "export under onnxruntime; pip install "
                                       "'mice-bench[onnx]')"),
        peers: Optional[str] = typer.Option(
            None, "--peers", help="peer runtimes timed in the same run, comma-separated: hf "
                                  "(transformers eager), st (sentence-transformers "
                                  "CrossEncoder), st-onnx (its ONNX backend), ort (mice-bench's "
                                  "ONNX export); pip install 'mice-bench[peers]'"),
        executor: str = typer.Option("auto", "--executor", hidden=True),
        seed: int = typer.Option(0, "--seed", hidden=True),
        schedule: str = typer.Option("interleaved", "--schedule", hidden=True),
    ) -> None:
        from rich.markup import escape

        from ..devices import placement
        from .config import LatencyConfig, parse_variants
        from .progress import LatencyProgress
        from .runner import run_latency
        from .table import render

        from ..errors import UsageError

        if variants is not None and not split_names(variants):
            raise UsageError("--variants is empty; give variant names (e.g. ce,mice-l4+3) or "
                             "leave the option out for the default comparison")
        if protocol == "paper":          # options the paper protocol has no use for
            given = [o for o, v in (("--query-tokens", query_tokens), ("--depth", depth))
                     if v is not None]
            if given:
                raise UsageError(f"{' and '.join(given)} apply to the rerank protocol; the "
                                 "paper protocol scores --batch-size pairs of --doc-tokens "
                                 "tokens (drop them or use --protocol rerank)")
        for d in dtype.split(","):   # device and dtype first: the default variants read the model
            placement(device, d)
        cfg = LatencyConfig(
            model=model,
            variants=split_names(variants) if variants else _default_variants(model),
            protocol=protocol,
            batch_sizes=_int_list(batch_size, "--batch-size") if batch_size else None,
            query_tokens=query_tokens,
            doc_tokens=_int_list(doc_tokens, "--doc-tokens") if doc_tokens else None,
            depth=depth, precompute=precompute, kv_cache=kv_cache, doc_vectors=doc_vectors,
            doc_store=doc_store, pool_factors=_int_list(pool_factor, "--pool-factor"),
            dtype=dtype, device=device,
            compile=compile_, prepack=prepack, warmup=warmup, runs=runs, min_seconds=min_seconds,
            threads=threads, executor=executor, seed=seed, schedule=schedule,
            runtime=runtime, peers=peers.split(",") if peers else [],
            output=str(output) if output else None, format=format_,
        )
        c = cfg.resolved()  # fail fast on bad options, then on bad variants, device, dtype
        parse_variants(c.variants)
        for d in c.dtype_list():
            placement(c.device, d)
        # where the results go, checked before the model is loaded or anything measured
        out = Path(cfg.output) if cfg.output else default_output(cfg.protocol,
                                                                 cfg.device_type())
        from ..results import check_output

        check_output(out)

        def log(msg: str) -> None:
            err_console.print(f"[dim]{escape(msg)}[/]", highlight=False, soft_wrap=True)

        res = run_latency(cfg, log=log, progress=LatencyProgress(progress))
        res.config["output"] = str(out)
        res.save(out)
        if cfg.format == "json":
            typer.echo(json.dumps(res.to_doc(), indent=1, default=json_default))
        else:
            from rich.console import Console

            # piped output: do not squeeze the wide table into 80 columns
            out_console = console if console.is_terminal else Console(width=200)
            for t in render(res, str(out)):
                out_console.print(t.rich())
        err_console.print(f"results written to {out}", highlight=False)

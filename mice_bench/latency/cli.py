"""``mice-bench latency``: latency / throughput / memory of interaction variants."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import typer

HELP = """Measure latency, throughput, peak memory and FLOPs of interaction variants.

Default: MiniLM-L12-H384 architecture with random weights, variants ce,mice-l4+3,colbert, rerank protocol (1 query of 32 tokens, 32 candidates of 128 tokens in batches of 16, documents precomputed), device auto. Prints a table and writes ./mice-bench-results/latency/*.json ($MICE_BENCH_RESULTS/latency if set; committed results: pass --output results/latency/NAME.json). See docs/latency.md.
"""


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
    from ..options import ProgressBar, typer_command
    from ..results import json_default
    from .config import PANELS, LatencyConfig

    def latency(options: dict, shown: dict) -> None:
        from rich.markup import escape

        from ..devices import placement
        from ..errors import UsageError
        from .config import parse_variants
        from .progress import LatencyProgress
        from .runner import run_latency
        from .table import render

        progress = ProgressBar(**shown).progress
        if options.get("variants") == []:
            raise UsageError("--variants is empty; give variant names (e.g. ce,mice-l4+3) or "
                             "leave the option out for the default comparison")
        if options.get("protocol") == "paper":   # options the paper protocol has no use for
            given = [f"--{k.replace('_', '-')}" for k in ("query_tokens", "depth")
                     if k in options]
            if given:
                raise UsageError(f"{' and '.join(given)} apply to the rerank protocol; the "
                                 "paper protocol scores --batch-size pairs of --doc-tokens "
                                 "tokens (drop them or use --protocol rerank)")
        cfg = LatencyConfig(**options)
        for d in cfg.dtype.split(","):   # device and dtype first: default variants read the model
            placement(cfg.device, d)
        if "variants" not in options:
            cfg.variants = _default_variants(cfg.model)
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

    typer_command(app, "latency", (LatencyConfig, ProgressBar), latency, help=HELP,
                  wrap=user_errors, panels=PANELS)

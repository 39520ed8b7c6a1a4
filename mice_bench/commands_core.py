"""Core CLI commands: ``variants`` (list / show) and ``verify`` (fast vs reference)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table
from rich.text import Text

#: what ``--model`` takes (verify, variants show; latency/cli.py says the same)
MODEL_HELP = ("an architecture with random weights: minilm-l12 | minilm-l6 (BERT), "
              "electra-base, roberta-base, modernbert-base, ettin-17m | ettin-32m | ettin-68m | "
              "ettin-150m (ModernBERT); a Hugging Face id or a local checkpoint directory")


def model_layers(model: str) -> int:
    """The layer count of an architecture name, hub id or checkpoint (config only):
    :func:`~mice_bench.backbones.files.checkpoint_layers`, and a hub id's config."""
    from .backbones.files import checkpoint_layers
    from .errors import UsageError

    n = checkpoint_layers(model)
    if n is not None:
        return n
    try:
        from transformers import AutoConfig

        return int(AutoConfig.from_pretrained(model).num_hidden_layers)
    except Exception as e:  # noqa: BLE001
        raise UsageError(f"--model {model}: cannot read its config ({type(e).__name__}); "
                         f"valid: {MODEL_HELP}") from None


def register(app: typer.Typer) -> None:
    from .console import console, user_errors

    variants_app = typer.Typer(help="List interaction-spec presets or show one's matrices.",
                               invoke_without_command=True, no_args_is_help=False)
    app.add_typer(variants_app, name="variants")

    @variants_app.callback()
    def variants(ctx: typer.Context,
                 layers: int = typer.Option(12, "--layers", min=1,
                                            help="Layer count used to instantiate presets.")):
        """List every preset with a one-line description."""
        if ctx.invoked_subcommand is not None:
            return
        from .families import OPTIONS, REGISTRY
        from .spec import parse

        table = Table(title=f"interaction-spec presets (examples on {layers} layers)")
        table.add_column("preset", no_wrap=True)
        table.add_column("layout")
        table.add_column("head")
        table.add_column("fast path", no_wrap=True)
        table.add_column("description")
        for fam in REGISTRY.values():
            pattern, desc = fam.pattern, fam.description
            spec = parse(fam.example or pattern)
            try:
                fast = spec.fast_path(layers) or "reference only"
            except Exception:  # noqa: BLE001 - pattern does not fit a tiny layer count
                fast = "-"
            # names and descriptions hold [options] and [CLS]: literal text, not Rich markup
            table.add_row(Text(pattern), spec.layout, spec.head, Text(str(fast)), Text(desc))
        console.print(table)
        console.print("Options in brackets (e.g. mice-l4+3[order=self], colbert[proj=0,qaug=0]):",
                      markup=False, highlight=False)
        for key, (_, _, help_text) in OPTIONS.items():
            console.print(f"  {key}: {help_text}", markup=False, highlight=False)
        console.print("`mice-bench variants show NAME` prints the per-layer matrices.",
                      markup=False, highlight=False)

    @variants_app.command("show")
    @user_errors
    def show(name: str = typer.Argument(..., help="Variant name, e.g. mice-l4+3."),
             layers: int = typer.Option(12, "--layers", min=1, help="Number of model layers."),
             png: Optional[Path] = typer.Option(None, "--png", help="Save a heatmap figure."),
             model: Optional[str] = typer.Option(
                 None, "--model", help="Take the layer count from this model (" + MODEL_HELP
                 + "); overrides --layers.")):
        """Print the per-layer segment-to-segment interaction matrix of a variant."""
        from .spec import parse
        from .viz import check_figure_path, matrix_text, plot_matrices

        spec = parse(name)
        if png is not None:                  # the figure's path, checked before any work
            png = check_figure_path(png)
        if model is not None:
            layers = model_layers(model)
        spec.validate(layers)
        console.print(matrix_text(spec, layers), highlight=False, markup=False)
        if png is not None:
            plot_matrices(spec, layers, png)
            console.print(f"saved {png}", highlight=False, markup=False)

    @app.command("verify")
    @user_errors
    def verify(
        model: str = typer.Option("minilm-l6", "--model", help=MODEL_HELP + "."),
        variants: str = typer.Option("", "--variants",
                                     help="Comma-separated variants (default: every preset)."),
        pairs: int = typer.Option(8, "--pairs", min=1, help="Random (query, doc) pairs."),
        tolerance: Optional[float] = typer.Option(
            None, "--tolerance", help="Max allowed |fast - ref| (default: 1e-4 in fp32, 0.05 in "
                                      "bf16, bf16-autocast, int8, fp16)."),
        dtype: str = typer.Option("fp32", "--dtype",
                                  help="fp32 | bf16 | bf16-autocast | int8 | fp16 | auto "
                                       "(fp16: CUDA only); not fp32: also every variant "
                                       "against fp32, max |diff| / fp32 score spread within "
                                       "0.25 (int8: 0.30)"),
        device: str = typer.Option("cpu", "--device", help="cpu|cuda|cuda:N|auto"),
        seed: int = typer.Option(0, "--seed"),
    ):
        """Run fast and reference executors on random texts; exit 1 if they disagree (or,
        in another precision than fp32, if a variant's scores stray from fp32's)."""
        import math

        from .devices import placement
        from .errors import UsageError
        from .verify import DTYPE_TOLERANCE, FAST_TOLERANCE, verify_variants

        if tolerance is not None and (not math.isfinite(tolerance) or tolerance <= 0):
            raise UsageError(f"--tolerance {tolerance}: must be a finite number > 0 (the "
                             "largest allowed |fast - reference| score difference, e.g. 1e-4)")
        prec = placement(device, dtype).dtype
        tol = tolerance if tolerance is not None else FAST_TOLERANCE[prec]
        dtol = DTYPE_TOLERANCE.get(prec)

        rows, bb = verify_variants(model, variants or None, pairs=pairs, dtype=dtype,
                                   device=device, seed=seed)
        from rich.markup import escape

        table = Table(title=escape(f"fast vs reference on {bb.describe()}, {pairs} pairs, "
                                   f"{prec}"))
        cols = ["variant", "fast path", "max |fast - ref|"]
        if dtol is not None:
            cols.append(f"vs fp32 (max |diff| / spread, <= {dtol:g})")
        for c in (*cols, "status"):
            table.add_column(c)
        bad = False
        for r in rows:
            fails = []
            if r["max_abs_diff"] is not None and r["max_abs_diff"] > tol:
                fails.append(f"fast vs ref > {tol:g}")
            if dtol is not None and r["vs_fp32"] > dtol:
                fails.append(f"vs fp32 > {dtol:g}")
            bad |= bool(fails)
            cells = [Text(r["variant"]), Text(str(r["fast_path"] or "none")),
                     "-" if r["max_abs_diff"] is None else f"{r['max_abs_diff']:.2e}"]
            if dtol is not None:
                cells.append(f"{r['vs_fp32']:.3f}")
            status = ("[red]FAIL (" + "; ".join(fails) + ")[/]" if fails else
                      "[green]ok[/]" if r["max_abs_diff"] is not None or dtol is not None
                      else "reference only")
            # variant names carry [options]: literal text, not rich markup
            table.add_row(*cells, status)
        console.print(table)
        if bad:
            raise typer.Exit(code=1)

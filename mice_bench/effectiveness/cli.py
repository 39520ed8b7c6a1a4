"""``mice-bench effectiveness``: in-domain and out-of-domain re-ranking evaluation."""

from __future__ import annotations

import json

import typer

HELP = """Re-ranking effectiveness of interaction variants (nDCG@10, RR@10, R@100) with
significance tests against a baseline, on in-domain (MS MARCO dev, TREC DL 19/20) and
out-of-domain (13 BEIR) datasets. Writes one JSON + TREC run per (model, variant, dataset)
and a summary table (Markdown, JSON) under --output-dir. See docs/effectiveness.md.
"""


def config_from_options(**options):
    """The command line's spellings, keyed by field (``datasets="dl19,scifact"``,
    ``models=["s1=minilm-l6"]``, ``first_stage=["bm25", "dl19=run:a.trec"]``, ...) -> a typed
    :class:`~.plan.EffectivenessConfig` (:func:`~.plan.make_config`)."""
    from ..options import given
    from .plan import EffectivenessConfig, make_config

    return make_config(given(EffectivenessConfig, options))


def config_to_args(cfg) -> list[str]:
    """The ``mice-bench effectiveness`` command line that gives ``cfg`` (studies print it as
    the equivalent command); options at the command line's default are left out."""
    from ..options import to_args

    return to_args(cfg, "effectiveness")


def register(app: typer.Typer) -> None:
    from ..console import console, user_errors
    from ..options import Display, typer_command
    from .plan import EffectivenessConfig

    def effectiveness(options: dict, display: dict) -> None:
        from ..progress import Reporter
        from .plan import make_config
        from .runner import run_effectiveness
        from ..evaluation.table import legend, rich_table

        show = Display(**display)
        format_, progress = show.format, show.progress
        cfg = make_config(options)
        summary_name = cfg.summary_name
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

    typer_command(app, "effectiveness", (EffectivenessConfig, Display), effectiveness,
                  help=HELP, wrap=user_errors)

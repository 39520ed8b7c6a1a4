"""``mice-bench export``: write a variant's scoring graphs as ONNX (see ``docs/export.md``)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

HELP = """Export a variant as ONNX graphs: ce as one graph (pairs -> scores); variants with document precomputation (mice, colbert, biencoder) as three graphs (documents -> stored states, head vectors or embeddings; query -> query states or embedding, run once per query; query states + stored documents -> scores, run per batch of candidates). Batch and lengths are dynamic. The export is checked against the PyTorch path with onnxruntime (within 1e-4 of the score spread) unless --no-check. Writes the graphs and export.json into --output. See docs/export.md.
"""


def register(app: typer.Typer) -> None:
    from rich.markup import escape

    from ..console import err_console, user_errors

    @app.command("export", help=HELP)
    @user_errors
    def export(
        output: Path = typer.Option(..., "--output", help="folder to write (absent or empty)"),
        model: str = typer.Option("minilm-l12", "--model",
                                  help="an architecture with random weights (minilm-l12, "
                                       "minilm-l6, electra-base, roberta-base), a HF id or a "
                                       "local path"),
        variant: str = typer.Option("ce", "--variant", help="one variant name"),
        format_: str = typer.Option("onnx", "--format", help="onnx"),
        query_tokens: Optional[int] = typer.Option(
            None, "--query-tokens", help="query word pieces (default: the variant's)"),
        doc_tokens: Optional[int] = typer.Option(
            None, "--doc-tokens", help="document word pieces (default: the variant's)"),
        check: bool = typer.Option(True, "--check/--no-check",
                                   help="compare with the PyTorch path under onnxruntime"),
        opset: int = typer.Option(17, "--opset", help="ONNX opset"),
    ) -> None:
        from ..errors import UsageError
        from ..spec import parse
        from .onnx import FORMATS, check_export_folder

        if format_ not in FORMATS:
            raise UsageError(f"unknown --format {format_!r}; valid: {', '.join(FORMATS)}")
        for name, v in (("--query-tokens", query_tokens), ("--doc-tokens", doc_tokens)):
            if v is not None and v < 1:
                raise UsageError(f"{name} must be >= 1, got {v}")
        if not 13 <= opset <= 20:
            raise UsageError(f"--opset must be from 13 to 20, got {opset}")
        spec = parse(variant)           # unknown names fail before the model is loaded
        check_export_folder(output)
        if check:
            from .onnx import require_onnxruntime

            require_onnxruntime()
        from ..backbone import load_backbone
        from ..executors import make_executor
        from .graphs import check_exportable
        from .onnx import ExportCheckError, export_onnx

        bb = load_backbone(model)
        ex = make_executor(spec, bb, query_max_tokens=query_tokens, doc_max_tokens=doc_tokens)
        check_exportable(ex)
        try:
            m = export_onnx(ex, output, model=model, check=check, opset=opset)
        except ExportCheckError as e:   # nothing is left behind
            err_console.print(f"[bold red]error:[/] {escape(str(e))}; nothing written",
                              highlight=False,
                              soft_wrap=True)
            raise typer.Exit(code=1) from None
        files = ", ".join(g["file"] for g in m["graphs"].values())
        c = m.get("check")
        said = (f"; checked: max |diff| {c['max_abs_diff']:.2g} over a score spread of "
                f"{c['score_spread']:.3g}" if c else "; not checked")
        err_console.print(f"{m['variant']} exported to {output} ({files}){said}",
                          highlight=False, soft_wrap=True, markup=False)

"""Variant names carry ``[options]`` (``colbert[proj=0,qaug=0]``, ``mice-l4+3[order=self]``)
and descriptions ``[CLS]`` / ``[MASK]``: every such string reaches the terminal as literal text,
never as Rich markup (which drops a lower-case ``[tag]``). Each test renders through Rich's own
Console into a string and looks for the exact name."""

from __future__ import annotations

import io

from rich.console import Console
from typer.testing import CliRunner

from mice_bench.cli import app

OPT = "colbert[proj=0,qaug=0]"
SELF_FIRST = "mice-l4+3[order=self]"


def rendered(*objs) -> str:
    """What Rich prints for ``objs`` on a wide terminal without colours."""
    buf = io.StringIO()
    con = Console(file=buf, width=250, color_system=None, force_terminal=True)
    for o in objs:
        con.print(o)
    return buf.getvalue()


def test_rich_markup_would_drop_the_options_without_escaping():
    """The hazard the tests below guard against: Rich reads ``[proj=0,qaug=0]`` as a tag."""
    assert OPT not in rendered(OPT)


def test_effectiveness_terminal_table_shows_variant_options_and_model():
    from mice_bench.evaluation.summary import Cell, EffectivenessSummary, Row, SummaryDataset
    from mice_bench.evaluation.table import rich_table

    rows = [Row("bm25", [], {"A": {"m1": Cell(0.5, None, [0.5], 3)}}, {"A": ["b.json"]}, {}),
            Row(OPT, ["mini"], {"A": {"m1": Cell(0.25, None, [0.25], 3)}}, {"A": ["c.json"]},
                {})]
    s = EffectivenessSummary(["m1"], OPT, "ttest", "bonferroni", 0.05,
                             [SummaryDataset("A", None, "id", "bm25")], rows, {"m1": 1})
    text = rendered(rich_table(s, "m1"))
    assert f"{OPT} (mini)" in text
    assert f"(baseline {OPT})" in text


def test_variants_show_heads_and_describes_the_self_first_option():
    r = CliRunner().invoke(app, ["variants", "show", SELF_FIRST, "--layers", "12"],
                           terminal_width=250)
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert lines[0].startswith(f"{SELF_FIRST}  (split layout")
    text = " ".join(r.output.split())
    # self-attention first, then the cross-attention sub-layer (not the cross-first preset's)
    assert "first attends itself, then reads the frozen document through its own " \
           "cross-attention sub-layer" in text
    assert "cross-attention sub-layer, then attends itself" not in text
    plain = CliRunner().invoke(app, ["variants", "show", "mice-l4+3", "--layers", "12"],
                               terminal_width=250)
    assert "cross-attention sub-layer, then attends itself" in " ".join(plain.output.split())


def test_progress_bar_description_keeps_the_variant_options():
    from mice_bench.progress import Reporter

    buf = io.StringIO()
    con = Console(file=buf, width=250, color_system=None, force_terminal=True)
    with Reporter(enabled=True, console=con).task(f"scoring {OPT}", 2) as advance:
        advance(2)
    assert f"scoring {OPT}" in buf.getvalue()


def test_latency_progress_keeps_the_variant_options():
    from mice_bench.latency.progress import LatencyProgress

    buf = io.StringIO()
    con = Console(file=buf, width=250, color_system=None, force_terminal=True)
    p = LatencyProgress(enabled=True, console=con)
    p.start(1)
    p.stage(SELF_FIRST, "warmup")
    p.stop()
    assert f"{SELF_FIRST} warmup" in buf.getvalue()


def test_store_build_summary_line_keeps_the_variant_options(monkeypatch):
    from mice_bench.effectiveness import storecli

    row = {"dataset": "dl19", "variant": SELF_FIRST, "stored": 3, "docs": 3, "chunks": 1,
           "encoded": 3, "chunks_reused": 0, "per_rank": [3], "bytes": 2048,
           "bytes_per_token": 4.0, "seconds": 0.5, "store": "/cache/docstates/s4[x]"}
    monkeypatch.setattr(storecli, "build_stores", lambda cfg, chunk, rep: [row])
    r = CliRunner().invoke(app, ["store", "build", "--model", "minilm-l6", "--variant",
                                 SELF_FIRST, "--no-progress"], terminal_width=250)
    assert r.exit_code == 0, r.output
    assert f"dl19 {SELF_FIRST}: 3 documents stored" in r.output
    assert "store: /cache/docstates/s4[x]" in r.output


def test_report_summary_line_keeps_a_bracketed_output_folder(tmp_path):
    results = tmp_path / "results"
    (results / "latency").mkdir(parents=True)
    out = tmp_path / "rep[v1]"
    r = CliRunner().invoke(app, ["report", "--results", str(results), "--out", str(out),
                                 "--ablations", str(tmp_path / "none")], terminal_width=400)
    assert r.exit_code == 0, r.output
    assert f"report written to {out}/" in " ".join(r.output.split())

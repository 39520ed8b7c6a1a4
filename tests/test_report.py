"""`mice-bench report`: fixture results -> expected files, golden tables, determinism,
clear errors for malformed files, old-schema loading, devices never mixed, and the
committed report/ equal to what `mice-bench report` regenerates from results/."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mice_bench.cli import app
from mice_bench.report import build_report

REPO = Path(__file__).resolve().parents[1]
FIX = REPO / "tests" / "fixtures" / "report"
RESULTS = FIX / "results"
GOLDEN = FIX / "golden"
TEXT_EXT = (".md", ".tex")

CPU = "tiny-bert-8l-cpu-amd_epyc-fp32-2t"
CUDA = "tiny-bert-8l-cuda-nvidia_h100_-synthetic_fixture-fp32"
EXPECTED = {
    "README.md",
    *(f"tables/{n}.{e}" for e in ("md", "tex") for n in (
        f"latency-{CPU}", f"latency-all-{CPU}", f"latency-{CUDA}", f"latency-all-{CUDA}",
        "effectiveness-ndcg10", "effectiveness-rr10", "effectiveness-r100", "study-fixture",
        # the MICE paper's published numbers beside the measured ones
        "published-efficiency", "published-table1", "published-table2", "published-table3")),
    *(f"figures/{n}.{e}" for e in ("png", "pdf") for n in (
        f"latency-vs-doclen-{CPU}", f"latency-vs-depth-{CPU}", f"throughput-vs-batch-{CPU}",
        f"pareto-{CPU}", f"pareto-{CUDA}", "ndcg-vs-merge-layer",
        # the fixtures are schema version 1: their mice / colbert rows were measured with the
        # pre-v2 definitions and are renamed by the upgraders (mice_bench.legacy)
        *(f"matrices-{v}" for v in ("ce", "mask2", "mice-l1+2_attn_joint",
                                    "mice-l2+2_attn_joint", "mice-l4+2_attn_joint",
                                    "mice-l6+2_attn_joint", "colbert_proj_0_qaug_0")))),
}


def _ablations(tmp: Path) -> Path:
    d = tmp / "ablations"
    d.mkdir(exist_ok=True)
    (d / "fixture.toml").write_text(
        'description = "fixture study"\nvariants = ["ce", "mask2", "colbert[proj=0,qaug=0]"]\n'
        '[effectiveness]\nmodels = ["tests/tiny-ce"]\ndatasets = ["dl19", "scifact"]\n')
    return d


def _files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("report")
    build_report(RESULTS, tmp / "out", _ablations(tmp))
    return tmp / "out"


def test_every_expected_file_appears(rendered):
    assert _files(rendered) == EXPECTED
    for f in EXPECTED:
        assert (rendered / f).stat().st_size > 0, f


def test_tables_and_readme_match_golden(rendered):
    """Set UPDATE_GOLDEN=1 to rewrite the golden files after an intended change."""
    texts = sorted(f for f in EXPECTED if f.endswith(TEXT_EXT))
    if os.environ.get("UPDATE_GOLDEN"):
        shutil.rmtree(GOLDEN, ignore_errors=True)
        for f in texts:
            (GOLDEN / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(rendered / f, GOLDEN / f)
    for f in texts:
        assert (rendered / f).read_text() == (GOLDEN / f).read_text(), f


def test_tables_content(rendered):
    eff = (rendered / "tables/effectiveness-ndcg10.md").read_text()
    # paper abbreviations, datasets as columns, ID/OOD averages, significance marks
    for s in ("DL19", "NFC", "SF", "Average · ID", "Average · OOD", "| BM25 |", "↓"):
        assert s in eff
    tex = (rendered / "tables/effectiveness-ndcg10.tex").read_text()
    assert r"\toprule" in tex and r"\midrule" in tex and r"\bottomrule" in tex
    assert r"$\downarrow$" in tex and r"\cmidrule(lr)" in tex
    lat = (rendered / f"tables/latency-{CPU}.md").read_text()
    assert "Paper protocol · Latency (ms)" in lat and "Rerank protocol · pairs/s" in lat
    assert "*With docs precompute*" in lat and "*Without docs precompute*" in lat
    readme = (rendered / "README.md").read_text()
    for s in ("## Runs and environments", "## Latency", "## Effectiveness",
              "## Interaction matrices", "![", f"figures/pareto-{CPU}.png",
              "2026-11-27T10:00:00+00:00", "### Study `fixture`"):
        assert s in readme


def test_devices_are_never_mixed(rendered):
    cpu = (rendered / f"tables/latency-{CPU}.md").read_text()
    cuda = (rendered / f"tables/latency-{CUDA}.md").read_text()
    cpu_all = (rendered / f"tables/latency-all-{CPU}.md").read_text()
    assert "synthetic-cuda-rerank.json" not in cpu + cpu_all and "rerank-d64.json" in cpu_all
    assert "synthetic-cuda-rerank.json" in cuda and "rerank-d16.json" not in cuda
    assert "Peak RSS growth" in cpu and "Peak Mem" in cuda


def test_regeneration_is_byte_identical(rendered, tmp_path):
    build_report(RESULTS, tmp_path / "again", _ablations(tmp_path))
    for f in EXPECTED:   # images too: no dates or versions in PNG/PDF metadata
        assert (tmp_path / "again" / f).read_bytes() == (rendered / f).read_bytes(), f


def test_stale_outputs_are_removed(tmp_path):
    out = tmp_path / "out"
    (out / "figures").mkdir(parents=True)
    (out / "figures" / "gone.png").write_bytes(b"x")
    (out / "keep.txt").write_text("not ours")
    build_report(RESULTS, out, figures=False)
    assert not (out / "figures" / "gone.png").exists()
    assert (out / "keep.txt").exists()


def _copy_results(tmp: Path) -> Path:
    dst = tmp / "results"
    shutil.copytree(RESULTS, dst)
    return dst


def test_missing_results_skip_figures_with_a_note(tmp_path):
    res = _copy_results(tmp_path)
    shutil.rmtree(res / "effectiveness")
    r = build_report(res, tmp_path / "out", figures=False)
    assert not any(f.startswith("tables/effectiveness") for f in r.files)
    r = build_report(res, tmp_path / "out")
    readme = (tmp_path / "out" / "README.md").read_text()
    assert "## Figures not drawn" in readme and "no effectiveness results" in readme
    assert not any("pareto" in f or "merge-layer" in f for f in r.files)
    empty = tmp_path / "empty"
    (empty / "latency").mkdir(parents=True)
    r = build_report(empty, tmp_path / "out2")
    assert r.files == ["README.md"]


@pytest.mark.parametrize("name,content,needle", [
    ("latency/broken.json", "{not json", "cannot read results file"),
    ("latency/norows.json", None, "lacks 'rows'"),
    ("effectiveness/scifact/bm25/noagg.json", None, "lacks 'aggregates'"),
])
def test_malformed_file_is_named_exit_2(tmp_path, name, content, needle):
    res = _copy_results(tmp_path)
    path = res / name
    if content is None:
        src = res / ("latency/paper.json" if name.startswith("latency")
                     else "effectiveness/scifact/bm25/bm25.json")
        d = json.loads(src.read_text())
        d.pop("rows" if name.startswith("latency") else "aggregates")
        content = json.dumps(d)
    path.write_text(content)
    r = CliRunner().invoke(app, ["report", "--results", str(res), "--out",
                                 str(tmp_path / "out")])
    assert r.exit_code == 2, r.output
    out = r.output + (r.stderr if hasattr(r, "stderr") else "")
    assert path.name in out and needle in out.replace("\n", " ")


def test_cli_writes_report(tmp_path):
    res = tmp_path / "results"
    (res / "latency").mkdir(parents=True)
    shutil.copy(RESULTS / "latency" / "paper.json", res / "latency")
    r = CliRunner().invoke(app, ["report", "--results", str(res), "--out",
                                 str(tmp_path / "out")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "out" / "README.md").exists()
    r = CliRunner().invoke(app, ["report", "--results", str(tmp_path / "nope")])
    assert r.exit_code == 2


def test_old_schema_versions_load(tmp_path, monkeypatch):
    """A version-0 file goes through the results upgraders; rows lacking fields that were
    added later (K/V, FLOP ratio, memory, ...) still load."""
    from mice_bench import results as resultsmod
    from mice_bench.report.latency_io import load_latency_file

    d = json.loads((RESULTS / "latency" / "paper.json").read_text())
    old = dict(d, schema_version=0)
    old["measurements"] = old.pop("rows")
    for r in old["measurements"]:
        for k in ("kv_cache_applied", "flop_ratio_vs_ce", "flops", "memory", "raw_s",
                  "phases_s", "achieved_flops_per_s", "peak_fraction"):
            r.pop(k, None)
    p = tmp_path / "latency" / "old.json"
    p.parent.mkdir()
    p.write_text(json.dumps(old))

    def up(doc):
        doc = dict(doc)
        doc["rows"] = doc.pop("measurements")
        return doc

    from mice_bench.legacy import rename_latency

    monkeypatch.setitem(resultsmod.UPGRADERS, "latency", {0: up, 1: rename_latency})
    info, rows = load_latency_file(p, tmp_path)
    assert info.protocol == "paper" and len(rows) == len(d["rows"])
    assert rows[0].mem_peak_mb is None and rows[0].kv_cache_applied is False
    r = build_report(tmp_path, tmp_path / "out")
    assert any(f.startswith("tables/latency-") for f in r.files)
    monkeypatch.setitem(resultsmod.UPGRADERS, "latency", {})
    with pytest.raises(resultsmod.ResultFileError, match="old.json"):
        load_latency_file(p, tmp_path)


def _tracked_results(tmp_path):
    """The committed results/ only: files a user's own runs (e.g. the README's main job)
    added to the working tree must not make this check fail."""
    import shutil
    import subprocess

    try:
        out = subprocess.run(["git", "ls-files", "results"], cwd=REPO, capture_output=True,
                             text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return REPO / "results"
    files = out.stdout.split()
    if out.returncode != 0 or not files:
        return REPO / "results"
    dst = tmp_path / "results"
    for f in files:
        if (REPO / f).is_file():
            target = dst / Path(f).relative_to("results")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / f, target)
    return dst


def test_committed_report_is_regenerated_without_diff(tmp_path):
    """report/ must be what `mice-bench report` makes of results/ (text files byte for
    byte; images by name - their bytes depend on the matplotlib/freetype build, and
    byte-stability on one machine is checked above). A regression alarm, not a check of any
    number's value (those are ``test_report_values.py`` and the other value tests): when it
    fails, a number changed, and why must be understood before the report is regenerated."""
    committed = REPO / "report"
    if not (committed / "README.md").exists():
        pytest.skip("no committed report/ yet")
    build_report(_tracked_results(tmp_path), tmp_path / "out", REPO / "ablations")
    got, want = _files(tmp_path / "out"), _files(committed)
    assert got == want, ("the committed report/ lists other files than a fresh `mice-bench "
                         "report`: find out why before regenerating")
    for f in sorted(got):
        if f.endswith(TEXT_EXT):
            assert (tmp_path / "out" / f).read_text() == (committed / f).read_text(), (
                f"report/{f}: a number changed: find out why before regenerating (a fresh "
                "`mice-bench report` of results/ differs; only regenerate once the change is "
                "understood and intended)")


def test_side_by_side_table_never_mixes_runs():
    """A --kv-cache run at the same point as a plain run is its own measurement: the table's
    rerank rows all come from one results file (the committed results have both)."""
    from mice_bench.latency import table as ls
    from mice_bench.report import latency_io as lio

    _, rows = lio.load_latency(REPO / "results")
    if not any(r.run.config.get("kv_cache") for r in rows):
        pytest.skip("no --kv-cache run in the committed results")
    for g, grp in ls.by_group(rows).items():
        rerank = [r for r in grp if r.run.protocol == "rerank" and not r.compiled
                  and not r.kv_cache_applied and not r.run.config.get("kv_cache")]
        point = ls._best_point(rerank, ls._rerank_key)
        chosen = ls._one_run([r for r in rerank if ls._rerank_key(r) == point])
        assert len({r.run.file for r in chosen}) <= 1, g
    kv_runs = [r for r in ls.dedupe(rows) if r.run.config.get("kv_cache")]
    plain = [r for r in ls.dedupe(rows) if not r.run.config.get("kv_cache")]
    assert {r.variant for r in kv_runs} & {r.variant for r in plain}  # both kept


# ---------------------------------------------------------------------------- busy / idle runs
def _latency_copy(src: Path, dst: Path, busy: bool | None, created: str, scale: float,
                  load: float | None = None) -> None:
    """A copy of a fixture latency file with its busy flag, date and latencies changed."""
    d = json.loads(src.read_text())
    env = d["environment"]
    if busy is None:
        env.pop("cpu_busy_warning", None)
    else:
        env["cpu_busy_warning"] = busy
    if load is not None:
        env["loadavg_before"] = [load, load, load]
        env["cpu_count"] = 2
    d["created"] = created
    for r in d["rows"]:
        r["latency_s"] = {k: (v * scale if k != "count" else v)
                          for k, v in r["latency_s"].items()}
        r.pop("throughput_pairs_per_s", None)
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text(json.dumps(d))


def test_busy_run_never_replaces_an_idle_measurement(tmp_path):
    """A newer run of the same points on a busy machine does not replace the idle run's rows
    (the README's main job once replaced ce 2,042 ms by 14,997 ms); the busy flag shows."""
    from mice_bench.latency import table as lt
    from mice_bench.report import latency_io as lio

    src = RESULTS / "latency" / "rerank-d16.json"
    res = tmp_path / "results"
    _latency_copy(src, res / "latency" / "a-idle.json", False, "2026-01-01T00:00:00+00:00", 1.0)
    _latency_copy(src, res / "latency" / "b-busy.json", True, "2026-06-01T00:00:00+00:00", 7.0)
    runs, rows = lio.load_latency(res)
    assert {r.file: r.busy for r in runs} == {"latency/a-idle.json": False,
                                             "latency/b-busy.json": True}
    shown = [r for g in lt.by_group(rows).values() for r in g]
    assert shown and {r.run.file for r in shown} == {"latency/a-idle.json"}
    build_report(res, tmp_path / "out", figures=False)
    out = tmp_path / "out"
    allt = next((out / "tables").glob("latency-all-*.md")).read_text()
    assert "| busy |" in allt.splitlines()[2] and "| no |" in allt
    assert "b-busy.json" not in allt and "a-idle.json" in allt
    readme = (out / "README.md").read_text()
    assert "busy machine" in readme
    line = next(ln for ln in readme.splitlines() if ln.startswith("| latency/b-busy.json"))
    assert "| yes" in line
    line = next(ln for ln in readme.splitlines() if ln.startswith("| latency/a-idle.json"))
    assert "| no" in line
    # the busy run alone: shown, and flagged in the tables
    (res / "latency" / "a-idle.json").unlink()
    build_report(res, tmp_path / "out", figures=False)
    allt = next((out / "tables").glob("latency-all-*.md")).read_text()
    assert "b-busy.json (busy machine)" in allt and "| yes |" in allt
    side = next(p for p in (out / "tables").glob("latency-*.md")
                if not p.name.startswith("latency-all-")).read_text()
    assert "b-busy.json (busy machine)" in side


def test_side_by_side_table_of_two_equal_runs_shows_the_idle_one(tmp_path):
    """Two results files of the same points and the same size: the one-run table shows the
    idle machine's, though the busy one is newer and sorts first by name."""
    from mice_bench.latency import table as lt
    from mice_bench.report import latency_io as lio

    src = RESULTS / "latency" / "rerank-d16.json"
    res = tmp_path / "results"
    _latency_copy(src, res / "latency" / "z-idle.json", False, "2026-01-01T00:00:00+00:00", 1.0)
    _latency_copy(src, res / "latency" / "a-busy.json", True, "2026-06-01T00:00:00+00:00", 7.0)
    _, rows = lio.load_latency(res)
    (group, grp), = lt.by_group(rows, deduped=False).items()
    assert len({r.run.file for r in grp}) == 2
    idle = lt.side_by_side_table(group, [r for r in grp if r.run.file == "latency/z-idle.json"])
    both = lt.side_by_side_table(group, grp)
    assert both.caption.endswith("Sources: latency/z-idle.json.")
    assert both.sections == idle.sections
    build_report(res, tmp_path / "out", figures=False)
    side = next(p for p in (tmp_path / "out" / "tables").glob("latency-*.md")
                if not p.name.startswith("latency-all-")).read_text()
    assert "z-idle.json" in side and "a-busy.json" not in side


def test_idle_preference_then_newest_and_old_files_without_the_flag(tmp_path):
    """Among idle runs the newest wins; a file without the flag is judged by its recorded
    load average with the same rule; unknown ranks between idle and busy."""
    from mice_bench.latency import table as lt
    from mice_bench.report import latency_io as lio

    src = RESULTS / "latency" / "rerank-d16.json"
    res = tmp_path / "results"
    L = res / "latency"
    _latency_copy(src, L / "old-idle.json", False, "2026-01-01T00:00:00+00:00", 1.0)
    _latency_copy(src, L / "new-idle.json", None, "2026-02-01T00:00:00+00:00", 2.0, load=0.3)
    _latency_copy(src, L / "newest-busy.json", None, "2026-03-01T00:00:00+00:00", 3.0, load=1.9)
    runs, rows = lio.load_latency(res)
    assert {r.file.split("/")[-1]: r.busy for r in runs} == {
        "old-idle.json": False, "new-idle.json": False, "newest-busy.json": True}
    shown = [r for g in lt.by_group(rows).values() for r in g]
    assert {r.run.file for r in shown} == {"latency/new-idle.json"}
    env = json.loads((L / "newest-busy.json").read_text())
    env["environment"].pop("loadavg_before")
    (L / "newest-busy.json").write_text(json.dumps(env))
    runs, _ = lio.load_latency(res)
    assert {r.file.split("/")[-1]: r.busy for r in runs}["newest-busy.json"] is None


def _with_doc_store(path: Path, store: str, bytes_per_doc: float, created: str) -> None:
    d = json.loads(path.read_text())
    d["timing"] = dict(d.get("timing") or {}, doc_store={"store": store,
                                                          "bytes_per_doc": bytes_per_doc,
                                                          "tokens_per_doc": 40.0})
    d["created"] = created
    path.write_text(json.dumps(d))


def test_storage_table_is_written_when_results_record_their_store(tmp_path):
    res = _copy_results(tmp_path)
    base = res / "effectiveness" / "dl19" / "bm25" / "tiny-ce"
    shutil.copy(base / "colbert.json", base / "colbert-fp32.json")
    _with_doc_store(base / "colbert-fp32.json", "fp32", 40 * 32 * 4.0,
                    "2026-11-27T09:00:00+00:00")
    _with_doc_store(base / "colbert.json", "fp16", 40 * 32 * 2.0, "2026-11-27T09:30:00+00:00")
    r = build_report(res, tmp_path / "out", figures=False)
    assert "tables/storage-ndcg10.md" in r.files
    table = (tmp_path / "out" / "tables" / "storage-ndcg10.md").read_text()
    assert table.startswith("# Storage of document states against nDCG@10")
    lines = [ln for ln in table.splitlines() if ln.startswith("| tiny-ce")]
    assert [ln.split(" | ")[2] for ln in lines] == ["fp32", "fp16"]
    assert "colbert[proj=0,qaug=0]" in lines[0] and "(0.50×)" in lines[1]
    assert "5.0" in lines[0] and "2.5 (0.50×)" in lines[1]      # KiB per document
    assert [ln.rstrip(" |").split(" | ")[-1] for ln in lines] == ["40", "40"]  # tokens/doc
    readme = (tmp_path / "out" / "README.md").read_text()
    assert "### Storage of document states against nDCG@10" in readme
    assert "tables/storage-ndcg10.md" in readme and lines[1] in readme
    # without any recorded store the table (and a stale copy) is gone
    r = build_report(RESULTS, tmp_path / "out", figures=False)
    assert "tables/storage-ndcg10.md" not in r.files
    assert not (tmp_path / "out" / "tables" / "storage-ndcg10.md").exists()


def test_a_partial_rerun_of_a_point_does_not_blank_the_side_by_side_table(tmp_path):
    """A newer file that measures two of a file's variants again (here ce and the first
    other one, as `latency --variants ce,colbert` did) wins those points in the all-rows
    table, but the side-by-side table still shows one whole file: it once showed the older
    file's remaining rows with ce and colbert blank."""
    from mice_bench.latency import table as lt
    from mice_bench.report import latency_io as lio

    src = RESULTS / "latency" / "rerank-d16.json"
    res = tmp_path / "results"
    _latency_copy(src, res / "latency" / "a-full.json", False, "2026-01-01T00:00:00+00:00", 1.0)
    d = json.loads((res / "latency" / "a-full.json").read_text())
    keep = ["ce", next(r["variant"] for r in d["rows"] if r["variant"] != "ce")]
    d["rows"] = [r for r in d["rows"] if r["variant"] in keep]
    d["created"] = "2026-06-01T00:00:00+00:00"
    (res / "latency" / "b-partial.json").write_text(json.dumps(d))
    _, rows = lio.load_latency(res)
    full = {r.variant for r in rows if r.run.file == "latency/a-full.json"}
    assert len(full) > 2
    for g, every in lt.by_group(rows, deduped=False).items():
        deduped = lt.by_group(rows)[g]
        assert {r.run.file for r in deduped if r.variant in keep} == {"latency/b-partial.json"}
    build_report(res, tmp_path / "out", figures=False)
    for side in (tmp_path / "out" / "tables").glob("latency-*.md"):
        if side.name.startswith("latency-all-"):
            continue
        text = side.read_text()
        assert "a-full.json" in text and "b-partial.json" not in text
        for v in full:
            lines = [ln for ln in text.splitlines() if ln.startswith(f"| {v}")]
            assert lines, (v, text)
            assert all("| – | – | – |" not in ln for ln in lines), lines


# ---------------------------------------------------------------------------- figures' points
def _saved_figure(monkeypatch, draw):
    """The one figure ``draw(effectiveness_section)`` saves (``save`` captured wherever a
    figure is drawn)."""
    from mice_bench.report import effectiveness_section as es
    from mice_bench.report import merge_layer

    figs = []
    for mod in (es, merge_layer):
        monkeypatch.setattr(mod, "save", lambda fig, out, stem: figs.append(fig) or [])
    draw(es)
    assert len(figs) == 1
    return figs[0]


def _figure_lines(monkeypatch, draw):
    """The lines (label, x, y) of the figure ``draw()`` saves."""
    fig = _saved_figure(monkeypatch, draw)
    return [(ln.get_label(), list(ln.get_xdata()), list(ln.get_ydata()))
            for ax in fig.axes for ln in ax.get_lines()]


def _flat(points):
    return [float(v) for p in points for v in p]


def _eff(model, variant, dataset, group, ndcg, layers=2, hidden=32):
    from mice_bench.report.effectiveness_io import EffRecord

    return EffRecord(file=f"{variant}-{dataset}.json", created="2026-01-01", model=model,
                     variant=variant, dataset=dataset, group=group,
                     measures={"nDCG@10": ndcg}, per_query={}, num_layers=layers,
                     hidden_size=hidden, first_stage="bm25")


def _lat(variant, throughput):
    from mice_bench.latency.records import LatencyRow, RunInfo

    run = RunInfo(file="latency/x.json", created="2026-01-01", protocol="rerank", model="m",
                  model_description="m", num_layers=2, random_weights=True, hidden_size=32,
                  device="cpu", device_name="CPU", dtype="fp32", threads=1, compiled=False)
    return LatencyRow(run=run, variant=variant, layout="split", batch_size=8,
                      batch_size_requested=8, doc_tokens=64, doc_tokens_effective=64,
                      query_tokens=8, depth=8, precompute=True, precompute_applied=True,
                      kv_cache_applied=False, pairs_per_run=8, params=1, lat_mean=1.0,
                      lat_std=0.0, lat_p50=1.0, lat_p99=1.0, count=1, throughput=throughput,
                      mem_peak_mb=None, mem_growth_mb=None, speedup_vs_ce=None,
                      flop_ratio_vs_ce=None, flops_per_pair=None)


def test_pareto_front_points_by_hand(monkeypatch, tmp_path):
    """The dashed front joins the variants no other variant beats on both throughput and
    nDCG@10: here (1000, 30) -> (100, 50) -> (10, 60); (50, 40) is beaten by (100, 50)."""
    from mice_bench.report.common import Palette

    pts = {"ce": (10, 0.60), "mice-l2+1": (50, 0.40), "mice-l1+1": (100, 0.50),
           "biencoder": (1000, 0.30)}
    recs = [_eff("m", v, "msmarco-dev", "id", y) for v, (_, y) in pts.items()]
    lat = [_lat(v, x) for v, (x, _) in pts.items()]
    lines = _figure_lines(monkeypatch, lambda es: es.pareto_figure(
        ("cpu", "CPU", "fp32", "1", "m"), lat, recs, tmp_path, Palette(pts)))
    front = [list(zip(x, y)) for label, x, y in lines if label == "Pareto front"]
    assert len(front) == 1
    assert [x for x, _ in front[0]] == pytest.approx([1000, 100, 10])
    assert [y for _, y in front[0]] == pytest.approx([30.0, 50.0, 60.0])


def test_merge_layer_curve_points_by_hand(monkeypatch, tmp_path):
    """One point per merge layer: the mean nDCG@10 x 100 over the group's own datasets (ID:
    two datasets, OOD: one), and the ce line at the mean of the same datasets."""
    vals = {2: {"msmarco-dev": 0.30, "trec-dl-2019": 0.50, "scifact": 0.90},
            4: {"msmarco-dev": 0.40, "trec-dl-2019": 0.60, "scifact": 0.20}}
    group = {"msmarco-dev": "id", "trec-dl-2019": "id", "scifact": "ood"}
    recs = [_eff("m", f"mice-l{m}+2", d, group[d], v) for m, per in vals.items()
            for d, v in per.items()]
    recs += [_eff("m", "ce", d, group[d], 0.70) for d in group]
    lines = _figure_lines(monkeypatch, lambda es: es.effectiveness_merge_layer_figure(
        recs, tmp_path))
    got = {label: list(zip(x, y)) for label, x, y in lines}
    assert _flat(got["mice-l{m}+2, In-domain mean"]) == pytest.approx(_flat([(2, 40), (4, 50)]))
    assert _flat(got["mice-l{m}+2, BEIR (OOD) mean"]) == pytest.approx(_flat([(2, 90), (4, 20)]))
    assert [y for _, y in got["ce, In-domain mean"]] == pytest.approx([70.0, 70.0])


def test_merge_layer_figure_draws_the_points_it_is_given(tmp_path):
    """The one merge-layer figure: each curve through its points in order, each level at its
    value across the axes, each star at its point, the merge layers as the ticks; several
    titled panels share one legend under them."""
    import matplotlib.pyplot as plt

    from mice_bench.report import merge_layer as ml

    figs = []
    orig = ml.save
    ml.save = lambda fig, out, stem: figs.append(fig) or [f"{stem}.png", f"{stem}.pdf"]
    try:
        panels = [ml.Panel("left", [ml.Curve("a", ((1, 10.0), (3, 30.0), (2, 20.0)), "#0072B2"),
                                    ml.Level("ce", 55.0, "#555555", ":"),
                                    ml.Star("b (init teacher)", 3, 42.0)]),
                  ml.Panel("right", [ml.Curve("a", ((1, 5.0),), "#0072B2", "--", "s")])]
        names = ml.merge_layer_figure(panels, [1, 2, 3], tmp_path, "stem", title="T",
                                      ylabel="y", xlabel="x", size=(6.0, 3.0),
                                      legend_below=True)
    finally:
        ml.save = orig
    assert names == ["stem.png", "stem.pdf"] and len(figs) == 1
    left, right = figs[0].axes
    a, ce = left.get_lines()
    assert (a.get_label(), list(a.get_xdata()), list(a.get_ydata())) == \
        ("a", [1, 3, 2], [10.0, 30.0, 20.0])
    assert ce.get_label() == "ce" and list(ce.get_ydata()) == [55.0, 55.0]
    assert ce.get_linestyle() == ":"
    star, = left.collections
    assert star.get_label() == "b (init teacher)"
    assert star.get_offsets().tolist() == [[3.0, 42.0]]
    (r,) = right.get_lines()
    assert list(r.get_ydata()) == [5.0] and r.get_marker() == "s"
    assert [t.get_text() for t in left.get_xticklabels()] == ["1", "2", "3"]
    assert (left.get_title(), right.get_title(), figs[0].get_suptitle()) == ("left", "right", "T")
    assert left.get_legend() is None and len(figs[0].legends) == 1
    assert [t.get_text() for t in figs[0].legends[0].get_texts()] == \
        ["a", "ce", "b (init teacher)"]
    plt.close(figs[0])


def test_study_merge_layer_points_by_hand(monkeypatch, tmp_path):
    """A training study's figure: per dataset group (in-domain, then out-of-domain) one curve
    per family series through the base-initialised students' mean nDCG@10 x 100 over the
    group, a star for a student initialised from the teacher, and the ce student's and the
    teacher's levels."""
    from types import SimpleNamespace as NS

    from mice_bench.report.study_section import StudyResults, study_merge_layer_figure

    vals = {  # label -> (msmarco-dev, trec-dl-2019, scifact)
        "mask3-2": (0.20, 0.40, 0.90), "mask3-4": (0.30, 0.50, 0.80),
        "mice-2": (0.10, 0.30, 0.70), "mice-4": (0.50, 0.70, 0.10),
        "mice-4-t": (0.60, 0.80, 0.30), "ce": (0.65, 0.75, 0.55), "teacher": (0.9, 0.9, 0.9)}
    names = ("msmarco-dev", "trec-dl-2019", "scifact")
    rows = {lab: NS(cells={d: {"nDCG@10": NS(mean=v)} for d, v in zip(names, vs)})
            for lab, vs in vals.items()}

    def row(label):
        return rows[label]

    summary = NS(row=row, datasets=[NS(name="msmarco-dev", group="id"),
                                    NS(name="trec-dl-2019", group="id"),
                                    NS(name="scifact", group="ood")])
    systems = [dict(label="mask3-2", variant="mask3-l2", role="student", init="base"),
               dict(label="mask3-4", variant="mask3-l4", role="student", init="base"),
               dict(label="mice-2", variant="mice-l2+2", role="student", init="base"),
               dict(label="mice-4", variant="mice-l4+2", role="student", init="base"),
               dict(label="mice-4-t", variant="mice-l4+2", role="student", init="teacher"),
               dict(label="ce", variant="ce", role="student", init="base"),
               dict(label="teacher", variant="ce", role="teacher")]
    sr = StudyResults(name="s", size=None, description="", size_description="", root=tmp_path,
                      rel="s", summary=summary, config={"systems": systems})
    fig = _saved_figure(monkeypatch, lambda es: study_merge_layer_figure(sr, tmp_path))
    idd, ood = fig.axes
    assert idd.get_title().startswith("in-domain") and ood.get_title().startswith("out-of")

    def lines(ax):
        return {ln.get_label(): _flat(zip(ln.get_xdata(), ln.get_ydata()))
                for ln in ax.get_lines()}

    got = lines(idd)
    assert got["mask3-l{k}"] == pytest.approx(_flat([(2, 30), (4, 40)]))
    assert got["mice-l{m}+2"] == pytest.approx(_flat([(2, 20), (4, 60)]))
    assert got["ce student"][1::2] == pytest.approx([70, 70])
    assert got["teacher (ce)"][1::2] == pytest.approx([90, 90])
    got = lines(ood)
    assert got["mask3-l{k}"] == pytest.approx(_flat([(2, 90), (4, 80)]))
    assert got["mice-l{m}+2"] == pytest.approx(_flat([(2, 70), (4, 10)]))
    assert got["ce student"][1::2] == pytest.approx([55, 55])
    (star,) = idd.collections
    assert star.get_label() == "mice-4-t (init teacher)"
    assert _flat(star.get_offsets()) == pytest.approx([4, 70])
    assert _flat(ood.collections[0].get_offsets()) == pytest.approx([4, 30])


def test_storage_study_runs_stay_out_of_the_effectiveness_tables(tmp_path):
    """A newer run under effectiveness/storage/ (another store, a query subset, a weak model)
    never replaces a cell of the effectiveness tables, though the storage table shows it."""
    res = _copy_results(tmp_path)
    before = build_report(res, tmp_path / "before", figures=False)
    table = (tmp_path / "before" / "tables" / "effectiveness-ndcg10.md").read_text()
    src = res / "effectiveness" / "dl19" / "bm25" / "tiny-ce" / "colbert.json"
    dst = res / "effectiveness" / "storage" / "int8" / "dl19" / "bm25" / "tiny-ce" / "colbert.json"
    dst.parent.mkdir(parents=True)
    d = json.loads(src.read_text())
    d["per_query"] = {m: {q: 0.0 for q in per} for m, per in d["per_query"].items()}
    d["aggregates"] = {m: ({**v, "mean": 0.0} if isinstance(v, dict) else 0.0)
                       for m, v in d["aggregates"].items()}   # a different, newer measurement
    dst.write_text(json.dumps(d))
    _with_doc_store(dst, "int8", 40 * 32 * 1.0, "2099-01-01T00:00:00+00:00")
    after = build_report(res, tmp_path / "after", figures=False)
    assert (tmp_path / "after" / "tables" / "effectiveness-ndcg10.md").read_text() == table
    assert "tables/storage-ndcg10.md" in after.files and before.files
    assert "int8" in (tmp_path / "after" / "tables" / "storage-ndcg10.md").read_text()

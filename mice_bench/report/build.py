"""``build_report(results, out)``: every table and figure of ``report/`` from ``results/``.

Reads results files only (never runs a model). Output is deterministic: no timestamps other
than the ``created`` fields copied from results, sorted inputs, PNG/PDF written without date
or software metadata; files of earlier runs that are no longer produced are removed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..results import atomic_write_text
from ..naming import group_label, slug
from ..spec import variant_key
from ..latency import table as lt
from .common import Palette
from .effectiveness_io import EffRecord, load_effectiveness, load_summaries
from .latency_io import LatencyRow, RunInfo, load_latency
from ..tables import Table

GENERATED_EXT = (".md", ".tex", ".png", ".pdf")
#: ``tables/storage-ndcg10.md``: bytes of stored document states per document vs nDCG@10
STORAGE_TABLE = "storage-ndcg10"
STORAGE_TITLE = "Storage of document states against nDCG@10"


@dataclass
class Figure:
    stem: str
    title: str
    caption: str
    group: tuple | None = None      # latency device group, if any


@dataclass
class ReportResult:
    out: Path
    files: list[str] = field(default_factory=list)      # relative to out, sorted
    skipped: list[str] = field(default_factory=list)    # figures skipped, with the reason
    latency_files: int = 0
    effectiveness_records: int = 0


def is_storage_study(file: str) -> bool:
    """A results file of the storage study (``effectiveness/storage/...``, relative to the
    results folder)."""
    return Path(file).as_posix().startswith("effectiveness/storage/")


def build_report(results_dir: str | Path = "results", out_dir: str | Path = "report",
                 ablations_dir: str | Path | None = None, figures: bool = True
                 ) -> ReportResult:
    """Write the report; ``figures=False`` (tests) leaves out every figure."""
    results_dir, out = Path(results_dir), Path(out_dir)
    runs, lat_rows = load_latency(results_dir)
    # the storage study (effectiveness/storage/) has a table and a figure of its own: its
    # runs (store formats, query subsets, weak or random-head models) stay out of the
    # effectiveness tables, studies and figures
    records = load_effectiveness(results_dir, keep=lambda f: not is_storage_study(f))
    from . import effectiveness_section as es

    summaries = es.report_summaries(records, [s for s in load_summaries(results_dir)
                                              if not is_storage_study(s.file)])
    from . import latency_section as ls

    fig_dir, tab_dir = out / "figures", out / "tables"
    res = ReportResult(out=out, latency_files=len(runs), effectiveness_records=len(records))
    written: list[str] = []
    tables: list[Table] = []
    figs: dict[str, list[Figure]] = {"latency": [], "effectiveness": [], "pareto": [],
                                     "matrices": [], "studies": []}
    palette = Palette([r.variant for r in lat_rows] + [r.variant for r in records])

    def fig(section: str, title: str, make, group: tuple | None = None) -> None:
        if not figures:
            return
        result = make()
        if isinstance(result, str):
            res.skipped.append(result)
        else:
            stem, cap = result
            figs[section].append(Figure(stem, title, cap, group))
            written.extend([f"figures/{stem}.png", f"figures/{stem}.pdf"])

    # ---------------------------------------------------------------- latency
    groups = lt.by_group(lat_rows)
    every = lt.by_group(lat_rows, deduped=False)     # the side-by-side table shows one file
    lat_tables: list[tuple[tuple, Table | None, Table]] = []
    for g, rows in groups.items():
        sbs = lt.side_by_side_table(g, every[g])
        allt = lt.all_rows_table(g, rows)
        lat_tables.append((g, sbs, allt))
        tables += [t for t in (sbs, allt) if t is not None]
        fig("latency", f"Latency and speedup vs document length — {group_label(g)}",
            lambda: ls.sweep_figure(g, rows, "doc_tokens", fig_dir, palette), g)
        fig("latency", f"Latency and speedup vs re-ranking depth — {group_label(g)}",
            lambda: ls.sweep_figure(g, rows, "depth", fig_dir, palette), g)
        fig("latency", f"Throughput vs batch size — {group_label(g)}",
            lambda: ls.throughput_figure(g, rows, fig_dir, palette), g)
    if not groups:
        res.skipped.append("latency figures: no latency results under "
                           "latency/")

    # ---------------------------------------------------------------- effectiveness
    measures = sorted({m for s in summaries for m in s.summary.measures}, key=es.measure_order)
    eff_tables = [t for t in (es.effectiveness_table(summaries, m) for m in measures) if t]
    tables += eff_tables
    study_tables = _study_tables(summaries, ablations_dir, es)
    from .published_io import report_tables as published_tables

    # the paper's numbers, labelled, beside measured ones (none without any results)
    pub_tables = published_tables(lat_rows, summaries) if lat_rows or summaries else []
    tables += pub_tables
    tables += [t for _, t in study_tables]
    storage_md = _storage_table(results_dir)
    if storage_md is not None:
        from .storage_section import storage_figure

        fig("effectiveness", "nDCG@10 against bytes per token of the document store",
            lambda: storage_figure(results_dir, fig_dir))
    if records:
        fig("effectiveness", "nDCG@10 vs merge layer",
            lambda: es.effectiveness_merge_layer_figure(records, fig_dir))
        for g, rows in groups.items():
            fig("pareto", f"Effectiveness vs throughput — {group_label(g)}",
                lambda g=g, rows=rows: es.pareto_figure(g, rows, records, fig_dir, palette))
        if not groups:
            res.skipped.append("effectiveness vs latency: no latency results")
    else:
        res.skipped.append("effectiveness figures (Pareto front, nDCG@10 vs merge layer): no "
                           "effectiveness results under "
                           "effectiveness/")

    # ---------------------------------------------------------------- training studies
    from . import study_section as ss

    trained = ss.find_training_studies(results_dir, ablations_dir, res.skipped)
    study_blocks: list[tuple[ss.StudyResults, Table, list[Figure]]] = []
    for sr in trained:
        t = ss.study_table(sr)
        tables.append(t)
        before = len(figs["studies"])
        fig("studies", f"nDCG@10 vs merge layer — {sr.title}",
            lambda sr=sr: ss.study_merge_layer_figure(sr, fig_dir))
        if figures:
            got = ss.pareto_figures(sr, results_dir, fig_dir)
            if isinstance(got, str):
                res.skipped.append(got)
            else:
                for stem, title, cap in got:
                    figs["studies"].append(Figure(stem, title, cap))
                    written.extend([f"figures/{stem}.png", f"figures/{stem}.pdf"])
        study_blocks.append((sr, t, figs["studies"][before:]))

    # ---------------------------------------------------------------- interaction matrices
    for stem, title, cap in (_matrix_figures(lat_rows, records, fig_dir, res.skipped)
                             if figures else []):
        figs["matrices"].append(Figure(stem, title, cap))
        written.extend([f"figures/{stem}.png", f"figures/{stem}.pdf"])

    # ---------------------------------------------------------------- write
    for t in tables:
        atomic_write_text(tab_dir / f"{t.name}.md", t.markdown())
        atomic_write_text(tab_dir / f"{t.name}.tex", t.latex())
        written += [f"tables/{t.name}.md", f"tables/{t.name}.tex"]
    if storage_md is not None:
        atomic_write_text(tab_dir / f"{STORAGE_TABLE}.md", storage_md)
        written.append(f"tables/{STORAGE_TABLE}.md")
    env_tables = [ls.runs_table(runs)] if runs else []
    if records:
        env_tables.append(es.runs_table(records))
    readme = _readme(results_dir, runs, records, env_tables, lat_tables, eff_tables,
                     study_tables, figs, res.skipped, study_blocks, storage_md, pub_tables)
    atomic_write_text(out / "README.md", readme)
    written.append("README.md")
    _remove_stale(out, set(written))
    res.files = sorted(set(written))
    return res


def _remove_stale(out: Path, keep: set[str]) -> None:
    for sub in ("figures", "tables"):
        d = out / sub
        if not d.is_dir():
            continue
        for f in sorted(d.iterdir()):
            rel = f"{sub}/{f.name}"
            if f.is_file() and f.suffix in GENERATED_EXT and rel not in keep:
                f.unlink()


def _matrix_figures(lat_rows: list[LatencyRow], records: list[EffRecord], fig_dir: Path,
                    skipped: list[str]):
    from ..spec import parse
    from ..viz import plot_matrices
    from .figures import save

    layers: dict[str, int] = {}
    for r in lat_rows:
        layers.setdefault(r.variant, r.run.num_layers)
    for r in records:
        if r.variant != "bm25":
            layers.setdefault(r.variant, r.num_layers or 12)
    for v in sorted(layers, key=variant_key):
        try:
            spec = parse(v)
            spec.validate(layers[v])
        except Exception as e:  # noqa: BLE001 - a variant this version cannot draw
            skipped.append(f"interaction matrices of {v}: {e}")
            continue
        f = plot_matrices(spec, layers[v], None)
        stem = f"matrices-{slug(v)}"
        save(f, fig_dir, stem)
        yield (stem, f"Interaction matrices of {v}",
               f"{v} on {layers[v]} layers ({spec.layout} layout, {spec.head} head): "
               f"{spec.description()}. One panel per distinct layer pattern; rows attend "
               "from, columns to; blue: may attend, grey: masked, orange: frozen rows. "
               "Independent of device and dtype.")


def _storage_table(results_dir: Path) -> str | None:
    """Storage against nDCG@10 (:mod:`mice_bench.effectiveness.storage`): a Markdown table
    of the effectiveness results that recorded their document-state store
    (``timing.doc_store``), or None when none did."""
    folder = Path(results_dir) / "effectiveness"
    if not folder.is_dir():
        return None
    from ..effectiveness.storage import fidelity_table, storage_rows, storage_table

    rows = sorted(storage_rows(folder), key=lambda r: (r.model, r.variant, r.store, r.dataset,
                                                       r.first_stage, r.file))
    if not rows:
        return None
    body = storage_table(rows)
    if body is None:
        return None
    return (f"# {STORAGE_TITLE}\n\n" + body + "\n## Fidelity to the fp32 store\n\n"
            + (fidelity_table(rows) or ""))


def _study_tables(summaries, ablations_dir, es) -> list[tuple[str, Table]]:
    """One effectiveness table per study file with an ``[effectiveness]`` section."""
    if not summaries:
        return []
    from ..study import study_files

    out = []
    for _, st in study_files(ablations_dir):
        if st.effectiveness is None or st.training is not None:
            continue   # a training study has its own section (study_section)
        t = es.effectiveness_table(summaries, "nDCG@10", name=f"study-{slug(st.name)}",
                                   title=f"Study {st.name}: {st.description} (nDCG@10 × 100)",
                                   variants=["bm25", *st.variants])
        if t is not None:
            out.append((st.name, t))
    return out


def _readme(results_dir: Path, runs: list[RunInfo], records: list[EffRecord],
            env_tables: list[Table], lat_tables, eff_tables: list[Table], study_tables,
            figs: dict[str, list[Figure]], skipped: list[str], study_blocks=(),
            storage_md: str | None = None, published_tables=()) -> str:
    L = ["# mice-bench report", "",
         "Generated by `mice-bench report` from the results files only (no model is run; "
         "file names below are relative to the results folder). Do not edit: regenerate "
         "with `mice-bench report --results results --out report`. Tables are also "
         "in [`tables/`](tables/) as Markdown and LaTeX (booktabs), figures in "
         "[`figures/`](figures/) as PNG and PDF.", ""]
    L += [f"Inputs: {len(runs)} latency results file(s), {len(records)} effectiveness "
          "result(s) (model × variant × dataset).", ""]
    L += ["## Runs and environments", ""]
    if not env_tables:
        L += ["No results found.", ""]
    for t in env_tables:
        L += [t.markdown(), ""]

    L += ["## Latency", ""]
    if not lat_tables:
        L += ["No latency results (run `mice-bench latency` or "
              "`mice-bench run ablations/latency-paper.toml`).", ""]
    for g, sbs, allt in lat_tables:
        L += [f"### {group_label(g)}", ""]
        if sbs is not None:
            L += [sbs.markdown(), ""]
        L += [f"Every measurement of this device: [tables/{allt.name}.md]"
              f"(tables/{allt.name}.md).", ""]
        for f in figs["latency"]:
            if f.group == g:
                L += _fig_md(f)

    L += ["## Effectiveness", ""]
    if not eff_tables:
        L += ["No effectiveness results (run `mice-bench effectiveness` or "
              "`mice-bench run ablations/mice.toml`).", ""]
    for i, t in enumerate(eff_tables):
        if i == 0:
            L += [t.markdown(), ""]
        else:
            L += [f"{t.title}: [tables/{t.name}.md](tables/{t.name}.md).", ""]
    for name, t in study_tables:
        L += [f"### Study `{name}`", "", t.markdown(heading=False), ""]
    for f in figs["effectiveness"]:
        L += _fig_md(f)
    if storage_md is not None:
        L += [f"### {STORAGE_TITLE}", "",
              "Split-first variants (`colbert`, `mice-*`, ...) re-rank from stored document "
              "states (`colbert`: its 128-d head vectors, as a ColBERT index; MICE: its "
              "layer-m states, which the interaction layers read; `biencoder`: one pooled "
              "vector per document); each row is one store (`--doc-store fp32 | fp16 | int8 | "
              "residual1 | residual2 | residual4`, with its `--pool-factor` where the tokens "
              "were pooled). The MICE "
              f"paper does not measure this trade-off. Also in [tables/{STORAGE_TABLE}.md]"
              f"(tables/{STORAGE_TABLE}.md).", "",
              storage_md.split("\n", 2)[2].rstrip("\n"), ""]

    if published_tables:
        L += ["## The MICE paper's published numbers", "",
              "The paper's tables as published (each number with its source LaTeX file and "
              "line in `mice_bench/report/published/mice-paper.json`), beside the suite's "
              "measurements of the same variants. Published and measured numbers are in "
              "separate columns or rows, labelled as such.", ""]
        L += [published_tables[0].markdown(), ""]
        for t in published_tables[1:]:
            L += [f"{t.title}: [tables/{t.name}.md](tables/{t.name}.md).", ""]

    L += ["## Effectiveness vs latency", ""]
    if not figs["pareto"]:
        L += ["No figure: needs both latency and effectiveness results of the same "
              "variants (see the notes below).", ""]
    for f in figs["pareto"]:
        L += _fig_md(f)

    if study_blocks:
        L += ["## Training studies", "",
              "Studies that train their own models (`[training]` study files, run by "
              "`mice-bench run STUDY --size SIZE`): one row per trained model, tests against "
              "the study's baseline system. Each size's folder has a README.md saying what "
              "the size is; smoke sizes check the pipeline and are not results.", ""]
    for sr, t, fs in study_blocks:
        L += [f"### {sr.title}", ""]
        if sr.size_description:
            L += [f"*Size `{sr.size}`:* {sr.size_description}.", ""]
        L += [f"Results: `{sr.rel}/` in the results folder (its `README.md` says what ran, "
              "on which machine, and how the steps were chosen).", "",
              t.markdown(heading=False), ""]
        for f in fs:
            L += _fig_md(f)

    L += ["## Interaction matrices", ""]
    if not figs["matrices"]:
        L += ["No variant in the results.", ""]
    for f in figs["matrices"]:
        L += _fig_md(f, level="###")

    L += ["## Figures not drawn", ""]
    if skipped:
        L += ["These figures were skipped because the results they need are missing "
              "(nothing is made up):", ""]
        L += [f"- {s}" for s in skipped] + [""]
    else:
        L += ["None.", ""]
    return "\n".join(L).rstrip("\n") + "\n"


def _fig_md(f: Figure, level: str = "####") -> list[str]:
    return [f"{level} {f.title}", "", f"![{f.title}](figures/{f.stem}.png)", "",
            f"*{f.caption}* ([PDF](figures/{f.stem}.pdf))", ""]

"""Training studies (study files with ``[training]``, e.g. ``ablations/mini-replication.toml``):
their table and figures, from the files ``mice-bench run`` wrote under
``results/<study>/<size>/`` (never from a model):

* ``tables/study-<study>-<size>.md|tex``: nDCG@10 of every system (trained model) per dataset,
  ID / OOD means, ↑ / ↓ from the study's ``summary.json`` (paired tests against the baseline
  system, corrected together), training pairs/s from ``study.json``;
* ``figures/study-<study>-<size>-ndcg-vs-merge-layer.png|pdf``: nDCG@10 of ``mask3-l{k}``,
  ``prettr-l{k}`` and ``mice-l{m}+{n}`` (one line per n) against the layer where query and
  document start to interact, the ``ce`` student and the teacher as horizontal lines;
* ``figures/study-<study>-<size>-pareto-<device group>.png|pdf``: nDCG@10 against throughput
  (pairs/s, rerank protocol) of the same variants on the architecture of the trained models,
  from ``results/<study>/<size>/latency/`` and ``results/latency/``, with the Pareto front;
  ``ce`` is always on the figure.

A figure whose results are missing is not drawn; the reason goes to *Figures not drawn*.
"""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..evaluation.table import percent_cell
from ..naming import group_label, group_slug, slug
from ..tables import Table
from .figures import new_figure, plain_log_ticks, save
from .merge_layer import Curve, Level, Panel, Star, merge_layer_figure

MEASURE = "nDCG@10"
_MASK3 = re.compile(r"^mask3-l(\d+)$")
_PRETTR = re.compile(r"^prettr-l(\d+)$")
_MICE = re.compile(r"^mice-l(\d+)\+(\d+)$")


@dataclass
class StudyResults:
    """One training study at one size, as its results files hold it."""

    name: str
    size: str | None
    description: str
    size_description: str
    root: Path                                   # results/<study>/<size>
    rel: str                                     # the same, relative to the results folder
    summary: object | None = None                # EffectivenessSummary
    config: dict = field(default_factory=dict)   # the summary's config (systems, baseline)
    record: dict = field(default_factory=dict)   # study.json
    arch: tuple | None = None                    # (layers, hidden) of the trained models

    @property
    def stem(self) -> str:
        return f"study-{slug(self.name)}" + (f"-{slug(self.size)}" if self.size else "")

    @property
    def title(self) -> str:
        return f"Study `{self.name}`" + (f", size `{self.size}`" if self.size else "")

    @property
    def systems(self) -> list[dict]:
        return list(self.config.get("systems", []))

    def value(self, label: str, datasets: list[str]) -> float | None:
        """Mean nDCG@10 of a system over ``datasets`` (None unless it has all of them)."""
        try:
            row = self.summary.row(label)
        except KeyError:
            return None
        vals = [row.cells.get(d, {}).get(MEASURE) for d in datasets]
        if not datasets or any(c is None or not math.isfinite(c.mean) for c in vals):
            return None
        return float(np.mean([c.mean for c in vals]))

    def groups(self) -> dict[str, list[str]]:
        ds = self.summary.datasets
        return {"id": [d.name for d in ds if d.group == "id"],
                "ood": [d.name for d in ds if d.group != "id"]}


def find_training_studies(results_dir: Path, ablations_dir: Path | None,
                          skipped: list[str]) -> list[StudyResults]:
    """Every (training study, size) with a results folder; a study file without results
    adds a line to ``skipped``."""
    from ..evaluation.summary import EffectivenessSummary
    from ..study import load_study, study_files

    out = []
    for f, st in study_files(ablations_dir):
        if st.training is None:
            continue
        found = False
        missing: list[str | None] = []
        for size in (st.sizes or [None]):
            s = load_study(f, size) if size else st
            root = s.results_root(results_dir)
            if not (root / "summary.json").is_file():
                missing.append(size)
                continue
            found = True
            summary, doc = EffectivenessSummary.load(root / "summary.json")
            rec = {}
            if (root / "study.json").is_file():
                try:
                    rec = json.loads((root / "study.json").read_text())
                except (OSError, ValueError):
                    rec = {}
            sr = StudyResults(st.name, size, st.description, s.size_description, root,
                              root.relative_to(results_dir).as_posix(), summary,
                              dict(doc.get("config") or {}), rec)
            sr.arch = _arch(root)
            out.append(sr)
        if found:
            for size in missing:
                skipped.append(f"study {st.name}, size {size}: no results under "
                               f"{slug(st.name)}/{slug(size)}/ (run `mice-bench run "
                               f"{f.parent.name}/{f.name} --size {size}`)")
        else:
            sizes = ", ".join(st.sizes) if st.sizes else "-"
            skipped.append(f"study {st.name} ({f.name}; sizes {sizes}): no results under "
                           f"{slug(st.name)}/{'<size>/' if st.sizes else ''} (run `mice-bench "
                           f"run {f.parent.name}/{f.name}"
                           f"{' --size ' + st.sizes[0] if st.sizes else ''}`)")
    return out


def _arch(root: Path) -> tuple | None:
    """(layers, hidden size) of the models evaluated under ``root/effectiveness``."""
    from .effectiveness_io import load_effectiveness

    try:
        recs = load_effectiveness(root)
    except Exception:  # noqa: BLE001 - a broken file is reported by the summary loader
        return None
    # a MICE checkpoint keeps only its m + n layers: the architecture is the full model's
    # (the teacher's, the ce student's), which is what the latency runs build
    hidden = {r.hidden_size for r in recs if r.num_layers}
    layers = [r.num_layers for r in recs if r.num_layers]
    return (max(layers), hidden.pop()) if len(hidden) == 1 and layers else None


# ---------------------------------------------------------------------------- table
def study_table(sr: StudyResults) -> Table:
    from ..data.registry import ABBREV

    g = sr.groups()
    cols = g["id"] + g["ood"]
    avg = (["ID"] if g["id"] else []) + (["OOD"] if g["ood"] else [])
    pps = {s.get("label"): s.get("train_pairs_per_s") for s in sr.record.get("systems", [])}
    steps = {s.get("label"): s.get("steps") for s in sr.record.get("systems", [])}
    groups = [("", 4)]
    if g["id"]:
        groups.append(("In-domain", len(g["id"])))
    if g["ood"]:
        groups.append(("Out-of-domain", len(g["ood"])))
    groups.append(("Average", len(avg)))
    groups.append(("Training", 2))
    t = Table(name=sr.stem, title=f"{sr.title.replace('`', '')}: {MEASURE} × 100 of every "
              "trained model", columns=["System", "Variant", "Init", "Loss"]
              + [ABBREV.get(d, d) for d in cols] + avg + ["steps", "pairs/s"],
              align="llll" + "r" * (len(cols) + len(avg) + 2), groups=groups)
    info = {s["label"]: s for s in sr.systems}
    rows = []
    for row in sr.summary.rows:
        s = info.get(row.variant, {})
        cells = [row.variant if row.variant != "bm25" else "BM25", s.get("variant", "–"),
                 s.get("init", "–"), s.get("loss", "–")]
        for d in cols:
            cells.append(percent_cell(row.cells.get(d, {}).get(MEASURE)))
        for grp in ([g["id"]] if g["id"] else []) + ([g["ood"]] if g["ood"] else []):
            v = sr.value(row.variant, grp)
            cells.append("–" if v is None else f"{100 * v:.1f}")
        p = pps.get(row.variant)
        cells += [str(steps.get(row.variant) or "–"), f"{p:.1f}" if p else "–"]
        rows.append(cells)
    t.add_section(None, rows)
    s = sr.summary
    n = s.comparisons.get(MEASURE, 0)
    legend = ", ".join(f"{ABBREV[d]} = {d}" for d in cols if d in ABBREV)
    size = (f" Size {sr.size}: {sr.size_description}." if sr.size else "")
    t.caption = (f"{MEASURE} × 100 of re-ranking the first stage's candidates, one row per "
                 f"trained model (results/{sr.rel}/).{size} ↑ / ↓: significantly better / "
                 f"worse than the system `{s.baseline}` (paired {s.test}, {s.correction} "
                 f"correction over the {n} comparisons of {sr.rel}/summary.json, corrected "
                 f"p < {s.alpha}). ID / OOD: mean over the in-domain ({', '.join(g['id']) or '–'}) "
                 f"/ out-of-domain ({', '.join(g['ood']) or '–'}) columns. Training: optimizer "
                 "steps and training throughput (pairs/s, median step, forward + backward + "
                 f"AdamW) from the training logs. Columns: {legend}.")
    return t


# ---------------------------------------------------------------------------- figures
def _merge_x(variant: str) -> tuple[str, int] | None:
    """(series, layer where query and document start to interact)."""
    if m := _MASK3.match(variant):
        return "mask3-l{k}", int(m.group(1))
    if m := _PRETTR.match(variant):
        return "prettr-l{k}", int(m.group(1))
    if m := _MICE.match(variant):
        return f"mice-l{{m}}+{m.group(2)}", int(m.group(1))
    return None


_COLORS = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#D55E00", "#56B4E9", "#000000")
_MARKERS = ("o", "s", "^", "D", "v", "P", "X")


def _panels(sr: StudyResults) -> list[tuple[str, list[str]]]:
    g = sr.groups()
    out = []
    if g["id"]:
        out.append((f"in-domain ({', '.join(g['id'])})", g["id"]))
    if g["ood"]:
        out.append((f"out-of-domain mean ({', '.join(g['ood'])})", g["ood"]))
    return out


def study_merge_layer_panels(sr: StudyResults) -> tuple[list[Panel], list[int]] | None:
    """The points of a training study's merge-layer figure: one panel per dataset group, in
    each a curve per family series (mask3-l{k}, prettr-l{k}, mice-l{m}+{n} per n: the
    students initialised from the base encoder, mean nDCG@10 × 100 over the group), a star
    per other merge-family student, and the ce student's and the teacher's levels. Returns
    (panels, merge layers), or None with fewer than two merge layers or no dataset group."""
    series: dict[str, dict[int, str]] = defaultdict(dict)
    extra = []   # systems of a merge family not initialised from the base encoder
    for s in sr.systems:
        if s.get("role") != "student":
            continue
        mx = _merge_x(s["variant"])
        if mx is None:
            continue
        if s.get("init") == "base":
            series[mx[0]][mx[1]] = s["label"]
        else:
            extra.append((mx[1], s["label"], s.get("init")))
    groups = _panels(sr)
    xs = sorted({x for v in series.values() for x in v})
    if len(xs) < 2 or not groups:
        return None
    order = sorted(series, key=lambda k: (not k.startswith("mask3"), not k.startswith("prettr"),
                                          k))
    panels = []
    for ptitle, ds in groups:
        panel = Panel(ptitle)
        for i, name in enumerate(order):
            pts = [(x, sr.value(lab, ds)) for x, lab in sorted(series[name].items())]
            pts = [(x, 100 * y) for x, y in pts if y is not None]
            if pts:
                panel.items.append(Curve(name, tuple(pts), _COLORS[i % 7],
                                         marker=_MARKERS[i % 7]))
        for x, lab, init in extra:
            y = sr.value(lab, ds)
            if y is not None:
                panel.items.append(Star(f"{lab} (init {init})", x, 100 * y))
        for lab, style, text in (("ce", "-", "ce student"), ("teacher", ":", "teacher (ce)")):
            if any(s["label"] == lab for s in sr.systems):
                y = sr.value(lab, ds)
                if y is not None:
                    panel.items.append(Level(text, 100 * y, "#555555", style))
        panels.append(panel)
    return panels, xs


def study_merge_layer_figure(sr: StudyResults, out: Path) -> tuple[str, str] | str:
    """A training study's merge-layer figure (:func:`study_merge_layer_panels`, drawn by
    :func:`.merge_layer.merge_layer_figure`)."""
    where = f"{sr.title.replace('`', '')}: {MEASURE} vs merge layer"
    got = study_merge_layer_panels(sr)
    if got is None:
        return (f"{where}: needs {MEASURE} of mask3-l{{k}} / prettr-l{{k}} / mice-l{{m}}+{{n}} "
                "students at two or more merge layers")
    panels, xs = got
    if not any(isinstance(it, Curve) for p in panels for it in p.items):
        return f"{where}: the merge-layer students have no {MEASURE} on the study's datasets"
    stem = f"{sr.stem}-ndcg-vs-merge-layer"
    merge_layer_figure(panels, xs, out, stem, size=(4.6 * len(panels), 4.2), legend_below=True,
                       title=f"{MEASURE} vs merge layer — {sr.title.replace('`', '')}",
                       xlabel="merge layer (layers before query and document interact)",
                       ylabel=f"{MEASURE} × 100")
    size = f" Size {sr.size}: {sr.size_description}." if sr.size else ""
    cap = (f"{MEASURE} × 100 of the students of {sr.name} against the layer where query and "
           "document start to interact: k of mask3-l{k} (query and document masked from "
           "each other below layer k) and prettr-l{k}, m of mice-l{m}+{n} (one line per n). "
           "Horizontal lines: the ce student (solid) and the teacher (dotted); star: a "
           f"student initialised from the teacher.{size} Effectiveness does not depend on "
           f"the device (results/{sr.rel}/summary.json).")
    return stem, cap


def _latency_rows(sr: StudyResults, results_dir: Path):
    from .latency_io import load_latency

    rows = []
    for base in (sr.root, results_dir):
        if (base / "latency").is_dir():
            rows += load_latency(base)[1]
    return rows


def pareto_figures(sr: StudyResults, results_dir: Path, out: Path
                   ) -> list[tuple[str, str, str]] | str:
    """One figure per latency device group: ``[(stem, title, caption)]`` or the reason."""
    from ..latency import table as lt

    where = f"{sr.title.replace('`', '')}: effectiveness vs throughput"
    students = [s for s in sr.systems if s.get("role") == "student"]
    variants = {s["variant"] for s in students}
    if sr.arch is None:
        return f"{where}: the architecture of the trained models is unknown"
    rows = [r for r in _latency_rows(sr, results_dir)
            if r.run.protocol == "rerank" and not r.compiled and not r.kv_cache_applied
            and r.variant in variants and (r.run.num_layers, r.run.hidden_size) == sr.arch]
    if not rows:
        return (f"{where}: no rerank-protocol latency of the study's variants on the "
                f"architecture of its models ({sr.arch[0]} layers, hidden {sr.arch[1]}); run "
                "the study's [[latency]] workload")
    panels = _panels(sr)
    figs, reasons = [], []
    for g, grows in lt.by_group(rows).items():
        count: dict[tuple, set] = defaultdict(set)
        for r in grows:
            count[(r.doc_tokens, r.depth or 0, r.batch_size_requested, r.query_tokens)].add(
                r.variant)
        point = max(count, key=lambda k: (len(count[k]), k))
        thr = {}
        for r in grows:
            k = (r.doc_tokens, r.depth or 0, r.batch_size_requested, r.query_tokens)
            if k == point and (r.variant not in thr or r.precompute_applied):
                thr[r.variant] = r
        pts = [(s["label"], s["variant"], s.get("init"), thr[s["variant"]].throughput)
               for s in students if s["variant"] in thr]
        if len({p[1] for p in pts}) < 2 or not any(p[0] == "ce" for p in pts):
            reasons.append(f"{where} on {group_label(g)}: needs the throughput of ce and of "
                           "at least one other variant at one measurement point")
            continue
        fig, axes = new_figure(5.0 * len(panels), 4.4, ncols=len(panels))
        for ax, (ptitle, ds) in zip(axes[0], panels):
            vals = [(lab, v, init, x, sr.value(lab, ds)) for lab, v, init, x in pts]
            vals = [(lab, v, init, x, 100 * y) for lab, v, init, x, y in vals if y is not None]
            for i, (lab, v, init, x, y) in enumerate(sorted(vals, key=lambda t: t[0])):
                ce = lab == "ce"
                ax.scatter([x], [y], color="#D55E00" if ce else _COLORS[i % 6],
                           marker="*" if ce else _MARKERS[i % 7], s=140 if ce else 45,
                           edgecolors="black", linewidths=0.5, zorder=3)
                ax.annotate(lab, (x, y), textcoords="offset points", xytext=(5, 3), fontsize=7)
            front, best = [], -math.inf
            for lab, v, init, x, y in sorted(vals, key=lambda t: (-t[3], -t[4])):
                if y > best:
                    front.append((x, y))
                    best = y
            if len(front) >= 2:
                ax.plot([x for x, _ in front], [y for _, y in front], color="#777777",
                        linestyle="--", linewidth=1, zorder=2, label="Pareto front")
            tv = sr.value("teacher", ds) if any(s["label"] == "teacher"
                                                for s in sr.systems) else None
            if tv is not None:
                ax.axhline(100 * tv, color="#555555", linestyle=":", linewidth=1,
                           label="teacher (ce)")
            xs = [v[3] for v in vals]
            if xs and max(xs) / min(xs) > 5:
                ax.set_xscale("log")
                plain_log_ticks(ax, "x")
            ax.set_xlabel("throughput (pairs/s, rerank protocol"
                          + ("; log scale)" if ax.get_xscale() == "log" else ")"))
            ax.set_ylabel(f"{MEASURE} × 100")
            ax.set_title(ptitle, fontsize=9)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(loc="best", frameon=True, fontsize=7)
        fig.suptitle(f"Effectiveness vs throughput — {sr.title.replace('`', '')} — "
                     f"{group_label(g)}", fontsize=10)
        fig.tight_layout()
        stem = f"{sr.stem}-pareto-{group_slug(g)}"
        save(fig, out, stem)
        r0 = next(iter(thr.values()))
        size = f" Size {sr.size}: {sr.size_description}." if sr.size else ""
        cap = (f"One point per student of {sr.name} (star: the ce student): {MEASURE} × 100 "
               f"against the throughput of its variant measured on {group_label(g)} with the "
               f"rerank protocol (batch {r0.batch_size_requested}, depth {r0.depth}, documents "
               f"of {r0.doc_tokens} tokens, query {r0.query_tokens} tokens, documents "
               f"precomputed where the variant allows) on the architecture of the trained "
               f"models ({sr.arch[0]} layers, hidden {sr.arch[1]}; random weights cost the "
               "same). Dashed: Pareto front (up and right is better); dotted: the teacher."
               f"{size}")
        figs.append((stem, f"Effectiveness vs throughput — {sr.title} — {group_label(g)}",
                     cap))
    if not figs:
        return "; ".join(reasons)
    return figs

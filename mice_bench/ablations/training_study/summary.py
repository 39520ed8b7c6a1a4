"""A training study's summary: paired tests of every system against the baseline system
(``summary.json|md``) and the record of what ran (``study.json``)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ...naming import slug
from ...study import Study
from .context import Context, training_device
from .paths import STUDY_RECORD, SUMMARY
from .readme import study_readme


def write_summary(ctx: Context) -> None:
    """Paired tests of every system against the baseline system, corrected together, from
    the result files under ``<root>/effectiveness``; then study.json and README.md."""
    summary, cfg = study_summary(ctx.study, ctx.root)
    from ...results import environment

    env = environment(device=training_device(ctx.study.training.options.get("device", "auto")))
    from ...evaluation import table

    table.write_summary(summary, ctx.root / SUMMARY, cfg, env)
    rec = _study_record(ctx, summary, env)
    from ...results import atomic_write_json, atomic_write_text

    atomic_write_json(ctx.root / STUDY_RECORD, rec)
    atomic_write_text(ctx.root / "README.md", study_readme(rec, summary))
    ctx.log(f"  wrote {ctx.root / SUMMARY}.json|md, {STUDY_RECORD}, README.md")


class _SystemInput:
    """An effectiveness record as :func:`summarize` reads it, with the system as the row."""

    def __init__(self, rec, system: str, file: str):
        self.variant, self.model, self.dataset_name = system, rec.model_label, rec.dataset_name
        self.per_query, self.aggregates, self.file = rec.per_query, rec.aggregates, file


def study_summary(study: Study, root: Path):
    """``(EffectivenessSummary, config)``: rows are the systems (BM25 first), columns the
    study's datasets (``in_domain`` -> group ``id``, the others ``ood``)."""
    from ...effectiveness.result import KIND, EffectivenessResult
    from ...evaluation.summary import SummaryDataset, SummarySettings, summarize

    eff = study.effectiveness
    o = eff.options
    systems = {slug(r.label): r for r in study.training.systems}
    inputs, first = [], {}
    folder = root / "effectiveness"
    for f in sorted(folder.rglob("*.json")) if folder.is_dir() else []:
        try:
            kind = json.loads(f.read_text()).get("schema", "")
        except (OSError, ValueError, AttributeError):
            continue
        if kind != f"mice-bench/{KIND}":
            continue
        res = EffectivenessResult.load(f)
        if res.dataset_name not in eff.datasets:
            continue
        rel = f.relative_to(root).as_posix()
        if res.variant == "bm25":
            first[res.dataset_name] = res.first_stage
            inputs.append(_SystemInput(res, "bm25", rel))
        elif res.model_label in systems and systems[res.model_label].variant == res.variant:
            inputs.append(_SystemInput(res, systems[res.model_label].label, rel))
    # one bm25 record per dataset (every evaluation wrote the same one)
    seen, uniq = set(), []
    for x in inputs:
        k = (x.variant, x.dataset_name)
        if k not in seen:
            seen.add(k)
            uniq.append(x)
    ids = set(o.get("in_domain", []))
    datasets = [SummaryDataset(d, None, "id" if d in ids else "ood", first.get(d) or "bm25")
                for d in eff.datasets if d in first]
    base = o.get("baseline", "ce")
    labels = ["bm25"] + [r.label for r in study.training.systems]
    if base not in labels:
        base = "bm25"
    measures = o.get("measures", ["nDCG@10", "RR@10", "R@100"])
    measures = measures if isinstance(measures, list) else measures.split(",")
    measures = [m for m in measures if all(m in x.per_query for x in uniq)] or measures
    settings = SummarySettings(baseline=base, test=o.get("test", "ttest"),
                               correction=o.get("correction", "holm"))
    summary = summarize(uniq, datasets, labels, settings, measures=measures)
    cfg = {"study": study.name, "size": study.size, "size_description": study.size_description,
           "systems": [{"label": r.label, "variant": r.variant, "init": r.init, "loss": r.loss,
                        "role": r.role} for r in study.training.systems],
           "baseline_system": base, "in_domain": sorted(ids),
           "note": "rows are systems (trained models), not variants of one model"}
    return summary, cfg


def _study_record(ctx: Context, summary, env: dict) -> dict:
    """study.json: the size, the machine, every system's training (steps, pairs/s, log)."""
    old = {}
    p = ctx.root / STUDY_RECORD
    if p.is_file():
        try:
            old = json.loads(p.read_text())
        except (OSError, ValueError):
            old = {}
    systems = []
    for r in ctx.study.training.systems:
        log = ctx.results / "training" / f"{ctx.prefix}-{slug(r.label)}.json"
        row = {"label": r.label, "variant": r.variant, "role": r.role, "init": r.init,
               "loss": r.loss, "batch_size": r.batch_size}
        if log.is_file():
            try:
                lg = json.loads(log.read_text())
                cfg = lg.get("config", {})
                thr = lg.get("throughput") or {}
                curve = (lg.get("curves") or {}).get("loss") or []
                row.update(steps=cfg.get("steps"), group_size=cfg.get("effective_group_size"),
                           pairs_per_step=thr.get("pairs_per_step"),
                           train_pairs_per_s=thr.get("pairs_per_s"),
                           median_step_s=thr.get("median_step_s"),
                           device=(lg.get("environment") or {}).get("device"),
                           precision=(lg.get("environment") or {}).get("dtype"),
                           loss_points=len(curve),
                           loss_first=curve[0]["loss"] if curve else None,
                           loss_last=curve[-1]["loss"] if curve else None,
                           training_log=f"training/{log.name}")
            except (OSError, ValueError, KeyError, TypeError):
                pass
        systems.append(row)
    load = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    timings = {**old.get("timings_s", {}), **ctx.record.get("timings_s", {})}
    for k in ("trained", "evaluated"):
        for lab, v in ctx.record.get(k, {}).items():
            timings[f"{k[:-2] if k == 'trained' else 'evaluate'} {lab}"] = v["wall_s"]
    if ctx.record.get("ran"):
        timings["this run (wall)"] = round(ctx.elapsed(), 1)
    return {"study": ctx.study.name, "size": ctx.study.size,
            "size_description": ctx.study.size_description,
            "machine": {"device": env.get("device"), "cpu_model": env.get("cpu_model"),
                        "gpu": env.get("device_name"), "torch": env.get("torch"),
                        "threads": env.get("threads"),
                        "load_average_at_start": ctx.record.get("load_start")
                        or old.get("machine", {}).get("load_average_at_start"),
                        "load_average_at_end": load, "cpu_count": os.cpu_count()},
            "busy_machine": _busy(ctx.record.get("load_start") or
                                  old.get("machine", {}).get("load_average_at_start"), load),
            "systems": systems, "timings_s": timings,
            "calibration": ctx.calibration or old.get("calibration") or None,
            "summary": f"{SUMMARY}.json"}


def _busy(start, end) -> bool | None:
    vals = [v[0] for v in (start, end) if v]
    if not vals:
        return None
    return max(vals) > 0.75 * (os.cpu_count() or 1)

"""Plan a study against the results that already exist, then run what is missing.

Work is done by the library functions behind the ``latency`` and ``effectiveness`` commands
(:func:`mice_bench.latency.run_latency`, :func:`mice_bench.effectiveness.runner.
run_effectiveness`) with typed configurations; each task also keeps the equivalent command
line, which ``--dry-run`` prints:

* a latency workload is *done* when a file under ``results/latency/`` has the same resolved
  configuration (model, protocol, batch sizes, document / query tokens, depth, precompute,
  K/V, dtype, device type, compile) and covers the workload's variants; otherwise it is run
  into ``results/latency/<study>-<workload>.json``;
* an effectiveness (model, variant, dataset) is *done* when a result for it exists under
  ``results/effectiveness/``; per model, one ``effectiveness`` call covers the datasets and
  variants that are missing (its caches keep already-scored pairs from being scored again).

``overwrite=True`` runs everything again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..errors import USER_ERRORS, UsageError
from ..naming import slug
from ..study import LatencyWorkload, Study, StudyError, expand_shared_data


@dataclass
class Task:
    kind: str                  # latency | effectiveness
    label: str
    args: list[str]            # the equivalent CLI arguments (after the program name)
    done: bool
    existing: list[str] = field(default_factory=list)
    output: str | None = None
    config: Any = None         # LatencyConfig | EffectivenessConfig | training_study.Step


# ---------------------------------------------------------------------------- latency
def _latency_config(wl: LatencyWorkload):
    """The workload's configuration as given (protocol defaults not filled in)."""
    from ..latency.config import LatencyConfig
    from ..options import from_study

    return LatencyConfig(**{**from_study(LatencyConfig, wl.options),
                            "variants": list(wl.variants)})


def _device_type(name: str) -> str:
    if name == "auto":
        try:
            import torch

            return "cuda" if torch.cuda.is_available() else "cpu"
        except ImportError:  # pragma: no cover
            return "cpu"
    return name.split(":")[0]


def latency_identity(cfg: Any) -> dict[str, Any]:
    """What makes two latency runs the same measurement (quality knobs excluded)."""
    get = (lambda k: cfg.get(k)) if isinstance(cfg, dict) else (lambda k: getattr(cfg, k))
    ident = {k: get(k) for k in ("model", "protocol", "depth", "kv_cache", "dtype", "compile",
                                  "precompute")}
    ident["batch_sizes"] = sorted(get("batch_sizes") or [])
    ident["doc_tokens"] = sorted(get("doc_tokens") or [])
    ident["query_tokens"] = get("query_tokens") if get("protocol") == "rerank" else None
    ident["device"] = _device_type(str(get("device")))
    return ident


def _existing_latency(results: Path) -> list[tuple[str, dict, set[str]]]:
    out = []
    folder = results / "latency"
    if not folder.is_dir():
        return out
    from ..results import ResultFileError, load_result

    for f in sorted(folder.rglob("*.json")):
        try:
            d = load_result(f, "latency")
        except ResultFileError:
            continue
        cfg = dict(d.get("config") or {})
        env = d.get("environment") or {}
        if env.get("device"):
            cfg["device"] = env["device"]
        try:
            out.append((f.relative_to(results).as_posix(), latency_identity(cfg),
                        set(cfg.get("variants") or [])))
        except (TypeError, KeyError):
            continue
    return out


def _latency_args(cfg: Any, output: Path) -> list[str]:
    """The equivalent ``mice-bench latency`` command line (printed by ``--dry-run``)."""
    from dataclasses import replace

    from ..options import to_args

    return to_args(replace(cfg, output=str(output)), "latency")


# ---------------------------------------------------------------------------- effectiveness
def _model_matches(given: str, recorded: str) -> bool:
    g, r = given.rstrip("/"), recorded.rstrip("/")
    try:   # the label `mice-bench effectiveness` gives a --model value
        from ..effectiveness.plan import ModelRef, model_labels

        if model_labels([ModelRef.parse(given)])[0][0] == recorded:
            return True
    except Exception:  # noqa: BLE001 - effectiveness package absent or changed
        pass
    return g == r or Path(g).name == Path(r).name or slug(g) == slug(r) \
        or slug(Path(g).name) == slug(Path(r).name)


def fs_kind(fs: str) -> str:
    return "run" if fs.startswith("run:") else fs


def fs_for(opt: str | list[str], dataset: str) -> str:
    """The first-stage kind a study asks for on ``dataset`` (``DATASET=`` overrides)."""
    vals = opt if isinstance(opt, list) else [opt]
    out = "bm25"
    for v in vals:
        if "=" in v.split(":", 1)[0]:
            continue
        out = v
    for v in vals:
        head = v.split(":", 1)[0]
        if "=" in head and v.split("=", 1)[0] == dataset:
            out = v.split("=", 1)[1]
    return fs_kind(out)


def _effectiveness_args(study: Study, model: str, datasets: list[str], variants: list[str],
                        results: Path) -> list[str]:
    """The equivalent ``mice-bench effectiveness`` command line (printed by ``--dry-run``)."""
    from ..effectiveness.cli import config_to_args

    return config_to_args(_effectiveness_config(study, model, datasets, variants, results))


def _effectiveness_config(study: Study, model: str, datasets: list[str],
                          variants: list[str], results: Path):
    """The typed configuration of one effectiveness task of ``study``."""
    from ..effectiveness.plan import ModelRef

    return study_config(study.effectiveness.options, datasets=list(datasets),
                        models=[ModelRef.parse(model)], variants=list(variants),
                        output_dir=str(results / "effectiveness"))


def study_config(options: dict[str, Any], **fixed: Any):
    """An ``[effectiveness]`` table's options (``{shared_data}`` expanded, ``device``
    ``auto`` unless given) with the task's ``fixed`` fields -> the typed config, as the
    command line makes it (:func:`mice_bench.effectiveness.plan.make_config`)."""
    from ..effectiveness.plan import EffectivenessConfig, make_config
    from ..options import from_study

    expand = lambda v: expand_shared_data(v) if isinstance(v, str) else v  # noqa: E731
    table = {k: [expand(x) for x in v] if isinstance(v, list) else expand(v)
             for k, v in options.items()}
    return make_config({"device": "auto", **from_study(EffectivenessConfig, table), **fixed})


@dataclass(frozen=True)
class ExistingResult:
    file: str
    variant: str
    dataset: str
    model: str
    first_stage: str


def existing_effectiveness(results: Path) -> list[ExistingResult]:
    """Every effectiveness result under ``results/effectiveness`` (summaries skipped)."""
    import json

    from ..effectiveness.result import KIND, EffectivenessResult

    folder = results / "effectiveness"
    out = []
    for f in sorted(folder.rglob("*.json")) if folder.is_dir() else []:
        try:
            kind = str(json.loads(f.read_text()).get("schema", ""))
        except (OSError, ValueError, AttributeError):
            kind = ""
        if kind != f"mice-bench/{KIND}":
            continue
        r = EffectivenessResult.load(f)
        out.append(ExistingResult(f.relative_to(results).as_posix(), r.variant, r.dataset_name,
                             r.model_label or "", r.first_stage))
    return out


# ---------------------------------------------------------------------------- plan / run
def latency_tasks(study: Study, results: Path, overwrite: bool,
                   workloads: list[str] | None) -> list[Task]:
    """One task per latency workload, into ``results/latency/<study>-<workload>.json``."""
    tasks = []
    existing = _existing_latency(results)
    for i, wl in enumerate(study.latency):
        if workloads and wl.name not in workloads:
            continue
        try:
            given = _latency_config(wl)
            cfg = given.resolved()
        except UsageError as e:
            raise StudyError(f"{study.path}: latency workload {wl.name!r} "
                             f"(key 'latency[{i}]'): {e}") from None
        ident = latency_identity(cfg)
        want = set(cfg.variants)
        hits = [f for f, idn, vs in existing if idn == ident and want <= vs]
        out = results / "latency" / f"{slug(study.name)}-{slug(wl.name)}.json"
        cfg.output = out.as_posix()
        tasks.append(Task("latency", f"latency workload {wl.name!r}",
                          _latency_args(given, out), done=bool(hits) and not overwrite,
                          existing=hits, output=out.as_posix(), config=cfg))
    return tasks


def plan_study(study: Study, results: str | Path = "results", overwrite: bool = False,
               only: str | None = None, models: list[str] | None = None,
               workloads: list[str] | None = None) -> list[Task]:
    results = Path(results)
    names = [w.name for w in study.latency]
    for w in workloads or []:
        if w not in names:
            raise UsageError(f"--workload {w!r}: study {study.name} has "
                             + (", ".join(names) if names else "no latency workloads"))
    tasks: list[Task] = []
    if only not in (None, "latency", "effectiveness"):
        raise UsageError(f"--only {only!r}: valid: latency, effectiveness")
    if study.training is not None:
        if only == "latency":     # its latency workloads go to the study's own folder
            return latency_tasks(study, study.results_root(results), overwrite, workloads)
        raise UsageError(f"study {study.name} trains its models: plan it with "
                         "mice_bench.ablations.training_study.plan_training_study")
    if study.latency and only in (None, "latency"):
        tasks += latency_tasks(study, results, overwrite, workloads)
    if study.effectiveness is not None and only in (None, "effectiveness"):
        from ..results import ResultFileError

        try:
            recs = existing_effectiveness(results)
        except ResultFileError as e:
            raise UsageError(str(e)) from None
        plan = study.effectiveness
        fs_opt = plan.options.get("first_stage", "bm25")
        for model in models or plan.models:
            missing: dict[str, list[str]] = {}
            have: list[str] = []
            for ds in plan.datasets:
                for v in plan.variants:
                    hit = [r for r in recs if r.variant == v and r.dataset == ds
                           and (v == "bm25" or _model_matches(model, r.model))
                           and fs_kind(r.first_stage or "bm25") == fs_for(fs_opt, ds)]
                    if hit and not overwrite:
                        have.append(hit[0].file)
                    else:
                        missing.setdefault(ds, []).append(v)
            if not missing:
                tasks.append(Task("effectiveness", f"effectiveness {model}", [], done=True,
                                  existing=sorted(set(have))))
                continue
            vs = [v for v in plan.variants if any(v in m for m in missing.values())]
            base = plan.options.get("baseline", "ce")
            if base in plan.variants and base not in vs:
                vs.append(base)   # significance needs the baseline; its scores are cached
            tasks.append(Task("effectiveness", f"effectiveness {model}",
                              _effectiveness_args(study, model, list(missing), vs, results),
                              done=False, existing=sorted(set(have)),
                              config=_effectiveness_config(study, model, list(missing), vs,
                                                           results)))
    return tasks


def execute(task: Task, log: Callable[[str], None] = print) -> None:
    """Run one task with the library (no command line in between); UsageError on bad input."""
    if hasattr(task.config, "run"):          # a training study's step (training_study.Step)
        task.config.run(log)
        return
    if task.kind == "latency":
        from ..latency.runner import run_latency
        from ..results import check_output

        check_output(Path(task.config.output))   # before the model loads (exit 2)
        res = run_latency(task.config, log=log)
        res.save(task.config.output)
    else:
        from ..devices import placement
        from ..effectiveness.runner import run_effectiveness

        cfg = task.config     # the same device / dtype policy as the command line
        cfg.device = placement(cfg.device, cfg.dtype).device
        run_effectiveness(cfg)


def run_study(study: Study, tasks: list[Task], log: Callable[[str], None] = print,
              runner: Callable[[Task], None] | None = None) -> list[Task]:
    """Run the tasks that are not done; StudyError (exit 2) when one fails."""
    runner = runner or (lambda t: execute(t, log))
    ran = []
    for t in tasks:
        if t.done:
            log(f"skip {t.label}: results exist ({', '.join(t.existing[:3])}"
                + (" …" if len(t.existing) > 3 else "") + ")")
            continue
        log(f"run  {t.label}" + (f": mice-bench {' '.join(t.args)}" if t.args else ""))
        try:
            runner(t)
        except USER_ERRORS as e:
            raise StudyError(f"study {study.name}: {t.label} failed: {e}"
                             + (f" (command: mice-bench {' '.join(t.args)})" if t.args
                                else "")) from None
        ran.append(t)
    return ran

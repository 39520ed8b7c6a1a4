"""The effectiveness command's options, typed, and the validated plan of work.

:class:`EffectivenessConfig` holds every option of ``mice-bench effectiveness`` (the command
line and study files parse their spellings into it); :func:`make_plan` checks them all and
resolves datasets, first stages, document files, variants, models and the baseline into a
:class:`Plan`, raising :class:`~mice_bench.errors.UsageError` (exit 2, one line) before any
work is done.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import UsageError
from ..results import cache_dir, default_results_dir
from ..naming import slug
from ..data.collections import DatasetInfo, resolve_datasets
from ..data.firststage import FirstStage
from ..evaluation.metrics import DEFAULT_MEASURES, check_depth, parse_measures, split_measures
from ..options import option
from ..spec import split_names
from ..safeio import warn
from ..evaluation.stats import CORRECTIONS, TESTS
from ..evaluation.summary import default_baseline

__all__ = ["BM25", "EffectivenessConfig", "ModelRef", "Plan", "default_cache_dir",
           "make_config", "make_plan",
           "model_labels", "per_dataset", "resolve_variants", "split_overrides"]

BM25 = "bm25"


def default_cache_dir() -> Path:
    """The effectiveness command's caches (:func:`mice_bench.results.cache_dir`)."""
    return cache_dir("effectiveness")


@dataclass(frozen=True)
class ModelRef:
    """A model to evaluate: a Hugging Face id, a local directory or an architecture name
    (random weights), and the label that names it in result paths and tables (derived from
    the name when ``None``: :func:`model_labels`)."""

    name: str
    label: str | None = None

    @classmethod
    def parse(cls, text: str) -> "ModelRef":
        """The CLI's ``--model`` value: ``PATH`` or ``LABEL=PATH``.

        >>> ModelRef.parse("s1=minilm-l6"), ModelRef.parse("org/model")
        (ModelRef(name='minilm-l6', label='s1'), ModelRef(name='org/model', label=None))
        """
        if "=" in text and "/" not in text.split("=", 1)[0] and not Path(text).exists():
            label, name = text.split("=", 1)
            return cls(name, label)
        return cls(text)


_LISTS = ("datasets", "variants", "measures")

INPUTS, SCORING, STATISTICS, OUTPUT = "Inputs", "Scoring", "Measures and tests", "Output"


def _model_text(m: ModelRef) -> str:
    return f"{m.label}={m.name}" if m.label else m.name


def _overrides(default: str | None, overrides: dict[str, str], *, implied: str | None = None
               ) -> list[str]:
    """A per-dataset option's texts: the value for every dataset (left out where it is
    ``implied``), then one ``DATASET=VALUE`` per override."""
    head = [default] if default is not None and default != implied else []
    return head + [f"{k}={v}" for k, v in overrides.items()]


@dataclass
class EffectivenessConfig:
    """Every option of the command, typed and declared once (:mod:`mice_bench.options`; see
    ``docs/effectiveness.md``). Lists are lists: the comma-separated and ``DATASET=SPEC``
    spellings of the command line and study files are parsed by :func:`make_config`."""

    datasets: list[str] = option(
        default_factory=lambda: ["scifact"], spelling="list", panel=INPUTS,
        help="comma-separated names (dl19, scifact, ...), groups id | beir | all, or "
             "irds:<ir_datasets id>")
    models: list[ModelRef] = option(
        default_factory=list, flag="--model", spelling="repeat", parse=ModelRef.parse,
        show=_model_text, study=False, panel=INPUTS,
        help="HF id or local path; repeat for seeds of one system; LABEL=PATH names it")
    variants: list[str] = option(
        default_factory=lambda: [BM25], spelling="list", split=split_names, cli_default=None,
        panel=INPUTS, help="comma-separated: bm25,ce,mask1,mice-l4+3,colbert,... (default: bm25 "
        "and the variant stored in each mice-bench checkpoint)")
    # --first-stage / --docs: VALUE for every dataset, DATASET=VALUE for one (make_config)
    first_stage: str = option(
        BM25, spelling="repeat", cli_default=[BM25], panel=INPUTS,
        texts=lambda c: _overrides(c.first_stage, c.first_stage_for, implied=BM25),
        help="bm25 | run:PATH | full; DATASET=SPEC overrides one dataset; {dataset} in PATH "
             "is replaced by the dataset name")
    first_stage_for: dict[str, str] = field(default_factory=dict)   # dataset -> override
    docs: str | None = option(
        None, spelling="repeat", cli_default=[], panel=INPUTS,
        texts=lambda c: _overrides(c.docs, c.docs_for),
        help="JSONL (doc_id, text) with the document texts; DATASET=PATH for one dataset; "
             "{dataset} is replaced")
    docs_for: dict[str, str] = field(default_factory=dict)          # dataset -> override
    depth: int = option(100, panel=INPUTS, help="candidates per query")
    limit_queries: int | None = option(None, panel=INPUTS, help="first N judged queries only")
    measures: list[str] = option(
        default_factory=lambda: list(DEFAULT_MEASURES), spelling="list",
        split=split_measures, panel=STATISTICS, help="ir_measures names, comma-separated")
    baseline: str | None = option(
        None, panel=STATISTICS, help="variant tested against (default ce if run, else bm25)")
    test: str = option("ttest", choices=TESTS, panel=STATISTICS,
                       help="ttest | randomization")
    correction: str = option("holm", choices=CORRECTIONS, panel=STATISTICS,
                             help="holm | bonferroni | none")
    alpha: float = 0.05
    seed: int = option(0, panel=STATISTICS, help="seed (random heads, the randomization test, the residual codecs' sample)")
    batch_size: int = option(32, panel=SCORING, help="pairs per forward")
    doc_batch_size: int = option(64, panel=SCORING,
                                 help="documents per forward when precomputing")
    dtype: str = option("fp32", panel=SCORING,
                        help="fp32 | bf16 | int8 (dynamic int8 linear layers, CPU) | fp16")
    device: str = option("cpu", cli_default="auto", panel=SCORING,
                         help="auto | cpu | cuda[:N]")
    executor: str = option("auto", panel=SCORING,
                           help="auto | fast | reference")
    query_max_tokens: int | None = option(
        None, panel=SCORING,
        help="query word pieces (default: the variant's reference setting, see docs/spec.md)")
    doc_max_tokens: int | None = option(
        None, panel=SCORING, help="document word pieces (default: the variant's reference "
                                  "setting)")
    output_dir: str = option(
        default_factory=lambda: str(default_results_dir("effectiveness")), cli_default=None,
        study=False, panel=OUTPUT, help="where result files go (default ./mice-bench-results/effectiveness "
        "or $MICE_BENCH_RESULTS/effectiveness; never the committed results/ unless given)")
    cache_dir: str | None = option(
        None, panel=OUTPUT, help="score/state/index caches (default "
                                 "~/.cache/mice-bench/effectiveness, $MICE_BENCH_CACHE)")
    summary_name: str = option("summary", panel=OUTPUT,
                               help="summary files OUTPUT-DIR/NAME.md and NAME.json")
    # fp16 | fp32 | int8 | residual1|2|4 (mice_bench/store/codecs.py)
    doc_store: str = option(
        "fp16", panel=SCORING,
        help="document-state store: fp16 | fp32 | int8 (per-token scaled; a quarter of fp32) "
             "| residual1 | residual2 | residual4 (ColBERTv2-style centroid id + b bits per "
             "dimension; needs the storage extra, faiss-cpu)")
    pool_factor: int = option(
        1, panel=SCORING,
        help="split-first variants: each stored document's tokens pooled to about 1/N "
             "(hierarchical clustering, Ward; each cluster's mean), 1: none")
    codec_sample_tokens: int | None = option(
        None, panel=SCORING,
        help="residual stores: stored tokens the codec is trained on (default 262144; as "
             "store build)")
    gzip_runs: bool = option(
        True, spelling="switch", panel=OUTPUT,
        help="write each TREC run as <variant>.trec.gz (ir_measures reads it) or plain")
    local_attention: str = option(
        "window", choices=("window", "global"), panel=SCORING,
        help="ModernBERT's local layers: window (the checkpoint's sliding window, as Hugging "
             "Face and flash attention run it) | global (every position, as the MICE "
             "reference's eager attention runs it)")
    runtime: str = option(
        "torch", choices=("torch", "ort"), panel=SCORING,
        help="torch | ort (the variants' ONNX export under onnxruntime, pairs scored through "
             "the graphs, documents encoded with their pairs: no document store; pip install "
             "'mice-bench[onnx]')")

    def __post_init__(self) -> None:
        for name in _LISTS:
            if isinstance(getattr(self, name), str):
                raise TypeError(f"EffectivenessConfig.{name} is a list of names, not "
                                f"{getattr(self, name)!r} (comma-separated text is parsed "
                                "by the command line)")
        self.models = [m if isinstance(m, ModelRef) else ModelRef(str(m))
                       for m in self.models]

    def as_dict(self) -> dict:
        d = asdict(self)
        d["cache_dir"] = str(self.cache_path())
        return d

    def cache_path(self) -> Path:
        return Path(self.cache_dir) if self.cache_dir else default_cache_dir()


# --------------------------------------------------------------------------- option parsing
def make_config(given: dict) -> EffectivenessConfig:
    """The options given on the command line or in a study file (field values, as
    :func:`mice_bench.options.given` returns them) -> the typed config. Without ``variants``:
    ``bm25`` and the variant stored in each mice-bench checkpoint; ``first_stage`` / ``docs``
    are lists of ``VALUE`` for every dataset and ``DATASET=VALUE`` for one
    (:func:`split_overrides`)."""
    kw = dict(given)
    if kw.get("variants") is None:
        from ..model import checkpoint_variant

        stored = [v for v in (checkpoint_variant(r.name) for r in kw.get("models", [])) if v]
        kw["variants"] = [BM25, *dict.fromkeys(stored)]
    names = [d.name for d in resolve_datasets(kw.get("datasets") or
                                              EffectivenessConfig().datasets)]
    fs, kw["first_stage_for"] = split_overrides(kw.pop("first_stage", []), names,
                                                "--first-stage")
    kw["first_stage"] = fs or BM25
    kw["docs"], kw["docs_for"] = split_overrides(kw.pop("docs", []), names, "--docs")
    return EffectivenessConfig(**kw)


def split_overrides(values: list[str], names: list[str], option: str
                    ) -> tuple[str | None, dict[str, str]]:
    """The front ends' spelling (command line, study files) of a per-dataset option:
    ``VALUE`` for every dataset, ``DATASET=VALUE`` for one -> ``(default, overrides)``.
    A value may hold ``=`` itself (``run:a=b.trec``): only a dataset name before it makes
    an override.

    >>> split_overrides(["bm25", "dl19=run:a=b.trec"], ["dl19", "dl20"], "--first-stage")
    ('bm25', {'dl19': 'run:a=b.trec'})
    """
    over = [v for v in values if "=" in v and v.split("=", 1)[0] in names]
    base = [v for v in values if v not in over]
    if len(base) > 1:
        raise UsageError(f"{option} given twice without a DATASET= prefix: {base}")
    return (base[0] if base else None), dict(v.split("=", 1) for v in over)


def per_dataset(default: str | None, overrides: dict[str, str],
                datasets: list[DatasetInfo], option: str) -> dict[str, str | None]:
    """``default`` for every dataset, ``overrides[name]`` where given; an override naming a
    dataset that is not run is an error (a typo would silently do nothing)."""
    names = [d.name for d in datasets]
    unknown = [k for k in overrides if k not in names]
    if unknown:
        raise UsageError(f"{option} {unknown[0]}=...: {unknown[0]!r} is not among the "
                         f"datasets run ({', '.join(names)})")
    return {n: overrides.get(n, default) for n in names}


def model_labels(models: list[ModelRef]) -> list[tuple[str, str]]:
    """``[(label, name or path)]``: the given label, else one derived from the name (the
    directory, or its parent for generic names such as ``model`` / ``final``); repeated
    labels get ``-2``, ``-3``."""
    out: list[tuple[str, str]] = []
    for ref in models:
        ref = ref if isinstance(ref, ModelRef) else ModelRef(str(ref))
        name = ref.name
        if ref.label:
            label = ref.label
        else:
            p = Path(name.rstrip("/"))
            label = p.name
            generic = ("model", "checkpoint", "final", "best", "hf", "")
            if label.lower() in generic and p.parent.name:
                label = p.parent.name
        label = slug(label) or "model"
        base, n = label, 1
        while label in [x[0] for x in out]:
            n += 1
            label = f"{base}-{n}"
        out.append((label, name))
    return out


def resolve_variants(names: list[str]) -> list[str]:
    """Canonical variant names, order kept, duplicates dropped; SpecError for unknown names."""
    from ..spec import parse

    out: list[str] = []
    for raw in (n.strip() for n in names):
        if not raw:
            continue
        name = BM25 if raw.lower() == BM25 else str(parse(raw))
        if name not in out:
            out.append(name)
    if not out:
        raise UsageError("no variant given (e.g. --variants bm25,ce,mice-l4+3)")
    return out


@dataclass
class Plan:
    """The validated work: datasets with their first stage and docs, variants, models."""

    datasets: list[DatasetInfo]
    first_stage: dict[str, FirstStage]
    docs: dict[str, str | None]
    variants: list[str]
    models: list[tuple[str, str]]
    measures: list
    baseline: str | None


def make_plan(cfg: EffectivenessConfig) -> Plan:
    """Check every option of ``cfg`` and resolve it into the :class:`Plan` (UsageError, one
    line, for the first bad one; loads no data and no model)."""
    datasets = resolve_datasets(cfg.datasets)
    variants = resolve_variants(cfg.variants)
    if BM25 not in variants:
        variants.insert(0, BM25)   # the first stage is a row of every table
    measures = parse_measures(cfg.measures)
    if cfg.test not in TESTS:
        raise UsageError(f"unknown --test {cfg.test!r}; valid: {', '.join(TESTS)}")
    if cfg.correction not in CORRECTIONS:
        raise UsageError(f"unknown --correction {cfg.correction!r}; valid: "
                         f"{', '.join(CORRECTIONS)}")
    if isinstance(cfg.depth, bool) or not isinstance(cfg.depth, int) or cfg.depth < 1:
        raise UsageError(f"--depth must be a whole number >= 1, got {cfg.depth!r}")
    beyond = check_depth(cfg.measures, measures, cfg.depth, "--measures")
    if beyond:                           # the default measures: flagged, in every result
        warn(f"{', '.join(beyond)} cut off above --depth {cfg.depth}: over {cfg.depth} "
             "candidates they measure the first stage's depth (recorded as "
             "'beyond_depth' in every result); pass --measures to choose others")
    fs_raw = per_dataset(cfg.first_stage or BM25, cfg.first_stage_for, datasets,
                         "--first-stage")
    first_stage = {n: FirstStage.parse(v or BM25) for n, v in fs_raw.items()}
    docs_raw = per_dataset(cfg.docs, cfg.docs_for, datasets, "--docs")
    docs = {n: (v.replace("{dataset}", n) if v else None) for n, v in docs_raw.items()}
    model_vars = [v for v in variants if v != BM25]
    models = model_labels(cfg.models)
    if model_vars and not models:
        raise UsageError(f"variants {', '.join(model_vars)} need at least one --model "
                         "(a Hugging Face id or a local checkpoint directory)")
    if any(fs.kind == "full" for fs in first_stage.values()):
        from ..spec import PRECOMPUTABLE, parse

        cannot = [v for v in model_vars if not parse(v).precomputable]
        if cannot:
            raise UsageError(f"--first-stage full scores the whole corpus and needs variants "
                             f"whose documents can be precomputed ({PRECOMPUTABLE}); "
                             f"{', '.join(cannot)} cannot: use --first-stage bm25")
    if cfg.runtime not in ("torch", "ort"):
        raise UsageError(f"unknown --runtime {cfg.runtime!r}; valid: torch, ort")
    if cfg.runtime == "ort":
        if any(fs.kind == "full" for fs in first_stage.values()):
            raise UsageError("--runtime ort scores (query, document) pairs through the ONNX "
                             "graphs; --first-stage full needs stored documents: use "
                             "--first-stage bm25 or run:FILE")
        if cfg.dtype != "fp32":
            raise UsageError(f"--runtime ort runs the fp32 ONNX export; got --dtype {cfg.dtype}")
        import importlib.util

        if importlib.util.find_spec("onnxruntime") is None:
            raise UsageError("--runtime ort needs onnxruntime: pip install 'mice-bench[onnx]'")
    baseline = cfg.baseline
    if baseline is None:
        baseline = default_baseline(variants)
    else:
        baseline = BM25 if baseline.lower() == BM25 else baseline
        if baseline != BM25:
            from ..spec import parse

            baseline = str(parse(baseline))
        if baseline not in variants:
            raise UsageError(f"--baseline {cfg.baseline} is not among --variants "
                             f"({', '.join(variants)})")
    return Plan(datasets, first_stage, docs, variants, models, measures, baseline)

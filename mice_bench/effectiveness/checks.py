"""Everything ``mice-bench effectiveness`` can check before it does any work.

:func:`preflight` runs after the plan is made and before a dataset is loaded, a first stage
runs or a model loads: every numeric option, the device, the dtype, the executor, the
document store, every ``--docs`` and ``run:`` file, every local model directory (config,
weight files complete), every variant against the model's depth (when it is known without
loading), and that the output and cache folders are writable. Each problem is a
:class:`~mice_bench.errors.UsageError` (one line, exit 2) naming the option or the path.

:func:`check_candidates` runs after the datasets are loaded, before the first stage: each
``run:`` file must be well formed and cover at least one judged query (a warning with the
coverage when it covers only some).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ..backbones.files import check_model_dir, checkpoint_layers, safetensors_problem
from ..errors import UsageError, positive_int
from ..store.docstore import DEFAULT_STORE, STORE_FORMATS

__all__ = ["preflight", "check_candidates", "check_model_dir", "check_writable",
           "check_device", "safetensors_problem"]

DTYPE_NAMES = ("fp32", "fp16", "bf16", "int8", "float32", "float16", "bfloat16")


def preflight(cfg, plan, output_option: str = "--output-dir") -> None:
    """Validate every option, path and output location of ``cfg``/``plan`` (see module);
    ``output_option``: the option that names ``cfg.output_dir`` in the calling command."""
    positive_int("--batch-size", cfg.batch_size)
    positive_int("--doc-batch-size", cfg.doc_batch_size)
    positive_int("--query-max-tokens", cfg.query_max_tokens, optional=True)
    positive_int("--doc-max-tokens", cfg.doc_max_tokens, optional=True)
    if str(cfg.dtype) not in DTYPE_NAMES:
        raise UsageError(f"unknown --dtype {cfg.dtype!r}; valid: fp32, bf16, int8, fp16")
    from ..executors import EXECUTOR_CHOICES

    if str(cfg.executor) not in EXECUTOR_CHOICES:
        raise UsageError(f"unknown --executor {cfg.executor!r}; valid: "
                         f"{', '.join(EXECUTOR_CHOICES)}")
    positive_int("--pool-factor", cfg.pool_factor)
    positive_int("--codec-sample-tokens", cfg.codec_sample_tokens, optional=True)
    store = getattr(cfg, "doc_store", DEFAULT_STORE)
    if store not in STORE_FORMATS:
        raise UsageError(f"unknown --doc-store {store!r}; valid: {', '.join(STORE_FORMATS)}")
    from ..store.codecs import unavailable

    if unavailable(store):
        raise UsageError(unavailable(store))
    from ..backbone import LOCAL_ATTENTION

    if getattr(cfg, "local_attention", "window") not in LOCAL_ATTENTION:
        raise UsageError(f"unknown --local-attention {cfg.local_attention!r}; valid: "
                         f"{', '.join(LOCAL_ATTENTION)}")
    name = str(cfg.summary_name)
    if not name or "/" in name or os.sep in name or name in (".", ".."):
        raise UsageError(f"--summary-name {name!r} must be a plain file name (no folder)")
    model_vars = [v for v in plan.variants if v != "bm25"]
    from ..devices import check_dtype, placement

    # the one device / dtype policy (fp16 refused on CPU, exit 2); the device itself only
    # matters when a model runs
    if model_vars:
        placement(str(cfg.device), str(cfg.dtype))
    else:
        check_dtype(str(cfg.dtype), str(cfg.device))
    for ds, path in plan.docs.items():
        if path is not None:
            _readable_file(Path(path), f"--docs {path}" + (f" (dataset {ds})" if ds else ""),
                           "JSONL with doc_id and text")
    for ds, fs in plan.first_stage.items():
        if fs.kind == "run":
            p = fs.run_path(ds)
            _readable_file(p, f"--first-stage run:{p} (dataset {ds})",
                           "a TREC run 'qid Q0 docid rank score [tag]'")
    for label, name in plan.models:
        layers = checkpoint_layers(name)
        if layers is None:               # a hub id: refused at once when it cannot load here
            from ..backbone import check_hub_model

            check_hub_model(name)
            continue
        from ..spec import parse

        for v in model_vars:
            spec = parse(v)
            spec.validate(layers)
            if str(cfg.executor) == "fast" and spec.fast_path(layers) is None:
                raise UsageError(f"{spec} has no fast path (only ce and split-first variants: "
                                 "prettr, mice, colbert, biencoder); use --executor reference "
                                 "or auto")
    if Path(cfg.output_dir).resolve() != cfg.cache_path().resolve():   # store build: one
        check_writable(Path(cfg.output_dir), output_option)
    check_writable(cfg.cache_path(), "--cache-dir")


def _readable_file(p: Path, what: str, expect: str) -> None:
    if not p.exists():
        raise UsageError(f"{what}: no such file (expected {expect})")
    if not p.is_file():
        raise UsageError(f"{what}: not a file (expected {expect})")
    if not os.access(p, os.R_OK):
        raise UsageError(f"{what}: not readable")


def check_device(device: str) -> str:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N`` that exists on this machine (the package's one
    device policy, :func:`mice_bench.devices.resolve_device`); returns the resolved name."""
    from ..devices import resolve_device

    return resolve_device(device)


def check_writable(folder: Path, option: str) -> None:
    """Create ``folder`` if needed and prove a file can be created and renamed in it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise UsageError(f"{option} {folder}: exists and is not a folder") from None
    except OSError as e:
        raise UsageError(f"{option} {folder}: cannot create it ({e.strerror or e})") from None
    if not folder.is_dir():
        raise UsageError(f"{option} {folder}: exists and is not a folder")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".write-test.", suffix=".tmp", dir=folder)
        os.close(fd)
        os.replace(tmp, tmp + ".renamed")
        os.unlink(tmp + ".renamed")
    except OSError as e:
        raise UsageError(f"{option} {folder}: not writable ({e.strerror or e}); choose another "
                         "folder") from None


# --------------------------------------------------------------------------- candidates
def check_candidates(plan, colls) -> dict[str, dict]:
    """Read every ``run:`` file now (strictly, see :func:`.firststage.read_trec_run`) and check
    it against the judged queries: exit 2 when it matches none, a warning when it covers only
    some. Returns ``{dataset: coverage}`` for the ``run:`` datasets."""
    from ..data.firststage import check_run_coverage, read_trec_run

    out = {}
    for name, coll in colls.items():
        fs = plan.first_stage[name]
        if fs.kind != "run":
            continue
        path = fs.run_path(name)
        out[name] = check_run_coverage(read_trec_run(path), coll.queries, f"run file {path}")
    return out

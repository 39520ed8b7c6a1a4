"""``mice-bench offline-node stage``: build the folder a GPU node without internet runs from.

Its files are listed in docs/gpu.md ("1. Stage"): the packed model (:mod:`.model_copy`), the
queries, BM25 candidates and texts of each data set, the NFCorpus training groups
(``{"qid", "query", "positives": [ids], "negatives": [ids]}``, ids into
``nfcorpus.docs.jsonl.gz``), wheels, this mice-bench, ``run.sh``. The folder is built in a
temporary folder and copied into place at the end; ``MANIFEST.json`` lists every file with
its sha256, which the node checks where it reads the file (:func:`.formats.checked`).
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UsageError
from ..results import git_commit
from ..safeio import sha256_file
from .formats import DATASETS, MANIFEST, STAGED_BY, read_manifest, write_trec
from .model_copy import check_model, convert_model

PACKAGE = Path(__file__).resolve().parents[1]  # the mice_bench package
CHECKOUT = PACKAGE.parent  # a checkout when it holds pyproject.toml
MIB = 1024 * 1024
#: the default of ``--max-mib``: what many transfer paths to a cluster's nodes accept at once
DEFAULT_MAX_MIB = 64.0

BOOTSTRAP = """#!/usr/bin/env bash
# Run the staged mice-bench suite on this GPU node, without a network:
#
#   bash run.sh [options of `mice-bench offline-node run`, e.g. --budget-s 1800 --out DIR]
#
# Uses the Python on PATH (or $PYTHON), which needs torch, transformers, tokenizers,
# safetensors, numpy, typer, rich and pytest; wheels staged in wheels/ are installed first.
HERE=$(cd "$(dirname "$0")" && pwd)
export PYTHONDONTWRITEBYTECODE=1  # the staged folder stays as it was staged
[[ -d $HERE/src ]] && export PYTHONPATH="$HERE/src${PYTHONPATH:+:$PYTHONPATH}"
exec "${PYTHON:-python3}" -m mice_bench.cli offline-node run "$HERE" "$@"
"""


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- data
def stage_irds(cache: Path, sd: Path) -> None:
    """An ir_datasets home with the offline data staged (unless IR_DATASETS_HOME is set)."""
    if os.environ.get("IR_DATASETS_HOME"):
        return
    home = cache / "irds"
    if not (home / "beir" / "nfcorpus" / "source.zip").exists():
        subprocess.run(["bash", str(sd / "stage-ir-datasets.sh"), str(home)], check=True,
                       stdout=subprocess.DEVNULL)
    os.environ["IR_DATASETS_HOME"] = str(home)


def write_jsonl_gz(path: Path, rows) -> int:
    n = 0
    # mtime=0: the same content gives the same bytes (stable sha256 in the manifest)
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0,
                                                filename="") as gz:
        for r in rows:
            gz.write((json.dumps(r, ensure_ascii=False) + "\n").encode())
            n += 1
    return n


def eval_ndcg10(qrels: dict, run: dict) -> float | None:
    try:
        import ir_measures
    except ImportError:
        return None
    m = ir_measures.parse_measure("nDCG@10")
    return float(ir_measures.calc_aggregate([m], qrels, run)[m])


def candidates(name: str, depth: int, sd: Path, limit_queries: int | None, cache: Path):
    """(collection, run) of the BM25 top-``depth`` of dataset ``name``."""
    from mice_bench.data.collections import load_collection, resolve_datasets
    from mice_bench.data.firststage import FirstStage, run_first_stage

    info = resolve_datasets(name)[0]
    if name in ("dl19", "dl20"):
        dl = sd / "trec-dl-candidates"
        coll = load_collection(info, docs_path=dl / f"{name}.docs.jsonl",
                               limit_queries=limit_queries)
        fs = FirstStage.parse(f"run:{dl}/bm25/trec_results_{{dataset}}.txt")
    else:
        coll = load_collection(info, limit_queries=limit_queries)
        fs = FirstStage.parse("bm25")
    run = run_first_stage(fs, coll, depth, cache / "firststage")
    return coll, run


def write_dataset(name: str, coll, run: dict, data: Path, extra_doc_ids=()) -> dict:
    qpath = data / f"{name}.queries.jsonl"
    with qpath.open("w", encoding="utf-8") as f:
        for qid, text in coll.queries.items():
            f.write(json.dumps({"qid": qid, "text": text}, ensure_ascii=False) + "\n")
    write_trec(data / f"{name}.bm25.trec.gz", {q: run.get(q, {}) for q in coll.queries},
               "bm25")
    ids = sorted({d for q in coll.queries for d in run.get(q, {})} | set(extra_doc_ids))
    texts = coll.doc_texts(ids)
    n_docs = write_jsonl_gz(data / f"{name}.docs.jsonl.gz",
                            ({"doc_id": d, "text": texts[d]} for d in ids))
    pairs = sum(len(run.get(q, {})) for q in coll.queries)
    ndcg = eval_ndcg10(coll.qrels, {q: run.get(q, {}) for q in coll.queries})
    log(f"  {name}: {len(coll.queries)} queries, {pairs} candidate pairs, {n_docs} documents"
        + (f", BM25 nDCG@10 {ndcg:.4f}" if ndcg is not None else ""))
    return {"irds_id": coll.info.irds_id, "queries": len(coll.queries), "pairs": pairs,
            "documents": n_docs, "bm25_ndcg@10": ndcg}


def training_groups(data: Path, negatives_depth: int, max_positives: int,
                    limit_queries: int | None, cache: Path):
    """NFCorpus train groups through mice_bench.training (None when it is missing)."""
    try:
        from mice_bench.training.data import load_irds
    except ImportError as e:
        log(f"  training data skipped: mice_bench.training is not importable ({e})")
        return None, set()
    td = load_irds("beir/nfcorpus/train", first_stage="bm25", docs=None,
                   negatives_depth=negatives_depth, val_queries=0, val_depth=negatives_depth,
                   limit_queries=limit_queries, cache_dir=cache / "training", message=None)
    rows, ids = [], set()
    for qid, text in td.queries.items():
        pos = td.positives[qid][:max_positives]
        neg = td.negatives[qid]
        ids.update(pos)
        ids.update(neg)
        rows.append({"qid": qid, "query": text, "positives": pos, "negatives": neg})
    n = write_jsonl_gz(data / "nfcorpus-train.groups.jsonl.gz", rows)
    info = {"source": td.source, "queries": n, "positives": sum(len(r["positives"]) for r in rows),
            "negatives": sum(len(r["negatives"]) for r in rows), "max_positives": max_positives,
            "negatives_depth": negatives_depth, "documents": len(ids), "notes": td.notes}
    log(f"  nfcorpus-train: {n} queries, {info['positives']} positives (at most "
        f"{max_positives} a query), {info['negatives']} BM25 negatives (top {negatives_depth})")
    return info, ids


# --------------------------------------------------------------------------- wheels
def download_wheels(specs: list[str], dst: Path, python_version: str) -> list[str]:
    """``pip download`` binary manylinux x86-64 wheels of ``specs`` for CPython
    ``python_version`` (the node's) into ``dst``; no dependencies (name every one)."""
    dst.mkdir(parents=True, exist_ok=True)
    if not specs:
        return []
    plats = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux1_x86_64"]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--python-version", python_version, "--implementation", "cp", "-d", str(dst)]
    for p in plats:
        cmd += ["--platform", p]
    done = subprocess.run(cmd + specs)
    if done.returncode:
        raise UsageError(f"--wheel {' '.join(specs)}: pip download failed (exit "
                         f"{done.returncode}, see above); check each name and version")
    return sorted(p.name for p in dst.glob("*.whl"))


# --------------------------------------------------------------------------- source
def copy_source(out: Path) -> dict:
    """This mice-bench into ``out/src/mice_bench`` and, from a checkout, the GPU checks into
    ``out/tests``."""
    shutil.copytree(PACKAGE, out / "src" / "mice_bench",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    tests = CHECKOUT / "tests" / "gpu" / "test_gpu_checks.py"
    staged_tests = None
    if tests.is_file():
        (out / "tests").mkdir()
        shutil.copy2(tests, out / "tests" / tests.name)
        staged_tests = f"tests/{tests.name}"
    return {"source": "src/mice_bench", "tests": staged_tests}


def write_bootstrap(out: Path) -> None:
    path = out / "run.sh"
    path.write_text(BOOTSTRAP)
    path.chmod(0o755)


# --------------------------------------------------------------------------- sizes
def checkout_size() -> int:
    """Bytes of the checkout's tracked and untracked-not-ignored files (0 outside a checkout),
    for a transfer that sends the checkout beside the staged folder."""
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                              "--exclude-standard"], cwd=CHECKOUT, capture_output=True,
                             check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return 0
    total = 0
    for rel in out.split(b"\0"):
        if rel:
            p = CHECKOUT / rel.decode()
            if p.is_file():
                total += p.stat().st_size
    return total


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def size_verdict(folder_bytes: int, extra_bytes: int, max_mib: float) -> str | None:
    """None when ``folder_bytes + extra_bytes`` fits ``max_mib`` with 2 MiB to spare (0: no
    limit), else the line that says by how much it does not."""
    if max_mib <= 0:
        return None
    total = (folder_bytes + extra_bytes) / MIB
    if total <= max_mib - 2:
        return None
    where = "over" if total > max_mib else "within 2 MiB of"
    return (f"{total:.1f} MiB is {where} --max-mib {max_mib:g}: use --limit-queries, "
            "--no-training or fewer --datasets")


# --------------------------------------------------------------------------- stage
@dataclass
class StageOptions:
    datasets: list[str] = field(default_factory=lambda: list(DATASETS))
    depth: int = 100
    limit_queries: int | None = None
    training: bool = True
    negatives_depth: int = 30
    max_positives: int = 4
    wheels: list[str] = field(default_factory=list)
    python_version: str = f"{sys.version_info.major}.{sys.version_info.minor}"
    check: bool = False
    source: bool = True
    max_mib: float = DEFAULT_MAX_MIB
    count_checkout: bool = False
    cache: Path | None = None  # None: a temporary folder, removed at the end


#: what ``--wheel`` takes: one pinned distribution
WHEEL_SPEC = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?==[A-Za-z0-9][A-Za-z0-9.+!_-]*")


def check_target(out: Path) -> bool:
    """Whether ``out`` holds an earlier staging that staging may replace; UsageError when
    ``out`` is neither new, empty nor a staged folder holding only what staging wrote."""
    choices = "give a new folder, an empty one or one staged before"
    for above in out.parents:
        if above.exists():
            if not above.is_dir():
                raise UsageError(f"{out}: {above} is a file; {choices}")
            break
    if not out.exists():
        return False
    if not out.is_dir():
        raise UsageError(f"{out} is a file; {choices}")
    if not any(out.iterdir()):
        return False
    if not (out / MANIFEST).is_file():
        raise UsageError(f"{out} is a folder with other files and no {MANIFEST}; {choices}")
    listed = set(read_manifest(out).get("files") or {}) | {MANIFEST}
    for p in sorted(out.rglob("*")):
        rel = p.relative_to(out).as_posix()
        if not p.is_dir() and rel not in listed:
            raise UsageError(f"{out} holds {rel}, which staging did not write; {choices}")
    return True


def validate(out: Path, opts: StageOptions) -> None:
    """Reject bad options and targets before any work (exit 2 through the CLI)."""
    bad = [d for d in opts.datasets if d not in DATASETS]
    if bad or not opts.datasets:
        raise UsageError(f"--datasets: unknown {', '.join(bad) or '(none given)'}; choose from "
                         f"{', '.join(DATASETS)}")
    for name, v in (("--depth", opts.depth), ("--negatives-depth", opts.negatives_depth),
                    ("--max-positives", opts.max_positives)):
        if v < 1:
            raise UsageError(f"{name} must be at least 1, got {v}")
    if opts.limit_queries is not None and opts.limit_queries < 1:
        raise UsageError(f"--limit-queries must be at least 1, got {opts.limit_queries}")
    if opts.max_mib < 0:
        raise UsageError(f"--max-mib must be 0 (no limit) or more, got {opts.max_mib:g}")
    for spec in opts.wheels:
        if not WHEEL_SPEC.fullmatch(spec):
            raise UsageError(f"--wheel {spec!r}: give NAME==VERSION, e.g. "
                             "pytest-timeout==2.3.1")
    if not re.fullmatch(r"3\.\d{1,2}", opts.python_version):
        raise UsageError(f"--python-version {opts.python_version!r}: give MAJOR.MINOR, e.g. 3.12")
    if opts.cache is not None and opts.cache.exists() and not opts.cache.is_dir():
        raise UsageError(f"--cache {opts.cache} is a file; give a folder")
    check_target(out)



def stage(out: Path, opts: StageOptions) -> tuple[dict, str | None]:
    """Build the staged folder ``out`` (new, empty, or an earlier staging that it replaces);
    returns its manifest and the size verdict (None: it fits ``opts.max_mib``). The folder is
    built in a temporary folder and copied into place at the end: a failed staging leaves
    nothing."""
    out = out.resolve()
    validate(out, opts)
    from mice_bench.data.collections import shared_data_dir

    sd = shared_data_dir()
    if sd is None:
        raise UsageError("the offline data folder (with stage-ir-datasets.sh) was not found; "
                         "set MICE_BENCH_SHARED_DATA")
    t0 = time.time()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    with tempfile.TemporaryDirectory(prefix="mice-offline-node-stage-") as tmp:
        build = Path(tmp) / "folder"
        build.mkdir()
        cache = opts.cache.resolve() if opts.cache is not None else Path(tmp) / "cache"
        cache.mkdir(parents=True, exist_ok=True)
        irds = os.environ.get("IR_DATASETS_HOME")
        try:
            manifest = build_folder(build, opts, cache, sd)
        finally:  # an ir_datasets home staged in the temporary cache is gone afterwards
            if irds is None:
                os.environ.pop("IR_DATASETS_HOME", None)
        if check_target(out):  # an earlier staging, with nothing but what staging wrote
            shutil.rmtree(out)
        empty_before = out.is_dir()
        try:
            shutil.copytree(build, out, dirs_exist_ok=True)
        except BaseException:
            for p in (out.iterdir() if empty_before else [out]):
                shutil.rmtree(p) if p.is_dir() else p.unlink()
            raise
    folder = manifest["sizes"]["folder_bytes"]
    tree = manifest["sizes"]["checkout_bytes"]
    with_tree = f", with the checkout {(folder + tree) / MIB:.1f} MiB" if tree else ""
    log(f"wrote {out} ({folder / MIB:.1f} MiB{with_tree}) in {time.time() - t0:.0f} s; on the "
        f"node: bash {out}/run.sh")
    return manifest, size_verdict(folder, tree, opts.max_mib)


def build_folder(out: Path, opts: StageOptions, cache: Path, sd: Path) -> dict:
    """Write the staged folder's files into the empty folder ``out``; returns the manifest."""
    manifest: dict = {"staged_by": STAGED_BY,
                      "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                      "git_commit": git_commit(CHECKOUT), "prepared_with": {
                          "python": sys.version.split()[0], "argv": sys.argv[1:]}}
    # the wheels first: a spec pip cannot find stops staging before the long steps
    manifest["wheels"] = download_wheels(opts.wheels, out / "wheels", opts.python_version)

    log("model: all-MiniLM-L6-v2 -> fp16")
    manifest["model"] = convert_model(out / "model")
    if opts.check:
        manifest["model"]["check"] = check_model(out / "model")

    stage_irds(cache, sd)
    data = out / "data"
    data.mkdir()
    log("data: queries, BM25 candidates and texts")
    train_info, train_ids = (None, set())
    if opts.training:
        train_info, train_ids = training_groups(data, opts.negatives_depth, opts.max_positives,
                                                opts.limit_queries, cache)
    manifest["datasets"] = {}
    for name in opts.datasets:
        coll, run = candidates(name, opts.depth, sd, opts.limit_queries, cache)
        extra = train_ids if name == "nfcorpus" else ()
        manifest["datasets"][name] = write_dataset(name, coll, run, data, extra)
    if train_info is not None and "nfcorpus" not in opts.datasets:
        # the training groups refer to NFCorpus documents: write their texts anyway
        from mice_bench.data.collections import load_collection, resolve_datasets

        coll = load_collection(resolve_datasets("nfcorpus")[0])
        texts = coll.doc_texts(sorted(train_ids))
        write_jsonl_gz(data / "nfcorpus.docs.jsonl.gz",
                       ({"doc_id": d, "text": texts[d]} for d in sorted(train_ids)))
    manifest["training"] = train_info
    manifest["source"] = copy_source(out) if opts.source else None
    write_bootstrap(out)
    # every file, with its sha256: the node checks each where it reads it, and a later
    # staging replaces this folder only while it holds nothing else
    manifest["files"] = {p.relative_to(out).as_posix(): {"bytes": p.stat().st_size,
                                                         "sha256": sha256_file(p)}
                         for p in sorted(out.rglob("*")) if p.is_file()}
    folder = dir_size(out)
    tree = checkout_size() if opts.count_checkout else 0
    manifest["sizes"] = {"folder_bytes": folder, "checkout_bytes": tree,
                         "transfer_bytes": folder + tree, "max_mib": opts.max_mib}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest

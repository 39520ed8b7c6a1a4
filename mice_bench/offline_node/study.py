"""The training mini-replication of a node run (``node.sh`` runs it; needs no IR library)::

    python -m mice_bench.offline_node.study --work WORK --carry FOLDER --model MODEL_DIR

all-MiniLM-L6-v2 (staged, fp16 weights loaded in fp32) is fine-tuned once per variant
(default ``ce`` and ``mice-l2+2``, the paper's MICE shape on 6 layers: 2 layers below,
2 interaction layers, 2 dropped) on NFCorpus train with BM25 hard negatives, LCE loss over
groups of 1 positive + 7 negatives, the same steps, data and seed for every variant, through
``mice-bench train`` (bf16 autocast on CUDA). Each trained model then re-ranks the staged
BM25 top-100 of DL19, DL20 and NFCorpus test; the scores are written as TREC runs
(``runs/<variant>.<dataset>.trec.gz``), evaluated on the connected machine by
``mice-bench offline-node collect``.

The number of steps fits the time budget: a short calibration run of ``ce`` (the most
expensive variant) measures the step time, the training overhead and the scoring rate; the
steps are then the same for every variant. Writes ``training/study.json`` and the training
logs (``training/<variant>.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from ..errors import UsageError
from ..naming import slug
from .formats import DATASETS, checked, expand_training_jsonl, ranked, read_docs, \
    read_queries, read_trec, write_trec


def log(msg: str) -> None:
    print(f"[study {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def train(args, variant: str, output: Path, data: Path, steps: int, log_dir: Path,
          limit_s: float) -> tuple[int, float]:
    cmd = [sys.executable, "-m", "mice_bench.cli", "train", "--model", args.model,
           "--variant", variant, "--data", str(data), "--output", str(output),
           "--loss", "lce", "--group-size", str(args.group_size),
           "--batch-size", str(args.batch_size), "--steps", str(steps), "--lr", str(args.lr),
           "--val-queries", "0", "--query-max-tokens", str(args.query_max_tokens),
           "--doc-max-tokens", str(args.doc_max_tokens), "--device", args.device,
           "--precision", args.precision, "--seed", "0", "--log-dir", str(log_dir),
           "--cache-dir", str(args.tmp / "train-cache"), "--overwrite",
           "--no-progress"]
    log(" ".join(cmd[2:]))
    t = time.time()
    try:
        rc = subprocess.run(cmd, timeout=max(limit_s, 1)).returncode
    except subprocess.TimeoutExpired:
        rc = 124
    return rc, time.time() - t


def load_sets(carry: Path, rehearsal: bool) -> dict:
    """The staged queries, BM25 candidates and texts (each file checked against the
    manifest)."""
    sets = {}
    for name in DATASETS:
        if not (carry / "data" / f"{name}.queries.jsonl").exists():
            continue
        queries = read_queries(checked(carry, f"data/{name}.queries.jsonl"))
        run = read_trec(checked(carry, f"data/{name}.bm25.trec.gz"))
        docs = read_docs(checked(carry, f"data/{name}.docs.jsonl.gz"))
        qids = [q for q in queries if run.get(q)]
        if rehearsal:
            qids = qids[:3]
        cands = {q: [d for d, _ in ranked(run[q])][: (10 if rehearsal else None)] for q in qids}
        sets[name] = {"queries": queries, "cands": cands, "docs": docs}
    return sets


def score_sets(model_dir: Path, device: str, sets: dict, batch: int, out_dir: Path,
               tag: str, limit_pairs: int | None = None) -> dict:
    """Score every (query, candidate) pair of ``sets`` with the checkpoint; write TREC runs
    (unless ``limit_pairs``: a timing probe). Returns seconds and pairs per dataset."""
    import torch

    from mice_bench.model import InteractionModel

    model = InteractionModel.from_pretrained(str(model_dir), device=device)
    model.eval()
    ex = model.executor("auto")
    stats = {}
    for name, s in sets.items():
        keys = [(q, d) for q, ds in s["cands"].items() for d in ds]
        if limit_pairs is not None:
            keys = keys[:limit_pairs]
        t = time.time()
        with torch.inference_mode():
            scores = ex.score_pairs([s["queries"][q] for q, _ in keys],
                                    [s["docs"][d] for _, d in keys], batch_size=batch).tolist()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        dt = time.time() - t
        stats[name] = {"pairs": len(keys), "seconds": round(dt, 3)}
        if limit_pairs is None:
            run: dict = {}
            for (q, d), v in zip(keys, scores):
                run.setdefault(q, {})[d] = float(v)
            write_trec(out_dir / f"{tag}.{name}.trec.gz", run, tag)  # gzip: ~5x smaller
        if limit_pairs is not None:
            break  # the probe times one set
    return stats


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--carry", type=Path, required=True, help="the staged folder")
    ap.add_argument("--model", required=True, help="the unpacked all-MiniLM-L6-v2 folder")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--variants", default="ce,mice-l2+2")
    ap.add_argument("--budget-s", type=float, default=200.0)
    ap.add_argument("--batch-size", type=int, default=32, help="queries per step")
    ap.add_argument("--group-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=3e-5)
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--query-max-tokens", type=int, default=32)
    ap.add_argument("--doc-max-tokens", type=int, default=256)
    ap.add_argument("--score-batch", type=int, default=256)
    ap.add_argument("--min-steps", type=int, default=100)
    ap.add_argument("--max-steps", type=int, default=1000)
    ap.add_argument("--calib-steps", type=int, default=20)
    ap.add_argument("--tmp", type=Path, required=True,
                    help="a folder for what does not come back (data, checkpoints)")
    ap.add_argument("--rehearsal", action="store_true", help="tiny sizes (CPU check)")
    args = ap.parse_args(argv)
    t_start = time.time()
    deadline = t_start + args.budget_s
    if args.rehearsal:
        args.batch_size, args.group_size, args.doc_max_tokens = 2, 4, 48
        args.min_steps, args.max_steps, args.calib_steps = 2, 3, 2
        args.score_batch = 16
    variants = [v for v in args.variants.split(",") if v]
    tdir = args.work / "training"
    rdir = args.work / "runs"
    tdir.mkdir(parents=True, exist_ok=True)
    rdir.mkdir(parents=True, exist_ok=True)
    study: dict = {"variants": variants, "device": args.device, "budget_s": args.budget_s,
                   "hyper": {k: getattr(args, k) for k in (
                       "batch_size", "group_size", "lr", "precision", "query_max_tokens",
                       "doc_max_tokens")}, "loss": "lce", "data": "nfcorpus-train (BM25 top-30 "
                   "negatives, at most 4 positives a query)", "rows": []}

    def save() -> None:
        (tdir / "study.json").write_text(json.dumps(study, indent=1) + "\n")

    try:
        import mice_bench.training  # noqa: F401
    except ImportError as e:
        study["skipped"] = f"mice_bench.training is not importable: {e}"
        save()
        log(study["skipped"])
        return 0
    groups = args.carry / "data" / "nfcorpus-train.groups.jsonl.gz"
    if not groups.exists():
        study["skipped"] = f"{groups} is missing (staged with --no-training?)"
        save()
        log(study["skipped"])
        return 0
    tmp = args.tmp
    tmp.mkdir(parents=True, exist_ok=True)
    data = tmp / "nfcorpus-train.jsonl"
    try:
        study["train_data"] = expand_training_jsonl(
            checked(args.carry, "data/nfcorpus-train.groups.jsonl.gz"),
            checked(args.carry, "data/nfcorpus.docs.jsonl.gz"), data,
            limit_queries=16 if args.rehearsal else None)
        sets = load_sets(args.carry, args.rehearsal)
    except UsageError as e:
        study["skipped"] = str(e)
        save()
        log(study["skipped"])
        return 1
    log(f"training data: {study['train_data']}")
    n_pairs = sum(len(d) for s in sets.values() for d in s["cands"].values())
    study["scoring"] = {n: sum(len(d) for d in s["cands"].values()) for n, s in sets.items()}

    # ---- calibration: ce for a few steps (step time, overhead), then a scoring probe
    cal_out = tmp / "calib"
    rc, wall = train(args, "ce", cal_out, data, args.calib_steps, tmp / "calib-log",
                     deadline - time.time())
    if rc != 0:
        study["skipped"] = f"calibration run failed (exit {rc})"
        save()
        log(study["skipped"])
        return 1
    logs = sorted((tmp / "calib-log").glob("*.json"))
    thr = json.loads(logs[-1].read_text()).get("throughput", {}) if logs else {}
    step_s = float(thr.get("median_step_s") or wall / max(args.calib_steps, 1))
    overhead = max(wall - step_s * args.calib_steps, 0.0)
    probe = score_sets(cal_out, args.device, sets, args.score_batch, rdir, "probe",
                       limit_pairs=1024)
    p = next(iter(probe.values())) if probe else {"pairs": 1, "seconds": 0.0}
    score_s = n_pairs * p["seconds"] / max(p["pairs"], 1) + 15  # + model load
    left = deadline - time.time() - 10
    n = len(variants)
    steps = int((left - n * (overhead + score_s)) / (n * step_s * 1.15))
    study["calibration"] = {"steps": args.calib_steps, "wall_s": round(wall, 1),
                            "median_step_s": step_s, "overhead_s": round(overhead, 1),
                            "score_probe": probe, "score_estimate_s": round(score_s, 1),
                            "seconds_left": round(left, 1), "steps_fit": steps}
    log(f"calibration: {step_s * 1e3:.0f} ms/step, overhead {overhead:.0f} s, scoring "
        f"~{score_s:.0f} s per model; {left:.0f} s left -> {steps} steps fit")
    steps = min(steps, args.max_steps)
    if steps < args.min_steps:
        study["skipped"] = (f"only {steps} steps fit in the budget (minimum {args.min_steps})")
        save()
        log(study["skipped"])
        return 0
    study["steps"] = steps
    save()

    # ---- train and score each variant
    failed = 0
    for v in variants:
        row: dict = {"variant": v, "steps": steps}
        study["rows"].append(row)
        left = deadline - time.time()
        if left < overhead + steps * step_s + score_s * 0.5:
            row["status"] = f"skipped ({left:.0f} s left)"
            save()
            log(f"{v}: {row['status']}")
            continue
        out = tmp / f"model-{slug(v)}"
        rc, wall = train(args, v, out, data, steps, tdir, left - score_s * 0.5)
        row.update(train_exit=rc, train_wall_s=round(wall, 1))
        logs = [p for p in tdir.glob("*.json") if p.name != "study.json"
                and out.name in p.name]
        if logs:
            lg = json.loads(logs[0].read_text())
            row["log"] = logs[0].name
            row["throughput"] = lg.get("throughput")
            curve = (lg.get("curves") or {}).get("loss") or []
            row["loss_first"] = curve[0]["loss"] if curve else None
            row["loss_last"] = curve[-1]["loss"] if curve else None
        if rc != 0:
            row["status"] = "train failed" if rc != 124 else "train timed out"
            failed += 1
            save()
            continue
        try:
            row["scoring"] = score_sets(out, args.device, sets, args.score_batch, rdir, slug(v))
            row["status"] = "ok"
        except Exception as e:  # noqa: BLE001 - keep the other variants going
            row["status"] = f"scoring failed: {type(e).__name__}: {e}"
            failed += 1
        save()
        log(f"{v}: {row['status']} ({row.get('train_wall_s')} s training)")
    study["wall_s"] = round(time.time() - t_start, 1)
    save()
    return 1 if failed else 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
    sys.exit(main())

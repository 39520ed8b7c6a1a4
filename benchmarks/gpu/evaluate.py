#!/usr/bin/env python
"""Back here after a GPU run: unpack what came back, evaluate its TREC runs, write results/.

    python benchmarks/gpu/evaluate.py /work/.device/<...>/mice-gpu-results.tar.gz
    python benchmarks/gpu/evaluate.py ARCHIVE --tag h100-first --latency-to-report

* unpacks the archive (or copies a folder) into ``results/gpu/<tag>/`` (``--dest``):
  ``latency/*.json`` (mice-bench latency results), ``tests/`` (junit.xml, sdpa-kernels.json),
  ``training/`` (training logs, study.json), ``runs/*.trec.gz`` (plain ``.trec`` from older
  runs is gzipped here, so that committed results stay small enough to travel), ``logs/``,
  ``run.log``,
  ``env.txt``, ``summary.txt`` (regenerated);
* evaluates every ``runs/<variant>.<dataset>.trec[.gz]`` (dl19, dl20, nfcorpus) with ir_measures
  against the qrels in ``../shared/data`` (nDCG@10 and RR@10), beside the BM25 first stage
  the run re-ranked (``gpu-carry/data/<dataset>.bm25.trec.gz``), with a paired t-test
  against BM25 (scipy), over the same queries; writes ``effectiveness.json`` and
  ``effectiveness.md`` there and prints the table;
* ``--latency-to-report`` also copies the latency files to ``results/latency/gpu-<tag>/``,
  so that ``mice-bench report`` puts them into ``report/`` (run it, then commit both).

The tag defaults to ``<gpu>-<UTC date and time of the run>``, e.g. ``h100-20261127-153000``.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))
from carrylib import read_trec  # noqa: E402

QRELS = {
    "dl19": "trec-dl-2019/qrels.dl19-passage.txt",
    "dl20": "trec-dl-2020/qrels.dl20-passage.txt",
    "nfcorpus": "beir-topics-qrels/qrels.beir-v1.0.0-nfcorpus.test.txt",
}
MEASURES = ("nDCG@10", "RR@10")


def shared_data() -> Path:
    try:
        from mice_bench.effectiveness.datasets import shared_data_dir

        d = shared_data_dir()
        if d is not None:
            return d
    except ImportError:
        pass
    return REPO.parent / "shared" / "data"


def unpack(src: Path, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    if src.is_dir():
        shutil.copytree(src, dest, dirs_exist_ok=True)
        return
    with tarfile.open(src) as tf:
        try:
            tf.extractall(dest, filter="data")
        except TypeError:  # Python without extraction filters
            for m in tf.getmembers():
                if m.name.startswith("/") or ".." in Path(m.name).parts:
                    raise SystemExit(f"{src}: unsafe member {m.name}")
            tf.extractall(dest)


def default_tag(folder: Path) -> str:
    gpu = "gpu"
    env = folder / "env.txt"
    if env.exists():
        m = re.search(r'"gpu":\s*"([^"]+)"', env.read_text(errors="replace"))
        if m:
            g = re.search(r"(H100|H200|A100|L4|L40S?|B200|GH200)", m.group(1), re.I)
            gpu = (g.group(1) if g else m.group(1).split()[-1]).lower()
        elif '"cuda_available": false' in env.read_text(errors="replace"):
            gpu = "cpu"
    stamp = "run"
    log = folder / "run.log"
    if log.exists():
        m = re.search(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)Z", log.read_text(
            errors="replace")[:400])
        if m:
            stamp = "".join(m.groups()[:3]) + "-" + "".join(m.groups()[3:])
    return f"{gpu}-{stamp}"


def run_files(folder: Path) -> list[Path]:
    """The TREC runs of a result folder (``runs/<variant>.<dataset>.trec[.gz]``), probes out."""
    d = folder / "runs"
    if not d.is_dir():
        return []
    return sorted(p for p in d.iterdir() if p.name.endswith((".trec", ".trec.gz"))
                  and not p.name.startswith("probe."))


def gzip_runs(folder: Path) -> None:
    """Replace plain ``.trec`` runs by deterministic gzip files (mtime 0)."""
    import gzip

    for p in run_files(folder):
        if p.name.endswith(".trec"):
            gz = p.with_name(p.name + ".gz")
            gz.write_bytes(gzip.compress(p.read_bytes(), mtime=0))
            p.unlink()


def evaluate(folder: Path, carry: Path) -> dict:
    import ir_measures

    sd = shared_data()
    ms = [ir_measures.parse_measure(m) for m in MEASURES]
    out: dict = {"measures": list(MEASURES), "datasets": {}}
    runs = run_files(folder)
    by_ds: dict[str, dict[str, Path]] = {}
    for p in runs:
        variant, _, ds = p.name.removesuffix(".gz").removesuffix(".trec").rpartition(".")
        by_ds.setdefault(ds, {})[variant] = p
    for ds, variants in sorted(by_ds.items()):
        if ds not in QRELS or not (sd / QRELS[ds]).exists():
            out["datasets"][ds] = {"error": f"no qrels for {ds} in {sd}"}
            continue
        qrels = {}
        for q in ir_measures.read_trec_qrels(str(sd / QRELS[ds])):
            qrels.setdefault(q.query_id, {})[q.doc_id] = int(q.relevance)
        scored = {v: read_trec(p) for v, p in variants.items()}
        qids = sorted(set.intersection(*(set(r) for r in scored.values())) & set(qrels))
        cand = carry / "data" / f"{ds}.bm25.trec.gz"
        if cand.exists():
            bm25 = read_trec(cand)
            scored = {"bm25": {q: bm25.get(q, {}) for q in qids}, **scored}
        rows = {}
        per_query = {}
        for v, run in scored.items():
            run = {q: run.get(q, {}) for q in qids}
            pq = {str(m): {} for m in ms}
            for r in ir_measures.iter_calc(ms, {q: qrels[q] for q in qids}, run):
                pq[str(r.measure)][r.query_id] = float(r.value)
            per_query[v] = pq
            rows[v] = {m: (sum(pq[m].get(q, 0.0) for q in qids) / len(qids) if qids else None)
                       for m in pq}
        if "bm25" in per_query:
            try:
                from scipy.stats import ttest_rel

                for v in rows:
                    if v == "bm25":
                        continue
                    a = [per_query[v]["nDCG@10"].get(q, 0.0) for q in qids]
                    b = [per_query["bm25"]["nDCG@10"].get(q, 0.0) for q in qids]
                    rows[v]["p_vs_bm25_nDCG@10"] = float(ttest_rel(a, b).pvalue) \
                        if len(qids) > 1 else None
            except ImportError:
                pass
        out["datasets"][ds] = {"queries": len(qids), "rows": rows,
                               "qrels": QRELS[ds]}
    return out


def render(ev: dict, study: dict | None) -> str:
    L = ["# GPU run: re-ranking effectiveness (BM25 top-100 re-ranked)", ""]
    if study and not study.get("skipped"):
        h = study.get("hyper", {})
        L.append(f"all-MiniLM-L6-v2 fine-tuned on NFCorpus train ({study.get('data')}), "
                 f"{study.get('steps')} steps x {h.get('batch_size')} queries x "
                 f"{h.get('group_size')} documents, loss {study.get('loss')}, lr {h.get('lr')}, "
                 f"documents cut to {h.get('doc_max_tokens')} tokens; one seed (0). "
                 "p: paired t-test of nDCG@10 against BM25 over the same queries, "
                 "uncorrected.")
        L.append("")
    L.append("| dataset | queries | run | nDCG@10 | RR@10 | p vs BM25 |")
    L.append("|---|---|---|---|---|---|")
    for ds, d in ev["datasets"].items():
        if "rows" not in d:
            L.append(f"| {ds} | - | {d.get('error')} | | | |")
            continue
        for v, r in d["rows"].items():
            p = r.get("p_vs_bm25_nDCG@10")
            L.append(f"| {ds} | {d['queries']} | {v} | {r['nDCG@10']:.4f} | {r['RR@10']:.4f} | "
                     f"{'' if p is None else f'{p:.2g}'} |")
    return "\n".join(L) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("source", type=Path, help="mice-gpu-results.tar.gz or an unpacked folder")
    ap.add_argument("--dest", type=Path, default=REPO / "results" / "gpu")
    ap.add_argument("--tag", default=None)
    ap.add_argument("--carry", type=Path, default=REPO / "gpu-carry",
                    help="the gpu-carry/ the run used (its BM25 candidates)")
    ap.add_argument("--latency-to-report", action="store_true",
                    help="copy latency/*.json to results/latency/gpu-<tag>/")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        unpack(args.source, Path(tmp))
        tag = args.tag or default_tag(Path(tmp))
        folder = args.dest / tag
        if folder.exists():
            shutil.rmtree(folder)
        shutil.copytree(tmp, folder)
    for p in (folder / "runs").glob("probe.*"):
        p.unlink()
    subprocess.run([sys.executable, str(HERE / "summary.py"), str(folder)],
                   stdout=subprocess.DEVNULL, check=False)
    study = None
    if (folder / "training" / "study.json").exists():
        study = json.loads((folder / "training" / "study.json").read_text())
    gzip_runs(folder)
    if run_files(folder):
        ev = evaluate(folder, args.carry)
        (folder / "effectiveness.json").write_text(json.dumps(ev, indent=1) + "\n")
        md = render(ev, study)
        (folder / "effectiveness.md").write_text(md)
        print(md)
    else:
        print("no TREC runs in the archive (the training study did not run)")
    if args.latency_to_report:
        dst = REPO / "results" / "latency" / f"gpu-{tag}"
        dst.mkdir(parents=True, exist_ok=True)
        for p in (folder / "latency").glob("*.json"):
            shutil.copy2(p, dst / p.name)
        print(f"latency results copied to {dst}: now run `mice-bench report` and commit "
              "results/ and report/ together")
    summary = folder / "summary.txt"
    if summary.exists():
        print(summary.read_text())
    print(f"wrote {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

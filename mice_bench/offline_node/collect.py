"""``mice-bench offline-node collect``: what a node run brought back, into results/ and the
report.

* unpacks the archive (or copies a folder) into ``results/gpu/<tag>/`` (``--dest``):
  ``latency/*.json`` (mice-bench latency results), ``tests/`` (junit.xml, sdpa-kernels.json),
  ``training/`` (training logs, study.json), ``runs/*.trec.gz`` (plain ``.trec`` runs are
  gzipped, deterministically), ``logs/``, ``run.log``, ``env.txt``, ``summary.txt``
  (regenerated);
* evaluates every ``runs/<variant>.<dataset>.trec[.gz]`` (dl19, dl20, nfcorpus) with
  ir_measures against the qrels in ``shared/data`` (nDCG@10 and RR@10), beside the BM25 first
  stage the run re-ranked (``<staged folder>/data/<dataset>.bm25.trec.gz``), with a paired
  t-test against BM25 (scipy) over the same queries; writes ``effectiveness.json`` and
  ``effectiveness.md`` there;
* with ``--report`` (the default) copies the GPU latency files to
  ``results/latency/gpu-<tag>/`` and regenerates ``report/`` (a run on the CPU, i.e. a
  rehearsal, never goes into the report).

The tag defaults to ``<gpu>-<UTC date and time of the run>``, e.g. ``h100-20261127-153000``.
"""

from __future__ import annotations

import gzip
import json
import re
import shutil
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UsageError
from .formats import read_trec
from .summary import render as render_summary
from .summary import summarize

QRELS = {
    "dl19": "trec-dl-2019/qrels.dl19-passage.txt",
    "dl20": "trec-dl-2020/qrels.dl20-passage.txt",
    "nfcorpus": "beir-topics-qrels/qrels.beir-v1.0.0-nfcorpus.test.txt",
}
MEASURES = ("nDCG@10", "RR@10")


def shared_data() -> Path:
    from ..data.collections import shared_data_dir

    d = shared_data_dir()
    if d is None:
        raise UsageError("shared/data (the qrels) not found; set MICE_BENCH_SHARED_DATA")
    return d


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
                    raise UsageError(f"{src}: unsafe member {m.name}")
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
    L = ["# Node run: re-ranking effectiveness (BM25 top-100 re-ranked)", ""]
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


def ran_on_gpu(folder: Path) -> bool:
    env = folder / "env.txt"
    return env.exists() and '"cuda_available": true' in env.read_text(errors="replace")


@dataclass
class Collected:
    folder: Path
    effectiveness_md: str | None = None
    latency_dir: Path | None = None
    notes: list[str] = field(default_factory=list)


def collect(source: Path, dest: Path, staged: Path, tag: str | None = None,
            latency_results: Path | None = None) -> Collected:
    """Unpack ``source`` into ``dest/<tag>``, summarise it, evaluate its TREC runs; with
    ``latency_results`` (e.g. ``results/latency``) copy a GPU run's latency files into
    ``latency_results/gpu-<tag>/``."""
    if not source.exists():
        raise UsageError(f"{source} does not exist (the archive a node run wrote: "
                         "OUT/mice-gpu-results.tar.gz, or its unpacked folder)")
    if source.is_file() and not tarfile.is_tarfile(source):
        raise UsageError(f"{source} is not a tar archive (expected mice-gpu-results.tar.gz)")
    with tempfile.TemporaryDirectory() as tmp:
        unpack(source, Path(tmp))
        tag = tag or default_tag(Path(tmp))
        folder = dest / tag
        if folder.exists():
            shutil.rmtree(folder)
        shutil.copytree(tmp, folder)
    res = Collected(folder)
    for p in (folder / "runs").glob("probe.*"):
        p.unlink()
    s = summarize(folder)
    (folder / "summary.json").write_text(json.dumps(s, indent=1, default=str) + "\n")
    (folder / "summary.txt").write_text(render_summary(folder, s))
    study = None
    if (folder / "training" / "study.json").exists():
        study = json.loads((folder / "training" / "study.json").read_text())
    gzip_runs(folder)
    if run_files(folder):
        ev = evaluate(folder, staged)
        (folder / "effectiveness.json").write_text(json.dumps(ev, indent=1) + "\n")
        res.effectiveness_md = render(ev, study)
        (folder / "effectiveness.md").write_text(res.effectiveness_md)
    else:
        res.notes.append("no TREC runs in the archive (the training study did not run)")
    if latency_results is not None:
        lat = sorted((folder / "latency").glob("*.json"))
        if not ran_on_gpu(folder):
            res.notes.append("the run had no GPU (a rehearsal): its latency stays out of the "
                             "report")
        elif lat:
            res.latency_dir = latency_results / f"gpu-{tag}"
            res.latency_dir.mkdir(parents=True, exist_ok=True)
            for p in lat:
                shutil.copy2(p, res.latency_dir / p.name)
    return res

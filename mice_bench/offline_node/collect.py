"""``mice-bench offline-node collect``: what a node run brought back, into results/ and the
report.

* refuses what is not a node run's archive (or folder): a member outside the layout below,
  a link, a path that leaves the archive, no ``steps.tsv``;
* unpacks the archive (or copies a folder) into the new folder ``results/gpu/<tag>/``
  (``--dest``; the tag is one folder name):
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
from pathlib import Path, PurePosixPath

from ..errors import UsageError
from .formats import checked, read_trec
from .summary import render as render_summary
from .summary import summarize

QRELS = {
    "dl19": "trec-dl-2019/qrels.dl19-passage.txt",
    "dl20": "trec-dl-2020/qrels.dl20-passage.txt",
    "nfcorpus": "beir-topics-qrels/qrels.beir-v1.0.0-nfcorpus.test.txt",
}
MEASURES = ("nDCG@10", "RR@10")
#: what a node run's archive holds: these files at its top, and these folders
RUN_FILES = ("steps.tsv", "run.log", "env.txt", "summary.txt", "summary.json",
             "carry-manifest.json")
RUN_FOLDERS = ("latency", "tests", "training", "runs", "logs")
TAG = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def shared_data() -> Path:
    from ..data.collections import shared_data_dir

    d = shared_data_dir()
    if d is None:
        raise UsageError("shared/data (the qrels) not found; set MICE_BENCH_SHARED_DATA")
    return d


def run_members(src: Path) -> list[str]:
    """The files of a node run's archive or folder; UsageError for anything else."""
    if src.is_dir():
        paths = sorted(src.rglob("*"))
        links = [p for p in paths if p.is_symlink()]
        if links:
            raise UsageError(f"{src}: {links[0]} is a link; not a node run's folder")
        names = [p.relative_to(src).as_posix() for p in paths if p.is_file()]
    else:
        with tarfile.open(src) as tf:
            names = []
            for m in tf.getmembers():
                parts = PurePosixPath(m.name).parts
                if m.name.startswith("/") or ".." in parts:
                    raise UsageError(f"{src}: member {m.name} points outside the archive; not "
                                     "a node run's archive")
                if not (m.isfile() or m.isdir()):
                    raise UsageError(f"{src}: member {m.name} is a link or device; not a node "
                                     "run's archive")
                if m.isfile():
                    names.append("/".join(p for p in parts if p != "."))
    for name in names:
        top, _, rest = name.partition("/")
        if not (top in RUN_FOLDERS if rest else top in RUN_FILES):
            raise UsageError(f"{src} is not a node run's result: it holds {name} (a run holds "
                             f"{', '.join(RUN_FILES)} and the folders {', '.join(RUN_FOLDERS)})")
    if "steps.tsv" not in names:
        raise UsageError(f"{src} is not a node run's result: it has no steps.tsv")
    return names


def unpack(src: Path, dest: Path) -> None:
    """The archive (or folder) ``src``, checked by :func:`run_members`, into ``dest``."""
    run_members(src)
    if src.is_dir():
        shutil.copytree(src, dest)
        return
    dest.mkdir()
    with tarfile.open(src) as tf:
        for m in tf.getmembers():
            if m.isfile():
                path = dest.joinpath(*(p for p in PurePosixPath(m.name).parts if p != "."))
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(tf.extractfile(m).read())


def default_tag(folder: Path) -> str:
    gpu = "gpu"
    env = folder / "env.txt"
    if env.exists():
        m = re.search(r'"gpu":\s*"([^"]+)"', env.read_text(errors="replace"))
        if m:
            g = re.search(r"(H100|H200|A100|L4|L40S?|B200|GH200)", m.group(1), re.I)
            gpu = (g.group(1) if g else m.group(1).split()[-1]).lower()
            gpu = re.sub(r"[^a-z0-9._-]+", "-", gpu).strip("-.") or "gpu"
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
        if (carry / "data" / f"{ds}.bm25.trec.gz").exists():
            bm25 = read_trec(checked(carry, f"data/{ds}.bm25.trec.gz"))
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
    """Unpack ``source`` into the new folder ``dest/<tag>``, summarise it, evaluate its TREC
    runs; with ``latency_results`` (e.g. ``results/latency``) copy a GPU run's latency files
    into the new folder ``latency_results/gpu-<tag>/``. Everything is checked and computed in
    a temporary folder first: a refusal leaves nothing written."""
    if tag is not None and not TAG.fullmatch(tag):
        raise UsageError(f"--tag {tag!r}: one folder name of letters, digits, '.', '_' and '-'")
    if not source.exists():
        raise UsageError(f"{source} does not exist (the archive a node run wrote: "
                         "OUT/mice-gpu-results.tar.gz, or its unpacked folder)")
    if source.is_file() and not tarfile.is_tarfile(source):
        raise UsageError(f"{source} is not a tar archive (expected mice-gpu-results.tar.gz)")
    with tempfile.TemporaryDirectory(prefix="mice-offline-node-collect-") as tmp:
        work = Path(tmp) / "run"
        unpack(source, work)
        tag = tag or default_tag(work)
        res = Collected(dest / tag)
        if res.folder.exists():
            raise UsageError(f"{res.folder} exists; give another --tag or --dest")
        lat = sorted((work / "latency").glob("*.json"))
        if latency_results is not None and ran_on_gpu(work) and lat:
            res.latency_dir = latency_results / f"gpu-{tag}"
            if res.latency_dir.exists():
                raise UsageError(f"{res.latency_dir} exists; give another --tag")
        elif latency_results is not None and not ran_on_gpu(work):
            res.notes.append("the run had no GPU (a rehearsal): its latency stays out of the "
                             "report")
        for p in (work / "runs").glob("probe.*"):
            p.unlink()
        s = summarize(work)
        (work / "summary.json").write_text(json.dumps(s, indent=1, default=str) + "\n")
        (work / "summary.txt").write_text(render_summary(work, s))
        study = None
        if (work / "training" / "study.json").exists():
            study = json.loads((work / "training" / "study.json").read_text())
        gzip_runs(work)
        if run_files(work):
            ev = evaluate(work, staged)
            (work / "effectiveness.json").write_text(json.dumps(ev, indent=1) + "\n")
            res.effectiveness_md = render(ev, study)
            (work / "effectiveness.md").write_text(res.effectiveness_md)
        else:
            res.notes.append("no TREC runs in the archive (the training study did not run)")
        res.folder.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(work, res.folder)
    if res.latency_dir is not None:
        res.latency_dir.mkdir(parents=True)
        for p in lat:
            shutil.copy2(res.folder / "latency" / p.name, res.latency_dir / p.name)
    return res

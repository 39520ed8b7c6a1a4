"""CPU checks of the GPU run's tooling (benchmarks/gpu): they run in the default suite.

The carried model file restores byte for byte; TREC runs and training groups round-trip
through the plain-file formats; the summary reads a run folder (latency results written by
the real command on a tiny model) and judges the targets from the numbers in it.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks" / "gpu"))

import carrylib  # noqa: E402


def _load(name: str, path: Path):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


summary = _load("mice_gpu_summary", REPO / "benchmarks" / "gpu" / "summary.py")


def test_packed_safetensors_restore_exactly(tmp_path):
    from safetensors.torch import load_file, save_file

    g = torch.Generator().manual_seed(0)
    tensors = {"w": torch.randn(33, 7, generator=g).half(),
               "b": torch.randn(5, generator=g).half(),
               "ids": torch.arange(9, dtype=torch.int64),
               "odd": torch.randint(0, 255, (3,), dtype=torch.uint8, generator=g)}
    src = tmp_path / "m.safetensors"
    save_file(tensors, str(src), metadata={"format": "pt"})
    packed = tmp_path / "m.shz"
    carrylib.pack_safetensors(src, packed)
    out = tmp_path / "back.safetensors"
    carrylib.unpack_safetensors(packed, out)
    assert out.read_bytes() == src.read_bytes()
    back = load_file(str(out))
    assert all(torch.equal(back[k], tensors[k]) for k in tensors)
    # a model folder: every other file copied, the weights restored
    mdir = tmp_path / "model"
    mdir.mkdir()
    (mdir / "config.json").write_text("{}")
    carrylib.pack_safetensors(src, mdir / carrylib.SHZ_NAME)
    dst = carrylib.unpack_model(mdir, tmp_path / "restored")
    assert (dst / "config.json").read_text() == "{}"
    assert (dst / "model.safetensors").read_bytes() == src.read_bytes()
    assert not (dst / carrylib.SHZ_NAME).exists()


def test_trec_and_training_groups_round_trip(tmp_path):
    run = {"q1": {"d1": 1.5, "d2": 2.5, "d3": 2.5}, "q2": {"d9": -1.0}}
    for name in ("r.trec", "r.trec.gz"):
        p = carrylib.write_trec(tmp_path / name, run, "tag")
        assert carrylib.read_trec(p) == run
    lines = (tmp_path / "r.trec").read_text().splitlines()
    assert lines[0].split()[:4] == ["q1", "Q0", "d2", "1"]  # ties by doc id, as mice-bench
    docs = tmp_path / "docs.jsonl.gz"
    with gzip.open(docs, "wt") as f:
        for d in ("p1", "p2", "n1", "n2", "n3"):
            f.write(json.dumps({"doc_id": d, "text": f"text of {d}"}) + "\n")
    groups = tmp_path / "groups.jsonl.gz"
    with gzip.open(groups, "wt") as f:
        f.write(json.dumps({"qid": "1", "query": "q one", "positives": ["p1", "p2"],
                            "negatives": ["n1", "n2", "n3"]}) + "\n")
        f.write(json.dumps({"qid": "2", "query": "q two", "positives": ["p1"],
                            "negatives": ["missing"]}) + "\n")
    out = tmp_path / "train.jsonl"
    info = carrylib.expand_training_jsonl(groups, docs, out)
    assert info["queries"] == 1 and info["positives"] == 2 and info["negatives"] == 3
    data = pytest.importorskip("mice_bench.training.data")
    td = data.read_jsonl(str(out), val_queries=0)
    (qid,) = td.queries
    assert td.queries[qid] == "q one"
    assert sorted(td.texts[d] for d in td.positives[qid]) == ["text of p1", "text of p2"]
    assert sorted(td.texts[d] for d in td.negatives[qid]) == [f"text of n{i}" for i in (1, 2, 3)]


def _latency(work: Path, name: str, model: Path, *args: str) -> None:
    cmd = [sys.executable, "-m", "mice_bench.cli", "latency", "--device", "cpu", "--model",
           str(model), "--variants", "ce,mice-l4+3,colbert", "--warmup", "0", "--runs", "2",
           "--output", str(work / "latency" / f"{name}.json"), *args]
    subprocess.run(cmd, cwd=REPO, check=True, capture_output=True, timeout=600)


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    """A run folder as run.sh leaves it, with real (tiny) latency results."""
    from mice_bench.latency.testing import make_tiny_model

    root = tmp_path_factory.mktemp("gpu-run")
    model = make_tiny_model(root / "tiny")
    work = root / "work"
    for d in ("latency", "tests", "training", "runs", "logs"):
        (work / d).mkdir(parents=True)
    _latency(work, "paper-bf16", model, "--protocol", "paper", "--batch-size", "4",
             "--doc-tokens", "32", "--dtype", "bf16")
    _latency(work, "rerank-bf16-eager", model, "--protocol", "rerank", "--batch-size", "4",
             "--query-tokens", "8", "--doc-tokens", "24", "--depth", "8", "--min-seconds", "0",
             "--dtype", "bf16")
    (work / "steps.tsv").write_text("env\tok\t0\t3\ntests\tfailed\t1\t40\ntrain\tskipped\t0\t0\n")
    (work / "env.txt").write_text('gpu,x\n{"gpu": "NVIDIA H100 80GB HBM3", "torch": "2.11"}\n')
    (work / "logs" / "tests.log").write_text(
        "tests/gpu/test_gpu_checks.py::test_a[x] PASSED [ 50%]\n"
        "tests/gpu/test_gpu_checks.py::test_b FAILED [100%]\n")
    return work


def test_summary_reads_a_run_folder(run_folder):
    s = summary.summarize(run_folder)
    assert [st["status"] for st in s["steps"]] == ["ok", "failed", "skipped"]
    assert s["tests"]["passed"] == 1 and s["tests"]["failed"] == 1
    assert s["env"]["gpu"].startswith("NVIDIA H100")
    lat = s["latency"]
    assert set(lat["files"]) == {"paper-bf16", "rerank-bf16-eager"}
    # the paper ratios are the measured means' ratios
    doc = json.loads((run_folder / "latency" / "paper-bf16.json").read_text())
    mean = {(r["variant"], r["precompute_applied"]): r["latency_s"]["mean"] for r in doc["rows"]}
    got = lat["paper"]["bf16"]["CE / MICE-l4+3 (precomputed docs)"]
    assert got == pytest.approx(mean[("ce", False)] / mean[("mice-l4+3", True)])
    # T1 from the rerank file: the reported speedup over the FLOP bound
    (t1,) = lat["t1"]
    rdoc = json.loads((run_folder / "latency" / "rerank-bf16-eager.json").read_text())
    (mice,) = [r for r in rdoc["rows"] if r["variant"] == "mice-l4+3"]
    assert t1["fraction"] == pytest.approx(mice["speedup_vs_ce"] / mice["flop_ratio_vs_ce"])
    # T2: ce's model-time fraction of the peak, from the interaction phase
    t2 = [r for r in lat["t2"] if r["file"] == "rerank-bf16-eager"][0]
    (ce,) = [r for r in rdoc["rows"] if r["variant"] == "ce"]
    want = (ce["flops"]["per_pair"] * ce["pairs_per_run"] / ce["phases_s"]["interaction"]["mean"]
            / rdoc["matmul_peak"]["flops_per_s"])
    assert t2["fraction_model"] == pytest.approx(want)
    text = summary.render(run_folder, s)
    assert "T1:" in text and "T2:" in text and "FAIL tests/gpu/test_gpu_checks.py::test_b" in text
    assert summary.main([str(run_folder)]) == 0
    assert (run_folder / "summary.txt").read_text() == text


def test_evaluate_reads_and_keeps_gzipped_runs(tmp_path):
    """What comes back from the device is evaluated from ``.trec.gz`` as from ``.trec``, and
    the committed folder keeps gzip files only (results must stay small enough to travel)."""
    ev_mod = _load("mice_gpu_evaluate", REPO / "benchmarks" / "gpu" / "evaluate.py")
    sd = ev_mod.shared_data()
    qrels_file = sd / ev_mod.QRELS["dl19"]
    if not qrels_file.exists():
        pytest.skip(f"no DL19 qrels in {sd}")
    import ir_measures

    qrels: dict = {}
    for q in ir_measures.read_trec_qrels(str(qrels_file)):
        qrels.setdefault(q.query_id, {})[q.doc_id] = int(q.relevance)
    qids = sorted(qrels)[:5]
    # a run that ranks judged documents by a fixed made-up score
    run = {q: {d: float((hash(d) % 97) + rel) for d, rel in sorted(qrels[q].items())[:30]}
           for q in qids}
    src = tmp_path / "src"
    carrylib.write_trec(src / "runs" / "ce.dl19.trec", run, "ce")
    carrylib.write_trec(src / "runs" / "colbert.dl19.trec.gz", run, "colbert")
    carrylib.write_trec(src / "runs" / "probe.dl19.trec", run, "probe")
    assert ev_mod.main([str(src), "--tag", "t", "--dest", str(tmp_path / "out"),
                        "--carry", str(tmp_path / "no-carry")]) == 0
    folder = tmp_path / "out" / "t"
    assert sorted(p.name for p in (folder / "runs").iterdir()) == \
        ["ce.dl19.trec.gz", "colbert.dl19.trec.gz"]
    assert carrylib.read_trec(folder / "runs" / "ce.dl19.trec.gz") == run
    rows = json.loads((folder / "effectiveness.json").read_text())["datasets"]["dl19"]["rows"]
    want = ir_measures.calc_aggregate([ir_measures.parse_measure("nDCG@10")],
                                      {q: qrels[q] for q in qids}, run)
    (value,) = want.values()
    for v in ("ce", "colbert"):
        assert rows[v]["nDCG@10"] == pytest.approx(value)


def test_tracked_tree_leaves_room_for_the_gpu_carry():
    """A device call sends the working tree and gpu-carry/ together, 64 MiB at most; the
    committed results once grew past what was left (plain TREC runs), which only the rehearsal
    noticed. Every commit keeps the tracked files under the limit minus the default carry."""
    prepare = _load("mice_gpu_prepare", REPO / "benchmarks" / "gpu" / "prepare.py")
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--cached"], cwd=REPO,
                             capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    sizes = {}
    for rel in out.split(b"\0"):
        p = REPO / rel.decode() if rel else None
        if p is not None and p.is_file():
            sizes[rel.decode()] = p.stat().st_size
    budget = (prepare.TRAVEL_LIMIT_MIB - 2 - prepare.CARRY_DEFAULT_MIB) * 2 ** 20
    big = sorted(sizes.items(), key=lambda kv: -kv[1])[:5]
    assert sum(sizes.values()) <= budget, (
        f"tracked files take {sum(sizes.values()) / 2**20:.1f} MiB, more than the "
        f"{budget / 2**20:.1f} MiB a GPU call leaves beside gpu-carry/; largest: {big}")

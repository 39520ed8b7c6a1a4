"""CPU checks of ``mice-bench offline-node`` (stage / run / collect): default suite.

The packed model file restores byte for byte; TREC runs and training groups round-trip
through the plain-file formats; the summary reads a run folder (latency results written by
the real command on a tiny model) and judges the targets from the numbers in it; collect
evaluates what comes back with ir_measures; the node run keeps its time budget.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mice_bench.offline_node import collect as collect_mod
from mice_bench.offline_node import formats
from mice_bench.offline_node import summary

REPO = Path(__file__).resolve().parents[2]


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
    formats.pack_safetensors(src, packed)
    out = tmp_path / "back.safetensors"
    formats.unpack_safetensors(packed, out)
    assert out.read_bytes() == src.read_bytes()
    back = load_file(str(out))
    assert all(torch.equal(back[k], tensors[k]) for k in tensors)
    # a model folder: every other file copied, the weights restored
    mdir = tmp_path / "model"
    mdir.mkdir()
    (mdir / "config.json").write_text("{}")
    formats.pack_safetensors(src, mdir / formats.SHZ_NAME)
    dst = formats.unpack_model(mdir, tmp_path / "restored")
    assert (dst / "config.json").read_text() == "{}"
    assert (dst / "model.safetensors").read_bytes() == src.read_bytes()
    assert not (dst / formats.SHZ_NAME).exists()


def test_trec_and_training_groups_round_trip(tmp_path):
    run = {"q1": {"d1": 1.5, "d2": 2.5, "d3": 2.5}, "q2": {"d9": -1.0}}
    for name in ("r.trec", "r.trec.gz"):
        p = formats.write_trec(tmp_path / name, run, "tag")
        assert formats.read_trec(p) == run
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
    info = formats.expand_training_jsonl(groups, docs, out)
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
    """A run folder as the node run leaves it, with real (tiny) latency results."""
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


def test_collect_reads_and_keeps_gzipped_runs(tmp_path):
    """What comes back from a node is evaluated from ``.trec.gz`` as from ``.trec``, and the
    collected folder keeps gzip files only (results stay small)."""
    from mice_bench.data.collections import shared_data_dir

    sd = shared_data_dir()
    if sd is None:
        pytest.skip("no shared/data")
    qrels_file = sd / collect_mod.QRELS["dl19"]
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
    formats.write_trec(src / "runs" / "ce.dl19.trec", run, "ce")
    formats.write_trec(src / "runs" / "colbert.dl19.trec.gz", run, "colbert")
    formats.write_trec(src / "runs" / "probe.dl19.trec", run, "probe")
    (src / "steps.tsv").write_text("train\tok\t0\t9\n")
    res = collect_mod.collect(src, tmp_path / "out", tmp_path / "no-staged", "t")
    folder = tmp_path / "out" / "t"
    assert res.folder == folder and res.latency_dir is None
    assert sorted(p.name for p in (folder / "runs").iterdir()) == \
        ["ce.dl19.trec.gz", "colbert.dl19.trec.gz"]
    assert formats.read_trec(folder / "runs" / "ce.dl19.trec.gz") == run
    rows = json.loads((folder / "effectiveness.json").read_text())["datasets"]["dl19"]["rows"]
    want = ir_measures.calc_aggregate([ir_measures.parse_measure("nDCG@10")],
                                      {q: qrels[q] for q in qids}, run)
    (value,) = want.values()
    for v in ("ce", "colbert"):
        assert rows[v]["nDCG@10"] == pytest.approx(value)




# --------------------------------------------------------------------------- the commands
def _cli(*args: str):
    from typer.testing import CliRunner

    from mice_bench.cli import app

    return CliRunner().invoke(app, ["offline-node", *args])


def _staged(tmp_path: Path) -> Path:
    """The smallest folder the node run accepts: a manifest, nothing else (every step that
    needs the model or the data then reports what is missing)."""
    folder = tmp_path / "staged"
    folder.mkdir()
    _manifest(folder)
    return folder


def _manifest(folder: Path) -> None:
    """A manifest that lists every file of ``folder`` with its sha256 (as staging writes)."""
    import hashlib

    files = {p.relative_to(folder).as_posix(): {"sha256": hashlib.sha256(p.read_bytes())
                                                .hexdigest()}
             for p in sorted(folder.rglob("*")) if p.is_file() and p.name != "MANIFEST.json"}
    (folder / "MANIFEST.json").write_text(json.dumps(
        {"staged_by": "mice-bench offline-node stage", "files": files}))


@pytest.mark.parametrize("args, names", [
    (["--steps", "env,gpu"], ["--steps", "gpu", "env, tests, latency, train"]),
    (["--latency", "paper-bf16 paper-fp8"], ["--latency", "paper-fp8", "rerank-bf16-eager"]),
    (["--budget-s", "0"], ["--budget-s", "0"]),
    (["--train-variants", "ce,mice-l9"], ["mice-l9"]),
])
def test_run_refuses_bad_options_in_one_line_before_running(tmp_path, args, names):
    folder = _staged(tmp_path)
    out = tmp_path / "out"
    r = _cli("run", str(folder), "--out", str(out), *args)
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), r.output
    text = " ".join(r.output.split())
    assert all(n in text for n in names), r.output
    assert not out.exists() and not (folder / ".site").exists()


def test_run_refuses_a_folder_that_was_not_staged(tmp_path):
    r = _cli("run", str(tmp_path))
    assert r.exit_code == 2 and "no MANIFEST.json" in r.output
    r = _cli("run", str(tmp_path / "missing"))
    assert r.exit_code == 2 and "is not a folder" in r.output


def test_stage_refuses_an_unknown_dataset_and_writes_nothing(tmp_path):
    folder = tmp_path / "staged"
    r = _cli("stage", str(folder), "--datasets", "dl19,msmarco")
    assert r.exit_code == 2, r.output
    assert "msmarco" in r.output and "dl19, dl20, nfcorpus" in " ".join(r.output.split())
    assert not folder.exists()
    r = _cli("stage", str(folder), "--max-mib", "-1")
    assert r.exit_code == 2 and "--max-mib" in r.output and not folder.exists()


def test_size_limit_is_the_option_given():
    from mice_bench.offline_node.stage import DEFAULT_MAX_MIB, MIB, size_verdict

    assert DEFAULT_MAX_MIB == 64
    # 2 MiB kept free below the limit: 61.9 MiB fits 64, 62.1 does not
    assert size_verdict(int(61.9 * MIB), 0, 64) is None
    assert "62.1 MiB" in size_verdict(int(61 * MIB), int(1.1 * MIB), 64)
    assert size_verdict(int(200 * MIB), 0, 256) is None
    assert "within 2 MiB of --max-mib 100" in size_verdict(int(99 * MIB), 0, 100)
    assert "38.0 MiB is over --max-mib 30" in size_verdict(int(38 * MIB), 0, 30)
    assert size_verdict(10**12, 10**12, 0) is None  # 0: no limit


def _node(tmp_path: Path, folder: Path, *args: str) -> tuple[subprocess.CompletedProcess, Path]:
    out = tmp_path / "out"
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("MICE_GPU_")}
    env.update(OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-m", "mice_bench.cli", "offline-node", "run",
                        str(folder), "--out", str(out), *args], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=300)
    return r, out


def _archive(out: Path) -> dict[str, bytes]:
    import tarfile

    with tarfile.open(out / "mice-gpu-results.tar.gz") as tf:
        return {m.name.removeprefix("./"): tf.extractfile(m).read() for m in tf.getmembers()
                if m.isfile()}


def test_node_run_records_each_step_and_returns_one_archive(tmp_path):
    folder = _staged(tmp_path)
    r, out = _node(tmp_path, folder, "--rehearse", "--steps", "env", "--budget-s", "120")
    assert r.returncode == 0, r.stdout + r.stderr
    files = _archive(out)
    assert files["steps.tsv"].decode().split("\t")[:2] == ["env", "ok"]
    env = json.loads(files["env.txt"].decode()[files["env.txt"].decode().index("{"):])
    assert env["torch"] == torch.__version__ and env["mice_bench"] is not None
    # the summary closes the output and names the step
    assert (out / "summary.txt").read_text() == files["summary.txt"].decode()
    assert "env" in files["summary.txt"].decode() and r.stdout.rstrip().splitlines()[-1]


def test_node_run_skips_a_step_that_does_not_fit_the_budget(tmp_path):
    folder = _staged(tmp_path)
    # 20 s of the budget are kept for the summary and the archive: nothing fits in 21 s
    r, out = _node(tmp_path, folder, "--steps", "env latency", "--budget-s", "21")
    assert r.returncode == 0, r.stdout + r.stderr
    rows = [ln.split("\t")[:2] for ln in _archive(out)["steps.tsv"].decode().splitlines()]
    assert rows and all(status == "skipped" for _, status in rows), rows
    assert ["env", "skipped"] in rows


def test_collect_keeps_a_cpu_run_out_of_the_report(tmp_path):
    src = tmp_path / "src"
    (src / "latency").mkdir(parents=True)
    (src / "latency" / "paper-bf16.json").write_text('{"rows": []}\n')
    (src / "env.txt").write_text('{"cuda_available": false}\n')
    (src / "steps.tsv").write_text("latency-paper-bf16\tok\t0\t9\n")
    res = collect_mod.collect(src, tmp_path / "gpu", tmp_path / "staged", "cpu-run",
                              latency_results=tmp_path / "results" / "latency")
    assert res.latency_dir is None and any("rehearsal" in n for n in res.notes)
    assert not (tmp_path / "results").exists()
    (src / "env.txt").write_text('{"gpu": "NVIDIA H100 80GB HBM3", "cuda_available": true}\n')
    res = collect_mod.collect(src, tmp_path / "gpu", tmp_path / "staged", None,
                              latency_results=tmp_path / "results" / "latency")
    assert res.folder.name.startswith("h100-")
    assert res.latency_dir == tmp_path / "results" / "latency" / f"gpu-{res.folder.name}"
    assert (res.latency_dir / "paper-bf16.json").read_text() == '{"rows": []}\n'


# --------------------------------------------------------------------------- maintainers
#: what the default staged folder takes without the source copy (fp16 all-MiniLM-L6-v2
#: 37.2 MiB, data 3.6 MiB, manifest)
STAGED_DEFAULT_MIB = 41.5


@pytest.mark.maintainer
def test_tracked_tree_leaves_room_for_the_staged_folder():
    """Maintainers' check (``pytest -m maintainer``): a transfer that sends this checkout
    beside ``gpu-carry/`` (``stage --no-source --count-checkout``) stays within the default
    ``--max-mib`` (large committed results, e.g. plain TREC runs, would break it)."""
    from mice_bench.offline_node.stage import DEFAULT_MAX_MIB

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
    budget = (DEFAULT_MAX_MIB - 2 - STAGED_DEFAULT_MIB) * 2 ** 20
    big = sorted(sizes.items(), key=lambda kv: -kv[1])[:5]
    assert sum(sizes.values()) <= budget, (
        f"tracked files take {sum(sizes.values()) / 2**20:.1f} MiB, more than the "
        f"{budget / 2**20:.1f} MiB left beside the staged folder; largest: {big}")


def _wheel(folder: Path, name: str = "mbprobe") -> Path:
    """A minimal pure-Python wheel, written by hand (the format pip installs)."""
    import zipfile

    whl = folder / f"{name}-0.1-py3-none-any.whl"
    whl.parent.mkdir(parents=True, exist_ok=True)
    info = f"{name}-0.1.dist-info"
    files = {f"{name}/__init__.py": "VALUE = 42\n",
             f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n",
             f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: hand\nRoot-Is-Purelib: true\n"
                              "Tag: py3-none-any\n"}
    files[f"{info}/RECORD"] = "".join(f"{k},,\n" for k in files) + f"{info}/RECORD,,\n"
    with zipfile.ZipFile(whl, "w") as z:
        for k, v in files.items():
            z.writestr(k, v)
    return whl


def test_staged_wheels_are_installed_offline_and_put_on_the_path(tmp_path):
    from mice_bench.errors import UsageError
    from mice_bench.offline_node.node import RunOptions, install_wheels, node_env

    folder = _staged(tmp_path)
    site = tmp_path / "scratch" / "site"
    assert install_wheels(folder, sys.executable, site) is None  # no wheels: nothing to do
    whl = _wheel(folder / "wheels")
    with pytest.raises(UsageError, match="not listed in MANIFEST.json"):
        install_wheels(folder, sys.executable, site)
    _manifest(folder)
    assert install_wheels(folder, sys.executable, site) == site
    assert (site / "mbprobe" / "__init__.py").is_file()
    env = node_env(folder, RunOptions(out=tmp_path / "out"), tmp_path / "scratch", site,
                   base={"PYTHONPATH": "/x"})
    assert env["PYTHONPATH"].split(":") == [str(site), "/x"]
    r = subprocess.run([sys.executable, "-c", "import mbprobe; print(mbprobe.VALUE)"],
                       env=env, capture_output=True, text=True)
    assert r.stdout.strip() == "42", r.stderr
    # a wheel damaged in transfer is named, never installed
    whl.write_bytes(whl.read_bytes()[:-10])
    with pytest.raises(UsageError, match=r"mbprobe-0.1-py3-none-any.whl: differs from the "
                                         r"sha256 in MANIFEST.json"):
        install_wheels(folder, sys.executable, tmp_path / "other-site")
    assert not (tmp_path / "other-site").exists()


def test_node_env_prefers_what_the_folder_staged(tmp_path):
    import mice_bench
    from mice_bench.offline_node.node import RunOptions, node_env

    folder = _staged(tmp_path)
    scratch = tmp_path / "scratch"
    opts = RunOptions(out=tmp_path / "out", steps=["env", "latency"], latency=["paper-fp32"],
                      budget_s=99)
    env = node_env(folder, opts, scratch, base={"MICE_GPU_TRAIN_VARIANTS": "stale"})
    assert env["MICE_NODE_SRC"] == str(Path(mice_bench.__file__).resolve().parents[1])
    assert env["MICE_GPU_STEPS"] == "env latency" and env["MICE_GPU_LATENCY"] == "paper-fp32"
    assert env["MICE_GPU_BUDGET_S"] == "99" and "MICE_GPU_TRAIN_VARIANTS" not in env
    assert env["MICE_GPU_REHEARSAL"] == "0" and env["MICE_GPU_CARRY"] == str(folder)
    assert env["MICE_NODE_SCRATCH"] == str(scratch)
    assert env["TORCHINDUCTOR_CACHE_DIR"].startswith(str(scratch))
    (folder / "src" / "mice_bench").mkdir(parents=True)
    (folder / "tests").mkdir()
    (folder / "tests" / "test_gpu_checks.py").write_text("")
    _manifest(folder)
    env = node_env(folder, RunOptions(rehearse=True), scratch, base={})
    assert env["MICE_NODE_SRC"] == str(folder / "src")
    assert env["MICE_NODE_TESTS"] == str(folder / "tests" / "test_gpu_checks.py")
    assert env["MICE_GPU_REHEARSAL"] == "1" and "MICE_GPU_BUDGET_S" not in env


def test_the_node_side_imports_without_the_ir_libraries():
    """A GPU node typically lacks ir_datasets, ir_measures, bm25s and PyStemmer: the command
    line and every module the node run uses import in a fresh interpreter that cannot see
    them."""
    code = """
import importlib.abc, sys
BLOCKED = {"ir_datasets", "ir_measures", "bm25s", "Stemmer", "pyterrier", "onnx",
           "onnxruntime", "faiss"}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"blocked: {name}")
sys.meta_path.insert(0, Block())
import mice_bench.cli
for m in ("node", "study", "summary", "formats"):
    __import__("mice_bench.offline_node." + m)
from typer.testing import CliRunner
r = CliRunner().invoke(mice_bench.cli.app, ["offline-node", "run", "--help"])
assert r.exit_code == 0, r.output
print("ok", sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED))
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                       timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.split() == ["ok", "[]"]

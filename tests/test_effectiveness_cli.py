"""``mice-bench effectiveness`` as a user runs it (subprocess, network blocked).

* always: exit codes and messages for unknown/missing datasets; the fixture staged as an
  ir_datasets home (``run:`` + ``--docs``);
* with ``../shared/data`` (skipped with a reason when absent), staged into a temporary
  ``IR_DATASETS_HOME`` by ``stage-ir-datasets.sh``: BM25 on SciFact, the DL19 BM25 run;
* slow: the all-MiniLM-L6-v2 bi-encoder over the whole SciFact corpus (MTEB's 0.645).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FIX = REPO / "tests" / "fixtures" / "effectiveness"
SHARED = REPO.parent / "shared" / "data"

# Run the CLI with every internet socket refused: any download attempt fails loudly.
PRELUDE = """
import socket, sys
_connect = socket.socket.connect
def _guard(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6):
        raise RuntimeError(f"network access attempted: {address}")
    return _connect(self, address)
socket.socket.connect = _guard
from mice_bench.cli import app
app(sys.argv[1:], prog_name="mice-bench")
"""


def cli(args: list[str], home: Path, tmp: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, IR_DATASETS_HOME=str(home), HF_HUB_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1", MICE_BENCH_ALLOW_DOWNLOAD="0", COLUMNS="200")
    return subprocess.run(
        [sys.executable, "-c", PRELUDE, "effectiveness", *args, "--cache-dir",
         str(tmp / "cache"), "--output-dir", str(tmp / "out"), "--no-progress"],
        cwd=tmp, env=env, capture_output=True, text=True, timeout=timeout)


def summary_cell(tmp: Path, variant: str, dataset: str, measure: str = "nDCG@10") -> float:
    s = json.loads((tmp / "out" / "summary.json").read_text())["summary"]
    row = [r for r in s["rows"] if r["variant"] == variant][0]
    return row["cells"][dataset][measure]["mean"]


@pytest.fixture
def fixture_home(tmp_path: Path) -> Path:
    """The fixture's queries/qrels where ir_datasets looks for TREC DL 2019's."""
    home = tmp_path / "irds"
    dl = home / "msmarco-passage" / "trec-dl-2019"
    dl.mkdir(parents=True)
    shutil.copy(FIX / "queries.tsv", dl / "queries.tsv")
    shutil.copy(FIX / "qrels.txt", dl / "qrels")
    return home


@pytest.fixture(scope="module")
def shared_home(tmp_path_factory) -> Path:
    if not (SHARED / "stage-ir-datasets.sh").is_file():
        pytest.skip(f"offline data {SHARED} is absent (needs ../shared/data beside the repo)")
    home = tmp_path_factory.mktemp("irds-shared")
    subprocess.run(["bash", str(SHARED / "stage-ir-datasets.sh"), str(home)], check=True,
                   capture_output=True)
    return home


# --------------------------------------------------------------------------- errors, exit 2
def test_unknown_dataset_exits_2(tmp_path):
    r = cli(["--datasets", "scifact,nope"], tmp_path / "empty", tmp_path)
    assert r.returncode == 2, r.stderr
    assert "unknown dataset 'nope'" in r.stderr and "webis-touche2020" in r.stderr
    assert "Traceback" not in r.stderr


def test_missing_dataset_exits_2_with_staging_help(tmp_path):
    r = cli(["--datasets", "fiqa"], tmp_path / "empty", tmp_path)
    assert r.returncode == 2, r.stderr
    err = " ".join(r.stderr.split())
    assert "beir/fiqa/test" in err and "source.zip" in err and "IR_DATASETS_HOME" in err
    assert "stage-ir-datasets.sh" in err
    assert "Traceback" not in r.stderr and "network access attempted" not in r.stderr


def test_dl19_bm25_without_docs_exits_2(tmp_path, fixture_home):
    r = cli(["--datasets", "dl19"], fixture_home, tmp_path)
    assert r.returncode == 2, r.stderr
    err = " ".join(r.stderr.split())
    assert "msmarco-passage/trec-dl-2019/judged" in err and "collectionandqueries" in err
    assert "--docs" in err and "run:PATH" in err and "Traceback" not in r.stderr


# ---------------------------------------------------------------- fixture via ir_datasets
def test_fixture_run_and_docs_through_ir_datasets(tmp_path, fixture_home):
    r = cli(["--datasets", "dl19", "--first-stage", f"run:{FIX}/run.txt", "--docs",
             str(FIX / "docs.jsonl"), "--format", "json"], fixture_home, tmp_path)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["rows"][0]["cells"]["dl19"]["nDCG@10"]["mean"] == pytest.approx(0.564139,
                                                                                  abs=1e-6)
    assert (tmp_path / "out" / "dl19" / "run-effectiveness-run" / "bm25.trec.gz").is_file()
    assert (tmp_path / "out" / "summary.md").is_file()


# --------------------------------------------------------------------------- real data
@pytest.mark.data
def test_bm25_scifact_matches_pyserini(tmp_path, shared_home):
    r = cli(["--datasets", "scifact", "--variants", "bm25"], shared_home, tmp_path)
    assert r.returncode == 0, r.stderr
    ndcg = summary_cell(tmp_path, "bm25", "scifact")
    assert ndcg == pytest.approx(0.679, abs=0.015), ndcg     # Pyserini BM25-flat 0.679


@pytest.mark.data
def test_dl19_bm25_run_identity(tmp_path, shared_home):
    cand = SHARED / "trec-dl-candidates"
    r = cli(["--datasets", "dl19", "--first-stage", f"run:{cand}/bm25/trec_results_{{dataset}}.txt",
             "--docs", f"{cand}/{{dataset}}.docs.jsonl"], shared_home, tmp_path)
    assert r.returncode == 0, r.stderr
    ndcg = summary_cell(tmp_path, "bm25", "dl19")
    assert ndcg == pytest.approx(0.506, abs=0.001), ndcg


def _slow_requested(config) -> bool:
    """Slow tests run only when asked for: ``-m slow`` or ``MICE_BENCH_SLOW=1``."""
    expr = config.getoption("-m") or ""
    return os.environ.get("MICE_BENCH_SLOW") == "1" or ("slow" in expr and "not slow" not in expr)


@pytest.mark.slow
@pytest.mark.data
def test_biencoder_full_scifact_matches_mteb(request, tmp_path, shared_home, minilm_path):
    """all-MiniLM-L6-v2 over the whole SciFact corpus: MTEB reports nDCG@10 0.6451.

    No length flags: the checkpoint's own ``max_seq_length`` (256 tokens: [CLS] + 254 +
    [SEP], from sentence_bert_config.json), mean pooling and Normalize apply.
    7-11 minutes on 2 CPU cores (encoding 5,183 abstracts), so plain ``pytest`` skips it:
    run ``pytest -m slow tests/test_effectiveness_cli.py`` (or set MICE_BENCH_SLOW=1).
    """
    if not _slow_requested(request.config):
        pytest.skip("slow (~10 min on 2 cores): run with -m slow or MICE_BENCH_SLOW=1")
    r = cli(["--datasets", "scifact", "--model", f"minilm={minilm_path}", "--variants",
             "biencoder", "--first-stage", "full", "--batch-size", "64"], shared_home,
            tmp_path, timeout=3000)
    assert r.returncode == 0, r.stderr
    ndcg = summary_cell(tmp_path, "biencoder", "scifact")
    assert ndcg == pytest.approx(0.6451, abs=0.001), ndcg
    res = json.loads(next(p for p in tmp_path.rglob("biencoder.json")
                          if "scifact" in str(p)).read_text())
    settings = res["model"]["settings"]
    assert (settings["query_max_tokens"], settings["doc_max_tokens"]) == (254, 254)
    assert settings["sources"]["doc_max_tokens"].startswith("checkpoint:")

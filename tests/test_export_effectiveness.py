"""``mice-bench effectiveness --runtime ort``: the variants' ONNX export re-ranks the fixture
run as the PyTorch executors do (same per-query nDCG@10), and what it cannot do is refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

pytest.importorskip("onnxruntime", reason="pip install 'mice-bench[onnx]'")

from mice_bench.cli import app  # noqa: E402

from conftest import rerun_with_own_irds_home  # noqa: E402

FIX = Path(__file__).resolve().parent / "fixtures" / "effectiveness"


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    h = tmp_path / "irds"
    dl = h / "msmarco-passage" / "trec-dl-2019"
    dl.mkdir(parents=True)
    shutil.copy(FIX / "queries.tsv", dl / "queries.tsv")
    shutil.copy(FIX / "qrels.txt", dl / "qrels")
    monkeypatch.setenv("IR_DATASETS_HOME", str(h))
    return h


def _run(tmp_path, runtime, *extra):
    out = tmp_path / runtime
    r = CliRunner().invoke(app, [
        "effectiveness", "--datasets", "dl19", "--first-stage", f"run:{FIX}/run.txt",
        "--docs", str(FIX / "docs.jsonl"), "--model", "minilm-l6", "--variants",
        "ce,mice-l4+2", "--runtime", runtime, "--cache-dir", str(tmp_path / "cache"),
        "--output-dir", str(out), "--no-progress", "--format", "json", *extra])
    return r, out


def _per_query(out: Path, variant: str) -> dict:
    files = [f for f in out.rglob("*.json") if f.name != "summary.json"]
    for f in files:
        d = json.loads(f.read_text())
        if d.get("config", {}).get("variant") == variant:
            return d
    raise AssertionError(f"no result of {variant} under {out}")


def test_ort_reranks_as_pytorch(tmp_path, home, request):
    if rerun_with_own_irds_home(request, home):
        return
    r1, torch_out = _run(tmp_path, "torch")
    assert r1.exit_code == 0, r1.output
    r2, ort_out = _run(tmp_path, "ort")
    assert r2.exit_code == 0, r2.output
    for v in ("ce", "mice-l4+2"):
        a, b = _per_query(torch_out, v), _per_query(ort_out, v)
        assert b["config"]["runtime"] == "ort" and a["config"]["runtime"] == "torch"
        assert _flat(a["per_query"]) == pytest.approx(_flat(b["per_query"]), abs=1e-9)
        sa, sb = _scores(torch_out, v), _scores(ort_out, v)
        assert sa.keys() == sb.keys() and len(sa) > 10
        spread = max(sa.values()) - min(sa.values())
        assert max(abs(sa[k] - sb[k]) for k in sa) <= 1e-4 * spread


def _flat(d, prefix=()):
    if isinstance(d, dict):
        out = {}
        for k, v in d.items():
            out.update(_flat(v, (*prefix, k)))
        return out
    return {prefix: d}


def _scores(out: Path, variant: str) -> dict:
    import gzip

    f = next(out.rglob(f"{variant}.trec.gz"))
    rows = [line.split() for line in gzip.open(f, "rt")]
    return {(r[0], r[2]): float(r[4]) for r in rows}


@pytest.mark.parametrize("extra,needle", [
    (["--runtime", "tensorrt"], "--runtime: unknown runtime 'tensorrt'; valid: torch, ort"),
])
def test_bad_runtime_is_refused(tmp_path, home, extra, needle):
    r = CliRunner().invoke(app, [
        "effectiveness", "--datasets", "dl19", "--first-stage", f"run:{FIX}/run.txt",
        "--docs", str(FIX / "docs.jsonl"), "--model", "minilm-l6", "--variants", "ce",
        "--output-dir", str(tmp_path / "o"), "--no-progress", *extra])
    assert r.exit_code == 2 and needle in r.output

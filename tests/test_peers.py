"""Peer runtimes in the latency run (``latency --peers``, ``--runtime ort``): what each row
times, that the peers run the same model on the same pairs, and the speedup arithmetic.

Speed is not tested; what the timer counts is (slow stand-ins whose cost is known)."""

from __future__ import annotations

import json
import time

import pytest
import torch
from typer.testing import CliRunner

from mice_bench.cli import app
from mice_bench.latency import peers as peersmod
from mice_bench.latency.timing import PhaseTimer

pytest.importorskip("transformers")


def _timed(wl) -> tuple[float, dict[str, float]]:
    t = PhaseTimer("cpu")
    t.start()
    wl.run(t)
    total, ph, _ = t.stop()
    return total, ph


def test_pairs_workload_times_tokenizer_and_model_in_their_phases():
    calls = {"tok": [], "fwd": 0}

    def tokenize(qs, ds):
        calls["tok"].append((list(qs), list(ds)))
        time.sleep(0.02)
        return len(ds)

    def forward(n):
        calls["fwd"] += 1
        time.sleep(0.05)

    docs = [f"d{i}" for i in range(10)]
    wl = peersmod.PairsWorkload(tokenize, forward, "q", docs, batch_size=4)
    total, ph = _timed(wl)
    # 3 chunks (4 + 4 + 2 pairs), each with the one query repeated
    assert [len(d) for _, d in calls["tok"]] == [4, 4, 2] and calls["fwd"] == 3
    assert all(set(q) == {"q"} for q, _ in calls["tok"])
    assert [x for _, d in calls["tok"] for x in d] == docs
    assert 0.06 <= ph["tokenize"] < 0.06 + 0.05
    assert 0.15 <= ph["interaction"] < 0.15 + 0.08
    assert total >= ph["tokenize"] + ph["interaction"]
    assert ph["doc_encode"] == ph["query_encode"] == 0.0
    assert wl.pairs_per_run == 10


def test_pairs_workload_without_tokenizer_times_the_whole_call():
    seen = []

    def predict(qs, ds):
        seen.append(len(ds))
        time.sleep(0.03)

    wl = peersmod.PairsWorkload(None, predict, "q", ["a", "b", "c"], batch_size=2)
    total, ph = _timed(wl)
    assert seen == [2, 1]
    assert ph["tokenize"] == 0.0 and ph["interaction"] >= 0.06


@pytest.fixture(scope="module")
def minilm_arch():
    from mice_bench.backbone import load_backbone

    return load_backbone("minilm-l6")


def test_hf_peer_has_the_weights_of_our_ce(minilm_arch):
    """The same weights: the transformers classifier scores the pairs as mice-bench's ce."""
    from mice_bench.executors import make_executor
    from mice_bench.spec import parse

    hf = peersmod.same_hf_model("minilm-l6", 0, "cpu", torch.float32)
    peer = peersmod.hf_peer(hf, minilm_arch.tokenizer, parse("ce"), minilm_arch.max_positions,
                            "cpu")
    qs, ds = ["what is a cat"] * 3, ["a cat is an animal", "dogs bark", "spiders " * 20]
    wl = peer.workload(3, qs[0], ds, None)
    with torch.inference_mode():
        got = wl.forward(wl.tokenize(qs, ds))[:, 0]
    ref = make_executor("ce", minilm_arch).score_pairs(qs, ds)
    assert torch.allclose(got, ref, atol=1e-5)
    assert peer.tokenization == peersmod.TOKENIZE_PHASE


def test_st_peer_scores_the_same_pairs_with_the_same_model(minilm_arch, tmp_path):
    pytest.importorskip("sentence_transformers")
    from mice_bench.executors import make_executor
    from mice_bench.spec import parse

    hf = peersmod.same_hf_model("minilm-l6", 0, "cpu", torch.float32)
    hf.save_pretrained(tmp_path)
    minilm_arch.tokenizer.save_pretrained(tmp_path)
    peer = peersmod.st_peer(tmp_path, parse("ce"), "torch", minilm_arch.max_positions, "cpu")
    qs, ds = ["what is a cat"] * 2, ["a cat is an animal", "dogs bark"]
    wl = peer.workload(2, qs[0], ds, None)
    got = wl.forward(qs, ds).float().cpu()
    assert torch.allclose(got, make_executor("ce", minilm_arch).score_pairs(qs, ds), atol=1e-5)
    assert peer.tokenization == peersmod.TOKENIZE_IN_CALL


def test_fastest_cross_encoder_speedups_by_hand():
    from mice_bench.latency.result import LatencyRowResult, RowPoint

    def row(variant, runtime, mean, pairs=32, b=16):
        return LatencyRowResult(variant=variant, point=RowPoint(b, b, 128, 128, 32, 32, True,
                                                                False),
                                latency_s={"mean": mean}, pairs_per_run=pairs,
                                throughput_pairs_per_s=pairs / mean, runtime=runtime,
                                flops={"per_pair": 1.0})

    rows = [row("ce", "torch", 2.0), row("ce", "hf", 1.6), row("ce", "st", 2.5),
            row("mice-l4+3", "torch", 0.16), row("ce", "torch", 1.0, b=8)]
    from mice_bench.latency.rows import add_speedups

    add_speedups(rows)
    peersmod.add_fastest_ce(rows)
    assert rows[1].speedup_vs_ce == pytest.approx(2.0 / 1.6)       # against our own ce
    assert rows[3].speedup_vs_ce == pytest.approx(12.5)
    assert rows[3].speedup_vs_fastest_ce == pytest.approx(10.0)    # against hf, the fastest
    assert rows[3].fastest_ce == "hf" and rows[0].fastest_ce == "hf"
    assert rows[1].speedup_vs_fastest_ce == pytest.approx(1.0)
    assert rows[4].speedup_vs_fastest_ce == pytest.approx(1.0)     # its own point


def _run(tmp_path, *args):
    out = tmp_path / "lat.json"
    r = CliRunner().invoke(app, ["latency", "--model", "minilm-l6", "--depth", "4",
                                 "--doc-tokens", "16", "--query-tokens", "4", "--batch-size",
                                 "2", "--runs", "1", "--min-seconds", "0", "--warmup", "0",
                                 "--threads", "1", "--no-progress", "--output", str(out),
                                 *args])
    assert r.exit_code == 0, r.output
    return json.loads(out.read_text()), r.output


def test_latency_with_peers_records_every_runtime(tmp_path):
    pytest.importorskip("sentence_transformers")
    doc, out = _run(tmp_path, "--variants", "ce,mice-l4+2", "--peers", "hf,st,st-onnx")
    rows = {(r["variant"], r["runtime"]): r for r in doc["rows"]}
    assert {("ce", "torch"), ("mice-l4+2", "torch"), ("ce", "hf"), ("ce", "st")} <= set(rows)
    ce = rows[("ce", "torch")]
    for k in (("ce", "hf"), ("ce", "st")):
        r = rows[k]
        assert r["flops"]["per_pair"] == ce["flops"]["per_pair"]
        assert r["pairs_per_run"] == ce["pairs_per_run"] == 4
        assert r["latency_s"]["count"] == len(r["raw_s"]["total"]) >= 1
        assert r["speedup_vs_ce"] == pytest.approx(ce["latency_s"]["mean"] / r["latency_s"]["mean"])
    assert rows[("ce", "hf")]["tokenization"] == peersmod.TOKENIZE_PHASE
    assert rows[("ce", "st")]["tokenization"] == peersmod.TOKENIZE_IN_CALL
    assert rows[("ce", "st")]["raw_s"]["tokenize"] == [0.0] * rows[("ce", "st")]["latency_s"]["count"]
    fastest = min((r for r in doc["rows"] if r["variant"] == "ce"),
                  key=lambda r: r["latency_s"]["mean"])
    m = rows[("mice-l4+2", "torch")]
    assert m["fastest_ce"] == f"{fastest['runtime']} {fastest.get('dtype', 'fp32')}"   # runtime and precision
    assert m["speedup_vs_fastest_ce"] == pytest.approx(
        fastest["latency_s"]["mean"] / m["latency_s"]["mean"])
    if ("ce", "st-onnx") not in rows:            # the ONNX backend is optional: said why
        skipped = doc["config"]["peers_skipped"]
        assert [s["peer"] for s in skipped] == ["st-onnx"] and skipped[0]["reason"]
        assert "Skipped: st-onnx" in out.replace("\n", " ")
    assert "Runtimes in the same run" in out


def test_latency_runtime_ort_scores_with_the_export(tmp_path):
    pytest.importorskip("onnxruntime")
    doc, _ = _run(tmp_path, "--variants", "ce,biencoder", "--runtime", "ort")
    assert {r["runtime"] for r in doc["rows"]} == {"ort"}
    assert {r["executor"] for r in doc["rows"]} == {"ort"}
    ce = next(r for r in doc["rows"] if r["variant"] == "ce")
    assert ce["speedup_vs_ce"] == pytest.approx(1.0)
    assert doc["model"]["settings"]["ce"]["runtime"]["name"] == "onnxruntime"


@pytest.mark.parametrize("args,needle", [
    (["--peers", "hf,tgi"], "unknown peer 'tgi'; valid: hf, hf-bf16, st, st-onnx, "
                            "st-onnx-int8, st-openvino, st-openvino-int8, ort, ort-int8"),
    (["--runtime", "tensorrt"], "unknown runtime 'tensorrt'; valid: torch, ort"),
    (["--runtime", "ort", "--compile"], "--runtime ort takes neither --compile"),
    (["--peers", "ort-int8", "--compile"], "--peers ort / ort-int8 not --compile"),
    (["--runtime", "ort", "--dtype", "bf16"], "--runtime ort takes neither --compile nor "
                                              "another --dtype"),
    (["--dtype", "fp32,int4"], "unknown dtype 'int4'; valid: fp32, bf16, bf16-autocast, int8"),
    (["--runtime", "ort", "--kv-cache"], "neither --kv-cache nor --doc-store"),
])
def test_latency_refuses_bad_runtimes_in_one_line(tmp_path, args, needle):
    out = tmp_path / "x.json"
    r = CliRunner().invoke(app, ["latency", "--model", "minilm-l6", "--output", str(out), *args])
    assert r.exit_code == 2, r.output
    lines = [x for x in r.output.splitlines() if x.strip()]
    assert len(lines) == 1 and needle in lines[0]
    assert not out.exists()


def _row(variant, runtime, mean, pairs=32, b=16, per_pair=1.0):
    from mice_bench.latency.result import LatencyRowResult, RowPoint

    return LatencyRowResult(variant=variant, point=RowPoint(b, b, 128, 128, 32, 32, True, False),
                            latency_s={"mean": mean}, pairs_per_run=pairs,
                            throughput_pairs_per_s=pairs / mean, runtime=runtime,
                            flops={"per_pair": per_pair})


def test_speedup_vs_ce_is_against_the_runs_own_ce_even_when_a_peer_row_comes_first():
    from mice_bench.latency.rows import add_speedups

    rows = [_row("ce", "hf", 1.0), _row("ce", "torch", 2.0), _row("mice-l4+3", "torch", 0.5)]
    add_speedups(rows)
    assert rows[2].speedup_vs_ce == pytest.approx(2.0 / 0.5)       # torch ce, not hf's 1.0
    assert rows[0].speedup_vs_ce == pytest.approx(2.0 / 1.0)
    ort = [_row("ce", "torch", 2.0), _row("ce", "ort", 4.0), _row("mice-l4+3", "ort", 0.5)]
    add_speedups(ort, runtime="ort")
    assert ort[2].speedup_vs_ce == pytest.approx(4.0 / 0.5)


def test_runtimes_table_prints_gflop_per_pair_and_both_speedups():
    from mice_bench.latency.peers_table import runtimes_table
    from mice_bench.latency.result import LatencyResult
    from mice_bench.latency.rows import add_speedups

    rows = [_row("ce", "torch", 2.0, per_pair=3.2e9), _row("ce", "hf", 1.6, per_pair=3.2e9),
            _row("mice-l4+3", "torch", 0.16, per_pair=4.0e8)]
    add_speedups(rows)
    peersmod.add_fastest_ce(rows)
    res = LatencyResult(config={"runtime": "torch"}, environment={}, model={}, matmul_peak={},
                        rows=rows)
    t = runtimes_table(res)
    body = {(r[0], r[1]): r for r in t.sections[0][1]}
    gflop = t.columns.index("GFLOP / pair")
    assert body[("ce", "mice-bench (PyTorch)")][gflop] == "3.2"
    assert body[("mice-l4+3", "mice-bench (PyTorch)")][gflop] == "0.4"
    mice = body[("mice-l4+3", "mice-bench (PyTorch)")]
    assert mice[t.columns.index("speedup vs ce (torch, same dtype)")].startswith("12.5")
    assert mice[t.columns.index("speedup vs fastest cross-encoder")].startswith("10")
    assert mice[t.columns.index("speedup vs fastest cross-encoder")].endswith("(vs hf)")

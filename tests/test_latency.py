"""Tests of `mice-bench latency` (fast, CPU, tiny random BERT)."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from mice_bench.latency import flops as F
from mice_bench.latency import flops as flopsmod
from mice_bench.latency import runner as R
from mice_bench.latency import scheduler as S
from mice_bench.latency.config import LatencyConfig
from mice_bench.latency.inputs import PAPER_QUERY, make_texts, token_count
from mice_bench.latency.result import LatencyRowResult, RowPoint
from mice_bench.latency.rows import add_speedups, make_row
from mice_bench.latency.scheduler import Slot
from mice_bench.latency.schema import LATENCY_SCHEMA, SchemaError, check, validate
from mice_bench.latency.stats import STAT_KEYS, enough, speedup, summarize, throughput
from mice_bench.latency.timing import PHASES, PeakMemory, PhaseTimer
from mice_bench.latency.workloads import SweepPoint
from mice_bench.spec import parse


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from mice_bench.latency.testing import make_tiny_model

    return str(make_tiny_model(tmp_path_factory.mktemp("tiny") / "bert", max_positions=512))


@pytest.fixture(scope="module")
def app():
    from mice_bench.cli import app

    return app


def _invoke(app, args):
    res = CliRunner().invoke(app, args)
    return res


@pytest.fixture(scope="module")
def default_run(tiny_model, app, tmp_path_factory):
    """The default command on the tiny model (only --model/--threads/--output added)."""
    out = tmp_path_factory.mktemp("lat") / "default.json"
    res = _invoke(app, ["latency", "--model", tiny_model, "--threads", "1", "--output",
                        str(out), "--min-seconds", "0.2"])
    assert res.exit_code == 0, res.output
    return json.loads(out.read_text()), res.output


# ----------------------------------------------------------------------------- statistics
def test_summarize_synthetic_timings():
    x = np.arange(1, 101, dtype=float)
    s = summarize(x)
    assert s["count"] == 100
    assert s["mean"] == pytest.approx(50.5)
    assert s["std"] == pytest.approx(np.std(x, ddof=1))
    assert s["p50"] == pytest.approx(50.5)
    assert s["p90"] == pytest.approx(90.1)
    assert s["p99"] == pytest.approx(99.01)
    assert (s["min"], s["max"]) == (1.0, 100.0)


def test_summarize_edge_cases():
    one = summarize([0.25])
    assert one["count"] == 1 and one["std"] == 0.0 and one["p99"] == 0.25
    empty = summarize([])
    assert empty["count"] == 0 and math.isnan(empty["mean"])
    rng = np.random.default_rng(0)
    v = rng.lognormal(-3, 0.2, 1000)
    s = summarize(v)
    assert s["min"] <= s["p50"] <= s["p90"] <= s["p99"] <= s["max"]


def test_throughput_speedup_enough():
    assert throughput(64, 0.5) == 128
    assert math.isnan(throughput(64, 0.0))
    assert speedup(2.0, 0.5) == 4.0
    assert speedup(None, 1.0) is None and speedup(1.0, 0.0) is None
    assert not enough([0.1] * 4, runs=5, min_seconds=0)
    assert not enough([0.1] * 5, runs=5, min_seconds=1.0)
    assert enough([0.1] * 10, runs=5, min_seconds=1.0 - 1e-9)


# ----------------------------------------------------------------------------- timing
def test_phase_timer_phases_partition_the_run():
    t = PhaseTimer("cpu")
    t.start()
    with t.phase("tokenize"):
        time.sleep(0.01)
    with t.phase("doc_encode"):
        time.sleep(0.02)
    with t.phase("tokenize"):
        time.sleep(0.01)
    total, ph, wall = t.stop()
    assert set(ph) == set(PHASES)
    assert ph["tokenize"] >= 0.02 and ph["doc_encode"] >= 0.02 and ph["interaction"] == 0
    assert sum(ph.values()) <= total <= sum(ph.values()) + 0.005
    with pytest.raises(ValueError):
        t.start()
        with t.phase("nope"):
            pass


def test_peak_memory_cpu_sees_growth():
    m = PeakMemory("cpu")
    m.start()
    x = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched
    x += 1
    del x
    r = m.stop()
    assert r["growth_mb"] >= 48, r
    assert r["peak_mb"] >= r["baseline_mb"]


# ----------------------------------------------------------------------------- FLOPs
def test_flops_ce_hand_computed():
    # L=2, H=4, I=8, q=1, d=1 -> joint T = 5 tokens
    # per layer: 4*T*H*H (Q,O) + 4*T*H*I (FFN) + 4*T*H*H (K,V) + 4*H*T*T (QK^T, AV)
    #          = 320 + 640 + 320 + 400 = 1680; head 2*H*H + 2*H = 40
    f = F.pair_flops(parse("ce"), F.ModelDims(2, 4, 8), 1, 1)
    assert f["per_pair"] == 2 * 1680 + 40
    assert f["doc_encode_per_doc"] == 0 and f["query_encode_per_query"] == 0


def test_flops_mice_hand_computed():
    # mice-l1+2 on L=3, H=4, I=8, q=2 text tokens, d=3 text tokens.
    # split: query part cls 1 + query 2 + sep_q 1 = 4; document part doc 3+1 + sep_d 1 = 5.
    # layer 0 (separate): query side 4 tokens attending 4 -> 256+512+256+4*4*16 = 1280
    #                     doc side 5 tokens attending 5   -> 320+640+320+4*4*25 = 1680
    # layers 1-2 (paper MICE: cross-attention sub-layer, then self-attention, then FFN):
    #   self: Q,O of 4 rows 4*4*16 = 256; K,V of the 4 query-side tokens 256;
    #         attended: cls 4 + query 2*3 + sep_q 3 = 13 -> 4*4*13 = 208
    #   cross: Q,O of 4 rows 256; K,V of the 5 document tokens 4*5*16 = 320;
    #          attended 4 rows x 5 = 20 -> 4*4*20 = 320
    #   FFN of 4 rows: 4*4*4*8 = 512            -> per layer 2128
    dims = F.ModelDims(3, 4, 8)
    spec = parse("mice-l1+2")
    paper = F.pair_flops(spec, dims, 2, 3, precompute=True, pairs_per_query=1)
    assert paper["per_pair"] == 2 * 2128 + 40 + 1280
    assert paper["doc_encode_per_doc"] == 1680
    kv = F.pair_flops(spec, dims, 2, 3, precompute=True, kv_cache=True, pairs_per_query=1)
    assert kv["per_pair"] == 2 * (2128 - 320) + 40 + 1280
    assert kv["kv_precompute_per_doc"] == 2 * 320
    nopre = F.pair_flops(spec, dims, 2, 3, precompute=False, pairs_per_query=1)
    assert nopre["per_pair"] == 2 * 2128 + 40 + 1280 + 1680
    rerank = F.pair_flops(spec, dims, 2, 3, precompute=True, pairs_per_query=4)
    assert rerank["per_pair"] == 2 * 2128 + 40 + 1280 / 4
    # the one-softmax ablation reads the document inside self-attention: one attention block
    # Q,O 256; K,V of 9 tokens 4*9*16 = 576; attended cls 4 + query 2*8 + sep_q 8 = 28 -> 448
    one = F.pair_flops(parse("mice-l1+2[attn=joint]"), dims, 2, 3, pairs_per_query=1)
    assert one["per_pair"] == 2 * (256 + 512 + 576 + 448) + 40 + 1280


def test_flops_bounds_minilm_l12_match_the_issue():
    dims = F.ModelDims(12, 384, 1536)
    ce = F.pair_flops(parse("ce"), dims, 32, 256)["per_pair"]
    mice = F.pair_flops(parse("mice-l4+3"), dims, 32, 256, pairs_per_query=64)["per_pair"]
    mice_kv = F.pair_flops(parse("mice-l4+3"), dims, 32, 256, kv_cache=True,
                           pairs_per_query=64)["per_pair"]
    assert 14 < ce / mice < 18  # "about 15x"
    assert 28 < ce / mice_kv < 38  # "30x with K/V precomputed"
    colbert = F.pair_flops(parse("colbert"), dims, 32, 256, pairs_per_query=64)
    assert colbert["interaction_per_pair"] == 0
    # ColBERT: 32-token [MASK]-padded query, 128-d projection of 32 + 258 tokens, MaxSim
    assert colbert["head_per_pair"] == 2 * (32 + 258) * 384 * 128 + 2 * 32 * 258 * 128
    probe = F.pair_flops(parse("colbert[proj=0,qaug=0]"), dims, 32, 256, pairs_per_query=64)
    assert probe["head_per_pair"] == 2 * 34 * 258 * 384
    # stored head vectors (a ColBERT index): the 258 document tokens' projection is offline
    vec = F.pair_flops(parse("colbert"), dims, 32, 256, pairs_per_query=64, doc_vectors=True)
    assert vec["doc_vectors"] is True and colbert["doc_vectors"] is False
    assert vec["head_per_pair"] == 2 * 32 * 384 * 128 + 2 * 32 * 258 * 128
    assert vec["doc_encode_per_doc"] == colbert["doc_encode_per_doc"] + 2 * 258 * 384 * 128
    assert vec["per_pair"] == colbert["per_pair"] - 2 * 258 * 384 * 128
    # nothing changes where documents are not precomputed, or interaction layers read states
    for spec, kw in (("colbert", {"precompute": False}), ("mice-l4+3", {}),
                     ("colbert[proj=0,qaug=0]", {})):
        a = F.pair_flops(parse(spec), dims, 32, 256, pairs_per_query=64, **kw)
        b = F.pair_flops(parse(spec), dims, 32, 256, pairs_per_query=64, doc_vectors=True, **kw)
        assert a["per_pair"] == b["per_pair"], spec
        assert b["doc_vectors"] is (spec == "colbert[proj=0,qaug=0]")


def test_matmul_peak_cpu():
    p = F.matmul_peak("cpu", torch.float32, n=128, min_seconds=0.01)
    assert p["flops_per_s"] > 0 and p["reps"] >= 3


# ----------------------------------------------------------------------------- inputs
def test_texts_have_exact_token_counts(tiny_model):
    from transformers import AutoTokenizer

    from mice_bench.backbone import packaged_tokenizer

    for tok in (packaged_tokenizer(), AutoTokenizer.from_pretrained(tiny_model)):
        for n in (1, 7, 128):
            texts = make_texts(tok, 3, n, seed=1)
            assert len(set(texts)) == 3
            assert all(token_count(tok, t) == n for t in texts)
    assert make_texts(tok, 2, 9, seed=1) == make_texts(tok, 2, 9, seed=1)
    assert token_count(tok, PAPER_QUERY) >= 4


# ----------------------------------------------------------------------------- end to end
def test_default_command_end_to_end(default_run):
    doc, output = default_run
    cfg = doc["config"]
    assert cfg["protocol"] == "rerank" and cfg["variants"] == ["ce", "mice-l4+3", "colbert"]
    assert [r["variant"] for r in doc["rows"]] == ["ce", "mice-l4+3", "colbert"]
    assert "mice-l4+3" in output and "results written to" in output
    for r in doc["rows"]:
        assert r["latency_s"]["count"] >= cfg["runs"]
        assert r["pairs_per_run"] == cfg["depth"]
        assert len(r["raw_s"]["total"]) == r["latency_s"]["count"]
        assert r["throughput_pairs_per_s"] > 0
    ce, mice, colbert = doc["rows"]
    assert ce["speedup_vs_ce"] == pytest.approx(1.0)
    assert mice["precompute_applied"] and not ce["precompute_applied"]
    # dropped layers are not counted, MICE's cross-attention sub-layers are
    assert mice["params"] != ce["params"]
    assert mice["flop_ratio_vs_ce"] > 1
    # colbert's precomputed documents are its head vectors (a ColBERT index), MICE's are states
    assert colbert["offline"]["doc_content"] == "vectors" and colbert["flops"]["doc_vectors"]
    assert mice["offline"]["doc_content"] == "states" and not mice["flops"]["doc_vectors"]
    assert any("ColBERT index" in n for n in colbert["notes"])


def test_phases_add_up_to_the_total(default_run):
    doc, _ = default_run
    for r in doc["rows"]:
        raw = r["raw_s"]
        covered = []
        for i, total in enumerate(raw["total"]):
            s = sum(raw[p][i] for p in PHASES)
            assert s <= total + 1e-6          # phases are inside the timed total, always
            covered.append(s / total if total > 0 else 1.0)
        # a loaded machine adds untimed gaps to some runs, never to all of them: the phases
        # must account for (nearly) all of the least disturbed run
        assert max(covered) >= 0.9, (r["variant"], covered)
    ce = doc["rows"][0]
    assert ce["phases_s"]["tokenize"]["mean"] > 0 and ce["phases_s"]["interaction"]["mean"] > 0
    mice = doc["rows"][1]
    assert mice["phases_s"]["query_encode"]["mean"] > 0
    assert mice["phases_s"]["doc_encode"]["mean"] == 0  # precomputed


def test_results_file_validates_against_schema(default_run, tmp_path):
    doc, _ = default_run
    assert validate(doc, LATENCY_SCHEMA) == []
    check(doc)
    from mice_bench.results import load_result  # envelope readable by the reports

    broken = json.loads(json.dumps(doc))
    del broken["rows"][0]["latency_s"]["p99"]
    broken["rows"][1]["params"] = "many"
    broken["config"]["protocol"] = "fast"
    errs = validate(broken, LATENCY_SCHEMA)
    assert len(errs) == 3
    with pytest.raises(SchemaError):
        check(broken)
    # the envelope the reports read: the written document loads back unchanged
    f = tmp_path / "lat.json"
    f.write_text(json.dumps(doc))
    assert load_result(f, "latency") == doc
    assert doc["schema"] == "mice-bench/latency" and doc["schema_version"] == 2


def test_paper_protocol_tiny(tiny_model, app, tmp_path):
    out = tmp_path / "paper.json"
    res = _invoke(app, ["latency", "--model", tiny_model, "--protocol", "paper",
                        "--batch-size", "4", "--doc-tokens", "512", "--warmup", "1", "--runs",
                        "2", "--threads", "1", "--output", str(out)])
    assert res.exit_code == 0, res.output
    doc = json.loads(out.read_text())
    check(doc)
    rows = [(r["variant"], r["point"]["precompute"]) for r in doc["rows"]]
    assert ("ce", True) not in rows  # a cross-encoder has nothing to precompute
    assert {("ce", False), ("mice-l4+3", False), ("mice-l4+3", True), ("colbert", True)} \
        <= set(rows)
    ce = next(r for r in doc["rows"] if r["variant"] == "ce")
    assert ce["point"]["doc_tokens_effective"] == 512 - 3 - doc["config"]["query_tokens_effective"]
    assert all(r["latency_s"]["count"] == 2 for r in doc["rows"])
    assert "Docs/s" in res.output and "With docs precompute" in res.output


def test_sequential_schedule_and_no_warmup(tiny_model):
    cfg = LatencyConfig(model=tiny_model, variants=["ce", "colbert"], batch_sizes=[2],
                        doc_tokens=[8], query_tokens=4, depth=4, warmup=0, runs=3,
                        min_seconds=0, threads=1, schedule="sequential", doc_vectors=False)
    doc = R.run_latency(cfg).to_doc()
    check(doc)
    assert [r["latency_s"]["count"] for r in doc["rows"]] == [3, 3]
    assert doc["config"]["schedule"] == "sequential"
    # --no-doc-vectors: colbert's documents precomputed as last-layer states (projected online)
    colbert = doc["rows"][1]
    assert colbert["offline"]["doc_content"] == "states" and not colbert["flops"]["doc_vectors"]


def test_sweep_gives_one_row_per_point(tiny_model, app, tmp_path):
    out = tmp_path / "sweep.json"
    res = _invoke(app, ["latency", "--model", tiny_model, "--variants", "ce,mice-l4+3",
                        "--batch-size", "2,4", "--doc-tokens", "16,24", "--query-tokens", "4",
                        "--depth", "4", "--runs", "1", "--warmup", "0", "--min-seconds", "0",
                        "--threads", "1", "--kv-cache", "--format", "json",
                        "--output", str(out)])
    assert res.exit_code == 0, res.output
    doc = json.loads(out.read_text())
    pts = {(r["variant"], r["point"]["batch_size"], r["point"]["doc_tokens"])
           for r in doc["rows"]}
    assert len(doc["rows"]) == 8 and len(pts) == 8
    mice = [r for r in doc["rows"] if r["variant"] == "mice-l4+3"]
    assert all(r["kv_cache_applied"] for r in mice)
    assert '"schema": "mice-bench/latency"' in res.stdout


@pytest.mark.parametrize("args,needle", [
    (["--variants", "ce,bogus"], "unknown variant"),
    (["--device", "cuda"], "CUDA"),
    (["--dtype", "fp16", "--device", "cpu"], "fp16"),
    (["--doc-tokens", "600"], "maximum positions"),
    (["--query-tokens", "300", "--doc-tokens", "300", "--variants", "ce"], "positions"),
    (["--kv-cache", "--no-precompute"], "--kv-cache"),
    (["--protocol", "fast"], "unknown protocol"),
    (["--batch-size", "4,x"], "--batch-size"),
    (["--variants", "mice-l7+3"], "exceeds"),
])
def test_bad_input_exits_2(tiny_model, app, tmp_path, args, needle):
    if args[:2] == ["--device", "cuda"] and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    res = _invoke(app, ["latency", "--model", tiny_model, "--threads", "1", "--output",
                        str(tmp_path / "x.json"), *args])
    assert res.exit_code == 2, res.output
    assert needle in res.output
    assert not (tmp_path / "x.json").exists()


def test_oom_halves_the_batch(tiny_model, monkeypatch):
    calls = {"n": 0}
    real = S.memory_pass

    def flaky(wl, device, *a, **k):
        calls["n"] += 1
        if calls["n"] == 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1 GiB")
        return real(wl, device, *a, **k)

    monkeypatch.setattr(S, "memory_pass", flaky)
    logs = []
    cfg = LatencyConfig(model=tiny_model, variants=["mice-l4+3"], protocol="paper",
                        batch_sizes=[8], doc_tokens=[16], precompute=True, warmup=0, runs=1,
                        threads=1)
    doc = R.run_latency(cfg, log=logs.append).to_doc()
    row = doc["rows"][0]
    assert row["point"]["batch_size"] == 4 and row["point"]["batch_size_requested"] == 8
    assert row["oom_halvings"] == 1 and row["pairs_per_run"] == 4
    assert any("halving to 4" in m for m in logs) and row["notes"]


# ----------------------------------------------------------------------------- scheduler
class FakeTimer:
    """Stands in for PhaseTimer: a run lasts what the workload says (``t.fake``) seconds,
    all of it in the interaction phase; no clock is read."""

    def __init__(self, device):
        self.fake = None

    def start(self):
        self.fake = None

    def stop(self):
        d = self.fake
        return d, {p: (d if p == "interaction" else 0.0) for p in PHASES}, d


class _FakeWorkload:
    def __init__(self, seconds):
        self.seconds = seconds

    def run(self, t):
        t.fake = self.seconds


def _slot(name, seconds):
    return S.Slot(spec=name, ex=None, wl=_FakeWorkload(seconds), batch=1)


def test_scheduler_interleaves_until_runs_and_min_seconds(monkeypatch):
    monkeypatch.setattr(S, "PhaseTimer", FakeTimer)
    a, b = _slot("A", 0.25), _slot("B", 0.5)
    # A needs 4 runs for 1 s, B 3 runs (runs=3) -> round-robin, A alone at the end
    order = S.time_slots([a, b], torch.device("cpu"), runs=3, min_seconds=1.0)
    assert order == ["A", "B", "A", "B", "A", "B", "A"]
    assert a.total == [0.25] * 4 and b.total == [0.5] * 3
    assert a.phases["interaction"] == a.total and a.phases["tokenize"] == [0.0] * 4
    # max_runs stops a row whatever min_seconds asks; a row that has enough is not run
    c, done = _slot("C", 0.25), _slot("D", 0.25)
    done.total = [50.0] * 3              # 3 runs, 150 s: enough
    order = S.time_slots([c, done], torch.device("cpu"), runs=3, min_seconds=100,
                         max_runs=5)
    assert order == ["C"] * 5 and len(done.total) == 3


def test_prepare_slot_halves_on_oom_only(monkeypatch):
    monkeypatch.setattr(S, "PhaseTimer", FakeTimer)

    class WL(_FakeWorkload):
        def __init__(self, batch, error):
            super().__init__(0.125)
            self.batch, self.error = batch, error

        def prepare(self, device):
            if self.batch > 2:
                raise self.error

    oom = torch.OutOfMemoryError("CUDA out of memory")
    logs = []
    slot = S.prepare_slot("mice-l4+3", None, 8, lambda b: WL(b, oom), torch.device("cpu"),
                          warmup=0, log=logs.append, doc_tokens=16)
    assert (slot.batch, slot.halvings) == (2, 2)
    assert slot.total == [0.125]          # warmup 0: the memory pass is the first timed run
    assert [n.split(";")[1].strip() for n in slot.notes] == ["halving to 4 and continuing",
                                                              "halving to 2 and continuing"]
    with pytest.raises(ValueError, match="boom"):
        S.prepare_slot("ce", None, 8, lambda b: WL(b, ValueError("boom")),
                       torch.device("cpu"), warmup=1, log=logs.append, doc_tokens=16)


# ----------------------------------------------------------------------------- known answers
def test_rows_speedup_and_throughput_known_answers(tiny_model, monkeypatch, tmp_path):
    """With the clock replaced (ce 0.4 s, mice 0.1 s, colbert 0.05 s per run of 8 pairs) the
    written rows must hold exactly: 20 / 80 / 160 pairs/s and 1 / 4 / 8 x speedup vs ce."""
    from mice_bench.latency import workloads as W
    from mice_bench.latency.result import LatencyResult

    seconds = {"ce": 0.4, "mice-l4+3": 0.1, "colbert": 0.05}
    monkeypatch.setattr(S, "PhaseTimer", FakeTimer)
    monkeypatch.setattr(W.Workload, "run",
                        lambda self, t: setattr(t, "fake", seconds[str(self.ex.spec)]))
    cfg = LatencyConfig(model=tiny_model, variants=list(seconds), batch_sizes=[4],
                        doc_tokens=[8], query_tokens=4, depth=8, warmup=1, runs=3,
                        min_seconds=0, threads=1)
    R.run_latency(cfg).save(tmp_path / "lat.json")
    rows = {r.variant: r for r in LatencyResult.load(tmp_path / "lat.json").rows}
    for v, s, pairs_per_s, sp in (("ce", 0.4, 20.0, 1.0), ("mice-l4+3", 0.1, 80.0, 4.0),
                                  ("colbert", 0.05, 160.0, 8.0)):
        r = rows[v]
        assert r.pairs_per_run == 8 and r.latency_s["count"] == 3
        assert r.latency_s["mean"] == pytest.approx(s, rel=1e-12)
        assert r.latency_s["std"] == pytest.approx(0.0, abs=1e-12)
        assert r.throughput_pairs_per_s == pytest.approx(pairs_per_s, rel=1e-12)
        assert r.speedup_vs_ce == pytest.approx(sp, rel=1e-12)
        assert r.phases_s["interaction"]["mean"] == pytest.approx(s, rel=1e-12)
        assert r.raw_s["total"] == [s] * 3
        f = r.flops["per_pair"]
        assert r.achieved_flops_per_s == pytest.approx(f * pairs_per_s, rel=1e-12)
        assert r.flop_ratio_vs_ce == pytest.approx(rows["ce"].flops["per_pair"] / f)


def test_speedup_is_per_pair_when_the_batch_was_halved():
    """Paper protocol: ce ran 8 pairs in 0.8 s (0.1 s/pair); mice, halved by OOM to 4 pairs,
    ran them in 0.1 s (0.025 s/pair): 4x, not the 8x of the per-run times."""
    from mice_bench.latency.result import LatencyRowResult, RowPoint
    from mice_bench.latency.rows import add_speedups

    def row(v, bs, pairs, mean, fl):
        return LatencyRowResult(
            variant=v, point=RowPoint(bs, 8, 64, 64, 5, None, False, False),
            latency_s={"mean": mean}, pairs_per_run=pairs,
            throughput_pairs_per_s=pairs / mean if mean else float("nan"),
            flops={"per_pair": fl})

    rows = [row("ce", 8, 8, 0.8, 1000.0), row("mice-l4+3", 4, 4, 0.1, 250.0),
            row("colbert", 8, 8, 0.0, 0.0)]
    add_speedups(rows)
    assert rows[0].speedup_vs_ce == 1.0 and rows[1].speedup_vs_ce == pytest.approx(4.0)
    assert rows[1].flop_ratio_vs_ce == 4.0
    assert rows[2].speedup_vs_ce is None and rows[2].flop_ratio_vs_ce is None   # undefined


def test_default_variants_follow_the_model_depth():
    """`mice-bench latency --model minilm-l6` with no --variants: mice-l4+3 needs 7 layers,
    so the default comparison uses the MICE that fits 6."""
    from mice_bench.latency.cli import _default_variants

    assert _default_variants("minilm-l12") == ["ce", "mice-l4+3", "colbert"]
    assert _default_variants("minilm-l6") == ["ce", "mice-l4+2", "colbert"]
    # unknown depth (a hub id offline): the plain defaults, checked later with a clear error
    assert _default_variants("org/not-local") == ["ce", "mice-l4+3", "colbert"]


# ----------------------------------------------------------------------------- bad input
FAST = ["--threads", "1", "--warmup", "0", "--runs", "1", "--min-seconds", "0",
        "--variants", "ce", "--depth", "4", "--doc-tokens", "16", "--batch-size", "4"]


def _assert_exit_2(res, *needles):
    """Exit 2, one clear ``error:`` line naming the input, no traceback."""
    out = res.output
    assert res.exit_code == 2, (res.exit_code, out, res.exception)
    assert isinstance(res.exception, SystemExit) and "Traceback" not in out
    errors = [ln for ln in out.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, out
    msg = " ".join(out.split())
    for n in needles:
        assert n in msg, (n, msg)


def test_default_results_dir(monkeypatch, tmp_path):
    from mice_bench.results import default_results_dir

    monkeypatch.delenv("MICE_BENCH_RESULTS", raising=False)
    for kind in ("latency", "effectiveness", "training"):
        assert default_results_dir(kind) == Path("mice-bench-results") / kind
    monkeypatch.setenv("MICE_BENCH_RESULTS", str(tmp_path / "elsewhere"))
    assert default_results_dir("latency") == tmp_path / "elsewhere" / "latency"
    with pytest.raises(ValueError, match="unknown result kind"):
        default_results_dir("bogus")
    # ignored by git, so ad-hoc runs never show up as changes to the committed results
    repo = Path(__file__).resolve().parents[1]
    assert "/mice-bench-results/" in (repo / ".gitignore").read_text().split()


def test_latency_without_output_writes_outside_the_committed_results(tiny_model, app,
                                                                     tmp_path, monkeypatch):
    """The README's main job must not write into the committed results/latency/."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MICE_BENCH_RESULTS", raising=False)
    (tmp_path / "results" / "latency").mkdir(parents=True)
    res = _invoke(app, ["latency", "--model", tiny_model, *FAST])
    assert res.exit_code == 0, res.output
    written = list((tmp_path / "mice-bench-results" / "latency").glob("latency-rerank-cpu-*.json"))
    assert len(written) == 1 and not list((tmp_path / "results").rglob("*.json"))
    doc = json.loads(written[0].read_text())
    assert doc["config"]["output"] == str(Path("mice-bench-results/latency") / written[0].name)
    # $MICE_BENCH_RESULTS moves it
    monkeypatch.setenv("MICE_BENCH_RESULTS", str(tmp_path / "adhoc"))
    res = _invoke(app, ["latency", "--model", tiny_model, *FAST])
    assert res.exit_code == 0, res.output
    assert len(list((tmp_path / "adhoc" / "latency").glob("*.json"))) == 1


def _no_measurement(monkeypatch):
    """Fail the test if the model is loaded or anything is measured."""
    from mice_bench.latency import runner

    def boom(*a, **k):
        raise AssertionError("the model was loaded / measured before the output was checked")

    monkeypatch.setattr(runner, "run_latency", boom)


def test_unwritable_output_exits_2_before_the_model_loads(tiny_model, app, tmp_path,
                                                          monkeypatch):
    import tempfile

    _no_measurement(monkeypatch)
    base = ["latency", "--model", tiny_model, *FAST, "--output"]
    # parent is a file
    (tmp_path / "file").write_text("x")
    _assert_exit_2(_invoke(app, [*base, str(tmp_path / "file" / "r.json")]),
                   str(tmp_path / "file" / "r.json"), "not a folder")
    # the output is a folder
    (tmp_path / "dir.json").mkdir()
    _assert_exit_2(_invoke(app, [*base, str(tmp_path / "dir.json")]),
                   str(tmp_path / "dir.json"), "is a folder")
    # a read-only folder (simulated: tests may run as root, which ignores permissions)
    real = tempfile.NamedTemporaryFile

    def read_only(*a, dir=None, **kw):
        if dir is not None and Path(dir) == tmp_path / "ro":
            raise PermissionError(13, "Permission denied")
        return real(*a, dir=dir, **kw)

    (tmp_path / "ro").mkdir()
    monkeypatch.setattr(tempfile, "NamedTemporaryFile", read_only)
    _assert_exit_2(_invoke(app, [*base, str(tmp_path / "ro" / "r.json")]),
                   str(tmp_path / "ro" / "r.json"), "not writable")
    assert not list((tmp_path / "ro").iterdir())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir.json", "file", "ro"]
    assert not list((tmp_path / "dir.json").iterdir())


def test_progress_bar_shows_variant_and_runs(tiny_model):
    """A Rich bar on a terminal: rows done, the variant being timed and its runs."""
    import io

    from rich.console import Console

    from mice_bench.latency.progress import LatencyProgress

    buf = io.StringIO()
    con = Console(file=buf, force_terminal=True, width=160, color_system=None)
    prog = LatencyProgress(True, con)
    assert prog.enabled
    cfg = LatencyConfig(model=tiny_model, variants=["ce", "colbert"], batch_sizes=[4],
                        doc_tokens=[16], depth=4, warmup=0, runs=2, min_seconds=0.0,
                        threads=1)
    R.run_latency(cfg, progress=prog)
    out = buf.getvalue()
    assert "latency" in out and "rows 2/2" in out
    assert "timing, 2 runs" in out and ("ce" in out and "colbert" in out)
    assert prog._prog is None                         # stopped
    # not a terminal (pipes, CI) or --no-progress: no bar
    assert not LatencyProgress(True, Console(file=io.StringIO())).enabled
    assert not LatencyProgress(False, con).enabled


def test_no_progress_option_and_no_bar_when_piped(tiny_model, app, tmp_path):
    for extra in ([], ["--no-progress"]):
        res = _invoke(app, ["latency", "--model", tiny_model, *FAST, *extra,
                            "--output", str(tmp_path / "r.json")])
        assert res.exit_code == 0, res.output
        assert "rows 1/1" not in res.output and "timing, 1 run" not in res.output
        assert "results written to" in res.output


def test_other_processes_cpu_is_measured_and_decides_busy(default_run):
    """The busy verdict comes from what other processes used during the run (/proc), not
    from the load average, which also counts this benchmark's own earlier runs."""
    import os
    import subprocess
    import sys
    import time as _time

    from mice_bench.latency.records import OTHER_CPU_BUSY, busy_from_environment
    from mice_bench.latency.runner import OtherCpu

    env = default_run[0]["environment"]
    assert isinstance(env["other_cpu_cores"], float) and env["other_cpu_cores"] >= 0
    assert env["cpu_busy_warning"] == (env["other_cpu_cores"] > OTHER_CPU_BUSY)
    # a competing process is seen (it spins ~1.5 s while this one sleeps)
    probe = OtherCpu.start()
    subprocess.run([sys.executable, "-c",
                    "import time\nt = time.time()\nwhile time.time() - t < 1.5: pass"],
                   check=True)
    other = probe.stop()
    assert other is not None and other > 0.3, other
    # ... and this process's own work is not (it spins while nothing else is started)
    probe = OtherCpu.start()
    t = _time.perf_counter()
    own0 = _time.process_time()
    while _time.perf_counter() - t < 1.0:
        pass
    own = (_time.process_time() - own0) / (_time.perf_counter() - t)
    other = probe.stop()
    assert other is not None and other + own <= (os.cpu_count() or 1) + 0.2
    # the verdict's order of evidence (hand-written environments)
    assert busy_from_environment({"other_cpu_cores": 0.1, "cpu_busy_warning": True}) is False
    assert busy_from_environment({"other_cpu_cores": 0.9, "cpu_busy_warning": False}) is True
    assert busy_from_environment({"cpu_busy_warning": True}) is True
    assert busy_from_environment({"loadavg_before": [0.2, 0, 0], "cpu_count": 2}) is False
    assert busy_from_environment({"loadavg_before": [1.6, 0, 0], "cpu_count": 2}) is True
    assert busy_from_environment({}) is None


# ----------------------------------------------------------------------
# the row math (latency/stats.py, latency/rows.py) driven with fakes, field by field
# ----------------------------------------------------------------------- latency/stats.py
def test_summarize_empty_has_every_key_nan_and_count_zero():
    s = summarize([])
    assert sorted(s) == sorted(STAT_KEYS) == sorted(
        ["mean", "std", "p50", "p90", "p99", "min", "max", "count"])
    assert s["count"] == 0
    assert all(math.isnan(s[k]) for k in STAT_KEYS if k != "count")


def test_summarize_two_values_uses_the_sample_std():
    # [1, 3]: mean 2, sample std sqrt(((1-2)^2 + (3-2)^2) / 1) = sqrt(2); p90 = 1 + 0.9 * 2
    s = summarize([1.0, 3.0])
    assert s["std"] == pytest.approx(math.sqrt(2.0), rel=1e-12)
    assert s["p90"] == pytest.approx(2.8, rel=1e-12)
    assert s["count"] == 2 and s["min"] == 1.0 and s["max"] == 3.0


@pytest.mark.parametrize("mean_s", [float("inf"), -1.0, 0.0, float("nan")])
def test_throughput_is_nan_when_undefined(mean_s):
    assert math.isnan(throughput(8, mean_s))


def test_throughput_and_speedup_known_answers():
    assert throughput(8, 0.4) == pytest.approx(20.0, rel=1e-12)
    assert speedup(0.4, 0.1) == pytest.approx(4.0, rel=1e-12)
    assert speedup(0.4, 0.0) is None and speedup(None, 0.1) is None
    assert speedup(0.4, float("inf")) is None


# ------------------------------------------------------------------ latency/rows.py make_row
class _Spec:
    layout = "joint"

    def __str__(self):
        return "mice-l4+3"

    def description(self):
        return "a description"


class _BB:
    max_positions = 64

    def param_count(self, spec):
        return 1234


def _wl(**kw):
    base = dict(pairs_per_run=8, precompute=False, kv_cache=False, split=True,
                doc_vectors=False, packed=None, doc_store=None, offline={"doc_states": "none"},
                doc_content="states", linear_calls=0, packed_linear_calls=0)
    base.update(kw)
    return SimpleNamespace(**base)


def _fake_slot(ex, wl, total, notes=()):
    s = Slot(spec=_Spec(), ex=ex, wl=wl, batch=4, halvings=1, notes=list(notes),
             memory={"peak_mb": 12.0})
    for t in total:
        s.record(t, {"tokenize": 0.0, "doc_encode": 0.0, "query_encode": 0.0,
                     "interaction": t}, t + 0.01)
    return s


@pytest.fixture
def fake_flops(monkeypatch):
    calls = []

    def pair_flops(spec, dims, qlen, dlen, **kw):
        calls.append(((qlen, dlen), kw))
        return {"per_pair": 1500.0}

    monkeypatch.setattr(flopsmod, "pair_flops", pair_flops)
    return calls


def test_make_row_rerank_every_field(fake_flops):
    """Rerank protocol: FLOPs per pair amortised over the run's 8 pairs of one query, the
    depth recorded, compile failure noted, joint executor's missing precompute noted."""
    c = LatencyConfig(protocol="rerank", depth=100, compile=True, kv_cache=True)
    ex = SimpleNamespace(kind="fast", compiled={"failed": ["layers", "heads"]})
    wl = _wl(precompute=False, kv_cache=True, split=False)
    slot = _fake_slot(ex, wl, [0.2, 0.4], notes=["from the scheduler"])
    logs = []
    row = make_row(c, slot, _BB(), "DIMS", {"flops_per_s": 80_000.0},
                   SweepPoint(batch_size=8, doc_tokens=100, precompute=True), 5,
                   log=logs.append)
    assert fake_flops == [((5, 100), {"precompute": False, "kv_cache": True,
                                       "pairs_per_query": 8, "doc_vectors": False})]
    assert row.variant == "mice-l4+3" and row.description == "a description"
    assert row.layout == "joint" and row.executor == "fast"
    assert row.compiled is False
    assert row.point == RowPoint(batch_size=4, batch_size_requested=8, doc_tokens=100,
                                 doc_tokens_effective=100, query_tokens=5, depth=100,
                                 precompute=True, kv_cache=True)
    assert row.precompute_applied is False and row.kv_cache_applied is True
    assert row.oom_halvings == 1 and row.pairs_per_run == 8 and row.params == 1234
    assert row.latency_s["mean"] == pytest.approx(0.3) and row.latency_s["count"] == 2
    assert row.phases_s["interaction"]["mean"] == pytest.approx(0.3)
    assert row.throughput_pairs_per_s == pytest.approx(8 / 0.3)
    assert row.flops == {"per_pair": 1500.0}
    assert row.achieved_flops_per_s == pytest.approx(1500.0 * 8 / 0.3)       # 40 000
    assert row.peak_fraction == pytest.approx(0.5)
    assert row.memory == {"peak_mb": 12.0} and row.offline == {"doc_states": "none"}
    assert row.raw_s["total"] == [0.2, 0.4] and row.raw_s["wall"] == pytest.approx([0.21, 0.41])
    assert row.raw_s["interaction"] == [0.2, 0.4]
    assert row.notes == [
        "from the scheduler",
        "torch.compile failed for layers, heads: ran eager",
        "no document precompute for this executor (joint/reference): "
        "documents are encoded inside every run"]
    assert row.speedup_vs_ce is None                      # filled in by add_speedups only
    assert len(logs) == 1 and "300.00 ms/run" in logs[0] and "(2 runs)" in logs[0]


def test_make_row_throughput_is_from_the_mean_not_the_median(fake_flops):
    """Skewed runs (0.1, 0.1, 0.7 s: mean 0.3, median 0.1): pairs per second and achieved
    FLOP/s divide by the mean seconds per run, as the module says."""
    c = LatencyConfig(protocol="rerank", depth=100)
    slot = _fake_slot(SimpleNamespace(kind="fast", compiled=None), _wl(), [0.1, 0.1, 0.7])
    row = make_row(c, slot, _BB(), "DIMS", {"flops_per_s": 80_000.0},
                   SweepPoint(batch_size=8, doc_tokens=100, precompute=False), 5)
    assert row.latency_s["p50"] == pytest.approx(0.1)
    assert row.throughput_pairs_per_s == pytest.approx(8 / 0.3)
    assert row.achieved_flops_per_s == pytest.approx(1500.0 * 8 / 0.3)


def test_make_row_records_the_runs_runtime(fake_flops):
    """A row says which runtime measured it (``ort`` rows are compared against the ``ce`` of
    their own runtime): the run's ``--runtime``, not a default."""
    for runtime in ("ort", "torch"):
        c = LatencyConfig(protocol="rerank", depth=100, runtime=runtime)
        row = make_row(c, _fake_slot(SimpleNamespace(kind="fast", compiled=None), _wl(), [0.1]),
                       _BB(),
                       "DIMS", {"flops_per_s": 80_000.0},
                       SweepPoint(batch_size=8, doc_tokens=100, precompute=False), 5)
        assert row.runtime == runtime


def test_make_row_paper_protocol_truncation_and_compiled(fake_flops):
    """Paper protocol: one pair per query, no depth, documents truncated to the positions
    left after ``[CLS] q [SEP] ... [SEP]`` (64 - 3 - 5 = 56), a successful compile."""
    c = LatencyConfig(protocol="paper", depth=100, compile=True, kv_cache=False)
    ex = SimpleNamespace(kind="fast", compiled={"failed": []})
    wl = _wl(precompute=True, kv_cache=False, split=True, pairs_per_run=4, doc_vectors=True)
    row = make_row(c, _fake_slot(ex, wl, [0.1, 0.1, 0.1]), _BB(), None, {"flops_per_s": 0.0},
                   SweepPoint(batch_size=4, doc_tokens=100, precompute=True), 5)
    assert fake_flops == [((5, 56), {"precompute": True, "kv_cache": False,
                                      "pairs_per_query": 1, "doc_vectors": True})]
    assert row.point.depth is None and row.point.doc_tokens_effective == 56
    assert row.point.doc_tokens == 100 and row.point.kv_cache is False
    assert row.compiled is True
    assert row.peak_fraction is None                                  # no peak known
    assert row.achieved_flops_per_s == pytest.approx(1500.0 * 4 / 0.1)
    assert row.notes == ["documents truncated to 56 tokens to fit 64 positions "
                         "(as in the seed)",
                         "documents precomputed as the head's projected unit vectors (a "
                         "ColBERT index): the document projection is offline"]


def test_make_row_no_compile_no_kind_zero_time(fake_flops):
    """Not compiled (a stale compile state is ignored), the executor's kind as it declares it,
    and a zero mean time: achieved FLOP/s is NaN, not a division error."""
    c = LatencyConfig(protocol="rerank", depth=10, compile=False)
    ex = SimpleNamespace(kind="base", compiled={"failed": ["layers"]})
    row = make_row(c, _fake_slot(ex, _wl(), [0.0]), _BB(), None, {"flops_per_s": 1e9},
                   SweepPoint(batch_size=8, doc_tokens=16, precompute=False), 4)
    assert row.compiled is False and row.executor == "base"
    assert row.notes == []
    assert math.isnan(row.achieved_flops_per_s)
    assert math.isnan(row.throughput_pairs_per_s)


def test_make_row_compile_without_state_counts_as_compiled(fake_flops):
    c = LatencyConfig(protocol="rerank", depth=10, compile=True)
    row = make_row(c, _fake_slot(SimpleNamespace(kind="reference", compiled=None), _wl(), [0.5]),
                   _BB(), None, {"flops_per_s": 1e9}, SweepPoint(8, 16, False), 4)
    assert row.compiled is True and row.notes == []


# ---------------------------------------------------------------- latency/rows.py add_speedups
def _row(v, bs, doc, pairs, mean, flops):
    return LatencyRowResult(variant=v, point=RowPoint(bs, bs, doc, doc, 5, None, False, False),
                            latency_s={"mean": mean}, pairs_per_run=pairs,
                            throughput_pairs_per_s=float("nan"), flops=flops)


def test_add_speedups_groups_without_ce_and_undefined_values():
    """A row whose point has no ``ce`` is skipped (later rows still get theirs); a ``ce``
    whose mean is NaN gives no speedup; missing FLOPs give no FLOP ratio; sub-1 FLOPs per
    pair still divide."""
    rows = [_row("colbert", 16, 64, 16, 0.1, {"per_pair": 10.0}),       # no ce at (16, 64)
            _row("ce", 8, 64, 8, 0.8, {"per_pair": 1.0}),
            _row("mice", 8, 64, 8, 0.2, {"per_pair": 0.5}),
            _row("bi", 8, 64, 8, 0.1, {}),
            _row("ce", 8, 128, 8, float("nan"), {"per_pair": 4.0}),
            _row("mice", 8, 128, 8, 0.2, {"per_pair": 2.0})]
    add_speedups(rows)
    assert rows[0].speedup_vs_ce is None and rows[0].flop_ratio_vs_ce is None
    assert rows[2].speedup_vs_ce == pytest.approx(4.0)       # (0.8 / 8) / (0.2 / 8)
    assert rows[2].flop_ratio_vs_ce == pytest.approx(2.0)    # 1.0 / 0.5
    assert rows[3].speedup_vs_ce == pytest.approx(8.0) and rows[3].flop_ratio_vs_ce is None
    assert rows[5].speedup_vs_ce is None                     # ce time undefined
    assert rows[5].flop_ratio_vs_ce == pytest.approx(2.0)


def test_compiling_wraps_a_copy_of_the_executor_that_says_what_compiled(tiny_bb, monkeypatch):
    """``compile_executor`` leaves the executor as it was and returns a copy whose
    ``compiled`` names every entry point it compiled; an entry point whose compiled form fails
    runs eager and is listed under ``failed``; scores are unchanged."""
    import torch

    from mice_bench.executors import make_executor
    from mice_bench.latency.compile import compile_executor

    def fake_compile(fn):                 # the scoring entry point "fails to compile"
        if fn.__name__ == "score_states":
            def broken(*a, **k):
                raise RuntimeError("backend failure")
            return broken
        return fn

    monkeypatch.setattr(torch, "compile", fake_compile)
    ex = make_executor("mice-l2+2", tiny_bb, "fast")
    logs: list[str] = []
    out = compile_executor(ex, logs.append)
    assert out is not ex and ex.compiled is None and "score_states" not in vars(ex)
    assert out.compiled == {"compiled": ["forward_pairs", "_encode_part", "score_states"],
                            "failed": []}
    q, d = ["what is a cat"], ["a cat is an animal", "spiders have eight legs"]
    assert torch.allclose(out.rerank(q[0], d), ex.rerank(q[0], d))
    assert out.compiled["failed"] == ["score_states"] and len(logs) == 1
    assert type(out) is type(ex) and out.doc_repr == ex.doc_repr

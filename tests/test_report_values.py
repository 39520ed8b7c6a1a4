"""Every number the report's tables print, checked by its own value: hand-made rows with
hand-chosen numbers go through the table code, and each cell is compared with a value worked
out here by hand or with scipy (never with the committed report). Covers which column holds
which number (mean against median, speedup against ce against the fastest cross-encoder), the
sign of a difference (a store minus its fp32 reference) and which run a table shows."""

from __future__ import annotations

import math

import pytest
from scipy import stats

from mice_bench.effectiveness.storage import StorageRow, fidelity_table
from mice_bench.latency import table as lt
from mice_bench.latency.peers_table import runtimes_table
from mice_bench.latency.records import LatencyRow, RunInfo
from mice_bench.latency.result import LatencyResult, LatencyRowResult, RowPoint


def cells(md: str, first: str) -> list[str]:
    """The cells of the Markdown table line whose first cell is ``first``."""
    for ln in md.splitlines():
        if ln.startswith("| ") and ln.split(" | ")[0] == f"| {first}":
            return [c.strip() for c in ln.strip().strip("|").split(" | ")]
    raise AssertionError(f"no line starting with {first!r} in\n{md}")


# --------------------------------------------------------------------------- fidelity table
def _run(path, scores: dict[str, dict[str, float]]) -> str:
    lines = []
    for q, docs in scores.items():
        for rank, (d, s) in enumerate(sorted(docs.items(), key=lambda x: -x[1]), 1):
            lines.append(f"{q} Q0 {d} {rank} {s} t")
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def _store_row(store, per_query, run_path, bytes_per_token, bytes_per_doc, codec=0.0,
               centroids=None, ndcg=None):
    return StorageRow(model="m", variant="colbert", store=store, dataset="dl19",
                      first_stage="bm25", ndcg10=ndcg, bytes_per_doc=bytes_per_doc,
                      tokens_per_doc=40.0, created="", file=f"{store}.json", content="vectors",
                      bytes_per_token=bytes_per_token, codec_bytes=codec, centroids=centroids,
                      per_query=per_query, run_path=run_path)


def test_fidelity_table_cells_by_hand(tmp_path):
    ref_pq = {"q1": 0.5, "q2": 0.6, "q3": 0.2, "q4": 0.9}
    low_pq = {"q1": 0.4, "q2": 0.6, "q3": 0.1, "q4": 0.7}      # every query worse or equal
    ref_run = _run(tmp_path / "fp32.trec", {"q1": {"a": 3.0, "b": 2.0, "c": 1.0},
                                            "q2": {"a": 1.0, "b": 2.0, "c": 3.0}})
    low_run = _run(tmp_path / "r2.trec", {"q1": {"a": 3.0, "b": 1.0, "c": 2.0},
                                          "q2": {"a": 1.3, "b": 2.0, "c": 3.0}})
    rows = [_store_row("fp32", ref_pq, ref_run, 1536.0, 61440.0, ndcg=0.55),
            _store_row("residual2", low_pq, low_run, 50.0, 2048.0, codec=4096.0,
                       centroids=256, ndcg=0.45)]
    md = fidelity_table(rows)
    head = cells(md, "dataset")
    line = [ln for ln in md.splitlines() if "| residual2 |" in ln][0]
    got = dict(zip(head, [x.strip() for x in line.strip().strip("|").split(" | ")]))
    assert got["nDCG@10"] == "0.4500"
    # residual2 minus fp32: -0.1, 0, -0.1, -0.2 -> mean -0.1 (worse: negative)
    d = [low_pq[q] - ref_pq[q] for q in sorted(ref_pq)]
    half = stats.t.ppf(0.975, 3) * stats.tstd(d) / 2
    assert got["Δ vs fp32 [95 % CI]"] == f"-0.1000 [{-0.1 - half:+.4f}, {-0.1 + half:+.4f}]"
    assert got["Δ vs fp32 [95 % CI]"].startswith("-0.1000 [-0.2299, +0.0299]")
    p = stats.ttest_rel([low_pq[q] for q in sorted(ref_pq)],
                        [ref_pq[q] for q in sorted(ref_pq)]).pvalue
    assert got["p (t-test)"] == f"{p:.3g}"
    # q1: tau 1/3 (pairs ab +, ac +, bc -); q2: order kept, tau 1 -> mean 2/3, min 1/3
    assert got["τ (mean / min)"] == "0.6667 / 0.3333"
    assert got["top-10 overlap"] == "1.000"              # three candidates: all kept
    # q1: |2 - 1| / (3 - 1) = 0.5; q2: 0.3 / (3 - 1) = 0.15 -> largest 0.5, median 0.325
    assert got["err / spread (max / median)"] == "0.5000 / 0.3250"
    assert got["B/stored token"] == "50.0" and got["KiB/doc"] == "2.0"
    assert got["codec KiB (centroids)"] == "4.0 (256)"
    # 50 B/token x 40 tokens x 8,841,823 passages = 16.5 GiB of shards, plus a codec with
    # ColBERTv2's number of centroids for that many tokens (under half a GiB)
    shards = 50 * 40 * 8_841_823 / 2**30
    assert f"{shards:.1f}" == "16.5"
    assert shards < float(got["MS MARCO GiB (computed)"]) < shards + 0.5
    ref = dict(zip(head, [x.strip() for x in
                          [ln for ln in md.splitlines() if "| fp32 |" in ln][0]
                          .strip().strip("|").split(" | ")]))
    assert ref["Δ vs fp32 [95 % CI]"] == "–" and ref["B/stored token"] == "1536.0"
    assert ref["MS MARCO GiB (computed)"] == f"{1536 * 40 * 8_841_823 / 2**30:.1f}"


# --------------------------------------------------------------------------- latency tables
def _info(protocol: str, file: str = "run.json", created: str = "2026-01-01T00:00:00+00:00",
          device: str = "cpu", env: dict | None = None, config: dict | None = None) -> RunInfo:
    return RunInfo(file=file, created=created, protocol=protocol, model="m",
                   model_description="m", num_layers=2, random_weights=True, hidden_size=32,
                   device=device, device_name="cpu0", dtype="fp32", threads=2, compiled=False,
                   environment=env or {}, config=config or {})


def _lrow(run: RunInfo, variant: str, mean: float, std: float, *, pre: bool = False,
          pairs: int = 16, speedup: float | None = None, flop_ratio: float | None = None,
          params: int = 4_200_000, growth: float | None = 12.0, p50: float | None = None,
          p99: float | None = None, batch: int = 16, requested: int = 16) -> LatencyRow:
    return LatencyRow(run=run, variant=variant, layout="split", batch_size=batch,
                      batch_size_requested=requested, doc_tokens=128, doc_tokens_effective=128,
                      query_tokens=32, depth=16 if run.protocol == "rerank" else None,
                      precompute=pre, precompute_applied=pre, kv_cache_applied=False,
                      pairs_per_run=pairs, params=params, lat_mean=mean, lat_std=std,
                      lat_p50=p50 if p50 is not None else mean, lat_p99=p99 if p99 is not None
                      else mean, count=5, throughput=pairs / mean, mem_peak_mb=None,
                      mem_growth_mb=growth, speedup_vs_ce=speedup,
                      flop_ratio_vs_ce=flop_ratio, flops_per_pair=1e9)


GROUP = ("cpu", "cpu0", "fp32", "2", "m")


def test_side_by_side_table_cells_by_hand():
    paper, rerank = _info("paper"), _info("rerank")
    rows = [_lrow(paper, "ce", 0.080, 0.004, speedup=1.0),
            _lrow(paper, "mice-l4+3", 0.020, 0.001, pre=True, speedup=4.0),
            _lrow(rerank, "ce", 0.160, 0.008, speedup=1.0, flop_ratio=1.0),
            _lrow(rerank, "mice-l4+3", 0.032, 0.002, pre=True, speedup=5.0, flop_ratio=6.25,
                  growth=3.4)]
    md = lt.side_by_side_table(GROUP, rows).markdown()
    mice = cells(md, "mice-l4+3")
    ce = cells(md, "ce")
    # Model, #param | paper: ms, docs/s, memory, speedup | rerank: ms, pairs/s, speedup
    # (FLOP bound), memory
    assert mice == ["mice-l4+3", "4.2M", "20.00 ± 1.00", "800", "+12 MB", "4.0×",
                    "32.00 ± 2.00", "500", "5.0× (6.2×)", "+3 MB"]
    assert ce == ["ce", "4.2M", "80.00 ± 4.00", "200", "+12 MB", "1.0×",
                  "160.0 ± 8.0", "100", "1.0× (1.0×)", "+12 MB"]


def test_all_rows_table_cells_by_hand():
    busy = _info("rerank", env={"other_cpu_cores": 1.9, "cpu_count": 2})
    rows = [_lrow(busy, "mice-l4+3", 0.0125, 0.0005, pre=True, speedup=3.0, flop_ratio=4.0,
                  p50=0.012, p99=0.150, batch=8, requested=16, growth=None)]
    md = lt.all_rows_table(GROUP, rows).markdown()
    assert cells(md, "rerank") == ["rerank", "mice-l4+3", "8 (of 16)", "128", "16", "yes", "no",
                                   "no", "12.50 ± 0.50", "12.00", "150.0", "1280", "3.0× (4.0×)",
                                   "–", "yes"]


def test_side_by_side_table_shows_the_idle_run_of_a_point_measured_twice():
    idle = _info("rerank", file="idle.json", created="2026-01-01T00:00:00+00:00",
                 env={"other_cpu_cores": 0.0})
    busy = _info("rerank", file="busy.json", created="2026-02-01T00:00:00+00:00",
                 env={"other_cpu_cores": 1.9})
    rows = [_lrow(idle, "ce", 0.100, 0.0, speedup=1.0),
            _lrow(busy, "ce", 0.400, 0.0, speedup=1.0)]
    md = lt.side_by_side_table(GROUP, rows).markdown()
    assert cells(md, "ce")[2] == "100.0 ± 0.0" and "Sources: idle.json." in md


def _rr(variant, runtime, mean, std, *, sp, fast, fastest, pre=False, flops=2.5e9,
        tok="in the timed call") -> LatencyRowResult:
    return LatencyRowResult(variant=variant, point=RowPoint(16, 16, 128, 128, 32, 16, pre,
                                                            False),
                            latency_s={"mean": mean, "std": std}, pairs_per_run=16,
                            throughput_pairs_per_s=16 / mean, precompute_applied=pre,
                            flops={"per_pair": flops}, speedup_vs_ce=sp, runtime=runtime,
                            tokenization=tok, speedup_vs_fastest_ce=fast, fastest_ce=fastest)


def test_runtimes_table_cells_by_hand():
    rows = [_rr("ce", "torch", 0.160, 0.008, sp=1.0, fast=0.5, fastest="hf"),
            _rr("ce", "hf", 0.080, 0.004, sp=2.0, fast=1.0, fastest="hf"),
            _rr("mice-l4+3", "torch", 0.020, 0.001, sp=8.0, fast=4.0, fastest="hf", pre=True,
                flops=4e8)]
    res = LatencyResult(config={"runtime": "torch"}, environment={}, model={}, matmul_peak={},
                        rows=rows)
    md = runtimes_table(res, "run.json").markdown()
    head = cells(md, "variant")
    assert head[-3:] == ["speedup vs ce (torch, same dtype)", "speedup vs fastest cross-encoder",
                         "best against best"]
    got = [ln for ln in md.splitlines() if ln.startswith("| ")][1:]
    want = [
        # precomputed documents first, then by variant and runtime
        # (no peak measured and no best-against-best fields in these rows: "–")
        ["mice-l4+3", "mice-bench (PyTorch)", "fp32", "16", "128", "yes", "in the timed call",
         "20.00 ± 1.00", "800", "0.4", "–", "8.0×", "4.0× (vs hf)", "–"],
        ["ce", "mice-bench (PyTorch)", "fp32", "16", "128", "no", "in the timed call",
         "160.0 ± 8.0", "100", "2.5", "–", "1.0×", "0.5× (vs hf)", "–"],
        ["ce", "transformers eager", "fp32", "16", "128", "no", "in the timed call",
         "80.00 ± 4.00", "200", "2.5", "–", "2.0×", "1.0× (vs hf)", "–"],
    ]
    assert [[c.strip() for c in ln.strip().strip("|").split(" | ")] for ln in got] == want


def test_a_repeated_point_keeps_its_idle_run_in_every_table_then_the_newest():
    """A newer run on a busy machine never replaces an idle one (both tables); between two
    idle runs the newest wins."""
    idle = _info("rerank", file="idle.json", created="2026-01-01T00:00:00+00:00",
                 env={"other_cpu_cores": 0.0})
    busy = _info("rerank", file="busy.json", created="2026-02-01T00:00:00+00:00",
                 env={"other_cpu_cores": 1.9})
    newer = _info("rerank", file="newer.json", created="2026-03-01T00:00:00+00:00",
                  env={"other_cpu_cores": 0.1})
    a, b, c = (_lrow(idle, "ce", 0.100, 0.0), _lrow(busy, "ce", 0.400, 0.0),
               _lrow(newer, "ce", 0.200, 0.0))
    assert lt.dedupe([a, b]) == [a] and lt.dedupe([b, a]) == [a]
    assert lt.dedupe([a, b, c]) == [c]
    md = lt.all_rows_table(GROUP, lt.dedupe([b, a])).markdown()
    assert cells(md, "rerank")[8] == "100.0 ± 0.0" and cells(md, "rerank")[-1] == "no"


# --------------------------------------------------------------------------- effectiveness
def _summary(rows: dict, created: str, file: str):
    from mice_bench.evaluation.summary import Cell, EffectivenessSummary, Row, SummaryDataset
    from mice_bench.report.effectiveness_io import SummaryFile

    ds = [SummaryDataset("dl19", None, "id", "bm25"),
          SummaryDataset("scifact", None, "ood", "bm25"),
          SummaryDataset("nfcorpus", None, "ood", "bm25")]
    out = []
    for (variant, models), per in rows.items():
        cells = {}
        for d, v in per.items():
            mean, mark, diff = (v, "", None) if isinstance(v, float) else v
            cells[d] = {"nDCG@10": Cell(mean, None, [mean], 5, 0.01 if mark else None,
                                        0.02 if mark else None, diff, mark)}
        out.append(Row(variant, list(models), cells, {d: [file] for d in per}, {}))
    s = EffectivenessSummary(["nDCG@10"], "bm25", "ttest", "holm", 0.05, ds, out,
                             {"nDCG@10": 1})
    return SummaryFile(file, created, s)


def test_effectiveness_table_cells_and_averages_by_hand():
    from mice_bench.report.effectiveness_section import effectiveness_table

    old = _summary({("bm25", ()): {"dl19": 0.50, "scifact": 0.60, "nfcorpus": 0.30},
                    ("ce", ("m",)): {"dl19": (0.70, "↑", 0.2), "scifact": 0.65,
                                     "nfcorpus": 0.32},
                    ("mice-l4+3", ("m",)): {"scifact": 0.55}},
                   "2026-01-01T00:00:00+00:00", "effectiveness/old.json")
    new = _summary({("ce", ("m",)): {"scifact": 0.66}},
                   "2026-02-01T00:00:00+00:00", "effectiveness/new.json")
    md = effectiveness_table([old, new], "nDCG@10").markdown()
    assert cells(md, "Re-Ranker") == ["Re-Ranker", "In-domain · DL19", "BEIR (OOD) · NFC",
                                      "BEIR (OOD) · SF", "Average · ID", "Average · OOD"]
    # BM25: OOD mean of 30 and 60
    assert cells(md, "BM25") == ["BM25", "50.0", "30.0", "60.0", "50.0", "45.0"]
    # ce: SciFact from the newer run (66, not 65); OOD = (32 + 66) / 2; the mark kept
    assert cells(md, "ce") == ["ce", "70.0 ↑", "32.0", "66.0", "70.0", "49.0"]
    # a row without every OOD dataset has no OOD mean, and no ID mean without DL19
    assert cells(md, "mice-l4+3") == ["mice-l4+3", "–", "–", "55.0", "–", "–"]


def test_study_table_cells_by_hand(tmp_path):
    from mice_bench.report.study_section import StudyResults, study_table

    sf = _summary({("bm25", ()): {"dl19": 0.50, "scifact": 0.60, "nfcorpus": 0.30},
                   ("s1", ("m",)): {"dl19": (0.72, "↑", 0.22), "scifact": 0.64,
                                    "nfcorpus": 0.34},
                   ("s2", ("m",)): {"dl19": 0.40, "scifact": 0.70}},
                  "2026-01-01T00:00:00+00:00", "x/summary.json")
    sr = StudyResults("st", None, "", "", tmp_path, "st", sf.summary,
                      config={"systems": [{"label": "s1", "variant": "mice-l4+3",
                                           "init": "base", "loss": "lce"}]},
                      record={"systems": [{"label": "s1", "steps": 400,
                                           "train_pairs_per_s": 123.45}]})
    md = study_table(sr).markdown()
    # System, Variant, Init, Loss | DL19 | SF, NFC (the study's order) | ID, OOD | steps,
    # pairs/s; OOD = (64 + 34) / 2
    assert cells(md, "s1") == ["s1", "mice-l4+3", "base", "lce", "72.0 ↑", "64.0", "34.0",
                               "72.0", "49.0", "400", "123.5"]
    assert cells(md, "BM25") == ["BM25", "–", "–", "–", "50.0", "60.0", "30.0", "50.0",
                                 "45.0", "–", "–"]
    assert cells(md, "s2")[4:9] == ["40.0", "70.0", "–", "40.0", "–"]

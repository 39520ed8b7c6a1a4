"""Effectiveness end to end on the tiny fixture, in-process (offline, CPU, a few seconds).

The collection comes from ``tests/fixtures/effectiveness`` (queries, qrels, ``--docs`` JSONL,
``run:`` TREC file); the model is conftest's tiny random BERT (returned for any ``--model``).
"""

from __future__ import annotations

import gzip
import json
from collections import Counter
from pathlib import Path

import pytest

from mice_bench.data import collections as eds
from mice_bench.effectiveness import runner
from mice_bench.effectiveness.plan import EffectivenessConfig, ModelRef
from mice_bench.effectiveness.runner import run_effectiveness
from mice_bench.results import load_result
from mice_bench.spec import split_names

FIX = Path(__file__).resolve().parent / "fixtures" / "effectiveness"
RUN = f"run:{FIX}/run.txt"
DOCS = str(FIX / "docs.jsonl")
NUM_PAIRS = 13
UNIQUE_DOCS = 12


pytestmark = pytest.mark.usefixtures("no_network")


def fixture_collection(info: eds.DatasetInfo, docs_path, limit_queries=None) -> eds.Collection:
    """What ``load_collection`` returns for the fixture (queries/qrels without ir_datasets)."""
    assert docs_path == DOCS, "--docs must reach the collection"
    queries = dict(line.split("\t") for line in (FIX / "queries.tsv").read_text().splitlines())
    qrels: dict[str, dict[str, int]] = {}
    for line in (FIX / "qrels.txt").read_text().splitlines():
        q, _, d, r = line.split()
        qrels.setdefault(q, {})[d] = int(r)
    if limit_queries:
        queries = dict(list(queries.items())[:limit_queries])
    return eds.Collection(info, queries, {q: qrels[q] for q in queries}, Path(docs_path))


@pytest.fixture
def fixture_data(monkeypatch, tiny_bb):
    """The fixture collection, and the tiny random backbone of conftest for any --model."""
    import mice_bench.backbone   # (conftest imported the modules that bind it by name)

    monkeypatch.setattr(runner, "load_collection", fixture_collection)
    monkeypatch.setattr(mice_bench.backbone, "load_backbone", lambda name, **kw: tiny_bb)


@pytest.fixture
def counters(monkeypatch):
    """Count pairs scored and documents encoded, per variant."""
    from mice_bench.executors import fast, reference

    counts = {"pairs": Counter(), "docs": Counter()}

    def wrap(cls, meth, key, size):
        orig = getattr(cls, meth)

        def f(self, *a, **kw):
            counts[key][str(self.spec)] += size(*a)
            return orig(self, *a, **kw)

        monkeypatch.setattr(cls, meth, f)

    wrap(fast.JointExecutor, "forward_pairs", "pairs", lambda tb: len(tb))
    wrap(fast.SplitExecutor, "score_states", "pairs", lambda qs, qi, ds, di: len(qi))
    wrap(fast.SplitExecutor, "encode_documents", "docs", lambda docs, *a: len(docs))
    if hasattr(reference.ReferenceExecutor, "score_pairs"):
        wrap(reference.ReferenceExecutor, "score_pairs", "pairs", lambda q, d, *a: len(q))
    return counts


def cfg(tmp_path: Path, cache: str = "cache", out: str = "out", **kw) -> EffectivenessConfig:
    base = dict(datasets=["dl19"], models=["minilm-l6"], variants="bm25,ce,colbert",
                first_stage=RUN, docs=DOCS, depth=100, batch_size=2,
                output_dir=str(tmp_path / out), cache_dir=str(tmp_path / cache))
    base.update(kw)
    base["variants"] = split_names(base["variants"])      # test shorthand: "bm25,ce"
    return EffectivenessConfig(**base)


class Interrupt(Exception):
    pass


def interrupt_after(n: int):
    seen = []

    def hook(qid: str) -> None:
        seen.append(qid)
        if len(seen) >= n:
            raise Interrupt(f"killed after {n} queries")

    return hook


def per_query_values(out: Path) -> dict:
    return {str(p.relative_to(out)): json.loads(p.read_text())["per_query"]
            for p in sorted(out.rglob("*.json")) if p.name != "summary.json"}


def test_resume_after_interrupt_scores_every_pair_once(tmp_path, fixture_data, counters):
    c = cfg(tmp_path)
    with pytest.raises(Interrupt):
        run_effectiveness(c, after_query=interrupt_after(3))   # inside ce, after query 3
    assert counters["pairs"]["ce"] < NUM_PAIRS
    with pytest.raises(Interrupt):
        run_effectiveness(c, after_query=interrupt_after(2))   # ce query 4, colbert query 1
    run_effectiveness(c)
    assert counters["pairs"] == {"ce": NUM_PAIRS, "colbert": NUM_PAIRS}   # none twice
    assert counters["docs"] == {"colbert": UNIQUE_DOCS}                   # once per document
    resumed = per_query_values(tmp_path / "out")

    run_effectiveness(c)                                        # everything cached
    assert counters["pairs"] == {"ce": NUM_PAIRS, "colbert": NUM_PAIRS}
    assert per_query_values(tmp_path / "out") == resumed

    fresh = cfg(tmp_path, cache="cache2", out="out2")           # uninterrupted, new cache
    run_effectiveness(fresh)
    assert per_query_values(tmp_path / "out2") == resumed
    for name in ("ce", "colbert"):
        rel = Path("dl19/run-effectiveness-run/minilm-l6") / f"{name}.trec.gz"
        # byte-identical: the gzip stream has no time stamp
        assert (tmp_path / "out" / rel).read_bytes() == (tmp_path / "out2" / rel).read_bytes()


def test_run_and_docs_on_fixture(tmp_path, fixture_data):
    """``run:`` + ``--docs``: identity row values, output layout, schema, summary."""
    summary = run_effectiveness(cfg(tmp_path, variants="bm25,biencoder,mice-l4+2",
                                    baseline="bm25"))
    out = tmp_path / "out"
    base = out / "dl19" / "run-effectiveness-run"
    bm25 = load_result(base / "bm25.json", kind="effectiveness")
    assert bm25["aggregates"]["nDCG@10"] == pytest.approx(0.564139, abs=1e-6)   # README
    assert bm25["aggregates"]["RR@10"] == pytest.approx(5 / 12)
    assert set(bm25["per_query"]["nDCG@10"]) == {"101", "102", "103", "104"}
    assert bm25["config"]["first_stage"] == RUN and bm25["config"]["docs"] == DOCS
    with gzip.open(base / "bm25.trec.gz", "rt") as f:
        assert f.readline().startswith("101 Q0 d3 1 12.5")
    for v in ("biencoder", "mice-l4+2"):
        r = load_result(base / "minilm-l6" / f"{v}.json", kind="effectiveness")
        assert r["num_candidates"] == NUM_PAIRS
        assert r["model"]["num_layers"] == 6
        assert r["timing"]["pairs_scored"] == NUM_PAIRS
        assert {"schema", "schema_version", "config", "environment", "aggregates", "per_query",
                "timing", "run_file"} <= set(r)
        assert (base / "minilm-l6" / r["run_file"]).is_file()
    assert [r.variant for r in summary.rows] == ["bm25", "biencoder", "mice-l4+2"]
    # the test and the correction, recomputed independently from the per-query values of
    # the result files: scipy's paired t-test, Holm by hand over the 2 comparisons
    from scipy import stats

    bpq = bm25["per_query"]
    for m in ("nDCG@10", "RR@10"):
        ps = {}
        for v in ("biencoder", "mice-l4+2"):
            vpq = load_result(base / "minilm-l6" / f"{v}.json")["per_query"][m]
            qs = sorted(bpq[m])
            x, y = [vpq[q] for q in qs], [bpq[m][q] for q in qs]
            d = [a - b for a, b in zip(x, y)]
            ps[v] = 1.0 if all(abs(e) < 1e-12 for e in d) else stats.ttest_rel(x, y).pvalue
            cell = summary.cell(v, "dl19", m)
            assert cell.p == pytest.approx(ps[v], rel=1e-9)
            assert cell.diff == pytest.approx(sum(d) / len(d))
        from test_statistics import holm_by_hand

        for v, want in zip(ps, holm_by_hand(list(ps.values()))):
            assert summary.cell(v, "dl19", m).p_corrected == pytest.approx(want)
    assert summary.comparisons == {"nDCG@10": 2, "RR@10": 2, "R@100": 2}
    assert summary.row("bm25").averages["id"]["nDCG@10"] == pytest.approx(0.564139, abs=1e-6)
    md = (out / "summary.md").read_text()
    assert "| system | dl19 | ID avg |" in md and "holm" in md
    from mice_bench.evaluation.summary import EffectivenessSummary

    assert EffectivenessSummary.load(out / "summary.json")[0] == summary   # written = read


def test_seeds_mean_std(tmp_path, fixture_data):
    """Two --model values are seeds: the cell holds both, mean and std."""
    import itertools

    import numpy as np

    summary = run_effectiveness(cfg(tmp_path, models=[ModelRef("minilm-l6", "s1"), ModelRef("minilm-l6", "s2")],
                                    variants="biencoder,colbert", baseline="bm25",
                                    test="randomization", correction="bonferroni"))
    row = summary.row("biencoder")
    assert row.models == ["s1", "s2"]
    cell = row.cells["dl19"]["nDCG@10"]
    # same checkpoint twice (seed 0): identical seeds, std 0
    assert len(cell.seeds) == 2 and cell.std == pytest.approx(0.0, abs=1e-9)
    assert cell.mean == pytest.approx(cell.seeds[0])
    # 4 queries: the exact sign-flip p-value enumerates the 16 sign vectors; the 10,000
    # random resamples must land close to it. Bonferroni over the 2 comparisons doubles it.
    out = tmp_path / "out" / "dl19" / "run-effectiveness-run"
    b = load_result(out / "bm25.json")["per_query"]["nDCG@10"]
    for v in ("biencoder", "colbert"):
        a = load_result(out / "s1" / f"{v}.json")["per_query"]["nDCG@10"]
        d = np.array([a[q] - b[q] for q in sorted(b)])
        if np.allclose(d, 0):
            continue
        means = [abs(np.dot(s, d)) / len(d) for s in itertools.product((-1, 1), repeat=len(d))]
        exact = np.mean([m >= abs(d.mean()) - 1e-12 for m in means])
        c = summary.cell(v, "dl19", "nDCG@10")
        assert c.p == pytest.approx(exact, abs=0.02)
        assert c.p_corrected == pytest.approx(min(1.0, 2 * c.p))
    assert summary.test == "randomization" and summary.correction == "bonferroni"


def test_full_first_stage_biencoder(tmp_path, fixture_data, counters):
    """``full`` scores every corpus document (here: the 12 of --docs) and keeps the top."""
    run_effectiveness(cfg(tmp_path, variants="biencoder", first_stage="full", depth=3))
    r = json.loads((tmp_path / "out/dl19/full/minilm-l6/biencoder.json").read_text())
    assert r["num_candidates"] == 4 * 3
    assert counters["docs"]["biencoder"] == 12


@pytest.mark.parametrize("option,value", [("doc_max_tokens", 6), ("query_max_tokens", 4),
                                          ("seed", 1)])
def test_score_cache_key_covers_every_option_that_changes_scores(tmp_path, fixture_data,
                                                                 option, value):
    """A cached score is reused only under the same scoring options: changing the document
    or query length limit, or the seed of random heads, scores every pair again."""
    def colbert_timing(out):
        p = tmp_path / out / "dl19" / "run-effectiveness-run" / "minilm-l6" / "colbert.json"
        return json.loads(p.read_text())["timing"]

    run_effectiveness(cfg(tmp_path, variants="colbert"))
    run_effectiveness(cfg(tmp_path, out="same", variants="colbert"))       # control: cached
    assert colbert_timing("same")["pairs_cached"] == NUM_PAIRS
    run_effectiveness(cfg(tmp_path, out="changed", variants="colbert", **{option: value}))
    t = colbert_timing("changed")
    assert t["pairs_scored"] == NUM_PAIRS and t["pairs_cached"] == 0, option


def test_beir_drops_a_document_whose_id_is_the_query_id(tmp_path):
    """BEIR's ignore_identical_ids: on a BEIR set a document with the query's id is never a
    candidate (first-stage runs and BM25 alike); on MS MARCO sets it stays."""
    from mice_bench.data.firststage import FirstStage, run_first_stage

    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps(d) + "\n" for d in (
        {"doc_id": "q1", "text": "zebra stripes zebra"},
        {"doc_id": "d1", "text": "zebra habitat"},
        {"doc_id": "d2", "text": "lions and tigers"})))
    run = tmp_path / "run.txt"
    run.write_text("q1 Q0 q1 1 9.0 x\nq1 Q0 d1 2 8.0 x\nq1 Q0 d2 3 7.0 x\n")
    for name, dropped in (("arguana", True), ("quora", True), ("dl19", False)):
        info = eds.DATASETS[name]
        assert info.ignore_identical_ids is dropped
        coll = eds.Collection(info, {"q1": "zebra stripes"}, {"q1": {"d1": 1}}, docs)
        for fs in ("bm25", f"run:{run}"):
            got = run_first_stage(FirstStage.parse(fs), coll, 10, tmp_path / "cache")
            assert ("q1" in got["q1"]) is not dropped, (name, fs)
            assert "d1" in got["q1"]


def test_real_output_through_the_report(tmp_path, fixture_data):
    """What `mice-bench effectiveness` writes is what `mice-bench report` shows: the report
    table's values, marks and row order are the run's summary."""
    from mice_bench.report import build_report

    results = tmp_path / "results"
    summary = run_effectiveness(cfg(tmp_path, variants="bm25,ce,colbert,biencoder",
                                    baseline="bm25", correction="none",
                                    output_dir=str(results / "effectiveness")))
    build_report(results, tmp_path / "report", figures=False)
    table = (tmp_path / "report" / "tables" / "effectiveness-ndcg10.md").read_text()
    body = [ln for ln in table.splitlines() if ln.startswith("| ") and "·" not in ln]
    body = [ln for ln in body if not ln.startswith("| *")]
    assert [ln.split("|")[1].strip() for ln in body] == ["BM25", "ce", "colbert", "biencoder"]
    for ln, row in zip(body, summary.rows):
        c = row.cells["dl19"]["nDCG@10"]
        assert ln.split("|")[2].strip() == f"{100 * c.mean:.1f}" + (f" {c.mark}" if c.mark
                                                                       else "")

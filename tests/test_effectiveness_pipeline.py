"""Effectiveness end to end on the tiny fixture, in-process (offline, CPU, a few seconds).

The collection comes from ``tests/fixtures/effectiveness`` (queries, qrels, ``--docs`` JSONL,
``run:`` TREC file); the model is conftest's tiny random BERT (returned for any ``--model``).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from mice_bench.effectiveness import datasets as eds
from mice_bench.effectiveness import runner
from mice_bench.effectiveness.runner import EffectivenessConfig, run_effectiveness
from mice_bench.results import load_result

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
    import mice_bench.backbone

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
    base = dict(datasets="dl19", models=["minilm-l6"], variants="bm25,ce,colbert",
                first_stage=[RUN], docs=[DOCS], depth=100, batch_size=2,
                output_dir=str(tmp_path / out), cache_dir=str(tmp_path / cache))
    base.update(kw)
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
        rel = Path("dl19/run-effectiveness-run/minilm-l6") / f"{name}.trec"
        assert (tmp_path / "out" / rel).read_text() == (tmp_path / "out2" / rel).read_text()


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
    assert (base / "bm25.trec").read_text().splitlines()[0].startswith("101 Q0 d3 1 12.5")
    for v in ("biencoder", "mice-l4+2"):
        r = load_result(base / "minilm-l6" / f"{v}.json", kind="effectiveness")
        assert r["num_candidates"] == NUM_PAIRS
        assert r["model"]["num_layers"] == 6
        assert r["timing"]["pairs_scored"] == NUM_PAIRS
        assert {"schema", "schema_version", "config", "environment", "aggregates", "per_query",
                "timing", "run_file"} <= set(r)
        assert (base / "minilm-l6" / r["run_file"]).is_file()
    rows = {r["variant"]: r for r in summary["rows"]}
    assert list(rows) == ["bm25", "biencoder", "mice-l4+2"]
    cell = rows["biencoder"]["cells"]["dl19"]["nDCG@10"]
    assert 0 <= cell["p"] <= 1 and cell["p_corrected"] >= cell["p"]
    assert rows["bm25"]["averages"]["id"]["nDCG@10"] == pytest.approx(0.564139, abs=1e-6)
    md = (out / "summary.md").read_text()
    assert "| system | dl19 | ID avg |" in md and "holm" in md
    assert load_result(out / "summary.json", kind="effectiveness-summary")["summary"]["rows"]


def test_seeds_mean_std(tmp_path, fixture_data):
    """Two --model values are seeds: the cell holds both, mean and std."""
    summary = run_effectiveness(cfg(tmp_path, models=["s1=minilm-l6", "s2=minilm-l6"],
                                    variants="biencoder", baseline="bm25",
                                    test="randomization", correction="bonferroni"))
    row = [r for r in summary["rows"] if r["variant"] == "biencoder"][0]
    assert row["models"] == ["s1", "s2"]
    cell = row["cells"]["dl19"]["nDCG@10"]
    # same checkpoint twice (seed 0): identical seeds, std 0
    assert len(cell["seeds"]) == 2 and cell["std"] == pytest.approx(0.0, abs=1e-9)
    assert cell["mean"] == pytest.approx(cell["seeds"][0])
    assert 0 < cell["p"] <= 1 and cell["p_corrected"] == pytest.approx(min(1.0, cell["p"]))
    assert summary["test"] == "randomization"


def test_full_first_stage_biencoder(tmp_path, fixture_data, counters):
    """``full`` scores every corpus document (here: the 12 of --docs) and keeps the top."""
    run_effectiveness(cfg(tmp_path, variants="biencoder", first_stage=["full"], depth=3))
    r = json.loads((tmp_path / "out/dl19/full/minilm-l6/biencoder.json").read_text())
    assert r["num_candidates"] == 4 * 3
    assert counters["docs"]["biencoder"] == 12

"""PyTerrier stages: frames, validation, the document-state store, and ``pt.Experiment`` on
SciFact agreeing with ``mice-bench effectiveness`` (per-query values, means, Holm-corrected
p-values) on the same BM25 run and variants, with all-MiniLM-L6-v2's real weights.

The experiment side uses only PyTerrier (``pt.Experiment``, ``pt.io.read_results``), the
SciFact files of ``../shared/data`` read here (queries, qrels, corpus) and the re-rankers;
the other side is the ``mice-bench effectiveness`` command in a subprocess.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pt = pytest.importorskip("pyterrier", reason='pip install "mice-bench[pyterrier]"')

from conftest import DOCS, QUERIES, SHARED_DATA, rerun_with_own_irds_home  # noqa: E402

from mice_bench.errors import UsageError  # noqa: E402
from mice_bench.integrations.pyterrier import (DocText, MiceDocStates, MiceReranker,  # noqa: E402
                                               MiceStoreReranker, first_stage)

REPO = Path(__file__).resolve().parents[1]
BM25_RUN = REPO / "results" / "effectiveness" / "scifact" / "bm25" / "bm25.trec.gz"


def _frame(extra: bool = True) -> pd.DataFrame:
    rows = []
    for qi, q in enumerate(QUERIES[:2]):
        for di, d in enumerate(DOCS):
            rows.append({"qid": f"q{qi}", "query": q, "docno": f"d{di}", "text": d,
                         **({"origin": f"o{qi}{di}"} if extra else {})})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def tiny_rr():
    from mice_bench import Reranker

    return Reranker.from_pretrained("minilm-l6", variant="biencoder")


def test_reranker_scores_ranks_and_keeps_columns(tiny_rr):
    inp = _frame()
    out = MiceReranker(tiny_rr, batch_size=3).transform(inp)
    assert set(inp.columns) | {"score", "rank"} == set(out.columns)
    want = tiny_rr.predict(list(zip(inp["query"], inp["text"])))
    got = out.set_index(["qid", "docno"])["score"]
    for (q, d), s in zip(zip(inp["qid"], inp["docno"]), want):
        assert got[(q, d)] == pytest.approx(float(s), abs=1e-6)
    for _, g in out.groupby("qid"):
        assert list(g["rank"]) == list(range(len(g)))          # PyTerrier ranks from 0
        assert list(g["score"]) == sorted(g["score"], reverse=True)
    assert dict(zip(out["origin"], out["docno"])) == dict(zip(inp["origin"], inp["docno"]))


def test_missing_column_is_named(tiny_rr):
    with pytest.raises(pt.validate.InputValidationError, match="text"):
        MiceReranker(tiny_rr).transform(_frame().drop(columns=["text"]))
    with pytest.raises(pt.validate.InputValidationError, match="query"):
        MiceReranker(tiny_rr).transform(_frame().drop(columns=["query"]))


def test_store_reranker_reads_stored_states_only(tiny_rr, tmp_path, monkeypatch):
    docs = pd.DataFrame({"docno": [f"d{i}" for i in range(len(DOCS))], "text": DOCS})
    states = MiceDocStates(tiny_rr, tmp_path / "store", store="fp32")
    assert states.index(docs) == len(DOCS)
    assert states.index(docs) == 0                                  # stored once
    rr = MiceStoreReranker(states)
    ex = tiny_rr._ex

    def no_docs(*a, **k):
        raise AssertionError("a document was encoded again")

    monkeypatch.setattr(ex, "encode_documents", no_docs)
    inp = _frame().drop(columns=["text"])
    out = rr.transform(inp)
    monkeypatch.undo()
    direct = MiceReranker(tiny_rr).transform(_frame())
    merged = out.merge(direct, on=["qid", "docno"])
    np.testing.assert_allclose(merged["score_x"], merged["score_y"], atol=1e-5)
    with pytest.raises(UsageError, match="not in the document store"):
        rr.transform(inp.assign(docno="nope"))


def test_store_of_another_model_is_refused(tiny_rr, tmp_path):
    from mice_bench import Reranker

    MiceDocStates(tiny_rr, tmp_path / "s")
    other = Reranker.from_pretrained("minilm-l6", variant="colbert")
    with pytest.raises(UsageError, match="another model"):
        MiceDocStates(other, tmp_path / "s")
    with pytest.raises(UsageError, match="cannot be precomputed"):
        MiceDocStates(Reranker.from_pretrained("minilm-l6", variant="ce"), tmp_path / "t")


def test_first_stage_reads_a_trec_run(tmp_path):
    run = tmp_path / "run.trec"
    run.write_text("1 Q0 a 1 3.0 x\n1 Q0 b 2 2.0 x\n1 Q0 c 3 2.0 x\n2 Q0 a 1 1.0 x\n")
    topics = pd.DataFrame({"qid": ["1", "3"], "query": ["one", "three"]})
    out = first_stage(run, depth=2).transform(topics)
    assert list(out["docno"]) == ["a", "b"] and list(out["rank"]) == [0, 1]
    text = DocText({"a": "A", "b": "B"}).transform(out)
    assert list(text["text"]) == ["A", "B"]
    with pytest.raises(UsageError, match="no text"):
        DocText({"a": "A"}).transform(out)


# --------------------------------------------------------------------------- BM25 stage
def _stage_home(tmp: Path) -> Path:
    if not (SHARED_DATA / "stage-ir-datasets.sh").is_file():
        pytest.skip(f"offline data {SHARED_DATA} is absent (needs ../shared/data)")
    home = tmp / "irds"
    subprocess.run(["bash", str(SHARED_DATA / "stage-ir-datasets.sh"), str(home)], check=True,
                   capture_output=True)
    return home


def _scifact_texts(ids: set[str]) -> dict[str, str]:
    """SciFact texts read here from the zip: ``(title + " " + text).strip()`` (BEIR)."""
    z = zipfile.ZipFile(SHARED_DATA / "scifact" / "scifact.zip")
    out = {}
    for line in z.read("scifact/corpus.jsonl").decode().splitlines():
        o = json.loads(line)
        if str(o["_id"]) in ids:
            out[str(o["_id"])] = (o.get("title", "") + " " + o["text"]).strip()
    return out


@pytest.mark.data
def test_bm25_stage_ranks_as_the_effectiveness_command(tmp_path, monkeypatch, tiny_rr, request):
    """``BM25("scifact")`` (its own index, built from the staged corpus) gives, for a handful
    of queries, the documents, order and scores of ``mice-bench effectiveness``'s BM25 run
    (the TREC file the command writes, read with ``pt.io.read_results``), the corpus text of
    each document, and composes with a re-ranker."""
    from mice_bench.integrations.pyterrier import BM25

    home = _stage_home(tmp_path)
    if rerun_with_own_irds_home(request, home):
        return
    n, depth = 6, 20
    env = dict(os.environ, IR_DATASETS_HOME=str(home), HF_HUB_OFFLINE="1",
               MICE_BENCH_ALLOW_DOWNLOAD="0")
    r = subprocess.run(
        [sys.executable, "-m", "mice_bench.cli", "effectiveness", "--datasets", "scifact",
         "--variants", "bm25", "--depth", str(depth), "--limit-queries", str(n),
         "--cache-dir", str(tmp_path / "cache-cli"), "--output-dir", str(tmp_path / "out"),
         "--no-progress"], env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    trec = next((tmp_path / "out").rglob("bm25.trec.gz"))
    theirs = pt.io.read_results(str(trec))
    theirs["qid"] = theirs["qid"].astype(str)
    qids = list(dict.fromkeys(theirs["qid"]))
    assert len(qids) == n

    monkeypatch.setenv("IR_DATASETS_HOME", str(home))
    monkeypatch.setenv("MICE_BENCH_ALLOW_DOWNLOAD", "0")
    bm25 = BM25("scifact", depth=depth, cache_dir=tmp_path / "cache-stage")
    topics = bm25.topics()
    topics = topics[topics["qid"].isin(qids)].iloc[::-1].reset_index(drop=True)  # any order
    assert len(topics) == n
    ours = bm25.transform(topics)
    assert list(ours.columns) == ["qid", "query", "docno", "score", "text", "rank"]
    for q in qids:
        a = ours[ours["qid"] == q].sort_values("rank")
        b = theirs[theirs["qid"] == q].sort_values("rank")
        assert list(a["docno"]) == list(b["docno"]), q
        assert list(a["rank"]) == list(range(depth))                  # from 0
        assert list(b["rank"]) == list(range(1, depth + 1))           # TREC: from 1
        np.testing.assert_allclose(a["score"], b["score"], atol=5e-7)  # %.6f in the file
        assert set(a["query"]) == set(topics.loc[topics["qid"] == q, "query"])
    texts = _scifact_texts(set(ours["docno"]))
    assert list(ours["text"]) == [texts[d] for d in ours["docno"]]

    few = topics.head(2)
    out = (bm25 % 4 >> MiceReranker(tiny_rr)).transform(few)
    want = tiny_rr.predict(list(zip(out["query"], out["text"])))
    np.testing.assert_allclose(out["score"], want, atol=1e-5)
    assert len(out) == 8 and set(out["qid"]) == set(few["qid"])

    with pytest.raises(pt.validate.InputValidationError, match="query"):
        bm25.transform(topics[["qid"]])


def test_bm25_stage_refuses_bad_input_before_loading(tmp_path):
    from mice_bench.integrations.pyterrier import BM25

    with pytest.raises(UsageError, match="unknown dataset 'nope'.*scifact"):
        BM25("nope")
    with pytest.raises(UsageError, match="one dataset"):
        BM25("beir")
    with pytest.raises(UsageError, match="depth"):
        BM25("scifact", depth=0)
    with pytest.raises(UsageError, match="does not exist"):
        BM25("scifact", docs=tmp_path / "none.jsonl")


# --------------------------------------------------------------------------- SciFact
def _scifact(tmp: Path, n_queries: int, depth: int):
    z = zipfile.ZipFile(SHARED_DATA / "scifact" / "scifact.zip")
    queries = {}
    for line in z.read("scifact/queries.jsonl").decode().splitlines():
        o = json.loads(line)
        queries[str(o["_id"])] = o["text"]
    qrels = pd.read_csv(z.open("scifact/qrels/test.tsv"), sep="\t", dtype=str)
    qrels.columns = ["qid", "docno", "label"]
    qrels["label"] = qrels["label"].astype(int)
    run = {}
    with gzip.open(BM25_RUN, "rt") as f:
        for line in f:
            q, _, d, _, s = line.split()[:5]
            run.setdefault(q, []).append(d)
    cand = {d for ds in run.values() for d in ds[:depth]}
    docs = {}
    for line in z.read("scifact/corpus.jsonl").decode().splitlines():
        o = json.loads(line)
        if str(o["_id"]) in cand:
            docs[str(o["_id"])] = (o.get("title", "") + " " + o["text"]).strip()
    jsonl = tmp / "docs.jsonl"
    jsonl.write_text("".join(json.dumps({"doc_id": k, "text": v}) + "\n"
                             for k, v in docs.items()))
    return queries, qrels, docs, jsonl


def _effectiveness(tmp: Path, minilm: str, variants: list[str], jsonl: Path, n: int,
                   depth: int) -> Path:
    home = tmp / "irds"
    subprocess.run(["bash", str(SHARED_DATA / "stage-ir-datasets.sh"), str(home)], check=True,
                   capture_output=True)
    env = dict(os.environ, IR_DATASETS_HOME=str(home), HF_HUB_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1", MICE_BENCH_ALLOW_DOWNLOAD="0")
    out = tmp / "out"
    r = subprocess.run(
        [sys.executable, "-m", "mice_bench.cli", "effectiveness", "--datasets", "scifact",
         "--model", f"minilm={minilm}", "--variants", ",".join(["bm25", *variants]),
         "--first-stage", f"run:{BM25_RUN}", "--docs", f"scifact={jsonl}",
         "--depth", str(depth), "--limit-queries", str(n), "--measures", "nDCG@10,RR@10",
         "--baseline", "bm25", "--correction", "holm", "--cache-dir", str(tmp / "cache"),
         "--output-dir", str(out), "--no-progress"],
        env=env, capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stderr[-3000:]
    return out


def _agree_with_effectiveness(tmp: Path, minilm: str, variants: list[str], n: int,
                              depth: int) -> None:
    if not (SHARED_DATA / "scifact" / "scifact.zip").is_file() or not BM25_RUN.is_file():
        pytest.skip("SciFact (../shared/data) or the committed BM25 run is absent")
    queries, qrels, docs, jsonl = _scifact(tmp, n, depth)
    out = _effectiveness(tmp, minilm, variants, jsonl, n, depth)
    res = {p.stem: json.loads(p.read_text()) for p in out.rglob("*.json")
           if p.parent.name in ("minilm",) or p.name == "bm25.json"}
    qids = sorted(res["bm25"]["per_query"]["nDCG@10"])
    assert len(qids) == n
    topics = pd.DataFrame({"qid": qids, "query": [queries[q] for q in qids]})

    bm25 = first_stage(BM25_RUN, depth=depth) >> DocText(docs)
    systems = [bm25]
    for v in variants:
        states = MiceDocStates(minilm, tmp / f"store-{v}", variant=v)   # fp16, as the command
        states.index([{"docno": d, "text": t} for d, t in docs.items()])
        systems.append(bm25 >> MiceStoreReranker(states))
    from ir_measures import RR, nDCG

    measures = ["nDCG@10", "RR@10"]
    ev = [nDCG @ 10, RR @ 10]
    pq = pt.Experiment(systems, topics, qrels, ev, perquery=True,
                       names=["bm25", *variants])
    agg = pt.Experiment(systems, topics, qrels, ev, baseline=0, correction="holm",
                        names=["bm25", *variants])
    summary = json.loads((out / "summary.json").read_text())["summary"]
    rows = {r["variant"]: r for r in summary["rows"]}
    for name in ["bm25", *variants]:
        key = name.replace("[", "_").replace("]", "_").replace("=", "_").replace(",", "_")
        ours = res.get(name) or next(v for k, v in res.items()
                                     if k.replace("-", "_") == key.replace("-", "_").strip("_")
                                     or k.startswith(key.strip("_")))
        for m in measures:
            theirs = pq[(pq["name"] == name) & (pq["measure"] == m)].set_index("qid")["value"]
            assert set(theirs.index) == set(ours["per_query"][m])
            for q, v in ours["per_query"][m].items():
                assert theirs[q] == pytest.approx(v, abs=1e-9), (name, m, q)
            row = agg[agg["name"] == name].iloc[0]
            cell = rows[name]["cells"]["scifact"][m]
            assert row[m] == pytest.approx(cell["mean"], abs=1e-9)
            if name != "bm25":
                assert row[f"{m} p-value"] == pytest.approx(cell["p"], rel=1e-6)
                assert row[f"{m} p-value corrected"] == pytest.approx(cell["p_corrected"],
                                                                      rel=1e-6)
    assert not pt.java.started(), "nothing here should need Java"


@pytest.mark.slow
def test_experiment_equals_effectiveness_biencoder_small(tmp_path, minilm_path):
    _agree_with_effectiveness(tmp_path, minilm_path, ["biencoder"], n=12, depth=10)


@pytest.mark.slow
def test_experiment_equals_effectiveness_biencoder_and_colbert(tmp_path, minilm_path):
    _agree_with_effectiveness(tmp_path, minilm_path, ["biencoder", "colbert[proj=0,qaug=0]"],
                              n=60, depth=30)

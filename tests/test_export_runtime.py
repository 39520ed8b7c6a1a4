"""The onnxruntime runner of an export (``latency --runtime ort`` / ``--peers ort``): which
graph runs how often, and the session options every timed session gets.

The counts are read from onnxruntime sessions wrapped to count their ``run`` calls; the
options are read back from onnxruntime's own sessions (``get_session_options``).
"""

from __future__ import annotations

import json

import pytest
import torch

ort = pytest.importorskip("onnxruntime", reason="pip install 'mice-bench[onnx]'")

from mice_bench.errors import UsageError  # noqa: E402
from mice_bench.executors import make_executor  # noqa: E402
from mice_bench.export.onnx import export_onnx, ort_executor  # noqa: E402
from mice_bench.export.runtime import OrtExecutor  # noqa: E402
from mice_bench.latency.timing import PhaseTimer  # noqa: E402
from mice_bench.latency.workloads import Workload  # noqa: E402

QUERY = "do spiders have eight legs or six legs and why"
DOCS = ["spiders have eight legs and build webs " * 6, "a cat", "x y z",
        "vitamin d and bone density in elderly women " * 3, "the river flows north"]


class Counting:
    """An onnxruntime session that counts its runs."""

    def __init__(self, sess):
        self.sess, self.runs = sess, 0

    def run(self, *a, **k):
        self.runs += 1
        return self.sess.run(*a, **k)

    def __getattr__(self, name):
        return getattr(self.sess, name)


@pytest.fixture(scope="module")
def mice(tiny_bb, tmp_path_factory):
    ex = make_executor("mice-l4+2", tiny_bb)
    d = tmp_path_factory.mktemp("onnx") / "mice"
    export_onnx(ex, d, model="tiny")
    return ex, d


def _counted(oex) -> dict[str, Counting]:
    oex.sessions = {k: Counting(s) for k, s in oex.sessions.items()}
    return oex.sessions


def _runs(sessions) -> dict[str, int]:
    return {k: s.runs for k, s in sessions.items()}


def test_rerank_runs_the_query_graph_once_per_query(mice):
    ex, d = mice
    oex = OrtExecutor(ex, d, threads=1)
    sessions = _counted(oex)
    got = oex.rerank(QUERY, DOCS, batch_size=2)          # 5 candidates: 3 batches
    assert _runs(sessions) == {"documents": 3, "query": 1, "scores": 3}
    ref = ex.rerank(QUERY, DOCS, batch_size=2)
    assert float((got - ref).abs().max()) <= 1e-4 * float(ref.max() - ref.min())


@pytest.mark.parametrize("protocol,query_runs,score_runs", [("rerank", 1, 3), ("paper", 1, 1)])
def test_latency_workload_runs_the_query_graph_once_per_run(mice, protocol, query_runs,
                                                            score_runs):
    """A timed run over precomputed documents: the query graph once, the scores graph once
    per batch (rerank: 5 candidates in batches of 2), the documents graph never."""
    ex, d = mice
    oex = OrtExecutor(ex, d, threads=1)
    wl = Workload(oex, protocol, 2, QUERY, DOCS, precompute=True, kv_cache=False)
    wl.prepare(torch.device("cpu"))
    sessions = _counted(oex)
    for _ in range(2):
        t = PhaseTimer("cpu")
        t.start()
        wl.run(t)
        t.stop()
    assert _runs(sessions) == {"documents": 0, "query": 2 * query_runs,
                               "scores": 2 * score_runs}


def test_every_session_has_spinning_off(mice):
    """``ort_executor`` (what ``latency --runtime ort`` / ``--peers ort`` time) makes sessions
    whose worker threads do not spin, with the requested threads."""
    ex, d = mice
    for oex in (ort_executor(ex), OrtExecutor(ex, d, threads=2)):
        assert set(oex.sessions) == {"documents", "query", "scores"}
        for s in oex.sessions.values():
            opts = s.get_session_options()
            assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"
            assert opts.get_session_config_entry("session.inter_op.allow_spinning") == "0"
            assert opts.intra_op_num_threads == oex.threads
            assert opts.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert OrtExecutor(ex, d, threads=2).threads == 2


def test_ce_session_has_spinning_off(tiny_bb):
    oex = ort_executor(make_executor("ce", tiny_bb))
    (s,) = oex.sessions.values()
    assert s.get_session_options().get_session_config_entry(
        "session.intra_op.allow_spinning") == "0"


def test_an_export_of_the_earlier_layout_is_refused(mice, tmp_path):
    """A split export without a query graph (the scores graph encoded the query) is refused
    with a message to export again."""
    ex, d = mice
    m = json.loads((d / "export.json").read_text())
    del m["graphs"]["query"]
    old = tmp_path / "old"
    old.mkdir()
    (old / "export.json").write_text(json.dumps(m))
    with pytest.raises(UsageError, match="export it again"):
        OrtExecutor(ex, old)


def test_score_pairs_encodes_each_distinct_query_once(mice):
    """Pairs of two distinct queries, ten pairs in batches of 4: one query graph run (both
    queries), five distinct documents encoded once, three scores runs; the scores equal the
    PyTorch executor's."""
    ex, d = mice
    oex = OrtExecutor(ex, d, threads=1)
    sessions = _counted(oex)
    queries = [QUERY] * 5 + ["a cat"] * 5
    docs = DOCS + DOCS[::-1]
    got = oex.score_pairs(queries, docs, batch_size=4)
    assert _runs(sessions) == {"documents": 2, "query": 1, "scores": 3}
    ref = ex.score_pairs(queries, docs, batch_size=4)
    assert float((got - ref).abs().max()) <= 1e-4 * float(ref.max() - ref.min())

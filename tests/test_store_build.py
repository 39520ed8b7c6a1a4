"""Building a document-state store by a deterministic plan (``mice-bench store build``): the
plan's order and chunks against hand-written lists; several ranks (threads with in-memory
collectives here, two real Gloo processes under ``torchrun`` in the slow tests) write the
bytes of one process; a killed build resumes to the same bytes; the built store is the one
``effectiveness`` reads, with the states ``ensure`` would store."""

from __future__ import annotations

import gzip
import json
import os
import pickle
import re
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from mice_bench.distributed import DistEnv
from mice_bench.store.codecs import get_codec
from mice_bench.store.packing import flatten
from mice_bench.store.docstore import DocStateStore
from mice_bench.store.build import BuildPlan, build_store, plan_build

from test_store_formats import TEXTS, fake_encode
from test_reliability import assert_usage_error

from conftest import stage_dl19_fixture  # noqa: E402
from fswatch import disk_full, fswatch  # noqa: E402,F401  (fixture)
from test_effectiveness_pipeline import fixture_data  # noqa: E402,F401  (fixture)

pytest.importorskip("faiss", reason="residual stores need faiss-cpu (the storage extra)")
REPO = Path(__file__).resolve().parents[1]
FIX = REPO / "tests" / "fixtures" / "effectiveness"


def files(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def store(d: Path, fmt: str) -> DocStateStore:
    return DocStateStore(d, meta={"k": 1}, fmt=fmt, flush_s=0, max_shard_docs=8)


@dataclass
class ThreadDist(DistEnv):
    """One rank of ``world`` threads: broadcast / gather / barrier through shared memory
    (objects pickled on the way, as torch.distributed sends them)."""

    box: dict = field(default_factory=dict)

    def barrier(self) -> None:
        self.box["barrier"].wait(timeout=60)

    def broadcast(self, obj):
        if self.main:
            self.box["b"] = pickle.dumps(obj)
        self.barrier()
        out = pickle.loads(self.box["b"])
        self.barrier()
        return out

    def gather(self, obj):
        self.box[self.rank] = pickle.dumps(obj)
        self.barrier()
        out = [pickle.loads(self.box[r]) for r in range(self.world)] if self.main else None
        self.barrier()
        return out


def in_threads(world: int, build) -> tuple[list, list[BaseException]]:
    """``build(r, dist)`` as ``world`` ranks in threads (a failing rank aborts the others'
    barrier); returns each rank's result and the errors raised."""
    box = {"barrier": threading.Barrier(world)}
    stats, errors = [None] * world, []

    def rank(r: int) -> None:
        try:
            stats[r] = build(r, ThreadDist(r, world, 0, box))
        except BaseException as e:  # noqa: BLE001 - reported by the caller
            errors.append(e)
            box["barrier"].abort()

    threads = [threading.Thread(target=rank, args=(r,)) for r in range(world)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return stats, errors


def build_in_threads(d: Path, fmt: str, world: int, texts=TEXTS, chunk_docs: int = 7):
    stats, errors = in_threads(world, lambda r, dist: build_store(
        store(d, fmt), texts, fake_encode, dist=dist, batch_size=3, chunk_docs=chunk_docs))
    if errors:
        raise errors[0]
    return stats


# --------------------------------------------------------------------------- the plan
def test_plan_orders_by_length_then_id_in_fixed_chunks():
    texts = {"d5": "xx", "d1": "xxxx", "d3": "xx", "d2": "x", "d4": "xxx", "d0": "xxxx",
             "d6": "x"}
    plan = plan_build(texts, chunk_docs=3, exclude=["d4"])
    assert plan.chunks == (("d2", "d6", "d3"), ("d5", "d0", "d1"))
    assert plan.of_rank(0, 2) == [0] and plan.of_rank(1, 2) == [1]
    assert plan_build(texts, 3, ["d4"]).name(1) == plan.name(1)      # depends on the chunk
    other = BuildPlan((("d2", "d6", "d3"), ("d5", "d1", "d0")))
    assert other.name(0) == plan.name(0) and other.name(1) != plan.name(1)
    assert plan_build(dict(reversed(list(texts.items()))), 3, ["d4"]) == plan


def test_rank_shares_are_disjoint_and_cover_every_chunk():
    plan = plan_build({f"d{i}": "x" * i for i in range(23)}, chunk_docs=2)
    shares = [plan.of_rank(r, 3) for r in range(3)]
    assert sorted(i for s in shares for i in s) == list(range(12))
    assert shares[1] == [1, 4, 7, 10]


# --------------------------------------------------------------------------- same bytes
@pytest.mark.parametrize("fmt", ["fp16", "residual2"])
@pytest.mark.parametrize("world", [2, 3])
def test_ranks_write_the_bytes_of_one_process(tmp_path, fmt, world):
    one = build_in_threads(tmp_path / "one", fmt, 1)
    many = build_in_threads(tmp_path / "many", fmt, world)
    a, b = files(tmp_path / "one"), files(tmp_path / "many")
    assert a.keys() == b.keys() and a == b
    shards = [k for k in a if k.startswith("shard-")]
    assert len(shards) == 6                                     # ceil(40 / 7)
    assert one[0].per_rank == [40] and sum(many[0].per_rank) == 40
    assert all(n > 0 for n in many[0].per_rank)                 # every rank encoded
    index = json.loads(a["index.json"])
    plan = plan_build(TEXTS, 7)
    assert [e["file"] for e in index["shards"]] == [plan.name(i) for i in range(6)]
    assert [e["ids"] for e in index["shards"]] == [list(c) for c in plan.chunks]
    if fmt == "residual2":
        assert sum(k.startswith("codec-") for k in a) == 1 and one[0].sample_docs == 40


@pytest.mark.parametrize("fmt", ["fp16", "residual2"])
def test_a_killed_build_resumes_to_the_same_bytes(tmp_path, fmt):
    build_in_threads(tmp_path / "ref", fmt, 1)
    ref = files(tmp_path / "ref")
    d = tmp_path / "killed"
    build_in_threads(d, fmt, 2)
    shards = sorted(d.glob("shard-*"))
    # what a kill leaves: the index not yet written, a shard not yet renamed into place, a
    # half-written temp file, a rank's progress counter; plus a truncated shard
    (d / "index.json").unlink()
    shards[1].unlink()
    shards[4].write_bytes(shards[4].read_bytes()[:200])
    (d / f".{shards[2].name}.x1.tmp").write_bytes(b"partial")
    (d / ".build-progress-r1").write_text("12")
    stats = build_in_threads(d, fmt, 2)
    assert files(d) == ref
    assert stats[0].chunks_reused == 4 and sum(stats[0].per_rank) == 7 + 7
    again = build_in_threads(d, fmt, 2)                    # nothing left to do
    assert again[0].chunks == 0 and sum(again[0].per_rank) == 0
    assert files(d) == ref


def test_shards_stored_before_the_build_stay_first_and_are_not_encoded_again(tmp_path):
    ids = list(TEXTS)
    st = store(tmp_path / "s", "fp16")
    st.ensure(ids[:10], lambda x: {i: TEXTS[i] for i in x}, fake_encode, batch_size=4)
    before = [e["file"] for e in st.shards]
    stats = build_store(store(tmp_path / "s", "fp16"), TEXTS, fake_encode, chunk_docs=8)
    assert stats.docs == 30 and stats.encoded == 30
    index = json.loads((tmp_path / "s" / "index.json").read_text())
    names = [e["file"] for e in index["shards"]]
    assert names[:len(before)] == before
    plan = plan_build(TEXTS, 8, exclude=ids[:10])
    assert names[len(before):] == [plan.name(i) for i in range(len(plan.chunks))]


@pytest.mark.parametrize("fmt", ["fp16", "residual2"])
def test_another_chunk_size_keeps_a_complete_store_and_replaces_a_partial_ones_chunks(
        tmp_path, fmt):
    build_in_threads(tmp_path / "a", fmt, 2, chunk_docs=7)
    ref7 = files(tmp_path / "a")
    again = build_in_threads(tmp_path / "a", fmt, 2, chunk_docs=5)   # nothing missing
    assert files(tmp_path / "a") == ref7 and sum(again[0].per_rank) == 0
    build_in_threads(tmp_path / "b", fmt, 1, chunk_docs=5)
    next((tmp_path / "a").glob("shard-b000002-*")).unlink()          # a chunk lost
    build_in_threads(tmp_path / "a", fmt, 2, chunk_docs=5)
    assert files(tmp_path / "a") == files(tmp_path / "b")   # the old chunks' shards gone


# --------------------------------------------------------------------------- what is read
@pytest.mark.parametrize("fmt,tol", [("fp32", 0.0), ("fp16", 2e-3)])
def test_built_store_loads_the_states_ensure_stores(tmp_path, fmt, tol):
    ids = list(TEXTS)
    ens = store(tmp_path / "ensure", fmt)
    ens.ensure(ids, lambda x: {i: TEXTS[i] for i in x}, fake_encode, batch_size=4)
    build_in_threads(tmp_path / "built", fmt, 2)
    got = store(tmp_path / "built", fmt)
    assert got.missing(ids) == []
    want = list(reversed(ids))
    a, b = got.load(want), ens.load(want)
    assert torch.equal(a.mask, b.mask) and torch.equal(a.seg, b.seg)
    assert torch.allclose(a.hidden.float(), b.hidden.float(), atol=tol, rtol=0)


def test_built_residual_store_holds_each_documents_own_code(tmp_path):
    """Every document decodes to its own states coded with the build's codec file (the
    codec applied here to freshly encoded states, document by document)."""
    build_in_threads(tmp_path / "r", "residual2", 2)
    st = store(tmp_path / "r", "residual2")
    ids = list(TEXTS)[::3]
    got = st.load(ids)
    from safetensors.torch import load_file

    codec_file = next((tmp_path / "r").glob("codec-*.safetensors"))
    params = load_file(codec_file)
    codec = get_codec("residual2")
    for n, d in enumerate(ids):
        x = flatten(fake_encode([TEXTS[d]]))[0]
        want = codec.decode(codec.encode(x, params), params)
        assert torch.equal(got.hidden[n][got.mask[n]], want), d


# --------------------------------------------------------------------------- command line
def _cli(*args: str):
    from typer.testing import CliRunner

    from mice_bench.cli import app

    return CliRunner().invoke(app, ["store", "build", *args])


@pytest.mark.parametrize("args,needles", [
    (["--variant", "ce"], ["--variant ce", "no document store", "colbert"]),
    (["--variant", "bm25"], ["--variant bm25", "first stage"]),
    (["--variant", "mice-l4+2", "--doc-store", "int4"], ["--doc-store", "residual2"]),
    (["--variant", "mice-l4+2", "--chunk-docs", "0"], ["--chunk-docs", ">= 1"]),
    (["--variant", "colbert", "--pool-factor", "0"], ["--pool-factor", ">= 1"]),
    (["--variant", "colbert", "--codec-sample-tokens", "0"], ["--codec-sample-tokens", ">= 1"]),
    (["--variant", "mice-l4+2", "--doc-batch-size", "0"], ["--doc-batch-size"]),
    (["--variant", "mice-l4+2", "--dataset", "nope"], ["'nope'", "scifact"]),
    (["--variant", "mice-l9+2"], ["mice-l9+2"]),
    # plain PreTTR positions each document after its query: nothing to store, and the
    # refusal does not offer "prettr" as the valid choice
    (["--variant", "prettr-l2"], ["--variant prettr-l2", "no document store",
                                  "valid: prettr-l{k}[qlen=N], mice-l{m}+{n}"]),
    (["--variant", "mice-l4+2", "--executor", "reference"],
     ["--executor reference", "valid: auto, fast"]),
])
def test_bad_input_exits_2_with_one_line_before_any_work(tmp_path, no_network, args, needles):
    r = _cli("--model", "minilm-l6", "--cache-dir", str(tmp_path / "cache"),
             "--dataset", "dl19", *args)
    msg = assert_usage_error(r, *needles)
    assert "(prettr, mice" not in msg
    assert not (tmp_path / "cache" / "docstates").exists()


def test_refusals_come_before_the_model_loads(tmp_path, no_network, monkeypatch):
    from mice_bench import backbone

    def never(*a, **k):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(backbone, "load_backbone", never)
    for args in (["--variant", "prettr-l2"], ["--variant", "mice-l4+2", "--executor",
                                               "reference"]):
        assert_usage_error(_cli("--model", "minilm-l6", "--cache-dir",
                                str(tmp_path / "cache"), "--dataset", "dl19", *args))


def test_prettr_with_a_fixed_offset_keeps_a_store():
    from mice_bench.api import Reranker

    rr = Reranker.from_pretrained("minilm-l6", variant="prettr-l2[qlen=32]")
    assert rr.precomputable


def test_unusable_cache_folder_is_named_by_the_option_store_build_has(tmp_path, no_network):
    """The store's folder is ``--cache-dir`` here (``store build`` has no --output-dir)."""
    (tmp_path / "file").write_text("x")
    r = _cli("--model", "minilm-l6", "--variant", "mice-l4+2", "--dataset", "dl19",
             "--cache-dir", str(tmp_path / "file" / "cache"))
    msg = assert_usage_error(r, f"--cache-dir {tmp_path / 'file' / 'cache'}")
    assert "--output-dir" not in msg


def _fixture_cli(monkeypatch, tmp_path, *args: str):
    import mice_bench.data.collections as collections

    from test_effectiveness_pipeline import DOCS, fixture_collection

    monkeypatch.setattr(collections, "load_collection", fixture_collection)
    return _cli("--model", "minilm-l6", "--variant", "mice-l4+2", "--dataset", "dl19",
                "--docs", DOCS, "--chunk-docs", "4", "--no-progress", *args)


def test_a_full_disk_gives_one_line_and_leaves_no_half_written_store(
        tmp_path, fswatch, fixture_data, monkeypatch):
    """The disk fills up when the first shard is written: one line naming the file (exit 1),
    and the store this build created is gone (no meta.json, index.json or pending list left);
    with space again, the same command builds the store."""
    cache = tmp_path / "cache"
    real = os.fsync
    refused = disk_full(monkeypatch, match="shard-")
    with fswatch.only(cache):
        r = _fixture_cli(monkeypatch, tmp_path, "--cache-dir", str(cache))
    assert r.exit_code == 1, (r.output, r.exception)
    assert isinstance(r.exception, SystemExit) and "Traceback" not in r.output
    lines = [x for x in r.output.splitlines() if x.strip()]
    assert len(lines) == 1 and "No space left on device" in lines[0], r.output
    assert "shard-b000000-" in lines[0] and "free some space" in lines[0]
    assert refused and not (cache / "docstates").exists()
    monkeypatch.setattr(os, "fsync", real)
    with fswatch.only(cache):
        r = _fixture_cli(monkeypatch, tmp_path, "--cache-dir", str(cache))
    assert r.exit_code == 0, r.output
    assert "12 documents stored" in " ".join(r.output.split())


def test_a_read_only_cache_folder_is_refused_before_work(tmp_path, fswatch, fixture_data,
                                                         monkeypatch):
    import tempfile

    real = tempfile.mkstemp

    def guarded(*a, dir=None, **kw):
        if dir is not None and Path(dir).name == "ro":
            raise PermissionError(13, "Permission denied")
        return real(*a, dir=dir, **kw)

    monkeypatch.setattr(tempfile, "mkstemp", guarded)
    (tmp_path / "ro").mkdir()
    with fswatch.only():
        r = _fixture_cli(monkeypatch, tmp_path, "--cache-dir", str(tmp_path / "ro"))
    assert_usage_error(r, "--cache-dir", "not writable", "Permission denied")


# --------------------------------------------------------------------------- torchrun
def _env(tmp: Path) -> dict:
    home = stage_dl19_fixture(tmp / "irds")
    docs = tmp / "docs.jsonl"
    if not docs.exists():   # the fixture's passages and 20 more of other lengths
        extra = [json.dumps({"doc_id": f"x{i:02d}", "text": " ".join(
            ["goldfish", "mountain", "river", "china", "europe"][(i + j) % 5]
            for j in range(2 + (7 * i) % 19))}) for i in range(20)]
        docs.write_text((FIX / "docs.jsonl").read_text() + "\n".join(extra) + "\n")
    return dict(os.environ, IR_DATASETS_HOME=str(home), HF_HUB_OFFLINE="1",
                TRANSFORMERS_OFFLINE="1", MICE_BENCH_ALLOW_DOWNLOAD="0", OMP_NUM_THREADS="1")


def _launch(tmp: Path, nproc: int, *args: str) -> subprocess.CompletedProcess:
    from test_effectiveness_distributed import _free_ports

    launcher = [sys.executable, "-m", "mice_bench.cli"] if nproc == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
        "--master-port", str(_free_ports(1)[0]), "-m", "mice_bench.cli"]
    r = subprocess.run([*launcher, *args], cwd=tmp, env=_env(tmp), capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def _build(tmp: Path, nproc: int, cache: str, fmt: str) -> subprocess.CompletedProcess:
    return _launch(tmp, nproc, "store", "build", "--model", "minilm-l6", "--variant",
                   "mice-l4+2", "--dataset", "dl19", "--docs", str(tmp / "docs.jsonl"),
                   "--doc-store", fmt, "--chunk-docs", "5", "--doc-batch-size", "3",
                   "--cache-dir", str(tmp / cache), "--no-progress")


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["fp16", "residual2"])
def test_torchrun_build_equals_one_process_resumes_and_is_what_effectiveness_reads(
        tmp_path, fmt):
    _build(tmp_path, 1, "one", fmt)
    two = _build(tmp_path, 2, "two", fmt)
    per_rank = json.loads(re.search(r"per rank (\[[\d, ]+\])", " ".join(
        two.stdout.split())).group(1))
    assert len(per_rank) == 2 and all(per_rank) and sum(per_rank) == 32
    a, b = files(tmp_path / "one"), files(tmp_path / "two")
    assert a == b and sum("/shard-b" in k for k in a) == 7          # 32 documents / 5
    # a kill: the index and two shards lost; the rerun encodes only what is missing
    d = next((tmp_path / "two" / "docstates").iterdir())
    (d / "index.json").unlink()
    for f in sorted(d.glob("shard-b*"))[2:4]:
        f.unlink()
    again = _build(tmp_path, 2, "two", fmt)
    assert "32 documents stored, 32 planned in 7 shards (10 encoded now, 5 shards reused" \
        in " ".join(again.stdout.split())
    assert files(tmp_path / "two") == a
    # effectiveness over the whole corpus reads this store and encodes nothing
    _launch(tmp_path, 1, "effectiveness", "--datasets", "dl19", "--model", "minilm-l6",
            "--variants", "mice-l4+2", "--docs", str(tmp_path / "docs.jsonl"),
            "--first-stage", "full", "--depth", "5", "--doc-store", fmt,
            "--doc-batch-size", "3", "--no-progress", "--output-dir", str(tmp_path / "out"),
            "--cache-dir", str(tmp_path / "one"))
    res = json.loads(next((tmp_path / "out").rglob("mice-l4+2.json")).read_text())
    assert res["timing"]["docs_encoded"] == 0
    assert res["timing"]["doc_store"]["docs"] == 32 and res["timing"]["doc_store"]["store"] \
        == fmt
    assert {k: v for k, v in files(tmp_path / "one").items() if k.startswith("docstates/")} \
        == a


# --------------------------------------------------------------------------- re-ranking
def _encode_failing_after(n: int):
    """``fake_encode`` that raises on its ``n + 1``-th call (a kill in the middle)."""
    calls = [0]

    def enc(texts):
        calls[0] += 1
        if calls[0] > n:
            raise KeyboardInterrupt("killed")
        return fake_encode(texts)

    return enc


def _kept_build(d: Path, fmt: str, world: int, texts, encode=fake_encode):
    return in_threads(world, lambda r, dist: build_store(
        store(d, fmt), texts, encode if r == world - 1 else fake_encode, dist=dist,
        batch_size=3, chunk_docs=4, keep_stored=True))


@pytest.mark.parametrize("fmt", ["fp16", "residual2"])
def test_keep_stored_encodes_only_what_no_shard_holds_and_resumes_a_kill(tmp_path, fmt):
    """A re-ranking run's build: the documents a finished build stored (another candidate
    set) are not encoded again; a build killed midway, run again, ends with the bytes of an
    uninterrupted one."""
    ids = list(TEXTS)
    first = {d: TEXTS[d] for d in ids[:15]}
    second = {d: TEXTS[d] for d in ids[10:]}                 # 5 documents in common
    build_in_threads(tmp_path / "ref", fmt, 2, texts=first)
    before = files(tmp_path / "ref")
    shutil.copytree(tmp_path / "ref", tmp_path / "killed")
    stats, errors = _kept_build(tmp_path / "ref", fmt, 2, second)
    assert not errors
    ref = files(tmp_path / "ref")
    assert sum(s.encoded for s in stats) == 25 and all(s.encoded for s in stats)
    assert {k: ref[k] for k in before if k.startswith("shard-")} == \
        {k: v for k, v in before.items() if k.startswith("shard-")}     # left as they were
    assert not any(k.startswith(".build") for k in ref)
    # killed: the last rank fails on its second batch (after some shards are written)
    _, errors = _kept_build(tmp_path / "killed", fmt, 2, second, _encode_failing_after(2))
    assert errors
    left = files(tmp_path / "killed")
    assert ".build-pending.json" in left and left != ref
    stats, errors = _kept_build(tmp_path / "killed", fmt, 2, second)
    assert not errors and files(tmp_path / "killed") == ref
    assert 0 < stats[0].chunks_reused < stats[0].chunks


def _rerank_scorers(tmp: Path, tiny_bb, cache: str):
    from mice_bench.data import collections as eds
    from mice_bench.effectiveness.rerank import ScoringSettings, VariantScorer
    from mice_bench.executors import make_executor

    _env(tmp)                                                # writes tmp/docs.jsonl
    info = eds.resolve_datasets("dl19")[0]
    docs = [json.loads(x)["doc_id"] for x in (tmp / "docs.jsonl").read_text().split("\n")
            if x]
    queries = {f"q{i}": f"query {i} about goldfish" for i in range(5)}
    cands = {q: {d: float(-j) for j, d in enumerate(docs[3 * i: 3 * i + 9])}
             for i, q in enumerate(queries)}
    coll = eds.Collection(info, queries, {}, tmp / "docs.jsonl")
    ex = make_executor("mice-l1+1", tiny_bb)

    def scorer(shard=None):
        return VariantScorer(ex, "tiny", coll, tmp / cache, ScoringSettings(
            doc_batch_size=2, doc_store="fp16"), shard=shard)

    return scorer, cands, docs


def _docstates(cache: Path) -> dict[str, bytes]:
    return {k: v for k, v in files(cache).items() if k.startswith("docstates/")}


def test_ranks_re_ranking_their_queries_build_one_store_equal_to_one_process(
        tmp_path, tiny_bb, monkeypatch):
    """Two ranks (threads) re-rank disjoint queries: every rank stores the candidates of all
    queries together, into the one store a one-process run writes (same bytes), and the
    scores are the one process's."""
    from mice_bench.store import build as storebuild

    monkeypatch.setattr(storebuild, "DEFAULT_CHUNK_DOCS", 4)
    scorer, cands, _ = _rerank_scorers(tmp_path, tiny_bb, "one")
    one = scorer()
    want = one.rerank(cands)
    union = {d for ds in cands.values() for d in ds}
    assert one.stats.docs_encoded == len(union) == 21
    scorer2, _, _ = _rerank_scorers(tmp_path, tiny_bb, "two")
    box = {"barrier": threading.Barrier(2)}
    got, stats, errors = {}, [None, None], []

    def rank(r: int) -> None:
        try:
            dist = ThreadDist(r, 2, 0, box)
            sc = scorer2(shard=(r, 2))
            got.update(sc.rerank(cands, queries=dist.shard(list(cands)), dist=dist))
            stats[r] = sc.stats
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)
            box["barrier"].abort()

    threads = [threading.Thread(target=rank, args=(r,)) for r in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    a, b = _docstates(tmp_path / "one"), _docstates(tmp_path / "two")
    assert a == b and sum("/shard-b" in k for k in a) == 6                # ceil(21 / 4)
    assert all(s.docs_encoded > 0 for s in stats)
    assert sum(s.docs_encoded for s in stats) == 21
    assert [s.queries for s in stats] == [3, 2]
    assert got.keys() == want.keys()
    for q in want:
        assert got[q] == pytest.approx(want[q], abs=1e-6), q


def test_re_ranking_reuses_a_whole_corpus_store_and_grows_a_candidates_store(
        tmp_path, tiny_bb):
    """A store built beforehand over the whole corpus (as ``mice-bench store build`` does)
    holds every candidate: re-ranking encodes nothing and leaves it unchanged. A store of
    other candidates: only the documents it lacks are encoded."""
    scorer, cands, _ = _rerank_scorers(tmp_path, tiny_bb, "c")
    built = scorer()
    built.build_docs({d: t for d, t in built.coll.iter_corpus()}, chunk_docs=5)
    before = _docstates(tmp_path / "c")
    sc = scorer()
    want = sc.rerank(cands)
    assert sc.stats.docs_encoded == 0 and sc.stats.pairs_scored == 45
    assert _docstates(tmp_path / "c") == before
    fresh = _rerank_scorers(tmp_path, tiny_bb, "fresh")[0]().rerank(cands)
    for q in want:                                     # the scores of a fresh store
        assert fresh[q] == pytest.approx(want[q], abs=1e-6), q
    # a candidates' store, then more candidates: the stored ones are not encoded again
    scorer2, _, _ = _rerank_scorers(tmp_path, tiny_bb, "grow")
    sc = scorer2()
    sc.rerank({q: cands[q] for q in list(cands)[:2]})
    assert sc.stats.docs_encoded == 12
    sc = scorer2()
    sc.rerank(cands)
    assert sc.stats.docs_encoded == 21 - 12


def _rerank_run(tmp: Path, nproc: int, cache: str, out: str, fmt: str):
    return _launch(tmp, nproc, "effectiveness", "--datasets", "dl19", "--model", "minilm-l6",
                   "--variants", "mice-l4+2", "--docs", str(tmp / "docs.jsonl"),
                   "--first-stage", f"run:{FIX}/run.txt", "--doc-store", fmt,
                   "--doc-batch-size", "3", "--batch-size", "4", "--no-progress",
                   "--output-dir", str(tmp / out), "--cache-dir", str(tmp / cache))


@pytest.mark.slow
def test_torchrun_re_ranking_shares_one_store_and_reuses_a_prebuilt_one(tmp_path):
    """Two ranks re-ranking a run's candidates leave the one store a one-process run leaves
    (same bytes) and the same scores; a store built beforehand over the whole corpus
    (``store build``) is read, nothing encoded."""
    fmt = "residual2"
    _rerank_run(tmp_path, 1, "one", "out1", fmt)
    _rerank_run(tmp_path, 2, "two", "out2", fmt)
    a, b = _docstates(tmp_path / "one"), _docstates(tmp_path / "two")
    assert a == b and any("/shard-b" in k for k in a)
    assert len({k.split("/")[1] for k in b}) == 1                 # one store, not one a rank
    r1, r2 = (json.loads(next((tmp_path / o).rglob("mice-l4+2.json")).read_text())
              for o in ("out1", "out2"))
    assert r2["timing"]["world_size"] == 2
    assert r1["timing"]["docs_encoded"] == r2["timing"]["docs_encoded"] == 12
    for q, vals in r1["per_query"].items():
        assert r2["per_query"][q] == pytest.approx(vals, abs=1e-9), q
    runs = [gzip.decompress(next((tmp_path / o).rglob("mice-l4+2.trec.gz")).read_bytes())
            .decode().split() for o in ("out1", "out2")]
    assert runs[0] == runs[1]                      # ids, ranks and the scores as written
    _build(tmp_path, 2, "pre", fmt)
    built = _docstates(tmp_path / "pre")
    _rerank_run(tmp_path, 2, "pre", "out3", fmt)
    r3 = json.loads(next((tmp_path / "out3").rglob("mice-l4+2.json")).read_text())
    assert r3["timing"]["docs_encoded"] == 0 and r3["timing"]["pairs_scored"] == 13
    assert _docstates(tmp_path / "pre") == built

"""Bad input is a clear exit 2 (never a silently wrong number or a traceback), caches
survive faults, two runs on one cache do the work once, and the compact document-state store.

In-process (typer's CliRunner) on the tiny fixture of ``tests/fixtures/effectiveness`` with
conftest's tiny random BERT; a few seconds in all.
"""

from __future__ import annotations

import gzip
import json
import sqlite3
import threading
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from mice_bench.cli import app
from mice_bench.effectiveness import runner
from mice_bench.effectiveness.plan import EffectivenessConfig
from mice_bench.effectiveness.runner import run_effectiveness

from test_effectiveness_pipeline import (DOCS, FIX, NUM_PAIRS, RUN, UNIQUE_DOCS, cfg,  # noqa: F401
                                         counters, fixture_collection, fixture_data)

from fswatch import disk_full, fswatch  # noqa: E402,F401  (fixture)

pytestmark = pytest.mark.usefixtures("no_network")

RUN_DIR = "dl19/run-effectiveness-run"


def invoke(tmp_path: Path, *args: str, variants: str = "bm25,colbert", run: str | None = RUN,
           docs: str | None = DOCS):
    base = ["effectiveness", "--datasets", "dl19", "--model", "minilm-l6", "--variants", variants,
            "--output-dir", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache"),
            "--no-progress", "--batch-size", "4"]
    if run:
        base += ["--first-stage", run]
    if docs:
        base += ["--docs", docs]
    return CliRunner().invoke(app, [*base, *args])


def assert_usage_error(r, *needles: str) -> str:
    """Exit 2, no traceback, the message names the input; nothing a rerun would trust."""
    out = r.output
    assert r.exit_code == 2, (r.exit_code, out, r.exception)
    assert "Traceback" not in out
    assert isinstance(r.exception, SystemExit)
    msg = " ".join(out.split())
    assert "error:" in msg
    for n in needles:
        assert n in msg, (n, msg)
    return msg


def written_files(tmp_path: Path) -> list[Path]:
    return [p for p in (tmp_path / "out").rglob("*") if p.is_file()] + \
        [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]


# --------------------------------------------------------------------------- bad options
@pytest.mark.parametrize("args,needle", [
    (["--query-max-tokens", "0"], "--query-max-tokens"),
    (["--doc-max-tokens", "0"], "--doc-max-tokens"),
    (["--query-max-tokens", "-3"], "--query-max-tokens"),
    (["--batch-size", "0"], "--batch-size"),
    (["--doc-batch-size", "0"], "--doc-batch-size"),
    (["--batch-size", "-1"], "--batch-size"),
    (["--doc-store", "int4"], "--doc-store"),
    (["--executor", "turbo"], "--executor"),
    (["--summary-name", "a/b"], "--summary-name"),
])
def test_bad_numeric_and_choice_options_exit_2_before_any_work(tmp_path, fixture_data, args,
                                                              needle):
    r = invoke(tmp_path, *args, variants="bm25,ce,colbert")
    assert_usage_error(r, needle)
    assert written_files(tmp_path) == []


def test_cuda_without_cuda_exits_2(tmp_path, fixture_data):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert_usage_error(invoke(tmp_path, "--device", "cuda"), "--device cuda", "CUDA")
    assert written_files(tmp_path) == []


def test_missing_docs_file_exits_2_even_when_only_bm25_runs(tmp_path, fixture_data):
    r = invoke(tmp_path, variants="bm25", docs=str(tmp_path / "nope.jsonl"))
    assert_usage_error(r, "--docs", "nope.jsonl", "no such file")
    assert written_files(tmp_path) == []


def test_variant_too_deep_for_the_model_exits_2_before_the_first_stage(tmp_path, fixture_data):
    r = invoke(tmp_path, variants="mice-l6+3")          # minilm-l6 has 6 layers
    assert_usage_error(r, "mice-l6+3")
    assert written_files(tmp_path) == []


def test_unwritable_output_folder_exits_2_before_any_work(tmp_path, fixture_data, monkeypatch):
    (tmp_path / "file").write_text("x")
    r = invoke(tmp_path, "--output-dir", str(tmp_path / "file"))
    assert_usage_error(r, "--output-dir", "not a folder")

    import mice_bench.effectiveness.checks as checks

    real = checks.tempfile.mkstemp

    def read_only(*a, dir=None, **kw):
        if Path(dir) == tmp_path / "ro":
            raise PermissionError(13, "Permission denied")
        return real(*a, dir=dir, **kw)

    monkeypatch.setattr(checks.tempfile, "mkstemp", read_only)
    r = invoke(tmp_path, "--output-dir", str(tmp_path / "ro"))
    assert_usage_error(r, "--output-dir", "ro", "not writable")
    assert not list((tmp_path / "ro").rglob("*"))


def test_a_full_disk_gives_one_line_and_leaves_no_half_written_result(
        tmp_path, fixture_data, fswatch, monkeypatch):
    """The disk fills up when the results are written: one line naming the file (exit 1),
    no traceback, no temp file or part of a file in the results folder, nothing written
    outside the results and cache folders."""
    refused = disk_full(monkeypatch, match=str(tmp_path / "out"))
    with fswatch.only(tmp_path / "out", tmp_path / "cache"):
        r = invoke(tmp_path, variants="bm25")
    assert r.exit_code == 1, (r.output, r.exception)
    assert isinstance(r.exception, SystemExit) and "Traceback" not in r.output
    lines = [x for x in r.output.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), r.output
    msg = " ".join(r.output.split())
    assert refused[0] not in msg                # the temp file is not what the user sees
    assert f"{tmp_path / 'out'}/" in msg and "No space left on device" in msg
    assert "free some space" in msg
    assert [p for p in (tmp_path / "out").rglob("*") if p.is_file()] == []


# --------------------------------------------------------------------------- run files
@pytest.mark.parametrize("content,needles", [
    ("", ["empty"]),
    ("\n\n", ["empty"]),
    ("101 Q0 d3 1 12.5 tag extra\n", [":1:", "7 columns"]),
    ("101 Q0 d3 first 12.5 tag\n", [":1:", "rank 'first'"]),
    ("101 Q0 d3 1 high tag\n", [":1:", "score 'high'"]),
    ("101 Q0 d3 1 12.5 t\n101 Q0 d3 2 11.0 t\n", [":2:", "'d3'", "twice"]),
    ("999 Q0 d3 1 12.5 t\n998 Q0 d2 1 1.0 t\n", ["none of its 2 query ids", "999"]),
])
def test_bad_run_files_exit_2_naming_file_and_line(tmp_path, fixture_data, content, needles):
    run = tmp_path / "run.txt"
    run.write_text(content)
    r = invoke(tmp_path, run=f"run:{run}")
    assert_usage_error(r, str(run), *needles)
    assert [p for p in (tmp_path / "out").rglob("*") if p.is_file()] == []


def test_partial_run_warns_and_records_coverage(tmp_path, fixture_data):
    lines = [ln for ln in (FIX / "run.txt").read_text().splitlines() if ln.startswith("101 ")]
    run = tmp_path / "part.txt"
    run.write_text("\n".join(lines) + "\n")
    r = invoke(tmp_path, run=f"run:{run}", variants="bm25")
    assert r.exit_code == 0, r.output
    msg = " ".join(r.output.split())
    assert "warning:" in msg and "1 of 4 judged queries" in msg
    (f,) = list((tmp_path / "out" / "dl19").rglob("bm25.json"))
    res = json.loads(f.read_text())
    assert res["dataset"]["coverage"] == {"judged_queries": 4, "with_candidates": 1}


# --------------------------------------------------------------------------- model dirs
@pytest.fixture
def checkpoint(tmp_path, tiny_hf):
    from mice_bench.backbone import packaged_tokenizer

    d = tmp_path / "ckpt"
    tiny_hf.save_pretrained(d)
    packaged_tokenizer().save_pretrained(d)
    return d


def test_truncated_safetensors_exits_2_naming_the_directory(tmp_path, checkpoint, monkeypatch):
    monkeypatch.setattr(runner, "load_collection", fixture_collection)
    w = checkpoint / "model.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    r = CliRunner().invoke(app, [
        "effectiveness", "--datasets", "dl19", "--model", str(checkpoint), "--variants",
        "colbert", "--first-stage", RUN, "--docs", DOCS, "--output-dir", str(tmp_path / "out"),
        "--cache-dir", str(tmp_path / "cache"), "--no-progress"])
    assert_usage_error(r, f"model directory {checkpoint}", "model.safetensors", "truncated")
    assert written_files(tmp_path) == []


def test_broken_model_directory_gets_a_message_about_that_directory(tmp_path, checkpoint,
                                                                   monkeypatch):
    monkeypatch.setattr(runner, "load_collection", fixture_collection)
    (checkpoint / "config.json").unlink()
    r = CliRunner().invoke(app, [
        "effectiveness", "--datasets", "dl19", "--model", str(checkpoint), "--variants",
        "colbert", "--first-stage", RUN, "--docs", DOCS, "--output-dir", str(tmp_path / "out"),
        "--cache-dir", str(tmp_path / "cache"), "--no-progress"])
    msg = assert_usage_error(r, f"model directory {checkpoint}", "config.json")
    assert "neither an architecture name" not in msg


def test_model_that_fails_to_load_is_reported_as_its_directory(tmp_path, checkpoint,
                                                              monkeypatch):
    """A failure inside the loader (here: a corrupt tokenizer) names the directory."""
    monkeypatch.setattr(runner, "load_collection", fixture_collection)
    (checkpoint / "tokenizer.json").write_text("{not json")
    r = CliRunner().invoke(app, [
        "effectiveness", "--datasets", "dl19", "--model", str(checkpoint), "--variants",
        "colbert", "--first-stage", RUN, "--docs", DOCS, "--output-dir", str(tmp_path / "out"),
        "--cache-dir", str(tmp_path / "cache"), "--no-progress"])
    assert_usage_error(r, f"model directory {checkpoint}")


# --------------------------------------------------------------------------- cache faults
def colbert_json(tmp_path: Path, out: str = "out") -> dict:
    return json.loads((tmp_path / out / RUN_DIR / "minilm-l6" / "colbert.json").read_text())


def store_dir(tmp_path: Path) -> Path:
    (d,) = list((tmp_path / "cache" / "docstates").iterdir())
    return d


def test_truncated_shard_is_named_and_recomputed(tmp_path, fixture_data, counters, capsys):
    c = cfg(tmp_path, variants="colbert")
    run_effectiveness(c)
    first = colbert_json(tmp_path)["per_query"]
    (shard,) = list(store_dir(tmp_path).glob("shard-*.safetensors"))
    shard.write_bytes(shard.read_bytes()[:100])
    for p in (tmp_path / "cache" / "scores").rglob("*.sqlite"):   # force re-scoring
        p.unlink()
    capsys.readouterr()
    run_effectiveness(cfg(tmp_path, out="out2", variants="colbert"))
    err = " ".join(capsys.readouterr().err.split())
    assert "notice:" in err and shard.name in err and "truncated" in err
    assert counters["docs"]["colbert"] == 2 * UNIQUE_DOCS
    assert colbert_json(tmp_path, "out2")["per_query"] == first


def test_altered_shard_fails_its_checksum(tmp_path, fixture_data, counters, capsys):
    run_effectiveness(cfg(tmp_path, variants="colbert"))
    (shard,) = list(store_dir(tmp_path).glob("shard-*.safetensors"))
    data = bytearray(shard.read_bytes())
    data[-1] ^= 0xFF                                              # same size, one bit off
    shard.write_bytes(bytes(data))
    for p in (tmp_path / "cache" / "scores").rglob("*.sqlite"):
        p.unlink()
    capsys.readouterr()
    run_effectiveness(cfg(tmp_path, out="out2", variants="colbert"))
    assert "SHA-256" in capsys.readouterr().err
    assert counters["docs"]["colbert"] == 2 * UNIQUE_DOCS


def test_corrupt_index_is_rebuilt_from_the_shards(tmp_path, fixture_data, counters, capsys):
    run_effectiveness(cfg(tmp_path, variants="colbert"))
    idx = store_dir(tmp_path) / "index.json"
    idx.write_text(idx.read_text()[:20])
    for p in (tmp_path / "cache" / "scores").rglob("*.sqlite"):
        p.unlink()
    capsys.readouterr()
    run_effectiveness(cfg(tmp_path, out="out2", variants="colbert"))
    err = capsys.readouterr().err
    assert "index.json" in err and "rebuilding" in err
    assert counters["docs"]["colbert"] == UNIQUE_DOCS             # nothing encoded again
    assert json.loads(idx.read_text())["version"] == 2


def test_truncated_score_file_is_named_and_rescored(tmp_path, fixture_data, counters, capsys):
    run_effectiveness(cfg(tmp_path, variants="ce"))
    (db,) = list((tmp_path / "cache" / "scores").rglob("*.sqlite"))
    good = json.loads((tmp_path / "out" / RUN_DIR / "minilm-l6" / "ce.json").read_text())
    db.write_bytes(db.read_bytes()[: db.stat().st_size // 2])
    from mice_bench.effectiveness import cache

    cache._CHECKED.clear()                                        # a new process
    capsys.readouterr()
    run_effectiveness(cfg(tmp_path, out="out2", variants="ce"))
    err = " ".join(capsys.readouterr().err.split())
    assert "notice:" in err and db.name in err and "corrupt" in err
    assert counters["pairs"]["ce"] == 2 * NUM_PAIRS
    again = json.loads((tmp_path / "out2" / RUN_DIR / "minilm-l6" / "ce.json").read_text())
    assert again["per_query"] == good["per_query"]
    with sqlite3.connect(db) as con:
        assert con.execute("PRAGMA quick_check").fetchone()[0] == "ok"


def test_corrupt_bm25_index_is_rebuilt_and_no_temp_folder_is_left(tmp_path, capsys):
    from mice_bench.data import collections as eds
    from mice_bench.data.firststage import bm25_run

    coll = fixture_collection(eds.DATASETS["dl19"], DOCS)
    first = bm25_run(coll, 10, tmp_path)
    (d,) = [p for p in (tmp_path / "bm25").iterdir() if p.is_dir()]
    victim = sorted(p for p in d.iterdir() if p.suffix == ".npy")[0]
    victim.write_bytes(victim.read_bytes()[:10])
    capsys.readouterr()
    assert bm25_run(coll, 10, tmp_path) == first
    assert "BM25 index" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "bm25").iterdir() if p.is_dir()] == [d.name]


# --------------------------------------------------------------------------- the store
def fake_states(texts: list[str], H: int = 8):
    from mice_bench.executors import DocStates

    T = max(len(t) for t in texts) + 2
    g = torch.Generator().manual_seed(len(texts))
    hidden = torch.randn(len(texts), T, H, generator=g)
    mask = torch.zeros(len(texts), T, dtype=torch.bool)
    for i, t in enumerate(texts):
        mask[i, : len(t) + 2] = True
    seg = torch.where(mask, torch.full_like(mask, 3, dtype=torch.long), -1)
    return DocStates(hidden * mask[..., None], mask, seg)


def test_store_round_trip_in_each_format(tmp_path):
    """Only real tokens are stored; fp32 is exact, fp16 and int8 within their tolerance."""
    from mice_bench.store.docstore import DocStateStore
    from mice_bench.executors import DocStates

    texts = {f"d{i}": "x" * (i + 1) for i in range(20)}        # unique texts
    ref = fake_states(list(texts.values()))
    row = {t: i for i, t in enumerate(texts.values())}
    usage = {}
    for fmt, tol in (("fp32", 0), ("fp16", 2e-3), ("int8", 3e-2)):
        st = DocStateStore(tmp_path / fmt, fmt=fmt, flush_s=0)
        st.ensure(list(texts), lambda ids: {d: texts[d] for d in ids},
                  lambda tx: DocStates.cat([ref.select([row[t]]) for t in tx]), batch_size=3)
        got = st.load(list(texts))
        T = got.mask.shape[1]
        assert torch.equal(got.mask, ref.mask[:, :T]) and torch.equal(got.seg, ref.seg[:, :T])
        err = (got.hidden.float() - ref.hidden[:, :T]).abs().max().item()
        assert err <= tol * ref.hidden.abs().max().item() + 1e-7, (fmt, err)
        usage[fmt] = st.usage()["bytes_per_doc"]
    assert usage["int8"] < usage["fp16"] < usage["fp32"]


def test_interrupted_encoding_keeps_every_flushed_batch(tmp_path):
    """Shards are flushed by time (here after every batch): a kill loses the batch in flight
    only, and progress advances per batch of documents."""
    from mice_bench.store.docstore import DocStateStore

    texts = {f"d{i:02d}": "y" * (i + 1) for i in range(10)}
    calls, ticks = [], []

    def encode(tx):
        calls.append(len(tx))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return fake_states(tx)

    st = DocStateStore(tmp_path / "s", flush_s=0)
    with pytest.raises(KeyboardInterrupt):
        st.ensure(list(texts), lambda ids: {d: texts[d] for d in ids}, encode, batch_size=2,
                  progress=ticks.append)
    assert ticks == [2, 2]
    st2 = DocStateStore(tmp_path / "s", flush_s=0)
    assert len(st2.missing(texts)) == 6
    calls.clear()
    assert st2.ensure(list(texts), lambda ids: {d: texts[d] for d in ids}, fake_states,
                      batch_size=2) == 6
    assert not list((tmp_path / "s").glob(".*.tmp"))


def test_orphan_shard_written_before_a_kill_is_adopted(tmp_path):
    from mice_bench.store.docstore import DocStateStore

    texts = {f"d{i}": "z" * (i + 1) for i in range(4)}
    st = DocStateStore(tmp_path / "s", flush_s=0)
    st.ensure(list(texts), lambda ids: {d: texts[d] for d in ids}, fake_states, batch_size=2)
    doc = json.loads((tmp_path / "s" / "index.json").read_text())
    doc["shards"] = doc["shards"][:1]                 # the kill came before the index update
    (tmp_path / "s" / "index.json").write_text(json.dumps(doc))
    st2 = DocStateStore(tmp_path / "s")
    n = st2.ensure(list(texts), lambda ids: {d: texts[d] for d in ids}, fake_states)
    assert n == 0 and st2.missing(texts) == []


def test_fp16_and_int8_stores_score_like_fp32(tmp_path, fixture_data):
    """Scores stay fp32; states stored in fp16 change them by < 1e-3 of the score spread,
    int8 (per-token scaling) by < 2e-2. Bytes per document are recorded for each store."""
    scores, bpd = {}, {}
    for store in ("fp32", "fp16", "int8"):
        run_effectiveness(cfg(tmp_path, out=store, variants="colbert,mice-l4+2",
                              doc_store=store))
        for v in ("colbert", "mice-l4+2"):
            res = json.loads((tmp_path / store / RUN_DIR / "minilm-l6" / f"{v}.json")
                             .read_text())
            assert res["config"]["doc_store"] == store
            bpd[store, v] = res["timing"]["doc_store"]["bytes_per_doc"]
            # colbert stores its head's vectors (a ColBERT index), MICE its layer-m states
            assert res["timing"]["doc_store"]["content"] == \
                ("vectors" if v == "colbert" else "states")
            run = gzip.decompress((tmp_path / store / RUN_DIR / "minilm-l6" / f"{v}.trec.gz")
                                  .read_bytes()).decode()
            scores[store, v] = {tuple(ln.split()[0:3:2]): float(ln.split()[4])
                                for ln in run.splitlines()}
    for v in ("colbert", "mice-l4+2"):
        ref = scores["fp32", v]
        spread = max(ref.values()) - min(ref.values())
        for store, tol in (("fp16", 1e-3), ("int8", 2e-2)):
            diff = max(abs(scores[store, v][k] - ref[k]) for k in ref)
            assert diff <= tol * spread, (v, store, diff, spread)
        assert bpd["int8", v] < bpd["fp16", v] < bpd["fp32", v]
    # the storage-vs-nDCG table renders from whatever result files exist
    from mice_bench.effectiveness.storage import storage_rows, storage_table

    rows = storage_rows(tmp_path)
    assert {(r.variant, r.store) for r in rows} == {(v, s) for v in ("colbert", "mice-l4+2")
                                                    for s in ("fp32", "fp16", "int8")}
    table = storage_table(rows)
    body = [ln for ln in table.splitlines() if ln.startswith("| minilm-l6")]
    assert [ln.split("|")[2:4] for ln in body][:3] == [[" colbert ", " fp32 "],
                                                      [" colbert ", " fp16 "],
                                                      [" colbert ", " int8 "]]
    assert "| dl19 nDCG@10 | dl19 KiB/doc |" in table
    fp16 = [ln for ln in body if "| colbert | fp16 |" in ln][0]
    ratio = float(fp16.split("(")[1].split("×")[0])
    assert 0.4 < ratio < 0.6                 # half the bytes (plus headers and ids)
    assert storage_table([]) is None


# --------------------------------------------------------------------------- two runs at once
def test_two_concurrent_runs_on_one_cache_do_the_work_once(tmp_path, fixture_data, counters,
                                                          monkeypatch):
    """Two runs start together on one cache: document states are encoded once and each pair is
    scored once; the second run waits for the first's lock and reuses its work."""
    from mice_bench.executors import fast

    orig = fast.SplitExecutor.encode_documents

    def slow(self, *a, **kw):                     # widen the window in which both would work
        import time

        time.sleep(0.3)
        return orig(self, *a, **kw)

    monkeypatch.setattr(fast.SplitExecutor, "encode_documents", slow)
    errors = []

    def one(out):
        try:
            run_effectiveness(cfg(tmp_path, out=out, variants="ce,colbert"))
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    ts = [threading.Thread(target=one, args=(f"o{i}",)) for i in range(2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors, errors
    assert counters["docs"]["colbert"] == UNIQUE_DOCS
    assert counters["pairs"] == {"ce": NUM_PAIRS, "colbert": NUM_PAIRS}
    for name in ("ce", "colbert"):
        a = (tmp_path / "o0" / RUN_DIR / "minilm-l6" / f"{name}.trec.gz").read_bytes()
        assert a == (tmp_path / "o1" / RUN_DIR / "minilm-l6" / f"{name}.trec.gz").read_bytes()
    assert not [p for p in (tmp_path / "cache").rglob("*.tmp")]


# --------------------------------------------------------------------------- small ones
def test_ir_datasets_progress_bars_are_disabled():
    from ir_datasets import log as irlog

    from mice_bench.data.collections import _quiet_ir_datasets

    _quiet_ir_datasets()
    seen = {}

    class Spy:
        def __init__(self, *a, **kw):
            seen.update(kw)

        def __iter__(self):
            return iter([1])

    import ir_datasets

    real = ir_datasets.lazy_libs.tqdm
    try:
        ir_datasets.lazy_libs.tqdm = lambda: type("m", (), {"tqdm": Spy})
        list(irlog.Logger("x").pbar([1], desc="d", quiet=True))
    finally:
        ir_datasets.lazy_libs.tqdm = real
    assert seen.get("disable") is True


def test_summary_name_help_renders_the_placeholder():
    r = CliRunner().invoke(app, ["effectiveness", "--help"], env={"COLUMNS": "200"})
    assert "NAME.md" in r.output and "--doc-store" in r.output


# --------------------------------------------------------------------------- atomic writes
def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_interrupted_result_write_keeps_the_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    """Every results / report file goes through a unique temp file in the same folder, fsync
    and os.replace: an exception mid-write leaves the old file as it was and no temp file."""
    import os

    from mice_bench import results as R

    target = tmp_path / "r.json"
    R.atomic_write_json(target, {"v": 1})
    old = target.read_bytes()
    # interrupted while writing (after part of the new content reached the temp file)
    with pytest.raises(KeyboardInterrupt):
        with R.atomic_file(target, "w") as f:
            f.write('{"v": 2, "partial": ')
            raise KeyboardInterrupt
    assert target.read_bytes() == old and _leftovers(tmp_path) == []
    # the rename fails (e.g. the disk is gone): same
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(R.os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    monkeypatch.setattr(R.os, "replace", lambda a, b: (_ for _ in ()).throw(OSError(28, "full")))
    for write in (lambda: R.atomic_write_json(target, {"v": 3}),
                  lambda: R.atomic_write_text(target, "text"),
                  lambda: R.atomic_write_bytes(target, b"bytes")):
        with pytest.raises(OSError):
            write()
        assert target.read_bytes() == old and _leftovers(tmp_path) == []
    assert synced, "the temp file is fsynced before the rename"
    monkeypatch.undo()
    # a value that cannot be serialised: nothing is created
    with pytest.raises(TypeError):
        R.atomic_write_json(tmp_path / "new.json", {"x": object()})
    assert not (tmp_path / "new.json").exists() and _leftovers(tmp_path) == []
    # unique temp names: two writers of one file never share a temp file
    names = []
    with R.atomic_file(target, "w") as a, R.atomic_file(target, "w") as b:
        names = [a.name, b.name]
        a.write("a")
        b.write("b")
    assert names[0] != names[1] and target.read_text() == "a"   # the last rename wins
    assert _leftovers(tmp_path) == []


def test_interrupted_figure_write_keeps_the_old_figure(tmp_path, monkeypatch):
    """Report figures (PNG + PDF) and `variants show --png` are written atomically too."""
    import matplotlib.figure

    from mice_bench.report.figures import new_figure, save
    from mice_bench.spec import parse
    from mice_bench.viz import plot_matrices

    fig, axes = new_figure()
    axes[0][0].plot([1, 2], [3, 4])
    save(fig, tmp_path, "f")
    old = {n: (tmp_path / n).read_bytes() for n in ("f.png", "f.pdf")}
    real = matplotlib.figure.Figure.savefig

    def broken(self, fname, *a, **kw):
        fname.write(b"\x89PNG partial")
        raise RuntimeError("interrupted")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", broken)
    fig, axes = new_figure()
    with pytest.raises(RuntimeError):
        save(fig, tmp_path, "f")
    with pytest.raises(RuntimeError):
        plot_matrices(parse("ce"), 2, tmp_path / "f.png")
    assert {n: (tmp_path / n).read_bytes() for n in old} == old
    assert _leftovers(tmp_path) == []
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", real)
    plot_matrices(parse("ce"), 2, tmp_path / "m.png")
    assert (tmp_path / "m.png").read_bytes()[:4] == b"\x89PNG" and _leftovers(tmp_path) == []

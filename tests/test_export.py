"""``mice-bench export --format onnx``: the graphs score as the PyTorch executors do.

The graphs are run here with onnxruntime directly (not through mice-bench's runner), on
batch sizes and lengths unlike the ones they were traced with, and compared with the
executor's own ``rerank`` / ``score_pairs``.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

ort = pytest.importorskip("onnxruntime", reason="pip install 'mice-bench[onnx]'")

from mice_bench.cli import app  # noqa: E402
from mice_bench.executors import make_executor  # noqa: E402
from mice_bench.export.onnx import (TOLERANCE, ExportCheckError, check_export,  # noqa: E402
                                    export_onnx)
from mice_bench.export.runtime import load_manifest  # noqa: E402

from fswatch import fswatch  # noqa: E402,F401  (fixture)
from test_inputs_paths import read_only  # noqa: E402,F401  (fixture)

QUERY = "do spiders have eight legs or six legs and why"
DOCS = ["spiders have eight legs and build webs " * 8, "a cat", "x y z",
        "vitamin d supplementation and bone mineral density in elderly women " * 3,
        "the river flows north through the old city and into the sea"]


def _session(folder, name):
    return ort.InferenceSession(str(folder / f"{name}.onnx"), providers=["CPUExecutionProvider"])


def _run(sess, feed):
    names = {i.name for i in sess.get_inputs()}
    return sess.run(None, {k: v for k, v in feed.items() if k in names})[0]


def _ids(t):
    return t.numpy().astype(np.int64)


def _close(got, ref):
    ref = torch.as_tensor(ref, dtype=torch.float32)
    spread = float(ref.max() - ref.min())
    assert spread > 0
    diff = float((torch.as_tensor(got, dtype=torch.float32) - ref).abs().max())
    assert diff <= TOLERANCE * spread, (diff, spread)


@pytest.fixture(scope="module")
def exports(tiny_bb, tmp_path_factory):
    out = {}
    for v in ("ce", "mice-l4+2", "colbert", "biencoder"):
        ex = make_executor(v, tiny_bb)
        d = tmp_path_factory.mktemp("onnx") / v
        out[v] = (ex, d, export_onnx(ex, d, model="tiny"))
    return out


def test_ce_graph_scores_pairs_as_pytorch(exports):
    ex, d, m = exports["ce"]
    assert m["graphs"]["pairs"]["inputs"] == ["input_ids", "attention_mask", "token_type_ids"]
    sess = _session(d, "pairs")
    for n in (1, len(DOCS)):                # batch sizes and lengths unlike the trace's
        tb = ex.tokenize_pairs([QUERY] * n, DOCS[:n] if n > 1 else DOCS[:1])
        got = _run(sess, {"input_ids": _ids(tb.input_ids),
                          "attention_mask": _ids(tb.attention_mask),
                          "token_type_ids": _ids(tb.token_type_ids)})
        ref = ex.rerank(QUERY, DOCS[:n])
        assert got.shape == (n,)
        if n > 1:
            _close(got, ref)
        else:
            assert abs(float(got[0]) - float(ref[0])) < 1e-5


def _split_scores(d, output, dtb, qtb, query_rows=1):
    """The three graphs of a split export run by hand: documents, the query once, scores."""
    stored = _run(_session(d, "documents"),
                  {"input_ids": _ids(dtb.input_ids), "segment_ids": _ids(dtb.segment_ids)})
    assert stored.shape[0] == dtb.input_ids.shape[0]
    qsess = _session(d, "query")
    qout = qsess.get_outputs()[0].name
    query = _run(qsess, {"query_input_ids": _ids(qtb.input_ids),
                         "query_segment_ids": _ids(qtb.segment_ids)})
    assert query.shape[0] == 1
    qseg = _ids(qtb.segment_ids)
    if query_rows > 1:          # aligned pairs: one query row per document
        query, qseg = np.repeat(query, query_rows, 0), np.repeat(qseg, query_rows, 0)
    return _run(_session(d, "scores"), {qout: query, "query_segment_ids": qseg, output: stored,
                                        "doc_segment_ids": _ids(dtb.segment_ids)})


@pytest.mark.parametrize("variant,output,query_output", [
    ("mice-l4+2", "doc_states", "query_states"), ("colbert", "doc_vectors", "query_states"),
    ("biencoder", "doc_embeddings", "query_embeddings")])
def test_split_graphs_score_stored_documents_as_pytorch(exports, variant, output, query_output):
    ex, d, m = exports[variant]
    assert list(m["graphs"]) == ["documents", "query", "scores"]
    assert m["graphs"]["documents"]["outputs"] == [output]
    assert m["graphs"]["query"]["outputs"] == [query_output]
    assert m["graphs"]["scores"]["inputs"][0] == query_output
    assert "query_input_ids" not in m["graphs"]["scores"]["inputs"]
    dtb, qtb = ex.tokenize_docs(DOCS), ex.tokenize_queries([QUERY])
    ref = ex.rerank(QUERY, DOCS)
    _close(_split_scores(d, output, dtb, qtb), ref)             # one query row, broadcast
    _close(_split_scores(d, output, dtb, qtb, len(DOCS)), ref)  # aligned pairs


def test_split_graphs_score_aligned_pairs_of_different_queries(exports):
    """Query rows of unequal lengths (padded) against their own documents, as
    ``score_pairs`` scores them (five queries and five documents)."""
    ex, d, _ = exports["mice-l4+2"]
    queries = [QUERY, "a cat", QUERY + " today", "x", "the sea"]
    dtb, qtb = ex.tokenize_docs(DOCS), ex.tokenize_queries(queries)
    qsess = _session(d, "query")
    query = _run(qsess, {"query_input_ids": _ids(qtb.input_ids),
                         "query_segment_ids": _ids(qtb.segment_ids)})
    stored = _run(_session(d, "documents"),
                  {"input_ids": _ids(dtb.input_ids), "segment_ids": _ids(dtb.segment_ids)})
    got = _run(_session(d, "scores"), {"query_states": query,
                                       "query_segment_ids": _ids(qtb.segment_ids),
                                       "doc_states": stored,
                                       "doc_segment_ids": _ids(dtb.segment_ids)})
    _close(got, ex.score_pairs(queries, DOCS))


def test_colbert_document_vectors_are_the_executors_index(exports):
    ex, d, _ = exports["colbert"]
    dtb = ex.tokenize_docs(DOCS[:2])
    got = _run(_session(d, "documents"), {"input_ids": _ids(dtb.input_ids),
                                          "segment_ids": _ids(dtb.segment_ids)})
    ref = ex.encode_documents(DOCS[:2], vectors=True)
    mask = ref.mask.numpy()
    assert got.shape[-1] == 128                                   # the projection
    np.testing.assert_allclose(got[mask], ref.hidden.numpy()[mask], atol=1e-5)


def test_manifest_records_the_check(exports):
    _, d, m = exports["mice-l4+2"]
    on_disk = json.loads((d / "export.json").read_text())
    assert on_disk == m == load_manifest(d)
    assert m["check"]["ok"] and m["check"]["max_abs_diff"] <= TOLERANCE * m["check"]["score_spread"]
    assert m["variant"] == "mice-l4+2" and m["kind"] == "split"


def test_check_refuses_graphs_of_other_weights(exports, tiny_hf):
    """The check compares with an executor of other weights: it must refuse."""
    from mice_bench.backbone import from_hf, packaged_tokenizer, random_hf_model

    from conftest import tiny_config

    other = from_hf(random_hf_model(tiny_config(), seed=7), packaged_tokenizer(), name="tiny")
    ex, d, m = exports["mice-l4+2"]
    with pytest.raises(ExportCheckError, match="disagree"):
        check_export(make_executor("mice-l4+2", other), d, m)


def test_export_cli_writes_a_checked_export(tmp_path):
    out = tmp_path / "ce"
    r = CliRunner().invoke(app, ["export", "--model", "minilm-l6", "--variant", "ce",
                                 "--output", str(out)])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in out.iterdir()) == ["export.json", "pairs.onnx"]
    assert load_manifest(out)["check"]["ok"]


@pytest.mark.parametrize("args,needle", [
    (["--format", "tflite"], "unknown --format 'tflite'; valid: onnx"),
    (["--variant", "mask3-l4"], "cannot export mask3-l4"),
    (["--variant", "prettr-l4"], "cannot export prettr-l4"),
    (["--model", "ettin-17m"], "modernbert family"),
    (["--opset", "3"], "--opset"),
])
def test_export_cli_refuses_in_one_line(tmp_path, args, needle):
    out = tmp_path / "x"
    r = CliRunner().invoke(app, ["export", "--model", "minilm-l6", "--output", str(out), *args])
    assert r.exit_code == 2, r.output
    lines = [x for x in r.output.splitlines() if x.strip()]
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in r.output
    assert not out.exists()


def test_export_cli_refuses_a_non_empty_folder(tmp_path):
    (tmp_path / "keep.txt").write_text("x")
    r = CliRunner().invoke(app, ["export", "--output", str(tmp_path)])
    assert r.exit_code == 2 and "not an empty folder" in r.output
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def _one_line_error(r, code: int, *needles: str) -> str:
    assert r.exit_code == code, (r.exit_code, r.output, r.exception)
    assert isinstance(r.exception, SystemExit) and "Traceback" not in r.output
    lines = [x for x in r.output.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), r.output
    msg = " ".join(r.output.split())
    for n in needles:
        assert n in msg, (n, msg)
    return msg


@pytest.mark.parametrize("rel,needle", [("afile", "is a file"),
                                        ("afile/x", "is a file, not a folder"),
                                        ("ro/x", "not writable (Permission denied)")])
def test_export_output_that_cannot_be_written_is_refused_in_one_line_before_work(
        tmp_path, fswatch, read_only, monkeypatch, rel, needle):
    import mice_bench.backbone

    def never(*a, **k):
        raise AssertionError("the model was loaded before the output was checked")

    monkeypatch.setattr(mice_bench.backbone, "load_backbone", never)
    (tmp_path / "afile").write_text("x")
    (tmp_path / "ro").mkdir()
    with fswatch.only():
        r = CliRunner().invoke(app, ["export", "--model", "minilm-l6", "--output",
                                     str(tmp_path / rel)])
    _one_line_error(r, 2, f"--output {tmp_path / rel}", needle, "folder")


def _fail_while_tracing(monkeypatch, exc: BaseException):
    """The first graph is half-written when ``exc`` is raised (a full disk, a Ctrl-C)."""
    def export(module, args, path, **kw):
        with open(path, "wb") as f:
            f.write(b"\0" * 4096)
        raise exc

    monkeypatch.setattr(torch.onnx, "export", export)


@pytest.mark.parametrize("made_by_user", [False, True])
def test_a_full_disk_during_export_gives_one_line_and_leaves_nothing(
        tmp_path, fswatch, monkeypatch, made_by_user):
    import errno

    out = tmp_path / "exp"
    if made_by_user:
        out.mkdir()
    _fail_while_tracing(monkeypatch, OSError(errno.ENOSPC, "No space left on device",
                                             str(out / "pairs.onnx")))
    with fswatch.only(out):
        r = CliRunner().invoke(app, ["export", "--model", "minilm-l6", "--no-check",
                                     "--output", str(out)])
    _one_line_error(r, 1, "pairs.onnx", "No space left on device", "free some space")
    assert (sorted(out.iterdir()) == [] if made_by_user else not out.exists())


def test_ctrl_c_during_export_keeps_the_folder_the_user_made(tmp_path, fswatch, monkeypatch):
    out = tmp_path / "mine"
    out.mkdir()
    _fail_while_tracing(monkeypatch, KeyboardInterrupt())
    with fswatch.only(out):
        r = CliRunner().invoke(app, ["export", "--model", "minilm-l6", "--no-check",
                                     "--output", str(out)])
    assert r.exit_code != 0
    assert out.is_dir() and list(out.iterdir()) == []


def test_a_killed_export_is_replaced_by_the_rerun(tmp_path, fswatch):
    """SIGKILL after the graphs were written: what it leaves is inside --output, and the same
    command then writes the export there instead of refusing "not an empty folder" (and,
    checking it under onnxruntime, writes nothing else: no telemetry files in the home or
    temporary folder)."""
    import os
    import subprocess
    import sys

    out = tmp_path / "exp"
    script = ("import os, signal, sys\n"
              "import mice_bench.export.onnx as o\n"
              "o.check_export = lambda *a: os.kill(os.getpid(), signal.SIGKILL)\n"
              "from mice_bench.cli import app\n"
              "sys.argv = ['mice-bench', 'export', '--model', 'minilm-l6', '--output', "
              f"{str(out)!r}]\n"
              "app()\n")
    with fswatch.only(out):
        p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                           env=dict(os.environ), timeout=300)
    assert p.returncode == -9, p.stderr[-2000:]
    left = [x.relative_to(out).as_posix() for x in out.rglob("*")]
    assert any(x.endswith("pairs.onnx") for x in left) and "pairs.onnx" not in left, left
    with fswatch.only(out):                      # a fresh process: onnxruntime not loaded
        p = subprocess.run([sys.executable, "-m", "mice_bench.cli", "export", "--model",
                            "minilm-l6", "--output", str(out)], capture_output=True, text=True,
                           env=dict(os.environ), timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert sorted(p.name for p in out.iterdir()) == ["export.json", "pairs.onnx"]


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["biencoder", "colbert[proj=0,qaug=0]", "mice-l4+2"])
def test_real_minilm_weights_export_within_tolerance(minilm_path, tmp_path, variant):
    """all-MiniLM-L6-v2 (real weights): the exported graphs rerank as the PyTorch path
    (mice-l4+2: its layers on the real weights, an untrained interaction)."""
    from mice_bench.backbone import load_backbone

    bb = load_backbone(minilm_path)
    ex = make_executor(variant, bb)
    m = export_onnx(ex, tmp_path / "x", model=minilm_path)
    assert m["random_weights"] is False
    dtb, qtb = ex.tokenize_docs(DOCS), ex.tokenize_queries([QUERY])
    out = m["graphs"]["documents"]["outputs"][0]
    _close(_split_scores(tmp_path / "x", out, dtb, qtb), ex.rerank(QUERY, DOCS))

"""Stores in the effectiveness pipeline: every format end to end on the tiny fixture, the
bi-encoder's pooled vectors, corrupt codec files in a real run, the preflight refusals."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
import torch

from mice_bench.effectiveness.runner import run_effectiveness
from test_effectiveness_pipeline import (DOCS, RUN, cfg, counters,  # noqa: F401
                                         fixture_collection, fixture_data)

pytestmark = pytest.mark.usefixtures("no_network")
pytest.importorskip("faiss", reason="residual stores need faiss-cpu (the storage extra)")
RUN_DIR = "dl19/run-effectiveness-run"


def run_scores(tmp_path: Path, out: str, v: str) -> dict:
    data = gzip.decompress((tmp_path / out / RUN_DIR / "minilm-l6" / f"{v}.trec.gz")
                           .read_bytes()).decode()
    return {tuple(ln.split()[0:3:2]): float(ln.split()[4]) for ln in data.splitlines()}


def result(tmp_path: Path, out: str, v: str) -> dict:
    return json.loads((tmp_path / out / RUN_DIR / "minilm-l6" / f"{v}.json").read_text())


def test_residual_stores_score_close_to_fp32_and_cost_less(tmp_path, fixture_data):
    scores, usage = {}, {}
    for store in ("fp32", "residual4", "residual2", "residual1"):
        run_effectiveness(cfg(tmp_path, out=store, variants="colbert,mice-l4+2",
                              doc_store=store))
        for v in ("colbert", "mice-l4+2"):
            scores[store, v] = run_scores(tmp_path, store, v)
            usage[store, v] = result(tmp_path, store, v)["timing"]["doc_store"]
    for v in ("colbert", "mice-l4+2"):
        ref = scores["fp32", v]
        spread = max(ref.values()) - min(ref.values())
        errs = {s: max(abs(scores[s, v][k] - ref[k]) for k in ref)
                for s in ("residual4", "residual2", "residual1")}
        assert errs["residual4"] <= 0.25 * spread, (v, errs, spread)
        assert all(e > 0 for e in errs.values())         # lossy: not the fp32 states again
        bpt = {s: usage[s, v]["bytes_per_token"] for s in ("fp32", "residual4", "residual2",
                                                            "residual1")}
        assert bpt["residual1"] < bpt["residual2"] < bpt["residual4"] < bpt["fp32"]
        assert usage["residual2", v]["codec_bytes"] > 0
        assert usage["residual2", v]["store"] == "residual2"


def test_biencoder_stores_one_pooled_vector_per_document(tmp_path, fixture_data):
    """The store holds one vector per document; scores equal the bi-encoder's own pair
    scores (mean-cos head on both parts' states)."""
    run_effectiveness(cfg(tmp_path, out="fp32", variants="biencoder", doc_store="fp32"))
    usage = result(tmp_path, "fp32", "biencoder")["timing"]["doc_store"]
    assert usage["content"] == "pooled" and usage["tokens_per_doc"] == 1
    got = run_scores(tmp_path, "fp32", "biencoder")
    from mice_bench.backbone import load_backbone
    from mice_bench.data import collections as eds
    from mice_bench.executors import make_executor

    coll = fixture_collection(eds.DATASETS["dl19"], DOCS)
    ex = make_executor("biencoder", load_backbone("minilm-l6", device="cpu", dtype="fp32",
                                                  seed=0))
    keys = sorted(got)[:12]
    texts = coll.doc_texts([d for _, d in keys])
    ref = ex.score_pairs([coll.queries[q] for q, _ in keys], [texts[d] for _, d in keys])
    assert torch.allclose(torch.tensor([got[k] for k in keys]), ref, atol=1e-5)
    # fp16 pooled vectors: half the bytes, scores within fp16 rounding
    run_effectiveness(cfg(tmp_path, out="fp16", variants="biencoder", doc_store="fp16"))
    half = run_scores(tmp_path, "fp16", "biencoder")
    assert max(abs(half[k] - got[k]) for k in got) < 2e-3
    assert result(tmp_path, "fp16", "biencoder")["timing"]["doc_store"]["bytes_per_doc"] < \
        usage["bytes_per_doc"]


def test_corrupt_codec_file_in_a_run_is_named_and_everything_encoded_again(
        tmp_path, fixture_data, counters, capsys):
    run_effectiveness(cfg(tmp_path, variants="colbert", doc_store="residual2"))
    first = result(tmp_path, "out", "colbert")["per_query"]
    (codec,) = list((tmp_path / "cache" / "docstates").rglob("codec-*.safetensors"))
    codec.write_bytes(codec.read_bytes()[:64])
    for p in (tmp_path / "cache" / "scores").rglob("*.sqlite"):
        p.unlink()
    n1 = counters["docs"]["colbert"]
    capsys.readouterr()
    run_effectiveness(cfg(tmp_path, out="out2", variants="colbert", doc_store="residual2"))
    err = " ".join(capsys.readouterr().err.split())
    assert "notice:" in err and codec.name in err and "truncated" in err
    assert counters["docs"]["colbert"] == 2 * n1
    assert result(tmp_path, "out2", "colbert")["per_query"] == first   # seeded: same codes


def test_residual_store_without_faiss_exits_2_before_any_work(tmp_path, fixture_data,
                                                              monkeypatch):
    import builtins

    from typer.testing import CliRunner

    from mice_bench.cli import app

    real = builtins.__import__

    def no_faiss(name, *a, **kw):
        if name == "faiss":
            raise ImportError("no faiss")
        return real(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", no_faiss)
    r = CliRunner().invoke(app, [
        "effectiveness", "--datasets", "dl19", "--model", "minilm-l6", "--variants", "colbert",
        "--output-dir", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache"),
        "--no-progress", "--first-stage", RUN, "--docs", DOCS, "--doc-store", "residual2"])
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert "faiss" in r.output and "storage" in r.output
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()


def test_other_formats_compress_an_existing_fp32_store_without_encoding(
        tmp_path, fixture_data, counters):
    run_effectiveness(cfg(tmp_path, out="fp32", variants="colbert,mice-l4+2", doc_store="fp32"))
    encoded = dict(counters["docs"])
    run_effectiveness(cfg(tmp_path, out="r2", variants="colbert,mice-l4+2",
                          doc_store="residual2"))
    assert dict(counters["docs"]) == encoded                  # nothing encoded again
    for v in ("colbert", "mice-l4+2"):
        assert "fp32 store" in result(tmp_path, "r2", v)["timing"]["doc_source"]
    # the same store built from scratch (documents encoded) scores the same
    run_effectiveness(cfg(tmp_path, cache="fresh", out="r2fresh", variants="colbert,mice-l4+2",
                          doc_store="residual2"))
    for v in ("colbert", "mice-l4+2"):
        a, b = run_scores(tmp_path, "r2", v), run_scores(tmp_path, "r2fresh", v)
        assert a.keys() == b.keys() and max(abs(a[k] - b[k]) for k in a) < 1e-4


def test_pooled_stores_compress_the_fp32_store_and_record_their_tokens(
        tmp_path, fixture_data, counters):
    """--pool-factor 2: a store of its own (another key), filled from the unpooled fp32
    store without encoding, half the text tokens (rounded up) per document stored, bytes
    counted per original token; the fidelity table compares it with the unpooled fp32."""
    from mice_bench.effectiveness.storage import fidelity_rows, storage_rows

    run_effectiveness(cfg(tmp_path, out="fp32", variants="colbert,mice-l4+2", doc_store="fp32"))
    encoded = dict(counters["docs"])
    run_effectiveness(cfg(tmp_path, out="p2", variants="colbert,mice-l4+2", doc_store="fp32",
                          pool_factor=2))
    assert dict(counters["docs"]) == encoded                  # nothing encoded again
    for v in ("colbert", "mice-l4+2"):
        full = result(tmp_path, "fp32", v)["timing"]["doc_store"]
        pooled = result(tmp_path, "p2", v)["timing"]
        u = pooled["doc_store"]
        assert "fp32 store" in pooled["doc_source"]
        assert u["pool_factor"] == 2 and full["pool_factor"] == 1
        assert u["orig_tokens_per_doc"] == pytest.approx(full["tokens_per_doc"])
        assert full["tokens_per_doc"] / 2 <= u["tokens_per_doc"] < full["tokens_per_doc"]
        assert u["bytes_per_orig_token"] == pytest.approx(
            u["bytes"] / (u["orig_tokens_per_doc"] * u["docs"]))
        assert pooled["doc_load_s"] > 0
        assert run_scores(tmp_path, "p2", v) != run_scores(tmp_path, "fp32", v)
    rows = storage_rows(tmp_path)
    fr = [f for f in fidelity_rows(rows) if f["row"].pool_factor == 2]
    assert len(fr) == 2 and all(f["diff"] is not None and f["fidelity"] is not None
                                for f in fr)


def test_fidelity_table_and_figure_from_real_result_files(tmp_path, fixture_data):
    import shutil

    from mice_bench.effectiveness.storage import fidelity_rows, fidelity_table, storage_rows
    from mice_bench.report.storage_section import STEM, storage_figure

    for store in ("fp32", "residual2"):
        run_effectiveness(cfg(tmp_path, out=f"res/effectiveness/{store}", variants="colbert",
                              doc_store=store))
    rows = storage_rows(tmp_path / "res" / "effectiveness")
    fr = {f["row"].store: f for f in fidelity_rows(rows)}
    assert fr["fp32"]["diff"] is None and fr["fp32"]["fidelity"] is None
    f = fr["residual2"]["fidelity"]
    assert f["queries"] > 0 and -1 <= f["tau_mean"] <= 1 and 0 <= f["top10_overlap"] <= 1
    assert fr["residual2"]["diff"]["queries"] > 0
    # the tiny fixture's documents are MS MARCO passages (dl19): the size is computed
    assert fr["residual2"]["ms_marco_gib"] > 0
    table = fidelity_table(rows)
    assert "| residual2 |" in table and "computed" in table
    stem, caption = storage_figure(tmp_path / "res", tmp_path / "fig")
    assert stem == STEM and (tmp_path / "fig" / f"{STEM}.png").stat().st_size > 0
    shutil.rmtree(tmp_path / "res")
    assert "no effectiveness result" in storage_figure(tmp_path / "res", tmp_path / "fig")

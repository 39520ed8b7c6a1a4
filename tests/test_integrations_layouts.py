"""Saved checkpoints load in sentence-transformers and PyLate and score as mice-bench does.

Checked with the libraries themselves (sentence-transformers ``CrossEncoder`` and
``SentenceTransformer``; PyLate's ``ColBERT`` where it installs) and, for PyLate's layout, with
a test-side reader written from PyLate 1.6.0's source (``pylate/models/colbert.py``:
``tokenize``, ``encode``, ``skiplist_mask``; ``pylate/models/Dense.py``) on Hugging Face's
own ``AutoModel``, so it does not run mice-bench's executors.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mice_bench import Reranker
from mice_bench.executors.heads import pool
from mice_bench.model import InteractionModel

from conftest import DOCS, QUERIES

PAIRS = list(zip(QUERIES, DOCS))


def _save(bb_or_path, variant, tmp_path: Path, name: str) -> tuple[Reranker, Path]:
    if isinstance(bb_or_path, str):
        rr = Reranker.from_pretrained(bb_or_path, variant=variant)
    else:
        rr = Reranker(InteractionModel(bb_or_path, variant))
    out = tmp_path / name
    rr.save_pretrained(out)
    return rr, out


def _embeddings(rr: Reranker, texts: list[str], query: bool) -> torch.Tensor:
    """mice-bench's bi-encoder embeddings: the executor's part states, pooled and normed."""
    ex = rr._ex
    s = ex.encode_queries(texts) if query else ex.encode_documents(texts)
    bb = rr.model.backbone
    e = pool(bb.family.final(bb, s.hidden.float()), s.mask, ex.pooling)
    return torch.nn.functional.normalize(e, dim=-1) if ex.settings()["normalize"] else e


# ----------------------------------------------------------------- sentence-transformers
@pytest.mark.parametrize("which", ["tiny", "minilm"])
def test_cross_encoder_predict_is_the_sigmoid_of_our_score(which, tiny_bb, request, tmp_path):
    st = pytest.importorskip("sentence_transformers")
    src = tiny_bb if which == "tiny" else request.getfixturevalue("minilm_path")
    rr, path = _save(src, "ce", tmp_path, "ce")
    cfg = json.loads((path / "config_sentence_transformers.json").read_text())
    assert cfg["model_type"] == "CrossEncoder"
    assert cfg["activation_fn"] == "torch.nn.modules.activation.Sigmoid"
    ce = st.CrossEncoder(str(path), device="cpu")
    assert (ce.max_seq_length if hasattr(ce, "max_seq_length") else ce.max_length) == \
        rr._ex.tokenizer.max_length
    ours = rr.predict(PAIRS)
    np.testing.assert_allclose(ce.predict(PAIRS), 1 / (1 + np.exp(-ours)), atol=1e-5)
    np.testing.assert_allclose(ce.predict(PAIRS, activation_fn=torch.nn.Identity()), ours,
                               atol=1e-4)


@pytest.mark.parametrize("which", ["tiny", "minilm"])
def test_biencoder_encode_equals_our_embeddings(which, tiny_bb, request, tmp_path):
    st = pytest.importorskip("sentence_transformers")
    src = tiny_bb if which == "tiny" else request.getfixturevalue("minilm_path")
    rr, path = _save(src, "biencoder", tmp_path, "bi")
    modules = json.loads((path / "modules.json").read_text())
    assert [m["path"] for m in modules] == ["", "1_Pooling", "2_Normalize"]
    model = st.SentenceTransformer(str(path), device="cpu")
    for texts, query in ((DOCS, False), (QUERIES, True)):
        theirs = torch.as_tensor(model.encode(texts, convert_to_numpy=True))
        assert (theirs - _embeddings(rr, texts, query)).abs().max() < 1e-5
    q = torch.as_tensor(model.encode(QUERIES))
    d = torch.as_tensor(model.encode(DOCS))
    np.testing.assert_allclose(torch.nn.functional.cosine_similarity(q, d).numpy(),
                               rr.predict(PAIRS), atol=1e-5)


def test_biencoder_max_seq_length_is_the_document_limit(minilm_path, tmp_path):
    rr, path = _save(minilm_path, "biencoder", tmp_path, "bi")
    sb = json.loads((path / "sentence_bert_config.json").read_text())
    assert sb["max_seq_length"] == rr._ex.tokenizer.doc_max_tokens + 2 == 256
    pc = json.loads((path / "1_Pooling" / "config.json").read_text())
    assert pc["pooling_mode_mean_tokens"] and not pc["pooling_mode_cls_token"]


# ----------------------------------------------------------------- PyLate
def _pylate_reader_scores(path: Path, queries, docs) -> list[float]:
    """MaxSim scores of a checkpoint read as PyLate 1.6.0 reads it (test-side re-reading)."""
    from safetensors.torch import load_file
    from transformers import AutoModel, AutoTokenizer

    cfg = json.loads((path / "config_sentence_transformers.json").read_text())
    modules = json.loads((path / "modules.json").read_text())
    assert modules[1]["type"] == "pylate.models.Dense" and modules[1]["path"] == "1_Dense"
    dense_cfg = json.loads((path / "1_Dense" / "config.json").read_text())
    assert dense_cfg["bias"] is False and dense_cfg["activation_function"].endswith("Identity")
    w = load_file(str(path / "1_Dense" / "model.safetensors"))["linear.weight"]
    tok = AutoTokenizer.from_pretrained(str(path))
    hf = AutoModel.from_pretrained(str(path)).eval()
    tok.pad_token_id = tok.mask_token_id          # PyLate pads queries with [MASK]

    def encode(texts, is_query):
        length = cfg["query_length"] if is_query else cfg["document_length"]
        prefix = cfg["query_prefix"] if is_query else cfg["document_prefix"]
        pid = tok.convert_tokens_to_ids(prefix) if prefix else None
        pad = "max_length" if is_query and cfg["do_query_expansion"] else True
        f = tok(texts, padding=pad, truncation="longest_first", return_tensors="pt",
                max_length=length - 1 if pid is not None else length)
        if pid is not None:
            for k, v in (("input_ids", pid), ("attention_mask", 1), ("token_type_ids", 0)):
                if k in f:
                    f[k] = torch.cat([f[k][:, :1], torch.full_like(f[k][:, :1], v),
                                      f[k][:, 1:]], 1)
        if is_query and cfg["attend_to_expansion_tokens"]:
            f["attention_mask"].fill_(1)
        with torch.no_grad():
            h = hf(**f).last_hidden_state @ w.T
        if is_query:
            keep = torch.ones_like(f["input_ids"], dtype=torch.bool) \
                if cfg["do_query_expansion"] else f["attention_mask"].bool()
        else:
            skip = [tok.convert_tokens_to_ids(x) for x in cfg["skiplist_words"]]
            keep = f["attention_mask"].bool() & ~torch.isin(f["input_ids"],
                                                           torch.tensor(skip, dtype=torch.long))
        return [torch.nn.functional.normalize(h[i][keep[i]], dim=-1) for i in range(len(texts))]

    qs, ds = encode(list(queries), True), encode(list(docs), False)
    return [float((q @ d.T).max(1).values.sum()) for q, d in zip(qs, ds)]


@pytest.mark.parametrize("variant", ["colbert", "colbert[proj=0,qaug=0]"])
def test_colbert_in_pylate_layout_scores_as_pylate_reads_it(variant, minilm_path, tmp_path):
    rr, path = _save(minilm_path, variant, tmp_path, "cb")
    cfg = json.loads((path / "config_sentence_transformers.json").read_text())
    t = rr._ex.tokenizer
    assert cfg["query_length"] == t.query_max_tokens + 2
    assert cfg["document_length"] == t.doc_max_tokens + 2
    assert cfg["do_query_expansion"] is t.qaug
    np.testing.assert_allclose(_pylate_reader_scores(path, QUERIES, DOCS), rr.predict(PAIRS),
                               atol=1e-4)


def test_colbert_projection_is_the_checkpoint_s_own(tiny_bb, tmp_path):
    from safetensors.torch import load_file

    rr, path = _save(tiny_bb, "colbert", tmp_path, "cb")
    w = load_file(str(path / "1_Dense" / "model.safetensors"))["linear.weight"]
    assert torch.equal(w, rr._ex.projection.float().cpu())
    np.testing.assert_allclose(_pylate_reader_scores(path, QUERIES, DOCS), rr.predict(PAIRS),
                               atol=1e-4)


def _pylate_or_skip():
    try:
        import sentence_transformers
        from pylate import models
    except Exception as e:  # noqa: BLE001 - any import failure means: not usable here
        pytest.skip(f"PyLate does not import here ({type(e).__name__}: {e})")
    if not sentence_transformers.__version__.startswith("5."):
        pytest.skip(f"PyLate 1.6 needs sentence-transformers 5.3 (installed: "
                    f"{sentence_transformers.__version__}); its pin would replace torch")
    return models


@pytest.mark.parametrize("variant", ["colbert", "colbert[proj=0,qaug=0]"])
def test_pylate_colbert_reads_our_checkpoint(variant, minilm_path, tmp_path):
    models = _pylate_or_skip()
    rr, path = _save(minilm_path, variant, tmp_path, "cb")
    m = models.ColBERT(str(path), device="cpu")
    q = m.encode(QUERIES, is_query=True)
    d = m.encode(DOCS, is_query=False)
    theirs = [float((torch.as_tensor(a) @ torch.as_tensor(b).T).max(1).values.sum())
              for a, b in zip(q, d)]
    np.testing.assert_allclose(theirs, rr.predict(PAIRS), atol=1e-4)


# ----------------------------------------------------------------- mice-bench reads them back
@pytest.mark.parametrize("variant", ["ce", "biencoder", "colbert", "colbert[proj=0,qaug=0]",
                                     "mice-l2+2", "mask1"])
def test_saved_checkpoint_scores_the_same_in_mice_bench(variant, tiny_bb, tmp_path):
    rr, path = _save(tiny_bb, variant, tmp_path, "m")
    back = Reranker.from_pretrained(path)
    assert back.variant == rr.variant
    np.testing.assert_allclose(back.predict(PAIRS), rr.predict(PAIRS), atol=1e-6)
    a, b = back._ex.tokenizer, rr._ex.tokenizer
    assert (a.query_max_tokens, a.max_length) == (b.query_max_tokens, b.max_length)
    if b.parts:
        assert a.doc_budget() == b.doc_budget()


def test_minilm_checkpoints_round_trip(minilm_path, tmp_path):
    for variant in ("biencoder", "colbert"):
        rr, path = _save(minilm_path, variant, tmp_path, variant)
        np.testing.assert_allclose(Reranker.from_pretrained(path).predict(PAIRS),
                                   rr.predict(PAIRS), atol=1e-6)


def test_mice_and_masks_get_no_other_library_files(tiny_bb, tmp_path):
    for variant in ("mice-l2+2", "mask1", "prettr-l2"):
        _, path = _save(tiny_bb, variant, tmp_path, variant.replace("+", "_"))
        meta = json.loads((path / "mice_bench.json").read_text())
        assert meta["layouts"]["library"] is None and "no other library" in \
            meta["layouts"]["reason"]
        assert not (path / "modules.json").exists()
        assert not (path / "config_sentence_transformers.json").exists()

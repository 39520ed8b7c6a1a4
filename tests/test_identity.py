"""Document states and stores carry the identity of what made them (weights, variant, split
layer, content, length limit) and nothing else scores them: states of another split layer,
of other weights, a bi-encoder's pooled vectors under ``colbert``, a store written by another
model, a store written before stores recorded their model. What may share states does
(``mice-l2+2`` and ``mice-l2+1`` encode the same documents), and its scores equal the
reference executor's on the joint pairs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import DOCS, QUERIES, tiny_config
from mice_bench.api import Reranker
from mice_bench.backbone import from_hf, packaged_tokenizer, random_hf_model
from mice_bench.errors import UsageError
from mice_bench.executors import DocStates
from mice_bench.executors.identity import MismatchedStates
from mice_bench.model import InteractionModel
from mice_bench.store.docstore import DocStateStore


def rr(variant: str, seed: int = 1, executor: str = "auto", **kw) -> Reranker:
    bb = from_hf(random_hf_model(tiny_config(), seed=seed), packaged_tokenizer(), name="tiny")
    return Reranker(InteractionModel(bb, variant, **kw), executor)


def test_own_states_score_as_the_reference_executor_scores_the_pairs():
    a = rr("mice-l2+2")
    got = a.score_documents(QUERIES[0], a.encode_documents(DOCS))
    ref = rr("mice-l2+2", executor="reference").predict([(QUERIES[0], d) for d in DOCS])
    np.testing.assert_allclose(got, ref, atol=1e-4)


def test_variants_that_encode_the_same_documents_share_their_states():
    a, b = rr("mice-l2+2"), rr("mice-l2+1")
    np.testing.assert_allclose(b.score_documents(QUERIES[0], a.encode_documents(DOCS)),
                               b.score_documents(QUERIES[0], b.encode_documents(DOCS)),
                               atol=1e-5)


@pytest.mark.parametrize("encoder,scorer,needles", [
    (lambda: rr("mice-l2+2"), lambda: rr("mice-l3+2"), ["split layer 2", "split layer 3"]),
    (lambda: rr("mice-l2+2"), lambda: rr("mice-l2+2", seed=2), ["mice-l2+2", "weights"]),
    (lambda: rr("mice-l2+2"), lambda: rr("mice-l2+2", doc_max_tokens=5),
     ["doc_max_tokens 5"]),
    (lambda: rr("biencoder"), lambda: rr("colbert"), ["pooled", "vectors", "colbert"]),
], ids=["split-layer", "other-weights", "doc-length", "pooled-under-colbert"])
def test_states_of_anything_else_are_refused_naming_both(encoder, scorer, needles):
    states = encoder().encode_documents(DOCS)
    with pytest.raises(MismatchedStates) as e:
        scorer().score_documents(QUERIES[0], states)
    msg = str(e.value)
    assert "\n" not in msg and all(n in msg for n in needles), msg


def test_states_keep_their_identity_through_save_and_load(tmp_path):
    a = rr("mice-l2+2")
    states = a.encode_documents(DOCS)
    states.save(tmp_path / "s.pt")
    back = DocStates.load(tmp_path / "s.pt")
    assert back.identity == states.identity
    np.testing.assert_allclose(a.score_documents(QUERIES[0], back),
                               a.score_documents(QUERIES[0], states))
    with pytest.raises(MismatchedStates):
        rr("mice-l3+2").score_documents(QUERIES[0], back)


def test_states_without_an_identity_are_refused():
    a = rr("mice-l2+2")
    states = a.encode_documents(DOCS)
    states.identity = None                      # as saved before states recorded it
    with pytest.raises(UsageError, match="encode the documents again"):
        a.score_documents(QUERIES[0], states)


def test_a_store_of_another_model_is_refused_to_write_and_to_score(tmp_path):
    docs = dict(zip("abcdefg", DOCS))
    a, other = rr("mice-l2+2"), rr("mice-l2+2", seed=2)
    st = a.document_store(tmp_path / "st", docs)
    want = a.score_documents(QUERIES[0], a.encode_documents(list(docs.values())))
    np.testing.assert_allclose(a.score_documents(QUERIES[0], st, doc_ids=list(docs)), want,
                               atol=2e-3)                       # fp16 store
    with pytest.raises(MismatchedStates, match="in store"):
        other.document_store(tmp_path / "st", docs)
    with pytest.raises(MismatchedStates):
        other.score_documents(QUERIES[0], st)
    # opened without a model, the store still carries its own identity
    bare = DocStateStore(tmp_path / "st", fmt="fp16")
    with pytest.raises(MismatchedStates):
        other.score_documents(QUERIES[0], bare)
    assert a.document_store(tmp_path / "st", docs).encoded_now == 0


def test_a_store_written_before_stores_recorded_their_model(tmp_path):
    docs = dict(zip("abc", DOCS))
    a = rr("mice-l2+2")
    a.document_store(tmp_path / "st", docs)
    meta_p = tmp_path / "st" / "meta.json"
    meta = json.loads(meta_p.read_text())
    ident = meta.pop("identity")
    meta_p.write_text(json.dumps(meta))
    with pytest.raises(UsageError, match="delete the folder and build the store again"):
        a.document_store(tmp_path / "st", docs)
    # a directory whose own key pins the model (effectiveness's cache) records it instead
    st = DocStateStore(tmp_path / "st", meta=meta, fmt="fp16", identity=ident, pinned=True)
    st.ensure(list(docs), lambda ids: {d: docs[d] for d in ids}, lambda tx: None)
    assert json.loads(meta_p.read_text())["identity"] == ident
    assert a.document_store(tmp_path / "st", docs).encoded_now == 0


def test_weights_fingerprint_follows_the_weights_that_encode_documents():
    bb = from_hf(random_hf_model(tiny_config(), seed=1), packaged_tokenizer(), name="tiny")
    fp = bb.fingerprint()
    assert bb.converted().fingerprint() == fp              # a copy: the same weights
    assert bb.converted(dtype=torch.float16).fingerprint() != fp
    bb.ensure_cross_weights({3})                           # read stored states, make none
    assert bb.fingerprint() == fp
    with torch.no_grad():
        bb.layers[0].w_in[0, 0] += 1.0                     # trained in place
    assert bb.fingerprint() != fp


def test_a_store_whose_recorded_identity_was_edited_is_refused_in_one_line(tmp_path):
    docs = dict(zip("ab", DOCS))
    a = rr("mice-l2+2")
    a.document_store(tmp_path / "st", docs)
    meta_p = tmp_path / "st" / "meta.json"
    meta_p.write_text(json.dumps(dict(json.loads(meta_p.read_text()), identity="edited")))
    with pytest.raises(MismatchedStates, match="no recorded model") as e:
        a.document_store(tmp_path / "st", docs)
    assert "\n" not in str(e.value)

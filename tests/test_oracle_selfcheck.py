"""Self-consistency checks of the test-only reference oracle (tests/oracle/reference.py).
Nothing here touches mice_bench."""
from __future__ import annotations

import pytest
import torch

from oracle.reference import (RefColBERT, RefMasked, RefMiceBert, RefPreTTR, bert_tokenizer,
                              perturbed_bert_cls, ref_cross_encoder_scores)

L = 8
QUERIES = [
    "what is the capital of france",
    "cat",
    "how do green plants turn sunlight water and carbon dioxide into sugar and oxygen inside "
    "the chloroplasts of their leaves during the day",
    "symptoms of a common cold",
]
DOCS = [
    "paris is the capital and most populous city of france",
    "photosynthesis is the process used by plants algae and some bacteria to convert light "
    "energy into chemical energy that is stored in glucose and later released to fuel the "
    "organism activities while oxygen is released as a by product of splitting water",
    "dogs bark",
    "a runny nose sore throat cough and congestion are typical signs of the common cold virus",
]
close = lambda a, b: torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)  # noqa: E731


def differ(a, b, tol=1e-3):
    return (a - b).abs().max().item() > tol


@pytest.fixture(scope="module")
def hf():
    return perturbed_bert_cls(num_layers=L)


@pytest.fixture(scope="module")
def tok():
    return bert_tokenizer()


def one_by_one(model, tok, qs, ds):
    return torch.cat([model.score(tok, [q], [d]) for q, d in zip(qs, ds)])


def test_tokenizer_and_perturbation(tok, hf):
    assert len(tok) == 30522 and tok.mask_token_id == 103
    assert hf.config._attn_implementation == "eager" and not hf.training
    for name, p in hf.named_parameters():
        if "LayerNorm.weight" in name:
            assert (p - 1).abs().max() > 0.05 and (p - 1).abs().max() <= 0.2, name
        else:
            assert p.abs().min() > 0 and (p.numel() < 8 or p.abs().mean() > 0.05), name


# ---------------------------------------------------------------- cross-encoder / PreTTR
def test_prettr_join0_is_cross_encoder(hf, tok):
    close(RefPreTTR(hf, 0).score(tok, QUERIES, DOCS), ref_cross_encoder_scores(hf, tok, QUERIES, DOCS))


def test_prettr_full_separation_ignores_document(hf, tok):
    full = RefPreTTR(hf, L)
    close(full.score(tok, QUERIES, DOCS), full.score(tok, QUERIES, DOCS[1:] + DOCS[:1]))
    assert differ(RefPreTTR(hf, 4).score(tok, QUERIES, DOCS), RefPreTTR(hf, 0).score(tok, QUERIES, DOCS))


def test_prettr_batch_invariance(hf, tok):
    m = RefPreTTR(hf, 4)
    close(m.score(tok, QUERIES, DOCS), one_by_one(m, tok, QUERIES, DOCS))


def test_prettr_truncates_document_first(hf, tok):
    long_doc = " ".join(["word"] * 600)
    from oracle.reference import xpmir_pair_tokenize
    ids, mask, types = xpmir_pair_tokenize(tok, [QUERIES[2]], [long_doc])
    n_q = len(tok(QUERIES[2])["input_ids"])
    assert ids.shape[1] == 512 and int(mask.sum()) == 512 and int((types == 0).sum()) == n_q


# ---------------------------------------------------------------- masking study
def test_masked_none_is_cross_encoder(hf, tok):
    close(RefMasked(hf, "none").score(tok, QUERIES, DOCS), ref_cross_encoder_scores(hf, tok, QUERIES, DOCS))


def test_masked_identities(hf, tok):
    s = {k: RefMasked(hf, k).score(tok, QUERIES, DOCS)
         for k in ["none", "mask0", "mask1", "mask2", "mask3-l0", "mask3-l4"]}
    close(s["mask3-l0"], s["mask2"])  # empty layer range
    names = ["none", "mask0", "mask1", "mask2", "mask3-l4"]
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert differ(s[a], s[b]), (a, b)
    # query -> doc blocked everywhere and CLS/doc cut: the document cannot reach [CLS]
    m = RefMasked(hf, f"mask3-l{L}")
    close(m.score(tok, QUERIES, DOCS), m.score(tok, QUERIES, DOCS[2:] + DOCS[:2]))
    assert differ(RefMasked(hf, "mask2").score(tok, QUERIES, DOCS),
                  RefMasked(hf, "mask2").score(tok, QUERIES, DOCS[2:] + DOCS[:2]))


def test_masked_segments_and_batch_invariance(hf, tok):
    m = RefMasked(hf, "mask1")
    enc = tok([("a b", "c d e")], return_tensors="pt")
    from oracle.reference import segment_codes
    codes = segment_codes(enc["input_ids"], tok.sep_token_id, tok.cls_token_id, tok.pad_token_id)
    assert codes[0].diagonal().tolist() == [0, 6, 6, 12, 18, 18, 18, 24]  # cls q q sep1 d d d sep2
    masks = m.layer_masks(enc["input_ids"], tok)
    assert masks[0][0, 0].tolist() == [1, 1, 1, 1, 0, 0, 0, 0]  # mask1: CLS -> cls, query, sep_1
    close(m.score(tok, QUERIES, DOCS), one_by_one(m, tok, QUERIES, DOCS))


# ---------------------------------------------------------------- MICE
def test_mice_state_dict_layout(hf):
    keys = list(RefMiceBert(hf, 4, 3).state_dict())
    assert {k.split(".")[0] for k in keys} == {"embeddings", "bottom_layers", "top_layers",
                                               "pooler", "classifier"}
    assert sum(k.startswith("bottom_layers.") and k.endswith("query.weight") for k in keys) == 4
    tops = {".".join(k.split(".")[2:4]) for k in keys if k.startswith("top_layers.0.")}
    assert tops == {"attention.self", "attention.output", "crossattention.self",
                    "crossattention.output", "intermediate.dense", "output.dense",
                    "output.LayerNorm"}
    assert [k for k in keys if k.startswith(("pooler", "classifier"))] == [
        "pooler.dense.weight", "pooler.dense.bias", "classifier.weight", "classifier.bias"]
    assert any(k.startswith("top_layers.2.") for k in keys)
    assert not any(k.startswith(("top_layers.3.", "bottom_layers.4.")) for k in keys)
    ref = RefMiceBert(hf, 4, 3)
    close(ref.top_layers[1].crossattention.self.key.weight, hf.bert.encoder.layer[5].attention.self.key.weight)


def test_mice_bottom_only_is_query_cross_encoder(hf, tok):
    """m = L, n = 0: the score is the HF model applied to the query alone."""
    enc = tok(QUERIES, padding=True, return_tensors="pt")
    with torch.no_grad():
        want = hf(**enc).logits.squeeze(-1)
    close(RefMiceBert(hf, L, 0).score(tok, QUERIES, DOCS), want)


@pytest.mark.parametrize("first", [True, False])
def test_mice_options_change_scores(hf, tok, first):
    base = RefMiceBert(hf, 4, 3, cross_attn_first=first).score(tok, QUERIES, DOCS)
    assert differ(base, RefMiceBert(hf, 4, 3, cross_attn_first=first, perturb_cross_seed=1).score(tok, QUERIES, DOCS))
    assert differ(base, RefMiceBert(hf, 4, 3, cross_attn_first=not first).score(tok, QUERIES, DOCS))
    assert differ(base, RefMiceBert(hf, 4, 3, cross_attn_first=first, mask_cls_to_doc=True).score(tok, QUERIES, DOCS))
    assert differ(base, RefMiceBert(hf, 4, 3, cross_attn_first=first, mask_query_to_cls=False).score(tok, QUERIES, DOCS))
    assert differ(base, RefMiceBert(hf, 4, 3, cross_attn_first=first).score(tok, QUERIES, DOCS[1:] + DOCS[:1]))


@pytest.mark.parametrize("first", [True, False])
@pytest.mark.parametrize("mn", [(4, 3), (2, 6), (0, 4)])
def test_mice_batch_invariance_default(hf, tok, first, mn):
    m = RefMiceBert(hf, *mn, cross_attn_first=first, perturb_cross_seed=3)
    close(m.score(tok, QUERIES, DOCS), one_by_one(m, tok, QUERIES, DOCS))


def test_mice_mask_cls_to_doc_quirks(hf, tok):
    """Reference quirk: the fully masked [CLS] cross-attention row (finfo.min everywhere)
    becomes a UNIFORM average over all document positions, padding included."""
    inv = RefMiceBert(hf, 4, 3, mask_cls_to_doc=True)
    assert differ(inv.score(tok, QUERIES, DOCS), one_by_one(inv, tok, QUERIES, DOCS))
    same_doc = [DOCS[0]] * len(QUERIES)  # equal doc lengths: no doc padding, invariant again
    close(inv.score(tok, QUERIES, same_doc), one_by_one(inv, tok, QUERIES, same_doc))
    # vanilla with one top layer: cross-attention is skipped for CLS -> document ignored
    van = RefMiceBert(hf, 4, 1, cross_attn_first=False, mask_cls_to_doc=True)
    close(van.score(tok, QUERIES, DOCS), van.score(tok, QUERIES, DOCS[1:] + DOCS[:1]))


# ---------------------------------------------------------------- ColBERT
def test_colbert_batch_invariance_and_inputs(hf, tok):
    cb = RefColBERT(hf)
    assert tuple(cb.projection_weight.shape) == (128, 64)
    s = cb.score(tok, QUERIES, DOCS)
    close(s, one_by_one(cb, tok, QUERIES, DOCS))
    close(s[:2], cb.score(tok, QUERIES[:2], DOCS[:2]))
    close(s, RefColBERT(hf.bert, projection_weight=cb.projection_weight).score(tok, QUERIES, DOCS))
    assert (s <= 32 + 1e-4).all() and (s > 0).all()
    plain = RefColBERT(hf, query_augmentation=False).score(tok, QUERIES, DOCS)
    assert differ(s, plain)
    n_q = torch.tensor([len(tok(q, truncation=True, max_length=32)["input_ids"]) for q in QUERIES])
    assert (plain <= n_q + 1e-4).all()

"""Every preset and option equals the reference configuration the paper ran, computed by the
test-only oracle (``tests/oracle``: the xpmir/mice reference models rebuilt on Hugging Face's
own ``BertLayer``), within 1e-5 of the score spread; fast == reference == oracle, with
padding and varied lengths, every weight perturbed and cross-attention weights different
from the self-attention ones."""

import pytest
import torch

from mice_bench.backbone import from_hf
from mice_bench.model import InteractionModel
from oracle.reference import (RefColBERT, RefMasked, RefMiceBert, RefPreTTR, bert_tokenizer,
                              perturbed_bert_cls, ref_cross_encoder_scores)

QUERIES = ["what is a cat", "how many legs does a spider have on average in the world",
           "x", "vitamin d bone density elderly women trial outcome"]
DOCS = ["a cat is an animal that likes milk and sleeps a lot",
        "spiders have eight legs, usually, and build webs " * 5,
        "short",
        "Vitamin D supplementation and bone mineral density in elderly women: a trial."]
# equal-length documents (no document padding): where the reference depends on padding
EQ_DOCS = ["alpha beta gamma delta epsilon", "one two three four five",
           "red green blue black white", "cat dog cow pig hen"]

L = 8


@pytest.fixture(scope="module")
def hf():
    return perturbed_bert_cls(num_layers=L, seed=3)


@pytest.fixture(scope="module")
def tok():
    return bert_tokenizer()


def _close(ours, ref, label):
    spread = float(ref.max() - ref.min())
    assert spread > 1e-3, f"{label}: degenerate scores {ref}"
    err = float((ours - ref).abs().max())
    assert err <= 1e-5 * max(spread, 1.0) + 2e-6, f"{label}: max diff {err} (spread {spread})"


def _ours(model: InteractionModel, docs=DOCS):
    out = {}
    for kind in ("reference", "fast"):
        try:
            ex = model.executor(kind)
        except Exception:  # noqa: BLE001 - no fast path (masks)
            continue
        out[kind] = ex.score_pairs(QUERIES, docs, batch_size=3)
    return out


@pytest.mark.parametrize("m,n,cross_first,cls_doc,qcls", [
    (4, 3, True, True, False), (2, 6, True, True, False), (0, 4, True, True, False),
    (4, 1, True, True, False), (4, 3, False, True, False), (3, 2, False, True, False),
    (4, 3, True, True, True), (4, 3, True, False, False), (4, 1, True, False, False),
    (4, 3, False, False, False)])
def test_mice_equals_reference(hf, tok, m, n, cross_first, cls_doc, qcls):
    ref_model = RefMiceBert(hf, m, n, cross_attn_first=cross_first, mask_cls_to_doc=not cls_doc,
                            mask_query_to_cls=not qcls, perturb_cross_seed=7).eval()
    opts = []
    if not cross_first:
        opts.append("order=self")
    if not cls_doc:
        opts.append("cls_doc=0")
    if qcls:
        opts.append("qcls=1")
    variant = f"mice-l{m}+{n}" + (f"[{','.join(opts)}]" if opts else "")
    model = InteractionModel.from_reference_mice(ref_model.state_dict(), config=hf.config,
                                          tokenizer=tok, variant=variant)
    assert "cross_from_self" not in model.random_init
    # the reference averages padding when [CLS] may not read the document: compare unpadded
    docs = DOCS if cls_doc else EQ_DOCS
    assert cls_doc or len({len(tok(d)["input_ids"]) for d in docs}) == 1
    with torch.no_grad():
        expected = ref_model.score(tok, QUERIES, docs)
    ours = _ours(model, docs)
    assert set(ours) == {"reference", "fast"}
    for kind, s in ours.items():
        _close(s, expected, f"{variant} {kind}")


def test_mice_from_cross_encoder_copies_self_attention(hf, tok):
    ref_model = RefMiceBert(hf, 4, 3).eval()  # cross seeded from self, as InitMICEBERTFromHFID
    model = InteractionModel(from_hf(hf, tok), "mice-l4+3")
    assert model.random_init == ["cross_from_self"]
    with torch.no_grad():
        _close(model.executor("fast").score_pairs(QUERIES, DOCS),
               ref_model.score(tok, QUERIES, DOCS), "mice from a cross-encoder")


@pytest.mark.parametrize("k", [0, 2, 4, 7])
def test_prettr_equals_reference(hf, tok, k):
    with torch.no_grad():
        expected = RefPreTTR(hf, join_layer=k).eval().score(tok, QUERIES, DOCS)
    for kind, s in _ours(InteractionModel(from_hf(hf, tok), f"prettr-l{k}")).items():
        _close(s, expected, f"prettr-l{k} {kind}")


@pytest.mark.parametrize("step", ["mask0", "mask1", "mask2", "mask3-l0", "mask3-l4",
                                  "mask3-l6"])
def test_masks_equal_reference(hf, tok, step):
    with torch.no_grad():
        expected = RefMasked(hf, step).eval().score(tok, QUERIES, DOCS)
    ours = _ours(InteractionModel(from_hf(hf, tok), step))
    assert "reference" in ours
    for kind, s in ours.items():
        _close(s, expected, f"{step} {kind}")


def test_ce_equals_reference(hf, tok):
    expected = ref_cross_encoder_scores(hf, tok, QUERIES, DOCS)
    for kind, s in _ours(InteractionModel(from_hf(hf, tok), "ce")).items():
        _close(s, expected, f"ce {kind}")


@pytest.mark.parametrize("augment", [True, False])
def test_colbert_equals_reference(hf, tok, augment):
    ref = RefColBERT(hf, query_augmentation=augment).eval()
    bb = from_hf(hf, tok)
    bb.projection = torch.nn.Parameter(ref.projection_weight.detach().clone(),
                                       requires_grad=False)
    variant = "colbert" if augment else "colbert[qaug=0]"
    model = InteractionModel(bb, variant)
    assert "projection" not in model.random_init
    with torch.no_grad():
        expected = ref.score(tok, QUERIES, DOCS)
    for kind, s in _ours(model).items():
        _close(s, expected, f"{variant} {kind}")


def test_colbert_without_projection_is_flagged(hf, tok):
    model = InteractionModel(from_hf(hf, tok), "colbert")
    assert "projection" in model.random_init
    assert model.executor("fast").flags["projection_random"] is True

"""The MICE reference's ModernBERT model (``ModernBertMiceCrossEncoder``, xpmir/mice @b4dc361),
rebuilt by the test-only oracle on Hugging Face's own ModernBERT modules
(``tests/oracle/reference.py``), equals mice-bench's fast and reference executors within 1e-5
of the score spread: sub-layer orders, ``[CLS]`` options, ``cls`` and ``mean`` pooling,
padded batches, documents longer than the local window, cross-attention weights different
from the self-attention ones, and the reference's state-dict layout on disk."""

import pytest
import torch

from mice_bench.backbone import from_hf
from mice_bench.model import InteractionModel
from oracle.reference import RefMiceModernBert, bert_tokenizer, perturbed_modernbert_cls

QUERIES = ["what is a cat", "how many legs does a spider have on average in the world",
           "x", "vitamin d bone density elderly women trial outcome"]
DOCS = ["a cat is an animal that likes milk and sleeps a lot",
        "spiders have eight legs, usually, and build webs " * 5,
        "short",
        "Vitamin D supplementation and bone mineral density in elderly women: a trial."]
# equal lengths (no padding): where the reference depends on padding (masked [CLS] row
# averages every document position; mean pooling averages every query position)
EQ_DOCS = ["alpha beta gamma delta epsilon", "one two three four five",
           "red green blue black white", "cat dog cow pig hen"]
EQ_QUERIES = ["alpha beta", "one two", "red green", "cat dog"]


@pytest.fixture(scope="module")
def tok():
    return bert_tokenizer()


@pytest.fixture(scope="module", params=["cls", "mean"])
def hf(request):
    return perturbed_modernbert_cls(num_layers=8, pooling=request.param, seed=3)


def _close(ours, ref, label):
    spread = float(ref.max() - ref.min())
    assert spread > 1e-3, f"{label}: degenerate scores {ref}"
    err = float((ours - ref).abs().max())
    assert err <= 1e-5 * max(spread, 1.0) + 2e-6, f"{label}: max diff {err} (spread {spread})"


def _variant(m, n, cross_first, cls_doc, qcls):
    opts = [o for o, on in (("order=self", not cross_first), ("cls_doc=0", not cls_doc),
                            ("qcls=1", qcls)) if on]
    return f"mice-l{m}+{n}" + (f"[{','.join(opts)}]" if opts else "")


@pytest.mark.parametrize("m,n,cross_first,cls_doc,qcls", [
    (4, 3, True, True, False), (0, 4, True, True, False), (4, 1, True, True, False),
    (4, 3, False, True, False), (3, 2, False, True, False), (4, 3, True, False, False),
    (4, 1, True, False, False), (4, 3, False, False, False), (4, 3, True, True, True)])
def test_modernbert_mice_equals_reference(hf, tok, m, n, cross_first, cls_doc, qcls):
    ref = RefMiceModernBert(hf, m, n, cross_attn_first=cross_first, mask_cls_to_doc=not cls_doc,
                            mask_query_to_cls=not qcls, perturb_cross_seed=7)
    variant = _variant(m, n, cross_first, cls_doc, qcls)
    model = InteractionModel.from_reference_mice(ref.state_dict(), config=hf.config, tokenizer=tok,
                                          variant=variant, local_attention="global")
    assert "cross_from_self" not in model.random_init
    assert model.backbone.family.name == "modernbert" and model.backbone.local_window is None
    mean = hf.config.classifier_pooling == "mean"
    queries, docs = (EQ_QUERIES if mean else QUERIES), (DOCS if cls_doc else EQ_DOCS)
    if cls_doc:  # a document longer than the local window (8 tokens)
        assert max(len(tok(d)["input_ids"]) for d in docs) > 4 * hf.config.local_attention
    expected = ref.score(tok, queries, docs)
    for kind in ("reference", "fast"):
        got = model.executor(kind).score_pairs(queries, docs, batch_size=3)
        _close(got, expected, f"{variant} {hf.config.classifier_pooling} {kind}")


def test_modernbert_mice_from_cross_encoder_seeds_cross_from_wqkv(hf, tok):
    """``InitMICEModernBERTFromHFID``: cross q/k/v = the Wqkv slices, Wo copied. Texts
    shorter than half the window (64): the reference's global attention and the window of a
    Hugging Face checkpoint agree."""
    hf = perturbed_modernbert_cls(num_layers=8, pooling=hf.config.classifier_pooling, seed=4,
                                  local_attention=128)
    ref = RefMiceModernBert(hf, 4, 3)
    model = InteractionModel(from_hf(hf, tok), "mice-l4+3")
    assert model.random_init == ["cross_from_self"] and model.backbone.local_window == 64
    queries = EQ_QUERIES if hf.config.classifier_pooling == "mean" else QUERIES
    docs = DOCS
    _close(model.executor("fast").score_pairs(queries, docs), ref.score(tok, queries, docs),
           "mice from a cross-encoder")


def test_reference_modernbert_checkpoint_directory(tok, tmp_path):
    """The reference's saved layout: ``model.safetensors`` (its state dict), the config in
    ``contextualization_layers/``, the tokenizer; loaded through ``from_pretrained``."""
    from safetensors.torch import save_file

    hf = perturbed_modernbert_cls(num_layers=6, seed=5)
    ref = RefMiceModernBert(hf, 2, 3, perturb_cross_seed=1)
    d = tmp_path / "ref"
    d.mkdir()
    sd = ref.state_dict()
    assert any(k.startswith("top_layers.0.crossattention.q_proj") for k in sd)
    save_file({k: v.contiguous() for k, v in sd.items()}, str(d / "model.safetensors"))
    hf.config.save_pretrained(str(d / "contextualization_layers"))
    tok.save_pretrained(str(d))
    model = InteractionModel.from_pretrained(d, local_attention="global")
    assert str(model.spec) == "mice-l2+3"
    expected = ref.score(tok, QUERIES, DOCS)
    got = model.executor().score_pairs(QUERIES, DOCS)
    _close(got, expected, "reference directory")
    # the checkpoint's sliding window instead of the reference's global attention
    windowed = InteractionModel.from_reference_mice(d)     # the default: the window
    assert windowed.backbone.local_window == 4
    assert (windowed.executor().score_pairs(QUERIES, DOCS) - got).abs().max() > 1e-4
    # saved again in the Hugging Face layout, it keeps its semantics
    model.save_pretrained(tmp_path / "hf")
    again = InteractionModel.from_pretrained(tmp_path / "hf")
    assert torch.allclose(again.executor().score_pairs(QUERIES, DOCS), got, atol=1e-6)

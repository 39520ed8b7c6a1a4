"""ModernBERT's local layers: one option, one default, for every way of loading.

``local_attention``: ``window`` (default: the checkpoint's sliding window, as Hugging Face and
flash attention run it) or ``global`` (every position, as the MICE reference's eager attention
runs it). Both settings are checked against the reference re-implemented test-side
(``tests/oracle/reference.py``, with and without the window) for a model read in the
reference's own layout and for the same weights read as a Hugging Face checkpoint, and the
setting that applied is recorded in results."""

from __future__ import annotations

import json

import pytest
import torch

from mice_bench.backbone import DEFAULT_LOCAL_ATTENTION, from_hf, load_backbone
from mice_bench.errors import UsageError
from mice_bench.model import InteractionModel
from oracle.reference import RefMiceModernBert, bert_tokenizer, perturbed_modernbert_cls

QUERIES = ["what is a cat", "how many legs does a spider have on average in the world",
           "vitamin d bone density elderly women trial outcome"]
DOCS = ["a cat is an animal that likes milk and sleeps a lot",
        "spiders have eight legs, usually, and build webs " * 5,
        "Vitamin D supplementation and bone mineral density in elderly women: a trial."]


@pytest.fixture(scope="module")
def tok():
    return bert_tokenizer()


@pytest.fixture(scope="module")
def hf():
    """8 layers, local window of 8 tokens (every other layer), documents far longer."""
    return perturbed_modernbert_cls(num_layers=8, seed=3)


def _close(ours, ref, label):
    spread = float(ref.max() - ref.min())
    assert spread > 1e-3, label
    err = float((ours - ref).abs().max())
    assert err <= 1e-5 * max(spread, 1.0) + 2e-6, f"{label}: max diff {err} (spread {spread})"


def test_one_default_for_every_path(hf, tok):
    assert DEFAULT_LOCAL_ATTENTION == "window"
    ref = RefMiceModernBert(hf, 3, 2)
    via_ref = InteractionModel.from_reference_mice(ref.state_dict(), config=hf.config,
                                                   tokenizer=tok)
    via_hf = from_hf(hf, tok)
    assert via_ref.backbone.local_attention == via_hf.local_attention == "window"
    assert via_ref.backbone.local_window == via_hf.local_window == 4


@pytest.mark.parametrize("mode", ["window", "global"])
@pytest.mark.parametrize("m,n", [(3, 2), (4, 3)])
def test_reference_layout_equals_the_reference_in_both_settings(hf, tok, mode, m, n):
    assert max(len(tok(d)["input_ids"]) for d in DOCS) > 4 * hf.config.local_attention
    ref = RefMiceModernBert(hf, m, n, local_window=mode == "window", perturb_cross_seed=7)
    model = InteractionModel.from_reference_mice(ref.state_dict(), config=hf.config,
                                                 tokenizer=tok, variant=f"mice-l{m}+{n}",
                                                 local_attention=mode)
    assert model.backbone.local_attention == mode
    expected = ref.score(tok, QUERIES, DOCS)
    for kind in ("reference", "fast"):
        _close(model.executor(kind).score_pairs(QUERIES, DOCS, batch_size=2), expected,
               f"mice-l{m}+{n} {mode} {kind}")


@pytest.mark.parametrize("mode", ["window", "global"])
def test_hugging_face_checkpoint_equals_the_reference_in_both_settings(hf, tok, tmp_path,
                                                                       mode):
    """The same weights as a Hugging Face checkpoint folder, loaded by load_backbone: MICE
    initialised from the cross-encoder (cross q/k/v from Wqkv) as the reference does."""
    hf.save_pretrained(tmp_path / "mb")
    tok.save_pretrained(tmp_path / "mb")
    bb = load_backbone(str(tmp_path / "mb"), local_attention=mode)
    assert bb.local_attention == mode
    ref = RefMiceModernBert(hf, 4, 3, local_window=mode == "window")
    model = InteractionModel(bb, "mice-l4+3")
    _close(model.executor("fast").score_pairs(QUERIES, DOCS), ref.score(tok, QUERIES, DOCS),
           f"hf checkpoint {mode}")


def test_the_two_settings_differ_on_long_documents(hf, tok):
    """The checks above can fail: with documents longer than the window the settings give
    other scores (and the oracle's two modes differ as much)."""
    ref_w = RefMiceModernBert(hf, 3, 2, local_window=True).score(tok, QUERIES, DOCS)
    ref_g = RefMiceModernBert(hf, 3, 2, local_window=False).score(tok, QUERIES, DOCS)
    assert (ref_w - ref_g).abs().max() > 1e-3


def test_unknown_setting_is_refused(hf, tok):
    with pytest.raises(UsageError, match="valid: window, global"):
        InteractionModel.from_reference_mice(RefMiceModernBert(hf, 3, 2).state_dict(),
                                             config=hf.config, tokenizer=tok,
                                             local_attention="sliding")
    with pytest.raises(UsageError, match="valid: window, global"):
        load_backbone("ettin-17m", local_attention="none")


def test_results_record_which_setting_applied(tmp_path, monkeypatch, hf, tok):
    """effectiveness records ``model.local_attention`` (and --local-attention reaches the
    loader)."""
    from mice_bench.effectiveness import runner
    from mice_bench.effectiveness.runner import run_effectiveness

    from test_effectiveness_pipeline import cfg, fixture_collection

    seen = []

    def load(name, local_attention=None, **kw):
        seen.append(local_attention)
        bb = from_hf(hf, tok, name=name)
        if local_attention == "global":
            bb.local_window = None
        return bb

    import mice_bench.backbone

    monkeypatch.setattr(runner, "load_collection", fixture_collection)
    monkeypatch.setattr(mice_bench.backbone, "load_backbone", load)
    for mode in ("window", "global"):
        out = f"out-{mode}"
        run_effectiveness(cfg(tmp_path, out=out, variants="bm25,ce", local_attention=mode))
        res = json.loads((tmp_path / out / "dl19" / "run-effectiveness-run" / "minilm-l6" /
                          "ce.json").read_text())
        assert res["model"]["local_attention"] == mode
        assert res["config"]["local_attention"] == mode
    assert seen == ["window", "global"]
    with pytest.raises(UsageError, match="--local-attention"):
        run_effectiveness(cfg(tmp_path, out="x", variants="bm25,ce", local_attention="all"))
    assert torch.is_tensor(hf.model.embeddings.tok_embeddings.weight)

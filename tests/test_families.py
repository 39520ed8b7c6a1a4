"""Backbone families beyond BERT (ELECTRA, RoBERTa / XLM-R, ModernBERT): parity with Hugging
Face's own ``*ForSequenceClassification``, fast == reference for the presets, gradients,
checkpoints, parameter counts, FLOP dimensions and the shipped architecture names."""

import json
import random

import pytest
import torch

from conftest import DOCS, QUERIES
from mice_bench.backbone import from_hf, load_backbone, packaged_tokenizer, random_hf_model
from mice_bench.errors import UsageError
from mice_bench.executors import DocStates, make_executor
from mice_bench.model import InteractionModel
from mice_bench.spec import parse

_MB = dict(model_type="modernbert", vocab_size=30522, hidden_size=32, num_attention_heads=4,
           intermediate_size=48, max_position_embeddings=512, local_attention=8,
           global_attn_every_n_layers=2, num_labels=1, initializer_range=0.2, pad_token_id=0,
           cls_token_id=101, sep_token_id=102, bos_token_id=101, eos_token_id=102)
CONFIGS = {
    "electra": dict(model_type="electra", vocab_size=30522, embedding_size=16, hidden_size=32,
                    num_attention_heads=4, intermediate_size=64, max_position_embeddings=128,
                    num_labels=1, initializer_range=0.2),
    "roberta": dict(model_type="roberta", vocab_size=30522, hidden_size=32,
                    num_attention_heads=4, intermediate_size=64, max_position_embeddings=130,
                    type_vocab_size=1, pad_token_id=1, num_labels=1, initializer_range=0.2),
    "xlm-roberta": dict(model_type="xlm-roberta", vocab_size=30522, hidden_size=32,
                        num_attention_heads=4, intermediate_size=64,
                        max_position_embeddings=130, type_vocab_size=1, pad_token_id=1,
                        num_labels=1, initializer_range=0.2),
    "modernbert": dict(_MB),
    "modernbert-mean": dict(_MB, classifier_pooling="mean"),
    "modernbert-bias": dict(_MB, attention_bias=True, mlp_bias=True, norm_bias=True,
                            classifier_bias=True),
}
FAMILY = {"electra": "electra", "roberta": "roberta", "xlm-roberta": "roberta"}


def _model(name, layers=6, seed=1, **kw):
    cfg = dict(CONFIGS[name], num_hidden_layers=layers, **kw)
    return random_hf_model(cfg, seed=seed)


@pytest.fixture(scope="module", params=["electra", "roberta", "modernbert", "modernbert-mean"])
def fam_bb(request):  # xlm-roberta and modernbert-bias share these code paths
    model = _model(request.param)
    return request.param, model, from_hf(model, packaged_tokenizer(), name=request.param)


def hf_logits(model, tb, token_types):
    kw = dict(input_ids=tb.input_ids, attention_mask=tb.attention_mask.long())
    if token_types:
        kw["token_type_ids"] = tb.token_type_ids
    with torch.no_grad():
        return model(**kw).logits[:, 0]


# ----------------------------------------------------------------------------- parity with HF
@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("layers", [2, 5])
def test_ce_parity_with_hf(name, layers):
    model = _model(name, layers=layers, seed=layers)
    bb = from_hf(model, packaged_tokenizer())
    assert bb.family.name == FAMILY.get(name, "modernbert") and not bb.classifier_random
    for kind in ("fast", "reference"):
        ex = make_executor("ce", bb, kind)
        tb = ex.tokenize_pairs(QUERIES, DOCS)
        assert tb.attention_mask.sum(1).unique().numel() > 1  # real padding in the batch
        if name.startswith("modernbert"):  # longer than the local window (8 tokens)
            assert int(tb.attention_mask.sum(1).max()) > 4 * CONFIGS[name]["local_attention"]
        ref = hf_logits(model, tb, bb.has_token_types)
        assert float(ref.std()) > 1e-3
        assert (ex.forward_pairs(tb) - ref).abs().max() < 1e-5, (name, kind)


def test_modernbert_window_matters():
    """Sequences longer than the local window: dropping the window changes the scores."""
    model = _model("modernbert")
    bb = from_hf(model, packaged_tokenizer())
    ex = make_executor("ce", bb)
    tb = ex.tokenize_pairs(QUERIES, DOCS)
    with_window = ex.forward_pairs(tb)
    bb2 = bb.converted()
    bb2.local_window = None
    assert (make_executor("ce", bb2).forward_pairs(tb) - with_window).abs().max() > 1e-4


def test_roberta_pairs_use_the_family_template():
    bb = from_hf(_model("roberta"), packaged_tokenizer())
    tb = make_executor("ce", bb).tokenize_pairs(["a cat"], ["a dog"])
    cls, sep = bb.tokenizer.cls_token_id, bb.tokenizer.sep_token_id
    ids = tb.input_ids[0].tolist()
    assert ids[0] == cls and ids.count(sep) == 3 and ids[-1] == sep  # <s> q </s></s> d </s>
    assert tb.token_type_ids.abs().sum() == 0  # one token type
    assert tb.segment_ids[0].tolist().count(2) == 2  # both middle separators are sep_q


@pytest.mark.parametrize("name", ["electra", "roberta", "modernbert"])
def test_base_encoder_gets_a_flagged_random_head(name):
    model = _model(name)
    base = getattr(model, {"electra": "electra", "roberta": "roberta"}.get(name, "model"))
    bb = from_hf(base, packaged_tokenizer())
    assert bb.classifier_random
    s = make_executor("ce", bb).score_pairs(QUERIES, DOCS)
    assert torch.isfinite(s).all() and float(s.std()) > 0


def test_doc_token_type_needs_token_types():
    bb = from_hf(_model("modernbert"), packaged_tokenizer())
    with pytest.raises(UsageError, match="token types"):
        make_executor("colbert[doc_tt=1]", bb)


# ----------------------------------------------------------------------------- fast == reference
FAMILY_PRESETS = ["ce", "prettr-l0", "prettr-l3", "prettr-l3[qlen=20]", "mice-l2+3",
                  "mice-l0+6", "mice-l2+1", "mice-l2+4[order=self]", "mice-l2+3[cls_doc=0]",
                  "mice-l2+3[order=self,cls_doc=0]", "mice-l2+3[qcls=1]",
                  "mice-l2+3[attn=joint]", "colbert", "colbert[proj=0,qaug=0]", "biencoder",
                  "prettr-l2[head=maxsim]"]


@pytest.mark.parametrize("variant", FAMILY_PRESETS)
def test_fast_equals_reference_presets(fam_bb, variant):
    name, _, bb = fam_bb
    fast, ref = make_executor(variant, bb, "fast"), make_executor(variant, bb, "reference")
    a, b = fast.score_pairs(QUERIES, DOCS, batch_size=3), ref.score_pairs(QUERIES, DOCS)
    assert torch.isfinite(a).all()
    assert (a - b).abs().max() < 1e-5 * max(float(b.max() - b.min()), 1.0), (name, variant)


@pytest.mark.parametrize("seed", range(6))
def test_fast_equals_reference_random_specs_modernbert(seed):
    """Rotary positions of frozen extra keys, windows across parts, uniform cross rows."""
    from test_executors import _random_split_spec

    bb = from_hf(_model("modernbert"), packaged_tokenizer())
    from dataclasses import replace

    sp = replace(_random_split_spec(random.Random(100 + seed), bb.num_layers),
                 doc_token_type=0)  # no token types in ModernBERT
    a = make_executor(sp, bb, "fast").score_pairs(QUERIES, DOCS, batch_size=2)
    b = make_executor(sp, bb, "reference").score_pairs(QUERIES, DOCS, batch_size=4)
    assert torch.isfinite(a).all() and (a - b).abs().max() < 1e-4, str(sp)


@pytest.mark.parametrize("variant", ["mice-l2+3", "mice-l2+3[attn=joint]", "prettr-l2[qlen=20]",
                                     "colbert"])
def test_kv_cache_and_stored_states_modernbert(variant, tmp_path):
    bb = from_hf(_model("modernbert"), packaged_tokenizer())
    ex = make_executor(variant, bb, "fast")
    qs, ds = ex.encode_queries(QUERIES[:2]), ex.encode_documents(DOCS, batch_size=2)
    ds_kv = ex.encode_documents(DOCS, kv_cache=True, batch_size=3)
    qi, di = torch.tensor([0, 0, 1, 1, 0]), torch.tensor([0, 1, 2, 3, 3])
    base = ex.score_states(qs, qi, ds, di)
    assert (ex.score_states(qs, qi, ds_kv, di) - base).abs().max() < 1e-5
    # states stored without positions (older files, other stores): rebuilt from the spec
    bare = DocStates(ds.hidden, ds.mask, ds.seg, None, None, ds.vectors)
    assert (ex.score_states(qs, qi, bare, di) - base).abs().max() < 1e-5
    ds_kv.save(tmp_path / "d.pt")
    assert torch.equal(ex.score_states(qs, qi, DocStates.load(tmp_path / "d.pt"), di),
                       ex.score_states(qs, qi, ds_kv, di))


@pytest.mark.parametrize("name,variant", [
    *[("modernbert-mean", v) for v in ("ce", "mice-l2+3", "mice-l2+3[order=self,cls_doc=0]",
                                       "prettr-l3", "colbert")],
    ("roberta", "mice-l2+3"), ("roberta", "prettr-l3"), ("electra", "mice-l2+3")])
def test_gradients_fast_equal_reference(name, variant):
    model = InteractionModel(from_hf(_model(name), packaged_tokenizer()), variant).requires_grad_(True)
    grads = {}
    for kind in ("reference", "fast"):
        ex = model.executor(kind)
        model.zero_grad()
        scores = ex.forward_pairs(ex.tokenize_pairs(QUERIES, DOCS))
        (scores * torch.arange(1.0, len(QUERIES) + 1)).sum().backward()
        grads[kind] = {n: p.grad.clone() for n, p in model.named_parameters()
                       if p.grad is not None}
    assert grads["reference"] and grads["fast"].keys() == grads["reference"].keys()
    scale = max(float(g.abs().max()) for g in grads["reference"].values())
    for n, g in grads["reference"].items():
        assert (grads["fast"][n] - g).abs().max() <= 1e-5 * scale, n


# ----------------------------------------------------------------------------- checkpoints
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_saved_ce_loads_unchanged_in_transformers(name, tmp_path):
    from transformers import AutoModelForSequenceClassification

    model = _model(name, layers=3)
    bb = from_hf(model, packaged_tokenizer())
    InteractionModel(bb, "ce").save_pretrained(tmp_path / "ce")
    hf = AutoModelForSequenceClassification.from_pretrained(str(tmp_path / "ce")).eval()
    assert type(hf) is type(model)
    ref_sd = model.state_dict()
    for k, v in hf.state_dict().items():
        assert torch.equal(v, ref_sd[k]), k
    loaded = InteractionModel.from_pretrained(tmp_path / "ce")
    assert loaded.backbone.family is bb.family
    assert torch.equal(loaded.executor().score_pairs(QUERIES, DOCS),
                       InteractionModel(bb, "ce").executor().score_pairs(QUERIES, DOCS))


@pytest.mark.parametrize("name", ["modernbert-bias", "roberta"])
def test_mice_checkpoint_round_trip_keeps_cross_weights(name, tmp_path):
    model = InteractionModel(from_hf(_model(name), packaged_tokenizer()), "mice-l2+3[order=self]")
    with torch.no_grad():
        for lw in model.backbone.layers[2:5]:
            lw.cross.wq.add_(0.3)
    before = model.executor().score_pairs(QUERIES, DOCS)
    model.save_pretrained(tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    assert cfg["num_hidden_layers"] == 5
    loaded = InteractionModel.from_pretrained(tmp_path / "m")
    assert str(loaded.spec) == "mice-l2+3[order=self]"
    assert torch.equal(loaded.backbone.layers[2].cross.wq, model.backbone.layers[2].cross.wq)
    assert torch.equal(loaded.executor().score_pairs(QUERIES, DOCS), before)


# ----------------------------------------------------------------------------- counts, FLOPs
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_param_count_against_hugging_face(name):
    model = _model(name)
    bb = from_hf(model, packaged_tokenizer())
    hf_count = sum(p.numel() for p in model.parameters())
    assert bb.param_count(parse("ce")) == hf_count == bb.param_count()
    # mice-l2+2: a 4-layer classifier plus 2 cross-attention sub-layers
    four = sum(p.numel() for p in _model(name, layers=4).parameters())
    H = bb.hidden_size
    if bb.family.name == "modernbert":
        cross = 4 * H * H + (4 * H if CONFIGS[name].get("attention_bias") else 0)
    else:
        cross = 4 * H * H + 4 * H + 2 * H  # Q, K, V, O with biases + LayerNorm
    assert bb.param_count(parse("mice-l2+2")) == four + 2 * cross


def test_flop_dims_follow_the_family():
    from mice_bench.latency.flops import ModelDims, pair_flops

    bb = from_hf(_model("modernbert"), packaged_tokenizer())
    dims = ModelDims.of(bb)
    assert dims.glu and dims.local_window == 4 and dims.local_layers == (1, 3, 5)
    plain = ModelDims(6, 32, 48)
    a = pair_flops(parse("ce"), dims, 8, 64)["per_pair"]
    b = pair_flops(parse("ce"), plain, 8, 64)["per_pair"]
    assert a != b
    assert ModelDims.of(from_hf(_model("roberta"), packaged_tokenizer())) == ModelDims(6, 32, 64)


# ----------------------------------------------------------------------------- architecture names
@pytest.mark.parametrize("name,layers,hidden,family", [
    ("ettin-17m", 7, 256, "modernbert"), ("ettin-32m", 10, 384, "modernbert"),
    ("ettin-68m", 19, 512, "modernbert"), ("ettin-150m", 22, 768, "modernbert"),
    ("modernbert-base", 22, 768, "modernbert"), ("electra-base", 12, 768, "electra"),
    ("roberta-base", 12, 768, "roberta")])
def test_shipped_architecture_configs(name, layers, hidden, family):
    from mice_bench.backbone import arch_config

    cfg = arch_config(name)
    assert cfg["num_hidden_layers"] == layers and cfg["hidden_size"] == hidden
    assert {"modernbert": "modernbert", "electra": "electra",
            "roberta": "roberta"}[cfg["model_type"]] == family


def test_ettin_architecture_name_runs_offline():
    bb = load_backbone("ettin-17m")
    assert bb.random_weights and bb.family.name == "modernbert" and "random weights" in \
        bb.describe()
    assert 16e6 < bb.param_count() < 18e6  # the "17m"
    for v in ("ce", "mice-l4+3", "colbert"):
        s = make_executor(v, bb).score_pairs(QUERIES, DOCS)
        assert torch.isfinite(s).all()


@pytest.mark.parametrize("variant", ["colbert", "colbert[proj=0,qaug=0]"])
def test_colbert_document_vectors_every_family(fam_bb, variant):
    """Stored head vectors (final norm, projection, unit length) score as the reference
    executor scores the texts, in every family (ModernBERT's final norm included)."""
    name, _, bb = fam_bb
    ex, ref = make_executor(variant, bb, "fast"), make_executor(variant, bb, "reference")
    dv = ex.encode_documents(DOCS, vectors=True, batch_size=2)
    qs = ex.encode_queries(QUERIES[:1])
    got = ex.score_query(qs, dv)
    want = ref.score_pairs(QUERIES[:1] * len(DOCS), DOCS)
    assert (got - want).abs().max() < 1e-5 * max(float(want.max() - want.min()), 1.0), name

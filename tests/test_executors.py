"""Executors: parity with Hugging Face, fast == reference, masking semantics."""

import random

import pytest
import torch

from conftest import DOCS, QUERIES, tiny_config
from mice_bench import spec as S
from mice_bench.backbone import from_hf, packaged_tokenizer, random_hf_model
from mice_bench.executors import DocStates, make_executor
from mice_bench.executors.layers import attend
from mice_bench.spec import custom, parse

FAST_PRESETS = ["ce", "prettr-l0", "prettr-l3", "prettr-l3[qlen=20]", "mice-l2+3", "mice-l0+6",
                "mice-l3+2", "mice-l2+1", "mice-l2+4[order=self]", "mice-l2+3[cls_doc=0]",
                "mice-l2+3[order=self,cls_doc=0]", "mice-l2+3[qcls=1]",
                "mice-l2+3[attn=joint]", "colbert", "colbert[proj=0,qaug=0]", "biencoder",
                "colbert[doc_tt=1]", "prettr-l2[head=maxsim]", "biencoder[head=maxsim,doc_tt=1]"]


def hf_logits(model, tb):
    with torch.no_grad():
        return model(input_ids=tb.input_ids, token_type_ids=tb.token_type_ids,
                     attention_mask=tb.attention_mask.long()).logits[:, 0]


@pytest.mark.parametrize("layers,hidden,heads,act", [(2, 16, 2, "gelu"), (6, 32, 4, "gelu"),
                                                     (3, 48, 6, "gelu_new"), (4, 32, 8, "relu")])
def test_ce_parity_with_hf_tiny(layers, hidden, heads, act):
    model = random_hf_model(tiny_config(layers, hidden, heads, hidden_act=act), seed=layers)
    bb = from_hf(model, packaged_tokenizer())
    for kind in ("fast", "reference"):
        ex = make_executor("ce", bb, kind)
        tb = ex.tokenize_pairs(QUERIES, DOCS)
        assert tb.attention_mask.sum(1).unique().numel() > 1  # real padding in the batch
        assert (ex.forward_pairs(tb) - hf_logits(model, tb)).abs().max() < 1e-5


def test_ce_parity_with_hf_real_minilm(minilm_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(minilm_path, num_labels=1).eval()
    bb = from_hf(model, AutoTokenizer.from_pretrained(minilm_path))
    ex = make_executor("ce", bb)
    tb = ex.tokenize_pairs(QUERIES, DOCS)
    ours, ref = ex.forward_pairs(tb), hf_logits(model, tb)
    assert ours.dtype == torch.float32
    assert (ours - ref).abs().max() < 1e-5


def test_biencoder_matches_sentence_transformers(minilm_path):
    st = pytest.importorskip("sentence_transformers")
    from mice_bench.backbone import load_backbone

    model = st.SentenceTransformer(minilm_path, device="cpu")
    emb = model.encode(QUERIES + DOCS, convert_to_tensor=True, normalize_embeddings=True)
    expected = (emb[: len(QUERIES)] * emb[len(QUERIES):]).sum(-1).cpu()
    bb = load_backbone(minilm_path)
    assert bb.classifier_random and not bb.random_weights
    ex = make_executor("biencoder", bb)
    assert (ex.score_pairs(QUERIES, DOCS) - expected).abs().max() < 1e-5
    # the pooled embeddings are the package's documented (normalised, mean-pooled) ones
    qs = ex.encode_queries(QUERIES)
    assert (ex.pooled(qs) - emb[: len(QUERIES)].cpu()).abs().max() < 1e-5


@pytest.mark.parametrize("name", FAST_PRESETS)
def test_fast_equals_reference_presets(tiny_bb, name):
    fast = make_executor(name, tiny_bb, "fast")
    ref = make_executor(name, tiny_bb, "reference")
    a, b = fast.score_pairs(QUERIES, DOCS, batch_size=3), ref.score_pairs(QUERIES, DOCS)
    assert a.dtype == b.dtype == torch.float32 and a.shape == (len(QUERIES),)
    assert torch.isfinite(a).all()
    assert (a - b).abs().max() < 1e-5 * max(float(b.max() - b.min()), 1.0)


def _random_split_spec(rng: random.Random, L: int):
    """A random split-layout spec of the family the fast path supports."""
    def bits(n):
        return "".join(rng.choice("01") for _ in range(n))

    while True:
        s = rng.randint(0, L)
        layers = []
        for i in range(L):
            if rng.random() < 0.15:
                layers.append(S.DROPPED)
            elif i < s:  # no exchange between parts
                q = [bits(3) + "00" for _ in range(3)]
                d = ["000" + bits(2) for _ in range(2)]
                layers.append(S.LayerSpec(S.matrix(*q, *d)))
            elif rng.random() < 0.6:  # query-side interaction, document frozen
                cross = rng.random() < 0.5
                uniform = frozenset(x for x in ("cls", "query") if cross and rng.random() < 0.3)
                layers.append(S.LayerSpec(S.matrix(*(bits(5) for _ in range(3)), "00000",
                                                   "00000"),
                                          frozen=S.DOC_SIDE,
                                          cross_keys=S.DOC_SIDE if cross else frozenset(),
                                          cross_first=cross and rng.random() < 0.5,
                                          cross_uniform=uniform))
            else:  # both parts update
                layers.append(S.LayerSpec(S.matrix(*(bits(5) for _ in range(5)))))
        head = rng.choice(["cls", "cls", "maxsim", "mean-cos"])
        try:
            sp = custom("split", layers, head=head, doc_token_type=rng.randint(0, 1))
        except S.SpecError:
            continue
        if sp.fast_path(L) == "split":
            return sp


@pytest.mark.parametrize("seed", range(12))
def test_fast_equals_reference_random_specs(tiny_bb, seed):
    rng = random.Random(seed)
    sp = _random_split_spec(rng, tiny_bb.num_layers)
    assert S.parse(str(sp)) == sp
    a = make_executor(sp, tiny_bb, "fast").score_pairs(QUERIES, DOCS, batch_size=2)
    b = make_executor(sp, tiny_bb, "reference").score_pairs(QUERIES, DOCS, batch_size=4)
    assert torch.isfinite(a).all() and torch.isfinite(b).all()
    assert (a - b).abs().max() < 1e-4, str(sp)


@pytest.mark.parametrize("name", ["mice-l2+3", "mice-l2+3[order=self]", "prettr-l2[qlen=20]",
                                  "colbert"])
def test_kv_cache_and_state_storage(tiny_bb, name, tmp_path):
    ex = make_executor(name, tiny_bb, "fast")
    qs = ex.encode_queries(QUERIES[:2])
    ds = ex.encode_documents(DOCS, batch_size=2)
    ds_kv = ex.encode_documents(DOCS, kv_cache=True, batch_size=3)
    assert len(ds) == len(DOCS) and ds.hidden.shape[-1] == tiny_bb.hidden_size
    if name.startswith("mice"):
        assert sorted(ds_kv.kv) == [2, 3, 4]
    qi = torch.tensor([0, 0, 1, 1, 0])
    di = torch.tensor([0, 1, 2, 3, 3])
    base = ex.score_states(qs, qi, ds, di)
    with_kv = ex.score_states(qs, qi, ds_kv, di)
    assert (with_kv - base).abs().max() < 1e-5
    ds_kv.save(tmp_path / "docs.pt")
    loaded = DocStates.load(tmp_path / "docs.pt")
    assert torch.equal(ex.score_states(qs, qi, loaded, di), with_kv)
    # pair scoring == rerank (query encoded once) == per-pair scoring
    r = ex.rerank(QUERIES[0], DOCS, batch_size=2)
    p = ex.score_pairs([QUERIES[0]] * len(DOCS), DOCS)
    assert (r - p).abs().max() < 1e-5


def test_prettr_as_the_reference_scores_it_has_no_document_precompute(tiny_bb):
    """Document positions continue after the query: same API, states are the texts."""
    ex = make_executor("prettr-l2", tiny_bb, "fast")
    assert not ex.has_doc_precompute
    qs, ds = ex.encode_queries(QUERIES[:2]), ex.encode_documents(DOCS)
    s = ex.score_query(qs, ds, query=1)
    assert (s - ex.score_pairs([QUERIES[1]] * len(DOCS), DOCS)).abs().max() < 1e-6


def test_documents_do_not_depend_on_query(tiny_bb):
    """Split-first document states are the same whatever the query (precomputable)."""
    ex = make_executor("mice-l3+2", tiny_bb, "fast")
    ref = make_executor("mice-l3+2", tiny_bb, "reference")
    s1 = ref.score_pairs([QUERIES[0]] * 2, DOCS[:2])
    s2 = ex.score_pairs([QUERIES[0]] * 2, DOCS[:2])
    assert (s1 - s2).abs().max() < 1e-4


def test_masks_change_scores(tiny_bb):
    """Each preset really masks something: scores differ from the full cross-encoder."""
    ce = make_executor("ce", tiny_bb).score_pairs(QUERIES, DOCS)
    for n in ("mask0", "mask1", "mask2", "mask3-l2", "prettr-l2", "mice-l2+3"):
        other = make_executor(n, tiny_bb).score_pairs(QUERIES, DOCS)
        assert (other - ce).abs().max() > 1e-4, n
    m1 = make_executor("mask1", tiny_bb).score_pairs(QUERIES, DOCS)
    m2 = make_executor("mask2", tiny_bb).score_pairs(QUERIES, DOCS)
    assert (m1 - m2).abs().max() > 1e-4


def test_document_influences_mice_score(tiny_bb):
    ex = make_executor("mice-l2+2", tiny_bb)
    s = ex.score_pairs([QUERIES[0]] * 2, DOCS[:2])
    assert abs(float(s[0] - s[1])) > 1e-5


def test_empty_rows_give_zero_not_nan():
    q = torch.randn(2, 2, 3, 4)
    k = torch.randn(2, 2, 5, 4)
    mask = torch.ones(2, 1, 3, 5, dtype=torch.bool)
    mask[0, 0, 1] = False  # no allowed key for row 1 of batch 0
    out = attend(q, k, k, mask)
    assert torch.isfinite(out).all()
    assert out[0, 1].abs().max() == 0
    assert out[0, 0].abs().max() > 0


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_returns_fp32(tiny_bb, dtype):
    bb = tiny_bb.converted(dtype=dtype)
    assert tiny_bb.dtype == torch.float32  # the shared backbone is left as it was
    tol = {torch.float16: 0.01, torch.bfloat16: 0.15}[dtype]  # of the spread (bf16: 8 bits)
    for name in ("ce", "mice-l2+3", "colbert"):
        s = make_executor(name, bb).score_pairs(QUERIES, DOCS)
        s32 = make_executor(name, tiny_bb).score_pairs(QUERIES, DOCS)
        assert s.dtype == torch.float32 and torch.isfinite(s).all()
        spread = float(s32.max() - s32.min())
        assert (s - s32).abs().max() < tol * spread, name


def test_reference_only_variants_refuse_fast(tiny_bb):
    from mice_bench.errors import UsageError

    assert make_executor("mask2", tiny_bb).kind == "reference"
    with pytest.raises(UsageError, match="no fast path"):
        make_executor("mask2", tiny_bb, "fast")


def test_param_count_against_hugging_face(tiny_hf, tiny_bb):
    from transformers import BertForSequenceClassification
    from transformers.models.bert.modeling_bert import BertAttention

    def count(module):
        return sum(p.numel() for p in module.parameters())

    assert tiny_bb.param_count(parse("ce")) == count(tiny_hf)
    # mice-l2+2 on 6 layers: a 4-layer classifier plus 2 cross-attention sub-layers
    cfg = tiny_hf.config.__class__.from_dict(tiny_hf.config.to_dict())
    cfg.num_hidden_layers = 4
    four = count(BertForSequenceClassification(cfg))
    assert tiny_bb.param_count(parse("mice-l2+2")) == four + 2 * count(BertAttention(cfg))
    # colbert: the encoder without pooler and classifier, plus a 128 x H projection
    enc = count(tiny_hf.bert.embeddings) + count(tiny_hf.bert.encoder)
    assert tiny_bb.param_count(parse("colbert")) == enc + 128 * tiny_bb.hidden_size
    assert tiny_bb.param_count(parse("colbert[proj=0,qaug=0]")) == enc


def test_architecture_names_say_random_weights():
    from mice_bench.backbone import load_backbone

    bb = load_backbone("minilm-l6")
    assert bb.random_weights and "random weights" in bb.describe()
    assert bb.num_layers == 6 and bb.hidden_size == 384


def test_unknown_model_is_a_usage_error(tmp_path):
    from mice_bench.backbone import load_backbone
    from mice_bench.errors import UsageError

    with pytest.raises(UsageError):
        load_backbone(str(tmp_path / "nope"))


def test_packaged_tokenizer_is_the_full_bert_vocabulary():
    tok = packaged_tokenizer()
    assert len(tok.get_vocab()) == 30522
    ids = tok("the cat sat", add_special_tokens=True)["input_ids"]
    assert ids[0] == tok.cls_token_id == 101 and ids[-1] == tok.sep_token_id == 102
    assert tok.unk_token_id not in ids


@pytest.mark.parametrize("variant", ["colbert", "colbert[proj=0,qaug=0]"])
def test_one_query_against_stored_vectors_scores_as_the_reference(tiny_bb, variant):
    """One query against stored head vectors (the query projected once, one matrix product
    with every document token) scores as the reference executor and as the aligned path."""
    fast = make_executor(variant, tiny_bb, "fast")
    ref = make_executor(variant, tiny_bb, "reference").rerank(QUERIES[1], DOCS)
    qs = fast.encode_queries([QUERIES[1]])
    dv = fast.encode_documents(DOCS, vectors=True)
    n = len(DOCS)
    one = fast.score_states(qs, torch.zeros(n, dtype=torch.long), dv, torch.arange(n))
    assert torch.allclose(one, ref, atol=1e-4)
    # the same pairs with the query repeated per document (no shared row): the same scores
    qs2 = fast.encode_queries([QUERIES[1]] * n)
    aligned = fast.score_states(qs2, torch.arange(n), dv, torch.arange(n))
    assert torch.allclose(one, aligned, atol=1e-5)

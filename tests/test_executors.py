"""Executors: parity with Hugging Face, fast == reference, masking semantics; then the
tokenizer layouts, lengths, heads, masks, part states and settings value by value, against
Hugging Face, naive loops and token lists written by hand."""

import math
import random

import pytest
import torch
import torch.nn.functional as F
from conftest import DOCS, QUERIES, tiny_config

from mice_bench import layerspec as LS
from mice_bench import spec as S
from mice_bench.backbone import from_hf, packaged_tokenizer, random_hf_model
from mice_bench.backbones.base import train_dropout
from mice_bench.checkpoints import CheckpointSettings
from mice_bench.errors import UsageError
from mice_bench.executors import (
    DocStates,
    QueryStates,
    TextStates,
    Tokenizer,
    make_executor,
)
from mice_bench.executors import heads as H
from mice_bench.executors import inputs as IN
from mice_bench.executors import layers as LY
from mice_bench.executors.inputs import TokenBatch
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
                layers.append(LS.DROPPED)
            elif i < s:  # no exchange between parts
                q = [bits(3) + "00" for _ in range(3)]
                d = ["000" + bits(2) for _ in range(2)]
                layers.append(LS.LayerSpec(LS.matrix(*q, *d)))
            elif rng.random() < 0.6:  # query-side interaction, document frozen
                cross = rng.random() < 0.5
                uniform = frozenset(x for x in ("cls", "query") if cross and rng.random() < 0.3)
                layers.append(LS.LayerSpec(LS.matrix(*(bits(5) for _ in range(3)), "00000",
                                                   "00000"),
                                          frozen=LS.DOC_SIDE,
                                          cross_keys=LS.DOC_SIDE if cross else frozenset(),
                                          cross_first=cross and rng.random() < 0.5,
                                          cross_uniform=uniform))
            else:  # both parts update
                layers.append(LS.LayerSpec(LS.matrix(*(bits(5) for _ in range(5)))))
        head = rng.choice(["cls", "cls", "maxsim", "mean-cos"])
        try:
            sp = custom("split", layers, head=head, doc_token_type=rng.randint(0, 1))
        except LS.SpecError:
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
    # colbert's documents are its head's projected vectors (128-d), the others' split states
    width = 128 if name == "colbert" else tiny_bb.hidden_size
    assert len(ds) == len(DOCS) and ds.hidden.shape[-1] == width
    assert ds.vectors == (name == "colbert")
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


@pytest.mark.parametrize("name,executor,cls,doc_repr", [
    ("ce", "auto", "JointExecutor", "none"),
    ("mask2", "auto", "ReferenceExecutor", "none"),
    ("mice-l2+3", "reference", "ReferenceExecutor", "none"),
    ("prettr-l2", "auto", "PairSplitExecutor", "none"),
    ("prettr-l2[qlen=20]", "auto", "SplitExecutor", "states"),
    ("mice-l2+3", "auto", "SplitExecutor", "states"),
    ("colbert", "auto", "SplitExecutor", "vectors"),
    ("biencoder", "auto", "SplitExecutor", "pooled"),
])
def test_each_executor_declares_what_a_document_becomes(tiny_bb, name, executor, cls, doc_repr):
    ex = make_executor(name, tiny_bb, executor)
    assert type(ex).__name__ == cls and ex.doc_repr == doc_repr
    assert ex.has_doc_precompute == (doc_repr != "none")
    assert ex.late_interaction == (doc_repr == "vectors")
    assert ex.bi_encoder == (doc_repr == "pooled")
    assert (ex.kv_layers == [2, 3, 4]) == (name.startswith("mice") and executor == "auto")
    ds = ex.encode_documents(DOCS[:2])
    if doc_repr == "none":
        assert ds.texts == DOCS[:2]
    else:
        assert ds.vectors == (doc_repr in ("vectors", "pooled"))
        assert ds.hidden.shape[1] == 1 if doc_repr == "pooled" else ds.hidden.shape[1] > 1


def test_a_split_executor_refuses_a_spec_whose_documents_cannot_be_precomputed(tiny_bb):
    from mice_bench.executors import SplitExecutor
    from mice_bench.spec import parse

    with pytest.raises(ValueError, match="not precomputable"):
        SplitExecutor(parse("prettr-l2"), tiny_bb)


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


# ----------------------------------------------------------------------
# tokenizer layouts, lengths, heads, masks, part states and settings, value by value
CLS, SEP, MASK, UNK, PAD = 101, 102, 103, 100, 0
UNUSED0, UNUSED1 = 1, 2  # BERT's [unused0] / [unused1]


@pytest.fixture(scope="module")
def tok():
    return packaged_tokenizer()


def wp(tok, text):
    """Word pieces of ``text`` by the Hugging Face tokenizer itself (no specials)."""
    return tok(text, add_special_tokens=False)["input_ids"]


def rows(t: torch.Tensor) -> list[list[int]]:
    return [[int(v) for v in r] for r in t]


# =========================================================================== inputs.py
def test_segment_tables_by_hand():
    seg = torch.tensor([-1, 0, 1, 2, 3, 4, 5, 6])
    assert IN.row_segments(seg).tolist() == [-1, 0, 1, 2, 3, 4, 3, 1]
    assert IN.key_segments(seg).tolist() == [-1, 0, 1, 2, 3, 4, 3, -1]
    assert IN.query_side(seg).tolist() == [False, True, True, True, False, False, False, True]
    assert IN.doc_side(seg).tolist() == [False, False, False, False, True, True, True, False]
    assert IN.SKIP_DOC == 5 and IN.EXPANSION == 6 and IN.PAD_SEGMENT == -1


def test_longest_first_equals_hugging_face_pair_truncation(tok):
    """``longest_first(n_a, n_b, budget)`` == what the HF tokenizer keeps of a pair of
    ``n_a`` 'a' and ``n_b`` 'b' word pieces cut to ``budget`` + 3 special tokens."""
    a_id, b_id = tok.convert_tokens_to_ids(["a", "b"])
    grid = [(na, nb) for na in range(10) for nb in range(10)]
    A = [" ".join(["a"] * na) for na, _ in grid]
    B = [" ".join(["b"] * nb) for _, nb in grid]
    for budget in range(1, 13):
        enc = tok(A, B, truncation="longest_first", max_length=budget + 3)["input_ids"]
        for (na, nb), ids in zip(grid, enc):
            assert IN.longest_first(na, nb, budget) == (ids.count(a_id), ids.count(b_id)), \
                (na, nb, budget)


def test_joint_pairs_by_hand(tok):
    t = Tokenizer(tok, 128, parse("ce"))
    cat, dog, the, ran, a = (wp(tok, w)[0] for w in ("cat", "dog", "the", "ran", "a"))
    tb = t.pairs(["cat", "the dog ran"], ["a dog", "cat"])
    assert rows(tb.input_ids) == [[CLS, cat, SEP, a, dog, SEP, PAD],
                                  [CLS, the, dog, ran, SEP, cat, SEP]]
    assert rows(tb.token_type_ids) == [[0, 0, 0, 1, 1, 1, 0], [0, 0, 0, 0, 0, 1, 1]]
    assert rows(tb.segment_ids) == [[0, 1, 2, 3, 3, 4, -1], [0, 1, 1, 1, 2, 3, 4]]
    assert rows(tb.position_ids) == [[0, 1, 2, 3, 4, 5, 0], [0, 1, 2, 3, 4, 5, 6]]
    assert rows(tb.attention_mask) == [[1] * 6 + [0], [1] * 7]
    assert tb.attention_mask.dtype == torch.bool and tb.input_ids.dtype == torch.long
    assert len(tb) == 2 and tb.num_tokens == 13


def test_joint_pairs_without_token_types_and_two_separators(tok):
    """RoBERTa-like: ``<s> q </s></s> d </s>``, both middle separators ``sep_q``, types 0."""
    t = Tokenizer(tok, 128, parse("ce"), pair_separators=2, token_types=False)
    cat, dog = wp(tok, "cat")[0], wp(tok, "dog")[0]
    tb = t.pairs(["cat"], ["dog"])
    assert rows(tb.input_ids) == [[CLS, cat, SEP, SEP, dog, SEP]]
    assert rows(tb.token_type_ids) == [[0, 0, 0, 0, 0, 0]]
    assert rows(tb.segment_ids) == [[0, 1, 2, 2, 3, 4]]


def test_joint_pair_budget_longest_first_and_query_cap(tok):
    """max_positions 10: 7 word pieces for the pair; 6 + 6 -> 3 + 4 (longest_first);
    with query_max_tokens 2 the query is cut first, the document gets 5."""
    q, d = " ".join(["a"] * 6), " ".join(["b"] * 6)
    a_id, b_id = tok.convert_tokens_to_ids(["a", "b"])
    tb = Tokenizer(tok, 10, parse("ce")).pairs([q], [d])
    assert rows(tb.input_ids) == [[CLS, a_id, a_id, a_id, SEP, b_id, b_id, b_id, b_id, SEP]]
    tb = Tokenizer(tok, 10, parse("ce"), query_max_tokens=2).pairs([q], [d])
    assert rows(tb.input_ids) == [[CLS, a_id, a_id, SEP] + [b_id] * 5 + [SEP]]
    tb = Tokenizer(tok, 10, parse("ce"), doc_max_tokens=1).pairs([q], [d])
    assert rows(tb.input_ids) == [[CLS] + [a_id] * 6 + [SEP, b_id, SEP]]


def test_prettr_pairs_cut_the_document_first(tok):
    """PreTTR (xpmir ``doc_first``): the query keeps all it can, the document the rest."""
    t = Tokenizer(tok, 10, parse("prettr-l2"))
    assert t.truncation == "doc_first" and t.max_length == 10
    a_id, b_id = tok.convert_tokens_to_ids(["a", "b"])
    tb = t.pairs([" ".join(["a"] * 5)], [" ".join(["b"] * 6)])
    assert rows(tb.input_ids) == [[CLS] + [a_id] * 5 + [SEP, b_id, b_id, SEP]]
    tb = t.pairs([" ".join(["a"] * 9)], ["b"])
    assert rows(tb.input_ids) == [[CLS] + [a_id] * 7 + [SEP, SEP]]
    assert rows(tb.segment_ids) == [[0] + [1] * 7 + [2, 4]]
    # the split executor's parts of a PreTTR pair are cut from that pair
    assert rows(t.split_pairs(["a a"], ["b"]).input_ids) == [[CLS, a_id, a_id, SEP, b_id, SEP]]
    with pytest.raises(ValueError, match="^PreTTR documents are cut from the joint pair; "
                                         "use split_pairs$"):
        t.doc_parts(["b"])


def test_split_parts_by_hand(tok):
    t = Tokenizer(tok, 128, parse("colbert[proj=0,qaug=0,doc_tt=1]"))
    cat, dog, a = (wp(tok, w)[0] for w in ("cat", "dog", "a"))
    qb, db = t.split_parts(["cat", "a cat"], ["a dog", "dog"])
    assert rows(qb.input_ids) == [[CLS, cat, SEP, PAD], [CLS, a, cat, SEP]]
    assert rows(qb.segment_ids) == [[0, 1, 2, -1], [0, 1, 1, 2]]
    assert rows(qb.token_type_ids) == [[0, 0, 0, 0], [0, 0, 0, 0]]
    assert rows(db.input_ids) == [[CLS, a, dog, SEP], [CLS, dog, SEP, PAD]]
    assert rows(db.segment_ids) == [[3, 3, 3, 4], [3, 3, 4, -1]]
    assert rows(db.token_type_ids) == [[1, 1, 1, 1], [1, 1, 1, 0]]
    assert rows(db.position_ids) == [[0, 1, 2, 3], [0, 1, 2, 0]]
    both = t.split_pairs(["cat"], ["a dog"])
    assert rows(both.input_ids) == [[CLS, cat, SEP, CLS, a, dog, SEP]]
    assert rows(both.position_ids) == [[0, 1, 2, 0, 1, 2, 3]]
    assert rows(both.segment_ids) == [[0, 1, 2, 3, 3, 3, 4]]
    assert rows(both.token_type_ids) == [[0, 0, 0, 1, 1, 1, 1]]


def test_colbert_query_augmentation_by_hand(tok):
    """colbert: 30 query word pieces, padded with [MASK] to 32 tokens, attended (segment 1)."""
    t = Tokenizer(tok, 128, parse("colbert"))
    cat = wp(tok, "cat")[0]
    qb = t.query_parts(["cat"])
    assert rows(qb.input_ids) == [[CLS, cat, SEP] + [MASK] * 29]
    assert rows(qb.segment_ids) == [[0, 1, 2] + [1] * 29]
    # a short model: the padded query is capped by the maximum positions
    qb = Tokenizer(tok, 8, parse("colbert")).query_parts(["cat"])
    assert rows(qb.input_ids) == [[CLS, cat, SEP] + [MASK] * 5]
    assert t.doc_max_tokens == 178 and t.query_max_tokens == 30


def test_colbert_checkpoint_markers_skiplist_and_expansion(tok):
    """ColBERT checkpoint totals (markers and specials included), markers after [CLS],
    [MASK] expansion not attended (segment EXPANSION), punctuation skip-list (SKIP_DOC)."""
    cs = CheckpointSettings(kind="colbert", query_marker="[unused0]", doc_marker="[unused1]",
                            query_length=8, doc_length=10, query_expansion=True,
                            attend_expansion=False, skiplist=(",", "."),
                            sources={"query_marker": "artifact.metadata",
                                     "doc_marker": "artifact.metadata",
                                     "query_length": "artifact.metadata",
                                     "doc_length": "artifact.metadata",
                                     "query_expansion": "artifact.metadata",
                                     "attend_expansion": "artifact.metadata",
                                     "skiplist": "artifact.metadata"})
    t = Tokenizer(tok, 128, parse("colbert"), checkpoint=cs)
    assert (t.query_max_tokens, t.doc_max_tokens) == (5, 7)
    what, is_, a, cat, dog = (wp(tok, w)[0] for w in ("what", "is", "a", "cat", "dog"))
    comma, dot = tok.convert_tokens_to_ids([",", "."])
    qb = t.query_parts(["what is a cat"])
    assert rows(qb.input_ids) == [[CLS, UNUSED0, what, is_, a, cat, SEP, MASK]]
    assert rows(qb.segment_ids) == [[0, 1, 1, 1, 1, 1, 2, IN.EXPANSION]]
    db = t.doc_parts(["a cat, a dog.", "dog dog dog dog dog dog dog dog dog"])
    assert rows(db.input_ids) == [[CLS, UNUSED1, a, cat, comma, a, dog, dot, SEP, PAD],
                                  [CLS, UNUSED1] + [dog] * 7 + [SEP]]
    assert rows(db.segment_ids) == [[3, 3, 3, 3, 5, 3, 3, 5, 4, -1], [3] * 9 + [4]]
    src = "checkpoint:artifact.metadata"
    assert t.settings() == {
        "query_max_tokens": 5, "doc_max_tokens": 7, "max_length": 128,
        "truncation": "longest_first", "doc_style": "cls", "qaug": True,
        "attend_expansion": False, "query_marker": "[unused0]", "doc_marker": "[unused1]",
        "skiplist_ids": 2,
        "sources": {"query_marker": src, "doc_marker": src, "qaug": src,
                    "query_max_tokens": src, "doc_max_tokens": src, "max_length": "preset",
                    "attend_expansion": src, "skiplist": src}}
    # the same checkpoint without expansion: no [MASK] padding
    cs2 = CheckpointSettings(kind="colbert", query_expansion=False,
                             sources={"query_expansion": "artifact.metadata"})
    t2 = Tokenizer(tok, 128, parse("colbert"), checkpoint=cs2)
    assert rows(t2.query_parts(["cat"]).input_ids) == [[CLS, cat, SEP]]
    assert t2.settings()["qaug"] is False and "attend_expansion" not in t2.settings()
    # ... and with the expansion attended (ColBERT attend_to_mask_tokens=True): segment query
    cs3 = CheckpointSettings(kind="colbert", query_length=4, attend_expansion=True,
                             sources={"attend_expansion": "artifact.metadata"})
    t3 = Tokenizer(tok, 128, parse("colbert"), checkpoint=cs3)
    qb = t3.query_parts(["cat"])
    assert rows(qb.input_ids) == [[CLS, cat, SEP, MASK]]
    assert rows(qb.segment_ids) == [[0, 1, 2, 1]]
    assert t3.settings()["attend_expansion"] is True


def test_markers_must_be_in_the_tokenizer(tok):
    cs = CheckpointSettings(kind="colbert", query_marker="[Q]", sources={"query_marker": "x"})
    with pytest.raises(UsageError, match=r"marker '\[Q\]' is not in its tokenizer"):
        Tokenizer(tok, 128, parse("colbert"), checkpoint=cs)
    cs = CheckpointSettings(kind="colbert", doc_marker="[D]", sources={"doc_marker": "x"})
    with pytest.raises(UsageError, match=r"marker '\[D\]'"):
        Tokenizer(tok, 128, parse("colbert"), checkpoint=cs)
    # the unknown token itself is a (strange but) valid marker: its id is [UNK]'s
    cs = CheckpointSettings(kind="colbert", query_marker="[UNK]", doc_marker="[unused1]")
    t = Tokenizer(tok, 128, parse("colbert"), checkpoint=cs)
    assert (t.q_marker_id, t.d_marker_id) == (UNK, UNUSED1)
    # markers only apply to split parts with [CLS] documents: ce ignores them
    t = Tokenizer(tok, 128, parse("ce"),
                  checkpoint=CheckpointSettings(query_marker="[Q]", doc_marker="[D]"))
    assert t.q_marker_id is None and t.d_marker_id is None


def test_prompts_are_prepended_to_split_parts(tok):
    cs = CheckpointSettings(kind="sentence-transformers", query_prompt="query: ",
                            doc_prompt="passage: ",
                            sources={"query_prompt": "config_sentence_transformers.json",
                                     "doc_prompt": "config_sentence_transformers.json"})
    t = Tokenizer(tok, 128, parse("biencoder"), checkpoint=cs)
    assert rows(t.query_parts(["a cat"]).input_ids) == [[CLS, *wp(tok, "query: a cat"), SEP]]
    assert rows(t.doc_parts(["a dog"]).input_ids) == [[CLS, *wp(tok, "passage: a dog"), SEP]]
    st = t.settings()
    assert st["query_prompt"] == "query: " and st["doc_prompt"] == "passage: "
    assert st["sources"]["query_prompt"] == "checkpoint:config_sentence_transformers.json"
    assert st["sources"]["doc_prompt"] == "checkpoint:config_sentence_transformers.json"
    # joint pairs take no prompts
    tj = Tokenizer(tok, 128, parse("ce"), checkpoint=cs)
    assert tj.query_prompt is None and "query_prompt" not in tj.settings()
    assert tj.doc_prompt is None and "doc_prompt" not in tj.settings()


def test_length_resolution_flag_checkpoint_preset(tok):
    def mk(name, **kw):
        return CheckpointSettings(kind="sentence-transformers",
                                  sources={k: "sentence_bert_config.json" for k in kw}, **kw)

    src = "checkpoint:sentence_bert_config.json"
    # bi-encoder: max_seq_length covers [CLS] and [SEP]; at least one word piece
    t = Tokenizer(tok, 128, parse("biencoder"), checkpoint=mk("b", max_seq_length=20))
    assert (t.query_max_tokens, t.doc_max_tokens, t.max_length) == (18, 18, 128)
    assert t.settings()["sources"] == {"query_max_tokens": src, "doc_max_tokens": src,
                                       "max_length": "preset"}
    t = Tokenizer(tok, 128, parse("biencoder"), checkpoint=mk("b", max_seq_length=2))
    assert (t.query_max_tokens, t.doc_max_tokens) == (1, 1)
    # a flag beats the checkpoint
    t = Tokenizer(tok, 128, parse("biencoder"), query_max_tokens=7,
                  checkpoint=mk("b", max_seq_length=20))
    assert (t.query_max_tokens, t.doc_max_tokens) == (7, 18)
    assert t.settings()["sources"]["query_max_tokens"] == "flag"
    # ColBERT's own lengths: the checkpoint limit only caps them
    t = Tokenizer(tok, 128, parse("colbert"), checkpoint=mk("c", max_seq_length=300))
    assert (t.query_max_tokens, t.doc_max_tokens) == (30, 178)
    t = Tokenizer(tok, 128, parse("colbert"), checkpoint=mk("c", max_seq_length=20))
    assert (t.query_max_tokens, t.doc_max_tokens) == (18, 18)
    # joint pairs: max_seq_length is the pair's total
    t = Tokenizer(tok, 128, parse("ce"), checkpoint=mk("j", max_seq_length=16))
    assert (t.query_max_tokens, t.doc_max_tokens, t.max_length) == (None, None, 16)
    assert t.settings()["sources"] == {"query_max_tokens": "preset",
                                       "doc_max_tokens": "preset", "max_length": src}
    # the tokenizer's model_max_length lowers the maximum positions (and says so)
    cs = CheckpointSettings(kind="hf", model_max_length=12,
                            sources={"model_max_length": "tokenizer_config.json"})
    t = Tokenizer(tok, 128, parse("ce"), checkpoint=cs)
    assert t.max_positions == 12 and t.max_length == 12
    st = t.settings()
    assert st["max_positions"] == 12
    assert st["sources"]["max_positions"] == "checkpoint:tokenizer_config.json"
    assert "max_positions" not in Tokenizer(tok, 128, parse("ce")).settings()
    # presets
    t = Tokenizer(tok, 128, parse("mice-l2+2"))
    assert (t.query_max_tokens, t.doc_max_tokens, t.max_length) == (510, 510, 128)
    assert t.settings() == {"query_max_tokens": 510, "doc_max_tokens": 510, "max_length": 128,
                            "truncation": "longest_first", "doc_style": "cls", "qaug": False,
                            "sources": {"query_max_tokens": "preset",
                                        "doc_max_tokens": "preset", "max_length": "preset"}}
    t = Tokenizer(tok, 128)  # no spec: the custom defaults
    assert (t.query_max_tokens, t.doc_max_tokens, t.max_length) == (32, None, 128)


def test_offset_documents_prettr_qlen(tok):
    """prettr-l2[qlen=8]: queries cut to qlen - 2 word pieces; documents ``d [SEP]`` with
    positions from 8 and token type 1."""
    t = Tokenizer(tok, 128, parse("prettr-l2[qlen=8]"))
    a_id, b_id = tok.convert_tokens_to_ids(["a", "b"])
    qb = t.query_parts([" ".join(["a"] * 9)])
    assert rows(qb.input_ids) == [[CLS] + [a_id] * 6 + [SEP]]
    db = t.doc_parts(["b b", "b"])
    assert rows(db.input_ids) == [[b_id, b_id, SEP], [b_id, SEP, PAD]]
    assert rows(db.position_ids) == [[8, 9, 10], [8, 9, 0]]
    assert rows(db.token_type_ids) == [[1, 1, 1], [1, 1, 0]]
    assert rows(db.segment_ids) == [[3, 3, 4], [3, 4, -1]]
    assert t.doc_budget() == 128 - 8 - 1
    t = Tokenizer(tok, 128, parse("prettr-l2[qlen=8]"), doc_max_tokens=2)
    assert t.doc_budget() == 2
    assert rows(t.doc_parts(["b b b b"]).input_ids) == [[b_id, b_id, SEP]]


def test_word_pieces_and_empty_inputs(tok):
    t = Tokenizer(tok, 6, parse("biencoder"))
    assert t.word_pieces([], 3) == []
    a_id = tok.convert_tokens_to_ids("a")
    assert t.word_pieces(["a a a a a a a a"], None) == [[a_id] * 6]  # max positions
    assert t.word_pieces(["a a a"], 0) == [[]]
    tb = t.query_parts([])
    assert tuple(tb.input_ids.shape) == (0, 1) and len(tb) == 0


def test_token_batch_select_to_and_pad():
    tb = TokenBatch(input_ids=torch.tensor([[5, 6, 7, 0], [8, 9, 0, 0], [1, 0, 0, 0]]),
                    token_type_ids=torch.zeros(3, 4, dtype=torch.long),
                    position_ids=torch.tensor([[0, 1, 2, 0], [0, 1, 0, 0], [0, 0, 0, 0]]),
                    segment_ids=torch.tensor([[0, 1, 2, -1], [0, 2, -1, -1], [0, -1, -1, -1]]),
                    attention_mask=torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [1, 0, 0, 0]]).bool())
    sub = tb.select([1, 2])
    assert rows(sub.input_ids) == [[8, 9], [1, 0]]
    assert rows(sub.segment_ids) == [[0, 2], [0, -1]]
    assert sub.num_tokens == 3
    assert rows(tb.select(slice(0, 1)).input_ids) == [[5, 6, 7]]
    assert tuple(tb.select([]).input_ids.shape) == (0, 1)
    moved = tb.to("cpu")
    assert all(torch.equal(getattr(moved, k), getattr(tb, k)) for k in
               ("input_ids", "token_type_ids", "position_ids", "segment_ids", "attention_mask"))
    p = IN._pad([[3, 4], [], [5]], -1)
    assert p.dtype == torch.long and rows(p) == [[3, 4], [-1, -1], [5, -1]]
    assert tuple(IN._pad([], 0).shape) == (0, 1)


def test_split_joint_and_concat_parts_by_hand():
    # [CLS] q q [SEP] d [SEP] | [CLS] q [SEP] d d [SEP]
    tb = TokenBatch(input_ids=torch.tensor([[101, 7, 8, 102, 9, 102, 0],
                                            [101, 7, 102, 9, 10, 102, 0]]),
                    token_type_ids=torch.tensor([[0, 0, 0, 0, 1, 1, 0], [0, 0, 0, 1, 1, 1, 0]]),
                    position_ids=torch.tensor([[0, 1, 2, 3, 4, 5, 0], [0, 1, 2, 3, 4, 5, 0]]),
                    segment_ids=torch.tensor([[0, 1, 1, 2, 3, 4, -1], [0, 1, 2, 3, 3, 4, -1]]),
                    attention_mask=torch.tensor([[1] * 6 + [0], [1] * 6 + [0]]).bool())
    q, d = IN.split_joint(tb)
    assert rows(q.input_ids) == [[101, 7, 8, 102], [101, 7, 102, 0]]
    assert rows(q.segment_ids) == [[0, 1, 1, 2], [0, 1, 2, -1]]
    assert rows(q.position_ids) == [[0, 1, 2, 3], [0, 1, 2, 0]]
    assert rows(q.attention_mask) == [[1, 1, 1, 1], [1, 1, 1, 0]]
    assert rows(d.input_ids) == [[9, 102, 0], [9, 10, 102]]
    assert rows(d.token_type_ids) == [[1, 1, 0], [1, 1, 1]]
    assert rows(d.position_ids) == [[4, 5, 0], [3, 4, 5]]
    assert rows(d.segment_ids) == [[3, 4, -1], [3, 3, 4]]
    assert rows(d.attention_mask) == [[1, 1, 0], [1, 1, 1]]
    back = IN.concat_parts(q, d)
    for k in ("input_ids", "token_type_ids", "position_ids", "segment_ids", "attention_mask"):
        assert rows(getattr(back, k)) == rows(getattr(tb, k)[:, :6]), k
    # parts of unequal lengths: the valid tokens of each, then padding (id 0, type 0,
    # position 0, segment -1, mask False)
    both = IN.concat_parts(q, IN.split_joint(tb)[1].select([1, 0]))
    assert rows(both.input_ids) == [[101, 7, 8, 102, 9, 10, 102], [101, 7, 102, 9, 102, 0, 0]]
    assert rows(both.token_type_ids) == [[0, 0, 0, 0, 1, 1, 1], [0, 0, 0, 1, 1, 0, 0]]
    assert rows(both.position_ids) == [[0, 1, 2, 3, 3, 4, 5], [0, 1, 2, 4, 5, 0, 0]]
    assert rows(both.segment_ids) == [[0, 1, 1, 2, 3, 3, 4], [0, 1, 2, 3, 4, -1, -1]]
    assert rows(both.attention_mask) == [[1] * 7, [1] * 5 + [0, 0]]


class _PadSeven:
    """The BERT tokenizer with another padding id (as RoBERTa's 1): padding uses it."""

    pad_token_id = 7

    def __init__(self, tok):
        self._tok = tok

    def __call__(self, *a, **kw):
        return self._tok(*a, **kw)

    def __getattr__(self, name):
        return getattr(self._tok, name)


def test_padding_uses_the_tokenizers_pad_id(tok):
    cat, dog, a = (wp(tok, w)[0] for w in ("cat", "dog", "a"))
    t = Tokenizer(_PadSeven(tok), 128, parse("mice-l2+2"))
    qb, db = t.split_parts(["a cat", "cat"], ["dog", "a dog"])
    assert rows(qb.input_ids) == [[CLS, a, cat, SEP], [CLS, cat, SEP, 7]]
    assert rows(db.input_ids) == [[CLS, dog, SEP, 7], [CLS, a, dog, SEP]]
    tb = Tokenizer(_PadSeven(tok), 128, parse("ce")).pairs(["cat", "a cat"], ["dog", "dog"])
    assert rows(tb.input_ids) == [[CLS, cat, SEP, dog, SEP, 7], [CLS, a, cat, SEP, dog, SEP]]
    off = Tokenizer(_PadSeven(tok), 128, parse("prettr-l2[qlen=8]")).doc_parts(["dog", "a dog"])
    assert rows(off.input_ids) == [[dog, SEP, 7], [a, dog, SEP]]


# ============================================================================ heads.py
def _naive_mean(x, mask):
    out = []
    for b in range(x.shape[0]):
        idx = [t for t in range(x.shape[1]) if mask[b, t]]
        out.append(sum(x[b, t] for t in idx) / len(idx))
    return torch.stack(out)


def test_pooling_modes_against_naive_loops():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, 4, generator=g)
    mask = torch.tensor([[1, 1, 1, 0, 0], [0, 0, 1, 1, 1], [1, 1, 1, 1, 1]]).bool()
    mean = _naive_mean(x, mask)
    assert torch.allclose(H.mean_pool(x, mask), mean, atol=1e-6)
    assert torch.allclose(H.pool(x, mask), mean, atol=1e-6)
    first = torch.stack([x[0, 0], x[1, 2], x[2, 0]])  # the part's first valid token
    last = torch.stack([x[0, 2], x[1, 4], x[2, 4]])
    mx = torch.stack([x[b][mask[b]].max(0).values for b in range(3)])
    sqrt_len = torch.stack([x[b][mask[b]].sum(0) / math.sqrt(int(mask[b].sum()))
                            for b in range(3)])
    assert torch.allclose(H.pool(x, mask, ("cls",)), first)
    assert torch.allclose(H.pool(x, mask, ("lasttoken",)), last)
    assert torch.allclose(H.pool(x, mask, ("max",)), mx)
    assert torch.allclose(H.pool(x, mask, ("mean_sqrt_len",)), sqrt_len, atol=1e-6)
    both = H.pool(x, mask, ("cls", "mean", "max"))
    assert both.shape == (3, 12)
    assert torch.allclose(both, torch.cat([first, mean, mx], -1), atol=1e-6)
    with pytest.raises(ValueError, match="unknown pooling mode 'weird'"):
        H.pool(x, mask, ("weird",))
    # low precision in, fp32 out
    assert H.mean_pool(x.half(), mask).dtype == torch.float32
    # an all-padding row gives zeros, not NaN
    z = H.mean_pool(x, torch.zeros(3, 5, dtype=torch.bool))
    assert torch.equal(z, torch.zeros(3, 4))


def test_mean_cos_and_maxsim_against_naive_loops():
    g = torch.Generator().manual_seed(1)
    q, d = torch.randn(2, 3, 4, generator=g), torch.randn(2, 4, 4, generator=g)
    qm = torch.tensor([[1, 1, 0], [1, 1, 1]]).bool()
    dm = torch.tensor([[1, 0, 1, 1], [1, 1, 0, 0]]).bool()
    exp = torch.stack([F.cosine_similarity(_naive_mean(q, qm)[b], _naive_mean(d, dm)[b], dim=0)
                       for b in range(2)])
    assert torch.allclose(H.mean_cos(q, qm, d, dm), exp, atol=1e-6)
    exp2 = torch.stack([F.cosine_similarity(torch.cat([q[b, 0], _naive_mean(q, qm)[b]]),
                                            torch.cat([d[b, 0], _naive_mean(d, dm)[b]]), dim=0)
                        for b in range(2)])
    assert torch.allclose(H.mean_cos(q, qm, d, dm, ("cls", "mean")), exp2, atol=1e-6)

    def naive_maxsim(P=None):
        out = []
        for b in range(2):
            s = 0.0
            for i in range(3):
                if not qm[b, i]:
                    continue
                qi = q[b, i] if P is None else P @ q[b, i]
                best = -2.0
                for j in range(4):
                    if dm[b, j]:
                        dj = d[b, j] if P is None else P @ d[b, j]
                        best = max(best, float(qi @ dj / (qi.norm() * dj.norm())))
                s += best
            out.append(s)
        return torch.tensor(out)

    assert torch.allclose(H.maxsim(q, qm, d, dm), naive_maxsim(), atol=1e-5)
    P = torch.randn(2, 4, generator=g)
    assert torch.allclose(H.maxsim(q, qm, d, dm, P), naive_maxsim(P), atol=1e-5)


def test_cls_score_bert_against_hugging_face(tiny_hf, tiny_bb):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3, 5, tiny_bb.hidden_size, generator=g)
    with torch.no_grad():
        exp = tiny_hf.classifier(tiny_hf.bert.pooler(x))[:, 0]
        assert torch.allclose(H.cls_score(tiny_bb, x), exp, atol=1e-5)
        assert torch.allclose(H.cls_score(tiny_bb, x[:, 0]), exp, atol=1e-5)  # [B, H] input


# =========================================================================== layers.py
def _naive_attend(q, k, v, mask):
    B, n, T, d = q.shape
    out = torch.zeros(B, T, n * d)
    for b in range(B):
        for h in range(n):
            for t in range(T):
                allowed = [s for s in range(k.shape[2])
                           if mask is None or bool(mask[b, 0, min(t, mask.shape[2] - 1), s])]
                if not allowed:
                    continue
                sc = torch.stack([q[b, h, t] @ k[b, h, s] / math.sqrt(d) for s in allowed])
                w = torch.softmax(sc, 0)
                out[b, t, h * d:(h + 1) * d] = sum(w[i] * v[b, h, s] for i, s in
                                                   enumerate(allowed))
    return out


def test_attend_against_naive_softmax():
    g = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(2, 2, 3, 4, generator=g), torch.randn(2, 2, 5, 4, generator=g),
               torch.randn(2, 2, 5, 4, generator=g))
    full = torch.ones(2, 1, 3, 5, dtype=torch.bool)
    m = torch.rand(2, 1, 3, 5, generator=g) > 0.4
    m[:, :, :, 4] = False  # a key no row may read
    m[0, 0, 1] = False  # a row with no key
    m[1, 0, 2] = False
    kp = torch.tensor([[1, 1, 0, 1, 0], [1, 1, 1, 1, 0]]).bool()[:, None, None, :]
    for mask in (None, full, m, kp):
        assert torch.allclose(LY.attend(q, k, v, mask), _naive_attend(q, k, v, mask),
                              atol=1e-5)
    out = LY.attend(q, k, v, m)
    assert torch.equal(out[0, 1], torch.zeros(8)) and torch.equal(out[1, 2], torch.zeros(8))


def test_attend_with_attention_dropout_is_unbiased_and_masked():
    """Inside ``train_dropout``: shape [B, T, n*d], rows without keys stay 0, masked keys are
    never read, and the mean over many draws is the dropout-free attention."""
    g = torch.Generator().manual_seed(4)
    q, k = torch.randn(1, 2, 3, 4, generator=g), torch.randn(1, 2, 4, 4, generator=g)
    v = torch.randn(1, 2, 4, 4, generator=g)
    # key 3 is masked for every row of both masks, and its value is huge
    m = torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0], [1, 0, 1, 0]]).bool()[None, None]
    kp = torch.tensor([1, 1, 1, 0]).bool()[None, None, None]
    v_masked = v.clone()
    v_masked[:, :, 3] = 1e6
    torch.manual_seed(0)
    for mask, vv in ((m, v_masked), (kp, v_masked), (None, v)):
        exp = _naive_attend(q, k, vv, mask)
        N = 3000  # independent draws: the batch repeated N times, one SDPA call
        with train_dropout({"attention": 0.5}):
            draws = LY.attend(q.expand(N, -1, -1, -1), k.expand(N, -1, -1, -1),
                              vv.expand(N, -1, -1, -1),
                              None if mask is None else mask.expand(N, -1, -1, -1))
        draws = draws[:, None]
        assert draws.shape == (3000, 1, 3, 8)
        assert torch.isfinite(draws).all() and draws.abs().max() < 1e3
        assert not torch.equal(draws[0], draws[1])  # dropout is active
        assert (draws.mean(0) - exp).abs().max() < 0.15
        if mask is m:  # row 1 has no key: 0 in every draw
            assert draws[:, 0, 1].abs().max() == 0


def test_segment_mask_against_naive_loop():
    g = torch.Generator().manual_seed(5)
    for trial in range(6):
        bits = torch.rand(5, 5, generator=g) > 0.4
        ls = LS.LayerSpec(LS.matrix(*("".join("1" if b else "0" for b in r) for r in bits)))
        seg_q = torch.randint(-1, 5, (2, 6), generator=g)
        seg_k = torch.randint(-1, 5, (2, 7), generator=g)
        cols = (torch.rand(2, 7, generator=g) > 0.3) if trial % 2 else None
        m = LY.segment_mask(ls, seg_q, seg_k, cols)
        assert m.dim() == 4 and m.shape[1] == 1 and m.shape[3] == 7
        for b in range(2):
            for t in range(6):
                if seg_q[b, t] < 0 and m.shape[2] == 1:
                    continue  # a key-padding mask says nothing about padding rows
                for s in range(7):
                    exp = bool(seg_q[b, t] >= 0 and seg_k[b, s] >= 0 and
                               (cols is None or cols[b, s]) and
                               bits[int(seg_q[b, t]), int(seg_k[b, s])])
                    assert bool(m[b, 0, min(t, m.shape[2] - 1), s]) == exp, (trial, b, t, s)
    # every present pair allowed: a key-padding mask [B, 1, 1, S]
    ls = LS.LayerSpec(LS.SEPARATE)
    m = LY.segment_mask(ls, torch.tensor([[0, 1, 2, -1]]), torch.tensor([[0, 1, 2, -1, 1]]))
    assert m.shape == (1, 1, 1, 5) and m[0, 0, 0].tolist() == [True, True, True, False, True]
    m = LY.segment_mask(ls, torch.tensor([[0, 1, 2]]), torch.tensor([[0, 3, 4]]))
    assert m.shape == (1, 1, 3, 3)
    assert m[0, 0].tolist() == [[True, False, False]] * 3


def test_window_mask_against_naive_loop():
    pos_q = torch.tensor([[0, 1, 2, 3, 4, 5]])
    pos_k = torch.tensor([[0, 1, 2, 3, 4, 5, 0, 1]])
    mask = torch.ones(1, 1, 6, 8, dtype=torch.bool)
    mask[0, 0, 2, 3] = False
    for w in (0, 1, 2, 4):
        m = LY.window_mask(mask, pos_q, pos_k, w)
        for t in range(6):
            for s in range(8):
                exp = bool(mask[0, 0, t, s]) and abs(int(pos_q[0, t]) - int(pos_k[0, s])) <= w
                assert bool(m[0, 0, t, s]) == exp, (w, t, s)
    # no pair farther apart than the window: the mask as it was (a key-padding mask too)
    kp = torch.tensor([[True, False, True]])[:, None, None]
    assert LY.window_mask(kp, torch.tensor([[0, 1]]), torch.tensor([[0, 1, 2]]), 2) is kp
    assert LY.window_mask(kp, torch.tensor([[10, 11]]), torch.tensor([[10, 11, 12]]), 2) is kp
    m = LY.window_mask(kp, torch.tensor([[0, 1]]), torch.tensor([[0, 1, 2]]), 1)
    assert m.shape == (1, 1, 2, 3) and m[0, 0].tolist() == [[True, False, False],
                                                             [True, False, True]]


def test_positions_default_to_0_to_t(tiny_bb):
    x = torch.zeros(2, 4, 3)
    assert LY._positions(None, x).tolist() == [[0, 1, 2, 3], [0, 1, 2, 3]]
    p = torch.tensor([[5, 6, 7, 8]])
    assert LY._positions(p, x) is p


# ================================================ executors on BERT, against Hugging Face
def _hf_hidden(tiny_hf, ids, token_type=0):
    t = torch.tensor([ids])
    with torch.no_grad():
        return tiny_hf.bert(input_ids=t, token_type_ids=torch.full_like(t, token_type),
                            attention_mask=torch.ones_like(t)).last_hidden_state[0]


def test_biencoder_checkpoint_pooling_against_hugging_face(tiny_hf, tok):
    """A checkpoint's ``Pooling`` (cls + mean, concatenated) is what the executor pools with:
    the cosine of HF BERT's [CLS] and mean states of each part, computed pair by pair."""
    bb = from_hf(tiny_hf, tok, name="tiny-st")
    bb.checkpoint = CheckpointSettings(kind="sentence-transformers", pooling=("cls", "mean"),
                                       normalize=False,
                                       sources={"pooling": "1_Pooling/config.json",
                                                "normalize": "modules.json"})
    ex = make_executor("biencoder", bb)
    assert ex.pooling == ("cls", "mean")
    exp = []
    for q, d in zip(QUERIES, DOCS):
        hq = _hf_hidden(tiny_hf, [CLS, *wp(tok, q)[:32], SEP])
        hd = _hf_hidden(tiny_hf, [CLS, *wp(tok, d), SEP])
        exp.append(F.cosine_similarity(torch.cat([hq[0], hq.mean(0)]),
                                       torch.cat([hd[0], hd.mean(0)]), dim=0))
    exp = torch.stack(exp)
    assert (ex.score_pairs(QUERIES, DOCS, batch_size=3) - exp).abs().max() < 1e-5
    ref = make_executor("biencoder", bb, "reference").score_pairs(QUERIES, DOCS)
    assert (ref - exp).abs().max() < 1e-5
    st = ex.settings()
    assert st["pooling"] == ["cls", "mean"] and st["normalize"] is False
    assert st["sources"]["pooling"] == "checkpoint:1_Pooling/config.json"
    assert st["sources"]["normalize"] == "checkpoint:modules.json"
    assert st["checkpoint"] == "sentence-transformers" and st["score"] == "cosine"
    # pooled embeddings (the checkpoint's pooling, normalised)
    qs = ex.encode_queries(QUERIES[:1])
    hq = _hf_hidden(tiny_hf, [CLS, *wp(tok, QUERIES[0]), SEP])
    e = torch.cat([hq[0], hq.mean(0)])
    assert torch.allclose(ex.pooled(qs)[0], e / e.norm(), atol=1e-5)


def test_colbert_skiplist_and_markers_against_hugging_face(tiny_hf, tok):
    """MaxSim over HF BERT states of ``[CLS] [unused0] q [SEP]`` and ``[CLS] [unused1] d
    [SEP]``: skip-list tokens are attended (they are in the input) but never scored, in the
    fast and in the reference executor."""
    bb = from_hf(tiny_hf, tok, name="tiny-colbert")
    bb.checkpoint = CheckpointSettings(kind="colbert", query_marker="[unused0]",
                                       doc_marker="[unused1]", skiplist=(",", "."),
                                       sources={"skiplist": "artifact.metadata"})
    # the same text on both sides: a query comma best matches the document comma
    queries = ["a cat, a dog.", "what, is. a cat"]
    docs = ["a cat, a dog.", "what, is. a cat , birds"]
    skip = set(tok.convert_tokens_to_ids([",", "."]))

    def expected(with_skip):
        out = []
        for q, d in zip(queries, docs):
            hq = _hf_hidden(tiny_hf, [CLS, UNUSED0, *wp(tok, q), SEP])
            dids = [CLS, UNUSED1, *wp(tok, d), SEP]
            hd = _hf_hidden(tiny_hf, dids)
            keep = [j for j, t in enumerate(dids) if not (with_skip and t in skip)]
            sim = F.normalize(hq, dim=-1) @ F.normalize(hd[keep], dim=-1).T
            out.append(sim.max(1).values.sum())
        return torch.stack(out)

    exp = expected(True)
    assert (exp - expected(False)).abs().max() > 1e-3  # the skip-list matters here
    for kind in ("fast", "reference"):
        ex = make_executor("colbert[proj=0,qaug=0]", bb, kind)
        assert (ex.score_pairs(queries, docs) - exp).abs().max() < 1e-4, kind
    # stored head vectors keep the skip-list (their segment ids) through scoring
    ex = make_executor("colbert[proj=0,qaug=0]", bb, "fast")
    dv = ex.encode_documents(docs, vectors=True)
    got = torch.stack([ex.score_query(ex.encode_queries([q]), dv, [i])[0]
                       for i, q in enumerate(queries)])
    assert (got - exp).abs().max() < 1e-4
    st = make_executor("colbert[proj=0,qaug=0]", bb).settings()
    assert st["skiplist_ids"] == 2 and st["sources"]["skiplist"] == "checkpoint:artifact.metadata"
    assert st["projection"] is None and st["sources"]["projection"] == "none"
    assert st["score"] == "sum of max cosine" and st["head"] == "maxsim"


def test_executor_settings_and_flags_by_hand(tiny_bb):
    st = make_executor("ce", tiny_bb).settings()
    assert st == {"query_max_tokens": None, "doc_max_tokens": None, "max_length": 128,
                  "truncation": "longest_first", "doc_style": "cls", "qaug": False,
                  "head": "cls", "num_labels": 1, "score": "logit", "checkpoint": "none",
                  "sources": {"query_max_tokens": "preset", "doc_max_tokens": "preset",
                              "max_length": "preset"}}
    ex = make_executor("colbert", tiny_bb)
    st = ex.settings()
    assert st["projection"] == 128 and st["sources"]["projection"] == "random"
    assert st["head"] == "maxsim" and st["score"] == "sum of max cosine"
    assert ex.flags == {"cross_from_self": False, "projection_random": True,
                        "classifier_random": False}
    st = make_executor("biencoder", tiny_bb).settings()
    assert st["pooling"] == ["mean"] and st["normalize"] is True and st["score"] == "cosine"
    assert st["sources"]["pooling"] == "preset" and st["sources"]["normalize"] == "preset"
    assert make_executor("mice-l2+2", tiny_bb).flags["cross_from_self"] is True


def test_executor_settings_two_labels_and_activation(tok):
    from transformers import BertConfig

    from mice_bench.backbone import random_hf_model

    cfg = BertConfig(vocab_size=30522, hidden_size=16, num_hidden_layers=2,
                     num_attention_heads=2, intermediate_size=32, max_position_embeddings=64,
                     num_labels=2)
    hf = random_hf_model(cfg, seed=0)
    bb = from_hf(hf, tok, name="two")
    bb.checkpoint = CheckpointSettings(kind="cross-encoder", activation="Sigmoid",
                                       sources={"activation": "config.json"})
    st = make_executor("ce", bb).settings()
    assert st["num_labels"] == 2 and st["score"] == "logit[1] - logit[0]"
    assert st["checkpoint_activation"] == "Sigmoid"
    assert st["sources"]["checkpoint_activation"] == "checkpoint:config.json"
    assert st["checkpoint"] == "cross-encoder" and st["max_length"] == 64


# =========================================================================== fast.py
def test_split_executor_batches_empty_and_nested_save(tiny_bb, tmp_path):
    ex = make_executor("mice-l2+3", tiny_bb, "fast")
    ref = make_executor("mice-l2+3", tiny_bb, "reference").score_pairs(QUERIES, DOCS)
    for bs in (1, 3):
        assert (ex.score_pairs(QUERIES, DOCS, batch_size=bs) - ref).abs().max() < 1e-5
    for bad in (0, -1):
        with pytest.raises(ValueError, match="batch_size must be >= 1"):
            ex.score_pairs(QUERIES, DOCS, batch_size=bad)
        with pytest.raises(ValueError, match="batch_size must be >= 1"):
            make_executor("ce", tiny_bb).score_pairs(QUERIES, DOCS, batch_size=bad)
    assert ex.score_pairs([], []).shape == (0,)
    ce = make_executor("ce", tiny_bb)
    assert (ce.score_pairs(QUERIES, DOCS, batch_size=1)
            - ce.score_pairs(QUERIES, DOCS, batch_size=4)).abs().max() < 1e-5
    assert repr(ex) == f"SplitExecutor(mice-l2+3, {tiny_bb.describe()})"
    assert repr(ce) == f"JointExecutor(ce, {tiny_bb.describe()})"
    assert make_executor("ce", tiny_bb).score_pairs([], []).shape == (0,)
    ds = ex.encode_documents([])
    assert len(ds) == 0 and tuple(ds.hidden.shape) == (0, 1, tiny_bb.hidden_size)
    # duplicated queries / documents: each scored as its own pair
    q = [QUERIES[0], QUERIES[1], QUERIES[0]]
    d = [DOCS[2], DOCS[2], DOCS[0]]
    r2 = make_executor("mice-l2+3", tiny_bb, "reference").score_pairs(q, d)
    assert (ex.score_pairs(q, d, batch_size=2) - r2).abs().max() < 1e-5
    # rerank / score_query with candidates in several chunks, any query of the states
    qs, dsx = ex.encode_queries(QUERIES), ex.encode_documents(DOCS, kv_cache=True)
    r = make_executor("mice-l2+3", tiny_bb, "reference").score_pairs([QUERIES[1]] * 4, DOCS)
    assert (ex.score_query(qs, dsx, batch_size=3, query=1) - r).abs().max() < 1e-5
    assert (ex.rerank(QUERIES[1], DOCS, batch_size=1) - r).abs().max() < 1e-5
    sub = ex.score_query(qs, dsx, d_index=[3, 1], query=1)
    assert (sub - r[[3, 1]]).abs().max() < 1e-5
    assert ex.score_query(qs, dsx, d_index=[]).shape == (0,)
    ce = make_executor("ce", tiny_bb)
    assert ce.score_query(ce.encode_queries(QUERIES), ce.encode_documents(DOCS),
                          d_index=[]).shape == (0,)
    # storing into a folder that does not exist yet (parents created)
    path = tmp_path / "a" / "b" / "docs.pt"
    dsx.save(path)
    loaded = DocStates.load(path)
    assert sorted(loaded.kv) == [2, 3, 4]
    assert torch.equal(ex.score_states(qs, [0, 2], loaded, [1, 3]),
                       ex.score_states(qs, [0, 2], dsx, [1, 3]))
    assert not list((tmp_path / "a" / "b").glob("*.tmp"))


@pytest.mark.parametrize("name", ["mice-l2+3", "mice-l2+3[attn=joint]"])
def test_cached_document_kv_is_what_the_layers_read(tiny_bb, name):
    """Scores with the cache equal scores without it, and corrupting the cached K/V of one
    layer changes them (the cache is really read, not recomputed)."""
    ex = make_executor(name, tiny_bb, "fast")
    qs = ex.encode_queries(QUERIES)
    ds = ex.encode_documents(DOCS)
    dkv = ex.encode_documents(DOCS, kv_cache=True)
    idx = torch.arange(4)
    base = ex.score_states(qs, idx, ds, idx)
    assert (ex.score_states(qs, idx, dkv, idx) - base).abs().max() < 1e-5
    # attn=joint: [CLS] reads no document key, so the last layer's document K/V are unused
    layers = sorted(dkv.kv) if "joint" not in name else sorted(dkv.kv)[:-1]
    assert len(layers) >= 2
    for layer in layers:
        k, v = dkv.kv[layer]
        bad = DocStates(dkv.hidden, dkv.mask, dkv.seg,
                        {**dkv.kv, layer: (torch.zeros_like(k), torch.zeros_like(v))}, dkv.pos)
        assert (ex.score_states(qs, idx, bad, idx) - base).abs().max() > 1e-4, layer


def test_part_states_select_cat_to_nbytes_by_hand():
    h1 = torch.arange(2 * 3 * 2, dtype=torch.float32).reshape(2, 3, 2)
    m1 = torch.tensor([[1, 1, 0], [1, 0, 0]]).bool()
    s1 = torch.tensor([[3, 4, -1], [4, -1, -1]])
    k1 = torch.ones(2, 1, 3, 2)
    p1 = DocStates(h1, m1, s1, {0: (k1, 2 * k1)}, torch.tensor([[0, 1, 0], [0, 0, 0]]))
    h2 = torch.full((1, 4, 2), 7.0)
    p2 = DocStates(h2, torch.ones(1, 4, dtype=torch.bool), torch.tensor([[3, 3, 3, 4]]),
                   {0: (3 * torch.ones(1, 1, 4, 2), 4 * torch.ones(1, 1, 4, 2))},
                   torch.tensor([[0, 1, 2, 3]]))
    c = DocStates.cat([p1, p2])
    assert type(c) is DocStates and len(c) == 3 and c.hidden.shape == (3, 4, 2)
    assert c.mask.tolist() == [[True, True, False, False], [True, False, False, False],
                               [True] * 4]
    assert c.seg.tolist() == [[3, 4, -1, -1], [4, -1, -1, -1], [3, 3, 3, 4]]
    assert torch.equal(c.hidden[0, 3], torch.zeros(2)) and torch.equal(c.hidden[2], h2[0])
    assert c.kv[0][0].shape == (3, 1, 4, 2)
    assert c.kv[0][0][:, 0, :, 0].tolist() == [[1, 1, 1, 0], [1, 1, 1, 0], [3, 3, 3, 3]]
    assert c.kv[0][1][:, 0, :, 0].tolist() == [[2, 2, 2, 0], [2, 2, 2, 0], [4, 4, 4, 4]]
    assert c.pos.tolist() == [[0, 1, 0, 0], [0, 0, 0, 0], [0, 1, 2, 3]]
    # select: rows trimmed to their longest valid length (gather and contiguous views)
    s = c.select([1, 0])
    assert s.hidden.shape == (2, 2, 2) and s.seg.tolist() == [[4, -1], [3, 4]]
    assert torch.equal(s.hidden[1], h1[0, :2]) and s.kv[0][0].shape == (2, 1, 2, 2)
    assert s.pos.tolist() == [[0, 0], [0, 1]]
    s = c.select(torch.tensor([1, 2]))
    assert s.hidden.shape == (2, 4, 2) and torch.equal(s.hidden[1], h2[0])
    assert s.kv[0][1][1, 0, :, 0].tolist() == [4, 4, 4, 4]
    s = c.select([0])
    assert s.mask.tolist() == [[True, True]] and s.kv[0][0].shape == (1, 1, 2, 2)
    assert len(c.select([])) == 0
    # nbytes: hidden + K + V, fp32
    assert c.nbytes == 4 * (3 * 4 * 2 + 2 * 3 * 1 * 4 * 2)
    assert QueryStates(h1, m1, s1).nbytes == 4 * 12
    half = c.to(dtype=torch.float16)
    assert half.hidden.dtype == torch.float16 and half.kv[0][0].dtype == torch.float16
    assert half.seg.dtype == torch.long and half.mask.dtype == torch.bool
    assert half.pos.dtype == torch.long and half.nbytes == c.nbytes // 2
    assert torch.equal(half.seg, c.seg) and torch.equal(half.pos, c.pos)
    no_pos = DocStates.cat([DocStates(h1, m1, s1), DocStates(h2, p2.mask, p2.seg)])
    assert no_pos.pos is None and no_pos.kv is None
    assert no_pos.to(dtype=torch.float16).kv is None


def test_text_states_by_hand(tiny_bb):
    ts = TextStates(["é", "ab", "c"])
    assert len(ts) == 3 and ts.nbytes == 2 + 2 + 1
    assert ts.select(torch.tensor([2, 0])).texts == ["c", "é"]
    ex = make_executor("prettr-l2", tiny_bb, "fast")  # no document precompute: texts
    assert isinstance(ex.encode_documents(DOCS), TextStates)
    assert isinstance(ex.encode_queries(QUERIES), TextStates)


def test_pooled_needs_a_mean_cos_head_without_interaction(tiny_bb):
    with pytest.raises(ValueError, match="pooled embeddings need a mean-cos head and no "
                                         "interaction layers$"):
        ex = make_executor("mice-l2+2", tiny_bb, "fast")
        ex.pooled(ex.encode_queries(QUERIES))
    with pytest.raises(ValueError, match="pooled embeddings"):
        ex = make_executor("colbert", tiny_bb, "fast")
        ex.pooled(ex.encode_queries(QUERIES))


# ======================================== ModernBERT: local windows, rotary positions, mean
@pytest.fixture(scope="module", params=["cls", "mean"])
def modernbert(request, tok):
    from oracle.reference import perturbed_modernbert_cls

    hf = perturbed_modernbert_cls(num_layers=3, hidden=32, heads=2, intermediate=48,
                                  local_attention=4, pooling=request.param, seed=5)
    bb = from_hf(hf, tok, name=f"mb-{request.param}")
    assert bb.local_window == 2 and [lw.local for lw in bb.layers] == [False, True, False]
    return hf, bb


def test_modernbert_ce_equals_hugging_face_with_windows_and_padding(modernbert):
    """Pairs much longer than the local window (2), padded batch: the local layer's window,
    the global layers and (mean pooling) the padding-aware pooling, against HF."""
    hf, bb = modernbert
    for kind in ("fast", "reference"):
        ex = make_executor("ce", bb, kind)
        tb = ex.tokenize_pairs(QUERIES, DOCS)
        assert tb.attention_mask.sum(1).unique().numel() > 1
        with torch.no_grad():
            exp = hf(input_ids=tb.input_ids, attention_mask=tb.attention_mask.long()).logits[:, 0]
        assert float(exp.max() - exp.min()) > 0.1
        assert (ex.forward_pairs(tb) - exp).abs().max() < 1e-5, kind


def test_modernbert_cls_score_without_mask_against_hugging_face(modernbert):
    hf, bb = modernbert
    g = torch.Generator().manual_seed(7)
    x = torch.randn(2, 5, bb.hidden_size, generator=g)
    pooled = x.mean(1) if bb.pooling == "mean" else x[:, 0]
    with torch.no_grad():
        exp = hf.classifier(hf.head(pooled))[:, 0]
        exp1 = hf.classifier(hf.head(x[:, 0]))[:, 0]
    assert torch.allclose(H.cls_score(bb, x), exp, atol=1e-5)
    assert torch.allclose(H.cls_score(bb, x[:, 0]), exp1, atol=1e-5)


@pytest.mark.parametrize("name", ["mice-l1+2", "mice-l1+2[attn=joint]", "mice-l1+2[order=self]",
                                  "biencoder"])
def test_modernbert_fast_equals_reference_with_windows_and_cached_kv(modernbert, name):
    """The fast split path (query rows attending frozen document keys through the local
    window, rotary document keys from the cache) against the reference executor, which runs
    each pair as one sequence."""
    hf, bb = modernbert
    ref = make_executor(name, bb, "reference").score_pairs(QUERIES, DOCS)
    assert float(ref.max() - ref.min()) > 1e-2
    ex = make_executor(name, bb, "fast")
    assert (ex.score_pairs(QUERIES, DOCS, batch_size=3) - ref).abs().max() < 1e-5
    qs, ds = ex.encode_queries(QUERIES), ex.encode_documents(DOCS, kv_cache=True)
    idx = torch.arange(len(QUERIES))
    assert (ex.score_states(qs, idx, ds, idx) - ref).abs().max() < 1e-5
    # states stored in fp16, scored in fp32 (and pooled embeddings through the final norm)
    ds16 = ex.encode_documents(DOCS, kv_cache=True, store_dtype=torch.float16, vectors=False)
    assert ds16.hidden.dtype == torch.float16 and ds16.mask.dtype == torch.bool
    assert all(k.dtype == v.dtype == torch.float16 for k, v in (ds16.kv or {}).values())
    assert (ex.score_states(qs, idx, ds16, idx) - ref).abs().max() < 0.02
    if name == "biencoder":
        # stored pooled vectors (final norm, pooling, normalisation offline): the reference's
        # scores by a dot product with the query's pooled vector
        dv = ex.encode_documents(DOCS, vectors=True, batch_size=3)
        assert dv.vectors and dv.hidden.shape[1] == 1
        assert (ex.score_states(qs, idx, dv, idx) - ref).abs().max() < 1e-5
        # pooled embeddings: HF ModernBERT (final norm included) mean-pooled, normalised
        e32 = ex.pooled(ex.encode_documents(DOCS, vectors=False))
        tb = ex.tokenize_docs(DOCS)
        for i in range(len(DOCS)):
            n = int(tb.attention_mask[i].sum())
            with torch.no_grad():
                hd = hf.model(input_ids=tb.input_ids[i:i + 1, :n]).last_hidden_state[0]
            assert torch.allclose(e32[i], F.normalize(hd.mean(0), dim=0), atol=1e-5)
        # fp16-stored states go through the final norm in the model's dtype (fp32)
        e16 = ex.pooled(ds16)
        with torch.no_grad():
            h16 = hf.model.final_norm(ds16.hidden.float())
        exp16 = F.normalize(torch.stack([h16[i][ds16.mask[i]].mean(0)
                                         for i in range(len(DOCS))]), dim=-1)
        assert e16.dtype == torch.float32 and (e16 - exp16).abs().max() < 1e-5


def test_modernbert_window_really_limits_attention(modernbert):
    """The reference pair forward with the local layer's window widened beyond every
    distance scores differently: the window is not a no-op on these inputs (guards the
    parity tests above against passing trivially)."""
    hf, bb = modernbert
    ex = make_executor("ce", bb, "reference")
    tb = ex.tokenize_pairs(QUERIES, DOCS)
    base = ex.forward_pairs(tb)
    wide = bb.converted()
    wide.local_window = 10_000
    other = make_executor("ce", wide, "reference").forward_pairs(tb)
    assert (other - base).abs().max() > 1e-4


# ======================================================== more survivors (second sample)
def test_length_flags_reach_the_tokenizer_and_flags_by_hand(tiny_bb, tok):
    a_id, b_id = tok.convert_tokens_to_ids(["a", "b"])
    ex = make_executor("ce", tiny_bb, query_max_tokens=2, doc_max_tokens=3)
    tb = ex.tokenize_pairs(["a a a a"], ["b b b b b"])
    assert rows(tb.input_ids) == [[CLS, a_id, a_id, SEP, b_id, b_id, b_id, SEP]]
    assert ex.settings()["sources"]["query_max_tokens"] == "flag"
    assert ex.settings()["sources"]["doc_max_tokens"] == "flag"
    assert ex.flags == {"cross_from_self": False, "projection_random": False,
                        "classifier_random": False}
    assert make_executor("colbert[proj=0]", tiny_bb).flags["projection_random"] is False
    ex = make_executor("mice-l2+2", tiny_bb, "fast", query_max_tokens=1, doc_max_tokens=2)
    qb, db = ex.tokenize_pairs(["a a a"], ["b b b"])
    assert rows(qb.input_ids) == [[CLS, a_id, SEP]]
    assert rows(db.input_ids) == [[CLS, b_id, b_id, SEP]]


def test_empty_document_states_shapes(tiny_bb):
    ds = make_executor("mice-l2+2", tiny_bb, "fast").encode_documents([])
    assert isinstance(ds, DocStates) and len(ds) == 0
    assert tuple(ds.hidden.shape) == (0, 1, tiny_bb.hidden_size)
    assert tuple(ds.mask.shape) == (0, 1) and ds.mask.dtype == torch.bool
    assert tuple(ds.seg.shape) == (0, 1) and ds.seg.dtype == torch.long


def test_part_states_select_trims_to_one_token():
    ps = QueryStates(torch.ones(2, 3, 2), torch.tensor([[1, 0, 0], [1, 0, 0]]).bool(),
                     torch.tensor([[0, -1, -1], [0, -1, -1]]))
    s = ps.select([1, 0])
    assert s.hidden.shape == (2, 1, 2) and s.seg.tolist() == [[0], [0]]
    assert ps.select(torch.tensor([0, 1])).mask.shape == (2, 1)


def test_cross_keys_inside_the_query_part(tiny_bb):
    """A custom split spec whose cross-attention keys include the query part's own [CLS]
    (and, second, its query tokens): the fast path reads those keys from the query part
    and the frozen document keys from the states, the reference from one sequence."""
    sep = LS.LayerSpec(LS.SEPARATE)
    for keys in ({"cls", "doc", "sep_d"}, {"cls", "query", "doc", "sep_d"}):
        for first in (True, False):
            inter = LS.LayerSpec(LS.matrix("11111", "11111", "11111", "00000", "00000"),
                                frozen=LS.DOC_SIDE, cross_keys=frozenset(keys),
                                cross_first=first)
            sp = S.custom("split", [sep, sep, inter, inter, LS.DROPPED, LS.DROPPED], head="cls")
            assert sp.fast_path(6) == "split"
            ref = make_executor(sp, tiny_bb, "reference").score_pairs(QUERIES, DOCS)
            ex = make_executor(sp, tiny_bb, "fast")
            assert (ex.score_pairs(QUERIES, DOCS, batch_size=3) - ref).abs().max() < 1e-5
            qs, ds = ex.encode_queries(QUERIES), ex.encode_documents(DOCS, kv_cache=True)
            idx = torch.arange(len(QUERIES))
            assert (ex.score_states(qs, idx, ds, idx) - ref).abs().max() < 1e-5


def test_cls_as_a_cross_key_is_read(tiny_bb):
    """One layer where query rows may read [CLS] only through cross-attention (it is a cross
    key): changing the [CLS] input state changes the query rows; with [CLS] neither a cross
    key nor allowed, it does not."""
    seg = torch.tensor([[0, 1, 1, 2, 3, 3, 4]])
    g = torch.Generator().manual_seed(8)
    x = torch.randn(1, 7, tiny_bb.hidden_size, generator=g)
    x2 = x.clone()
    x2[0, 0] += torch.randn(tiny_bb.hidden_size, generator=g)
    lw = tiny_bb.layers[2]
    read = LS.LayerSpec(LS.matrix("11111", "11111", "11111", "00000", "00000"),
                       frozen=LS.DOC_SIDE, cross_keys=frozenset({"cls", "doc", "sep_d"}))
    blind = LS.LayerSpec(LS.matrix("01111", "01111", "01111", "00000", "00000"),
                        frozen=LS.DOC_SIDE, cross_keys=frozenset({"doc", "sep_d"}))
    with torch.no_grad():
        a, b = (LY.layer_forward(tiny_bb, lw, read, t, seg) for t in (x, x2))
        assert (a[0, 1:4] - b[0, 1:4]).abs().max() > 1e-3
        assert torch.equal(a[0, 4:], x[0, 4:])  # frozen document rows
        a, b = (LY.layer_forward(tiny_bb, lw, blind, t, seg) for t in (x, x2))
        assert (a[0, 1:4] - b[0, 1:4]).abs().max() < 1e-6


def test_head_pools_the_right_parts_against_hugging_face(modernbert):
    """ModernBERT's classification head (HF ``head`` + ``classifier`` on the final norm):
    joint input (ce, one sequence) pools query and document tokens; MICE (two parts) the
    query part only; PreTTR as the reference scores it (``pair`` documents) both parts."""
    hf, bb = modernbert
    g = torch.Generator().manual_seed(9)
    H_ = bb.hidden_size
    xq, xd = torch.randn(2, 4, H_, generator=g), torch.randn(2, 3, H_, generator=g)
    qm = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]]).bool()
    dm = torch.tensor([[1, 1, 0], [1, 1, 1]]).bool()

    def expected(x, m):
        with torch.no_grad():
            h = hf.model.final_norm(x)
            pooled = torch.stack([h[b][m[b]].mean(0) for b in range(len(h))]) \
                if bb.pooling == "mean" else h[:, 0]
            return hf.classifier(hf.head(pooled))[:, 0]

    x = torch.cat([xq, xd], 1)
    jq = torch.cat([qm, torch.zeros_like(dm)], 1)
    jd = torch.cat([torch.zeros_like(qm), dm], 1)
    with torch.no_grad():
        ce = make_executor("ce", bb, "reference").head(x, jq, x, jd)
        mice = make_executor("mice-l1+2", bb, "fast").head(xq, qm, xd, dm)
        prettr = make_executor("prettr-l1", bb, "fast").head(xq, qm, xd, dm)
        offset = make_executor("prettr-l1[qlen=12]", bb, "fast").head(xq, qm, xd, dm)
    assert torch.allclose(ce, expected(x, jq | jd), atol=1e-5)
    assert torch.allclose(mice, expected(xq, qm), atol=1e-5)
    assert torch.allclose(prettr, expected(x, torch.cat([qm, dm], 1)), atol=1e-5)
    assert torch.allclose(offset, expected(x, torch.cat([qm, dm], 1)), atol=1e-5)


def test_layer_forward_default_positions(modernbert):
    """``pos`` None means 0..T-1 (the local layer: rotary positions and the window)."""
    hf, bb = modernbert
    g = torch.Generator().manual_seed(10)
    x = torch.randn(2, 9, bb.hidden_size, generator=g)
    seg = torch.tensor([[0, 1, 1, 2, 3, 3, 3, 3, 4]] * 2)
    ls = LS.LayerSpec(LS.FULL)
    with torch.no_grad():
        a = LY.layer_forward(bb, bb.layers[1], ls, x, seg)
        b = LY.layer_forward(bb, bb.layers[1], ls, x, seg, pos=torch.arange(9).expand(2, 9))
        c = LY.layer_forward(bb, bb.layers[1], ls, x, seg,
                             pos=torch.arange(9).flip(0).expand(2, 9) * 3)
    assert torch.allclose(a, b, atol=1e-6)
    assert (a - c).abs().max() > 1e-3  # positions matter in this layer


def test_modernbert_offset_documents_positions(modernbert):
    """prettr-l1[qlen=12]: document positions start at 12 (rotary, window) in the separate
    layers and after them; states stored without positions get them rebuilt from qlen."""
    hf, bb = modernbert
    name = "prettr-l1[qlen=12]"
    ref = make_executor(name, bb, "reference").score_pairs(QUERIES, DOCS)
    assert float(ref.max() - ref.min()) > 1e-2
    ex = make_executor(name, bb, "fast")
    assert ex.has_doc_precompute
    assert (ex.score_pairs(QUERIES, DOCS, batch_size=3) - ref).abs().max() < 1e-5
    qs, ds = ex.encode_queries(QUERIES), ex.encode_documents(DOCS)
    assert ds.pos[0, :3].tolist() == [12, 13, 14]
    bare_d = DocStates(ds.hidden, ds.mask, ds.seg)
    bare_q = QueryStates(qs.hidden, qs.mask, qs.seg)
    idx = torch.arange(len(QUERIES))
    assert (ex.score_states(bare_q, idx, bare_d, idx) - ref).abs().max() < 1e-5


def test_rerank_of_executors_without_precompute_against_hugging_face(tiny_hf, tiny_bb, tok):
    """``rerank`` of the joint, reference and PreTTR-pair executors: one query against every
    candidate, the HF cross-encoder on the HF-tokenized pairs as the oracle for ce."""
    enc = tok([QUERIES[1]] * len(DOCS), DOCS, padding=True, truncation="longest_first",
              max_length=128, return_tensors="pt")
    with torch.no_grad():
        exp = tiny_hf(**enc).logits[:, 0]
    for kind in ("fast", "reference"):
        got = make_executor("ce", tiny_bb, kind).rerank(QUERIES[1], DOCS, batch_size=3)
        assert got.shape == (len(DOCS),) and (got - exp).abs().max() < 1e-5, kind
    ex = make_executor("prettr-l2", tiny_bb, "fast")
    ref = make_executor("prettr-l2", tiny_bb, "reference").score_pairs([QUERIES[1]] * 4, DOCS)
    assert (ex.rerank(QUERIES[1], DOCS, batch_size=3) - ref).abs().max() < 1e-5


def test_own_cross_weights_and_checkpoint_projection(tiny_bb):
    """A backbone with its own cross-attention weights (different from the self-attention
    ones): the cached document K/V are computed with them, as the layers compute them; a
    projection from the checkpoint is reported as such."""
    from mice_bench.backbone import AttentionWeights

    bb = tiny_bb.converted()
    bb.ensure_cross_weights()
    g = torch.Generator().manual_seed(11)
    for lw in bb.layers:
        lw.cross = AttentionWeights(**{n: (None if getattr(lw.cross, n) is None else
                                           getattr(lw.cross, n).detach()
                                           + 0.3 * torch.randn(getattr(lw.cross, n).shape,
                                                               generator=g))
                                       for n in AttentionWeights._names})
    ex = make_executor("mice-l2+3", bb, "fast")
    assert ex.flags["cross_from_self"] is False
    ref = make_executor("mice-l2+3", bb, "reference").score_pairs(QUERIES, DOCS)
    own = make_executor("mice-l2+3", tiny_bb, "reference").score_pairs(QUERIES, DOCS)
    assert (ref - own).abs().max() > 1e-3  # the cross weights matter
    qs, ds = ex.encode_queries(QUERIES), ex.encode_documents(DOCS, kv_cache=True)
    idx = torch.arange(len(QUERIES))
    assert (ex.score_states(qs, idx, ds, idx) - ref).abs().max() < 1e-5
    # a projection the checkpoint ships (not random)
    cb = tiny_bb.converted()
    cb.projection = torch.nn.Parameter(torch.randn(16, cb.hidden_size, generator=g))
    cb.projection_random = False
    ex = make_executor("colbert", cb)
    st = ex.settings()
    assert st["projection"] == 16 and st["sources"]["projection"] == "checkpoint"
    assert ex.flags["projection_random"] is False


# ============================================================= third pass (full run)
def test_parts_are_capped_by_the_maximum_positions(tok):
    """A part never exceeds the model's positions: [CLS] (marker) text [SEP]."""
    b_id = tok.convert_tokens_to_ids("b")
    long_text = " ".join(["b"] * 20)
    t = Tokenizer(tok, 8, parse("biencoder"))
    assert rows(t.query_parts([long_text]).input_ids) == [[CLS] + [b_id] * 6 + [SEP]]
    assert rows(t.doc_parts([long_text]).input_ids) == [[CLS] + [b_id] * 6 + [SEP]]
    cs = CheckpointSettings(kind="colbert", query_marker="[unused0]", doc_marker="[unused1]",
                            query_expansion=False)
    t = Tokenizer(tok, 8, parse("colbert[proj=0]"), checkpoint=cs)
    assert rows(t.query_parts([long_text]).input_ids) == [[CLS, UNUSED0] + [b_id] * 5 + [SEP]]
    assert rows(t.doc_parts([long_text]).input_ids) == [[CLS, UNUSED1] + [b_id] * 5 + [SEP]]


def test_query_augmentation_adds_nothing_to_a_full_query(tok):
    b_id = tok.convert_tokens_to_ids("b")
    qb = Tokenizer(tok, 128, parse("colbert")).query_parts([" ".join(["b"] * 40), "b"])
    assert rows(qb.input_ids) == [[CLS] + [b_id] * 30 + [SEP], [CLS, b_id, SEP] + [MASK] * 29]


def test_token_batch_select_of_one_token_rows():
    tb = TokenBatch(input_ids=torch.tensor([[5, 0, 0], [6, 0, 0]]),
                    token_type_ids=torch.zeros(2, 3, dtype=torch.long),
                    position_ids=torch.zeros(2, 3, dtype=torch.long),
                    segment_ids=torch.tensor([[0, -1, -1], [0, -1, -1]]),
                    attention_mask=torch.tensor([[1, 0, 0], [1, 0, 0]]).bool())
    assert rows(tb.select([1, 0]).input_ids) == [[6], [5]]


def test_split_states_from_token_batches_any_dtype_and_no_cache_by_default(tiny_bb):
    ex = make_executor("mice-l2+3", tiny_bb, "fast")
    ref = make_executor("mice-l2+3", tiny_bb, "reference").score_pairs(QUERIES, DOCS)
    qs = ex.encode_queries(ex.tokenize_queries(QUERIES))
    ds = ex.encode_documents(ex.tokenize_docs(DOCS))
    assert ds.kv is None  # K/V only when asked for (memory)
    idx = torch.arange(len(QUERIES))
    assert (ex.score_states(qs, idx, ds, idx) - ref).abs().max() < 1e-5
    # states stored in fp16 are scored in the model's dtype (fp32)
    q16, d16 = qs.to(dtype=torch.float16), ds.to(dtype=torch.float16)
    assert (ex.score_states(q16, idx, d16, idx) - ref).abs().max() < 0.02


def test_cross_keys_inside_the_query_part_modernbert(modernbert):
    """As ``test_cross_keys_inside_the_query_part`` on ModernBERT (pre-norm: the cross keys of
    the query part go through the layer's own input norm)."""
    hf, bb = modernbert
    sep = LS.LayerSpec(LS.SEPARATE)
    inter = LS.LayerSpec(LS.matrix("11111", "11111", "11111", "00000", "00000"),
                        frozen=LS.DOC_SIDE, cross_keys=frozenset({"cls", "doc", "sep_d"}))
    sp = S.custom("split", [sep, inter, inter], head="cls")
    ref = make_executor(sp, bb, "reference").score_pairs(QUERIES, DOCS)
    assert float(ref.max() - ref.min()) > 1e-2
    assert (make_executor(sp, bb, "fast").score_pairs(QUERIES, DOCS) - ref).abs().max() < 1e-5


def test_make_executor_errors_and_lengths(tiny_bb, tok):
    with pytest.raises(UsageError, match=r"^unknown executor 'gpu'; valid: auto, reference, "
                                         r"fast$"):
        make_executor("ce", tiny_bb, "gpu")
    with pytest.raises(UsageError, match=r"no fast path \(only ce and split-first variants: "
                                         r"prettr, mice, colbert, biencoder\); use --executor "
                                         r"reference or auto$"):
        make_executor("mask1", tiny_bb, "fast")
    with pytest.raises(LS.SpecError):
        make_executor("mice-l5+3", tiny_bb)  # 8 layers on a 6-layer model
    a_id = tok.convert_tokens_to_ids("a")
    ex = make_executor("ce", tiny_bb, "reference", query_max_tokens=1)
    assert rows(ex.tokenize_pairs(["a a a"], ["a"]).input_ids) == [[CLS, a_id, SEP, a_id, SEP]]


def test_families_without_token_types(modernbert):
    hf, bb = modernbert
    with pytest.raises(UsageError, match=r"doc_tt=1 needs token types; .* has none$"):
        make_executor("colbert[doc_tt=1]", bb)
    tb = make_executor("ce", bb).tokenize_pairs(["a cat"], ["a dog"])
    assert rows(tb.token_type_ids) == [[0] * 7]


class _NoPad(_PadSeven):
    pad_token_id = None


def test_tokenizer_settings_edges(tok):
    t = Tokenizer(tok, 1000)  # no spec: the custom defaults
    assert (t.max_length, t.truncation, t.doc_token_type) == (512, "longest_first", 0)
    assert Tokenizer(tok, 128, parse("colbert"), doc_token_type=1).doc_token_type == 1
    dog = wp(tok, "dog")[0]
    assert rows(Tokenizer(tok, 128, parse("mice-l2+2"), doc_token_type=1)
                .doc_parts(["dog"]).token_type_ids) == [[1, 1, 1]]
    # a bi-encoder's max_seq_length is its limit (no preset cap), ColBERT's only caps
    cs = CheckpointSettings(kind="sentence-transformers", max_seq_length=300,
                            sources={"max_seq_length": "sentence_bert_config.json"})
    assert Tokenizer(tok, 128, parse("biencoder"), checkpoint=cs).query_max_tokens == 298
    # model_max_length equal to the positions: nothing lowered, nothing reported
    cs = CheckpointSettings(kind="hf", model_max_length=128,
                            sources={"model_max_length": "tokenizer_config.json"})
    assert "max_positions" not in Tokenizer(tok, 128, parse("ce"), checkpoint=cs).settings()
    # ColBERT totals smaller than the specials: at least one word piece
    cs = CheckpointSettings(kind="colbert", query_marker="[unused0]", query_length=3,
                            sources={"query_length": "artifact.metadata"})
    assert Tokenizer(tok, 128, parse("colbert"), checkpoint=cs).query_max_tokens == 1
    # the skip-list only applies to MaxSim split parts
    cs = CheckpointSettings(kind="colbert", skiplist=(",",), sources={"skiplist": "x"})
    assert "skiplist_ids" not in Tokenizer(tok, 128, parse("ce"), checkpoint=cs).settings()
    assert "skiplist_ids" not in Tokenizer(tok, 128, parse("biencoder"),
                                           checkpoint=cs).settings()
    # a tokenizer without a padding id pads with 0
    tb = Tokenizer(_NoPad(tok), 128, parse("ce")).pairs(["dog", "dog dog"], ["dog", "dog"])
    assert rows(tb.input_ids)[0] == [CLS, dog, SEP, dog, SEP, 0]


# =========================================================================== doc vectors
def test_doc_vectors_flag_survives_select_cat_to_save(tmp_path):
    h = torch.arange(12, dtype=torch.float32).reshape(2, 3, 2)
    m = torch.tensor([[1, 1, 0], [1, 1, 1]]).bool()
    s = torch.tensor([[3, 4, -1], [3, 4, 4]])
    v = DocStates(h, m, s, None, None, True)
    assert v.select([1]).vectors and v.to(dtype=torch.float16).vectors
    assert DocStates.cat([v, v]).vectors and not DocStates.cat([DocStates(h, m, s)] * 2).vectors
    with pytest.raises(ValueError, match="head vectors with layer states"):
        DocStates.cat([v, DocStates(h, m, s)])
    v.save(tmp_path / "v.pt")
    assert DocStates.load(tmp_path / "v.pt").vectors


def test_doc_vectors_by_hand(tiny_bb):
    """``doc_vectors`` = normalize(states @ P.T) per token (BERT: no final norm), and the
    head scores them as a naive MaxSim loop over the query's projected unit vectors does,
    skip-list tokens (segment SKIP_DOC) out."""
    ex = make_executor("colbert", tiny_bb, "fast")
    P = ex.projection.float()
    ds = ex.encode_documents(DOCS[:3], vectors=False)
    dv = ex.encode_documents(DOCS[:3], vectors=True, batch_size=2)
    assert dv.vectors and not ds.vectors and dv.hidden.dtype == torch.float32
    assert dv.hidden.shape == (*ds.hidden.shape[:2], P.shape[0])
    assert torch.equal(dv.mask, ds.mask) and torch.equal(dv.seg, ds.seg)
    for i in range(3):
        for t in range(int(ds.mask[i].sum())):
            want = ds.hidden[i, t].float() @ P.T
            want = want / want.norm()
            assert torch.allclose(dv.hidden[i, t], want, atol=1e-6), (i, t)
    assert ex.doc_vectors(dv) is dv                      # already vectors: unchanged
    qs = ex.encode_queries(QUERIES[:1])
    got = ex.score_query(qs, dv)
    q = qs.hidden[0][qs.mask[0]].float() @ P.T
    q = q / q.norm(dim=-1, keepdim=True)
    for i in range(3):
        best = 0.0
        for qt in q:
            sims = [float(qt @ dv.hidden[i, t]) for t in range(dv.hidden.shape[1])
                    if dv.mask[i, t] and dv.seg[i, t] != IN.SKIP_DOC]
            best += max(sims)
        assert got[i] == pytest.approx(best, abs=1e-5), i
    # a cls head reads no vectors; only late interaction and a bi-encoder make them
    with pytest.raises(ValueError, match="maxsim or mean-cos head only"):
        make_executor("mice-l2+2", tiny_bb, "fast").head(qs.hidden, qs.mask, dv.hidden,
                                                         dv.mask, d_vectors=True)
    for variant in ("mice-l2+2", "prettr-l2[qlen=20]"):
        other = make_executor(variant, tiny_bb, "fast")
        assert not other.late_interaction and not other.bi_encoder
        with pytest.raises(ValueError, match="late-interaction"):
            other.doc_vectors(ds)
    bienc = make_executor("biencoder", tiny_bb, "fast")
    assert bienc.bi_encoder and not bienc.late_interaction and not ex.bi_encoder
    assert make_executor("colbert[proj=0,qaug=0]", tiny_bb, "fast").late_interaction


def test_maxsim_with_stored_vectors_skips_the_document_projection():
    q = torch.tensor([[[1.0, 0.0, 0.0]]])
    P = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]])          # [D=2, H=3]
    d_states = torch.tensor([[[3.0, 4.0, 5.0]]])
    d_vec = F.normalize(d_states @ P.T, dim=-1)      # P d = (3, 8), unit: (3, 8) / sqrt 73
    m = torch.tensor([[True]])
    a = H.maxsim(q, m, d_states, m, P)
    b = H.maxsim(q, m, d_vec, m, P, d_vectors=True)
    assert a == pytest.approx(b) and float(a) == pytest.approx(3 / math.hypot(3, 8))

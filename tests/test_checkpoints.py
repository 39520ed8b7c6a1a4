"""Checkpoints score as their authors configured them.

Random weights saved in each library's layout:

* sentence-transformers bi-encoders (saved by sentence-transformers itself): pooling ``cls`` /
  ``max``, a non-default ``max_seq_length``, prompts -> ``SentenceTransformer.encode``;
* PyLate models (its layout written here: Transformer + ``1_Dense`` + PyLate's
  ``config_sentence_transformers.json``) -> a test-side re-implementation of PyLate's
  ``ColBERT.encode`` / ``colbert_scores`` (PyLate itself does not install offline here: it pins
  other torch / transformers versions), written from its source (``pylate/models/colbert.py``:
  ``preprocess``, ``insert_prefix_token``, ``skiplist_mask``; ``pylate/scores/scores.py``);
* the original ColBERT format (``HF_ColBERT`` + ``linear.weight`` + ``artifact.metadata``) ->
  ColBERT's own tokenization and scoring rules (``QueryTokenizer`` / ``DocTokenizer``:
  ``'. ' + text`` with token 1 replaced by the marker, queries padded with ``[MASK]`` to
  ``query_maxlen`` and not attended, punctuation skip-list, MaxSim).
"""

from __future__ import annotations

import json
import string
import warnings

import pytest
import torch
import torch.nn.functional as F

from conftest import DOCS, QUERIES
from mice_bench.backbone import load_backbone, packaged_tokenizer
from mice_bench.checkpoints import read_checkpoint_settings
from mice_bench.executors import make_executor

DOCS_P = [d + " , ; ( yes ) !" for d in DOCS]  # punctuation for the skip-lists


def _bert(vocab=30522, hidden=32, layers=2, seed=0):
    from transformers import BertConfig, BertModel

    cfg = BertConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers,
                     num_attention_heads=4, intermediate_size=2 * hidden,
                     max_position_embeddings=128, initializer_range=0.2)
    torch.manual_seed(seed)
    return BertModel(cfg).eval()


# ----------------------------------------------------------------- sentence-transformers
@pytest.fixture(scope="module")
def st_models(tmp_path_factory):
    st = pytest.importorskip("sentence_transformers")
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    from sentence_transformers import models

    root = tmp_path_factory.mktemp("st")
    base = root / "base"
    _bert().save_pretrained(base)
    packaged_tokenizer().save_pretrained(base)
    out = {}
    for pooling, msl, norm in ((("cls",), 12, True), (("max",), 9, False),
                               (("mean", "max"), 20, True)):
        t = models.Transformer(str(base), max_seq_length=msl)
        mods = [t, models.Pooling(32, pooling_mode=pooling)] + ([models.Normalize()] if norm
                                                               else [])
        m = st.SentenceTransformer(modules=mods, device="cpu",
                                   prompts={"query": "query: ", "document": "passage: "})
        path = root / "-".join(pooling)
        m.save(str(path))
        out[pooling] = (str(path), msl, norm)
    return out


@pytest.mark.parametrize("pooling", [("cls",), ("max",), ("mean", "max")])
def test_sentence_transformers_parity(st_models, pooling):
    from sentence_transformers import SentenceTransformer

    path, msl, norm = st_models[pooling]
    ref = SentenceTransformer(path, device="cpu")
    bb = load_backbone(path)
    cs = bb.checkpoint
    assert cs.kind == "sentence-transformers" and cs.pooling == pooling
    assert cs.max_seq_length == msl and cs.normalize is norm
    for kind in ("fast", "reference"):
        ex = make_executor("biencoder", bb, kind)
        s = ex.settings()
        assert s["query_max_tokens"] == s["doc_max_tokens"] == msl - 2
        assert s["pooling"] == list(pooling) and s["query_prompt"] == "query: "
        assert s["sources"]["doc_max_tokens"].startswith("checkpoint:")
        assert s["sources"]["pooling"].startswith("checkpoint:")
        q = ref.encode(QUERIES, prompt_name="query", convert_to_tensor=True,
                       normalize_embeddings=True)
        d = ref.encode(DOCS, prompt_name="document", convert_to_tensor=True,
                       normalize_embeddings=True)
        expected = (q * d).sum(-1)
        got = ex.score_pairs(QUERIES, DOCS)
        assert (got - expected).abs().max() < 1e-5, (got, expected)
        if kind == "fast":
            emb = ex.pooled(ex.encode_documents(DOCS))
            assert (emb - d).abs().max() < 1e-5


def test_flags_override_checkpoint(st_models):
    path, msl, _ = st_models[("cls",)]
    bb = load_backbone(path)
    ex = make_executor("biencoder", bb, query_max_tokens=5, doc_max_tokens=7)
    s = ex.settings()
    assert (s["query_max_tokens"], s["doc_max_tokens"]) == (5, 7)
    assert s["sources"]["query_max_tokens"] == "flag"
    # the paper's ColBERT keeps its own lengths, capped by the checkpoint's limit
    s = make_executor("colbert", bb).settings()
    assert s["query_max_tokens"] == min(30, msl - 2) and s["qaug"]


def test_architecture_names_keep_preset_defaults():
    bb = load_backbone("minilm-l6")
    s = make_executor("biencoder", bb).settings()
    assert s["query_max_tokens"] == 32 and s["sources"]["query_max_tokens"] == "preset"
    assert s["checkpoint"] == "none" and s["pooling"] == ["mean"]


# ----------------------------------------------------------------- PyLate
def _pylate_dir(path, query_length=12, document_length=16, attend=False, seed=3):
    from safetensors.torch import save_file

    tok = packaged_tokenizer()
    tok.add_tokens(["[Q] ", "[D] "])
    model = _bert(vocab=len(tok), seed=seed)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    (path / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Dense", "type": "pylate.models.Dense.Dense"}]))
    (path / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 179}))
    (path / "config_sentence_transformers.json").write_text(json.dumps({
        "query_prefix": "[Q] ", "document_prefix": "[D] ", "query_length": query_length,
        "document_length": document_length, "attend_to_expansion_tokens": attend,
        "skiplist_words": list(string.punctuation), "do_query_expansion": True,
        "model_type": "ColBERT"}))
    (path / "1_Dense").mkdir()
    (path / "1_Dense" / "config.json").write_text(json.dumps({
        "in_features": 32, "out_features": 8, "bias": False,
        "activation_function": "torch.nn.modules.linear.Identity"}))
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(8, 32, generator=g)
    save_file({"linear.weight": w}, str(path / "1_Dense" / "model.safetensors"))
    return model, tok, w


def _pylate_encode(model, tok, w, texts, is_query, length, prefix, attend, skiplist):
    """PyLate's ``ColBERT.encode`` (``preprocess`` + forward + masks + normalize)."""
    tok.pad_token = tok.mask_token  # PyLate: pad_token_id = mask_token_id
    kw = {"padding": "max_length"} if is_query else {"padding": True}
    enc = tok(texts, truncation="longest_first", max_length=length - 1, return_tensors="pt",
              **kw)
    pid = tok.convert_tokens_to_ids(prefix)

    def ins(t, v):
        return torch.cat([t[:, :1], torch.full((t.shape[0], 1), v, dtype=t.dtype), t[:, 1:]], 1)

    ids, am = ins(enc["input_ids"], pid), ins(enc["attention_mask"], 1)
    tt = ins(enc["token_type_ids"], 0)
    if is_query and attend:
        am = torch.ones_like(am)
    with torch.no_grad():
        h = model(input_ids=ids, attention_mask=am, token_type_ids=tt).last_hidden_state
    h = h @ w.T
    if is_query:
        masks = torch.ones_like(ids, dtype=torch.bool)
    else:
        sk = torch.tensor([tok.convert_tokens_to_ids(x) for x in skiplist])
        masks = ~torch.isin(ids, sk) & am.bool()
    return [F.normalize(e[m], dim=1) for e, m in zip(h, masks)]


@pytest.mark.parametrize("attend", [False, True])
def test_pylate_parity(tmp_path, attend):
    path = tmp_path / "pylate"
    path.mkdir()
    model, tok, w = _pylate_dir(path, attend=attend)
    cs = read_checkpoint_settings(path, tok)
    assert cs.kind == "pylate" and cs.query_length == 12 and cs.doc_length == 16
    bb = load_backbone(str(path))
    assert bb.projection is not None and tuple(bb.projection.shape) == (8, 32)
    qe = _pylate_encode(model, tok, w, QUERIES, True, 12, "[Q] ", attend, string.punctuation)
    de = _pylate_encode(model, tok, w, DOCS_P, False, 16, "[D] ", attend, string.punctuation)
    assert all(len(q) == 12 for q in qe)
    expected = torch.stack([(q @ d.T).max(1).values.sum() for q, d in zip(qe, de)])
    for kind in ("fast", "reference"):
        ex = make_executor("colbert", bb, kind)
        s = ex.settings()
        assert s["query_marker"] == "[Q] " and s["doc_marker"] == "[D] "
        assert s["attend_expansion"] is attend and s["projection"] == 8
        assert s["sources"]["query_max_tokens"].startswith("checkpoint:")
        got = ex.score_pairs(QUERIES, DOCS_P)
        assert (got - expected).abs().max() < 1e-5, (kind, got, expected)


# ----------------------------------------------------------------- original ColBERT
def _colbert_dir(path, seed=5):
    from safetensors.torch import save_file

    model = _bert(seed=seed)
    tok = packaged_tokenizer()
    cfg = model.config.to_dict()
    cfg.update(architectures=["HF_ColBERT"], model_type="bert")
    (path / "config.json").write_text(json.dumps(cfg))
    tok.save_pretrained(path)
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(8, 32, generator=g)
    sd = {"bert." + k: v.contiguous() for k, v in model.state_dict().items()}
    sd["linear.weight"] = w
    save_file(sd, str(path / "model.safetensors"))
    (path / "artifact.metadata").write_text(json.dumps({
        "query_token_id": "[unused0]", "doc_token_id": "[unused1]", "query_maxlen": 10,
        "doc_maxlen": 14, "attend_to_mask_tokens": False, "mask_punctuation": True,
        "dim": 8, "similarity": "cosine"}))
    return model, tok, w


def _colbert_reference(model, tok, w, queries, docs):
    """ColBERT's ``QueryTokenizer`` / ``DocTokenizer`` / ``ColBERT.query|doc`` / MaxSim."""
    q = tok([". " + x for x in queries], padding="max_length", truncation=True,
            max_length=10, return_tensors="pt")
    qids, qam = q["input_ids"].clone(), q["attention_mask"]
    qids[:, 1] = tok.convert_tokens_to_ids("[unused0]")
    qids[qids == tok.pad_token_id] = tok.mask_token_id
    d = tok([". " + x for x in docs], padding="longest", truncation="longest_first",
            max_length=14, return_tensors="pt")
    dids, dam = d["input_ids"].clone(), d["attention_mask"]
    dids[:, 1] = tok.convert_tokens_to_ids("[unused1]")
    skip = {tok.encode(p, add_special_tokens=False)[0] for p in string.punctuation}
    with torch.no_grad():
        Q = F.normalize(model(input_ids=qids, attention_mask=qam).last_hidden_state @ w.T, dim=2)
        D = model(input_ids=dids, attention_mask=dam).last_hidden_state @ w.T
    dmask = torch.tensor([[(x not in skip) and (x != 0) for x in row] for row in dids.tolist()])
    D = F.normalize(D * dmask[..., None], dim=2)
    sim = (Q @ D.transpose(1, 2)).masked_fill(~dmask[:, None, :], -9999)
    return sim.max(-1).values.sum(-1)


def test_colbert_original_format(tmp_path):
    path = tmp_path / "colbertv2"
    path.mkdir()
    model, tok, w = _colbert_dir(path)
    bb = load_backbone(str(path))
    assert bb.checkpoint.kind == "colbert" and torch.equal(bb.projection, w)
    expected = _colbert_reference(model, tok, w, QUERIES, DOCS_P)
    for kind in ("fast", "reference"):
        ex = make_executor("colbert", bb, kind)
        s = ex.settings()
        assert (s["query_max_tokens"], s["doc_max_tokens"]) == (7, 11)
        assert s["query_marker"] == "[unused0]" and s["attend_expansion"] is False
        assert s["sources"]["doc_max_tokens"] == "checkpoint:artifact.metadata"
        got = ex.score_pairs(QUERIES, DOCS_P)
        assert (got - expected).abs().max() < 1e-5, (kind, got, expected)
    # the stored document states keep the skip-list (segment ids) through the fast path
    ex = make_executor("colbert", bb, "fast")
    ds = ex.encode_documents(DOCS_P)
    qs = ex.encode_queries(QUERIES[:1])
    expected_1 = _colbert_reference(model, tok, w, QUERIES[:1] * len(DOCS_P), DOCS_P)
    assert (ex.score_query(qs, ds) - expected_1).abs().max() < 1e-5
    # a ColBERT index: the projected unit vectors (8-d here, not the 32-d states), scored
    # without the document side, straight and through the store in each format
    dv = ex.encode_documents(DOCS_P, vectors=True)
    assert dv.vectors and dv.hidden.shape[-1] == 8 and dv.kv is None
    assert torch.allclose(dv.hidden[dv.mask].norm(dim=-1), torch.ones(int(dv.mask.sum())))
    assert (ex.score_query(qs, dv) - expected_1).abs().max() < 1e-5
    spread = float(expected_1.max() - expected_1.min())
    from mice_bench.store.docstore import DocStateStore

    ids = [f"d{i}" for i in range(len(DOCS_P))]
    by_id = dict(zip(ids, DOCS_P))
    for fmt, tol in (("fp32", 1e-5), ("fp16", 2e-3), ("int8", 2e-2)):
        st = DocStateStore(tmp_path / f"store-{fmt}", fmt=fmt, vectors=True)
        st.ensure(ids, lambda xs: {d: by_id[d] for d in xs},
                  lambda tx: ex.encode_documents(tx, vectors=True), batch_size=2)
        back = DocStateStore(tmp_path / f"store-{fmt}", fmt=fmt, vectors=True).load(ids)
        assert back.vectors and back.hidden.shape[-1] == 8
        assert (ex.score_query(qs, back) - expected_1).abs().max() <= tol * spread, fmt
        assert st.usage()["content"] == "vectors"
    # only late interaction (token vectors) and the bi-encoder (one pooled vector per
    # document) have document vectors; a MICE variant keeps its split-layer states
    with pytest.raises(ValueError, match="late-interaction"):
        make_executor("mice-l1+1", bb, "fast").encode_documents(DOCS_P, vectors=True)
    pooled = make_executor("biencoder", bb, "fast").encode_documents(DOCS_P, vectors=True)
    assert pooled.vectors and pooled.hidden.shape[:2] == (len(DOCS_P), 1)


def test_cross_encoder_settings(tmp_path):
    from transformers import BertConfig, BertForSequenceClassification

    cfg = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2,
                     num_attention_heads=4, intermediate_size=64, max_position_embeddings=128,
                     num_labels=1)
    m = BertForSequenceClassification(cfg)
    m.config.sentence_transformers = {"activation_fn": "torch.nn.modules.activation.Sigmoid"}
    m.save_pretrained(tmp_path)
    tok = packaged_tokenizer()
    tok.model_max_length = 40
    tok.save_pretrained(tmp_path)
    bb = load_backbone(str(tmp_path))
    s = make_executor("ce", bb).settings()
    assert s["max_length"] == 40 and s["num_labels"] == 1 and s["score"] == "logit"
    assert s["checkpoint"] == "cross-encoder"
    assert s["checkpoint_activation"].endswith("Sigmoid")


# ----------------------------------------------------------------- provenance, dropout
def test_trained_provenance_and_checkpoint_settings_saved(tmp_path, st_models):
    from mice_bench.model import InteractionModel, checkpoint_provenance

    path, msl, _ = st_models[("cls",)]
    m = InteractionModel.from_pretrained(path, variant="ce")
    assert m.info["random_head"] and "classifier" in m.random_init
    out = m.save_pretrained(tmp_path / "ce", trained={"steps": 3, "loss": 0.5, "data": "x",
                                                      "from": path})
    meta = json.loads((out / "mice_bench.json").read_text())
    assert meta["trained"]["steps"] == 3 and "classifier" in meta["random_init"]
    assert meta["random_init_note"].endswith("then trained")
    assert meta["checkpoint_settings"]["max_seq_length"] == msl
    assert checkpoint_provenance(out)["random_head"] is False
    again = InteractionModel.from_pretrained(out)
    assert again.info["random_head"] is False and again.trained["steps"] == 3
    # the base's own settings survive fine-tuning (its ST files are not in the checkpoint)
    s = again.executor().settings()
    assert s["max_length"] == msl and "mice_bench.json" in s["sources"]["max_length"]


def test_dropout_only_in_train_mode():
    from mice_bench.model import InteractionModel

    m = InteractionModel.from_pretrained("minilm-l6", variant="mice-l2+2")
    q, d = QUERIES[:2], DOCS[:2]
    with torch.no_grad():
        base = m(q, d)
    m.dropout = True
    m.train()
    a, b = m(q, d), m(q, d)
    assert not torch.allclose(a, b)           # dropout active: two draws differ
    m.eval()
    with torch.no_grad():
        assert torch.equal(m(q, d), base)     # eval: no dropout at all
    m.train()
    m.dropout = False
    with torch.enable_grad():
        assert torch.allclose(m(q, d), base, atol=1e-6)  # default: no dropout in training


# ----------------------------------------------------------------- precedence, every format
#: per checkpoint format: the variant scored, then every setting the checkpoint decides
#: (settings key: (value read from the files written here, the key in ``sources``)) and the
#: variant's preset for the same keys (a model without checkpoint files), typed by hand
PRECEDENCE = {
    "colbert": ("colbert", {
        "query_max_tokens": (7, "query_max_tokens"), "doc_max_tokens": (11, "doc_max_tokens"),
        "query_marker": ("[unused0]", "query_marker"), "doc_marker": ("[unused1]", "doc_marker"),
        "qaug": (True, "qaug"), "attend_expansion": (False, "attend_expansion"),
        "skiplist_ids": (32, "skiplist"), "projection": (8, "projection")},
        {"query_max_tokens": 30, "doc_max_tokens": 178, "query_marker": None,
         "doc_marker": None, "qaug": True, "attend_expansion": True, "skiplist_ids": None,
         "projection": 128}),
    "pylate": ("colbert", {
        "query_max_tokens": (9, "query_max_tokens"), "doc_max_tokens": (13, "doc_max_tokens"),
        "query_marker": ("[Q] ", "query_marker"), "doc_marker": ("[D] ", "doc_marker"),
        "qaug": (True, "qaug"), "attend_expansion": (False, "attend_expansion"),
        "skiplist_ids": (32, "skiplist"), "projection": (8, "projection")},
        {"query_max_tokens": 30, "doc_max_tokens": 178, "query_marker": None,
         "doc_marker": None, "qaug": True, "attend_expansion": True, "skiplist_ids": None,
         "projection": 128}),
    "pylate without expansion": ("colbert", {
        "query_max_tokens": (9, "query_max_tokens"), "doc_max_tokens": (13, "doc_max_tokens"),
        "query_marker": ("[Q] ", "query_marker"), "doc_marker": ("[D] ", "doc_marker"),
        "qaug": (False, "qaug"), "skiplist_ids": (32, "skiplist"),
        "projection": (8, "projection")},
        {"query_max_tokens": 30, "doc_max_tokens": 178, "query_marker": None,
         "doc_marker": None, "qaug": True, "skiplist_ids": None, "projection": 128}),
    "cross-encoder": ("ce", {
        "max_length": (24, "max_length"), "max_positions": (40, "max_positions"),
        "checkpoint_activation": ("torch.nn.modules.activation.Sigmoid",
                                  "checkpoint_activation")},
        {"max_length": 128, "max_positions": None, "checkpoint_activation": None}),
    "cross-encoder as mice": ("mice-l1+1", {
        "query_max_tokens": (22, "query_max_tokens"), "doc_max_tokens": (22, "doc_max_tokens"),
        "max_positions": (40, "max_positions"),
        "checkpoint_activation": ("torch.nn.modules.activation.Sigmoid",
                                  "checkpoint_activation")},
        {"query_max_tokens": 510, "doc_max_tokens": 510, "max_positions": None,
         "checkpoint_activation": None}),
    "sentence-transformers": ("biencoder", {
        "query_max_tokens": (10, "query_max_tokens"), "doc_max_tokens": (10, "doc_max_tokens"),
        "pooling": (["cls"], "pooling"), "normalize": (True, "normalize"),
        "query_prompt": ("query: ", "query_prompt"), "doc_prompt": ("passage: ", "doc_prompt"),
        "max_positions": (12, "max_positions")},
        {"query_max_tokens": 32, "doc_max_tokens": None, "pooling": ["mean"], "normalize": True,
         "query_prompt": None, "doc_prompt": None, "max_positions": None}),
    "sentence-transformers, max pooling": ("biencoder", {
        "query_max_tokens": (7, "query_max_tokens"), "doc_max_tokens": (7, "doc_max_tokens"),
        "pooling": (["max"], "pooling"), "normalize": (False, "normalize"),
        "query_prompt": ("query: ", "query_prompt"), "doc_prompt": ("passage: ", "doc_prompt"),
        "max_positions": (9, "max_positions")},
        {"query_max_tokens": 32, "doc_max_tokens": None, "pooling": ["mean"], "normalize": True,
         "query_prompt": None, "doc_prompt": None, "max_positions": None}),
}


def _cross_encoder_dir(path):
    from transformers import BertConfig, BertForSequenceClassification

    cfg = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2,
                     num_attention_heads=4, intermediate_size=64, max_position_embeddings=128,
                     num_labels=1)
    m = BertForSequenceClassification(cfg)
    m.config.sentence_transformers = {"activation_fn": "torch.nn.modules.activation.Sigmoid",
                                      "max_length": 24}
    m.save_pretrained(path)
    tok = packaged_tokenizer()
    tok.model_max_length = 40
    tok.save_pretrained(path)


@pytest.fixture(scope="module")
def format_dirs(tmp_path_factory, st_models):
    root = tmp_path_factory.mktemp("formats")
    dirs = {}
    for name, make in (("colbert", _colbert_dir), ("pylate", _pylate_dir),
                       ("cross-encoder", _cross_encoder_dir)):
        (root / name).mkdir()
        make(root / name)
        dirs[name] = root / name
    dirs["cross-encoder as mice"] = dirs["cross-encoder"]
    (root / "noexp").mkdir()
    _pylate_dir(root / "noexp")
    f = root / "noexp" / "config_sentence_transformers.json"
    f.write_text(json.dumps({**json.loads(f.read_text()), "do_query_expansion": False}))
    dirs["pylate without expansion"] = root / "noexp"
    dirs["sentence-transformers"] = st_models[("cls",)][0]
    dirs["sentence-transformers, max pooling"] = st_models[("max",)][0]
    return dirs


def test_every_setting_has_a_case_where_checkpoint_and_preset_differ():
    keys = {k for _, given, _ in PRECEDENCE.values() for k in given}
    told = {k for _, given, preset in PRECEDENCE.values() for k, (v, _) in given.items()
            if v != preset[k]}
    assert keys == told, keys - told


@pytest.mark.parametrize("fmt", list(PRECEDENCE))
def test_flag_beats_checkpoint_beats_preset_for_every_setting(format_dirs, fmt):
    """For each format, every setting its files decide: the checkpoint's value (and says so),
    not the preset's; ``--query-max-tokens`` / ``--doc-max-tokens`` beat it and change
    nothing else; without the files every setting is the variant's preset."""
    import copy

    from mice_bench.checkpoints import CheckpointSettings

    variant, given, preset = PRECEDENCE[fmt]
    bb = load_backbone(str(format_dirs[fmt]))
    s = make_executor(variant, bb).settings()
    src = s["sources"]
    from_ckpt = {k for k, v in src.items() if v.startswith("checkpoint")}
    assert from_ckpt == {sk for _, sk in given.values()}, (fmt, src)
    for key, (value, skey) in given.items():
        assert s.get(key) == value, (fmt, key, s.get(key))
    flagged = make_executor(variant, bb, query_max_tokens=5, doc_max_tokens=7).settings()
    assert (flagged["query_max_tokens"], flagged["doc_max_tokens"]) == (5, 7)
    assert flagged["sources"]["query_max_tokens"] == flagged["sources"]["doc_max_tokens"] == \
        "flag"
    rest = {k for k in s if k not in ("query_max_tokens", "doc_max_tokens", "sources")}
    assert {k: flagged.get(k) for k in rest} == {k: s.get(k) for k in rest}, fmt
    bare = copy.copy(bb)
    bare.checkpoint = CheckpointSettings()
    if variant == "colbert":       # the projection is the checkpoint's weights, not a setting
        bare.projection = None
    p = make_executor(variant, bare).settings()
    for key in given:
        assert p.get(key) == preset[key], (fmt, key, p.get(key))
        assert not p["sources"].get(given[key][1], "preset").startswith("checkpoint"), (fmt, key)

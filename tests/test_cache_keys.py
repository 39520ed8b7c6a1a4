"""Every field of every cache key matters: changing one setting alone (on a warm cache) scores
or encodes again, and what comes out equals a run on a fresh cache with that setting. And a
setting that is not part of a key (batch sizes) reuses the cache. Caches: pair scores
(``scores/*.sqlite``), document states (``docstates/``) and teacher scores (training).

In-process on the tiny fixture of ``tests/fixtures/effectiveness`` (conftest's tiny BERT for
any --model); counters count the pairs scored and the documents encoded per variant."""

from __future__ import annotations

import gzip
import json
import os
import shutil
from pathlib import Path

import pytest

from mice_bench.effectiveness import runner
from mice_bench.effectiveness.plan import ModelRef
from mice_bench.effectiveness.runner import run_effectiveness

from test_effectiveness_pipeline import (DOCS, NUM_PAIRS, UNIQUE_DOCS, cfg, counters,  # noqa
                                         fixture_collection, fixture_data)

pytestmark = pytest.mark.usefixtures("no_network")

SPLIT = "mice-l2+2"          # a split variant: its runs use both caches


@pytest.fixture
def docs_copy(tmp_path, fixture_data, monkeypatch):
    """A copy of the fixture's --docs file that the collection reads (so a test may touch
    it), and the fixture collection for it."""
    p = tmp_path / "docs.jsonl"
    shutil.copy(DOCS, p)

    def collection(info, docs_path, limit_queries=None):
        coll = fixture_collection(info, DOCS, limit_queries)
        coll.docs_path = Path(docs_path)
        return coll

    monkeypatch.setattr(runner, "load_collection", collection)
    return p


def run_file(out: Path, variant: str, label: str = "minilm-l6") -> dict:
    from mice_bench.naming import slug

    p = out / "dl19" / "run-effectiveness-run" / label / f"{slug(variant)}.trec.gz"
    rows = [ln.split() for ln in gzip.decompress(p.read_bytes()).decode().splitlines()]
    return {(r[0], r[2]): float(r[4]) for r in rows}


def scored(counters, variant: str) -> tuple[int, int]:
    return counters["pairs"][variant], counters["docs"][variant]


def changed_alone(tmp_path, counters, variant: str, label: str = "minilm-l6", **change):
    """Run once with the defaults, then with ``change`` on the same cache and on a fresh one:
    (pairs scored, documents encoded) by the second run, its scores and the fresh run's."""
    base = dict(variants=f"bm25,{variant}")
    run_effectiveness(cfg(tmp_path, **base, **change.pop("first", {})))
    before = scored(counters, variant)
    run_effectiveness(cfg(tmp_path, out="out-b", **base, **change))
    after = scored(counters, variant)
    run_effectiveness(cfg(tmp_path, cache="fresh", out="out-f", **base, **change))
    return ((after[0] - before[0], after[1] - before[1]),
            run_file(tmp_path / "out-b", variant, label),
            run_file(tmp_path / "out-f", variant, label))


# --------------------------------------------------------------------------- both keys
@pytest.mark.parametrize("change,docs_again", [
    (dict(query_max_tokens=3), False),      # a query setting: documents stay valid
    (dict(doc_max_tokens=6), True),
    (dict(dtype="bf16"), True),
    (dict(seed=7), True),
    (dict(doc_store="int8"), True),         # encoded again or compressed from fp32: redone
    (dict(executor="reference"), False),    # the reference path has no document states
])
def test_each_setting_alone_recomputes_and_equals_a_fresh_cache(tmp_path, fixture_data,
                                                                counters, change, docs_again):
    (pairs, docs), warm, fresh = changed_alone(tmp_path, counters, SPLIT, **change)
    assert pairs == NUM_PAIRS, change
    if docs_again and change.get("executor") is None:
        assert docs > 0 or change.get("doc_store"), change
    assert warm == fresh, change


def test_unchanged_settings_reuse_both_caches(tmp_path, fixture_data, counters):
    (pairs, docs), warm, fresh = changed_alone(tmp_path, counters, SPLIT)
    assert (pairs, docs) == (0, 0)
    assert warm == fresh


def test_batch_sizes_are_not_part_of_the_keys(tmp_path, fixture_data, counters):
    (pairs, docs), warm, fresh = changed_alone(tmp_path, counters, SPLIT, batch_size=1,
                                               doc_batch_size=1)
    assert (pairs, docs) == (0, 0)
    assert warm == pytest.approx(fresh, abs=1e-5)


def test_doc_max_tokens_re_encodes_the_documents(tmp_path, fixture_data, counters):
    (pairs, docs), _, _ = changed_alone(tmp_path, counters, SPLIT, doc_max_tokens=6)
    assert docs == UNIQUE_DOCS


def test_a_changed_docs_file_is_another_corpus(tmp_path, docs_copy, counters):
    """Same path, new contents (another size and time): scored and encoded again."""
    c = cfg(tmp_path, variants=f"bm25,{SPLIT}", docs=str(docs_copy))
    run_effectiveness(c)
    first = run_file(tmp_path / "out", SPLIT)
    lines = docs_copy.read_text().splitlines()
    d0 = json.loads(lines[0])
    lines[0] = json.dumps({"doc_id": d0["doc_id"], "text": "an entirely different text"})
    docs_copy.write_text("\n".join(lines) + "\n")
    st = docs_copy.stat()
    os.utime(docs_copy, (st.st_atime + 5, st.st_mtime + 5))
    before = scored(counters, SPLIT)
    run_effectiveness(c)
    after = scored(counters, SPLIT)
    assert after[0] - before[0] == NUM_PAIRS and after[1] - before[1] == UNIQUE_DOCS
    again = run_file(tmp_path / "out", SPLIT)
    run_effectiveness(cfg(tmp_path, cache="fresh", out="out-f", variants=f"bm25,{SPLIT}",
                          docs=str(docs_copy)))
    assert again == run_file(tmp_path / "out-f", SPLIT)
    changed = [k for k in again if k[1] == d0["doc_id"]]
    assert changed and any(again[k] != first[k] for k in changed)


def test_new_weights_in_a_checkpoint_folder_are_another_model(tmp_path, fixture_data,
                                                              counters, tiny_hf):
    """A local checkpoint's identity is its weight files: rewritten weights (another time
    stamp) score again under the same path."""
    from mice_bench.backbone import packaged_tokenizer

    d = tmp_path / "ckpt"
    tiny_hf.save_pretrained(d)
    packaged_tokenizer().save_pretrained(d)
    models = [ModelRef(str(d), "m")]
    run_effectiveness(cfg(tmp_path, variants=f"bm25,{SPLIT}", models=models))
    before = scored(counters, SPLIT)
    w = d / "model.safetensors"
    st = w.stat()
    os.utime(w, (st.st_atime + 5, st.st_mtime + 5))
    run_effectiveness(cfg(tmp_path, variants=f"bm25,{SPLIT}", models=models))
    after = scored(counters, SPLIT)
    assert after[0] - before[0] == NUM_PAIRS and after[1] - before[1] == UNIQUE_DOCS
    run_effectiveness(cfg(tmp_path, cache="fresh", out="out-f", variants=f"bm25,{SPLIT}",
                          models=models))
    assert run_file(tmp_path / "out", SPLIT, "m") == run_file(tmp_path / "out-f", SPLIT, "m")


# --------------------------------------------------------------------------- document states
def test_variants_that_share_the_layers_below_the_split_share_the_states(tmp_path,
                                                                          fixture_data,
                                                                          counters):
    """prettr-l2 and mice-l2+2 run the same two document layers: one encoding serves both;
    mice-l3+2 (another split layer) encodes again, as colbert[doc_tt=1] (another document
    token type) does for colbert."""
    run_effectiveness(cfg(tmp_path, variants="bm25,mice-l2+2,prettr-l2"))
    assert counters["docs"]["mice-l2+2"] == UNIQUE_DOCS
    assert counters["docs"].get("prettr-l2", 0) == 0
    run_effectiveness(cfg(tmp_path, variants="bm25,mice-l3+2"))
    assert counters["docs"]["mice-l3+2"] == UNIQUE_DOCS
    run_effectiveness(cfg(tmp_path, variants="bm25,colbert,colbert[doc_tt=1]"))
    assert counters["docs"]["colbert"] == UNIQUE_DOCS
    assert counters["docs"]["colbert[doc_tt=1]"] == UNIQUE_DOCS
    fresh = cfg(tmp_path, cache="fresh", out="out-f", variants="bm25,colbert[doc_tt=1]")
    run_effectiveness(fresh)
    assert run_file(tmp_path / "out", "colbert[doc_tt=1]") == \
        run_file(tmp_path / "out-f", "colbert[doc_tt=1]")


def test_same_split_layer_with_other_layers_below_it_encodes_again(tmp_path, fixture_data,
                                                                   counters):
    """A variant that splits at the same layer as mice-l2+2 but runs other layers below the
    split (its first layer dropped) gets document states of its own: on mice-l2+2's warm
    cache it encodes every document again and scores as it does on a fresh cache."""
    from mice_bench.layerspec import DROPPED
    from mice_bench.spec import custom, parse

    layers = parse(SPLIT).layers(6)                  # the fixture's model has 6 layers
    other = str(custom("split", (DROPPED, *layers[1:])))
    assert parse(other).split_layer(6) == parse(SPLIT).split_layer(6) == 2
    run_effectiveness(cfg(tmp_path, variants=f"bm25,{SPLIT}"))
    assert counters["docs"][SPLIT] == UNIQUE_DOCS
    run_effectiveness(cfg(tmp_path, variants=f"bm25,{other}"))
    assert counters["docs"][other] == UNIQUE_DOCS
    run_effectiveness(cfg(tmp_path, cache="fresh", out="out-f", variants=f"bm25,{other}"))
    assert run_file(tmp_path / "out", other) == run_file(tmp_path / "out-f", other)


# --------------------------------------------------------------------------- teacher scores
@pytest.fixture
def train_data():
    from mice_bench.training.data import TrainingData

    texts = {"d1": "a cat is an animal", "d2": "spiders have eight legs",
             "d3": "vitamin d and bones", "d4": "goldfish eat flakes"}
    return TrainingData(source="test", queries={"q1": "what is a cat", "q2": "spider legs"},
                        positives={"q1": ["d1"], "q2": ["d2"]},
                        negatives={"q1": ["d3"], "q2": ["d4"]}, texts=texts)


def _teacher(tiny_bb, variant="ce", **kw):
    from mice_bench.model import InteractionModel

    return InteractionModel(tiny_bb.converted(), variant, **kw)


@pytest.mark.parametrize("change", ["variant", "qmax", "dmax", "data", "teacher", "weights",
                                    "dtype"])
def test_teacher_scores_are_recomputed_when_one_key_field_changes(tmp_path, tiny_bb,
                                                                  train_data, change):
    from mice_bench.training import data as D

    calls = []
    base_teacher = _teacher(tiny_bb)
    D.teacher_scores(train_data, base_teacher, "t", tmp_path)
    teacher, name, data = base_teacher, "t", train_data
    if change == "variant":
        teacher = _teacher(tiny_bb, "mice-l2+2")
    elif change == "qmax":
        teacher = _teacher(tiny_bb, query_max_tokens=2)
    elif change == "dmax":
        teacher = _teacher(tiny_bb, doc_max_tokens=2)
    elif change == "data":
        data = D.TrainingData(**{**train_data.__dict__,
                                 "texts": {**train_data.texts, "d3": "another text"}})
    elif change == "teacher":
        name = "another-teacher"
    elif change == "weights":                      # same name, other weights (another seed)
        import torch

        teacher = _teacher(tiny_bb)
        with torch.no_grad():
            next(teacher.parameters()).add_(0.5)
    elif change == "dtype":
        import torch

        teacher = _teacher(tiny_bb).to(torch.float64)
    ex = teacher.executor("auto")
    real = type(ex).score_pairs

    def counting(self, *a, **kw):
        calls.append(len(a[0]))
        return real(self, *a, **kw)

    import unittest.mock as mock

    with mock.patch.object(type(ex), "score_pairs", counting):
        warm = D.teacher_scores(data, teacher, name, tmp_path)
    assert sum(calls) == 4, change                 # all four pairs scored again
    assert warm == D.teacher_scores(data, teacher, name, tmp_path / "fresh")


# --------------------------------------------------------------------------- hub revisions
def test_a_hub_model_at_another_commit_gets_other_score_and_state_caches(tmp_path, tiny_bb):
    """A hub id names a moving target: its weights at another commit never reuse the scores
    or document states cached for the first commit; the same commit reuses them."""
    from mice_bench.data import collections as eds
    from mice_bench.effectiveness.rerank import ScoringSettings, VariantScorer
    from mice_bench.executors import make_executor

    from test_effectiveness_pipeline import DOCS

    info = eds.resolve_datasets("dl19")[0]
    coll = eds.Collection(info, {"q": "a query"}, {"q": {"d": 1}}, Path(DOCS))

    def paths(commit):
        tiny_bb.config._commit_hash = commit
        ex = make_executor(SPLIT, tiny_bb)
        sc = VariantScorer(ex, "org/some-model", coll, tmp_path, ScoringSettings())
        return sc.score_path, sc.doc_cache.dir

    try:
        a, a2, b = paths("aaaa"), paths("aaaa"), paths("bbbb")
    finally:
        tiny_bb.config._commit_hash = None
    assert a == a2
    assert a[0] != b[0] and a[1] != b[1]


# --------------------------------------------------------------------------- the keys alone
def _keys(bb, variant, **lengths):
    from mice_bench.data import collections as eds
    from mice_bench.effectiveness.keys import score_key, store_key
    from mice_bench.effectiveness.rerank import ScoringSettings
    from mice_bench.executors import make_executor

    info = eds.resolve_datasets("dl19")[0]
    coll = eds.Collection(info, {"q": "a query"}, {"q": {"d": 1}}, Path(DOCS))
    ex = make_executor(variant, bb, **lengths)
    s = ScoringSettings()
    return store_key(ex, "some/model", coll, s), score_key(ex, "some/model", coll, s, s.doc_store)


def test_the_store_key_holds_only_what_changes_the_stored_documents(tiny_bb):
    """A query length (flag) leaves the store key as it is and changes the score key; a
    document length changes both; a document length equal to the effective default is the
    same store."""
    store, score = _keys(tiny_bb, SPLIT)
    q_store, q_score = _keys(tiny_bb, SPLIT, query_max_tokens=3)
    assert q_store == store and q_score != score
    d_store, d_score = _keys(tiny_bb, SPLIT, doc_max_tokens=6)
    assert d_store != store and d_score != score
    default = store["doc_settings"]["doc_max_tokens"]
    assert _keys(tiny_bb, SPLIT, doc_max_tokens=default)[0] == store


def test_a_query_length_over_a_checkpoint_s_own_lengths_reads_the_same_store(minilm_path):
    """all-MiniLM-L6-v2 sets both lengths in its sentence-transformers config: a
    ``--query-max-tokens`` flag takes the query's from the flag and must not move the store
    that ``store build`` made without it."""
    from mice_bench.backbone import load_backbone

    bb = load_backbone(minilm_path, device="cpu", dtype="fp32")
    for variant in ("colbert[proj=0,qaug=0]", "biencoder"):
        store, score = _keys(bb, variant)
        q_store, q_score = _keys(bb, variant, query_max_tokens=32)
        assert q_store == store and q_score != score, variant
        assert store["content"] == ("vectors" if variant.startswith("colbert") else "pooled")


def test_every_field_of_both_keys_is_always_present(tiny_bb):
    """No field is left out to keep an older key: a joint variant's score key has the same
    fields as a split one's, and both carry the key version."""
    from mice_bench.effectiveness.keys import KEY_VERSION

    store, split_score = _keys(tiny_bb, SPLIT)
    _, joint_score = _keys(tiny_bb, "ce")
    assert set(joint_score) == set(split_score)
    assert store["version"] == split_score["version"] == KEY_VERSION
    assert joint_score["doc_content"] == "none" and split_score["doc_content"] == "states"

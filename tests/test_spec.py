"""The interaction spec: seed mask definitions, canonical names, validation."""

import pytest

from mice_bench import spec as S
from mice_bench.spec import SpecError, custom, matrix, parse, resolve

# The seed study's matrices (rows from, columns to: cls, query, sep_q, doc, sep_d), written
# out independently of mice_bench.spec from the table.
SEED = {
    "ce": ["11111", "11111", "11111", "11111", "11111"],
    "mask0": ["11111", "01110", "00100", "01011", "00001"],
    "mask1": ["11100", "01110", "00100", "01011", "00001"],
    "mask2": ["11100", "01110", "00100", "00011", "00001"],
    "mask3_low": ["11100", "01100", "00100", "00011", "00001"],
    "separate": ["11100", "11100", "11100", "00011", "00011"],
    # MICE interaction layers (the reference's mice_v1 defaults): [CLS] reads cls/query/sep_q
    # and the document; query and sep_q read query, sep_q and the document, not [CLS]
    "mice_q": ["11111", "01111", "01111"],
    "mice_q_cls_no_doc": ["11100", "01111", "01111"],
    "mice_one_softmax": ["11100", "01111", "01111"],
}


def rows(ls):
    return list(S.matrix_rows(ls.allow))


@pytest.mark.parametrize("name", ["ce", "mask0", "mask1", "mask2"])
def test_uniform_masks_match_seed(name):
    layers = parse(name).layers(12)
    assert len(layers) == 12
    assert all(rows(ls) == SEED[name] and not ls.frozen and not ls.dropped for ls in layers)


def test_mask0_semantics_in_words():
    m = S.MASK0
    idx = S.SEG_INDEX
    # nobody but [CLS] itself attends [CLS]
    assert [m[r][idx["cls"]] for r in range(5)] == [True, False, False, False, False]
    # SEPs attend only themselves
    assert rows(S.LayerSpec(m))[idx["sep_q"]] == "00100"
    assert rows(S.LayerSpec(m))[idx["sep_d"]] == "00001"
    # doc does not attend the first SEP, query does not attend the last
    assert not m[idx["doc"]][idx["sep_q"]] and not m[idx["query"]][idx["sep_d"]]


def test_mask3_layers():
    layers = parse("mask3-l4").layers(12)
    assert all(rows(ls) == SEED["mask3_low"] for ls in layers[:4])
    assert all(rows(ls) == SEED["mask2"] for ls in layers[4:])


def test_prettr_layers():
    layers = parse("prettr-l3").layers(6)
    assert all(rows(ls) == SEED["separate"] for ls in layers[:3])
    assert all(rows(ls) == SEED["ce"] for ls in layers[3:])
    assert parse("prettr-l3").layout == "split" and parse("prettr-l3").split_layer(6) == 3


def test_mice_layers():
    sp = parse("mice-l4+3")
    layers = sp.layers(12)
    assert all(rows(ls) == SEED["separate"] for ls in layers[:4])
    for ls in layers[4:7]:
        assert rows(ls)[:3] == SEED["mice_q"]
        assert ls.frozen == {"doc", "sep_d"} and not ls.dropped
        assert ls.cross_keys == {"doc", "sep_d"} and ls.cross_first and not ls.cross_uniform
    assert all(ls.dropped for ls in layers[7:])
    assert sp.split_layer(12) == 4 and sp.fast_path(12) == "split"
    selff = parse("mice-l4+3[order=self]").layers(12)
    assert not any(ls.cross_first for ls in selff[4:7])
    one = parse("mice-l4+3[attn=joint]").layers(12)
    assert all(rows(ls)[:3] == SEED["mice_one_softmax"] and not ls.cross_keys
               for ls in one[4:7])


def test_mice_cls_not_reading_document_follows_the_reference():
    # the reference's fully masked [CLS] row averages the document uniformly, except in the
    # last layer of the self-first order where [CLS] skips cross-attention
    cross_first = parse("mice-l4+3[cls_doc=0]").layers(12)
    assert all(rows(ls)[:3] == SEED["mice_q_cls_no_doc"] and ls.cross_uniform == {"cls"}
               for ls in cross_first[4:7])
    self_first = parse("mice-l4+3[order=self,cls_doc=0]").layers(12)
    assert [ls.cross_uniform for ls in self_first[4:7]] == [{"cls"}, {"cls"}, frozenset()]


@pytest.mark.parametrize("name,head", [("colbert", "maxsim"), ("biencoder", "mean-cos")])
def test_late_interaction(name, head):
    sp = parse(name)
    assert sp.head == head and sp.layout == "split" and sp.split_layer(12) == 12
    assert all(rows(ls) == SEED["separate"] for ls in sp.layers(12))


NAMES = ["ce", "mask0", "mask1", "mask2", "mask3-l4", "mask3-l0", "prettr-l0", "prettr-l4",
         "mice-l4+3", "mice-l0+2", "mice-l4+8", "mice-l4+1", "mice-l4+3[order=self]",
         "mice-l4+3[cls_doc=0]", "mice-l4+3[order=self,cls_doc=0]", "mice-l4+3[qcls=1]",
         "mice-l4+3[attn=joint]", "colbert", "biencoder", "colbert[doc_tt=1]",
         "colbert[proj=0,qaug=0]", "biencoder[head=maxsim]", "prettr-l2[head=mean-cos]",
         "prettr-l4[qlen=32]", "biencoder[proj=1]"]


@pytest.mark.parametrize("name", NAMES)
def test_round_trip(name):
    sp = parse(name)
    assert str(sp) == name
    assert parse(str(sp)) == sp
    cu = custom(sp.layout, sp.layers(12), head=sp.head, doc_token_type=sp.doc_token_type)
    assert parse(str(cu)) == cu
    assert cu.layers(12) == sp.layers(12)


def test_fast_path_classification():
    assert parse("ce").fast_path(12) == "joint"
    for n in ("mask0", "mask1", "mask2", "mask3-l4"):
        assert parse(n).fast_path(12) is None
    for n in ("prettr-l4", "mice-l4+3", "mice-l4+3[order=self]", "colbert", "biencoder"):
        assert parse(n).fast_path(12) == "split"
    assert not parse("prettr-l4").precomputable and parse("prettr-l4[qlen=32]").precomputable
    assert parse("mice-l4+3").precomputable


@pytest.mark.parametrize("bad", ["mice-l4+1[order=self,cls_doc=0]", "mice-l4+1[attn=joint]",
                                 "mask3-l11", "mice-l13+3", "prettr-l12", "mice-l4+0",
                                 "mask3-l12"])
def test_impossible_specs(bad):
    with pytest.raises(SpecError) as e:
        resolve(bad, 12)
    assert "valid names" in str(e.value) and "mice-l{m}+{n}" in str(e.value)


@pytest.mark.parametrize("bad", ["foo", "mice-l4", "mask4", "colbert[bogus=1]", "ce[head=x]",
                                 "ce[head=maxsim]", "mice-l4+3-cross", "ce[order=self]",
                                 "mice-l4+3[order=sideways]", "colbert[qaug=maybe]"])
def test_unknown_names(bad):
    with pytest.raises(SpecError) as e:
        parse(bad)
    assert "valid" in str(e.value)


def test_mask3_upper_bound_depends_on_layers():
    resolve("mask3-l10", 12)
    with pytest.raises(SpecError):
        resolve("mask3-l5", 6)


def test_custom_doc_must_reach_cls():
    never = S.LayerSpec(matrix("11100", "11100", "11100", "00011", "00011"))
    with pytest.raises(SpecError, match="never reaches"):
        custom("joint", [never] * 4)


def test_parse_accepts_spec_and_lists():
    sp = parse("mice-l4+3")
    assert parse(sp) is sp
    assert [str(x) for x in resolve("ce, mice-l4+3,colbert")] == ["ce", "mice-l4+3", "colbert"]
    assert [str(x) for x in resolve("mice-l4+3[order=self,cls_doc=0],ce")] == \
        ["mice-l4+3[order=self,cls_doc=0]", "ce"]


def test_reference_tokenization_defaults():
    # read from the reference configs: MICE 512/512 (specials included), ColBERT 32/180,
    # PreTTR query capped at 256 with the document cut first, pair models 512 longest-first
    assert parse("mice-l4+3").default_lengths()["query_max_tokens"] == 510
    assert parse("mice-l4+3").default_lengths()["doc_max_tokens"] == 510
    assert parse("colbert").default_lengths()["query_max_tokens"] == 30
    assert parse("colbert").default_lengths()["doc_max_tokens"] == 178
    assert parse("prettr-l4").default_lengths()["truncation"] == "doc_first"
    assert parse("ce").default_lengths() == {"query_max_tokens": None, "doc_max_tokens": None,
                                             "max_length": 512, "truncation": "longest_first"}


@pytest.mark.parametrize("L,name", [(12, "mice-l4+3"), (7, "mice-l4+3"), (6, "mice-l4+2"),
                                    (5, "mice-l4+1"), (4, "mice-l3+1"), (2, "mice-l1+1")])
def test_the_mice_that_fits_a_model(L, name):
    """One rule: up to the paper's 4 separate layers, at least one interaction layer, up to 3
    interaction layers; the result fits the model."""
    fit = S.fitted("mice", L)
    assert str(fit) == name
    assert fit.validate(L) is fit


def test_latency_fits_its_default_mice_to_a_shallow_checkpoint(monkeypatch):
    """The latency command's default comparison on a 4-layer model uses the same rule."""
    import mice_bench.backbones.files as files
    import mice_bench.model as model
    from mice_bench.latency import cli
    from mice_bench.latency.config import DEFAULT_VARIANTS

    monkeypatch.setattr(files, "checkpoint_layers", lambda name: 4)
    monkeypatch.setattr(model, "checkpoint_variant", lambda name: None)
    out = cli._default_variants("some/4-layer-checkpoint")
    assert out == [str(S.fitted("mice", 4)) if v.startswith("mice-") else v
                   for v in DEFAULT_VARIANTS]
    assert "mice-l3+1" in out


def test_fitted_refuses_an_unknown_family():
    with pytest.raises(SpecError, match="unknown family 'nope'; valid: ce, mask0"):
        S.fitted("nope", 12)


def test_every_family_is_one_declaration():
    """Options, description, document style and defaults come from the family declaration:
    a family registered here behaves in parse, str, description and options like a built-in."""
    fam = S.Family("probe", "probe-l{k}", r"probe-l(?P<k>\d+)", "split", "probe family",
                   lambda s, L: tuple(S.LayerSpec(S.SEPARATE) if i < s.k else S.LayerSpec()
                                      for i in range(L)),
                   defaults={"head": "cls"}, options=("head",),
                   describe=lambda s, text: text + " (described)",
                   doc_style=lambda s: "pair", fit=lambda L: f"probe-l{L - 1}")
    S.register(fam)
    try:
        spec = parse("probe-l2")
        assert spec.k == 2 and spec.layout == "split" and spec.doc_style == "pair"
        assert not spec.precomputable
        assert spec.description() == "probe family (described)"
        assert str(S.fitted("probe", 6)) == "probe-l5"
        with pytest.raises(SpecError, match="option 'proj' does not apply to 'probe-l2'"):
            parse("probe-l2[proj=1]")
        assert spec.split_layer(4) == 2
    finally:
        del S.REGISTRY["probe"]

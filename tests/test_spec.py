"""The interaction spec: seed mask definitions, canonical names, the parser and its options,
custom layers, validation and the family registry.

Every expectation is written out by hand from the spec's documented semantics (the segment
order cls, query, sep_q, doc, sep_d; the custom layer grammar; the family table), never
computed by calling the code under test as its own oracle.
"""

import pytest

from mice_bench import families as FM
from mice_bench import layerspec as LS
from mice_bench import spec as S
from mice_bench.layerspec import LayerSpec, SpecError, matrix
from mice_bench.spec import InteractionSpec, custom, parse, resolve

# The seed study's matrices (rows from, columns to: cls, query, sep_q, doc, sep_d), written
# out independently of mice_bench.layerspec from the table.
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
    return list(LS.matrix_rows(ls.allow))


@pytest.mark.parametrize("name", ["ce", "mask0", "mask1", "mask2"])
def test_uniform_masks_match_seed(name):
    layers = parse(name).layers(12)
    assert len(layers) == 12
    assert all(rows(ls) == SEED[name] and not ls.frozen and not ls.dropped for ls in layers)


def test_mask0_semantics_in_words():
    m = LS.MASK0
    idx = LS.SEG_INDEX
    # nobody but [CLS] itself attends [CLS]
    assert [m[r][idx["cls"]] for r in range(5)] == [True, False, False, False, False]
    # SEPs attend only themselves
    assert rows(LS.LayerSpec(m))[idx["sep_q"]] == "00100"
    assert rows(LS.LayerSpec(m))[idx["sep_d"]] == "00001"
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
    never = LS.LayerSpec(matrix("11100", "11100", "11100", "00011", "00011"))
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
    fam = FM.Family("probe", "probe-l{k}", r"probe-l(?P<k>\d+)", "split", "probe family",
                   lambda s, L: tuple(LS.LayerSpec(LS.SEPARATE) if i < s.k else LS.LayerSpec()
                                      for i in range(L)),
                   defaults={"head": "cls"}, options=("head",),
                   describe=lambda s, text: text + " (described)",
                   doc_style=lambda s: "pair", fit=lambda L: f"probe-l{L - 1}")
    FM.register(fam)
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
        del FM.REGISTRY["probe"]


# ----------------------------------------------------------------------
# the parser, options, custom layers and validation, value by value
DOC = frozenset({"doc", "sep_d"})
SEP_BITS = "11100" "11100" "11100" "00011" "00011"  # query part / document part separate
FULL_BITS = "1" * 25
MICE_BITS = "11111" "01111" "01111" "00000" "00000"  # [CLS] and query read the doc (cross)
MICE_NOCLS_BITS = "11100" "01111" "01111" "00000" "00000"

HELP = ("valid names: ce, mask0, mask1, mask2, mask3-l{k}, prettr-l{k}, mice-l{m}+{n}, colbert, "
        "biencoder; options in brackets, e.g. mice-l4+3[order=self], colbert[proj=0,qaug=0], "
        "prettr-l4[qlen=32] (options: head, doc_tt, proj, qaug, attn, order, cls_doc, qcls, "
        "qlen); custom-joint:/custom-split: per-layer patterns")


def bits(ls):
    return "".join(LS.matrix_rows(ls.allow))


def err(fn, *a):
    with pytest.raises(SpecError) as e:
        fn(*a)
    return str(e.value)


# ------------------------------------------------------------------ small helpers
def test_matrix_helpers():
    m = matrix("10000", "01000", "00100", "00010", "00001")
    assert m[0] == (True, False, False, False, False)
    assert m[4] == (False, False, False, False, True)
    assert LS.matrix_rows(m) == ("10000", "01000", "00100", "00010", "00001")
    for bad in [("111",), ("11111",) * 4, ("11111",) * 6, ("11112",) + ("11111",) * 4,
                ("1111",) + ("11111",) * 4]:
        msg = err(matrix, *bad)
        assert msg.startswith("a matrix needs five rows of five 0/1 digits, got (")
    ls = LayerSpec(matrix("00001", "00000", "00000", "00000", "00000"))
    assert ls.allowed("cls", "sep_d") and not ls.allowed("sep_d", "cls")
    assert not ls.allowed("cls", "cls")


def test_option_values_are_read_as_the_names_spell_them():
    for v in ("1", "true", "yes", "TRUE", "Yes"):
        assert parse(f"colbert[proj={v}]").projection is True
    for v in ("0", "false", "no", "FALSE", "No"):
        assert parse(f"colbert[proj={v}]").projection is False
    assert err(parse, "colbert[proj=maybe]") == \
        "option proj in 'colbert[proj=maybe]': got 'maybe'; valid: 0, 1"
    assert parse("prettr-l4[qlen=7]").qlen == 7
    assert err(parse, "prettr-l4[qlen=x]") == \
        "option qlen in 'prettr-l4[qlen=x]': expected an integer, got 'x'"
    assert parse("mice-l4+3[attn=joint]").attn == "joint"
    assert err(parse, "mice-l4+3[attn=both]") == \
        "option attn in 'mice-l4+3[attn=both]': got 'both'; valid: cross, joint"
    assert list(FM.OPTIONS) == ["head", "doc_tt", "proj", "qaug", "attn", "order", "cls_doc",
                               "qcls", "qlen"]
    fields = {k: v[0] for k, v in FM.OPTIONS.items()}
    assert fields == {"head": "head", "doc_tt": "doc_token_type", "proj": "projection",
                      "qaug": "qaug", "attn": "attn", "order": "order", "cls_doc": "cls_doc",
                      "qcls": "qcls", "qlen": "qlen"}
    doc_tt = FM.OPTIONS["doc_tt"][1]
    assert doc_tt("1") == 1 and isinstance(doc_tt("1"), int)
    assert doc_tt("0") == 0 and isinstance(doc_tt("0"), int)
    assert err(doc_tt, "2") == "got '2'; valid: 0, 1"
    assert err(FM.OPTIONS["head"][1], "x") == "got 'x'; valid: cls, maxsim, mean-cos"
    assert err(FM.OPTIONS["attn"][1], "x") == "got 'x'; valid: cross, joint"
    assert err(FM.OPTIONS["order"][1], "x") == "got 'x'; valid: cross, self"


def test_layerspec_describe():
    assert LS.DROPPED.describe() == "dropped"
    assert LS.DROPPED.dropped and bits(LS.DROPPED) == "0" * 25
    assert LayerSpec().describe() == "11111/11111/11111/11111/11111"
    ls = LayerSpec(matrix("11100", "01111", "01111", "00000", "00000"),
                   frozen=frozenset({"sep_d", "doc"}), cross_keys=frozenset({"sep_d", "doc"}),
                   cross_first=False, cross_uniform=frozenset({"cls"}))
    assert ls.describe() == ("11100/01111/01111/00000/00000 frozen=doc,sep_d cross=doc,sep_d "
                             "(self first) uniform=cls")
    ls2 = LayerSpec(LS.FULL, frozen=frozenset({"sep_q", "cls"}), cross_keys=frozenset({"doc"}),
                    cross_first=True)
    assert ls2.describe() == \
        "11111/11111/11111/11111/11111 frozen=cls,sep_q cross=doc (cross first)"
    ls3 = LayerSpec(LS.SEPARATE, cross_uniform=frozenset({"query", "cls"}))
    assert ls3.describe() == "11100/11100/11100/00011/00011 uniform=cls,query"


# ------------------------------------------------------------------ parse + options
def test_parse_fills_family_defaults():
    m = parse("mice-l4+3")
    assert (m.family, m.k, m.m, m.n) == ("mice", None, 4, 3)
    assert (m.head, m.doc_token_type, m.projection, m.qaug, m.attn, m.order, m.cls_doc,
            m.qcls, m.qlen) == ("cls", 0, False, False, "cross", "cross", True, False, None)
    c = parse("colbert")
    assert (c.head, c.projection, c.qaug, c.doc_token_type) == ("maxsim", True, True, 0)
    assert parse("biencoder").head == "mean-cos" and parse("biencoder").projection is False
    p = parse("prettr-l7")
    assert (p.family, p.k, p.m, p.n, p.qlen) == ("prettr", 7, None, None, None)
    assert parse("mask3-l5").k == 5 and parse("mask3-l5").family == "mask3"
    assert parse("ce").family == "ce" and parse("ce").head == "cls"


def test_parse_normalises_case_space_and_brackets():
    assert parse("  MICE-L4+3 ") == parse("mice-l4+3")
    assert str(parse("Colbert[ Proj = 0 , QAUG=0 ]")) == "colbert[proj=0,qaug=0]"
    assert str(parse("ce[]")) == "ce"
    assert str(parse("colbert[proj=0,proj=1]")) == "colbert"
    sp = parse("mice-l4+3")
    assert parse(sp) is sp


@pytest.mark.parametrize("name,canon", [
    ("colbert[qaug=0,proj=0]", "colbert[proj=0,qaug=0]"),
    ("colbert[head=maxsim,proj=1,qaug=1]", "colbert"),
    ("colbert[head=cls]", "colbert[head=cls]"),
    ("colbert[doc_tt=1]", "colbert[doc_tt=1]"),
    ("biencoder[head=mean-cos,doc_tt=0,proj=0]", "biencoder"),
    ("biencoder[proj=yes]", "biencoder[proj=1]"),
    ("mice-l4+3[qcls=1,cls_doc=0,order=self,attn=cross]",
     "mice-l4+3[order=self,cls_doc=0,qcls=1]"),
    ("mice-l4+3[order=cross,cls_doc=1,qcls=0]", "mice-l4+3"),
    ("mice-l4+3[attn=joint,head=maxsim]", "mice-l4+3[head=maxsim,attn=joint]"),
    ("prettr-l4[qlen=3]", "prettr-l4[qlen=3]"),
    ("prettr-l4[proj=1,head=maxsim]", "prettr-l4[head=maxsim,proj=1]"),
    ("mask3-l0", "mask3-l0"),
    ("mice-l10+2", "mice-l10+2"),
])
def test_canonical_names(name, canon):
    sp = parse(name)
    assert str(sp) == canon and sp.name == canon
    assert repr(sp) == f"InteractionSpec({canon!r})"
    assert parse(canon) == sp


def test_option_values_reach_fields():
    sp = parse("mice-l2+2[order=self,cls_doc=0,qcls=1,attn=joint,doc_tt=1,head=maxsim,proj=1]")
    assert (sp.order, sp.cls_doc, sp.qcls, sp.attn, sp.doc_token_type, sp.head,
            sp.projection) == ("self", False, True, "joint", 1, "maxsim", True)
    assert parse("prettr-l4[qlen=32]").qlen == 32
    assert parse("colbert[qaug=0]").qaug is False


def test_parse_error_messages():
    assert err(parse, "foo") == f"unknown variant 'foo'; {HELP}"
    assert err(parse, "ce[head=x") == f"unknown variant 'ce[head=x'; {HELP}"
    assert err(parse, "ce-cross") == f"unknown variant 'ce-cross'; {HELP}"
    msg = err(parse, "mice-l4+3-cross")
    assert msg.startswith("unknown variant 'mice-l4+3-cross' (the '-cross' suffix is gone: the "
                          "paper's cross-attention MICE is now plain mice-l{m}+{n}; "
                          "self-attention first is [order=self]); valid names:")
    assert "suffix is gone" not in err(parse, "mice-l4+3-crossx")
    assert "suffix is gone" not in err(parse, "xmice-l4+3-cross")
    assert err(parse, "colbert[qaug]") == \
        "bad option 'qaug' in 'colbert[qaug]'; options look like key=value"
    assert err(parse, "colbert[bogus=1]") == (
        "unknown option 'bogus' in 'colbert[bogus=1]'; valid: head, doc_tt, proj, qaug, attn, "
        "order, cls_doc, qcls, qlen")
    assert err(parse, "biencoder[qaug=0]") == \
        "option 'qaug' does not apply to 'biencoder'; valid there: doc_tt, head, proj"
    assert err(parse, "ce[head=maxsim]") == \
        "option 'head' does not apply to 'ce'; valid there: none"
    assert err(parse, "prettr-l4[doc_tt=1]") == \
        "option 'doc_tt' does not apply to 'prettr-l4'; valid there: head, proj, qlen"
    assert err(parse, "colbert[qaug=maybe]") == \
        "option qaug in 'colbert[qaug=maybe]': got 'maybe'; valid: 0, 1"
    assert err(parse, "mice-l4+3[order=sideways]") == \
        "option order in 'mice-l4+3[order=sideways]': got 'sideways'; valid: cross, self"
    assert err(parse, "prettr-l4[qlen=3=4]") == \
        "option qlen in 'prettr-l4[qlen=3=4]': expected an integer, got '3=4'"


@pytest.mark.parametrize("name,allowed", [
    ("ce", set()), ("mask0", set()), ("mask1", set()), ("mask2", set()), ("mask3-l4", set()),
    ("prettr-l4", {"head", "proj", "qlen"}),
    ("mice-l4+3", {"head", "doc_tt", "proj", "attn", "order", "cls_doc", "qcls"}),
    ("colbert", {"head", "doc_tt", "proj", "qaug"}),
    ("biencoder", {"head", "doc_tt", "proj"}),
    ("custom-split:" + SEP_BITS + "/" + FULL_BITS, {"head", "doc_tt", "proj"}),
    ("custom-joint:" + FULL_BITS, set()),
])
def test_allowed_options_per_family(name, allowed):
    spec = parse(name)
    assert set(spec.declaration.options_of(spec)) == allowed
    for key in set(FM.OPTIONS) - allowed:      # parse refuses every other option
        with pytest.raises(SpecError, match=f"option '{key}' does not apply"):
            parse(f"{name}[{key}=0]")


# ------------------------------------------------------------------ custom layer grammar
def test_decode_every_flag():
    text = (f"custom-split:{SEP_BITS}*2/{MICE_NOCLS_BITS}=f34=c34=u0/"
            f"{MICE_BITS}=k34=f34/x*3/{FULL_BITS}=f01")
    sp = parse(text)
    assert sp.family == "custom" and sp.layout == "split" and sp.custom_layout == "split"
    ls = sp.custom_layers
    assert len(ls) == 8
    for x in ls[:2]:
        assert bits(x) == SEP_BITS and not x.frozen and not x.cross_keys and not x.dropped
    a = ls[2]
    assert bits(a) == MICE_NOCLS_BITS and a.frozen == DOC and a.cross_keys == DOC
    assert a.cross_first is False and a.cross_uniform == {"cls"} and not a.dropped
    b = ls[3]
    assert bits(b) == MICE_BITS and b.frozen == DOC and b.cross_keys == DOC
    assert b.cross_first is True and b.cross_uniform == frozenset()
    assert all(x.dropped for x in ls[4:7])
    assert ls[7].frozen == {"cls", "query"} and not ls[7].cross_keys and not ls[7].dropped
    # canonical form: flags in the order f, k/c, u; repeats folded
    assert str(sp) == (f"custom-split:{SEP_BITS}*2/{MICE_NOCLS_BITS}=f34=c34=u0/"
                       f"{MICE_BITS}=f34=k34/x*3/{FULL_BITS}=f01")
    assert parse(str(sp)) == sp


def test_decode_segment_digits_and_repeat_one():
    sp = parse(f"custom-split:{SEP_BITS}=f2=u1/{FULL_BITS}*1")
    assert sp.custom_layers[0].frozen == {"sep_q"}
    assert sp.custom_layers[0].cross_uniform == {"query"}
    assert len(sp.custom_layers) == 2
    assert str(sp) == f"custom-split:{SEP_BITS}=f2=u1/{FULL_BITS}"


@pytest.mark.parametrize("text,msg", [
    ("0101", "bad custom layer '0101': need 25 0/1 digits"),
    ("1" * 24 + "2", "bad custom layer '" + "1" * 24 + "2': need 25 0/1 digits"),
    ("1" * 26, "bad custom layer '" + "1" * 26 + "': need 25 0/1 digits"),
    (FULL_BITS + "=f5", "bad custom layer flag 'f5'"),
    (FULL_BITS + "=", "bad custom layer flag ''"),
    (FULL_BITS + "=z0", "bad custom layer flag 'z0'"),
    (FULL_BITS + "=fa", "bad custom layer flag 'fa'"),
    ("x*a", "expected an integer, got 'a'"),
    ("x*2*3", "bad custom layer 'x*2': need 25 0/1 digits"),  # only the last '*' repeats
    (FULL_BITS + "=fX", "bad custom layer flag 'fx'"),  # names are read lower-case
    (FULL_BITS + "=X0", "bad custom layer flag 'x0'"),
])
def test_decode_errors(text, msg):
    assert err(parse, f"custom-joint:{text}") == msg


def custom_layers(code: str) -> tuple[LayerSpec, ...]:
    """The layers of a custom name (a MaxSim head: no [CLS] reachability required)."""
    return parse(f"custom-split:{code}[head=maxsim]").custom_layers


def test_decode_repeat_and_drop():
    layers = custom_layers("x*2/" + FULL_BITS)
    assert len(layers) == 3 and layers[0].dropped and layers[1].dropped
    assert not layers[2].dropped and bits(layers[2]) == FULL_BITS
    assert custom_layers("x") == (LS.DROPPED,)
    k = custom_layers(FULL_BITS + "=k0")[0]
    c = custom_layers(FULL_BITS + "=c0")[0]
    assert k.cross_first is True and c.cross_first is False
    assert k.cross_keys == c.cross_keys == {"cls"}


def test_encode_layers_folding():
    A = LayerSpec(LS.FULL)
    B = LayerSpec(LS.SEPARATE)

    def name(*layers):
        spec = custom("split", layers, head="maxsim")
        return str(spec).removeprefix("custom-split:").removesuffix("[head=maxsim]")

    assert err(custom, "split", []).startswith("a custom spec needs at least one layer")
    assert name(A) == FULL_BITS
    assert name(A, A, B, A) == f"{FULL_BITS}*2/{SEP_BITS}/{FULL_BITS}"
    assert name(B, LS.DROPPED, LS.DROPPED) == f"{SEP_BITS}/x*2"
    assert name(A, A, A) == f"{FULL_BITS}*3"
    assert name(LayerSpec(LS.FULL, cross_keys=frozenset({"query"}), cross_first=True)) == \
        FULL_BITS + "=k1"
    assert name(LayerSpec(LS.FULL, cross_keys=frozenset({"sep_d", "cls"}),
                          cross_first=False)) == FULL_BITS + "=c04"
    assert name(LayerSpec(LS.FULL, cross_uniform=frozenset({"sep_q", "cls"}))) == \
        FULL_BITS + "=u02"
    assert name(A, LS.DROPPED) == FULL_BITS + "/x"


def test_mice_as_custom_round_trip():
    sp = parse("mice-l1+1")
    cu = custom("split", sp.layers(3))
    assert str(cu) == f"custom-split:{SEP_BITS}/{MICE_BITS}=f34=k34/x"
    assert parse(str(cu)) == cu
    sp2 = parse("mice-l1+2[order=self,cls_doc=0]")
    cu2 = custom("split", sp2.layers(4))
    assert str(cu2) == (f"custom-split:{SEP_BITS}/{MICE_NOCLS_BITS}=f34=c34=u0/"
                        f"{MICE_NOCLS_BITS}=f34=c34/x")
    cu3 = custom("split", parse("mice-l1+1[qcls=1]").layers(2), head="maxsim", doc_token_type=1)
    assert str(cu3) == f"custom-split:{SEP_BITS}/{'1' * 15}0000000000=f34=k34[head=maxsim,doc_tt=1]"
    assert cu3.head == "maxsim" and cu3.doc_token_type == 1
    j = parse("mice-l1+2[attn=joint]").layers(3)
    assert str(custom("split", j)) == \
        "custom-split:" + SEP_BITS + "/" + "11100011110111100000" + "00000" + "=f34*2"
    assert "never reaches" in err(resolve, "mice-l1+1[attn=joint]", 2)


def test_custom_builder_and_layout():
    assert err(custom, "diag", [LayerSpec()]) == "unknown layout 'diag'; valid: joint, split"
    cu = custom("joint", [LayerSpec()] * 2)
    assert cu.layout == "joint" and cu.family == "custom"
    assert InteractionSpec("custom", custom_layers=(LayerSpec(),)).layout == "joint"
    assert cu.layers(2) == (LayerSpec(), LayerSpec())
    assert cu.description() == "custom per-layer interaction pattern"
    assert cu.fam is None


# ------------------------------------------------------------------ mice / family layers
def test_mice_layers_exact():
    ls = parse("mice-l2+2").layers(5)
    assert [bits(x) for x in ls[:2]] == [SEP_BITS, SEP_BITS]
    assert all(not x.frozen and not x.cross_keys for x in ls[:2])
    for x in ls[2:4]:
        assert bits(x) == MICE_BITS and x.frozen == DOC and x.cross_keys == DOC
        assert x.cross_first is True and x.cross_uniform == frozenset()
    assert ls[4].dropped
    q = parse("mice-l2+2[qcls=1]").layers(4)
    assert bits(q[2]) == "11111" "11111" "11111" "00000" "00000"
    nc = parse("mice-l2+2[cls_doc=0]").layers(4)
    assert [x.cross_uniform for x in nc[2:]] == [{"cls"}, {"cls"}]
    assert bits(nc[2]) == MICE_NOCLS_BITS
    sf = parse("mice-l2+3[order=self,cls_doc=0]").layers(6)
    assert [x.cross_uniform for x in sf[2:5]] == [{"cls"}, {"cls"}, frozenset()]
    assert [x.cross_first for x in sf[2:5]] == [False, False, False]
    assert sf[5].dropped
    jt = parse("mice-l2+2[attn=joint]").layers(4)
    for x in jt[2:]:
        assert bits(x) == "11100" "01111" "01111" "00000" "00000"
        assert x.frozen == DOC and not x.cross_keys and not x.cross_uniform
    mk = parse("mask3-l2").layers(4)
    assert [bits(x) for x in mk] == ["11100011000010000011" "00001"] * 2 + \
        ["11100011100010000011" "00001"] * 2


def test_descriptions():
    mice = ("MICE: m separate layers (documents precomputed), then n layers where the query "
            "side reads the frozen document through its own cross-attention sub-layer, then "
            "attends itself, then the feed-forward; the rest dropped")
    assert parse("mice-l4+3").description() == mice
    self_first = ("MICE: m separate layers (documents precomputed), then n layers where the "
                  "query side first attends itself, then reads the frozen document through its "
                  "own cross-attention sub-layer, then the feed-forward; the rest dropped")
    assert parse("mice-l4+3[order=self,cls_doc=0,qcls=1]").description() == self_first + (
        " (self-attention before cross-attention; [CLS] does not read the document; "
        "query tokens read [CLS])")
    assert parse("mice-l4+3[qcls=1]").description() == mice + " (query tokens read [CLS])"
    joint = ("MICE one-softmax ablation: m separate layers, then n layers where the query side "
             "reads the frozen document inside its own self-attention (self-attention weights, "
             "[CLS] reads the query only); the rest dropped")
    assert parse("mice-l4+3[attn=joint,order=self,cls_doc=0]").description() == joint
    assert parse("colbert").description().startswith("ColBERT: separate encoders")
    assert parse("colbert[qaug=0]").description() == \
        "late interaction: separate encoders, MaxSim head (128-d projection; no query augmentation)"
    assert parse("colbert[proj=0]").description() == ("late interaction: separate encoders, "
                                                      "MaxSim head (no projection; "
                                                      "[MASK]-augmented 32-token queries)")
    assert parse("prettr-l4[qlen=32]").description().endswith(
        "full attention from k (document positions from 32 (precomputable))")
    assert parse("prettr-l4").description().endswith("full attention from k")
    assert parse("ce").description() == \
        "full cross-encoder: every token attends every token in every layer"


# ------------------------------------------------------------------ properties
@pytest.mark.parametrize("name,layout,style,pre", [
    ("ce", "joint", None, False), ("mask2", "joint", None, False),
    ("mask3-l4", "joint", None, False),
    ("prettr-l4", "split", "pair", False), ("prettr-l4[qlen=32]", "split", "offset", True),
    ("mice-l4+3", "split", "cls", True), ("colbert", "split", "cls", True),
    ("biencoder", "split", "cls", True),
    ("custom-split:" + SEP_BITS + "/" + FULL_BITS, "split", "cls", True),
    ("custom-joint:" + FULL_BITS, "joint", None, False),
])
def test_doc_style_and_precomputable(name, layout, style, pre):
    sp = parse(name)
    assert sp.layout == layout and sp.doc_style == style and sp.precomputable is pre



@pytest.mark.parametrize("name,q,d,trunc", [
    ("ce", None, None, "longest_first"), ("mask0", None, None, "longest_first"),
    ("mask3-l4", None, None, "longest_first"),
    ("prettr-l4", 256, None, "doc_first"), ("prettr-l4[qlen=32]", 256, None, "doc_first"),
    ("mice-l4+3", 510, 510, "longest_first"),
    ("colbert", 30, 178, "longest_first"), ("colbert[proj=0]", 30, 178, "longest_first"),
    ("colbert[qaug=0]", 32, None, "longest_first"),
    ("biencoder", 32, None, "longest_first"),
    ("custom-split:" + SEP_BITS + "/" + FULL_BITS, 32, None, "longest_first"),
    ("custom-joint:" + FULL_BITS, 32, None, "longest_first"),
])
def test_default_lengths_per_family(name, q, d, trunc):
    assert parse(name).default_lengths() == {"query_max_tokens": q, "doc_max_tokens": d,
                                             "max_length": 512, "truncation": trunc}


def test_split_layer():
    assert parse("ce").split_layer(12) is None
    assert parse("custom-joint:" + FULL_BITS).split_layer(1) is None
    assert parse("mice-l4+3").split_layer(12) == 4
    assert parse("mice-l0+2").split_layer(12) == 0
    assert parse("prettr-l0").split_layer(12) == 0
    assert parse("prettr-l11").split_layer(12) == 11
    assert parse("colbert").split_layer(6) == 6
    # frozen rows do not cross: the doc rows read the query but are frozen
    frozen_doc = LayerSpec(matrix("11100", "11100", "11100", "11111", "11111"), frozen=DOC)
    cu = custom("split", [frozen_doc, LayerSpec(LS.FULL)], head="maxsim")
    assert cu.split_layer(2) == 1
    # a frozen row early in the segment order does not stop the scan: the query crosses
    early = LayerSpec(matrix("11111", "11111", "11100", "00011", "00011"),
                      frozen=frozenset({"cls"}))
    assert custom("split", [early, LayerSpec(LS.FULL)], head="maxsim").split_layer(2) == 0
    # a uniform cross row reads the other part
    uni = LayerSpec(LS.SEPARATE, cross_uniform=frozenset({"cls"}))
    assert custom("split", [uni, LayerSpec(LS.FULL)], head="maxsim").split_layer(2) == 0
    # only sep_q reads sep_d
    one = LayerSpec(matrix("11100", "11100", "11101", "00011", "00011"))
    assert custom("split", [LayerSpec(LS.SEPARATE), one], head="maxsim").split_layer(2) == 1
    # doc reads query
    back = LayerSpec(matrix("11100", "11100", "11100", "01011", "00011"))
    assert custom("split", [back], head="maxsim").split_layer(1) == 0
    assert custom("split", [LayerSpec(LS.SEPARATE)] * 3, head="maxsim").split_layer(3) == 3
    assert custom("split", [LS.DROPPED, LayerSpec(LS.FULL)], head="maxsim").split_layer(2) == 1


def test_fast_path():
    assert parse("ce").fast_path(3) == "joint"
    assert parse("custom-joint:" + FULL_BITS + "*2").fast_path(2) == "joint"
    assert parse("mask0").fast_path(3) is None
    assert custom("joint", [LayerSpec(LS.FULL), LayerSpec(LS.FULL, frozen=frozenset({"sep_q"}))]
                  ).fast_path(2) is None
    assert custom("joint", [LayerSpec(LS.FULL), LS.DROPPED]).fast_path(2) is None
    sep, full = LayerSpec(LS.SEPARATE), LayerSpec(LS.FULL)
    fq = LayerSpec(LS.FULL, frozen=frozenset({"query"}))
    assert custom("split", [sep, full]).fast_path(2) == "split"
    assert custom("split", [sep, fq]).fast_path(2) is None
    assert custom("split", [sep, full, LS.DROPPED, fq]).fast_path(4) is None
    assert custom("split", [sep, LayerSpec(LS.FULL, cross_keys=DOC)]).fast_path(2) is None
    assert custom("split", [LayerSpec(LS.SEPARATE, frozen=frozenset({"query"})), full]
                  ).fast_path(2) == "split"
    assert parse("mice-l4+3[attn=joint]").fast_path(12) == "split"
    assert parse("prettr-l0").fast_path(12) == "split"


# ------------------------------------------------------------------ validation
def test_validate_boundaries():
    resolve("mask3-l0,mask3-l10", 12)
    assert "never reaches" in err(resolve, "mask3-l11", 12)  # in range, but too late
    assert err(resolve, "mask3-l12", 12).startswith(
        "mask3-l12: mask3-l{k} needs 0 <= k <= 11 on this model; valid names:")
    resolve("mask3-l2", 4)
    assert "needs 0 <= k <= 3" in err(resolve, "mask3-l4", 4)
    resolve("prettr-l0,prettr-l11", 12)
    assert parse("prettr-l12[head=maxsim]").validate(12).k == 12
    assert err(resolve, "prettr-l13[head=maxsim]", 12).startswith(
        "prettr-l13[head=maxsim]: prettr-l{k} needs 0 <= k <= 12 on this model; ")
    assert err(resolve, "prettr-l12", 12) == \
        f"prettr-l12: the document never reaches the scoring [CLS]; {HELP}"
    resolve("prettr-l4[qlen=3]", 12)
    assert parse("prettr-l4[qlen=2]").qlen == 2  # options checked against a model only
    assert err(resolve, "prettr-l4[qlen=2]", 12).startswith(
        "prettr-l4[qlen=2]: qlen must be at least 3 ([CLS] q [SEP]); ")
    resolve("mice-l4+8,mice-l0+1,mice-l11+1,mice-l0+12", 12)
    assert err(resolve, "mice-l4+9", 12).startswith(
        "mice-l4+9: m + n = 13 exceeds the model's 12 layers; ")
    assert err(resolve, "mice-l0+13", 12).startswith(
        "mice-l0+13: m + n = 13 exceeds the model's 12 layers; ")
    assert parse("mice-l4+0").n == 0
    assert err(resolve, "mice-l4+0", 12).startswith(
        "mice-l4+0: mice-l{m}+{n} needs n >= 1 interaction layers; ")
    # the doc-reaches-[CLS] check applies only to the cls head
    resolve("mice-l4+1[order=self,cls_doc=0,head=maxsim]", 12)
    assert "never reaches" in err(resolve, "mice-l4+1[order=self,cls_doc=0]", 12)
    resolve("mice-l4+2[order=self,cls_doc=0]", 12)


def test_validate_returns_and_messages():
    sp = parse("mask3-l99")  # no model given: parameters not range-checked
    assert sp.validate() is sp
    m = parse("mice-l4+3")
    assert m.validate(12) is m
    assert resolve(["ce", "mask3-l1"], 3)[1].k == 1
    assert err(InteractionSpec("foo").validate).startswith("unknown family 'foo'; valid names:")
    assert err(InteractionSpec("ce", head="x").validate) == \
        f"unknown head 'x'; valid: cls, maxsim, mean-cos; {HELP}"
    assert err(InteractionSpec("ce", head="maxsim").validate) == \
        f"ce[head=maxsim]: head 'maxsim' needs the split layout; {HELP}"
    assert err(InteractionSpec("custom", custom_layout="joint", custom_layers=()).validate) == \
        f"a custom spec needs at least one layer; {HELP}"
    cu = custom("joint", [LayerSpec()] * 2)
    assert cu.validate(2) is cu
    assert err(cu.validate, 3) == \
        f"custom-joint:{FULL_BITS}*2: custom spec has 2 layers, the model has 3; {HELP}"
    assert err(cu.layers, 1).startswith("custom-joint:")


def test_doc_reaches_cls_sub_layer_order():
    rows = ("11100", "01111", "01111", "00000", "00000")  # [CLS] does not read the doc
    first = LayerSpec(matrix(*rows), frozen=DOC, cross_keys=DOC, cross_first=True)
    after = LayerSpec(matrix(*rows), frozen=DOC, cross_keys=DOC, cross_first=False)
    # cross first: the query reads the doc, then [CLS] reads the query in the same layer
    custom("split", [first])
    # self first: [CLS] reads the query before the query has read the doc
    assert err(custom, "split", [after]) == (
        f"custom-split:{MICE_NOCLS_BITS}=f34=c34: the document never reaches the scoring "
        f"[CLS]; {HELP}")
    custom("split", [after, after])
    # a uniform [CLS] row reads the doc in the cross sub-layer
    uni = LayerSpec(matrix(*rows), frozen=DOC, cross_keys=DOC, cross_first=False,
                    cross_uniform=frozenset({"cls"}))
    custom("split", [uni])
    # uniform but with nothing informed among the cross keys: no information
    uq = LayerSpec(matrix("11100", "11100", "11100", "00000", "00000"), frozen=DOC,
                   cross_keys=frozenset({"query"}), cross_uniform=frozenset({"cls"}))
    assert "never reaches" in err(custom, "split", [uq])


def test_doc_reaches_cls_propagation():
    only = lambda r0: LayerSpec(matrix(r0, "00000", "00000", "00000", "00000"))  # noqa: E731
    custom("joint", [only("00001")])   # [CLS] reads sep_d
    custom("joint", [only("00010")])   # [CLS] reads doc
    assert "never reaches" in err(custom, "joint", [only("01100")])
    # the frozen [CLS] row is not updated
    assert "never reaches" in err(custom, "joint",
                                  [LayerSpec(LS.FULL, frozen=frozenset({"cls"}))])
    assert "never reaches" in err(custom, "joint", [LS.DROPPED])
    # two hops: query reads doc, then [CLS] reads query
    q_reads = LayerSpec(matrix("10000", "01010", "00000", "00000", "00000"))
    c_reads = LayerSpec(matrix("01000", "00000", "00000", "00000", "00000"))
    custom("joint", [q_reads, LS.DROPPED, c_reads])
    assert "never reaches" in err(custom, "joint", [c_reads, q_reads])
    # a frozen [CLS] does not stop the query (later in the segment order) from reading
    custom("joint", [LayerSpec(LS.FULL, frozen=frozenset({"cls"})), c_reads])
    # the self sub-layer never reads the cross keys: here the query reads the doc only in the
    # (second) cross sub-layer, too late for [CLS] to read the query in the same sub-layer
    late = LayerSpec(matrix("01000", "00010", "00000", "00000", "00000"),
                     cross_keys=frozenset({"doc", "query"}), cross_first=False)
    assert "never reaches" in err(custom, "joint", [late])
    custom("joint", [late, late])
    # the [CLS] head is not checked on other heads
    custom("split", [LayerSpec(LS.SEPARATE)], head="maxsim")


# ------------------------------------------------------------------ registry, lists, presets
def test_registry_and_help():
    assert FM.valid_names_help() == HELP
    assert list(FM.PRESET_PATTERNS) == ["ce", "mask0", "mask1", "mask2", "mask3-l{k}",
                                       "prettr-l{k}", "mice-l{m}+{n}", "colbert", "biencoder"]
    with pytest.raises(ValueError, match="family 'ce' is already registered"):
        FM.register(FM.REGISTRY["ce"])
    assert FM.REGISTRY["mice"].format(parse("mice-l5+2")) == "mice-l5+2"
    assert FM.REGISTRY["mask3"].example == "mask3-l4"
    assert [f.layout for f in FM.REGISTRY.values()] == ["joint"] * 5 + ["split"] * 4


def test_split_names_and_resolve():
    assert S.split_names("ce, mice-l4+3[order=self,cls_doc=0] ,colbert[proj=0,qaug=0]") == \
        ["ce", "mice-l4+3[order=self,cls_doc=0]", "colbert[proj=0,qaug=0]"]
    assert S.split_names(",ce,,mask0,") == ["ce", "mask0"]
    assert S.split_names("") == []
    assert S.split_names("a[b[c,d],e],f") == ["a[b[c,d],e]", "f"]
    assert [str(x) for x in resolve(["ce", "mask1"])] == ["ce", "mask1"]
    assert "exceeds" in err(resolve, ["ce", "mice-l4+3"], 6)


@pytest.mark.parametrize("L,names", [
    (12, ["ce", "mask0", "mask1", "mask2", "mask3-l4", "prettr-l4", "mice-l4+3", "colbert",
          "biencoder"]),
    (6, ["ce", "mask0", "mask1", "mask2", "mask3-l4", "prettr-l4", "mice-l4+2", "colbert",
         "biencoder"]),
    (4, ["ce", "mask0", "mask1", "mask2", "mask3-l2", "prettr-l3", "mice-l3+1", "colbert",
         "biencoder"]),
])
def test_presets(L, names):
    assert [str(p) for p in S.presets(L)] == names
    assert [str(p) for p in S.presets()] == [str(p) for p in S.presets(12)]


def test_variant_order_follows_the_papers_families_then_the_numbers_in_the_name():
    # hand-written order: bm25 first, then the registry's families (ce, masks, prettr, mice,
    # colbert, biencoder); inside a family by the numbers of the name (10 after 9, not
    # after 1), then by name; unknown names last
    names = ["biencoder", "mice-l10+2", "colbert[proj=0]", "mice-l4+3", "zz-custom", "ce",
             "mask2", "bm25", "prettr-l4", "mice-l4+2", "mask0", "colbert", "mice-l9+3"]
    want = ["bm25", "ce", "mask0", "mask2", "prettr-l4", "mice-l4+2", "mice-l4+3", "mice-l9+3",
            "mice-l10+2", "colbert", "colbert[proj=0]", "biencoder", "zz-custom"]
    assert sorted(names, key=S.variant_key) == want
    assert S.variant_key("mice-l4+3") == (7, (4, 3), "mice-l4+3")
    assert S.variant_key("colbert[proj=0]") == (8, (0,), "colbert[proj=0]")
    assert S.variant_key("zz-custom")[0] == 10

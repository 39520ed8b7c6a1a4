"""The variant families: one declaration each (name pattern, parameters, layout, options and
their defaults, per-layer rule, validation, description, document tokenization, the instance
that fits a model), in :data:`REGISTRY`, as ``ir_measures`` registers its measures: adding a
variant family is one :func:`register` call.

Also here: the options of variant names (:data:`OPTIONS`) and the built-in families (the
masking study's ``ce``, ``mask0``-``mask3``, PreTTR, MICE, ColBERT, the bi-encoder) with
``custom`` per-layer patterns. A rule receives the :class:`~mice_bench.spec.InteractionSpec`
being built and the model's depth, and returns its layers
(:class:`~mice_bench.layerspec.LayerSpec`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable

from .layerspec import (DOC_SIDE, DROPPED, FULL, MASK0, MASK1, MASK2, MASK3_LOW,
                        MICE_ONE_SOFTMAX, SEPARATE, LayerSpec, SpecError, decode_layers,
                        encode_layers, int_value, matrix)

LAYOUTS = ("joint", "split")
HEADS = ("cls", "maxsim", "mean-cos")


# ------------------------------------------------------------------------- options
#: option key in names -> (InteractionSpec field, parser, formatter)
def _bool(v: str) -> bool:
    if v.lower() in ("1", "true", "yes"):
        return True
    if v.lower() in ("0", "false", "no"):
        return False
    raise SpecError(f"got {v!r}; valid: 0, 1")


def _choice(*choices: str) -> Callable[[str], str]:
    def parse_choice(v: str) -> str:
        if v not in choices:
            raise SpecError(f"got {v!r}; valid: {', '.join(choices)}")
        return v
    return parse_choice


OPTIONS: dict[str, tuple[str, Callable[[str], Any], str]] = {
    "head": ("head", _choice(*HEADS), "scoring head: cls | maxsim | mean-cos"),
    "doc_tt": ("doc_token_type", lambda v: _choice("0", "1")(v) and int(v),
               "token type of the document part (split layout): 0 | 1"),
    "proj": ("projection", _bool, "maxsim: linear projection to 128 dims (ColBERT): 0 | 1"),
    "qaug": ("qaug", _bool, "ColBERT query augmentation: pad queries with [MASK] to 32 "
             "tokens, all attended and scored: 0 | 1"),
    "attn": ("attn", _choice("cross", "joint"), "MICE interaction: cross = separate "
             "cross-attention sub-layer (paper), joint = one softmax with the self-attention "
             "weights (zero-shot ablation)"),
    "order": ("order", _choice("cross", "self"), "MICE sub-layer order: cross-attention "
              "first (paper) or self-attention first"),
    "cls_doc": ("cls_doc", _bool, "MICE: [CLS] reads the document in the cross sub-layer"),
    "qcls": ("qcls", _bool, "MICE: query tokens read [CLS] in the interaction self-attention"),
    "qlen": ("qlen", int_value, "PreTTR: fixed document position offset (document states "
             "independent of the query; the reference's prettr_max_query_length helper)"),
}


#: the options of every split-layout family unless the family lists its own
SPLIT_OPTIONS: tuple[str, ...] = ("head", "doc_tt", "proj")


@dataclass(frozen=True)
class Family:
    """One preset family, declared once: its name pattern and parameters, layout, options and
    their defaults, per-layer rule, validation, description, document tokenization and the
    representative instance that fits a model (:func:`~mice_bench.spec.fitted`).

    ``layout``: ``joint`` or ``split`` (``None``: the spec says, as custom specs do).
    ``options``: the option keys of :data:`OPTIONS` that apply (``None``: the layout's,
    :data:`SPLIT_OPTIONS` for split, none for joint). ``rule(spec, L)``: the per-layer specs.
    ``check(spec, L)``: refuse a spec that does not fit an ``L``-layer model;
    ``check_name(spec)``: refuse a spec whatever the model. ``describe(spec, text)``: the
    description of a spec whose options change what it is (default: ``description``).
    ``doc_style(spec)``: how the split layout tokenizes the document (see
    :attr:`~mice_bench.spec.InteractionSpec.doc_style`). ``lengths(spec)``: tokenization
    defaults of the reference. ``fit(L)``: the name of the family's representative instance
    on ``L`` layers.
    """

    name: str
    pattern: str  # e.g. "mice-l{m}+{n}"
    regex: str  # named groups = parameters
    layout: str | None
    description: str
    rule: Callable[["InteractionSpec", int], tuple[LayerSpec, ...]]
    defaults: dict[str, Any] = field(default_factory=dict)  # option field -> default
    check: Callable[["InteractionSpec", int], None] | None = None
    example: str = ""
    lengths: Callable[["InteractionSpec"], dict] | None = None
    options: tuple[str, ...] | None = None
    describe: Callable[["InteractionSpec", str], str] | None = None
    doc_style: Callable[["InteractionSpec"], str] = lambda spec: "cls"
    fit: Callable[[int], str] | None = None
    check_name: Callable[["InteractionSpec"], None] | None = None
    #: the name's groups -> InteractionSpec fields (default: every group an int parameter)
    fields_of: Callable[[dict[str, str]], dict[str, Any]] | None = None
    #: the canonical name without options (default: ``pattern`` filled in)
    format_of: Callable[["InteractionSpec"], str] | None = None
    #: the layers do not depend on the model's depth (validated without one)
    fixed_depth: bool = False

    def format(self, spec: "InteractionSpec") -> str:
        if self.format_of is not None:
            return self.format_of(spec)
        return re.sub(r"\{(\w+)\}", lambda mt: str(getattr(spec, mt.group(1))), self.pattern)

    def layout_of(self, spec: "InteractionSpec") -> str:
        return self.layout or spec.custom_layout or "joint"

    def options_of(self, spec: "InteractionSpec") -> tuple[str, ...]:
        if self.options is not None:
            return self.options
        return SPLIT_OPTIONS if self.layout_of(spec) == "split" else ()

    def fields(self, groups: dict[str, str]) -> dict[str, Any]:
        if self.fields_of is not None:
            return self.fields_of(groups)
        return {k: int(v) for k, v in groups.items()}

    def option_defaults(self) -> dict[str, Any]:
        """Every option field's default in this family: :data:`OPTION_DEFAULTS`, then the
        family's own ``defaults``."""
        return {**OPTION_DEFAULTS, **self.defaults}


REGISTRY: dict[str, Family] = {}

#: every option field's value where neither the name nor its family says otherwise
OPTION_DEFAULTS: dict[str, Any] = {"head": "cls", "doc_token_type": 0, "projection": False,
                                   "qaug": False, "attn": "cross", "order": "cross",
                                   "cls_doc": True, "qcls": False, "qlen": None}


def register(family: Family) -> Family:
    """Add a preset family (one declaration: pattern, options, layers, validation)."""
    if family.name in REGISTRY or family.name == CUSTOM_NAME:
        raise ValueError(f"family {family.name!r} is already registered")
    REGISTRY[family.name] = family
    return family


CUSTOM_NAME = "custom"


def family(name: str) -> Family | None:
    """The declaration of family ``name`` (the presets of :data:`REGISTRY` and ``custom``)."""
    return CUSTOM if name == CUSTOM_NAME else REGISTRY.get(name)


def _rep(n: int, rule) -> tuple[LayerSpec, ...]:
    return tuple(rule(i) for i in range(n))


# ------------------------------------------------------------------------- families
def _check_range(name: str, value: int, lo: int, hi: int, spec, what: str) -> None:
    if not lo <= value <= hi:
        raise invalid(f"{spec}: {name} needs {lo} <= {what} <= {hi} on this model")


def _mice_layers(spec: "InteractionSpec", L: int) -> tuple[LayerSpec, ...]:
    m, n = spec.m, spec.n
    last = m + n - 1

    def interaction(i: int) -> LayerSpec:
        if spec.attn == "joint":
            return LayerSpec(MICE_ONE_SOFTMAX, frozen=DOC_SIDE)
        cls_row = "11111" if spec.cls_doc else "11100"
        q_row = "11111" if spec.qcls else "01111"
        uniform: frozenset[str] = frozenset()
        if not spec.cls_doc and not (spec.order == "self" and i == last):
            # the reference masks every key of the [CLS] row, which averages the document
            # uniformly -- except in the last layer of the self-first order, where [CLS]
            # skips cross-attention altogether (``forward_vanilla_transformer``)
            uniform = frozenset({"cls"})
        return LayerSpec(matrix(cls_row, q_row, q_row, "00000", "00000"), frozen=DOC_SIDE,
                         cross_keys=DOC_SIDE, cross_first=spec.order == "cross",
                         cross_uniform=uniform)

    return _rep(L, lambda i: LayerSpec(SEPARATE) if i < m
                else interaction(i) if i < m + n else DROPPED)


def _mice_check(spec: "InteractionSpec", L: int) -> None:
    if spec.n < 1:
        raise invalid(f"{spec}: mice-l{{m}}+{{n}} needs n >= 1 interaction layers")
    if spec.m + spec.n > L:
        raise invalid(f"{spec}: m + n = {spec.m + spec.n} exceeds the model's {L} layers")


def _mice_lengths(spec: "InteractionSpec") -> dict:
    # MICEQueryDocTokenizer with max_length = the model's (512): both parts up to 512 tokens
    return {"query_max_tokens": 510, "doc_max_tokens": 510}


def _colbert_lengths(spec: "InteractionSpec") -> dict:
    if spec.qaug:  # xpmir ColBERTEncoder: query_maxlen 32, doc_maxlen 180 (specials included)
        return {"query_max_tokens": 30, "doc_max_tokens": 178}
    return {"query_max_tokens": 32}


def _mice_describe(spec: "InteractionSpec", text: str) -> str:
    if spec.attn == "joint":
        return ("MICE one-softmax ablation: m separate layers, then n layers where the query "
                "side reads the frozen document inside its own self-attention (self-attention "
                "weights, [CLS] reads the query only); the rest dropped")
    notes = []
    if spec.order == "self":
        text = text.replace("reads the frozen document through its own cross-attention "
                            "sub-layer, then attends itself",
                            "first attends itself, then reads the frozen document through its "
                            "own cross-attention sub-layer")
        notes.append("self-attention before cross-attention")
    if not spec.cls_doc:
        notes.append("[CLS] does not read the document")
    if spec.qcls:
        notes.append("query tokens read [CLS]")
    return _with_notes(text, notes)


def _mice_fit(L: int) -> str:
    """The MICE that fits ``L`` layers: the paper's ``mice-l4+3`` (12 layers) cut to the
    model, keeping at least one interaction layer: ``m = min(4, L - 1)`` separate layers,
    then ``n = min(3, L - m)`` interaction layers (12 -> ``mice-l4+3``, 6 -> ``mice-l4+2``,
    4 -> ``mice-l3+1``, 2 -> ``mice-l1+1``)."""
    m = min(4, L - 1)
    return f"mice-l{m}+{min(3, L - m)}"


def _colbert_describe(spec: "InteractionSpec", text: str) -> str:
    if spec.projection and spec.qaug:
        return text
    return _with_notes("late interaction: separate encoders, MaxSim head",
                       ["128-d projection" if spec.projection else "no projection",
                        "[MASK]-augmented 32-token queries" if spec.qaug
                        else "no query augmentation"])


def _prettr_describe(spec: "InteractionSpec", text: str) -> str:
    if spec.qlen is None:
        return text
    return _with_notes(text, [f"document positions from {spec.qlen} (precomputable)"])


def _with_notes(text: str, notes: list[str]) -> str:
    return text + (f" ({'; '.join(notes)})" if notes else "")


def _custom_check_name(spec: "InteractionSpec") -> None:
    if not spec.custom_layers:
        raise invalid("a custom spec needs at least one layer")


def _custom_check(spec: "InteractionSpec", L: int) -> None:
    n = len(spec.custom_layers or ())
    if n != L:
        raise invalid(f"{spec}: custom spec has {n} layers, the model has {L}")


def _prettr_check(spec: "InteractionSpec", L: int) -> None:
    _check_range("prettr-l{k}", spec.k, 0, L, spec, "k")
    if spec.qlen is not None and spec.qlen < 3:
        raise invalid(f"{spec}: qlen must be at least 3 ([CLS] q [SEP])")


# families with one matrix in every layer (the joint-input masking study)
for _name, _matrix, _desc in (
        ("ce", FULL, "full cross-encoder: every token attends every token in every layer"),
        ("mask0", MASK0, "no attention sinks: nobody attends [CLS], SEPs attend only "
                         "themselves, doc not to the first SEP, query not to the last"),
        ("mask1", MASK1, "Mask0 + [CLS] does not read the document"),
        ("mask2", MASK2, "Mask1 + the document does not read the query (document states "
                         "precomputable)")):
    register(Family(_name, _name, _name, "joint", _desc,
                    lambda s, L, m=_matrix: _rep(L, lambda i: LayerSpec(m)), example=_name,
                    fit=lambda L, n=_name: n))
register(Family(
    "mask3", "mask3-l{k}", r"mask3-l(?P<k>\d+)", "joint",
    "Mask2 + the query does not read the document in layers < k",
    lambda s, L: _rep(L, lambda i: LayerSpec(MASK3_LOW if i < s.k else MASK2)),
    check=lambda s, L: _check_range("mask3-l{k}", s.k, 0, L - 1, s, "k"), example="mask3-l4",
    fit=lambda L: f"mask3-l{min(4, L - 2)}"))
register(Family(
    "prettr", "prettr-l{k}", r"prettr-l(?P<k>\d+)", "split",
    "PreTTR: joint input [CLS] q [SEP] d [SEP] (document token type 1, positions continuing), "
    "query and document attend only within themselves in layers < k, full attention from k",
    lambda s, L: _rep(L, lambda i: LayerSpec(SEPARATE if i < s.k else FULL)),
    check=_prettr_check, example="prettr-l4",
    lengths=lambda s: {"query_max_tokens": 256, "truncation": "doc_first"},
    options=("head", "proj", "qlen"), describe=_prettr_describe,
    doc_style=lambda s: "offset" if s.qlen is not None else "pair",
    fit=lambda L: f"prettr-l{min(4, L - 1)}"))
register(Family(
    "mice", "mice-l{m}+{n}", r"mice-l(?P<m>\d+)\+(?P<n>\d+)", "split",
    "MICE: m separate layers (documents precomputed), then n layers where the query side "
    "reads the frozen document through its own cross-attention sub-layer, then attends "
    "itself, then the feed-forward; the rest dropped",
    _mice_layers, check=_mice_check, example="mice-l4+3", lengths=_mice_lengths,
    options=SPLIT_OPTIONS + ("attn", "order", "cls_doc", "qcls"), describe=_mice_describe,
    fit=_mice_fit))
register(Family(
    "colbert", "colbert", r"colbert", "split",
    "ColBERT: separate encoders, 128-d projection, [MASK]-augmented 32-token queries, "
    "180-token documents, MaxSim head",
    lambda s, L: _rep(L, lambda i: LayerSpec(SEPARATE)),
    defaults={"head": "maxsim", "projection": True, "qaug": True}, example="colbert",
    lengths=_colbert_lengths, options=SPLIT_OPTIONS + ("qaug",), describe=_colbert_describe,
    fit=lambda L: "colbert"))
register(Family(
    "biencoder", "biencoder", r"biencoder", "split",
    "separate encoders, mean pooling, cosine head",
    lambda s, L: _rep(L, lambda i: LayerSpec(SEPARATE)),
    defaults={"head": "mean-cos"}, example="biencoder",
    lengths=lambda s: {"query_max_tokens": 32}, fit=lambda L: "biencoder"))

#: explicit per-layer patterns (``custom-joint:...`` / ``custom-split:...``): not a preset,
#: so not in :data:`REGISTRY`'s listings, but declared like one
CUSTOM = Family(
    CUSTOM_NAME, "custom-{layout}:{layers}",
    r"custom-(?P<layout>joint|split):(?P<layers>[01/x,*=a-zA-Z\d]+)", None,
    "custom per-layer interaction pattern",
    lambda s, L: tuple(s.custom_layers or ()),
    check=_custom_check, check_name=_custom_check_name, fixed_depth=True,
    lengths=lambda s: {"query_max_tokens": 32},
    fields_of=lambda g: {"custom_layout": g["layout"],
                         "custom_layers": decode_layers(g["layers"])},
    format_of=lambda s: f"custom-{s.layout}:" + encode_layers(s.custom_layers or ()))


#: pattern -> description, for listings
PRESET_PATTERNS: dict[str, str] = {f.pattern: f.description for f in REGISTRY.values()}


def invalid(msg: str) -> SpecError:
    """A :class:`SpecError` for ``msg`` followed by the valid names (:func:`valid_names_help`),
    on one line (a refusal is one line)."""
    return SpecError(f"{msg}; {valid_names_help()}")


def valid_names_help() -> str:
    pats = ", ".join(f.pattern for f in REGISTRY.values())
    return (f"valid names: {pats}; options in brackets, e.g. mice-l4+3[order=self], "
            f"colbert[proj=0,qaug=0], prettr-l4[qlen=32] (options: {', '.join(OPTIONS)}); "
            "custom-joint:/custom-split: per-layer patterns")

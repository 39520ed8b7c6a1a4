"""Interaction specs: a declarative, compute-free description of who attends to whom.

An :class:`InteractionSpec` says, for every layer of a BERT-style re-ranker,

* which *segment* may attend to which (a 5x5 boolean matrix, row = from, column = to,
  in the order of :data:`SEGMENTS`),
* which segments are *frozen* (their hidden states are not updated by that layer),
* whether the layer is *dropped* (skipped entirely),
* which key segments are read through a separate *cross-attention sub-layer* (MICE), in which
  order the two attention sub-layers run, and which rows average the cross keys uniformly,

plus the input layout (``joint`` = ``[CLS] q [SEP] d [SEP]``; ``split`` = a query part and a
document part encoded separately in the lower layers), the scoring head and the tokenization
defaults of the reference implementation.

Families of presets are declared once each in :data:`REGISTRY` (name pattern, parameters,
options, per-layer matrices, validation, description), as ``ir_measures`` registers its
measures: adding a variant is one :func:`register` call. Every spec has a canonical name that
parses back: ``parse(str(spec)) == spec``.

Executors (:mod:`mice_bench.executors`) and reports only consume specs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable

from .naming import split_top_level

SEGMENTS: tuple[str, ...] = ("cls", "query", "sep_q", "doc", "sep_d")
SEG_INDEX = {s: i for i, s in enumerate(SEGMENTS)}
QUERY_SIDE = frozenset({"cls", "query", "sep_q"})
DOC_SIDE = frozenset({"doc", "sep_d"})

LAYOUTS = ("joint", "split")
HEADS = ("cls", "maxsim", "mean-cos")

Matrix = tuple[tuple[bool, ...], ...]


class SpecError(ValueError):
    """An unknown, malformed or impossible interaction spec."""


def matrix(*rows: str) -> Matrix:
    """Build a 5x5 matrix from five strings of 0/1 (rows cls, query, sep_q, doc, sep_d)."""
    if len(rows) != 5 or any(len(r) != 5 or set(r) - {"0", "1"} for r in rows):
        raise SpecError(f"a matrix needs five rows of five 0/1 digits, got {rows!r}")
    return tuple(tuple(c == "1" for c in r) for r in rows)


def matrix_rows(m: Matrix) -> tuple[str, ...]:
    return tuple("".join("1" if x else "0" for x in row) for row in m)


FULL = matrix("11111", "11111", "11111", "11111", "11111")
NONE = matrix("00000", "00000", "00000", "00000", "00000")
# Split layout: the query part and the document part attend only within themselves.
SEPARATE = matrix("11100", "11100", "11100", "00011", "00011")
# The one-softmax MICE ablation (``attn=joint``): the query side reads the frozen document
# inside its own self-attention; [CLS] reads the query only.
MICE_ONE_SOFTMAX = matrix("11100", "01111", "01111", "00000", "00000")

MASK0 = matrix("11111", "01110", "00100", "01011", "00001")
MASK1 = matrix("11100", "01110", "00100", "01011", "00001")
MASK2 = matrix("11100", "01110", "00100", "00011", "00001")
MASK3_LOW = matrix("11100", "01100", "00100", "00011", "00001")


@dataclass(frozen=True)
class LayerSpec:
    """One layer: allowed segment-to-segment attention, frozen segments, dropped or kept.

    ``cross_keys``: key segments read through a separate cross-attention sub-layer (own
    weights) instead of inside the self-attention softmax; ``cross_first``: that sub-layer runs
    before self-attention (the MICE reference's default). In the cross sub-layer a row reads the
    cross keys its ``allow`` row permits; a row in ``cross_uniform`` instead averages the
    values of all (valid) cross keys uniformly (what the reference computes for a fully masked
    row); any other row that reads no cross key is left unchanged by the sub-layer.
    """

    allow: Matrix = FULL
    frozen: frozenset[str] = frozenset()
    dropped: bool = False
    cross_keys: frozenset[str] = frozenset()
    cross_first: bool = False
    cross_uniform: frozenset[str] = frozenset()

    def allowed(self, src: str, dst: str) -> bool:
        return self.allow[SEG_INDEX[src]][SEG_INDEX[dst]]

    def describe(self) -> str:
        if self.dropped:
            return "dropped"
        s = "/".join(matrix_rows(self.allow))
        if self.frozen:
            s += " frozen=" + ",".join(x for x in SEGMENTS if x in self.frozen)
        if self.cross_keys:
            s += " cross=" + ",".join(x for x in SEGMENTS if x in self.cross_keys)
            s += " (cross first)" if self.cross_first else " (self first)"
        if self.cross_uniform:
            s += " uniform=" + ",".join(x for x in SEGMENTS if x in self.cross_uniform)
        return s


DROPPED = LayerSpec(NONE, dropped=True)


# ------------------------------------------------------------------------- options
#: option key in names -> (InteractionSpec field, parser, formatter)
def _bool(v: str) -> bool:
    if v.lower() in ("1", "true", "yes"):
        return True
    if v.lower() in ("0", "false", "no"):
        return False
    raise SpecError(f"got {v!r}; valid: 0, 1")


def _int(v: str) -> int:
    try:
        return int(v)
    except ValueError:
        raise SpecError(f"expected an integer, got {v!r}") from None


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
    "qlen": ("qlen", _int, "PreTTR: fixed document position offset (document states "
             "independent of the query; the reference's prettr_max_query_length helper)"),
}


#: the options of every split-layout family unless the family lists its own
SPLIT_OPTIONS: tuple[str, ...] = ("head", "doc_tt", "proj")


@dataclass(frozen=True)
class Family:
    """One preset family, declared once: its name pattern and parameters, layout, options and
    their defaults, per-layer rule, validation, description, document tokenization and the
    representative instance that fits a model (:func:`fitted`).

    ``layout``: ``joint`` or ``split`` (``None``: the spec says, as custom specs do).
    ``options``: the option keys of :data:`OPTIONS` that apply (``None``: the layout's,
    :data:`SPLIT_OPTIONS` for split, none for joint). ``rule(spec, L)``: the per-layer specs.
    ``check(spec, L)``: refuse a spec that does not fit an ``L``-layer model;
    ``check_name(spec)``: refuse a spec whatever the model. ``describe(spec, text)``: the
    description of a spec whose options change what it is (default: ``description``).
    ``doc_style(spec)``: how the split layout tokenizes the document (see
    :attr:`InteractionSpec.doc_style`). ``lengths(spec)``: tokenization defaults of the
    reference. ``fit(L)``: the name of the family's representative instance on ``L`` layers.
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


REGISTRY: dict[str, Family] = {}

_COMMON_DEFAULTS = {"head": "cls", "doc_token_type": 0, "projection": False}


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


# ------------------------------------------------------------------------- the spec
@dataclass(frozen=True)
class InteractionSpec:
    """A declarative interaction spec (no compute). Build with :func:`parse` or the presets.

    ``family`` is a key of :data:`REGISTRY` (or ``custom``); ``k``, ``m``, ``n`` are its layer
    parameters; the other fields are the options of the name (``OPTIONS``), always concrete
    (family defaults filled in by :func:`parse`).
    """

    family: str
    k: int | None = None
    m: int | None = None
    n: int | None = None
    head: str = "cls"
    doc_token_type: int = 0
    projection: bool = False
    qaug: bool = False
    attn: str = "cross"
    order: str = "cross"
    cls_doc: bool = True
    qcls: bool = False
    qlen: int | None = None
    custom_layout: str | None = None
    custom_layers: tuple[LayerSpec, ...] | None = None

    # ----------------------------------------------------------------- properties
    @property
    def fam(self) -> Family | None:
        """The preset family of :data:`REGISTRY` (None for a custom spec)."""
        return REGISTRY.get(self.family)

    @property
    def declaration(self) -> Family | None:
        """The family declaration behind this spec (custom specs included)."""
        return family(self.family)

    @property
    def layout(self) -> str:
        return self.declaration.layout_of(self)

    @property
    def doc_style(self) -> str | None:
        """How the document part is tokenized in the split layout.

        ``cls``: ``[CLS] d [SEP]``, positions from 0 (MICE, ColBERT, bi-encoder);
        ``pair``: ``d [SEP]`` cut from the joint pair, token type 1, positions continuing after
        the query (PreTTR as the reference scores it: document states depend on the query
        length, so they are not precomputed); ``offset``: ``d [SEP]``, token type 1, positions
        from the fixed offset ``qlen`` (precomputable PreTTR).
        """
        if self.layout != "split":
            return None
        return self.declaration.doc_style(self)

    @property
    def precomputable(self) -> bool:
        """Document states can be computed once, independently of the query."""
        return self.layout == "split" and self.doc_style != "pair"

    @property
    def name(self) -> str:
        return str(self)

    def _defaults(self) -> dict[str, Any]:
        d = dict(_COMMON_DEFAULTS)
        d.update(qaug=False, attn="cross", order="cross", cls_doc=True, qcls=False, qlen=None)
        if self.declaration is not None:
            d.update(self.declaration.defaults)
        return d

    def __str__(self) -> str:
        base = self.declaration.format(self)
        defaults = self._defaults()
        opts = []
        for key, (fname, _, _) in OPTIONS.items():
            v = getattr(self, fname)
            if v != defaults.get(fname):
                opts.append(f"{key}={int(v) if isinstance(v, bool) else v}")
        return base + (f"[{','.join(opts)}]" if opts else "")

    def __repr__(self) -> str:
        return f"InteractionSpec({str(self)!r})"

    def description(self) -> str:
        fam = self.declaration
        if fam.describe is None:
            return fam.description
        return fam.describe(self, fam.description)

    # ----------------------------------------------------------------- layers
    def layers(self, num_layers: int) -> tuple[LayerSpec, ...]:
        """Materialise the per-layer specs for a model with ``num_layers`` layers."""
        self.validate(num_layers)
        return self.declaration.rule(self, num_layers)

    def split_layer(self, num_layers: int) -> int | None:
        """First layer in which the query part and the document part interact (split layout).

        Documents can be encoded offline up to this layer. ``None`` for the joint layout.
        """
        if self.layout != "split":
            return None
        for i, ls in enumerate(self.layers(num_layers)):
            if not ls.dropped and _crosses_parts(ls):
                return i
        return num_layers

    def default_lengths(self) -> dict[str, int | None]:
        """Tokenization defaults of the reference implementation (word pieces, special tokens
        excluded): ``query_max_tokens``, ``doc_max_tokens`` (None: no cap of their own) and
        ``max_length`` (total tokens of a joint pair, special tokens included; capped by the
        model's maximum positions) and the pair ``truncation``: ``longest_first`` (Hugging Face
        pair tokenization, as the masking study's scorer) or ``doc_first`` (xpmir's
        ``HFQueryDocTokenizer``, PreTTR: the query capped at 256 tokens, the document cut)."""
        base = {"query_max_tokens": None, "doc_max_tokens": None, "max_length": 512,
                "truncation": "longest_first"}
        if self.declaration.lengths is not None:
            base.update(self.declaration.lengths(self))
        return base

    # ----------------------------------------------------------------- validation
    def validate(self, num_layers: int | None = None) -> "InteractionSpec":
        """Check the spec (and, given ``num_layers``, that it fits the model). Returns self."""
        fam = self.declaration
        if fam is None:
            raise _invalid(f"unknown family {self.family!r}")
        if self.head not in HEADS:
            raise _invalid(f"unknown head {self.head!r}; valid: {', '.join(HEADS)}")
        if self.head != "cls" and self.layout != "split":
            raise _invalid(f"{self}: head {self.head!r} needs the split layout")
        if fam.check_name is not None:
            fam.check_name(self)
        if num_layers is not None and fam.check is not None:
            fam.check(self, num_layers)
        if num_layers is None and not fam.fixed_depth:
            return self
        if self.head == "cls":
            _check_doc_reaches_cls(self, fam.rule(self, num_layers))
        return self

    # ----------------------------------------------------------------- fast path
    def fast_path(self, num_layers: int) -> str | None:
        """Name of the structural fast path that runs this spec, or None (reference only)."""
        layers = self.layers(num_layers)
        if self.layout == "joint":
            if all(ls.allow == FULL and not ls.frozen and not ls.dropped for ls in layers):
                return "joint"
            return None
        s = self.split_layer(num_layers)
        # after the split layer, every kept layer must either freeze the whole document part
        # (query-side interaction) or let everything update (joint over both parts).
        for ls in layers[s:]:
            if ls.dropped:
                continue
            if ls.frozen and ls.frozen != DOC_SIDE:
                return None
            if ls.cross_keys and ls.frozen != DOC_SIDE:
                return None
        return "split"


# ------------------------------------------------------------------------- families
def _check_range(name: str, value: int, lo: int, hi: int, spec, what: str) -> None:
    if not lo <= value <= hi:
        raise _invalid(f"{spec}: {name} needs {lo} <= {what} <= {hi} on this model")


def _mice_layers(spec: InteractionSpec, L: int) -> tuple[LayerSpec, ...]:
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


def _mice_check(spec: InteractionSpec, L: int) -> None:
    if spec.n < 1:
        raise _invalid(f"{spec}: mice-l{{m}}+{{n}} needs n >= 1 interaction layers")
    if spec.m + spec.n > L:
        raise _invalid(f"{spec}: m + n = {spec.m + spec.n} exceeds the model's {L} layers")


def _mice_lengths(spec: InteractionSpec) -> dict:
    # MICEQueryDocTokenizer with max_length = the model's (512): both parts up to 512 tokens
    return {"query_max_tokens": 510, "doc_max_tokens": 510}


def _colbert_lengths(spec: InteractionSpec) -> dict:
    if spec.qaug:  # xpmir ColBERTEncoder: query_maxlen 32, doc_maxlen 180 (specials included)
        return {"query_max_tokens": 30, "doc_max_tokens": 178}
    return {"query_max_tokens": 32}


def _mice_describe(spec: InteractionSpec, text: str) -> str:
    if spec.attn == "joint":
        return ("MICE one-softmax ablation: m separate layers, then n layers where the query "
                "side reads the frozen document inside its own self-attention (self-attention "
                "weights, [CLS] reads the query only); the rest dropped")
    notes = []
    if spec.order == "self":
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


def _colbert_describe(spec: InteractionSpec, text: str) -> str:
    if spec.projection and spec.qaug:
        return text
    return _with_notes("late interaction: separate encoders, MaxSim head",
                       ["128-d projection" if spec.projection else "no projection",
                        "[MASK]-augmented 32-token queries" if spec.qaug
                        else "no query augmentation"])


def _prettr_describe(spec: InteractionSpec, text: str) -> str:
    if spec.qlen is None:
        return text
    return _with_notes(text, [f"document positions from {spec.qlen} (precomputable)"])


def _with_notes(text: str, notes: list[str]) -> str:
    return text + (f" ({'; '.join(notes)})" if notes else "")


def _custom_check_name(spec: InteractionSpec) -> None:
    if not spec.custom_layers:
        raise _invalid("a custom spec needs at least one layer")


def _custom_check(spec: InteractionSpec, L: int) -> None:
    n = len(spec.custom_layers or ())
    if n != L:
        raise _invalid(f"{spec}: custom spec has {n} layers, the model has {L}")


def _prettr_check(spec: InteractionSpec, L: int) -> None:
    _check_range("prettr-l{k}", spec.k, 0, L, spec, "k")
    if spec.qlen is not None and spec.qlen < 3:
        raise _invalid(f"{spec}: qlen must be at least 3 ([CLS] q [SEP])")


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
                         "custom_layers": _decode_layers(g["layers"])},
    format_of=lambda s: f"custom-{s.layout}:" + _encode_layers(s.custom_layers or ()))


def fitted(family_name: str, num_layers: int) -> InteractionSpec:
    """The representative instance of a preset family on a ``num_layers``-layer model (the
    one rule every command uses, e.g. for MICE ``mice-l{min(4, L-1)}+{min(3, L-m)}``:
    ``mice-l4+3`` on 12 layers, ``mice-l4+2`` on 6, ``mice-l3+1`` on 4)."""
    fam = REGISTRY.get(family_name)
    if fam is None or fam.fit is None:
        raise SpecError(f"unknown family {family_name!r}; valid: {', '.join(REGISTRY)}")
    return parse(fam.fit(num_layers))

#: pattern -> description, for listings
PRESET_PATTERNS: dict[str, str] = {f.pattern: f.description for f in REGISTRY.values()}


# ------------------------------------------------------------------------- helpers
def _crosses_parts(ls: LayerSpec) -> bool:
    """True when the query part and the document part exchange information in this layer."""
    for src in SEGMENTS:
        if src in ls.frozen:
            continue
        if src in ls.cross_uniform:
            return True
        for dst in SEGMENTS:
            if ls.allowed(src, dst) and ((src in QUERY_SIDE) != (dst in QUERY_SIDE)):
                return True
    return False


def _propagate(ls: LayerSpec, informed: set[str], keys: Iterable[str] | None,
               uniform: frozenset[str] = frozenset()) -> set[str]:
    keys = set(SEGMENTS) if keys is None else set(keys)
    new = set(informed)
    for src in SEGMENTS:
        if src in ls.frozen:
            continue
        if any(ls.allowed(src, d) for d in informed & keys) or \
                (src in uniform and informed & keys):
            new.add(src)
    return new


def _check_doc_reaches_cls(spec: InteractionSpec, layers: Iterable[LayerSpec]) -> None:
    """Raise unless information from the document can reach the scoring [CLS] (sub-layer
    order respected: in a cross-first layer, what the query reads from the document reaches
    [CLS] through the self-attention of the same layer)."""
    informed = {"doc", "sep_d"}
    for ls in layers:
        if ls.dropped:
            continue
        if not ls.cross_keys:
            informed = _propagate(ls, informed, None)
            continue
        self_keys = set(SEGMENTS) - ls.cross_keys
        steps = [("cross", ls.cross_keys), ("self", self_keys)]
        if not ls.cross_first:
            steps.reverse()
        for kind, keys in steps:
            informed = _propagate(ls, informed, keys,
                                  ls.cross_uniform if kind == "cross" else frozenset())
    if "cls" not in informed:
        raise _invalid(f"{spec}: the document never reaches the scoring [CLS]")


def _encode_layer(ls: LayerSpec) -> str:
    if ls.dropped:
        return "x"
    s = "".join(matrix_rows(ls.allow))
    if ls.frozen:
        s += "=f" + "".join(str(SEG_INDEX[x]) for x in SEGMENTS if x in ls.frozen)
    if ls.cross_keys:
        s += ("=k" if ls.cross_first else "=c") + \
            "".join(str(SEG_INDEX[x]) for x in SEGMENTS if x in ls.cross_keys)
    if ls.cross_uniform:
        s += "=u" + "".join(str(SEG_INDEX[x]) for x in SEGMENTS if x in ls.cross_uniform)
    return s


def _encode_layers(layers: tuple[LayerSpec, ...]) -> str:
    out: list[str] = []
    prev, count = None, 0
    for ls in layers:
        code = _encode_layer(ls)
        if code == prev:
            count += 1
            continue
        if prev is not None:
            out.append(prev + (f"*{count}" if count > 1 else ""))
        prev, count = code, 1
    if prev is not None:
        out.append(prev + (f"*{count}" if count > 1 else ""))
    return "/".join(out)


def _decode_layers(text: str) -> tuple[LayerSpec, ...]:
    layers: list[LayerSpec] = []
    for chunk in text.split("/"):
        rep = 1
        if "*" in chunk:
            chunk, r = chunk.rsplit("*", 1)
            rep = _int(r)
        if chunk == "x":
            ls = DROPPED
        else:
            parts = chunk.split("=")
            bits = parts[0]
            if len(bits) != 25 or set(bits) - {"0", "1"}:
                raise SpecError(f"bad custom layer {chunk!r}: need 25 0/1 digits")
            allow = matrix(*(bits[i: i + 5] for i in range(0, 25, 5)))
            kw: dict[str, Any] = {}
            for p in parts[1:]:
                if not p or any(c not in "01234" for c in p[1:]):
                    raise SpecError(f"bad custom layer flag {p!r}")
                segs = frozenset(SEGMENTS[int(c)] for c in p[1:])
                if p[0] == "f":
                    kw["frozen"] = segs
                elif p[0] in "ck":  # k: cross-attention sub-layer first, c: after
                    kw["cross_keys"] = segs
                    kw["cross_first"] = p[0] == "k"
                elif p[0] == "u":
                    kw["cross_uniform"] = segs
                else:
                    raise SpecError(f"bad custom layer flag {p!r}")
            ls = LayerSpec(allow, **kw)
        layers.extend([ls] * rep)
    return tuple(layers)


def _invalid(msg: str) -> SpecError:
    return SpecError(f"{msg}\n{valid_names_help()}")


def valid_names_help() -> str:
    pats = ", ".join(f.pattern for f in REGISTRY.values())
    return (f"valid names: {pats}; options in brackets, e.g. mice-l4+3[order=self], "
            f"colbert[proj=0,qaug=0], prettr-l4[qlen=32] (options: {', '.join(OPTIONS)}); "
            "custom-joint:/custom-split: per-layer patterns")


_OPT_RE = re.compile(r"^(?P<base>[^\[]+)(?:\[(?P<opts>[^\]]*)\])?$")


def parse(name: str | InteractionSpec) -> InteractionSpec:
    """Parse a canonical name (``mice-l4+3``, ``mask3-l4``, ``colbert[proj=0]``, ...)."""
    if isinstance(name, InteractionSpec):
        return name
    text = name.strip().lower()
    mt = _OPT_RE.match(text)
    if not mt:
        raise SpecError(f"unknown variant {name!r}; {valid_names_help()}")
    base, opts = mt.group("base"), mt.group("opts")
    kw: dict[str, Any] = {}
    for fam in (CUSTOM, *REGISTRY.values()):
        fm = re.fullmatch(fam.regex, base)
        if fm:
            kw["family"] = fam.name
            kw.update(fam.fields(fm.groupdict()))
            break
    else:
        hint = ""
        if base.endswith("-cross") and base.startswith("mice-"):
            hint = (" (the '-cross' suffix is gone: the paper's cross-attention MICE is "
                    "now plain mice-l{m}+{n}; self-attention first is [order=self])")
        raise SpecError(f"unknown variant {name!r}{hint}; {valid_names_help()}")
    spec = InteractionSpec(**kw)
    spec = replace(spec, **spec._defaults())
    if opts:
        allowed = set(spec.declaration.options_of(spec))
        changes: dict[str, Any] = {}
        for opt in opts.split(","):
            if "=" not in opt:
                raise SpecError(f"bad option {opt!r} in {name!r}; options look like key=value")
            key, val = (x.strip() for x in opt.split("=", 1))
            if key not in OPTIONS:
                raise SpecError(f"unknown option {key!r} in {name!r}; valid: "
                                f"{', '.join(OPTIONS)}")
            if key not in allowed:
                raise SpecError(f"option {key!r} does not apply to {base!r}; valid there: "
                                f"{', '.join(sorted(allowed)) or 'none'}")
            fname, conv, _ = OPTIONS[key]
            try:
                changes[fname] = conv(val)
            except SpecError as e:
                raise SpecError(f"option {key} in {name!r}: {e}") from None
        spec = replace(spec, **changes)
    spec.validate()
    return spec


def custom(layout: str, layers: Iterable[LayerSpec], head: str = "cls",
           doc_token_type: int = 0) -> InteractionSpec:
    """Build a custom spec from explicit per-layer :class:`LayerSpec` objects."""
    if layout not in LAYOUTS:
        raise SpecError(f"unknown layout {layout!r}; valid: {', '.join(LAYOUTS)}")
    return InteractionSpec(family=CUSTOM_NAME, custom_layout=layout, custom_layers=tuple(layers),
                           head=head, doc_token_type=doc_token_type).validate()


def presets(num_layers: int = 12) -> list[InteractionSpec]:
    """The preset family instantiated with representative parameters for ``num_layers``."""
    return [fitted(name, num_layers) for name in REGISTRY]


def resolve(names: str | Iterable[str], num_layers: int | None = None) -> list[InteractionSpec]:
    """Parse a comma-separated list (or iterable) of names and validate against a model."""
    if isinstance(names, str):
        names = split_names(names)
    out = []
    for n in names:
        spec = parse(n)
        if num_layers is not None:
            spec.validate(num_layers)
        out.append(spec)
    return out


def variant_key(name: str) -> tuple:
    """Sort key of variant names (and the first stage ``bm25``): the paper's order of the
    families (their order in :data:`REGISTRY`), then the numbers inside the name."""
    order = ("bm25", *REGISTRY)
    base = re.split(r"[-\[+]", name, maxsplit=1)[0]
    fam = order.index(base) if base in order else len(order)
    nums = tuple(int(x) for x in re.findall(r"\d+", name[len(base):]))
    return (fam, nums, name)


def split_names(text: str) -> list[str]:
    """Split on commas that are not inside option brackets."""
    return split_top_level(text, "[]")


__all__ = ["SEGMENTS", "LayerSpec", "InteractionSpec", "Family", "REGISTRY", "register",
           "parse", "resolve", "presets", "custom", "fitted", "family", "variant_key", "SpecError",
           "OPTIONS", "SPLIT_OPTIONS"]

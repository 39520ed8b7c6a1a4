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

The pieces live in two modules below this one: one layer's attention (segments, matrices,
:class:`~mice_bench.layerspec.LayerSpec`, the custom pattern code) in
:mod:`mice_bench.layerspec`, and the families of presets (name pattern, parameters, options,
per-layer rule, validation, description), declared once each as ``ir_measures`` registers its
measures, in :mod:`mice_bench.families`. This module is the variants' public entry point
(its ``__all__``): it parses and formats names (every spec has a canonical name that parses
back: ``parse(str(spec)) == spec``), checks that the document reaches the score, and
resolves names against a model.

Executors (:mod:`mice_bench.executors`) and reports only consume specs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any, Iterable

# Family, register and SPLIT_OPTIONS are imported for this module's public names (__all__)
from .families import (CUSTOM, CUSTOM_NAME, HEADS, LAYOUTS, OPTION_DEFAULTS, OPTIONS,
                       REGISTRY, SPLIT_OPTIONS, Family, family, invalid, register,
                       valid_names_help)
from .layerspec import DOC_SIDE, FULL, QUERY_SIDE, SEGMENTS, LayerSpec, SpecError
from .naming import split_top_level


# ------------------------------------------------------------------------- the spec
@dataclass(frozen=True)
class InteractionSpec:
    """A declarative interaction spec (no compute). Build with :func:`parse` or the presets.

    ``family`` is a key of :data:`~mice_bench.families.REGISTRY` (or ``custom``); ``k``,
    ``m``, ``n`` are its layer parameters; the other fields are the options of the name
    (:data:`~mice_bench.families.OPTIONS`), always concrete (family defaults filled in by
    :func:`parse`).
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
        """Document states can be computed once, independently of the query (the variants
        of :data:`PRECOMPUTABLE`)."""
        return self.layout == "split" and self.doc_style != "pair"

    @property
    def name(self) -> str:
        return str(self)

    def _defaults(self) -> dict[str, Any]:
        fam = self.declaration
        return fam.option_defaults() if fam is not None else dict(OPTION_DEFAULTS)

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
            raise invalid(f"unknown family {self.family!r}")
        if self.head not in HEADS:
            raise invalid(f"unknown head {self.head!r}; valid: {', '.join(HEADS)}")
        if self.head != "cls" and self.layout != "split":
            raise invalid(f"{self}: head {self.head!r} needs the split layout")
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


def fitted(family_name: str, num_layers: int) -> InteractionSpec:
    """The representative instance of a preset family on a ``num_layers``-layer model (the
    one rule every command uses, e.g. for MICE ``mice-l{min(4, L-1)}+{min(3, L-m)}``:
    ``mice-l4+3`` on 12 layers, ``mice-l4+2`` on 6, ``mice-l3+1`` on 4)."""
    fam = REGISTRY.get(family_name)
    if fam is None or fam.fit is None:
        raise SpecError(f"unknown family {family_name!r}; valid: {', '.join(REGISTRY)}")
    return parse(fam.fit(num_layers))


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
        raise invalid(f"{spec}: the document never reaches the scoring [CLS]")



#: the variants whose documents can be encoded once and stored (``precomputable``): what a
#: refusal of any other variant names as valid (plain ``prettr-l{k}`` cannot: its documents
#: are positioned after each query)
PRECOMPUTABLE = "prettr-l{k}[qlen=N], mice-l{m}+{n}, colbert, biencoder"

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
           "OPTIONS", "SPLIT_OPTIONS", "PRECOMPUTABLE"]

"""Interaction specs: a declarative, compute-free description of who attends to whom.

An :class:`InteractionSpec` says, for every layer of a BERT-style re-ranker,

* which *segment* may attend to which (a 5x5 boolean matrix, row = from, column = to,
  in the order of :data:`SEGMENTS`),
* which segments are *frozen* (their hidden states are not updated by that layer),
* whether the layer is *dropped* (skipped entirely),

plus the input layout (``joint`` = ``[CLS] q [SEP] d [SEP]``; ``split`` = a query part
``[CLS] q [SEP]`` and a document part ``[CLS] d [SEP]`` each numbering positions from 0),
the attention mode of interaction layers (``joint`` or ``cross``) and the scoring head.

Presets are parametrised by the number of layers of the model they run on, so a spec is
materialised with :meth:`InteractionSpec.layers`. Every spec has a canonical name that parses
back: ``parse(str(spec)) == spec``.

Executors (:mod:`mice_bench.executors`) and reports only consume specs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

SEGMENTS: tuple[str, ...] = ("cls", "query", "sep_q", "doc", "sep_d")
SEG_INDEX = {s: i for i, s in enumerate(SEGMENTS)}
QUERY_SIDE = frozenset({"cls", "query", "sep_q"})
DOC_SIDE = frozenset({"doc", "sep_d"})

LAYOUTS = ("joint", "split")
MODES = ("joint", "cross")
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


# The seed study's masks (MICE, arXiv 2602.16299), rows from / columns to.
FULL = matrix("11111", "11111", "11111", "11111", "11111")
NONE = matrix("00000", "00000", "00000", "00000", "00000")
# Split layout: the query part and the document part attend only within themselves.
SEPARATE = matrix("11100", "11100", "11100", "00011", "00011")
# MICE interaction layers: the query side reads the (frozen) document; [CLS] reads the query.
MICE_INTERACT = matrix("11100", "01111", "01111", "00000", "00000")

MASK0 = matrix("11111", "01110", "00100", "01011", "00001")
MASK1 = matrix("11100", "01110", "00100", "01011", "00001")
MASK2 = matrix("11100", "01110", "00100", "00011", "00001")
MASK3_LOW = matrix("11100", "01100", "00100", "00011", "00001")


@dataclass(frozen=True)
class LayerSpec:
    """One layer: allowed segment-to-segment attention, frozen segments, dropped or kept."""

    allow: Matrix = FULL
    frozen: frozenset[str] = frozenset()
    dropped: bool = False
    # ``cross`` mode only: segments read through a separate cross-attention sub-layer
    # (with its own weights) instead of inside the self-attention softmax.
    cross_keys: frozenset[str] = frozenset()

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
        return s


DROPPED = LayerSpec(NONE, dropped=True)


def _range_list(n: int, rule) -> tuple[LayerSpec, ...]:
    return tuple(rule(i) for i in range(n))


PRESET_PATTERNS: dict[str, str] = {
    "ce": "full cross-encoder: every token attends every token in every layer",
    "mask0": "no attention sinks: nobody attends [CLS], SEPs attend only themselves, "
    "doc not to the first SEP, query not to the last",
    "mask1": "Mask0 + [CLS] does not read the document",
    "mask2": "Mask1 + the document does not read the query (document states precomputable)",
    "mask3-l{k}": "Mask2 + the query does not read the document in layers < k",
    "prettr-l{k}": "split layout: query and document encoded separately in layers < k, "
    "full joint attention from layer k on",
    "mice-l{m}+{n}": "MICE: m separate layers (documents precomputed), n interaction layers "
    "where only the query reads frozen document states, the rest dropped",
    "mice-l{m}+{n}-cross": "MICE with a separate query-to-document cross-attention "
    "sub-layer in the interaction layers",
    "colbert": "late interaction: separate encoders, MaxSim head",
    "biencoder": "separate encoders, mean pooling, cosine head",
}

_NAME_RE = re.compile(
    r"^(?P<base>ce|mask0|mask1|mask2|colbert|biencoder"
    r"|mask3-l(?P<k3>\d+)|prettr-l(?P<kp>\d+)|mice-l(?P<m>\d+)\+(?P<n>\d+)(?P<cross>-cross)?"
    r"|custom-(?P<clayout>joint|split):(?P<clayers>[01/x,*=a-z_\d]+))"
    r"(?:\[(?P<opts>[^\]]*)\])?$"
)


@dataclass(frozen=True)
class InteractionSpec:
    """A declarative interaction spec (no compute). Build with :func:`parse` or the presets.

    ``family`` is one of ``ce, mask0, mask1, mask2, mask3, prettr, mice, colbert, biencoder,
    custom``; ``k``, ``m``, ``n`` are its layer parameters. ``doc_token_type`` is the token
    type of the document part in the ``split`` layout (default 0, as in the MICE reference code
    and in bi-encoders; 1 reproduces the concatenated input's token types).
    """

    family: str
    k: int | None = None
    m: int | None = None
    n: int | None = None
    mode: str = "joint"
    head: str = "cls"
    doc_token_type: int = 0
    projection: bool = False  # maxsim: apply the checkpoint's linear projection if present
    custom_layout: str | None = None
    custom_layers: tuple[LayerSpec, ...] | None = None

    # ----------------------------------------------------------------- properties
    @property
    def layout(self) -> str:
        if self.family == "custom":
            return self.custom_layout or "joint"
        return "split" if self.family in ("prettr", "mice", "colbert", "biencoder") else "joint"

    @property
    def name(self) -> str:
        return str(self)

    def __str__(self) -> str:
        f = self.family
        if f in ("ce", "mask0", "mask1", "mask2", "colbert", "biencoder"):
            base = f
        elif f == "mask3":
            base = f"mask3-l{self.k}"
        elif f == "prettr":
            base = f"prettr-l{self.k}"
        elif f == "mice":
            base = f"mice-l{self.m}+{self.n}" + ("-cross" if self.mode == "cross" else "")
        elif f == "custom":
            base = f"custom-{self.layout}:" + _encode_layers(self.custom_layers or ())
        else:  # pragma: no cover - constructor prevents this
            raise SpecError(f"unknown family {f!r}")
        opts = []
        default_head = {"colbert": "maxsim", "biencoder": "mean-cos"}.get(f, "cls")
        if self.head != default_head:
            opts.append(f"head={self.head}")
        if self.doc_token_type != 0:
            opts.append(f"doc_tt={self.doc_token_type}")
        if self.projection:
            opts.append("proj=1")
        return base + (f"[{','.join(opts)}]" if opts else "")

    def __repr__(self) -> str:
        return f"InteractionSpec({str(self)!r})"

    def description(self) -> str:
        key = {
            "mask3": "mask3-l{k}",
            "prettr": "prettr-l{k}",
            "mice": "mice-l{m}+{n}-cross" if self.mode == "cross" else "mice-l{m}+{n}",
        }.get(self.family, self.family)
        return PRESET_PATTERNS.get(key, "custom per-layer interaction pattern")

    # ----------------------------------------------------------------- layers
    def split_layer(self, num_layers: int) -> int | None:
        """First layer in which the query part and the document part interact (split layout).

        Documents can be encoded offline up to this layer. ``None`` for the joint layout.
        """
        if self.layout != "split":
            return None
        for i, ls in enumerate(self.layers(num_layers)):
            if ls.dropped:
                continue
            if _crosses_parts(ls):
                return i
        return num_layers

    def layers(self, num_layers: int) -> tuple[LayerSpec, ...]:
        """Materialise the per-layer specs for a model with ``num_layers`` layers."""
        self.validate(num_layers)
        f = self.family
        if f == "ce":
            return _range_list(num_layers, lambda i: LayerSpec(FULL))
        if f == "mask0":
            return _range_list(num_layers, lambda i: LayerSpec(MASK0))
        if f == "mask1":
            return _range_list(num_layers, lambda i: LayerSpec(MASK1))
        if f == "mask2":
            return _range_list(num_layers, lambda i: LayerSpec(MASK2))
        if f == "mask3":
            k = self.k
            return _range_list(num_layers, lambda i: LayerSpec(MASK3_LOW if i < k else MASK2))
        if f == "prettr":
            k = self.k
            return _range_list(num_layers, lambda i: LayerSpec(SEPARATE if i < k else FULL))
        if f in ("colbert", "biencoder"):
            return _range_list(num_layers, lambda i: LayerSpec(SEPARATE))
        if f == "mice":
            m, n = self.m, self.n
            cross = DOC_SIDE if self.mode == "cross" else frozenset()

            def rule(i: int) -> LayerSpec:
                if i < m:
                    return LayerSpec(SEPARATE)
                if i < m + n:
                    return LayerSpec(MICE_INTERACT, frozen=DOC_SIDE, cross_keys=cross)
                return DROPPED

            return _range_list(num_layers, rule)
        if f == "custom":
            return tuple(self.custom_layers or ())
        raise SpecError(f"unknown family {f!r}")

    # ----------------------------------------------------------------- validation
    def validate(self, num_layers: int | None = None) -> "InteractionSpec":
        """Check the spec (and, given ``num_layers``, that it fits the model). Returns self."""
        f = self.family
        if self.mode not in MODES:
            raise _invalid(f"unknown attention mode {self.mode!r}; valid: {', '.join(MODES)}")
        if self.head not in HEADS:
            raise _invalid(f"unknown head {self.head!r}; valid: {', '.join(HEADS)}")
        if self.doc_token_type not in (0, 1):
            raise _invalid("doc_tt must be 0 or 1")
        if self.head != "cls" and self.layout != "split":
            raise _invalid(f"head {self.head!r} needs the split layout")
        if f == "custom":
            layers = self.custom_layers or ()
            if not layers:
                raise _invalid("a custom spec needs at least one layer")
            if num_layers is not None and len(layers) != num_layers:
                raise _invalid(
                    f"{self}: custom spec has {len(layers)} layers, the model has {num_layers}"
                )
            if self.head == "cls":
                _check_doc_reaches_cls(self, layers)
            return self
        if num_layers is None:
            return self
        L = num_layers
        if f == "mask3":
            if not 1 <= self.k <= L - 2:
                raise _invalid(
                    f"{self}: mask3-l{{k}} needs 1 <= k <= layers - 2 = {L - 2} on a {L}-layer "
                    "model (the document must still reach [CLS] through the query)"
                )
        elif f == "prettr":
            if not 0 <= self.k <= L - 1:
                raise _invalid(f"{self}: prettr-l{{k}} needs 0 <= k <= {L - 1} on {L} layers")
        elif f == "mice":
            m, n = self.m, self.n
            if n < 2:
                raise _invalid(
                    f"{self}: mice-l{{m}}+{{n}} needs n >= 2 interaction layers: with n = 1 the "
                    "document never reaches the scoring [CLS]"
                )
            if m + n > L:
                raise _invalid(f"{self}: m + n = {m + n} exceeds the model's {L} layers")
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


# ------------------------------------------------------------------------- helpers
def _crosses_parts(ls: LayerSpec) -> bool:
    """True when the query part and the document part exchange information in this layer."""
    for src in SEGMENTS:
        if src in ls.frozen:
            continue
        for dst in SEGMENTS:
            if ls.allowed(src, dst) and ((src in QUERY_SIDE) != (dst in QUERY_SIDE)):
                return True
    return False


def _check_doc_reaches_cls(spec: InteractionSpec, layers: Iterable[LayerSpec]) -> None:
    """Raise unless information from the document can reach the scoring [CLS]."""
    informed = {"doc", "sep_d"}
    for ls in layers:
        if ls.dropped:
            continue
        new = set(informed)
        for src in SEGMENTS:
            if src in ls.frozen:
                continue
            if any(ls.allowed(src, d) for d in informed):
                new.add(src)
        informed = new
    if "cls" not in informed:
        raise SpecError(f"{spec}: the document never reaches the scoring [CLS]")


def _encode_layer(ls: LayerSpec) -> str:
    if ls.dropped:
        return "x"
    s = "".join(matrix_rows(ls.allow))
    if ls.frozen:
        s += "=f" + "".join(str(SEG_INDEX[x]) for x in SEGMENTS if x in ls.frozen)
    if ls.cross_keys:
        s += "=c" + "".join(str(SEG_INDEX[x]) for x in SEGMENTS if x in ls.cross_keys)
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
            rep = int(r)
        if chunk == "x":
            ls = DROPPED
        else:
            parts = chunk.split("=")
            bits = parts[0]
            if len(bits) != 25 or set(bits) - {"0", "1"}:
                raise SpecError(f"bad custom layer {chunk!r}: need 25 0/1 digits")
            allow = matrix(*(bits[i : i + 5] for i in range(0, 25, 5)))
            frozen: frozenset[str] = frozenset()
            cross: frozenset[str] = frozenset()
            for p in parts[1:]:
                segs = frozenset(SEGMENTS[int(c)] for c in p[1:])
                if p[0] == "f":
                    frozen = segs
                elif p[0] == "c":
                    cross = segs
                else:
                    raise SpecError(f"bad custom layer flag {p!r}")
            ls = LayerSpec(allow, frozen=frozen, cross_keys=cross)
        layers.extend([ls] * rep)
    return tuple(layers)


def _invalid(msg: str) -> SpecError:
    return SpecError(f"{msg}\n{valid_names_help()}")


def valid_names_help() -> str:
    return (
        "valid names: ce, mask0, mask1, mask2, mask3-l{k}, prettr-l{k}, mice-l{m}+{n}, "
        "mice-l{m}+{n}-cross, colbert, biencoder (options in brackets, e.g. "
        "colbert[head=mean-cos], prettr-l4[doc_tt=1]; custom-joint:/custom-split: per-layer "
        "patterns)"
    )


def parse(name: str) -> InteractionSpec:
    """Parse a canonical name (``mice-l4+3``, ``mask3-l4``, ``colbert[doc_tt=1]``, ...)."""
    if isinstance(name, InteractionSpec):
        return name
    text = name.strip().lower()
    mt = _NAME_RE.match(text)
    if not mt:
        raise SpecError(f"unknown variant {name!r}; {valid_names_help()}")
    g = mt.groupdict()
    base = g["base"]
    kw: dict = {}
    if base in ("ce", "mask0", "mask1", "mask2"):
        kw["family"] = base
    elif base == "colbert":
        kw.update(family="colbert", head="maxsim")
    elif base == "biencoder":
        kw.update(family="biencoder", head="mean-cos")
    elif g["k3"] is not None:
        kw.update(family="mask3", k=int(g["k3"]))
    elif g["kp"] is not None:
        kw.update(family="prettr", k=int(g["kp"]))
    elif g["m"] is not None:
        kw.update(family="mice", m=int(g["m"]), n=int(g["n"]),
                  mode="cross" if g["cross"] else "joint")
    else:
        kw.update(family="custom", custom_layout=g["clayout"],
                  custom_layers=_decode_layers(g["clayers"]))
    if g["opts"]:
        for opt in g["opts"].split(","):
            if "=" not in opt:
                raise SpecError(f"bad option {opt!r} in {name!r}; options look like key=value")
            key, val = (x.strip() for x in opt.split("=", 1))
            if key == "head":
                kw["head"] = val
            elif key == "doc_tt":
                kw["doc_token_type"] = int(val)
            elif key == "proj":
                kw["projection"] = val in ("1", "true", "yes")
            else:
                raise SpecError(f"unknown option {key!r} in {name!r}; valid: head, doc_tt, proj")
    spec = InteractionSpec(**kw)
    spec.validate()
    return spec


def custom(layout: str, layers: Iterable[LayerSpec], head: str = "cls",
           doc_token_type: int = 0) -> InteractionSpec:
    """Build a custom spec from explicit per-layer :class:`LayerSpec` objects."""
    if layout not in LAYOUTS:
        raise SpecError(f"unknown layout {layout!r}; valid: {', '.join(LAYOUTS)}")
    return InteractionSpec(family="custom", custom_layout=layout, custom_layers=tuple(layers),
                           head=head, doc_token_type=doc_token_type).validate()


def presets(num_layers: int = 12) -> list[InteractionSpec]:
    """The preset family instantiated with representative parameters for ``num_layers``."""
    L = num_layers
    names = ["ce", "mask0", "mask1", "mask2", f"mask3-l{min(4, L - 2)}",
             f"prettr-l{min(4, L - 1)}"]
    m = min(4, L - 2)
    names += [f"mice-l{m}+{min(3, L - m)}", f"mice-l{m}+{min(3, L - m)}-cross",
              "colbert", "biencoder"]
    return [parse(n) for n in names]


def resolve(names: str | Iterable[str], num_layers: int | None = None) -> list[InteractionSpec]:
    """Parse a comma-separated list (or iterable) of names and validate against a model."""
    if isinstance(names, str):
        names = [x for x in (s.strip() for s in names.split(",")) if x]
    out = []
    for n in names:
        spec = parse(n)
        if num_layers is not None:
            spec.validate(num_layers)
        out.append(spec)
    return out

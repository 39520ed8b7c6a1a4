"""One layer of an interaction spec: who attends to whom, with no compute.

* the five *segments* of a re-ranker's input (:data:`SEGMENTS`: ``[CLS]``, the query, its
  ``[SEP]``, the document, its ``[SEP]``) and the query / document sides;
* 5x5 boolean attention matrices (row = from, column = to; :func:`matrix`) and the named ones
  the families use (:data:`FULL`, :data:`SEPARATE`, the masking study's ``MASK*``, ...);
* :class:`LayerSpec`: one layer's matrix, frozen segments, dropped or kept, and the keys a MICE
  cross-attention sub-layer reads;
* the per-layer pattern code of ``custom-joint:`` / ``custom-split:`` names
  (:func:`encode_layers`, :func:`decode_layers`).

The families (:mod:`mice_bench.families`) build their layers from these;
:mod:`mice_bench.spec` puts them together into named variants.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

SEGMENTS: tuple[str, ...] = ("cls", "query", "sep_q", "doc", "sep_d")
SEG_INDEX = {s: i for i, s in enumerate(SEGMENTS)}
QUERY_SIDE = frozenset({"cls", "query", "sep_q"})
DOC_SIDE = frozenset({"doc", "sep_d"})

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


def int_value(v: str) -> int:
    """``v`` as an integer, or a :class:`SpecError` naming it."""
    try:
        return int(v)
    except ValueError:
        raise SpecError(f"expected an integer, got {v!r}") from None


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



def encode_layers(layers: tuple[LayerSpec, ...]) -> str:
    """The pattern code of ``layers`` (a custom spec's name): one code per layer, ``/``
    between layers, ``*n`` for n equal layers in a row; :func:`decode_layers` reads it."""
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


def decode_layers(text: str) -> tuple[LayerSpec, ...]:
    """The layers of a pattern code (:func:`encode_layers`)."""
    layers: list[LayerSpec] = []
    for chunk in text.split("/"):
        rep = 1
        if "*" in chunk:
            chunk, r = chunk.rsplit("*", 1)
            rep = int_value(r)
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


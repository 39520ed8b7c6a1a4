"""Variant names written with the earlier definitions, and what they mean now.

The paper's definitions changed what three names measure:

* ``colbert`` is now the paper's ColBERT (128-d projection, ``[MASK]``-padded 32-token
  queries, 180-token documents); the old ``colbert`` (projection-free MaxSim over the
  unpadded query) is ``colbert[proj=0,qaug=0]``;
* ``mice-l{m}+{n}`` now reads the document through a cross-attention sub-layer; the old one
  (the query reads the frozen document inside its own self-attention) is
  ``mice-l{m}+{n}[attn=joint]``; the old ``mice-l{m}+{n}-cross`` (self-attention, then a
  cross-attention sub-layer) is ``mice-l{m}+{n}[order=self]``;
* ``prettr-l{k}`` now uses the joint input of the reference (document positions counted
  through the query); the old one encoded both parts separately, each with its own ``[CLS]``
  and positions from 0. No current name measures that: the name is kept and the row noted.

The result upgraders (:mod:`mice_bench.effectiveness.schema`,
:mod:`mice_bench.latency.result`) rename old rows with :func:`current_name` and record
:func:`legacy_note`.
"""

from __future__ import annotations

import re

_OPTS = r"(?:\[(?P<opts>[^\]]*)\])?"
_COLBERT = re.compile(r"^colbert" + _OPTS + "$")
_MICE = re.compile(r"^mice-l(?P<m>\d+)\+(?P<n>\d+)(?P<cross>-cross)?" + _OPTS + "$")
_PRETTR = re.compile(r"^prettr-l\d+" + _OPTS + "$")
#: the mark the report puts on rows measured with a pre-v2 definition
MARK = "†"
NOTE_PREFIX = "pre-v2 definition"


def _opts(text: str | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in (text or "").split(","):
        if "=" in part:
            k, v = part.split("=", 1)
            out[k.strip()] = v.strip()
    return out


def _join(base: str, opts: dict[str, str]) -> str:
    name = base + ("[" + ",".join(f"{k}={v}" for k, v in opts.items()) + "]" if opts else "")
    try:   # the canonical spelling (option order) of this version, when it parses
        from .spec import parse

        return str(parse(name))
    except Exception:  # noqa: BLE001 - keep the hand-built name
        return name


def current_name(old: str) -> str:
    """The current name of what ``old`` measured with the earlier definitions (``old`` when
    unchanged)."""
    m = _COLBERT.match(old)
    if m:
        o = _opts(m.group("opts"))
        if o.get("proj") not in ("1", "true", "yes"):
            o["proj"] = "0"
        o["qaug"] = "0"
        return _join("colbert", o)
    m = _MICE.match(old)
    if m:
        o = _opts(m.group("opts"))
        if m.group("cross"):
            o["order"] = "self"
        else:
            o["attn"] = "joint"
        return _join(f"mice-l{m.group('m')}+{m.group('n')}", o)
    return old


def legacy_note(old: str) -> str | None:
    """The note an upgraded row carries (None when ``old`` means the same now)."""
    new = current_name(old)
    if new != old:
        return (f"{NOTE_PREFIX}: written as {old!r} with the earlier definitions; that "
                f"measurement is {new!r} now")
    if _PRETTR.match(old):
        return (f"{NOTE_PREFIX}: {old!r} measured with the earlier definitions (query and document "
                "encoded separately, each with its own [CLS] and positions from 0); the "
                "current prettr uses the joint input")
    return None


def is_legacy(notes) -> bool:
    return any(str(n).startswith(NOTE_PREFIX) for n in notes or ())

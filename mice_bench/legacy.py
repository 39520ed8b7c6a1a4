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

This module is one step of the result upgrader chain (:data:`mice_bench.results.UPGRADERS`,
keyed by kind and schema version): :data:`STEPS` renames the variants of files written
before the change to what they measured (:func:`current_name`) and records why
(:func:`legacy_note`): ``effectiveness`` and ``effectiveness-summary`` 2 -> 3, ``latency``
1 -> 2. :func:`mice_bench.results.load_result` runs it between the kinds' other steps.
"""

from __future__ import annotations

import re
from typing import Callable

from .results import UPGRADERS

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


# --------------------------------------------------------------------------- upgrader steps
def rename_effectiveness(doc: dict) -> dict:
    """``effectiveness`` 2 -> 3: the result's variant renamed; the old name kept in
    ``config.variant_as_written``, the reason in ``config.legacy_note``."""
    doc = dict(doc)
    cfg = dict(doc["config"])
    old = cfg["variant"]
    if current_name(old) != old:
        cfg.update(variant=current_name(old), variant_as_written=old,
                   legacy_note=legacy_note(old))
    doc["config"] = cfg
    return doc


def rename_summary(doc: dict) -> dict:
    """``effectiveness-summary`` 2 -> 3: rows and baseline renamed."""
    doc = dict(doc)
    s = dict(doc["summary"])
    s["rows"] = [dict(r, variant=current_name(r["variant"])) for r in s["rows"]]
    s["baseline"] = current_name(s["baseline"])
    doc["summary"] = s
    return doc


def rename_latency(doc: dict) -> dict:
    """``latency`` 1 -> 2: rows renamed, each with its note (also the old ``prettr``, which
    keeps its name); ``config.variants`` renamed."""
    doc = dict(doc)
    if not isinstance(doc.get("rows"), list):
        return doc                        # the reader names what is missing
    rows = []
    for r in doc["rows"]:
        if not isinstance(r, dict) or "variant" not in r:
            rows.append(r)
            continue
        r = dict(r)
        old = r["variant"]
        note = legacy_note(old)
        if note is not None:
            r["variant"] = current_name(old)
            r["notes"] = [*r.get("notes", []), note]
        rows.append(r)
    doc["rows"] = rows
    cfg = dict(doc.get("config") or {})
    if isinstance(cfg.get("variants"), list):
        cfg["variants"] = [current_name(v) for v in cfg["variants"]]
    doc["config"] = cfg
    return doc


#: (kind, the schema version a step upgrades from) -> the step
STEPS: dict[tuple[str, int], Callable[[dict], dict]] = {
    ("effectiveness", 2): rename_effectiveness,
    ("effectiveness-summary", 2): rename_summary,
    ("latency", 1): rename_latency,
}
for (_kind, _version), _step in STEPS.items():
    UPGRADERS.setdefault(_kind, {})[_version] = _step

"""Schema versions and upgraders of the effectiveness result kinds.

Imported by :func:`mice_bench.results.load_result` when it meets an old version of
``effectiveness`` or ``effectiveness-summary``; each upgrader takes a document of version
``v`` to ``v + 1`` (``load_result`` sets the new ``schema_version``). Tested on the committed
results (``tests/test_results_models.py``).

* ``effectiveness`` 1 -> 2: the environment records the ir_datasets, ir_measures and bm25s
  versions and ``model`` records the checkpoint ``revision``; version-1 files did not, so the
  upgrader sets them to None (unknown).
* ``effectiveness-summary`` 1 -> 2: see :func:`upgrade_summary_v1`.
* ``effectiveness`` 2 -> 3 and ``effectiveness-summary`` 2 -> 3: variant names written
  with the earlier definitions are renamed to what they measured (the step
  :mod:`mice_bench.legacy` registers: ``colbert`` -> ``colbert[proj=0,qaug=0]``,
  ``mice-l{m}+{n}`` -> ``mice-l{m}+{n}[attn=joint]``, ``mice-l{m}+{n}-cross`` ->
  ``mice-l{m}+{n}[order=self]``); a renamed result keeps the old name in
  ``config.variant_as_written`` and the reason in ``config.legacy_note``.
"""

from __future__ import annotations

from ..results import UPGRADERS

PACKAGES = ("ir_datasets", "ir_measures", "bm25s")


def upgrade_effectiveness_v1(doc: dict) -> dict:
    doc = dict(doc)
    env = dict(doc.get("environment") or {})
    for p in PACKAGES:
        env.setdefault(p, None)
    doc["environment"] = env
    if doc.get("model") is not None:
        doc["model"] = dict(doc["model"], revision=doc["model"].get("revision"))
    return doc


def upgrade_summary_v1(doc: dict) -> dict:
    """Summary schema 1 -> 2: ``files`` moved out of the cells into ``row.files``;
    ``comparisons`` (tests per measure) and ``datasets[].first_stage`` made explicit;
    cells gain ``p``/``p_corrected``/``diff``/``mark`` = None/None/None/"" when untested."""
    doc = dict(doc)
    s = dict(doc["summary"])
    measures = list(s["measures"])
    rows = []
    count = {m: 0 for m in measures}
    for r in s["rows"]:
        cells, files = {}, {}
        for ds, per in r["cells"].items():
            per = dict(per)
            files[ds] = list(per.pop("files", []))
            cells[ds] = {}
            for m, c in per.items():
                c = {"mean": c["mean"], "std": c.get("std"), "seeds": list(c["seeds"]),
                     "num_queries": c["num_queries"], "p": c.get("p"),
                     "p_corrected": c.get("p_corrected"), "diff": c.get("diff"),
                     "mark": c.get("mark", "")}
                if c["p"] is not None and m in count:
                    count[m] += 1
                cells[ds][m] = c
        rows.append({"variant": r["variant"], "models": list(r.get("models", [])),
                     "cells": cells, "files": files, "averages": r.get("averages", {})})
    s["rows"] = rows
    s["comparisons"] = count
    s.pop("primary", None)
    s["primary"] = measures[0]
    doc["summary"] = s
    return doc


UPGRADERS.setdefault("effectiveness", {})[1] = upgrade_effectiveness_v1
UPGRADERS.setdefault("effectiveness-summary", {})[1] = upgrade_summary_v1
